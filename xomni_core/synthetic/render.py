"""Drawing a :class:`~xomni_core.synthetic.scenes.SceneSpec` with Pillow.

Shapes and text are drawn at ``supersample`` times the size and box-filtered down, so edges are
anti-aliased the way a photograph's would be while flat areas keep their exact palette colour.
"""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from .scenes import PALETTE, SceneSpec

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


def render_scene(scene: SceneSpec, *, supersample: int = 4) -> PILImage:
    """An RGB image of ``scene`` at ``scene.width_px`` x ``scene.height_px``."""
    if supersample < 1:
        raise InputError(f"supersample must be at least 1, got {supersample}")
    s = supersample
    canvas = Image.new("RGB", (scene.width_px * s, scene.height_px * s), PALETTE[scene.background])
    draw = ImageDraw.Draw(canvas)
    for obj in scene.objects:
        left, top, right, bottom = (v * s for v in obj.box_px())
        fill = PALETTE[obj.color]
        if obj.shape == "circle":
            draw.ellipse((left, top, right, bottom), fill=fill)
        elif obj.shape == "square":
            draw.rectangle((left, top, right, bottom), fill=fill)
        else:
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=fill)
    if scene.word is not None:
        word = scene.word
        draw.text(
            (word.center_x_px * s, word.center_y_px * s),
            word.text,
            font=_font(word.font_size_px * s),
            fill=PALETTE[word.color],
            anchor="mm",
        )
    if s == 1:
        return canvas
    return canvas.resize((scene.width_px, scene.height_px), Image.Resampling.BOX)


def text_width_px(text: str, font_size_px: int) -> float:
    """Width of ``text`` in Pillow's default TrueType font at ``font_size_px``."""
    return float(_font(font_size_px).getlength(text))


@lru_cache(maxsize=64)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    font = ImageFont.load_default(size=size_px)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise InputError("drawing words needs Pillow built with FreeType (its default TrueType font)")
    return font
