"""Text to image: prompt -> image tokens (backbone) -> semantic latents (tokenizer) -> pixels."""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar

from ..config import PipelineConfig
from ..cpu import cpu_threads
from ..errors import ConfigError, InputError
from ..heap import long_lived_objects
from ..interfaces import Backbone, Decoder, Tokenizer
from ..registry import PluginRegistry
from ..scoring import ScoredBatch, WeightedReward, score_all
from ..types import (
    DecodeRequest,
    GridSize,
    ImageGenerationRequest,
    RewardBatch,
    SamplingParams,
    StepCallback,
    TokenGrid,
    check_decode_settings,
    check_seed_count,
)
from .arguments import (
    OutputType,
    as_list,
    check_output_type,
    generator_seeds,
    images_as,
    sampling_from,
)
from .base import PipelineBase, apply_runtime, config_capabilities
from .build import announce, build_component, prepare

if TYPE_CHECKING:
    import torch

    from ..types import SemanticLatents

#: Share of the backbone's context that a pipeline without a configured size gives the image
#: tokens; the rest is room for the prompt (see ``default_grid``).
_CONTEXT_SHARE_FOR_IMAGE = 0.5


@dataclass(frozen=True)
class TextToImageResult:
    """Generated images with the token grids they were decoded from and the settings used.

    ``images`` holds what ``output_type`` asked for: PIL images (``pil``), a float array
    ``(N, H, W, 3)`` in [0, 1] (``np``), a float tensor ``(N, 3, H, W)`` (``pt``), the semantic
    latents the decoder would have drawn from (``latent``) or the token grids (``tokens``).
    """

    images: Any
    tokens: TokenGrid
    settings: dict[str, Any]
    scores: ScoredBatch | None = None


