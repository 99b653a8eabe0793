"""The judge against renders of held-out eval scenes: clean, deliberately wrong, and degraded."""

from __future__ import annotations

import io
import random
from collections import Counter

import numpy as np
import pytest
from PIL import Image, ImageFilter

from xomni_core.synthetic import (
    CATEGORIES,
    DetectorParams,
    SceneJudge,
    SceneObject,
    SceneSpec,
    corrupt_scene,
    find_blobs,
    parse_caption,
    render_scene,
    sample_scenes,
)
from xomni_core.synthetic.detect import label_components

OBJECT_CATEGORIES = [c for c in CATEGORIES if c != "text"]


def accuracy_by_category(judge: SceneJudge, pairs: list[tuple[Image.Image, SceneSpec]]) -> dict[str, float]:
    total: Counter[str] = Counter()
    correct: Counter[str] = Counter()
    for image, scene in pairs:
        total[scene.category] += 1
        correct[scene.category] += judge(image, scene).correct
    return {name: correct[name] / total[name] for name in total}


def degrade(image: Image.Image, rng: random.Random) -> Image.Image:
    """Gaussian blur of radius 1-2 px, then JPEG at quality 60-80."""
    blurred = image.filter(ImageFilter.GaussianBlur(rng.uniform(1.0, 2.0)))
    buffer = io.BytesIO()
    blurred.save(buffer, format="JPEG", quality=rng.randint(60, 80))
    buffer.seek(0)
    return Image.open(buffer).convert("RGB")


def test_labelling_separates_blobs_and_colours() -> None:
    classes = np.full((6, 8), -1)
    classes[1:3, 1:3] = 0  # a blob
    classes[1:3, 5:7] = 0  # same colour, apart
    classes[4:6, 1:4] = 1  # touching blobs of two colours
    classes[4:6, 4:7] = 2
    labels = label_components(classes)
    assert len(np.unique(labels[labels >= 0])) == 4
    assert (labels[classes < 0] == -1).all()
    snake = np.zeros((9, 9), dtype=np.int64)
    snake[1::4, :8] = -1
    snake[3::4, 1:] = -1
    snake_labels = label_components(snake)
    assert len(np.unique(snake_labels[snake >= 0])) == 1  # one winding blob


@pytest.mark.parametrize("shape", ["circle", "square", "triangle"])
@pytest.mark.parametrize("half_size_px", [9.6, 23.0])
def test_shapes_are_told_apart_small_and_large(shape: str, half_size_px: float) -> None:
    obj = SceneObject.model_validate(
        {
            "shape": shape,
            "color": "green",
            "center_x_px": 60.3,
            "center_y_px": 70.7,
            "half_size_px": half_size_px,
        }
    )
    scene = SceneSpec(
        category="single_object", width_px=128, height_px=128, background="gray", objects=(obj,)
    )
    background, blobs = find_blobs(render_scene(scene))
    assert background == "gray"
    assert [(b.color, b.shape) for b in blobs] == [("green", shape)]
    assert abs(blobs[0].center_x_px - 60.3) < 1.5


def test_ground_truth_renders_of_held_out_eval_scenes_are_judged_correct(judge: SceneJudge) -> None:
    scenes = sample_scenes("eval", 210, seed=11)
    accuracy = accuracy_by_category(judge, [(render_scene(s), s) for s in scenes])
    assert set(accuracy) == set(CATEGORIES)
    assert min(accuracy.values()) >= 0.97, accuracy
    assert sum(accuracy.values()) / len(accuracy) >= 0.97


@pytest.mark.parametrize(
    ("kind", "categories"),
    [
        ("color", OBJECT_CATEGORIES),
        ("shape", OBJECT_CATEGORIES),
        ("count", ["counting"]),
        ("relation", ["position"]),
        ("swap_colors", ["color_attr", "position"]),
        ("extra", OBJECT_CATEGORIES),
    ],
)
def test_wrong_objects_are_judged_incorrect(judge: SceneJudge, kind: str, categories: list[str]) -> None:
    scenes = sample_scenes("eval", 60, seed=12, categories=categories)
    wrong = [(i, s, corrupt_scene(s, kind, seed=i)) for i, s in enumerate(scenes)]
    verdicts = [judge(render_scene(bad), scene).correct for _, scene, bad in wrong if bad is not None]
    assert len(verdicts) >= 40
    assert sum(not v for v in verdicts) / len(verdicts) >= 0.9


@pytest.mark.parametrize("kind", ["word", "missing_word"])
def test_wrong_or_missing_words_are_judged_incorrect(judge: SceneJudge, kind: str) -> None:
    scenes = sample_scenes("eval", 12, seed=13, categories=["text"])
    bad = [corrupt_scene(s, kind, seed=i) for i, s in enumerate(scenes)]
    verdicts = [judge(render_scene(b), s).correct for s, b in zip(scenes, bad, strict=True) if b is not None]
    assert len(verdicts) == 12
    assert sum(not v for v in verdicts) / len(verdicts) >= 0.9


def headline_scene(second_circle_x_px: float) -> SceneSpec:
    """Two red circles (the second at ``second_circle_x_px``) and a blue square in the middle."""

    def obj(shape: str, color: str, x: float, y: float) -> dict[str, object]:
        return {"shape": shape, "color": color, "center_x_px": x, "center_y_px": y, "half_size_px": 11}

    return SceneSpec.model_validate(
        {
            "category": "position",
            "width_px": 128,
            "height_px": 128,
            "background": "white",
            "objects": [obj("circle", "red", 22, 40), obj("circle", "red", second_circle_x_px, 88),
                        obj("square", "blue", 64, 64)],
            "relation": {"subject": 0, "predicate": "left of", "object": 2},
        }
    )  # fmt: skip


