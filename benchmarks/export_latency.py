"""Per-step latency: onnxruntime (CPU) against PyTorch eager on the same graphs.

Exports a small but non-trivial X-Omni backbone and FLUX-style decoder with random weights,
then times the backbone's ``decode`` step (one new token after a cache) and the decoder's
``transformer`` step (one denoising step) in both runtimes, interleaved call by call so that
machine noise hits both alike. Usage:

    .venv/bin/python benchmarks/export_latency.py --repeats 30 --json benchmarks/export_latency.json
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from xomni_export import export_component
from xomni_export.runtime.sessions import OrtSession
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone
from xomni_plugins.decoders.flux_semantic import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder

BACKBONE = XOmniParams(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    num_mm_adap_layers=2,
    num_mm_head_layers=2,
    vocab_size=2048,
    mm_vocab_size=4160,
    image_vocab_size=4096,
    max_position_embeddings=4096,
)
DECODER = FluxSemanticParams(
    num_dual_stream_layers=2,
    num_single_stream_layers=4,
    num_attention_heads=4,
    attention_head_dim=64,
    axes_dims_rope=(16, 24, 24),
    joint_attention_dim=256,
    pooled_projection_dim=128,
    in_channels=16,
    semantic_channels=256,
    vae_latent_channels=4,
    vae_block_out_channels=(32, 32, 32, 32),
    vae_layers_per_block=1,
    vae_norm_num_groups=8,
    t5_vocab_size=300,
    t5_hidden_size=256,
    t5_head_dim=32,
    t5_ffn_size=512,
    t5_num_layers=1,
    t5_num_heads=8,
    t5_max_length=32,
    clip_vocab_size=300,
    clip_hidden_size=128,
    clip_ffn_size=256,
    clip_num_layers=1,
    clip_num_heads=4,
    clip_max_length=32,
)
CASES = {
    ("backbone", "decode"): [{"batch": 1, "seq": 1, "past": 256}, {"batch": 4, "seq": 1, "past": 256}],
    ("decoder", "transformer"): [
        {"batch": 1, "grid_h": 16, "grid_w": 16},
        {"batch": 2, "grid_h": 16, "grid_w": 16},
    ],
}


def run_eager(module: torch.nn.Module, inputs: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        module(*inputs)


def time_call(call: Any) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    components = {
        "backbone": XOmniBackbone.from_params(BACKBONE, seed=0),
        "decoder": FluxSemanticDecoder.from_params(DECODER, seed=0),
    }
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for (kind, graph_name), cases in CASES.items():
            component = components[kind]
            export_component(
                component,
                Path(tmp) / kind,
                plugin=kind,
                plugin_version="bench",
                validate=False,
                show_progress=False,
            )
            graph = next(g for g in component.export_graphs("float32") if g.spec.name == graph_name)
            session = OrtSession(Path(tmp) / kind / f"{graph_name}.onnx")
            for sizes in cases:
                inputs = list(graph.make_inputs({**graph.spec.sizes("opt"), **sizes}, 1))
                feeds = dict(zip(graph.spec.input_names, inputs, strict=True))
                eager = functools.partial(run_eager, graph.module, inputs)
                onnx = functools.partial(session.run, feeds)

                for _ in range(3):  # warm up both
                    eager()
                    onnx()
                eager_s, onnx_s = [], []
                for _ in range(args.repeats):
                    eager_s.append(time_call(eager))
                    onnx_s.append(time_call(onnx))
                rows.append(
                    {
                        "graph": f"{kind}.{graph_name}",
                        "sizes": sizes,
                        "torch_eager_ms": 1000 * statistics.median(eager_s),
                        "onnxruntime_ms": 1000 * statistics.median(onnx_s),
                        "speedup": statistics.median(eager_s) / statistics.median(onnx_s),
                    }
                )
    print(f"{'graph':22} {'sizes':36} {'torch ms':>9} {'ort ms':>8} {'ort speedup':>12}")
    for row in rows:
        sizes = ", ".join(f"{k}={v}" for k, v in row["sizes"].items())
        print(
            f"{row['graph']:22} {sizes:36} {row['torch_eager_ms']:9.2f} {row['onnxruntime_ms']:8.2f} "
            f"{row['speedup']:12.2f}"
        )
    if args.json:
        meta = {"threads_torch": torch.get_num_threads(), "repeats": args.repeats}
        args.json.write_text(json.dumps({"meta": meta, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
