"""PNG encoders round-trip exactly, and the label decoder accepts only label-like PNGs."""

from __future__ import annotations

import io

import numpy as np
import pytest
from PIL import Image

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import (
    decode_label_png,
    decode_png,
    encode_float01_png16,
    encode_label_png,
    encode_png_u8,
    encode_png_u16,
)

RNG = np.random.default_rng(0)


def test_u8_round_trip() -> None:
    array = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    data = encode_png_u8(array)
    assert Image.open(io.BytesIO(data)).mode == "L"
    np.testing.assert_array_equal(np.rint(decode_png(data).pixels * 255), array)


def test_u16_round_trip_is_16_bit() -> None:
    array = RNG.integers(0, 65536, (20, 30), dtype=np.uint16)
    data = encode_png_u16(array.astype(">u2"))  # byte order does not matter
    assert Image.open(io.BytesIO(data)).mode == "I;16"
    np.testing.assert_array_equal(np.rint(decode_png(data).pixels * 65535), array)


@pytest.mark.parametrize(
    ("encode", "array"),
    [
        (encode_png_u8, np.zeros((8, 8), np.uint16)),
        (encode_png_u8, np.zeros((8, 8, 3), np.uint8)),
        (encode_png_u16, np.zeros((8, 8), np.float32)),
    ],
)
def test_wrong_arrays_are_programming_errors(encode, array: np.ndarray) -> None:
    with pytest.raises(ValueError, match="expected an H x W"):
        encode(array)


def test_float01_round_trip_within_half_a_step() -> None:
    image = RNG.random((20, 30))
    decoded = decode_png(encode_float01_png16(image)).pixels
    np.testing.assert_allclose(decoded, image, atol=0.5 / 65535 + 1e-7)


def test_float01_clips_rounding_overshoot_and_rejects_the_rest() -> None:
    assert decode_png(encode_float01_png16(np.full((8, 8), 1 + 1e-6))).pixels.max() == 1
    with pytest.raises(ValueError, match=r"must lie in \[0, 1\]"):
        encode_float01_png16(np.full((8, 8), 1.5))
    with pytest.raises(ValueError, match="NaN"):
        encode_float01_png16(np.full((8, 8), np.nan))


def test_label_round_trip() -> None:
    labels = RNG.integers(0, 8, (24, 24)).astype(np.int64)
    decoded = decode_label_png(encode_label_png(labels))
    assert decoded.dtype == np.uint8
    np.testing.assert_array_equal(decoded, labels)


@pytest.mark.parametrize("labels", [np.full((8, 8), 256), np.full((8, 8), -1), np.zeros((8, 8), np.float32)])
def test_labels_outside_8_bit_ids_are_rejected(labels: np.ndarray) -> None:
    with pytest.raises(ValueError):
        encode_label_png(labels)


def test_palette_and_binary_label_pngs_give_their_indices() -> None:
    indices = RNG.integers(0, 5, (16, 16), dtype=np.uint8)
    palette = Image.frombytes("P", (16, 16), indices.tobytes())
    palette.putpalette([v for i in range(256) for v in (i, 0, 255 - i)])
    buffer = io.BytesIO()
    palette.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_label_png(buffer.getvalue()), indices)

    binary = Image.fromarray(indices > 2)
    assert binary.mode == "1"
    buffer = io.BytesIO()
    binary.save(buffer, format="PNG")
    np.testing.assert_array_equal(decode_label_png(buffer.getvalue()), (indices > 2).astype(np.uint8))


def test_label_png_must_be_grey_or_palette() -> None:
    buffer = io.BytesIO()
    Image.new("RGB", (16, 16)).save(buffer, format="PNG")
    with pytest.raises(InvalidInput, match="mode RGB"):
        decode_label_png(buffer.getvalue())
    with pytest.raises(InvalidInput, match="truncated or corrupt"):
        decode_label_png(encode_label_png(np.ones((64, 64), np.uint8))[:40])
