"""`twinray export triton [--models NAME[:VERSION] ...]`: published versions as a Triton model
repository in the artifact store (twinray.training.triton.repository), for a Triton server to read
(`--model-repository s3://<endpoint>/<bucket>/triton`) and the services to call (TWINRAY_TRITON_URL)."""

from __future__ import annotations

import argparse

from twinray.shared.platform.config import Settings
from twinray.shared.platform.triton import REPOSITORY_PREFIX, SIGNATURES


def _export(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.platform.storage import open_store
    from twinray.training.triton.repository import ExportOptions, export_triton

    store = open_store(settings)
    options = ExportOptions(
        max_batch_size=args.max_batch_size, queue_delay_us=args.queue_delay_us, instances=args.instances, backend=args.backend
    )
    manifest = export_triton(store, args.models, options=options)
    served = ", ".join(f"{name} v{','.join(sorted(m['versions'], key=int))}" for name, m in sorted(manifest["models"].items()))
    print(f"Triton repository {store.uri(REPOSITORY_PREFIX)}: {served or 'empty'}")


def add_export_parser(sub: argparse._SubParsersAction) -> None:
    export = sub.add_parser("export", help="export published models for other servers").add_subparsers(dest="what", required=True)
    triton = export.add_parser("triton", help="a Triton model repository (ONNX + python backend) in the artifact store")
    triton.add_argument(
        "--models",
        nargs="+",
        default=[],
        metavar="NAME[:VERSION]",
        help=f"default: every served network with a published version, at its latest ({', '.join(SIGNATURES)})",
    )
    triton.add_argument("--max-batch-size", type=int, default=8, help="Triton's dynamic batcher merges requests up to this")
    triton.add_argument("--queue-delay-us", type=int, default=2000, help="how long Triton waits for a batch to fill")
    triton.add_argument("--instances", type=int, default=1, help="model instances per Triton server")
    triton.add_argument(
        "--backend",
        choices=("python", "onnxruntime"),
        default="python",
        help="python: model.py runs the ONNX file (any Triton with onnxruntime in its Python, e.g. nvidia-pytriton's); "
        "onnxruntime: Triton's native ONNX backend (the official image)",
    )
    triton.set_defaults(func=_export)
