"""pluggy hooks: register the rewards and the decoder from one entry point, and note built pipelines."""

import logging

from xomni_core import CORE_API_VERSION, PluginSpec, hookimpl

from .params import BrightnessParams, LatentPreviewParams, SaturationParams

log = logging.getLogger(__name__)


@hookimpl
def xomni_register_plugins() -> list[PluginSpec]:
    return [
        PluginSpec(
            name="brightness",
            kind="reward",
            version="0.1.0",
            api_version=CORE_API_VERSION,
            implementation="xomni_plugin_example.rewards:BrightnessReward",
            params=BrightnessParams,
            description="Mean luminance of the image, or closeness to a target.",
        ),
        PluginSpec(
            name="saturation",
            kind="reward",
            version="0.1.0",
            api_version=CORE_API_VERSION,
            implementation="xomni_plugin_example.rewards:SaturationReward",
            params=SaturationParams,
            description="Mean HSV saturation of the image.",
        ),
        PluginSpec(
            name="latent-preview",
            kind="decoder",
            version="0.1.0",
            api_version=CORE_API_VERSION,
            implementation="xomni_plugin_example.decoders:LatentPreviewDecoder",
            params=LatentPreviewParams,
            description="A fixed linear preview of the semantic latents: one flat block per token.",
        ),
    ]


@hookimpl
def xomni_pipeline_built(pipeline: object, config: object) -> None:
    log.info("xomni pipeline built: %s", type(pipeline).__name__)
