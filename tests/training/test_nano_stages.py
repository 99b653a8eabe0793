"""The recipe's first stages on their own, and the extra word scenes they can learn from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xomni_core import InputError
from xomni_plugins.recipes.nano import NanoData, NanoRecipe, train_nano_stages
from xomni_plugins.recipes.nano.recipe import image_scenes

TINY = {
    "threads": None,
    "data": {"train_images": 8, "word_images": 4},
    "tokenizer": {"steps": 1, "batch_size": 2, "warmup_steps": 0},
    "vae": {"steps": 1, "batch_size": 2, "warmup_steps": 0},
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


def test_an_unknown_last_stage_is_named(tmp_path: Path) -> None:
    with pytest.raises(InputError, match="until must be one of tokenizer, decoder, sft, grpo, eval"):
        train_nano_stages(tmp_path, NanoRecipe.model_validate(TINY), until="vae")
    assert not any(tmp_path.iterdir())


def test_word_images_follow_the_mixed_scenes_without_repeating_them() -> None:
    mixed = image_scenes(NanoData(train_images=14))
    scenes = image_scenes(NanoData(train_images=14, word_images=20))
    assert scenes[:14] == mixed
    words = scenes[14:]
    assert len(words) == 20 and all(scene.category == "text" for scene in words)
    assert not any(scene.held_out() for scene in words)  # train split: no held-out word
    seen = {scene.to_json() for scene in mixed}
    assert not any(scene.to_json() in seen for scene in words)


def test_a_run_recorded_before_the_word_settings_resumes(tmp_path: Path) -> None:
    recipe = NanoRecipe.model_validate(TINY | {"data": {"train_images": 8}})
    train_nano_stages(tmp_path, recipe, until="tokenizer", show_progress=False)
    state = json.loads((tmp_path / "stages.json").read_text())
    del state["recipe"]["data"]["word_images"], state["recipe"]["vae"]["refine_steps"]
    (tmp_path / "stages.json").write_text(json.dumps(state))
    assert list(train_nano_stages(tmp_path, recipe, until="tokenizer", resume=True)) == ["tokenizer"]
    with pytest.raises(InputError, match="different recipe settings"):
        other = NanoRecipe.model_validate(TINY)  # four word images more
        train_nano_stages(tmp_path, other, until="tokenizer", resume=True)
