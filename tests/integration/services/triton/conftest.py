"""A real Triton server on loopback, once per session, serving the repository that `twinray export
triton` wrote into the loopback S3 server (moto): the `tritonserver` that nvidia-pytriton bundles,
from `.venv-triton` (`make triton-env`), its python backend running each model.py with that env's
numpy and onnxruntime.

How the bundled server finds its Python: the python backend starts `triton_python_backend_stub`
from `<backend-directory>/python/`, a binary linked against libpython3.X that pytriton ships per
Python version (tritonserver/python_backend_stubs/3.X/); the stub's interpreter takes its prefix
(and so site-packages) from the first `python3` on PATH, and libpython from LD_LIBRARY_PATH. So
the backend directory is assembled here with the stub of .venv-triton's Python, PATH starts with
.venv-triton/bin, and LD_LIBRARY_PATH holds pytriton's bundled libraries and that Python's LIBDIR
(pyenv's Python is not on the default linker path).
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from twinray.shared.platform.config import Settings
from twinray.shared.platform.registry import MANIFEST, ModelRegistry
from twinray.shared.platform.storage import ArtifactStore, open_store
from twinray.training.triton.repository import ExportOptions, export_triton

REPO = Path(__file__).resolve().parents[4]
TRITON_VENV = REPO / ".venv-triton"
STARTUP_S = 180  # loading a model starts a python stub process and an onnxruntime session: slow on 2 shared cores
MISSING = f"{TRITON_VENV} has no nvidia-pytriton: build it with `make triton-env` (part of `make test`)"
# The served networks exported in this session (the DDPMs share one exporter: defect-masks stands for both).
EXPORTED = ("segmentation", "normal-synthesis", "matching-pairs", "detection", "defect-masks")
# A long batching window, so that concurrent test requests are batched together by Triton.
OPTIONS = ExportOptions(max_batch_size=8, queue_delay_us=200_000)


def _venv_python() -> tuple[Path, str, str]:
    """(python, its X.Y, its LIBDIR) of .venv-triton."""
    python = TRITON_VENV / "bin" / "python"
    if not python.exists():
        pytest.fail(MISSING)
    code = (
        "import sys, sysconfig; print(f'{sys.version_info[0]}.{sys.version_info[1]}'); print(sysconfig.get_config_var('LIBDIR'))"
    )
    version, libdir = subprocess.run([python, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return python, version, libdir


def _pytriton_dir(version: str) -> Path:
    found = TRITON_VENV / "lib" / f"python{version}" / "site-packages" / "pytriton"
    if not (found / "tritonserver" / "bin" / "tritonserver").exists():
        pytest.fail(MISSING)
    return found


def _backend_directory(pytriton: Path, version: str, home: Path) -> Path:
    """backends/python with pytriton's backend library and the stub built for `version`."""
    source = pytriton / "tritonserver"
    python = home / "backends" / "python"
    python.mkdir(parents=True)
    for name in ("libtriton_python.so", "triton_python_backend_utils.py"):
        (python / name).symlink_to(source / "backends" / "python" / name)
    stub = source / "python_backend_stubs" / version / "triton_python_backend_stub"
    if not stub.exists():
        pytest.fail(f"nvidia-pytriton ships no python backend stub for Python {version}: build .venv-triton with Python 3.8-3.13")
    (python / stub.name).symlink_to(stub)
    return home / "backends"


def _ready(url: str) -> bool:
    import tritonclient.grpc as triton
    from tritonclient.utils import InferenceServerException

    try:
        return triton.InferenceServerClient(url).is_server_ready(client_timeout=2)
    except InferenceServerException:
        return False


