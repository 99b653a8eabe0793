"""The ceiling a backbone cannot pass: eval-split scenes encoded by the pipeline's tokenizer and
drawn back by its decoder, judged by the compositional benchmark.

A perfect backbone would emit exactly these tokens, so the accuracy here bounds what SFT, best-of-N
or GRPO can reach with this tokenizer and decoder. It is reported for scenes with a held-out
colour-shape pair or word apart from the rest; ``--coverage N`` also encodes ``N`` train scenes
and counts the eval scenes' tokens that never occur in them (could a backbone trained on the
train split have seen every token a held-out pair needs?). Usage:

    .venv/bin/python benchmarks/token_ceiling.py --n 210 --json benchmarks/token_ceiling.json
    .venv/bin/python benchmarks/token_ceiling.py --config runs/letters/sft/pipeline/pipeline.yaml \
        --noise-scale 0 --coverage 1000 --json benchmarks/token_ceiling_held_out.json
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from PIL.Image import Image

from xomni_core import DecodeRequest
from xomni_core.models import default_pipeline_config
from xomni_core.pipelines import TextToImagePipeline
from xomni_core.synthetic import SceneSpec, render_scene, sample_scenes, score_images


def decode_true_tokens(
    pipeline: TextToImagePipeline,
    scenes: Sequence[SceneSpec],
    *,
    seed: int,
    batch_size: int = 16,
    guidance_scale: float | None = None,
    steps: int | None = None,
    noise_scale: float | None = None,
) -> list[Image]:
    """Each scene's render encoded by the tokenizer and drawn back by the decoder, ``batch_size``
    at a time, the batch at ``start`` with decoder seed ``seed + start``."""
    drawn: list[Image] = []
    for start in range(0, len(scenes), batch_size):
        chunk = scenes[start : start + batch_size]
        grid = pipeline.tokenizer.encode_images([render_scene(scene) for scene in chunk])
        drawn += pipeline.decoder.decode(
            DecodeRequest(
                latents=pipeline.tokenizer.decode(grid),
                seed=seed + start,
                guidance_scale=guidance_scale,
                num_inference_steps=steps,
                noise_scale=noise_scale,
            )
        )
    return drawn


def token_coverage(
    pipeline: TextToImagePipeline, scenes: Sequence[SceneSpec], train: int, *, seed: int
) -> dict[str, Any]:
    """Of the object scenes' tokens, held-out and seen apart, how many never occur in the token
    grids of ``train`` train-split scenes."""
    height_px, width_px = pipeline.config.generation.height_px, pipeline.config.generation.width_px

    def tokens(chosen: Sequence[SceneSpec]) -> list[int]:
        ids: list[int] = []
        for start in range(0, len(chosen), 32):
            grid = pipeline.tokenizer.encode_images([render_scene(s) for s in chosen[start : start + 32]])
            ids += grid.ids.flatten().tolist()
        return ids

    seen = set(tokens(sample_scenes("train", train, seed=seed + 1, width_px=width_px, height_px=height_px)))
    objects = [s for s in scenes if s.category != "text"]
    coverage: dict[str, Any] = {"train_scenes": train, "distinct_train_tokens": len(seen)}
    for name, chosen in (
        ("held_out", [s for s in objects if s.held_out()]),
        ("seen", [s for s in objects if not s.held_out()]),
    ):
        ids = tokens(chosen)
        unseen = sum(1 for token in ids if token not in seen)
        coverage[name] = {"scenes": len(chosen), "tokens": len(ids), "never_in_train": unseen}
    return coverage


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, help="pipeline config (default: the shipped xomni-nano)")
    parser.add_argument("--n", type=int, default=210, help="eval-split scenes")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes and the decoder noise")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--guidance-scale", type=float, help="decoder CFG scale (default: the pipeline's)")
    parser.add_argument("--steps", type=int, help="decoder steps (default: the pipeline's)")
    parser.add_argument("--noise-scale", type=float, help="decoder initial-noise scale (default: its own)")
    parser.add_argument(
        "--coverage", type=int, default=0, metavar="N", help="token coverage by N train scenes"
    )
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    pipeline = TextToImagePipeline.from_config(args.config or default_pipeline_config())
    height_px, width_px = pipeline.config.generation.height_px, pipeline.config.generation.width_px
    scenes = sample_scenes("eval", args.n, seed=args.seed, width_px=width_px, height_px=height_px)
    drawn = decode_true_tokens(
        pipeline,
        scenes,
        seed=args.seed,
        batch_size=args.batch_size,
        guidance_scale=args.guidance_scale,
        steps=args.steps,
        noise_scale=args.noise_scale,
    )
    report = score_images(drawn, scenes)
    accuracies = {name: score.accuracy for name, score in report.categories().items()}
    accuracies["overall"] = report.overall
    print(f"{'category':15} {'accuracy %':>10}")
    for name, accuracy in accuracies.items():
        print(f"{name:15} {100 * accuracy:10.1f}")
    held_out_split = report.held_out_split()
    split = {name: score.accuracy for name, score in held_out_split.items()}
    for name, score in held_out_split.items():
        print(f"{name + ' (images)':15} {100 * score.accuracy:10.1f}  ({score.correct} of {score.total})")
    results: dict[str, Any] = {"config": str(args.config or "shipped xomni-nano"), "scenes": len(scenes)}
    results.update({"seed": args.seed, "noise_scale": args.noise_scale, **accuracies, "per_image": split})
    if args.coverage:
        results["coverage"] = token_coverage(pipeline, scenes, args.coverage, seed=args.seed)
        for name in ("held_out", "seen"):
            part = results["coverage"][name]
            unseen, total = part["never_in_train"], part["tokens"]
            print(f"{name} scenes' tokens never in {args.coverage} train scenes: {unseen} of {total}")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
