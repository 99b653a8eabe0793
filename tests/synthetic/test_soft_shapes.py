"""The judge on shapes drawn the way the decoder draws them: rounded corners, a slight tilt, a
blurred edge and a fringe of a neighbouring colour."""

from __future__ import annotations

import pytest
from PIL import Image, ImageDraw, ImageFilter

from xomni_core.synthetic import PALETTE, SceneJudge, SceneSpec, find_blobs, parse_caption
from xomni_core.synthetic.scenes import ColorName, Shape

_SUPERSAMPLE = 4


def soft_image(
    scene: SceneSpec,
    *,
    shape: Shape | None = None,
    rounding: float = 0.5,
    blur_px: float = 1.5,
    fringe: ColorName | None = None,
) -> Image.Image:
    """``scene`` drawn as the decoder draws it: each object as ``shape`` (its own by default),
    a square's corners rounded by ``rounding`` times its half side, objects tilted by up to 7
    degrees, an outline of ``fringe`` colour 1.5 px wide, then a Gaussian blur of ``blur_px``."""
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
        tilt = (-7, 4, -3, 6)[index % 4]
        tile = tile.rotate(tilt, resample=Image.Resampling.BICUBIC)
        corner = (round(obj.center_x_px * s - side / 2), round(obj.center_y_px * s - side / 2))
        canvas.paste(tile, corner, tile)
    small = canvas.resize((scene.width_px, scene.height_px), Image.Resampling.BOX)
    return small.filter(ImageFilter.GaussianBlur(blur_px))


def test_four_soft_rounded_squares_are_four_blue_squares(judge: SceneJudge) -> None:
    scene = parse_caption("four blue squares", seed=3)
    for rounding in (0.3, 0.5, 0.6):
        image = soft_image(scene, rounding=rounding, fringe="purple")
        verdict = judge(image, scene)
        assert verdict.correct, (rounding, verdict.failures())
        assert [b.shape for b in verdict.blobs] == ["square"] * 4


def test_a_tilted_square_fills_little_of_its_box_but_is_still_a_square() -> None:
    scene = parse_caption("a large red square", seed=1)
    _, blobs = find_blobs(soft_image(scene, rounding=0.3))
    assert len(blobs) == 1
    assert blobs[0].fill_ratio < 0.85  # a 7-degree tilt widens the box
    assert blobs[0].shape == "square"


def test_squares_drawn_for_circles_are_not_circles(judge: SceneJudge) -> None:
    scene = parse_caption("two green circles right of an orange square", seed=2)
    as_drawn = soft_image(scene)
    assert judge(as_drawn, scene).correct
    for rounding in (0.3, 0.5, 0.6):
        squares_only = soft_image(scene, shape="square", rounding=rounding)
        verdict = judge(squares_only, scene)
        assert not verdict.correct, rounding
        assert verdict.failures()[0].startswith("2 green circles: found")


@pytest.mark.parametrize("blur_px", [0.0, 1.0, 2.0])
def test_soft_circles_stay_circles(blur_px: float) -> None:
    scene = parse_caption("three yellow circles", seed=4)
    _, blobs = find_blobs(soft_image(scene, blur_px=blur_px, fringe="orange"))
    assert [(b.color, b.shape) for b in blobs] == [("yellow", "circle")] * 3


def test_a_fringe_of_colour_bleed_is_not_an_object() -> None:
    scene = parse_caption("a blue square", seed=0)
    background, blobs = find_blobs(soft_image(scene, fringe="purple", blur_px=0.5))
    assert background == scene.background
    assert [(b.color, b.shape) for b in blobs] == [("blue", "square")]
