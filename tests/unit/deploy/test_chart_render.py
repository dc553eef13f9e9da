"""Every documented values file lints and renders, and every built-in object it renders is valid for the
oldest and newest Kubernetes the chart supports (kubernetes-validate's offline OpenAPI schemas, strict:
an unknown or misplaced field is an error, as `kubectl apply --validate=strict` would make it)."""

from __future__ import annotations

from pathlib import Path

import kubernetes_validate
import pytest
import yaml

KUBERNETES = ("1.27", "1.37")  # Chart.yaml's kubeVersion floor (native gRPC probes) and kubernetes-validate's newest
CUSTOM_KINDS = {"RayService", "RayJob", "ServiceMonitor"}  # custom resources: test_kuberay_crds.py for the Ray ones


def test_values_files_are_documented(documented_values: Path):
    """Each example says what it is for in a header comment before any value."""
    header = documented_values.read_text().splitlines()[0]
    assert header.startswith(f"# {documented_values.name}: "), header


def test_helm_lint_strict(chart, documented_values: Path):
    result = chart.helm("lint", "--strict", str(chart.path), "-f", str(documented_values))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[WARNING]" not in result.stdout and "[ERROR]" not in result.stdout, result.stdout


@pytest.mark.parametrize("kubernetes", KUBERNETES)
def test_every_built_in_object_validates(chart, documented_values: Path, kubernetes: str):
    manifests = chart.render(documented_values)
    built_in = [m for m in manifests if m["kind"] not in CUSTOM_KINDS]
    assert {"Service", "NetworkPolicy", "PodDisruptionBudget"} <= {m["kind"] for m in built_in}
    for manifest in built_in:
        kubernetes_validate.validate(manifest, kubernetes, strict=True)


@pytest.mark.parametrize("kubernetes", KUBERNETES)
def test_pod_templates_inside_the_ray_resources_validate(chart, documented_values: Path, kubernetes: str):
    """KubeRay copies these pod templates into pods and the serving Service into a Service: validate them as such."""
    for manifest in chart.render(documented_values):
        if manifest["kind"] == "RayService":
            cluster = manifest["spec"]["rayClusterConfig"]
            service = {"apiVersion": "v1", "kind": "Service", **manifest["spec"]["serveService"]}
            kubernetes_validate.validate(service, kubernetes, strict=True)
        elif manifest["kind"] == "RayJob":
            cluster = manifest["spec"]["rayClusterSpec"]
            _validate_pod_template(manifest["spec"]["submitterPodTemplate"], kubernetes)
        else:
            continue
        _validate_pod_template(cluster["headGroupSpec"]["template"], kubernetes)
        for group in cluster["workerGroupSpecs"]:
            _validate_pod_template(group["template"], kubernetes)


def _validate_pod_template(template: dict, kubernetes: str) -> None:
    pod_template = {"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": "t"}, "template": template}
    kubernetes_validate.validate(pod_template, kubernetes, strict=True)


def test_the_validator_rejects_a_misspelt_field(chart):
    """The strict validation above is not a formality: one wrong key in a Deployment fails it."""
    deployment = chart.one(chart.render(sets=(*chart.credentials, "--set", "triton.enabled=true")), "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbes"] = container.pop("readinessProbe")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, KUBERNETES[0], strict=True)


def test_packaged_chart_renders_the_same(chart, tmp_path: Path):
    """`helm package` keeps files/serve_config.yaml: the .tgz an operator installs renders what the tree does."""
    result = chart.helm("package", str(chart.path), "--destination", str(tmp_path))
    assert result.returncode == 0, result.stderr
    (package,) = tmp_path.glob("twinray-*.tgz")
    packaged = chart.template(sets=chart.credentials, chart=package)
    assert packaged.returncode == 0, packaged.stderr
    assert [doc for doc in yaml.safe_load_all(packaged.stdout) if doc] == chart.render(sets=chart.credentials)
