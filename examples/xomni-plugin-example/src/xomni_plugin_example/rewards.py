"""Two rewards computed from pixel statistics; they hold no weights."""

from __future__ import annotations

import os
from typing import ClassVar

import numpy as np

from xomni_core import (
    Reward,
    RewardBatch,
    RewardResult,
    atomic_directory,
    read_component_file,
    write_component_file,
)

from .params import BrightnessParams, SaturationParams


class _StatisticReward(Reward):  # type: ignore[type-arg]
    """A weightless reward: its folder holds only its params."""

    @classmethod
    def from_params(cls, params, *, seed=0):  # type: ignore[no-untyped-def]
        return cls(params)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]):  # type: ignore[no-untyped-def]
        params = read_component_file(path, kind="reward", plugin=cls.name, params_class=cls.params_class)
        return cls(params)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as tmp:
            write_component_file(tmp, kind="reward", plugin=self.name, params=self.params)


class BrightnessReward(_StatisticReward):
    name: ClassVar[str] = "brightness"
    params_class = BrightnessParams

    def score(self, batch: RewardBatch) -> RewardResult:
        means = [float(np.asarray(img.convert("L"), dtype=np.float32).mean() / 255.0) for img in batch.images]
        target = self.params.target
        scores = means if target is None else [1.0 - abs(m - target) for m in means]
        return RewardResult(self.name, tuple(scores), details={"luminance": tuple(means)})


class SaturationReward(_StatisticReward):
    name: ClassVar[str] = "saturation"
    params_class = SaturationParams

    def score(self, batch: RewardBatch) -> RewardResult:
        scores = []
        for image in batch.images:
            hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
            keep = hsv[..., 2] >= self.params.min_value
            scores.append(float(hsv[..., 1][keep].mean()) if keep.any() else 0.0)
        return RewardResult(self.name, tuple(scores))
