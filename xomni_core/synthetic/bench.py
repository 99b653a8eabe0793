"""The compositional benchmark: accuracy per category of images judged against their scene specs.

Images come from one of three places: the renderer itself (``ground_truth_images``, which
checks the judge), a folder written by ``xomni generate`` together with the prompt file that
listed its prompts (``read_generation_folder``), or a pipeline config that draws them here
(``generate_images``). ``score_images`` judges them and returns a :class:`BenchReport`, whose
``overall`` is the mean of the category accuracies so every category weighs the same;
``sample_accuracy`` is the share of images judged correct. An image whose prompt names no scene
(a folder's prompt outside the caption grammar) is reported as :class:`Unscored`, not judged.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from .._version import __version__
from ..atomic import atomic_file
from ..errors import InputError
from .detect import SceneJudge
from .render import render_scene
from .scenes import CATEGORIES, SceneSpec, parse_caption

if TYPE_CHECKING:
    from PIL.Image import Image

    from ..config import PipelineConfig


@dataclass(frozen=True)
class SampleResult:
    """The verdict on one image."""

    index: int
    category: str
    prompt: str
    correct: bool
    score: float
    failures: tuple[str, ...] = ()
    held_out: bool = False  # the scene holds a colour-shape pair or word no other split has


@dataclass(frozen=True)
class Unscored:
    """An image that could not be judged: its prompt names no scene, for ``reason``."""

    index: int
    prompt: str
    reason: str


@dataclass(frozen=True)
class CategoryScore:
    correct: int
    total: int

    @property
    def accuracy(self) -> float:
        return self.correct / self.total if self.total else 0.0

    def to_json(self) -> dict[str, Any]:
        return {"correct": self.correct, "total": self.total, "accuracy": self.accuracy}


@dataclass(frozen=True)
class BenchReport:
    """Per-sample verdicts with what was run (``info``: mode, split, seed, sizes, sources)."""

    samples: tuple[SampleResult, ...]
    info: Mapping[str, Any] = field(default_factory=dict)
    unscored: tuple[Unscored, ...] = ()

    def categories(self) -> dict[str, CategoryScore]:
        """Scores of the categories present, in benchmark order."""
        scores: dict[str, CategoryScore] = {}
        for name in CATEGORIES:
            mine = [s for s in self.samples if s.category == name]
            if mine:
                scores[name] = CategoryScore(sum(s.correct for s in mine), len(mine))
        return scores

    @property
    def overall(self) -> float:
        """Mean of the category accuracies."""
        scores = self.categories()
        return sum(s.accuracy for s in scores.values()) / len(scores) if scores else 0.0

    @property
    def sample_accuracy(self) -> float:
        """Share of the judged images that are correct."""
        return sum(s.correct for s in self.samples) / len(self.samples) if self.samples else 0.0

    def held_out_split(self) -> dict[str, CategoryScore]:
        """Images whose scene holds a held-out colour-shape pair or word (``held_out``), which
        only the eval split has, against the rest (``seen``): how far a model generalises."""
        return {
            name: CategoryScore(sum(s.correct for s in mine), len(mine))
            for name, mine in (
                ("held_out", [s for s in self.samples if s.held_out]),
                ("seen", [s for s in self.samples if not s.held_out]),
            )
        }

    def table(self) -> str:
        rows = [
            (name, str(s.correct), str(s.total), f"{s.accuracy:.3f}") for name, s in self.categories().items()
        ]
        correct, judged = sum(s.correct for s in self.samples), len(self.samples)
        rows.append(("overall per category (mean)", "", "", f"{self.overall:.3f}"))
        rows.append(("overall per image", str(correct), str(judged), f"{self.sample_accuracy:.3f}"))
        split = self.held_out_split()
        if split["held_out"].total:
            for name, label in (
                ("held_out", "held-out pairs/words per image"),
                ("seen", "seen pairs/words per image"),
            ):
                score = split[name]
                rows.append((label, str(score.correct), str(score.total), f"{score.accuracy:.3f}"))
        header = ("CATEGORY", "CORRECT", "TOTAL", "ACCURACY")
        widths = [max(len(r[i]) for r in [header, *rows]) for i in range(4)]
        lines = [
            "  ".join(
                cell.ljust(widths[i]) if i == 0 else cell.rjust(widths[i]) for i, cell in enumerate(row)
            )
            for row in [header, *rows]
        ]
        if self.unscored:
            lines.append(f"not scored: {len(self.unscored)} image(s) whose prompt names no scene")
            lines += [f"  image {u.index} {u.prompt!r}: {u.reason}" for u in self.unscored]
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        return {
            "benchmark": "compose",
            "xomni_version": __version__,
            **self.info,
            "overall": self.overall,
            "overall_is": "the mean of the category accuracies; sample_accuracy is per image",
            "sample_accuracy": self.sample_accuracy,
            **{name: s.to_json() for name, s in self.held_out_split().items()},
            "categories": {name: s.to_json() for name, s in self.categories().items()},
            "samples": [
                {
                    "index": s.index,
                    "category": s.category,
                    "prompt": s.prompt,
                    "correct": s.correct,
                    "score": s.score,
                    "failures": list(s.failures),
                    "held_out": s.held_out,
                }
                for s in self.samples
            ],
            "unscored": [{"index": u.index, "prompt": u.prompt, "reason": u.reason} for u in self.unscored],
        }

    def write_json(self, path: str | os.PathLike[str]) -> None:
        with atomic_file(path) as tmp:
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n")


def score_images(
    images: Iterable[Image],
    scenes: Sequence[SceneSpec | Unscored],
    *,
    judge: SceneJudge | None = None,
    show_progress: bool = False,
    info: Mapping[str, Any] | None = None,
) -> BenchReport:
    """Judge ``images[i]`` against ``scenes[i]``; ``images`` may be a lazy iterator, and the
    image of an :class:`Unscored` entry is skipped and the entry reported."""
    from tqdm.auto import tqdm

    judge = judge or SceneJudge()
    results = []
    unscored = []
    bar = tqdm(total=len(scenes), desc="judging", unit="image", disable=not show_progress)
    with bar:
        for index, (image, scene) in enumerate(zip(images, scenes, strict=True)):
            if isinstance(scene, Unscored):
                unscored.append(scene)
                bar.update()
                continue
            verdict = judge.judge(image, scene)
            results.append(
                SampleResult(
                    index=index,
                    category=scene.category,
                    prompt=scene.caption,
                    correct=verdict.correct,
                    score=verdict.score,
                    failures=tuple(verdict.failures()),
                    held_out=scene.held_out(),
                )
            )
            bar.update()
    return BenchReport(tuple(results), dict(info or {}), tuple(unscored))


def ground_truth_images(scenes: Iterable[SceneSpec]) -> Iterator[Image]:
    """The renderer's own picture of each scene, drawn as they are consumed."""
    for scene in scenes:
        yield render_scene(scene)


