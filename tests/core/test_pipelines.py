"""Text-to-image and understanding pipelines built from the tiny random config, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import REPO, run_xomni

from xomni_core import ConfigError, DecodeRequest, InputError
from xomni_core.config import load_config
from xomni_core.pipelines import ImageUnderstandingPipeline, TextToImagePipeline

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"


@pytest.fixture(scope="module")
def pipeline() -> TextToImagePipeline:
    return TextToImagePipeline.from_config(TINY)


def pixels(image: Image.Image) -> np.ndarray:
    return np.asarray(image)


def test_generate_writes_pngs_of_16_px_per_token_and_a_json_record(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_xomni(
        "generate",
        "a red circle",
        "two squares",
        "--config",
        str(TINY),
        "--out",
        str(out),
        "--height",
        "48",
        "--width",
        "80",
        "--seed",
        "3",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "generation.json").read_text())
    assert record["images"] == ["image-000.png", "image-001.png"]
    assert (record["settings"]["grid_h"], record["settings"]["grid_w"]) == (3, 5)
    assert len(record["tokens"]) == 2 and len(record["tokens"][0]) == 15
    for name in record["images"]:
        with Image.open(out / name) as image:
            assert image.size == (80, 48)


def test_same_seed_gives_same_tokens_and_pixels(pipeline: TextToImagePipeline) -> None:
    first = pipeline("a blue triangle", seed=4, show_progress=False)
    again = pipeline("a blue triangle", seed=4, show_progress=False)
    other = pipeline("a blue triangle", seed=5, show_progress=False)
    assert first.tokens.rows() == again.tokens.rows()
    assert np.array_equal(pixels(first.images[0]), pixels(again.images[0]))
    assert first.tokens.rows() != other.tokens.rows()


def test_a_seed_per_prompt_gives_each_image_as_made_alone(pipeline: TextToImagePipeline) -> None:
    prompts = ["a blue triangle", "two red circles"]
    batch = pipeline(prompts, seeds=[11, 3], show_progress=False)
    for index, (prompt, seed) in enumerate(zip(prompts, [11, 3], strict=True)):
        alone = pipeline(prompt, seed=seed, show_progress=False)
        assert batch.tokens.rows()[index] == alone.tokens.rows()[0]
        assert np.abs(pixels(batch.images[index]).astype(int) - pixels(alone.images[0])).max() <= 1
    assert batch.settings["seeds"] == [11, 3]
    with pytest.raises(InputError, match="seeds: 1 seeds given for 2 samples"):
        pipeline(prompts, seeds=[1], show_progress=False)


def test_generation_noise_scale_reaches_the_decoder() -> None:
    quiet = TextToImagePipeline.from_config(load_config(TINY, ["generation.noise_scale=0"]))
    result = quiet("a blue triangle", seed=4, show_progress=False)
    latents = quiet.tokenizer.decode(result.tokens)
    prompts = ("a blue triangle",)
    redrawn = quiet.decoder.decode(DecodeRequest(latents, prompts=prompts, seed=5, noise_scale=0.0))
    noisy = quiet.decoder.decode(DecodeRequest(latents, prompts=prompts, seed=5))
    assert result.settings["noise_scale"] == 0.0
    assert np.array_equal(pixels(result.images[0]), pixels(redrawn[0]))
    assert not np.array_equal(pixels(result.images[0]), pixels(noisy[0]))


def test_pretrained_folders_load_through_the_real_loaders(
    pipeline: TextToImagePipeline, tmp_path: Path
) -> None:
    for slot in ("tokenizer", "backbone", "decoder"):
        getattr(pipeline, slot).save_pretrained(tmp_path / slot)
    config = load_config(
        TINY, [f"{slot}.weights={tmp_path / slot}" for slot in ("tokenizer", "backbone", "decoder")]
    )
    loaded = TextToImagePipeline.from_config(config)
    expected = pipeline("a green star", seed=1, show_progress=False)
    actual = loaded("a green star", seed=1, show_progress=False)
    assert actual.tokens.rows() == expected.tokens.rows()
    # Loaded tensors may sit at other memory alignments, which can change the summation order of
    # vectorised kernels in the last float bit: at most one level of 255 after rounding.
    difference = np.abs(pixels(actual.images[0]).astype(int) - pixels(expected.images[0]).astype(int))
    assert difference.max() <= 1


def test_chat_answers_about_an_image_from_the_command_line(tmp_path: Path) -> None:
    image = tmp_path / "picture.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(image)
    result = run_xomni(
        "chat",
        "What is shown?",
        "--image",
        str(image),
        "--config",
        str(TINY),
        "--max-new-tokens",
        "5",
        "--no-progress",
    )
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr


def test_understanding_prompt_holds_the_image_segment_in_the_chat_turn() -> None:
    chat = ImageUnderstandingPipeline.from_config(TINY)
    image = Image.fromarray(np.full((64, 64, 3), 128, dtype=np.uint8))
    ids = chat.prompt_ids(image, "What colour?")
    vocab = chat.backbone.vocab
    grid = chat.tokenizer.encode_images([image])
    segment = chat.backbone.image_segment_ids(grid)
    start = next(i for i in range(len(ids)) if ids[i : i + len(segment)] == segment)
    assert ids[start + len(segment) - 1] == vocab.eom_id
    assert chat.backbone.detokenize(ids[start + len(segment) :]).strip().startswith("What colour?")


def test_size_not_divisible_by_16_exits_2_and_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = run_xomni("generate", "x", "--config", str(TINY), "--out", str(out), "--height", "50")
    assert result.returncode == 2
    assert "height_px=50 is not a positive multiple of 16" in " ".join(result.stderr.split())
    assert not out.exists() or not any(out.iterdir())


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--noise-scale", "-1", "--noise-scale: Input should be greater than or equal to 0"),
        ("--guidance", "-2", "--guidance: Input should be greater than or equal to 0"),
        ("--steps", "0", "--steps: Input should be greater than or equal to 1"),
    ],
)
def test_out_of_range_decoder_setting_exits_2_naming_it_and_writes_nothing(
    tmp_path: Path, option: str, value: str, message: str
) -> None:
    out = tmp_path / "out"
    result = run_xomni("generate", "x", "--config", str(TINY), "--out", str(out), option, value)
    assert result.returncode == 2
    assert message in result.stderr
    assert not out.exists() or not any(out.iterdir())


def test_prompt_too_long_exits_2(tmp_path: Path) -> None:
    result = run_xomni("generate", "word " * 400, "--config", str(TINY), "--out", str(tmp_path / "o"))
    assert result.returncode == 2
    assert "exceeds the backbone's context" in " ".join(result.stderr.split())


def test_rejected_image_names_the_rule(tmp_path: Path) -> None:
    image = tmp_path / "strip.png"
    Image.fromarray(np.zeros((40, 400, 3), dtype=np.uint8)).save(image)
    result = run_xomni("chat", "?", "--image", str(image), "--config", str(TINY))
    assert result.returncode == 2
    assert "aspect ratio" in " ".join(result.stderr.split())


def test_missing_checkpoint_file_exits_2_naming_it(pipeline: TextToImagePipeline, tmp_path: Path) -> None:
    pipeline.backbone.save_pretrained(tmp_path / "backbone")
    (tmp_path / "backbone" / "model.safetensors").unlink()
    result = run_xomni(
        "generate",
        "x",
        "--config",
        str(TINY),
        "--set",
        f"backbone.weights={tmp_path / 'backbone'}",
        "--out",
        str(tmp_path / "o"),
    )
    assert result.returncode == 2
    assert "model.safetensors" in result.stderr and "Traceback" not in result.stderr


def test_mismatched_components_are_refused_when_built() -> None:
    config = load_config(TINY, ["backbone.params.image_vocab_size=128", "backbone.params.mm_vocab_size=136"])
    with pytest.raises(ConfigError, match="tokenizer codebook_size 256 != backbone image_vocab_size 128"):
        TextToImagePipeline.from_config(config)


def test_pipeline_built_hook_reaches_installed_plugins(plugin_site) -> None:
    plugin_site(
        "watcher-dist",
        entry_points={"watcher": "watcher_module"},
        modules={
            "watcher_module": """
            from xomni_core import hookimpl
            SEEN = []

            @hookimpl
            def xomni_component_built(component, slot, config):
                SEEN.append(slot)

            @hookimpl
            def xomni_pipeline_built(pipeline, config):
                SEEN.append(type(pipeline).__name__)
        """
        },
    )
    import watcher_module  # the same module object the registry loaded

    ImageUnderstandingPipeline.from_config(TINY)
    assert watcher_module.SEEN == ["tokenizer", "backbone", "ImageUnderstandingPipeline"]


def test_zero_height_is_refused(pipeline: TextToImagePipeline) -> None:
    with pytest.raises(InputError, match="height_px=0 is not a positive multiple of 16"):
        pipeline("x", height_px=0, show_progress=False)
