"""Parameter models; light, so configs validate without importing the rewards."""

from pydantic import Field

from xomni_core import ComponentParams


class BrightnessParams(ComponentParams):
    """Mean luminance, or closeness to a target luminance when ``target`` is set."""

    target: float | None = Field(None, ge=0.0, le=1.0, description="wanted mean luminance")


class SaturationParams(ComponentParams):
    """Mean HSV saturation."""

    min_value: float = Field(0.0, ge=0.0, le=1.0, description="ignore pixels darker than this")
