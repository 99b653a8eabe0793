"""Parameters of the FLUX decoder with semantic-latent conditioning (pydantic only, no torch).

Defaults describe the released decoder: a FLUX.1-dev transformer plus ``siglip_embed``, FLUX's
16-channel VAE, T5-XXL and CLIP-L text encoders.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from xomni_core import ComponentParams

#: FLUX's text path refuses T5 sequences longer than this.
FLUX_MAX_T5_LENGTH = 512
#: Most sampler steps one decode may run.
MAX_INFERENCE_STEPS = 1000
#: Most VAE resolution levels: each doubles the pixels of one latent along each side.
MAX_VAE_LEVELS = 8

PositiveInt = Annotated[int, Field(ge=1)]


class FluxSemanticParams(ComponentParams):
    """Sizes of every sub-model and the sampler defaults."""

    # Transformer (diffusers FluxTransformer2DModel names in comments).
    num_dual_stream_layers: int = Field(19, ge=0, description="num_layers")
    num_single_stream_layers: int = Field(38, ge=0, description="num_single_layers")
    num_attention_heads: int = Field(24, ge=1)
    attention_head_dim: int = Field(128, ge=2)
    joint_attention_dim: int = Field(4096, ge=1, description="width of the T5 embeddings")
    pooled_projection_dim: int = Field(768, ge=1, description="width of the pooled CLIP embedding")
    in_channels: int = Field(64, ge=4, description="packed 2x2 VAE latent channels")
    guidance_embeds: bool = Field(True, description="FLUX.1-dev embeds a distilled guidance value")
    axes_dims_rope: tuple[PositiveInt, PositiveInt, PositiveInt] = Field(
        (16, 56, 56), description="rotary dimensions of the text, row and column positions"
    )
    semantic_channels: int = Field(1536, ge=1, description="channels of the semantic latents")
    semantic_packing: int = Field(
        1,
        ge=1,
        description="semantic latents along each side of one transformer image token: 2 packs each "
        "2x2 block of a twice finer semantic grid into one token, as FLUX packs 2x2 VAE latents",
    )
    text_conditioning: bool = Field(
        True, description="False: the text-free variant, conditioned on semantic latents only"
    )

    # VAE (diffusers AutoencoderKL, FLUX layout: no quant convs, shift and scale on latents).
    vae_latent_channels: int = Field(16, ge=1)
    vae_block_out_channels: tuple[PositiveInt, ...] = Field(
        (128, 256, 512, 512), min_length=1, max_length=MAX_VAE_LEVELS
    )
    vae_layers_per_block: int = Field(2, ge=1)
    vae_norm_num_groups: int = Field(32, ge=1)
    vae_scaling_factor: float = Field(0.3611, ge=1e-4, le=1e4, description="latents are divided by it")
    vae_shift_factor: float = Field(0.1159, ge=-1e4, le=1e4)

    # T5 encoder (text_encoder_2), used for random initialisation only.
    t5_vocab_size: int = Field(32128, ge=1)
    t5_hidden_size: int = Field(4096, ge=1, description="d_model")
    t5_head_dim: int = Field(64, ge=1, description="d_kv")
    t5_ffn_size: int = Field(10240, ge=1, description="d_ff")
    t5_num_layers: int = Field(24, ge=1)
    t5_num_heads: int = Field(64, ge=1)
    t5_max_length: int = Field(512, ge=1, le=FLUX_MAX_T5_LENGTH, description="prompt tokens")

    # CLIP text encoder (text_encoder), used for random initialisation only.
    clip_vocab_size: int = Field(49408, ge=1)
    clip_hidden_size: int = Field(768, ge=1)
    clip_ffn_size: int = Field(3072, ge=1)
    clip_num_layers: int = Field(12, ge=1)
    clip_num_heads: int = Field(12, ge=1)
    clip_max_length: int = Field(
        77, ge=2, le=FLUX_MAX_T5_LENGTH, description="prompt tokens and position embeddings"
    )

    # Sampler defaults; a DecodeRequest may override steps, guidance_scale and noise_scale.
    num_inference_steps: int = Field(28, ge=1, le=MAX_INFERENCE_STEPS)
    guidance_scale: float = Field(
        1.0, ge=0.0, le=100.0, description="true-CFG scale; at or below 1 the unconditional pass is skipped"
    )
    noise_scale: float = Field(
        1.0, ge=0.0, le=100.0, description="scale of the initial noise; below 1 trades variety for fidelity"
    )
    embedded_guidance: float = Field(
        1.0, ge=0.0, le=100.0, description="value fed to FLUX's guidance embedding (guidance_embeds only)"
    )

    @property
    def inner_dim(self) -> int:
        """Transformer width."""
        return self.num_attention_heads * self.attention_head_dim

    @property
    def vae_scale_factor(self) -> int:
        """Pixels per VAE latent along each side."""
        return 1 << (len(self.vae_block_out_channels) - 1)

    @property
    def token_px(self) -> int:
        """Pixels per transformer image token along each side (2x2 packed VAE latents)."""
        return 2 * self.vae_scale_factor

    @property
    def pixels_per_token(self) -> int:
        """Pixels per semantic latent (one image token of the tokenizer and backbone) along each side."""
        return self.token_px // self.semantic_packing

    @property
    def latent_channels(self) -> int:
        """Channels of the semantic latents the decoder takes."""
        return self.semantic_channels

    @property
    def packed_semantic_channels(self) -> int:
        """Width of the semantic input of one transformer token: ``semantic_packing**2`` latents."""
        return self.semantic_channels * self.semantic_packing**2

    def memory_estimate(self, dtype_bytes: int = 4) -> int:
        """Bytes of the weights of every sub-model at ``dtype_bytes`` per value (no torch)."""
        return count_parameters(self) * dtype_bytes

    @model_validator(mode="after")
    def _consistent_sizes(self) -> FluxSemanticParams:
        problems = []
        if sum(self.axes_dims_rope) != self.attention_head_dim:
            problems.append(
                f"axes_dims_rope {self.axes_dims_rope} must sum to attention_head_dim "
                f"({self.attention_head_dim})"
            )
        if any(d % 2 for d in self.axes_dims_rope):
            problems.append(f"axes_dims_rope {self.axes_dims_rope} must all be even")
        if self.in_channels != 4 * self.vae_latent_channels:
            problems.append(
                f"in_channels ({self.in_channels}) must be 4 * vae_latent_channels "
                f"({4 * self.vae_latent_channels}): FLUX packs 2x2 latents per token"
            )
        if self.token_px % self.semantic_packing:
            problems.append(
                f"semantic_packing ({self.semantic_packing}) must divide the {self.token_px} px of a "
                "transformer image token"
            )
        bad_groups = [c for c in self.vae_block_out_channels if c % self.vae_norm_num_groups]
        if bad_groups:
            problems.append(
                f"vae_block_out_channels {bad_groups} are not multiples of vae_norm_num_groups "
                f"({self.vae_norm_num_groups})"
            )
        if self.text_conditioning:
            if self.t5_hidden_size != self.joint_attention_dim:
                problems.append(
                    f"t5_hidden_size ({self.t5_hidden_size}) must equal joint_attention_dim "
                    f"({self.joint_attention_dim})"
                )
            if self.clip_hidden_size != self.pooled_projection_dim:
                problems.append(
                    f"clip_hidden_size ({self.clip_hidden_size}) must equal pooled_projection_dim "
                    f"({self.pooled_projection_dim})"
                )
            if self.clip_hidden_size % self.clip_num_heads:
                problems.append(
                    f"clip_hidden_size ({self.clip_hidden_size}) must be a multiple of "
                    f"clip_num_heads ({self.clip_num_heads})"
                )
        if problems:
            raise ValueError("; ".join(problems))
        return self


def count_parameters(params: FluxSemanticParams) -> int:
    """Number of weights of the transformer, the VAE and (text-conditioned) both text encoders."""
    total = transformer_parameters(params) + vae_parameters(params)
    if params.text_conditioning:
        total += t5_parameters(params) + clip_parameters(params)
    return total


def transformer_parameters(params: FluxSemanticParams) -> int:
    """Weights of diffusers' ``FluxTransformer2DModel`` plus ``siglip_embed``."""
    d, head = params.inner_dim, params.attention_head_dim
    embedder = 256 * d + d + d * d + d
    conditioning = embedder * (2 if params.guidance_embeds else 1)
    conditioning += params.pooled_projection_dim * d + d + d * d + d
    inputs = params.joint_attention_dim * d + d + params.in_channels * d + d
    dual = 36 * d * d + 30 * d + 4 * head
    single = 15 * d * d + 11 * d + 2 * head
    outputs = 2 * d * d + 2 * d + d * params.in_channels + params.in_channels
    blocks = params.num_dual_stream_layers * dual + params.num_single_stream_layers * single
    return conditioning + inputs + blocks + outputs + params.packed_semantic_channels * d


