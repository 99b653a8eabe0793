"""Parameters of the compositional-judge reward (pydantic only, no numpy or torch)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from xomni_core import ComponentParams
from xomni_core.synthetic import DetectorParams


class ComposeJudgeParams(ComponentParams):
    """How a judgement becomes a score, and the detector's thresholds.

    ``checks``: the share of the caption's claims the image bears out (a graded signal for
    training). ``correct``: 1 when every claim holds, else 0 (what the benchmark counts).
    ``correct_bonus`` adds to the share of an image whose every claim holds, so a policy trained
    on the graded signal is also paid for what the benchmark counts. ``attribute_credit`` grades
    a missed object by its colour and its shape apart, so a policy that draws a new colour-shape
    pair wrong still learns which half it got right.
    """

    score: Literal["checks", "correct"] = Field(
        "checks", description="share of passed checks, or 1/0 for all checks passing"
    )
    correct_bonus: float = Field(
        0.0, ge=0.0, description="added to the score of an image whose every check passes"
    )
    attribute_credit: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of a missed object's check paid when the image holds as many objects of its "
        "colour (half) or of its shape (half) as the caption names",
    )
    detector: DetectorParams = Field(
        default_factory=DetectorParams, description="thresholds of the shape and colour detector"
    )

    @model_validator(mode="after")
    def _credit_needs_graded_checks(self) -> ComposeJudgeParams:
        if self.attribute_credit and self.score == "correct":
            raise ValueError(
                f"attribute_credit {self.attribute_credit} grades failed checks, which score 'correct' "
                "ignores; set score: checks or attribute_credit: 0"
            )
        return self
