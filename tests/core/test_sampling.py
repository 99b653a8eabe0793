"""Sampling over a generation mode's ids: the same distribution as sampling the whole id space with
every other id masked, drawn per row from the row's own stream."""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import LogitsProcessorList
from transformers.generation.logits_process import (
    MinPLogitsWarper,
    TemperatureLogitsWarper,
    TopKLogitsWarper,
    TopPLogitsWarper,
)

from xomni_core.generation import guided_scores
from xomni_core.sampling import draw, sample, sampling_probabilities
from xomni_core.types import SamplingParams

TEXT_IDS, IMAGE_IDS, SPECIAL_IDS = 300, 64, 3
LOWEST = torch.finfo(torch.float32).min

SETTINGS = [
    SamplingParams(),
    SamplingParams(temperature=1.0, min_p=0.03),
    SamplingParams(temperature=0.7, min_p=0.1),
    SamplingParams(temperature=1.3, top_k=5),
    SamplingParams(top_p=0.8),
    SamplingParams(temperature=0.9, top_k=20, top_p=0.9, min_p=0.05),
    SamplingParams(temperature=1.0, min_p=0.03, cfg_scale=3.0),
]


def full_row_probabilities(full_logits: torch.Tensor, sampling: SamplingParams, batch: int) -> torch.Tensor:
    """The distribution over the whole id space as sampling over every id computes it: image
    ids scored, every other id at the lowest value, then transformers' warpers and a softmax."""
    scores = guided_scores(full_logits, batch, sampling.cfg_scale)
    warpers = LogitsProcessorList()
    if sampling.temperature != 1.0:
        warpers.append(TemperatureLogitsWarper(sampling.temperature))
    if sampling.top_k is not None:
        warpers.append(TopKLogitsWarper(sampling.top_k))
    if sampling.top_p < 1.0:
        warpers.append(TopPLogitsWarper(sampling.top_p))
    if sampling.min_p > 0.0:
        warpers.append(MinPLogitsWarper(sampling.min_p))
    return torch.softmax(warpers(None, scores) if warpers else scores, dim=-1)  # type: ignore[arg-type]


def image_logits(rows: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Image-id logits and the same scores laid out over the whole id space."""
    generator = torch.Generator().manual_seed(seed)
    image = torch.randn((rows, IMAGE_IDS), generator=generator) * 3.0
    full = torch.full((rows, TEXT_IDS + IMAGE_IDS + SPECIAL_IDS), LOWEST)
    full[:, TEXT_IDS : TEXT_IDS + IMAGE_IDS] = image
    return image, full


@pytest.mark.parametrize("sampling", SETTINGS, ids=str)
def test_image_id_distribution_equals_the_masked_full_row_distribution(sampling: SamplingParams) -> None:
    batch = 4
    rows = 2 * batch if sampling.cfg_scale > 1.0 else batch
    image, full = image_logits(rows, seed=7)

    expected = full_row_probabilities(full, sampling, batch)
    probabilities = sampling_probabilities(guided_scores(image, batch, sampling.cfg_scale), sampling)

    torch.testing.assert_close(probabilities, expected[:, TEXT_IDS : TEXT_IDS + IMAGE_IDS], atol=1e-6, rtol=0)
    assert float(expected[:, :TEXT_IDS].sum()) == 0.0
    assert float(expected[:, TEXT_IDS + IMAGE_IDS :].sum()) == 0.0


def test_draws_follow_the_distribution() -> None:
    weights = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0]).repeat(20_000, 1)
    generators = [torch.Generator().manual_seed(i) for i in range(len(weights))]

    counts = torch.bincount(draw(weights, generators), minlength=5).double() / len(weights)

    assert counts[1] == 0 and counts[4] == 0
    # Each frequency is within four standard errors of its probability.
    expected = torch.tensor([0.5, 0.0, 0.2, 0.3, 0.0], dtype=torch.float64)
    assert bool(((counts - expected).abs() <= 4 * (expected * (1 - expected) / len(weights)).sqrt()).all())


@settings(max_examples=200, deadline=None)
@given(
    weights=st.lists(st.sampled_from([0.0, 0.0, 1e-30, 1e-7, 0.5, 1.0, 3.0]), min_size=1, max_size=12).filter(
        lambda w: sum(w) > 0
    ),
    seed=st.integers(0, 2**32),
)
def test_a_draw_never_takes_an_id_of_zero_weight(weights: list[float], seed: int) -> None:
    row = torch.tensor(weights)
    index = int(draw(row[None], [torch.Generator().manual_seed(seed)])[0])
    assert row[index] > 0


def test_a_row_draws_the_same_alone_and_inside_a_batch() -> None:
    sampling = SamplingParams(temperature=0.8, top_k=30, min_p=0.02)
    scores, _ = image_logits(6, seed=3)

    together = sample(scores, sampling, [torch.Generator().manual_seed(100 + i) for i in range(6)])
    alone = [
        int(sample(scores[i : i + 1], sampling, [torch.Generator().manual_seed(100 + i)])[0])
        for i in range(6)
    ]

    assert together.tolist() == alone


def test_greedy_takes_the_highest_score_and_draws_nothing() -> None:
    scores, _ = image_logits(3, seed=5)
    generator = torch.Generator().manual_seed(0)
    state = generator.get_state()

    chosen = sample(scores, SamplingParams(temperature=0.0), [generator] * 3)

    assert chosen.tolist() == scores.argmax(-1).tolist()
    assert torch.equal(generator.get_state(), state)
