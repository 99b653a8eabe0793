"""Data that crosses component boundaries.

These objects are frozen and carry their units in their names. Tensors are ``torch.Tensor``;
torch is only named for type checking so importing this module stays cheap.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ConfigDict, Field, model_validator

from .checked import CheckedModel
from .errors import InputError

if TYPE_CHECKING:
    import torch
    from PIL.Image import Image

ComponentKind = Literal["tokenizer", "backbone", "decoder", "reward"]
COMPONENT_KINDS: tuple[ComponentKind, ...] = ("tokenizer", "backbone", "decoder", "reward")

#: ``text`` restricts logits to the text vocabulary, ``image`` to the image-token ids.
GenerationMode = Literal["text", "image"]

RewardDirection = Literal["maximize", "minimize"]

#: Called after each step of a generation loop as ``callback(step, timestep, tensors)``: the token
#: loop passes ``timestep=None`` and ``{"tokens": ...}``, a denoising loop its timestep and
#: ``{"latents": ...}``; a returned mapping may replace those tensors.
StepCallback = Callable[[int, Any, dict[str, Any]], "Mapping[str, Any] | None"]

#: Where a component runs: its PyTorch implementation or one of its exported artefacts.
Backend = Literal["torch", "onnxruntime", "tensorrt"]
BACKENDS: tuple[Backend, ...] = ("torch", "onnxruntime", "tensorrt")


@dataclass(frozen=True)
class GridSize:
    """A token grid of ``grid_h`` rows by ``grid_w`` columns."""

    grid_h: int
    grid_w: int

    def __post_init__(self) -> None:
        if self.grid_h < 1 or self.grid_w < 1:
            raise InputError(f"token grid must be at least 1 x 1, got {self.grid_h} x {self.grid_w}")

    @property
    def num_tokens(self) -> int:
        return self.grid_h * self.grid_w

    def pixel_size(self, pixels_per_token: int) -> tuple[int, int]:
        """Return ``(height_px, width_px)`` for a component with ``pixels_per_token`` px a side."""
        return self.grid_h * pixels_per_token, self.grid_w * pixels_per_token

    @classmethod
    def from_pixels(cls, height_px: int, width_px: int, pixels_per_token: int) -> GridSize:
        """Grid for an image size; both sides must be multiples of ``pixels_per_token``."""
        for name, value in (("height_px", height_px), ("width_px", width_px)):
            if value <= 0 or value % pixels_per_token:
                raise InputError(
                    f"{name}={value} is not a positive multiple of {pixels_per_token} "
                    f"(each image token covers {pixels_per_token} x {pixels_per_token} px); "
                    f"try {max(pixels_per_token, round(value / pixels_per_token) * pixels_per_token)}"
                )
        return cls(height_px // pixels_per_token, width_px // pixels_per_token)


@dataclass(frozen=True)
class TokenGrid:
    """Image-token indices, shape ``(batch, grid_h, grid_w)``, values in ``[0, codebook_size)``.

    Indices are codebook positions, not backbone vocabulary ids: a backbone maps them into its
    own id space.
    """

    ids: torch.Tensor

    def __post_init__(self) -> None:
        if self.ids.dim() != 3:
            raise InputError(
                f"TokenGrid.ids must have shape (batch, grid_h, grid_w), got {tuple(self.ids.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.ids.shape[0])

    @property
    def grid(self) -> GridSize:
        return GridSize(int(self.ids.shape[1]), int(self.ids.shape[2]))

    def rows(self) -> list[list[int]]:
        """Each sample's indices in row-major order."""
        flat: list[list[int]] = self.ids.reshape(self.batch_size, -1).tolist()
        return flat


