"""The decode-speed benchmark runs end to end at tiny sizes and finds xomni's runtime options."""

from __future__ import annotations

import functools
import importlib.util
import json
import sys
from pathlib import Path
from types import ModuleType

import torch
from support import REPO

TINY = {
    "hidden_size": 64,
    "intermediate_size": 128,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 2,
    "num_mm_adap_layers": 1,
    "num_mm_head_layers": 1,
    "vocab_size": 300,
    "mm_vocab_size": 80,
    "image_vocab_size": 64,
    "max_position_embeddings": 256,
}


@functools.cache
def benchmark() -> ModuleType:
    """The script as a module (``benchmarks/`` is no package)."""
    spec = importlib.util.spec_from_file_location("decode_speed", REPO / "benchmarks" / "decode_speed.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def test_a_tiny_run_writes_every_row_with_throughput_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "decode.json"
    benchmark().main(
        [
            *("--params", json.dumps(TINY)),
            *("--batch", "1", "2", "--rounds", "2", "--new-tokens", "4", "--prompt-ids", "20"),
            *("--reference", "dynamic", "static", "--share-batch", "2", "--json", str(out)),
            *("--modes", "eager"),
            *("--threads", str(torch.get_num_threads())),  # leave the test process as it was
        ]
    )
    report = json.loads(out.read_text())
    assert report["meta"]["prompt_ids"] == 20
    assert report["meta"]["new_tokens"] == 4
    rows = {(row["name"], row["batch"]): row for row in report["results"]}
    assert set(rows) == {
        (name, batch)
        for name in ("xomni eager", "transformers dynamic", "transformers static")
        for batch in (1, 2)
    }
    xomni = rows["xomni eager", 2]
    assert len(xomni["seconds"]) == 2
    assert set(xomni["tokens_per_s"]) == {"median", "min", "max"}
    assert set(xomni["ratios"]) == {"transformers dynamic", "transformers static"}
    share = report["sampling_share"]
    assert share["batch"] == 2 and share["share"] < 1.0
