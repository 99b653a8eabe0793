"""Text to image as a service: requests in, images out, batched by what can share a batch.

Independent of Triton: :class:`TextToImageService` takes each request's named arrays (the way a
Triton Python-backend model receives them) and returns named arrays or an error per request. Rows
whose size, sampling and decoder settings agree run as one batch through the pipeline; every row
keeps its own seed, so a row's image is the same alone, in any batch and offline.
"""

from __future__ import annotations

import io
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from pydantic import ValidationError

from xomni_core import InputError
from xomni_core.config import GenerationSettings, validation_message
from xomni_core.types import GridSize, SamplingParams

if TYPE_CHECKING:
    from xomni_core.pipelines import TextToImagePipeline


@dataclass(frozen=True)
class ServedTensor:
    """One input or output of a served model: its name, Triton data type and dims (batch left out)."""

    name: str
    data_type: str
    dims: tuple[int, ...] = (1,)
    optional: bool = True
    description: str = ""


#: Inputs of ``xomni_text_to_image``; every one but ``prompt`` falls back to the pipeline's default.
TEXT_TO_IMAGE_INPUTS = (
    ServedTensor("prompt", "TYPE_STRING", optional=False, description="UTF-8 text"),
    ServedTensor("height", "TYPE_INT32", description="image height in px"),
    ServedTensor("width", "TYPE_INT32", description="image width in px"),
    ServedTensor("seed", "TYPE_INT64", description="seed of this image's tokens and noise"),
    ServedTensor("temperature", "TYPE_FP32"),
    ServedTensor("top_k", "TYPE_INT32", description="0 turns top-k off"),
    ServedTensor("top_p", "TYPE_FP32"),
    ServedTensor("min_p", "TYPE_FP32"),
    ServedTensor("cfg_scale", "TYPE_FP32", description="classifier-free guidance of the tokens"),
    ServedTensor("num_inference_steps", "TYPE_INT32", description="decoder steps"),
    ServedTensor("guidance_scale", "TYPE_FP32", description="decoder guidance"),
    ServedTensor("noise_scale", "TYPE_FP32", description="decoder initial-noise scale"),
)
TEXT_TO_IMAGE_OUTPUTS = (
    ServedTensor("image", "TYPE_UINT8", (-1, -1, 3), description="RGB pixels, height x width x 3"),
    ServedTensor("png", "TYPE_STRING", description="the image as PNG bytes"),
    ServedTensor("tokens", "TYPE_INT64", (-1,), description="image tokens, row-major"),
    ServedTensor("settings", "TYPE_STRING", description="JSON: every setting used"),
)
SAMPLING_INPUTS = tuple(SamplingParams.model_fields)
#: Inputs that set a field of the pipeline's generation settings, by the field they set.
GENERATION_FIELDS = {
    "height": "height_px",
    "width": "width_px",
    "num_inference_steps": "num_inference_steps",
    "guidance_scale": "guidance_scale",
    "noise_scale": "noise_scale",
}
#: Longest prompt accepted, in UTF-8 bytes; the context usually ends it sooner.
MAX_PROMPT_BYTES = 4096


@dataclass(frozen=True)
class ImageJob:
    """One image to make, every setting resolved."""

    prompt: str
    seed: int
    grid: GridSize
    sampling: SamplingParams
    num_inference_steps: int | None
    guidance_scale: float | None
    noise_scale: float | None

    @property
    def batch_key(self) -> tuple[Any, ...]:
        """Jobs with equal keys can share one batch."""
        return (self.grid, self.sampling, self.num_inference_steps, self.guidance_scale, self.noise_scale)


@dataclass(frozen=True)
class ImageRender:
    """What a job made."""

    job: ImageJob
    pixels: np.ndarray  # uint8, height x width x 3
    tokens: np.ndarray  # int64, grid_h * grid_w
    pixels_per_token: int

    def settings(self) -> dict[str, Any]:
        height, width = self.job.grid.pixel_size(self.pixels_per_token)
        return {
            "prompt": self.job.prompt,
            "seed": self.job.seed,
            "height_px": height,
            "width_px": width,
            "sampling": self.job.sampling.model_dump(),
            "num_inference_steps": self.job.num_inference_steps,
            "guidance_scale": self.job.guidance_scale,
            "noise_scale": self.job.noise_scale,
        }

    def png(self) -> bytes:
        from PIL import Image

        buffer = io.BytesIO()
        Image.fromarray(self.pixels).save(buffer, format="PNG")
        return buffer.getvalue()