@dataclass(frozen=True)
class SemanticLatents:
    """Semantic feature grid from a tokenizer's decode, shape ``(batch, channels, grid_h, grid_w)``."""

    values: torch.Tensor

    def __post_init__(self) -> None:
        if self.values.dim() != 4:
            raise InputError(
                "SemanticLatents.values must have shape (batch, channels, grid_h, grid_w), "
                f"got {tuple(self.values.shape)}"
            )

    @property
    def batch_size(self) -> int:
        return int(self.values.shape[0])

    @property
    def channels(self) -> int:
        return int(self.values.shape[1])

    @property
    def grid(self) -> GridSize:
        return GridSize(int(self.values.shape[2]), int(self.values.shape[3]))


@dataclass(frozen=True)
class PreprocessedImage:
    """An image ready for a tokenizer: normalised ``pixels`` of shape ``(3, height_px, width_px)``."""

    pixels: torch.Tensor
    grid: GridSize
    original_size_px: tuple[int, int]  # (height_px, width_px) before resizing


class SamplingParams(CheckedModel):
    """Sampling controls for autoregressive generation.

    ``temperature=0`` means greedy decoding. ``cfg_scale`` above 1 enables classifier-free
    guidance against the backbone's negative prompt.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    temperature: float = Field(1.0, ge=0.0)
    top_k: int | None = Field(None, ge=1)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    min_p: float = Field(0.0, ge=0.0, lt=1.0)
    cfg_scale: float = Field(1.0, ge=1.0)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0.0


GREEDY = SamplingParams(temperature=0.0)


class ImageGenerationRequest(CheckedModel):
    """Prompts to turn into exactly ``grid.num_tokens`` image tokens each.

    Sample ``i`` draws from its own random stream seeded with ``seed + i`` (or ``seeds[i]`` when
    given), so a prompt gives the same tokens alone as inside a batch.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True, allow_inf_nan=False)

    prompts: tuple[str, ...] = Field(min_length=1)
    grid: GridSize
    sampling: SamplingParams = SamplingParams(temperature=1.0, min_p=0.03)
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    show_progress: bool = False
    negative_prompts: tuple[str, ...] | None = None
    callback: StepCallback | None = None

    @model_validator(mode="after")
    def _one_seed_per_prompt(self) -> ImageGenerationRequest:
        if self.seeds is not None and len(self.seeds) != len(self.prompts):
            raise ValueError(f"{len(self.seeds)} seeds given for {len(self.prompts)} prompts")
        if self.negative_prompts is not None and len(self.negative_prompts) != len(self.prompts):
            counts = f"{len(self.negative_prompts)} negative prompts given for {len(self.prompts)} prompts"
            raise ValueError(counts)
        return self

    def sample_seeds(self) -> tuple[int, ...]:
        """The seed of each sample's random stream."""
        return per_sample_seeds(self.seed, self.seeds, len(self.prompts))


