"""FSDP: two processes that shard the backbone take the step of one process on their pairs,
write ordinary checkpoints, and resume exactly; the combinations it does not run are refused."""

from __future__ import annotations

import copy
import os
import re
import subprocess
import sys
import textwrap
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support import REPO, run_torchrun_xomni

from xomni_core.config import load_config
from xomni_core.errors import ConfigError
from xomni_core.folders import load_tensors
from xomni_core.pipelines.build import build_component, prepare
from xomni_core.training.checkpoint import list_checkpoints, load_trainer_state
from xomni_core.training.estimate import estimate_training_memory
from xomni_core.training.grpo import train_grpo
from xomni_core.training.loop import TIMING_METRICS
from xomni_core.training.metrics import read_metrics
from xomni_core.training.sft import train_sft

EXAMPLE = REPO / "examples" / "configs" / "tiny-sft.yaml"
FSDP = {"strategy": "fsdp"}


def _config(output: Path, *, distributed: dict[str, Any] | None = None, **sft: Any) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    del data["decoder"]
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 6, "seed": 0},
        batch_size=3,
        steps=2,
        learning_rate=1.0e-2,
        warmup_steps=0,
        checkpoint_every=1,
        keep_checkpoints=None,
        output_dir=str(output),
    )
    data["training"]["sft"].update(sft)
    if distributed is not None:
        data["training"]["distributed"] = distributed
    return copy.deepcopy(data)


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def _weights(output: Path, step: int) -> dict[str, torch.Tensor]:
    return load_tensors(output / "checkpoints" / f"step-{step:08d}" / "backbone" / "model.safetensors")


def _torchrun(*args: str) -> None:
    done = run_torchrun_xomni(*args)
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"


SHARDS = textwrap.dedent(
    """
    import sys
    from pathlib import Path

    import torch
    import yaml

    from xomni_core.config import load_config
    from xomni_core.pipelines.build import build_component, prepare
    from xomni_core.training.distributed import Processes
    from xomni_core.training.engine import Engine
    from xomni_core.training.settings import DistributedSettings

    resolved, registry = prepare(load_config(data=yaml.safe_load(open(sys.argv[1]))), slots=("backbone",))
    module = build_component(resolved.component("backbone"), resolved.config, registry).trainable_module()
    total = sum(p.numel() for p in module.parameters())
    with Processes.start("cpu", group=True) as processes:
        settings = DistributedSettings(strategy="fsdp")
        engine = Engine(processes, mixed_precision="no", weights_dtype=torch.float32, distributed=settings)
        wrapped, _, parameters = engine.prepare(module, torch.optim.AdamW(module.parameters()))
        held = sum(p.to_local().numel() for p in parameters)
        units = sorted({type(m).__name__ for m in wrapped.modules() if type(m).__name__.startswith("FSDP")})
        # A file per process: two processes' buffered prints to one pipe need not arrive whole.
        report = f"rank {processes.rank} holds {held} of {total} in {' '.join(units)}"
        (Path(sys.argv[2]) / f"rank-{processes.rank}.txt").write_text(report)
        engine.release()
    """
)


