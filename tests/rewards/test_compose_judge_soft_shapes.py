"""The compose-judge reward on shapes drawn the way the decoder draws them: a policy cannot earn
circles with rounded squares, and is not denied squares for rounding their corners."""

from __future__ import annotations

from decoder_like import soft_image

from xomni_core import RewardBatch
from xomni_core.synthetic import parse_caption
from xomni_plugins.rewards.compose_judge import ComposeJudgeParams
from xomni_plugins.rewards.compose_judge.model import ComposeJudgeReward


def test_rounded_squares_earn_squares_but_not_circles() -> None:
    reward = ComposeJudgeReward.from_params(ComposeJudgeParams(score="correct"))
    squares = parse_caption("four blue squares", seed=3)
    circles = parse_caption("two green circles right of an orange square", seed=2)
    images = [
        soft_image(squares, rounding=0.5, fringe="purple"),
        soft_image(circles),
        soft_image(circles, shape="square", rounding=0.5),
    ]
    prompts = [squares.caption, circles.caption, circles.caption]
    result = reward.score(
        RewardBatch(images, prompts, [squares.metadata(), circles.metadata(), circles.metadata()])
    )
    assert result.scores == (1.0, 1.0, 0.0)
    assert result.details["checks"][2] < 1.0
