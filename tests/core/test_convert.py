"""`xomni convert x-omni`: a tiny release in the official layout becomes loadable component folders."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from tokenizer_layouts import listed_special_tokenizer

from xomni_core import CheckpointError, DecodeRequest, SemanticLatents, TextToImagePipeline, XomniError
from xomni_core.cli import main
from xomni_core.convert import CONVERTERS, ConvertOptions, convert
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone
from xomni_plugins.converters.x_omni.converter import SIGLIP_VITS, SigLIPViTShape, read_release
from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams
from xomni_plugins.tokenizers.siglip_vq import SigLIPVQParams
from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer

VIT_NAME = "siglip_tiny_patch16_test"
TINY_VIT = SigLIPViTShape(width=32, depth=2, heads=2, mlp_ratio=4.0, patch_size_px=16)
TOKENIZER = SigLIPVQParams(
    vit_width=32,
    vit_depth=2,
    vit_heads=2,
    pos_grid_size=8,
    codebook_size=64,
    codebook_dim=16,
    z_channels=32,
    decoder_norm_groups=32,  # fixed by the official projector code
)
BACKBONE = XOmniParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_mm_adap_layers=1,
    num_mm_head_layers=1,
    vocab_size=272,
    mm_vocab_size=80,
    image_vocab_size=64,
    max_position_embeddings=256,
)
DECODER = FluxSemanticParams(
    num_dual_stream_layers=1,
    num_single_stream_layers=1,
    num_attention_heads=2,
    attention_head_dim=16,
    axes_dims_rope=(4, 6, 6),
    joint_attention_dim=32,
    pooled_projection_dim=32,
    in_channels=16,
    semantic_channels=32,
    vae_latent_channels=4,
    vae_block_out_channels=(8, 8, 8, 8),
    vae_layers_per_block=1,
    vae_norm_num_groups=4,
    t5_vocab_size=300,
    t5_hidden_size=32,
    t5_head_dim=8,
    t5_ffn_size=64,
    t5_num_layers=1,
    t5_num_heads=4,
    t5_max_length=16,
    clip_vocab_size=300,
    clip_hidden_size=32,
    clip_ffn_size=64,
    clip_num_layers=1,
    clip_num_heads=4,
    clip_max_length=16,
)
VIT_FILE = "image_tokenizer/siglip2_vit.pt"
PROJECTOR_FILE = "image_tokenizer/vq_projector.pt"
DECODER_STEPS = 3
DECODER_CFG = 2.0


@dataclass(frozen=True)
class Source:
    """The tiny components the release is written from, and where it lies."""

    tokenizer: SigLIPVQTokenizer
    backbone: XOmniBackbone
    decoder: FluxSemanticDecoder
    release: Path
    flux: Path


def official_config() -> dict[str, Any]:
    """config.json as the official release lays it out, at tiny sizes."""
    qwen2 = BACKBONE.model_dump(exclude={"image_token_template", "eos_token", "pad_token"})
    return {
        "architectures": ["XOmniForCausalLM"],
        "auto_map": {
            "AutoConfig": "configuration_xomni.XOmniConfig",
            "AutoModelForCausalLM": "modeling_xomni.XOmniForCausalLM",
        },
        "model_type": "x-omni",
        **qwen2,
        "mm_special_tokens": list(BACKBONE.mm_special_tokens),
        "use_sliding_window": False,
        "sliding_window": 256,
        "max_window_layers": 4,
        "attention_dropout": 0.0,
        "torch_dtype": "float32",
        "vision_config": {
            "dtype": "float32",
            "transform": {
                "short_size": 384,
                "long_size": 1152,
                "patch_size": 16,
                "random_ratio": None,
                "min_short_size": 128,
                "max_aspect_ratio": 3.0,
                "filtering": True,
            },
            "encoder": {
                "siglip_name": VIT_NAME,
                "siglip_path": VIT_FILE,
                "projector_path": PROJECTOR_FILE,
                "z_channels": 32,
                "codebook_size": 64,
                "codebook_dim": 16,
                "with_norm": True,
            },
            "decoder": {
                "model_path": "decoder",
                "upscale_factor": 16,
                "num_inference_steps": DECODER_STEPS,
                "cfg_scale": DECODER_CFG,
                "cfg_scale_2": DECODER_CFG,
            },
        },
    }


def write_release(
    root: Path, tokenizer: SigLIPVQTokenizer, backbone: XOmniBackbone, decoder: FluxSemanticDecoder
) -> Path:
    """The official layout: config, two backbone shards, tokenizer files (image tokens listed as
    special), .pt state dicts, decoder."""
    src = root / "X-Omni-Tiny"
    src.mkdir()
    (src / "config.json").write_text(json.dumps(official_config(), indent=2))

    state = backbone.net.state_dict()
    names = sorted(state)
    shards = {
        "model-00001-of-00002.safetensors": names[: len(names) // 2],
        "model-00002-of-00002.safetensors": names[len(names) // 2 :],
    }
    for file, keys in shards.items():
        save_file({k: state[k].contiguous() for k in keys}, str(src / file))
    index = {"metadata": {}, "weight_map": {k: file for file, keys in shards.items() for k in keys}}
    (src / "model.safetensors.index.json").write_text(json.dumps(index))
    listed_special_tokenizer(backbone.params).save_pretrained(str(src))

    vq = tokenizer.model.state_dict()
    vit = {k.removeprefix("vit."): v.clone() for k, v in vq.items() if k.startswith("vit.")}
    width = TINY_VIT.width
    vit |= {  # the final norm and attention pool the official ViT file carries
        "norm.weight": torch.ones(width),
        "norm.bias": torch.zeros(width),
        "attn_pool.latent": torch.randn(1, 1, width),
        "attn_pool.q.weight": torch.randn(width, width),
        "attn_pool.kv.weight": torch.randn(2 * width, width),
    }
    projector = {k.removeprefix("vqproj."): v.clone() for k, v in vq.items() if k.startswith("vqproj.")}
    (src / "image_tokenizer").mkdir()
    torch.save(vit, src / VIT_FILE)
    torch.save(projector, src / PROJECTOR_FILE)

    decoder.transformer.save_pretrained(src / "decoder")
    config_file = src / "decoder" / "config.json"
    config = json.loads(config_file.read_text())
    config["_class_name"] = "FluxTransformer2DModelWithSigLIP"
    config.pop("semantic_channels")
    config_file.write_text(json.dumps(config))
    return src


def write_flux_folder(root: Path, decoder: FluxSemanticDecoder) -> Path:
    """A FLUX.1-dev style folder: VAE, scheduler, CLIP and T5 with their tokenizers."""
    flux = root / "FLUX.1-dev"
    decoder.save_pretrained(flux)
    shutil.rmtree(flux / "transformer")
    (flux / "xomni_component.json").unlink()
    return flux


@pytest.fixture(scope="module", autouse=True)
def tiny_vit_is_known() -> Iterator[None]:
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(SIGLIP_VITS, VIT_NAME, TINY_VIT)
        yield


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Source:
    root = tmp_path_factory.mktemp("official")
    tokenizer = SigLIPVQTokenizer.from_params(TOKENIZER, seed=0)
    backbone = XOmniBackbone.from_params(BACKBONE, seed=1)
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=2)
    with torch.no_grad():  # a trained siglip_embed, so that the latents matter
        decoder.transformer.siglip_embed.weight.normal_(generator=torch.Generator().manual_seed(3))
    release = write_release(root, tokenizer, backbone, decoder)
    return Source(tokenizer, backbone, decoder, release, write_flux_folder(root, decoder))


@pytest.fixture(scope="module")
def converted(source: Source, tmp_path_factory: pytest.TempPathFactory) -> Path:
    dst = tmp_path_factory.mktemp("converted") / "x-omni-tiny"
    code = main(
        ["convert", "x-omni", str(source.release), str(dst), "--flux", str(source.flux), "--no-progress"]
    )
    assert code == 0
    return dst


@pytest.fixture(scope="module")
def pipeline(converted: Path) -> TextToImagePipeline:
    return TextToImagePipeline.from_config(converted / "pipeline.yaml")


def options(source: Source, **changes: Any) -> ConvertOptions:
    return ConvertOptions(flux_dir=source.flux, show_progress=False, **changes)


def copy_release(source: Source, tmp_path: Path) -> Path:
    return Path(shutil.copytree(source.release, tmp_path / "release"))


def edit_config(release: Path, edit: Any) -> None:
    config = json.loads((release / "config.json").read_text())
    edit(config)
    (release / "config.json").write_text(json.dumps(config))


def assert_nothing_written(dst: Path) -> None:
    assert not dst.exists()
    assert not [p for p in dst.parent.iterdir() if p.name.startswith(f".{dst.name}.")]


# ----------------------------------------------------------------------------- equivalence


def test_converted_folder_holds_three_components_and_a_pipeline_config(converted: Path) -> None:
    assert sorted(p.name for p in converted.iterdir()) == [
        "backbone",
        "decoder",
        "model_index.json",
        "pipeline.yaml",
        "tokenizer",
    ]


def test_a_converted_folder_loads_with_from_pretrained(converted: Path) -> None:
    index = json.loads((converted / "model_index.json").read_text())
    assert index["backbone"]["plugin"] == "x-omni" and index["backbone"]["folder"] == "backbone"
    pipeline = TextToImagePipeline.from_pretrained(converted)
    assert type(pipeline.backbone).__name__ == "XOmniBackbone"


def test_backbone_logits_equal_the_source_in_both_modes(
    source: Source, pipeline: TextToImagePipeline
) -> None:
    backbone = source.backbone
    image = [backbone.vocab.image_token_id(k) for k in (5, 17, 63)]
    ids = torch.tensor([backbone.tokenize("a cat" + backbone.image_prefix(2, 2)) + image])
    for mode in ("text", "image"):
        assert torch.equal(pipeline.backbone.forward(ids, mode=mode), backbone.forward(ids, mode=mode))


def test_converted_text_tokenizer_keeps_the_ids_and_lists_no_image_tokens(
    converted: Path, pipeline: TextToImagePipeline
) -> None:
    release = listed_special_tokenizer(BACKBONE)  # what the release's files hold
    names = [BACKBONE.image_token(k) for k in range(BACKBONE.image_vocab_size)]
    assert len(release.extra_special_tokens) > len(names)
    config = json.loads((converted / "backbone" / "tokenizer_config.json").read_text())
    assert not set(names) & set(config["extra_special_tokens"])
    converted_tokenizer = pipeline.backbone.tokenizer
    assert converted_tokenizer.get_vocab() == release.get_vocab()
    text = "a cat<SOM>2 2<IMAGE><MM-Token-5><MM-Token-63><EOM><|im_end|>"
    ids = release.encode(text, add_special_tokens=False)
    assert converted_tokenizer.encode(text, add_special_tokens=False) == ids
    assert converted_tokenizer.decode(ids, skip_special_tokens=True) == "a cat2 2"


def test_tokenizer_ids_and_latents_equal_the_source(source: Source, pipeline: TextToImagePipeline) -> None:
    pixels = torch.randn(1, 3, 32, 48, generator=torch.Generator().manual_seed(4))
    grid = source.tokenizer.encode(pixels)
    assert torch.equal(pipeline.tokenizer.encode(pixels).ids, grid.ids)
    assert torch.equal(pipeline.tokenizer.decode(grid).values, source.tokenizer.decode(grid).values)


def test_decoder_images_equal_the_source_for_the_same_seed(
    source: Source, pipeline: TextToImagePipeline
) -> None:
    latents = SemanticLatents(torch.randn(1, 32, 2, 3, generator=torch.Generator().manual_seed(5)))
    request = DecodeRequest(
        latents, prompts=("a cat",), num_inference_steps=2, guidance_scale=DECODER_CFG, seed=7
    )
    converted = np.stack([np.asarray(image) for image in pipeline.decoder.decode(request)])
    original = np.stack([np.asarray(image) for image in source.decoder.decode(request)])
    np.testing.assert_array_equal(converted, original)


def test_decoder_sampler_defaults_come_from_vision_config(pipeline: TextToImagePipeline) -> None:
    params = pipeline.decoder.params
    assert (params.num_inference_steps, params.guidance_scale, params.embedded_guidance) == (
        DECODER_STEPS,
        DECODER_CFG,
        1.0,
    )
    assert params.text_conditioning


def test_pipeline_config_names_the_plugins_with_relative_weights_and_official_defaults(
    converted: Path,
) -> None:
    config = yaml.safe_load((converted / "pipeline.yaml").read_text())
    assert {slot: config[slot] for slot in ("tokenizer", "backbone", "decoder")} == {
        "tokenizer": {"plugin": "siglip-vq", "weights": "tokenizer"},
        "backbone": {"plugin": "x-omni", "weights": "backbone"},
        "decoder": {"plugin": "flux-semantic", "weights": "decoder"},
    }
    assert config["runtime"] == {"dtype": "float32"}  # vision_config.dtype
    assert config["generation"] == {
        "height_px": 1152,
        "width_px": 1152,
        "sampling": {"temperature": 1.0, "top_p": 1.0, "min_p": 0.03, "cfg_scale": 1.0},
        "num_inference_steps": DECODER_STEPS,
        "guidance_scale": DECODER_CFG,
    }


def test_vit_final_norm_and_attention_pool_are_dropped(converted: Path) -> None:
    with safe_open(str(converted / "tokenizer" / "model.safetensors"), framework="pt") as weights:
        names = list(weights.keys())
    assert not [n for n in names if n.startswith(("vit.norm.", "vit.attn_pool."))]
    assert "vit.blocks.1.mlp.fc2.weight" in names and "vqproj.post_conv.1.norm2.bias" in names
    record = json.loads((converted / "tokenizer" / "xomni_component.json").read_text())
    assert record["params"]["pos_grid_size"] == 8  # from pos_embed's shape


def test_every_converted_weight_equals_the_source_bit_for_bit(source: Source, converted: Path) -> None:
    expected_by_file = {
        "tokenizer/model.safetensors": source.tokenizer.model.state_dict(),
        "backbone/model.safetensors": source.backbone.net.state_dict(),
        "decoder/transformer/diffusion_pytorch_model.safetensors": source.decoder.transformer.state_dict(),
    }
    for file, expected in expected_by_file.items():
        found = load_file(str(converted / file))
        assert sorted(found) == sorted(expected), file
        for name, tensor in expected.items():
            assert found[name].dtype == tensor.dtype and torch.equal(found[name], tensor), f"{file}: {name}"


def test_converting_again_writes_the_same_bytes(source: Source, converted: Path, tmp_path: Path) -> None:
    again = tmp_path / "x-omni-tiny"
    convert("x-omni", source.release, again, options(source))

    def files(root: Path) -> dict[str, bytes]:
        return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}

    assert files(again) == files(converted)


# ----------------------------------------------------------------------------- refusals


def test_missing_projector_exits_2_naming_it_and_leaves_no_destination(
    source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    release = copy_release(source, tmp_path)
    (release / PROJECTOR_FILE).unlink()
    dst = tmp_path / "out"
    code = main(["convert", "x-omni", str(release), str(dst), "--flux", str(source.flux), "--no-progress"])
    assert code == 2
    assert "projector_path" in capsys.readouterr().err
    assert_nothing_written(dst)


def test_unexpected_vit_tensor_is_named_and_leaves_no_destination(source: Source, tmp_path: Path) -> None:
    release = copy_release(source, tmp_path)
    vit = torch.load(release / VIT_FILE, weights_only=True)
    vit["blocks.2.attn.qkv.weight"] = torch.zeros(96, 32)
    torch.save(vit, release / VIT_FILE)
    with pytest.raises(CheckpointError, match=r"1 unexpected: blocks\.2\.attn\.qkv\.weight"):
        convert("x-omni", release, tmp_path / "out", options(source))
    assert_nothing_written(tmp_path / "out")


def test_misshaped_backbone_tensor_is_named(source: Source, tmp_path: Path) -> None:
    release = copy_release(source, tmp_path)
    shard = release / "model-00001-of-00002.safetensors"
    tensors = load_file(str(shard))
    tensors["mm_head.weight"] = torch.zeros(81, 32)
    save_file(tensors, str(shard))
    with pytest.raises(
        CheckpointError, match=r"mis-shaped: mm_head\.weight \(81, 32\) \(expected \(80, 32\)\)"
    ):
        convert("x-omni", release, tmp_path / "out", options(source))
    assert_nothing_written(tmp_path / "out")


class _Payload:
    """Pickles as a call that leaves a marker file: what an unsafe loader would run."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, tuple[str]]:
        return (_leave_marker, (str(self.marker),))