def test_each_of_two_processes_holds_half_of_the_weights_in_decoder_layer_units(tmp_path: Path) -> None:
    (tmp_path / "shards.py").write_text(SHARDS)
    config = _write(tmp_path / "c.yaml", _config(tmp_path / "out"))
    launch = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2"]
    done = subprocess.run(
        [*launch, str(tmp_path / "shards.py"), str(config), str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    reports = "\n".join(path.read_text() for path in sorted(tmp_path.glob("rank-*.txt")))
    lines = re.findall(r"rank (\d) holds (\d+) of (\d+) in (.*)", reports)
    assert sorted(rank for rank, *_ in lines) == ["0", "1"]
    total = int(lines[0][2])
    assert sum(int(held) for _, held, _, _ in lines) == total  # every weight in exactly one shard
    assert all(int(held) < 0.6 * total for _, held, _, _ in lines)
    assert all("FSDPQwen2DecoderLayer" in units.split() for *_, units in lines)


def test_two_sharding_processes_take_the_step_of_one_process_on_their_pairs(tmp_path: Path) -> None:
    one = train_sft(load_config(data=_config(tmp_path / "one", batch_size=6)), show_progress=False)
    config = _write(tmp_path / "two.yaml", _config(tmp_path / "two", distributed=FSDP))
    _torchrun("train", "sft", str(config), "--no-progress")

    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert two[0]["samples"] == one.records[0]["samples"] == 6
    # The losses are sums over the same tokens in another order (float64 totals of float32 terms).
    assert two[0]["loss"] == pytest.approx(one.records[0]["loss"], rel=1e-6)
    assert two[0]["token_accuracy"] == one.records[0]["token_accuracy"]
    # The gradients are the same means, summed by a reduce-scatter over two halves instead of one
    # batch of six: float32 rounding, which Adam's division by each gradient's size magnifies where
    # a gradient is nearly zero. So compare the weights' difference with the whole update, as the
    # accumulation and two-process tests do; a wrong shard or a missing reduction is of the size
    # of the update itself.
    resolved, registry = prepare(load_config(data=_config(tmp_path / "start")), slots=("backbone",))
    backbone: Any = build_component(resolved.component("backbone"), resolved.config, registry)
    start = backbone.trainable_module().state_dict()
    single, sharded = _weights(tmp_path / "one", 1), _weights(tmp_path / "two", 1)
    assert single.keys() == sharded.keys() == start.keys()  # whole weights under their own names
    difference = sum(float((sharded[n] - w).norm()) ** 2 for n, w in single.items()) ** 0.5
    update = sum(float((w - start[n]).norm()) ** 2 for n, w in single.items()) ** 0.5
    assert update > 0.1
    assert difference < 1e-3 * update


def test_a_sharded_run_resumed_from_its_checkpoint_ends_like_an_uninterrupted_one(tmp_path: Path) -> None:
    whole = _write(tmp_path / "whole.yaml", _config(tmp_path / "whole", distributed=FSDP, steps=4))
    _torchrun("train", "sft", str(whole), "--no-progress")
    halted = _write(tmp_path / "halted.yaml", _config(tmp_path / "halted", distributed=FSDP, steps=2))
    _torchrun("train", "sft", str(halted), "--no-progress")
    state = load_trainer_state(list_checkpoints(tmp_path / "halted")[-1][1])
    assert state.world_size == 2 and state.optimizer["state"]  # the gathered optimiser state
    with pytest.raises(ConfigError, match="under fsdp, this run is ddp; resume it with strategy: fsdp"):
        train_sft(load_config(data=_config(tmp_path / "halted", steps=4)), resume=True, show_progress=False)
    _torchrun("train", "sft", str(halted), "--set", "training.sft.steps=4", "--resume", "--no-progress")

    def without_timings(output: Path) -> list[dict[str, Any]]:
        records = read_metrics(output / "metrics.jsonl")
        return [{k: v for k, v in r.items() if k not in TIMING_METRICS} for r in records]

    assert without_timings(tmp_path / "halted") == without_timings(tmp_path / "whole")
    resumed, uninterrupted = _weights(tmp_path / "halted", 4), _weights(tmp_path / "whole", 4)
    for name, weight in uninterrupted.items():
        assert torch.equal(resumed[name], weight), name


@pytest.mark.parametrize(
    ("training", "message"),
    [
        ({"lora": {"r": 2}}, "with training.lora"),
        ({}, "start the run with torchrun or accelerate launch"),
    ],
    ids=["lora", "not-launched"],
)
def test_sft_refuses_what_sharding_does_not_run(
    tmp_path: Path, training: dict[str, Any], message: str
) -> None:
    data = _config(tmp_path / "out", distributed=FSDP)
    data["training"].update(training)
    with pytest.raises(ConfigError, match=r"training\.distributed\.strategy: fsdp") as refused:
        train_sft(load_config(data=data), show_progress=False)
    assert message in str(refused.value)
    assert not list_checkpoints(tmp_path / "out")


def test_sample_images_are_refused_under_sharding(tmp_path: Path) -> None:
    data = _config(tmp_path / "out", distributed=FSDP)
    data["training"]["sft"]["eval"] = {"synthetic": {"split": "eval", "n": 2}, "every": 1, "samples": 1}
    with pytest.raises(ConfigError, match=r"training\.sft\.eval\.samples: .*strategy: fsdp"):
        train_sft(load_config(data=data), show_progress=False)
    assert not (tmp_path / "out").exists()


def test_grpo_refuses_sharding(tmp_path: Path) -> None:
    data = yaml.safe_load((REPO / "examples" / "configs" / "tiny-grpo.yaml").read_text())
    data["training"]["grpo"]["output_dir"] = str(tmp_path)
    data["training"]["distributed"] = FSDP
    with pytest.raises(ConfigError, match=r"training\.distributed\.strategy: fsdp trains SFT only"):
        train_grpo(load_config(data=data), show_progress=False)


def test_the_memory_estimate_shards_as_the_strategy_setting_does(tmp_path: Path) -> None:
    def estimate(distributed: dict[str, Any] | None, **options: Any) -> Any:
        config = load_config(data=_config(tmp_path, distributed=distributed))
        return estimate_training_memory(config, section="sft", world_size=4, **options)

    replicated, sharded = estimate(None), estimate(FSDP)
    assert sharded == estimate(None, fsdp=True)  # the setting and `train estimate --fsdp` agree
    for kind in ("weights", "gradients", "optimizer"):
        assert getattr(sharded, kind) == getattr(replicated, kind) // 4, kind
    assert sharded.activations == replicated.activations
    kept = estimate({**FSDP, "reshard_after_forward": False})
    assert kept.weights == replicated.weights and kept.optimizer == sharded.optimizer
    offloaded = estimate({**FSDP, "cpu_offload": True})
    assert offloaded.weights == offloaded.gradients == offloaded.optimizer == 0
