"""SigLIP-VQ, X-Omni's semantic image tokenizer, with its whole forward path in one file.

Encode::

    image --preprocess--> pixels (B, 3, H, W), normalised
          --ViT--> features (B, h*w, width), h = H / 16, w = W / 16
          --quant_conv, L2-normalise, nearest L2-normalised code--> ids (B, h, w)

Decode::

    ids --raw codebook rows--> (B, codebook_dim, h, w)
        --post_quant_conv, residual blocks--> semantic latents (B, z_channels, h, w)

Parameter names match the official checkpoints so a converter maps them one to one: ``vit.*``
holds timm ``VisionTransformer`` names, ``vqproj.*`` the names of X-Omni's projector file. The
official ViT file also holds ``norm.*`` and ``attn_pool.*``; the tokenizer's features are the
last block's output *before* that final norm, so neither is built here and a converter drops
them.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from xomni_core import (
    ComponentParams,
    GridSize,
    ImageRejectedError,
    InputError,
    PreprocessedImage,
    SemanticLatents,
    TokenGrid,
    Tokenizer,
    atomic_directory,
    load_module_weights,
    read_component_file,
    save_tensors,
    torch_dtype,
    write_component_file,
)

from .params import SigLIPVQParams

if TYPE_CHECKING:
    from typing_extensions import Self

    from xomni_export import GraphExport, Precision

PLUGIN_NAME = "siglip-vq"
WEIGHTS_FILE = "model.safetensors"


# --------------------------------------------------------------------------- preprocessing


def anyres_size_px(height_px: int, width_px: int, params: SigLIPVQParams) -> tuple[int, int]:
    """Return the ``(height_px, width_px)`` an image of the given size is resized to.

    The short side is scaled up to ``target_short_side_px`` when smaller, then the long side
    down to ``max_long_side_px`` when larger; each side is rounded to the nearest multiple of
    the patch size with Python's ``round`` (halves go to even), as the official code does.
    """
    height, width = float(height_px), float(width_px)
    short = min(height, width)
    if short < params.target_short_side_px:
        height = height * (params.target_short_side_px / short)
        width = width * (params.target_short_side_px / short)
    long = max(height, width)
    if long > params.max_long_side_px:
        height = height * (params.max_long_side_px / long)
        width = width * (params.max_long_side_px / long)
    patch = params.patch_size_px
    # Only very elongated images (filtering off) could round to zero; keep one token instead.
    return max(1, round(height / patch)) * patch, max(1, round(width / patch)) * patch


# --------------------------------------------------------------------------- ViT encoder


class PatchEmbed(nn.Module):
    """Non-overlapping patches to tokens, in row-major order."""

    def __init__(self, patch_size_px: int, width: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch_size_px, stride=patch_size_px)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.proj(pixels).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (with bias)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch, tokens, width = x.shape
        qkv = self.qkv(x).reshape(batch, tokens, 3, self.heads, width // self.heads)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        out = F.scaled_dot_product_attention(q, k, v)
        return self.proj(out.transpose(1, 2).reshape(batch, tokens, width))


class Mlp(nn.Module):
    def __init__(self, width: int, hidden: int, gelu_approximation: str) -> None:
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU(approximate=gelu_approximation)
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block without layer scale."""

    def __init__(self, params: SigLIPVQParams) -> None:
        super().__init__()
        width = params.vit_width
        self.norm1 = nn.LayerNorm(width, eps=params.layer_norm_eps)
        self.attn = Attention(width, params.vit_heads)
        self.norm2 = nn.LayerNorm(width, eps=params.layer_norm_eps)
        self.mlp = Mlp(width, int(width * params.vit_mlp_ratio), params.gelu_approximation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x))
        return x + self.mlp(self.norm2(x))


