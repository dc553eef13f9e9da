"""`twinray train --k8s`, `twinray follow` and `twinray scale` against kmock's Kubernetes API emulator
over real HTTP: the `kubernetes` client, loaded from a kubeconfig, talks to a loopback server that
stores what it is sent; KubeRay's part (a RayJob's status moving on) is scripted on each status read."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import kmock
import pytest
import yaml

from twinray.services import SERVE_CONFIG
from twinray.services.cli.k8s_jobs import TrainJob, rayjob_manifest
from twinray.services.cli.main import main

RAYJOBS = kmock.resource("ray.io", "v1", "rayjobs")
RAYSERVICES = kmock.resource("ray.io", "v1", "rayservices")
NAMESPACE = "ml"  # the kubeconfig context's


@dataclasses.dataclass(frozen=True)
class Emulator:
    handler: kmock.KubernetesEmulator
    url: str

    def sent(self, action: kmock.action, resource: kmock.resource) -> list[kmock.Request]:
        return [request for request in self.handler[action, resource]]


def _write_kubeconfig(path: Path, server: str) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "emulator", "cluster": {"server": server}}],
                "users": [{"name": "dev", "user": {"token": "t0ken"}}],
                "contexts": [{"name": "emulator", "context": {"cluster": "emulator", "user": "dev", "namespace": NAMESPACE}}],
                "current-context": "emulator",
            }
        )
    )
    return path


@pytest.fixture
def k8s(tmp_path, monkeypatch) -> Iterator[Emulator]:
    """The emulator on a loopback port, in its own thread and event loop (the CLI is synchronous); KUBECONFIG points at it."""
    ready, box = threading.Event(), {}

    async def serve() -> None:
        async with kmock.KubernetesEmulator() as handler, kmock.Server(handler) as server:
            box.update(handler=handler, url=str(server.url).rstrip("/"), loop=asyncio.get_running_loop(), stop=asyncio.Event())
            ready.set()
            await box["stop"].wait()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(30), "the emulator did not start"
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path / "kubeconfig", box["url"])))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    yield Emulator(box["handler"], box["url"])
    box["loop"].call_soon_threadsafe(box["stop"].set)
    thread.join(30)


def _kuberay(k8s: Emulator, steps: list[dict | Exception | Callable[[], None]]) -> None:
    """Play the operator: each status read of a RayJob first applies the next step (a status, an API error, an action)."""
    remaining = iter(steps)

    def read(request: kmock.Request) -> dict:
        stored = k8s.handler.objects[RAYJOBS, request.namespace, request.name]
        step = next(remaining, None)
        if isinstance(step, Exception):
            raise step
        if callable(step):
            step()
        elif step is not None:
            stored.patch({"status": step})
        return stored.raw

    k8s.handler[kmock.action.FETCH, RAYJOBS] << read


INITIALIZING = {"jobDeploymentStatus": "Initializing"}
RUNNING = {"jobDeploymentStatus": "Running", "jobStatus": "RUNNING", "dashboardURL": "seg-1-head-svc.ml.svc:8265"}
API_RESTARTING = kmock.KubernetesError(status=503, reason="ServiceUnavailable", message="the server is shutting down")


def _one_line_error(capsys) -> str:
    captured = capsys.readouterr()
    assert "Traceback" not in captured.out + captured.err
    (line,) = captured.err.strip().splitlines()
    return line


def test_train_submits_the_rayjob_and_follows_it_to_success(k8s, monkeypatch, capsys):
    for name, value in {"ENDPOINT": "minio.ml.svc:9000", "ACCESS_KEY": "AKIA-LOCAL", "SECRET_KEY": "s3cr3t-local"}.items():
        monkeypatch.setenv(f"TWINRAY_STORE_{name}", value)
    _kuberay(k8s, [INITIALIZING, API_RESTARTING, RUNNING, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}])
    argv = [
        "train",
        "segmentation",
        "--k8s",
        "--workers",
        "2",
        "--epochs",
        "1",
        "--image",
        "reg/twinray:1",
        "--job-name",
        "seg-1",
    ]
    assert main([*argv, "--poll-seconds", "0.01"]) == 0

    (create,) = k8s.sent(kmock.action.CREATE, RAYJOBS)
    job = TrainJob(
        name="seg-1", model="segmentation", train_args=("--workers", "2", "--epochs", "1"), image="reg/twinray:1", workers=2
    )
    assert create.namespace == NAMESPACE and create.data == rayjob_manifest(job, NAMESPACE)
    assert create.headers["Authorization"] == "Bearer t0ken"  # the kubeconfig's user
    assert "AKIA-LOCAL" not in create.text and "s3cr3t-local" not in create.text and "minio.ml.svc" not in create.text
    out, err = capsys.readouterr()
    lines = [line.split("] ", 1)[-1] for line in out.splitlines()]
    assert lines == [
        "submitted RayJob ml/seg-1 (2 worker(s), reg/twinray:1): twinray train segmentation --workers 2 --epochs 1",
        "RayJob ml/seg-1: Initializing",
        "RayJob ml/seg-1: Running, job RUNNING",
        "Ray dashboard: seg-1-head-svc.ml.svc:8265",
        "RayJob ml/seg-1: Complete, job SUCCEEDED",
        "RayJob ml/seg-1 succeeded",
    ]
    assert (
        err.strip()
        == "twinray: Kubernetes API error 503 on RayJob 'seg-1' in namespace 'ml': the server is shutting down (retrying)"
    )


def test_a_failed_rayjob_exits_non_zero_with_one_line(k8s, capsys):
    failed = {"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "Job entrypoint command failed with exit code 1"}
    _kuberay(k8s, [INITIALIZING, RUNNING, failed])
    assert main(["train", "segmentation", "--k8s", "--job-name", "seg-2", "--gpus", "--poll-seconds", "0.01"]) == 2
    (create,) = k8s.sent(kmock.action.CREATE, RAYJOBS)
    assert create.data["spec"]["entrypoint"] == "twinray train segmentation --gpus"
    worker = create.data["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["template"]["spec"]["containers"][0]
    assert worker["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert _one_line_error(capsys) == "twinray: RayJob ml/seg-2 failed (Failed, job FAILED); logs: kubectl logs -n ml job/seg-2"


def test_ctrl_c_stops_following_not_the_job_and_follow_picks_it_up(k8s, capsys, request):
    ctrl_c = lambda: os.kill(os.getpid(), signal.SIGINT)  # noqa: E731  (what a terminal sends)
    # a fresh `twinray` process has Python's own SIGINT handler; this test process may hold another
    # (a Ray driver started by an earlier test installs its own)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    request.addfinalizer(lambda: signal.signal(signal.SIGINT, previous))
    _kuberay(k8s, [INITIALIZING, ctrl_c, RUNNING, {"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}])
    with pytest.raises(SystemExit) as stopped:
        main(["train", "normal-synthesis", "--k8s", "--namespace", "team-b", "--job-name", "twin-3", "--poll-seconds", "0.01"])
    assert stopped.value.code == 130
    err = capsys.readouterr().err
    assert "RayJob team-b/twin-3 keeps running. Follow it again: twinray follow twin-3 --namespace team-b" in err
    assert not k8s.sent(kmock.action.DELETE, RAYJOBS) and (RAYJOBS, "team-b", "twin-3") in k8s.handler.objects

    assert main(["follow", "twin-3", "--namespace", "team-b", "--poll-seconds", "0.01"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("RayJob team-b/twin-3 succeeded")


def test_no_follow_submits_and_says_how_to_follow(k8s, capsys):
    assert main(["train", "segmentation", "--k8s", "--job-name", "seg-4", "--no-follow"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "follow it: twinray follow seg-4 --namespace ml"
    assert len(k8s.sent(kmock.action.CREATE, RAYJOBS)) == 1 and not k8s.sent(kmock.action.FETCH, RAYJOBS)


def test_a_taken_job_name_is_a_conflict(k8s, capsys):
    assert main(["train", "segmentation", "--k8s", "--job-name", "seg-5", "--no-follow"]) == 0
    capsys.readouterr()
    assert main(["train", "segmentation", "--k8s", "--job-name", "seg-5", "--no-follow"]) == 2
    assert _one_line_error(capsys).startswith("twinray: conflict on RayJob 'seg-5' in namespace 'ml': ")


# --- twinray scale ---------------------------------------------------------------------------------


@pytest.fixture
def rayservice(k8s, kuberay_validators) -> dict:
    """The chart's RayService as the API would return it: services/serve_config.yaml as its serveConfigV2."""
    head = {"template": {"spec": {"containers": [{"name": "ray-head", "image": "reg/twinray:1"}]}}}
    body = {
        "apiVersion": "ray.io/v1",
        "kind": "RayService",
        "metadata": {"name": "twinray", "namespace": NAMESPACE, "resourceVersion": "41"},
        "spec": {"serveConfigV2": SERVE_CONFIG.read_text(), "rayClusterConfig": {"headGroupSpec": head}},
    }
    kuberay_validators["RayService"].validate(body)
    k8s.handler.objects[RAYSERVICES, NAMESPACE, "twinray"] = body
    return body


