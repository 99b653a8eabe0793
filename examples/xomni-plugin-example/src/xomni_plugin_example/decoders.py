"""A decoder with no weights: a fixed linear preview of the semantic latents."""

from __future__ import annotations

from typing import ClassVar

import numpy as np
from PIL import Image

from xomni_core import Decoder, DecodeRequest
from xomni_core.interfaces import Weightless

from .params import LatentPreviewParams


class LatentPreviewDecoder(Weightless[LatentPreviewParams], Decoder[LatentPreviewParams]):
    """Each token becomes a flat block coloured by ``sigmoid(projection @ latent)``."""

    plugin_name: ClassVar[str] = "latent-preview"
    params_class = LatentPreviewParams

    @property
    def latent_channels(self) -> int:
        return self.params.latent_channels

    @property
    def pixels_per_token(self) -> int:
        return self.params.pixels_per_token

    def projection(self) -> np.ndarray:
        if self.params.projection is not None:
            return np.asarray(self.params.projection, dtype=np.float32)
        return np.eye(3, self.latent_channels, dtype=np.float32)

    def decode(self, request: DecodeRequest) -> list[Image.Image]:
        values = request.latents.values.detach().float().cpu().numpy()  # (batch, channels, h, w)
        rgb = 1.0 / (1.0 + np.exp(-np.einsum("oc,bchw->bhwo", self.projection(), values)))
        side = self.pixels_per_token
        blocks = rgb.repeat(side, axis=1).repeat(side, axis=2)
        return [Image.fromarray((255 * image).round().astype(np.uint8), "RGB") for image in blocks]
