"""Scene specs: seeded sampling, held-out splits, captions and JSON."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xomni_core import InputError
from xomni_core.synthetic import (
    CATEGORIES,
    HELD_OUT_PAIRS,
    HELD_OUT_WORDS,
    SceneObject,
    SceneRelation,
    SceneSpec,
    SceneWord,
    read_prompts,
    sample_scenes,
    write_prompts,
)


def test_same_seed_gives_the_same_scenes_and_a_longer_list_extends_a_shorter_one() -> None:
    first = sample_scenes("train", 30, seed=7)
    assert sample_scenes("train", 30, seed=7) == first
    assert sample_scenes("train", 50, seed=7)[:30] == first
    assert sample_scenes("train", 30, seed=8) != first


def test_categories_take_equal_turns() -> None:
    scenes = sample_scenes("eval", 70, seed=0)
    assert [s.category for s in scenes[:7]] == list(CATEGORIES)
    assert all(sum(s.category == c for s in scenes) == 10 for c in CATEGORIES)


def test_held_out_pairs_and_words_appear_only_in_eval() -> None:
    for split in ("train", "rl"):
        for scene in sample_scenes(split, 700, seed=1):
            assert not {(o.color, o.shape) for o in scene.objects} & HELD_OUT_PAIRS
            assert scene.word is None or scene.word.text not in HELD_OUT_WORDS
    evaluation = sample_scenes("eval", 700, seed=1)
    seen_pairs = {(o.color, o.shape) for s in evaluation for o in s.objects}
    assert seen_pairs >= HELD_OUT_PAIRS
    assert {s.word.text for s in evaluation if s.word} & HELD_OUT_WORDS
    assert sum(s.held_out() for s in evaluation) > len(evaluation) / 3


def test_splits_share_no_caption() -> None:
    captions = {
        split: {s.caption for s in sample_scenes(split, 700, seed=2)} for split in ("train", "rl", "eval")
    }
    assert not captions["train"] & captions["rl"]
    assert not captions["train"] & captions["eval"]
    assert not captions["rl"] & captions["eval"]


def test_captions_state_what_each_category_checks() -> None:
    def obj(shape: str, color: str, x: float, **extra: str) -> SceneObject:
        return SceneObject.model_validate(
            {"shape": shape, "color": color, "center_x_px": x, "center_y_px": 64, "half_size_px": 10, **extra}
        )

    def spec(category: str, *objects: SceneObject, **extra: object) -> SceneSpec:
        return SceneSpec.model_validate(
            {"category": category, "width_px": 128, "height_px": 128, "background": "white",
             "objects": objects, **extra}
        )  # fmt: skip

    red, blue = obj("circle", "red", 30), obj("square", "blue", 90)
    assert spec("single_object", obj("triangle", "orange", 30, size="large", region="left")).caption == (
        "a large orange triangle on the left"
    )
    assert spec("counting", red, obj("circle", "red", 90)).caption == "two red circles"
    assert spec("color_attr", red, blue).caption == "a red circle and a blue square"
    assert spec("colors", red, mentions_background=True).caption == "a red circle on a white background"
    relation = SceneRelation(subject=1, predicate="right of", object=0)
    assert (
        spec("position", red, blue, relation=relation).caption == "a blue square to the right of a red circle"
    )
    word = SceneWord(text="CAT", color="black", center_x_px=64, center_y_px=64, font_size_px=24)
    assert spec("text", word=word).caption == 'the word "CAT"'


def test_scene_survives_a_json_round_trip_and_rides_along_as_metadata() -> None:
    for scene in sample_scenes("eval", 14, seed=3):
        again = SceneSpec.from_json(scene.to_json())
        assert again == scene
        meta = json.loads(json.dumps(scene.metadata()))
        assert SceneSpec.from_metadata(meta) == scene
        assert meta.get("target_text") == (scene.word.text if scene.word else None)


def test_prompt_file_holds_one_prompt_and_scene_a_line(tmp_path: Path) -> None:
    scenes = sample_scenes("eval", 14, seed=4)
    path = tmp_path / "eval.jsonl"
    assert write_prompts(path, scenes) == 14
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [line["prompt"] for line in lines] == [s.caption for s in scenes]
    assert [scene for _, scene in read_prompts(path)] == scenes


def test_unknown_split_or_category_is_an_input_error_with_a_suggestion() -> None:
    with pytest.raises(InputError, match="Did you mean 'eval'"):
        sample_scenes("evl", 3)
    with pytest.raises(InputError, match="Did you mean 'counting'"):
        sample_scenes("eval", 3, categories=["countin"])
