"""ONNX export of the SigLIP-VQ tokenizer at tiny size: the parity gate on unseen grids, a
corrupted graph caught by it, and the exported runtime giving the torch tokenizer's ids and latents."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper
from PIL import Image

from xomni_core import PluginError, TokenGrid
from xomni_core.config import load_config, resolve_config
from xomni_core.pipelines.build import build_component
from xomni_core.registry import PluginRegistry
from xomni_export import export_component, read_manifest, run_parity
from xomni_export.manifest import sha256_of
from xomni_export.specs.tokenizer import DECODE, ENCODE
from xomni_plugins.tokenizers.siglip_vq import PLUGIN, SigLIPVQParams
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer
from xomni_plugins.tokenizers.siglip_vq.runtime import ExportedSigLIPVQTokenizer

TINY = SigLIPVQParams(
    vit_width=32,
    vit_depth=2,
    vit_heads=2,
    pos_grid_size=8,
    codebook_size=64,
    codebook_dim=16,
    z_channels=32,
    decoder_norm_groups=4,
)


@pytest.fixture(scope="module")
def tokenizer() -> SigLIPVQTokenizer:
    return SigLIPVQTokenizer.from_params(TINY, seed=0)


@pytest.fixture(scope="module")
def exported(tokenizer: SigLIPVQTokenizer, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "tokenizer"
    export_component(
        tokenizer, folder, plugin=PLUGIN.name, plugin_version=PLUGIN.version, show_progress=False
    )
    return folder


@pytest.fixture(scope="module")
def runtime(exported: Path) -> ExportedSigLIPVQTokenizer:
    cls = PLUGIN.load("onnxruntime")
    assert cls is ExportedSigLIPVQTokenizer
    return ExportedSigLIPVQTokenizer.from_exported(exported, backend="onnxruntime")


def pixels(batch: int, grid_h: int, grid_w: int, seed: int = 1) -> torch.Tensor:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 3, 16 * grid_h, 16 * grid_w, generator=generator)


def gradient_image(width_px: int, height_px: int) -> Image.Image:
    y, x = np.mgrid[0:height_px, 0:width_px]
    rgb = np.stack([x * 255 // width_px, y * 255 // height_px, (x + y) % 256], axis=-1)
    return Image.fromarray(rgb.astype(np.uint8))


def test_export_passes_the_parity_gate_on_unseen_grids(exported: Path) -> None:
    manifest = read_manifest(exported)
    assert manifest["kind"] == "tokenizer" and manifest["plugin"] == "siglip-vq"
    assert manifest["parity"] == {"passed": True, "report": "parity.json"}
    report = json.loads((exported / "parity.json").read_text())
    assert report["passed"]
    for name in (ENCODE, DECODE):
        entry = manifest["graphs"][name]
        files = [entry["file"], *entry["external_data"]]
        assert entry["sha256"] == sha256_of(*(exported / name for name in files))
        opt = {d["name"]: d["opt"] for d in entry["dims"]}
        assert min(opt.values()) >= 2
        cases = [c for c in report["cases"] if c["graph"] == name]
        assert len(cases) == 3
        assert all(c["sizes"][dim] != size for c in cases for dim, size in opt.items())
        assert any(c["sizes"]["grid_h"] != c["sizes"]["grid_w"] for c in cases)
    ids_checks = [o for c in report["cases"] if c["graph"] == ENCODE for o in c["outputs"]]
    assert all(o["name"] == "ids" and o["exact"] and o["max_abs_error"] == 0 for o in ids_checks)


def test_manifest_describes_the_graphs_with_the_patch_size_in_pixel_axes(exported: Path) -> None:
    graphs = read_manifest(exported)["graphs"]
    assert graphs[ENCODE]["inputs"] == [
        {"name": "pixels", "dtype": "float32", "shape": ["batch", 3, "16*grid_h", "16*grid_w"]}
    ]
    assert graphs[ENCODE]["outputs"] == [
        {"name": "ids", "dtype": "int64", "shape": ["batch", "grid_h", "grid_w"]}
    ]
    assert graphs[DECODE]["outputs"] == [
        {"name": "latents", "dtype": "float32", "shape": ["batch", TINY.z_channels, "grid_h", "grid_w"]}
    ]


def test_a_corrupted_graph_fails_the_parity_gate_per_output(
    tokenizer: SigLIPVQTokenizer, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corrupted"
    shutil.copytree(exported, folder)
    model = onnx.load(str(folder / "decode.onnx"))
    [weight] = [t for t in model.graph.initializer if t.name.endswith("post_quant_conv.weight")]
    weight.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(weight) * 1.5, weight.name))
    onnx.save(model, str(folder / "decode.onnx"))

    report = run_parity(tokenizer.export_graphs("float32"), folder, "float32")

    assert not report.passed
    assert all(c.passed for c in report.cases if c.graph == ENCODE)
    failed = [(c, o) for c in report.cases if c.graph == DECODE for o in c.outputs]
    assert len(failed) == 3 and all(not o.passed and o.name == "latents" for _, o in failed)
    case, check = failed[0]
    assert len(check.worst_index) == 4 and check.max_abs_error > check.atol
    sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
    assert f"decode ({sizes}): latents" in report.summary()


def test_runtime_encodes_to_the_same_ids_as_torch(
    tokenizer: SigLIPVQTokenizer, runtime: ExportedSigLIPVQTokenizer
) -> None:
    for batch, grid_h, grid_w in ((1, 8, 8), (2, 5, 9), (3, 1, 4)):
        x = pixels(batch, grid_h, grid_w)
        ids = runtime.encode(x).ids
        assert ids.dtype == torch.int64 and tuple(ids.shape) == (batch, grid_h, grid_w)
        assert torch.equal(ids, tokenizer.encode(x).ids)


def test_runtime_preprocesses_images_like_torch(
    tokenizer: SigLIPVQTokenizer, runtime: ExportedSigLIPVQTokenizer
) -> None:
    images = [gradient_image(500, 300), gradient_image(500, 300).rotate(180)]
    grid = runtime.encode_images(images)
    assert grid.grid.grid_h * 16 == 384 and grid.grid.grid_w * 16 == 640
    assert torch.equal(grid.ids, tokenizer.encode_images(images).ids)


def test_runtime_decodes_to_the_same_latents_as_torch(
    tokenizer: SigLIPVQTokenizer, runtime: ExportedSigLIPVQTokenizer
) -> None:
    ids = torch.randint(0, TINY.codebook_size, (2, 3, 7), generator=torch.Generator().manual_seed(4))
    latents = runtime.decode(TokenGrid(ids)).values
    # The gate's float32 tolerance: the same convolutions, summed in another order.
    torch.testing.assert_close(latents, tokenizer.decode(TokenGrid(ids)).values, atol=1e-4, rtol=1e-4)


def test_runtime_cannot_build_save_or_export_weights(
    runtime: ExportedSigLIPVQTokenizer, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match="only runs artefacts written by `xomni export`"):
        ExportedSigLIPVQTokenizer.from_params(TINY)
    with pytest.raises(PluginError, match="only runs artefacts"):
        ExportedSigLIPVQTokenizer.from_pretrained(tmp_path)
    with pytest.raises(PluginError, match="only runs artefacts"):
        runtime.save_pretrained(tmp_path / "copy")
    with pytest.raises(PluginError, match="ViT features are not available"):
        runtime.vit_features(pixels(1, 2, 2))


def test_a_pipeline_config_selects_the_export_with_backend_onnxruntime(exported: Path) -> None:
    config = load_config(
        data={
            "tokenizer": {
                "plugin": "siglip-vq",
                "params": TINY.model_dump(mode="json"),
                "weights": str(exported),
                "backend": "onnxruntime",
            }
        }
    )
    registry = PluginRegistry.discover(config.plugins, use_environment=False)
    component = build_component(resolve_config(config, registry).component("tokenizer"), config, registry)
    assert isinstance(component, ExportedSigLIPVQTokenizer)
    assert component.params == TINY


def test_export_resamples_positions_even_when_the_stored_grid_is_the_example_size(tmp_path: Path) -> None:
    params = TINY.model_copy(update={"vit_depth": 1, "pos_grid_size": 24})
    tokenizer = SigLIPVQTokenizer.from_params(params, seed=0)
    result = export_component(
        tokenizer,
        tmp_path / "tokenizer",
        plugin=PLUGIN.name,
        plugin_version=PLUGIN.version,
        show_progress=False,
    )
    assert result.parity is not None and result.parity.passed