def _apps(serve_config: str) -> dict[str, dict]:
    return {app["name"]: app for app in yaml.safe_load(serve_config)["applications"]}


def test_scale_merge_patches_the_one_application(k8s, rayservice, kuberay_validators, capsys):
    assert main(["scale", "normal-synthesis", "3"]) == 0

    (patch,) = k8s.sent(kmock.action.UPDATE, RAYSERVICES)
    assert patch.method == "PATCH" and patch.headers["Content-Type"] == "application/merge-patch+json"
    assert set(patch.data) == {"spec", "metadata"} and set(patch.data["spec"]) == {"serveConfigV2"}
    assert patch.data["metadata"] == {"resourceVersion": "41"}  # the API refuses it if the object changed since
    before, after = _apps(rayservice["spec"]["serveConfigV2"]), _apps(patch.data["spec"]["serveConfigV2"])
    assert after.pop("normal-synthesis")["deployments"] == [{"name": "NormalSynthesis", "num_replicas": 3}]
    before.pop("normal-synthesis")
    assert after == before
    stored = k8s.handler.objects[RAYSERVICES, NAMESPACE, "twinray"].raw
    assert stored["spec"]["serveConfigV2"] == patch.data["spec"]["serveConfigV2"]
    kuberay_validators["RayService"].validate(stored)
    assert (
        capsys.readouterr().out.splitlines()[0] == "RayService ml/twinray: normal-synthesis/NormalSynthesis num_replicas 1 -> 3"
    )


