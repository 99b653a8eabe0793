"""Loading a backbone folder with X-Omni's real id space: time and peak memory.

Builds once (and reuses) an X-Omni backbone folder with random weights: the real id space
(151,936 text + 16,448 multimodal ids) and a 512-wide, 8-layer network, about 197 M parameters.
Then loads it with ``XOmniBackbone.from_pretrained`` in a fresh interpreter per round and
reports the load time, split into the text tokenizer's load, the weight read and the rest
(building the network on the meta device, checking and assigning the state dict), and the peak
resident memory the load adds, against the checkpoint's bytes, before and after every weight
is first used (the weights are memory-mapped). Imports are timed apart.

``--listed-layout`` also loads, once, the same folder with tokenizer files in the layout of
official releases and older xomni folders (every placeholder and image token listed as an extra
special token), which takes minutes. Usage:

    .venv/bin/python benchmarks/load_speed.py --rounds 5 --listed-layout --json benchmarks/load_speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

PARAMS_FIELDS: dict[str, Any] = {
    "vocab_size": 151936,
    "image_vocab_size": 16384,
    "mm_vocab_size": 16448,
    "hidden_size": 512,
    "intermediate_size": 1536,
    "num_hidden_layers": 8,
    "num_attention_heads": 8,
    "num_key_value_heads": 2,
    "num_mm_adap_layers": 2,
    "num_mm_head_layers": 2,
    "max_position_embeddings": 4096,
}
WEIGHTS_FILE = "model.safetensors"
COMPONENT_FILE = "xomni_component.json"
LAYOUTS = {"current": "backbone", "listed": "backbone-listed"}
METRICS = (
    "tokenizer_s",
    "weights_s",
    "other_s",
    "total_s",
    "touch_s",
    "peak_growth_mib",
    "touched_growth_mib",
    "growth_per_checkpoint",
)


def params() -> Any:
    from xomni_plugins.backbones.x_omni import XOmniParams

    return XOmniParams(**PARAMS_FIELDS)


def cached(folder: Path, *, listed: bool) -> bool:
    """Whether ``folder`` holds a backbone of :data:`PARAMS_FIELDS` whose tokenizer lists every
    extra token as special (``listed``) or only a few."""
    component, config = folder / COMPONENT_FILE, folder / "tokenizer_config.json"
    if not all(path.is_file() for path in (component, config, folder / WEIGHTS_FILE)):
        return False
    stored = json.loads(component.read_text())["params"]
    extras = json.loads(config.read_text()).get("extra_special_tokens") or []
    same_params = all(stored.get(key) == value for key, value in PARAMS_FIELDS.items())
    return same_params and (len(extras) > PARAMS_FIELDS["image_vocab_size"]) == listed


def build_folders(root: Path, *, listed: bool, rebuild: bool) -> dict[str, Path]:
    """The backbone folder (built unless cached) and, if asked, its listed-layout twin."""
    folders = {"current": root / LAYOUTS["current"]}
    current = folders["current"]
    rebuild = rebuild or not cached(current, listed=False)
    if rebuild:
        from xomni_plugins.backbones.x_omni.model import XOmniBackbone

        print(f"building {current} ...", file=sys.stderr, flush=True)
        shutil.rmtree(current, ignore_errors=True)
        XOmniBackbone.from_params(params(), seed=0).save_pretrained(current)
    if listed:
        folders["listed"] = twin = root / LAYOUTS["listed"]
        if rebuild or not cached(twin, listed=True):
            write_listed_twin(current, twin)
    return folders


def write_listed_twin(current: Path, twin: Path) -> None:
    """``current``'s weights (hard-linked where possible) with listed-layout tokenizer files."""
    from xomni_core.text_tokenizers import save_text_tokenizer

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
    from tokenizer_layouts import listed_special_tokenizer

    shutil.rmtree(twin, ignore_errors=True)
    twin.mkdir(parents=True)
    shutil.copy2(current / COMPONENT_FILE, twin / COMPONENT_FILE)
    try:
        os.link(current / WEIGHTS_FILE, twin / WEIGHTS_FILE)
    except OSError:
        shutil.copy2(current / WEIGHTS_FILE, twin / WEIGHTS_FILE)
    save_text_tokenizer(listed_special_tokenizer(params()), twin)


