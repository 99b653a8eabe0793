"""Scene renders: the RGB image and the shape map that names what covers each pixel."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest
from PIL import Image

from xomni_core import InputError
from xomni_core.synthetic import (
    LETTER_MAP_CLASSES,
    PALETTE,
    SHAPE_MAP_CLASSES,
    SceneObject,
    SceneSpec,
    SceneWord,
    render_scene,
    render_shape_map,
    sample_scenes,
)


def test_shape_map_names_each_object_shape_and_leaves_the_background_zero() -> None:
    objects = tuple(
        SceneObject(shape=shape, color="red", center_x_px=x, center_y_px=64, half_size_px=12)
        for shape, x in (("circle", 20), ("square", 64), ("triangle", 108))
    )
    scene = SceneSpec(category="counting", width_px=128, height_px=128, background="white", objects=objects)
    shape_map = np.asarray(render_shape_map(scene))
    assert shape_map.shape == (128, 128)
    assert shape_map[5, 5] == SHAPE_MAP_CLASSES.index("background") == 0
    for obj in objects:
        assert shape_map[66, round(obj.center_x_px)] == SHAPE_MAP_CLASSES.index(obj.shape)
    # A square fills its box's corner; a circle and a triangle leave theirs empty.
    assert shape_map[53, 53] == SHAPE_MAP_CLASSES.index("square")
    assert shape_map[53, 9] == 0 and shape_map[53, 97] == 0


def test_shape_map_agrees_with_the_render_wherever_a_pixel_is_not_an_edge() -> None:
    for scene in sample_scenes("train", 14, seed=3):
        image = np.asarray(render_scene(scene)).astype(int)
        covered = np.asarray(render_shape_map(scene)) > 0
        background = (image == PALETTE[scene.background]).all(axis=2)
        inks = {obj.color for obj in scene.objects} | ({scene.word.color} if scene.word else set())
        ink = np.any([(image == PALETTE[color]).all(axis=2) for color in inks], axis=0) & ~background
        assert ink.any() and not (ink & ~covered).any(), scene.caption
        assert not (background & covered).any(), scene.caption


def test_words_are_one_class_without_anti_aliased_edges() -> None:
    word = SceneWord(text="STAR", color="black", center_x_px=64, center_y_px=64, font_size_px=24)
    scene = SceneSpec(category="text", width_px=128, height_px=128, background="white", word=word)
    values = set(np.unique(np.asarray(render_shape_map(scene))).tolist())
    assert values == {0, SHAPE_MAP_CLASSES.index("text")}


@pytest.mark.parametrize("render", [render_scene, render_shape_map])
def test_supersample_below_one_is_an_input_error(render: Callable[..., Image.Image]) -> None:
    scene = sample_scenes("train", 1, seed=0)[0]
    with pytest.raises(InputError, match="supersample must be at least 1, got 0"):
        render(scene, supersample=0)


def test_a_letter_map_names_each_letter_of_a_word_from_left_to_right() -> None:
    word = SceneWord(text="STAR", color="black", center_x_px=63.4, center_y_px=64, font_size_px=24)
    scene = SceneSpec(category="text", width_px=128, height_px=128, background="white", word=word)
    letters = np.asarray(render_shape_map(scene, letters=True))
    runs: list[str] = []
    for column in letters.T:
        named = {LETTER_MAP_CLASSES[v] for v in column.tolist()} - {"background"}
        if len(named) == 1 and (not runs or runs[-1] != next(iter(named))):
            runs.append(next(iter(named)))
    assert runs == ["letter S", "letter T", "letter A", "letter R"]


def test_a_letter_map_covers_exactly_the_pixels_of_the_shape_map() -> None:
    text = SHAPE_MAP_CLASSES.index("text")
    for scene in sample_scenes("train", 200, seed=5, categories=["text", "single_object"])[:40]:
        shapes = np.asarray(render_shape_map(scene))
        letters = np.asarray(render_shape_map(scene, letters=True))
        assert np.array_equal(shapes == text, letters >= text), scene.caption
        assert np.array_equal(np.where(shapes == text, 0, shapes), np.where(letters >= text, 0, letters))
