"""FSDP on CUDA: full SFT of the tiny backbone sharded by accelerate's FSDP2 over NCCL.

One process on one GPU (a launch of one: FSDP needs a process group) always; with two or more
GPUs also two sharding processes against one unsharded process on the same pairs (the check of
tests/training/test_fsdp.py on gloo) and a two-process resume. Writes ``OUT/fsdp.json``.

    python benchmarks/fsdp_check.py --out gpu_out/fsdp
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]


def config(output: Path, *, processes_share: bool, **sft: Any) -> dict[str, Any]:
    data = yaml.safe_load((REPO / "examples" / "configs" / "tiny-sft.yaml").read_text())
    del data["decoder"]
    data["runtime"]["device"] = "cuda"
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 6, "seed": 0},
        batch_size=3 if processes_share else 6,
        steps=2,
        learning_rate=1.0e-2,
        warmup_steps=0,
        checkpoint_every=1,
        keep_checkpoints=None,
        output_dir=str(output),
        **sft,
    )
    if processes_share:
        data["training"]["distributed"] = {"strategy": "fsdp"}
    return copy.deepcopy(data)


def launch(processes: int, path: Path, *extra: str) -> None:
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node"]
    command += [str(processes), "-m", "xomni_core.cli", "train", "sft", str(path), "--no-progress", *extra]
    done = subprocess.run(command, capture_output=True, text=True, cwd=REPO, timeout=240)
    print(done.stdout[-2000:], done.stderr[-4000:], sep="\n")
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed with exit {done.returncode}")


def weights(output: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(output / "checkpoints" / f"step-{step:08d}" / "backbone" / "model.safetensors")


def metrics(output: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (output / "metrics.jsonl").read_text().splitlines() if line]


def write(out: Path, name: str, data: dict[str, Any]) -> Path:
    path = out / f"{name}.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    gpus = torch.cuda.device_count()
    report: dict[str, Any] = {"gpus": gpus}

    launch(1, write(out, "one-gpu", config(out / "one-gpu", processes_share=True)))
    losses = [r["loss"] for r in metrics(out / "one-gpu")]
    report["one_process_fsdp_losses"] = losses
    assert all(loss == loss for loss in losses), losses

    if gpus >= 2:
        launch(1, write(out, "single", config(out / "single", processes_share=False)))
        launch(2, write(out, "sharded", config(out / "sharded", processes_share=True)))
        one, two = metrics(out / "single")[0], metrics(out / "sharded")[0]
        single, sharded = weights(out / "single", 1), weights(out / "sharded", 1)
        difference = sum(float((sharded[n] - w).norm()) ** 2 for n, w in single.items()) ** 0.5
        step = sum(float((w - weights(out / "single", 2)[n]).norm()) ** 2 for n, w in single.items()) ** 0.5
        report["two_processes"] = {
            "loss_single": one["loss"],
            "loss_sharded": two["loss"],
            "weights_difference_norm": difference,
            "second_step_norm": step,  # the size of an update, for scale
        }
        launch(2, write(out, "whole", config(out / "whole", processes_share=True, steps=4)))
        halted = write(out, "halted", config(out / "halted", processes_share=True))
        launch(2, halted)
        launch(2, halted, "--set", "training.sft.steps=4", "--resume")
        resumed, whole = weights(out / "halted", 4), weights(out / "whole", 4)
        report["resume_bit_identical"] = all(torch.equal(resumed[n], w) for n, w in whole.items())
    else:
        report["two_processes"] = "skipped: one GPU (NCCL takes one GPU per process)"

    (out / "fsdp.json").write_text(json.dumps(report, indent=2))
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    main()
