"""Convert the official X-Omni release into xomni component folders and a pipeline config.

Reads the release folder:

- ``config.json``: the Qwen2 fields, X-Omni's multimodal fields and ``vision_config``;
- backbone weights: ``model.safetensors``, or the shards listed in ``model.safetensors.index.json``;
- the text tokenizer files beside them;
- ``vision_config.encoder.siglip_path`` and ``projector_path``: PyTorch state dicts, read only
  with ``torch.load(..., weights_only=True)`` so that no pickled code runs;
- ``vision_config.decoder.model_path``: a diffusers transformer folder holding ``siglip_embed``,
  completed by a local FLUX.1-dev folder (VAE, scheduler and, unless text-free, text encoders).

Writes, inside one atomic folder, ``tokenizer/``, ``backbone/`` and ``decoder/`` through the
reference plugins' own ``save_pretrained``, and ``pipeline.yaml`` naming them. Every tensor name
and shape is checked against the plugin's model before anything is written. Settings of the
release that the plugins cannot express are refused, never approximated.

The reference plugins are found through the plugin registry when a conversion runs; importing
this module does not import them.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import math
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
import yaml
from pydantic import ValidationError
from tqdm.auto import tqdm

from xomni_core._version import __version__
from xomni_core.atomic import atomic_directory
from xomni_core.convert import ConversionResult, ConvertOptions
from xomni_core.dtypes import torch_dtype
from xomni_core.errors import CheckpointError, PluginError, XomniError
from xomni_core.folders import check_state_dict
from xomni_core.pickles import load_tensors_only
from xomni_core.pipelines import write_model_index
from xomni_core.text_tokenizers import unlist_special_tokens

if TYPE_CHECKING:
    from xomni_core.registry import PluginRegistry
    from xomni_core.types import ComponentKind

TOKENIZER_PLUGIN = "siglip-vq"
BACKBONE_PLUGIN = "x-omni"
DECODER_PLUGIN = "flux-semantic"

#: Generation defaults of the official inference script; config.json does not record them.
DEFAULT_IMAGE_SIZE_PX = 1152
DEFAULT_SAMPLING: dict[str, float] = {"temperature": 1.0, "top_p": 1.0, "min_p": 0.03, "cfg_scale": 1.0}
#: The official decoder call feeds 1.0 to FLUX's distilled-guidance embedding.
OFFICIAL_EMBEDDED_GUIDANCE = 1.0
#: Fixed by the official projector code, absent from config.json.
PROJECTOR_POST_CONV_BLOCKS = 2
PROJECTOR_NORM_GROUPS = 32
#: Tensors of the official ViT file that the tokenizer never uses: its features are the last
#: block's output, before the final norm and the attention pool.
UNUSED_VIT_PREFIXES = ("norm.", "attn_pool.")
#: Files a transformers text tokenizer may consist of; copied apart so that loading it never
#: reads config.json (whose ``auto_map`` would point transformers at the release's own code).
TEXT_TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "added_tokens.json",
    "vocab.json",
    "merges.txt",
    "tokenizer.model",
    "chat_template.jinja",
    "chat_template.json",
)
VISION_DTYPES = ("float32", "float16", "bfloat16")
_SAFETENSORS_DTYPES = {"F32": "float32", "F16": "float16", "BF16": "bfloat16"}
_OWNER = "xomni convert x-omni"


@dataclass(frozen=True)
class SigLIPViTShape:
    """Sizes of a SigLIP ViT named by ``vision_config.encoder.siglip_name``.

    The position grid is not part of the name: it is read from the shape of ``pos_embed``.
    """

    width: int
    depth: int
    heads: int
    mlp_ratio: float
    patch_size_px: int


#: The ViT names the converter knows. A release built on another SigLIP size converts once its
#: name is added here (tests add tiny ones).
SIGLIP_VITS: dict[str, SigLIPViTShape] = {
    "siglip2_giant_patch16_384": SigLIPViTShape(
        width=1536, depth=40, heads=16, mlp_ratio=4.0, patch_size_px=16
    ),
}

#: ``vision_config.transform`` keys (the official preprocessing function's arguments) mapped to
#: tokenizer params; ``patch_size`` and ``random_ratio`` are checked separately.
_TRANSFORM_FIELDS = {
    "short_size": "target_short_side_px",
    "long_size": "max_long_side_px",
    "min_short_size": "min_short_side_px",
    "max_aspect_ratio": "max_aspect_ratio",
    "filtering": "filter_images",
}
_ENCODER_KEYS = (
    "siglip_name",
    "siglip_path",
    "projector_path",
    "z_channels",
    "codebook_size",
    "codebook_dim",
    "with_norm",
)
_DECODER_KEYS = ("model_path", "upscale_factor", "num_inference_steps", "cfg_scale", "cfg_scale_2")
#: Backbone fields config.json must state: their transformers defaults would describe another model.
_REQUIRED_BACKBONE_FIELDS = (
    "hidden_size",
    "intermediate_size",
    "num_hidden_layers",
    "num_attention_heads",
    "vocab_size",
    "num_mm_adap_layers",
    "num_mm_head_layers",
    "mm_vocab_size",
    "image_vocab_size",
    "mm_special_tokens",
)
#: Fields transformers' Qwen2 config fills in when config.json omits them, with those defaults.
_QWEN2_DEFAULTS: dict[str, Any] = {
    "max_position_embeddings": 32768,
    "rope_theta": 10000.0,
    "rms_norm_eps": 1e-6,
    "hidden_act": "silu",
    "initializer_range": 0.02,
    "tie_word_embeddings": False,
}


@dataclass(frozen=True)
class DecoderSettings:
    """``vision_config.decoder`` as the flux-semantic decoder takes it."""

    transformer_dir: Path
    upscale_factor: int
    num_inference_steps: int
    guidance_scale: float


@dataclass(frozen=True)
class Release:
    """An official release folder, read and checked without loading any weights."""

    src: Path
    backbone_fields: dict[str, Any]
    backbone_weights: tuple[Path, ...]
    weight_map: dict[str, str] | None
    tokenizer_fields: dict[str, Any]
    vit_path: Path
    projector_path: Path
    decoder: DecoderSettings
    vision_dtype: str


def convert_x_omni(
    src: Path,
    dst: Path,
    options: ConvertOptions,
    *,
    vit_shapes: Mapping[str, SigLIPViTShape] | None = None,
) -> ConversionResult:
    """Convert the release in ``src`` into ``dst``; a failed conversion leaves no ``dst``."""
    from xomni_core.registry import PluginRegistry

    src, dst = Path(src), Path(dst)
    _check_destination(src, dst, options.force)
    flux_dir = _flux_folder(options)
    registry = PluginRegistry.discover()
    release = read_release(src, registry, vit_shapes=SIGLIP_VITS if vit_shapes is None else vit_shapes)
    _check_flux_folder(flux_dir, text_free=_text_free(options))

    notes: list[str] = []
    stages: list[tuple[str, Callable[[Path], None]]] = [
        ("tokenizer", lambda out: notes.extend(convert_tokenizer(release, registry, out, options))),
        ("backbone", lambda out: notes.extend(convert_backbone(release, registry, out, options))),
        ("decoder", lambda out: notes.extend(convert_decoder(release, registry, out, flux_dir, options))),
        ("pipeline.yaml", lambda out: write_pipeline_config(release, out)),
        ("model_index.json", lambda out: write_model_index(out, registry=registry)),
    ]
    with (
        _library_progress_bars(options.show_progress),
        tqdm(
            total=len(stages), desc="converting x-omni", unit="stage", disable=not options.show_progress
        ) as bar,
        atomic_directory(dst) as out,
    ):
        for name, stage in stages:
            bar.set_postfix_str(name)
            stage(out)
            bar.update()
    return ConversionResult(
        dst=dst,
        pipeline_config=dst / "pipeline.yaml",
        components=("tokenizer", "backbone", "decoder"),
        notes=tuple(notes),
    )


# ------------------------------------------------------------------------ reading config.json


def read_release(src: Path, registry: PluginRegistry, *, vit_shapes: Mapping[str, SigLIPViTShape]) -> Release:
    """Read ``config.json`` and check that every file it names exists; loads no weights."""
    config_path = src / "config.json"
    config = _read_json(config_path, "the release config")
    if config.get("model_type") != "x-omni":
        raise CheckpointError(
            f"{config_path}: model_type is {config.get('model_type')!r}, expected 'x-omni'; "
            "this is not an X-Omni release"
        )
    vision = config.get("vision_config")
    if not isinstance(vision, dict):
        raise CheckpointError(
            f"{config_path}: vision_config is missing; this is not a complete X-Omni release"
        )
    where = f"{config_path}: vision_config"
    encoder = _section(vision, "encoder", where, known=_ENCODER_KEYS)
    transform = _section(vision, "transform", where, known=(*_TRANSFORM_FIELDS, "patch_size", "random_ratio"))
    decoder = _section(vision, "decoder", where, known=None)
    vision_dtype = vision.get("dtype")
    if vision_dtype not in VISION_DTYPES:
        raise CheckpointError(f"{where}.dtype: {vision_dtype!r} is not one of {', '.join(VISION_DTYPES)}")

    backbone_fields = _backbone_fields(config, config_path)
    _validate(registry, "backbone", BACKBONE_PLUGIN, backbone_fields, f"{config_path} (backbone fields)")
    tokenizer_fields = _tokenizer_fields(encoder, transform, where, vit_shapes)
    _validate(registry, "tokenizer", TOKENIZER_PLUGIN, tokenizer_fields, f"{where}.encoder/transform")
    settings = _decoder_settings(decoder, src, f"{where}.decoder")
    if settings.upscale_factor != tokenizer_fields["patch_size_px"]:
        raise CheckpointError(
            f"{where}.decoder.upscale_factor: {settings.upscale_factor} px per token differs from the "
            f"ViT patch of {tokenizer_fields['patch_size_px']} px; xomni renders one token per patch"
        )

    weights, weight_map = _backbone_weight_files(src)
    _require_tokenizer_files(src)
    return Release(
        src=src,
        backbone_fields=backbone_fields,
        backbone_weights=weights,
        weight_map=weight_map,
        tokenizer_fields=tokenizer_fields,
        vit_path=_named_file(src, encoder, "siglip_path", f"{where}.encoder", "the SigLIP ViT state dict"),
        projector_path=_named_file(
            src, encoder, "projector_path", f"{where}.encoder", "the VQ projector state dict"
        ),
        decoder=settings,
        vision_dtype=vision_dtype,
    )


def _backbone_fields(config: dict[str, Any], config_path: Path) -> dict[str, Any]:
    missing = [name for name in _REQUIRED_BACKBONE_FIELDS if name not in config]
    if missing:
        raise CheckpointError(f"{config_path}: backbone fields missing: {', '.join(missing)}")
    fields: dict[str, Any] = {name: config[name] for name in _REQUIRED_BACKBONE_FIELDS}
    fields["mm_special_tokens"] = tuple(config["mm_special_tokens"])
    fields["num_key_value_heads"] = config.get("num_key_value_heads") or config["num_attention_heads"]
    for name, default in _QWEN2_DEFAULTS.items():
        value = config.get(name)
        fields[name] = default if value is None else value

    refused = []
    rope = config.get("rope_parameters")
    if isinstance(rope, dict):
        if rope.get("rope_type", "default") != "default":
            refused.append(f"rope_parameters.rope_type={rope.get('rope_type')!r} (only plain RoPE)")
        if rope.get("rope_theta") is not None:
            fields["rope_theta"] = rope["rope_theta"]
    if config.get("rope_scaling") is not None:
        refused.append(f"rope_scaling={config['rope_scaling']!r} (only plain RoPE)")
    if config.get("use_sliding_window"):
        refused.append("use_sliding_window=true (only full attention)")
    layer_types = config.get("layer_types") or []
    if any(kind != "full_attention" for kind in layer_types):
        refused.append("layer_types other than 'full_attention' (only full attention)")
    head_dim = config.get("head_dim")
    if head_dim is not None and head_dim * config["num_attention_heads"] != config["hidden_size"]:
        refused.append(f"head_dim={head_dim} (the plugin derives hidden_size / num_attention_heads)")
    if refused:
        raise CheckpointError(
            f"{config_path}: the x-omni backbone plugin cannot express " + "; ".join(refused)
        )
    return fields


def _tokenizer_fields(
    encoder: dict[str, Any],
    transform: dict[str, Any],
    where: str,
    vit_shapes: Mapping[str, SigLIPViTShape],
) -> dict[str, Any]:
    name = encoder.get("siglip_name")
    if not isinstance(name, str) or name not in vit_shapes:
        close = difflib.get_close_matches(str(name), list(vit_shapes), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise CheckpointError(
            f"{where}.encoder.siglip_name: unknown SigLIP ViT {name!r}.{hint} "
            f"Supported: {', '.join(sorted(vit_shapes))}."
        )
    vit = vit_shapes[name]
    if encoder.get("with_norm", True) is not True:
        raise CheckpointError(
            f"{where}.encoder.with_norm: {encoder['with_norm']!r}; the siglip-vq tokenizer always picks "
            "the nearest code between L2-normalised vectors, so only true can be converted"
        )
    if transform.get("random_ratio") is not None:
        raise CheckpointError(
            f"{where}.transform.random_ratio: {transform['random_ratio']!r}; a random aspect-ratio "
            "jitter cannot be expressed by the siglip-vq tokenizer, only null"
        )
    patch = transform.get("patch_size", vit.patch_size_px)
    if patch != vit.patch_size_px:
        raise CheckpointError(
            f"{where}.transform.patch_size: {patch} differs from the {vit.patch_size_px} px patch "
            f"of ViT '{name}'"
        )
    fields: dict[str, Any] = {
        "vit_width": vit.width,
        "vit_depth": vit.depth,
        "vit_heads": vit.heads,
        "vit_mlp_ratio": vit.mlp_ratio,
        "patch_size_px": vit.patch_size_px,
        "z_channels": encoder.get("z_channels", 1536),
        "codebook_size": encoder.get("codebook_size", 16384),
        "codebook_dim": encoder.get("codebook_dim", 2048),
        "num_post_conv_blocks": PROJECTOR_POST_CONV_BLOCKS,
        "decoder_norm_groups": PROJECTOR_NORM_GROUPS,
    }
    for key, field in _TRANSFORM_FIELDS.items():
        if transform.get(key) is not None:
            fields[field] = transform[key]
    return fields


def _decoder_settings(decoder: dict[str, Any], src: Path, where: str) -> DecoderSettings:
    missing = [key for key in _DECODER_KEYS if key not in decoder]
    if missing:
        raise CheckpointError(f"{where}: missing {', '.join(missing)}")
    if decoder["cfg_scale"] != decoder["cfg_scale_2"]:
        raise CheckpointError(
            f"{where}: cfg_scale={decoder['cfg_scale']} and cfg_scale_2={decoder['cfg_scale_2']} differ; "
            "the flux-semantic decoder applies one true-CFG scale to the prompt and the semantic "
            "latents together (guidance_scale), so it cannot reproduce two scales"
        )
    transformer_dir = src / str(decoder["model_path"])
    if not (transformer_dir / "config.json").is_file():
        state = "is missing" if not transformer_dir.is_dir() else "has no config.json"
        raise CheckpointError(f"{where}.model_path: the decoder transformer folder {transformer_dir} {state}")
    return DecoderSettings(
        transformer_dir=transformer_dir,
        upscale_factor=decoder["upscale_factor"],
        num_inference_steps=decoder["num_inference_steps"],
        guidance_scale=decoder["cfg_scale"],
    )


def _backbone_weight_files(src: Path) -> tuple[tuple[Path, ...], dict[str, str] | None]:
    single = src / "model.safetensors"
    index_path = src / "model.safetensors.index.json"
    if index_path.is_file():
        index = _read_json(index_path, "the backbone weight index")
        weight_map = index.get("weight_map")
        if not isinstance(weight_map, dict) or not weight_map:
            raise CheckpointError(f"{index_path}: weight_map is missing or empty")
        shards = tuple(src / name for name in sorted(set(weight_map.values())))
        missing = [shard.name for shard in shards if not shard.is_file()]
        if missing:
            raise CheckpointError(
                f"{index_path} names backbone weight shards that are missing in {src}: {', '.join(missing)}"
            )
        return shards, {str(name): str(shard) for name, shard in weight_map.items()}
    if single.is_file():
        return (single,), None
    raise CheckpointError(
        f"{src}: no backbone weights; expected model.safetensors or model.safetensors.index.json "
        "with its shards"
    )


def _require_tokenizer_files(src: Path) -> None:
    if not any((src / name).is_file() for name in ("tokenizer.json", "tokenizer_config.json")):
        raise CheckpointError(
            f"{src}: the text tokenizer is missing; expected tokenizer.json or tokenizer_config.json"
        )


def _named_file(src: Path, section: dict[str, Any], key: str, where: str, what: str) -> Path:
    if not section.get(key):
        raise CheckpointError(f"{where}.{key}: missing; it names {what}")
    path = src / str(section[key])
    if not path.is_file():
        raise CheckpointError(f"{where}.{key}: {what} {path} is missing")
    return path


def _section(
    vision: dict[str, Any], name: str, where: str, *, known: tuple[str, ...] | None
) -> dict[str, Any]:
    section = vision.get(name)
    if not isinstance(section, dict):
        raise CheckpointError(f"{where}.{name} is missing or not a mapping")
    if known is not None:
        # The official code passes these sections as keyword arguments: unknown keys would fail there.
        unknown = sorted(set(section) - set(known))
        if unknown:
            raise CheckpointError(
                f"{where}.{name}: unknown keys {', '.join(unknown)}; known keys: {', '.join(known)}"
            )
    return section


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{what} {path} is missing")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CheckpointError(f"{what} {path} is not valid JSON: {exc}") from exc
    if not isinstance(data, dict):
        raise CheckpointError(f"{what} {path} must hold a JSON object")
    return data


def _validate(
    registry: PluginRegistry, kind: ComponentKind, plugin: str, fields: dict[str, Any], where: str
) -> Any:
    try:
        return registry.get(kind, plugin).params(**fields)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in error['loc']) or 'params'}: {error['msg']}"
            for error in exc.errors(include_url=False)
        )
        raise CheckpointError(f"{where}: not valid for the {kind} plugin '{plugin}': {problems}") from exc


# ------------------------------------------------------------------------ destination and FLUX


def _check_destination(src: Path, dst: Path, force: bool) -> None:
    if not src.is_dir():
        raise CheckpointError(f"source folder {src} does not exist")
    if dst.resolve() == src.resolve() or dst.resolve() in src.resolve().parents:
        raise XomniError(f"destination {dst} would replace the source {src}; choose another folder")
    if dst.exists() and not force:
        raise XomniError(f"destination {dst} already exists; pass --force to replace it")


def _text_free(options: ConvertOptions) -> bool:
    return bool(options.extra.get("text_free", False))


def _flux_folder(options: ConvertOptions) -> Path:
    if options.extra.get("flux_dir") is None:
        raise XomniError(
            "--flux PATH is required: the X-Omni decoder takes its VAE and scheduler (and, unless "
            "text-free, its CLIP and T5 text encoders) from a local FLUX.1-dev folder"
        )
    return Path(options.extra["flux_dir"])


def _check_flux_folder(flux_dir: Path, *, text_free: bool) -> None:
    """Fail before any weights load when a FLUX subfolder the decoder needs is absent."""
    if not flux_dir.is_dir():
        raise CheckpointError(f"--flux: FLUX.1-dev folder {flux_dir} does not exist")
    needed = ["vae", "scheduler"]
    if not text_free:
        needed += ["text_encoder", "tokenizer", "text_encoder_2", "tokenizer_2"]
    missing = [name for name in needed if not (flux_dir / name).is_dir()]
    if missing:
        raise CheckpointError(f"--flux: FLUX.1-dev folder {flux_dir} lacks {', '.join(missing)}/")


# ------------------------------------------------------------------------ components


def convert_tokenizer(
    release: Release, registry: PluginRegistry, out: Path, options: ConvertOptions
) -> list[str]:
    """Map the ViT and projector state dicts onto the siglip-vq tokenizer; write ``out/tokenizer``."""
    component, blocks = _reference_plugin(registry, "tokenizer", TOKENIZER_PLUGIN, ("SigLIPVQModel",))
    vit = load_state_dict_file(release.vit_path, "SigLIP ViT state dict")
    projector = load_state_dict_file(release.projector_path, "VQ projector state dict")
    dropped = [name for name in vit if name.startswith(UNUSED_VIT_PREFIXES)]
    vit = {name: tensor for name, tensor in vit.items() if not name.startswith(UNUSED_VIT_PREFIXES)}

    fields = dict(release.tokenizer_fields)
    side = _pos_grid_side(vit, release.vit_path)
    if side is not None:
        fields["pos_grid_size"] = side
    params = _validate(registry, "tokenizer", TOKENIZER_PLUGIN, fields, str(release.vit_path))
    with torch.device("meta"):
        model = blocks["SigLIPVQModel"](params)
    expected = model.state_dict()
    for prefix, found, path, what in (
        ("vit.", vit, release.vit_path, "SigLIP ViT"),
        ("vqproj.", projector, release.projector_path, "VQ projector"),
    ):
        part = {name[len(prefix) :]: t for name, t in expected.items() if name.startswith(prefix)}
        check_state_dict(part, found, source=str(path), owner=f"{_OWNER}, {what}")
    state = {f"vit.{name}": t for name, t in vit.items()}
    state.update({f"vqproj.{name}": t for name, t in projector.items()})
    model.load_state_dict(_cast(state, options.dtype), strict=True, assign=True)
    component(params, model).save_pretrained(out / "tokenizer")
    grid = params.pos_grid_size
    notes = [f"tokenizer: ViT '{release.vit_path.name}' with a {grid} x {grid} position grid"]
    if dropped:
        notes.append(
            f"tokenizer: dropped {len(dropped)} ViT tensors the tokenizer never uses (norm.*, attn_pool.*)"
        )
    return notes


def convert_backbone(
    release: Release, registry: PluginRegistry, out: Path, options: ConvertOptions
) -> list[str]:
    """Load the (sharded) safetensors and the text tokenizer; write ``out/backbone``."""
    component, blocks = _reference_plugin(registry, "backbone", BACKBONE_PLUGIN, ("XOmniForCausalLM",))
    params = _validate(registry, "backbone", BACKBONE_PLUGIN, release.backbone_fields, str(release.src))
    tensors = _read_backbone_weights(release)
    with torch.device("meta"):
        net = blocks["XOmniForCausalLM"](params)
    source = (
        str(release.backbone_weights[0])
        if release.weight_map is None
        else f"the {len(release.backbone_weights)} shards of {release.src / 'model.safetensors.index.json'}"
    )
    check_state_dict(net.state_dict(), tensors, source=source, owner=f"{_OWNER}, backbone")
    net.load_state_dict(_cast(tensors, options.dtype), strict=True, assign=True)
    net.model.reset_rotary()
    image_tokens = [params.image_token(k) for k in range(params.image_vocab_size)]
    text_tokenizer = _load_text_tokenizer(release.src, image_tokens)
    component(params, net, text_tokenizer).save_pretrained(out / "backbone")
    return [f"backbone: {len(tensors)} tensors from {len(release.backbone_weights)} file(s)"]


def convert_decoder(
    release: Release, registry: PluginRegistry, out: Path, flux_dir: Path, options: ConvertOptions
) -> list[str]:
    """Check the decoder transformer's tensors, load it with FLUX.1-dev; write ``out/decoder``."""
    component, blocks = _reference_plugin(registry, "decoder", DECODER_PLUGIN, ("SemanticFluxTransformer",))
    settings = release.decoder
    semantic_channels = int(release.tokenizer_fields["z_channels"])
    stored = _check_decoder_transformer(
        settings.transformer_dir, blocks["SemanticFluxTransformer"], semantic_channels
    )
    # diffusers loads in float32 unless told otherwise; keep the transformer's stored dtype.
    dtype = options.dtype or stored
    decoder = component.from_flux_folders(
        settings.transformer_dir,
        flux_dir,
        text_conditioning=not _text_free(options),
        num_inference_steps=settings.num_inference_steps,
        guidance_scale=settings.guidance_scale,
        embedded_guidance=OFFICIAL_EMBEDDED_GUIDANCE,
        dtype=dtype,
    )
    if decoder.params.pixels_per_token != settings.upscale_factor:
        raise CheckpointError(
            f"vision_config.decoder.upscale_factor is {settings.upscale_factor}, but the decoder built "
            f"from {flux_dir} renders {decoder.params.pixels_per_token} px per token"
        )
    decoder.save_pretrained(out / "decoder")
    variant = "text-free" if _text_free(options) else "prompt-conditioned"
    return [f"decoder: {variant}, {dtype or 'float32'} weights"]


