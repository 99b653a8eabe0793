"""The scene judge audited on images whose truth is known, for the current detector and an earlier one.

Three sets of images, each judged by both detectors (the earlier one is read from git at
``--before``, default the commit before the fourth-moment shape test):

- **decoded**: eval-split scenes and one-way corruptions of them (``corrupt_scene``: another
  colour, another shape, a count off by one, swapped places, swapped colours, another or no word),
  each rendered, encoded by the shipped tokenizer and drawn back by the shipped decoder (true
  tokens, the decoder's noise). The uncorrupted scenes' images are the ones
  ``benchmarks/token_ceiling.py`` judges with the same ``--n`` and ``--seed``.
- **degraded**: the same scenes rendered cleanly, then blurred and with colour bled across edges
  (chroma blurred more than luminance), at increasing strength.
- **generated**: the shipped model's samples of ``xomni bench compose --n ... --seed ...
  --batch-size 16``, drawn once and judged twice.

The truth of each check of a scene's caption on a corrupted scene's image is its verdict on that
corrupted scene's clean render, where both detectors agree (both pass 97 % or more of clean
renders); a check they disagree on there is left out. Per check kind a claim that holds is a
positive: recall is the share of true claims passed, precision the share of passed claims that
hold. Per corruption kind, an image is accepted when every check passes: recall on the
uncorrupted scenes' images, and how often the corrupted ones are still accepted. Usage:

    .venv/bin/python benchmarks/judge_audit.py --n 210 --json benchmarks/judge_audit.json
"""

from __future__ import annotations

import argparse
import io
import json
import subprocess
import sys
import time
import types
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from PIL import Image, ImageFilter
from token_ceiling import decode_true_tokens

from xomni_core.models import default_pipeline_config
from xomni_core.pipelines import TextToImagePipeline
from xomni_core.synthetic import (
    CORRUPTIONS,
    SceneJudge,
    SceneSpec,
    corrupt_scene,
    render_scene,
    sample_scenes,
)
from xomni_core.synthetic.bench import generate_images, score_images

ROOT = Path(__file__).resolve().parents[1]
BEFORE = "ed4df74"  # the detector that read shapes from the share of the bounding box filled
STRENGTHS = (0, 1, 2, 3, 4)  # blur px = 0.5 x strength, chroma blur px = 1.5 x strength


