"""Parameters of the SigLIP-VQ tokenizer; a light module (pydantic only, no torch).

The defaults describe the released X-Omni tokenizer: a SigLIP2 giant ViT (patch 16) and a
16,384-entry codebook of dimension 2048.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from xomni_core import ComponentParams

#: Longest image side, in pixels, that preprocessing may produce or keep (and, in patches, the
#: largest position grid): it bounds the tokens of one image.
MAX_SIDE_PX = 16384


class SigLIPVQParams(ComponentParams):
    """Shape of the ViT encoder and VQ projector, and the any-resolution preprocessing rules."""

    # --- ViT encoder (timm VisionTransformer layout, no class token, pre-norm blocks) ---
    vit_width: int = Field(1536, gt=0, description="Hidden size of the ViT (channels per token).")
    vit_depth: int = Field(40, gt=0, description="Number of transformer blocks.")
    vit_heads: int = Field(16, gt=0, description="Attention heads per block.")
    vit_mlp_ratio: float = Field(
        4.0, gt=0.0, le=64.0, description="MLP hidden size as a multiple of vit_width (truncated to int)."
    )
    patch_size_px: int = Field(16, gt=0, le=1024, description="Side of one square patch, in pixels.")
    pos_grid_size: int = Field(
        128,
        gt=0,
        le=MAX_SIDE_PX,
        description="Side of the stored square position-embedding grid, in patches "
        "(128 in the release: 2048 px / 16 px).",
    )
    layer_norm_eps: float = Field(1e-6, gt=0.0, le=1.0, description="Epsilon of the ViT LayerNorms.")
    gelu_approximation: Literal["none", "tanh"] = Field(
        "none",
        description="GELU variant of the ViT MLPs. The X-Omni ViT code uses exact GELU ('none'); "
        "timm's SigLIP2 configs use 'tanh'.",
    )

    # --- VQ projector ---
    codebook_size: int = Field(16384, gt=1, description="Number of codebook entries (image tokens).")
    codebook_dim: int = Field(2048, gt=0, description="Dimension of one codebook entry.")
    z_channels: int = Field(1536, gt=0, description="Channels of the semantic features; equals vit_width.")
    num_post_conv_blocks: int = Field(
        2, ge=0, description="Residual blocks applied after post_quant_conv when decoding."
    )
    decoder_norm_groups: int = Field(32, gt=0, description="GroupNorm groups in the decode residual blocks.")

    # --- any-resolution preprocessing ---
    filter_images: bool = Field(True, description="Reject images that are too small or too elongated.")
    min_short_side_px: int = Field(
        128, gt=0, le=MAX_SIDE_PX, description="With filtering on, reject images whose short side is smaller."
    )
    max_aspect_ratio: float = Field(
        3.0,
        ge=1.0,
        le=1000.0,
        description="With filtering on, reject images whose long/short ratio is larger.",
    )
    target_short_side_px: int = Field(
        384, gt=0, le=MAX_SIDE_PX, description="Images whose short side is smaller are scaled up to this."
    )
    max_long_side_px: int = Field(
        1152,
        gt=0,
        le=MAX_SIDE_PX,
        description="Images whose long side is larger are then scaled down to this.",
    )
    pixel_mean: tuple[float, float, float] = Field(
        (0.5, 0.5, 0.5), description="Per-channel mean subtracted from [0, 1] RGB values."
    )
    pixel_std: tuple[float, float, float] = Field(
        (0.5, 0.5, 0.5), description="Per-channel divisor applied after the mean."
    )

    def memory_estimate(self, dtype_bytes: int = 4) -> int:
        """Bytes of the weights at ``dtype_bytes`` per value, by formula (no torch)."""
        return count_parameters(self) * dtype_bytes

    @property
    def latent_channels(self) -> int:
        """Channels of the semantic latents that ``decode`` returns."""
        return self.z_channels

    @property
    def downsample_factor(self) -> int:
        """Pixels per image token along each side."""
        return self.patch_size_px

    @model_validator(mode="after")
    def _consistent(self) -> SigLIPVQParams:
        problems = []
        if self.vit_width % self.vit_heads:
            problems.append(f"vit_width={self.vit_width} must be divisible by vit_heads={self.vit_heads}")
        if int(self.vit_width * self.vit_mlp_ratio) < 1:
            problems.append(
                f"vit_mlp_ratio={self.vit_mlp_ratio} gives an empty MLP for vit_width={self.vit_width}"
            )
        if self.z_channels != self.vit_width:
            problems.append(
                f"z_channels={self.z_channels} must equal vit_width={self.vit_width} "
                "(the projector reads the ViT features directly)"
            )
        if self.z_channels % self.decoder_norm_groups:
            problems.append(
                f"z_channels={self.z_channels} must be divisible by "
                f"decoder_norm_groups={self.decoder_norm_groups}"
            )
        if self.target_short_side_px > self.max_long_side_px:
            problems.append(
                f"target_short_side_px={self.target_short_side_px} must not exceed "
                f"max_long_side_px={self.max_long_side_px}"
            )
        if self.max_long_side_px < self.patch_size_px:
            problems.append(
                f"max_long_side_px={self.max_long_side_px} must be at least "
                f"patch_size_px={self.patch_size_px}"
            )
        if any(s <= 0.0 for s in self.pixel_std):  # finiteness is checked for every float field
            problems.append(f"pixel_std={self.pixel_std} must be positive in every channel")
        if problems:
            raise ValueError("; ".join(problems))
        return self


def count_parameters(params: SigLIPVQParams) -> int:
    """Number of weights of the tokenizer that ``params`` describes, by formula.

    The ViT: patch embedding, position grid and pre-norm blocks (qkv and projection with bias,
    a two-layer MLP, two LayerNorms). The projector: in and out projections, the codebook and
    the residual conv blocks applied after ``post_quant_conv``.
    """
    width, mlp, patch = params.vit_width, int(params.vit_width * params.vit_mlp_ratio), params.patch_size_px
    codes, dim = params.codebook_size, params.codebook_dim
    attention = (3 * width * width + 3 * width) + (width * width + width)
    block = 4 * width + attention + (2 * width * mlp + mlp + width)
    vit = 3 * patch * patch * width + width + params.pos_grid_size**2 * width + params.vit_depth * block
    residual = 2 * (9 * width * width + width) + 4 * width
    projector = width * dim + dim + codes * dim + dim * width + width + params.num_post_conv_blocks * residual
    return vit + projector
