"""The gRPC ingress as Kubernetes and clients meet it, on a `twinray up` of its own: grpc.health.v1
without routing metadata, TLS and the bearer token inside Ray Serve's proxy, one trace across
Detection -> NormalSynthesis -> Segmentation (spans exported by the replicas over OTLP to a collector
in this test), and no patient identifier or credential in answers, spans or Ray's logs.

Its own Ray, because the proxy reads TLS and the token once, at start (the session's Ray has
neither); an S3 store (moto) it can stop; tiny untrained models it publishes. The tests run in file
order on that one cluster: before any model, with models, store stopped, then the log scan.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections.abc import Iterator, Mapping
from concurrent import futures
from pathlib import Path

import grpc
import numpy as np
import pydicom
import pytest
import torch
import yaml
from grpc_health.v1 import health_pb2, health_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc
from opentelemetry.sdk.trace import TracerProvider
from pydicom.data import get_testdata_file

from twinray.services import SERVE_CONFIG
from twinray.services.cli.main import main
from twinray.services.common.client import open_channel
from twinray.services.detection.client import detect
from twinray.services.segmentation.client import segment
from twinray.shared.data.phantoms.dataset import read_phantom_split, write_phantom_dataset
from twinray.shared.models.detection.network import DetectorConfig, LesionDetector
from twinray.shared.models.normal_synthesis.network import AnatomyConditionedGenerator, SpadeConfig
from twinray.shared.models.segmentation.network import AnatomySegmenter, SegmenterConfig
from twinray.shared.platform.imaging import encode_png_u16
from twinray.shared.platform.registry import ModelRegistry
from twinray.shared.platform.storage.minio_store import MinioStore
from twinray.shared.synthesis.twin_residuals import write_twin_residuals
from twinray.v1 import common_pb2, defect_generation_pb2, defect_generation_pb2_grpc, segmentation_pb2, segmentation_pb2_grpc

pytestmark = pytest.mark.integration

TOKEN = f"tok-{secrets.token_hex(16)}"
STORE_KEY, STORE_SECRET = f"ak-{secrets.token_hex(6)}", f"sk-{secrets.token_hex(16)}"
SERVING, NOT_SERVING = health_pb2.HealthCheckResponse.SERVING, health_pb2.HealthCheckResponse.NOT_SERVING
SERVICES = ("twinray.v1.Segmentation", "twinray.v1.NormalSynthesis", "twinray.v1.Detection")


@pytest.fixture(scope="module")
def secret_values(patient: Mapping[str, str]) -> list[str]:
    """What must show nowhere: the credentials and this patient's identifiers (and name parts)."""
    return [TOKEN, STORE_SECRET, *patient.values(), "Qzxv", "Wkyj"]


class Collector(trace_service_pb2_grpc.TraceServiceServicer):
    """An OTLP/gRPC trace receiver that keeps every span it is sent, with its service.name."""

    def __init__(self) -> None:
        self.spans: list[tuple[str, object]] = []
        self._lock = threading.Lock()

    def Export(self, request, context):  # noqa: N802 - the generated servicer's name
        with self._lock:
            for resource_spans in request.resource_spans:
                attributes = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope in resource_spans.scope_spans:
                    self.spans.extend((attributes.get("service.name", ""), span) for span in scope.spans)
        return trace_service_pb2.ExportTraceServiceResponse()

    def collected(self) -> list[tuple[str, object]]:
        with self._lock:
            return list(self.spans)


@dataclasses.dataclass
class Cluster:
    grpc_port: int
    tls_port: int
    cert: Path
    store: MinioStore
    moto: object
    collector: Collector
    ray_dir: Path
    output: Path

    def plain(self) -> grpc.Channel:
        return grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")

    def tls(self, token: str = "", ca: Path | None = None) -> grpc.Channel:
        return open_channel(f"localhost:{self.tls_port}", token=token, tls_ca_file=str(ca or self.cert))


