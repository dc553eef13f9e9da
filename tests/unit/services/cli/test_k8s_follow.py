"""How a RayJob's status reads: only a Complete deployment whose Ray job SUCCEEDED is a success."""

from __future__ import annotations

import pytest

from twinray.services.cli.k8s_follow import outcome, progress


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ({}, "running"),
        ({"jobDeploymentStatus": "Initializing"}, "running"),
        ({"jobDeploymentStatus": "Running", "jobStatus": "SUCCEEDED"}, "running"),  # the cluster is still shutting down
        ({"jobDeploymentStatus": "Suspended"}, "running"),  # e.g. queued by Kueue
        ({"jobDeploymentStatus": "Complete", "jobStatus": "SUCCEEDED"}, "succeeded"),
        ({"jobDeploymentStatus": "Complete", "jobStatus": "STOPPED"}, "failed"),
        ({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED"}, "failed"),
        ({"jobDeploymentStatus": "Failed"}, "failed"),  # e.g. the cluster never came up before the deadline
        ({"jobDeploymentStatus": "ValidationFailed"}, "failed"),
    ],
)
def test_outcome(status, expected):
    assert outcome(status) == expected


def test_progress_names_both_states_and_the_message():
    assert progress({}) == "submitted, waiting for the operator"
    assert progress({"jobDeploymentStatus": "Initializing"}) == "Initializing"
    line = progress({"jobDeploymentStatus": "Failed", "jobStatus": "FAILED", "message": "exit code 1"})
    assert line == "Failed, job FAILED: exit code 1"
