"""`twinray train MODEL --k8s`'s options: the RayJob runs the same training command, bad options
are refused before any cluster is asked."""

from __future__ import annotations

import argparse
import shlex

import pytest

from twinray.services.cli.k8s_train import train_job
from twinray.services.cli.main import build_parser, main
from twinray.shared.platform.errors import InvalidInput


def _parse(argv: list[str]) -> argparse.Namespace:
    return build_parser().parse_args(argv)


TRAINING = ("dataset", "workers", "gpus", "epochs", "batch_size", "lr", "seed", "real_count")


def test_the_rayjob_runs_the_same_training_command():
    argv = [
        "train",
        "defect-masks",
        "--k8s",
        "--workers",
        "2",
        "--epochs",
        "3",
        "--lr",
        "0.01",
        "--real-count",
        "7",
        "--gpus-per-worker",
        "1",
    ]
    argv += ["--namespace", "ml", "--image", "reg/twinray:2", "--no-follow", "--release", "prod"]
    job = train_job(_parse(argv))
    assert job.entrypoint == "twinray train defect-masks --workers 2 --epochs 3 --lr 0.01 --real-count 7 --gpus"
    assert (job.workers, job.gpus_per_worker, job.image, job.release, job.store_secret) == (2, 1, "reg/twinray:2", "prod", "")
    remote = _parse(shlex.split(job.entrypoint)[1:])
    local = _parse(argv[:2] + argv[3:11] + ["--gpus"])
    assert not remote.k8s and [getattr(remote, name) for name in TRAINING] == [getattr(local, name) for name in TRAINING]


def test_an_abbreviated_option_is_written_out():
    assert train_job(_parse(["train", "segmentation", "--k8s", "--epo", "2"])).train_args == ("--epochs", "2")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--gpus", "--gpus-per-worker", "0"], "--gpus-per-worker 0 leaves the workers without any"),
        (["--gpus-per-worker", "-1"], "must be 0 or more"),
        (["--workers", "0"], "--workers must be at least 1"),
        (["--job-name", "Bad_Name"], "must be a DNS label"),
        (["--job-name", "x" * 48], "at most 47"),
    ],
)
def test_bad_options_are_refused_before_any_cluster_is_asked(extra, message):
    with pytest.raises(InvalidInput, match=message):
        train_job(_parse(["train", "segmentation", "--k8s", *extra]))


def test_the_default_name_is_short_enough_and_unique():
    args = _parse(["train", "normal-synthesis", "--k8s"])
    names = {train_job(args).name for _ in range(5)}
    assert len(names) == 5 and all(name.startswith("twinray-normal-synthesis-") and len(name) <= 47 for name in names)


def test_the_store_secret_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("TWINRAY_K8S_STORE_SECRET", "from-env")
    assert train_job(_parse(["train", "segmentation", "--k8s"])).store_secret == "from-env"
    assert train_job(_parse(["train", "segmentation", "--k8s", "--store-secret", "flag"])).store_secret == "flag"


def test_kubernetes_options_without_k8s_are_an_error(capsys):
    assert main(["train", "segmentation", "--namespace", "ml", "--no-follow"]) == 2
    assert capsys.readouterr().err.strip() == "twinray: --namespace, --follow only apply with --k8s"
