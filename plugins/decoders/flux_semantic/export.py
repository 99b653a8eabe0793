"""ONNX export of the FLUX semantic decoder under the decoder export spec.

Each wrapper gives one model call of the sampling loop the flat, tensor-only signature of its
graph; the loop itself (noise, scheduler, guidance, image post-processing) stays in Python and
is shared with the runtime through :class:`~.runtime.ExportedFluxSemanticDecoder`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import torch
from torch import nn

from xomni_core import torch_dtype
from xomni_export import GraphExport, Precision
from xomni_export.specs.decoder import (
    TEXT_ENCODER,
    TEXT_ENCODER_2,
    TRANSFORMER,
    VAE_DECODER,
    TextConditioning,
    decoder_export_spec,
)

from .model import SemanticFluxTransformer, decode_vae_latents, latent_image_ids

if TYPE_CHECKING:
    from diffusers import AutoencoderKL
    from transformers import CLIPTextModel, T5EncoderModel

    from .model import FluxSemanticDecoder

M = TypeVar("M", bound=nn.Module)


class TransformerStep(nn.Module):
    """``transformer`` of a text-conditioned decoder: one velocity prediction."""

    def __init__(self, transformer: SemanticFluxTransformer) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(
        self,
        latents: torch.Tensor,
        text: torch.Tensor,
        pooled: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        semantic: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        return _step(self.transformer, latents, text, pooled, timestep, img_ids, txt_ids, semantic, guidance)


class TextFreeTransformerStep(nn.Module):
    """``transformer`` of a text-free decoder: the empty prompt is a constant of the graph."""

    def __init__(self, transformer: SemanticFluxTransformer) -> None:
        super().__init__()
        self.transformer = transformer

    def forward(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        semantic: torch.Tensor,
        guidance: torch.Tensor | None = None,
    ) -> torch.Tensor:
        config = self.transformer.config
        batch = latents.shape[0]
        text = latents.new_zeros(batch, 0, config.joint_attention_dim)
        pooled = latents.new_zeros(batch, config.pooled_projection_dim)
        txt_ids = img_ids.new_zeros(0, 3)
        return _step(self.transformer, latents, text, pooled, timestep, img_ids, txt_ids, semantic, guidance)


class VaeDecoderGraph(nn.Module):
    """``vae_decoder``: sampled latents to pixels in ``[-1, 1]``."""

    def __init__(self, vae: AutoencoderKL) -> None:
        super().__init__()
        self.vae = vae

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return decode_vae_latents(self.vae, latents)


class ClipGraph(nn.Module):
    """``text_encoder``: padded CLIP ids to the pooled vector."""

    def __init__(self, encoder: CLIPTextModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        pooled: torch.Tensor = self.encoder(ids).pooler_output
        return pooled


class T5Graph(nn.Module):
    """``text_encoder_2``: padded T5 ids to the sequence."""

    def __init__(self, encoder: T5EncoderModel) -> None:
        super().__init__()
        self.encoder = encoder

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        # Under SDPA attention, T5's reshape of the transposed attention output breaks the
        # exporter's fake-tensor pass for a dynamic length; eager attention computes the same.
        with _attention(self.encoder, "eager"):
            sequence: torch.Tensor = self.encoder(ids)[0]
        return sequence


def export_graphs(decoder: FluxSemanticDecoder, precision: Precision) -> list[GraphExport]:
    """The graphs of ``decoder``, its modules on the CPU at ``precision`` (copied if elsewhere)."""
    params = decoder.params
    dtype = torch_dtype(precision)
    text = None
    if params.text_conditioning:
        text = TextConditioning(
            joint_dim=params.joint_attention_dim,
            pooled_dim=params.pooled_projection_dim,
            clip_length=params.clip_max_length,
            t5_length=params.t5_max_length,
        )
    spec = decoder_export_spec(
        in_channels=params.in_channels,
        semantic_channels=params.packed_semantic_channels,
        vae_channels=params.vae_latent_channels,
        latents_per_token=params.token_px // params.vae_scale_factor,
        pixels_per_token=params.token_px,
        guidance_embeds=params.guidance_embeds,
        text=text,
    )
    transformer = _on_cpu(decoder.transformer, dtype)
    step_spec, vae_spec = spec.graph(TRANSFORMER), spec.graph(VAE_DECODER)

    def step_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        batch, tokens = sizes["batch"], sizes["tokens"]
        grid_h = max(d for d in range(1, math.isqrt(tokens) + 1) if tokens % d == 0)
        inputs = {
            "latents": torch.randn(batch, tokens, params.in_channels, generator=generator),
            "timestep": torch.rand(batch, generator=generator),
            "img_ids": latent_image_ids(grid_h, tokens // grid_h, "cpu", dtype),
            "semantic": torch.randn(batch, tokens, params.packed_semantic_channels, generator=generator),
            "guidance": 1.0 + 4.0 * torch.rand(batch, generator=generator),
        }
        if text is not None:
            length = sizes["text_len"]
            inputs["text"] = torch.randn(batch, length, text.joint_dim, generator=generator)
            inputs["pooled"] = torch.randn(batch, text.pooled_dim, generator=generator)
            inputs["txt_ids"] = torch.zeros(length, 3)
        return [inputs[name].to(dtype) for name in step_spec.input_names]

    def vae_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        return [torch.randn(vae_spec.inputs[0].concrete_shape(sizes), generator=generator).to(dtype)]

    step = TransformerStep(transformer) if text is not None else TextFreeTransformerStep(transformer)
    graphs = [
        GraphExport(step_spec, step, step_inputs),
        GraphExport(vae_spec, VaeDecoderGraph(_on_cpu(decoder.vae, dtype)), vae_inputs),
    ]
    if text is None:
        return graphs
    assert decoder.text_encoder is not None and decoder.text_encoder_2 is not None
    assert decoder.tokenizer is not None and decoder.tokenizer_2 is not None
    clip_spec, t5_spec = spec.graph(TEXT_ENCODER), spec.graph(TEXT_ENCODER_2)
    clip_end, t5_end = decoder.tokenizer.eos_token_id, decoder.tokenizer_2.eos_token_id

    def clip_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        return [_prompt_ids(sizes, seed, params.clip_vocab_size, clip_end)]

    def t5_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        return [_prompt_ids(sizes, seed, params.t5_vocab_size, t5_end)]

    return [
        *graphs,
        GraphExport(clip_spec, ClipGraph(_on_cpu(decoder.text_encoder, dtype)), clip_inputs),
        GraphExport(t5_spec, T5Graph(_on_cpu(decoder.text_encoder_2, dtype)), t5_inputs),
    ]


def write_export_assets(decoder: FluxSemanticDecoder, folder: Path) -> None:
    """``scheduler/`` and, when text-conditioned, ``tokenizer/`` and ``tokenizer_2/``: the
    folders :meth:`FluxSemanticDecoder.save_pretrained` writes, without weights."""
    decoder.scheduler.save_pretrained(folder / "scheduler")
    if decoder.params.text_conditioning:
        assert decoder.tokenizer is not None and decoder.tokenizer_2 is not None
        decoder.tokenizer.save_pretrained(str(folder / "tokenizer"))
        decoder.tokenizer_2.save_pretrained(str(folder / "tokenizer_2"))


def _step(
    transformer: SemanticFluxTransformer,
    latents: torch.Tensor,
    text: torch.Tensor,
    pooled: torch.Tensor,
    timestep: torch.Tensor,
    img_ids: torch.Tensor,
    txt_ids: torch.Tensor,
    semantic: torch.Tensor,
    guidance: torch.Tensor | None,
) -> torch.Tensor:
    output = transformer(
        hidden_states=latents,
        encoder_hidden_states=text,
        pooled_projections=pooled,
        timestep=timestep,
        img_ids=img_ids,
        txt_ids=txt_ids,
        guidance=guidance,
        semantic_latents=semantic,
        return_dict=False,
    )
    velocity: torch.Tensor = output[0]
    return velocity


def _prompt_ids(sizes: Mapping[str, int], seed: int, vocab_size: int, end_id: int | None) -> torch.Tensor:
    """Random ids that end with the end token, as the padded prompts of the runtime do."""
    generator = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab_size, (sizes["batch"], sizes["text_len"]), generator=generator)
    if end_id is not None:
        ids[:, -1] = end_id
    return ids


def _on_cpu(module: M, dtype: torch.dtype) -> M:
    """``module`` itself when it is on the CPU in ``dtype``, else a copy moved there."""
    if all(p.device.type == "cpu" and p.dtype == dtype for p in module.parameters()):
        return module.eval()
    return copy.deepcopy(module).to(device="cpu", dtype=dtype).eval()


@contextlib.contextmanager
def _attention(model: T5EncoderModel, implementation: str) -> Iterator[None]:
    """Run ``model`` with another attention implementation, restoring its own afterwards."""
    previous = model.config._attn_implementation
    model.set_attn_implementation(implementation)
    try:
        yield
    finally:
        model.set_attn_implementation(previous)
