"""Mixed precision for every trainer, without Ray, so in-process fits on a GPU machine use it too."""

from __future__ import annotations

import torch


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on GPUs (where it halves memory and time), a no-op on CPUs."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda")
