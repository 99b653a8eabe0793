"""Parameter models; light, so configs validate without importing the components."""

from pydantic import Field, model_validator

from xomni_core import ComponentParams


class BrightnessParams(ComponentParams):
    """Mean luminance, or closeness to a target luminance when ``target`` is set."""

    target: float | None = Field(None, ge=0.0, le=1.0, description="wanted mean luminance")


class SaturationParams(ComponentParams):
    """Mean HSV saturation."""

    min_value: float = Field(0.0, ge=0.0, le=1.0, description="ignore pixels darker than this")


class LatentPreviewParams(ComponentParams):
    """A linear map from semantic latent channels to RGB, one flat colour block per token."""

    # Every field has a default: a config that loads a saved folder (`weights:`) names no params,
    # and `config validate` still checks them.
    latent_channels: int = Field(64, ge=1, description="channels of the tokenizer's latents")
    pixels_per_token: int = Field(16, ge=1, description="side of the block each token becomes")
    projection: list[list[float]] | None = Field(
        None, description="3 rows of latent_channels weights (default: the first three channels)"
    )

    @model_validator(mode="after")
    def _projection_fits(self) -> "LatentPreviewParams":
        rows = self.projection
        if rows is not None and (len(rows) != 3 or any(len(r) != self.latent_channels for r in rows)):
            raise ValueError(f"projection must be 3 rows of {self.latent_channels} numbers")
        return self
