"""From a `twinray.v1.Image` message to a validated `DecodedImage`, whatever its source."""

from __future__ import annotations

import dataclasses

from opentelemetry import trace

from twinray.shared.platform.errors import InvalidInput
from twinray.shared.platform.imaging import DecodedImage, ImageLimits, decode_dicom, decode_png, decode_tensor, sniff_and_decode
from twinray.shared.platform.storage import ArtifactStore
from twinray.v1 import common_pb2

_DTYPES = {
    common_pb2.DTYPE_UINT8: "uint8",
    common_pb2.DTYPE_UINT16: "uint16",
    common_pb2.DTYPE_FLOAT32: "float32",
}


def decode_image_message(image: common_pb2.Image, limits: ImageLimits, store: ArtifactStore) -> DecodedImage:
    """Decode and validate; raises InvalidInput / ResourceExhausted / NotFound / Unavailable. The
    image's size goes onto the current (RPC) span."""
    source = image.WhichOneof("source")
    if source is None:
        raise InvalidInput("image is empty: set one of png, dicom, tensor or artifact")
    if source == "png":
        decoded = decode_png(image.png, limits)
    elif source == "dicom":
        decoded = decode_dicom(image.dicom, limits)
    elif source == "tensor":
        if image.tensor.dtype not in _DTYPES:
            raise InvalidInput("tensor dtype must be DTYPE_UINT8, DTYPE_UINT16 or DTYPE_FLOAT32")
        decoded = decode_tensor(image.tensor.data, list(image.tensor.shape), _DTYPES[image.tensor.dtype], limits)
    else:
        ref = image.artifact
        if ref.bucket and ref.bucket != store.bucket:
            raise InvalidInput(f"artifact bucket {ref.bucket!r} is not this server's bucket {store.bucket!r}")
        if not ref.key:
            raise InvalidInput("artifact.key is empty")
        decoded = sniff_and_decode(store.get_bytes(ref.key, sha256=ref.sha256), limits)
    if image.HasField("spacing"):
        spacing = (image.spacing.row_mm, image.spacing.col_mm)
        if not all(0 < value < 100 for value in spacing):
            raise InvalidInput(f"pixel spacing must be between 0 and 100 mm, got {spacing}")
        decoded = dataclasses.replace(decoded, spacing_mm=spacing)
    trace.get_current_span().set_attributes({"twinray.image.height": decoded.height, "twinray.image.width": decoded.width})
    return decoded
