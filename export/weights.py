"""One weight file per exported component, each distinct tensor stored once.

Graphs of one component often hold the same weights (a backbone's ``prefill`` and ``decode``
run the same layers). After export, every initializer of at least :data:`MIN_BYTES` moves out
of its graph into :data:`WEIGHTS_FILE` beside the graphs, as ONNX external data; tensors with
equal bytes share one copy. Tensors of :data:`MAPPED_BYTES` or more start at page-aligned offsets,
so onnxruntime maps them into memory instead of reading them, and sessions of one folder share
those pages.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path

WEIGHTS_FILE = "weights.bin"
MIN_BYTES = 1024
MAPPED_BYTES = 1 << 20
#: A multiple of the page size of common platforms (and of Windows' allocation granularity).
PAGE_ALIGNMENT = 64 * 1024
ALIGNMENT = 64


def store_weights_once(folder: Path, graph_files: Sequence[str]) -> bool:
    """Move the large initializers of ``folder/<graph_files>`` into ``folder/weights.bin``,
    dropping each graph's own external data files; returns whether any tensor moved."""
    import onnx
    from onnx.external_data_helper import load_external_data_for_model

    offsets: dict[tuple[str, int], int] = {}
    target = folder / WEIGHTS_FILE
    with target.open("wb") as out:
        for name in graph_files:
            path = folder / name
            model = onnx.load(str(path), load_external_data=False)
            previous = _external_files(model)
            load_external_data_for_model(model, str(folder))
            for tensor in model.graph.initializer:
                data = tensor.raw_data
                if len(data) < MIN_BYTES:
                    continue
                key = (hashlib.sha256(data).hexdigest(), len(data))
                if key not in offsets:
                    alignment = PAGE_ALIGNMENT if len(data) >= MAPPED_BYTES else ALIGNMENT
                    out.write(b"\0" * (-out.tell() % alignment))
                    offsets[key] = out.tell()
                    out.write(data)
                _point_to(tensor, offsets[key], len(data))
            onnx.save(model, str(path))
            for stale in previous - {WEIGHTS_FILE}:
                (folder / stale).unlink(missing_ok=True)
    if not offsets:
        target.unlink()
    return bool(offsets)


def _point_to(tensor: object, offset: int, length: int) -> None:
    import onnx

    assert isinstance(tensor, onnx.TensorProto)
    tensor.ClearField("raw_data")
    tensor.data_location = onnx.TensorProto.EXTERNAL
    del tensor.external_data[:]
    for key, value in (("location", WEIGHTS_FILE), ("offset", str(offset)), ("length", str(length))):
        entry = tensor.external_data.add()
        entry.key, entry.value = key, value


def _external_files(model: object) -> set[str]:
    import onnx

    assert isinstance(model, onnx.ModelProto)
    files = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            files |= {e.value for e in tensor.external_data if e.key == "location"}
    return files