class SigLIPViT(nn.Module):
    """SigLIP2 ViT without class token, run at any resolution; returns the last block's output."""

    def __init__(self, params: SigLIPVQParams) -> None:
        super().__init__()
        self.patch_size_px = params.patch_size_px
        self.pos_grid_size = params.pos_grid_size
        self.patch_embed = PatchEmbed(params.patch_size_px, params.vit_width)
        self.pos_embed = nn.Parameter(
            torch.zeros(1, params.pos_grid_size * params.pos_grid_size, params.vit_width)
        )
        self.blocks = nn.ModuleList(Block(params) for _ in range(params.vit_depth))

    def position_embedding(self, grid_h: int, grid_w: int) -> torch.Tensor:
        """Stored square grid resized to ``grid_h x grid_w``: ``(1, grid_h * grid_w, width)``.

        Bilinear, ``align_corners=False`` and no antialiasing, computed in the parameter's
        dtype, as the official code does (timm's own resampler defaults differ: bicubic with
        antialiasing).
        """
        side = self.pos_grid_size
        if (grid_h, grid_w) == (side, side):
            return self.pos_embed
        grid = self.pos_embed.reshape(1, side, side, -1).permute(0, 3, 1, 2)
        grid = F.interpolate(
            grid, size=(grid_h, grid_w), mode="bilinear", align_corners=False, antialias=False
        )
        return grid.flatten(2).transpose(1, 2)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        grid_h = pixels.shape[-2] // self.patch_size_px
        grid_w = pixels.shape[-1] // self.patch_size_px
        x = self.patch_embed(pixels) + self.position_embedding(grid_h, grid_w)
        for block in self.blocks:
            x = block(x)
        return x


# --------------------------------------------------------------------------- VQ projector


