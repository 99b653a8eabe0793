"""The FLUX decoder with semantic-latent conditioning, at tiny sizes with real components."""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from diffusers import FluxPipeline
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from pydantic import ValidationError

from xomni_core import CheckpointError, DecodeRequest, InputError, SemanticLatents
from xomni_plugins.decoders.flux_semantic import PLUGIN
from xomni_plugins.decoders.flux_semantic.model import (
    FluxSemanticDecoder,
    SemanticFluxTransformer,
)
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams

SEMANTIC_CHANNELS = 8

TINY: dict[str, Any] = {
    "num_dual_stream_layers": 1,
    "num_single_stream_layers": 1,
    "num_attention_heads": 2,
    "attention_head_dim": 16,
    "axes_dims_rope": (4, 6, 6),
    "joint_attention_dim": 32,
    "pooled_projection_dim": 32,
    "in_channels": 16,
    "semantic_channels": SEMANTIC_CHANNELS,
    "vae_latent_channels": 4,
    "vae_block_out_channels": (8, 8, 8, 8),
    "vae_layers_per_block": 1,
    "vae_norm_num_groups": 4,
    "t5_vocab_size": 300,
    "t5_hidden_size": 32,
    "t5_head_dim": 8,
    "t5_ffn_size": 64,
    "t5_num_layers": 1,
    "t5_num_heads": 4,
    "t5_max_length": 16,
    "clip_vocab_size": 300,
    "clip_hidden_size": 32,
    "clip_ffn_size": 64,
    "clip_num_layers": 1,
    "clip_num_heads": 4,
    "clip_max_length": 16,
    "num_inference_steps": 2,
}


def tiny_params(**overrides: Any) -> FluxSemanticParams:
    return FluxSemanticParams(**{**TINY, **overrides})


def latents(batch: int = 1, grid_h: int = 2, grid_w: int = 3, seed: int = 0) -> SemanticLatents:
    generator = torch.Generator().manual_seed(seed)
    return SemanticLatents(torch.randn(batch, SEMANTIC_CHANNELS, grid_h, grid_w, generator=generator))


def pixels(decoder: FluxSemanticDecoder, request: DecodeRequest) -> np.ndarray:
    return np.stack([np.asarray(image) for image in decoder.decode(request)])


def transformer_inputs(batch: int = 1, grid_h: int = 2, grid_w: int = 3) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(1)
    text_len = 4
    return {
        "hidden_states": torch.randn(batch, grid_h * grid_w, 16, generator=generator),
        "encoder_hidden_states": torch.randn(batch, text_len, 32, generator=generator),
        "pooled_projections": torch.randn(batch, 32, generator=generator),
        "timestep": torch.full((batch,), 0.7),
        "img_ids": FluxPipeline._prepare_latent_image_ids(batch, grid_h, grid_w, "cpu", torch.float32),
        "txt_ids": torch.zeros(text_len, 3),
        "guidance": torch.full((batch,), 1.0),
    }


def semantic_sequence(batch: int = 1, tokens: int = 6, seed: int = 2) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, SEMANTIC_CHANNELS, generator=generator)


def with_random_siglip_embed(transformer: SemanticFluxTransformer) -> SemanticFluxTransformer:
    trained = copy.deepcopy(transformer)
    with torch.no_grad():
        trained.siglip_embed.weight.normal_(generator=torch.Generator().manual_seed(3))
    return trained


@pytest.fixture(scope="module")
def decoder() -> FluxSemanticDecoder:
    return FluxSemanticDecoder.from_params(tiny_params(), seed=0)


@pytest.fixture(scope="module")
def text_free_decoder() -> FluxSemanticDecoder:
    return FluxSemanticDecoder.from_params(tiny_params(text_conditioning=False), seed=0)


