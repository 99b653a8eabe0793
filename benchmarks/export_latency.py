"""Exported runtimes (onnxruntime, CPU) against PyTorch eager, side by side.

Both runtimes use the same number of intra-op threads (``--threads``, default 1), onnxruntime's
idle threads sleep instead of spinning (``--spinning`` turns spinning back on in the graph
section, to show what it does to the torch calls next to it), and the two are called
alternately so that machine noise hits both alike. Medians are reported. Three sections:

* ``graphs``: single graph runs against the torch module each was exported from: the backbone's
  ``decode``, ``image_head`` and ``text_head`` at X-Omni's id space (hidden 512, 8 layers,
  151,936 text + 16,448 multimodal ids, 197 M parameters, random weights) and the FLUX-style
  decoder's ``transformer`` step;
* ``tokens``: ``generate_image_tokens`` of that backbone, 256 image tokens after a 64-token
  prompt, min-p 0.03, batch 1 and 16 (``--token-batches``), torch (:class:`XOmniBackbone`)
  against the exported graphs (:class:`ExportedBackbone`);
* ``nano``: the shipped xomni-nano pipeline exported by ``xomni export`` against the torch
  pipeline, end to end per image (prompt -> image tokens -> decoded image);
* ``spinning``: what spinning onnxruntime threads do to the torch calls between them: the
  backbone ``decode`` and decoder ``transformer`` rows again, both runtimes on 2 threads, with
  onnxruntime's idle threads spinning and sleeping;
* ``cache``: how the KV cache goes back into ``decode`` step after step, at X-Omni's layout and
  at xomni-nano's: as numpy views (what :class:`OrtSession` does) against onnxruntime IO binding
  that keeps the cache as ``OrtValue`` s between steps (no numpy at all).

Usage:

    .venv/bin/python benchmarks/export_latency.py --json benchmarks/export_latency.json
"""

from __future__ import annotations

import os

# As `xomni generate` does (xomni_core.cpu): torch's OpenMP workers sleep when idle.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import argparse
import functools
import json
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import onnxruntime
import torch
from decode_speed import SCALED  # benchmarks/ is the script's own folder

from xomni_core import GridSize, ImageGenerationRequest, SamplingParams
from xomni_core.pipelines import TextToImagePipeline
from xomni_export import export_component
from xomni_export.command import run_export
from xomni_export.runtime.backbone import ExportedBackbone
from xomni_export.runtime.sessions import OrtSession
from xomni_plugins.backbones.x_omni.model import XOmniBackbone
from xomni_plugins.decoders.flux_semantic import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder

NANO = Path(__file__).resolve().parents[1] / "xomni_core" / "models" / "xomni-nano" / "pipeline.yaml"
#: The decode benchmark's X-Omni layout (hidden 512, 8 layers, the real id space).
BACKBONE = SCALED
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
GRAPH_CASES = {
    ("backbone", "decode"): [{"batch": 1, "seq": 1, "past": 192}, {"batch": 16, "seq": 1, "past": 192}],
    ("backbone", "image_head"): [{"batch": 1}, {"batch": 16}],
    ("backbone", "text_head"): [{"batch": 1}, {"batch": 16}],
    ("decoder", "transformer"): [
        {"batch": 1, "grid_h": 16, "grid_w": 16},
        {"batch": 2, "grid_h": 16, "grid_w": 16},
    ],
}
SPINNING_CASES = {
    ("backbone", "decode"): [{"batch": 1, "seq": 1, "past": 192}],
    ("decoder", "transformer"): [{"batch": 1, "grid_h": 16, "grid_w": 16}],
}
PROMPT_TOKENS = 64
CACHE_STEPS = 64
IMAGE_GRID = GridSize(16, 16)
MIN_P = 0.03


def alternate(calls: dict[str, Callable[[], Any]], repeats: int, warmup: int = 1) -> dict[str, float]:
    """Median seconds of each call, calling them in turn ``repeats`` times after ``warmup``."""
    for _ in range(warmup):
        for call in calls.values():
            call()
    times: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(repeats):
        for name, call in calls.items():
            start = time.perf_counter()
            call()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def run_eager(module: torch.nn.Module, inputs: list[torch.Tensor]) -> None:
    with torch.inference_mode():
        module(*inputs)


def export(component: Any, folder: Path) -> Path:
    export_component(
        component, folder, plugin="bench", plugin_version="bench", validate=False, show_progress=False
    )
    return folder


