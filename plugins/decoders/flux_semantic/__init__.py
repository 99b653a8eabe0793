"""FLUX.1-dev decoder conditioned on semantic latents (X-Omni's offline diffusion decoder).

This module stays light: the implementation (torch, diffusers, transformers) is imported only
when the registry loads it.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import FluxSemanticParams

#: The class that runs exported artefacts on either backend.
RUNTIME = "xomni_plugins.decoders.flux_semantic.runtime:ExportedFluxSemanticDecoder"

PLUGIN = PluginSpec(
    name="flux-semantic",
    kind="decoder",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.decoders.flux_semantic.model:FluxSemanticDecoder",
    params=FluxSemanticParams,
    description=(
        "FLUX.1-dev transformer with a zero-initialised linear map from semantic latents to the "
        "image tokens, added between the dual- and single-stream blocks; T5 + CLIP prompts "
        "(or none, for the text-free variant), FLUX VAE, flow-matching Euler with true CFG."
    ),
    tags=("diffusion", "flux", "x-omni"),
    runtimes={"onnxruntime": RUNTIME, "tensorrt": RUNTIME},
)

__all__ = ["PLUGIN", "FluxSemanticParams"]
