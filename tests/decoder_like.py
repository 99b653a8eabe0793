"""Images of scenes drawn the way the decoder draws them: rounded corners, a slight tilt, a
blurred edge and a fringe of a neighbouring colour."""

from __future__ import annotations

from PIL import Image, ImageDraw, ImageFilter

from xomni_core.synthetic import PALETTE, SceneSpec
from xomni_core.synthetic.scenes import ColorName, Shape

_SUPERSAMPLE = 4


def soft_image(
    scene: SceneSpec,
    *,
    shape: Shape | None = None,
    rounding: float = 0.5,
    blur_px: float = 1.5,
    fringe: ColorName | None = None,
    tilts: tuple[float, ...] = (-7.0, 4.0, -3.0, 6.0),
) -> Image.Image:
    """``scene`` drawn as the decoder draws it: each object as ``shape`` (its own by default),
    a square's corners rounded by ``rounding`` times its half side, object ``i`` tilted by
    ``tilts[i % len(tilts)]`` degrees, an outline of ``fringe`` colour 1.5 px wide, then a Gaussian
    blur of ``blur_px``."""
    s = _SUPERSAMPLE
    canvas = Image.new("RGB", (scene.width_px * s, scene.height_px * s), PALETTE[scene.background])
    for index, obj in enumerate(scene.objects):
        half = obj.half_size_px * s
        margin = int(half)
        side = int(2 * (half + margin))
        tile = Image.new("RGBA", (side, side), (0, 0, 0, 0))
        draw = ImageDraw.Draw(tile)
        box = (margin, margin, side - margin, side - margin)
        drawn = shape or obj.shape
        for outline, color in ((1.5 * s, fringe), (0, obj.color)):
            if color is None:
                continue
            grown = (box[0] - outline, box[1] - outline, box[2] + outline, box[3] + outline)
            if drawn == "circle":
                draw.ellipse(grown, fill=(*PALETTE[color], 255))
            else:
                draw.rounded_rectangle(grown, radius=rounding * half + outline, fill=(*PALETTE[color], 255))
        tilt = tilts[index % len(tilts)]
        tile = tile.rotate(tilt, resample=Image.Resampling.BICUBIC)
        corner = (round(obj.center_x_px * s - side / 2), round(obj.center_y_px * s - side / 2))
        canvas.paste(tile, corner, tile)
    small = canvas.resize((scene.width_px, scene.height_px), Image.Resampling.BOX)
    return small.filter(ImageFilter.GaussianBlur(blur_px))
