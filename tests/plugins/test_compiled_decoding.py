"""The compiled one-token step decodes exactly what the eager step decodes."""

from __future__ import annotations

import pytest
import torch

from xomni_core import GridSize, ImageGenerationRequest, SamplingParams
from xomni_core.generation import generate_image_tokens
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone

TINY = XOmniParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=3,
    num_attention_heads=4,
    num_key_value_heads=2,
    num_mm_adap_layers=1,
    num_mm_head_layers=1,
    vocab_size=288,
    mm_vocab_size=67,
    image_vocab_size=64,
    max_position_embeddings=128,
)


@pytest.mark.slow
def test_compiled_decoding_gives_the_eager_tokens() -> None:
    eager = XOmniBackbone.from_params(TINY, seed=3)
    compiled = XOmniBackbone(TINY, eager.net, eager.tokenizer)
    compiled.compile_decoding()
    request = ImageGenerationRequest(
        prompts=("a red circle", "two blue squares left of a green triangle"),
        grid=GridSize(grid_h=4, grid_w=4),
        sampling=SamplingParams(temperature=1.0, min_p=0.03, cfg_scale=2.0),
        seed=11,
    )

    expected = generate_image_tokens(eager, request).ids
    for _ in range(2):  # the second run reuses the compiled graph with a new cache
        assert torch.equal(generate_image_tokens(compiled, request).ids, expected)
