"""The OCR text reward: RapidOCR reads each image, :mod:`.text_match` compares the reading.

RapidOCR runs PaddleOCR's PP-OCRv4 text detector and recogniser (Chinese and English in one
model) on onnxruntime; the ONNX files ship inside the ``rapidocr-onnxruntime`` wheel, so the
reward works offline. A component folder holds ``xomni_component.json`` and, when the params
name custom models, copies of those files.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from rapidocr_onnxruntime import RapidOCR

from xomni_core import (
    CheckpointError,
    Reward,
    RewardBatch,
    RewardResult,
    atomic_directory,
    read_component_file,
    write_component_file,
)

from .params import OcrTextParams
from .text_match import match_text, requested_text, text_units

if TYPE_CHECKING:
    from PIL.Image import Image
    from typing_extensions import Self

PLUGIN_NAME = "ocr-text"
#: Params field -> RapidOCR option that takes the file.
_MODEL_FIELDS = {
    "det_model": "det_model_path",
    "rec_model": "rec_model_path",
    "cls_model": "cls_model_path",
    "rec_keys": "rec_keys_path",
}
_SAVED_NAMES = {
    "det_model": "det.onnx",
    "rec_model": "rec.onnx",
    "cls_model": "cls.onnx",
    "rec_keys": "rec_keys.txt",
}


class OcrTextReward(Reward[OcrTextParams]):
    """Share of the requested text that OCR reads in the image (see :mod:`.text_match`).

    The requested text is ``metadata["target_text"]`` or else the quoted spans of the prompt.
    ``params.metric`` picks recall (default) or F1 over text units, or the letters' similarity; a
    sample that requests no text scores ``params.no_target_score``. ``details`` holds ``recall``,
    ``precision``, ``characters`` and ``has_target`` (1.0 or 0.0) per sample.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = OcrTextParams

    def __init__(self, params: OcrTextParams, base: Path | None = None) -> None:
        super().__init__(params)
        self._files = {field: _resolve(base, getattr(params, field)) for field in _MODEL_FIELDS}
        missing = [f"{field}={path}" for field, path in self._files.items() if path and not path.is_file()]
        if missing:
            raise CheckpointError(
                f"reward plugin '{PLUGIN_NAME}': model files not found: {', '.join(missing)}"
            )
        options: dict[str, Any] = {
            "text_score": params.min_confidence,
            "use_cls": params.use_angle_classifier,
            "det_limit_side_len": params.det_min_side_px,
            "det_limit_type": "min",
        }
        if params.num_threads:
            options["intra_op_num_threads"] = params.num_threads
        for field, path in self._files.items():
            if path is not None:
                options[_MODEL_FIELDS[field]] = str(path)
        self.engine = RapidOCR(**options)

    @classmethod
    def from_params(cls, params: OcrTextParams, *, seed: int = 0) -> Self:
        """The OCR models named in ``params`` (the wheel's own by default); ``seed`` is unused."""
        return cls(params)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        """Load a folder written by :meth:`save_pretrained`; model paths are relative to it."""
        params = cast(
            OcrTextParams,
            read_component_file(path, kind="reward", plugin=PLUGIN_NAME, params_class=OcrTextParams),
        )
        return cls(params, base=Path(path))

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write the params; custom model files are copied in and the params name the copies."""
        with atomic_directory(path) as folder:
            saved = {}
            for field, source in self._files.items():
                if source is not None:
                    shutil.copyfile(source, folder / _SAVED_NAMES[field])
                    saved[field] = _SAVED_NAMES[field]
            params = self.params.model_copy(update=saved)
            write_component_file(folder, kind="reward", plugin=PLUGIN_NAME, params=params)

    def read_text(self, image: Image) -> list[str]:
        """The text lines OCR reads in ``image``, top to bottom."""
        result, _ = self.engine(image.convert("RGB"))
        return [str(line[1]) for line in result or []]

    def score(self, batch: RewardBatch) -> RewardResult:
        scores, recalls, precisions, characters, has_target = [], [], [], [], []
        for index, (image, prompt) in enumerate(zip(batch.images, batch.prompts, strict=True)):
            wanted = requested_text(prompt, batch.metadata_for(index))
            if not text_units(wanted):
                scores.append(self.params.no_target_score)
                recalls.append(0.0)
                precisions.append(0.0)
                characters.append(0.0)
                has_target.append(0.0)
                continue
            match = match_text(wanted, "\n".join(self.read_text(image)))
            metric = {"recall": match.recall, "f1": match.f1, "characters": match.characters}
            scores.append(metric[self.params.metric])
            recalls.append(match.recall)
            precisions.append(match.precision)
            characters.append(match.characters)
            has_target.append(1.0)
        return RewardResult(
            self.name,
            tuple(scores),
            self.direction,
            details={
                "recall": tuple(recalls),
                "precision": tuple(precisions),
                "characters": tuple(characters),
                "has_target": tuple(has_target),
            },
        )


def _resolve(base: Path | None, name: str | None) -> Path | None:
    if name is None:
        return None
    path = Path(name).expanduser()
    return path if path.is_absolute() or base is None else base / path
