"""Training a SigLIP-VQ tokenizer from scratch with index back-propagation quantisation (IBQ).

The released tokenizer learns semantics by feeding its latents to a small language model. For
images whose meaning *is* their layout (flat shapes and colours), a training-only head that
paints each token's 16 x 16 px patch at low resolution from the decoded latent is the same
signal at a fraction of the cost: a token must say which colours lie where inside its patch.
``object_weight`` weighs pixels away from the background up in that loss, as the decoder's VAE
does: objects cover a few percent of a scene, and unweighted codes describe mostly background.

IBQ, per token: cosine logits to every code over a temperature, a softmax, and the hard one-hot
of its argmax passed straight through (``hard - soft.detach() + soft``). The resulting index
vector multiplies the *whole* raw codebook, so every code receives gradient and few stay dead.
Commitment terms pull features and chosen codes together; a share of batches skip quantisation
so the decode path also sees unquantised features.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from torch import nn
from tqdm.auto import tqdm

from xomni_core.training import object_weights, warmup_cosine

from .model import SigLIPVQTokenizer


class IBQSettings(BaseModel):
    """How :func:`train_ibq` trains; every field has a default that suits 128 px scenes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(1200, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="images per step")
    learning_rate: float = Field(2e-3, gt=0.0, description="AdamW peak learning rate (cosine decay)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    temperature: float = Field(0.07, gt=0.0, description="of the cosine logits over the codebook")
    commitment: float = Field(0.25, ge=0.0, description="weight of the feature-to-code term")
    codebook_weight: float = Field(1.0, ge=0.0, description="weight of the code-to-feature term")
    usage_weight: float = Field(
        0.1, ge=0.0, description="weight of the batch-entropy term that spreads tokens over the codebook"
    )
    skip_quantization: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of steps that decode unquantised features"
    )
    patch_px: int = Field(8, ge=1, description="side of the low-resolution patch each token paints")
    object_weight: float = Field(
        0.0,
        ge=0.0,
        description="extra weight of painted pixels away from the background colour; objects cover "
        "a few percent of a scene, and at 10 the codes describe them far better",
    )
    seed: int = Field(0, ge=0, description="seed of the head's initialisation and the batch order")


@dataclass(frozen=True)
class IBQResult:
    """Last-step losses and how many distinct codes a pass over the data used."""

    reconstruction: float
    codes_used: int
    history: list[dict[str, float]]


class PatchPainter(nn.Module):
    """Training-only head: one latent ``(C, h, w)`` to pixels ``(3, h * p, w * p)``."""

    def __init__(self, channels: int, patch_px: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1), nn.GELU(), nn.Conv2d(2 * channels, 3 * patch_px**2, 1)
        )
        self.shuffle = nn.PixelShuffle(patch_px)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(latents))


def train_ibq(
    tokenizer: SigLIPVQTokenizer,
    pixels: torch.Tensor,
    settings: IBQSettings | None = None,
    *,
    show_progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> IBQResult:
    """Train ``tokenizer`` in place on preprocessed ``pixels (N, 3, H, W)`` (normalised).

    Returns the losses of the last step and the number of codes the trained tokenizer uses on
    ``pixels``; the tokenizer is left in eval mode.
    """
    settings = settings or IBQSettings()
    model = tokenizer.model
    params = tokenizer.params
    generator = torch.Generator().manual_seed(settings.seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        painter = PatchPainter(params.z_channels, settings.patch_px).to(pixels.device)
    target_side = pixels.shape[-1] // params.patch_size_px * settings.patch_px
    model.train()
    optimizer = torch.optim.AdamW(
        [*model.parameters(), *painter.parameters()], lr=settings.learning_rate, weight_decay=0.0
    )
    schedule = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    history: list[dict[str, float]] = []
    for step in tqdm(range(settings.steps), desc="tokenizer (IBQ)", disable=not show_progress):
        batch = pixels[
            torch.randint(len(pixels), (settings.batch_size,), generator=generator).to(pixels.device)
        ]
        skip = float(torch.rand((), generator=generator)) < settings.skip_quantization
        latents, losses = _forward(tokenizer, batch, settings, skip=skip)
        painted = painter(latents)
        target = F.adaptive_avg_pool2d(batch, (target_side, target_side))
        weight = object_weights(target, settings.object_weight)
        losses["reconstruction"] = ((painted - target).pow(2) * weight).mean()
        total = (
            losses["reconstruction"]
            + settings.commitment * losses["commitment"]
            + settings.codebook_weight * losses["codebook"]
            + settings.usage_weight * losses["usage"]
        )
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        schedule.step()
        record = {name: float(value.detach()) for name, value in losses.items()}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    model.eval()
    return IBQResult(history[-1]["reconstruction"], codes_used(tokenizer, pixels), history)


@torch.no_grad()
def codes_used(tokenizer: SigLIPVQTokenizer, pixels: torch.Tensor, batch_size: int = 256) -> int:
    """Number of distinct codes the tokenizer picks for ``pixels``."""
    seen = set()
    for start in range(0, len(pixels), batch_size):
        seen.update(tokenizer.encode(pixels[start : start + batch_size]).ids.unique().tolist())
    return len(seen)


def _forward(
    tokenizer: SigLIPVQTokenizer, pixels: torch.Tensor, settings: IBQSettings, *, skip: bool
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Decoded latents ``(B, z_channels, h, w)`` and the quantiser's losses for one batch."""
    model = tokenizer.model
    grid_h = pixels.shape[-2] // tokenizer.params.patch_size_px
    grid_w = pixels.shape[-1] // tokenizer.params.patch_size_px
    features = model.vit_features(pixels)
    x = features.transpose(1, 2).reshape(len(pixels), -1, grid_h, grid_w)
    z = model.vqproj.quant_conv(x).permute(0, 2, 3, 1)  # (B, h, w, dim)
    codebook = model.vqproj.quantize.embedding.weight
    z_unit, codes_unit = F.normalize(z, dim=-1), F.normalize(codebook, dim=-1)
    logits = z_unit @ codes_unit.T / settings.temperature
    soft = logits.softmax(dim=-1)
    hard = F.one_hot(soft.argmax(dim=-1), codebook.shape[0]).to(soft.dtype)
    index = hard - soft.detach() + soft
    quantized = z if skip else index @ codebook  # raw rows, as decoding reads them
    chosen_unit = hard @ codes_unit
    mean_usage = soft.reshape(-1, codebook.shape[0]).mean(0)
    losses = {
        "commitment": F.mse_loss(z_unit, chosen_unit.detach()),
        "codebook": F.mse_loss(chosen_unit, z_unit.detach()),
        # Negative entropy of the batch's mean code distribution: low when codes are spread out.
        "usage": (mean_usage * mean_usage.clamp_min(1e-9).log()).sum(),
    }
    latents = model.vqproj.post_conv(model.vqproj.post_quant_conv(quantized.permute(0, 3, 1, 2)))
    return latents, losses
