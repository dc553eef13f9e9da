"""Image input and output: decoding and validation (PNG, DICOM, raw tensors), resizing, PNG encoding."""

from twinray.shared.platform.imaging.decode import (
    DecodedImage,
    ImageLimits,
    decode_dicom,
    decode_png,
    decode_tensor,
    sniff_and_decode,
)
from twinray.shared.platform.imaging.encode import (
    decode_label_png,
    encode_float01_png16,
    encode_label_png,
    encode_png_u8,
    encode_png_u16,
)
from twinray.shared.platform.imaging.transforms import (
    labels_to_size,
    logits_to_labels,
    logits_to_size,
    to_model_input,
    uint16_images,
    unit_images,
)

__all__ = [
    "DecodedImage",
    "ImageLimits",
    "decode_dicom",
    "decode_label_png",
    "decode_png",
    "decode_tensor",
    "encode_float01_png16",
    "encode_label_png",
    "encode_png_u16",
    "encode_png_u8",
    "labels_to_size",
    "logits_to_labels",
    "logits_to_size",
    "sniff_and_decode",
    "to_model_input",
    "uint16_images",
    "unit_images",
]
