"""The RayJob `twinray train --k8s` submits, checked against KubeRay's real RayJob CRD schema."""

from __future__ import annotations

import jsonschema
import pytest

from twinray.services.cli.k8s_jobs import TrainJob, fullname, rayjob_manifest


def _errors(validator: jsonschema.Validator, manifest: dict) -> list[str]:
    return [f"{'/'.join(map(str, error.absolute_path))}: {error.message}" for error in validator.iter_errors(manifest)]


def _pods(manifest: dict) -> dict[str, dict]:
    cluster = manifest["spec"]["rayClusterSpec"]
    templates = [manifest["spec"]["submitterPodTemplate"], cluster["headGroupSpec"]["template"]]
    templates += [group["template"] for group in cluster["workerGroupSpecs"]]
    return {template["spec"]["containers"][0]["name"]: template for template in templates}


@pytest.mark.parametrize("gpus", [0, 2])
def test_the_manifest_is_a_valid_rayjob(kuberay_validators, gpus):
    job = TrainJob(
        name="twinray-segmentation-ab12c",
        model="segmentation",
        train_args=("--workers", "3"),
        image="reg/twinray:1",
        workers=3,
        gpus_per_worker=gpus,
    )
    manifest = rayjob_manifest(job, "ml")
    assert _errors(kuberay_validators["RayJob"], manifest) == []
    spec = manifest["spec"]
    assert spec["entrypoint"] == "twinray train segmentation --workers 3"
    (group,) = spec["rayClusterSpec"]["workerGroupSpecs"]
    assert group["replicas"] == group["minReplicas"] == group["maxReplicas"] == 3
    assert group["template"]["spec"]["containers"][0]["resources"]["limits"].get("nvidia.com/gpu") == (gpus or None)
    assert spec["rayClusterSpec"]["headGroupSpec"]["rayStartParams"] == {"num-cpus": "0"}


def test_every_pod_joins_the_release_and_reads_the_store_by_reference():
    manifest = rayjob_manifest(TrainJob(name="j", model="segmentation", train_args=(), image="i", release="prod"), "ml")
    pods = _pods(manifest)
    assert sorted(pods) == ["ray-head", "ray-job-submitter", "ray-worker"]
    for pod in pods.values():  # the chart's NetworkPolicies select on these
        assert pod["metadata"]["labels"]["app.kubernetes.io/name"] == "twinray"
        assert pod["metadata"]["labels"]["app.kubernetes.io/instance"] == "prod"
        assert pod["spec"]["securityContext"]["runAsNonRoot"] is True
    for name in ("ray-head", "ray-worker"):
        env = {item["name"]: item for item in pods[name]["spec"]["containers"][0]["env"]}
        store = {key: item for key, item in env.items() if key.startswith("TWINRAY_STORE_")}
        assert sorted(store) == [
            f"TWINRAY_STORE_{key}" for key in ("ACCESS_KEY", "BUCKET", "ENDPOINT", "REGION", "SECRET_KEY", "SECURE")
        ]
        for key, item in store.items():  # never a value, always the Secret's key of the same name
            assert set(item) == {"name", "valueFrom"} and item["valueFrom"]["secretKeyRef"]["name"] == "prod-twinray-store"
            assert item["valueFrom"]["secretKeyRef"]["key"] == key
        assert "optional" not in env["TWINRAY_STORE_ENDPOINT"]["valueFrom"]["secretKeyRef"]  # no endpoint: the pod must not start
    own = rayjob_manifest(TrainJob(name="j", model="m", train_args=(), image="i", store_secret="mine"), "ml")
    assert _pods(own)["ray-head"]["spec"]["containers"][0]["env"][1]["valueFrom"]["secretKeyRef"]["name"] == "mine"


@pytest.mark.parametrize(
    ("release", "name"), [("twinray", "twinray"), ("prod", "prod-twinray"), ("twinray-eu", "twinray-eu"), ("x" * 45, "x" * 40)]
)
def test_fullname_follows_the_chart(release, name):
    assert fullname(release) == name


def test_the_schema_check_catches_a_misplaced_field(kuberay_validators):
    manifest = rayjob_manifest(TrainJob(name="j", model="segmentation", train_args=(), image="i"), "ml")
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["gpus"] = 1
    manifest["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["replicas"] = "3"
    errors = _errors(kuberay_validators["RayJob"], manifest)
    assert any("'gpus' was unexpected" in e for e in errors) and any("'3' is not of type 'integer'" in e for e in errors)
