"""Image-token decode speed: xomni's ``generate_image_tokens`` against transformers' ``generate``.

xomni side: an X-Omni backbone with random weights (``XOmniBackbone.from_params`` for fp32 on the
CPU; elsewhere the plugin's network drawn on the device) and
``xomni_core.generation.generate_image_tokens``. Reference: a plain transformers
``Qwen2ForCausalLM`` of the same decoder sizes whose vocabulary (and head) has the 16,448 rows of
X-Omni's multimodal table, sampled with ``generate``. Both draw ``--new-tokens`` tokens (a 16 x 16
grid by default) after a prompt of ``--prompt-ids`` ids with min-p 0.03, temperature 1, no top-k,
no guidance. Rounds interleave every implementation and batch size in one process; one untimed
warm-up call per implementation and batch size comes first. Throughput is batch * new tokens /
seconds of one whole call (prefill included).

A second measurement splits a batch-16 image step into the backbone's forward pass and the rest
(sampling, mostly): it times ``generate_image_tokens`` against a loop that calls the public
``Backbone.forward_step`` with the same inputs but feeds back fixed random image tokens instead of
sampling. If generation stops calling ``forward_step`` once per token, that split stops meaning
this and the share can come out negative.

Usage (the scaled layout, ~197 M parameters, fp32 on the CPU, one thread):

    .venv/bin/python benchmarks/decode_speed.py --json benchmarks/decode_speed.json
    .venv/bin/python benchmarks/decode_speed.py --batch 1 4 --rounds 1 --new-tokens 32   # quick

The released 7B sizes on a GPU, in both xomni modes (``benchmarks/gpu_check.sh``
runs this in time-limited sections):

    python benchmarks/decode_speed.py --device cuda --dtype bfloat16 --preset 7b \\
        --batch 1 16 --reference dynamic static --json out/decode_7b.json

xomni runs in two modes: ``eager`` and ``compiled`` (``Backbone.compile_decoding``: torch.compile of
the one-token step over the preallocated cache; on CUDA also a CUDA graph). Each mode's compile
time falls in its untimed warm-up call.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import transformers
from transformers import Qwen2Config, Qwen2ForCausalLM
from transformers.models.qwen2.modeling_qwen2 import Qwen2RotaryEmbedding

from xomni_core import GridSize, ImageGenerationRequest, SamplingParams
from xomni_core.generation import generate_image_tokens, image_prompt_ids
from xomni_plugins.backbones.x_omni import XOmniParams, count_parameters
from xomni_plugins.backbones.x_omni.model import (
    XOmniBackbone,
    XOmniForCausalLM,
    build_tokenizer,
    qwen2_config,
)

#: X-Omni's layout at hidden 512 / 8 layers (~197 M parameters, most of them the real id space).
SCALED = XOmniParams(
    hidden_size=512,
    intermediate_size=1536,
    num_hidden_layers=8,
    num_attention_heads=8,
    num_key_value_heads=2,
    num_mm_adap_layers=2,
    num_mm_head_layers=2,
    vocab_size=151_936,
    mm_vocab_size=16_448,
    image_vocab_size=16_384,
    max_position_embeddings=4096,
)
#: The released 7B backbone: the parameter defaults (Qwen2.5-7B-Instruct plus X-Omni's additions).
PRESETS = {"scaled": SCALED, "7b": XOmniParams()}
DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
#: Request fields that describe the work rather than how to run it.
WORK_FIELDS = frozenset({"prompts", "grid", "sampling", "seed", "show_progress"})
PROMPT_WORDS = "a watercolour painting of a lighthouse on a rocky shore at dusk, gulls overhead, "

Run = Callable[[int], object]  # batch size -> one whole generation call


# --- building the two models ---


@torch.no_grad()
def fill_random_(module: torch.nn.Module, std: float, seed: int) -> None:
    """Qwen2-style random weights in place, on the weights' device: normal(0, ``std``) matrices
    and embeddings, zero biases, unit norms."""
    device = next(module.parameters()).device
    generator = torch.Generator(device=device).manual_seed(seed)
    for name, param in module.named_parameters():
        if name.endswith("bias"):
            param.zero_()
        elif param.dim() == 1:
            param.fill_(1.0)
        else:
            param.normal_(0.0, std, generator=generator)


def build_xomni(params: XOmniParams, device: torch.device, dtype: torch.dtype, seed: int) -> XOmniBackbone:
    """``XOmniBackbone.from_params`` for fp32 on the CPU. Elsewhere the weights are drawn on the
    device itself: a CPU init of 7B parameters followed by a copy would take minutes."""
    if device.type == "cpu" and dtype == torch.float32:
        return XOmniBackbone.from_params(params, seed=seed)
    with torch.device("meta"):
        net = XOmniForCausalLM(params)
    net.to(dtype=dtype).to_empty(device=device)
    fill_random_(net, params.initializer_range, seed)
    net.model.reset_rotary()
    return XOmniBackbone(params, net, build_tokenizer(params))


def reference_config(params: XOmniParams) -> Qwen2Config:
    """A plain Qwen2 of the backbone's decoder sizes with a vocabulary of the multimodal rows."""
    config = qwen2_config(params)
    config.vocab_size = params.mm_vocab_size
    return config


