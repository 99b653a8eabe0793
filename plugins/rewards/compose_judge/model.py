"""The compositional-judge reward: the benchmark's scene judge, one image at a time."""

from __future__ import annotations

from typing import ClassVar

from pydantic import ValidationError

from xomni_core import (
    InputError,
    Reward,
    RewardBatch,
    RewardResult,
    ScorePart,
)
from xomni_core.interfaces import Weightless
from xomni_core.synthetic import Judgement, SceneJudge, SceneSpec, parse_caption
from xomni_core.synthetic.detect import PixelBox
from xomni_core.types import Box

from .params import ComposeJudgeParams

PLUGIN_NAME = "compose-judge"
# parse_caption lays scenes out on at least 32 x 32 px; the judge measures the image itself, so
# a smaller image is still judged at its own size.
_MIN_SIDE_PX = 32


class ComposeJudgeReward(Weightless[ComposeJudgeParams], Reward[ComposeJudgeParams]):
    """Scores each image by :class:`~xomni_core.synthetic.SceneJudge` against its sample's scene.

    Details report, per image, ``checks`` (the share of passed checks) and ``correct`` (1 or 0).
    Words are read by the ``ocr-text`` reward plugin, loaded on the first word.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = ComposeJudgeParams

    def __init__(self, params: ComposeJudgeParams) -> None:
        super().__init__(params)
        self.judge = SceneJudge(params.detector, attribute_credit=params.attribute_credit)

    def scene_for(self, batch: RewardBatch, index: int) -> SceneSpec:
        """The sample's metadata ``scene`` if present, else its prompt read as a caption."""
        try:
            scene = SceneSpec.from_metadata(batch.metadata_for(index))
        except ValueError as exc:
            field, message = "scene", str(exc)
            if isinstance(exc, ValidationError) and exc.errors():
                error = exc.errors()[0]
                field = ".".join(["scene", *(str(part) for part in error["loc"])])
                message = error["msg"]
            raise InputError(f"reward '{PLUGIN_NAME}': sample {index} metadata '{field}': {message}") from exc
        if scene is not None:
            return scene
        width, height = batch.images[index].size
        try:
            return parse_caption(
                batch.prompts[index], width_px=max(width, _MIN_SIDE_PX), height_px=max(height, _MIN_SIDE_PX)
            )
        except InputError as exc:
            raise InputError(
                f"reward '{PLUGIN_NAME}': sample {index} has no metadata 'scene' and its prompt is not "
                f"a benchmark caption: {exc}"
            ) from exc

    def score(self, batch: RewardBatch) -> RewardResult:
        checks: list[float] = []
        correct: list[float] = []
        parts: list[tuple[ScorePart, ...]] = []
        for index, image in enumerate(batch.images):
            verdict = self.judge.judge(image, self.scene_for(batch, index))
            checks.append(verdict.score)
            correct.append(1.0 if verdict.correct else 0.0)
            parts.append(self._parts(verdict, image.size))
        base = checks if self.params.score == "checks" else correct
        scores = [b + self.params.correct_bonus * c for b, c in zip(base, correct, strict=True)]
        return RewardResult(
            self.name,
            tuple(scores),
            details={"checks": tuple(checks), "correct": tuple(correct)},
            parts=tuple(parts),
        )

    def _parts(self, verdict: Judgement, size: tuple[int, int]) -> tuple[ScorePart, ...]:
        """Under ``score: checks``, one part per check, placed on the objects that decided it;
        the all-correct score and its bonus belong to the whole image."""
        bonus = self.params.correct_bonus * verdict.correct
        if self.params.score == "correct" or not verdict.checks:
            return (ScorePart(float(verdict.correct) + bonus),)
        width, height = size
        share = 1.0 / len(verdict.checks)
        parts = [
            ScorePart(check.value * share, tuple(_fractions(box, width, height) for box in check.boxes))
            for check in verdict.checks
        ]
        return (*parts, ScorePart(bonus)) if self.params.correct_bonus else tuple(parts)


def _fractions(box: PixelBox, width: int, height: int) -> Box:
    """An inclusive pixel box as fractions of the image."""
    left, top, right, bottom = box
    return (left / width, top / height, (right + 1) / width, (bottom + 1) / height)
