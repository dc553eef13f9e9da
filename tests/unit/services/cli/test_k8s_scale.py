"""`twinray scale`'s change to a RayService's serveConfigV2: APP's replicas only, the rest as it was."""

from __future__ import annotations

import pytest
import yaml

from twinray.services import SERVE_CONFIG
from twinray.services.cli.k8s_scale import Change, scale_serve_config
from twinray.shared.platform.errors import FailedPrecondition, InvalidInput, NotFound


def _apps_of(config: dict) -> dict[str, dict]:
    return {app["name"]: app for app in config["applications"]}


def _apps(serve_config: str) -> dict[str, dict]:
    return _apps_of(yaml.safe_load(serve_config))


def test_only_the_named_application_changes():
    before = SERVE_CONFIG.read_text()
    after, changes = scale_serve_config(before, "normal-synthesis", 3)
    assert changes == [Change("NormalSynthesis", "1", 3)]
    old, new = yaml.safe_load(before), yaml.safe_load(after)
    assert _apps(after)["normal-synthesis"]["deployments"] == [{"name": "NormalSynthesis", "num_replicas": 3}]
    _apps_of(new)["normal-synthesis"]["deployments"][0]["num_replicas"] = 1
    assert new == old  # every other application, and the proxy and gRPC options, as they were


def test_an_unknown_application_is_named_with_the_known_ones():
    with pytest.raises(NotFound) as error:
        scale_serve_config(SERVE_CONFIG.read_text(), "segmentaton", 2)
    known = ", ".join(_apps(SERVE_CONFIG.read_text()))  # segmentation, normal-synthesis, ...
    assert str(error.value) == f"no Serve application 'segmentaton'; the RayService has: {known}"


@pytest.mark.parametrize("replicas", [0, -1])
def test_replicas_below_one_are_refused(replicas):
    with pytest.raises(InvalidInput, match="must be 1 or more"):
        scale_serve_config(SERVE_CONFIG.read_text(), "segmentation", replicas)


def test_the_same_count_changes_nothing():
    assert scale_serve_config(SERVE_CONFIG.read_text(), "segmentation", 1)[1] == []


AUTOSCALED = """
applications:
  - name: detection
    import_path: twinray.services.detection.deployment:build_app
    deployments:
      - name: Detection
        autoscaling_config: {min_replicas: 1, max_replicas: 4, target_ongoing_requests: 2}
      - name: Batcher
        num_replicas: 2
"""


def test_an_autoscaled_deployment_is_refused_unless_its_autoscaling_is_replaced():
    with pytest.raises(FailedPrecondition) as error:
        scale_serve_config(AUTOSCALED, "detection", 3)
    assert "detection/Detection (autoscaling 1..4) is autoscaled" in str(error.value)
    assert "--replace-autoscaling" in str(error.value)
    after, changes = scale_serve_config(AUTOSCALED, "detection", 3, replace_autoscaling=True)
    assert changes == [Change("Detection", "autoscaling 1..4", 3), Change("Batcher", "2", 3)]
    assert _apps(after)["detection"]["deployments"] == [
        {"name": "Detection", "num_replicas": 3},
        {"name": "Batcher", "num_replicas": 3},
    ]


def test_num_replicas_auto_counts_as_autoscaled():
    config = "applications: [{name: a, deployments: [{name: A, num_replicas: auto}]}]"
    with pytest.raises(FailedPrecondition, match=r"a/A \(autoscaling \?\.\.\?\) is autoscaled"):
        scale_serve_config(config, "a", 2)


@pytest.mark.parametrize(
    ("config", "error", "message"),
    [
        ("applications: [{name: a}]", FailedPrecondition, "names no deployments"),
        ("applications: [{name: a", FailedPrecondition, "not valid YAML"),
        ("proxy_location: EveryNode", NotFound, "the RayService has: none"),
    ],
)
def test_configs_it_cannot_scale(config, error, message):
    with pytest.raises(error, match=message):
        scale_serve_config(config, "a", 2)