class TextGenerationRequest(CheckedModel):
    """Token-id prompts (text and image segments already laid out) to continue in text mode."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    input_ids: tuple[tuple[int, ...], ...] = Field(min_length=1)
    max_new_tokens: int = Field(256, ge=1)
    sampling: SamplingParams = GREEDY
    seed: int = 0
    show_progress: bool = False
    callback: StepCallback | None = None

    @model_validator(mode="after")
    def _non_empty_prompts(self) -> TextGenerationRequest:
        if any(len(ids) == 0 for ids in self.input_ids):
            raise ValueError("every prompt needs at least one token")
        return self


@dataclass(frozen=True)
class DecodeRequest:
    """Semantic latents (and optional prompts) for a decoder to render.

    ``None`` settings fall back to the decoder's own defaults. ``noise_scale`` scales the initial
    noise of a diffusion decoder (1 samples the model's distribution, 0 decodes deterministically).
    Image ``i`` starts from the noise of seed ``seed + i`` (or ``seeds[i]`` when given), so it
    decodes the same alone as in a batch; with ``shared_noise`` every image starts from the first
    image's noise, so images differ by their latents alone.
    """

    latents: SemanticLatents
    prompts: tuple[str, ...] | None = None
    num_inference_steps: int | None = None
    guidance_scale: float | None = None
    noise_scale: float | None = None
    seed: int = 0
    seeds: tuple[int, ...] | None = None
    shared_noise: bool = False
    show_progress: bool = False
    negative_prompts: tuple[str, ...] | None = None
    callback: StepCallback | None = None

    def __post_init__(self) -> None:
        for name, prompts in (("prompts", self.prompts), ("negative prompts", self.negative_prompts)):
            if prompts is not None and len(prompts) != self.latents.batch_size:
                raise InputError(
                    f"DecodeRequest has {len(prompts)} {name} for {self.latents.batch_size} latent grids"
                )
        check_seed_count(self.seeds, self.latents.batch_size)
        check_decode_settings(
            num_inference_steps=self.num_inference_steps,
            guidance_scale=self.guidance_scale,
            noise_scale=self.noise_scale,
        )

    def sample_seeds(self) -> tuple[int, ...]:
        """The seed of each image's initial noise."""
        return per_sample_seeds(self.seed, self.seeds, self.latents.batch_size)


def per_sample_seeds(seed: int, seeds: Sequence[int] | None, count: int) -> tuple[int, ...]:
    """``seeds`` when given, else ``seed, seed + 1, ...``: one seed per sample of a batch."""
    return tuple(seeds) if seeds is not None else tuple(seed + i for i in range(count))


def check_seed_count(seeds: Sequence[int] | None, count: int) -> None:
    if seeds is not None and len(seeds) != count:
        raise InputError(f"seeds: {len(seeds)} seeds given for {count} samples; give one per sample")


def check_decode_settings(
    *, num_inference_steps: int | None, guidance_scale: float | None, noise_scale: float | None
) -> None:
    """Refuse decoder settings out of range (fewer than 1 step, a negative, infinite or NaN scale)
    with an :class:`InputError` that names the setting; ``None`` means the decoder's default."""
    if num_inference_steps is not None and num_inference_steps < 1:
        raise InputError(f"decoder num_inference_steps must be at least 1, got {num_inference_steps}")
    for name, scale in (("guidance_scale", guidance_scale), ("noise_scale", noise_scale)):
        if scale is not None and not scale >= 0.0:
            raise InputError(f"decoder {name} must be at least 0, got {scale}")
        if scale is not None and math.isinf(scale):
            raise InputError(f"decoder {name} must be finite, got {scale}")


@dataclass(frozen=True)
class RewardBatch:
    """Images with the prompts that asked for them and free-form per-sample metadata."""

    images: Sequence[Image]
    prompts: Sequence[str]
    metadata: Sequence[Mapping[str, Any]] = ()

    def __post_init__(self) -> None:
        if len(self.images) != len(self.prompts):
            raise InputError(f"RewardBatch has {len(self.images)} images for {len(self.prompts)} prompts")
        if self.metadata and len(self.metadata) != len(self.images):
            raise InputError(
                f"RewardBatch has {len(self.metadata)} metadata entries for {len(self.images)} images"
            )

    def metadata_for(self, index: int) -> Mapping[str, Any]:
        return self.metadata[index] if self.metadata else {}


#: A region of an image: (left, top, right, bottom) as fractions of its width and height.
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class ScorePart:
    """A share of one sample's score and the regions of the image that earned it (none: the
    whole image), so that training can credit the image tokens that drew those regions."""

    value: float
    boxes: tuple[Box, ...] = ()


@dataclass(frozen=True)
class RewardResult:
    """One score per sample, with the reward's name and whether higher is better.

    ``parts``, where a reward can say where its score was earned, lists per sample the parts its
    score adds up from; ``None`` makes each score one whole-image part.
    """

    name: str
    scores: tuple[float, ...]
    direction: RewardDirection = "maximize"
    details: Mapping[str, tuple[float, ...]] = field(default_factory=dict)
    parts: tuple[tuple[ScorePart, ...], ...] | None = None
