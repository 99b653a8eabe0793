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
    parse_caption,
    read_prompts,
    sample_scenes,
    write_prompts,
)
from xomni_core.synthetic.scenes import split_of_caption

HEADLINE = "two red circles left of a blue square"


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


def test_rl_may_hold_held_out_scenes_whose_caption_hashes_to_rl() -> None:
    plain = sample_scenes("rl", 700, seed=1)
    widened = sample_scenes("rl", 700, seed=1, rl_held_out=True)
    held_out = [s for s in widened if s.held_out()]
    assert len(held_out) > 70 and not any(s.held_out() for s in plain)
    assert {(o.color, o.shape) for s in held_out for o in s.objects} >= HELD_OUT_PAIRS
    assert all(split_of_caption(s.caption) == "rl" for s in widened)
    assert not {s.caption for s in widened} & {s.caption for s in sample_scenes("train", 700, seed=1)}
    assert sample_scenes("eval", 70, seed=1, rl_held_out=True) == sample_scenes("eval", 70, seed=1)


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
    assert spec("position", red, blue, relation=relation).caption == "a blue square right of a red circle"
    group = SceneRelation(subject=0, predicate="left of", object=2)
    assert spec("position", red, obj("circle", "red", 40), blue, relation=group).caption == HEADLINE
    word = SceneWord(text="CAT", color="black", center_x_px=64, center_y_px=64, font_size_px=24)
    assert spec("text", word=word).caption == 'the word "CAT"'


def test_about_a_third_of_position_scenes_have_a_counted_subject_on_the_named_side() -> None:
    scenes = sample_scenes("train", 300, seed=5, categories=["position"])
    grouped = [s for s in scenes if len(s.objects) == 3]
    assert 0.25 <= len(grouped) / len(scenes) <= 0.42
    for scene in grouped:
        assert scene.relation is not None
        subjects = scene.group_of(scene.relation.subject)
        assert len(subjects) == 2 and scene.relation.object not in subjects
        assert scene.caption.startswith("two ")
        assert [n for _, _, n in scene.groups()] == [2, 1]
        other = scene.objects[scene.relation.object]
        for index in subjects:
            dx = other.center_x_px - scene.objects[index].center_x_px
            dy = other.center_y_px - scene.objects[index].center_y_px
            along = {"left of": dx, "right of": -dx, "above": dy, "below": -dy}[scene.relation.predicate]
            across = dy if scene.relation.predicate in ("left of", "right of") else dx
            assert along >= 0.2 * 128 and along >= 1.5 * abs(across)


def test_the_headline_prompt_is_a_sampled_caption() -> None:
    assert HEADLINE in {s.caption for s in sample_scenes("eval", 300, seed=1, categories=["position"])}


def test_a_position_scene_holds_only_its_subject_group_and_one_object() -> None:
    scene = parse_caption(HEADLINE)
    data = scene.model_dump()
    with pytest.raises(ValueError, match="position scene holds its subject"):
        SceneSpec.model_validate({**data, "objects": [*data["objects"], data["objects"][2]]})
    with pytest.raises(ValueError, match="needs a relation"):
        SceneSpec.model_validate({**data, "relation": None})


@pytest.mark.parametrize("split", ["train", "rl", "eval"])
def test_parsing_a_sampled_caption_gives_back_its_claims(split: str) -> None:
    for scene in sample_scenes(split, 700, seed=6):
        parsed = parse_caption(scene.caption, seed=3)
        assert parsed.caption == scene.caption
        assert parsed.category == scene.category
        assert parsed.groups() == scene.groups()
        assert parsed.held_out() == scene.held_out()


def test_parsing_the_headline_prompt_gives_a_counted_subject() -> None:
    scene = parse_caption(HEADLINE, width_px=96, height_px=64, seed=2)
    assert (scene.category, scene.width_px, scene.height_px) == ("position", 96, 64)
    assert scene.groups() == [("red", "circle", 2), ("blue", "square", 1)]
    assert scene.relation == SceneRelation(subject=0, predicate="left of", object=2)
    assert parse_caption(HEADLINE, seed=2) == parse_caption(HEADLINE, seed=2)
    assert parse_caption(HEADLINE, seed=2) != parse_caption(HEADLINE, seed=3)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("  Two red circles to the left of a blue square. ", HEADLINE),
        ("A small red circle on a GRAY background", "a small red circle on a gray background"),
        ('The word "Cat"', 'the word "Cat"'),
    ],
)
def test_parsing_forgives_case_spacing_a_full_stop_and_the_old_predicates(text: str, expected: str) -> None:
    assert parse_caption(text).caption == expected


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("a red dog", "captions look like: .*two red circles left of a blue square"),
        ("a red circle and a blue square and a green triangle", "captions look like"),
        ("two red circles left of two blue squares", "captions look like"),
        ("a gray circle", "gray is a background colour"),
        ("a white circle on a white background", "does not show on a white background"),
        ("a red circle left of a red circle", "different colours or shapes"),
        ("1 red circles", "2 to 9 objects"),
        ("100 red circles", "2 to 9 objects"),
    ],
)
def test_text_outside_the_grammar_is_an_input_error_that_quotes_it(text: str, message: str) -> None:
    with pytest.raises(InputError, match=message) as caught:
        parse_caption(text)
    assert repr(text) in str(caught.value)


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
