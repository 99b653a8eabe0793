"""The held-out comparison of the nano recipe: SFT single, SFT best-of-N, GRPO single.

All three draw the same eval-split prompts with the same decoder and sampling. Sample ``k`` of
prompt ``i`` uses seed ``seed + k * n + i``, so the SFT single sample is the first of the SFT
best-of-N candidates and the GRPO single sample starts from the same seed. Best-of-N keeps the
candidate the pipeline's reward (the compositional judge's share of passed checks, read from
the prompt alone) scores highest, the earliest on ties; the benchmark then judges it.

Overall accuracy is the mean of the category accuracies, so its standard error adds up each
category's spread; a lead of one mode over another is read per scene (both modes judged on the
same prompt), with the standard error of that paired difference.
"""

from __future__ import annotations

import json
import math
import os
import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL.Image import Image

from xomni_core import TextToImagePipeline, atomic_file
from xomni_core.synthetic import CATEGORIES, BenchReport, SceneJudge, SceneSpec, sample_scenes, score_images

from .settings import NanoEval


@dataclass(frozen=True)
class ComparisonReport:
    """Accuracy per category (``modes[mode][category]``, overall included) of each mode."""

    modes: dict[str, dict[str, float]]
    info: dict[str, Any]

    def overall(self) -> dict[str, float]:
        return {mode: scores["overall"] for mode, scores in self.modes.items()}

    def table(self) -> str:
        """A Markdown table, categories down, modes across, accuracies in percent."""
        modes = list(self.modes)
        rows = [c for c in (*CATEGORIES, "overall") if c in next(iter(self.modes.values()))]
        lines = [
            "| category | " + " | ".join(modes) + " |",
            "|---|" + "---:|" * len(modes),
        ]
        for row in rows:
            cells = [f"{100 * self.modes[mode][row]:.1f}" for mode in modes]
            name = f"**{row}**" if row == "overall" else row
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        errors = self.info.get("standard_errors")
        if errors:
            cells = [f"{100 * errors[mode]:.1f}" for mode in modes]
            lines.append("| standard error (overall) | " + " | ".join(cells) + " |")
        split = self.info.get("held_out_split")
        if split and split[modes[0]]["held_out"]["total"]:
            for name, label in (("held_out", "held-out pairs/words"), ("seen", "seen pairs/words")):
                cells = [f"{100 * split[mode][name]['accuracy']:.1f}" for mode in modes]
                total = split[modes[0]][name]["total"]
                lines.append(f"| {label} ({total} images) | " + " | ".join(cells) + " |")
        for lead, numbers in self.info.get("leads", {}).items():
            points, error = 100 * numbers["difference"], 100 * numbers["paired_standard_error"]
            verdict = "exceeds" if points > 2 * error else "does not exceed"
            lines.append(
                f"\n{lead}: {points:+.1f} points, paired standard error {error:.1f}: "
                f"the lead {verdict} two standard errors."
            )
        return "\n".join(lines) + "\n"

    def to_json(self) -> dict[str, Any]:
        return {
            **self.info,
            "overall": self.overall(),
            "categories": self.modes,
        }

    def write(self, folder: str | os.PathLike[str]) -> None:
        root = Path(folder)
        with atomic_file(root / "comparison.json") as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")
        with atomic_file(root / "comparison.md") as tmp:
            tmp.write_text(self.table())

    @classmethod
    def read(cls, path: str | os.PathLike[str]) -> ComparisonReport:
        record = json.loads(Path(path).read_text())
        info = {k: v for k, v in record.items() if k not in ("overall", "categories")}
        return cls(modes=record["categories"], info=info)


def eval_scenes(settings: NanoEval, image_px: int) -> list[SceneSpec]:
    """The eval-split scenes the comparison judges."""
    return sample_scenes("eval", settings.scenes, seed=settings.seed, width_px=image_px, height_px=image_px)


