"""Synthetic captioned scenes and the compositional benchmark that judges images against them.

Scenes (:mod:`.scenes`) are seeded, JSON-serialisable specs with a caption; :mod:`.render` draws
them with Pillow, :mod:`.detect` judges any image against a spec's caption, and :mod:`.bench`
turns verdicts into per-category accuracy. Importing this package needs numpy, Pillow and
pydantic only; the OCR engine and the pipelines load when first used.
"""

from __future__ import annotations

from .bench import (
    BenchReport,
    CategoryScore,
    SampleResult,
    generate_images,
    ground_truth_images,
    read_generation_folder,
    read_prompts,
    score_images,
    write_prompts,
)
from .detect import Blob, Check, DetectorParams, Judgement, SceneJudge, find_blobs, load_ocr_reward
from .render import render_scene
from .scenes import (
    BACKGROUNDS,
    CATEGORIES,
    CORRUPTIONS,
    HELD_OUT_PAIRS,
    HELD_OUT_WORDS,
    OBJECT_COLORS,
    PALETTE,
    SHAPES,
    SPLITS,
    WORDS,
    Category,
    ColorName,
    SceneObject,
    SceneRelation,
    SceneSpec,
    SceneWord,
    Shape,
    Split,
    caption,
    corrupt_scene,
    in_split,
    sample_scenes,
)

__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "CORRUPTIONS",
    "HELD_OUT_PAIRS",
    "HELD_OUT_WORDS",
    "OBJECT_COLORS",
    "PALETTE",
    "SHAPES",
    "SPLITS",
    "WORDS",
    "BenchReport",
    "Blob",
    "Category",
    "CategoryScore",
    "Check",
    "ColorName",
    "DetectorParams",
    "Judgement",
    "SampleResult",
    "SceneJudge",
    "SceneObject",
    "SceneRelation",
    "SceneSpec",
    "SceneWord",
    "Shape",
    "Split",
    "caption",
    "corrupt_scene",
    "find_blobs",
    "generate_images",
    "ground_truth_images",
    "in_split",
    "load_ocr_reward",
    "read_generation_folder",
    "read_prompts",
    "render_scene",
    "sample_scenes",
    "score_images",
    "write_prompts",
]
