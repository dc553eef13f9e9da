"""Random draws of training batches under the 8 symmetries of the square: product surfaces, defect
masks and their crops have no preferred orientation, so every defect trainer (DDPMs, encoder,
segmenter, crop classifier) sees each image flipped and turned."""

from __future__ import annotations

import torch


def augmented_batch(data: torch.Tensor, batch_size: int, generator: torch.Generator) -> torch.Tensor:
    """`batch_size` images drawn with replacement, each flipped and turned by one of the 8 symmetries of the square."""
    picks = torch.randint(len(data), (batch_size,), generator=generator)
    turns = torch.randint(4, (batch_size,), generator=generator)
    flips = torch.randint(2, (batch_size,), generator=generator)
    out = []
    for index, turn, flip in zip(picks.tolist(), turns.tolist(), flips.tolist()):
        image = torch.rot90(data[index], turn, dims=(-2, -1))
        out.append(torch.flip(image, dims=(-1,)) if flip else image)
    return torch.stack(out)
