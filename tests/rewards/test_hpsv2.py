"""HPS v2: the OpenCLIP key converter and the reward, on a tiny random CLIP.

The converter is checked against a small re-statement of OpenCLIP's forward pass written here
with torch functions only: the same weights in OpenCLIP layout must give the same embeddings as
transformers' ``CLIPModel`` after conversion.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from PIL import Image
from safetensors.torch import save_file
from torch.nn import functional as F

from xomni_core import CheckpointError, RewardBatch
from xomni_plugins.rewards.clip_score import ClipNetworkParams
from xomni_plugins.rewards.hpsv2 import VIT_H_14, HPSv2Params
from xomni_plugins.rewards.hpsv2.model import (
    HPSv2Reward,
    load_open_clip_state_dict,
    open_clip_to_transformers,
    transformers_to_open_clip,
)

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
    hidden_act="gelu",
)
PARAMS = HPSv2Params(network=TINY)
PROMPTS = ["a watercolour fox", "a photo of a city at night, long exposure"]


@pytest.fixture(scope="module")
def reward() -> HPSv2Reward:
    return HPSv2Reward.from_params(PARAMS, seed=0)


@pytest.fixture(scope="module")
def open_clip_state(reward: HPSv2Reward) -> dict[str, torch.Tensor]:
    return transformers_to_open_clip(reward.model.state_dict())


@pytest.fixture
def images() -> list[Image.Image]:
    return [Image.new("RGB", (40, 64), "orange"), Image.effect_noise((48, 48), 80).convert("RGB")]


# --- a reference OpenCLIP forward pass ---


def _block(
    x: torch.Tensor, state: Mapping[str, torch.Tensor], prefix: str, heads: int, mask: torch.Tensor | None
):
    """OpenCLIP's ResidualAttentionBlock (pre-norm, nn.MultiheadAttention, GELU MLP); x is (L, N, D)."""
    width = x.shape[-1]
    h = F.layer_norm(x, (width,), state[prefix + "ln_1.weight"], state[prefix + "ln_1.bias"])
    attended, _ = F.multi_head_attention_forward(
        h, h, h, width, heads,
        state[prefix + "attn.in_proj_weight"], state[prefix + "attn.in_proj_bias"],
        None, None, False, 0.0,
        state[prefix + "attn.out_proj.weight"], state[prefix + "attn.out_proj.bias"],
        training=False, need_weights=False, attn_mask=mask,
    )  # fmt: skip
    x = x + attended
    h = F.layer_norm(x, (width,), state[prefix + "ln_2.weight"], state[prefix + "ln_2.bias"])
    h = F.linear(F.gelu(F.linear(h, state[prefix + "mlp.c_fc.weight"], state[prefix + "mlp.c_fc.bias"])),
                 state[prefix + "mlp.c_proj.weight"], state[prefix + "mlp.c_proj.bias"])  # fmt: skip
    return x + h


def open_clip_image_features(state: Mapping[str, torch.Tensor], pixels: torch.Tensor) -> torch.Tensor:
    x = F.conv2d(pixels, state["visual.conv1.weight"], stride=TINY.patch_size_px)
    x = x.flatten(2).transpose(1, 2)
    cls = state["visual.class_embedding"].expand(x.shape[0], 1, -1)
    x = torch.cat([cls, x], dim=1) + state["visual.positional_embedding"]
    x = F.layer_norm(x, (x.shape[-1],), state["visual.ln_pre.weight"], state["visual.ln_pre.bias"])
    x = x.transpose(0, 1)
    for i in range(TINY.vision_num_layers):
        x = _block(x, state, f"visual.transformer.resblocks.{i}.", TINY.vision_num_heads, None)
    x = F.layer_norm(x[0], (x.shape[-1],), state["visual.ln_post.weight"], state["visual.ln_post.bias"])
    return x @ state["visual.proj"]