@pytest.fixture(scope="module")
def saved(decoder: FluxSemanticDecoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("flux") / "decoder"
    decoder.save_pretrained(path)
    return path


# ------------------------------------------------------------------------------ decoding


def test_output_image_has_16_pixels_per_token(decoder: FluxSemanticDecoder) -> None:
    images = decoder.decode(DecodeRequest(latents(batch=2), prompts=("a cat", "a dog")))
    assert decoder.pixels_per_token == 16
    assert [image.size for image in images] == [(48, 32), (48, 32)]  # (width, height)
    assert all(image.mode == "RGB" for image in images)


def test_same_seed_gives_identical_pixels(decoder: FluxSemanticDecoder) -> None:
    request = DecodeRequest(latents(), prompts=("a cat",), seed=7)
    np.testing.assert_array_equal(pixels(decoder, request), pixels(decoder, request))


def test_different_seed_gives_different_pixels(decoder: FluxSemanticDecoder) -> None:
    first = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), seed=7))
    second = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), seed=8))
    assert not np.array_equal(first, second)


def test_noise_scale_zero_decodes_the_same_image_whatever_the_seed(decoder: FluxSemanticDecoder) -> None:
    first = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), noise_scale=0.0, seed=7))
    second = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), noise_scale=0.0, seed=8))
    halved = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), noise_scale=0.5, seed=7))
    full = pixels(decoder, DecodeRequest(latents(), prompts=("a cat",), seed=7))
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(halved, full) and not np.array_equal(halved, first)


def test_params_noise_scale_is_the_default_that_a_request_overrides() -> None:
    quiet = FluxSemanticDecoder.from_params(tiny_params(noise_scale=0.0), seed=0)
    by_default = pixels(quiet, DecodeRequest(latents(), prompts=("a cat",), seed=7))
    by_request = pixels(quiet, DecodeRequest(latents(), prompts=("a cat",), seed=8, noise_scale=0.0))
    overridden = pixels(quiet, DecodeRequest(latents(), prompts=("a cat",), seed=7, noise_scale=1.0))
    np.testing.assert_array_equal(by_default, by_request)
    assert not np.array_equal(by_default, overridden)


@pytest.mark.parametrize(
    ("setting", "value", "message"),
    [
        ("noise_scale", -0.5, r"decoder noise_scale must be at least 0, got -0\.5"),
        ("guidance_scale", -2.0, r"decoder guidance_scale must be at least 0, got -2\.0"),
        ("guidance_scale", float("nan"), r"decoder guidance_scale must be at least 0, got nan"),
        ("num_inference_steps", 0, r"decoder num_inference_steps must be at least 1, got 0"),
    ],
)
def test_out_of_range_decode_setting_is_an_input_error_naming_it(
    setting: str, value: float, message: str
) -> None:
    with pytest.raises(InputError, match=message):
        DecodeRequest(latents(), **{setting: value})


def test_image_i_of_a_batch_decodes_as_alone_with_seed_plus_i(decoder: FluxSemanticDecoder) -> None:
    batch = latents(batch=3, seed=4)
    prompts = ("a cat", "a dog", "a fox")
    together = pixels(decoder, DecodeRequest(batch, prompts=prompts, seed=7))
    alone = np.concatenate(
        [
            pixels(decoder, DecodeRequest(SemanticLatents(batch.values[i : i + 1]), prompts=(p,), seed=7 + i))
            for i, p in enumerate(prompts)
        ]
    )
    np.testing.assert_allclose(together.astype(int), alone.astype(int), atol=1)


def test_shared_noise_decodes_each_image_as_if_it_were_alone(decoder: FluxSemanticDecoder) -> None:
    batch = latents(batch=3, seed=4)
    prompts = ("a cat", "a dog", "a fox")
    shared = pixels(decoder, DecodeRequest(batch, prompts=prompts, seed=7, shared_noise=True))
    independent = pixels(decoder, DecodeRequest(batch, prompts=prompts, seed=7))
    alone = np.concatenate(
        [
            pixels(decoder, DecodeRequest(SemanticLatents(batch.values[i : i + 1]), prompts=(p,), seed=7))
            for i, p in enumerate(prompts)
        ]
    )
    np.testing.assert_allclose(shared.astype(int), alone.astype(int), atol=1)
    assert not np.allclose(independent[1:].astype(int), alone[1:].astype(int), atol=1)


