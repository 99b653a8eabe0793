"""ONNX export of the FLUX semantic decoder at tiny size: the parity gate on unseen shapes for
each graph, a corrupted graph caught by it, the exported runtime rendering the torch decoder's
images, and the text-free variant exporting without text encoders."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from xomni_core import DecodeRequest, PluginError, SemanticLatents
from xomni_core.config import load_config, resolve_config
from xomni_core.pipelines.build import build_component
from xomni_core.registry import PluginRegistry
from xomni_export import export_component, read_manifest, run_parity
from xomni_export.manifest import sha256_of
from xomni_export.specs.decoder import TEXT_ENCODER, TEXT_ENCODER_2, TRANSFORMER, VAE_DECODER
from xomni_plugins.decoders.flux_semantic import PLUGIN
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams
from xomni_plugins.decoders.flux_semantic.runtime import ExportedFluxSemanticDecoder

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
ALL_GRAPHS = (TRANSFORMER, VAE_DECODER, TEXT_ENCODER, TEXT_ENCODER_2)
#: Largest allowed difference between runtime and torch images, in 8-bit levels. The float32
#: graphs agree with torch to ~1e-6 at every step; the only visible effect is a value that lies
#: at a rounding boundary of the 8-bit conversion landing on the other side.
MAX_LEVELS = 1


def trained(decoder: FluxSemanticDecoder) -> FluxSemanticDecoder:
    """A non-zero ``siglip_embed``, so that images depend on the semantic latents."""
    with torch.no_grad():
        decoder.transformer.siglip_embed.weight.normal_(generator=torch.Generator().manual_seed(3))
    return decoder


def export(decoder: FluxSemanticDecoder, folder: Path) -> Path:
    export_component(decoder, folder, plugin=PLUGIN.name, plugin_version=PLUGIN.version, show_progress=False)
    return folder


@pytest.fixture(scope="module")
def decoder() -> FluxSemanticDecoder:
    return trained(FluxSemanticDecoder.from_params(FluxSemanticParams(**TINY), seed=0))


@pytest.fixture(scope="module")
def exported(decoder: FluxSemanticDecoder, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(decoder, tmp_path_factory.mktemp("export") / "decoder")


@pytest.fixture(scope="module")
def runtime(exported: Path) -> ExportedFluxSemanticDecoder:
    cls = PLUGIN.load("onnxruntime")
    assert cls is ExportedFluxSemanticDecoder
    return ExportedFluxSemanticDecoder.from_exported(exported, backend="onnxruntime")


@pytest.fixture(scope="module")
def text_free_decoder() -> FluxSemanticDecoder:
    """Text-free, and packing 2 x 2 semantic latents of 8 px into each transformer token."""
    params = FluxSemanticParams(**{**TINY, "text_conditioning": False, "semantic_packing": 2})
    return trained(FluxSemanticDecoder.from_params(params, seed=0))


@pytest.fixture(scope="module")
def text_free_exported(
    text_free_decoder: FluxSemanticDecoder, tmp_path_factory: pytest.TempPathFactory
) -> Path:
    return export(text_free_decoder, tmp_path_factory.mktemp("export") / "text_free")


def request(
    prompts: tuple[str, ...] | None, guidance_scale: float, grid: tuple[int, int] = (2, 3)
) -> DecodeRequest:
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(2, SEMANTIC_CHANNELS, *grid, generator=generator)
    return DecodeRequest(
        SemanticLatents(values), prompts=prompts, num_inference_steps=3, guidance_scale=guidance_scale, seed=5
    )


def pixels(decoder: FluxSemanticDecoder, decode_request: DecodeRequest) -> np.ndarray:
    return np.stack([np.asarray(image) for image in decoder.decode(decode_request)]).astype(np.int16)


def test_export_passes_the_parity_gate_on_unseen_shapes(exported: Path) -> None:
    manifest = read_manifest(exported)
    assert manifest["kind"] == "decoder" and manifest["plugin"] == "flux-semantic"
    assert manifest["parity"] == {"passed": True, "report": "parity.json"}
    assert sorted(manifest["graphs"]) == sorted(ALL_GRAPHS)
    report = json.loads((exported / "parity.json").read_text())
    assert report["passed"]
    for name in ALL_GRAPHS:
        entry = manifest["graphs"][name]
        files = [entry["file"], *entry["external_data"]]
        assert entry["sha256"] == sha256_of(*(exported / name for name in files))
        opt = {d["name"]: d["opt"] for d in entry["dims"]}
        assert min(opt.values()) >= 2
        cases = [c for c in report["cases"] if c["graph"] == name]
        assert len(cases) == 3
        assert all(c["sizes"][dim] != size for c in cases for dim, size in opt.items())
        assert all(o["passed"] and o["max_abs_error"] < 1e-4 for c in cases for o in c["outputs"])
    vae_cases = [c["sizes"] for c in report["cases"] if c["graph"] == VAE_DECODER]
    assert any(sizes["grid_h"] != sizes["grid_w"] for sizes in vae_cases)


def test_manifest_describes_the_step_and_the_pixel_factors(exported: Path) -> None:
    graphs = read_manifest(exported)["graphs"]
    step = {i["name"]: i["shape"] for i in graphs[TRANSFORMER]["inputs"]}
    assert " ".join(step) == "latents text pooled timestep img_ids txt_ids semantic guidance"
    assert step["latents"] == ["batch", "tokens", 16]
    assert step["semantic"] == ["batch", "tokens", SEMANTIC_CHANNELS]
    assert graphs[TRANSFORMER]["outputs"][0]["shape"] == ["batch", "tokens", 16]
    assert graphs[VAE_DECODER]["inputs"][0]["shape"] == ["batch", 4, "2*grid_h", "2*grid_w"]
    assert graphs[VAE_DECODER]["outputs"][0]["shape"] == ["batch", 3, "16*grid_h", "16*grid_w"]
    assert graphs[TEXT_ENCODER_2]["outputs"][0]["shape"] == ["batch", "text_len", 32]


def test_export_writes_scheduler_and_prompt_tokenizers_but_no_torch_weights(exported: Path) -> None:
    for folder in ("scheduler", "tokenizer", "tokenizer_2"):
        assert (exported / folder).is_dir()
    assert not list(exported.rglob("*.safetensors"))


def test_a_corrupted_graph_fails_the_parity_gate_per_output(
    decoder: FluxSemanticDecoder, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corrupted"
    shutil.copytree(exported, folder)
    model = onnx.load(str(folder / "transformer.onnx"))
    [bias] = [t for t in model.graph.initializer if t.name == "transformer.proj_out.bias"]
    bias.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(bias) + 0.5, bias.name))
    onnx.save(model, str(folder / "transformer.onnx"))

    report = run_parity(decoder.export_graphs("float32"), folder, "float32")

    assert not report.passed
    assert all(c.passed for c in report.cases if c.graph != TRANSFORMER)
    failed = [(c, o) for c in report.cases if c.graph == TRANSFORMER for o in c.outputs]
    assert len(failed) == 3 and all(not o.passed and o.name == "velocity" for _, o in failed)
    case, check = failed[0]
    assert len(check.worst_index) == 3 and check.max_abs_error > check.atol
    sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
    assert f"transformer ({sizes}): velocity" in report.summary()


def test_runtime_embeds_prompts_like_torch(
    decoder: FluxSemanticDecoder, runtime: ExportedFluxSemanticDecoder
) -> None:
    prompts = ["a cat", "a red bicycle leaning on a wall"]
    expected, actual = decoder.encode_prompts(prompts, 2), runtime.encode_prompts(prompts, 2)
    torch.testing.assert_close(actual.sequence, expected.sequence, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(actual.pooled, expected.pooled, atol=1e-4, rtol=1e-4)


@pytest.mark.parametrize("guidance_scale", [1.0, 3.0])
def test_runtime_renders_the_torch_images_for_the_same_seed(
    decoder: FluxSemanticDecoder, runtime: ExportedFluxSemanticDecoder, guidance_scale: float
) -> None:
    decode_request = request(("a cat", "a dog on a red bike"), guidance_scale)
    expected, actual = pixels(decoder, decode_request), pixels(runtime, decode_request)
    assert actual.shape == expected.shape == (2, 32, 48, 3)
    assert np.abs(actual - expected).max() <= MAX_LEVELS


def test_text_free_variant_exports_without_text_encoders(text_free_exported: Path) -> None:
    manifest = read_manifest(text_free_exported)
    assert sorted(manifest["graphs"]) == [TRANSFORMER, VAE_DECODER]
    assert manifest["parity"]["passed"]
    inputs = [i["name"] for i in manifest["graphs"][TRANSFORMER]["inputs"]]
    assert inputs == ["latents", "timestep", "img_ids", "semantic", "guidance"]
    assert not any((text_free_exported / name).exists() for name in ("tokenizer", "tokenizer_2"))


def test_text_free_packing_runtime_renders_the_torch_images(
    text_free_decoder: FluxSemanticDecoder, text_free_exported: Path
) -> None:
    runtime = ExportedFluxSemanticDecoder.from_exported(text_free_exported, backend="onnxruntime")
    assert runtime.params.semantic_packing == 2
    decode_request = request(None, 3.0, grid=(6, 4))
    expected, actual = pixels(text_free_decoder, decode_request), pixels(runtime, decode_request)
    assert np.abs(actual - expected).max() <= MAX_LEVELS


def test_runtime_cannot_build_save_or_export_weights(
    runtime: ExportedFluxSemanticDecoder, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match="only runs artefacts written by `xomni export`"):
        ExportedFluxSemanticDecoder.from_params(runtime.params)
    with pytest.raises(PluginError, match="only runs artefacts"):
        ExportedFluxSemanticDecoder.from_pretrained(tmp_path)
    with pytest.raises(PluginError, match="only runs artefacts"):
        runtime.save_pretrained(tmp_path / "copy")
    with pytest.raises(PluginError, match="only runs artefacts"):
        runtime.export_graphs("float32")


def test_a_pipeline_config_selects_the_export_with_backend_onnxruntime(exported: Path) -> None:
    config = load_config(
        data={
            "decoder": {
                "plugin": "flux-semantic",
                "params": FluxSemanticParams(**TINY).model_dump(mode="json"),
                "weights": str(exported),
                "backend": "onnxruntime",
            }
        }
    )
    registry = PluginRegistry.discover(config.plugins, use_environment=False)
    component = build_component(resolve_config(config, registry).component("decoder"), config, registry)
    assert isinstance(component, ExportedFluxSemanticDecoder)
    assert component.params == FluxSemanticParams(**TINY)
