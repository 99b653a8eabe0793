"""Gradient accumulation, mixed precision and gradient checkpointing change how a step is
computed, not which step is taken (beyond half-precision rounding)."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support import REPO, run_torchrun_xomni

from xomni_core.config import load_config
from xomni_core.errors import ConfigError
from xomni_core.pipelines.build import build_component, prepare
from xomni_core.training.checkpoint import list_checkpoints, load_trainer_state
from xomni_core.training.loop import TIMING_METRICS
from xomni_core.training.metrics import read_metrics
from xomni_core.training.sft import train_sft

EXAMPLE = REPO / "examples" / "configs" / "tiny-sft.yaml"


def _config(tmp_path: Path, name: str, sft: dict[str, Any] | None = None, **training: Any) -> dict[str, Any]:
    data = yaml.safe_load(EXAMPLE.read_text())
    del data["decoder"]
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 6, "seed": 0},
        batch_size=6,
        steps=3,
        learning_rate=1.0e-2,
        warmup_steps=0,
        checkpoint_every=3,
        output_dir=str(tmp_path / name),
    )
    data["training"]["sft"].update(sft or {})
    data["training"].update(training)
    return copy.deepcopy(data)


def _run(data: dict[str, Any]) -> Any:
    return train_sft(load_config(data=data), show_progress=False)


def _records_close(actual: list[dict[str, Any]], expected: list[dict[str, Any]], rel: float) -> None:
    for got, want in zip(actual, expected, strict=True):
        for key, value in want.items():
            if key not in TIMING_METRICS:
                assert got[key] == pytest.approx(value, rel=rel, abs=1e-7), (got["step"], key)


def _weights(result: Any) -> dict[str, torch.Tensor]:
    return dict(result.backbone.trainable_module().state_dict())


def test_two_accumulated_micro_batches_take_the_step_of_one_batch_twice_their_size(tmp_path: Path) -> None:
    whole = _run(_config(tmp_path, "whole"))
    halves = _run(_config(tmp_path, "halves", {"batch_size": 3}, gradient_accumulation_steps=2))
    assert halves.records[0]["samples"] == whole.records[0]["samples"] == 6
    # Summation order differs (two means of 3 instead of one of 6): float32 rounding only.
    _records_close(halves.records, whole.records, rel=1e-5)
    # Adam divides each gradient by its own size, so where one is nearly zero rounding shows in
    # the step: compare the weights' difference with the whole update, as the GRPO test does.
    resolved, registry = prepare(load_config(data=_config(tmp_path, "start")), slots=("backbone",))
    start = build_component(resolved.component("backbone"), resolved.config, registry)
    start_weights = dict(start.trainable_module().state_dict())  # type: ignore[attr-defined]
    one, two = _weights(whole), _weights(halves)
    difference = sum(float((two[n] - w).norm()) ** 2 for n, w in one.items()) ** 0.5
    update = sum(float((w - start_weights[n]).norm()) ** 2 for n, w in one.items()) ** 0.5
    assert difference < 1e-3 * update


def test_gradient_checkpointing_recomputes_layers_without_changing_the_steps(tmp_path: Path) -> None:
    stored = _run(_config(tmp_path, "stored"))
    recomputed = _run(_config(tmp_path, "recomputed", gradient_checkpointing=True))
    _records_close(recomputed.records, stored.records, rel=1e-6)


def test_bf16_autocast_trains_float32_weights_close_to_float32_training(tmp_path: Path) -> None:
    exact = _run(_config(tmp_path, "fp32", {"steps": 6}))
    mixed = _run(_config(tmp_path, "bf16", {"steps": 6}, mixed_precision="bf16"))
    assert {w.dtype for w in _weights(mixed).values()} == {torch.float32}
    assert mixed.records[0]["loss"] == pytest.approx(exact.records[0]["loss"], rel=1e-2)
    assert mixed.records[0]["loss"] != exact.records[0]["loss"]  # it did compute in bfloat16
    assert mixed.records[-1]["loss"] < 0.8 * mixed.records[0]["loss"]


def test_fp16_scales_the_loss_and_checkpoints_the_scale(tmp_path: Path) -> None:
    result = _run(_config(tmp_path, "fp16", {"steps": 6, "checkpoint_every": 6}, mixed_precision="fp16"))
    losses = [record["loss"] for record in result.records]
    assert all(loss == loss for loss in losses)  # no NaN
    assert losses[-1] < 0.8 * losses[0]
    state = load_trainer_state(list_checkpoints(tmp_path / "fp16")[-1][1])
    assert state.scaler is not None and float(state.scaler["scale"]) > 1.0


def test_mixed_precision_refuses_half_precision_master_weights(tmp_path: Path) -> None:
    data = _config(tmp_path, "refused", mixed_precision="bf16")
    data["runtime"]["dtype"] = "bfloat16"
    with pytest.raises(ConfigError, match=r"training\.mixed_precision: bf16 keeps float32 master weights"):
        _run(data)


def test_lora_trains_float32_adapters_under_autocast_on_a_bfloat16_base(tmp_path: Path) -> None:
    data = _config(
        tmp_path, "lora", {"steps": 6}, mixed_precision="bf16", lora={"r": 4, "target_modules": ["*_proj"]}
    )
    data["runtime"]["dtype"] = "bfloat16"
    result = _run(data)
    dtypes = {p.dtype for p in result.backbone.trainable_module().parameters() if p.requires_grad}
    assert dtypes == {torch.float32}
    assert result.records[-1]["loss"] < 0.95 * result.records[0]["loss"]  # measured: 5.52 -> 5.03


def test_two_lora_processes_take_the_step_of_one_accumulating_two_micro_batches(tmp_path: Path) -> None:
    lora = {"r": 4, "target_modules": ["*_proj", "mm_head"]}
    one = _run(
        _config(tmp_path, "one", {"batch_size": 3, "steps": 2}, lora=lora, gradient_accumulation_steps=2)
    )
    config = tmp_path / "two.yaml"
    config.write_text(yaml.safe_dump(_config(tmp_path, "two", {"batch_size": 3, "steps": 2}, lora=lora)))
    done = run_torchrun_xomni("train", "sft", str(config), "--no-progress")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert two[0]["samples"] == one.records[0]["samples"] == 6
    _records_close(two, one.records, rel=1e-5)