def _serve_config(directory: Path) -> Path:
    """The project's Serve config without defect-generation (a diffusion replica this test does not call)."""
    config = yaml.safe_load(SERVE_CONFIG.read_text())
    config["applications"] = [app for app in config["applications"] if app["name"] != "defect-generation"]
    path = directory / "serve_config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory, free_ports, self_signed) -> Iterator[Cluster]:
    from moto.server import ThreadedMotoServer

    home = tmp_path_factory.mktemp("ingress")
    grpc_port, http_port, tls_port, moto_port, otlp_port = free_ports(5)
    moto = ThreadedMotoServer(ip_address="127.0.0.1", port=moto_port, verbose=False)
    moto.start()
    store = MinioStore(f"127.0.0.1:{moto_port}", STORE_KEY, STORE_SECRET, bucket=f"ingress-{secrets.token_hex(4)}")
    store.put_bytes("created", b"")  # the bucket exists before the replicas look
    collector = Collector()
    otlp = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(collector, otlp)
    otlp.add_insecure_port(f"127.0.0.1:{otlp_port}")
    otlp.start()
    cert, key = self_signed(home, "server")
    ray_dir = Path(tempfile.mkdtemp(prefix="rt-", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    env = {k: v for k, v in os.environ.items() if not k.startswith("TWINRAY_") and k != "RAY_ADDRESS"}
    env.update(
        RAY_USAGE_STATS_ENABLED="0",
        RAY_AUTH_MODE="disabled",
        RAY_TMPDIR=str(ray_dir),
        TWINRAY_HOME=str(home / "home"),
        TWINRAY_GRPC_PORT=str(grpc_port),
        TWINRAY_HTTP_PORT=str(http_port),
        TWINRAY_TLS_PORT=str(tls_port),
        TWINRAY_TLS_CERT_FILE=str(cert),
        TWINRAY_TLS_KEY_FILE=str(key),
        TWINRAY_AUTH_TOKEN=TOKEN,
        TWINRAY_STORE_ENDPOINT=store.endpoint,
        TWINRAY_STORE_ACCESS_KEY=STORE_KEY,
        TWINRAY_STORE_SECRET_KEY=STORE_SECRET,
        TWINRAY_STORE_BUCKET=store.bucket,
        TWINRAY_OTEL_EXPORTER="otlp",
        TWINRAY_OTEL_ENDPOINT=f"http://127.0.0.1:{otlp_port}",
    )
    output = home / "twinray-up.log"
    command = [str(Path(sys.executable).with_name("twinray")), "up", "--config", str(_serve_config(home))]
    with open(output, "wb") as log:  # its own process group: teardown ends exactly what it started
        process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 480
        while b"serving " not in output.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"twinray up did not start:\n{output.read_text(errors='replace')[-3000:]}")
            time.sleep(1)
        yield Cluster(grpc_port, tls_port, cert, store, moto, collector, ray_dir, output)
    finally:
        process.send_signal(signal.SIGINT)  # `twinray up` returns, and its Ray shuts down with it
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        otlp.stop(None)
        with contextlib.suppress(Exception):
            moto.stop()
        shutil.rmtree(ray_dir, ignore_errors=True)


def check(channel: grpc.Channel, service: str, *, metadata=(), timeout: float = 10.0) -> int:
    request = health_pb2.HealthCheckRequest(service=service)
    return health_pb2_grpc.HealthStub(channel).Check(request, metadata=metadata, timeout=timeout).status


def wait_for_status(channel: grpc.Channel, service: str, expected: int, timeout_s: float = 180.0) -> None:
    deadline = time.monotonic() + timeout_s
    while (status := check(channel, service)) != expected:
        assert time.monotonic() < deadline, f"{service!r} stayed {health_pb2.HealthCheckResponse.ServingStatus.Name(status)}"
        time.sleep(1)


# --- before any model is published --------------------------------------------------------------


def test_health_answers_without_routing_metadata_and_says_not_serving_before_models(cluster):
    with cluster.plain() as plain, cluster.tls() as tls:
        for channel in (plain, tls):  # no `application` metadata, no token: what a Kubernetes probe sends
            assert check(channel, "liveness") == SERVING
            assert check(channel, "") == NOT_SERVING
            for service in SERVICES:
                assert check(channel, service) == NOT_SERVING, service
            # registered on this port (grpc_servicer_functions) but its application is not deployed
            assert check(channel, "twinray.v1.DefectGeneration") == NOT_SERVING
            with pytest.raises(grpc.RpcError) as unknown:
                check(channel, "twinray.v1.Nope")
            assert unknown.value.code() == grpc.StatusCode.NOT_FOUND and "\n" not in unknown.value.details()
            assert "unknown service 'twinray.v1.Nope'" in unknown.value.details()
            watch = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(service=""), timeout=10)
            with pytest.raises(grpc.RpcError) as unimplemented:
                next(iter(watch))
            assert unimplemented.value.code() == grpc.StatusCode.UNIMPLEMENTED