def open_clip_text_features(
    state: Mapping[str, torch.Tensor], ids: torch.Tensor, end_id: int
) -> torch.Tensor:
    length = ids.shape[1]
    x = state["token_embedding.weight"][ids] + state["positional_embedding"][:length]
    causal = torch.full((length, length), float("-inf")).triu(1)
    x = x.transpose(0, 1)
    for i in range(TINY.text_num_layers):
        x = _block(x, state, f"transformer.resblocks.{i}.", TINY.text_num_heads, causal)
    x = F.layer_norm(x.transpose(0, 1), (x.shape[-1],), state["ln_final.weight"], state["ln_final.bias"])
    ends = (ids == end_id).int().argmax(dim=-1)
    return x[torch.arange(len(ids)), ends] @ state["text_projection"]


def test_converted_weights_compute_what_open_clip_computes(
    reward: HPSv2Reward, open_clip_state: dict[str, torch.Tensor], images: list[Image.Image]
) -> None:
    pixels = reward.image_processor(images=images, return_tensors="pt")["pixel_values"]
    ids = reward.tokenizer(PROMPTS, padding=True, truncation=True, return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected_images = F.normalize(open_clip_image_features(open_clip_state, pixels), dim=-1)
        expected_texts = F.normalize(
            open_clip_text_features(open_clip_state, ids, reward.tokenizer.eos_token_id), dim=-1
        )
    assert torch.allclose(reward.embed_images(images), expected_images, atol=1e-5)
    assert torch.allclose(reward.embed_texts(PROMPTS), expected_texts, atol=1e-5)


# --- the converter ---


def test_open_clip_names_and_layouts(open_clip_state: dict[str, torch.Tensor]) -> None:
    width, text_width = TINY.vision_hidden_size, TINY.text_hidden_size
    shapes = {name: tuple(t.shape) for name, t in open_clip_state.items()}
    assert shapes["visual.conv1.weight"] == (width, 3, 8, 8)
    assert shapes["visual.class_embedding"] == (width,)
    assert shapes["visual.positional_embedding"] == (17, width)
    assert shapes["visual.transformer.resblocks.1.attn.in_proj_weight"] == (3 * width, width)
    assert shapes["visual.transformer.resblocks.1.attn.in_proj_bias"] == (3 * width,)
    assert shapes["visual.transformer.resblocks.0.mlp.c_fc.weight"] == (96, width)
    assert shapes["visual.proj"] == (width, TINY.projection_dim)
    assert shapes["text_projection"] == (text_width, TINY.projection_dim)
    assert shapes["positional_embedding"] == (TINY.max_text_tokens, text_width)
    assert shapes["logit_scale"] == ()
    assert {
        "visual.ln_pre.weight",
        "visual.ln_post.bias",
        "ln_final.weight",
        "token_embedding.weight",
    } <= set(shapes)
    assert len(shapes) == 14 + 12 * (TINY.vision_num_layers + TINY.text_num_layers)


def test_converting_there_and_back_is_the_identity(
    reward: HPSv2Reward, open_clip_state: dict[str, torch.Tensor]
) -> None:
    back = open_clip_to_transformers(open_clip_state)
    original = reward.model.state_dict()
    assert back.keys() == original.keys()
    assert all(torch.equal(back[name], original[name]) for name in original)


def test_a_released_style_checkpoint_loads_with_identical_embeddings(
    reward: HPSv2Reward, open_clip_state: dict[str, torch.Tensor], images: list[Image.Image], tmp_path: Path
) -> None:
    # Released checkpoints wrap the weights in "state_dict"; distributed training adds "module.";
    # some OpenCLIP versions save the text causal mask.
    saved = {f"module.{k}": v.half() for k, v in open_clip_state.items()}
    saved["module.attn_mask"] = torch.zeros(TINY.max_text_tokens, TINY.max_text_tokens)
    torch.save({"epoch": 3, "state_dict": saved}, tmp_path / "HPS_v2_compressed.pt")
    reward.tokenizer.save_pretrained(tmp_path / "tokenizer")
    half = HPSv2Reward.from_params(PARAMS)
    half.model.load_state_dict({k: v.half().float() for k, v in reward.model.state_dict().items()})

    loaded = HPSv2Reward.from_open_clip(tmp_path / "HPS_v2_compressed.pt", tmp_path / "tokenizer", PARAMS)
    assert torch.equal(loaded.embed_images(images), half.embed_images(images))
    assert torch.equal(loaded.embed_texts(PROMPTS), half.embed_texts(PROMPTS))


def test_a_safetensors_checkpoint_loads(
    reward: HPSv2Reward, open_clip_state: dict[str, torch.Tensor], images: list[Image.Image], tmp_path: Path
) -> None:
    save_file(open_clip_state, tmp_path / "open_clip_model.safetensors")
    reward.tokenizer.save_pretrained(tmp_path / "tokenizer")
    loaded = HPSv2Reward.from_open_clip(
        tmp_path / "open_clip_model.safetensors", tmp_path / "tokenizer", PARAMS
    )
    batch = RewardBatch(images, PROMPTS)
    assert loaded.score(batch).scores == reward.score(batch).scores


def test_mismatches_are_reported_by_open_clip_name(
    reward: HPSv2Reward, open_clip_state: dict[str, torch.Tensor], tmp_path: Path
) -> None:
    broken = dict(open_clip_state)
    del broken["visual.proj"]
    broken["visual.attn_pool.query"] = torch.zeros(4, 16)
    broken["text_projection"] = broken["text_projection"].t().contiguous()
    torch.save(broken, tmp_path / "broken.pt")
    reward.tokenizer.save_pretrained(tmp_path / "tokenizer")
    with pytest.raises(CheckpointError) as error:
        HPSv2Reward.from_open_clip(tmp_path / "broken.pt", tmp_path / "tokenizer", PARAMS)
    message = str(error.value)
    assert "1 missing: visual.proj" in message
    assert "1 unexpected: visual.attn_pool.query" in message
    assert "text_projection (16, 32) (expected (32, 16))" in message


class _NotATensor:
    pass


def test_checkpoints_are_read_without_running_pickled_code(tmp_path: Path) -> None:
    torch.save({"state_dict": {"logit_scale": torch.ones(())}, "extra": _NotATensor()}, tmp_path / "code.pt")
    with pytest.raises(CheckpointError, match="cannot read OpenCLIP checkpoint"):
        load_open_clip_state_dict(tmp_path / "code.pt")


def test_a_missing_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"HPS_v2\.pt"):
        load_open_clip_state_dict(tmp_path / "HPS_v2.pt")