class TextToImageService:
    """Parses requests into jobs, runs them in batches on ``pipeline`` and builds the outputs."""

    def __init__(self, pipeline: TextToImagePipeline, *, max_prompt_bytes: int = MAX_PROMPT_BYTES) -> None:
        self.pipeline = pipeline
        self.max_prompt_bytes = max_prompt_bytes
        self.pixels_per_token = pipeline.decoder.pixels_per_token

    def jobs(self, inputs: Mapping[str, np.ndarray]) -> list[ImageJob]:
        """One job per row of a request's inputs (batch axis first); :class:`InputError` names
        the input at fault."""
        unknown = sorted(set(inputs) - {spec.name for spec in TEXT_TO_IMAGE_INPUTS})
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; inputs are {_input_names()}")
        if "prompt" not in inputs:
            raise InputError("input 'prompt' is required")
        prompts = column(inputs, "prompt")
        rows = len(prompts)
        if rows == 0:
            raise InputError("input 'prompt' holds no rows")
        columns = {name: column(inputs, name) for name in inputs}
        for name, values in columns.items():
            if len(values) != rows:
                raise InputError(f"input {name!r} has {len(values)} rows, 'prompt' has {rows}")
        jobs = [
            self._job({name: values[row] for name, values in columns.items()}, row) for row in range(rows)
        ]
        if len({job.grid for job in jobs}) > 1:
            raise InputError("the rows of one request must share height and width; send one request per size")
        return jobs

    def _job(self, row: Mapping[str, Any], index: int) -> ImageJob:
        config = self.pipeline.config
        defaults = config.generation
        prompt = text_input(row["prompt"], "prompt", self.max_prompt_bytes)
        changes = {
            field: _scalar(row[name], name) for name, field in GENERATION_FIELDS.items() if name in row
        }
        settings = _validated(GenerationSettings, defaults, changes)
        sampling_changes = {name: _scalar(row[name], name) for name in SAMPLING_INPUTS if name in row}
        if sampling_changes.get("top_k") == 0:
            sampling_changes["top_k"] = None
        sampling = _validated(SamplingParams, defaults.sampling, sampling_changes)
        try:
            grid = GridSize.from_pixels(settings.height_px, settings.width_px, self.pixels_per_token)
        except InputError as exc:  # name the inputs, not the config fields
            message = str(exc).replace("height_px=", "height=").replace("width_px=", "width=")
            raise InputError(message) from exc
        seed = int(_scalar(row["seed"], "seed")) if "seed" in row else config.runtime.seed + index
        if not 0 <= seed < 2**63:
            raise InputError(f"input 'seed' must be from 0 to 2**63 - 1, got {seed}")
        job = ImageJob(
            prompt=prompt,
            seed=seed,
            grid=grid,
            sampling=sampling,
            num_inference_steps=settings.num_inference_steps,
            guidance_scale=settings.guidance_scale,
            noise_scale=settings.noise_scale,
        )
        self._check_context(job)
        return job

    def _check_context(self, job: ImageJob) -> None:
        from xomni_core.generation import image_prompt_ids

        backbone = self.pipeline.backbone
        limit = backbone.vocab.max_positions
        image_tokens = job.grid.num_tokens
        if image_tokens >= limit:
            raise InputError(
                f"height x width of {job.grid.grid_h * self.pixels_per_token} x "
                f"{job.grid.grid_w * self.pixels_per_token} px needs {image_tokens} image tokens; the "
                f"backbone's context holds {limit} positions with the prompt: ask for a smaller image"
            )
        prompt_tokens = len(image_prompt_ids(backbone, job.prompt, job.grid))
        if prompt_tokens + image_tokens > limit:
            raise InputError(
                f"prompt of {prompt_tokens} tokens plus {image_tokens} image tokens exceeds the backbone's "
                f"context of {limit} positions; shorten the prompt or ask for a smaller image"
            )

    def render(self, jobs: Sequence[ImageJob]) -> list[ImageRender | InputError]:
        """Make every job, batching those that can share a batch; a job's result or its error,
        in order. A batch refused as a whole is retried one job at a time, so one bad job fails
        alone."""
        results: list[ImageRender | InputError | None] = [None] * len(jobs)
        groups: dict[tuple[Any, ...], list[int]] = {}
        for index, job in enumerate(jobs):
            groups.setdefault(job.batch_key, []).append(index)
        for indices in groups.values():
            try:
                renders: Sequence[ImageRender | InputError] = self._batch([jobs[i] for i in indices])
            except InputError as exc:
                renders = [exc] if len(indices) == 1 else [self._alone(jobs[i]) for i in indices]
            for index, render in zip(indices, renders, strict=True):
                results[index] = render
        return [result for result in results if result is not None]

    def _alone(self, job: ImageJob) -> ImageRender | InputError:
        try:
            return self._batch([job])[0]
        except InputError as exc:
            return exc

    def _batch(self, jobs: Sequence[ImageJob]) -> list[ImageRender]:
        first = jobs[0]
        result = self.pipeline(
            [job.prompt for job in jobs],
            grid=first.grid,
            sampling=first.sampling,
            seeds=[job.seed for job in jobs],
            num_inference_steps=first.num_inference_steps,
            guidance_scale=first.guidance_scale,
            noise_scale=first.noise_scale,
            show_progress=False,
        )
        tokens = result.tokens.ids.reshape(len(jobs), -1).numpy().astype(np.int64)
        return [
            ImageRender(job, np.asarray(image.convert("RGB"), dtype=np.uint8), row, self.pixels_per_token)
            for job, image, row in zip(jobs, result.images, tokens, strict=True)
        ]


