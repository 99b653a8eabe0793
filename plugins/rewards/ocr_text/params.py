"""Parameters of the OCR text reward; a light module (pydantic only)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from xomni_core import ComponentParams


class OcrTextParams(ComponentParams):
    """How text is read and how the reading is compared with the requested text.

    The ``*_model`` paths name custom ONNX files; ``None`` uses the PP-OCRv4 models shipped in
    the ``rapidocr-onnxruntime`` wheel. Relative paths are resolved against the component folder
    when loaded with ``from_pretrained`` and against the working directory otherwise.
    """

    metric: Literal["recall", "f1", "characters"] = Field(
        "recall",
        description="recall: matched units / requested units (LongText-Bench style); f1 also "
        "penalises extra text read in the image; characters: letter similarity of the requested "
        "and the read text, partial credit for a near miss.",
    )
    min_confidence: float = Field(
        0.5, ge=0.0, le=1.0, description="Text lines recognised with a lower confidence are ignored."
    )
    no_target_score: float = Field(
        1.0,
        ge=0.0,
        le=1.0,
        description="Score of a sample that requests no text (no target_text and no quoted span).",
    )
    use_angle_classifier: bool = Field(True, description="Run the 0/180 degree text-line classifier.")
    det_min_side_px: int = Field(
        736,
        ge=32,
        le=4096,
        description="Images with a shorter side are scaled up to it for text detection; small images "
        "read as well at 256 and five times faster than at the PP-OCR default of 736.",
    )
    num_threads: int = Field(0, ge=0, description="onnxruntime intra-op threads; 0 lets it choose.")
    det_model: str | None = Field(None, min_length=1, description="Custom text-detection ONNX model.")
    rec_model: str | None = Field(None, min_length=1, description="Custom text-recognition ONNX model.")
    cls_model: str | None = Field(None, min_length=1, description="Custom text-angle classifier ONNX model.")
    rec_keys: str | None = Field(
        None,
        min_length=1,
        description="Character list of a custom recognition model (one character a line).",
    )
