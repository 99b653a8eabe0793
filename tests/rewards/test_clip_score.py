"""The CLIP score reward on a tiny random transformers CLIP with a byte-level tokenizer."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from xomni_core import CheckpointError, InputError, RewardBatch
from xomni_plugins.rewards.clip_score import ClipNetworkParams, ClipScoreParams
from xomni_plugins.rewards.clip_score.model import ClipScoreReward

TINY = ClipNetworkParams(
    text_hidden_size=32,
    text_intermediate_size=64,
    text_num_layers=2,
    text_num_heads=2,
    max_text_tokens=24,
    vision_hidden_size=48,
    vision_intermediate_size=96,
    vision_num_layers=2,
    vision_num_heads=3,
    image_size_px=32,
    patch_size_px=8,
    projection_dim=16,
)
PROMPTS = ["a red square", "a long prompt " * 20]


@pytest.fixture(scope="module")
def reward() -> ClipScoreReward:
    return ClipScoreReward.from_params(ClipScoreParams(network=TINY), seed=0)


@pytest.fixture
def images() -> list[Image.Image]:
    return [Image.new("RGB", (60, 40), "red"), Image.effect_noise((30, 50), 64).convert("RGBA")]


def test_score_is_the_scaled_and_clamped_cosine(reward: ClipScoreReward, images: list[Image.Image]) -> None:
    result = reward.score(RewardBatch(images, PROMPTS))
    cosine = torch.tensor(result.details["cosine"])
    assert cosine.abs().max() <= 1.0
    expected = 2.5 * cosine.clamp(min=0.0)
    assert torch.allclose(torch.tensor(result.scores), expected)


def test_without_clamp_and_scale_the_score_is_the_cosine(
    reward: ClipScoreReward, images: list[Image.Image]
) -> None:
    params = ClipScoreParams(network=TINY, scale=1.0, clamp_negative=False)
    plain = ClipScoreReward(params, reward.model, reward.tokenizer, reward.image_processor)
    result = plain.score(RewardBatch(images, PROMPTS))
    assert result.scores == result.details["cosine"]


def test_cosine_matches_the_embeddings_of_each_pair(
    reward: ClipScoreReward, images: list[Image.Image]
) -> None:
    image_embeddings, text_embeddings = reward.embed_images(images), reward.embed_texts(PROMPTS)
    assert image_embeddings.shape == text_embeddings.shape == (2, TINY.projection_dim)
    assert torch.allclose(image_embeddings.norm(dim=-1), torch.ones(2))
    cosine = reward.cosine(images, PROMPTS)
    assert torch.allclose(cosine, (image_embeddings * text_embeddings).sum(-1))


def test_batching_does_not_change_scores(reward: ClipScoreReward, images: list[Image.Image]) -> None:
    params = ClipScoreParams(network=TINY, batch_size=1)
    one_at_a_time = ClipScoreReward(params, reward.model, reward.tokenizer, reward.image_processor)
    batch = RewardBatch(images, PROMPTS)
    assert one_at_a_time.score(batch).scores == pytest.approx(reward.score(batch).scores, abs=1e-6)


def test_prompts_are_wrapped_in_start_and_end_tokens_and_truncated(reward: ClipScoreReward) -> None:
    ids = reward.tokenizer(PROMPTS[1], truncation=True, max_length=TINY.max_text_tokens)["input_ids"]
    assert len(ids) == TINY.max_text_tokens
    assert ids[0] == reward.tokenizer.bos_token_id and ids[-1] == reward.tokenizer.eos_token_id
    assert reward.model.config.text_config.eos_token_id == reward.tokenizer.eos_token_id


def test_the_seed_decides_the_random_weights(images: list[Image.Image]) -> None:
    batch = RewardBatch(images, PROMPTS)
    first = ClipScoreReward.from_params(ClipScoreParams(network=TINY), seed=1).score(batch).scores
    again = ClipScoreReward.from_params(ClipScoreParams(network=TINY), seed=1).score(batch).scores
    other = ClipScoreReward.from_params(ClipScoreParams(network=TINY), seed=2).score(batch).scores
    assert first == again and first != other


def test_save_and_load_give_the_same_scores(
    reward: ClipScoreReward, images: list[Image.Image], tmp_path: Path
) -> None:
    reward.save_pretrained(tmp_path / "clip")
    names = {p.name for p in (tmp_path / "clip").iterdir()}
    assert {"xomni_component.json", "config.json", "model.safetensors", "preprocessor_config.json"} <= names
    loaded = ClipScoreReward.from_pretrained(tmp_path / "clip")
    batch = RewardBatch(images, PROMPTS)
    assert loaded.score(batch).scores == reward.score(batch).scores
    assert loaded.params.network.vocab_size == len(reward.tokenizer)


def test_a_plain_transformers_clip_folder_loads_with_default_params(
    reward: ClipScoreReward, images: list[Image.Image], tmp_path: Path
) -> None:
    folder = tmp_path / "hf-clip"
    reward.model.save_pretrained(folder)
    reward.tokenizer.save_pretrained(folder)
    reward.image_processor.save_pretrained(folder)
    loaded = ClipScoreReward.from_pretrained(folder)
    assert loaded.params.scale == 2.5 and loaded.params.network.text_hidden_size == TINY.text_hidden_size
    batch = RewardBatch(images, PROMPTS)
    assert loaded.score(batch).scores == reward.score(batch).scores


def test_weights_that_do_not_fit_are_named(reward: ClipScoreReward, tmp_path: Path) -> None:
    reward.save_pretrained(tmp_path / "clip")
    weights = tmp_path / "clip" / "model.safetensors"
    tensors = load_file(weights)
    del tensors["visual_projection.weight"]
    save_file(tensors, weights)
    with pytest.raises(CheckpointError, match=r"visual_projection\.weight"):
        ClipScoreReward.from_pretrained(tmp_path / "clip")


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="no-such-clip"):
        ClipScoreReward.from_pretrained(tmp_path / "no-such-clip")


def test_a_folder_without_a_config_is_refused(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match=r"config\.json"):
        ClipScoreReward.from_pretrained(tmp_path / "empty")


def test_trl_style_call_returns_one_float_per_completion(
    reward: ClipScoreReward, images: list[Image.Image]
) -> None:
    reward_function = reward.as_reward_function()
    scores = reward_function(prompts=PROMPTS, completions=images, target_text=["x", "y"])
    assert reward_function.__name__ == "clip-score"
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)


def test_casting_to_bfloat16_still_scores(images: list[Image.Image]) -> None:
    reward = ClipScoreReward.from_params(ClipScoreParams(network=TINY)).to(dtype="bfloat16")
    scores = reward.score(RewardBatch(images, PROMPTS)).scores
    assert all(isinstance(s, float) and 0.0 <= s <= 2.5 for s in scores)
    with pytest.raises(InputError, match="float64"):
        reward.to(dtype="float64")


def test_inconsistent_network_sizes_are_refused_with_reasons() -> None:
    with pytest.raises(ValidationError, match="vision_num_heads=5") as error:
        ClipNetworkParams(vision_hidden_size=48, vision_num_heads=5, image_size_px=30, patch_size_px=8)
    assert "image_size_px=30" in str(error.value)


@pytest.mark.parametrize(("field", "value"), [("scale", 0.0), ("batch_size", 0), ("weights", "x")])
def test_invalid_params_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        ClipScoreParams.model_validate({field: value})