def write_prompts(path: str | os.PathLike[str], scenes: Iterable[SceneSpec]) -> int:
    """Write ``{"prompt": ..., "scene": ...}`` per line, atomically; return the number of lines."""
    lines = [json.dumps({"prompt": s.caption, "scene": s.model_dump(mode="json")}) for s in scenes]
    with atomic_file(path) as tmp:
        tmp.write_text("".join(line + "\n" for line in lines))
    return len(lines)


def read_prompts(path: str | os.PathLike[str]) -> list[tuple[str, SceneSpec]]:
    """The ``(prompt, scene)`` pairs of a file written by :func:`write_prompts`."""
    source = Path(path)
    if not source.is_file():
        raise InputError(f"prompt file {source} does not exist")
    pairs = []
    for number, line in enumerate(source.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            scene = SceneSpec.model_validate(record["scene"])
            prompt = str(record.get("prompt") or scene.caption)
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            message = str(exc).splitlines()[0]
            raise InputError(
                f'{source}:{number}: expected {{"prompt": ..., "scene": ...}}: {message}'
            ) from exc
        pairs.append((prompt, scene))
    if not pairs:
        raise InputError(f"prompt file {source} holds no prompts")
    return pairs


def read_generation_folder(
    folder: str | os.PathLike[str], prompts: Sequence[tuple[str, SceneSpec]] | None = None
) -> tuple[list[Path], list[SceneSpec | Unscored]]:
    """The image files listed in ``folder/generation.json`` and the scene of each one's prompt.

    Equal prompts make equal demands, so any scene with the image's prompt will do. Without
    ``prompts`` (a prompt file's pairs), each prompt is read with :func:`parse_caption`. A prompt
    that names no scene gives an :class:`Unscored` entry saying why; when no prompt names one,
    :class:`InputError` says why for the first.
    """
    root = Path(folder)
    record_path = root / "generation.json"
    if not root.is_dir():
        raise InputError(f"--images: folder {root} does not exist")
    if not record_path.is_file():
        raise InputError(
            f"--images: {root} has no generation.json (write it with 'xomni generate --out {root}')"
        )
    try:
        record = json.loads(record_path.read_text())
        files = [root / str(name) for name in record["images"]]
        settings = record["settings"]
        used = [str(p) for p in settings["prompts"]]
        size = (int(settings.get("width_px", 128)), int(settings.get("height_px", 128)))
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise InputError(f"{record_path} is not a generation record: {exc}") from exc
    if len(files) != len(used):
        raise InputError(f"{record_path} lists {len(files)} images for {len(used)} prompts")
    absent = [f for f in files if not f.is_file()]
    if absent:
        raise InputError(f"{len(absent)} image(s) listed in {record_path} are missing, e.g. {absent[0]}")
    if prompts is None:
        scenes = [_parsed(prompt, index, size) for index, prompt in enumerate(used)]
    else:
        by_prompt = {prompt: scene for prompt, scene in prompts}
        by_caption = {scene.caption: scene for _, scene in prompts}
        scenes = [
            by_prompt.get(p) or by_caption.get(p) or Unscored(i, p, "no scene in the prompt file")
            for i, p in enumerate(used)
        ]
    if all(isinstance(scene, Unscored) for scene in scenes):
        first = scenes[0]
        assert isinstance(first, Unscored)
        raise InputError(f"{record_path}: no prompt names a scene; prompt 0: {first.reason}")
    return files, scenes


def _parsed(prompt: str, index: int, size: tuple[int, int]) -> SceneSpec | Unscored:
    try:
        return parse_caption(prompt, width_px=size[0], height_px=size[1])
    except InputError as exc:
        return Unscored(
            index,
            prompt,
            f"{exc}. Prompts outside the caption grammar ('xomni bench grammar') need their scenes "
            "from a prompt file (--specs FILE, written by --write-prompts)",
        )


def open_images(paths: Iterable[Path]) -> Iterator[Image]:
    """Each file as an RGB image; unreadable, huge or damaged files raise InputError naming them."""
    from ..images import open_image

    for path in paths:
        yield open_image(path)


def generate_images(
    config: PipelineConfig | str | os.PathLike[str],
    scenes: Sequence[SceneSpec],
    *,
    overrides: list[str] | None = None,
    seed: int = 0,
    batch_size: int = 8,
) -> Iterator[Image]:
    """Draw each scene's caption with a text-to-image pipeline, ``batch_size`` prompts at a time.

    Prompt ``i`` uses seed ``seed + i`` whatever the batch size; images have the scenes' size.
    """
    from ..pipelines import TextToImagePipeline

    if batch_size < 1:
        raise InputError(f"batch size must be at least 1, got {batch_size}")
    pipeline = TextToImagePipeline.from_config(config, overrides=overrides or None)
    start = 0
    while start < len(scenes):
        # A batch holds consecutive scenes of one image size.
        size = (scenes[start].height_px, scenes[start].width_px)
        stop = start + 1
        while stop < min(len(scenes), start + batch_size) and (
            (scenes[stop].height_px, scenes[stop].width_px) == size
        ):
            stop += 1
        chunk = scenes[start:stop]
        result = pipeline(
            [s.caption for s in chunk],
            height_px=chunk[0].height_px,
            width_px=chunk[0].width_px,
            seed=seed + start,
            show_progress=False,
        )
        yield from result.images
        start = stop
