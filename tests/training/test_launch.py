"""Launchers: a CPU launch that would silently run one process instead of several is refused.

Several processes under `torchrun` are tested with the trainers (test_step_settings.py,
test_grpo.py, test_fsdp.py); `accelerate launch --multi_gpu` sets the same variables.
"""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml
from support import REPO

from xomni_core.config import load_config
from xomni_core.errors import ConfigError
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
