"""``xomni generate``: run text to image and write PNGs plus a JSON record."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from ._version import __version__
from .atomic import atomic_file
from .config import PipelineConfig, validation_message
from .cpu import configure_cpu
from .errors import ConfigError
from .heap import long_lived_objects


def run_generate(config: PipelineConfig, args: argparse.Namespace) -> int:
    """Generate one image per prompt into ``args.out``; every file is written atomically."""
    sampling = config.generation.sampling
    changes = {
        key: value
        for key, value in {
            "temperature": args.temperature,
            "top_k": args.top_k,
            "top_p": args.top_p,
            "min_p": args.min_p,
            "cfg_scale": args.cfg_scale,
        }.items()
        if value is not None
    }
    if changes:
        try:
            sampling = type(sampling).model_validate({**sampling.model_dump(), **changes})
        except ValidationError as exc:
            message = validation_message(exc, type(sampling), prefix="--")
            for field in changes:  # name the flag as typed: --top-k, not --top_k
                message = message.replace(f"--{field}:", f"--{field.replace('_', '-')}:")
            raise ConfigError(message) from exc
    with long_lived_objects():
        configure_cpu(config.runtime)
        from .pipelines import TextToImagePipeline

        pipeline = TextToImagePipeline.from_config(config)
    result = pipeline(
        args.prompts,
        height_px=args.height,
        width_px=args.width,
        sampling=sampling,
        seed=args.seed,
        num_inference_steps=args.steps,
        guidance_scale=args.guidance,
        noise_scale=args.noise_scale,
        show_progress=not args.no_progress,
    )
    out = Path(args.out)
    files = []
    for index, image in enumerate(result.images):
        path = out / f"image-{index:03d}.png"
        with atomic_file(path) as tmp:
            image.save(tmp, format="PNG")
        files.append(path.name)
        print(path)
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
    with atomic_file(out / "generation.json") as tmp:
        tmp.write_text(json.dumps(record, indent=2) + "\n")
    return 0
