"""The word check's OCR at several text-detection sizes: time per word image and words read.

The scene judge reads a word scene with the ``ocr-text`` reward (RapidOCR's PP-OCR models), which
scales an image's shorter side up to ``det_min_side_px`` before detecting text: 736 px by
default, 256 px in the judge. This script reads the first ``--n`` eval-split word scenes, clean
and under Gaussian blur, at each size, one thread, sizes interleaved within each image so load on
the machine falls on all of them alike, and counts a word read when the judge's check passes.
Usage:

    .venv/bin/python benchmarks/word_check_speed.py --n 40 --json benchmarks/word_check_speed.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from PIL import ImageFilter
from text_ceiling import word_scenes

from xomni_core.synthetic import SceneJudge, render_scene
from xomni_plugins.rewards.ocr_text import OcrTextParams
from xomni_plugins.rewards.ocr_text.model import OcrTextReward


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=40, help="eval-split word scenes")
    parser.add_argument("--sides", default="736,384,256", help="det_min_side_px values, comma-separated")
    parser.add_argument("--blurs", default="0,1.5,2,2.5", help="Gaussian blur radii in px, comma-separated")
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    sides = [int(side) for side in args.sides.split(",")]
    blurs = [float(blur) for blur in args.blurs.split(",")]
    readers = {
        side: OcrTextReward.from_params(
            OcrTextParams(num_threads=1, use_angle_classifier=False, det_min_side_px=side)
        )
        for side in sides
    }
    judges = {side: SceneJudge(text_reward=reader) for side, reader in readers.items()}
    scenes = word_scenes(args.n, seed=0, image_px=128)
    for judge in judges.values():  # warm-up: onnxruntime sessions set up on first use
        judge(render_scene(scenes[0]), scenes[0])
    results: dict[str, Any] = {
        "command": "python benchmarks/word_check_speed.py " + " ".join(sys.argv[1:]),
        "scenes": len(scenes),
        "rows": [],
    }
    print("| blur px | det side px | words read | ms per image (median) |")
    print("|---:|---:|---:|---:|")
    for blur in blurs:
        read = dict.fromkeys(sides, 0)
        times: dict[int, list[float]] = {side: [] for side in sides}
        for index, scene in enumerate(scenes):
            image = render_scene(scene)
            if blur:
                image = image.filter(ImageFilter.GaussianBlur(blur))
            order = sides if index % 2 == 0 else sides[::-1]
            for side in order:
                start = time.perf_counter()
                read[side] += judges[side](image, scene).correct
                times[side].append(time.perf_counter() - start)
        for side in sides:
            ms = 1000 * statistics.median(times[side])
            results["rows"].append({"blur_px": blur, "det_min_side_px": side, "read": read[side], "ms": ms})
            print(f"| {blur:g} | {side} | {read[side]} / {len(scenes)} | {ms:.0f} |")
    if args.json:
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)


if __name__ == "__main__":
    main()
