"""The VLM judge reward on a tiny random Qwen2.5-VL with a byte-level tokenizer."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError

from xomni_core import CheckpointError, ConfigError, RewardBatch
from xomni_plugins.rewards.vlm_judge import QwenVLNetworkParams, VlmJudgeParams
from xomni_plugins.rewards.vlm_judge.model import IMAGE_PAD, VlmJudgeReward

TINY = QwenVLNetworkParams(
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=2,
    num_kv_heads=1,
    mrope_section=(2, 3, 3),
    max_positions=1024,
    vision_depth=2,
    vision_hidden_size=32,
    vision_intermediate_size=64,
    vision_num_heads=2,
    vision_window_size_px=56,
    vision_full_attention_blocks=(1,),
    initializer_range=0.2,  # wide enough that the image visibly moves the answer
)
PARAMS = VlmJudgeParams(network=TINY, max_pixels=112 * 112)
PROMPTS = ["a red apple on a table", "a blue sky", "static on a television"]


@pytest.fixture(scope="module")
def reward() -> VlmJudgeReward:
    return VlmJudgeReward.from_params(PARAMS, seed=0)


@pytest.fixture
def images() -> list[Image.Image]:
    return [
        Image.new("RGB", (100, 80), "red"),
        Image.new("RGB", (64, 64), "blue"),
        Image.effect_noise((90, 120), 60).convert("RGB"),
    ]


def test_scores_are_probabilities_that_depend_on_the_image(
    reward: VlmJudgeReward, images: list[Image.Image]
) -> None:
    result = reward.score(RewardBatch(images, PROMPTS))
    assert all(0.0 <= s <= 1.0 for s in result.scores)
    assert all(0.0 < m <= 1.0 for m in result.details["answer_mass"])
    same_prompt = reward.score(RewardBatch(images, [PROMPTS[0]] * 3)).scores
    assert max(same_prompt) - min(same_prompt) > 1e-3


def test_yes_and_no_probabilities_add_up_to_one(reward: VlmJudgeReward, images: list[Image.Image]) -> None:
    swapped_params = PARAMS.model_copy(update={"yes_answers": ("No", "no"), "no_answers": ("Yes", "yes")})
    swapped = VlmJudgeReward(swapped_params, reward.model, reward.tokenizer, reward.image_processor)
    batch = RewardBatch(images, PROMPTS)
    yes, no = reward.score(batch).scores, swapped.score(batch).scores
    assert [a + b for a, b in zip(yes, no, strict=True)] == pytest.approx([1.0] * 3)


def test_batching_with_left_padding_does_not_change_scores(
    reward: VlmJudgeReward, images: list[Image.Image]
) -> None:
    together = reward.score(RewardBatch(images, PROMPTS)).scores
    alone = [reward.score(RewardBatch([i], [p])).scores[0] for i, p in zip(images, PROMPTS, strict=True)]
    assert together == pytest.approx(alone, abs=1e-5)


def test_the_chat_text_holds_one_pad_per_merged_patch(reward: VlmJudgeReward) -> None:
    vision = reward.image_processor(images=[Image.new("RGB", (100, 80))], return_tensors="pt")
    pads = int(vision["image_grid_thw"][0].prod()) // 4
    text = reward.chat_text("a cat <|image_pad|>", pads)
    assert text == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|>" + IMAGE_PAD * pads + "<|vision_end|>"
        "Does this image match the description: a cat? Answer yes or no.<|im_end|>\n"
        "<|im_start|>assistant\n"
    )


def test_max_pixels_bounds_the_image_tokens(reward: VlmJudgeReward) -> None:
    big = Image.new("RGB", (1000, 800))
    small = VlmJudgeReward(
        PARAMS.model_copy(update={"max_pixels": 56 * 56}),
        reward.model,
        reward.tokenizer,
        reward.image_processor,
    )
    assert (
        small.score(RewardBatch([big], ["x"])).scores[0] != reward.score(RewardBatch([big], ["x"])).scores[0]
    )


def test_save_and_load_give_the_same_scores(
    reward: VlmJudgeReward, images: list[Image.Image], tmp_path: Path
) -> None:
    reward.save_pretrained(tmp_path / "judge")
    loaded = VlmJudgeReward.from_pretrained(tmp_path / "judge")
    assert loaded.params == PARAMS
    batch = RewardBatch(images, PROMPTS)
    assert loaded.score(batch).scores == reward.score(batch).scores


def test_a_plain_transformers_folder_loads_with_default_params(
    reward: VlmJudgeReward, images: list[Image.Image], tmp_path: Path
) -> None:
    folder = tmp_path / "qwen"
    reward.model.save_pretrained(folder)
    reward.tokenizer.save_pretrained(folder)
    reward.image_processor.save_pretrained(folder)
    loaded = VlmJudgeReward.from_pretrained(folder)
    assert loaded.params.question_template == VlmJudgeParams().question_template
    assert loaded.score(RewardBatch(images[:1], PROMPTS[:1])).scores == pytest.approx(
        VlmJudgeReward(VlmJudgeParams(), reward.model, reward.tokenizer, reward.image_processor)
        .score(RewardBatch(images[:1], PROMPTS[:1]))
        .scores
    )


def test_a_tokenizer_that_does_not_fit_the_network_is_refused(reward: VlmJudgeReward, tmp_path: Path) -> None:
    reward.save_pretrained(tmp_path / "judge")
    config_path = tmp_path / "judge" / "config.json"
    config = json.loads(config_path.read_text())
    config["image_token_id"] = 7
    config_path.write_text(json.dumps(config))
    with pytest.raises(CheckpointError, match=r"<\|image_pad\|> has id \d+ but the network expects 7"):
        VlmJudgeReward.from_pretrained(tmp_path / "judge")


def test_answers_sharing_a_first_token_are_refused(reward: VlmJudgeReward) -> None:
    params = PARAMS.model_copy(update={"yes_answers": ("yes",), "no_answers": ("yeah, no",)})
    with pytest.raises(ConfigError, match="share first tokens"):
        VlmJudgeReward(params, reward.model, reward.tokenizer, reward.image_processor)


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no-judge-here"):
        VlmJudgeReward.from_pretrained(tmp_path / "no-judge-here")


def test_trl_style_call_returns_one_float_per_completion(
    reward: VlmJudgeReward, images: list[Image.Image]
) -> None:
    reward_function = reward.as_reward_function()
    scores = reward_function(prompts=PROMPTS, completions=images, target_text=["", "", ""])
    assert reward_function.__name__ == "vlm-judge"
    assert len(scores) == 3 and all(isinstance(s, float) for s in scores)


@pytest.mark.parametrize(
    ("update", "message"),
    [
        ({"question_template": "Is this good?"}, "must contain {prompt}"),
        ({"question_template": "{prompt} {style}"}, "may only use the field {prompt}"),
        ({"yes_answers": ("Yes",), "no_answers": ("Yes", "No")}, "both yes and no answers"),
        ({"min_pixels": 10_000, "max_pixels": 1_000}, "min_pixels=10000 exceeds max_pixels=1000"),
        ({"yes_answers": ()}, "yes_answers"),
    ],
)
def test_invalid_params_are_refused_with_reasons(update: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message.replace("{", r"\{").replace("}", r"\}")):
        VlmJudgeParams.model_validate(update)


def test_inconsistent_network_sizes_are_refused_with_reasons() -> None:
    with pytest.raises(
        ValidationError, match=r"mrope_section=\(2, 3, 3\) must add up to half the head size \(16\)"
    ):
        QwenVLNetworkParams(hidden_size=64, num_heads=2, num_kv_heads=1, mrope_section=(2, 3, 3))
    with pytest.raises(ValidationError, match=r"vision_full_attention_blocks \[4\]"):
        QwenVLNetworkParams(vision_depth=2, vision_full_attention_blocks=(4,))


def test_casting_keeps_scores_close(images: list[Image.Image]) -> None:
    reward = VlmJudgeReward.from_params(PARAMS, seed=0)
    full = reward.score(RewardBatch(images[:1], PROMPTS[:1])).scores[0]
    half = reward.to(dtype="bfloat16").score(RewardBatch(images[:1], PROMPTS[:1])).scores[0]
    assert isinstance(half, float) and abs(half - full) < 0.1
    assert reward.model.lm_head.weight.dtype == torch.bfloat16
