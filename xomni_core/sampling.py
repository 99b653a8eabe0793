"""Next-token sampling, vectorised over the batch.

Scores are warped in transformers' order (temperature, top-k, top-p, min-p; the first three by
transformers' own warpers), then each row draws one id by inversion of its cumulative
distribution with one uniform number from its own generator. A row's draw therefore depends on
its own scores and stream only, so batching never changes a sample. Entries a warper removed
have probability exactly zero and are never drawn.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .types import SamplingParams


def sampling_weights(scores: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """Unnormalised probabilities ``(batch, ids)`` that :func:`draw` samples in proportion to."""
    from transformers.generation.logits_process import TopKLogitsWarper, TopPLogitsWarper

    if sampling.temperature != 1.0:
        scores = scores / sampling.temperature
    if sampling.top_k is not None:
        scores = TopKLogitsWarper(sampling.top_k)(None, scores)
    if sampling.top_p < 1.0:
        scores = TopPLogitsWarper(sampling.top_p)(None, scores)
    probs = torch.softmax(scores, dim=-1)
    if sampling.min_p > 0.0:
        # The most likely id always passes (min_p < 1), so no row is left empty.
        threshold = sampling.min_p * probs.amax(dim=-1, keepdim=True)
        probs = probs.masked_fill(probs < threshold, 0.0)
    return probs


def sampling_probabilities(scores: torch.Tensor, sampling: SamplingParams) -> torch.Tensor:
    """The distribution each row samples from (rows sum to 1); greedy rows are one-hot."""
    if sampling.greedy:
        return torch.nn.functional.one_hot(scores.argmax(dim=-1), scores.shape[-1]).to(scores.dtype)
    weights = sampling_weights(scores, sampling)
    return weights / weights.sum(dim=-1, keepdim=True)


def sample(
    scores: torch.Tensor, sampling: SamplingParams, generators: Sequence[torch.Generator]
) -> torch.Tensor:
    """One column index per row of ``scores``: the argmax when greedy, else a draw from
    :func:`sampling_weights` with row ``i`` using ``generators[i]``."""
    if sampling.greedy:
        return scores.argmax(dim=-1)
    return draw(sampling_weights(scores, sampling), generators)


def draw(weights: torch.Tensor, generators: Sequence[torch.Generator]) -> torch.Tensor:
    """Inverse-CDF draw: row ``i`` takes the first index whose running sum of ``weights``
    exceeds ``u_i`` times the row's total, ``u_i`` uniform from ``generators[i]``."""
    device = weights.device
    uniforms = torch.cat([torch.rand(1, generator=g, device=device) for g in generators])
    # Float32 sums: rounding moves an id's share by at most 6e-8 of the total, far below
    # sampling noise, at a seventh of float64's cost.
    cumulative = weights.float().cumsum(dim=-1)
    total = cumulative[:, -1:]
    # Below the total, so the index found is one whose own weight is positive.
    target = torch.minimum(uniforms[:, None] * total, torch.nextafter(total, torch.zeros_like(total)))
    return torch.searchsorted(cumulative, target, right=True).squeeze(-1)
