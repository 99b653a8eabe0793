"""Launchers: `accelerate launch` and `torchrun` start the same run, and a CPU launch that would
silently run one process instead of several is refused.

Several processes under `torchrun` are tested with the trainers (test_step_settings.py,
test_grpo.py, test_fsdp.py).
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from support import REPO, run_accelerate_xomni, run_torchrun_xomni

from xomni_core.config import load_config
from xomni_core.errors import ConfigError
from xomni_core.folders import load_tensors
from xomni_core.training.loop import TIMING_METRICS
from xomni_core.training.metrics import read_metrics
from xomni_core.training.sft import train_sft


def test_accelerate_launch_cpu_with_several_processes_is_refused_naming_the_launch_that_works(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # What `accelerate launch --cpu --num_processes 2` hands its single process without mpirun.
    monkeypatch.setenv("ACCELERATE_USE_CPU", "True")
    monkeypatch.setenv("MASTER_ADDR", "127.0.0.1")
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    data = yaml.safe_load((REPO / "examples" / "configs" / "tiny-sft.yaml").read_text())
    del data["decoder"]
    data["training"]["sft"].update(steps=1, output_dir=str(tmp_path))
    with pytest.raises(ConfigError, match="accelerate launch --multi_gpu --num_processes N"):
        train_sft(load_config(data=copy.deepcopy(data)), show_progress=False)
    assert not any(tmp_path.iterdir())


def test_accelerate_launch_and_torchrun_run_the_same_two_process_training(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "examples" / "configs" / "tiny-sft.yaml").read_text())
    del data["decoder"]
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 8, "seed": 0}, batch_size=2, steps=2, checkpoint_every=2
    )
    runs = {}
    for name, launch in (("torchrun", run_torchrun_xomni), ("accelerate", run_accelerate_xomni)):
        config = copy.deepcopy(data)
        config["training"]["sft"]["output_dir"] = str(tmp_path / name)
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(config))
        extra = {"home": tmp_path / "hf-home"} if launch is run_accelerate_xomni else {}
        done = launch("train", "sft", str(path), "--no-progress", **extra)
        assert done.returncode == 0, f"{name}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"
        records = read_metrics(tmp_path / name / "metrics.jsonl")
        checkpoint = tmp_path / name / "checkpoints" / "step-00000002"
        weights = load_tensors(checkpoint / "backbone" / "model.safetensors")
        runs[name] = ([{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in records], weights)
    (torch_records, torch_weights), (accel_records, accel_weights) = runs["torchrun"], runs["accelerate"]
    assert [r["samples"] for r in accel_records] == [4, 4]  # two processes of two pairs each
    assert accel_records == torch_records
    assert accel_weights.keys() == torch_weights.keys()
    assert all(bool((accel_weights[n] == w).all()) for n, w in torch_weights.items())