# ----------------------------------------------------------------------------- one load


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def child(folder: Path) -> dict[str, float]:
    """Load ``folder`` once in this interpreter; the timings and memory of that load."""
    start = time.perf_counter()
    import torch

    from xomni_plugins.backbones.x_omni import model

    import_s = time.perf_counter() - start
    spent = {"tokenizer_s": 0.0, "weights_s": 0.0}

    def timed(key: str, function: Any) -> Any:
        def run(*args: Any, **kwargs: Any) -> Any:
            begin = time.perf_counter()
            try:
                return function(*args, **kwargs)
            finally:
                spent[key] += time.perf_counter() - begin

        return run

    # Wrap (not replace) what from_pretrained calls, to split its time.
    tokenizer_class = model.AutoTokenizer
    model.AutoTokenizer = type(  # type: ignore[misc]
        "TimedAutoTokenizer",
        (),
        {"from_pretrained": staticmethod(timed("tokenizer_s", tokenizer_class.from_pretrained))},
    )
    model.load_tensors = timed("weights_s", model.load_tensors)

    import gc

    gc.collect()
    before_kib = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM, the peak resident size
    begin = time.perf_counter()
    backbone = model.XOmniBackbone.from_pretrained(folder)
    total_s = time.perf_counter() - begin
    growth = (_status_kib("VmHWM") - before_kib) * 1024
    assert backbone.vocab.image_token_offset == PARAMS_FIELDS["vocab_size"]
    # safetensors maps the file: pages are read when first used. Touch every weight so that
    # the memory figure holds all of them, as after a first forward pass.
    begin = time.perf_counter()
    with torch.no_grad():
        for tensor in backbone.net.state_dict().values():
            tensor.sum()
    touch_s = time.perf_counter() - begin
    touched = (_status_kib("VmHWM") - before_kib) * 1024
    checkpoint = (folder / WEIGHTS_FILE).stat().st_size
    return {
        "import_s": import_s,
        **spent,
        "other_s": total_s - spent["tokenizer_s"] - spent["weights_s"],
        "total_s": total_s,
        "touch_s": touch_s,
        "peak_growth_mib": growth / 2**20,
        "touched_growth_mib": touched / 2**20,
        "growth_per_checkpoint": touched / checkpoint,
    }


def load_once(folder: Path) -> dict[str, float]:
    """:func:`child` in a fresh interpreter."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", str(folder)], capture_output=True, text=True, check=False
    )
    if done.returncode:
        raise RuntimeError(f"loading {folder} failed:\n{done.stderr}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


# ----------------------------------------------------------------------------- report


def summary(runs: list[dict[str, float]]) -> dict[str, dict[str, float]]:
    keys = ("import_s", *METRICS)
    return {
        key: {"median": statistics.median(r[key] for r in runs), "min": min(r[key] for r in runs)}
        for key in keys
    }


def table(results: dict[str, Any]) -> str:
    labels = {
        "tokenizer_s": "text tokenizer load, s",
        "weights_s": "weight read (load_tensors: maps the file), s",
        "other_s": "network on meta, state-dict check and assign, s",
        "total_s": "**XOmniBackbone.from_pretrained, s**",
        "touch_s": "then first use of every weight (page cache), s",
        "peak_growth_mib": "peak RSS growth of the load, MiB",
        "touched_growth_mib": "peak RSS growth, every weight used, MiB",
        "growth_per_checkpoint": "**the same / checkpoint bytes**",
        "import_s": "imports before the load (torch, transformers, plugin), s",
    }
    layouts = results["layouts"]
    header = ["", *(f"{name} median" if len(layouts[name]["runs"]) > 1 else name for name in layouts)]
    lines = ["| " + " | ".join(header) + " |", "|" + " --- |" + " ---: |" * len(layouts)]
    for key, label in labels.items():
        cells = []
        for name in layouts:
            value = layouts[name]["summary"][key]["median"]
            cells.append(f"{value:.0f}" if key.endswith("_mib") else f"{value:.2f}")
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--folder",
        type=Path,
        default=Path(tempfile.gettempdir()) / "xomni-load-speed",
        help="where the backbone folders are built once and reused",
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--listed-layout", action="store_true", help="also load the listed-layout twin once (takes minutes)"
    )
    parser.add_argument("--rebuild", action="store_true", help="rebuild the folders even if cached")
    parser.add_argument("--json", type=Path, help="write the results here")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child)))
        return

    folders = build_folders(args.folder, listed=args.listed_layout, rebuild=args.rebuild)
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in folders}
    for round_index in range(args.rounds):
        for name, folder in folders.items():
            if name == "listed" and round_index:
                continue  # minutes per load: one round
            runs[name].append(load_once(folder))
            print(
                f"round {round_index + 1} {name}: {runs[name][-1]['total_s']:.2f} s",
                file=sys.stderr,
                flush=True,
            )

    from xomni_core.text_tokenizers import TOKENIZER_CONFIG

    current = folders["current"]
    results: dict[str, Any] = {
        "params": PARAMS_FIELDS,
        "parameters": params_count(),
        "checkpoint_bytes": (current / WEIGHTS_FILE).stat().st_size,
        "tokenizer_files_bytes": {
            name: sum((folder / f).stat().st_size for f in ("tokenizer.json", TOKENIZER_CONFIG))
            for name, folder in folders.items()
        },
        "rounds": args.rounds,
        "cpu_count": os.cpu_count(),
        "layouts": {name: {"runs": r, "summary": summary(r)} for name, r in runs.items()},
    }
    print(table(results))
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


def params_count() -> int:
    from xomni_plugins.backbones.x_omni import count_parameters

    return int(count_parameters(params()))


if __name__ == "__main__":
    main()
