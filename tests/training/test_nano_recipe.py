"""`xomni train nano` end to end at a few steps per stage: every stage runs, resumes and records."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

import pytest
import yaml

from xomni_core import InputError, TextToImagePipeline
from xomni_core.cli import main
from xomni_core.models import combined_hash, hash_files
from xomni_core.training.metrics import read_metrics
from xomni_plugins.recipes.nano import NanoRecipe, run_nano_recipe
from xomni_plugins.recipes.nano.evaluate import stratified_mean, stratified_standard_error
from xomni_plugins.recipes.nano.recipe import _check_packages

QUICK = {
    "threads": None,
    "decoder_noise_scale": 0.0,
    "cfg_scale": 2.0,
    "data": {"train_images": 16, "word_images": 2},
    "tokenizer": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
    "vae": {"steps": 2, "batch_size": 2, "warmup_steps": 1, "refine_steps": 1, "refine_batch_size": 2},
    "flow": {"steps": 2, "batch_size": 4, "warmup_steps": 1},
    "sft": {
        "scenes": 16,
        "steps": 2,
        "batch_size": 4,
        "warmup_steps": 1,
        "decay": "cosine",
        "caption_drop": 0.5,
    },
    "grpo": {
        "prompts": 4,
        "steps": 2,
        "group_size": 2,
        "prompts_per_step": 1,
        "num_inference_steps": 2,
        "updates_per_rollout": 2,
        "decay": "cosine",
        "correct_bonus": 0.5,
        "attribute_credit": 0.25,
        "regional_credit": 0.5,
        "eval_prompts": 2,
        "eval_every": 1,
    },
    "eval": {"scenes": 7, "batch_size": 7},
}


def read_prompts(path: Path) -> set[str]:
    return {json.loads(line)["prompt"] for line in path.read_text().splitlines()}


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nano")
    # A relative OUT, as typed on the command line: the configs the stages write must still work.
    cwd = Path.cwd()
    os.chdir(out.parent)
    try:
        run_nano_recipe(
            out.name, NanoRecipe.model_validate(QUICK), show_progress=False, command=["xomni", "train"]
        )
    finally:
        os.chdir(cwd)
    return out


def test_every_stage_leaves_its_folder_and_timing(quick_run: Path) -> None:
    stages = json.loads((quick_run / "stages.json").read_text())["stages"]
    assert list(stages) == ["tokenizer", "decoder", "sft", "grpo", "eval"]
    assert all(stage["seconds"] > 0 for stage in stages.values())
    assert stages["tokenizer"]["segmentation_ce"] > 0  # the recipe names shapes by default
    for folder in ("tokenizer", "decoder", "backbone-sft", "backbone-grpo"):
        assert (quick_run / folder / "xomni_component.json").is_file()


def test_comparison_covers_three_modes_and_every_category(quick_run: Path) -> None:
    report = json.loads((quick_run / "eval" / "comparison.json").read_text())
    assert list(report["overall"]) == ["sft_single", "sft_best_of_2", "grpo_single"]
    for scores in report["categories"].values():
        assert len(scores) == 8  # seven categories and overall
        assert all(0.0 <= value <= 1.0 for value in scores.values())
    table = (quick_run / "eval" / "comparison.md").read_text()
    assert "| **overall** |" in table and "| standard error (overall) |" in table
    assert set(report["standard_errors"]) == set(report["overall"])
    lead = report["leads"]["grpo_single - sft_best_of_2"]
    overall = report["overall"]
    assert lead["difference"] == pytest.approx(overall["grpo_single"] - overall["sft_best_of_2"])
    assert f"grpo_single - sft_best_of_2: {100 * lead['difference']:+.1f} points" in table
    split = report["held_out_split"]["grpo_single"]
    assert split["held_out"]["total"] + split["seen"]["total"] == report["scenes"]
    assert f"| held-out pairs/words ({split['held_out']['total']} images) |" in table


def test_standard_errors_add_up_each_categorys_spread() -> None:
    values, categories = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0], ["a"] * 4 + ["b"] * 4
    assert stratified_mean(values, categories) == 0.75
    # Category a: sample variance 1/3 over 4 scenes; b: none; two categories averaged.
    assert stratified_standard_error(values, categories) == pytest.approx(math.sqrt(1 / 12) / 2)


def test_model_folder_is_a_pipeline_with_provenance(quick_run: Path) -> None:
    model = quick_run / "model"
    provenance = json.loads((model / "provenance.json").read_text())
    files = hash_files(model)
    assert provenance["sha256"] == files
    assert provenance["weights_sha256"] == combined_hash(files)
    assert provenance["command"] == "xomni train"
    assert provenance["recipe"] == NanoRecipe.model_validate(QUICK).model_dump(mode="json")
    config = yaml.safe_load((model / "pipeline.yaml").read_text())
    assert config["backbone"] == {"plugin": "x-omni", "weights": "backbone"}
    for written in (
        config,
        *(yaml.safe_load((quick_run / name).read_text()) for name in ("grpo.yaml", "pipeline-sft.yaml")),
    ):
        assert written["generation"]["noise_scale"] == 0.0
        assert written["generation"]["sampling"]["cfg_scale"] == 2.0
    assert yaml.safe_load((quick_run / "sft.yaml").read_text())["training"]["sft"]["decay"] == "cosine"
    grpo = yaml.safe_load((quick_run / "grpo.yaml").read_text())["training"]["grpo"]
    assert grpo["sampling"]["cfg_scale"] == 2.0  # GRPO trains the guided policy that generation samples
    assert grpo["updates_per_rollout"] == 2 and grpo["decay"] == "cosine" and grpo["regional_credit"] == 0.5
    rewards = yaml.safe_load((quick_run / "grpo.yaml").read_text())["rewards"]
    params = {"score": "checks", "correct_bonus": 0.5, "attribute_credit": 0.25}
    assert rewards == [{"plugin": "compose-judge", "params": params}]
    held_out = read_prompts(quick_run / "rl-eval-prompts.jsonl")
    assert len(held_out) == 2 and not read_prompts(quick_run / "rl-prompts.jsonl") & held_out
    logged = [r for r in read_metrics(quick_run / "grpo" / "metrics.jsonl") if "eval_reward" in r]
    assert [r["step"] for r in logged] == [1, 2]
    assert (
        json.loads((quick_run / "stages.json").read_text())["stages"]["grpo"]["eval_reward_last"]
        == (logged[-1]["eval_reward"])
    )
    pipeline = TextToImagePipeline.from_config(model / "pipeline.yaml")
    image = pipeline("a red circle", show_progress=False).images[0]
    assert image.size == (128, 128)


def test_resume_skips_finished_stages(quick_run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    before = (quick_run / "backbone-grpo" / "model.safetensors").stat().st_mtime_ns
    run_nano_recipe(quick_run, NanoRecipe.model_validate(QUICK), resume=True, show_progress=False)
    assert (quick_run / "backbone-grpo" / "model.safetensors").stat().st_mtime_ns == before
    assert capsys.readouterr().out.count("done in an earlier run") == 5


def test_resume_with_other_settings_is_refused(quick_run: Path) -> None:
    other = NanoRecipe.model_validate({**QUICK, "seed": 1})
    with pytest.raises(InputError, match=r"started the tokenizer stage with other settings \(seed: 0 -> 1\)"):
        run_nano_recipe(quick_run, other, resume=True, show_progress=False)


def test_a_used_folder_needs_resume(quick_run: Path) -> None:
    with pytest.raises(InputError, match="--resume"):
        run_nano_recipe(quick_run, NanoRecipe.model_validate(QUICK), show_progress=False)


def test_cli_names_a_bad_setting(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["train", "nano", "--out", str(tmp_path), "--set", "grpo.step=3"]) == 2
    err = capsys.readouterr().err
    assert "--set grpo.step" in err and "did you mean 'steps'" in err


def test_a_missing_training_package_is_named_before_the_first_stage(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setitem(sys.modules, "accelerate", None)  # as if not installed
    assert main(["train", "nano", "--out", str(tmp_path / "run"), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())  # unwrapped
    assert "accelerate (the sft stage)" in err and "pip install 'xomni[train]'" in err
    assert "Traceback" not in err and not (tmp_path / "run").exists()
    _check_packages(until="decoder")  # the stages before sft need no accelerate


def test_guidance_without_an_unconditional_branch_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["train", "nano", "--out", str(tmp_path), "--set", "cfg_scale=3"]) == 2
    err = capsys.readouterr().err
    assert "cfg_scale 3.0" in err and "sft.caption_drop" in err
    assert "Value error" not in err and "expected object" not in err  # one plain sentence
    assert not any(tmp_path.iterdir())
    NanoRecipe.model_validate({"cfg_scale": 3.0, "sft": {"caption_drop": 0.1}})
