"""Drawing a :class:`~xomni_core.synthetic.scenes.SceneSpec` with Pillow.

Shapes and text are drawn at ``supersample`` times the size and box-filtered down, so edges are
anti-aliased the way a photograph's would be while flat areas keep their exact palette colour.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ..errors import InputError
from .scenes import PALETTE, SHAPES, ColorName, SceneSpec, SceneWord

if TYPE_CHECKING:
    from PIL.Image import Image as PILImage


#: Classes of :func:`render_shape_map`, by pixel value.
SHAPE_MAP_CLASSES: tuple[str, ...] = ("background", *SHAPES, "text")
#: The classes :func:`render_shape_map` gives with ``letters=True``: a word's pixels name their
#: letter (``"letter A"``...) instead of ``"text"``.
LETTER_MAP_CLASSES: tuple[str, ...] = (
    *SHAPE_MAP_CLASSES,
    *(f"letter {chr(code)}" for code in range(ord("A"), ord("Z") + 1)),
)


def render_scene(scene: SceneSpec, *, supersample: int = 4) -> PILImage:
    """An RGB image of ``scene`` at ``scene.width_px`` x ``scene.height_px``."""
    return _render(
        scene,
        supersample,
        mode="RGB",
        background=PALETTE[scene.background],
        fill=lambda color, _: PALETTE[color],
        resample=Image.Resampling.BOX,
    )


def render_shape_map(scene: SceneSpec, *, supersample: int = 4, letters: bool = False) -> PILImage:
    """A one-channel image of ``scene`` whose pixels name what covers them.

    A pixel's value is an index into :data:`SHAPE_MAP_CLASSES` (background, one of the shapes,
    or text): the class at the pixel's centre when drawn ``supersample`` times larger, so outlines
    follow :func:`render_scene`'s. With ``letters``, an index into :data:`LETTER_MAP_CLASSES`:
    each letter of a word names itself, so a model that must predict the map has to tell letters
    apart.
    """
    classes = LETTER_MAP_CLASSES if letters else SHAPE_MAP_CLASSES
    return _render(
        scene,
        supersample,
        mode="L",
        background=classes.index("background"),
        fill=lambda _, kind: classes.index(kind),
        resample=Image.Resampling.NEAREST,
        crisp_text=True,
        letters=letters,
    )


def _render(
    scene: SceneSpec,
    supersample: int,
    *,
    mode: str,
    background: Any,
    fill: Callable[[ColorName, str], Any],
    resample: Image.Resampling,
    crisp_text: bool = False,
    letters: bool = False,
) -> PILImage:
    """Draw ``scene`` ``supersample`` times larger on a ``mode`` canvas, then resize it down."""
    if supersample < 1:
        raise InputError(f"supersample must be at least 1, got {supersample}")
    s = supersample
    canvas = Image.new(mode, (scene.width_px * s, scene.height_px * s), background)
    draw = ImageDraw.Draw(canvas)
    if crisp_text:
        draw.fontmode = "1"  # anti-aliased glyph edges would blend class indices
    _draw(draw, scene, s, fill)
    if letters and scene.word is not None:
        canvas = _name_letters(canvas, scene.word, s, LETTER_MAP_CLASSES.index("text"))
    if s == 1:
        return canvas
    return canvas.resize((scene.width_px, scene.height_px), resample)


def _draw(
    draw: ImageDraw.ImageDraw, scene: SceneSpec, scale: int, fill: Callable[[ColorName, str], Any]
) -> None:
    """Draw the objects, then the word, of ``scene`` at ``scale``; ``fill(colour, kind)`` paints."""
    for obj in scene.objects:
        left, top, right, bottom = (v * scale for v in obj.box_px())
        paint = fill(obj.color, obj.shape)
        if obj.shape == "circle":
            draw.ellipse((left, top, right, bottom), fill=paint)
        elif obj.shape == "square":
            draw.rectangle((left, top, right, bottom), fill=paint)
        else:
            draw.polygon([((left + right) / 2, top), (right, bottom), (left, bottom)], fill=paint)
    if scene.word is not None:
        word = scene.word
        draw.text(
            (word.center_x_px * scale, word.center_y_px * scale),
            word.text,
            font=_font(word.font_size_px * scale),
            fill=fill(word.color, "text"),
            anchor="mm",
        )


def _name_letters(canvas: PILImage, word: SceneWord, scale: int, text_class: int) -> PILImage:
    """``canvas`` with each ``text_class`` pixel renamed for the letter whose advance (the span
    from its origin to the next letter's) holds its column: the word keeps exactly the pixels it
    was drawn with, and a letter's few overhanging pixels go to its neighbour."""
    font = _font(word.font_size_px * scale)
    # Where Pillow put the word's origin: its centre moved by the same whole-pixel anchor offsets.
    left = word.center_x_px * scale + font.getbbox(word.text, anchor="mm")[0]
    left -= font.getbbox(word.text, anchor="lm")[0]
    bounds = np.array([left + font.getlength(word.text[: i + 1]) for i in range(len(word.text) - 1)])
    kinds = np.array(
        [
            LETTER_MAP_CLASSES.index(f"letter {c.upper()}") if "A" <= c.upper() <= "Z" else text_class
            for c in word.text
        ],
        dtype=np.uint8,
    )
    pixels = np.array(canvas)
    rows, columns = np.nonzero(pixels == text_class)
    pixels[rows, columns] = kinds[np.searchsorted(bounds, columns + 0.5)]
    return Image.fromarray(pixels)


def text_width_px(text: str, font_size_px: int) -> float:
    """Width of ``text`` in Pillow's default TrueType font at ``font_size_px``."""
    return float(_font(font_size_px).getlength(text))


@lru_cache(maxsize=64)
def _font(size_px: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    font = ImageFont.load_default(size=size_px)
    if not isinstance(font, ImageFont.FreeTypeFont):
        raise InputError("drawing words needs Pillow built with FreeType (its default TrueType font)")
    return font
