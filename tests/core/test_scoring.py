"""Combining rewards: weights, directions and per-reward normalisation."""

from __future__ import annotations

import pytest

from xomni_core.scoring import normalized


def test_zscore_gives_zero_mean_unit_deviation() -> None:
    values = normalized([1.0, 2.0, 3.0, 6.0], "zscore")
    mean = sum(values) / 4
    assert mean == pytest.approx(0.0)
    assert sum(v * v for v in values) / 4 == pytest.approx(1.0)


def test_minmax_maps_onto_unit_interval() -> None:
    assert normalized([2.0, 4.0, 3.0], "minmax") == [0.0, 1.0, 0.5]


def test_constant_scores_normalise_to_zero() -> None:
    assert normalized([5.0, 5.0], "zscore") == [0.0, 0.0]
    assert normalized([5.0, 5.0], "minmax") == [0.0, 0.0]
