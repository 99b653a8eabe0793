"""Compositional judge: a programmatic reward for whether an image shows what its caption says.

It judges shapes, colours, counts, positions and words against a synthetic scene (per-sample
metadata ``scene``) or, without one, against the prompt read as a benchmark caption. This module
stays light: the implementation lives in :mod:`xomni_plugins.rewards.compose_judge.model` and is
imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import ComposeJudgeParams

PLUGIN = PluginSpec(
    name="compose-judge",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.compose_judge.model:ComposeJudgeReward",
    params=ComposeJudgeParams,
    description=(
        "Share of a caption's claims (objects, colours, counts, positions, words) an image bears out, "
        "judged against metadata 'scene' or the prompt parsed as a benchmark caption; scores in [0, 1] "
        "(plus correct_bonus where every check passes; attribute_credit pays part of a missed object's "
        "check for its colour or its shape alone)."
    ),
    tags=("compositional", "programmatic"),
)

__all__ = ["PLUGIN", "ComposeJudgeParams"]
