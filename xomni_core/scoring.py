"""Weighted combination of the rewards named in a pipeline config."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from .interfaces import Reward
from .types import RewardBatch


@dataclass(frozen=True)
class WeightedReward:
    """A reward with its weight; minimised rewards enter the sum negated."""

    slot: str
    weight: float
    reward: Reward[Any]


@dataclass(frozen=True)
class ScoredBatch:
    """Per-reward scores and their weighted sum, one value per sample."""

    per_reward: dict[str, tuple[float, ...]]
    total: tuple[float, ...]


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
        total = [t + sign * item.weight * s for t, s in zip(total, result.scores, strict=True)]
    return ScoredBatch(per_reward, tuple(total))
