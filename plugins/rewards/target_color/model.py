"""The target-colour reward: pixel statistics only, no weights."""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from xomni_core import (
    InputError,
    Reward,
    RewardBatch,
    RewardResult,
)
from xomni_core.interfaces import Weightless

from .params import RGB, TargetColorParams, parse_rgb

PLUGIN_NAME = "target-color"


class TargetColorReward(Weightless[TargetColorParams], Reward[TargetColorParams]):
    """Scores each image in [0, 1] by how close its colours are to the sample's target colour.

    Details report each image's mean colour distance to its target.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = TargetColorParams

    def target_for(self, batch: RewardBatch, index: int) -> RGB:
        """The sample's metadata ``target_color`` if present, else the params' target."""
        value = batch.metadata_for(index).get("target_color")
        if value is not None:
            try:
                return parse_rgb(value)
            except ValueError as exc:
                raise InputError(
                    f"reward '{PLUGIN_NAME}': sample {index} metadata target_color: {exc}"
                ) from exc
        if self.params.target_color is None:
            raise InputError(
                f"reward '{PLUGIN_NAME}': sample {index} has no target colour; set params.target_color "
                "or give each sample metadata 'target_color'"
            )
        return self.params.target_color

    def score(self, batch: RewardBatch) -> RewardResult:
        radius = self.params.radius
        scores: list[float] = []
        distances: list[float] = []
        for index, image in enumerate(batch.images):
            target = np.asarray(self.target_for(batch, index), dtype=np.float64)
            pixels = np.asarray(image.convert("RGB"), dtype=np.float64).reshape(-1, 3)
            mean_distance = float(np.linalg.norm(pixels.mean(axis=0) - target))
            distances.append(mean_distance)
            if self.params.measure == "mean":
                scores.append(max(0.0, 1.0 - mean_distance / radius))
            else:
                near = np.linalg.norm(pixels - target, axis=1) <= radius
                scores.append(float(near.mean()))
        return RewardResult(self.name, tuple(scores), details={"mean_distance": tuple(distances)})
