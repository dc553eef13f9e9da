"""Decoding and validation on real files: pydicom's test files, deid-data's DX radiograph, real PNGs."""

from __future__ import annotations

import copy
import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pydicom
import pytest
from PIL import Image
from pydicom.data import get_testdata_file
from pydicom.dataset import FileMetaDataset
from pydicom.pixels import get_decoder

from twinray.shared.platform.config import Settings
from twinray.shared.platform.errors import InvalidInput, ResourceExhausted
from twinray.shared.platform.imaging import (
    ImageLimits,
    decode_dicom,
    decode_png,
    decode_tensor,
    sniff_and_decode,
)


def pydicom_file(name: str) -> bytes:
    path = get_testdata_file(name, download=False)
    assert path is not None, f"pydicom test file {name} is not installed"
    return Path(path).read_bytes()


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_chunk(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", zlib.crc32(kind + payload))


def dicom_bytes(ds: pydicom.Dataset) -> bytes:
    buffer = io.BytesIO()
    pydicom.dcmwrite(buffer, ds, enforce_file_format=False)
    return buffer.getvalue()


@pytest.fixture(scope="module")
def cat_bytes() -> bytes:
    deid_data = pytest.importorskip("deid_data")
    return (Path(deid_data.__file__).parent / "data" / "animals" / "cat.dcm").read_bytes()


@pytest.fixture(scope="module")
def small_cat(cat_bytes: bytes) -> pydicom.Dataset:
    """The real radiograph subsampled 8x (327 x 384), with all its header elements."""
    ds = pydicom.dcmread(io.BytesIO(cat_bytes))
    stored = np.ascontiguousarray(ds.pixel_array[::8, ::8])
    ds.Rows, ds.Columns = stored.shape
    ds.PixelData = stored.tobytes()
    return ds


def cat_variant(ds: pydicom.Dataset, stored: np.ndarray | None = None, **elements: object) -> bytes:
    """A copy of `ds` with other stored values and elements set (or deleted when None)."""
    ds = copy.deepcopy(ds)
    if stored is not None:
        ds.PixelData = stored.astype(np.uint16).tobytes()
    for keyword, value in elements.items():
        if value is None:
            delattr(ds, keyword)
        else:
            setattr(ds, keyword, value)
    return dicom_bytes(ds)


# --- limits and sniffing -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "decode",
    [sniff_and_decode, decode_png, decode_dicom, lambda data: decode_tensor(data, [8, 8], "uint8")],
    ids=["sniff", "png", "dicom", "tensor"],
)
def test_empty_bytes_are_rejected_by_every_decoder(decode) -> None:
    with pytest.raises(InvalidInput, match=r"^image is empty \(0 bytes\)$"):
        decode(b"")


def test_bytes_over_the_limit_are_resource_exhausted() -> None:
    data = png_bytes(Image.effect_noise((64, 64), 64))
    with pytest.raises(ResourceExhausted, match=rf"image is {len(data)} bytes; the limit is 100 bytes"):
        sniff_and_decode(data, ImageLimits(max_bytes=100))


def test_limits_come_from_settings() -> None:
    limits = ImageLimits.from_settings(Settings(max_image_bytes=1234, max_image_side=99))
    assert (limits.max_bytes, limits.max_side, limits.min_side) == (1234, 99, 8)


def test_random_bytes_are_neither_png_nor_dicom() -> None:
    data = np.random.default_rng(0).integers(16, 256, 4096, dtype=np.uint8).tobytes()
    with pytest.raises(InvalidInput, match="not a PNG or DICOM file"):
        sniff_and_decode(data)
    with pytest.raises(InvalidInput):
        decode_dicom(data)


# --- PNG ---------------------------------------------------------------------------------------------


def test_png_8_bit_round_trip() -> None:
    array = np.random.default_rng(1).integers(0, 256, (32, 48), dtype=np.uint8)
    image = sniff_and_decode(png_bytes(Image.fromarray(array)))
    assert (image.source, image.bits_stored, image.spacing_mm) == ("png", 8, None)
    assert (image.height, image.width) == (32, 48)
    assert image.pixels.dtype == np.float32
    np.testing.assert_array_equal(np.rint(image.pixels * 255).astype(np.uint8), array)


def test_png_16_bit_ramp_keeps_its_precision() -> None:
    ramp = (np.arange(64 * 64, dtype=np.uint32) * 16).reshape(64, 64).astype(np.uint16)
    image = decode_png(png_bytes(Image.fromarray(ramp)))
    assert image.bits_stored == 16
    assert len(np.unique(image.pixels)) > 256
    np.testing.assert_array_equal(np.rint(image.pixels * 65535).astype(np.uint16), ramp)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "P", "LA", "1"])
