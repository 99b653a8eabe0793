"""The compositional-judge reward: the benchmark's scene judge, one image at a time."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, ClassVar, cast

from pydantic import ValidationError

from xomni_core import (
    InputError,
    Reward,
    RewardBatch,
    RewardResult,
    atomic_directory,
    read_component_file,
    write_component_file,
)
from xomni_core.synthetic import SceneJudge, SceneSpec, parse_caption

from .params import ComposeJudgeParams

if TYPE_CHECKING:
    from typing_extensions import Self

PLUGIN_NAME = "compose-judge"
# parse_caption lays scenes out on at least 32 x 32 px; the judge measures the image itself, so
# a smaller image is still judged at its own size.
_MIN_SIDE_PX = 32


class ComposeJudgeReward(Reward[ComposeJudgeParams]):
    """Scores each image by :class:`~xomni_core.synthetic.SceneJudge` against its sample's scene.

    Details report, per image, ``checks`` (the share of passed checks) and ``correct`` (1 or 0).
    Words are read by the ``ocr-text`` reward plugin, loaded on the first word.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = ComposeJudgeParams

    def __init__(self, params: ComposeJudgeParams) -> None:
        super().__init__(params)
        self.judge = SceneJudge(params.detector)

    @classmethod
    def from_params(cls, params: ComposeJudgeParams, *, seed: int = 0) -> Self:
        return cls(params)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        params = read_component_file(path, kind="reward", plugin=PLUGIN_NAME, params_class=ComposeJudgeParams)
        return cls(cast(ComposeJudgeParams, params))

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as folder:
            write_component_file(folder, kind="reward", plugin=PLUGIN_NAME, params=self.params)

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
        for index, image in enumerate(batch.images):
            verdict = self.judge.judge(image, self.scene_for(batch, index))
            checks.append(verdict.score)
            correct.append(1.0 if verdict.correct else 0.0)
        scores = checks if self.params.score == "checks" else correct
        return RewardResult(
            self.name, tuple(scores), details={"checks": tuple(checks), "correct": tuple(correct)}
        )