def _leave_marker(path: str) -> None:
    Path(path).touch()


def test_pickled_objects_in_state_dict_files_are_refused_without_running(
    source: Source, tmp_path: Path
) -> None:
    release = copy_release(source, tmp_path)
    marker = tmp_path / "code-ran"
    projector = torch.load(release / PROJECTOR_FILE, weights_only=True)
    torch.save({**projector, "payload": _Payload(marker)}, release / PROJECTOR_FILE)
    with pytest.raises(
        CheckpointError, match=r"vq_projector\.pt was refused by torch\.load\(weights_only=True\)"
    ):
        convert("x-omni", release, tmp_path / "out", options(source))
    assert not marker.exists()
    assert_nothing_written(tmp_path / "out")


def test_unknown_siglip_name_lists_the_supported_names(source: Source, tmp_path: Path) -> None:
    release = copy_release(source, tmp_path)
    edit_config(
        release, lambda c: c["vision_config"]["encoder"].update(siglip_name="siglip2_gaint_patch16_384")
    )
    with pytest.raises(CheckpointError, match=r"Did you mean 'siglip2_giant_patch16_384'\?.*Supported: "):
        convert("x-omni", release, tmp_path / "out", options(source))


def test_giant_siglip_name_maps_to_the_released_vit_sizes(source: Source, tmp_path: Path) -> None:
    from xomni_core import PluginRegistry

    release = copy_release(source, tmp_path)
    edit_config(
        release,
        lambda c: c["vision_config"]["encoder"].update(
            siglip_name="siglip2_giant_patch16_384", z_channels=1536
        ),
    )
    fields = read_release(release, PluginRegistry.discover(), vit_shapes=SIGLIP_VITS).tokenizer_fields
    assert {
        k: fields[k] for k in ("vit_width", "vit_depth", "vit_heads", "vit_mlp_ratio", "patch_size_px")
    } == {
        "vit_width": 1536,
        "vit_depth": 40,
        "vit_heads": 16,
        "vit_mlp_ratio": 4.0,
        "patch_size_px": 16,
    }


