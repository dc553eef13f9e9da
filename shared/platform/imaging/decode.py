"""Decode client images (PNG, DICOM, raw tensors) into one validated form.

Every service receives images from outside, so this is the single gate in front of the models: it
checks byte and pixel limits before any pixels are decoded (decompression bombs, huge tensors), turns
every format into float32 H x W in [0, 1] with bright = dense, and reports bad input as `InvalidInput`
(or `ResourceExhausted` for too many bytes) with a one-line message the caller can act on.
"""

from __future__ import annotations

import io
import math
import struct
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pydicom
from PIL import Image
from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut, apply_voi, apply_windowing, get_decoder

from twinray.shared.platform.errors import InvalidInput, ResourceExhausted, TwinRayError
from twinray.shared.platform.imaging.unit_range import to_unit

if TYPE_CHECKING:
    from twinray.shared.platform.config import Settings

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_PNG_16_BIT_MODES = {"I;16", "I;16B", "I;16L", "I"}  # older Pillow releases open 16-bit grey as "I"
_PNG_ERRORS = (OSError, SyntaxError, ValueError, EOFError, struct.error, zlib.error)
_LUMA = np.array([0.299, 0.587, 0.114])  # ITU-R BT.601, the weights Pillow's convert("L") uses
_TENSOR_DTYPES = {"uint8": np.dtype("<u1"), "uint16": np.dtype("<u2"), "float32": np.dtype("<f4")}
_SYNTAX_BY_ENCODING = {  # (implicit VR, little endian) of a DICOM stream without file meta
    (True, True): uid.ImplicitVRLittleEndian,
    (False, True): uid.ExplicitVRLittleEndian,
    (False, False): uid.ExplicitVRBigEndian,
}


@dataclass(frozen=True)
class ImageLimits:
    """What an input may weigh: bytes on the wire and pixels per side."""

    max_bytes: int = 64 * 1024 * 1024
    max_side: int = 8192
    min_side: int = 8

    @classmethod
    def from_settings(cls, settings: Settings) -> ImageLimits:
        return cls(max_bytes=settings.max_image_bytes, max_side=settings.max_image_side)


@dataclass(frozen=True)
class DecodedImage:
    """A validated image, whatever format it came in."""

    pixels: np.ndarray  # float32, H x W, in [0, 1], bright = dense
    spacing_mm: tuple[float, float] | None  # (row, column) spacing; None when unknown
    bits_stored: int  # precision of the source: 8 or 16 for PNG, BitsStored for DICOM, 8/16/32 for tensors
    source: str  # "png" | "dicom" | "tensor"

    @property
    def height(self) -> int:
        return int(self.pixels.shape[0])

    @property
    def width(self) -> int:
        return int(self.pixels.shape[1])


def check_bytes(data: bytes, limits: ImageLimits) -> None:
    """Reject empty input (InvalidInput) and input over the byte limit (ResourceExhausted)."""
    if not data:
        raise InvalidInput("image is empty (0 bytes)")
    if len(data) > limits.max_bytes:
        raise ResourceExhausted(f"image is {len(data)} bytes; the limit is {limits.max_bytes} bytes")


def check_size(width: int, height: int, limits: ImageLimits) -> None:
    """Reject images whose sides are below `min_side` or above `max_side` pixels."""
    if max(width, height) > limits.max_side:
        raise InvalidInput(f"image is {width}x{height} pixels (width x height); the limit is {limits.max_side} per side")
    if min(width, height) < limits.min_side:
        raise InvalidInput(f"image is {width}x{height} pixels (width x height); each side must be at least {limits.min_side}")


def open_png(data: bytes, limits: ImageLimits) -> Image.Image:
    """Check the PNG's declared size from its IHDR chunk, then decode it with Pillow."""
    check_bytes(data, limits)
    if not data.startswith(PNG_SIGNATURE):
        raise InvalidInput("not a PNG file (the 8-byte PNG signature is missing)")
    if len(data) < 24 or data[12:16] != b"IHDR":
        raise InvalidInput("PNG is truncated or corrupt: the IHDR header chunk is missing")
    width, height = struct.unpack(">II", data[16:24])
    check_size(width, height, limits)
    try:
        image = Image.open(io.BytesIO(data), formats=["PNG"])
        image.load()
    except Image.DecompressionBombError as error:  # only when limits exceed Pillow's own guard
        raise ResourceExhausted(f"PNG is too large to decode: {error}") from None
    except _PNG_ERRORS as error:
        raise InvalidInput(f"PNG is truncated or corrupt: {error}") from None
    return image


