"""xomni-nano: the reference X-Omni pipeline at laptop size, trained from scratch on synthetic scenes."""

from __future__ import annotations

from .evaluate import ComparisonReport, compare
from .recipe import NanoResult, run_nano_recipe, train_nano_stages
from .settings import (
    PIPELINE_TEMPLATE,
    NanoData,
    NanoEval,
    NanoGRPO,
    NanoRecipe,
    NanoSFT,
    NanoTokenizer,
    NanoVAE,
)

__all__ = [
    "PIPELINE_TEMPLATE",
    "ComparisonReport",
    "NanoData",
    "NanoEval",
    "NanoGRPO",
    "NanoRecipe",
    "NanoResult",
    "NanoSFT",
    "NanoTokenizer",
    "NanoVAE",
    "compare",
    "run_nano_recipe",
    "train_nano_stages",
]
