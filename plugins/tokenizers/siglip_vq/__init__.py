"""SigLIP-VQ: X-Omni's semantic image tokenizer (SigLIP2 ViT features, nearest-code quantiser).

This module stays light: it only describes the plugin. The torch implementation lives in
:mod:`xomni_plugins.tokenizers.siglip_vq.model` and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import SigLIPVQParams

#: The class that runs exported artefacts on either backend.
RUNTIME = "xomni_plugins.tokenizers.siglip_vq.runtime:ExportedSigLIPVQTokenizer"

PLUGIN = PluginSpec(
    name="siglip-vq",
    kind="tokenizer",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.tokenizers.siglip_vq.model:SigLIPVQTokenizer",
    params=SigLIPVQParams,
    description=(
        "X-Omni semantic image tokenizer: any-resolution SigLIP2 ViT features (16 px per token) "
        "quantised to the nearest of 16,384 L2-normalised codes; decodes to 1536-channel latents."
    ),
    tags=("x-omni", "semantic", "vq"),
    runtimes={"onnxruntime": RUNTIME, "tensorrt": RUNTIME},
)

__all__ = ["PLUGIN", "SigLIPVQParams"]
