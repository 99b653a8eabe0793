"""Target colour: a programmatic reward for how close an image's colours are to a target.

Cheap, exact and reachable, it is the reward the GRPO tests and the tiny training example use.
This module stays light: the implementation lives in
:mod:`xomni_plugins.rewards.target_color.model` and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import MAX_RGB_DISTANCE, TargetColorParams, parse_rgb

PLUGIN = PluginSpec(
    name="target-color",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.target_color.model:TargetColorReward",
    params=TargetColorParams,
    description=(
        "Closeness of an image's mean colour (or share of pixels near it) to a target RGB colour "
        "from params or per-sample metadata 'target_color'; scores in [0, 1]."
    ),
    tags=("color", "programmatic"),
)

__all__ = ["MAX_RGB_DISTANCE", "PLUGIN", "TargetColorParams", "parse_rgb"]
