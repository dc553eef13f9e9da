"""The rendered RayService and RayJobs against KubeRay's own CRD schemas (kuberay_crds/, copied unchanged
from the operator's chart; see its README). The API server prunes unknown fields of a custom resource
silently, so a misspelt field would just vanish: the schema is checked here with every object closed
(additionalProperties: false, except where the CRD preserves unknown fields), which makes it an error."""

from __future__ import annotations

from pathlib import Path

import jsonschema
import pytest
import yaml

CRDS = Path(__file__).with_name("kuberay_crds")


def errors(validator: jsonschema.Draft4Validator, manifest: dict) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(manifest)]


def test_the_crds_carry_their_licence():
    assert "Apache License" in (CRDS / "LICENSE").read_text()


def test_ray_resources_match_the_kuberay_crds(chart, documented_values: Path, kuberay_validators):
    manifests = chart.render(documented_values)
    ray = [m for m in manifests if m["apiVersion"] == "ray.io/v1"]
    assert sum(m["kind"] == "RayService" for m in ray) == 1
    for manifest in ray:
        assert errors(kuberay_validators[manifest["kind"]], manifest) == [], manifest["metadata"]["name"]


def test_every_training_job_matches_the_rayjob_crd(chart, kuberay_validators):
    """Every training command's RayJob, with GPUs and a deadline (no documented values file turns them all on)."""
    models = yaml.safe_load((chart.path / "values.yaml").read_text())["training"]["jobs"]
    sets = [
        *chart.credentials,
        "--set",
        "training.defaults.gpusPerWorker=1",
        "--set",
        "training.defaults.activeDeadlineSeconds=3600",
    ]
    for model in models:
        sets += ["--set", f"training.jobs.{model}.enabled=true"]
    jobs = [m for m in chart.render(sets=tuple(sets)) if m["kind"] == "RayJob"]
    assert len(jobs) == len(models) == 7
    for job in jobs:
        assert errors(kuberay_validators["RayJob"], job) == []


@pytest.mark.parametrize(
    "path, key",
    [
        (("spec",), "serveConfig"),  # the field is serveConfigV2
        (("spec", "rayClusterConfig"), "workerGroupSpec"),
        (("spec", "rayClusterConfig", "headGroupSpec", "template", "spec", "containers", 0), "envv"),
    ],
)
def test_a_misplaced_field_is_caught(chart, kuberay_validators, path: tuple, key: str):
    """The closed schema is what makes these errors: the CRD as published would let the API server prune them."""
    service = chart.one(chart.render(sets=chart.credentials), "RayService")
    target = service
    for step in path:
        target = target[step]
    target[key] = {}
    assert any(key in message for message in errors(kuberay_validators["RayService"], service))


def test_a_wrong_type_is_caught(chart, kuberay_validators):
    service = chart.one(chart.render(sets=chart.credentials), "RayService")
    service["spec"]["rayClusterConfig"]["workerGroupSpecs"][0]["replicas"] = "two"
    assert errors(kuberay_validators["RayService"], service)