def decode_png(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode an 8- or 16-bit PNG; palette, RGB and alpha images become luminance (alpha is ignored)."""
    image = open_png(data, limits)
    if image.mode in _PNG_16_BIT_MODES:
        pixels, bits = to_unit(np.asarray(image)), 16
    else:
        pixels, bits = np.asarray(image.convert("L"), dtype=np.float32) / 255.0, 8
    return DecodedImage(pixels=pixels, spacing_mm=None, bits_stored=bits, source="png")


def decode_dicom(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode a single-frame DICOM image to display values with bright = dense.

    Multi-frame objects are rejected rather than silently reduced to frame 0: a radiograph has one
    frame, and picking one of many would hide a wrong upload. Grey images go through the modality LUT
    (rescale) and the first VOI LUT or window, whose output range maps to [0, 1]; without either, the
    range that BitsStored allows (after rescale) maps to [0, 1]. MONOCHROME1 is inverted. Colour
    images (SamplesPerPixel 3) become luminance. Streams without preamble/file meta are accepted.
    """
    check_bytes(data, limits)
    ds = _read_dicom(data)
    syntax = ds.file_meta.TransferSyntaxUID
    try:
        _check_dicom_header(ds, limits)
        _check_decodable(syntax)
        stored = ds.pixel_array
        if ds.get("SamplesPerPixel", 1) == 3:  # pydicom converts YBR to RGB
            pixels = (stored @ _LUMA) / (2 ** int(ds.BitsStored) - 1)
        else:
            pixels = _grey_to_unit(stored, ds)
            if ds.PhotometricInterpretation == "MONOCHROME1":
                pixels = 1.0 - pixels
        return DecodedImage(
            pixels=np.clip(pixels, 0.0, 1.0).astype(np.float32),
            spacing_mm=_spacing(ds),
            bits_stored=int(ds.BitsStored),
            source="dicom",
        )
    except TwinRayError:
        raise
    except Exception as error:  # pydicom raises many types on malformed input, also lazily
        raise InvalidInput(f"DICOM pixel data cannot be decoded ({syntax.name}): {error}") from None


def decode_tensor(data: bytes, shape: Sequence[int], dtype: str, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode a raw little-endian [H, W] or [1, H, W] tensor of uint8, uint16 or float32.

    Integers scale by their maximum (255, 65535). float32 is taken as is and must be finite and lie
    in [0, 1]: values outside are rejected, not clipped or rescaled, because any silent rescaling
    would change what the model sees.
    """
    check_bytes(data, limits)
    if dtype not in _TENSOR_DTYPES:
        raise InvalidInput(f"tensor dtype {dtype!r} is not supported; use uint8, uint16 or float32")
    dims = list(shape)
    if len(dims) == 3 and dims[0] == 1:
        dims = dims[1:]
    if len(dims) != 2:
        raise InvalidInput(f"tensor shape {list(shape)} is not a grey image; use [H, W] or [1, H, W]")
    height, width = dims
    check_size(width, height, limits)
    np_dtype = _TENSOR_DTYPES[dtype]
    needed = height * width * np_dtype.itemsize
    if len(data) != needed:
        raise InvalidInput(f"tensor has {len(data)} bytes but shape {list(shape)} with dtype {dtype} needs {needed}")
    values = np.frombuffer(data, dtype=np_dtype).reshape(height, width)
    if dtype == "float32":
        if not np.isfinite(values).all():
            raise InvalidInput("float32 tensor contains NaN or infinite values")
        low, high = float(values.min()), float(values.max())
        if low < 0.0 or high > 1.0:
            raise InvalidInput(f"float32 tensor values must lie in [0, 1]; got {low:.4g} to {high:.4g}")
        pixels = values.astype(np.float32)
    else:
        pixels = values.astype(np.float32) / np.iinfo(np_dtype).max
    return DecodedImage(pixels=pixels, spacing_mm=None, bits_stored=np_dtype.itemsize * 8, source="tensor")


def sniff_and_decode(data: bytes, limits: ImageLimits = ImageLimits()) -> DecodedImage:
    """Decode PNG or DICOM, recognised by their content rather than by any name or declared type."""
    check_bytes(data, limits)
    if data[128:132] == b"DICM" or data[:2] in (b"\x02\x00", b"\x08\x00", b"\x00\x02", b"\x00\x08"):
        # "DICM" after the 128-byte preamble, or a bare stream opening with group 0002 or 0008
        return decode_dicom(data, limits)
    if data.startswith(PNG_SIGNATURE):
        return decode_png(data, limits)
    raise InvalidInput(f"not a PNG or DICOM file (it starts with bytes {data[:8].hex(' ')})")


def _read_dicom(data: bytes) -> Dataset:
    try:
        ds = pydicom.dcmread(io.BytesIO(data), force=True)
    except Exception as error:  # force=True parses anything until it trips, with any exception type
        raise InvalidInput(f"DICOM is truncated or corrupt: {error}") from None
    if "SOPClassUID" not in ds and "PixelData" not in ds:
        raise InvalidInput("not a DICOM file (no SOPClassUID and no PixelData element)")
    if "TransferSyntaxUID" not in ds.file_meta:
        inferred = _SYNTAX_BY_ENCODING.get(ds.original_encoding)
        if inferred is None:
            raise InvalidInput("DICOM has no transfer syntax and its encoding cannot be inferred")
        ds.file_meta.TransferSyntaxUID = inferred
    try:
        syntax = ds.file_meta.TransferSyntaxUID
    except Exception as error:  # values are parsed lazily, so a corrupt one fails only here
        raise InvalidInput(f"DICOM transfer syntax cannot be read: {error}") from None
    if not isinstance(syntax, uid.UID):
        raise InvalidInput(f"DICOM transfer syntax {syntax!r} is not a UID")
    return ds


def _check_dicom_header(ds: Dataset, limits: ImageLimits) -> None:
    if "PixelData" not in ds:
        raise InvalidInput("DICOM has no pixel data (PixelData element missing)")
    if ds.get("Rows") is None or ds.get("Columns") is None:
        raise InvalidInput("DICOM has pixel data but no Rows/Columns")
    check_size(int(ds.Columns), int(ds.Rows), limits)
    frames = int(ds.get("NumberOfFrames") or 1)
    if frames != 1:
        raise InvalidInput(f"DICOM has {frames} frames; send a single-frame image")
    samples, photometric = ds.get("SamplesPerPixel", 1), ds.get("PhotometricInterpretation", "")
    if not (samples == 1 and photometric in ("MONOCHROME1", "MONOCHROME2")) and samples != 3:
        raise InvalidInput(
            f"DICOM photometric interpretation {photometric or '(none)'} with {samples} samples per pixel "
            "is not supported; send MONOCHROME1, MONOCHROME2 or RGB"
        )


def _check_decodable(syntax: uid.UID) -> None:
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError:
        raise InvalidInput(f"DICOM transfer syntax {syntax.name} ({syntax}) is not supported") from None
    if not decoder.is_available:
        raise InvalidInput(
            f"DICOM pixel data is compressed as {syntax.name} ({syntax}), which this server cannot decode; "
            "send it uncompressed (Explicit VR Little Endian) or as PNG"
        )


def _grey_to_unit(stored: np.ndarray, ds: Dataset) -> np.ndarray:
    """Modality LUT, then the first VOI LUT or window; the transform's output range becomes [0, 1]."""
    values = apply_modality_lut(stored, ds)
    if ds.get("VOILUTSequence") and "LUTData" in ds.VOILUTSequence[0]:
        if values.dtype.kind == "f":  # a rescale made floats; LUT inputs are integers
            values = np.rint(values).astype(np.int64)
        values = apply_voi(values, ds, index=0)
        low, high = 0.0, 2.0 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
    elif ds.get("WindowCenter") is not None and ds.get("WindowWidth") is not None:
        values = apply_windowing(values, ds, index=0)
        # pydicom scales the window onto a range derived from BitsStored and the rescale: its two
        # saturated ends are that range.
        low, high = apply_windowing(np.array([-np.inf, np.inf]), ds, index=0)
    else:
        bits = int(ds.BitsStored)
        signed = int(ds.get("PixelRepresentation", 0)) == 1
        stored_range = np.array([-(2 ** (bits - 1)), 2 ** (bits - 1) - 1] if signed else [0, 2**bits - 1])
        low, high = apply_modality_lut(stored_range, ds)
    if high == low:
        raise InvalidInput("DICOM intensity transform maps every pixel to one value (check RescaleSlope)")
    return (values - low) / (high - low)


def _spacing(ds: Dataset) -> tuple[float, float] | None:
    for keyword in ("PixelSpacing", "ImagerPixelSpacing"):
        try:
            row, column = (float(value) for value in ds.get(keyword))
        except (TypeError, ValueError):  # absent, wrong multiplicity or not a number
            continue
        if min(row, column) > 0 and math.isfinite(row + column):
            return (row, column)
    return None
