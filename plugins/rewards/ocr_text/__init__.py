"""OCR text reward: how much of the text a prompt asks for is legible in the image.

This module stays light: it only describes the plugin. The OCR engine (RapidOCR: PP-OCRv4
detection and recognition on onnxruntime) lives in :mod:`xomni_plugins.rewards.ocr_text.model`
and is imported on first use.
"""

from __future__ import annotations

from xomni_core import CORE_API_VERSION, PluginSpec

from .params import OcrTextParams
from .text_match import TextMatch, extract_quoted_text, match_text, requested_text, text_units

PLUGIN = PluginSpec(
    name="ocr-text",
    kind="reward",
    version="0.1.0",
    api_version=CORE_API_VERSION,
    implementation="xomni_plugins.rewards.ocr_text.model:OcrTextReward",
    params=OcrTextParams,
    description=(
        "Text rendering accuracy: PP-OCRv4 (RapidOCR, onnxruntime) reads the image; the score is "
        "the share of the requested words (English) or characters (Chinese) found, as a multiset."
    ),
    tags=("ocr", "text-rendering", "paddleocr"),
)

__all__ = [
    "PLUGIN",
    "OcrTextParams",
    "TextMatch",
    "extract_quoted_text",
    "match_text",
    "requested_text",
    "text_units",
]
