"""CLIP score reward: cosine similarity of CLIP image and prompt embeddings (CLIPScore).

This module stays light: it only describes the plugin. The transformers implementation lives in
:mod:`xomni_plugins.rewards.clip_score.model` and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import ClipNetworkParams, ClipScoreParams

PLUGIN = PluginSpec(
    name="clip-score",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.clip_score.model:ClipScoreReward",
    params=ClipScoreParams,
    description=(
        "Text-image alignment: w * max(cos, 0) of CLIP image and prompt embeddings (CLIPScore, "
        "w = 2.5 by default); loads a local transformers CLIP folder."
    ),
    tags=("clip", "alignment"),
)

__all__ = ["PLUGIN", "ClipNetworkParams", "ClipScoreParams"]
