"""ONNX export of the X-Omni backbone under the backbone export spec.

Two body wrappers give :class:`~xomni_plugins.backbones.x_omni.model.XOmniForCausalLM` the flat,
tensor-only signature of the spec's ``prefill`` and ``decode`` graphs: the KV cache enters as
explicit ``past.{i}.key/value`` inputs and leaves as ``present.{i}.key/value`` outputs, and the
last position's hidden state leaves as ``hidden``. Two head wrappers turn it into the logits of
one mode each: ``lm_head`` for text, the image rows of ``mm_head`` for images.

The exported copy attends with :func:`grouped_attention` instead of transformers' SDPA path,
whose ONNX form repeats every cached key and value once per query head of its group: at batch
16 those copies took a third of onnxruntime's decode step.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, cast

import torch
from torch import nn
from torch.nn import functional as F
from transformers import AttentionInterface
from transformers.cache_utils import DynamicCache, DynamicLayer

from xomni_core import torch_dtype
from xomni_export import GraphExport, Precision
from xomni_export.runtime.backbone import BackboneRuntimeInfo
from xomni_export.specs.backbone import DECODE, IMAGE_HEAD, PREFILL, TEXT_HEAD, backbone_export_spec

from .model import XOmniForCausalLM, attention_bias

if TYPE_CHECKING:
    from .model import XOmniBackbone


GROUPED_ATTENTION = "xomni-grouped"


def grouped_attention(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs: object,
) -> tuple[torch.Tensor, None]:
    """Attention of ``query (batch, heads, seq, dim)`` over ``key``/``value (batch, kv_heads,
    past + seq, dim)`` with the additive ``attention_mask (batch, 1, seq, past + seq)``.

    The query heads sharing a key/value head are stacked along the sequence axis, so each
    key/value head is read once by one matrix product, never copied per query head. Softmax runs
    in float32, as in transformers' eager attention. Returns ``(batch, seq, heads, dim)``.
    """
    batch, heads, seq, dim = query.shape
    kv_heads, length = key.shape[1], key.shape[2]
    group = heads // kv_heads
    scale = dim**-0.5 if scaling is None else scaling
    stacked = query.reshape(batch, kv_heads, group * seq, dim)
    scores = torch.matmul(stacked, key.transpose(-1, -2)) * scale
    scores = scores.view(batch, kv_heads, group, seq, length)
    if attention_mask is not None:
        scores = scores + attention_mask[:, :, None]
    probs = torch.softmax(scores.float(), dim=-1).to(query.dtype)
    output = torch.matmul(probs.view(batch, kv_heads, group * seq, length), value)
    return output.view(batch, heads, seq, dim).transpose(1, 2).contiguous(), None


AttentionInterface.register(GROUPED_ATTENTION, grouped_attention)


class _BodyGraph(nn.Module):
    """What both body graphs share: run new tokens after a cache, keep the last position."""

    def __init__(self, net: XOmniForCausalLM) -> None:
        super().__init__()
        self.model = net.model
        self.num_layers = net.params.num_hidden_layers

    def step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        cache: DynamicCache,
    ) -> tuple[torch.Tensor, ...]:
        dtype = self.model.lm_norm.weight.dtype
        bias = attention_bias(attention_mask, input_ids.shape[1], dtype)
        hidden = self.model(input_ids, bias, position_ids, cache)[:, -1]
        layers = cast(list[DynamicLayer], cache.layers[: self.num_layers])
        present = cast(list[torch.Tensor], [t for layer in layers for t in (layer.keys, layer.values)])
        return (hidden, *present)


class PrefillGraph(_BodyGraph):
    """``prefill``: a left-padded prompt batch from an empty cache."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        return self.step(input_ids, attention_mask, position_ids, DynamicCache())


class DecodeGraph(_BodyGraph):
    """``decode``: new tokens after ``past.{i}.key/value`` given as inputs, layer by layer."""

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        *past: torch.Tensor,
    ) -> tuple[torch.Tensor, ...]:
        cache = DynamicCache()
        for layer in range(self.num_layers):
            cache.update(past[2 * layer], past[2 * layer + 1], layer)
        return self.step(input_ids, attention_mask, position_ids, cache)


