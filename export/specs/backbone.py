"""Export spec of a backbone: two graphs, ``prefill`` and ``decode``.

``prefill`` runs a left-padded prompt batch from an empty cache; ``decode`` runs new tokens
after a cache of ``past`` positions. Both return the last position's float32 logits over the
whole id space and the per-layer keys and values (``present.{i}.key`` / ``.value``) to feed back
as ``past.{i}.key`` / ``.value``. ``image_mode`` (int64 scalar, 1 = image, 0 = text) applies
the mode's logit restriction inside the graph, so one graph serves both modes at the cost of
computing both heads for the last position. Two graphs rather than one merged graph keep the
prefill free of an empty-cache special case and let TensorRT tune each for its shapes.
"""

from __future__ import annotations

from .. import Dim, ExportSpec, GraphSpec, TensorSpec

PREFILL = "prefill"
DECODE = "decode"


def past_names(layer: int) -> tuple[str, str]:
    return f"past.{layer}.key", f"past.{layer}.value"


def present_names(layer: int) -> tuple[str, str]:
    return f"present.{layer}.key", f"present.{layer}.value"


def backbone_export_spec(
    *,
    num_layers: int,
    num_kv_heads: int,
    head_dim: int,
    total_vocab_size: int,
    max_positions: int,
    max_batch: int = 64,
) -> ExportSpec:
    """The two graphs of a backbone with ``num_layers`` layers of ``num_kv_heads x head_dim`` KV."""
    batch = Dim("batch", 1, 2, max_batch)
    seq = Dim("seq", 1, 8, max_positions)
    past = Dim("past", 1, 16, max_positions)
    decode_seq = Dim("seq", 1, 2, max_positions)

    def kv(names: tuple[str, str], length: str) -> tuple[TensorSpec, TensorSpec]:
        shape: tuple[int | str, ...] = ("batch", num_kv_heads, length, head_dim)
        return TensorSpec(names[0], "compute", shape), TensorSpec(names[1], "compute", shape)

    logits = TensorSpec("logits", "float32", ("batch", total_vocab_size))
    prefill = GraphSpec(
        name=PREFILL,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "seq")),
            TensorSpec("position_ids", "int64", ("batch", "seq")),
            TensorSpec("image_mode", "int64", ()),
        ),
        outputs=(logits, *(t for i in range(num_layers) for t in kv(present_names(i), "seq"))),
        dims=(batch, seq),
        validation_sizes=({"batch": 1, "seq": 3}, {"batch": 3, "seq": 13}, {"batch": 5, "seq": 4}),
        description="prompt batch from an empty cache",
    )
    decode = GraphSpec(
        name=DECODE,
        inputs=(
            TensorSpec("input_ids", "int64", ("batch", "seq")),
            TensorSpec("attention_mask", "int64", ("batch", "past+seq")),
            TensorSpec("position_ids", "int64", ("batch", "seq")),
            TensorSpec("image_mode", "int64", ()),
            *(t for i in range(num_layers) for t in kv(past_names(i), "past")),
        ),
        outputs=(logits, *(t for i in range(num_layers) for t in kv(present_names(i), "past+seq"))),
        dims=(batch, decode_seq, past),
        validation_sizes=(
            {"batch": 1, "seq": 1, "past": 7},
            {"batch": 3, "seq": 1, "past": 29},
            {"batch": 4, "seq": 3, "past": 5},
        ),
        description="new tokens after a cache of past positions",
    )
    return ExportSpec("backbone", (prefill, decode))
