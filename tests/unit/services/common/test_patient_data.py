"""No patient identifier leaves the services' image gate (decode_image_message, where every DICOM is
decoded): not in error messages, spans, log records or warnings, for a valid study and for hundreds
of corrupt copies of it, on which pydicom itself quotes those header values (checked first)."""

from __future__ import annotations

import io
import logging
import warnings
from collections.abc import Mapping

import numpy as np
import pydicom
import pytest
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from pydicom.data import get_testdata_file

from twinray.services.common.image_input import decode_image_message
from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import TwinRayError
from twinray.shared.platform.imaging import ImageLimits
from twinray.shared.platform.storage import LocalStore
from twinray.shared.platform.telemetry import configure_tracing, keep_patient_data_out_of_logs, server_span
from twinray.v1 import common_pb2


@pytest.fixture(scope="module")
def identifiers(patient: Mapping[str, str]) -> list[str]:
    """The patient's identifiers and the parts of its names: none may show anywhere."""
    return [*patient.values(), "Qzxv", "Wkyj", "Rfgh"]


def study(patient: Mapping[str, str]) -> bytes:
    dataset = pydicom.dcmread(get_testdata_file("MR_small.dcm"))
    for keyword, value in patient.items():
        setattr(dataset, keyword, value)
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, dataset)
    return buffer.getvalue()


def variants(data: bytes) -> list[bytes]:
    """The study, cut short at 100 places and with 1-3 header bytes changed in 600 copies."""
    rng = np.random.default_rng(11)
    out = [data, *(data[:cut] for cut in rng.integers(1, len(data), 100))]
    for _ in range(600):
        flipped = bytearray(data)
        for _ in range(rng.integers(1, 4)):
            flipped[rng.integers(0, 1500)] = rng.integers(0, 256)
        out.append(bytes(flipped))
    return out


def leaks(texts: list[str], identifiers: list[str]) -> list[str]:
    return [text for text in texts if any(value in text for value in identifiers)]


@pytest.fixture(scope="module")
def files(patient: Mapping[str, str]) -> list[bytes]:
    return variants(study(patient))


def test_pydicom_quotes_patient_data_on_these_files(files, identifiers):
    """The control: without the guard, pydicom's warnings carry the identifiers (so the test below can fail)."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for data in files:
            try:
                pydicom.dcmread(io.BytesIO(data), force=True)
            except Exception:  # noqa: BLE001, S110 - only the warnings matter here
                pass
    assert leaks([str(w.message) for w in caught], identifiers)


class Collected(logging.Handler):
    """What a process's log handler (on the root logger, as in a replica) receives."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@pytest.fixture
def root_log():
    """Not caplog: pytest also hooks its handler onto loggers that do not propagate, which no process does."""
    root, handler = logging.getLogger(), Collected()
    level = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    yield handler.messages
    root.removeHandler(handler)
    root.setLevel(level)


def test_no_identifier_in_errors_spans_logs_or_warnings(files, identifiers, tmp_path, root_log):
    exporter = InMemorySpanExporter()
    configure_tracing(Settings.from_env({}), "test-patient-data", processor=SimpleSpanProcessor(exporter))
    store, limits = LocalStore(tmp_path, "twinray"), ImageLimits()
    messages = []
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        keep_patient_data_out_of_logs()  # what configure_tracing did at process start, after pytest's filters
        for data in files:
            try:
                with server_span("twinray.v1.Segmentation/Segment", ()):
                    decode_image_message(common_pb2.Image(dicom=data), limits, store)
            except TwinRayError as error:
                messages.append(str(error))
    spans = [span.to_json() for span in exporter.get_finished_spans()]
    assert len(messages) > 100 and len(spans) == len(files)  # most copies are refused, each in a span
    assert not leaks(messages, identifiers)
    assert not leaks(spans, identifiers)
    assert not leaks(root_log, identifiers)
    assert not leaks([str(w.message) for w in caught], identifiers)