def outputs(renders: Sequence[ImageRender], wanted: Sequence[str] | None = None) -> dict[str, np.ndarray]:
    """The output arrays of one request's renders (batch axis first); only ``wanted`` ones when
    given, so that nobody pays for PNG encoding they did not ask for."""
    names = [spec.name for spec in TEXT_TO_IMAGE_OUTPUTS]
    chosen = [name for name in names if not wanted or name in wanted]
    arrays: dict[str, np.ndarray] = {}
    if "image" in chosen:
        arrays["image"] = np.stack([render.pixels for render in renders])
    if "png" in chosen:
        arrays["png"] = bytes_column([render.png() for render in renders])
    if "tokens" in chosen:
        arrays["tokens"] = np.stack([render.tokens for render in renders])
    if "settings" in chosen:
        arrays["settings"] = bytes_column([json.dumps(render.settings()).encode() for render in renders])
    return arrays


def bytes_column(values: Sequence[bytes]) -> np.ndarray:
    column = np.empty((len(values), 1), dtype=np.object_)
    for index, value in enumerate(values):
        column[index, 0] = value
    return column


def _input_names() -> str:
    return ", ".join(spec.name for spec in TEXT_TO_IMAGE_INPUTS)


def column(inputs: Mapping[str, np.ndarray], name: str) -> list[Any]:
    """The rows of an input: one value per row (arrays of shape ``(rows,)`` or ``(rows, 1)``)."""
    array = np.asarray(inputs[name])
    if array.ndim == 0 or (array.ndim == 2 and array.shape[1] != 1) or array.ndim > 2:
        raise InputError(f"input {name!r} has shape {list(array.shape)}; expected [rows, 1]")
    return list(array.reshape(-1))


def text_input(value: Any, name: str, max_bytes: int = MAX_PROMPT_BYTES) -> str:
    """A text input's row as ``str``: UTF-8, not empty, no NUL, at most ``max_bytes`` long."""
    raw = value if isinstance(value, bytes) else str(value).encode()
    if len(raw) > max_bytes:
        raise InputError(f"input {name!r} is {len(raw)} bytes long; at most {max_bytes} are accepted")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(f"input {name!r} is not UTF-8 text ({exc.reason} at byte {exc.start})") from exc
    if not text.strip():
        raise InputError(f"input {name!r} is empty")
    if "\x00" in text:
        raise InputError(f"input {name!r} holds a NUL character")
    return text


def _scalar(value: Any, name: str) -> int | float:
    number = value.item() if isinstance(value, np.generic) else value
    if isinstance(number, bool) or not isinstance(number, (int, float)):
        raise InputError(f"input {name!r} must be a number, got {type(number).__name__}")
    return number


def _validated(model: type[Any], current: Any, changes: Mapping[str, Any]) -> Any:
    if not changes:
        return current
    try:
        return model.model_validate({**current.model_dump(), **changes})
    except ValidationError as exc:
        message = validation_message(exc, model, prefix="input ")
        for name, field in GENERATION_FIELDS.items():
            message = message.replace(f"input {field}", f"input {name}")
        raise InputError(message) from exc
