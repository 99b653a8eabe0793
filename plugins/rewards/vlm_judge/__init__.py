"""VLM judge reward: a Qwen2.5-VL model's probability that the image matches the prompt.

This module stays light: it only describes the plugin. The transformers implementation lives in
:mod:`xomni_plugins.rewards.vlm_judge.model` and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import QwenVLNetworkParams, VlmJudgeParams

PLUGIN = PluginSpec(
    name="vlm-judge",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.vlm_judge.model:VlmJudgeReward",
    params=VlmJudgeParams,
    description=(
        "Text-image alignment judged by Qwen2.5-VL: asked whether the image matches the prompt, "
        "the score is P(yes) normalised over yes and no at the answer position."
    ),
    tags=("qwen2.5-vl", "alignment", "vlm"),
)

__all__ = ["PLUGIN", "QwenVLNetworkParams", "VlmJudgeParams"]
