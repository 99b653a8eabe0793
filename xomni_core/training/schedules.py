"""Learning-rate schedules shared by the trainers of every component."""

from __future__ import annotations

import math

import torch


def cosine_decay(progress: float) -> float:
    """The share of the peak learning rate ``progress`` of the way through a half-cosine decay:
    1 at 0, falling to 0 at 1 and staying there."""
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def learning_rate_share(step: int, warmup_steps: int, total_steps: int, decay: str) -> float:
    """The share of the peak learning rate that step ``step`` (from 1) takes: a linear warm-up over
    ``warmup_steps``, then the peak (``decay`` "none") or a cosine decay to 0 at ``total_steps``."""
    if warmup_steps and step < warmup_steps:
        return step / warmup_steps
    if decay == "cosine":
        return cosine_decay((step - warmup_steps) / max(1, total_steps - warmup_steps))
    return 1.0


def warmup_cosine(
    optimizer: torch.optim.Optimizer, warmup_steps: int, total_steps: int
) -> torch.optim.lr_scheduler.LambdaLR:
    """Linear warm-up to the optimiser's learning rate, then cosine decay to zero at ``total_steps``."""

    def factor(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / warmup_steps
        return cosine_decay((step - warmup_steps) / max(1, total_steps - warmup_steps))

    return torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