def graph_rows(
    backbone: XOmniBackbone,
    folder: Path,
    cases: dict[tuple[str, str], list[dict[str, int]]],
    *,
    repeats: int,
    threads: int,
    spinning: bool,
) -> list[dict[str, Any]]:
    """Each graph of ``cases`` alternating with its torch module, both on ``threads`` threads."""
    components = {"backbone": backbone, "decoder": FluxSemanticDecoder.from_params(DECODER, seed=0)}
    folders = {"backbone": folder, "decoder": folder.parent / "decoder"}
    if not folders["decoder"].is_dir():
        export(components["decoder"], folders["decoder"])
    graphs = {kind: {g.spec.name: g for g in c.export_graphs("float32")} for kind, c in components.items()}
    rows = []
    torch.set_num_threads(threads)
    for (kind, graph_name), sizes_list in cases.items():
        graph = graphs[kind][graph_name]
        session = OrtSession(folders[kind] / f"{graph_name}.onnx", threads=threads, spinning=spinning)
        for sizes in sizes_list:
            inputs = list(graph.make_inputs({**graph.spec.sizes("opt"), **sizes}, 1))
            feeds = dict(zip(graph.spec.input_names, inputs, strict=True))
            medians = alternate(
                {
                    "torch": functools.partial(run_eager, graph.module, inputs),
                    "onnxruntime": functools.partial(session.run, feeds),
                },
                repeats,
                warmup=3,
            )
            row = {"graph": f"{kind}.{graph_name}", "sizes": sizes, "threads": threads, "spinning": spinning}
            rows.append(ratio_row(row, medians, 1000, "ms"))
    return rows


