"""Training the semantic FLUX decoder from scratch: its VAE, then its flow-matching transformer.

Stage one fits the VAE on whole images, average-pooled to a smaller size (convolutions see the
same kind of edges at a quarter of the cost, and unlike crops, whole images keep GroupNorm's
statistics those of a real input), with pixels away from the background weighted up: objects
cover a few percent of a scene, and an unweighted loss learns their shapes long before their
colours. It then sets FLUX's latent shift and scale from the latent statistics of the data.
Stage two trains the transformer, ``siglip_embed`` included, with the rectified-flow objective
FLUX samples with: ``x_t = (1 - t) x_0 + t noise`` and the target velocity ``noise - x_0``, at
logit-normal ``t``. Whole semantic latents are dropped for a share of samples (X-Omni's token
drop), so the unconditional branch of true CFG is trained too.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from pydantic import BaseModel, ConfigDict, Field
from tqdm.auto import tqdm

from xomni_core.training import object_weights, warmup_cosine

from .model import FluxSemanticDecoder, latent_image_ids, pack_latents

if TYPE_CHECKING:
    from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL


class VAESettings(BaseModel):
    """How :func:`train_vae` trains; defaults suit 128 px flat-colour scenes."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(800, ge=1, description="optimiser steps")
    batch_size: int = Field(16, ge=1, description="images per step")
    downscale: int = Field(
        2, ge=1, description="average-pool the images by this factor first: a quarter of the cost at 2"
    )
    learning_rate: float = Field(2e-3, gt=0.0, description="AdamW peak learning rate (cosine decay)")
    warmup_steps: int = Field(50, ge=0, description="linear warm-up steps")
    max_grad_norm: float = Field(1.0, gt=0.0, description="clip the gradient norm")
    object_weight: float = Field(
        10.0,
        ge=0.0,
        description="extra weight of pixels away from the background colour; without it the loss is "
        "mostly background and objects come out in a muddy average colour",
    )
    kl_weight: float = Field(1e-6, ge=0.0, description="weight of the KL term of the posterior")
    seed: int = Field(0, ge=0, description="seed of the batches")
    refine_steps: int = Field(
        0,
        ge=0,
        description="steps after the pooled ones that train the VAE decoder alone on full-size images "
        "(encoder and latent space kept): pooled images halve a word's strokes, and a decoder that "
        "never saw them at full size draws words as smudges",
    )
    refine_encoder: bool = Field(
        False,
        description="the refining steps train the encoder too: the latent space then moves, and the "
        "flow transformer trained after it follows",
    )
    refine_batch_size: int = Field(8, ge=1, description="full-size images per refining step")
    refine_learning_rate: float = Field(1e-3, gt=0.0, description="peak learning rate of the refining steps")


class FlowSettings(BaseModel):
    """How :func:`train_flow` trains the transformer."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    steps: int = Field(2000, ge=1, description="optimiser steps")
    batch_size: int = Field(32, ge=1, description="images per step")
    learning_rate: float = Field(2e-3, gt=0.0, description="AdamW peak learning rate (cosine decay)")
    warmup_steps: int = Field(100, ge=0, description="linear warm-up steps")
    max_grad_norm: float = Field(1.0, gt=0.0, description="clip the gradient norm")
    token_drop: float = Field(
        0.1, ge=0.0, lt=1.0, description="share of samples whose semantic latents are all dropped"
    )
    logit_mean: float = Field(
        1.0,
        description="mean of the logit-normal timestep density; above 0 favours the noisy steps, "
        "where the image must come from the semantic latents",
    )
    logit_std: float = Field(1.0, gt=0.0, description="deviation of the logit-normal timestep density")
    seed: int = Field(0, ge=0, description="seed of batches, noise and timesteps")


@dataclass(frozen=True)
class TrainingResult:
    """Loss of the last step, the mean over the last tenth of the run, and every step's record."""

    last_loss: float
    final_loss: float
    history: list[dict[str, float]]


