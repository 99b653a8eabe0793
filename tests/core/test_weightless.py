"""Weightless components: their folder is their params, with no save/load code of their own."""

from __future__ import annotations

import json
from pathlib import Path
from typing import ClassVar

import pytest

from xomni_core import CheckpointError, ComponentParams, Decoder, DecodeRequest, PluginError, Reward
from xomni_core.interfaces import Weightless
from xomni_core.types import RewardBatch, RewardResult
from xomni_plugins.rewards.target_color.model import TargetColorReward
from xomni_plugins.rewards.target_color.params import TargetColorParams


class OffsetParams(ComponentParams):
    offset: float = 0.0


class ConstantReward(Weightless[OffsetParams], Reward[OffsetParams]):
    name: ClassVar[str] = "constant"
    params_class = OffsetParams

    def score(self, batch: RewardBatch) -> RewardResult:
        return RewardResult(self.name, tuple(self.params.offset for _ in batch.images))


class BlankDecoder(Weightless[OffsetParams], Decoder[OffsetParams]):
    plugin_name: ClassVar[str] = "blank"
    params_class = OffsetParams
    latent_channels = 4
    pixels_per_token = 1

    def decode(self, request: DecodeRequest) -> list:  # type: ignore[type-arg]
        return []


def test_a_weightless_reward_saves_only_its_params_and_loads_them_back(tmp_path: Path) -> None:
    ConstantReward.from_params(OffsetParams(offset=0.25), seed=3).save_pretrained(tmp_path / "r")
    assert [p.name for p in (tmp_path / "r").iterdir()] == ["xomni_component.json"]
    record = json.loads((tmp_path / "r" / "xomni_component.json").read_text())
    assert (record["kind"], record["plugin"], record["params"]) == ("reward", "constant", {"offset": 0.25})
    assert ConstantReward.from_pretrained(tmp_path / "r").params == OffsetParams(offset=0.25)


def test_any_kind_can_be_weightless_under_its_plugin_name(tmp_path: Path) -> None:
    BlankDecoder(OffsetParams()).save_pretrained(tmp_path / "d")
    assert BlankDecoder.from_pretrained(tmp_path / "d").params == OffsetParams()
    with pytest.raises(CheckpointError, match="holds a decoder of plugin 'blank', expected a reward"):
        ConstantReward.from_pretrained(tmp_path / "d")


def test_a_weightless_component_without_a_name_says_what_to_set(tmp_path: Path) -> None:
    class Nameless(BlankDecoder):
        plugin_name: ClassVar[str] = ""

    with pytest.raises(PluginError, match="Nameless must set plugin_name"):
        Nameless(OffsetParams()).save_pretrained(tmp_path / "n")


def test_the_target_color_reward_folder_is_what_it_was(tmp_path: Path) -> None:
    params = TargetColorParams(target_color=(10, 20, 30))
    TargetColorReward.from_params(params).save_pretrained(tmp_path / "t")
    record = json.loads((tmp_path / "t" / "xomni_component.json").read_text())
    assert (record["kind"], record["plugin"]) == ("reward", "target-color")
    assert TargetColorReward.from_pretrained(tmp_path / "t").params == params
