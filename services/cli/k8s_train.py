"""The `--k8s` options of `twinray train MODEL`, and the `TrainJob` a parsed command asks for.

The RayJob runs the training flags as parsed (long option names, whatever abbreviation was typed),
never a Kubernetes option: a job that submitted a job would be a loop.
"""

from __future__ import annotations

import argparse
import os
import re
import secrets
import string
from collections.abc import Sequence

from twinray.services.cli.k8s_jobs import MAX_NAME, RELEASE, TrainJob, package_version
from twinray.shared.platform.errors import InvalidInput

_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
_K8S_ONLY = (
    "namespace",
    "release",
    "image",
    "gpus_per_worker",
    "cpus_per_worker",
    "memory_per_worker",
    "store_secret",
    "job_name",
)


def add_k8s_train_options(parser: argparse.ArgumentParser) -> None:
    """Add the --k8s options to a `twinray train MODEL` parser whose training options are all there already
    (kept as `train_options`: they are what the RayJob runs)."""
    parser.set_defaults(train_options=[action for action in parser._actions if action.option_strings and action.dest != "help"])
    group = parser.add_argument_group(
        "on Kubernetes", "submit this command as a KubeRay RayJob instead of training here; --workers N: N worker pods"
    )
    group.add_argument("--k8s", action="store_true", help="run on the cluster of the kubeconfig (or in-cluster config)")
    group.add_argument("--namespace", help="default: the kubeconfig context's (in a pod: its own)")
    group.add_argument("--release", help=f"the Helm release whose store Secret and network the job joins (default {RELEASE})")
    group.add_argument("--image", help="default: $TWINRAY_K8S_IMAGE, else twinray:<installed version> (the chart's default)")
    group.add_argument(
        "--gpus-per-worker", type=int, help="GPUs per worker pod (default 1 with --gpus, else 0; >0 implies --gpus)"
    )
    group.add_argument("--cpus-per-worker", help="CPUs per worker pod (default 2)")
    group.add_argument("--memory-per-worker", help="memory per worker pod (default 8Gi)")
    group.add_argument(
        "--store-secret", help="Secret with the TWINRAY_STORE_* keys (default $TWINRAY_K8S_STORE_SECRET, else the release's)"
    )
    group.add_argument("--job-name", help="RayJob name (default twinray-<model>-<random>)")
    group.add_argument("--follow", action=argparse.BooleanOptionalAction, help="follow its status until it ends (default)")
    group.add_argument("--poll-seconds", type=float, help="seconds between status reads (default 5)")


def training_args(actions: Sequence[argparse.Action], args: argparse.Namespace) -> list[str]:
    """The training flags that differ from their defaults, as command-line words."""
    words: list[str] = []
    for action in actions:
        value = getattr(args, action.dest)
        if value == action.default:
            continue
        option = max(action.option_strings, key=len)
        if action.nargs == 0:  # store_true
            words.append(option)
        else:
            words += [option, *map(str, value if isinstance(value, list) else [value])]
    return words


def train_job(args: argparse.Namespace) -> TrainJob:
    """The RayJob a parsed `twinray train MODEL --k8s ...` asks for, its options checked."""
    gpus = args.gpus_per_worker if args.gpus_per_worker is not None else int(args.gpus)
    if gpus < 0:
        raise InvalidInput(f"--gpus-per-worker must be 0 or more, got {gpus}")
    if args.gpus and not gpus:
        raise InvalidInput("--gpus trains on GPUs: --gpus-per-worker 0 leaves the workers without any")
    if args.workers < 1:
        raise InvalidInput(f"--workers must be at least 1, got {args.workers}")
    words = training_args(args.train_options, args)
    suffix = "".join(secrets.choice(string.ascii_lowercase + string.digits) for _ in range(5))
    name = args.job_name or f"twinray-{args.model}"[: MAX_NAME - 6] + f"-{suffix}"
    if len(name) > MAX_NAME or not _DNS_LABEL.fullmatch(name):
        raise InvalidInput(f"--job-name must be a DNS label of at most {MAX_NAME} characters (a-z, 0-9, -), got {name!r}")
    return TrainJob(
        name=name,
        model=args.model,
        train_args=(*words, "--gpus") if gpus and "--gpus" not in words else tuple(words),
        image=args.image or os.environ.get("TWINRAY_K8S_IMAGE") or f"twinray:{package_version('twinray', 'latest')}",
        workers=args.workers,
        gpus_per_worker=gpus,
        cpus_per_worker=args.cpus_per_worker or TrainJob.cpus_per_worker,
        memory_per_worker=args.memory_per_worker or TrainJob.memory_per_worker,
        release=args.release or RELEASE,
        store_secret=args.store_secret or os.environ.get("TWINRAY_K8S_STORE_SECRET", ""),
    )


def check_local(args: argparse.Namespace) -> None:
    """Kubernetes options without --k8s are a mistake, not something to ignore."""
    given = [f"--{dest.replace('_', '-')}" for dest in (*_K8S_ONLY, "follow", "poll_seconds") if getattr(args, dest) is not None]
    if given:
        raise InvalidInput(f"{', '.join(given)} only apply with --k8s")