def train_vae(
    decoder: FluxSemanticDecoder,
    pixels: torch.Tensor,
    settings: VAESettings | None = None,
    *,
    show_progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train the decoder's VAE in place on ``pixels (N, 3, H, W)`` in ``[-1, 1]``: all of it on
    pooled images, then (``settings.refine_steps``) its decoder alone, or all of it with
    ``settings.refine_encoder``, on the full-size ones."""
    settings = settings or VAESettings()
    vae = decoder.vae
    generator = torch.Generator().manual_seed(settings.seed)
    pooled = F.avg_pool2d(pixels, settings.downscale) if settings.downscale > 1 else pixels
    for images, after in ((pooled, f" (after downscale={settings.downscale})"), (pixels, "")):
        if any(side % decoder.params.vae_scale_factor for side in images.shape[-2:]):
            raise ValueError(
                f"images of {tuple(images.shape[-2:])} px{after} must be multiples of the VAE's "
                f"{decoder.params.vae_scale_factor} px"
            )
    vae.train()
    history: list[dict[str, float]] = []
    optimizer = torch.optim.AdamW(vae.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    for step in tqdm(range(settings.steps), desc="decoder VAE", disable=not show_progress):
        batch = pooled[torch.randint(len(pooled), (settings.batch_size,), generator=generator)]
        record = _vae_step(vae, batch, settings, optimizer, schedule)
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    if settings.refine_steps:
        encoder = [] if settings.refine_encoder else [vae.encoder, vae.quant_conv]
        for part in encoder:
            if part is not None:
                part.requires_grad_(False)
        trained = [p for p in vae.parameters() if p.requires_grad]
        optimizer = torch.optim.AdamW(trained, lr=settings.refine_learning_rate, weight_decay=0.0)
        schedule = warmup_cosine(
            optimizer, min(settings.warmup_steps, settings.refine_steps // 10), settings.refine_steps
        )
        steps = range(settings.steps, settings.steps + settings.refine_steps)
        for step in tqdm(steps, desc="decoder VAE, full size", disable=not show_progress):
            batch = pixels[torch.randint(len(pixels), (settings.refine_batch_size,), generator=generator)]
            record = _vae_step(vae, batch, settings, optimizer, schedule)
            history.append(record)
            if on_step is not None:
                on_step(step, record)
        for part in encoder:
            if part is not None:
                part.requires_grad_(True)
    vae.eval()
    return _result(history)


def _vae_step(
    vae: AutoencoderKL,
    batch: torch.Tensor,
    settings: VAESettings,
    optimizer: torch.optim.Optimizer,
    schedule: torch.optim.lr_scheduler.LRScheduler,
) -> dict[str, float]:
    """One optimiser step of the VAE's weighted L1 + MSE + KL loss on ``batch``."""
    posterior = vae.encode(batch).latent_dist
    # The posterior mean, unperturbed: the transformer's targets are means, and sampling at
    # the initial unit deviation drowns the colour of flat regions for many steps.
    reconstruction = vae.decode(posterior.mean).sample
    weight = object_weights(batch, settings.object_weight)
    error = reconstruction - batch
    l1 = (error.abs() * weight).mean()
    mse = (error.pow(2) * weight).mean()
    kl = posterior.kl().mean() / posterior.mean[0].numel()
    loss = l1 + mse + settings.kl_weight * kl
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(vae.parameters(), settings.max_grad_norm)
    optimizer.step()
    schedule.step()
    return {"loss": float(loss.detach()), "l1": float(l1.detach()), "kl": float(kl.detach())}


@torch.no_grad()
def fit_latent_scaling(decoder: FluxSemanticDecoder, pixels: torch.Tensor, batch_size: int = 64) -> None:
    """Set the VAE's (and the params') shift and scale so the data's latents have mean 0, std 1."""
    means = torch.cat(
        [
            decoder.vae.encode(pixels[start : start + batch_size]).latent_dist.mean
            for start in range(0, len(pixels), batch_size)
        ]
    )
    shift = float(means.mean())
    scale = 1.0 / float(means.std())
    decoder.vae.register_to_config(shift_factor=shift, scaling_factor=scale)
    decoder.params = decoder.params.model_copy(
        update={"vae_shift_factor": shift, "vae_scaling_factor": scale}
    )


@torch.no_grad()
def packed_latents(decoder: FluxSemanticDecoder, pixels: torch.Tensor, batch_size: int = 64) -> torch.Tensor:
    """Scaled, shifted and 2 x 2-packed VAE posterior means ``(N, h * w, in_channels)``: the
    transformer's clean samples ``x_0`` for ``pixels (N, 3, H, W)`` in ``[-1, 1]``."""
    vae = decoder.vae
    chunks = []
    for start in range(0, len(pixels), batch_size):
        mean = vae.encode(pixels[start : start + batch_size]).latent_dist.mean
        scaled = (mean - vae.config.shift_factor) * vae.config.scaling_factor
        chunks.append(pack_latents(scaled))
    return torch.cat(chunks)


def train_flow(
    decoder: FluxSemanticDecoder,
    clean: torch.Tensor,
    semantic: torch.Tensor,
    grid: tuple[int, int],
    settings: FlowSettings | None = None,
    *,
    show_progress: bool = True,
    on_step: Callable[[int, dict[str, float]], None] | None = None,
) -> TrainingResult:
    """Train the transformer in place on packed clean latents ``(N, h * w, in_channels)`` and
    the semantic input of the same images as :meth:`FluxSemanticDecoder.semantic_tokens` packs
    it, ``(N, h * w, packed_semantic_channels)``, on the token grid ``(h, w)``."""
    settings = settings or FlowSettings()
    if decoder.params.text_conditioning:
        raise ValueError("train_flow trains the text-free variant (text_conditioning=False)")
    transformer = decoder.transformer
    generator = torch.Generator().manual_seed(settings.seed)
    text = decoder.encode_prompts(None, settings.batch_size)
    image_ids = latent_image_ids(grid[0], grid[1], decoder.device, decoder.dtype)
    guidance = (
        torch.full((settings.batch_size,), decoder.params.embedded_guidance)
        if decoder.params.guidance_embeds
        else None
    )
    transformer.train()
    optimizer = torch.optim.AdamW(transformer.parameters(), lr=settings.learning_rate, weight_decay=0.0)
    schedule = warmup_cosine(optimizer, settings.warmup_steps, settings.steps)
    history: list[dict[str, float]] = []
    for step in tqdm(range(settings.steps), desc="decoder transformer", disable=not show_progress):
        # Draws come from one CPU generator, so a seed gives the same batches on every device.
        rows = torch.randint(len(clean), (settings.batch_size,), generator=generator)
        x0, condition = clean[rows.to(clean.device)], semantic[rows.to(semantic.device)]
        keep = torch.rand(settings.batch_size, 1, 1, generator=generator) >= settings.token_drop
        condition = condition * keep.to(condition.device)
        normal = torch.randn(settings.batch_size, generator=generator)
        t = torch.sigmoid(settings.logit_mean + settings.logit_std * normal).to(x0.device)
        noise = torch.randn(x0.shape, generator=generator).to(x0.device)
        noisy = (1 - t.view(-1, 1, 1)) * x0 + t.view(-1, 1, 1) * noise
        velocity = transformer(
            hidden_states=noisy,
            encoder_hidden_states=text.sequence,
            pooled_projections=text.pooled,
            timestep=t,
            img_ids=image_ids,
            txt_ids=text.ids,
            guidance=guidance,
            semantic_latents=condition,
            return_dict=False,
        )[0]
        loss = F.mse_loss(velocity, noise - x0)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(transformer.parameters(), settings.max_grad_norm)
        optimizer.step()
        schedule.step()
        record = {"loss": float(loss.detach())}
        history.append(record)
        if on_step is not None:
            on_step(step, record)
    transformer.eval()
    return _result(history)


def _result(history: list[dict[str, float]]) -> TrainingResult:
    tail = history[-max(1, len(history) // 10) :]
    return TrainingResult(history[-1]["loss"], sum(r["loss"] for r in tail) / len(tail), history)
