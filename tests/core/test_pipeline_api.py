"""The pipeline API as a diffusers user writes it: folders, call arguments, components."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from support import REPO

from xomni_core import ConfigError, InputError, SemanticLatents, TokenGrid
from xomni_core.config import load_config
from xomni_core.models import shipped_model_dir
from xomni_core.pipelines import (
    INDEX_FILE,
    TextToImagePipeline,
    folder_config,
    load_component,
    write_model_index,
)

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"
PROMPT = "two red circles left of a blue square"


@pytest.fixture(scope="module")
def pipe() -> TextToImagePipeline:
    pipe = TextToImagePipeline.from_pretrained(shipped_model_dir())
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def tiny() -> TextToImagePipeline:
    return TextToImagePipeline.from_config(TINY)


def same(a: list[Image.Image], b: list[Image.Image]) -> bool:
    return len(a) == len(b) and all(
        np.array_equal(np.asarray(x), np.asarray(y)) for x, y in zip(a, b, strict=True)
    )


def test_shipped_folder_loads_with_its_size_steps_and_runtime(pipe: TextToImagePipeline) -> None:
    image = pipe(PROMPT).images[0]
    assert image.size == (128, 128)
    assert pipe.config.generation.num_inference_steps == 8
    assert pipe.runtime.threads == 1


def test_shipped_index_and_pipeline_yaml_describe_the_same_pipeline() -> None:
    folder = shipped_model_dir()
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["_class_name"] == "TextToImagePipeline"
    assert index["backbone"]["plugin"] == "x-omni" and index["backbone"]["version"]
    assert index["capabilities"]["understanding"] is False
    from_index, from_yaml = folder_config(folder), load_config(folder / "pipeline.yaml")
    assert from_index.model_dump() == from_yaml.model_dump()
    assert all(
        from_index.weights_path(getattr(from_index, slot)) == from_yaml.weights_path(getattr(from_yaml, slot))
        for slot in ("tokenizer", "backbone", "decoder")
    )


def test_runtime_arguments_of_from_pretrained_replace_the_folders() -> None:
    pipe = TextToImagePipeline.from_pretrained(
        shipped_model_dir(), torch_dtype=torch.bfloat16, device="cpu", threads=2, seed=7
    )
    assert (pipe.runtime.dtype, pipe.runtime.threads, pipe.runtime.seed) == ("bfloat16", 2, 7)
    assert next(pipe.backbone.trainable_module().parameters()).dtype == torch.bfloat16
    seen = []
    pipe(
        "a green triangle",
        height=32,
        width=32,
        output_type="tokens",
        show_progress=False,
        callback_on_step_end=lambda p, step, t, kw: seen.append(torch.get_num_threads()),
    )
    assert seen == [2] * 16


def test_identical_generators_give_identical_images(pipe: TextToImagePipeline) -> None:
    first = pipe(PROMPT, generator=torch.Generator().manual_seed(3)).images
    again = pipe(PROMPT, generator=torch.Generator().manual_seed(3)).images
    other = pipe(PROMPT, generator=torch.Generator().manual_seed(4)).images
    assert same(first, again) and not same(first, other)


def test_a_generator_per_image_gives_each_image_as_made_alone(pipe: TextToImagePipeline) -> None:
    batch = pipe([PROMPT, "a green triangle"], generator=[torch.Generator().manual_seed(s) for s in (5, 9)])
    alone = pipe("a green triangle", generator=torch.Generator().manual_seed(9))
    assert batch.tokens.rows()[1] == alone.tokens.rows()[0]
    difference = np.asarray(batch.images[1]).astype(int) - np.asarray(alone.images[0])
    assert np.abs(difference).max() <= 1  # batched and single kernels round alike to one level
    assert batch.settings["seeds"] == [5, 9]
    assert same(alone.images, pipe("a green triangle", seeds=[9]).images)


def test_num_images_per_prompt_repeats_each_prompt_in_order(pipe: TextToImagePipeline) -> None:
    result = pipe(["a green triangle", PROMPT], num_images_per_prompt=2, output_type="tokens")
    assert result.settings["prompts"] == ["a green triangle"] * 2 + [PROMPT] * 2
    assert result.images.ids.shape[0] == 4


@pytest.mark.parametrize(
    ("output_type", "check"),
    [
        ("pil", lambda images: images[0].size == (128, 128)),
        ("np", lambda images: images.shape == (1, 128, 128, 3) and 0 <= images.min() <= images.max() <= 1),
        ("pt", lambda images: tuple(images.shape) == (1, 3, 128, 128) and images.dtype == torch.float32),
        ("latent", lambda images: isinstance(images, SemanticLatents)),
        ("tokens", lambda images: isinstance(images, TokenGrid)),
    ],
)
def test_output_type(pipe: TextToImagePipeline, output_type: str, check) -> None:
    assert check(pipe(PROMPT, output_type=output_type, num_inference_steps=2).images)


def test_np_output_holds_the_pil_images_pixels(pipe: TextToImagePipeline) -> None:
    pil = pipe(PROMPT, num_inference_steps=2).images[0]
    array = pipe(PROMPT, num_inference_steps=2, output_type="np").images[0]
    assert np.array_equal(np.round(array * 255).astype(np.uint8), np.asarray(pil))


def test_height_width_and_their_older_names(pipe: TextToImagePipeline) -> None:
    assert pipe(PROMPT, height=64, width=96, output_type="tokens").images.ids.shape[-2:] == (8, 12)
    assert pipe(PROMPT, height_px=64, width_px=96, output_type="tokens").images.ids.shape[-2:] == (8, 12)
    assert pipe(prompts=PROMPT, height=64, output_type="tokens").images.ids.shape[-2:] == (8, 16)


def test_negative_prompt_is_what_guidance_contrasts_with(pipe: TextToImagePipeline) -> None:
    def tokens(**kwargs) -> torch.Tensor:
        return pipe(PROMPT, cfg_scale=3.0, output_type="tokens", **kwargs).images.ids

    assert torch.equal(tokens(), tokens(negative_prompt=""))
    assert not torch.equal(tokens(), tokens(negative_prompt="a green triangle"))


def test_negative_prompt_reaches_a_text_conditioned_decoders_guidance(tiny: TextToImagePipeline) -> None:
    def images(**kwargs) -> list[Image.Image]:
        return tiny(PROMPT, guidance_scale=3.0, seed=2, show_progress=False, **kwargs).images

    plain = images()
    assert same(plain, images(negative_prompt=""))
    assert not same(plain, images(negative_prompt="a green triangle"))


def test_callback_on_step_end_sees_both_loops_and_can_replace_latents(pipe: TextToImagePipeline) -> None:
    calls: list[tuple[int, str]] = []

    def callback(pipeline, step, timestep, tensors):
        assert pipeline is pipe
        calls.append((step, *tensors))
        if "latents" in tensors:
            return {"latents": torch.zeros_like(tensors["latents"])}
        return None

    zeroed = pipe(PROMPT, num_inference_steps=3, callback_on_step_end=callback).images
    assert [c for c in calls if c[1] == "tokens"] == [(i, "tokens") for i in range(16 * 16)]
    assert [c for c in calls if c[1] == "latents"] == [(i, "latents") for i in range(3)]
    assert not same(zeroed, pipe(PROMPT, num_inference_steps=3).images)


def test_sampling_keywords_and_generation_config(pipe: TextToImagePipeline) -> None:
    from transformers import GenerationConfig

    def tokens(**kwargs) -> torch.Tensor:
        return pipe(PROMPT, output_type="tokens", **kwargs).images.ids

    greedy = tokens(temperature=0.0)
    assert torch.equal(greedy, tokens(generation_config=GenerationConfig(do_sample=False), seed=5))
    assert torch.equal(tokens(top_k=1), greedy)
    result = pipe(
        PROMPT, output_type="tokens", generation_config=GenerationConfig(do_sample=True, top_k=5), min_p=0.1
    )
    assert result.settings["sampling"] == {
        "temperature": 1.0,
        "top_k": 5,
        "top_p": 1.0,
        "min_p": 0.1,
        "cfg_scale": 1.0,
    }


def test_progress_bars_follow_set_progress_bar_config(
    pipe: TextToImagePipeline, capfd: pytest.CaptureFixture[str]
) -> None:
    pipe(PROMPT, output_type="tokens")
    assert capfd.readouterr().err == ""
    pipe.set_progress_bar_config(disable=False)
    try:
        pipe(PROMPT, output_type="tokens")
    finally:
        pipe.set_progress_bar_config(disable=True)
    assert "image tokens" in capfd.readouterr().err


def test_save_and_reload_gives_the_same_images(pipe: TextToImagePipeline, tmp_path: Path) -> None:
    pipe.save_pretrained(tmp_path / "saved")
    assert {p.name for p in (tmp_path / "saved").iterdir()} == {
        "tokenizer",
        "backbone",
        "decoder",
        INDEX_FILE,
        "pipeline.yaml",
    }
    reloaded = TextToImagePipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    assert reloaded.capabilities["understanding"] is False
    generator = torch.Generator().manual_seed(1)
    assert same(reloaded(PROMPT, generator=generator).images, pipe(PROMPT, generator=generator).images)
    from_yaml = TextToImagePipeline.from_config(tmp_path / "saved" / "pipeline.yaml")
    assert from_yaml.config.generation == pipe.config.generation


def test_save_never_replaces_a_users_files(pipe: TextToImagePipeline, tmp_path: Path) -> None:
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(InputError, match=r"notes\.txt"):
        pipe.save_pretrained(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary left behind


def test_a_component_swapped_through_components_is_used(pipe: TextToImagePipeline) -> None:
    decoder = load_component(shipped_model_dir() / "decoder")
    assert type(decoder) is type(pipe.decoder) and decoder is not pipe.decoder
    copy = TextToImagePipeline(**pipe.components, config=pipe.config)
    copy.set_progress_bar_config(disable=True)
    copy.components["decoder"] = decoder
    assert copy.decoder is decoder and pipe.decoder is not decoder
    assert same(copy(PROMPT).images, pipe(PROMPT).images)


def test_a_component_that_does_not_fit_is_refused(
    pipe: TextToImagePipeline, tiny: TextToImagePipeline
) -> None:
    copy = TextToImagePipeline(**pipe.components, config=pipe.config)
    with pytest.raises(ConfigError, match=r"do not fit together: .*pixels_per_token"):
        copy.components["decoder"] = tiny.decoder
    assert copy.decoder is pipe.decoder


def test_components_alone_pick_a_size_that_fits_the_context(pipe: TextToImagePipeline) -> None:
    bare = TextToImagePipeline(pipe.tokenizer, pipe.backbone, pipe.decoder)
    result = bare(PROMPT, output_type="tokens", show_progress=False)
    assert (result.settings["grid_h"], result.settings["grid_w"]) == (16, 16)


def test_to_moves_every_component_and_the_runtime_follows(tiny: TextToImagePipeline) -> None:
    pipe = TextToImagePipeline(**tiny.components, config=tiny.config)
    assert pipe.to(torch_dtype=torch.bfloat16) is pipe
    assert pipe.runtime.dtype == "bfloat16"
    assert next(pipe.backbone.trainable_module().parameters()).dtype == torch.bfloat16
    pipe.to("cpu", torch.float32)
    assert pipe.runtime.dtype == "float32"
    with pytest.raises(ConfigError, match="torch_dtype"):
        pipe.to(torch_dtype="float64")


def test_a_folder_with_pipeline_yaml_alone_gains_an_index(tiny: TextToImagePipeline, tmp_path: Path) -> None:
    folder = tmp_path / "converted"
    tiny.save_pretrained(folder)
    (folder / INDEX_FILE).unlink()
    assert TextToImagePipeline.from_pretrained(folder).capabilities["understanding"]  # unflagged: yes
    write_model_index(folder, capability_flags={"understanding": False})
    index = json.loads((folder / INDEX_FILE).read_text())
    assert index["decoder"] == {
        "plugin": "flux-semantic", "folder": "decoder", "version": "0.1.0", "distribution": "xomni 0.1.0"
    }  # fmt: skip
    assert index["generation"]["height_px"] == 64
    assert TextToImagePipeline.from_pretrained(folder).capabilities["understanding"] is False


def test_generate_command_takes_a_pipeline_folder(tiny: TextToImagePipeline, tmp_path: Path) -> None:
    from support import run_xomni

    tiny.save_pretrained(tmp_path / "saved")
    out = tmp_path / "out"
    result = run_xomni(
        "generate", PROMPT, "--config", str(tmp_path / "saved"), "--out", str(out), "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out / "image-000.png") as image:
        assert image.size == (64, 64)


def test_from_pretrained_uses_a_component_passed_by_slot(tiny: TextToImagePipeline, tmp_path: Path) -> None:
    tiny.save_pretrained(tmp_path / "saved")
    pipe = TextToImagePipeline.from_pretrained(tmp_path / "saved", decoder=tiny.decoder)
    assert pipe.decoder is tiny.decoder and pipe.backbone is not tiny.backbone


def test_generate_command_passes_the_negative_prompt(tmp_path: Path) -> None:
    from support import run_xomni

    out = tmp_path / "out"
    args = ["--config", str(TINY), "--out", str(out), "--cfg-scale", "2", "--no-progress"]
    result = run_xomni("generate", PROMPT, "--negative-prompt", "blurry", *args)
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "generation.json").read_text())
    assert record["settings"]["negative_prompts"] == ["blurry"]
