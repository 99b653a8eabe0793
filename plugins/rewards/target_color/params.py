"""Parameters of the target-colour reward (pydantic only, no torch)."""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import Field, field_validator

from xomni_core import ComponentParams

#: The longest distance between two RGB colours with channels in [0, 255].
MAX_RGB_DISTANCE = 255.0 * math.sqrt(3.0)

RGB = tuple[int, int, int]


def parse_rgb(value: Any) -> RGB:
    """An RGB triple from ``[r, g, b]`` (0-255) or a ``"#rrggbb"`` string; raises ``ValueError``."""
    if isinstance(value, str):
        text = value.strip().removeprefix("#")
        if len(text) != 6 or any(c not in "0123456789abcdefABCDEF" for c in text):
            raise ValueError(f"colour {value!r} is not '#rrggbb' hex")
        return (int(text[0:2], 16), int(text[2:4], 16), int(text[4:6], 16))
    if isinstance(value, list | tuple) and len(value) == 3:
        channels = []
        for channel in value:
            if isinstance(channel, bool) or not isinstance(channel, int | float) or channel != int(channel):
                raise ValueError(f"colour {value!r} must hold three whole numbers")
            if not 0 <= channel <= 255:
                raise ValueError(f"colour {value!r} has a channel outside 0-255")
            channels.append(int(channel))
        return (channels[0], channels[1], channels[2])
    raise ValueError(f"colour {value!r} must be [r, g, b] with channels 0-255 or '#rrggbb'")


class TargetColorParams(ComponentParams):
    """Which colour to aim for and how closeness is measured.

    ``mean``: ``1 - distance(mean colour, target) / radius``, floored at 0. ``fraction``: the share
    of pixels within ``radius`` of the target. Distances are Euclidean in RGB (0-255 a channel).
    """

    target_color: RGB | None = Field(
        None,
        description="[r, g, b] or '#rrggbb'; a sample's metadata 'target_color' overrides it",
    )
    measure: Literal["mean", "fraction"] = Field("mean", description="mean colour, or share of pixels")
    radius: float = Field(
        MAX_RGB_DISTANCE,
        gt=0.0,
        description="RGB distance where the mean score reaches 0, or within which a pixel counts",
    )

    @field_validator("target_color", mode="before")
    @classmethod
    def _parse_color(cls, value: Any) -> RGB | None:
        return None if value is None else parse_rgb(value)
