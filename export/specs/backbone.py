"""Export spec of a backbone: two body graphs, ``prefill`` and ``decode``, and one head graph per
generation mode, ``text_head`` and ``image_head``.

``prefill`` runs a left-padded prompt batch from an empty cache; ``decode`` runs new tokens
after a cache of ``past`` positions. Both return the last position's final hidden state
``hidden (batch, hidden_size)`` in the compute dtype and the per-layer keys and values
(``present.{i}.key`` / ``.value``) to feed back as ``past.{i}.key`` / ``.value``.

A head graph turns ``hidden`` into float32 ``logits`` over the ids its mode can emit:
``text_head`` over the text ids, ``image_head`` over the image ids (column ``j`` is id
``image_token_offset + j``). A step therefore reads the body and its own mode's head only: at
X-Omni's real vocabulary the text head is 152 k rows, nine times the image head, and an image
step never touches it. The body's weights belong to both body graphs and each head's to its
head graph only; the export stores every tensor once, in the weights file all graphs of the
folder share (:mod:`xomni_export.weights`).

Two body graphs rather than one merged graph keep the prefill free of an empty-cache special
case and let TensorRT tune each for its shapes.
"""

from __future__ import annotations

from collections.abc import Mapping

from xomni_core import GenerationMode

from .. import Dim, ExportSpec, GraphSpec, TensorSpec

PREFILL = "prefill"
DECODE = "decode"
TEXT_HEAD = "text_head"
IMAGE_HEAD = "image_head"
#: The head graph of each generation mode.
HEADS: Mapping[GenerationMode, str] = {"text": TEXT_HEAD, "image": IMAGE_HEAD}
GRAPHS = (PREFILL, DECODE, TEXT_HEAD, IMAGE_HEAD)


def past_names(layer: int) -> tuple[str, str]:
    return f"past.{layer}.key", f"past.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


def backbone_export_spec(
    *,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    hidden_size: int,
    text_vocab_size: int,
    image_vocab_size: int,
    max_positions: int,
    max_batch: int = 64,
) -> ExportSpec:
    """The graphs of a backbone with ``num_layers`` layers of ``num_kv_heads x head_dim`` KV."""
    batch = Dim("batch", 1, 2, max_batch)
    seq = Dim("seq", 1, 8, max_positions)
    past = Dim("past", 1, 16, max_positions)
    decode_seq = Dim("seq", 1, 2, max_positions)

    def kv(names: tuple[str, str], length: str) -> tuple[TensorSpec, TensorSpec]:
        shape: tuple[int | str, ...] = ("batch", num_kv_heads, length, head_dim)
        return TensorSpec(names[0], "compute", shape), TensorSpec(names[1], "compute", shape)

    hidden = TensorSpec("hidden", "compute", ("batch", hidden_size))
    prefill = GraphSpec(
        name=PREFILL,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "seq")),
            TensorSpec("position_ids", "int64", ("batch", "seq")),
        ),
        outputs=(hidden, *(t for i in range(num_layers) for t in kv(present_names(i), "seq"))),
        dims=(batch, seq),
        validation_sizes=({"batch": 1, "seq": 3}, {"batch": 3, "seq": 13}, {"batch": 5, "seq": 4}),
        description="prompt batch from an empty cache to the last hidden state",
    )
    decode = GraphSpec(
        name=DECODE,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "past+seq")),
            TensorSpec("position_ids", "int64", ("batch", "seq")),
            *(t for i in range(num_layers) for t in kv(past_names(i), "past")),
        ),
        outputs=(hidden, *(t for i in range(num_layers) for t in kv(present_names(i), "past+seq"))),
        dims=(batch, decode_seq, past),
        validation_sizes=(
            {"batch": 1, "seq": 1, "past": 7},
            {"batch": 3, "seq": 1, "past": 29},
            {"batch": 4, "seq": 3, "past": 5},
        ),
        description="new tokens after a cache of past positions to the last hidden state",
    )

    def head(name: str, width: int, ids: str) -> GraphSpec:
        return GraphSpec(
            name=name,
            inputs=(hidden,),
            outputs=(TensorSpec("logits", "float32", ("batch", width)),),
            dims=(batch,),
            validation_sizes=({"batch": 1}, {"batch": 3}, {"batch": 5}),
            description=f"last hidden state to float32 logits over the {ids} ids",
        )

    return ExportSpec(
        "backbone",
        (
            prefill,
            decode,
            head(TEXT_HEAD, text_vocab_size, "text"),
            head(IMAGE_HEAD, image_vocab_size, "image"),
        ),
    )