def write_pipeline_config(release: Release, out: Path) -> None:
    """``pipeline.yaml``: the three plugins with relative weights and the official defaults."""
    from xomni_core.config import load_config

    document: dict[str, Any] = {
        "version": 1,
        "tokenizer": {"plugin": TOKENIZER_PLUGIN, "weights": "tokenizer"},
        "backbone": {"plugin": BACKBONE_PLUGIN, "weights": "backbone"},
        "decoder": {"plugin": DECODER_PLUGIN, "weights": "decoder"},
        "runtime": {"dtype": release.vision_dtype},
        "generation": {
            "height_px": DEFAULT_IMAGE_SIZE_PX,
            "width_px": DEFAULT_IMAGE_SIZE_PX,
            "sampling": dict(DEFAULT_SAMPLING),
            "num_inference_steps": release.decoder.num_inference_steps,
            "guidance_scale": release.decoder.guidance_scale,
        },
    }
    load_config(data=document)  # what we write must validate
    header = (
        f"# X-Omni release {release.src.resolve()} converted by xomni {__version__}.\n"
        "# Sampling and size: the official inference defaults; decoder steps and guidance:\n"
        "# vision_config.decoder; runtime.dtype: vision_config.dtype.\n"
    )
    (out / "pipeline.yaml").write_text(header + yaml.safe_dump(document, sort_keys=False))


