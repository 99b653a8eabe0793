"""Loss weightings shared by the trainers of image components."""

from __future__ import annotations

import torch


def object_weights(pixels: torch.Tensor, object_weight: float) -> torch.Tensor:
    """Per-pixel loss weights ``(B, 1, H, W)`` with mean 1: ``1 + object_weight`` where a pixel
    differs from its image's median (background) colour, 1 elsewhere.

    Objects cover a few percent of a synthetic scene; unweighted, a reconstruction loss is mostly
    background and learns an object's colour and outline last.
    """
    background = pixels.flatten(2).median(dim=2).values[:, :, None, None]
    objects = ((pixels - background).abs().amax(dim=1, keepdim=True) > 0.1).to(pixels.dtype)
    weight = 1.0 + object_weight * objects
    return weight / weight.mean()
