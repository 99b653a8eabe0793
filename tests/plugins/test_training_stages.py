"""Training the tokenizer (IBQ) and the decoder (VAE, flow matching) from scratch, at tiny sizes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from xomni_core import DecodeRequest, InputError, SemanticLatents
from xomni_core.synthetic import SceneSpec, render_scene, render_shape_map, sample_scenes
from xomni_core.training import object_weights
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.training import (
    FlowSettings,
    VAESettings,
    fit_latent_scaling,
    packed_latents,
    train_flow,
    train_vae,
)
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer
from xomni_plugins.tokenizers.siglip_vq.params import SigLIPVQParams
from xomni_plugins.tokenizers.siglip_vq.training import IBQSettings, codes_used, train_ibq

TOKENIZER = SigLIPVQParams(
    vit_width=32,
    vit_depth=1,
    vit_heads=2,
    pos_grid_size=4,
    codebook_size=64,
    codebook_dim=16,
    z_channels=32,
    decoder_norm_groups=8,
    min_short_side_px=32,
    target_short_side_px=64,
    max_long_side_px=64,
)
DECODER = FluxSemanticParams(
    text_conditioning=False,
    guidance_embeds=False,
    num_dual_stream_layers=1,
    num_single_stream_layers=1,
    num_attention_heads=2,
    attention_head_dim=16,
    axes_dims_rope=(4, 6, 6),
    in_channels=16,
    semantic_channels=32,
    vae_latent_channels=4,
    vae_block_out_channels=(8, 8, 8, 8),
    vae_layers_per_block=1,
    vae_norm_num_groups=2,
    num_inference_steps=2,
)


def _scenes() -> list[SceneSpec]:
    return sample_scenes("train", 16, width_px=64, height_px=64, categories=["single_object", "two_object"])


@pytest.fixture(scope="module")
def pixels() -> torch.Tensor:
    """Sixteen 64 x 64 px scenes in [-1, 1]."""
    images = np.stack([np.asarray(render_scene(scene)) for scene in _scenes()])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


@pytest.fixture(scope="module")
def shape_maps() -> torch.Tensor:
    """The shape maps ``(16, 64, 64)`` of the same scenes."""
    return torch.from_numpy(np.stack([np.asarray(render_shape_map(scene)) for scene in _scenes()])).long()


def _mean(history: list[dict[str, float]], key: str, part: slice) -> float:
    values = [record[key] for record in history[part]]
    return sum(values) / len(values)


def test_ibq_learns_to_paint_patches_and_uses_many_codes(pixels: torch.Tensor) -> None:
    tokenizer = SigLIPVQTokenizer.from_params(TOKENIZER, seed=0)
    untrained_codes = codes_used(tokenizer, pixels)
    # Unweighted, so the loss is plain MSE and its fall measures painting alone.
    settings = IBQSettings(steps=60, batch_size=8, warmup_steps=5, object_weight=0.0)
    result = train_ibq(tokenizer, pixels, settings, show_progress=False)
    assert _mean(result.history, "reconstruction", slice(-10, None)) < 0.5 * _mean(
        result.history, "reconstruction", slice(0, 10)
    )
    assert result.codes_used > max(8, untrained_codes)
    assert not tokenizer.model.training


def test_ibq_is_reproducible_from_its_seed(pixels: torch.Tensor) -> None:
    ids = []
    for _ in range(2):
        tokenizer = SigLIPVQTokenizer.from_params(TOKENIZER, seed=0)
        train_ibq(tokenizer, pixels, IBQSettings(steps=3, batch_size=4, warmup_steps=1), show_progress=False)
        ids.append(tokenizer.encode(pixels).ids)
    assert torch.equal(ids[0], ids[1])


def test_segmentation_head_learns_which_shape_covers_each_pixel(
    pixels: torch.Tensor, shape_maps: torch.Tensor
) -> None:
    tokenizer = SigLIPVQTokenizer.from_params(TOKENIZER, seed=0)
    settings = IBQSettings(steps=60, batch_size=8, warmup_steps=5, segmentation_weight=1.0)
    result = train_ibq(tokenizer, pixels, settings, segments=shape_maps, show_progress=False)
    assert _mean(result.history, "segmentation", slice(-10, None)) < 0.5 * _mean(
        result.history, "segmentation", slice(0, 10)
    )
    plain = IBQSettings(steps=2, batch_size=4, warmup_steps=1)
    assert "segmentation" not in train_ibq(tokenizer, pixels, plain, show_progress=False).history[-1]


def test_segmentation_weight_needs_segments_of_the_pixels_shape(
    pixels: torch.Tensor, shape_maps: torch.Tensor
) -> None:
    tokenizer = SigLIPVQTokenizer.from_params(TOKENIZER, seed=0)
    settings = IBQSettings(steps=1, batch_size=4, segmentation_weight=1.0)
    with pytest.raises(InputError, match=r"segmentation_weight is 1\.0, so train_ibq needs segments"):
        train_ibq(tokenizer, pixels, settings, show_progress=False)
    shape = r"of shape \(16, 64, 64\).*got torch\.int64 of shape \(16, 32, 32\)"
    with pytest.raises(InputError, match=shape):
        train_ibq(tokenizer, pixels, settings, segments=shape_maps[:, ::2, ::2], show_progress=False)
    with pytest.raises(InputError, match=r"got torch\.float32"):
        train_ibq(tokenizer, pixels, settings, segments=shape_maps.float(), show_progress=False)


def test_object_pixels_weigh_more_and_weights_average_one(pixels: torch.Tensor) -> None:
    weights = object_weights(pixels, 10.0)
    assert weights.shape == (16, 1, 64, 64)
    assert float(weights.mean()) == pytest.approx(1.0)
    corner = weights[:, 0, 0, 0]  # scenes keep their corners free: background
    assert bool((weights.amax(dim=(1, 2, 3)) > 5 * corner).all())
    assert torch.equal(object_weights(pixels, 0.0), torch.ones_like(weights))


def test_vae_reconstruction_improves_and_latent_scaling_is_recorded(
    pixels: torch.Tensor, tmp_path: Path
) -> None:
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=0)
    result = train_vae(
        decoder, pixels, VAESettings(steps=50, batch_size=4, downscale=1, warmup_steps=3), show_progress=False
    )
    assert _mean(result.history, "l1", slice(-5, None)) < 0.8 * _mean(result.history, "l1", slice(0, 5))
    fit_latent_scaling(decoder, pixels)
    clean = packed_latents(decoder, pixels)
    assert clean.shape == (16, 16, DECODER.in_channels)
    assert abs(float(clean.mean())) < 1e-3 and abs(float(clean.std()) - 1.0) < 1e-2
    decoder.save_pretrained(tmp_path / "decoder")
    loaded = FluxSemanticDecoder.from_pretrained(tmp_path / "decoder")
    assert loaded.params.vae_scaling_factor == pytest.approx(decoder.params.vae_scaling_factor)
    assert loaded.params.vae_shift_factor == pytest.approx(decoder.params.vae_shift_factor)


def test_flow_training_makes_the_decoder_follow_its_semantic_latents(pixels: torch.Tensor) -> None:
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=0)
    fit_latent_scaling(decoder, pixels)
    clean = packed_latents(decoder, pixels)
    semantic = torch.randn(
        len(pixels), 16, DECODER.semantic_channels, generator=torch.Generator().manual_seed(0)
    )
    assert not decoder.transformer.siglip_embed.weight.any()  # zero at initialisation, as released
    result = train_flow(
        decoder,
        clean,
        semantic,
        (4, 4),
        FlowSettings(steps=60, batch_size=8, warmup_steps=5, learning_rate=3e-3),
        show_progress=False,
    )
    assert _mean(result.history, "loss", slice(-10, None)) < _mean(result.history, "loss", slice(0, 10))
    assert decoder.transformer.siglip_embed.weight.abs().sum() > 0
    latents = SemanticLatents(semantic[:2].transpose(1, 2).reshape(2, DECODER.semantic_channels, 4, 4))
    first, second = decoder.decode(DecodeRequest(latents=latents, num_inference_steps=2, seed=0))
    assert np.abs(np.asarray(first, dtype=int) - np.asarray(second, dtype=int)).mean() > 1.0


def _word_and_object_pixels() -> torch.Tensor:
    scenes = sample_scenes("train", 8, width_px=64, height_px=64, categories=["text", "single_object"])
    images = np.stack([np.asarray(render_scene(scene)) for scene in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _vae_trained(refine_steps: int, *, refine_encoder: bool = False) -> tuple[FluxSemanticDecoder, int]:
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=0)
    settings = VAESettings(
        steps=2,
        batch_size=2,
        warmup_steps=1,
        refine_steps=refine_steps,
        refine_batch_size=2,
        refine_encoder=refine_encoder,
    )
    result = train_vae(decoder, _word_and_object_pixels(), settings, show_progress=False)
    return decoder, len(result.history)


def test_vae_refining_trains_the_decoder_and_leaves_the_encoder_as_the_pooled_steps_left_it() -> None:
    pooled_only, steps = _vae_trained(0)
    refined, refined_steps = _vae_trained(3)
    assert (steps, refined_steps) == (2, 5)
    before, after = pooled_only.vae.state_dict(), refined.vae.state_dict()
    encoder = [name for name in before if name.startswith(("encoder.", "quant_conv."))]
    decoder = [name for name in before if name.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    assert all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in decoder)
    assert all(p.requires_grad for p in refined.vae.parameters())  # nothing stays frozen


def test_vae_refining_with_the_encoder_trains_the_whole_vae() -> None:
    pooled_only, _ = _vae_trained(0)
    refined, _ = _vae_trained(3, refine_encoder=True)
    before, after = pooled_only.vae.state_dict(), refined.vae.state_dict()
    encoder = [name for name in before if name.startswith("encoder.")]
    assert any(not torch.equal(before[name], after[name]) for name in encoder)