# ------------------------------------------------------------------------ weights


def load_state_dict_file(path: Path, what: str) -> dict[str, torch.Tensor]:
    """A flat ``name -> tensor`` mapping from a PyTorch pickle file, never running pickled code."""
    loaded = load_tensors_only(path, what)
    if not isinstance(loaded, Mapping):
        raise CheckpointError(f"{what} {path} holds a {type(loaded).__name__}, expected a state dict")
    bad = [
        str(name)
        for name, value in loaded.items()
        if not (isinstance(name, str) and isinstance(value, torch.Tensor))
    ]
    if bad:
        raise CheckpointError(
            f"{what} {path} must map tensor names to tensors; not tensors: {', '.join(bad[:8])}"
        )
    return dict(loaded)


def _pos_grid_side(vit: Mapping[str, torch.Tensor], path: Path) -> int | None:
    """Side of the stored square position grid; ``None`` leaves a missing ``pos_embed`` to the name check."""
    pos = vit.get("pos_embed")
    if pos is None:
        return None
    side = math.isqrt(pos.shape[1]) if pos.dim() == 3 else 0
    if pos.dim() != 3 or pos.shape[0] != 1 or side * side != pos.shape[1]:
        raise CheckpointError(
            f"{_OWNER}, SigLIP ViT: pos_embed in {path} has shape {tuple(pos.shape)}, expected "
            "(1, side * side, width): a square grid of position embeddings"
        )
    return side