def load_judge_at(rev: str) -> SceneJudge:
    """The ``SceneJudge`` of ``xomni_core/synthetic/detect.py`` (with its params) at git ``rev``."""
    modules: dict[str, types.ModuleType] = {}
    for name, path in (("params", "params.py"), ("detect", "detect.py")):
        source = subprocess.run(
            ["git", "-C", str(ROOT), "show", f"{rev}:xomni_core/synthetic/{path}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        source = source.replace("from .params import", "from ._audit_params_before import")
        full = f"xomni_core.synthetic._audit_{name}_before"
        module = types.ModuleType(full)
        module.__package__ = "xomni_core.synthetic"
        sys.modules[full] = module
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        modules[name] = module
    judge = modules["detect"].SceneJudge()
    assert hasattr(judge, "judge")
    return judge  # type: ignore[no-any-return]


def check_kind(name: str) -> str:
    """The kind of claim a check makes, from its name."""
    if name.startswith("word "):
        return "word"
    if name.endswith(" background"):
        return "background"
    if name.endswith(" size"):
        return "size"
    if name.startswith("in region"):
        return "region"
    if name in ("left of", "right of", "above", "below"):
        return "relation"
    if name == "nothing else":
        return "nothing else (no unnamed object)"
    return "object (colour, shape)" if name.startswith("1 ") else "count (colour, shape, number)"


def bleed(image: Image.Image, strength: int) -> Image.Image:
    """Blur of 0.5 x ``strength`` px, chroma blurred 1.5 x ``strength`` px: colour runs over edges."""
    if strength == 0:
        return image
    y, cb, cr = image.filter(ImageFilter.GaussianBlur(0.5 * strength)).convert("YCbCr").split()
    chroma = ImageFilter.GaussianBlur(1.5 * strength)
    return Image.merge("YCbCr", (y, cb.filter(chroma), cr.filter(chroma))).convert("RGB")


def decode_true(pipeline: TextToImagePipeline, scenes: Sequence[SceneSpec], seed: int) -> list[Image.Image]:
    """Each scene's true tokens decoded, 16 at a time, as ``token_ceiling.py`` does."""
    return decode_true_tokens(pipeline, scenes, seed=seed)


class Tally:
    """Check-level and image-level counts for one detector on one set of images."""

    def __init__(self) -> None:
        self.checks: dict[str, Counter[str]] = defaultdict(Counter)
        self.images: dict[str, Counter[str]] = defaultdict(Counter)
        self.categories: dict[str, Counter[str]] = defaultdict(Counter)
        self.seconds = 0.0
        self.judged = 0

    def add(
        self,
        judge: SceneJudge,
        image: Image.Image,
        scene: SceneSpec,
        truth: dict[str, bool] | None,
        kind: str,
    ) -> bool:
        """Judge ``image`` against ``scene``; ``truth`` maps check names to whether they hold (all
        hold when ``None``); ``kind`` names the corruption drawn. Returns the verdict."""
        start = time.perf_counter()
        verdict = judge.judge(image, scene)
        self.seconds += time.perf_counter() - start
        self.judged += 1
        for check in verdict.checks:
            holds = True if truth is None else truth.get(check.name)
            if holds is None:
                continue
            outcome = ("tp" if check.passed else "fn") if holds else ("fp" if check.passed else "tn")
            self.checks[check_kind(check.name)][outcome] += 1
        self.images[kind]["accepted" if verdict.correct else "rejected"] += 1
        if kind == "none":
            self.categories[scene.category]["accepted" if verdict.correct else "rejected"] += 1
        return verdict.correct

    def summary(self) -> dict[str, Any]:
        checks = {}
        for kind, c in sorted(self.checks.items()):
            passed = c["tp"] + c["fp"]
            checks[kind] = {
                "true_claims": c["tp"] + c["fn"],
                "false_claims": c["fp"] + c["tn"],
                "recall": c["tp"] / max(c["tp"] + c["fn"], 1),
                "precision": c["tp"] / passed if passed else None,
                "false_claims_passed": c["fp"] / max(c["fp"] + c["tn"], 1),
            }
        images = {
            kind: {"images": c.total(), "accepted": c["accepted"] / c.total()}
            for kind, c in self.images.items()
        }
        categories = {name: c["accepted"] / c.total() for name, c in self.categories.items()}
        return {
            "checks": checks,
            "images": images,
            "uncorrupted_accepted_by_category": categories,
            "ms_per_image": 1000 * self.seconds / max(self.judged, 1),
        }


def truth_of(judges: dict[str, SceneJudge], corrupted: SceneSpec, scene: SceneSpec) -> dict[str, bool]:
    """Check name -> whether it holds for ``corrupted``'s picture judged against ``scene``, where
    every judge that makes the check agrees on the clean render."""
    image = render_scene(corrupted)
    verdicts = [{c.name: c.passed for c in j.judge(image, scene).checks} for j in judges.values()]
    truth: dict[str, bool] = {}
    for name in {name for verdict in verdicts for name in verdict}:
        said = {verdict[name] for verdict in verdicts if name in verdict}
        if len(said) == 1:
            truth[name] = said.pop()
    return truth


def audit(
    judges: dict[str, SceneJudge],
    cases: Sequence[tuple[str, SceneSpec, SceneSpec, dict[str, bool] | None]],
    images: Sequence[Image.Image],
    on_verdict: Callable[[str, int, str, bool], None] | None = None,
) -> dict[str, Any]:
    """Each judge's tally over ``cases`` (kind, scene judged, scene drawn, truth) and their images."""
    tallies = {name: Tally() for name in judges}
    for index, ((kind, scene, _, truth), image) in enumerate(zip(cases, images, strict=True)):
        for name, judge in judges.items():
            correct = tallies[name].add(judge, image, scene, truth, kind)
            if on_verdict is not None:
                on_verdict(name, index, kind, correct)
    return {name: tally.summary() for name, tally in tallies.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=210, help="eval-split scenes")
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the scenes, the decoder noise, the samples"
    )
    parser.add_argument("--before", default=BEFORE, help="git revision of the earlier detector")
    parser.add_argument("--generated", type=int, default=210, help="shipped-model samples to judge (0: none)")
    parser.add_argument("--failures", type=Path, help="save decoded true images the current judge fails here")
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    judges = {"before": load_judge_at(args.before), "after": SceneJudge()}
    ocr = judges["after"].text_reward
    judges["before"]._text_reward = ocr  # one OCR engine: words are read the same by both
    pipeline = TextToImagePipeline.from_config(default_pipeline_config())
    height_px, width_px = pipeline.config.generation.height_px, pipeline.config.generation.width_px
    scenes = sample_scenes("eval", args.n, seed=args.seed, width_px=width_px, height_px=height_px)
    cases: list[tuple[str, SceneSpec, SceneSpec, dict[str, bool] | None]] = [
        ("none", s, s, None) for s in scenes
    ]
    for kind in CORRUPTIONS:
        for i, scene in enumerate(scenes):
            bad = corrupt_scene(scene, kind, seed=i)
            if bad is not None:
                cases.append((kind, scene, bad, truth_of(judges, bad, scene)))
    started = time.perf_counter()
    decoded: list[Image.Image] = decode_true(pipeline, scenes, args.seed)
    for kind in CORRUPTIONS:
        drawn = [bad for k, _, bad, _ in cases if k == kind]
        decoded += decode_true(pipeline, drawn, args.seed + 1000 * (1 + CORRUPTIONS.index(kind)))
    print(f"decoded {len(decoded)} images in {time.perf_counter() - started:.0f} s", flush=True)

    failed: list[int] = []

    def keep_failure(name: str, index: int, kind: str, correct: bool) -> None:
        if name == "after" and kind == "none" and not correct:
            failed.append(index)

    results: dict[str, Any] = {
        "command": "python benchmarks/judge_audit.py " + " ".join(sys.argv[1:]),
        "scenes": len(scenes),
        "seed": args.seed,
        "before": args.before,
        "cases": dict(Counter(kind for kind, *_ in cases)),
        "decoded": audit(judges, cases, decoded, keep_failure),
    }
    if args.failures:
        args.failures.mkdir(parents=True, exist_ok=True)
        for index in failed:
            scene = cases[index][1]
            verdict = judges["after"].judge(decoded[index], scene)
            decoded[index].save(args.failures / f"{index:03d}.png")
            (args.failures / f"{index:03d}.txt").write_text(
                scene.caption + "\n" + "\n".join(verdict.failures())
            )
    results["degraded"] = {}
    for strength in STRENGTHS:
        images = [bleed(render_scene(drawn), strength) for _, _, drawn, _ in cases]
        results["degraded"][str(strength)] = audit(judges, cases, images)
        print(f"degraded at strength {strength}", flush=True)
    if args.generated:
        gen_scenes = sample_scenes(
            "eval", args.generated, seed=args.seed, width_px=width_px, height_px=height_px
        )
        samples = list(generate_images(default_pipeline_config(), gen_scenes, seed=args.seed, batch_size=16))
        results["generated"] = {}
        for name, judge in judges.items():
            report = score_images(samples, gen_scenes, judge=judge)
            results["generated"][name] = {
                "overall": report.overall,
                "sample_accuracy": report.sample_accuracy,
                "categories": {c: s.accuracy for c, s in report.categories().items()},
                "correct": [s.correct for s in report.samples],
            }
    print_tables(results)
    if args.json:
        tmp = args.json.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(results, indent=2) + "\n")
        tmp.replace(args.json)