def test_colour_palette_and_alpha_pngs_become_luminance(mode: str) -> None:
    rgb = np.random.default_rng(2).integers(0, 256, (24, 40, 3), dtype=np.uint8)
    image = Image.fromarray(rgb).convert(mode)
    decoded = decode_png(png_bytes(image))
    expected = np.asarray(image.convert("L"), dtype=np.float32) / 255
    np.testing.assert_allclose(decoded.pixels, expected, atol=1e-6)
    assert decoded.pixels.min() >= 0 and decoded.pixels.max() <= 1


def test_pure_red_png_has_bt601_luminance() -> None:
    decoded = decode_png(png_bytes(Image.new("RGB", (16, 16), (255, 0, 0))))
    np.testing.assert_allclose(decoded.pixels, 0.299, atol=2 / 255)


def test_truncated_png_is_rejected() -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(3).integers(0, 256, (64, 64), dtype=np.uint8)))
    with pytest.raises(InvalidInput, match="^PNG is truncated or corrupt: "):
        decode_png(data[: len(data) // 2])


def test_every_truncation_and_bit_flip_gives_invalid_input() -> None:
    data = png_bytes(Image.fromarray(np.random.default_rng(4).integers(0, 256, (16, 16), dtype=np.uint8)))
    broken = [data[:cut] for cut in range(1, len(data) - 12)]  # the last 12 bytes are IEND
    broken += [data[:i] + bytes([data[i] ^ 0x40]) + data[i + 1 :] for i in range(8, len(data) - 12)]
    for candidate in broken:
        try:
            decode_png(candidate)
        except InvalidInput:
            pass  # anything else propagates and fails the test


def test_png_header_claiming_100000_pixels_per_side_is_rejected_before_decoding(monkeypatch) -> None:
    header = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 0, 0, 0, 0)
    data = b"\x89PNG\r\n\x1a\n" + png_chunk(b"IHDR", header) + png_chunk(b"IEND", b"")
    monkeypatch.setattr(Image, "open", lambda *a, **k: pytest.fail("Pillow was asked to open the bomb"))
    with pytest.raises(InvalidInput, match=r"image is 100000x100000 pixels .*the limit is 8192 per side"):
        sniff_and_decode(data)


def test_png_below_min_side_is_rejected() -> None:
    with pytest.raises(InvalidInput, match=r"image is 4x20 pixels .*at least 8"):
        decode_png(png_bytes(Image.new("L", (4, 20))))


# --- DICOM: pydicom's test files ---------------------------------------------------------------------


def test_ct_without_window_maps_the_rescaled_stored_range() -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("CT_small.dcm")))
    image = sniff_and_decode(pydicom_file("CT_small.dcm"))
    assert (image.source, image.bits_stored, image.spacing_mm) == ("dicom", 16, (0.661468, 0.661468))
    hu = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    low, high = -32768 + float(ds.RescaleIntercept), 32767 + float(ds.RescaleIntercept)  # signed 16-bit
    np.testing.assert_allclose(image.pixels, (hu - low) / (high - low), atol=1e-6)


def test_mr_window_is_applied_and_normalised() -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("MR_small.dcm")))
    center, width = float(ds.WindowCenter), float(ds.WindowWidth)
    # DICOM PS3.3 C.11.2.1.2.1, LINEAR, written out independently of pydicom.
    expected = np.clip((ds.pixel_array - (center - 0.5)) / (width - 1) + 0.5, 0, 1)
    image = decode_dicom(pydicom_file("MR_small.dcm"))
    assert image.spacing_mm == (0.3125, 0.3125)
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)


@pytest.mark.parametrize(
    "name", ["MR_small_implicit.dcm", "MR_small_bigendian.dcm", "MR_small_RLE.dcm", "MR_small_jp2klossless.dcm"]
)
def test_transfer_syntaxes_decode_to_the_same_pixels(name: str) -> None:
    reference = decode_dicom(pydicom_file("MR_small.dcm")).pixels
    np.testing.assert_array_equal(decode_dicom(pydicom_file(name)).pixels, reference)


def test_rgb_dicom_becomes_luminance() -> None:
    data = pydicom_file("examples_rgb_color.dcm")
    rgb = pydicom.dcmread(io.BytesIO(data)).pixel_array.astype(np.float64)
    image = decode_dicom(data)
    np.testing.assert_allclose(image.pixels, rgb @ [0.299, 0.587, 0.114] / 255, atol=1e-6)


def test_dicom_without_preamble_or_file_meta_is_sniffed() -> None:
    ds = pydicom.dcmread(io.BytesIO(pydicom_file("CT_small.dcm")))
    ds.preamble, ds.file_meta = None, FileMetaDataset()
    bare = dicom_bytes(ds)
    assert bare[128:132] != b"DICM"
    np.testing.assert_array_equal(sniff_and_decode(bare).pixels, decode_dicom(pydicom_file("CT_small.dcm")).pixels)


