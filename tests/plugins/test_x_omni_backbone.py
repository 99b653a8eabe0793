"""The X-Omni backbone plugin, at tiny sizes: id layout, vision-specific layers, mode restriction,
cache and padding equivalence, folder round trip and the 7B preset."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError
from safetensors.torch import load_file, save_file

from xomni_core import CheckpointError, ConfigError, InputError, TokenGrid
from xomni_plugins.backbones.x_omni import PLUGIN, XOmniParams, count_parameters
from xomni_plugins.backbones.x_omni.model import XOmniBackbone, XOmniForCausalLM

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
    max_position_embeddings=256,
)
LOWEST = torch.finfo(torch.float32).min


@pytest.fixture
def backbone() -> XOmniBackbone:
    return XOmniBackbone.from_params(TINY, seed=0)


def mixed_ids(backbone: XOmniBackbone) -> list[int]:
    """A prompt, an image prefix and a few image tokens."""
    image = [backbone.vocab.image_token_id(k) for k in (5, 17, 63, 0)]
    return backbone.tokenize("a cat" + backbone.image_prefix(2, 2)) + image


def test_image_tokens_follow_the_text_vocab_then_the_special_tokens(
    backbone: XOmniBackbone,
) -> None:
    vocab = backbone.vocab
    assert vocab.image_token_offset == TINY.vocab_size
    assert backbone.tokenizer.convert_tokens_to_ids("<MM-Token-0>") == TINY.vocab_size
    assert backbone.tokenizer.convert_tokens_to_ids("<MM-Token-63>") == TINY.vocab_size + 63
    assert (vocab.som_id, vocab.eom_id, vocab.image_id) == (
        TINY.vocab_size + 64,
        TINY.vocab_size + 65,
        TINY.vocab_size + 66,
    )
    assert vocab.total_vocab_size == TINY.vocab_size + TINY.mm_vocab_size
    assert vocab.eos_id < TINY.vocab_size and vocab.pad_id < TINY.vocab_size


def test_tokenizer_recognises_image_markup(backbone: XOmniBackbone) -> None:
    vocab = backbone.vocab
    digits = backbone.tokenize("3 4")
    assert backbone.tokenize("<SOM>3 4<IMAGE>") == [vocab.som_id, *digits, vocab.image_id]
    assert backbone.tokenize("<MM-Token-5><EOM>") == [vocab.image_token_id(5), vocab.eom_id]


def test_image_segment_ids_wrap_row_major_tokens(backbone: XOmniBackbone) -> None:
    grid = TokenGrid(torch.tensor([[[1, 2], [3, 4]]]))
    ids = backbone.image_segment_ids(grid)
    assert ids == [
        *backbone.tokenize("<SOM>2 2<IMAGE>"),
        *(backbone.vocab.image_token_id(k) for k in (1, 2, 3, 4)),
        backbone.vocab.eom_id,
    ]


def test_detokenize_drops_multimodal_and_special_tokens(backbone: XOmniBackbone) -> None:
    ids = [*mixed_ids(backbone), backbone.vocab.eom_id, *backbone.tokenize(" done<|im_end|>")]
    assert backbone.detokenize(ids) == "a cat2 2 done"


def test_chat_prompt_uses_qwen_markup(backbone: XOmniBackbone) -> None:
    prompt = backbone.chat_prompt("<SOM>1 1<IMAGE><MM-Token-0><EOM>\nWhat is it?")
    assert prompt == (
        "<|im_start|>user\n<SOM>1 1<IMAGE><MM-Token-0><EOM>\nWhat is it?<|im_end|>\n<|im_start|>assistant\n"
    )


def test_text_positions_ignore_vision_specific_layers(backbone: XOmniBackbone) -> None:
    text = torch.tensor([backbone.tokenize("only words here")])
    mixed = torch.tensor([mixed_ids(backbone)])
    text_before, mixed_before = backbone.forward(text), backbone.forward(mixed, mode="image")

    with torch.no_grad():
        for index in (0, TINY.num_hidden_layers - 1):  # the adaptation and the head layer
            for weight in backbone.net.model.layers[index].parameters():
                weight.add_(torch.randn_like(weight))
    text_after, mixed_after = backbone.forward(text), backbone.forward(mixed, mode="image")

    assert torch.equal(text_before, text_after)
    image_positions = mixed[0] >= TINY.vocab_size
    assert not torch.allclose(mixed_before[0, image_positions], mixed_after[0, image_positions])


def test_multimodal_ids_read_the_multimodal_table(backbone: XOmniBackbone) -> None:
    ids = torch.tensor([mixed_ids(backbone)])
    before = backbone.forward(ids)
    with torch.no_grad():
        backbone.net.model.mm_embed_tokens.weight[17].add_(1.0)  # image token 17
    after = backbone.forward(ids)
    first_changed = int(ids[0].tolist().index(backbone.vocab.image_token_id(17)))
    assert torch.equal(before[:, :first_changed], after[:, :first_changed])
    assert not torch.allclose(before[:, first_changed:], after[:, first_changed:])


def test_text_mode_gives_logits_only_to_text_ids(backbone: XOmniBackbone) -> None:
    logits = backbone.forward(torch.tensor([mixed_ids(backbone)]), mode="text")
    assert logits.dtype == torch.float32
    assert logits.shape[-1] == backbone.vocab.total_vocab_size
    assert bool((logits[..., : TINY.vocab_size] > LOWEST).all())
    assert bool((logits[..., TINY.vocab_size :] == LOWEST).all())


def test_image_mode_gives_logits_only_to_image_ids(backbone: XOmniBackbone) -> None:
    logits = backbone.forward(torch.tensor([mixed_ids(backbone)]), mode="image")
    start, stop = TINY.vocab_size, TINY.vocab_size + TINY.image_vocab_size
    assert logits.dtype == torch.float32
    assert bool((logits[..., start:stop] > LOWEST).all())
    assert bool((logits[..., :start] == LOWEST).all())
    assert bool((logits[..., stop:] == LOWEST).all())  # the special tokens included


def test_lowest_logit_is_that_of_the_compute_dtype(backbone: XOmniBackbone) -> None:
    backbone.to(dtype="bfloat16")
    logits = backbone.forward(torch.tensor([mixed_ids(backbone)]), mode="image")
    assert logits.dtype == torch.float32
    assert logits[0, -1, 0].item() == torch.finfo(torch.bfloat16).min


def image_columns(backbone: XOmniBackbone, logits: torch.Tensor) -> torch.Tensor:
    ids = backbone.vocab.mode_range("image")
    return logits[..., ids.start : ids.stop]


@pytest.mark.parametrize("cache", ["dynamic", "static"])
def test_cached_steps_match_the_full_sequence(backbone: XOmniBackbone, cache: str) -> None:
    ids = torch.tensor([mixed_ids(backbone)])
    full = backbone.forward(ids, mode="image")

    prefix = 6
    past = backbone.new_cache(1, ids.shape[1]) if cache == "static" else None
    mask = torch.ones(1, prefix, dtype=torch.long)
    step = backbone.forward_step(ids[:, :prefix], mask, torch.arange(prefix)[None], past, "image")
    for position in range(prefix, ids.shape[1]):
        mask = torch.ones(1, position + 1, dtype=torch.long)
        step = backbone.forward_step(
            ids[:, position : position + 1], mask, torch.tensor([[position]]), step.past, "image"
        )

    assert step.logits.shape == (1, backbone.vocab.image_vocab_size)
    torch.testing.assert_close(step.logits, image_columns(backbone, full[:, -1]), atol=1e-5, rtol=0)


def test_text_mode_step_scores_the_text_ids(backbone: XOmniBackbone) -> None:
    ids = torch.tensor([mixed_ids(backbone)])
    full = backbone.forward(ids, mode="text")
    step = backbone.forward_step(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None], None, "text")

    assert step.logits.shape == (1, backbone.vocab.text_vocab_size)
    torch.testing.assert_close(step.logits, full[:, -1, : backbone.vocab.text_vocab_size], atol=1e-5, rtol=0)


def test_static_cache_steps_equal_dynamic_cache_steps_on_a_padded_batch(backbone: XOmniBackbone) -> None:
    long_row = mixed_ids(backbone)
    short_row = backbone.tokenize("dog") + backbone.tokenize(backbone.image_prefix(1, 2))
    ids, mask, positions = left_padded_batch(backbone, [long_row, short_row])
    new_tokens = 5
    dynamic = backbone.forward_step(ids, mask, positions, None, "image")
    static = backbone.forward_step(
        ids, mask, positions, backbone.new_cache(2, ids.shape[1] + new_tokens), "image"
    )
    torch.testing.assert_close(static.logits, dynamic.logits, atol=1e-5, rtol=0)

    for step in range(new_tokens):
        next_ids = static.logits.argmax(-1, keepdim=True) + backbone.vocab.image_token_offset
        mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
        positions = positions[:, -1:] + 1
        dynamic = backbone.forward_step(next_ids, mask, positions, dynamic.past, "image")
        static = backbone.forward_step(next_ids, mask, positions, static.past, "image")
        torch.testing.assert_close(static.logits, dynamic.logits, atol=1e-5, rtol=0, msg=f"step {step}")


def test_static_cache_refuses_a_step_beyond_its_room(backbone: XOmniBackbone) -> None:
    ids = torch.tensor([mixed_ids(backbone)])
    past = backbone.new_cache(1, ids.shape[1] - 1)

    with pytest.raises(InputError, match="room for"):
        backbone.forward_step(ids, torch.ones_like(ids), torch.arange(ids.shape[1])[None], past, "image")


def left_padded_batch(
    backbone: XOmniBackbone, rows: list[list[int]]
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids, attention mask and position ids of ``rows`` padded on the left."""
    width = max(len(row) for row in rows)
    pad = backbone.vocab.pad_id
    ids = torch.tensor([[pad] * (width - len(row)) + row for row in rows])
    mask = torch.tensor([[0] * (width - len(row)) + [1] * len(row) for row in rows])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    return ids, mask, positions