def build_reference(
    params: XOmniParams, device: torch.device, dtype: torch.dtype, seed: int
) -> Qwen2ForCausalLM:
    """The reference model with random weights drawn on ``device``."""
    config = reference_config(params)
    with torch.device("meta"):
        model = Qwen2ForCausalLM(config)
    torch.nn.Module.to(model, dtype=dtype).to_empty(device=device)
    fill_random_(model, params.initializer_range, seed)
    # RoPE frequencies are a non-persistent float32 buffer that to_empty left uninitialised.
    model.model.rotary_emb = Qwen2RotaryEmbedding(config=config).to(device)
    model.generation_config.pad_token_id = 0
    model.train(False)
    return model


# --- the measured calls ---


@dataclass(frozen=True)
class Workload:
    """What every implementation generates."""

    grid: GridSize
    prompt_ids: int  # image prefix included
    negative_ids: int  # the image prefix alone: the unconditional row of guidance
    sampling: SamplingParams
    seed: int

    @property
    def new_tokens(self) -> int:
        return self.grid.num_tokens


def fitted_prompts(backbone: XOmniBackbone, grid: GridSize, n_ids: int, count: int) -> list[str]:
    """Distinct prompts whose image-generation ids (prefix included) number ``n_ids`` where the
    tokenizer allows; the closest longer ones otherwise."""
    prompts = []
    for index in range(count):
        text = f"{index} "
        for char in PROMPT_WORDS * (n_ids // len(PROMPT_WORDS) + 2):
            if len(image_prompt_ids(backbone, text, grid)) >= n_ids:
                break
            text += char
        prompts.append(text)
    return prompts


#: How xomni runs the one-token step: eagerly, or compiled (``Backbone.compile_decoding``).
MODES = ("eager", "compiled")


def xomni_runs(
    backbone: XOmniBackbone, work: Workload, modes: Sequence[str], prompts: Sequence[str]
) -> list[tuple[str, Run]]:
    """One row per xomni mode, batch ``b`` taking the first ``b`` prompts. To measure another way
    of running xomni, add a (name, run) here."""
    runs: list[tuple[str, Run]] = []
    for mode in modes:
        runner = XOmniBackbone(backbone.params, backbone.net, backbone.tokenizer)
        if mode == "compiled":
            runner.compile_decoding()

        def run(batch: int, runner: XOmniBackbone = runner) -> object:
            request = ImageGenerationRequest(
                prompts=tuple(prompts[:batch]), grid=work.grid, sampling=work.sampling, seed=work.seed
            )
            return generate_image_tokens(runner, request)

        runs.append((f"xomni {mode}", run))
    return runs


def with_threads(run: Run, threads: int) -> Run:
    """``run`` with torch's CPU threads set to ``threads`` for the call."""

    def threaded(batch: int) -> object:
        before = torch.get_num_threads()
        torch.set_num_threads(threads)
        try:
            return run(batch)
        finally:
            torch.set_num_threads(before)

    return threaded


def reference_runs(model: Qwen2ForCausalLM, work: Workload, caches: Sequence[str]) -> list[tuple[str, Run]]:
    """One row per transformers cache: ``dynamic`` (generate's default) or ``static`` (which
    transformers also compiles on a GPU)."""
    device = model.device
    generator = torch.Generator(device="cpu").manual_seed(work.seed)
    vocab = model.config.vocab_size
    runs: list[tuple[str, Run]] = []
    for cache in caches:
        extra: dict[str, Any] = {"cache_implementation": "static"} if cache == "static" else {}

        @torch.inference_mode()
        def run(batch: int, extra: dict[str, Any] = extra) -> object:
            ids = torch.randint(vocab, (batch, work.prompt_ids), generator=generator).to(device)
            if work.sampling.cfg_scale > 1.0:
                # transformers runs the unconditional rows as a second forward pass per step.
                negative = torch.randint(vocab, (1, work.negative_ids), generator=generator)
                extra = extra | {
                    "guidance_scale": work.sampling.cfg_scale,
                    "negative_prompt_ids": negative.expand(batch, -1).to(device),
                }
            torch.manual_seed(work.seed)
            return model.generate(
                ids,
                attention_mask=torch.ones_like(ids),
                do_sample=True,
                temperature=work.sampling.temperature,
                top_k=0,
                top_p=1.0,
                min_p=work.sampling.min_p,
                max_new_tokens=work.new_tokens,
                min_new_tokens=work.new_tokens,
                **extra,
            )

        runs.append((f"transformers {cache}", run))
    return runs


@torch.inference_mode()
def forward_only(backbone: XOmniBackbone, work: Workload, prompts: Sequence[str]) -> None:
    """The decode loop of image generation through ``forward_step`` alone: the same rows (the
    unconditional ones too under guidance), cache and step inputs, with fixed random image
    tokens fed back instead of sampled ones."""
    vocab = backbone.vocab
    device = backbone.device
    rows = [image_prompt_ids(backbone, prompt, work.grid) for prompt in prompts]
    if work.sampling.cfg_scale > 1.0:
        rows += [image_prompt_ids(backbone, "", work.grid)] * len(prompts)
    prompt_length = max(map(len, rows))
    max_length = prompt_length + work.new_tokens - 1  # the last token is never fed back
    input_ids = torch.tensor([[vocab.pad_id] * (prompt_length - len(r)) + r for r in rows], device=device)
    attention_mask = torch.ones((len(rows), max_length), dtype=torch.long, device=device)
    for i, row in enumerate(rows):
        attention_mask[i, : prompt_length - len(row)] = 0
    position_ids = (attention_mask[:, :prompt_length].cumsum(-1) - 1).clamp(min=0)
    fed = torch.randint(vocab.image_vocab_size, (work.new_tokens, len(prompts)), device=device)
    fed = (fed + vocab.image_token_offset).repeat(1, len(rows) // len(prompts))
    # Generation asks a backbone for a preallocated cache where the interface offers one.
    new_cache = getattr(backbone, "new_cache", None)
    past = new_cache(len(rows), max_length) if new_cache is not None else None
    for step in range(work.new_tokens):
        mask = attention_mask[:, : prompt_length + step]
        result = backbone.forward_step(input_ids, mask, position_ids, past, "image")
        past = result.past
        input_ids = fed[step][:, None]
        position_ids = position_ids[:, -1:] + 1
    result.logits.sum().item()  # wait for the last step


# --- timing and reporting ---


def timed(call: Callable[[], object], device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    call()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def measure(
    runs: Sequence[tuple[str, Run]], batches: Sequence[int], rounds: int, device: torch.device
) -> dict[tuple[str, int], list[float]]:
    """Seconds per call of every (row, batch), rounds interleaved; the order of the rows flips
    every round so that neither side always runs on a machine the other just warmed."""
    for batch in batches:
        for name, run in runs:
            print(f"warm-up: {name}, batch {batch}", file=sys.stderr, flush=True)
            timed(functools.partial(run, batch), device)
    seconds: dict[tuple[str, int], list[float]] = {}
    for round_index in range(rounds):
        ordered = runs if round_index % 2 == 0 else list(reversed(runs))
        for batch in batches:
            for name, run in ordered:
                elapsed = timed(functools.partial(run, batch), device)
                seconds.setdefault((name, batch), []).append(elapsed)
                print(
                    f"round {round_index + 1}: {name}, batch {batch}: {elapsed:.2f} s",
                    file=sys.stderr,
                    flush=True,
                )
    return seconds


def summary(seconds: list[float], tokens: int) -> dict[str, float]:
    rates = [tokens / s for s in seconds]
    return {"median": statistics.median(rates), "min": min(rates), "max": max(rates)}


def sampling_share(
    backbone: XOmniBackbone, work: Workload, batch: int, rounds: int, device: torch.device
) -> dict[str, Any]:
    """How much of a whole image-generation call is not the backbone's forward pass."""
    prompts = fitted_prompts(backbone, work.grid, work.prompt_ids, batch)
    [(_, generate)] = xomni_runs(backbone, work, ["eager"], prompts)
    calls: dict[str, Callable[[], object]] = {
        "generate_image_tokens": functools.partial(generate, batch),
        "forward_step loop": functools.partial(forward_only, backbone, work, prompts),
    }
    for call in calls.values():
        timed(call, device)
    seconds: dict[str, list[float]] = {name: [] for name in calls}
    for _ in range(rounds):
        for name, call in calls.items():
            seconds[name].append(timed(call, device))
    whole = statistics.median(seconds["generate_image_tokens"])
    forward = statistics.median(seconds["forward_step loop"])
    return {
        "batch": batch,
        "generate_s": seconds["generate_image_tokens"],
        "forward_only_s": seconds["forward_step loop"],
        "generate_ms_per_step": 1000 * whole / work.new_tokens,
        "forward_ms_per_step": 1000 * forward / work.new_tokens,
        "share": (whole - forward) / whole,
        "method": "1 - median(forward_step loop) / median(generate_image_tokens); the loop feeds "
        "fixed random image tokens back through Backbone.forward_step, so the rest is sampling, "
        "guidance and loop bookkeeping",
    }


def throughput_table(results: list[dict[str, Any]], reference: str | None) -> str:
    """Markdown: tokens/s per row and batch, and the ratio to ``reference``'s median."""
    lines = [
        f"| batch | implementation | tok/s median | min | max | vs {reference or '-'} |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for row in results:
        rate = row["tokens_per_s"]
        ratio = row["ratios"].get(reference)
        lines.append(
            f"| {row['batch']} | {row['name']} | {rate['median']:.1f} | {rate['min']:.1f} | "
            f"{rate['max']:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |"
        )
    return "\n".join(lines)


def share_table(share: dict[str, Any]) -> str:
    """Markdown: per-step times of whole generation and of the forward passes alone."""
    return "\n".join(
        [
            "| batch | generate_image_tokens ms/step | forward_step loop ms/step | not forward |",
            "| ---: | ---: | ---: | ---: |",
            f"| {share['batch']} | {share['generate_ms_per_step']:.1f} | "
            f"{share['forward_ms_per_step']:.1f} | {100 * share['share']:.0f} % |",
        ]
    )


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--preset", choices=sorted(PRESETS), default="scaled", help="backbone sizes")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    parser.add_argument(
        "--compare-threads",
        type=int,
        nargs="*",
        default=[],
        help="also run xomni's eager step with each of these thread counts, interleaved with the rest",
    )
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 4, 16], help="batch sizes")
    parser.add_argument("--rounds", type=int, default=3, help="timed calls per row and batch size")
    parser.add_argument("--grid", type=int, default=16, help="image tokens a side (16: 256 tokens)")
    parser.add_argument(
        "--new-tokens", type=int, help="image tokens per sample, a grid of 1 row (default: grid^2)"
    )
    parser.add_argument("--prompt-ids", type=int, default=64, help="prompt length, image prefix included")
    parser.add_argument("--min-p", type=float, default=0.03)
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--cfg-scale", type=float, default=1.0, help="above 1: classifier-free guidance")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="xomni rows: the eager step and/or the compiled one (its compile time falls in the warm-up)",
    )
    parser.add_argument(
        "--reference",
        nargs="*",
        choices=["dynamic", "static"],
        default=["dynamic"],
        help="transformers caches to run (none: xomni only)",
    )
    parser.add_argument(
        "--share-batch", type=int, default=16, help="batch of the sampling-share measurement (0: skip)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--params", type=json.loads, default={}, help="JSON overrides of the preset's XOmniParams"
    )
    parser.add_argument("--json", type=Path, help="write the results to this file")
    return parser.parse_args(argv)