def test_without_health_in_the_proxy_serve_could_not_route_a_probe(cluster):
    """The reason for the design: Serve routes a call without `application` metadata nowhere when
    more than one application runs (here: an authorised Segment call without it)."""
    with cluster.tls(TOKEN) as channel:
        stub = segmentation_pb2_grpc.SegmentationStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            stub.Segment(segmentation_pb2.SegmentRequest(), timeout=30)
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "Application metadata not set" in info.value.details()


# --- TLS and the token ------------------------------------------------------------------------------


def _empty_segment(channel: grpc.Channel) -> grpc.RpcError:
    """An empty Segment request: past the ingress it is INVALID_ARGUMENT ("image is empty")."""
    with pytest.raises(grpc.RpcError) as info:
        segment(channel, common_pb2.Image(), timeout_s=30)
    return info.value


def test_tls_handshake_with_the_servers_certificate_and_no_other(cluster, tmp_path, self_signed):
    with cluster.tls(TOKEN) as channel:
        assert _empty_segment(channel).code() == grpc.StatusCode.INVALID_ARGUMENT  # reached the service
    other_ca, _ = self_signed(tmp_path, "other")
    with cluster.tls(TOKEN, ca=other_ca) as channel:
        assert _empty_segment(channel).code() == grpc.StatusCode.UNAVAILABLE  # the handshake fails: nothing is sent


def test_the_plaintext_port_answers_health_only(cluster):
    with open_channel(f"127.0.0.1:{cluster.grpc_port}", token=TOKEN) as channel:
        refused = _empty_segment(channel)
        assert check(channel, "liveness") == SERVING
    assert refused.code() == grpc.StatusCode.UNAUTHENTICATED
    assert (
        refused.details()
        == f"this port is plaintext and answers grpc.health.v1 only: call TwinRay over TLS on port {cluster.tls_port}"
    )


@pytest.mark.parametrize(
    "metadata, reason",
    [
        ([], "missing metadata 'authorization: Bearer <token>'"),
        ([("authorization", f"Bearer {TOKEN}x")], "the bearer token is not valid"),
        ([("authorization", f"Bearer {TOKEN[:-1]}")], "the bearer token is not valid"),
        ([("authorization", f"Basic {TOKEN}")], "the 'authorization' metadata must be 'Bearer <token>'"),
        ([("authorization", "Bearer ")], "the 'authorization' metadata must be 'Bearer <token>'"),
    ],
    ids=["none", "longer", "shorter", "basic", "empty"],
)
def test_every_rpc_without_the_token_is_unauthenticated(cluster, metadata, reason):
    with cluster.tls() as channel:
        routed = [("application", "segmentation"), *metadata]
        calls = {
            "unary": lambda: segmentation_pb2_grpc.SegmentationStub(channel).Segment(
                segmentation_pb2.SegmentRequest(), metadata=routed, timeout=30
            ),
            "server-streaming": lambda: list(
                defect_generation_pb2_grpc.DefectGenerationStub(channel).GenerateDataset(
                    defect_generation_pb2.GenerateDatasetRequest(),
                    metadata=[("application", "defect-generation"), *metadata],
                    timeout=30,
                )
            ),
        }
        for kind, call in calls.items():
            with pytest.raises(grpc.RpcError) as info:
                call()
            assert info.value.code() == grpc.StatusCode.UNAUTHENTICATED, kind
            assert info.value.details() == reason and TOKEN not in info.value.details()


def test_with_the_token_a_stream_passes_the_ingress(cluster):
    """Past the guard, Serve answers for itself: defect-generation is not deployed here."""
    with cluster.tls(TOKEN) as channel:
        stub = defect_generation_pb2_grpc.DefectGenerationStub(channel)
        with pytest.raises(grpc.RpcError) as info:
            list(
                stub.GenerateDataset(
                    defect_generation_pb2.GenerateDatasetRequest(), metadata=[("application", "defect-generation")], timeout=30
                )
            )
    assert info.value.code() == grpc.StatusCode.NOT_FOUND and "defect-generation" in info.value.details()


# --- with models -----------------------------------------------------------------------------------


def _publish(registry: ModelRegistry, name: str, module: torch.nn.Module, config: dict, **extra) -> int:
    weights = io.BytesIO()
    torch.save(module.state_dict(), weights)
    fields = {"metrics": {}, "training": {}, **extra}
    return registry.publish(name, weights=weights.getvalue(), config=config, card="test", **fields).version


