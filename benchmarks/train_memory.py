"""Memory and time of a training step: full SFT against LoRA SFT against LoRA with gradient
checkpointing, on a ~200 M-parameter X-Omni backbone on the CPU.

The backbone has X-Omni's real id space (151,936 text + 16,448 multimodal ids) and a 512-wide,
8-layer network (196.6 M parameters, as in ``load_speed.py``); its folder is built once and
cached in the temp directory. Each run is ``xomni train sft`` (:func:`train_sft`) in a fresh
interpreter, on synthetic scenes through a tiny tokenizer, and reports the resident memory when
training starts (pipeline built, data encoded), its peak over the training steps (``VmHWM``
after resetting it through ``/proc/self/clear_refs``, so Linux only; read before the final
checkpoint is written) and the median step time after the first step. Rounds interleave the
three settings, so that a slow spell of a shared machine hits all of them. Usage:

    .venv/bin/python benchmarks/train_memory.py --rounds 2 --json benchmarks/train_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from load_speed import PARAMS_FIELDS  # benchmarks/ is the script's own folder

BACKBONE = PARAMS_FIELDS  # the layout of the loading benchmark: X-Omni's id space, 197 M parameters
TOKENIZER = {
    "vit_width": 64,
    "vit_depth": 2,
    "vit_heads": 2,
    "pos_grid_size": 8,
    "codebook_size": 16384,  # the backbone's image vocabulary
    "codebook_dim": 32,
    "z_channels": 64,
    "decoder_norm_groups": 8,
    "min_short_side_px": 32,
    "target_short_side_px": 128,
    "max_long_side_px": 256,
}
LORA = {"r": 16, "alpha": 32.0, "target_modules": ["*_proj"]}
SETTINGS: dict[str, dict[str, Any]] = {
    "full SFT": {},
    "LoRA SFT (r=16, every projection)": {"lora": LORA},
    "LoRA SFT + gradient checkpointing": {"lora": LORA, "gradient_checkpointing": True},
}

CHILD = r"""
import json, sys
from pathlib import Path
from xomni_core.config import load_config
from xomni_core.training import sft as sft_module

def status_mib(field):
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)

config = load_config(sys.argv[1])
marks = {}
run = sft_module._SFTTrainer.run

def measured_run(self, **kwargs):
    # Building the pipeline and encoding the data peak on their own; measure training alone:
    # writing 5 to clear_refs resets the peak resident size (VmHWM) to the current one.
    marks["rss_before_training_mib"] = status_mib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")
    return run(self, **kwargs)

save = sft_module.save_training_checkpoint

def measured_save(*args, **kwargs):
    marks.setdefault("peak_rss_mib", status_mib("VmHWM"))  # the steps', before any checkpoint
    return save(*args, **kwargs)

sft_module._SFTTrainer.run = measured_run
sft_module.save_training_checkpoint = measured_save
result = sft_module.train_sft(config, show_progress=False)
times = [r["step_time_s"] for r in result.records[1:]]
trainable = sum(p.numel() for p in result.backbone.trainable_module().parameters() if p.requires_grad)
print(json.dumps({
    "step_s": sorted(times)[(len(times) - 1) // 2],
    "step_times_s": [r["step_time_s"] for r in result.records],
    "trainable": trainable,
    "loss_first": result.records[0]["loss"],
    "loss_last": result.records[-1]["loss"],
    **marks,
}))
"""


def backbone_folder() -> Path:
    """A random backbone of BACKBONE's sizes, saved once."""
    folder = Path(tempfile.gettempdir()) / "xomni-train-memory-backbone"
    if not (folder / "model.safetensors").is_file():
        from xomni_plugins.backbones.x_omni.model import XOmniBackbone
        from xomni_plugins.backbones.x_omni.params import XOmniParams

        XOmniBackbone.from_params(XOmniParams(**BACKBONE)).save_pretrained(folder)
    return folder


def config(folder: Path, work: Path, name: str, training: dict[str, Any], steps: int) -> Path:
    data = {
        "runtime": {"device": "cpu", "dtype": "float32", "seed": 0},
        "generation": {"height_px": 128, "width_px": 128},
        "tokenizer": {"plugin": "siglip-vq", "params": TOKENIZER},
        "backbone": {"plugin": "x-omni", "weights": str(folder)},
        "training": {
            **training,
            "sft": {
                "synthetic": {"split": "train", "n": 8, "seed": 0},
                "batch_size": 4,
                "learning_rate": 1.0e-4,
                "steps": steps,
                "checkpoint_every": 1000,  # only the last step saves
                "output_dir": str(work / "out" / name),
            },
        },
    }
    path = work / f"{name}.json"
    path.write_text(json.dumps(data))
    return path


def run_once(path: Path) -> dict[str, Any]:
    env = {**os.environ, "XOMNI_ALLOW_LARGE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", CHILD, str(path)], capture_output=True, text=True, env=env, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"training run failed:\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=2, help="runs of each setting, interleaved")
    parser.add_argument("--steps", type=int, default=4, help="optimisation steps per run")
    parser.add_argument("--json", type=Path, help="write the measurements here")
    args = parser.parse_args()

    folder = backbone_folder()
    runs: dict[str, list[dict[str, Any]]] = {name: [] for name in SETTINGS}
    with tempfile.TemporaryDirectory() as temp:
        work = Path(temp)
        for round_index in range(args.rounds):
            for index, (name, training) in enumerate(SETTINGS.items()):
                path = config(folder, work, f"r{round_index}-{index}", training, args.steps)
                runs[name].append(run_once(path))
                print(f"round {round_index + 1}: {name}: {runs[name][-1]}", file=sys.stderr)

    print(
        f"| {args.rounds} rounds, median | trainable parameters | peak RSS in training, MiB "
        "| RSS when training starts, MiB | training adds, MiB | step, s |"
    )
    print("| --- | ---: | ---: | ---: | ---: | ---: |")
    summary = {}
    for name, results in runs.items():
        peak = statistics.median(r["peak_rss_mib"] for r in results)
        before = statistics.median(r["rss_before_training_mib"] for r in results)
        step = statistics.median(r["step_s"] for r in results)
        trainable = results[0]["trainable"]
        summary[name] = {
            "peak_rss_mib": peak,
            "rss_before_training_mib": before,
            "step_s": step,
            "trainable": trainable,
        }
        cells = [
            f"{trainable / 1e6:.2f} M",
            f"{peak:.0f}",
            f"{before:.0f}",
            f"{peak - before:.0f}",
            f"{step:.2f}",
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    if args.json is not None:
        payload = {"backbone": BACKBONE, "lora": LORA, "rounds": args.rounds, "steps": args.steps}
        args.json.write_text(json.dumps({**payload, "summary": summary, "runs": runs}, indent=2) + "\n")


if __name__ == "__main__":
    main()
