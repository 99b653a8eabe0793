"""Specification of the SigLIP-VQ tokenizer, on a tiny model."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from PIL import Image
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from xomni_core import CheckpointError, GridSize, ImageRejectedError, TokenGrid
from xomni_plugins.tokenizers.siglip_vq import PLUGIN, SigLIPVQParams
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer

TINY = SigLIPVQParams(
    vit_width=32,
    vit_depth=2,
    vit_heads=2,
    pos_grid_size=8,
    codebook_size=64,
    codebook_dim=16,
    z_channels=32,
    decoder_norm_groups=4,
)


@pytest.fixture(scope="module")
def tokenizer() -> SigLIPVQTokenizer:
    return SigLIPVQTokenizer.from_params(TINY, seed=0)


def pixels(batch: int = 2, height_px: int = 32, width_px: int = 48) -> torch.Tensor:
    return torch.randn(batch, 3, height_px, width_px, generator=torch.Generator().manual_seed(1))


def image(width_px: int, height_px: int) -> Image.Image:
    return Image.new("RGB", (width_px, height_px), (200, 30, 90))


# ----- plugin descriptor and params


def test_plugin_descriptor_loads_the_tokenizer_class() -> None:
    assert PLUGIN.qualified_name == "tokenizer/siglip-vq"
    assert PLUGIN.load() is SigLIPVQTokenizer


def test_descriptor_module_does_not_import_torch() -> None:
    code = (
        "import sys, xomni_plugins.tokenizers.siglip_vq; assert 'torch' not in sys.modules, 'torch imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


def test_params_reject_width_not_divisible_by_heads() -> None:
    with pytest.raises(ValidationError, match="vit_width=30 must be divisible by vit_heads=4"):
        SigLIPVQParams(vit_width=30, vit_heads=4, z_channels=30, decoder_norm_groups=2)


# ----- preprocessing


@pytest.mark.parametrize(
    ("size_wh", "expected_hw"),
    [
        ((500, 300), (384, 640)),  # short side scaled up to 384
        ((3000, 1000), (384, 1152)),  # long side scaled down to 1152
        ((1000, 1000), (992, 992)),  # unchanged, 62.5 patches rounds half to even
        ((300, 900), (1152, 384)),  # short side up, then long side exactly at the limit
    ],
)
def test_preprocess_resizes_to_official_any_resolution_size(
    tokenizer: SigLIPVQTokenizer, size_wh: tuple[int, int], expected_hw: tuple[int, int]
) -> None:
    prepared = tokenizer.preprocess(image(*size_wh))
    assert tuple(prepared.pixels.shape) == (3, *expected_hw)
    assert prepared.grid == GridSize(expected_hw[0] // 16, expected_hw[1] // 16)
    assert prepared.original_size_px == (size_wh[1], size_wh[0])


def test_preprocess_normalises_with_mean_and_std_one_half(tokenizer: SigLIPVQTokenizer) -> None:
    prepared = tokenizer.preprocess(Image.new("L", (400, 400), 255))
    assert torch.allclose(prepared.pixels, torch.ones_like(prepared.pixels))


def test_preprocess_rejects_short_side_below_minimum(tokenizer: SigLIPVQTokenizer) -> None:
    with pytest.raises(ImageRejectedError, match=r"min_short_side_px.*100 px.*128 px"):
        tokenizer.preprocess(image(300, 100))


def test_preprocess_rejects_aspect_ratio_above_maximum(tokenizer: SigLIPVQTokenizer) -> None:
    with pytest.raises(ImageRejectedError, match=r"max_aspect_ratio.*3\.08.*maximum of 3"):
        tokenizer.preprocess(image(400, 130))


def test_preprocess_accepts_aspect_ratio_equal_to_maximum(tokenizer: SigLIPVQTokenizer) -> None:
    assert tokenizer.preprocess(image(384, 128)).grid == GridSize(24, 72)


def test_preprocess_without_filtering_accepts_small_and_elongated_images() -> None:
    unfiltered = SigLIPVQTokenizer.from_params(TINY.model_copy(update={"filter_images": False}))
    assert unfiltered.preprocess(image(300, 100)).grid == GridSize(24, 72)
    # 130 x 400 -> short side 384 (1181.5 long) -> long side 1152, short 374.4 -> 368.
    assert unfiltered.preprocess(image(130, 400)).grid == GridSize(72, 23)


# ----- encode


def test_encode_returns_ids_of_grid_shape_within_codebook(tokenizer: SigLIPVQTokenizer) -> None:
    grid = tokenizer.encode(pixels())
    assert tuple(grid.ids.shape) == (2, 2, 3)
    assert grid.ids.dtype == torch.long
    assert int(grid.ids.min()) >= 0 and int(grid.ids.max()) < TINY.codebook_size


def test_encode_picks_nearest_normalised_code(tokenizer: SigLIPVQTokenizer) -> None:
    x = pixels()
    features = tokenizer.vit_features(x)  # (B, h*w, width)
    proj = tokenizer.model.vqproj
    with torch.no_grad():
        z = F.linear(features, proj.quant_conv.weight[:, :, 0, 0], proj.quant_conv.bias)
        codes = proj.quantize.embedding.weight
        distances = torch.cdist(F.normalize(z, dim=-1), F.normalize(codes, dim=-1)[None])
    expected = distances.argmin(-1).reshape(2, 2, 3)
    assert torch.equal(tokenizer.encode(x).ids, expected)


def test_quantize_on_vit_features_equals_encode(tokenizer: SigLIPVQTokenizer) -> None:
    x = pixels()
    grid = tokenizer.quantize(tokenizer.vit_features(x), GridSize(2, 3))
    assert torch.equal(grid.ids, tokenizer.encode(x).ids)


def test_vit_features_are_per_token_width(tokenizer: SigLIPVQTokenizer) -> None:
    assert tuple(tokenizer.vit_features(pixels(1, 48, 80)).shape) == (1, 15, 32)


# ----- position embedding


def test_position_grid_resamples_bilinearly_without_antialias(
    tokenizer: SigLIPVQTokenizer,
) -> None:
    vit = tokenizer.model.vit
    stored = vit.pos_embed.detach().reshape(8, 8, 32)
    with torch.no_grad():
        resampled = vit.position_embedding(4, 8).reshape(4, 8, 32)
    # Halving rows with align_corners=False samples midway between row pairs: their mean.
    expected = (stored[0::2] + stored[1::2]) / 2
    assert torch.allclose(resampled, expected, atol=1e-6)


def test_position_grid_of_stored_size_is_used_unchanged(tokenizer: SigLIPVQTokenizer) -> None:
    assert tokenizer.model.vit.position_embedding(8, 8) is tokenizer.model.vit.pos_embed


# ----- decode


def test_decode_uses_raw_codebook_rows() -> None:
    tokenizer = SigLIPVQTokenizer.from_params(TINY, seed=2)
    proj = tokenizer.model.vqproj
    with torch.no_grad():  # give rows different norms so normalising would change the result
        proj.quantize.embedding.weight.mul_(torch.linspace(0.5, 3.0, TINY.codebook_size)[:, None])
    ids = torch.tensor([[[0, 5, 63], [7, 7, 30]]])

    def manual(rows: torch.Tensor) -> torch.Tensor:
        x = F.conv2d(rows.permute(0, 3, 1, 2), proj.post_quant_conv.weight, proj.post_quant_conv.bias)
        for block in proj.post_conv:
            h = F.gelu(F.group_norm(x, 4, block.norm1.weight, block.norm1.bias))
            h = F.conv2d(h, block.conv1.weight, block.conv1.bias, padding=1)
            h = F.gelu(F.group_norm(h, 4, block.norm2.weight, block.norm2.bias))
            h = F.conv2d(h, block.conv2.weight, block.conv2.bias, padding=1)
            x = x + h
        return x

    latents = tokenizer.decode(TokenGrid(ids)).values
    with torch.no_grad():
        rows = proj.quantize.embedding.weight[ids]
        assert torch.allclose(latents, manual(rows), atol=1e-5)
        assert not torch.allclose(latents, manual(F.normalize(rows, dim=-1)), atol=1e-3)
    assert tuple(latents.shape) == (1, TINY.z_channels, 2, 3)


def test_decode_rejects_ids_outside_codebook(tokenizer: SigLIPVQTokenizer) -> None:
    with pytest.raises(ValueError, match=r"\[0, 64\)"):
        tokenizer.decode(TokenGrid(torch.full((1, 2, 2), 64)))


# ----- construction, saving and loading


def test_same_seed_gives_same_weights_and_other_seed_differs() -> None:
    a = SigLIPVQTokenizer.from_params(TINY, seed=7).model.state_dict()
    b = SigLIPVQTokenizer.from_params(TINY, seed=7).model.state_dict()
    c = SigLIPVQTokenizer.from_params(TINY, seed=8).model.state_dict()
    assert all(torch.equal(a[name], b[name]) for name in a)
    assert not torch.equal(a["vit.pos_embed"], c["vit.pos_embed"])


def test_save_then_load_gives_identical_outputs(tokenizer: SigLIPVQTokenizer, tmp_path: Path) -> None:
    tokenizer.save_pretrained(tmp_path / "tok")
    loaded = SigLIPVQTokenizer.from_pretrained(tmp_path / "tok")
    assert sorted(p.name for p in (tmp_path / "tok").iterdir()) == [
        "model.safetensors",
        "xomni_component.json",
    ]
    assert loaded.params == tokenizer.params
    x = pixels()
    grid = tokenizer.encode(x)
    assert torch.equal(loaded.encode(x).ids, grid.ids)
    assert torch.equal(loaded.decode(grid).values, tokenizer.decode(grid).values)


def test_saved_names_follow_official_checkpoint_layout(tokenizer: SigLIPVQTokenizer) -> None:
    names = set(tokenizer.model.state_dict())
    assert {
        "vit.patch_embed.proj.weight",
        "vit.pos_embed",
        "vit.blocks.1.attn.qkv.bias",
        "vit.blocks.1.mlp.fc2.weight",
        "vqproj.quant_conv.weight",
        "vqproj.quantize.embedding.weight",
        "vqproj.post_quant_conv.bias",
        "vqproj.post_conv.1.norm2.weight",
    } <= names
    assert not any(n.startswith(("vit.norm.", "vit.attn_pool.")) for n in names)


def test_loading_with_missing_tensor_names_it(tokenizer: SigLIPVQTokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    tokenizer.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["vqproj.post_conv.0.norm1.bias"]
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"missing: vqproj\.post_conv\.0\.norm1\.bias"):
        SigLIPVQTokenizer.from_pretrained(folder)


def test_loading_with_renamed_tensor_names_both(tokenizer: SigLIPVQTokenizer, tmp_path: Path) -> None:
    folder = tmp_path / "tok"
    tokenizer.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    tensors["vit.blocks.0.attn.qkv_weight"] = tensors.pop("vit.blocks.0.attn.qkv.weight")
    save_file(tensors, folder / "model.safetensors")
    with pytest.raises(CheckpointError, match=r"vit\.blocks\.0\.attn\.qkv\.weight") as info:
        SigLIPVQTokenizer.from_pretrained(folder)
    assert "unexpected: vit.blocks.0.attn.qkv_weight" in str(info.value)


def test_to_casts_weights_to_named_dtype() -> None:
    tokenizer = SigLIPVQTokenizer.from_params(TINY).to(dtype="bfloat16")
    assert tokenizer.model.vit.pos_embed.dtype == torch.bfloat16
    assert tokenizer.encode(pixels(1)).ids.shape == (1, 2, 3)


# ----- released size


def test_giant_preset_parameter_count_on_meta_device() -> None:
    width, depth, mlp, patch, grid = 1536, 40, 6144, 16, 128
    codes, code_dim = 16384, 2048
    layer_norm = 2 * width
    attn = (width * 3 * width + 3 * width) + (width * width + width)  # qkv, proj
    mlp_layers = (width * mlp + mlp) + (mlp * width + width)  # fc1, fc2
    block = layer_norm + attn + layer_norm + mlp_layers
    vit = 3 * patch * patch * width + width + grid * grid * width + depth * block
    residual = 2 * (9 * width * width + width) + 2 * (2 * width)
    vq = width * code_dim + code_dim + codes * code_dim + code_dim * width + width + 2 * residual
    count = SigLIPVQTokenizer.count_parameters()
    assert count == vit + vq
    assert 1.25e9 < count < 1.3e9
