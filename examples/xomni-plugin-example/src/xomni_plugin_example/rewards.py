"""Two rewards computed from pixel statistics; they hold no weights."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from xomni_core import Reward, RewardBatch, RewardResult
from xomni_core.interfaces import Weightless

from .params import BrightnessParams, SaturationParams


class BrightnessReward(Weightless[BrightnessParams], Reward[BrightnessParams]):
    name: ClassVar[str] = "brightness"
    params_class = BrightnessParams

    def score(self, batch: RewardBatch) -> RewardResult:
        means = [float(np.asarray(img.convert("L"), dtype=np.float32).mean() / 255.0) for img in batch.images]
        target = self.params.target
        scores = means if target is None else [1.0 - abs(m - target) for m in means]
        return RewardResult(self.name, tuple(scores), details={"luminance": tuple(means)})


class SaturationReward(Weightless[SaturationParams], Reward[SaturationParams]):
    name: ClassVar[str] = "saturation"
    params_class = SaturationParams

    def score(self, batch: RewardBatch) -> RewardResult:
        scores = []
        for image in batch.images:
            hsv = np.asarray(image.convert("HSV"), dtype=np.float32) / 255.0
            keep = hsv[..., 2] >= self.params.min_value
            scores.append(float(hsv[..., 1][keep].mean()) if keep.any() else 0.0)
        return RewardResult(self.name, tuple(scores))