def _read_backbone_weights(release: Release) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    tensors: dict[str, torch.Tensor] = {}
    for path in release.backbone_weights:
        try:
            part = load_file(str(path))
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(
                f"backbone weights {path} are not a readable safetensors file: {exc}"
            ) from exc
        twice = sorted(set(part) & set(tensors))
        if twice:
            raise CheckpointError(
                f"backbone weights {path} repeat tensors of another shard: {', '.join(twice[:8])}"
            )
        tensors.update(part)
    if release.weight_map is not None:
        absent = sorted(name for name in release.weight_map if name not in tensors)
        if absent:
            raise CheckpointError(
                f"{release.src / 'model.safetensors.index.json'} lists tensors no shard holds: "
                + ", ".join(absent[:8])
                + (f" and {len(absent) - 8} more" if len(absent) > 8 else "")
            )
    return tensors


def _check_decoder_transformer(folder: Path, transformer_class: Any, semantic_channels: int) -> str | None:
    """Check tensor names and shapes from the safetensors headers; return the stored dtype name.

    The stored dtype is ``None`` when the tensors mix dtypes.
    """
    from safetensors import SafetensorError, safe_open

    config = _read_json(folder / "config.json", "the decoder transformer config")
    try:
        with torch.device("meta"):
            model = transformer_class.from_config(config, semantic_channels=semantic_channels)
    except (TypeError, ValueError) as exc:
        raise CheckpointError(
            f"decoder transformer config {folder / 'config.json'} is invalid: {exc}"
        ) from exc
    index = folder / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shard_map = _read_json(index, "the decoder transformer weight index").get("weight_map", {})
        files = [folder / name for name in sorted(set(shard_map.values()))]
    else:
        files = sorted(folder.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"decoder transformer folder {folder} holds no safetensors weights")
    found: dict[str, torch.Tensor] = {}
    dtypes: set[str] = set()
    for file in files:
        if not file.is_file():
            raise CheckpointError(f"decoder transformer weights {file} are missing")
        try:
            with safe_open(str(file), framework="pt") as weights:
                for name in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                    view = weights.get_slice(name)
                    found[name] = torch.empty(view.get_shape(), device="meta")
                    dtypes.add(view.get_dtype())
        except (SafetensorError, OSError) as exc:
            raise CheckpointError(f"decoder transformer weights {file} are not readable: {exc}") from exc
    check_state_dict(model.state_dict(), found, source=str(folder), owner=f"{_OWNER}, decoder transformer")
    names = {_SAFETENSORS_DTYPES.get(d) for d in dtypes}
    return names.pop() if len(names) == 1 else None