def test_every_object_of_a_counted_subject_must_be_on_the_named_side(judge: SceneJudge) -> None:
    scene = headline_scene(22)
    assert scene.caption == "two red circles left of a blue square"
    assert judge(render_scene(scene), scene).correct
    straggler = judge(render_scene(headline_scene(106)), scene)
    assert [c.name for c in straggler.checks if not c.passed] == ["left of"]
    missing = scene.model_copy(update={"objects": scene.objects[1:]})
    assert judge(render_scene(missing), scene).failures()[0].startswith("2 red circles: found")


def test_an_object_the_caption_does_not_name_fails_the_image(judge: SceneJudge) -> None:
    """Hedging: a red square beside two red circles must not pass "two red circles ..."."""
    scene = headline_scene(22)
    square = scene.objects[0].model_copy(update={"shape": "square", "center_x_px": 106, "center_y_px": 106})
    hedged = render_scene(scene.model_copy(update={"objects": (*scene.objects, square)}))
    verdict = judge(hedged, scene)
    assert [c.name for c in verdict.checks if not c.passed] == ["nothing else"]
    assert "red square at (106, 106)" in verdict.failures()[0]
    assert SceneJudge(DetectorParams(forbid_extra_objects=False))(hedged, scene).correct


def test_checks_place_themselves_on_the_objects_that_decided_them(judge: SceneJudge) -> None:
    """A passed check holds its evidence's boxes, a failed one the objects it blames; a missing
    object has no place."""
    scene = headline_scene(22)
    square = scene.objects[0].model_copy(update={"shape": "square", "center_x_px": 106, "center_y_px": 106})
    verdict = judge(render_scene(scene.model_copy(update={"objects": (*scene.objects, square)})), scene)
    checks = {check.name: check for check in verdict.checks}
    centres = {
        name: sorted(((left + right) / 2, (top + bottom) / 2) for left, top, right, bottom in check.boxes)
        for name, check in checks.items()
    }
    assert centres["2 red circles"] == [pytest.approx((22, 40), abs=1.5), pytest.approx((22, 88), abs=1.5)]
    assert centres["1 blue square"] == [pytest.approx((64, 64), abs=1.5)]
    assert centres["nothing else"] == [pytest.approx((106, 106), abs=1.5)]
    assert len(centres["left of"]) == 3
    missing = scene.model_copy(update={"objects": scene.objects[1:]})
    failed = {c.name: c for c in judge(render_scene(missing), scene).checks}
    assert not failed["2 red circles"].passed and failed["2 red circles"].boxes == ()
    assert not failed["left of"].passed and failed["left of"].boxes == ()


def test_counted_subjects_are_judged_right_when_drawn_and_wrong_when_corrupted(judge: SceneJudge) -> None:
    scenes = [s for s in sample_scenes("eval", 150, seed=16, categories=["position"]) if len(s.objects) == 3]
    assert len(scenes) >= 40
    assert all(judge(render_scene(s), s).correct for s in scenes)
    for kind in ("color", "shape", "count", "relation", "swap_colors", "extra"):
        wrong = [(s, corrupt_scene(s, kind, seed=i)) for i, s in enumerate(scenes)]
        verdicts = [judge(render_scene(bad), scene).correct for scene, bad in wrong if bad is not None]
        assert len(verdicts) >= 20, kind
        assert sum(not v for v in verdicts) / len(verdicts) >= 0.9, kind


@pytest.mark.parametrize("split", ["train", "rl", "eval"])
def test_renders_of_parsed_captions_are_judged_correct(judge: SceneJudge, split: str) -> None:
    scenes = sample_scenes(split, 120, seed=17, categories=OBJECT_CATEGORIES)
    scenes += sample_scenes(split, 2, seed=17, categories=["text"])
    for scene in scenes:
        parsed = parse_caption(scene.caption, seed=5)
        verdict = judge(render_scene(parsed), parsed)
        assert verdict.correct, (parsed.caption, verdict.failures())


def test_blurred_and_compressed_ground_truth_stays_correct(judge: SceneJudge) -> None:
    rng = random.Random(0)
    scenes = sample_scenes("eval", 140, seed=14)
    accuracy = accuracy_by_category(judge, [(degrade(render_scene(s), rng), s) for s in scenes])
    assert min(accuracy.values()) >= 0.9, accuracy


def test_judgement_says_which_claim_failed(judge: SceneJudge) -> None:
    scene = sample_scenes("eval", 1, seed=15, categories=["counting"])[0]
    wrong = corrupt_scene(scene, "count", seed=0)
    assert wrong is not None
    verdict = judge(render_scene(wrong), scene)
    assert not verdict.correct and 0.0 <= verdict.score < 1.0
    color, shape, count = scene.groups()[0]
    assert verdict.failures()[0].startswith(f"{count} {color} {shape}s: found")


@pytest.mark.parametrize("credit", [-0.1, 1.5])
def test_an_attribute_credit_outside_zero_to_one_is_refused(credit: float) -> None:
    with pytest.raises(ValueError, match=rf"attribute_credit must be within \[0, 1\], got {credit}"):
        SceneJudge(attribute_credit=credit)
