"""`twinray`: the one command for data, training, evaluation, serving and calling TwinRay."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import grpc

from twinray.services import SERVE_CONFIG
from twinray.services.cli.defaults import DATASET, PHANTOM_GENERATOR, PRODUCT_SPLITS, PRODUCTS, SPLITS
from twinray.services.cli.export_triton import add_export_parser
from twinray.services.cli.k8s_follow import add_follow_parser, submit
from twinray.services.cli.k8s_scale import add_scale_parser
from twinray.services.cli.k8s_train import add_k8s_train_options, check_local
from twinray.services.cli.reports import (
    print_defect_report,
    print_detection_report,
    print_json,
    print_segmentation_report,
    print_twin_report,
)
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput, TwinRayError

if TYPE_CHECKING:
    import numpy as np

    from twinray.shared.platform.registry import ModelVersion
    from twinray.training.config import TrainConfig
    from twinray.training.harness import TrainSpec

Handler = Callable[[argparse.Namespace, Settings], None]


def _data_phantoms(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.data.phantoms.dataset import write_phantom_dataset
    from twinray.shared.platform.storage import open_store

    store = open_store(settings)
    splits = {"train": args.train, "val": args.val, "test": args.test}
    write_phantom_dataset(
        store, args.name, size=args.size, splits=splits, seed=args.seed, generator=args.generator, workers=args.workers
    )
    print(f"dataset {args.name!r}: {store.uri(f'datasets/{args.name}/manifest.json')}")


def _data_residuals(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.synthesis.twin_residuals import write_twin_residuals

    manifest = write_twin_residuals(settings, model=args.model, model_version=args.version, dataset=args.dataset, name=args.name)
    counts = ", ".join(f"{entry['count']} {split}" for split, entry in manifest["splits"].items())
    made_by = f"{manifest['model']['name']} v{manifest['model']['version']}"
    print(f"residuals {manifest['name']!r} of {args.dataset!r} by {made_by} ({counts}): use --residuals {manifest['name']}")


def _data_synthetic(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.synthesis.synthetic_abnormal import write_synthetic_abnormal

    manifest = write_synthetic_abnormal(
        settings,
        dataset=args.dataset,
        count=args.count,
        seed=args.seed,
        model=args.model,
        model_version=args.version,
        name=args.name,
    )
    made_by = f"{manifest['model']['name']} v{manifest['model']['version']}"
    print(
        f"synthetic abnormal {manifest['name']!r} ({manifest['count']} images from {args.dataset!r}/train by {made_by}): "
        f"use --synthetic {manifest['name']} --synthetic-count N"
    )


def _data_products(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.data.products.dataset import write_product_dataset
    from twinray.shared.platform.storage import open_store

    store = open_store(settings)
    splits = {split: getattr(args, split) for split in PRODUCT_SPLITS}
    manifest = write_product_dataset(store, args.name, category=args.category, size=args.size, splits=splits, seed=args.seed)
    counts = ", ".join(f"{entry['count']} {split}" for split, entry in manifest["splits"].items())
    where = store.uri(f"datasets/{args.name}/manifest.json")
    print(f"dataset {args.name!r} ({manifest['category']}, {manifest['size']}px; {counts}): {where}")


def _train_config(spec: TrainSpec, args: argparse.Namespace) -> TrainConfig:
    """A training config from the common flags and the spec's own; --epochs, --batch-size and --lr left out keep its defaults."""
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr}
    return spec.make_config(
        dataset=args.dataset,
        seed=args.seed,
        workers=args.workers,
        use_gpu=args.gpus,
        **{name: value for name, value in given.items() if value is not None},
        **{flag.keyword: getattr(args, flag.keyword) for flag in spec.flags},
    )


def _train(args: argparse.Namespace, settings: Settings) -> ModelVersion:
    from twinray.training.harness import train_and_publish
    from twinray.training.specs import TRAIN_SPECS

    spec = TRAIN_SPECS[args.model]
    version = train_and_publish(spec, settings, _train_config(spec, args))
    print(f"published {spec.name} version {version.version}: {version.manifest_ref.key}")
    return version


