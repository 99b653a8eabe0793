"""The recipe's first stages on their own, and the extra word scenes they can learn from."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from xomni_core import InputError
from xomni_core.cli import main
from xomni_core.folders import load_tensors
from xomni_core.synthetic import SHAPE_MAP_CLASSES, sample_scenes
from xomni_core.synthetic.scenes import split_of_caption
from xomni_core.training.metrics import read_metrics
from xomni_plugins.recipes.nano import NanoData, NanoRecipe, train_nano_stages
from xomni_plugins.recipes.nano.recipe import STAGES, _Run, image_scenes, rl_scenes

TINY = {
    "threads": None,
    "data": {"train_images": 8, "word_images": 4},
    "tokenizer": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "letter_classes": True},
    "vae": {"steps": 1, "batch_size": 2, "warmup_steps": 0, "refine_steps": 1, "refine_batch_size": 2},
    "flow": {"steps": 1, "batch_size": 2, "warmup_steps": 0},
}


def test_stages_stop_after_the_named_one_and_resume_from_there(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = NanoRecipe.model_validate(TINY)
    seconds = train_nano_stages(tmp_path, recipe, until="tokenizer", show_progress=False)
    assert list(seconds) == ["tokenizer"]
    assert (tmp_path / "tokenizer" / "xomni_component.json").is_file()
    assert not (tmp_path / "decoder").exists()

    seconds = train_nano_stages(tmp_path, recipe, until="decoder", resume=True, show_progress=False)
    assert list(seconds) == ["tokenizer", "decoder"]
    assert capsys.readouterr().out.count("done in an earlier run") == 1
    assert (tmp_path / "decoder" / "xomni_component.json").is_file()
    assert not (tmp_path / "model").exists()
    assert json.loads((tmp_path / "stages.json").read_text())["recipe"]["data"]["word_images"] == 4


def test_letter_classes_name_the_letters_in_the_tokenizer_target(tmp_path: Path) -> None:
    run = _Run(tmp_path, NanoRecipe.model_validate(TINY), show_progress=False, log=print)
    words = [i for i, scene in enumerate(run.train_scenes) if scene.word is not None]
    assert words and int(run.shape_maps[words].max()) > SHAPE_MAP_CLASSES.index("text")


def test_an_unknown_last_stage_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="until must be one of tokenizer, decoder, sft, grpo, eval"):
        train_nano_stages(tmp_path, NanoRecipe.model_validate(TINY), until="vae")
    assert not any(tmp_path.iterdir())


def test_word_images_follow_the_mixed_scenes_without_repeating_them() -> None:
    mixed = image_scenes(NanoData(train_images=14, word_images=0))
    scenes = image_scenes(NanoData(train_images=14, word_images=20))
    assert scenes[:14] == mixed
    words = scenes[14:]
    assert len(words) == 20 and all(scene.category == "text" for scene in words)
    assert not any(scene.held_out() for scene in words)  # train split: no held-out word
    seen = {scene.to_json() for scene in mixed}
    assert not any(scene.to_json() in seen for scene in words)


def test_grpo_prompts_hold_held_out_pairs_but_no_caption_the_comparison_judges() -> None:
    recipe = NanoRecipe.model_validate({"eval": {"scenes": 210}})
    prompts = rl_scenes(recipe, 600)
    judged = {scene.caption for scene in sample_scenes("eval", 210, seed=0)}
    held_out = [scene for scene in prompts if scene.held_out()]
    assert len(prompts) == 600 and len(held_out) > 30
    assert not {scene.caption for scene in prompts} & judged
    assert all(split_of_caption(scene.caption) == "rl" for scene in prompts)
    assert rl_scenes(recipe, 300) == prompts[:300]  # more prompts extend fewer
    without = NanoRecipe.model_validate({"grpo": {"held_out_prompts": False}})
    assert rl_scenes(without, 600) == sample_scenes("rl", 600, seed=0)


def test_held_out_share_spreads_that_share_of_held_out_prompts_over_the_list() -> None:
    as_drawn = rl_scenes(NanoRecipe.model_validate({"grpo": {"held_out_share": None}}), 400)
    assert 0.1 < sum(scene.held_out() for scene in as_drawn) / 400 < 0.35
    prompts = rl_scenes(NanoRecipe.model_validate({"grpo": {"held_out_share": 0.5}}), 400)
    assert [scene.held_out() for scene in prompts] == [False, True] * 200
    quarter = rl_scenes(NanoRecipe.model_validate({"grpo": {"held_out_share": 0.25}}), 400)
    assert [scene.held_out() for scene in quarter] == [False, False, False, True] * 100
    # Each kind keeps the order it was drawn in, and the draw leaves out what the comparison judges.
    assert [s for s in prompts if not s.held_out()] == [s for s in quarter if not s.held_out()][:200]
    assert [s for s in quarter if s.held_out()] == [s for s in prompts if s.held_out()][:100]
    judged = {scene.caption for scene in sample_scenes("eval", 210, seed=0)}
    assert not {scene.caption for scene in prompts} & judged
    none = rl_scenes(NanoRecipe.model_validate({"grpo": {"held_out_share": 0.0}}), 100)
    assert not any(scene.held_out() for scene in none)


def test_a_held_out_share_without_held_out_prompts_is_refused() -> None:
    with pytest.raises(ValidationError, match=r"held_out_share 0\.3 asks for held-out prompts"):
        NanoRecipe.model_validate({"grpo": {"held_out_prompts": False, "held_out_share": 0.3}})
    NanoRecipe.model_validate({"grpo": {"held_out_prompts": False, "held_out_share": 0.0}})


def test_a_run_recorded_before_the_word_settings_resumes(tmp_path: Path) -> None:
    before_words = {
        "data": {"train_images": 8, "word_images": 0},
        "tokenizer": {**TINY["tokenizer"], "letter_classes": False},
    }
    recipe = NanoRecipe.model_validate(TINY | before_words)
    train_nano_stages(tmp_path, recipe, until="tokenizer", show_progress=False)
    state = json.loads((tmp_path / "stages.json").read_text())
    del state["recipe"]["data"]["word_images"], state["recipe"]["vae"]["refine_steps"]
    del state["recipe"]["tokenizer"]["letter_classes"]
    (tmp_path / "stages.json").write_text(json.dumps(state))
    assert list(train_nano_stages(tmp_path, recipe, until="tokenizer", resume=True)) == ["tokenizer"]
    with pytest.raises(
        InputError,
        match=r"other settings \(data.word_images: 0 -> 4; tokenizer.letter_classes: False -> True\)",
    ):
        other = NanoRecipe.model_validate(TINY)  # four word images more, and letters named
        train_nano_stages(tmp_path, other, until="tokenizer", resume=True)


def test_a_grpo_stage_recorded_before_later_settings_resumes_without_them(tmp_path: Path) -> None:
    before = {"decay": "none", "held_out_prompts": False, "held_out_share": None, "attribute_credit": 0.0}
    recipe = NanoRecipe.model_validate(TINY | {"grpo": before})
    train_nano_stages(tmp_path, recipe, until="tokenizer", show_progress=False)
    state = json.loads((tmp_path / "stages.json").read_text())
    for name in before:
        del state["recipe"]["grpo"][name]
    state["started"] = [*state["started"], "grpo"]  # as if its GRPO stage had begun
    (tmp_path / "stages.json").write_text(json.dumps(state))
    assert list(train_nano_stages(tmp_path, recipe, until="tokenizer", resume=True)) == ["tokenizer"]
    with pytest.raises(
        InputError,
        match=r"other settings \(grpo.attribute_credit: 0.0 -> 0.5; grpo.decay: 'none' -> 'cosine'; "
        r"grpo.held_out_prompts: False -> True\)",
    ):
        train_nano_stages(tmp_path, NanoRecipe.model_validate(TINY), until="tokenizer", resume=True)


def test_settings_of_stages_not_yet_started_may_change(tmp_path: Path) -> None:
    train_nano_stages(tmp_path, NanoRecipe.model_validate(TINY), until="tokenizer", show_progress=False)
    longer = NanoRecipe.model_validate(TINY | {"vae": {**TINY["vae"], "steps": 2}})
    assert list(train_nano_stages(tmp_path, longer, until="decoder", resume=True)) == ["tokenizer", "decoder"]
    assert json.loads((tmp_path / "stages.json").read_text())["recipe"]["vae"]["steps"] == 2
    with pytest.raises(InputError, match=r"the decoder stage with other settings \(vae.steps: 2 -> 1\)"):
        train_nano_stages(tmp_path, NanoRecipe.model_validate(TINY), until="sft", resume=True)
    # Threads are the machine's: a run may continue with other threads.
    train_nano_stages(tmp_path, NanoRecipe.model_validate(longer.model_dump() | {"threads": 1}),
                      until="decoder", resume=True)  # fmt: skip


STOPPABLE = TINY | {
    "data": {"train_images": 8, "word_images": 0},
    "sft": {"scenes": 8, "steps": 2, "batch_size": 2, "warmup_steps": 0},
    "grpo": {"prompts": 4, "steps": 6, "group_size": 2, "prompts_per_step": 1, "num_inference_steps": 1,
             "checkpoint_every": 2, "eval_prompts": 2, "eval_every": 3},
}  # fmt: skip
RUN_CHILD = """
import json, sys
from xomni_plugins.recipes.nano import NanoRecipe, train_nano_stages
train_nano_stages(sys.argv[1], NanoRecipe.model_validate(json.loads(sys.argv[2])), until="grpo",
                  resume=True, show_progress=False)
