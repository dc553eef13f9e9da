"""`twinray`: the one command for data, training, evaluation, serving and calling TwinRay."""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import grpc

from shared.config import Settings
from shared.errors import TwinRayError

DATASET = "cxr-phantoms"
SPLITS = {"train": 320, "val": 32, "test": 64}


def _data_phantoms(args: argparse.Namespace, settings: Settings) -> None:
    from shared.phantoms.dataset import write_phantom_dataset
    from shared.storage import open_store

    store = open_store(settings)
    splits = {"train": args.train, "val": args.val, "test": args.test}
    write_phantom_dataset(store, args.name, size=args.size, splits=splits, seed=args.seed)
    print(f"dataset {args.name!r}: {store.uri(f'datasets/{args.name}/manifest.json')}")


def _train_segmentation(args: argparse.Namespace, settings: Settings) -> None:
    from training.segmentation import SegmentationTrainConfig, train_segmentation

    config = SegmentationTrainConfig(
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, learning_rate=args.lr,
        seed=args.seed, workers=args.workers, use_gpu=args.gpus,
    )
    version = train_segmentation(settings, config)
    print(f"published segmentation version {version.version}: {version.manifest_ref.key}")


def _eval_segmentation(args: argparse.Namespace, settings: Settings) -> None:
    from training.segmentation import evaluate_published

    report = evaluate_published(settings, version=args.version, dataset=args.dataset, split=args.split)
    if args.json:
        print(json.dumps(report))
        return
    print(f"segmentation v{report['model']['version']} on {report['dataset']}/{report['split']} ({report['images']} images)")
    for name, dice in report["per_class"].items():
        print(f"  {name:<18} Dice {dice:.4f}")
    print(f"  {'mean':<18} Dice {report['mean_dice']:.4f}")


def _up(args: argparse.Namespace, settings: Settings) -> None:
    from services.up import deploy

    config = deploy(settings, Path(args.config))
    names = ", ".join(app["name"] for app in config["applications"])
    print(f"serving {names} over gRPC on port {settings.grpc_port} (Ctrl-C to stop)", flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass


def _client_segment(args: argparse.Namespace, settings: Settings) -> None:
    from services.client import image_message, segment
    from shared.imaging import decode_label_png, encode_png_u8

    spacing = tuple(args.spacing) if args.spacing else None
    with grpc.insecure_channel(args.address or f"localhost:{settings.grpc_port}") as channel:
        response = segment(channel, image_message(Path(args.image), spacing), version=args.version)
    labels = decode_label_png(response.label_map.png)
    scale = 255 // max(1, len(response.label_map.classes) - 1)
    Path(args.out).write_bytes(encode_png_u8(labels * scale) if args.visible else response.label_map.png)
    models = ", ".join(f"{m.name} v{m.version}" for m in response.provenance.models)
    print(f"label map {response.label_map.width}x{response.label_map.height} -> {args.out} ({models})")
    for area in response.areas[1:]:
        mm2 = f" {area.area_mm2 / 100:.1f} cm^2" if area.spacing_known else ""
        print(f"  {area.name:<18} {area.pixels:>9} px{mm2}")


def _demo(args: argparse.Namespace, settings: Settings) -> None:
    from services.demo import run_demo

    run_demo(settings)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="twinray", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    data = sub.add_parser("data", help="generate datasets").add_subparsers(dest="what", required=True)
    phantoms = data.add_parser("phantoms", help="CXR phantoms with anatomy, lesions and healthy twins")
    phantoms.add_argument("--name", default=DATASET)
    phantoms.add_argument("--size", type=int, default=256)
    phantoms.add_argument("--seed", type=int, default=0)
    for split, count in SPLITS.items():
        phantoms.add_argument(f"--{split}", type=int, default=count, help=f"images in the {split} split")
    phantoms.set_defaults(func=_data_phantoms)

    train = sub.add_parser("train", help="train a model with Ray Train").add_subparsers(dest="model", required=True)
    seg = train.add_parser("segmentation", help="anatomy U-Net")
    seg.add_argument("--dataset", default=DATASET)
    seg.add_argument("--workers", type=int, default=1, help="Ray Train workers")
    seg.add_argument("--gpus", action="store_true", help="one GPU per worker, bf16 autocast")
    seg.add_argument("--epochs", type=int, default=8)
    seg.add_argument("--batch-size", type=int, default=8)
    seg.add_argument("--lr", type=float, default=3e-3)
    seg.add_argument("--seed", type=int, default=0)
    seg.set_defaults(func=_train_segmentation)

    evaluate = sub.add_parser("eval", help="evaluate a published model").add_subparsers(dest="model", required=True)
    seg_eval = evaluate.add_parser("segmentation", help="per-class Dice on held-out phantoms")
    seg_eval.add_argument("--version", default="latest")
    seg_eval.add_argument("--dataset", default=DATASET)
    seg_eval.add_argument("--split", default="test")
    seg_eval.add_argument("--json", action="store_true", help="print one JSON object")
    seg_eval.set_defaults(func=_eval_segmentation)

    up = sub.add_parser("up", help="start Ray + Serve and deploy the services")
    up.add_argument("--config", default=str(Path(__file__).with_name("serve_config.yaml")))
    up.set_defaults(func=_up)

    client = sub.add_parser("client", help="call a running service").add_subparsers(dest="rpc", required=True)
    seg_client = client.add_parser("segment", help="Segmentation/Segment on a PNG or DICOM file")
    seg_client.add_argument("image")
    seg_client.add_argument("--out", required=True, help="label map PNG to write")
    seg_client.add_argument("--visible", action="store_true", help="stretch labels to 0..255 for viewing")
    seg_client.add_argument("--address", default="", help="host:port (default localhost:$TWINRAY_GRPC_PORT)")
    seg_client.add_argument("--version", default="", help="model version (default: the deployed one)")
    seg_client.add_argument("--spacing", type=float, nargs=2, metavar=("ROW_MM", "COL_MM"))
    seg_client.set_defaults(func=_client_segment)

    demo = sub.add_parser("demo", help="phantoms -> train -> serve -> call over gRPC -> figure")
    demo.set_defaults(func=_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
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