def test_scale_to_the_current_count_patches_nothing(k8s, rayservice, capsys):
    assert main(["scale", "segmentation", "1"]) == 0
    assert not k8s.sent(kmock.action.UPDATE, RAYSERVICES)
    assert "already runs 1 replica(s); nothing patched" in capsys.readouterr().out


FORBIDDEN = 'rayservices.ray.io "twinray" is forbidden: User "dev" cannot patch resource "rayservices" in API group "ray.io" in the namespace "ml"'


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            ["scale", "segmentaton", "2"],
            "twinray: no Serve application 'segmentaton'; the RayService has: segmentation, normal-synthesis, ",
        ),
        (
            ["scale", "detection", "-1"],
            "twinray: replicas must be 1 or more (Ray Serve's num_replicas is a positive integer), got -1",
        ),
        (
            ["scale", "detection", "2", "--rayservice", "prod-twinray"],
            "twinray: RayService 'prod-twinray' not found in namespace 'ml' (is it installed there, with the KubeRay CRDs?)",
        ),
        (["scale", "detection", "2", "--namespace", "other"], "twinray: RayService 'twinray' not found in namespace 'other'"),
        (["scale", "detection", "2", "forbidden"], f"twinray: forbidden: {FORBIDDEN}"),
    ],
)
def test_scale_errors_are_one_line(k8s, rayservice, capsys, argv, message):
    if argv[-1] == "forbidden":  # a read-only role: get is allowed, patch is not
        argv = argv[:-1]
        k8s.handler[kmock.action.UPDATE, RAYSERVICES] << kmock.KubernetesError(status=403, reason="Forbidden", message=FORBIDDEN)
    assert main(argv) == 2
    assert _one_line_error(capsys).startswith(message)


def test_no_cluster_is_one_line(tmp_path, monkeypatch, capsys, closed_port):
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    assert main(["scale", "detection", "2"]) == 2
    assert _one_line_error(capsys).startswith(
        "twinray: no Kubernetes configuration (Invalid kube-config file. No configuration found.)"
    )
    monkeypatch.setenv("KUBECONFIG", str(_write_kubeconfig(tmp_path / "kubeconfig", f"http://127.0.0.1:{closed_port}")))
    assert main(["scale", "detection", "2"]) == 2
    assert _one_line_error(capsys) == f"twinray: cannot reach the Kubernetes API at http://127.0.0.1:{closed_port}: MaxRetryError"
