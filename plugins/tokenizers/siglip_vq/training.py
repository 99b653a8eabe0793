"""Training a SigLIP-VQ tokenizer from scratch with index back-propagation quantisation (IBQ).

The released tokenizer learns semantics by feeding its latents to a small language model. For
images whose meaning *is* their layout (flat shapes and colours), a training-only head that
paints each token's patch (at `patch_px` resolution) from the decoded latent is the same
signal at a fraction of the cost: a token must say which colours lie where inside its patch.
``object_weight`` weighs pixels away from the background up in that loss, as the decoder's VAE
does: objects cover a few percent of a scene, and unweighted codes describe mostly background.

Colours alone leave a token inside a square the same as one inside a circle. Given per-pixel
class maps (``segments``, for example what shape covers each pixel), a second training-only head
names each painted pixel's class from the same latent, weighted by ``segmentation_weight``. The
encoder sees the whole image, so every token of an object learns to say what the object is, and
a decoder reading the tokens can draw its outline.

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

from xomni_core.errors import InputError
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
    segmentation_weight: float = Field(
        0.0,
        ge=0.0,
        description="weight of the per-pixel classification of the segments passed to train_ibq "
        "(0: no segmentation head)",
    )
    seed: int = Field(0, ge=0, description="seed of the heads' initialisation and the batch order")


@dataclass(frozen=True)
class IBQResult:
    """Last-step losses and how many distinct codes a pass over the data used."""

    reconstruction: float
    codes_used: int
    history: list[dict[str, float]]


class PatchPainter(nn.Module):
    """Training-only head: one latent ``(C, h, w)`` to ``(out_channels, h * p, w * p)`` per-pixel
    values (3 colours, or one logit per segment class)."""

    def __init__(self, channels: int, patch_px: int, out_channels: int = 3) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, 2 * channels, 1),
            nn.GELU(),
            nn.Conv2d(2 * channels, out_channels * patch_px**2, 1),
        )
        self.shuffle = nn.PixelShuffle(patch_px)

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.shuffle(self.body(latents))


def train_ibq(
    tokenizer: SigLIPVQTokenizer,
    pixels: torch.Tensor,
    settings: IBQSettings | None = None,
    *,
    segments: torch.Tensor | None = None,
    show_progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> IBQResult:
    """Train ``tokenizer`` in place on preprocessed ``pixels (N, 3, H, W)`` (normalised).

    ``segments (N, H, W)``, integer class ids per pixel, are required when
    ``settings.segmentation_weight`` is positive and ignored otherwise. Returns the losses of the
    last step and the number of codes the trained tokenizer uses on ``pixels``; the tokenizer is
    left in eval mode.
    """
    settings = settings or IBQSettings()
    segments = _checked_segments(segments, pixels, settings)
    model = tokenizer.model
    params = tokenizer.params
    generator = torch.Generator().manual_seed(settings.seed)
    target_side = pixels.shape[-1] // params.patch_size_px * settings.patch_px
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(settings.seed)
        painter = PatchPainter(params.z_channels, settings.patch_px).to(pixels.device)
        segmenter = None
        if segments is not None:
            classes = int(segments.max()) + 1
            segmenter = PatchPainter(params.z_channels, settings.patch_px, classes).to(pixels.device)
            # Each painted pixel's class: the segment class at its position, picked once.
            size = (target_side, target_side)
            segments = F.interpolate(segments[:, None].float(), size=size, mode="nearest")[:, 0].long()
    heads = [head for head in (painter, segmenter) if head is not None]
    model.train()
    optimizer = torch.optim.AdamW(
        [*model.parameters(), *(p for head in heads for p in head.parameters())],
        lr=settings.learning_rate,
        weight_decay=0.0,
    )
    schedule = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    history: list[dict[str, float]] = []
    for step in tqdm(range(settings.steps), desc="tokenizer (IBQ)", disable=not show_progress):
        picked = torch.randint(len(pixels), (settings.batch_size,), generator=generator).to(pixels.device)
        batch = pixels[picked]
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
        if segmenter is not None and segments is not None:
            losses["segmentation"] = F.cross_entropy(segmenter(latents), segments[picked])
            total = total + settings.segmentation_weight * losses["segmentation"]
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


def _checked_segments(
    segments: torch.Tensor | None, pixels: torch.Tensor, settings: IBQSettings
) -> torch.Tensor | None:
    """``segments`` when the segmentation head trains (validated), else None."""
    if settings.segmentation_weight == 0.0:
        return None
    if segments is None:
        raise InputError(
            f"siglip-vq training: segmentation_weight is {settings.segmentation_weight}, so train_ibq "
            "needs segments (N, H, W), integer class ids per pixel"
        )
    expected = (len(pixels), *pixels.shape[-2:])
    if tuple(segments.shape) != expected or segments.is_floating_point() or int(segments.min()) < 0:
        raise InputError(
            f"siglip-vq training: segments must be non-negative integer class ids of shape "
            f"{expected} (one per pixel), got {segments.dtype} of shape {tuple(segments.shape)}"
        )
    return segments.to(pixels.device)


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
