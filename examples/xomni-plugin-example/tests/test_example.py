"""The example distribution as its users meet it: installed, discovered, configured and run.

Run with the distribution installed: ``pip install . && pytest`` in this folder.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from PIL import Image
from xomni_plugin_example.decoders import LatentPreviewDecoder
from xomni_plugin_example.params import LatentPreviewParams
from xomni_plugin_example.rewards import BrightnessReward, SaturationReward

from xomni_core import DecodeRequest, PluginRegistry, RewardBatch, SemanticLatents, load_config
from xomni_core.cli import main
from xomni_core.convert import ConvertOptions, convert

DISTRIBUTION = "xomni-plugin-example 0.1.0"


def test_the_registry_finds_both_rewards_and_the_decoder_from_this_distribution() -> None:
    registry = PluginRegistry.discover()
    for kind, name in (("reward", "brightness"), ("reward", "saturation"), ("decoder", "latent-preview")):
        [record] = [r for r in registry.find(name) if r.kind == kind]
        assert (record.status, record.distribution) == ("ok", DISTRIBUTION)


def test_brightness_scores_a_white_image_one_and_a_target_by_distance() -> None:
    images = [Image.new("RGB", (8, 8), "white"), Image.new("RGB", (8, 8), "black")]
    batch = RewardBatch(images, ["a", "b"])
    assert BrightnessReward.from_params(BrightnessReward.params_class()).score(batch).scores == (1.0, 0.0)
    target = BrightnessReward.from_params(BrightnessReward.params_class(target=0.25))
    assert target.score(batch).scores == (0.25, 0.75)
    grey = RewardBatch([Image.new("RGB", (4, 4), (128, 128, 128))], ["c"])
    assert SaturationReward.from_params(SaturationReward.params_class()).score(grey).scores == (0.0,)


def test_the_decoder_paints_one_block_per_token_from_the_projected_latents() -> None:
    decoder = LatentPreviewDecoder.from_params(LatentPreviewParams(latent_channels=4, pixels_per_token=2))
    values = torch.zeros(1, 4, 2, 3)
    values[0, 0, 0, 0] = 50.0  # red saturates in the top-left token only
    [image] = decoder.decode(DecodeRequest(SemanticLatents(values)))
    assert image.size == (6, 4)
    assert image.getpixel((0, 0)) == (255, 128, 128) and image.getpixel((1, 1)) == (255, 128, 128)
    assert image.getpixel((2, 0)) == (128, 128, 128)


def test_weightless_folders_hold_the_params_only(tmp_path: Path) -> None:
    params = LatentPreviewParams(latent_channels=2, projection=[[1, 0], [0, 1], [1, 1]])
    LatentPreviewDecoder(params).save_pretrained(tmp_path / "decoder")
    assert [p.name for p in (tmp_path / "decoder").iterdir()] == ["xomni_component.json"]
    assert LatentPreviewDecoder.from_pretrained(tmp_path / "decoder").params == params


def test_config_validate_checks_the_params_against_this_plugin(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "pipeline.yaml"
    config.write_text("decoder:\n  plugin: latent-preview\n  params: {latent_channels: 2}\n")
    assert main(["config", "validate", str(config)]) == 0
    config.write_text(
        "decoder:\n  plugin: latent-preview\n  params: {latent_channels: 2, projection: [[1, 0]]}\n"
    )
    assert main(["config", "validate", str(config)]) == 2
    assert "projection must be 3 rows of 2 numbers" in capsys.readouterr().err


def test_the_converter_turns_a_csv_projection_into_a_loadable_decoder(tmp_path: Path) -> None:
    src = tmp_path / "release"
    src.mkdir()
    (src / "projection.csv").write_text("1,0,0\n0,1,0\n0,0,1\n")
    code = main(["convert", "preview-csv", str(src), str(tmp_path / "out"), "--pixels-per-token", "4"])
    assert code == 0
    record = json.loads((tmp_path / "out" / "decoder" / "xomni_component.json").read_text())
    assert record["params"] == {
        "latent_channels": 3,
        "pixels_per_token": 4,
        "projection": [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]],
    }
    config = load_config(tmp_path / "out" / "pipeline.yaml")
    assert config.decoder is not None and config.decoder.plugin == "latent-preview"


def test_the_converter_refuses_a_ragged_csv_and_writes_nothing(tmp_path: Path) -> None:
    (tmp_path / "projection.csv").write_text("1,0\n0\n")
    with pytest.raises(Exception, match="expected 3 rows of equal length"):
        convert("preview-csv", tmp_path, tmp_path / "out", ConvertOptions())
    assert not (tmp_path / "out").exists()