"""


def test_a_killed_grpo_stage_continues_from_its_checkpoint(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    recipe = NanoRecipe.model_validate(STOPPABLE)
    whole, stopped = tmp_path / "whole", tmp_path / "stopped"
    train_nano_stages(whole, recipe, until="sft", show_progress=False)
    shutil.copytree(whole, stopped)
    train_nano_stages(whole, recipe, until="grpo", resume=True, show_progress=False)
    expected = read_metrics(whole / "grpo" / "metrics.jsonl")
    assert [r["step"] for r in expected if "eval_reward" in r] == [3, 6]

    child = subprocess.Popen([sys.executable, "-c", RUN_CHILD, str(stopped), json.dumps(STOPPABLE)],
                             stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    while len(read_metrics(stopped / "grpo" / "metrics.jsonl")) < 3 and child.poll() is None:
        assert time.monotonic() < deadline, "the recipe child made no progress"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    assert "grpo" not in json.loads((stopped / "stages.json").read_text())["stages"]

    capsys.readouterr()
    train_nano_stages(stopped, recipe, until="grpo", resume=True, show_progress=False)
    assert "[grpo] continuing a stopped run" in capsys.readouterr().out
    resumed = read_metrics(stopped / "grpo" / "metrics.jsonl")
    for key in ("reward_mean", "loss", "kl"):
        assert [r[key] for r in resumed] == pytest.approx([r[key] for r in expected], rel=1e-9), key
    a = load_tensors(whole / "backbone-grpo" / "model.safetensors")
    b = load_tensors(stopped / "backbone-grpo" / "model.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], rtol=0, atol=1e-7) for k in a)


def test_the_cli_stops_after_the_stage_named_by_until(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    settings = [f"{section}.{name}={value}" for section, fields in TINY.items() if isinstance(fields, dict)
                for name, value in fields.items()]  # fmt: skip
    args = ["train", "nano", "--out", str(tmp_path), "--until", "tokenizer", "--no-progress"]
    assert main([*args, *(word for setting in settings for word in ("--set", setting))]) == 0
    out = capsys.readouterr().out
    assert "stages done: tokenizer" in out and "--resume" in out
    assert (tmp_path / "tokenizer").is_dir() and not (tmp_path / "model").exists()


def test_the_cli_offers_every_stage_and_only_those() -> None:
    # The parser lists the stages itself, so that `--help` does not import the recipe (and torch).
    for stage, code in [*((stage, 0) for stage in STAGES), ("vae", 2)]:
        with pytest.raises(SystemExit) as exit_:
            main(["train", "nano", "--until", stage, "--help"])
        assert exit_.value.code == code, stage
