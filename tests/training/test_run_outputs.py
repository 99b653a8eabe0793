"""Every training run ends with OUTPUT/pipeline/pipeline.yaml, which `xomni generate --config`
runs as is and which draws what the final checkpoint draws."""

from __future__ import annotations

import copy
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml
from PIL import Image
from support import REPO

from xomni_core import TextToImagePipeline
from xomni_core.cli import main
from xomni_core.config import load_config
from xomni_core.training.checkpoint import latest_checkpoint
from xomni_core.training.grpo import train_grpo
from xomni_core.training.sft import train_sft

SFT_EXAMPLE = REPO / "examples" / "configs" / "tiny-sft.yaml"
GRPO_EXAMPLE = REPO / "examples" / "configs" / "tiny-grpo.yaml"
PROMPT = "a red circle above a blue square"


def _sft(output: Path, *, lora: bool = False, steps: int = 3) -> dict[str, Any]:
    data = yaml.safe_load(SFT_EXAMPLE.read_text())
    data["decoder"]["params"]["num_inference_steps"] = 1
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 4, "seed": 0},
        batch_size=4,
        steps=steps,
        learning_rate=3.0e-3,
        warmup_steps=0,
        checkpoint_every=2,
        output_dir=str(output),
    )
    if lora:
        data["training"]["lora"] = {"r": 4, "alpha": 8, "target_modules": ["*_proj"]}
    return data


def _generate(config: Path | str, out: Path, capsys: pytest.CaptureFixture[str]) -> tuple[Any, np.ndarray]:
    """Tokens and picture of PROMPT at seed 5, through the `xomni generate` command."""
    code = main(
        ["generate", "--config", str(config), PROMPT, "--out", str(out), "--seed", "5", "--no-progress"]
    )
    captured = capsys.readouterr()
    assert code == 0, captured.err
    record = json.loads((out / "generation.json").read_text())
    return record["tokens"], np.asarray(Image.open(out / record["images"][0]))