@pytest.fixture(scope="module")
def published(cluster) -> bytes:
    """Tiny untrained segmenter, twin generator and attention detector (trained on that generator's
    residuals, as `twinray train detection` records it); returns a 64 px phantom PNG to send."""
    registry = ModelRegistry(cluster.store)
    torch.manual_seed(0)
    segmenter = AnatomySegmenter(SegmenterConfig(input_size=64, channels=(4, 8)))
    seg = _publish(registry, "segmentation", segmenter, segmenter.config.to_dict())
    generator = AnatomyConditionedGenerator(SpadeConfig(input_size=32, channels=(4, 8), n_blocks=1, hidden=4))
    _publish(registry, "normal-synthesis", generator, {**generator.config.to_dict(), "segmentation_version": seg})
    write_phantom_dataset(cluster.store, "phantoms", size=64, splits={"test": 2}, seed=5, progress=False)
    residuals = write_twin_residuals(cluster.store, model="normal-synthesis", dataset="phantoms", progress=False)
    config = DetectorConfig(input_size=64, fpn_channels=16, attention_hidden=4, score_threshold=0.0, detections_per_image=4)
    detector = LesionDetector(dataclasses.replace(config, variant="attention"))
    training = {"twin_residuals": {"name": residuals["name"], "model": residuals["model"]}}
    _publish(registry, "detection", detector, detector.config.to_dict(), training=training, metrics={"val_score_threshold": 0.0})
    return encode_png_u16(read_phantom_split(cluster.store, "phantoms", "test").image[0])


def test_health_turns_serving_once_the_models_load(cluster, published):
    with cluster.plain() as channel:
        for service in SERVICES:
            wait_for_status(channel, service, SERVING)
        assert check(channel, "") == SERVING  # every service the health app covers here


def test_the_twinray_client_speaks_tls_and_sends_the_token(cluster, published, tmp_path, capsys):
    image, out = tmp_path / "phantom.png", tmp_path / "labels.png"
    image.write_bytes(published)
    address = ["--address", f"localhost:{cluster.tls_port}", "--tls-ca", str(cluster.cert)]
    assert main(["client", "segment", str(image), "--out", str(out), *address, "--token", TOKEN]) == 0
    assert out.read_bytes().startswith(b"\x89PNG") and "segmentation v1" in capsys.readouterr().out
    assert main(["client", "segment", str(image), "--out", str(out), *address]) == 1
    assert "UNAUTHENTICATED: missing metadata 'authorization: Bearer <token>'" in capsys.readouterr().err


def _spans_between(cluster: Cluster, start_ns: int, end_ns: int, names: set[str], timeout_s: float = 60) -> list:
    """The collected spans that started in [start_ns, end_ns], once every name in `names` is among
    them, plus one export interval (5 s) for stragglers."""
    deadline = time.monotonic() + timeout_s
    while True:
        spans = [(s, span) for s, span in cluster.collector.collected() if start_ns <= span.start_time_unix_nano <= end_ns]
        if names <= {span.name for _, span in spans}:
            break
        assert time.monotonic() < deadline, f"spans never arrived: {sorted(names - {span.name for _, span in spans})}"
        time.sleep(0.5)
    time.sleep(6)
    return [(s, span) for s, span in cluster.collector.collected() if start_ns <= span.start_time_unix_nano <= end_ns]


