"""The compose-judge reward scores images with the benchmark's scene judge, against a scene from
per-sample metadata or the prompt read as a caption."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from xomni_core import InputError, RewardBatch
from xomni_core.registry import PluginRegistry
from xomni_core.synthetic import SceneSpec, corrupt_scene, parse_caption, render_scene, sample_scenes
from xomni_plugins.rewards.compose_judge import ComposeJudgeParams
from xomni_plugins.rewards.compose_judge.model import ComposeJudgeReward

HEADLINE = "two red circles left of a blue square"


def reward(**params: object) -> ComposeJudgeReward:
    return ComposeJudgeReward.from_params(ComposeJudgeParams.model_validate(params))


def scenes() -> list[SceneSpec]:
    return sample_scenes("rl", 12, seed=4, categories=["single_object", "counting", "position", "color_attr"])


def test_it_is_registered_and_builds_from_validated_params() -> None:
    spec = PluginRegistry.discover(use_environment=False).get("reward", "compose-judge")
    implementation = spec.load()
    assert implementation is ComposeJudgeReward and implementation.params_class is spec.params
    params = spec.params.model_validate({"score": "correct", "detector": {"relation_margin": 0.05}})
    built = implementation.from_params(params)
    assert built.judge.params.relation_margin == 0.05


def test_descriptor_and_params_import_neither_torch_nor_numpy() -> None:
    code = (
        "import sys\n"
        "from xomni_plugins.rewards import compose_judge\n"
        "compose_judge.PLUGIN.params()\n"
        "heavy = {'torch', 'numpy', 'PIL', 'rapidocr_onnxruntime', 'onnxruntime'}\n"
        "print(','.join(sorted(heavy & set(sys.modules))))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == ""


def test_true_renders_score_one_and_corrupted_renders_score_less() -> None:
    judge = reward()
    truth = scenes()
    wrong = [corrupt_scene(s, "color", seed=i) or s for i, s in enumerate(truth)]
    metadata = [s.metadata() for s in truth]
    prompts = [s.caption for s in truth]
    good = judge.score(RewardBatch([render_scene(s) for s in truth], prompts, metadata))
    bad = judge.score(RewardBatch([render_scene(s) for s in wrong], prompts, metadata))
    assert good.name == "compose-judge" and good.scores == (1.0,) * len(truth)
    assert all(0.0 <= score < 1.0 for score in bad.scores)
    assert bad.details["correct"] == (0.0,) * len(truth)
    assert bad.details["checks"] == bad.scores


def test_correct_mode_scores_one_or_zero() -> None:
    truth = scenes()[:4]
    wrong = [corrupt_scene(s, "shape", seed=0) or s for s in truth]
    images = [render_scene(s) for s in truth + wrong]
    result = reward(score="correct").score(
        RewardBatch(images, [s.caption for s in truth + truth], [s.metadata() for s in truth + truth])
    )
    assert result.scores == (1.0,) * 4 + (0.0,) * 4


def test_the_correct_bonus_pays_only_images_whose_every_check_passes() -> None:
    truth = scenes()[:4]
    wrong = [corrupt_scene(s, "relation", seed=0) or corrupt_scene(s, "shape", seed=0) or s for s in truth]
    images = [render_scene(s) for s in truth + wrong]
    batch = RewardBatch(images, [s.caption for s in truth + truth], [s.metadata() for s in truth + truth])
    plain, paid = reward().score(batch), reward(correct_bonus=0.5).score(batch)
    bonus = [0.5 * correct for correct in plain.details["correct"]]
    assert paid.scores == tuple(p + b for p, b in zip(plain.scores, bonus, strict=True))
    assert paid.scores[:4] == (1.5,) * 4
    assert all(0.0 <= score < 1.0 for score in paid.scores[4:])


def test_parts_add_up_to_the_score_and_place_each_check_on_its_objects() -> None:
    truth = scenes()
    wrong = [corrupt_scene(s, "color", seed=i) or s for i, s in enumerate(truth)]
    metadata = [s.metadata() for s in truth]
    batch = RewardBatch([render_scene(s) for s in wrong], [s.caption for s in truth], metadata)
    for params in ({}, {"correct_bonus": 0.5}, {"score": "correct", "correct_bonus": 0.5}):
        result = reward(**params).score(batch)
        assert result.parts is not None and len(result.parts) == len(truth)
        for score, parts in zip(result.scores, result.parts, strict=True):
            assert sum(part.value for part in parts) == pytest.approx(score, abs=1e-12)
    parts = reward().score(batch).parts
    assert parts is not None
    boxes = [box for sample in parts for part in sample for box in part.boxes]
    assert boxes and all(0.0 <= x0 < x1 <= 1.0 and 0.0 <= y0 < y1 <= 1.0 for x0, y0, x1, y1 in boxes)
    headline = parse_caption(HEADLINE)
    (whole,) = reward().score(RewardBatch([render_scene(headline)], [HEADLINE])).parts or ()
    # Two red circles, a blue square, nothing else, left of: a quarter of the score each.
    assert [part.value for part in whole] == pytest.approx([0.25] * 4)
    assert [len(part.boxes) for part in whole] == [2, 1, 0, 3]


def test_a_word_one_letter_off_fails_its_check_but_earns_credit_in_the_score() -> None:
    scene = next(s for s in sample_scenes("eval", 70, seed=3, categories=["text"]) if s.word.text == "MOON")
    near = scene.model_copy(update={"word": scene.word.model_copy(update={"text": "MOOD"})})
    images = [render_scene(scene), render_scene(near), render_scene(scene.model_copy(update={"word": None}))]
    result = reward().score(RewardBatch(images, [scene.caption] * 3, [scene.metadata()] * 3))
    assert result.details["correct"] == (1.0, 0.0, 0.0)
    assert result.scores == pytest.approx((1.0, 0.75, 0.0))


def test_without_metadata_the_prompt_is_parsed_at_the_image_size() -> None:
    scene = parse_caption(HEADLINE, width_px=96, height_px=64, seed=7)
    image, wrong = render_scene(scene), render_scene(corrupt_scene(scene, "relation") or scene)
    judge = reward()
    parsed = judge.score(RewardBatch([image, wrong], [HEADLINE, HEADLINE]))
    given = judge.score(RewardBatch([image, wrong], ["any words", "any words"], [scene.metadata()] * 2))
    assert parsed.scores == given.scores
    assert parsed.scores[0] == 1.0 and parsed.scores[1] < 1.0


def test_a_metadata_scene_wins_over_the_prompt() -> None:
    scene = scenes()[2]
    result = reward().score(RewardBatch([render_scene(scene)], ["three green triangles"], [scene.metadata()]))
    assert result.scores == (1.0,)


def test_trl_style_call_reads_the_scene_column() -> None:
    truth = scenes()[:3]
    function = reward(score="correct").as_reward_function()
    images = [render_scene(s) for s in truth]
    prompts = [s.caption for s in truth]
    assert function.__name__ == "compose-judge"
    assert function(prompts, images, scene=[s.model_dump(mode="json") for s in truth]) == [1.0] * 3
    assert function(prompts, images, scene=[s.to_json() for s in truth]) == [1.0] * 3
    assert function(prompts, images) == [1.0] * 3


def test_words_are_read_by_the_lazy_ocr_reward() -> None:
    pytest.importorskip("rapidocr_onnxruntime")
    scene = sample_scenes("rl", 1, seed=4, categories=["text"])[0]
    missing = corrupt_scene(scene, "missing_word")
    assert missing is not None
    judge = reward()
    batch = RewardBatch([render_scene(scene), render_scene(missing)], [scene.caption] * 2)
    assert judge.score(batch).scores == (1.0, 0.0)


def test_bad_metadata_names_the_plugin_and_the_field() -> None:
    scene = scenes()[0]
    broken = {"scene": {**scene.model_dump(mode="json"), "category": "landscape"}}
    with pytest.raises(InputError, match=r"reward 'compose-judge': sample 0 metadata 'scene\.category'"):
        reward().score(RewardBatch([render_scene(scene)], [scene.caption], [broken]))


def test_a_prompt_that_is_no_caption_without_a_scene_is_an_input_error() -> None:
    image = render_scene(scenes()[0])
    with pytest.raises(
        InputError, match=r"compose-judge': sample 0 has no metadata 'scene'.*'a cat on a sofa'"
    ):
        reward().score(RewardBatch([image], ["a cat on a sofa"]))


def test_params_survive_a_save_and_load(tmp_path: Path) -> None:
    original = reward(score="correct", detector={"min_area_frac": 0.004})
    original.save_pretrained(tmp_path / "judge")
    loaded = ComposeJudgeReward.from_pretrained(tmp_path / "judge")
    assert loaded.params == original.params
    assert loaded.judge.params.min_area_frac == 0.004


def test_attribute_credit_grades_a_missed_pair_by_its_colour_and_its_shape_apart() -> None:
    truth = parse_caption("a green triangle above a yellow circle")
    drawn = {
        "right": truth,
        "one object right": parse_caption("a green circle above a yellow circle"),
        "colours swapped": parse_caption("a yellow triangle above a green circle"),
        "neither": parse_caption("a red square above a blue square"),
    }
    batch = RewardBatch(
        [render_scene(scene) for scene in drawn.values()], [truth.caption] * 4, [truth.metadata()] * 4
    )
    plain, graded = reward().score(batch), reward(attribute_credit=0.5).score(batch)
    # Four checks: the two objects, nothing else drawn, and the relation.
    assert plain.scores == (1.0, 0.25, 0.0, 0.0)
    assert graded.scores == (1.0, (1 + 0.5 / 2) / 4, (0.5 + 0.5) / 4, 0.0)
    assert graded.details["correct"] == plain.details["correct"] == (1.0, 0.0, 0.0, 0.0)
    assert graded.parts is not None
    assert [sum(part.value for part in parts) for parts in graded.parts] == list(graded.scores)


def test_attribute_credit_is_refused_where_the_score_ignores_it(tmp_path: Path) -> None:
    config = tmp_path / "judge.yaml"
    config.write_text(
        "rewards:\n- plugin: compose-judge\n  params: {score: correct, attribute_credit: 0.5}\n"
    )
    command = [sys.executable, "-m", "xomni_core.cli", "config", "validate", str(config)]
    result = subprocess.run(command, capture_output=True, text=True)
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert "compose-judge" in result.stderr and "attribute_credit 0.5" in result.stderr
