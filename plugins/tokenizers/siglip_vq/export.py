"""ONNX export of SigLIP-VQ under the tokenizer export spec.

``encode`` holds the whole ViT and the nearest-code search, so the graph returns int64 ids and
no feature tensor crosses the runtime boundary; ``decode`` holds the codebook lookup and the
residual blocks. Position embeddings are resampled inside ``encode`` for the input's grid.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

from xomni_core import torch_dtype
from xomni_export import GraphExport, Precision
from xomni_export.specs.tokenizer import DECODE, ENCODE, tokenizer_export_spec

from .model import SigLIPVQModel

if TYPE_CHECKING:
    from .model import SigLIPVQTokenizer

#: Grid side of the export example: 384 px, the short side small images are scaled up to.
OPT_GRID = 24


class EncodeGraph(nn.Module):
    """``encode``: pixels ``(B, 3, H, W)`` to ids ``(B, H / patch, W / patch)``."""

    def __init__(self, model: SigLIPVQModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.model(pixels)


class DecodeGraph(nn.Module):
    """``decode``: ids ``(B, h, w)`` to semantic latents ``(B, z_channels, h, w)``."""

    def __init__(self, model: SigLIPVQModel) -> None:
        super().__init__()
        self.model = model

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.model.decode(ids)


def export_graphs(tokenizer: SigLIPVQTokenizer, precision: Precision) -> list[GraphExport]:
    """The ``encode`` and ``decode`` graphs of ``tokenizer``, on the CPU at ``precision``."""
    params = tokenizer.params
    dtype = torch_dtype(precision)
    model = tokenizer.model
    weight = model.vit.pos_embed
    if (weight.device.type, weight.dtype) != ("cpu", dtype):
        model = copy.deepcopy(model).to(device="cpu", dtype=dtype)
    model.eval()
    # At its own size the stored position grid is used without resampling; an export example of
    # that size would trace that branch and fix the number of positions in the graph.
    opt_grid = OPT_GRID if params.pos_grid_size != OPT_GRID else OPT_GRID - 1
    spec = tokenizer_export_spec(
        patch_size_px=params.patch_size_px,
        latent_channels=params.z_channels,
        max_grid=params.max_long_side_px // params.patch_size_px,
        opt_grid=opt_grid,
    )
    encode, decode = spec.graph(ENCODE), spec.graph(DECODE)

    def pixels(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        shape = encode.inputs[0].concrete_shape(sizes)
        return [torch.randn(shape, generator=generator).to(dtype)]

    def ids(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        shape = decode.inputs[0].concrete_shape(sizes)
        return [torch.randint(0, params.codebook_size, shape, generator=generator)]

    return [
        GraphExport(encode, EncodeGraph(model), pixels),
        GraphExport(decode, DecodeGraph(model), ids),
    ]


def write_export_assets(tokenizer: SigLIPVQTokenizer, folder: Path) -> None:
    """Nothing to add: the runtime preprocesses from the params in ``xomni_component.json``."""