@pytest.mark.parametrize("name", ["rtplan.dcm", "rtstruct.dcm", "test-SR.dcm"])
def test_dicom_without_pixel_data_is_rejected(name: str) -> None:
    with pytest.raises(InvalidInput, match=r"^DICOM has no pixel data \(PixelData element missing\)$"):
        sniff_and_decode(pydicom_file(name))


def test_compressed_dicom_that_cannot_be_decoded_names_its_transfer_syntax() -> None:
    data = pydicom_file("JPEGLSNearLossless_08.dcm")
    if get_decoder(pydicom.dcmread(io.BytesIO(data)).file_meta.TransferSyntaxUID).is_available:
        pytest.skip("a JPEG-LS decoder is installed here")
    with pytest.raises(InvalidInput, match=r"JPEG-LS Lossy \(Near-Lossless\) Image Compression .*cannot decode"):
        decode_dicom(data)


def test_multi_frame_dicom_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="^DICOM has 15 frames; send a single-frame image$"):
        decode_dicom(pydicom_file("rtdose.dcm"))


def test_truncated_dicom_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="less than expected"):
        decode_dicom(pydicom_file("MR_truncated.dcm"))


def test_palette_colour_dicom_is_rejected() -> None:
    with pytest.raises(InvalidInput, match="PALETTE COLOR .* not supported"):
        decode_dicom(pydicom_file("examples_palette.dcm"))


# --- DICOM: the real DX radiograph (deid-data) ---------------------------------------------------


def test_real_dx_radiograph(cat_bytes: bytes) -> None:
    image = sniff_and_decode(cat_bytes)
    assert (image.height, image.width) == (2614, 3072)
    assert (image.source, image.bits_stored, image.spacing_mm) == ("dicom", 12, (0.14, 0.14))
    assert image.pixels.dtype == np.float32
    assert image.pixels.min() >= 0 and image.pixels.max() <= 1
    # MONOCHROME2, bright = dense: the air above the animal's back is dark, its body is bright.
    air = image.pixels[int(0.1 * 2614) : int(0.2 * 2614), 1000:2500].mean()
    body = image.pixels[int(0.45 * 2614) : int(0.7 * 2614), 1000:2500].mean()
    assert air < 0.1 < 0.3 < body


def test_monochrome1_is_inverted_so_dense_stays_bright(small_cat: pydicom.Dataset) -> None:
    as_monochrome2 = decode_dicom(dicom_bytes(small_cat)).pixels
    inverted = 4095 - small_cat.pixel_array  # the same exposure stored the MONOCHROME1 way
    as_monochrome1 = decode_dicom(
        cat_variant(small_cat, inverted, PhotometricInterpretation="MONOCHROME1", WindowCenter=4096 - 2048)
    ).pixels
    np.testing.assert_allclose(as_monochrome1, as_monochrome2, atol=1e-3)


def test_sigmoid_window(small_cat: pydicom.Dataset) -> None:
    image = decode_dicom(cat_variant(small_cat, VOILUTFunction="SIGMOID", WindowCenter=1500, WindowWidth=1000))
    expected = 1 / (1 + np.exp(-4 * (small_cat.pixel_array - 1500.0) / 1000))
    np.testing.assert_allclose(image.pixels, expected, atol=1e-5)


def test_voi_lut_sequence_is_preferred_and_normalised_by_its_depth(small_cat: pydicom.Dataset) -> None:
    lut = np.rint(np.sqrt(np.arange(4096) / 4095) * 65535).astype(np.uint16)
    item = pydicom.Dataset()
    item.LUTDescriptor = [4096, 0, 16]
    item.LUTData = lut.astype("<u2").tobytes()  # OW, as most modalities write it
    image = decode_dicom(cat_variant(small_cat, VOILUTSequence=pydicom.Sequence([item])))
    np.testing.assert_allclose(image.pixels, lut[small_cat.pixel_array] / 65535, atol=1e-6)


def test_rescale_slope_zero_is_rejected(small_cat: pydicom.Dataset) -> None:
    with pytest.raises(InvalidInput, match="maps every pixel to one value"):
        decode_dicom(cat_variant(small_cat, RescaleSlope=0, RescaleIntercept=0, WindowCenter=None, WindowWidth=None))


@pytest.mark.filterwarnings("ignore")
def test_corrupted_dicom_gives_invalid_input() -> None:
    data, rng = pydicom_file("MR_small.dcm"), np.random.default_rng(8)
    broken = [data[:cut] for cut in rng.integers(1, len(data), 100)]
    for _ in range(300):
        flipped = bytearray(data)
        flipped[rng.integers(0, 1200)] = rng.integers(0, 256)  # the header, where parsing can go wrong
        broken.append(bytes(flipped))
    for candidate in broken:
        try:
            sniff_and_decode(candidate)
        except InvalidInput:
            pass  # anything else propagates and fails the test


