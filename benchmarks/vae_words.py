"""Can the decoder's VAE learn to draw legible words? Fine-tune a pipeline's VAE on full-size
(128 px) scenes, words among them, and read the eval word scenes it draws back after every chunk.

The recipe's VAE trains on scenes pooled to 64 px, where a word's strokes are a pixel wide; at its
own size it draws words as bars. This continues from a trained VAE (default: the shipped one) at
full size: the whole VAE, or with ``--decoder-only`` its decoder alone, which keeps the latent
space and so the trained flow transformer (the token ceiling is then measured too). Usage:

    .venv/bin/python benchmarks/vae_words.py --chunks 4 --learning-rate 2e-3
    .venv/bin/python benchmarks/vae_words.py --chunks 3 --decoder-only --learning-rate 1e-3
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import torch
from text_ceiling import draw, to_pixels, word_scenes

from xomni_core.models import default_pipeline_config
from xomni_core.synthetic import render_scene, sample_scenes, score_images
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.training import VAESettings, train_vae
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, help="folder with tokenizer/ and decoder/ (default: shipped)")
    parser.add_argument("--mixed-images", type=int, default=2000, help="train-split scenes of every category")
    parser.add_argument("--word-images", type=int, default=2000, help="extra train-split word scenes")
    parser.add_argument("--chunks", type=int, default=3, help="chunks of --chunk-steps, measured after each")
    parser.add_argument("--chunk-steps", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--learning-rate", type=float, default=1e-3, help="peak of each chunk's schedule")
    parser.add_argument("--decoder-only", action="store_true", help="freeze the encoder (keeps the flow)")
    parser.add_argument("--n", type=int, default=30, help="eval-split word scenes measured")
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    torch.set_num_threads(2)
    folder = args.model or default_pipeline_config().parent
    decoder = FluxSemanticDecoder.from_pretrained(folder / "decoder")
    tokenizer = SigLIPVQTokenizer.from_pretrained(folder / "tokenizer")
    scenes = sample_scenes("train", args.mixed_images) + sample_scenes(
        "train", args.word_images, seed=7, categories=["text"]
    )
    pixels = to_pixels([render_scene(scene) for scene in scenes])
    if args.decoder_only:
        for part in (decoder.vae.encoder, decoder.vae.quant_conv):
            if part is not None:
                part.requires_grad_(False)
    test = word_scenes(args.n, seed=0, image_px=128)
    paths = ("vae", "tokens") if args.decoder_only else ("vae",)
    options: dict[str, Any] = {"seed": 0, "batch_size": 16, "steps": None, "noise_scale": None}
    rows: list[dict[str, float]] = []
    start = time.perf_counter()
    for chunk in range(args.chunks + 1):
        if chunk:
            settings = VAESettings(
                steps=args.chunk_steps,
                batch_size=args.batch_size,
                downscale=1,
                learning_rate=args.learning_rate,
                warmup_steps=5,
                seed=chunk - 1,
            )
            train_vae(decoder, pixels, settings, show_progress=False)
        row = {"steps": chunk * args.chunk_steps, "seconds": round(time.perf_counter() - start)}
        for path in paths:
            row[path] = score_images(draw(path, test, tokenizer, decoder, **options), test).overall
        rows.append(row)
        print(json.dumps(row), flush=True)
    if args.json:
        args.json.write_text(json.dumps({"args": vars(args), "rows": rows}, default=str) + "\n")


if __name__ == "__main__":
    main()
