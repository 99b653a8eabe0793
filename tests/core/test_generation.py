"""The shared generation loop, run on a tiny real X-Omni backbone."""

from __future__ import annotations

import pytest
import torch

from xomni_core import (
    BackboneStep,
    GridSize,
    ImageGenerationRequest,
    InputError,
    PluginError,
    SamplingParams,
    TextGenerationRequest,
)
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone

TINY = XOmniParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_mm_adap_layers=1,
    num_mm_head_layers=1,
    vocab_size=272,
    mm_vocab_size=80,
    image_vocab_size=64,
    max_position_embeddings=128,
)
GREEDY = SamplingParams(temperature=0.0)
SMALL_GRID = GridSize(3, 4)
SAMPLED = SamplingParams(temperature=1.0, min_p=0.03)


@pytest.fixture(scope="module")
def backbone() -> XOmniBackbone:
    return XOmniBackbone.from_params(TINY, seed=3)


def generate(
    backbone: XOmniBackbone, prompts: list[str], grid: GridSize = SMALL_GRID, **kwargs
) -> torch.Tensor:
    request = ImageGenerationRequest(prompts=tuple(prompts), grid=grid, **kwargs)
    return backbone.generate_image_tokens(request).ids


def recompute_greedy(backbone: XOmniBackbone, prompt: str, grid: GridSize) -> list[int]:
    """Greedy decoding that reruns the whole sequence each step: no cache, no padding."""
    ids = backbone.tokenize(prompt + backbone.image_prefix(grid.grid_h, grid.grid_w))
    out = []
    for _ in range(grid.num_tokens):
        logits = backbone.forward(torch.tensor([ids]), mode="image")[0, -1]
        token = int(logits.argmax())
        out.append(token - backbone.vocab.image_token_offset)
        ids.append(token)
    return out


def test_image_generation_gives_exactly_grid_tokens_in_the_image_range(backbone: XOmniBackbone) -> None:
    ids = generate(backbone, ["a cat", "two dogs"], grid=GridSize(2, 5), sampling=SAMPLED)
    assert ids.shape == (2, 2, 5)
    assert int(ids.min()) >= 0 and int(ids.max()) < TINY.image_vocab_size


def test_kv_cache_gives_the_same_tokens_as_recomputing_the_sequence(backbone: XOmniBackbone) -> None:
    grid = GridSize(3, 4)
    cached = generate(backbone, ["a red circle"], grid=grid, sampling=GREEDY)
    assert cached.reshape(-1).tolist() == recompute_greedy(backbone, "a red circle", grid)


def test_batched_greedy_generation_matches_each_prompt_alone(backbone: XOmniBackbone) -> None:
    prompts = ["a very long prompt about a small blue square", "cat"]
    batch = generate(backbone, prompts, sampling=GREEDY)
    for i, prompt in enumerate(prompts):
        assert torch.equal(batch[i], generate(backbone, [prompt], sampling=GREEDY)[0])


def test_batched_sampling_matches_each_prompt_alone_with_its_offset_seed(backbone: XOmniBackbone) -> None:
    prompts = ["a very long prompt about a small blue square", "cat", "two green triangles"]
    batch = generate(backbone, prompts, sampling=SAMPLED, seed=11)
    for i, prompt in enumerate(prompts):
        assert torch.equal(batch[i], generate(backbone, [prompt], sampling=SAMPLED, seed=11 + i)[0])


def test_same_seed_repeats_and_another_seed_differs(backbone: XOmniBackbone) -> None:
    first = generate(backbone, ["a tree"], grid=GridSize(4, 4), sampling=SAMPLED, seed=5)
    again = generate(backbone, ["a tree"], grid=GridSize(4, 4), sampling=SAMPLED, seed=5)
    other = generate(backbone, ["a tree"], grid=GridSize(4, 4), sampling=SAMPLED, seed=6)
    assert torch.equal(first, again)
    assert not torch.equal(first, other)