def test_text_free_variant_decodes_without_prompts_and_ignores_them(
    text_free_decoder: FluxSemanticDecoder,
) -> None:
    assert text_free_decoder.text_encoder is None and text_free_decoder.text_encoder_2 is None
    without = pixels(text_free_decoder, DecodeRequest(latents(), guidance_scale=2.0))
    with_prompt = pixels(
        text_free_decoder, DecodeRequest(latents(), prompts=("ignored",), guidance_scale=2.0)
    )
    assert without.shape == (1, 32, 48, 3)
    np.testing.assert_array_equal(without, with_prompt)


def test_text_conditioned_decoder_requires_prompts(decoder: FluxSemanticDecoder) -> None:
    with pytest.raises(InputError, match="prompts"):
        decoder.decode(DecodeRequest(latents()))


def test_latent_channel_mismatch_is_an_input_error(decoder: FluxSemanticDecoder) -> None:
    wrong = SemanticLatents(torch.zeros(1, SEMANTIC_CHANNELS + 1, 2, 2))
    with pytest.raises(InputError, match=f"{SEMANTIC_CHANNELS + 1} channels"):
        decoder.decode(DecodeRequest(wrong, prompts=("a cat",)))


# --------------------------------------------------------------------------- transformer


def test_forward_without_latents_equals_diffusers_flux_forward(
    decoder: FluxSemanticDecoder,
) -> None:
    transformer = with_random_siglip_embed(decoder.transformer)
    config = {k: v for k, v in transformer.config.items() if not k.startswith("_")}
    config.pop("semantic_channels")
    plain = FluxTransformer2DModel(**config).eval()
    weights = {k: v for k, v in transformer.state_dict().items() if not k.startswith("siglip_embed")}
    plain.load_state_dict(weights)
    inputs = transformer_inputs()
    with torch.no_grad():
        expected = plain(**inputs, return_dict=False)[0]
        without = transformer(**inputs, return_dict=False)[0]
        zeros = transformer(**inputs, semantic_latents=torch.zeros(1, 6, SEMANTIC_CHANNELS))
    torch.testing.assert_close(without, expected, rtol=0, atol=0)
    torch.testing.assert_close(zeros.sample, expected, rtol=0, atol=0)


def test_zero_siglip_embed_makes_output_independent_of_latents(
    decoder: FluxSemanticDecoder,
) -> None:
    transformer = decoder.transformer
    assert torch.count_nonzero(transformer.siglip_embed.weight) == 0
    inputs = transformer_inputs()
    with torch.no_grad():
        first = transformer(**inputs, semantic_latents=semantic_sequence(seed=2)).sample
        second = transformer(**inputs, semantic_latents=semantic_sequence(seed=5)).sample
    torch.testing.assert_close(first, second, rtol=0, atol=0)


def test_nonzero_siglip_embed_makes_output_depend_on_latents(
    decoder: FluxSemanticDecoder,
) -> None:
    transformer = with_random_siglip_embed(decoder.transformer)
    inputs = transformer_inputs()
    with torch.no_grad():
        first = transformer(**inputs, semantic_latents=semantic_sequence(seed=2)).sample
        second = transformer(**inputs, semantic_latents=semantic_sequence(seed=5)).sample
    assert not torch.allclose(first, second)