def compare(
    sft_config: str | os.PathLike[str],
    grpo_config: str | os.PathLike[str],
    settings: NanoEval,
    *,
    best_of: int,
    image_px: int,
    show_progress: bool = True,
    reports_dir: str | os.PathLike[str] | None = None,
) -> ComparisonReport:
    """Score the three modes on ``settings.scenes`` eval-split prompts."""
    scenes = eval_scenes(settings, image_px)
    judge = SceneJudge()
    sft = TextToImagePipeline.from_config(sft_config)
    candidates, rewards = [], []
    for k in range(best_of):
        images, scores = _draw(
            sft,
            scenes,
            settings,
            seed=settings.seed + k * len(scenes),
            label=f"SFT {k + 1}/{best_of}",
            show_progress=show_progress,
        )
        candidates.append(images)
        rewards.append(scores)
    picks = [max(range(best_of), key=lambda k: (rewards[k][i], -k)) for i in range(len(scenes))]
    best = [candidates[k][i] for i, k in enumerate(picks)]
    del sft
    grpo = TextToImagePipeline.from_config(grpo_config)
    grpo_images, _ = _draw(
        grpo, scenes, settings, seed=settings.seed, label="GRPO", show_progress=show_progress
    )
    reports = {
        "sft_single": score_images(candidates[0], scenes, judge=judge),
        f"sft_best_of_{best_of}": score_images(best, scenes, judge=judge),
        "grpo_single": score_images(grpo_images, scenes, judge=judge),
    }
    if reports_dir is not None:
        for mode, report in reports.items():
            report.write_json(Path(reports_dir) / f"{mode}.json")
    categories = [scene.category for scene in scenes]
    correct = {mode: [float(s.correct) for s in report.samples] for mode, report in reports.items()}
    leads = {}
    for other in (f"sft_best_of_{best_of}", "sft_single"):
        difference = [g - o for g, o in zip(correct["grpo_single"], correct[other], strict=True)]
        leads[f"grpo_single - {other}"] = {
            "difference": stratified_mean(difference, categories),
            "paired_standard_error": stratified_standard_error(difference, categories),
        }
    return ComparisonReport(
        modes={mode: _accuracies(report) for mode, report in reports.items()},
        info={
            "split": "eval",
            "scenes": len(scenes),
            "seed": settings.seed,
            "best_of": best_of,
            "standard_errors": {
                mode: stratified_standard_error(values, categories) for mode, values in correct.items()
            },
            "leads": leads,
            "held_out_split": {
                mode: {name: score.to_json() for name, score in report.held_out_split().items()}
                for mode, report in reports.items()
            },
        },
    )


def _by_category(values: Sequence[float], categories: Sequence[str]) -> list[list[float]]:
    groups: dict[str, list[float]] = defaultdict(list)
    for value, category in zip(values, categories, strict=True):
        groups[category].append(value)
    return list(groups.values())


def stratified_mean(values: Sequence[float], categories: Sequence[str]) -> float:
    """The mean of the per-category means, as overall accuracy is."""
    groups = _by_category(values, categories)
    return sum(statistics.fmean(group) for group in groups) / len(groups)


def stratified_standard_error(values: Sequence[float], categories: Sequence[str]) -> float:
    """Standard error of :func:`stratified_mean`: each category's sample variance over its size."""
    groups = _by_category(values, categories)
    variance = sum(statistics.variance(group) / len(group) for group in groups if len(group) > 1)
    return math.sqrt(variance) / len(groups)


def _draw(
    pipeline: TextToImagePipeline,
    scenes: Sequence[SceneSpec],
    settings: NanoEval,
    *,
    seed: int,
    label: str,
    show_progress: bool,
) -> tuple[list[Image], list[float]]:
    """One image per scene and the pipeline's reward for it."""
    from tqdm.auto import tqdm

    images: list[Image] = []
    rewards: list[float] = []
    for start in tqdm(
        range(0, len(scenes), settings.batch_size), desc=f"eval {label}", disable=not show_progress
    ):
        chunk = scenes[start : start + settings.batch_size]
        result = pipeline([s.caption for s in chunk], seed=seed + start, show_progress=False)
        assert result.scores is not None, "the eval pipelines carry the compose-judge reward"
        images += result.images
        rewards += result.scores.total
    return images, rewards


def _accuracies(report: BenchReport) -> dict[str, float]:
    scores = {name: score.accuracy for name, score in report.categories().items()}
    scores["overall"] = report.overall
    return scores