def print_tables(results: dict[str, Any]) -> None:
    """The audit's tables, before / after in each cell."""
    out = io.StringIO()
    decoded = results["decoded"]
    out.write(
        "decoded true tokens: check kind | true claims | recall before/after | false claims | "
        "precision before/after | false claims passed before/after\n"
    )
    for kind in decoded["after"]["checks"]:
        a = decoded["after"]["checks"][kind]
        b = decoded["before"]["checks"].get(kind, dict.fromkeys(a))

        def pct(value: float | None) -> str:
            return "-" if value is None else f"{100 * value:.1f}"

        out.write(
            f"| {kind} | {a['true_claims']} | {pct(b['recall'])} / {pct(a['recall'])} | "
            f"{a['false_claims']} | {pct(b['precision'])} / {pct(a['precision'])} | "
            f"{pct(b['false_claims_passed'])} / {pct(a['false_claims_passed'])} |\n"
        )
    out.write("decoded true tokens: images accepted before/after, by corruption\n")
    for kind, a in decoded["after"]["images"].items():
        b = decoded["before"]["images"][kind]
        out.write(f"| {kind} | {a['images']} | {100 * b['accepted']:.1f} / {100 * a['accepted']:.1f} |\n")
    out.write("degraded renders: strength | recall before/after | false claims passed before/after\n")
    for strength, tallies in results["degraded"].items():
        cells = []
        for name in ("before", "after"):
            checks = tallies[name]["checks"]
            tp = sum(c["recall"] * c["true_claims"] for c in checks.values())
            true = sum(c["true_claims"] for c in checks.values())
            fp = sum(c["false_claims_passed"] * c["false_claims"] for c in checks.values())
            false = sum(c["false_claims"] for c in checks.values())
            cells.append((100 * tp / max(true, 1), 100 * fp / max(false, 1)))
        out.write(
            f"| {strength} | {cells[0][0]:.1f} / {cells[1][0]:.1f} | "
            f"{cells[0][1]:.1f} / {cells[1][1]:.1f} |\n"
        )
    if "generated" in results:
        for name, g in results["generated"].items():
            cats = ", ".join(f"{c} {100 * v:.1f}" for c, v in g["categories"].items())
            out.write(f"generated, judged {name}: overall {100 * g['overall']:.1f} ({cats})\n")
    print(out.getvalue())


if __name__ == "__main__":
    main()
