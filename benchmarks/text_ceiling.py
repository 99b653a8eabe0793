"""Where words stop being legible: eval-split word scenes read by the OCR check after each stage
of the tokenizer and decoder that draw them.

Paths, each judged by the compositional benchmark's word check (RapidOCR):

- ``render``: the clean render, what the backbone is asked to reproduce;
- ``pooled``: the render pooled to half size and scaled back up (what the VAE trains on);
- ``blurred``: the render under a Gaussian blur of 2 px radius (how much blur OCR tolerates);
- ``vae``: the render through the decoder's VAE alone (encode, decode), the decoder's best case;
- ``vae-pooled``: the pooled render through the VAE, scaled back up (the VAE at its training size);
- ``tokens``: the render encoded by the tokenizer and drawn back by the decoder from those true
  tokens, the ceiling a perfect backbone meets (as in ``token_ceiling.py``).

``--model`` names a folder holding ``tokenizer/`` and ``decoder/`` (a pipeline folder, or the
``OUT`` of ``xomni train nano``); ``--train OUT`` first runs the recipe's tokenizer and decoder
stages into ``OUT`` with the ``--set`` changes (resumable: finished stages are kept) and then
measures them. ``--all N`` adds the token ceiling of every category on the first ``N`` eval
scenes. Usage:

    .venv/bin/python benchmarks/text_ceiling.py --n 60 --json benchmarks/text_ceiling.json
    .venv/bin/python benchmarks/text_ceiling.py --train runs/words --set data.word_images=2000 --all 210
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image as PILImage
from PIL import ImageFilter
from PIL.Image import Image

from xomni_core import DecodeRequest
from xomni_core.config import apply_overrides
from xomni_core.models import default_pipeline_config
from xomni_core.synthetic import SceneSpec, render_scene, sample_scenes, score_images
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.training import packed_latents
from xomni_plugins.recipes.nano import NanoRecipe, train_nano_stages
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer

PATHS = ("render", "pooled", "blurred", "vae", "vae-pooled", "tokens")
DEFAULT_PATHS = ("render", "vae", "tokens")


def word_scenes(n: int, *, seed: int, image_px: int) -> list[SceneSpec]:
    """The first ``n`` word scenes of the eval split, in the order the benchmark meets them."""
    scenes: list[SceneSpec] = []
    total = 7 * n
    while len(scenes) < n:
        every = sample_scenes("eval", total, seed=seed, width_px=image_px, height_px=image_px)
        scenes = [scene for scene in every if scene.category == "text"]
        total *= 2
    return scenes[:n]


def to_pixels(images: Sequence[Image]) -> torch.Tensor:
    """RGB images as ``(N, 3, H, W)`` in ``[-1, 1]``."""
    array = np.stack([np.asarray(image.convert("RGB")) for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).float().div(127.5).sub(1.0)


def to_images(pixels: torch.Tensor) -> list[Image]:
    """``(N, 3, H, W)`` in ``[-1, 1]`` as RGB images."""
    array = pixels.clamp(-1, 1).add(1).mul(127.5).round().byte().permute(0, 2, 3, 1).numpy()
    return [PILImage.fromarray(image) for image in array]


def _degraded(image: Image, how: str) -> Image:
    side = image.width
    if how == "pooled":
        image = image.resize((side // 2, side // 2), PILImage.Resampling.BOX)
        return image.resize((side, side), PILImage.Resampling.BILINEAR)
    if how == "upscaled":
        return image.resize((2 * side, 2 * side), PILImage.Resampling.BILINEAR)
    if how == "blurred":
        return image.filter(ImageFilter.GaussianBlur(2.0))
    return image


def draw(
    path: str,
    scenes: Sequence[SceneSpec],
    tokenizer: SigLIPVQTokenizer,
    decoder: FluxSemanticDecoder,
    *,
    seed: int,
    batch_size: int,
    steps: int | None,
    noise_scale: float | None,
) -> list[Image]:
    """The images of ``scenes`` after ``path`` (one of :data:`PATHS`)."""
    drawn: list[Image] = []
    for start in range(0, len(scenes), batch_size):
        renders = [render_scene(scene) for scene in scenes[start : start + batch_size]]
        if path in ("render", "pooled", "blurred"):
            drawn += [_degraded(render, path) for render in renders]
            continue
        with torch.no_grad():
            if path == "vae-pooled":
                pooled = F.avg_pool2d(to_pixels(renders), 2)
                out = decoder.vae.decode(decoder.vae.encode(pooled).latent_dist.mean).sample
                drawn += [_degraded(image, "upscaled") for image in to_images(out)]
            elif path == "vae":
                side = (
                    renders[0].height // decoder.params.token_px,
                    renders[0].width // decoder.params.token_px,
                )
                drawn += decoder.latents_to_images(packed_latents(decoder, to_pixels(renders)), *side)
            else:
                latents = tokenizer.decode(tokenizer.encode_images(renders))
                drawn += decoder.decode(
                    DecodeRequest(
                        latents=latents,
                        seed=seed + start,
                        num_inference_steps=steps,
                        noise_scale=noise_scale,
                    )
                )
    return drawn


def contact_sheet(rows: Sequence[Sequence[Image]]) -> Image:
    """Images in a grid, one row per path."""
    side = rows[0][0].width
    sheet = PILImage.new("RGB", (side * max(len(r) for r in rows), side * len(rows)), "white")
    for y, row in enumerate(rows):
        for x, image in enumerate(row):
            sheet.paste(image.convert("RGB"), (x * side, y * side))
    return sheet


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="folder with tokenizer/ and decoder/ (default: shipped)")
    parser.add_argument("--train", type=Path, metavar="OUT", help="run the recipe's first two stages here")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--n", type=int, default=60, help="eval-split word scenes")
    parser.add_argument(
        "--paths", default=",".join(DEFAULT_PATHS), help=f"comma-separated, of {', '.join(PATHS)}"
    )
    parser.add_argument("--all", type=int, default=0, metavar="N", help="token ceiling of N eval scenes too")
    parser.add_argument("--seed", type=int, default=0, help="seed of the scenes and the decoder noise")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--steps", type=int, help="decoder steps (default: the decoder's)")
    parser.add_argument("--noise-scale", type=float, help="decoder initial-noise scale (default: its own)")
    parser.add_argument("--sheet", type=Path, help="save the first 12 scenes of every path as one PNG")
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    trained: dict[str, Any] = {}
    if args.train is not None:
        recipe = NanoRecipe.model_validate(apply_overrides({}, args.overrides))
        trained = train_nano_stages(args.train, recipe, until="decoder", resume=True)
        folder = args.train
    else:
        folder = args.model or default_pipeline_config().parent
    tokenizer = SigLIPVQTokenizer.from_pretrained(folder / "tokenizer")
    decoder = FluxSemanticDecoder.from_pretrained(folder / "decoder")
    image_px = 16 * tokenizer.params.patch_size_px
    options = {"seed": args.seed, "batch_size": args.batch_size, "steps": args.steps}
    options["noise_scale"] = args.noise_scale
    scenes = word_scenes(args.n, seed=args.seed, image_px=image_px)
    name = "shipped xomni-nano" if args.train is None and args.model is None else str(folder)
    results: dict[str, Any] = {"model": name, "word_scenes": len(scenes), "seed": args.seed}
    if trained:
        results["stages"] = trained
    rows = []
    print(f"{'path':8} {'legible %':>9} {'seconds':>8}")
    for path in args.paths.split(","):
        if path not in PATHS:
            parser.error(f"--paths: {path!r} is not one of {', '.join(PATHS)}")
        start = time.perf_counter()
        drawn = draw(path, scenes, tokenizer, decoder, **options)
        rows.append(drawn[:12])
        legible = score_images(drawn, scenes).overall
        results[path] = legible
        print(f"{path:8} {100 * legible:9.1f} {time.perf_counter() - start:8.0f}")
    if args.all:
        every = sample_scenes("eval", args.all, seed=args.seed, width_px=image_px, height_px=image_px)
        report = score_images(draw("tokens", every, tokenizer, decoder, **options), every)
        ceiling = {name: score.accuracy for name, score in report.categories().items()}
        ceiling["overall"] = report.overall
        results["ceiling"] = {"scenes": len(every), **ceiling}
        for name, accuracy in ceiling.items():
            print(f"ceiling {name:15} {100 * accuracy:5.1f}")
    if args.sheet:
        contact_sheet(rows).save(args.sheet)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