def test_latents_are_added_after_dual_stream_and_before_single_stream_blocks(
    decoder: FluxSemanticDecoder,
) -> None:
    transformer = with_random_siglip_embed(decoder.transformer)
    seen: dict[str, list[torch.Tensor]] = {"dual_out": [], "single_in": []}

    def after_dual(module: Any, args: Any, output: tuple[torch.Tensor, torch.Tensor]) -> None:
        seen["dual_out"].append(output[1])

    def before_single(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        seen["single_in"].append(kwargs["hidden_states"])

    hooks = [
        transformer.transformer_blocks[-1].register_forward_hook(after_dual),
        transformer.single_transformer_blocks[0].register_forward_pre_hook(before_single, with_kwargs=True),
    ]
    semantic = semantic_sequence()
    try:
        with torch.no_grad():
            transformer(**transformer_inputs(), semantic_latents=semantic)
            transformer(**transformer_inputs(), semantic_latents=torch.zeros_like(semantic))
            projected = transformer.siglip_embed(semantic)
    finally:
        for hook in hooks:
            hook.remove()
    # The dual-stream blocks never see the latents ...
    torch.testing.assert_close(seen["dual_out"][0], seen["dual_out"][1], rtol=0, atol=0)
    # ... and the single-stream blocks receive their output plus the projected latents.
    torch.testing.assert_close(seen["single_in"][0], seen["dual_out"][0] + projected)


# ------------------------------------------------------------------------------ true CFG


def test_true_cfg_combines_conditional_and_unconditional_predictions(
    decoder: FluxSemanticDecoder,
) -> None:
    grid_h, grid_w = 2, 3
    decoder.transformer.siglip_embed.weight.data.normal_(generator=torch.Generator().manual_seed(4))
    try:
        x = decoder.initial_noise(1, grid_h, grid_w, seed=0)
        t = torch.tensor([0.6])
        ids = FluxPipeline._prepare_latent_image_ids(1, grid_h, grid_w, "cpu", torch.float32)
        text = decoder.encode_prompts(["a cat"], 1)
        empty = decoder.encode_prompts([""], 1)
        semantic = semantic_sequence()
        guided = decoder.predict_velocity(x, t, ids, text, semantic, guidance_scale=3.0)

        def velocity(prompt: Any, latent_seq: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return decoder.transformer(
                    hidden_states=x,
                    encoder_hidden_states=prompt.sequence,
                    pooled_projections=prompt.pooled,
                    timestep=t,
                    img_ids=ids,
                    txt_ids=prompt.ids,
                    guidance=torch.full((1,), decoder.params.embedded_guidance),
                    semantic_latents=latent_seq,
                ).sample

        cond = velocity(text, semantic)
        uncond = velocity(empty, torch.zeros_like(semantic))
        assert not torch.allclose(cond, uncond)
        torch.testing.assert_close(guided, uncond + 3.0 * (cond - uncond), rtol=1e-5, atol=1e-5)
        unguided = decoder.predict_velocity(x, t, ids, text, semantic, guidance_scale=1.0)
        torch.testing.assert_close(unguided, cond, rtol=0, atol=0)
    finally:
        decoder.transformer.siglip_embed.weight.data.zero_()


def test_guidance_scale_one_skips_the_unconditional_pass(decoder: FluxSemanticDecoder) -> None:
    batch_sizes: list[int] = []

    def record(module: Any, args: Any, kwargs: dict[str, Any]) -> None:
        batch_sizes.append(int(kwargs["hidden_states"].shape[0]))

    hook = decoder.transformer.register_forward_pre_hook(record, with_kwargs=True)
    try:
        decoder.decode(DecodeRequest(latents(), prompts=("a cat",), guidance_scale=1.0))
        unguided = list(batch_sizes)
        batch_sizes.clear()
        decoder.decode(DecodeRequest(latents(), prompts=("a cat",), guidance_scale=2.5))
    finally:
        hook.remove()
    assert unguided == [1, 1]  # one pass per step, conditional only
    assert batch_sizes == [2, 2]  # conditional and unconditional, batched


# ------------------------------------------------------------------- semantic packing


@pytest.fixture(scope="module")
def packing_decoder() -> FluxSemanticDecoder:
    return FluxSemanticDecoder.from_params(tiny_params(text_conditioning=False, semantic_packing=2), seed=0)


def test_semantic_packing_two_reads_a_twice_finer_grid_of_8_px_latents(
    packing_decoder: FluxSemanticDecoder,
) -> None:
    params = packing_decoder.params
    assert (params.token_px, params.pixels_per_token, params.packed_semantic_channels) == (16, 8, 32)
    assert packing_decoder.transformer.siglip_embed.in_features == 4 * SEMANTIC_CHANNELS
    images = packing_decoder.decode(DecodeRequest(latents(grid_h=4, grid_w=6), seed=0))
    assert images[0].size == (48, 32)  # 4 x 6 latents of 8 px: 2 x 3 transformer tokens of 16 px


def test_semantic_tokens_pack_each_block_of_latents_into_one_token(
    decoder: FluxSemanticDecoder, packing_decoder: FluxSemanticDecoder
) -> None:
    values = latents(batch=2, grid_h=4, grid_w=6).values
    unpacked, grid = decoder.semantic_tokens(values)
    assert grid == (4, 6)
    torch.testing.assert_close(unpacked, values.flatten(2).transpose(1, 2), rtol=0, atol=0)
    packed, grid = packing_decoder.semantic_tokens(values)
    assert grid == (2, 3) and packed.shape == (2, 6, 4 * SEMANTIC_CHANNELS)
    # Token (1, 2) holds latents rows 2-3, columns 4-5, channel-major like FLUX's latent packing.
    block = values[:, :, 2:4, 4:6].reshape(2, 4 * SEMANTIC_CHANNELS)
    torch.testing.assert_close(packed[:, 1 * 3 + 2], block, rtol=0, atol=0)


def test_semantic_grid_that_does_not_pack_is_an_input_error(packing_decoder: FluxSemanticDecoder) -> None:
    with pytest.raises(InputError, match=r"grid 3 x 6: .*params\.semantic_packing.*multiples of 2"):
        packing_decoder.decode(DecodeRequest(latents(grid_h=3, grid_w=6)))


def test_semantic_packing_survives_save_and_load(
    packing_decoder: FluxSemanticDecoder, tmp_path: Path
) -> None:
    trained = FluxSemanticDecoder(
        packing_decoder.params,
        with_random_siglip_embed(packing_decoder.transformer),
        packing_decoder.vae,
        packing_decoder.scheduler,
    )
    trained.save_pretrained(tmp_path / "packed")
    loaded = FluxSemanticDecoder.from_pretrained(tmp_path / "packed")
    assert loaded.params == trained.params
    request = DecodeRequest(latents(grid_h=4, grid_w=2), seed=5)
    np.testing.assert_array_equal(pixels(loaded, request), pixels(trained, request))


def test_packing_that_does_not_match_the_saved_transformer_is_a_checkpoint_error(
    packing_decoder: FluxSemanticDecoder, tmp_path: Path
) -> None:
    packing_decoder.save_pretrained(tmp_path / "packed")
    component = tmp_path / "packed" / "xomni_component.json"
    record = json.loads(component.read_text())
    record["params"]["semantic_packing"] = 1
    component.write_text(json.dumps(record))
    with pytest.raises(CheckpointError, match=r"semantic_channels=32 \(params say 8\)"):
        FluxSemanticDecoder.from_pretrained(tmp_path / "packed")


# ---------------------------------------------------------------------------- save / load


def test_save_then_load_gives_identical_images(decoder: FluxSemanticDecoder, saved: Path) -> None:
    loaded = FluxSemanticDecoder.from_pretrained(saved)
    request = DecodeRequest(latents(), prompts=("a red cube",), guidance_scale=2.0, seed=3)
    assert loaded.params == decoder.params
    np.testing.assert_array_equal(pixels(loaded, request), pixels(decoder, request))


def test_text_free_folder_has_no_text_encoders(
    text_free_decoder: FluxSemanticDecoder, tmp_path: Path
) -> None:
    text_free_decoder.save_pretrained(tmp_path / "zh")
    assert sorted(p.name for p in (tmp_path / "zh").iterdir()) == [
        "scheduler",
        "transformer",
        "vae",
        "xomni_component.json",
    ]
    loaded = FluxSemanticDecoder.from_pretrained(tmp_path / "zh")
    request = DecodeRequest(latents(), seed=1)
    np.testing.assert_array_equal(pixels(loaded, request), pixels(text_free_decoder, request))


def test_missing_subfolder_is_a_checkpoint_error_naming_it(saved: Path, tmp_path: Path) -> None:
    broken = tmp_path / "broken"
    shutil.copytree(saved, broken)
    shutil.rmtree(broken / "vae")
    with pytest.raises(CheckpointError, match="'vae'"):
        FluxSemanticDecoder.from_pretrained(broken)


def test_official_layout_loads_from_transformer_and_flux_folders(
    decoder: FluxSemanticDecoder, saved: Path, tmp_path: Path
) -> None:
    transformer_dir = tmp_path / "decoder"
    with_random_siglip_embed(decoder.transformer).save_pretrained(transformer_dir)
    # The official config names its own class and does not record the semantic width.
    config_file = transformer_dir / "config.json"
    config = json.loads(config_file.read_text())
    config["_class_name"] = "FluxTransformer2DModelWithSigLIP"
    config.pop("semantic_channels")
    config_file.write_text(json.dumps(config))

    loaded = FluxSemanticDecoder.from_flux_folders(transformer_dir, saved, guidance_scale=2.0)
    assert loaded.params.semantic_channels == SEMANTIC_CHANNELS
    assert loaded.params.guidance_scale == 2.0
    assert torch.count_nonzero(loaded.transformer.siglip_embed.weight) > 0
    assert loaded.decode(DecodeRequest(latents(), prompts=("a cat",)))[0].size == (48, 32)


def test_transformer_without_siglip_embed_is_a_checkpoint_error(
    decoder: FluxSemanticDecoder, saved: Path, tmp_path: Path
) -> None:
    config = {k: v for k, v in decoder.transformer.config.items() if not k.startswith("_")}
    config.pop("semantic_channels")
    FluxTransformer2DModel(**config).save_pretrained(tmp_path / "plain")
    with pytest.raises(CheckpointError, match=r"siglip_embed\.weight"):
        FluxSemanticDecoder.from_flux_folders(tmp_path / "plain", saved)


# ----------------------------------------------------------------------- params and plugin


def test_params_name_the_inconsistent_field() -> None:
    with pytest.raises(ValidationError, match=r"in_channels .* vae_latent_channels"):
        tiny_params(in_channels=64)
    with pytest.raises(ValidationError, match="axes_dims_rope"):
        tiny_params(axes_dims_rope=(4, 4, 4))
    with pytest.raises(ValidationError, match=r"semantic_packing \(3\) must divide the 16 px"):
        tiny_params(semantic_packing=3)


def test_defaults_describe_the_released_decoder() -> None:
    params = FluxSemanticParams()
    assert (params.num_dual_stream_layers, params.num_single_stream_layers) == (19, 38)
    assert params.inner_dim == 3072 and params.semantic_channels == 1536
    assert params.pixels_per_token == 16 and params.text_conditioning


def test_plugin_module_is_light_and_loads_the_decoder() -> None:
    code = (
        "import sys, xomni_plugins.decoders.flux_semantic as m; "
        "assert 'torch' not in sys.modules, 'torch imported'; print(m.PLUGIN.qualified_name)"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "decoder/flux-semantic"
    assert PLUGIN.load() is FluxSemanticDecoder
