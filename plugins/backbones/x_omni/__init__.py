"""X-Omni: the unified autoregressive backbone (Qwen2.5-7B-Instruct with a multimodal vocabulary).

This module stays light: it only describes the plugin. The torch implementation lives in
:mod:`xomni_plugins.backbones.x_omni.model` and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import XOmniParams, count_parameters

PLUGIN = PluginSpec(
    name="x-omni",
    kind="backbone",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.backbones.x_omni.model:XOmniBackbone",
    params=XOmniParams,
    description=(
        "X-Omni unified backbone: Qwen2 decoder with separate text and multimodal embeddings, "
        "norms and heads; the first and last layers update only image positions. Predicts "
        "text in text mode and one of 16,384 semantic image tokens in image mode."
    ),
    tags=("x-omni", "qwen2", "autoregressive"),
    runtimes={
        "onnxruntime": "xomni_export.runtime.backbone:ExportedBackbone",
        "tensorrt": "xomni_export.runtime.backbone:ExportedBackbone",
    },
)

__all__ = ["PLUGIN", "XOmniParams", "count_parameters"]