def _train_matching_pairs(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.synthesis.pseudo_pairs import write_pseudo_pairs

    version = _train(args, settings)
    pairs = write_pseudo_pairs(settings, model_version=version.version, dataset=args.dataset)
    counts = ", ".join(f"{count} {kind}" for kind, count in pairs["counts"].items())
    print(f"pseudo-pairs {pairs['name']!r} ({counts}): datasets/{pairs['name']}/")


def _eval_published(evaluation: str, printer: Callable[[dict], None]) -> Handler:
    """A handler that scores a published model with `twinray.shared.evaluation.<evaluation>`."""

    def handler(args: argparse.Namespace, settings: Settings) -> None:
        module = importlib.import_module(f"twinray.shared.evaluation.{evaluation}")
        report = module.evaluate_published(settings, version=args.version, dataset=args.dataset, split=args.split)
        if args.json:
            print_json(report)
        else:
            printer(report)

    return handler


def _eval_normal_synthesis(args: argparse.Namespace, settings: Settings) -> None:
    if not args.seeds:
        _eval_published("normal_synthesis", print_twin_report)(args, settings)
        if args.figure:
            from twinray.services.cli.figures import twin_figure
            from twinray.shared.evaluation.normal_synthesis import pathology_cases

            cases = pathology_cases(settings, version=args.version, dataset=args.dataset, split=args.split)
            print(f"figure: {twin_figure(cases, Path(args.figure))} (one row per pathology class)", file=sys.stderr)
        return
    if args.figure:
        raise InvalidInput("--figure draws a published generator's twins; --seeds trains its own: give one or the other")
    from twinray.training.twin_benchmark import TwinBudget, run_twin_benchmark

    if args.version != "latest":
        raise InvalidInput("--version names a published generator; --seeds trains its own: give one or the other")

    budget = TwinBudget(args.segmentation_epochs, args.translator_epochs, args.generator_epochs)
    report = run_twin_benchmark(settings, dataset=args.dataset, seeds=range(args.seeds), budget=budget, split=args.split)
    if args.json:
        print_json(report)
    else:
        print_twin_report(report)


def _eval_detection(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.training.detection_benchmark import DetectionBudget, run_detection_benchmark

    if args.seeds < 1:
        raise InvalidInput(f"--seeds must be at least 1, got {args.seeds}")
    given = {"epochs": args.epochs, "batch_size": args.batch_size, "learning_rate": args.lr, "synthetic_shares": args.shares}
    budget = DetectionBudget(**{name: value for name, value in given.items() if value is not None})
    report = run_detection_benchmark(
        settings,
        dataset=args.dataset,
        seeds=range(args.seeds),
        budget=budget,
        device=args.device,
        split=args.split,
        figure=Path(args.figure) if args.figure else None,
        jobs=args.jobs,
        tools_dataset=args.tools_dataset,
    )
    if args.json:
        print_json(report)
    else:
        print_detection_report(report)


def _eval_defect_augmentation(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.shared.evaluation.defect_augmentation import AugmentationEvalConfig, evaluate_augmentation
    from twinray.shared.platform.storage import open_store
    from twinray.shared.synthesis.defects import load_generators

    store = open_store(settings)
    config = AugmentationEvalConfig(
        dataset=args.dataset,
        real_counts=tuple(args.k),
        synthetic_count=args.synthetic,
        methods=tuple(args.methods),
        sample_steps=args.steps,
        seed=args.seed,
        repeats=args.repeats,
        **({"shares": tuple(args.shares)} if args.shares else {}),
    )
    generators = load_generators(store, encoder=args.encoder_version).to(args.device)
    report = evaluate_augmentation(store, config, generators, device=args.device)
    if args.json:
        print_json(report)
    else:
        print_defect_report(report)


def _up(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.services.cli.up import deploy

    config = deploy(settings, Path(args.config))
    names = ", ".join(app["name"] for app in config["applications"])
    tls = f", TLS on port {settings.tls_port} (plaintext: health only)" if settings.tls_cert_file else ""
    print(f"serving {names} over gRPC on port {settings.grpc_port}{tls} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _client_segment(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.services.common.client import client_channel, image_message
    from twinray.services.segmentation.client import segment
    from twinray.shared.platform.imaging import decode_label_png, encode_png_u8

    spacing = tuple(args.spacing) if args.spacing else None
    with client_channel(settings, args.address, token=args.token, tls_ca_file=args.tls_ca) as channel:
        response = segment(channel, image_message(Path(args.image), spacing), version=args.version)
    labels = decode_label_png(response.label_map.png)
    scale = 255 // max(1, len(response.label_map.classes) - 1)
    Path(args.out).write_bytes(encode_png_u8(labels * scale) if args.visible else response.label_map.png)
    models = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
    print(f"label map {response.label_map.width}x{response.label_map.height} -> {args.out} ({models})")
    for area in response.areas[1:]:
        mm2 = f" {area.area_mm2 / 100:.1f} cm^2" if area.spacing_known else ""
        print(f"  {area.name:<18} {area.pixels:>9} px{mm2}")


def _residual_heat_map_png(residual: np.ndarray) -> bytes:
    """|residual| as an RGB PNG (inferno colour map, brightest = the largest change in the image)."""
    import io

    import numpy as np
    from matplotlib import colormaps
    from PIL import Image

    magnitude = np.abs(residual) / (float(np.abs(residual).max()) or 1.0)
    rgb = np.round(colormaps["inferno"](magnitude)[..., :3] * 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(rgb, mode="RGB").save(buffer, format="PNG")
    return buffer.getvalue()


def _client_synthesize(args: argparse.Namespace, settings: Settings) -> None:
    import numpy as np

    from twinray.services.common.client import client_channel, image_message
    from twinray.services.normal_synthesis.client import synthesize

    anatomy = Path(args.anatomy).read_bytes() if args.anatomy else b""
    with client_channel(settings, args.address, token=args.token, tls_ca_file=args.tls_ca) as channel:
        response = synthesize(channel, image_message(Path(args.image)), anatomy_png=anatomy, version=args.version)
    Path(args.out_twin).write_bytes(response.twin_png)
    residual = np.frombuffer(response.residual.data, "<f4").reshape(tuple(response.residual.shape))
    models = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
    print(f"healthy twin {residual.shape[1]}x{residual.shape[0]} -> {args.out_twin} ({models})")
    if args.out_residual:
        out = Path(args.out_residual)
        if out.suffix.lower() == ".npy":
            np.save(out, residual)
        else:
            out.write_bytes(_residual_heat_map_png(residual))
        print(f"residual (max |input - twin| {np.abs(residual).max():.4f}) -> {out}")


def _client_detect(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.services.common.client import client_channel, image_message
    from twinray.services.detection.client import boxes_png, detect

    spacing = tuple(args.spacing) if args.spacing else None
    with client_channel(settings, args.address, token=args.token, tls_ca_file=args.tls_ca) as channel:
        response = detect(channel, image_message(Path(args.image), spacing), version=args.version, min_score=args.min_score)
    models = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
    size = f"{response.width}x{response.height}"
    print(f"{len(response.lesions)} lesion(s) scoring >= {response.min_score:.3f} in {size} ({models})")
    for lesion in response.lesions:
        box, width_mm, height_mm = lesion.box, lesion.x_max_mm - lesion.x_min_mm, lesion.y_max_mm - lesion.y_min_mm
        mm = f"  ({width_mm:.0f} x {height_mm:.0f} mm)" if lesion.spacing_known else ""
        print(f"  {box.label:<13} {box.score:.3f}  x {box.x_min:.0f}-{box.x_max:.0f}  y {box.y_min:.0f}-{box.y_max:.0f}{mm}")
    if args.out:
        Path(args.out).write_bytes(boxes_png(Path(args.image).read_bytes(), response.lesions))
        print(f"boxes drawn -> {args.out}")


def _demo(args: argparse.Namespace, settings: Settings) -> None:
    from twinray.services.cli.demo import run_demo

    run_demo(settings)


def _here_or_on_k8s(local: Handler) -> Handler:
    """`twinray train MODEL` trains here; with --k8s the same command runs on the cluster as a KubeRay RayJob."""

    def handler(args: argparse.Namespace, settings: Settings) -> None:
        if args.k8s:
            submit(args)
        else:
            check_local(args)
            local(args, settings)

    return handler


def _training_parser(train: argparse._SubParsersAction, spec: TrainSpec) -> argparse.ArgumentParser:
    parser = train.add_parser(spec.name, help=spec.help)
    parser.add_argument("--dataset", default=spec.config_class.dataset)
    parser.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    parser.add_argument("--gpus", action="store_true", help="one GPU per worker, bf16 autocast")
    parser.add_argument("--epochs", type=int, help="default: the model's training config")
    parser.add_argument("--batch-size", type=int, help="default: the model's training config")
    parser.add_argument("--lr", type=float, help="default: the model's training config")
    parser.add_argument("--seed", type=int, default=0)
    for flag in spec.flags:
        parser.add_argument(flag.option, type=type(flag.default), default=flag.default, help=flag.help)
    add_k8s_train_options(parser)  # after the training flags: they are what the RayJob runs
    # Training the translator also writes its pseudo-pairs, which normal synthesis trains on.
    parser.set_defaults(func=_here_or_on_k8s(_train_matching_pairs if spec.name == "matching-pairs" else _train))
    return parser


def _eval_parser(evaluate: argparse._SubParsersAction, name: str, description: str) -> argparse.ArgumentParser:
    parser = evaluate.add_parser(name, help=description)
    parser.add_argument("--version", default="latest")
    parser.add_argument("--dataset", default=DATASET)
    parser.add_argument("--split", default="test")
    parser.add_argument("--json", action="store_true", help="print the report as one JSON object, on the last line")
    return parser


def _client_parser(client: argparse._SubParsersAction, name: str, rpc: str) -> argparse.ArgumentParser:
    parser = client.add_parser(name, help=f"{rpc} on a PNG or DICOM file")
    parser.add_argument("image")
    parser.add_argument(
        "--address", default="", help="host:port (default localhost:$TWINRAY_GRPC_PORT, with TLS $TWINRAY_TLS_PORT)"
    )
    parser.add_argument(
        "--token", default="", help="bearer token (default and better: $TWINRAY_AUTH_TOKEN; a flag shows in process lists)"
    )
    parser.add_argument(
        "--tls-ca", default="", help="PEM CA of the server's certificate: connect with TLS (default $TWINRAY_TLS_CA_FILE)"
    )
    parser.add_argument("--version", default="", help="model version (default: the deployed one)")
    return parser


def build_parser(*, train_models: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate datasets").add_subparsers(dest="what", required=True)
    phantoms = data.add_parser("phantoms", help="CXR phantoms with anatomy, lesions and healthy twins")
    phantoms.add_argument("--name", default=DATASET)
    phantoms.add_argument("--size", type=int, default=256)
    phantoms.add_argument("--seed", type=int, default=0)
    phantoms.add_argument(
        "--generator",
        default=PHANTOM_GENERATOR,
        choices=("cxr-phantom/1", "cxr-phantom/2"),  # twinray.shared.data.phantoms.dataset.VERSIONS, without importing torch here
        help="cxr-phantom/1: one bright lesion type, no confounders (kept reproducible by name)",
    )
    for split, count in SPLITS.items():
        phantoms.add_argument(f"--{split}", type=int, default=count, help=f"images in the {split} split")
    phantoms.add_argument(
        "--workers", type=int, default=1, help="processes rendering images (the dataset is the same for any count)"
    )
    phantoms.set_defaults(func=_data_phantoms)
    residuals = data.add_parser("residuals", help="image - twin of every image of a phantom dataset, for the detector")
    residuals.add_argument("--model", default="normal-synthesis", choices=("normal-synthesis", "matching-pairs"))
    residuals.add_argument("--version", default="latest", help="the twin model's version")
    residuals.add_argument("--dataset", default=DATASET)
    residuals.add_argument("--name", default="", help="default: <dataset>-residuals-<model>-v<version>")
    residuals.set_defaults(func=_data_residuals)
    synthetic = data.add_parser("synthetic", help="normal training images with real lesions carried in, boxes by construction")
    synthetic.add_argument("--dataset", default=DATASET)
    synthetic.add_argument("--count", type=int, required=True, help="synthetic images to write")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--model", default="normal-synthesis", choices=("normal-synthesis", "matching-pairs"), help="the twin")
    synthetic.add_argument("--version", default="latest", help="the twin model's version")
    synthetic.add_argument("--name", default="", help="default: <dataset>-synthetic-<model>-v<version>-seed<seed>-n<count>")
    synthetic.set_defaults(func=_data_synthetic)
    products = data.add_parser("products", help="product surfaces, and real-like defects with exact masks")
    products.add_argument("--name", default=PRODUCTS)
    products.add_argument("--category", default="metal", help="brick, grass, gravel, metal, fabric or plastic")
    products.add_argument("--size", type=int, default=64)
    products.add_argument("--seed", type=int, default=0)
    for split, count in PRODUCT_SPLITS.items():
        products.add_argument(f"--{split.replace('_', '-')}", dest=split, type=int, default=count, help=f"images in {split}")
    products.set_defaults(func=_data_products)

    train = sub.add_parser("train", help="train a model with Ray Train").add_subparsers(dest="model", required=True)
    if train_models:  # importing the trainers takes seconds: only `twinray train ...` needs them
        from twinray.training.specs import TRAIN_SPECS

        for spec in TRAIN_SPECS.values():
            _training_parser(train, spec)

    evaluate = sub.add_parser("eval", help="evaluate a published model").add_subparsers(dest="model", required=True)
    seg_eval = _eval_parser(evaluate, "segmentation", "per-class Dice on held-out phantoms")
    seg_eval.set_defaults(func=_eval_published("segmentation", print_segmentation_report))
    synth_eval = _eval_parser(evaluate, "normal-synthesis", "the healthy-twin benchmark: twins, translators and no-learning rows")
    defect_eval = evaluate.add_parser(
        "defect-augmentation", help="defect segmenter: k real vs k real + N synthetic (mask_blend, conditioned_ddpm)"
    )
    defect_eval.add_argument("--dataset", default="products")
    defect_eval.add_argument("--k", type=int, nargs="+", default=[5, 20], help="real defects per row")
    defect_eval.add_argument("--synthetic", type=int, default=100, help="synthetic defects added (N)")
    methods = ["mask_blend", "conditioned_ddpm"]  # twinray.shared.synthesis.defects.METHODS, without importing torch here
    defect_eval.add_argument("--methods", nargs="+", choices=methods, default=methods)
    defect_eval.add_argument("--steps", type=int, default=50, help="DDIM steps for sampling")
    defect_eval.add_argument("--encoder-version", default="latest", help="defect-encoder version ('' = plain RePaint)")
    defect_eval.add_argument("--seed", type=int, default=0)
    defect_eval.add_argument(
        "--shares",
        type=float,
        nargs="+",
        help="candidate batch shares of each row's defect pool, chosen on the val splits (default 0.25 0.5 0.75 0.9)",
    )
    defect_eval.add_argument("--repeats", type=int, default=1, help="segmenter seeds per candidate; scores are their mean")
    defect_eval.add_argument("--device", default="cpu", help="where the generators sample and the segmenters train (cpu, cuda)")
    defect_eval.add_argument("--json", action="store_true", help="print the report as one JSON object, on the last line")
    defect_eval.set_defaults(func=_eval_defect_augmentation)
    synth_eval.add_argument("--figure", help="PNG path: a held-out case per pathology class with its twin and residual")
    synth_eval.add_argument(
        "--seeds", type=int, default=0, help="train this many seeds of every learned row first (0: the published models)"
    )
    for model, when in (("segmentation", "once"), ("translator", "per seed"), ("generator", "per seed")):
        synth_eval.add_argument(f"--{model}-epochs", type=int, default=8, help=f"{model} epochs, {when} (with --seeds)")
    synth_eval.set_defaults(func=_eval_normal_synthesis)

    detection_eval = evaluate.add_parser(
        "detection", help="the detector ablation: baseline, anatomy, concat (CycleGAN / twin residual), attention, + synthetic"
    )
    detection_eval.add_argument("--dataset", default=DATASET)
    detection_eval.add_argument("--split", default="test")
    detection_eval.add_argument(
        "--tools-dataset",
        default="",
        help="where the segmenter and twin models were trained (default: --dataset); same generator and seed",
    )
    detection_eval.add_argument("--seeds", type=int, default=3, help="seeds 0..N-1 of every learned row")
    detection_eval.add_argument("--epochs", type=int, help="epochs of every learned row (default 12)")
    detection_eval.add_argument("--batch-size", type=int, help="default 8")
    detection_eval.add_argument("--lr", type=float, help="default 1e-3")
    detection_eval.add_argument(
        "--shares", type=float, nargs="+", help="synthetic images per real training image, chosen on val (default 0.5 1)"
    )
    detection_eval.add_argument("--device", default="cpu", help="where the detectors train (cpu, cuda)")
    detection_eval.add_argument("--jobs", type=int, default=1, help="detectors fitted at once, in worker processes")
    detection_eval.add_argument("--figure", help="PNG path: test cases with true and predicted boxes, residuals and attention")
    detection_eval.add_argument("--json", action="store_true", help="print the report as one JSON object, on the last line")
    detection_eval.set_defaults(func=_eval_detection)

    up = sub.add_parser("up", help="start Ray + Serve and deploy the services")
    up.add_argument("--config", default=str(SERVE_CONFIG))
    up.set_defaults(func=_up)

    client = sub.add_parser("client", help="call a running service").add_subparsers(dest="rpc", required=True)
    seg_client = _client_parser(client, "segment", "Segmentation/Segment")
    seg_client.add_argument("--out", required=True, help="label map PNG to write")
    seg_client.add_argument("--visible", action="store_true", help="stretch labels to 0..255 for viewing")
    seg_client.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"))
    seg_client.set_defaults(func=_client_segment)

    synth_client = _client_parser(client, "synthesize", "NormalSynthesis/Synthesize")
    synth_client.add_argument("--out-twin", required=True, help="healthy twin PNG (16-bit) to write")
    synth_client.add_argument("--out-residual", default="", help="residual: .npy (float32, input - twin) or a PNG heat map")
    synth_client.add_argument("--anatomy", default="", help="anatomy label PNG of the image (default: segmented by the service)")
    synth_client.set_defaults(func=_client_synthesize)

    detect_client = _client_parser(client, "detect", "Detection/Detect")
    detect_client.add_argument("--out", default="", help="PNG to write: the image with the boxes drawn")
    detect_client.add_argument("--min-score", type=float, help="default: the detector's threshold, chosen on val")
    detect_client.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"))
    detect_client.set_defaults(func=_client_detect)

    add_follow_parser(sub)  # twinray follow RAYJOB
    add_scale_parser(sub)  # twinray scale APP N
    add_export_parser(sub)  # twinray export triton

    demo = sub.add_parser("demo", help="phantoms -> train -> serve -> call over gRPC -> figure")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = build_parser(train_models=argv[:1] == ["train"]).parse_args(argv)
    try:
        settings = Settings.from_env()
        args.func(args, settings)
    except TwinRayError as error:
        print(f"twinray: {error}", file=sys.stderr)
        return 2
    except ValueError as error:  # configuration errors from Settings
        print(f"twinray: {error}", file=sys.stderr)
        return 2
    except grpc.RpcError as error:
        print(f"twinray: {error.code().name}: {error.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
