"""Weighted combination of the rewards named in a pipeline config."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Literal

from .interfaces import Reward
from .types import RewardBatch, RewardResult, ScorePart

Normalization = Literal["none", "zscore", "minmax"]


@dataclass(frozen=True)
class WeightedReward:
    """A reward with its weight and normalisation; minimised rewards enter the sum negated."""

    slot: str
    weight: float
    reward: Reward[Any]
    normalize: Normalization = "none"


#: How far a reward's parts may add up from its score before the reward is called inconsistent.
_PARTS_TOLERANCE = 1e-6


@dataclass(frozen=True)
class ScoredBatch:
    """Raw per-reward scores and the weighted sum of the normalised ones, one per sample;
    ``parts`` lists per sample the weighted parts that sum to its total (a normalised reward's
    score is one whole-image part)."""

    per_reward: dict[str, tuple[float, ...]]
    total: tuple[float, ...]
    parts: tuple[tuple[ScorePart, ...], ...] = ()


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
    parts: list[list[ScorePart]] = [[] for _ in batch.images]
    per_reward: dict[str, tuple[float, ...]] = {}
    for item in rewards:
        result = item.reward.score(batch)
        if len(result.scores) != len(batch.images):
            raise RuntimeError(
                f"reward '{result.name}' ({item.slot}) returned {len(result.scores)} scores "
                f"for {len(batch.images)} images"
            )
        per_reward[f"{item.slot}:{result.name}"] = result.scores
        factor = item.weight * (1.0 if result.direction == "maximize" else -1.0)
        scaled = normalized(result.scores, item.normalize)
        total = [t + factor * s for t, s in zip(total, scaled, strict=True)]
        for sample, sample_parts in zip(parts, _parts_of(result, item, scaled), strict=True):
            sample.extend(ScorePart(factor * part.value, part.boxes) for part in sample_parts)
    return ScoredBatch(per_reward, tuple(total), tuple(tuple(sample) for sample in parts))


def _parts_of(
    result: RewardResult, item: WeightedReward, scaled: Sequence[float]
) -> Sequence[Sequence[ScorePart]]:
    """The reward's parts of each sample's score; one whole-image part where it reports none or
    normalisation rescales its scores."""
    if result.parts is None or item.normalize != "none":
        return [(ScorePart(score),) for score in scaled]
    if len(result.parts) != len(result.scores):
        raise RuntimeError(
            f"reward '{result.name}' ({item.slot}) returned parts for {len(result.parts)} of "
            f"{len(result.scores)} samples"
        )
    for index, (score, sample_parts) in enumerate(zip(result.scores, result.parts, strict=True)):
        added = sum(part.value for part in sample_parts)
        if abs(added - score) > _PARTS_TOLERANCE * max(1.0, abs(score)):
            raise RuntimeError(
                f"reward '{result.name}' ({item.slot}): the parts of sample {index} add up to "
                f"{added:.6g}, not its score {score:.6g}"
            )
    return result.parts
