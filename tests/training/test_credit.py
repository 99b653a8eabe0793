"""Regional credit: reward parts that say where they were earned give their advantage to the image
tokens under them; without regions, or at share 0, every token takes GRPO's sequence advantage."""

from __future__ import annotations

import random
from typing import Any, ClassVar

import pytest
import torch
from PIL import Image

from xomni_core import Reward, RewardBatch, RewardResult, ScorePart
from xomni_core.config import load_config
from xomni_core.interfaces import Weightless
from xomni_core.params import ComponentParams
from xomni_core.scoring import WeightedReward, score_all
from xomni_core.synthetic import parse_caption, render_scene
from xomni_core.training.credit import region_mask, token_advantages
from xomni_core.training.grpo import train_grpo
from xomni_core.types import GridSize
from xomni_plugins.rewards.compose_judge import ComposeJudgeParams
from xomni_plugins.rewards.compose_judge.model import ComposeJudgeReward

GRID = GridSize(8, 8)


def random_parts(rng: random.Random, samples: int, count: int) -> list[list[ScorePart]]:
    """The same ``count`` checks for each sample, some placed, with random values."""
    placed = [rng.random() < 0.6 for _ in range(count)]
    parts = []
    for _ in range(samples):
        sample = []
        for k in range(count):
            x, y = rng.uniform(0, 0.7), rng.uniform(0, 0.7)
            boxes = ((x, y, x + 0.2, y + 0.25),) if placed[k] else ()
            sample.append(ScorePart(rng.choice([0.0, 0.25, 1.0]) / count, boxes))
        parts.append(sample)
    return parts


def test_at_share_zero_every_token_takes_the_sequence_advantage() -> None:
    rng = random.Random(0)
    for _ in range(20):
        parts = random_parts(rng, samples=6, count=rng.randint(1, 5))
        rewards = torch.tensor([sum(p.value for p in sample) for sample in parts], dtype=torch.float64)
        scale = float(rewards.std(unbiased=False)) + 1e-4
        expected = ((rewards - rewards.mean()) / scale)[:, None].expand(6, GRID.num_tokens)
        assert torch.allclose(token_advantages(parts, scale, GRID, 0.0), expected, atol=1e-12)


def test_at_share_one_a_placed_part_moves_only_the_tokens_under_it() -> None:
    # Sample 0 fails the placed check (an extra object in the top-left corner), sample 1 passes.
    corner = (0.0, 0.0, 0.125, 0.125)  # exactly token (0, 0)
    parts = [
        [ScorePart(0.5), ScorePart(0.0, (corner,))],
        [ScorePart(0.5), ScorePart(0.5)],
    ]
    advantages = token_advantages(parts, scale=0.25, grid=GRID, regional=1.0)
    under = region_mask((corner,), GRID)
    assert under.reshape(8, 8)[:2, :2].all() and int(under.sum()) == 4  # the cell and its margin
    assert torch.allclose(advantages[0][under], torch.full((4,), -1.0, dtype=torch.float64))
    assert torch.allclose(advantages[0][~under], torch.zeros(60, dtype=torch.float64))
    assert torch.allclose(advantages[1], torch.ones(64, dtype=torch.float64))  # its part is whole-image
    halfway = token_advantages(parts, scale=0.25, grid=GRID, regional=0.5)
    assert torch.allclose(halfway[0][~under], torch.full((60,), -0.5, dtype=torch.float64))


def test_samples_of_a_group_must_report_the_same_parts() -> None:
    with pytest.raises(RuntimeError, match="different numbers of score parts"):
        token_advantages([[ScorePart(1.0)], [ScorePart(0.5), ScorePart(0.5)]], 1.0, GRID, 1.0)


class BadParts(ComponentParams):
    pass


class PartsThatDoNotAddUp(Weightless[BadParts], Reward[BadParts]):
    """A third-party reward whose parts disagree with its scores."""

    name: ClassVar[str] = "parts-that-do-not-add-up"
    params_class = BadParts

    def score(self, batch: RewardBatch) -> RewardResult:
        count = len(batch.images)
        return RewardResult(self.name, (1.0,) * count, parts=((ScorePart(0.4),),) * count)


def test_combined_parts_carry_weights_and_signs_and_add_up_to_the_total() -> None:
    caption = "two red circles left of a blue square"
    judge = ComposeJudgeReward.from_params(ComposeJudgeParams())
    batch = RewardBatch([render_scene(parse_caption(caption)), Image.new("RGB", (128, 128))], [caption] * 2)
    rewards = [
        WeightedReward("rewards.0", 2.0, judge),
        WeightedReward("rewards.1", 0.5, judge, normalize="zscore"),
    ]
    scored = score_all(rewards, batch)
    for total, parts in zip(scored.total, scored.parts, strict=True):
        assert sum(part.value for part in parts) == pytest.approx(total, abs=1e-12)
        assert len(parts) == 4 + 1  # the judge's four checks, then the normalised reward whole
        assert parts[-1].boxes == ()
    assert scored.parts[0][0].value == pytest.approx(2.0 * 0.25) and len(scored.parts[0][0].boxes) == 2
    with pytest.raises(RuntimeError, match=r"parts-that-do-not-add-up.*add up to 0.4, not its score 1"):
        score_all([WeightedReward("rewards.2", 1.0, PartsThatDoNotAddUp(BadParts()))], batch)


def test_a_reward_without_parts_trains_exactly_as_without_regional_credit(
    colour_setup: Any, tmp_path: Any
) -> None:
    records = {}
    for share in (0.0, 1.0):
        data = colour_setup.config(
            steps=2, checkpoint_every=2, output_dir=str(tmp_path / str(share)), regional_credit=share
        )
        records[share] = train_grpo(load_config(data=data), show_progress=False).records
    for plain, regional in zip(records[0.0], records[1.0], strict=True):
        for key in ("reward_mean", "loss", "policy_loss", "kl", "grad_norm"):
            assert regional[key] == pytest.approx(plain[key], rel=1e-9, abs=1e-12), key