def test_two_decoder_cfg_scales_are_refused(source: Source, tmp_path: Path) -> None:
    release = copy_release(source, tmp_path)
    edit_config(release, lambda c: c["vision_config"]["decoder"].update(cfg_scale_2=3.0))
    with pytest.raises(CheckpointError, match=r"cfg_scale=2\.0 and cfg_scale_2=3\.0 differ"):
        convert("x-omni", release, tmp_path / "out", options(source))


def test_flux_folder_is_required(source: Source, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["convert", "x-omni", str(source.release), str(tmp_path / "out"), "--no-progress"]) == 2
    assert "--flux PATH is required" in capsys.readouterr().err


def test_text_free_decoder_is_written_without_text_encoders(source: Source, tmp_path: Path) -> None:
    convert("x-omni", source.release, tmp_path / "out", options(source, text_free=True))
    decoder = tmp_path / "out" / "decoder"
    assert sorted(p.name for p in decoder.iterdir()) == [
        "scheduler",
        "transformer",
        "vae",
        "xomni_component.json",
    ]
    assert not FluxSemanticDecoder.from_pretrained(decoder).params.text_conditioning


def test_existing_destination_needs_force_and_dtype_casts_weights(source: Source, tmp_path: Path) -> None:
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "stale.txt").write_text("old")
    with pytest.raises(XomniError, match="already exists; pass --force"):
        convert("x-omni", source.release, dst, options(source))
    convert("x-omni", source.release, dst, options(source, force=True, dtype="bfloat16"))
    assert not (dst / "stale.txt").exists()
    with safe_open(str(dst / "backbone" / "model.safetensors"), framework="pt") as weights:
        assert {weights.get_slice(name).get_dtype() for name in weights.keys()} == {"BF16"}  # noqa: SIM118


def test_registry_module_is_light_and_lists_x_omni() -> None:
    code = (
        "import sys, xomni_core.convert as c; assert 'torch' not in sys.modules; print(sorted(c.CONVERTERS))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "['x-omni']"
    assert list(CONVERTERS) == ["x-omni"]