def results_table(
    seconds: dict[tuple[str, int], list[float]], batches: Sequence[int], new_tokens: int
) -> list[dict[str, Any]]:
    """One entry per (row, batch): seconds, throughput and the ratio to each transformers row."""
    names = list(dict.fromkeys(name for name, _ in seconds))
    references = [name for name in names if name.startswith("transformers")]
    results = []
    for batch in batches:
        medians = {name: statistics.median(seconds[name, batch]) for name in names}
        for name in names:
            results.append(
                {
                    "name": name,
                    "batch": batch,
                    "seconds": seconds[name, batch],
                    "tokens_per_s": summary(seconds[name, batch], batch * new_tokens),
                    "ratios": {ref: medians[ref] / medians[name] for ref in references if ref != name},
                }
            )
    return results


def environment(device: torch.device) -> dict[str, Any]:
    return {
        "device": torch.cuda.get_device_name(device)
        if device.type == "cuda"
        else platform.processor() or "cpu",
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "python": platform.python_version(),
    }


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns what ``--json`` writes (written again after each part, so a
    run stopped during the sampling-share part keeps the throughput table)."""
    args = parse_args(argv)
    modes = args.modes
    torch.set_num_threads(args.threads)
    device, dtype = torch.device(args.device), DTYPES[args.dtype]
    params = XOmniParams(**{**PRESETS[args.preset].model_dump(), **args.params})
    grid = GridSize(1, args.new_tokens) if args.new_tokens else GridSize(args.grid, args.grid)
    sampling = SamplingParams(temperature=args.temperature, min_p=args.min_p, cfg_scale=args.cfg_scale)

    start = time.perf_counter()
    backbone = build_xomni(params, device, dtype, args.seed)
    reference = build_reference(params, device, dtype, args.seed) if args.reference else None
    build_s = time.perf_counter() - start
    prompts = fitted_prompts(backbone, grid, args.prompt_ids, max(args.batch))
    prompt_ids = len(image_prompt_ids(backbone, prompts[0], grid))
    work = Workload(grid, prompt_ids, len(image_prompt_ids(backbone, "", grid)), sampling, args.seed)
    report: dict[str, Any] = {
        "meta": {
            "command": " ".join(["benchmarks/decode_speed.py", *(sys.argv[1:] if argv is None else argv)]),
            "preset": args.preset,
            "params": params.model_dump(mode="json"),
            "parameters_xomni": count_parameters(params),
            "parameters_reference": sum(p.numel() for p in reference.parameters()) if reference else None,
            "dtype": args.dtype,
            **environment(device),
            "rounds": args.rounds,
            "new_tokens": work.new_tokens,
            "grid": [grid.grid_h, grid.grid_w],
            "prompt_ids": prompt_ids,
            "sampling": sampling.model_dump(),
            "reference_sampling": "generate(do_sample=True, temperature, top_k=0, top_p=1.0, min_p, "
            "min_new_tokens=max_new_tokens=new_tokens)",
            "modes": modes,
            "build_s": build_s,
        },
        "results": [],
        "sampling_share": None,
    }

    runs = xomni_runs(backbone, work, modes, prompts)
    for threads in args.compare_threads:
        [(_, eager)] = xomni_runs(backbone, work, ["eager"], prompts)
        runs.append((f"xomni eager, {threads} threads", with_threads(eager, threads)))
    if reference is not None:
        runs += reference_runs(reference, work, args.reference)
    report["results"] = results_table(
        measure(runs, args.batch, args.rounds, device), args.batch, work.new_tokens
    )
    write_json(args.json, report)
    first_reference = next((name for name, _ in runs if name.startswith("transformers")), None)
    print(throughput_table(report["results"], first_reference), flush=True)
    if args.share_batch:
        print(f"sampling share at batch {args.share_batch}", file=sys.stderr, flush=True)
        report["sampling_share"] = sampling_share(backbone, work, args.share_batch, args.rounds, device)
        write_json(args.json, report)
        print("\n" + share_table(report["sampling_share"]))
    return report


def write_json(path: Path | None, report: dict[str, Any]) -> None:
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
