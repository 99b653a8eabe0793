"""Image understanding as a service: an image and a question in, the answer out."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import numpy as np

from xomni_core import InputError

from .service import ServedTensor, bytes_column, column, text_input

if TYPE_CHECKING:
    from xomni_core.pipelines import ImageUnderstandingPipeline

UNDERSTANDING_INPUTS = (
    ServedTensor(
        "image", "TYPE_UINT8", (-1, -1, 3), optional=False, description="RGB pixels, height x width x 3"
    ),
    ServedTensor("question", "TYPE_STRING", optional=False, description="UTF-8 text"),
    ServedTensor("max_new_tokens", "TYPE_INT32", description="longest answer in tokens"),
)
UNDERSTANDING_OUTPUTS = (ServedTensor("text", "TYPE_STRING", description="the answer, UTF-8"),)
#: Largest image side accepted, in px; the tokenizer resizes what it takes.
MAX_IMAGE_SIDE = 4096
DEFAULT_MAX_NEW_TOKENS = 64


class UnderstandingService:
    """Answers each row of a request with the understanding pipeline."""

    def __init__(self, pipeline: ImageUnderstandingPipeline) -> None:
        self.pipeline = pipeline

    def answer(self, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
        """The answers (a ``(rows, 1)`` column of UTF-8 bytes) to a request's rows."""
        from PIL import Image

        unknown = sorted(set(inputs) - {spec.name for spec in UNDERSTANDING_INPUTS})
        if unknown:
            raise InputError(f"unknown input {unknown[0]!r}; inputs are image, question, max_new_tokens")
        for name in ("image", "question"):
            if name not in inputs:
                raise InputError(f"input {name!r} is required")
        images = np.asarray(inputs["image"])
        if images.ndim != 4 or images.shape[-1] != 3 or images.dtype != np.uint8:
            raise InputError(
                f"input 'image' must be uint8 [rows, height, width, 3], "
                f"got {images.dtype} {list(images.shape)}"
            )
        if min(images.shape[1:3]) < 1 or max(images.shape[1:3]) > MAX_IMAGE_SIDE:
            raise InputError(
                f"input 'image' is {images.shape[2]} x {images.shape[1]} px; "
                f"sides go from 1 to {MAX_IMAGE_SIDE}"
            )
        questions = column(inputs, "question")
        budgets = column(inputs, "max_new_tokens") if "max_new_tokens" in inputs else None
        if len(questions) != len(images) or (budgets is not None and len(budgets) != len(images)):
            raise InputError(
                "inputs 'image', 'question' and 'max_new_tokens' must have one row each per image"
            )
        answers = []
        for index, pixels in enumerate(images):
            question = text_input(questions[index], "question")
            budget = DEFAULT_MAX_NEW_TOKENS if budgets is None else int(budgets[index])
            if budget < 1:
                raise InputError(f"input 'max_new_tokens' must be at least 1, got {budget}")
            answer: Any = self.pipeline(
                Image.fromarray(pixels), question, max_new_tokens=budget, show_progress=False
            )
            answers.append(str(answer).encode())
        return bytes_column(answers)