def token_rows(backbone: XOmniBackbone, folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    exported = ExportedBackbone.from_exported(folder, backend="onnxruntime", threads=args.threads)
    prefix = len(backbone.tokenize(backbone.image_prefix(IMAGE_GRID.grid_h, IMAGE_GRID.grid_w)))
    prompt = "x" * (PROMPT_TOKENS - prefix)  # one token per byte
    results: dict[str, torch.Tensor] = {}

    def generate(name: str, runtime: Any, request: ImageGenerationRequest) -> None:
        results[name] = runtime.generate_image_tokens(request).ids

    rows = []
    for batch in args.token_batches:
        request = ImageGenerationRequest(
            prompts=(prompt,) * batch, grid=IMAGE_GRID, sampling=SamplingParams(min_p=MIN_P), seed=3
        )
        medians = alternate(
            {
                "torch": functools.partial(generate, "torch", backbone, request),
                "onnxruntime": functools.partial(generate, "onnxruntime", exported, request),
            },
            args.rounds,
        )
        tokens = batch * IMAGE_GRID.num_tokens
        row = ratio_row(
            {"what": "generate_image_tokens", "batch": batch, "image_tokens": tokens}, medians, 1, "s"
        )
        row["torch_tokens_per_s"] = tokens / medians["torch"]
        row["onnxruntime_tokens_per_s"] = tokens / medians["onnxruntime"]
        row["same_tokens"] = bool(torch.equal(results["torch"], results["onnxruntime"]))
        rows.append(row)
    return rows


def nano_rows(folder: Path, args: argparse.Namespace) -> list[dict[str, Any]]:
    run_export(NANO, out=folder, validate=False, show_progress=False)
    pipelines = {
        "torch": TextToImagePipeline.from_config(NANO),
        "onnxruntime": TextToImagePipeline.from_config(folder / "pipeline.onnxruntime.yaml"),
    }
    prompt = ["a red circle above a blue square"]
    tokens: dict[str, Any] = {}

    def image(name: str) -> None:
        tokens[name] = pipelines[name](prompt, seed=1, show_progress=False).tokens.rows()

    def image_tokens(name: str) -> None:
        config = pipelines[name].config.generation
        grid = GridSize.from_pixels(
            config.height_px, config.width_px, pipelines[name].decoder.pixels_per_token
        )
        request = ImageGenerationRequest(prompts=tuple(prompt), grid=grid, sampling=config.sampling, seed=1)
        pipelines[name].backbone.generate_image_tokens(request)

    rows = []
    for what, call in (("pipeline, one image", image), ("generate_image_tokens", image_tokens)):
        medians = alternate({name: functools.partial(call, name) for name in pipelines}, args.rounds)
        rows.append(ratio_row({"what": what}, medians, 1000, "ms"))
    rows[0]["same_tokens"] = tokens["torch"] == tokens["onnxruntime"]
    return rows


def decode_steps(session: OrtSession, batch: int, kv_shape: tuple[int, int], bound: bool) -> None:
    """:data:`CACHE_STEPS` decode steps after a prompt-long cache, feeding each step's cache back
    as numpy views (``session.run``) or, ``bound``, as the ``OrtValue`` s IO binding returned."""
    present = [name for name in session.output_names if name.startswith("present.")]
    past: dict[str, Any] = {
        name.replace("present.", "past."): torch.zeros(batch, kv_shape[0], PROMPT_TOKENS, kv_shape[1])
        for name in present
    }
    for step in range(CACHE_STEPS):
        feeds = {
            "input_ids": torch.full((batch, 1), 5),
            "attention_mask": torch.ones(batch, PROMPT_TOKENS + step + 1, dtype=torch.long),
            "position_ids": torch.full((batch, 1), PROMPT_TOKENS + step),
        }
        if not bound:
            out = session.run({**feeds, **past})
            past = {name.replace("present.", "past."): out[name] for name in present}
            continue
        binding = session.session.io_binding()
        for key, value in {**feeds, **past}.items():
            if isinstance(value, onnxruntime.OrtValue):
                binding.bind_ortvalue_input(key, value)
            else:
                binding.bind_cpu_input(key, value.numpy())
        for name in session.output_names:
            binding.bind_output(name, "cpu")
        session.session.run_with_iobinding(binding)
        values = dict(zip(session.output_names, binding.get_outputs(), strict=True))
        torch.from_numpy(values["hidden"].numpy())
        past = {name.replace("present.", "past."): values[name] for name in present}


def cache_rows(folders: dict[str, Path], args: argparse.Namespace) -> list[dict[str, Any]]:
    rows = []
    for name, folder in folders.items():
        params = json.loads((folder / "xomni_component.json").read_text())["params"]
        kv_shape = (params["num_key_value_heads"], params["hidden_size"] // params["num_attention_heads"])
        session = OrtSession(folder / "decode.onnx", threads=args.threads)
        for batch in (1, 16):
            medians = alternate(
                {
                    "numpy views": functools.partial(decode_steps, session, batch, kv_shape, False),
                    "io binding": functools.partial(decode_steps, session, batch, kv_shape, True),
                },
                args.rounds,
            )
            rows.append(
                {
                    "model": name,
                    "batch": batch,
                    "numpy_views_ms_per_step": 1000 * medians["numpy views"] / CACHE_STEPS,
                    "io_binding_ms_per_step": 1000 * medians["io binding"] / CACHE_STEPS,
                }
            )
    return rows


def ratio_row(row: dict[str, Any], medians: dict[str, float], scale: float, unit: str) -> dict[str, Any]:
    return {
        **row,
        f"torch_{unit}": scale * medians["torch"],
        f"onnxruntime_{unit}": scale * medians["onnxruntime"],
        "speedup": medians["torch"] / medians["onnxruntime"],
    }


def show(title: str, rows: list[dict[str, Any]]) -> None:
    print(f"\n{title}")
    for row in rows:
        print(
            "  " + ", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", nargs="+", default=["graphs", "tokens", "nano", "spinning", "cache"])
    parser.add_argument("--repeats", type=int, default=20, help="calls per graph row")
    parser.add_argument("--rounds", type=int, default=3, help="generations per token and nano row")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--token-batches", type=int, nargs="+", default=[1, 16])
    parser.add_argument("--spinning", action="store_true", help="let onnxruntime's idle threads spin")
    parser.add_argument("--json", type=Path, help="JSON to write; sections not run keep their entries")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    report: dict[str, Any] = {
        "meta": {
            "threads": args.threads,
            "onnxruntime_spinning": args.spinning,
            "repeats": args.repeats,
            "rounds": args.rounds,
            "torch": torch.__version__,
            "onnxruntime": onnxruntime.__version__,
            "cpus": os.cpu_count(),
        }
    }
    with tempfile.TemporaryDirectory() as tmp:
        if {"graphs", "tokens", "spinning"} & set(args.sections):
            backbone = XOmniBackbone.from_params(BACKBONE, seed=0)
            folder = export(backbone, Path(tmp) / "backbone")
            if "graphs" in args.sections:
                report["graphs"] = graph_rows(
                    backbone,
                    folder,
                    GRAPH_CASES,
                    repeats=args.repeats,
                    threads=args.threads,
                    spinning=args.spinning,
                )
                show("graphs (ms per call)", report["graphs"])
            if "spinning" in args.sections:
                report["spinning"] = [
                    row
                    for spinning in (True, False)
                    for row in graph_rows(
                        backbone, folder, SPINNING_CASES, repeats=args.repeats, threads=2, spinning=spinning
                    )
                ]
                torch.set_num_threads(args.threads)
                show("spinning (ms per call, 2 threads)", report["spinning"])
            if "tokens" in args.sections:
                report["tokens"] = token_rows(backbone, folder, args)
                show("image tokens (s per generation)", report["tokens"])
        if "nano" in args.sections:
            report["nano"] = nano_rows(Path(tmp) / "nano", args)
            show("xomni-nano (ms per image)", report["nano"])
        if "cache" in args.sections:
            folders = {"x-omni layout": Path(tmp) / "backbone", "xomni-nano": Path(tmp) / "nano" / "backbone"}
            if not folders["x-omni layout"].is_dir():
                export(XOmniBackbone.from_params(BACKBONE, seed=0), folders["x-omni layout"])
            if not folders["xomni-nano"].is_dir():
                run_export(NANO, out=folders["xomni-nano"].parent, components=["backbone"], validate=False)
            report["cache"] = cache_rows(folders, args)
            show("KV cache between decode steps", report["cache"])
    if args.json:
        earlier = json.loads(args.json.read_text()) if args.json.is_file() else {}
        settings = report.pop("meta")
        runs = {name: {"settings": settings, "rows": rows} for name, rows in report.items()}
        args.json.write_text(json.dumps({**earlier, **runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
