"""Token-level advantages from reward parts that say where in the image they were earned.

A group's sequence advantage is ``(r_i - mean r) / (std r + eps)``, and ``r_i`` is the sum of
the sample's parts, so the advantage is the sum of the parts' centred values over the same
scale. Giving each part's term only to the image tokens under its regions (the share
``regional`` of it; the rest stays with every token) credits the objects that passed or failed
a check instead of the whole image. With ``regional`` 0 every token takes the sequence
advantage, as in GRPO.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch

from ..types import Box, GridSize, ScorePart

#: Token cells a region grows by on each side: the decoder spreads a token over its neighbours.
REGION_MARGIN_TOKENS = 1


def region_mask(boxes: Sequence[Box], grid: GridSize) -> torch.Tensor:
    """``(rows * cols,)`` booleans: the image tokens, in raster order, whose cells (grown by
    :data:`REGION_MARGIN_TOKENS`) overlap any of ``boxes``."""
    mask = torch.zeros(grid.grid_h, grid.grid_w, dtype=torch.bool)
    for left, top, right, bottom in boxes:
        first_col = max(0, math.floor(left * grid.grid_w) - REGION_MARGIN_TOKENS)
        last_col = min(grid.grid_w, math.ceil(right * grid.grid_w) + REGION_MARGIN_TOKENS)
        first_row = max(0, math.floor(top * grid.grid_h) - REGION_MARGIN_TOKENS)
        last_row = min(grid.grid_h, math.ceil(bottom * grid.grid_h) + REGION_MARGIN_TOKENS)
        mask[first_row:last_row, first_col:last_col] = True
    return mask.reshape(-1)


def token_advantages(
    parts: Sequence[Sequence[ScorePart]], scale: float, grid: GridSize, regional: float
) -> torch.Tensor:
    """``(samples, tokens)`` float64 advantages of one group's samples from their score parts.

    Every sample must list the same parts in the same order (the same checks of the same
    prompt); ``scale`` is the group's reward deviation plus its epsilon.
    """
    counts = {len(sample) for sample in parts}
    if len(counts) != 1:
        raise RuntimeError(f"a group's samples report different numbers of score parts: {sorted(counts)}")
    values = torch.tensor([[part.value for part in sample] for sample in parts], dtype=torch.float64)
    centred = (values - values.mean(dim=0)) / scale
    advantages = torch.zeros(len(parts), grid.num_tokens, dtype=torch.float64)
    for i, sample in enumerate(parts):
        for k, part in enumerate(sample):
            weight: torch.Tensor | float = 1.0
            if part.boxes and regional > 0.0:
                weight = (1.0 - regional) + regional * region_mask(part.boxes, grid).to(torch.float64)
            advantages[i] += centred[i, k] * weight
    return advantages