class TextToImagePipeline(PipelineBase):
    """Generates images from prompts with a tokenizer, a backbone and a decoder."""

    slots: ClassVar[tuple[str, ...]] = ("tokenizer", "backbone", "decoder")

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
        self._init_base(config, registry)
        self._sized = config is not None
        announce(self, config, registry)

    def _check(self, components: Mapping[str, Any]) -> None:
        _check_compatible(components["tokenizer"], components["backbone"], components["decoder"])

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | os.PathLike[str],
        *,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
        components: Mapping[str, Any] | None = None,
    ) -> TextToImagePipeline:
        """Build from a pipeline config (object or file path) with optional dotted overrides.

        The runtime settings apply before anything is built; ``components`` by slot are used
        as they are instead of building those slots.
        """
        given = dict(components or {})
        unknown = sorted(set(given) - set(cls.slots))
        if unknown:
            raise TypeError(f"{cls.__name__} has no slot {', '.join(unknown)}; slots: {', '.join(cls.slots)}")
        missing = [slot for slot in cls.slots if slot not in given]
        with long_lived_objects():
            resolved, registry = prepare(
                config, overrides=overrides, registry=registry, slots=missing if given else None
            )
            apply_runtime(resolved.config.runtime)

            def build(slot: str) -> Any:
                if slot in given:
                    return given[slot]
                return build_component(resolved.component(slot), resolved.config, registry)

            rewards = [
                WeightedReward(f"rewards.{i}", section.weight, build(f"rewards.{i}"), section.normalize)
                for i, section in enumerate(resolved.config.rewards)
            ]
            pipeline = cls(
                build("tokenizer"),
                build("backbone"),
                build("decoder"),
                rewards=rewards,
                config=resolved.config,
                registry=registry,
            )
        pipeline.capabilities = config_capabilities(config)
        return pipeline

    def default_grid(self) -> GridSize:
        """The grid of the configured size; a pipeline made from components alone (no config)
        takes the largest square grid, up to the default size, that uses at most half the
        backbone's context."""
        defaults = self.config.generation
        grid = GridSize.from_pixels(defaults.height_px, defaults.width_px, self.decoder.pixels_per_token)
        room = int(self.backbone.vocab.max_positions * _CONTEXT_SHARE_FOR_IMAGE)
        if self._sized or grid.num_tokens <= room:
            return grid
        side = max(1, min(grid.grid_h, grid.grid_w, math.isqrt(room)))
        return GridSize(grid_h=side, grid_w=side)

    def __call__(
        self,
        prompt: str | Sequence[str] | None = None,
        *,
        negative_prompt: str | Sequence[str] | None = None,
        num_images_per_prompt: int = 1,
        height: int | None = None,
        width: int | None = None,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        noise_scale: float | None = None,
        generator: torch.Generator | Sequence[torch.Generator] | None = None,
        seed: int | None = None,
        seeds: Sequence[int] | None = None,
        sampling: SamplingParams | None = None,
        generation_config: Any = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        cfg_scale: float | None = None,
        output_type: OutputType = "pil",
        callback_on_step_end: Callable[..., Any] | None = None,
        grid: GridSize | None = None,
        show_progress: bool | None = None,
        prompts: str | Sequence[str] | None = None,
        height_px: int | None = None,
        width_px: int | None = None,
    ) -> TextToImageResult:
        """Generate ``num_images_per_prompt`` images per prompt; unset arguments come from the
        pipeline's defaults (its folder or config).

        Seeds: image ``i`` of the batch (prompts repeated ``num_images_per_prompt`` times in
        order) uses ``seeds[i]``; else the initial seed of ``generator[i]`` (of one generator:
        that seed plus ``i``); else ``seed + i`` (``seed`` defaults to the runtime seed). An image
        depends on its own seed only, never on the rest of the batch.

        Sampling of the backbone: ``sampling``, then a transformers ``generation_config``, then
        the keywords ``temperature``, ``top_k``, ``top_p``, ``min_p``, ``cfg_scale``, each over
        the previous. ``negative_prompt`` is what both guidance steps contrast with: the
        backbone's (``cfg_scale`` > 1) and the decoder's (``guidance_scale`` > 1).

        ``callback_on_step_end(pipeline, step, timestep, tensors)`` runs after each step of the
        token loop (``timestep`` None, ``tensors["tokens"]`` the ids so far) and of the
        denoising loop (``tensors["latents"]``; returning ``{"latents": ...}`` replaces them).
        ``height_px``/``width_px`` and ``prompts`` are older names of ``height``/``width`` and
        ``prompt``, still accepted.
        """
        prompt = _renamed(prompt, prompts, "prompts", "prompt")
        height = _renamed(height, height_px, "height_px", "height")
        width = _renamed(width, width_px, "width_px", "width")
        if prompt is None:
            raise InputError("prompt: give a prompt or a list of prompts")
        check_output_type(output_type)
        if num_images_per_prompt < 1:
            raise InputError(f"num_images_per_prompt must be at least 1, got {num_images_per_prompt}")
        prompt_list = [p for p in as_list(prompt, "prompt") for _ in range(num_images_per_prompt)]
        negatives = None
        if negative_prompt is not None:
            negative_list = as_list(negative_prompt, "negative_prompt")
            if len(negative_list) == 1:
                negative_list = negative_list * (len(prompt_list) // num_images_per_prompt)
            if len(negative_list) * num_images_per_prompt != len(prompt_list):
                raise InputError(
                    f"negative_prompt: {len(negative_list)} given for "
                    f"{len(prompt_list) // num_images_per_prompt} prompts; give one, or one per prompt"
                )
            negatives = tuple(n for n in negative_list for _ in range(num_images_per_prompt))
        if generator is not None:
            if seeds is not None:
                raise InputError("give generator or seeds, not both")
            seeds = generator_seeds(generator, len(prompt_list))
        defaults = self.config.generation
        if grid is None:
            if height is None and width is None:
                grid = self.default_grid()
            else:
                size = self.default_grid()
                ppt = self.decoder.pixels_per_token
                grid = GridSize.from_pixels(
                    size.grid_h * ppt if height is None else height,
                    size.grid_w * ppt if width is None else width,
                    ppt,
                )
        sampling = sampling_from(
            sampling or defaults.sampling,
            generation_config,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
            cfg_scale=cfg_scale,
        )
        seed = self.config.runtime.seed if seed is None else seed
        steps = defaults.num_inference_steps if num_inference_steps is None else num_inference_steps
        guidance = defaults.guidance_scale if guidance_scale is None else guidance_scale
        noise = defaults.noise_scale if noise_scale is None else noise_scale
        # Before the backbone's work, not after it.
        check_seed_count(seeds, len(prompt_list))
        check_decode_settings(num_inference_steps=steps, guidance_scale=guidance, noise_scale=noise)
        progress = self._show_progress(show_progress)
        with cpu_threads(self.runtime.threads):
            tokens = self.backbone.generate_image_tokens(
                ImageGenerationRequest(
                    prompts=tuple(prompt_list),
                    grid=grid,
                    sampling=sampling,
                    seed=seed,
                    seeds=None if seeds is None else tuple(seeds),
                    show_progress=progress,
                    negative_prompts=negatives,
                    callback=self._bound(callback_on_step_end),
                )
            )
            images: Any = tokens
            if output_type != "tokens":
                latents: SemanticLatents = self.tokenizer.decode(tokens)
                images = latents
            if output_type not in ("tokens", "latent"):
                pil_images = self.decoder.decode(
                    DecodeRequest(
                        latents=latents,
                        prompts=tuple(prompt_list),
                        num_inference_steps=steps,
                        guidance_scale=guidance,
                        noise_scale=noise,
                        seeds=tuple(seeds) if seeds is not None else None,
                        seed=seed,
                        show_progress=progress,
                        negative_prompts=negatives,
                        callback=self._bound(callback_on_step_end),
                    )
                )
                images = images_as(pil_images, output_type)
        settings = {
            "prompts": prompt_list,
            "negative_prompts": list(negatives) if negatives is not None else None,
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
        scores = None
        if self.rewards and output_type not in ("tokens", "latent"):
            scores = score_all(self.rewards, RewardBatch(pil_images, prompt_list))
        return TextToImageResult(images=images, tokens=tokens, settings=settings, scores=scores)

    def _bound(self, callback: Callable[..., Any] | None) -> StepCallback | None:
        """The core loops' ``(step, timestep, tensors)`` callback of a diffusers-style one that
        takes the pipeline first."""
        if callback is None:
            return None

        def bound(step: int, timestep: Any, tensors: dict[str, Any]) -> Any:
            return callback(self, step, timestep, tensors)

        return bound


def _renamed(value: Any, old_value: Any, old: str, new: str) -> Any:
    if old_value is None:
        return value
    if value is not None:
        raise InputError(f"give {new} or its older name {old}, not both")
    return old_value


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