def _cast(tensors: dict[str, torch.Tensor], dtype: str | None) -> dict[str, torch.Tensor]:
    if dtype is None:
        return tensors
    target = torch_dtype(dtype)
    return {name: t.to(target) if t.is_floating_point() else t for name, t in tensors.items()}


def _load_text_tokenizer(src: Path, image_tokens: Collection[str]) -> Any:
    """The release's text tokenizer, with the image tokens special in ``tokenizer.json`` only:
    the same ids and behaviour, and a saved copy that loads in seconds instead of minutes."""
    from transformers import AutoTokenizer

    with tempfile.TemporaryDirectory(prefix="xomni-tokenizer-") as tmp:
        for name in TEXT_TOKENIZER_FILES:
            if (src / name).is_file():
                shutil.copy2(src / name, Path(tmp, name))
        try:
            unlist_special_tokens(tmp, image_tokens)
            return AutoTokenizer.from_pretrained(tmp, local_files_only=True, trust_remote_code=False)
        except (OSError, ValueError, KeyError) as exc:
            raise CheckpointError(f"cannot load the text tokenizer files of {src}: {exc}") from exc


@contextlib.contextmanager
def _library_progress_bars(enabled: bool) -> Iterator[None]:
    """Hide the loading and saving bars of transformers and diffusers unless progress is shown."""
    from diffusers.utils import logging as diffusers_logging
    from transformers.utils import logging as transformers_logging

    libraries = [] if enabled else [transformers_logging, diffusers_logging]
    libraries = [lib for lib in libraries if lib.is_progress_bar_enabled()]
    for lib in libraries:
        lib.disable_progress_bar()
    try:
        yield
    finally:
        for lib in libraries:
            lib.enable_progress_bar()


def _reference_plugin(
    registry: PluginRegistry, kind: ComponentKind, name: str, building_blocks: tuple[str, ...]
) -> tuple[Any, dict[str, Any]]:
    """The plugin's component class and named classes from its implementation module."""
    spec = registry.get(kind, name)
    component = spec.load()
    module = sys.modules[component.__module__]
    missing = [block for block in building_blocks if not hasattr(module, block)]
    if missing:
        raise PluginError(
            f"{kind} plugin '{name}' ({spec.implementation}) has no {', '.join(missing)}, which "
            f"`xomni convert x-omni` builds on; it needs the reference plugins shipped with xomni"
        )
    return component, {block: getattr(module, block) for block in building_blocks}
