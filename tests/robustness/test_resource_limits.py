"""Configs that validate yet cannot run are refused before anything is allocated.

Weights that cannot fit, a device the machine lacks, absurd initialiser ranges, RoPE bases or
VAE channels, and samplers that would run away all stop with an error naming the field;
a decoder never turns non-finite values into an image.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError
from support import REPO, run_xomni

from xomni_core import ConfigError, DecodeRequest, InputError, SemanticLatents, hookimpl
from xomni_core.cli import main
from xomni_core.config import PipelineConfig, load_config, resolve_config
from xomni_core.pipelines import ImageUnderstandingPipeline, TextToImagePipeline
from xomni_core.pipelines.build import build_component, prepare
from xomni_core.registry import PluginRegistry
from xomni_core.resources import check_device, check_resources, estimate_components
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.decoders.flux_semantic import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.tokenizers.siglip_vq import SigLIPVQParams

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"
NANO = REPO / "xomni_core" / "models" / "xomni-nano" / "pipeline.yaml"
TINY_CLIP = {
    "text_hidden_size": 32,
    "text_intermediate_size": 64,
    "text_num_layers": 1,
    "text_num_heads": 2,
    "vision_hidden_size": 48,
    "vision_intermediate_size": 96,
    "vision_num_layers": 2,
    "vision_num_heads": 2,
    "image_size_px": 32,
    "patch_size_px": 8,
    "projection_dim": 16,
}


def tiny_data(**params: dict[str, Any]) -> dict[str, Any]:
    """The tiny random config as a dict, with ``params`` merged into the named slots."""
    data: dict[str, Any] = yaml.safe_load(TINY.read_text())
    for slot, changes in params.items():
        data[slot]["params"].update(changes)
    return data


def tiny_config(**params: dict[str, Any]) -> PipelineConfig:
    return load_config(data=tiny_data(**params))


def weight_bytes(component: Any) -> int:
    """Bytes of every parameter of the torch modules a component holds."""
    modules = [v for v in vars(component).values() if isinstance(v, torch.nn.Module)]
    return sum(p.numel() * p.element_size() for m in modules for p in m.parameters())


# ----------------------------------------------------------------------------- memory


@pytest.mark.parametrize(
    ("slot", "plugin", "changes"),
    [
        ("backbone", "x-omni", {"hidden_size": 1_000_000_000}),
        ("backbone", "x-omni", {"vocab_size": 1_000_000_000_000}),
        ("backbone", "x-omni", {"num_hidden_layers": 10**5, "hidden_size": 3584, "num_attention_heads": 28}),
        ("tokenizer", "siglip-vq", {"codebook_size": 10**9, "codebook_dim": 10**4}),
        ("tokenizer", "siglip-vq", {"vit_depth": 10**9}),
        ("decoder", "flux-semantic", {"num_single_stream_layers": 10**8}),
        ("decoder", "flux-semantic", {"t5_vocab_size": 10**12}),
    ],
)
def test_weights_of_terabytes_are_refused_naming_the_slot_plugin_estimate_and_limit(
    slot: str, plugin: str, changes: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError) as caught:
        TextToImagePipeline.from_config(tiny_config(**{slot: changes}))
    message = str(caught.value)
    assert f"{slot}.params" in message and f"{slot} ({slot} plugin '{plugin}')" in message
    assert "TB" in message or "PB" in message
    assert "limit on cpu" in message and "XOMNI_ALLOW_LARGE=1" in message


def test_the_refusal_comes_before_any_component_is_built() -> None:
    built: list[str] = []
    registry = PluginRegistry.discover()

    class Recorder:
        @hookimpl
        def xomni_component_built(self, component: Any, slot: str, config: Any) -> None:
            built.append(slot)

    registry.manager.register(Recorder(), name="recorder")
    with pytest.raises(ConfigError, match="backbone"):
        TextToImagePipeline.from_config(
            tiny_config(backbone={"hidden_size": 1_000_000_000}), registry=registry
        )
    assert built == []


def test_a_memory_limit_below_the_estimate_refuses_even_tiny_pipelines(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("XOMNI_MEMORY_LIMIT_GB", "0.001")
    with pytest.raises(ConfigError, match=r"more than the 1 MB limit on cpu \(XOMNI_MEMORY_LIMIT_GB\)"):
        prepare(tiny_config())


def test_allow_large_overrides_the_memory_check(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XOMNI_MEMORY_LIMIT_GB", "0.001")
    resolved, _ = prepare(tiny_config(), allow_large=True)
    assert "backbone" in resolved.components
    monkeypatch.setenv("XOMNI_ALLOW_LARGE", "1")
    prepare(tiny_config())
    check_resources(resolve_config(tiny_config(), PluginRegistry.discover()), limit_bytes=1)


def test_a_bad_memory_limit_variable_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XOMNI_MEMORY_LIMIT_GB", "lots")
    with pytest.raises(ConfigError, match="XOMNI_MEMORY_LIMIT_GB='lots': expected a positive number"):
        prepare(tiny_config())


def test_understanding_counts_only_the_tokenizer_and_backbone() -> None:
    config = tiny_config(decoder={"num_single_stream_layers": 10**8})
    with pytest.raises(ConfigError, match="decoder"):
        prepare(config)
    pipeline = ImageUnderstandingPipeline.from_config(config)
    assert pipeline.backbone.params.hidden_size == 64


def test_a_weights_folder_is_estimated_from_its_own_params() -> None:
    resolved, _ = prepare(NANO)
    estimates = {e.slot: e.estimate_bytes for e in estimate_components(resolved)}
    # The config's params are empty (the released sizes); the folders hold the nano sizes.
    assert all(nbytes < 100_000_000 for nbytes in estimates.values())
    assert XOmniParams().memory_estimate() > 30 * 10**9


def test_a_weights_folder_without_a_readable_record_counts_as_unknown(tmp_path: Path) -> None:
    (tmp_path / "xomni_component.json").write_text("{not json")
    data = tiny_data()
    data["backbone"] = {"plugin": "x-omni", "weights": str(tmp_path)}  # params: the 7B defaults
    resolved, _ = prepare(load_config(data=data))
    assert [e.slot for e in estimate_components(resolved)] == ["tokenizer", "decoder"]


@pytest.mark.parametrize("config", [TINY, NANO], ids=["tiny-random", "xomni-nano"])
def test_estimates_match_the_weights_of_built_components(config: Path) -> None:
    resolved, registry = prepare(config)
    estimates = estimate_components(resolved)
    assert [e.slot for e in estimates] == ["tokenizer", "backbone", "decoder"]
    for estimate in estimates:
        component = build_component(resolved.component(estimate.slot), resolved.config, registry)
        real = weight_bytes(component)
        assert real / 1.5 <= estimate.estimate_bytes <= real * 1.5, estimate.slot


@pytest.mark.parametrize("plugin", ["clip-score", "hpsv2"])
def test_clip_reward_estimates_match_their_built_networks(plugin: str) -> None:
    data = tiny_data()
    data["rewards"] = [{"plugin": plugin, "params": {"network": TINY_CLIP}}]
    resolved, registry = prepare(load_config(data=data), slots=["rewards.0"])
    [estimate] = estimate_components(resolved, ["rewards.0"])
    reward = build_component(resolved.component("rewards.0"), resolved.config, registry)
    assert estimate.estimate_bytes == weight_bytes(reward)


def test_estimates_match_the_released_sizes_counted_on_the_meta_device() -> None:
    from diffusers import AutoencoderKL

    from xomni_plugins.decoders.flux_semantic import model as flux

    params = FluxSemanticParams()
    with torch.device("meta"):
        parts = [
            flux.SemanticFluxTransformer(**flux._transformer_config(params)),
            AutoencoderKL(**flux._vae_config(params)),
            *[v for v in flux._random_text_encoders(params).values() if isinstance(v, torch.nn.Module)],
        ]
    count = sum(p.numel() for part in parts for p in part.parameters())
    assert params.memory_estimate(dtype_bytes=2) == 2 * count
    assert 16e9 < count < 17.5e9  # FLUX.1-dev 11.9B, T5-XXL encoder 4.8B, CLIP-L text 0.1B, VAE 0.08B


@settings(max_examples=15, deadline=None)
@given(
    levels=st.lists(st.sampled_from([4, 8, 12]), min_size=1, max_size=4),
    layers=st.integers(1, 3),
    latent=st.integers(1, 8),
    packing=st.sampled_from([1, 2]),
    guidance=st.booleans(),
    text=st.booleans(),
)
def test_the_decoder_estimate_is_exact_for_any_small_layout(
    levels: list[int], layers: int, latent: int, packing: int, guidance: bool, text: bool
) -> None:
    from diffusers import AutoencoderKL

    from xomni_plugins.decoders.flux_semantic import model as flux

    params = FluxSemanticParams(
        **{
            **tiny_data()["decoder"]["params"],
            "vae_block_out_channels": tuple(levels),
            "vae_norm_num_groups": 4,
            "vae_layers_per_block": layers,
            "vae_latent_channels": latent,
            "in_channels": 4 * latent,
            "semantic_packing": packing,
            "guidance_embeds": guidance,
            "text_conditioning": text,
        }
    )
    with torch.device("meta"):
        parts: list[torch.nn.Module] = [
            flux.SemanticFluxTransformer(**flux._transformer_config(params)),
            AutoencoderKL(**flux._vae_config(params)),
        ]
        if text:
            encoders = flux._random_text_encoders(params).values()
            parts += [v for v in encoders if isinstance(v, torch.nn.Module)]
    assert params.memory_estimate() == 4 * sum(p.numel() for part in parts for p in part.parameters())


def test_estimating_and_checking_memory_never_imports_torch() -> None:
    code = (
        "import sys\n"
        "from xomni_core.config import load_config, resolve_config\n"
        "from xomni_core.registry import PluginRegistry\n"
        "from xomni_core.resources import check_resources, estimate_components\n"
        f"resolved = resolve_config(load_config({str(TINY)!r}), PluginRegistry.discover())\n"
        "check_resources(resolved)\n"
        "assert len(estimate_components(resolved)) == 3\n"
        "assert 'torch' not in sys.modules, 'torch imported'\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_generate_with_terabyte_weights_exits_2_without_a_traceback_or_an_output_folder(
    tmp_path: Path,
) -> None:
    config = tmp_path / "huge.yaml"
    config.write_text(yaml.safe_dump(tiny_data(backbone={"hidden_size": 1_000_000_000})))
    out = tmp_path / "out"
    result = run_xomni("generate", "a cat", "--config", str(config), "--out", str(out))
    assert result.returncode == 2, result.stderr
    assert result.stderr.startswith("xomni: error: backbone.params: the pipeline needs about")
    assert "x-omni" in result.stderr and "Traceback" not in result.stderr
    assert not out.exists()


# ----------------------------------------------------------------------------- device


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:7"])
def test_cuda_without_cuda_is_refused_before_loading(device: str) -> None:
    with pytest.raises(ConfigError) as caught:
        TextToImagePipeline.from_config(load_config(TINY, [f"runtime.device={device}"]))
    message = str(caught.value)
    assert message.startswith(f"runtime.device: {device} is not available (")
    assert f"torch {torch.__version__}" in message and message.endswith("expected cpu")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_a_gpu_index_out_of_range_is_refused_naming_the_gpus_there_are() -> None:
    count = torch.cuda.device_count()
    with pytest.raises(ConfigError, match=rf"sees {count} GPU.*expected cpu or cuda:0 to cuda:{count - 1}"):
        check_device(f"cuda:{count}")
    check_device(f"cuda:{count - 1}")


@pytest.mark.skipif(torch.backends.mps.is_available(), reason="needs a machine without MPS")
def test_mps_where_there_is_none_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"runtime.device: mps is not available \(.*\); expected cpu"):
        ImageUnderstandingPipeline.from_config(load_config(TINY, ["runtime.device=mps"]))


def test_the_cpu_is_always_there() -> None:
    check_device("cpu")


# ----------------------------------------------------------------------------- bounds


@pytest.mark.parametrize(
    ("slot", "field", "value"),
    [
        ("backbone", "initializer_range", 1e30),
        ("backbone", "rope_theta", 0.0),
        ("backbone", "rope_theta", -1.0),
        ("backbone", "rope_theta", 1e300),
        ("backbone", "rms_norm_eps", 1e30),
        ("backbone", "max_position_embeddings", 10**9),
        ("tokenizer", "pos_grid_size", 1_000_000),
        ("tokenizer", "vit_mlp_ratio", 1e30),
        ("tokenizer", "layer_norm_eps", 1e30),
        ("tokenizer", "max_long_side_px", 10**7),
        ("tokenizer", "max_aspect_ratio", 1e300),
        ("decoder", "vae_block_out_channels", [0, 0, 0, 0]),
        ("decoder", "vae_block_out_channels", [16] * 12),
        ("decoder", "vae_latent_channels", 0),
        ("decoder", "axes_dims_rope", [-4, 10, 10]),
        ("decoder", "vae_scaling_factor", 1e-300),
        ("decoder", "vae_shift_factor", 1e300),
        ("decoder", "num_inference_steps", 10**9),
        ("decoder", "guidance_scale", 1e30),
        ("decoder", "noise_scale", 1e30),
        ("decoder", "embedded_guidance", 1e30),
    ],
)
def test_absurd_values_are_refused_naming_the_field(slot: str, field: str, value: Any) -> None:
    config = tiny_config(**{slot: {field: value}})
    with pytest.raises(ConfigError, match=rf"{slot}\.params\.{field}"):
        resolve_config(config, PluginRegistry.discover())


@pytest.mark.parametrize("value", [math.nan, math.inf])
def test_non_finite_pixel_statistics_are_refused(value: float) -> None:
    with pytest.raises(ValidationError, match=r"pixel_std\.1\n.*finite number"):
        SigLIPVQParams(pixel_std=(0.5, value, 0.5))


@pytest.mark.parametrize(
    ("plugin", "field", "value"),
    [
        ("vlm-judge", "rope_theta", 1e300),
        ("vlm-judge", "initializer_range", 1e30),
        ("vlm-judge", "rms_norm_eps", 1e30),
        ("clip-score", "layer_norm_eps", 1e30),
    ],
)
def test_reward_networks_refuse_absurd_values(plugin: str, field: str, value: float) -> None:
    data = tiny_data()
    data["rewards"] = [{"plugin": plugin, "params": {"network": {field: value}}}]
    with pytest.raises(ConfigError, match=rf"rewards\.0\.params\.network\.{field}"):
        resolve_config(load_config(data=data), PluginRegistry.discover())


def test_released_converted_and_shipped_sizes_stay_valid() -> None:
    XOmniParams(rope_theta=10_000.0, vocab_size=152_064, mm_vocab_size=16_448)
    SigLIPVQParams()
    FluxSemanticParams()
    resolve_config(load_config(NANO), PluginRegistry.discover())
    resolve_config(load_config(TINY), PluginRegistry.discover())


# ----------------------------------------------------------------------------- decoding


@pytest.fixture(scope="module")
def decoder() -> FluxSemanticDecoder:
    params = FluxSemanticParams(**{**tiny_data()["decoder"]["params"], "num_inference_steps": 2})
    return FluxSemanticDecoder.from_params(params, seed=0)


def latents(channels: int = 64) -> SemanticLatents:
    values = torch.randn(1, channels, 2, 2, generator=torch.Generator().manual_seed(0))
    return SemanticLatents(values=values)


@pytest.mark.parametrize("setting", ["guidance_scale", "noise_scale"])
def test_a_decoder_never_returns_an_image_of_non_finite_values(
    decoder: FluxSemanticDecoder, setting: str
) -> None:
    request = DecodeRequest(latents=latents(), prompts=("a cat",), **{setting: 1e300})
    with pytest.raises(InputError, match=rf"produced non-finite latents \(.*{setting}=1e\+300"):
        decoder.decode(request)


def test_the_pipeline_writes_no_image_when_decoding_overflows() -> None:
    pipeline = TextToImagePipeline.from_config(TINY)
    with pytest.raises(InputError, match="non-finite"):
        pipeline("a cat", noise_scale=1e300, show_progress=False)


def test_a_decoder_refuses_a_runaway_number_of_steps_before_sampling(decoder: FluxSemanticDecoder) -> None:
    request = DecodeRequest(latents=latents(), num_inference_steps=10**9)
    with pytest.raises(InputError, match="num_inference_steps must be between 1 and 1000, got 1000000000"):
        decoder.decode(request)


def test_the_allow_large_flag_builds_past_the_memory_limit_for_that_command_only(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("XOMNI_MEMORY_LIMIT_GB", "0.001")
    monkeypatch.delenv("XOMNI_ALLOW_LARGE", raising=False)
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(tiny_data()))
    command = ["generate", "a cat", "--config", str(config), "--height", "32", "--width", "32"]
    command.append("--no-progress")
    assert main([*command, "--out", str(tmp_path / "refused")]) == 2
    assert "XOMNI_ALLOW_LARGE=1" in capsys.readouterr().err
    assert not (tmp_path / "refused").exists()
    assert main(["--allow-large", *command, "--out", str(tmp_path / "drawn")]) == 0
    assert (tmp_path / "drawn" / "image-000.png").is_file()
    assert "XOMNI_ALLOW_LARGE" not in os.environ
