"""The memory estimate: laid out on the meta device, it counts what training really holds and
refuses a run that cannot fit before any weight exists."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, run_xomni

from xomni_core.config import load_config
from xomni_core.pipelines.build import build_component, prepare
from xomni_core.training.estimate import GIB, device_memory, estimate_training_memory
from xomni_core.training.lora import add_lora, module_aliases
from xomni_core.training.settings import LoraSettings
from xomni_plugins.backbones.x_omni import XOmniParams, count_parameters

PRESET = REPO / "examples" / "configs" / "x-omni-7b-lora.yaml"
TINY = REPO / "examples" / "configs" / "tiny-sft.yaml"
FULL = ["--set", "training.lora=null", "--set", "runtime.dtype=float32"]


def test_the_estimate_counts_the_parameters_that_training_builds_and_trains() -> None:
    data: dict[str, Any] = yaml.safe_load(TINY.read_text())
    lora = {"r": 4, "target_modules": ["shared_layers.*_proj", "mm_head"]}
    data["training"]["lora"] = lora
    estimate = estimate_training_memory(load_config(data=copy.deepcopy(data)), section="sft")

    resolved, registry = prepare(load_config(data=data), slots=("backbone",))
    backbone: Any = build_component(resolved.component("backbone"), resolved.config, registry)
    module = backbone.trainable_module()
    assert estimate.parameters == sum(p.numel() for p in module.parameters())
    add_lora(module, LoraSettings(**lora), aliases=module_aliases(backbone), seed=0)
    assert estimate.trainable == sum(p.numel() for p in module.parameters() if p.requires_grad)


def test_estimate_prints_the_7b_preset_without_weights_full_lora_and_sharded() -> None:
    lora = run_xomni("train", "estimate", str(PRESET))
    full = run_xomni("train", "estimate", str(PRESET), *FULL)
    sharded = run_xomni("train", "estimate", str(PRESET), *FULL, "--world-size", "8", "--fsdp")
    for done in (lora, full, sharded):
        assert done.returncode == 0, done.stderr
    parameters = count_parameters(XOmniParams())  # the released sizes, by formula
    assert f"{parameters / 1e9:.3f} B parameters" in full.stdout
    assert "LoRA r=64" in lora.stdout and "FSDP over 8" in sharded.stdout

    def gib(output: str, row: str) -> float:
        line = next(line for line in output.splitlines() if line.strip().startswith(row))
        return float(line.split()[-2])

    # AdamW in float32: 4 bytes of weights, 4 of gradients, 8 of moments per parameter.
    assert gib(full.stdout, "optimiser") == pytest.approx(8 * parameters / GIB, abs=0.01)
    assert gib(sharded.stdout, "optimiser") == pytest.approx(8 * parameters / GIB / 8, abs=0.01)
    assert gib(lora.stdout, "optimiser") < 0.05 * gib(full.stdout, "optimiser")
    assert gib(sharded.stdout, "activations") == gib(full.stdout, "activations")  # not sharded
    assert gib(lora.stdout, "total per device") < 0.25 * gib(full.stdout, "total per device")


def test_a_run_that_cannot_fit_is_refused_before_any_weight_exists(tmp_path: Path) -> None:
    config = load_config(PRESET, ["training.lora=null", "runtime.dtype=float32", "runtime.device=cpu"])
    needed = estimate_training_memory(config, section="sft").total
    available = device_memory("cpu")
    if available is None or available >= needed:
        pytest.skip("this machine holds full fine-tuning of the 7B backbone")
    done = run_xomni(
        "train", "sft", str(PRESET), *FULL, "--set", "runtime.device=cpu", env={"XOMNI_ALLOW_LARGE": "0"}
    )
    assert done.returncode == 2
    message = " ".join(done.stderr.split())
    assert "training needs about" in message and "training.lora" in message
    assert "total per device" in message
    assert "Traceback" not in done.stderr