# --- the reward ---


def test_the_score_is_the_cosine_similarity(reward: HPSv2Reward, images: list[Image.Image]) -> None:
    result = reward.score(RewardBatch(images, PROMPTS))
    assert result.scores == result.details["cosine"]
    assert torch.allclose(torch.tensor(result.scores), reward.cosine(images, PROMPTS))


def test_defaults_describe_open_clip_vit_h_14() -> None:
    params = HPSv2Params()
    assert params.network == VIT_H_14
    assert (params.network.vision_hidden_size, params.network.vision_num_layers) == (1280, 32)
    assert (params.network.text_hidden_size, params.network.projection_dim) == (1024, 1024)
    assert params.network.hidden_act == "gelu"
    assert (params.scale, params.clamp_negative) == (1.0, False)


def test_save_and_load_give_the_same_scores(
    reward: HPSv2Reward, images: list[Image.Image], tmp_path: Path
) -> None:
    reward.save_pretrained(tmp_path / "hps")
    loaded = HPSv2Reward.from_pretrained(tmp_path / "hps")
    batch = RewardBatch(images, PROMPTS)
    assert loaded.score(batch).scores == reward.score(batch).scores
    assert loaded.params.network.hidden_act == "gelu"


def test_a_clip_score_folder_is_not_taken_for_an_hpsv2_folder(reward: HPSv2Reward, tmp_path: Path) -> None:
    from xomni_plugins.rewards.clip_score.model import ClipScoreReward

    reward.save_pretrained(tmp_path / "hps")
    with pytest.raises(CheckpointError, match="expected a reward of plugin 'clip-score'"):
        ClipScoreReward.from_pretrained(tmp_path / "hps")


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="missing-hps"):
        HPSv2Reward.from_pretrained(tmp_path / "missing-hps")


def test_trl_style_call_returns_one_float_per_completion(
    reward: HPSv2Reward, images: list[Image.Image]
) -> None:
    reward_function = reward.as_reward_function()
    scores = reward_function(prompts=PROMPTS, completions=images, target_text=["a", "b"])
    assert reward_function.__name__ == "hpsv2"
    assert len(scores) == 2 and all(isinstance(s, float) for s in scores)