def test_without_window_the_bits_stored_range_is_used(small_cat: pydicom.Dataset) -> None:
    image = decode_dicom(cat_variant(small_cat, WindowCenter=None, WindowWidth=None))
    np.testing.assert_allclose(image.pixels, small_cat.pixel_array / 4095, atol=1e-6)


def test_spacing_falls_back_to_imager_pixel_spacing_then_none(small_cat: pydicom.Dataset) -> None:
    imager = decode_dicom(cat_variant(small_cat, PixelSpacing=None, ImagerPixelSpacing=[0.2, 0.3]))
    assert imager.spacing_mm == (0.2, 0.3)
    assert decode_dicom(cat_variant(small_cat, PixelSpacing=None, ImagerPixelSpacing=None)).spacing_mm is None


def test_dicom_over_the_side_limit_is_rejected(cat_bytes: bytes) -> None:
    with pytest.raises(InvalidInput, match=r"image is 3072x2614 pixels .*the limit is 2048 per side"):
        decode_dicom(cat_bytes, ImageLimits(max_side=2048))


def test_dicom_over_the_byte_limit_is_resource_exhausted(cat_bytes: bytes) -> None:
    with pytest.raises(ResourceExhausted):
        sniff_and_decode(cat_bytes, ImageLimits(max_bytes=1 << 20))


# --- tensors -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("shape", [[16, 24], [1, 16, 24]])
def test_uint8_tensor(shape: list[int]) -> None:
    values = np.random.default_rng(5).integers(0, 256, (16, 24), dtype=np.uint8)
    image = decode_tensor(values.tobytes(), shape, "uint8")
    assert (image.source, image.bits_stored, image.height, image.width) == ("tensor", 8, 16, 24)
    np.testing.assert_allclose(image.pixels, values / 255, atol=1e-7)


def test_uint16_tensor_is_little_endian() -> None:
    values = np.random.default_rng(6).integers(0, 65536, (16, 24), dtype=np.uint16)
    image = decode_tensor(values.astype("<u2").tobytes(), [16, 24], "uint16")
    assert image.bits_stored == 16
    np.testing.assert_allclose(image.pixels, values / 65535, atol=1e-7)


def test_float32_tensor_is_used_as_given() -> None:
    values = np.random.default_rng(7).random((16, 24), dtype=np.float32)
    image = decode_tensor(values.astype("<f4").tobytes(), [16, 24], "float32")
    np.testing.assert_array_equal(image.pixels, values)


@pytest.mark.parametrize("bad", [np.nan, np.inf])
def test_non_finite_float_tensor_is_rejected(bad: float) -> None:
    values = np.zeros((16, 16), dtype=np.float32)
    values[3, 4] = bad
    with pytest.raises(InvalidInput, match="NaN or infinite"):
        decode_tensor(values.tobytes(), [16, 16], "float32")


def test_float_tensor_outside_unit_range_is_rejected() -> None:
    values = np.linspace(-0.5, 1.5, 256, dtype=np.float32).reshape(16, 16)
    with pytest.raises(InvalidInput, match=r"must lie in \[0, 1\]; got -0.5 to 1.5"):
        decode_tensor(values.tobytes(), [16, 16], "float32")


def test_tensor_byte_count_must_match_the_shape() -> None:
    expected = r"^tensor has 1000 bytes but shape \[32, 32\] with dtype uint16 needs 2048$"
    with pytest.raises(InvalidInput, match=expected):
        decode_tensor(bytes(1000), [32, 32], "uint16")


@pytest.mark.parametrize("shape", [[3, 16, 16], [16], [1, 1, 16, 16]])
def test_tensor_must_be_a_grey_image(shape: list[int]) -> None:
    with pytest.raises(InvalidInput, match="is not a grey image"):
        decode_tensor(bytes(int(np.prod(shape))), shape, "uint8")


def test_tensor_dtype_must_be_known() -> None:
    with pytest.raises(InvalidInput, match="'int32' is not supported"):
        decode_tensor(bytes(16 * 16 * 4), [16, 16], "int32")


def test_tensor_sides_are_limited() -> None:
    expected = r"^image is 10000x10 pixels \(width x height\); the limit is 8192 per side$"
    with pytest.raises(InvalidInput, match=expected):
        decode_tensor(bytes(10), [10, 10000], "uint8")
    with pytest.raises(InvalidInput, match="at least 8"):
        decode_tensor(bytes(1), [0, 16], "uint8")