def vae_parameters(params: FluxSemanticParams) -> int:
    """Weights of diffusers' ``AutoencoderKL`` without quant convs."""

    def resnet(c_in: int, c_out: int) -> int:
        shortcut = c_in * c_out + c_out if c_in != c_out else 0
        return 2 * c_in + 9 * c_in * c_out + c_out + 2 * c_out + 9 * c_out * c_out + c_out + shortcut

    channels, layers = params.vae_block_out_channels, params.vae_layers_per_block
    z = params.vae_latent_channels
    last = channels[-1]
    middle = 2 * resnet(last, last) + 2 * last + 4 * (last * last + last)
    encoder = 27 * channels[0] + channels[0] + middle + 2 * last + 9 * last * 2 * z + 2 * z
    previous = channels[0]
    for level, c in enumerate(channels):
        encoder += resnet(previous, c) + (layers - 1) * resnet(c, c)
        encoder += 9 * c * c + c if level < len(channels) - 1 else 0
        previous = c
    decoder = 9 * z * last + last + middle + 2 * channels[0] + 27 * channels[0] + 3
    previous = last
    for level, c in enumerate(reversed(channels)):
        decoder += resnet(previous, c) + layers * resnet(c, c)
        decoder += 9 * c * c + c if level < len(channels) - 1 else 0
        previous = c
    return encoder + decoder


def t5_parameters(params: FluxSemanticParams) -> int:
    """Weights of transformers' ``T5EncoderModel`` with gated-GELU feed-forward layers."""
    d, inner = params.t5_hidden_size, params.t5_num_heads * params.t5_head_dim
    layer = 4 * d * inner + 3 * d * params.t5_ffn_size + 2 * d
    return params.t5_vocab_size * d + params.t5_num_layers * layer + 32 * params.t5_num_heads + d


def clip_parameters(params: FluxSemanticParams) -> int:
    """Weights of transformers' ``CLIPTextModel``."""
    h, f = params.clip_hidden_size, params.clip_ffn_size
    layer = 4 * h * h + 4 * h + 4 * h + 2 * h * f + f + h
    return (params.clip_vocab_size + params.clip_max_length) * h + params.clip_num_layers * layer + 2 * h
