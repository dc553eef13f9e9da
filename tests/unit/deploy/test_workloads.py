"""What the chart's workloads run and read: the project's image, TWINRAY_* names the code knows, store
credentials only by Secret reference, and one RayJob per `twinray train` command that the CLI accepts."""

from __future__ import annotations

import dataclasses
import shlex
import tomllib
from collections.abc import Iterator
from pathlib import Path

import yaml

from twinray.services.cli.k8s_jobs import RELEASE, fullname
from twinray.services.cli.main import build_parser
from twinray.shared.platform.config import Settings
from twinray.training.specs import TRAIN_SPECS

STORE_KEYS = {f"TWINRAY_STORE_{key}" for key in ("ENDPOINT", "SECURE", "BUCKET", "REGION", "ACCESS_KEY", "SECRET_KEY")}


def pod_templates(manifest: dict) -> Iterator[dict]:
    """Every pod template inside a RayService or RayJob (head, workers, submitter)."""
    spec = manifest["spec"]
    cluster = spec.get("rayClusterConfig") or spec.get("rayClusterSpec")
    if cluster is None:
        return
    yield cluster["headGroupSpec"]["template"]
    yield from (group["template"] for group in cluster["workerGroupSpecs"])
    if "submitterPodTemplate" in spec:
        yield spec["submitterPodTemplate"]


def ray_containers(manifests: list[dict]) -> Iterator[dict]:
    for manifest in manifests:
        for template in pod_templates(manifest):
            yield from template["spec"]["containers"]


def test_every_ray_workload_runs_the_project_image(chart, documented_values: Path):
    """The Dockerfile's image, tagged with the project version: Chart.yaml's appVersion is pyproject's."""
    version = tomllib.loads((chart.root / "pyproject.toml").read_text())["project"]["version"]
    assert yaml.safe_load((chart.path / "Chart.yaml").read_text())["appVersion"] == version
    values = yaml.safe_load(documented_values.read_text())
    image = values.get("image", {})
    expected = f"{image.get('repository', 'twinray')}:{image.get('tag', version)}"
    containers = list(ray_containers(chart.render(documented_values)))
    assert containers and {c["image"] for c in containers} == {expected}


def test_every_twinray_variable_is_a_setting_the_code_reads(chart, documented_values: Path):
    """A misspelt TWINRAY_* name would be ignored by Settings.from_env: each one must be a field."""
    known = {f"TWINRAY_{field.name.upper()}" for field in dataclasses.fields(Settings)}
    for container in ray_containers(chart.render(documented_values)):
        names = {env["name"] for env in container.get("env", []) if env["name"].startswith("TWINRAY_")}
        assert names <= known, names - known


def test_store_credentials_are_only_secret_references(chart, documented_values: Path):
    manifests = chart.render(documented_values)
    secret = yaml.safe_load(documented_values.read_text())["store"]["existingSecret"]
    assert not [m for m in manifests if m["kind"] == "Secret" and "TWINRAY_STORE_SECRET_KEY" in m.get("stringData", {})]
    for container in ray_containers(manifests):
        env = {e["name"]: e for e in container.get("env", [])}
        if container["name"] == "ray-job-submitter":
            continue
        assert STORE_KEYS <= set(env)
        for key in ("TWINRAY_STORE_ACCESS_KEY", "TWINRAY_STORE_SECRET_KEY"):
            assert "value" not in env[key]
            assert env[key]["valueFrom"]["secretKeyRef"] == {"name": secret, "key": key}


def test_the_secret_the_chart_makes_is_the_one_twinray_train_k8s_reads(chart):
    """`--k8s` pods read every TWINRAY_STORE_* key from the release's <fullname>-store Secret (named as the CLI
    names it). The credentials passed at install time appear in that Secret and nowhere else."""
    assert chart.release == RELEASE
    manifests = chart.render(sets=chart.credentials)
    secret = chart.one(manifests, "Secret", f"{fullname(RELEASE)}-store")
    assert set(secret["stringData"]) == STORE_KEYS
    assert secret["stringData"]["TWINRAY_STORE_SECRET_KEY"] == "test-secret-key"
    elsewhere = yaml.safe_dump_all([m for m in manifests if m is not secret])
    assert "test-secret-key" not in elsewhere and "test-access" not in elsewhere


def test_the_training_jobs_are_the_cli_training_commands(chart):
    values = yaml.safe_load((chart.path / "values.yaml").read_text())
    schema = yaml.safe_load((chart.path / "values.schema.json").read_text())
    assert set(values["training"]["jobs"]) == set(TRAIN_SPECS)
    assert set(schema["properties"]["training"]["properties"]["jobs"]["properties"]) == set(TRAIN_SPECS)


def test_each_enabled_job_runs_a_command_the_cli_accepts(chart):
    """gpu.yaml's jobs, parsed by the real `twinray` parser: model, workers, --gpus and the extra flags."""
    values = chart.root / "deploy" / "helm" / "values" / "gpu.yaml"
    jobs = [m for m in chart.render(values) if m["kind"] == "RayJob"]
    assert {job["metadata"]["labels"]["twinray.io/model"] for job in jobs} == {"segmentation", "detection"}
    for job in jobs:
        words = shlex.split(job["spec"]["entrypoint"])
        assert words[:2] == ["twinray", "train"]
        args = build_parser().parse_args(words[1:])
        workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        assert args.model == job["metadata"]["labels"]["twinray.io/model"]
        assert args.workers == workers["replicas"] == workers["minReplicas"] == workers["maxReplicas"]
        assert args.gpus and workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert job["spec"]["rayClusterSpec"]["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"
    detection = next(job for job in jobs if job["metadata"]["labels"]["twinray.io/model"] == "detection")
    assert build_parser().parse_args(shlex.split(detection["spec"]["entrypoint"])[1:]).variant == "attention"