def _write(path: Path, data: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


def test_a_full_sft_run_leaves_a_pipeline_that_draws_what_its_final_checkpoint_draws(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    data = _sft(output)
    result = train_sft(load_config(data=data), show_progress=False)
    pipeline = output / "pipeline" / "pipeline.yaml"
    assert result.pipeline == pipeline
    assert f"pipeline: {pipeline}" in capsys.readouterr().out

    final = latest_checkpoint(output)
    assert final is not None and final.name == "step-00000003"
    weights = sorted((output / "pipeline" / "backbone").iterdir())
    assert [w.name for w in weights] == sorted(p.name for p in (final / "backbone").iterdir())
    for file in weights:
        assert file.read_bytes() == (final / "backbone" / file.name).read_bytes()

    direct = copy.deepcopy(data)
    direct["backbone"] = {"plugin": "x-omni", "weights": str(final / "backbone")}
    del direct["training"]
    expected = _generate(_write(tmp_path / "direct.yaml", direct), tmp_path / "a", capsys)
    tokens, picture = _generate(pipeline, tmp_path / "b", capsys)
    assert tokens == expected[0]
    assert np.array_equal(picture, expected[1])

    untrained = copy.deepcopy(data)
    del untrained["training"]
    assert _generate(_write(tmp_path / "base.yaml", untrained), tmp_path / "c", capsys)[0] != tokens


def test_a_lora_sft_run_leaves_base_plus_final_adapter(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    data = _sft(output, lora=True)
    train_sft(load_config(data=data), show_progress=False)
    pipeline = output / "pipeline" / "pipeline.yaml"
    written = yaml.safe_load(pipeline.read_text())
    assert written["backbone"]["adapter"] == "adapter"
    assert written["backbone"]["params"] == data["backbone"]["params"]  # the base, rebuilt by seed
    assert "training" not in written and not (output / "pipeline" / "backbone").exists()
    final = latest_checkpoint(output)
    assert final is not None
    saved = output / "pipeline" / "adapter" / "adapter_model.safetensors"
    assert saved.read_bytes() == (final / "adapter" / "adapter_model.safetensors").read_bytes()

    direct = copy.deepcopy(data)
    direct["backbone"]["adapter"] = str(final / "adapter")
    del direct["training"]
    expected = _generate(_write(tmp_path / "direct.yaml", direct), tmp_path / "a", capsys)
    tokens, picture = _generate(pipeline, tmp_path / "b", capsys)
    assert tokens == expected[0]
    assert np.array_equal(picture, expected[1])

    # A standalone copy (every component in one folder, the adapter merged) draws the same.
    TextToImagePipeline.from_pretrained(output / "pipeline").save_pretrained(tmp_path / "standalone")
    assert _generate(tmp_path / "standalone", tmp_path / "c", capsys)[0] == tokens


def test_a_lora_run_on_saved_weights_refers_to_the_base_and_decoder_by_absolute_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sft(tmp_path / "out", lora=True, steps=2)
    built = TextToImagePipeline.from_config(load_config(data=data))
    built.backbone.save_pretrained(tmp_path / "base" / "backbone")
    built.decoder.save_pretrained(tmp_path / "base" / "decoder")
    for slot in ("backbone", "decoder"):
        data[slot] = {"plugin": data[slot]["plugin"], "weights": f"../base/{slot}"}
    (tmp_path / "configs").mkdir()
    config = _write(tmp_path / "configs" / "train.yaml", data)
    assert main(["train", "sft", str(config), "--no-progress"]) == 0
    pipeline = tmp_path / "out" / "pipeline" / "pipeline.yaml"
    assert f"pipeline: {pipeline}" in capsys.readouterr().out
    written = yaml.safe_load(pipeline.read_text())
    assert written["backbone"] == {
        "plugin": "x-omni",
        "weights": str((tmp_path / "base" / "backbone").resolve()),
        "adapter": "adapter",
    }
    assert written["decoder"]["weights"] == str((tmp_path / "base" / "decoder").resolve())

    direct = copy.deepcopy(data)
    final = latest_checkpoint(tmp_path / "out")
    assert final is not None
    direct["backbone"]["adapter"] = str(final / "adapter")
    del direct["training"]
    expected = _generate(_write(tmp_path / "configs" / "direct.yaml", direct), tmp_path / "a", capsys)
    assert _generate(pipeline, tmp_path / "b", capsys)[0] == expected[0]


def test_a_grpo_run_leaves_a_pipeline_that_generates(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    output = tmp_path / "out"
    data = yaml.safe_load(GRPO_EXAMPLE.read_text())
    data["training"]["grpo"].update(steps=2, group_size=2, prompts_per_step=1, checkpoint_every=1)
    data["training"]["grpo"]["output_dir"] = str(output)
    result = train_grpo(load_config(data=data), show_progress=False)
    assert result.pipeline == output / "pipeline" / "pipeline.yaml"
    written = yaml.safe_load(result.pipeline.read_text())
    assert "rewards" not in written and "training" not in written
    final = latest_checkpoint(output)
    assert final is not None and final.name == "step-00000002"

    direct = copy.deepcopy(data)
    direct["backbone"] = {"plugin": "x-omni", "weights": str(final / "backbone")}
    del direct["training"], direct["rewards"]
    expected = _generate(_write(tmp_path / "direct.yaml", direct), tmp_path / "a", capsys)
    assert _generate(result.pipeline, tmp_path / "b", capsys)[0] == expected[0]


def test_a_resumed_run_replaces_its_pipeline_with_the_new_final_weights(tmp_path: Path) -> None:
    output = tmp_path / "out"
    train_sft(load_config(data=_sft(output, steps=2)), show_progress=False)
    first = (output / "pipeline" / "backbone").stat().st_ino
    train_sft(load_config(data=_sft(output, steps=3)), resume=True, show_progress=False)
    final = latest_checkpoint(output)
    assert final is not None and final.name == "step-00000003"
    backbone = output / "pipeline" / "backbone"
    assert backbone.stat().st_ino != first
    for file in backbone.iterdir():
        assert file.read_bytes() == (final / "backbone" / file.name).read_bytes()
    assert sorted(p.name for p in (output / "pipeline").iterdir()) == ["backbone", "pipeline.yaml"]
    assert not [p for p in output.iterdir() if p.name.startswith(".")]  # no temporaries left


def test_a_pipeline_folder_holding_user_files_is_refused_before_training_and_kept(tmp_path: Path) -> None:
    output = tmp_path / "out"
    (output / "pipeline").mkdir(parents=True)
    notes = output / "pipeline" / "notes.txt"
    notes.write_text("mine")
    data = _sft(output)
    config = _write(tmp_path / "c.yaml", data)
    code = main(["train", "sft", str(config), "--no-progress"])
    assert code == 2
    assert notes.read_text() == "mine"
    assert not (output / "checkpoints").exists()
    assert os.listdir(output / "pipeline") == ["notes.txt"]