class ResidualBlock(nn.Module):
    """``x + conv2(gelu(norm2(conv1(gelu(norm1(x))))))`` with 3x3 convs and exact GELU."""

    def __init__(self, channels: int, groups: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm1 = nn.GroupNorm(groups, channels)
        self.conv2 = nn.Conv2d(channels, channels, kernel_size=3, padding=1)
        self.norm2 = nn.GroupNorm(groups, channels)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(self.act(self.norm1(x)))
        h = self.conv2(self.act(self.norm2(h)))
        return x + h


class Codebook(nn.Module):
    """The code table; the nearest code is chosen between L2-normalised vectors."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = nn.Embedding(size, dim)

    def nearest(self, z: torch.Tensor) -> torch.Tensor:
        """Index of the nearest code for each vector of ``z (..., dim)``."""
        z = F.normalize(z, p=2, dim=-1)
        codes = F.normalize(self.embedding.weight, p=2, dim=-1)
        # Same expansion of the squared distance as the official quantiser, for identical ties.
        distances = z.pow(2).sum(-1, keepdim=True) + codes.pow(2).sum(-1) - 2 * z @ codes.transpose(0, 1)
        return distances.argmin(dim=-1)


class VQProjector(nn.Module):
    """Features to codes (``quant_conv``, ``quantize``) and codes to latents (the rest)."""

    def __init__(self, params: SigLIPVQParams) -> None:
        super().__init__()
        self.quant_conv = nn.Conv2d(params.z_channels, params.codebook_dim, kernel_size=1)
        self.quantize = Codebook(params.codebook_size, params.codebook_dim)
        self.post_quant_conv = nn.Conv2d(params.codebook_dim, params.z_channels, kernel_size=1)
        self.post_conv = nn.Sequential(
            *(
                ResidualBlock(params.z_channels, params.decoder_norm_groups)
                for _ in range(params.num_post_conv_blocks)
            )
        )

    def encode(self, features: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        """Ids ``(B, grid_h, grid_w)`` for features ``(B, grid_h * grid_w, z_channels)``."""
        x = features.transpose(1, 2).reshape(features.shape[0], -1, grid_h, grid_w)
        z = self.quant_conv(x).permute(0, 2, 3, 1)
        return self.quantize.nearest(z)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, z_channels, h, w)`` for ids ``(B, h, w)``; codebook rows are not normalised."""
        z_q = self.quantize.embedding(ids).permute(0, 3, 1, 2)
        return self.post_conv(self.post_quant_conv(z_q))


class SigLIPVQModel(nn.Module):
    """The tokenizer's weights: ``vit`` (encoder) and ``vqproj`` (quantiser and decoder)."""

    def __init__(self, params: SigLIPVQParams) -> None:
        super().__init__()
        self.patch_size_px = params.patch_size_px
        self.vit = SigLIPViT(params)
        self.vqproj = VQProjector(params)

    def vit_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """Features ``(B, h*w, width)`` for pixels ``(B, 3, 16h, 16w)``, before any final norm."""
        return self.vit(pixels)

    def quantize(self, features: torch.Tensor, grid_h: int, grid_w: int) -> torch.Tensor:
        """Ids ``(B, grid_h, grid_w)`` of the nearest codes for ViT features."""
        return self.vqproj.encode(features, grid_h, grid_w)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """Ids ``(B, h, w)`` for pixels ``(B, 3, H, W)``."""
        grid_h = pixels.shape[-2] // self.patch_size_px
        grid_w = pixels.shape[-1] // self.patch_size_px
        return self.quantize(self.vit_features(pixels), grid_h, grid_w)

    def decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Semantic latents ``(B, z_channels, h, w)`` for ids ``(B, h, w)``."""
        return self.vqproj.decode(ids)

    @torch.no_grad()
    def init_weights(self) -> None:
        """timm-style initialisation for the ViT; the official quantiser's codebook init."""
        for module in self.vit.modules():
            if isinstance(module, nn.Linear):
                nn.init.trunc_normal_(module.weight, std=0.02)
                nn.init.zeros_(module.bias)
        nn.init.trunc_normal_(self.vit.pos_embed, std=0.02)
        codebook = self.vqproj.quantize.embedding.weight
        size = codebook.shape[0]
        codebook.uniform_(-1.0 / size, 1.0 / size)
        codebook.copy_(F.normalize(codebook, p=2, dim=-1))


# --------------------------------------------------------------------------- component


class SigLIPVQTokenizer(Tokenizer[SigLIPVQParams]):
    """X-Omni's semantic image tokenizer: images to token grids, token grids to latents."""

    params_class: ClassVar[type[ComponentParams]] = SigLIPVQParams

    def __init__(self, params: SigLIPVQParams, model: SigLIPVQModel) -> None:
        super().__init__(params)
        self.model = model.eval()

    # ----- construction and saving

    @classmethod
    def from_params(cls, params: SigLIPVQParams, *, seed: int = 0) -> Self:
        """Random weights, identical for identical ``seed``; the global RNG is left untouched."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = SigLIPVQModel(params)
            model.init_weights()
        return cls(params, model)

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str]) -> Self:
        """Load a folder written by :meth:`save_pretrained` onto the CPU in float32; see :meth:`to`."""
        params = cast(
            SigLIPVQParams,
            read_component_file(path, kind=cls.kind, plugin=PLUGIN_NAME, params_class=SigLIPVQParams),
        )
        with torch.device("meta"):
            model = SigLIPVQModel(params)
        model = model.to_empty(device="cpu")
        load_module_weights(model, Path(path, WEIGHTS_FILE), owner=f"tokenizer plugin '{PLUGIN_NAME}'")
        return cls(params, model)

    def save_pretrained(self, path: str | PathLike[str]) -> None:
        """Write ``xomni_component.json`` and ``model.safetensors`` to ``path``, atomically."""
        with atomic_directory(path) as folder:
            write_component_file(folder, kind=self.kind, plugin=PLUGIN_NAME, params=self.params)
            save_tensors(self.model.state_dict(), folder / WEIGHTS_FILE)

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        """Move the weights to ``device`` and/or cast them to the dtype named ``dtype``."""
        self.model.to(device=device, dtype=torch_dtype(dtype) if dtype is not None else None)
        return self

    @classmethod
    def count_parameters(cls, params: SigLIPVQParams | None = None) -> int:
        """Number of weights for ``params`` (default: the released giant model), without memory."""
        with torch.device("meta"):
            model = SigLIPVQModel(params if params is not None else SigLIPVQParams())
        return sum(p.numel() for p in model.parameters())

    # ----- Tokenizer interface

    @property
    def codebook_size(self) -> int:
        return self.params.codebook_size

    @property
    def downsample_factor(self) -> int:
        return self.params.patch_size_px

    @property
    def latent_channels(self) -> int:
        return self.params.z_channels

    def preprocess(self, image: Image.Image) -> PreprocessedImage:
        """RGB, filter, any-resolution bicubic resize, normalise: ``(3, height_px, width_px)``."""
        p = self.params
        image = image.convert("RGB")
        width, height = image.size
        if width < 1 or height < 1:
            raise InputError(f"image is empty ({width} x {height} px, width x height)")
        short, long = min(width, height), max(width, height)
        if p.filter_images and short < p.min_short_side_px:
            raise ImageRejectedError(
                f"image rejected by rule min_short_side_px: its short side is {short} px, "
                f"below the minimum of {p.min_short_side_px} px "
                f"(image is {width} x {height} px, width x height); "
                "set filter_images=False to accept it"
            )
        if p.filter_images and long / short > p.max_aspect_ratio:
            raise ImageRejectedError(
                f"image rejected by rule max_aspect_ratio: its aspect ratio is {long / short:.3g} "
                f"({long} / {short} px), above the maximum of {p.max_aspect_ratio:g} "
                f"(image is {width} x {height} px, width x height); "
                "set filter_images=False to accept it"
            )
        height_px, width_px = anyres_size_px(height, width, p)
        resized = image.resize((width_px, height_px), resample=Image.Resampling.BICUBIC)
        pixels = torch.from_numpy(np.array(resized, dtype=np.uint8)).permute(2, 0, 1)
        pixels = pixels.float().div(255.0)
        mean = torch.tensor(p.pixel_mean, dtype=torch.float32).view(3, 1, 1)
        std = torch.tensor(p.pixel_std, dtype=torch.float32).view(3, 1, 1)
        return PreprocessedImage(
            pixels=(pixels - mean) / std,
            grid=GridSize.from_pixels(height_px, width_px, p.patch_size_px),
            original_size_px=(height, width),
        )

    def vit_features(self, pixels: torch.Tensor) -> torch.Tensor:
        """ViT features ``(B, h*w, width)`` for preprocessed pixels ``(B, 3, H, W)``."""
        pixels = self._prepare_pixels(pixels)
        with torch.no_grad():
            return self.model.vit_features(pixels)

    def quantize(self, features: torch.Tensor, grid: GridSize) -> TokenGrid:
        """Token grid for ViT features ``(B, grid_h * grid_w, width)``."""
        if features.dim() != 3 or tuple(features.shape[1:]) != (
            grid.num_tokens,
            self.params.vit_width,
        ):
            raise InputError(
                f"features must have shape (batch, {grid.num_tokens}, {self.params.vit_width}) "
                f"for a {grid.grid_h} x {grid.grid_w} grid, got {tuple(features.shape)}"
            )
        weight = self.model.vqproj.quant_conv.weight
        features = features.to(device=weight.device, dtype=weight.dtype)
        with torch.no_grad():
            return TokenGrid(self.model.quantize(features, grid.grid_h, grid.grid_w))

    def encode(self, pixels: torch.Tensor) -> TokenGrid:
        return TokenGrid(self._run_encode(self._prepare_pixels(pixels)))

    def decode(self, grid: TokenGrid) -> SemanticLatents:
        ids = grid.ids
        if ids.is_floating_point() or ids.is_complex():
            raise InputError(f"token ids must be integers, got dtype {ids.dtype}")
        if ids.numel() and (int(ids.min()) < 0 or int(ids.max()) >= self.codebook_size):
            raise InputError(
                f"token ids must lie in [0, {self.codebook_size}), "
                f"got values from {int(ids.min())} to {int(ids.max())}"
            )
        return SemanticLatents(self._run_decode(ids.to(device=self._placement()[0], dtype=torch.long)))

    # ----- export

    def export_graphs(self, precision: Precision) -> list[GraphExport]:
        """The ``encode`` and ``decode`` graphs of the tokenizer export spec; see :mod:`.export`."""
        from .export import export_graphs

        return export_graphs(self, precision)

    def write_export_assets(self, folder: Path) -> None:
        """Nothing beyond the graphs and ``xomni_component.json``: preprocessing reads the params."""
        from .export import write_export_assets

        write_export_assets(self, folder)

    # ----- what a runtime for exported graphs overrides

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        """Device and dtype of the inputs that :meth:`_run_encode` and :meth:`_run_decode` take."""
        weight = self.model.vit.pos_embed
        return weight.device, weight.dtype

    def _run_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Ids ``(B, h, w)`` for checked pixels already on :meth:`_placement`."""
        with torch.no_grad():
            return self.model(pixels)

    def _run_decode(self, ids: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, z_channels, h, w)`` for checked int64 ids."""
        with torch.no_grad():
            return self.model.decode(ids)

    def _prepare_pixels(self, pixels: torch.Tensor) -> torch.Tensor:
        if pixels.dim() != 4 or pixels.shape[1] != 3:
            raise InputError(
                f"pixels must have shape (batch, 3, height_px, width_px), got {tuple(pixels.shape)}"
            )
        # Raises InputError naming the side that is not a multiple of the patch size.
        GridSize.from_pixels(int(pixels.shape[2]), int(pixels.shape[3]), self.params.patch_size_px)
        device, dtype = self._placement()
        return pixels.to(device=device, dtype=dtype)
