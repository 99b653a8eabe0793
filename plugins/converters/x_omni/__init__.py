"""The official X-Omni release to the siglip-vq, x-omni and flux-semantic component folders.

This module is the descriptor the ``xomni.converters`` entry point names; it does not import
torch. The conversion itself lives in :mod:`.converter`.
"""

from __future__ import annotations

from xomni_core.convert import ConverterOption, ConverterSpec

CONVERTER = ConverterSpec(
    name="x-omni",
    description=(
        "the official X-Omni release (config.json with vision_config, safetensors backbone, "
        "SigLIP ViT and VQ projector state dicts, FLUX-based decoder transformer)"
    ),
    implementation="xomni_plugins.converters.x_omni.converter:convert_x_omni",
    options=(
        ConverterOption(
            name="flux_dir",
            flag="--flux",
            kind="path",
            metavar="PATH",
            help="local FLUX.1-dev folder (vae/, scheduler/, text encoders, tokenizers); required",
        ),
        ConverterOption(
            name="text_free",
            kind="flag",
            help="the decoder takes no prompt (not recorded in the release's config)",
        ),
    ),
)