def test_left_padding_gives_the_unpadded_last_logits(backbone: XOmniBackbone) -> None:
    long_row = mixed_ids(backbone)
    short_row = backbone.tokenize("dog") + backbone.tokenize(backbone.image_prefix(1, 2))
    ids, mask, positions = left_padded_batch(backbone, [long_row, short_row])

    padded = backbone.forward_step(ids, mask, positions, None, "image").logits
    alone = backbone.forward(torch.tensor([short_row]), mode="image")

    torch.testing.assert_close(padded[1], image_columns(backbone, alone[0, -1]), atol=1e-5, rtol=0)


def test_left_padded_cached_step_matches_the_unpadded_sequence(backbone: XOmniBackbone) -> None:
    long_row = mixed_ids(backbone)
    short_row = backbone.tokenize("dog") + backbone.tokenize(backbone.image_prefix(1, 2))
    ids, mask, positions = left_padded_batch(backbone, [long_row, short_row])
    step = backbone.forward_step(ids, mask, positions, None, "image")

    next_ids = torch.tensor([[backbone.vocab.image_token_id(9)]] * 2)
    next_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    next_positions = positions[:, -1:] + 1
    step = backbone.forward_step(next_ids, next_mask, next_positions, step.past, "image")
    alone = backbone.forward(torch.tensor([[*short_row, int(next_ids[1, 0])]]), mode="image")

    torch.testing.assert_close(step.logits[1], image_columns(backbone, alone[0, -1]), atol=1e-5, rtol=0)


