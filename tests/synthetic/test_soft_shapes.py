"""The judge on shapes drawn the way the decoder draws them: rounded corners, a slight tilt, a
blurred edge and a fringe of a neighbouring colour."""

from __future__ import annotations

import pytest
from decoder_like import soft_image
from PIL import Image, ImageDraw, ImageFilter

from xomni_core.synthetic import PALETTE, SceneJudge, find_blobs, parse_caption


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


@pytest.mark.parametrize(("shape", "expected"), [("square", 1.0), ("circle", 0.0)])
def test_squareness_is_one_for_a_square_and_zero_for_a_disc_at_any_tilt(shape: str, expected: float) -> None:
    scene = parse_caption(f"a large red {shape}", seed=1)
    for tilt in (0.0, 20.0, 45.0):
        _, blobs = find_blobs(soft_image(scene, rounding=0.0, blur_px=0.0, tilts=(tilt,)))
        assert abs(blobs[0].squareness - expected) < 0.1, tilt


def test_a_rectangle_is_a_square_and_an_ellipse_a_circle_whatever_their_aspect() -> None:
    image = Image.new("RGB", (128, 128), PALETTE["white"])
    draw = ImageDraw.Draw(image)
    draw.rectangle((14, 20, 38, 70), fill=PALETTE["blue"])  # twice as tall as wide
    draw.ellipse((60, 80, 116, 106), fill=PALETTE["blue"])  # twice as wide as tall
    _, blobs = find_blobs(image.filter(ImageFilter.GaussianBlur(1.0)))
    assert [b.shape for b in sorted(blobs, key=lambda b: b.center_x_px)] == ["square", "circle"]
