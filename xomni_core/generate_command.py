"""``xomni generate`` (text to image, PNGs plus a JSON record) and ``xomni chat`` (answers)."""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ValidationError

from ._version import __version__
from .atomic import atomic_file
from .config import PipelineConfig, validation_message
from .errors import ConfigError
from .heap import long_lived_objects

_Model = TypeVar("_Model", bound=BaseModel)


#: Flags of ``xomni generate`` checked by config models, by the model field they set.
SAMPLING_FLAGS = {
    "temperature": "--temperature",
    "top_k": "--top-k",
    "top_p": "--top-p",
    "min_p": "--min-p",
    "cfg_scale": "--cfg-scale",
}
GENERATION_FLAGS = {
    "height_px": "--height",
    "width_px": "--width",
    "num_inference_steps": "--steps",
    "guidance_scale": "--guidance",
    "noise_scale": "--noise-scale",
}
RUNTIME_FLAGS = {"seed": "--seed"}


def run_generate(config: PipelineConfig, args: argparse.Namespace) -> int:
    """Generate one image per prompt into ``args.out``; every file is written atomically.

    Every numeric flag is checked by the config model field it overrides before anything loads,
    so a bad value exits 2 naming the flag.
    """
    sampling = _with_flags(config.generation.sampling, SAMPLING_FLAGS, args)
    _with_flags(config.generation, GENERATION_FLAGS, args)
    _with_flags(config.runtime, RUNTIME_FLAGS, args)
    with long_lived_objects():
        from .pipelines import TextToImagePipeline

        pipeline = TextToImagePipeline.from_config(config)
    result = pipeline(
        args.prompts,
        height=args.height,
        width=args.width,
        sampling=sampling,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        noise_scale=args.noise_scale,
        negative_prompt=args.negative_prompt,
        show_progress=not args.no_progress,
    )
    out = Path(args.out)
    files = []
    number = next_image_number(out)
    for image in result.images:
        path, number = write_new_image(out, image, number)
        files.append(path.name)
        print(path)
        number += 1
    record: dict[str, Any] = {
        "xomni_version": __version__,
        "settings": result.settings,
        "config": config.model_dump(mode="json"),
        "images": files,
        "tokens": result.tokens.rows(),
    }
    if result.scores is not None:
        record["rewards"] = {"per_reward": result.scores.per_reward, "total": result.scores.total}
        for index, total in enumerate(result.scores.total):
            print(f"image-{index:03d}: reward {total:.4f}")
    keep_earlier_record(out)
    text = json.dumps(record, indent=2, allow_nan=False) + "\n"  # strict JSON: no NaN or Infinity
    with atomic_file(out / RECORD) as tmp:
        tmp.write_text(text)
    return 0


#: Flags of ``xomni chat`` checked by the sampling model, by the field they set.
CHAT_SAMPLING_FLAGS = {key: flag for key, flag in SAMPLING_FLAGS.items() if key != "cfg_scale"}


def run_chat(args: argparse.Namespace) -> int:
    """Answer ``args.question`` and each ``args.then`` in one conversation about ``args.image``,
    printing each answer as it is generated."""
    from .config import load_config
    from .images import open_image
    from .models import default_pipeline_config
    from .types import GREEDY

    source = Path(args.config) if args.config else default_pipeline_config().parent
    sampling = _with_flags(GREEDY, CHAT_SAMPLING_FLAGS, args)
    if args.max_new_tokens is not None and args.max_new_tokens < 1:
        raise ConfigError(f"--max-new-tokens must be at least 1, got {args.max_new_tokens}")
    image = open_image(args.image, what="--image:")
    from .pipelines import ImageUnderstandingPipeline, TextStreamer
    from .pipelines.folder import folder_config

    config = folder_config(source, args.overrides) if source.is_dir() else load_config(source, args.overrides)
    _with_flags(config.runtime, RUNTIME_FLAGS, args)
    pipeline = ImageUnderstandingPipeline.from_config(config)
    pipeline.check_can_answer()
    history: list[tuple[str, str]] = []
    for number, question in enumerate([args.question, *args.then]):
        if number:
            print(f"> {question}")
        answer = pipeline(
            image,
            question,
            history=history,
            max_new_tokens=args.max_new_tokens,
            sampling=sampling,
            seed=args.seed,
            streamer=TextStreamer(pipeline.backbone),
            show_progress=not args.no_progress,
        )
        history.append((question, answer))
    return 0


# A folder may hold several runs. Images are never replaced: each run takes the next free
# ``image-NNN.png`` numbers. ``generation.json`` describes the latest run; the record it replaces
# is kept as ``generation-NNN.json``, NNN being the number of that run's first image.
RECORD = "generation.json"
_IMAGE = re.compile(r"^image-(\d{3,})\.png$")


def next_image_number(out: Path) -> int:
    """One past the highest ``image-NNN.png`` number in ``out`` (0 for a new folder)."""
    if not out.is_dir():
        return 0
    numbers = [int(m.group(1)) for p in out.iterdir() if (m := _IMAGE.match(p.name))]
    return max(numbers, default=-1) + 1


def write_new_image(out: Path, image: Any, number: int) -> tuple[Path, int]:
    """Write ``image`` as ``image-NNN.png`` at the first free number from ``number`` on; never
    replaces a file, even one another run writes at the same moment."""
    while True:
        path = out / f"image-{number:03d}.png"
        if not path.exists():
            try:
                with atomic_file(path, overwrite=False) as tmp:
                    image.save(tmp, format="PNG")
                return path, number
            except FileExistsError:
                pass
        number += 1


def keep_earlier_record(out: Path) -> Path | None:
    """Copy the ``generation.json`` of an earlier run to ``generation-NNN.json`` (never replacing a
    file) before the new record replaces it; returns the new name."""
    earlier = out / RECORD
    if not earlier.is_file():
        return None
    number = _first_image_number(earlier)
    while True:
        kept = out / f"generation-{number:03d}.json"
        try:
            with atomic_file(kept, overwrite=False) as tmp:
                tmp.write_bytes(earlier.read_bytes())
            return kept
        except FileExistsError:
            if kept.read_bytes() == earlier.read_bytes():
                return kept  # kept already by a run that stopped before writing its own record
            number += 1


def _first_image_number(record_path: Path) -> int:
    try:
        images = json.loads(record_path.read_text()).get("images") or []
        match = _IMAGE.match(str(images[0]))
    except (ValueError, AttributeError, IndexError, OSError, UnicodeDecodeError):
        match = None
    return int(match.group(1)) if match else 0


def _with_flags(model: _Model, flags: dict[str, str], args: argparse.Namespace) -> _Model:
    """``model`` with the values of ``flags`` (field -> flag) set, validated; errors name the flag."""
    given = {
        field: getattr(args, flag.removeprefix("--").replace("-", "_"), None) for field, flag in flags.items()
    }
    changes = {field: value for field, value in given.items() if value is not None}
    if not changes:
        return model
    try:
        return type(model).model_validate({**model.model_dump(), **changes})
    except ValidationError as exc:
        message = validation_message(exc, type(model), prefix="--")
        for field in changes:  # name the flag as typed: --top-k, not --top_k
            message = message.replace(f"--{field}:", f"{flags[field]}:")
        raise ConfigError(message) from exc
