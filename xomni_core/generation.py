"""The shared autoregressive loop behind every backbone.

Works on any :class:`~xomni_core.Backbone` through ``forward_step`` alone, so PyTorch and
exported runtimes generate identically. Prompts are left-padded into one batch; sample ``i``
draws from its own generator (seed ``seed + i``, or its own from ``seeds``), so batching never
changes a sample's tokens.
Classifier-free guidance mixes log-probabilities of the prompt and of the negative prompt (the
request's negative prompt before the image prefix, or the image prefix alone) as
``uncond + scale * (cond - uncond)``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from .errors import InputError, PluginError
from .sampling import sample
from .types import (
    GenerationMode,
    GridSize,
    ImageGenerationRequest,
    SamplingParams,
    StepCallback,
    TextGenerationRequest,
    TokenGrid,
)

if TYPE_CHECKING:
    from .interfaces import Backbone


def image_prompt_ids(backbone: Backbone[Any], prompt: str, grid: GridSize) -> list[int]:
    """The ids image generation conditions on: ``prompt`` followed by the image prefix. The empty
    prompt gives the unconditional row that classifier-free guidance contrasts with."""
    return backbone.tokenize(prompt + backbone.image_prefix(grid.grid_h, grid.grid_w))


def generate_image_tokens(backbone: Backbone[Any], request: ImageGenerationRequest) -> TokenGrid:
    """Sample exactly ``grid.num_tokens`` image tokens per prompt, row-major."""
    vocab = backbone.vocab
    grid = request.grid
    prompts = [image_prompt_ids(backbone, prompt, grid) for prompt in request.prompts]
    rows = prompts
    if request.sampling.cfg_scale > 1.0:
        negatives = request.negative_prompts or ("",) * len(prompts)
        rows = prompts + [image_prompt_ids(backbone, negative, grid) for negative in negatives]
    _check_context(rows, grid.num_tokens, vocab.max_positions, what="image tokens")
    tokens = _decode_loop(
        backbone,
        rows,
        num_new_tokens=grid.num_tokens,
        mode="image",
        sampling=request.sampling,
        seeds=request.sample_seeds(),
        stop_id=None,
        show_progress=request.show_progress,
        description="image tokens",
        callback=request.callback,
    )
    indices = tokens - vocab.image_token_offset
    return TokenGrid(indices.reshape(len(prompts), grid.grid_h, grid.grid_w).cpu())


def generate_text(backbone: Backbone[Any], request: TextGenerationRequest) -> list[list[int]]:
    """Continue each prompt in text mode; each result stops before the end-of-sequence id."""
    prompts = [list(ids) for ids in request.input_ids]
    _check_context(prompts, request.max_new_tokens, backbone.vocab.max_positions, what="new tokens")
    eos = backbone.vocab.eos_id
    tokens = _decode_loop(
        backbone,
        prompts,
        num_new_tokens=request.max_new_tokens,
        mode="text",
        sampling=request.sampling,
        seeds=tuple(request.seed + i for i in range(len(prompts))),
        stop_id=eos,
        show_progress=request.show_progress,
        description="text tokens",
        callback=request.callback,
    )
    results = []
    for row in tokens.tolist():
        results.append(row[: row.index(eos)] if eos in row else row)
    return results


def _check_context(prompts: Sequence[Sequence[int]], new_tokens: int, limit: int, what: str) -> None:
    longest = max(len(p) for p in prompts)
    if longest + new_tokens > limit:
        raise InputError(
            f"prompt of {longest} tokens plus {new_tokens} {what} exceeds the backbone's "
            f"context of {limit} positions; shorten the prompt or ask for fewer tokens"
        )


@torch.inference_mode()
def _decode_loop(
    backbone: Backbone[Any],
    rows: list[list[int]],
    *,
    num_new_tokens: int,
    mode: GenerationMode,
    sampling: SamplingParams,
    seeds: Sequence[int],
    stop_id: int | None,
    show_progress: bool,
    description: str,
    callback: StepCallback | None = None,
) -> torch.Tensor:
    """Run prefill then one step per new token, sample ``i`` drawing from a generator seeded
    ``seeds[i]``; ``rows`` beyond ``len(seeds)`` are negatives. ``callback`` sees the tokens
    sampled so far after each step."""
    device = backbone.device
    batch_size = len(seeds)
    ids = backbone.vocab.mode_range(mode)
    input_ids, prompt_mask = _left_pad(rows, backbone.vocab.pad_id, device)
    prompt_length = input_ids.shape[1]
    max_length = prompt_length + num_new_tokens - 1  # the last new token is never fed back
    # Every position the loop reaches, allocated once; each step passes a view of it.
    attention_mask = torch.ones((len(rows), max_length), dtype=torch.long, device=device)
    attention_mask[:, :prompt_length] = prompt_mask
    position_ids = (prompt_mask.cumsum(-1) - 1).clamp(min=0)
    generators = [_generator(seed, device) for seed in seeds]
    out = torch.empty(batch_size, num_new_tokens, dtype=torch.long, device=device)
    finished = torch.zeros(batch_size, dtype=torch.bool, device=device)
    past = backbone.new_cache(len(rows), max_length)
    steps = tqdm(range(num_new_tokens), desc=description, disable=not show_progress, leave=False)
    for step in steps:
        mask = attention_mask[:, : prompt_length + step]
        result = backbone.forward_step(input_ids, mask, position_ids, past, mode)
        past = result.past
        logits = _mode_logits(result.logits, ids, backbone.vocab.total_vocab_size)
        next_ids = sample(guided_scores(logits, batch_size, sampling.cfg_scale), sampling, generators)
        next_ids += ids.start
        if stop_id is not None:
            next_ids = torch.where(finished, torch.full_like(next_ids, stop_id), next_ids)
            finished |= next_ids == stop_id
        out[:, step] = next_ids
        if callback is not None:
            callback(step, None, {"tokens": out[:, : step + 1]})
        if stop_id is not None and bool(finished.all()):
            return out[:, : step + 1]
        input_ids = next_ids.repeat(len(rows) // batch_size)[:, None]
        position_ids = position_ids[:, -1:] + 1
    return out


def _mode_logits(logits: torch.Tensor, ids: range, total_vocab_size: int) -> torch.Tensor:
    """Float32 logits over ``ids``; a backbone that still returns the whole id space (with
    every id outside ``ids`` at the lowest value) gets its row cut to ``ids``."""
    width = logits.shape[-1]
    if width == len(ids):
        return logits.float()
    if width == total_vocab_size:
        return logits[:, ids.start : ids.stop].float()
    raise PluginError(
        f"backbone returned logits of width {width}; expected {len(ids)} (the ids of this "
        f"generation mode, {ids.start} to {ids.stop - 1})"
    )


def _left_pad(rows: list[list[int]], pad_id: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    length = max(len(row) for row in rows)
    ids = torch.full((len(rows), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(rows), length), dtype=torch.long)
    for i, row in enumerate(rows):
        ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
        mask[i, length - len(row) :] = 1
    return ids.to(device), mask.to(device)


def _generator(seed: int, device: torch.device) -> torch.Generator:
    generator = torch.Generator(device=device)
    generator.manual_seed(seed)
    return generator


def guided_scores(logits: torch.Tensor, batch_size: int, cfg_scale: float) -> torch.Tensor:
    """Classifier-free guidance: rows past ``batch_size`` are the unconditional twins of the
    first ``batch_size``; without them ``logits`` come back as they are."""
    if logits.shape[0] == batch_size:
        return logits
    cond = torch.log_softmax(logits[:batch_size], dim=-1)
    uncond = torch.log_softmax(logits[batch_size:], dim=-1)
    return uncond + cfg_scale * (cond - uncond)
