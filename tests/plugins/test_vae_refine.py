"""The VAE's full-size refining steps: they train its decoder alone and keep its latent space."""

from __future__ import annotations

import numpy as np
import torch

from xomni_core.synthetic import render_scene, sample_scenes
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.training import VAESettings, train_vae

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


def _pixels() -> torch.Tensor:
    scenes = sample_scenes("train", 8, width_px=64, height_px=64, categories=["text", "single_object"])
    images = np.stack([np.asarray(render_scene(scene)) for scene in scenes])
    return torch.from_numpy(images).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def _trained(refine_steps: int) -> tuple[FluxSemanticDecoder, int]:
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=0)
    settings = VAESettings(
        steps=2, batch_size=2, warmup_steps=1, refine_steps=refine_steps, refine_batch_size=2
    )
    result = train_vae(decoder, _pixels(), settings, show_progress=False)
    return decoder, len(result.history)


def test_refining_trains_the_decoder_and_leaves_the_encoder_as_the_pooled_steps_left_it() -> None:
    pooled_only, steps = _trained(0)
    refined, refined_steps = _trained(3)
    assert (steps, refined_steps) == (2, 5)
    before, after = pooled_only.vae.state_dict(), refined.vae.state_dict()
    encoder = [name for name in before if name.startswith(("encoder.", "quant_conv."))]
    decoder = [name for name in before if name.startswith(("decoder.", "post_quant_conv."))]
    assert encoder and decoder
    assert all(torch.equal(before[name], after[name]) for name in encoder)
    assert any(not torch.equal(before[name], after[name]) for name in decoder)
    assert all(p.requires_grad for p in refined.vae.parameters())  # nothing stays frozen
