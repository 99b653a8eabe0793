"""Synthetic captioned scenes and the compositional benchmark that judges images against them.

Scenes (:mod:`.scenes`) are seeded, JSON-serialisable specs with a caption; :mod:`.render` draws
them with Pillow, :mod:`.detect` judges any image against a spec's caption, and :mod:`.bench`
turns verdicts into per-category accuracy. Importing this package needs pydantic only (scenes
and detector params); numpy and Pillow load with the first name of :mod:`.detect`,
:mod:`.render` or :mod:`.bench`, the OCR engine and the pipelines when first used.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from .params import DetectorParams
from .scenes import (
    BACKGROUNDS,
    CATEGORIES,
    CORRUPTIONS,
    EXAMPLE_CAPTIONS,
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
    parse_caption,
    sample_scenes,
)

if TYPE_CHECKING:
    from .bench import (
        BenchReport,
        CategoryScore,
        SampleResult,
        Unscored,
        generate_images,
        ground_truth_images,
        read_generation_folder,
        read_prompts,
        score_images,
        write_prompts,
    )
    from .detect import Blob, Check, Judgement, SceneJudge, find_blobs, load_ocr_reward
    from .render import LETTER_MAP_CLASSES, SHAPE_MAP_CLASSES, render_scene, render_shape_map

# Names whose modules import numpy and Pillow, loaded on first access.
_LAZY = {
    **dict.fromkeys(
        (
            "BenchReport",
            "CategoryScore",
            "SampleResult",
            "Unscored",
            "generate_images",
            "ground_truth_images",
            "read_generation_folder",
            "read_prompts",
            "score_images",
            "write_prompts",
        ),
        "bench",
    ),
    **dict.fromkeys(("Blob", "Check", "Judgement", "SceneJudge", "find_blobs", "load_ocr_reward"), "detect"),
    **dict.fromkeys(
        ("LETTER_MAP_CLASSES", "SHAPE_MAP_CLASSES", "render_scene", "render_shape_map"), "render"
    ),
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


__all__ = [
    "BACKGROUNDS",
    "CATEGORIES",
    "CORRUPTIONS",
    "EXAMPLE_CAPTIONS",
    "HELD_OUT_PAIRS",
    "HELD_OUT_WORDS",
    "LETTER_MAP_CLASSES",
    "OBJECT_COLORS",
    "PALETTE",
    "SHAPES",
    "SHAPE_MAP_CLASSES",
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
    "Unscored",
    "caption",
    "corrupt_scene",
    "find_blobs",
    "generate_images",
    "ground_truth_images",
    "in_split",
    "load_ocr_reward",
    "parse_caption",
    "read_generation_folder",
    "read_prompts",
    "render_scene",
    "render_shape_map",
    "sample_scenes",
    "score_images",
    "write_prompts",
]