class HeadGraph(nn.Module):
    """``text_head`` / ``image_head``: the last hidden state to float32 logits of one mode.

    Holds only the rows its mode emits (a view of the network's head, not a copy), so the
    exported graph stores those rows and nothing else.
    """

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.weight = nn.Parameter(weight.detach(), requires_grad=False)

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return F.linear(hidden, self.weight).float()


def export_graphs(backbone: XOmniBackbone, precision: Precision) -> list[GraphExport]:
    """The body and head graphs of ``backbone`` with a copy of its net at ``precision``."""
    params = backbone.params
    dtype = torch_dtype(precision)
    net = copy.deepcopy(backbone.net).to(device="cpu", dtype=dtype).eval()
    net.model.reset_rotary()
    net.model.config._attn_implementation = GROUPED_ATTENTION  # the copy's own config
    spec = backbone_export_spec(
        num_layers=params.num_hidden_layers,
        num_kv_heads=params.num_key_value_heads,
        head_dim=params.head_dim,
        hidden_size=params.hidden_size,
        text_vocab_size=params.vocab_size,
        image_vocab_size=params.image_vocab_size,
        max_positions=params.max_position_embeddings,
    )
    kv_shape = (params.num_key_value_heads, params.head_dim)

    def prefill_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        batch, seq = sizes["batch"], sizes["seq"]
        ids, mask, positions = _prompt(batch, seq, 0, params.total_vocab_size, generator)
        return [ids, mask, positions]

    def decode_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        batch, seq, past = sizes["batch"], sizes["seq"], sizes["past"]
        ids, mask, positions = _prompt(batch, seq, past, params.total_vocab_size, generator)
        cache = [
            torch.randn((batch, kv_shape[0], past, kv_shape[1]), generator=generator).to(dtype)
            for _ in range(2 * params.num_hidden_layers)
        ]
        return [ids, mask, positions, *cache]

    def head_inputs(sizes: Mapping[str, int], seed: int) -> list[torch.Tensor]:
        generator = torch.Generator().manual_seed(seed)
        # Unit-scale entries, as the final RMSNorm leaves them.
        return [torch.randn((sizes["batch"], params.hidden_size), generator=generator).to(dtype)]

    image_rows = net.mm_head.weight[: params.image_vocab_size]
    return [
        GraphExport(spec.graph(PREFILL), PrefillGraph(net), prefill_inputs),
        GraphExport(spec.graph(DECODE), DecodeGraph(net), decode_inputs),
        GraphExport(spec.graph(TEXT_HEAD), HeadGraph(net.lm_head.weight), head_inputs),
        GraphExport(spec.graph(IMAGE_HEAD), HeadGraph(image_rows), head_inputs),
    ]


def write_export_assets(backbone: XOmniBackbone, folder: Path) -> None:
    """The text tokenizer's files and ``backbone_runtime.json`` (id layout, prompt templates)."""
    backbone.tokenizer.save_pretrained(str(folder))
    som, _, image = backbone.params.mm_special_tokens
    has_template = bool(getattr(backbone.tokenizer, "chat_template", None))
    BackboneRuntimeInfo(
        vocab=backbone.vocab,
        image_prefix_template=f"{som}{{grid_h}} {{grid_w}}{image}",
        use_tokenizer_chat_template=has_template,
        # XOmniBackbone.chat_prompt's markup for tokenizers without a template.
        chat_prompt_template="<|im_start|>user\n{user_turn}<|im_end|>\n<|im_start|>assistant\n",
    ).write(folder)


def _prompt(
    batch: int, seq: int, past: int, vocab_size: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Ids over the whole id space; a mask over ``past + seq`` positions, left-padded inside the
    first ``max(past, seq - 1)`` positions (so each row keeps a real token); matching positions."""
    total = past + seq
    ids = torch.randint(0, vocab_size, (batch, seq), generator=generator)
    room = past if past > 0 else seq - 1
    pads = torch.randint(0, room + 1, (batch,), generator=generator)
    if batch > 1 and room > 0:
        pads[0], pads[-1] = 0, max(int(pads[-1]), 1)  # one unpadded row, one padded row
    mask = (torch.arange(total)[None, :] >= pads[:, None]).long()
    positions = (mask.cumsum(-1) - 1).clamp(min=0)[:, past:]
    return ids, mask, positions