def test_save_and_load_give_identical_logits(backbone: XOmniBackbone, tmp_path: Path) -> None:
    backbone.save_pretrained(tmp_path / "backbone")
    loaded = XOmniBackbone.from_pretrained(tmp_path / "backbone")

    ids = torch.tensor([mixed_ids(backbone)])
    assert loaded.params == backbone.params
    assert loaded.vocab == backbone.vocab
    assert loaded.tokenize("<SOM>3 4<IMAGE>x") == backbone.tokenize("<SOM>3 4<IMAGE>x")
    assert loaded.chat_prompt("hi") == backbone.chat_prompt("hi")
    assert torch.equal(loaded.forward(ids, mode="image"), backbone.forward(ids, mode="image"))
    assert torch.equal(loaded.forward(ids, mode="text"), backbone.forward(ids, mode="text"))


def test_missing_tensor_raises_checkpoint_error_naming_it(backbone: XOmniBackbone, tmp_path: Path) -> None:
    folder = tmp_path / "backbone"
    backbone.save_pretrained(folder)
    tensors = load_file(folder / "model.safetensors")
    del tensors["model.mm_norm.weight"]
    save_file(tensors, folder / "model.safetensors")

    with pytest.raises(CheckpointError, match=r"model\.mm_norm\.weight"):
        XOmniBackbone.from_pretrained(folder)


def test_from_params_is_reproducible_for_a_seed() -> None:
    first = XOmniBackbone.from_params(TINY, seed=3).net.state_dict()
    again = XOmniBackbone.from_params(TINY, seed=3).net.state_dict()
    other = XOmniBackbone.from_params(TINY, seed=4).net.state_dict()
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert not torch.equal(first["lm_head.weight"], other["lm_head.weight"])


def test_7b_preset_parameter_count_matches_the_formula() -> None:
    params = XOmniParams()
    with torch.device("meta"):
        net = XOmniForCausalLM(params)
    # Qwen2.5-7B-Instruct (7,615,616,512) plus mm_embed_tokens, mm_head and mm_norm.
    assert net.num_parameters() == count_parameters(params) == 7_733_519_360
    names = set(net.state_dict())
    assert {
        "model.lm_embed_tokens.weight",
        "model.mm_embed_tokens.weight",
        "model.layers.27.self_attn.q_proj.bias",
        "model.layers.27.mlp.down_proj.weight",
        "model.lm_norm.weight",
        "model.mm_norm.weight",
        "lm_head.weight",
        "mm_head.weight",
    } <= names


def test_params_reject_more_vision_layers_than_layers() -> None:
    with pytest.raises(ValidationError, match="num_mm_adap_layers"):
        XOmniParams(num_hidden_layers=6, num_mm_adap_layers=4, num_mm_head_layers=4)


def test_from_params_rejects_a_text_vocab_smaller_than_the_byte_tokenizer() -> None:
    with pytest.raises(ConfigError, match="vocab_size"):
        XOmniBackbone.from_params(TINY.model_copy(update={"vocab_size": 100}))


def test_plugin_descriptor_stays_light_and_loads_the_backbone() -> None:
    probe = (
        "import sys, xomni_plugins.backbones.x_omni as m; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(m.PLUGIN.qualified_name)"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "backbone/x-omni"
    assert PLUGIN.load() is XOmniBackbone
