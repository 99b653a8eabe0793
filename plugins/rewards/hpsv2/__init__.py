"""HPS v2 reward: human preference score of an OpenCLIP ViT-H/14 fine-tuned on HPD v2.

This module stays light: it only describes the plugin. The implementation, with the converter
from OpenCLIP checkpoints, lives in :mod:`xomni_plugins.rewards.hpsv2.model`.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import VIT_H_14, HPSv2Params

PLUGIN = PluginSpec(
    name="hpsv2",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.hpsv2.model:HPSv2Reward",
    params=HPSv2Params,
    description=(
        "Human Preference Score v2: cosine similarity of image and prompt embeddings of the HPS v2 "
        "OpenCLIP ViT-H/14, run as a transformers CLIPModel; converts OpenCLIP checkpoints."
    ),
    tags=("hpsv2", "preference", "aesthetics", "clip"),
)

__all__ = ["PLUGIN", "VIT_H_14", "HPSv2Params"]