def test_one_detect_call_is_one_trace_across_the_composed_services(cluster, published):
    client = TracerProvider().get_tracer("external-client")  # the caller's own tracer, not the process-wide one
    time.sleep(6)  # spans of earlier calls have been exported (every 5 s)
    start = time.time_ns()
    with cluster.tls(TOKEN) as channel, client.start_as_current_span("external call") as caller:
        response = detect(channel, common_pb2.Image(png=published), min_score=0.0, timeout_s=120)
    end = time.time_ns()
    trace_id = caller.get_span_context().trace_id
    assert response.provenance.trace_id == f"{trace_id:032x}"
    names = {
        "twinray.v1.Detection/Detect",
        "twinray.v1.NormalSynthesis/Synthesize",
        "twinray.v1.Segmentation/Segment",
        "model detection",
        "model normal-synthesis",
        "model segmentation",
    }
    spans = _spans_between(cluster, start, end, names)
    assert {span.trace_id for _, span in spans} == {trace_id.to_bytes(16, "big")}  # nothing of this call in another trace
    by_name = {span.name: (service, span) for service, span in spans}
    assert len(spans) == len(by_name) == len(names)

    def parent(name: str) -> bytes:
        return by_name[name][1].parent_span_id

    def span_id(name: str) -> bytes:
        return by_name[name][1].span_id

    assert parent("twinray.v1.Detection/Detect") == caller.get_span_context().span_id.to_bytes(8, "big")
    assert parent("twinray.v1.NormalSynthesis/Synthesize") == span_id("twinray.v1.Detection/Detect")
    assert parent("twinray.v1.Segmentation/Segment") == span_id("twinray.v1.NormalSynthesis/Synthesize")
    assert parent("model detection") == span_id("twinray.v1.Detection/Detect")
    assert parent("model normal-synthesis") == span_id("twinray.v1.NormalSynthesis/Synthesize")
    assert parent("model segmentation") == span_id("twinray.v1.Segmentation/Segment")
    assert {name: service for name, (service, _) in by_name.items()} == {
        "twinray.v1.Detection/Detect": "twinray-detection",
        "model detection": "twinray-detection",
        "twinray.v1.NormalSynthesis/Synthesize": "twinray-normal-synthesis",
        "model normal-synthesis": "twinray-normal-synthesis",
        "twinray.v1.Segmentation/Segment": "twinray-segmentation",
        "model segmentation": "twinray-segmentation",
    }


# --- patient data -------------------------------------------------------------------------------


def patient_dicom(patient: Mapping[str, str]) -> pydicom.Dataset:
    """pydicom's MR_small (64 x 64, 16 bit) as this patient's study."""
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for keyword, value in patient.items():
        setattr(dataset, keyword, value)
    return dataset


def dicom_bytes(dataset: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def quoting_files(data: bytes, secret_values: list[str], wanted: int = 4) -> list[bytes]:
    """Corrupt copies of `data` on which pydicom itself quotes patient data in its warnings (checked
    here, with every warning shown): what a replica must keep out of its logs."""
    rng, found = np.random.default_rng(3), []
    while len(found) < wanted:
        flipped = bytearray(data)
        for _ in range(3):
            flipped[rng.integers(0, 1500)] = rng.integers(0, 256)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            with contextlib.suppress(Exception):
                pydicom.dcmread(io.BytesIO(bytes(flipped)), force=True)
        if any(value in str(w.message) for w in caught for value in secret_values):
            found.append(bytes(flipped))
    return found


def test_no_patient_identifier_in_answers(cluster, published, patient, secret_values):
    good = dicom_bytes(patient_dicom(patient))
    multi_frame = patient_dicom(patient)
    multi_frame.NumberOfFrames = 2
    bad = [dicom_bytes(multi_frame), good[: len(good) - 100], *quoting_files(good, secret_values)]
    with cluster.tls(TOKEN) as channel:
        assert segment(channel, common_pb2.Image(dicom=good), timeout_s=60).label_map.height == 64
        for data in bad:
            try:
                segment(channel, common_pb2.Image(dicom=data), timeout_s=60)
            except grpc.RpcError as error:
                assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, error.details()
                assert not [value for value in secret_values if value in error.details()], error.details()


def test_no_patient_identifier_or_credential_in_any_span(cluster, published, secret_values):
    time.sleep(6)  # the last export interval
    spans = cluster.collector.collected()
    assert len(spans) > 10
    leaked = {value for _, span in spans for value in secret_values if value in str(span)}
    assert not leaked


def test_an_unreachable_store_makes_every_service_not_serving(cluster, published):
    cluster.moto.stop()
    with cluster.plain() as channel:
        for service in SERVICES:
            wait_for_status(channel, service, NOT_SERVING, timeout_s=60)
        assert check(channel, "") == NOT_SERVING
        assert check(channel, "liveness") == SERVING  # the ingress itself still answers


def test_no_patient_identifier_or_credential_in_rays_logs(cluster, secret_values):
    """Every log file of that Ray (proxy, controller, replicas, raylet, ...) and `twinray up`'s output."""
    files = [path for path in cluster.ray_dir.rglob("*") if path.is_file() and "logs" in path.parts] + [cluster.output]
    assert len(files) > 10 and any("replica" in path.name or "worker" in path.name for path in files)
    leaks = {f"{path.name}: {value}" for path in files for value in secret_values if value.encode() in path.read_bytes()}
    assert not leaks