@pytest.fixture(scope="session")
def triton_store(moto_s3: Any) -> ArtifactStore:
    """The bucket Triton's repository lives in (models copied there, then exported)."""
    return moto_s3.store("triton-tests")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def copy_version(source: ArtifactStore, target: ArtifactStore, name: str, version: int) -> None:
    """A published version's objects into another store, its manifest last (as the registry writes)."""
    prefix = f"models/{name}/{version}/"
    keys = sorted(source.list(prefix), key=lambda key: key.endswith(MANIFEST))
    for key in keys:
        target.put_bytes(key, source.get_bytes(key))


@pytest.fixture(scope="session")
def triton_exported(
    trained_segmenter,
    trained_normal_synthesizer,
    trained_translator,
    trained_detector,
    trained_mask_ddpm,
    twinray_settings: Settings,
    triton_store: ArtifactStore,
) -> dict[str, Any]:
    """The session's tiny trained models, copied into the Triton bucket and exported there: the manifest."""
    source = open_store(twinray_settings)
    published = [trained_segmenter, trained_normal_synthesizer, trained_translator, trained_detector, trained_mask_ddpm]
    assert tuple(p.name for p in published) == EXPORTED
    for model in published:
        copy_version(source, triton_store, model.name, model.version)
    assert ModelRegistry(triton_store).versions("detection") == [trained_detector.version]
    return export_triton(triton_store, [f"{p.name}:{p.version}" for p in published], options=OPTIONS, log=lambda _: None)


def start_triton(moto_s3: Any, store: ArtifactStore, home: Path) -> tuple[subprocess.Popen, str]:
    """tritonserver on 127.0.0.1 serving s3://<moto>/<bucket>/triton; returns (process, gRPC host:port)."""
    python, version, libdir = _venv_python()
    pytriton = _pytriton_dir(version)
    port = _free_port()
    url = f"127.0.0.1:{port}"
    env = {
        **os.environ,
        "PATH": f"{python.parent}:{os.environ['PATH']}",
        "LD_LIBRARY_PATH": ":".join(
            [str(pytriton.parent / "nvidia_pytriton.libs"), libdir, os.environ.get("LD_LIBRARY_PATH", "")]
        ),
        "AWS_ACCESS_KEY_ID": moto_s3.access_key,
        "AWS_SECRET_ACCESS_KEY": moto_s3.secret_key,
        "AWS_DEFAULT_REGION": "us-east-1",
    }
    args = [
        str(pytriton / "tritonserver" / "bin" / "tritonserver"),
        f"--model-repository=s3://{moto_s3.endpoint}/{store.bucket}/triton",
        f"--backend-directory={_backend_directory(pytriton, version, home)}",
        f"--cache-directory={pytriton / 'tritonserver' / 'caches'}",
        "--grpc-address=127.0.0.1",
        f"--grpc-port={port}",
        "--allow-http=false",
        "--allow-metrics=false",
        "--allow-gpu-metrics=false",
        "--exit-timeout-secs=5",
    ]
    with open(home / "tritonserver.log", "wb") as log:
        process = subprocess.Popen(args, env=env, stdout=log, stderr=subprocess.STDOUT, cwd=home)
    deadline = time.monotonic() + STARTUP_S
    while not _ready(url):
        if process.poll() is not None or time.monotonic() > deadline:
            process.kill()
            lines = (home / "tritonserver.log").read_text(errors="replace").splitlines()
            errors = "\n".join(line for line in lines if line.startswith("E") or "UNAVAILABLE" in line)
            pytest.fail(
                f"tritonserver was not ready within {STARTUP_S} s (exit {process.poll()}):\n{errors}\n...\n"
                + "\n".join(lines[-15:])
            )
        time.sleep(0.5)
    return process, url


@pytest.fixture(scope="session")
def triton_server(moto_s3: Any, triton_store: ArtifactStore, triton_exported: dict, tmp_path_factory) -> Iterator[str]:
    """The gRPC address (host:port) of Triton serving every exported model, READY."""
    home = tmp_path_factory.mktemp("triton")
    process, url = start_triton(moto_s3, triton_store, home)
    try:
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
