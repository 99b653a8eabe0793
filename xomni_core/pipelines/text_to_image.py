"""Text to image: prompt -> image tokens (backbone) -> semantic latents (tokenizer) -> pixels."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..config import PipelineConfig
from ..errors import ConfigError
from ..interfaces import Backbone, Decoder, Tokenizer
from ..registry import PluginRegistry
from ..scoring import ScoredBatch, WeightedReward, score_all
from ..types import (
    DecodeRequest,
    GridSize,
    ImageGenerationRequest,
    RewardBatch,
    SamplingParams,
    TokenGrid,
    check_decode_settings,
    check_seed_count,
)
from .build import announce, build_component, prepare

if TYPE_CHECKING:
    from PIL.Image import Image


@dataclass(frozen=True)
class TextToImageResult:
    """Generated images with the token grids they were decoded from and the settings used."""

    images: list[Image]
    tokens: TokenGrid
    settings: dict[str, Any]
    scores: ScoredBatch | None = None


class TextToImagePipeline:
    """Generates images from prompts with a tokenizer, a backbone and a decoder."""

    def __init__(
        self,
        tokenizer: Tokenizer[Any],
        backbone: Backbone[Any],
        decoder: Decoder[Any],
        *,
        rewards: Sequence[WeightedReward] = (),
        config: PipelineConfig | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        _check_compatible(tokenizer, backbone, decoder)
        self.tokenizer = tokenizer
        self.backbone = backbone
        self.decoder = decoder
        self.rewards = tuple(rewards)
        self.config = config or PipelineConfig()
        announce(self, config, registry)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | os.PathLike[str],
        *,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
    ) -> TextToImagePipeline:
        """Build from a pipeline config (object or file path) with optional dotted overrides."""
        resolved, registry = prepare(config, overrides=overrides, registry=registry)

        def build(slot: str) -> Any:
            return build_component(resolved.component(slot), resolved.config, registry)

        rewards = [
            WeightedReward(f"rewards.{i}", section.weight, build(f"rewards.{i}"), section.normalize)
            for i, section in enumerate(resolved.config.rewards)
        ]
        return cls(
            build("tokenizer"),
            build("backbone"),
            build("decoder"),
            rewards=rewards,
            config=resolved.config,
            registry=registry,
        )

    def __call__(
        self,
        prompts: str | Sequence[str],
        *,
        height_px: int | None = None,
        width_px: int | None = None,
        grid: GridSize | None = None,
        sampling: SamplingParams | None = None,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_scale: float | None = None,
        show_progress: bool = True,
    ) -> TextToImageResult:
        """Generate one image per prompt; unset arguments come from the config's defaults.

        Image ``i`` uses seed ``seed + i``, or ``seeds[i]`` when ``seeds`` gives one per prompt;
        an image depends on its own seed only, never on the rest of the batch."""
        prompt_list = [prompts] if isinstance(prompts, str) else list(prompts)
        defaults = self.config.generation
        if grid is None:
            grid = GridSize.from_pixels(
                defaults.height_px if height_px is None else height_px,
                defaults.width_px if width_px is None else width_px,
                self.decoder.pixels_per_token,
            )
        sampling = sampling or defaults.sampling
        seed = self.config.runtime.seed if seed is None else seed
        steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = defaults.guidance_scale if guidance_scale is None else guidance_scale
        noise = defaults.noise_scale if noise_scale is None else noise_scale
        # Before the backbone's work, not after it.
        check_seed_count(seeds, len(prompt_list))
        check_decode_settings(num_inference_steps=steps, guidance_scale=guidance, noise_scale=noise)
        tokens = self.backbone.generate_image_tokens(
            ImageGenerationRequest(
                prompts=tuple(prompt_list),
                grid=grid,
                sampling=sampling,
                seed=seed,
                seeds=None if seeds is None else tuple(seeds),
                show_progress=show_progress,
            )
        )
        latents = self.tokenizer.decode(tokens)
        images = self.decoder.decode(
            DecodeRequest(
                latents=latents,
                prompts=tuple(prompt_list),
                num_inference_steps=steps,
                guidance_scale=guidance,
                noise_scale=noise,
                seeds=tuple(seeds) if seeds is not None else None,
                seed=seed,
                show_progress=show_progress,
            )
        )
        settings = {
            "prompts": prompt_list,
            "grid_h": grid.grid_h,
            "grid_w": grid.grid_w,
            "height_px": grid.grid_h * self.decoder.pixels_per_token,
            "width_px": grid.grid_w * self.decoder.pixels_per_token,
            "sampling": sampling.model_dump(),
            "seed": seed,
            "seeds": list(seeds) if seeds is not None else [seed + i for i in range(len(prompt_list))],
            "num_inference_steps": steps,
            "guidance_scale": guidance,
            "noise_scale": noise,
        }
        scores = score_all(self.rewards, RewardBatch(images, prompt_list)) if self.rewards else None
        return TextToImageResult(images=images, tokens=tokens, settings=settings, scores=scores)


def _check_compatible(tokenizer: Tokenizer[Any], backbone: Backbone[Any], decoder: Decoder[Any]) -> None:
    problems = []
    if tokenizer.codebook_size != backbone.vocab.image_vocab_size:
        problems.append(
            f"tokenizer codebook_size {tokenizer.codebook_size} != backbone image_vocab_size "
            f"{backbone.vocab.image_vocab_size}"
        )
    if tokenizer.latent_channels != decoder.latent_channels:
        problems.append(
            f"tokenizer latent_channels {tokenizer.latent_channels} != decoder latent_channels "
            f"{decoder.latent_channels}"
        )
    if tokenizer.downsample_factor != decoder.pixels_per_token:
        problems.append(
            f"tokenizer downsample_factor {tokenizer.downsample_factor} != decoder "
            f"pixels_per_token {decoder.pixels_per_token}"
        )
    if problems:
        raise ConfigError("components do not fit together: " + "; ".join(problems))
