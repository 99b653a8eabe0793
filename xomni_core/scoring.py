"""Weighted combination of the rewards named in a pipeline config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .interfaces import Reward
from .types import RewardBatch

Normalization = Literal["none", "zscore", "minmax"]


@dataclass(frozen=True)
class WeightedReward:
    """A reward with its weight and normalisation; minimised rewards enter the sum negated."""

    slot: str
    weight: float
    reward: Reward[Any]
    normalize: Normalization = "none"


@dataclass(frozen=True)
class ScoredBatch:
    """Raw per-reward scores and the weighted sum of the normalised ones, one per sample."""

    per_reward: dict[str, tuple[float, ...]]
    total: tuple[float, ...]


def normalized(scores: Sequence[float], how: Normalization) -> list[float]:
    """Rescale scores over the batch; a constant batch maps to zeros (nothing to prefer)."""
    values = list(scores)
    if how == "none" or not values:
        return values
    if how == "zscore":
        mean = sum(values) / len(values)
        std = math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))
        return [(v - mean) / std if std > 0 else 0.0 for v in values]
    low, high = min(values), max(values)
    return [(v - low) / (high - low) if high > low else 0.0 for v in values]


def score_all(rewards: Sequence[WeightedReward], batch: RewardBatch) -> ScoredBatch:
    """Score ``batch`` with every reward and add them up by weight."""
    total = [0.0] * len(batch.images)
    per_reward: dict[str, tuple[float, ...]] = {}
    for item in rewards:
        result = item.reward.score(batch)
        if len(result.scores) != len(batch.images):
            raise RuntimeError(
                f"reward '{result.name}' ({item.slot}) returned {len(result.scores)} scores "
                f"for {len(batch.images)} images"
            )
        per_reward[f"{item.slot}:{result.name}"] = result.scores
        sign = 1.0 if result.direction == "maximize" else -1.0
        scaled = normalized(result.scores, item.normalize)
        total = [t + sign * item.weight * s for t, s in zip(total, scaled, strict=True)]
    return ScoredBatch(per_reward, tuple(total))
