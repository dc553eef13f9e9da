"""Bad values never reach a cluster: values.schema.json rejects malformed ones (bad_values/*.yaml, each
naming in its first line what helm must report), and the chart's own checks refuse missing credentials
and contradictory settings with a message that says what to set."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

BAD_VALUES = sorted(Path(__file__).with_name("bad_values").glob("*.yaml"))
SCHEMA_ERROR = "values don't meet the specifications of the schema"


@pytest.mark.parametrize("values", BAD_VALUES, ids=[path.stem for path in BAD_VALUES])
def test_the_schema_rejects_a_bad_values_file(chart, values: Path):
    expect = values.read_text().splitlines()[0].removeprefix("# expect: ")
    message = chart.render_error(values)
    assert SCHEMA_ERROR in message and expect in message, message


def test_lint_rejects_a_bad_values_file_too(chart):
    result = chart.helm("lint", "--strict", str(chart.path), "-f", str(BAD_VALUES[0]))
    assert result.returncode != 0 and SCHEMA_ERROR in result.stdout + result.stderr


def test_no_credential_has_a_default(chart):
    values = yaml.safe_load((chart.path / "values.yaml").read_text())
    assert values["store"]["accessKey"] == values["store"]["secretKey"] == values["auth"]["token"] == ""


@pytest.mark.parametrize(
    "sets, expect",
    [
        ((), "store.accessKey is empty"),  # the chart's defaults: in-chart MinIO, and no credentials anywhere
        (("--set", "store.accessKey=a"), "store.secretKey is empty"),
        (("--set", "store.accessKey=a", "--set", "store.secretKey=short"), "at least 8 characters"),
        (("--set", "minio.enabled=false", "--set", "store.existingSecret=s"), "needs a shared artifact store"),
        (("--set", "store.endpoint=s3.example.com", "--set", "store.existingSecret=s"), "not both"),
        (("--set", "store.secure=true", "--set", "store.existingSecret=s"), "needs an external endpoint"),
        (("--set", "auth.enabled=true", "--set", "store.existingSecret=s"), "auth.existingSecret"),
        (("--set", "tls.enabled=true", "--set", "store.existingSecret=s"), "tls.secretName"),
        (
            (
                "--set",
                "tls.enabled=true",
                "--set",
                "tls.secretName=t",
                "--set",
                "tls.port=9000",
                "--set",
                "store.existingSecret=s",
            ),
            "tls.port",
        ),
    ],
)
def test_the_chart_refuses_what_the_schema_cannot_see(chart, sets: tuple[str, ...], expect: str):
    message = chart.render_error(sets=sets)
    assert SCHEMA_ERROR not in message and expect in message, message
