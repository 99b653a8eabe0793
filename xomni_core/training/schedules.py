"""Learning-rate schedules shared by the trainers of every component."""

from __future__ import annotations

import math

import torch


def cosine_decay(progress: float) -> float:
    """The share of the peak learning rate ``progress`` of the way through a half-cosine decay:
    1 at 0, falling to 0 at 1 and staying there."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimiser's learning rate, then cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return cosine_decay((step - warmup_steps) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