def test_top_k_of_one_is_greedy(backbone: XOmniBackbone) -> None:
    greedy = generate(backbone, ["a house"], sampling=GREEDY)
    top1 = generate(backbone, ["a house"], sampling=SamplingParams(temperature=1.0, top_k=1), seed=9)
    assert torch.equal(greedy, top1)


def test_cfg_mixes_prompt_and_image_prefix_log_probabilities(backbone: XOmniBackbone) -> None:
    scale = 3.0
    grid = GridSize(1, 1)
    prefix = backbone.image_prefix(1, 1)
    cond = backbone.forward(torch.tensor([backbone.tokenize("a boat" + prefix)]), mode="image")[0, -1]
    uncond = backbone.forward(torch.tensor([backbone.tokenize(prefix)]), mode="image")[0, -1]
    mixed = uncond.log_softmax(-1) + scale * (cond.log_softmax(-1) - uncond.log_softmax(-1))
    expected = int(mixed.argmax()) - backbone.vocab.image_token_offset
    guided = generate(
        backbone, ["a boat"], grid=grid, sampling=SamplingParams(temperature=0.0, cfg_scale=scale)
    )
    assert int(guided.reshape(-1)[0]) == expected


def test_prompt_too_long_for_the_context_is_refused(backbone: XOmniBackbone) -> None:
    with pytest.raises(InputError, match="exceeds the backbone's context of 128 positions"):
        generate(backbone, ["x" * 120], grid=GridSize(4, 4), sampling=GREEDY)


def test_text_generation_stops_at_max_new_tokens_or_end_of_sequence(backbone: XOmniBackbone) -> None:
    prompt = tuple(backbone.tokenize(backbone.chat_prompt("hello")))
    [answer] = backbone.generate_text(TextGenerationRequest(input_ids=(prompt,), max_new_tokens=7))
    assert 0 < len(answer) <= 7 or backbone.vocab.eos_id not in answer
    assert all(token < backbone.vocab.text_vocab_size for token in answer)
    assert backbone.vocab.eos_id not in answer


class WholeRowBackbone(XOmniBackbone):
    """A backbone that scores the whole id space, every id outside the mode at the lowest value,
    as backbones written before steps scored their mode's ids alone did."""

    def new_cache(self, batch_size: int, max_length: int) -> None:
        return None

    def forward_step(self, input_ids, attention_mask, position_ids, past, mode):  # type: ignore[no-untyped-def]
        step = super().forward_step(input_ids, attention_mask, position_ids, past, mode)
        start = self.vocab.mode_range(mode).start
        whole = torch.full(
            (step.logits.shape[0], self.vocab.total_vocab_size), torch.finfo(torch.float32).min
        )
        whole[:, start : start + step.logits.shape[1]] = step.logits
        return BackboneStep(logits=whole, past=step.past)


class WrongWidthBackbone(XOmniBackbone):
    def forward_step(self, input_ids, attention_mask, position_ids, past, mode):  # type: ignore[no-untyped-def]
        step = super().forward_step(input_ids, attention_mask, position_ids, past, mode)
        return BackboneStep(logits=step.logits[:, 1:], past=step.past)


def test_a_backbone_scoring_the_whole_id_space_draws_the_same_tokens(backbone: XOmniBackbone) -> None:
    whole = WholeRowBackbone(TINY, backbone.net, backbone.tokenizer)
    prompts = ["a cat", "two dogs"]
    for sampling in (SAMPLED, GREEDY, SamplingParams(temperature=0.8, top_k=7, cfg_scale=2.0)):
        assert torch.equal(
            generate(whole, prompts, sampling=sampling, seed=5),
            generate(backbone, prompts, sampling=sampling, seed=5),
        )


def test_logits_of_another_width_are_a_plugin_error_naming_the_widths(backbone: XOmniBackbone) -> None:
    wrong = WrongWidthBackbone(TINY, backbone.net, backbone.tokenizer)
    with pytest.raises(PluginError, match="width 63; expected 64"):
        generate(wrong, ["a cat"], sampling=SAMPLED)
