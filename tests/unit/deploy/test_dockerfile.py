"""The Dockerfile, checked without a Docker engine (none exists here): it parses, its base image is the Ray
and Python that pyproject.toml pins, it generates the protobuf code as the Makefile does, and the image
gets the project only as its wheel, so pyproject.toml stays the one dependency list."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[3]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


@pytest.fixture(scope="module")
def dockerfile() -> DockerfileParser:
    return DockerfileParser(str(ROOT / "Dockerfile"))


def instructions(dockerfile: DockerfileParser, kind: str) -> list[str]:
    return [i["value"] for i in dockerfile.structure if i["instruction"] == kind]


def stages(dockerfile: DockerfileParser) -> list[list[dict]]:
    """The instructions of each build stage, in order."""
    out: list[list[dict]] = []
    for instruction in dockerfile.structure:
        if instruction["instruction"] == "FROM":
            out.append([])
        if out:
            out[-1].append(instruction)
    return out


def test_base_image_is_the_pinned_ray_on_python_311(dockerfile: DockerfileParser):
    ray = next(d for d in PYPROJECT["project"]["dependencies"] if d.startswith("ray["))
    ray_version = ray.split("==")[1]
    assert PYPROJECT["project"]["requires-python"].startswith(">=3.11")  # py311 images
    assert set(dockerfile.parent_images) == {f"rayproject/ray:{ray_version}-py311"}
    assert len(dockerfile.parent_images) == 2  # builder + runtime, the same base


def test_protobuf_code_is_generated_as_the_makefile_does(dockerfile: DockerfileParser):
    rule = re.search(r"grpc_tools\.protoc (.*) \$<", (ROOT / "Makefile").read_text())
    assert rule, "the Makefile's protoc rule moved"
    (builder_run,) = [i["value"] for i in stages(dockerfile)[0] if i["instruction"] == "RUN" and "protoc" in i["value"]]
    assert f"python -m grpc_tools.protoc {rule.group(1)} protos/twinray/v1/*.proto" in builder_run


def test_the_grpcio_tools_pin_is_read_from_pyproject(dockerfile: DockerfileParser):
    """The builder's one extra install is pyproject's own grpcio-tools line: run its reader here and compare."""
    (builder_run,) = [i["value"] for i in stages(dockerfile)[0] if i["instruction"] == "RUN" and "protoc" in i["value"]]
    reader = re.search(r"GRPC_TOOLS=\"\$\((python -c '[^']*')\)\"", builder_run)
    assert reader, builder_run
    words = shlex.split(reader.group(1))
    printed = subprocess.run([sys.executable, *words[1:]], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
    assert printed in PYPROJECT["project"]["dependencies"] and printed.startswith("grpcio-tools==")


def pip_installs(run: str) -> list[list[str]]:
    """The arguments (options dropped) of every `pip install` in a RUN line."""
    lexer = shlex.shlex(run, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    commands: list[list[str]] = [[]]
    for word in lexer:
        if word in ("&&", ";", "||", "|"):
            commands.append([])
        else:
            commands[-1].append(word)
    out = []
    for words in commands:
        if words[1:4] == ["-m", "pip", "install"] or words[:2] == ["pip", "install"]:
            out.append([w for w in words[words.index("install") + 1 :] if not w.startswith("-")])
    return out


def test_the_image_installs_the_project_wheel_and_no_hand_written_dependency(dockerfile: DockerfileParser):
    builder, runtime = stages(dockerfile)
    runtime_installs = [args for i in runtime if i["instruction"] == "RUN" for args in pip_installs(i["value"])]
    assert runtime_installs == [["/tmp/wheels/twinray-*.whl"]]
    builder_installs = [args for i in builder if i["instruction"] == "RUN" for args in pip_installs(i["value"])]
    assert builder_installs == [["${GRPC_TOOLS}"]]
    (wheel,) = [i["value"] for i in builder if i["instruction"] == "RUN" and "pip wheel" in i["value"]]
    assert "pip wheel --no-cache-dir --no-deps --wheel-dir /home/ray/wheels ." in wheel
    copies = [i["value"] for i in runtime if i["instruction"] == "COPY"]
    assert copies == ["--from=builder --chown=ray:users /home/ray/wheels /tmp/wheels"]  # no sources in the image


def docker_pattern(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern as Docker reads it: `*` and `?` stay within one path element, `**` crosses them."""
    regex, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            regex, i = regex + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            regex, i = regex + ".*", i + 2
        else:
            regex, i = regex + {"*": "[^/]*", "?": "[^/]"}.get(pattern[i], re.escape(pattern[i])), i + 1
    return re.compile(regex + r"\Z")


def ignored(path: str, patterns: list[re.Pattern[str]]) -> bool:
    """Left out of the context: a pattern matches the path or one of its parent folders."""
    parts = path.split("/")
    return any(pattern.match("/".join(parts[:n])) for pattern in patterns for n in range(1, len(parts) + 1))


def test_the_build_context_holds_what_the_wheel_needs_and_no_local_state():
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    lines = [line for line in lines if line and not line.startswith("#")]
    assert not [line for line in lines if line.startswith("!")]  # no exceptions: ignored() does not model them
    patterns = [docker_pattern(line) for line in lines]
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    needed = ["pyproject.toml", "setup.py", "README.md", "services/serve_config.yaml", "shared/data/real_statistics.json"]
    needed += [f for f in tracked if f.startswith(("shared/", "services/", "training/")) and f.endswith(".py")]
    needed += [f for f in tracked if f.startswith("protos/") and f.endswith(".proto")]
    assert [f for f in needed if ignored(f, patterns)] == []
    for local in (
        ".venv/bin/python",
        ".git/HEAD",
        ".twinray/store/x",
        "protos/twinray/v1/common_pb2.py",
        "shared/__pycache__/x.pyc",
    ):
        assert ignored(local, patterns), local
