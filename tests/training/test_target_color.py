"""The target-colour reward scores closeness to a colour from params or per-sample metadata."""

from __future__ import annotations

import pytest
from PIL import Image

from xomni_core import InputError, RewardBatch
from xomni_core.config import load_config, resolve_config
from xomni_core.errors import ConfigError
from xomni_core.registry import PluginRegistry
from xomni_plugins.rewards.target_color import MAX_RGB_DISTANCE, TargetColorParams
from xomni_plugins.rewards.target_color.model import TargetColorReward


def _solid(rgb: tuple[int, int, int]) -> Image.Image:
    return Image.new("RGB", (8, 8), rgb)


def test_mean_colour_score_falls_linearly_with_distance_to_the_target() -> None:
    reward = TargetColorReward.from_params(TargetColorParams(target_color=(255, 0, 0)))
    result = reward.score(
        RewardBatch([_solid((255, 0, 0)), _solid((0, 255, 255)), _solid((255, 0, 100))], ["a"] * 3)
    )
    assert result.scores == pytest.approx((1.0, 0.0, 1.0 - 100 / MAX_RGB_DISTANCE))
    assert result.details["mean_distance"][2] == pytest.approx(100.0)


def test_a_samples_metadata_target_overrides_the_params_target() -> None:
    reward = TargetColorReward.from_params(TargetColorParams(target_color="#000000", radius=10.0))
    batch = RewardBatch(
        [_solid((0, 0, 255)), _solid((0, 0, 255))], ["a", "b"], [{"target_color": "#0000ff"}, {}]
    )
    assert reward.score(batch).scores == (1.0, 0.0)


def test_fraction_measure_counts_pixels_near_the_target() -> None:
    image = _solid((0, 0, 0))
    image.paste((250, 250, 250), (0, 0, 8, 2))  # a quarter of the pixels
    reward = TargetColorReward.from_params(
        TargetColorParams(target_color=(255, 255, 255), measure="fraction", radius=10)
    )
    assert reward.score(RewardBatch([image], ["a"])).scores == (0.25,)


def test_a_sample_without_any_target_is_refused() -> None:
    reward = TargetColorReward.from_params(TargetColorParams())
    with pytest.raises(InputError, match="target_color"):
        reward.score(RewardBatch([_solid((0, 0, 0))], ["a"]))


def test_a_colour_outside_0_to_255_fails_config_resolution() -> None:
    config = load_config(
        data={"rewards": [{"plugin": "target-color", "params": {"target_color": [300, 0, 0]}}]}
    )
    with pytest.raises(ConfigError, match=r"rewards\.0\.params\.target_color"):
        resolve_config(config, PluginRegistry.discover())
