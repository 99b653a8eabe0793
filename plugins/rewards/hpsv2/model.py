"""HPS v2 on transformers' ``CLIPModel``, and the converter from OpenCLIP state dicts.

HPS v2 (and v2.1) is a fine-tune of OpenCLIP ViT-H-14 whose released checkpoints hold an
OpenCLIP ``CLIP`` state dict (under ``"state_dict"``). The architectures are the same; only names
and layouts differ:

* each block's fused ``attn.in_proj_weight`` / ``in_proj_bias`` (rows: query, key, value) are
  transformers' separate ``q_proj``, ``k_proj`` and ``v_proj``;
* the projections ``visual.proj`` and ``text_projection`` are ``(width, embed)`` matrices applied
  as ``x @ proj``; transformers stores them as ``Linear`` weights ``(embed, width)``;
* everything else is a rename (``visual.conv1`` -> ``vision_model.embeddings.patch_embedding`` ...).

A converted model is saved and loaded like the CLIP score reward's folders.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar

import torch
from transformers import AutoTokenizer, CLIPModel

from xomni_core import CheckpointError, check_state_dict
from xomni_plugins.rewards.clip_score.model import ClipScoreReward, clip_config, clip_image_processor

from .params import HPSv2Params

if TYPE_CHECKING:
    from typing_extensions import Self

PLUGIN_NAME = "hpsv2"

#: OpenCLIP-only tensors that carry no weights (the text tower's constant causal mask).
IGNORED_OPEN_CLIP_KEYS = frozenset({"attn_mask"})

_TOWERS = (
    ("visual.transformer.resblocks.", "vision_model.encoder.layers."),
    ("transformer.resblocks.", "text_model.encoder.layers."),
)
_BLOCK_NAMES = {
    "attn.out_proj.weight": "self_attn.out_proj.weight",
    "attn.out_proj.bias": "self_attn.out_proj.bias",
    "ln_1.weight": "layer_norm1.weight",
    "ln_1.bias": "layer_norm1.bias",
    "mlp.c_fc.weight": "mlp.fc1.weight",
    "mlp.c_fc.bias": "mlp.fc1.bias",
    "mlp.c_proj.weight": "mlp.fc2.weight",
    "mlp.c_proj.bias": "mlp.fc2.bias",
    "ln_2.weight": "layer_norm2.weight",
    "ln_2.bias": "layer_norm2.bias",
}
_FUSED_QKV = {"attn.in_proj_weight": "weight", "attn.in_proj_bias": "bias"}
_SINGLE_NAMES = {
    "visual.conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "visual.class_embedding": "vision_model.embeddings.class_embedding",
    "visual.positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "visual.ln_pre.weight": "vision_model.pre_layrnorm.weight",
    "visual.ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "visual.ln_post.weight": "vision_model.post_layernorm.weight",
    "visual.ln_post.bias": "vision_model.post_layernorm.bias",
    "token_embedding.weight": "text_model.embeddings.token_embedding.weight",
    "positional_embedding": "text_model.embeddings.position_embedding.weight",
    "ln_final.weight": "text_model.final_layer_norm.weight",
    "ln_final.bias": "text_model.final_layer_norm.bias",
    "logit_scale": "logit_scale",
}
_TRANSPOSED_NAMES = {"visual.proj": "visual_projection.weight", "text_projection": "text_projection.weight"}
_BLOCK_KEY = re.compile(r"(?P<index>\d+)\.(?P<rest>.+)")


def load_open_clip_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """An OpenCLIP state dict from a ``.safetensors`` file or a PyTorch ``.pt`` / ``.bin`` file.

    PyTorch files are read with ``weights_only=True`` (tensors and containers, no code); a
    ``"state_dict"`` wrapper and a ``module.`` prefix (from distributed training) are removed.
    """
    file = Path(path)
    if not file.is_file():
        raise CheckpointError(f"OpenCLIP checkpoint {file} does not exist")
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(file))
        else:
            raw = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read OpenCLIP checkpoint {file}: {type(exc).__name__}: {exc}") from exc
    if isinstance(raw, Mapping) and isinstance(raw.get("state_dict"), Mapping):
        raw = raw["state_dict"]
    if not isinstance(raw, Mapping) or not all(isinstance(v, torch.Tensor) for v in raw.values()):
        raise CheckpointError(f"{file} does not hold a state dict of tensors")
    state = {str(k): v for k, v in raw.items()}
    if state and all(k.startswith("module.") for k in state):
        state = {k.removeprefix("module."): v for k, v in state.items()}
    return {k: v for k, v in state.items() if k not in IGNORED_OPEN_CLIP_KEYS}


def open_clip_to_transformers(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Rename and reshape an OpenCLIP ``CLIP`` state dict into ``CLIPModel`` names."""
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if key in IGNORED_OPEN_CLIP_KEYS:
            continue
        if key in _SINGLE_NAMES:
            out[_SINGLE_NAMES[key]] = tensor
            continue
        if key in _TRANSPOSED_NAMES:
            out[_TRANSPOSED_NAMES[key]] = tensor.t().contiguous()
            continue
        for source, target in _TOWERS:
            block = _BLOCK_KEY.fullmatch(key[len(source) :]) if key.startswith(source) else None
            if block is None:
                continue
            prefix, rest = f"{target}{block['index']}.", block["rest"]
            if rest in _FUSED_QKV:
                for part, chunk in zip(("q", "k", "v"), tensor.chunk(3, dim=0), strict=True):
                    out[f"{prefix}self_attn.{part}_proj.{_FUSED_QKV[rest]}"] = chunk.contiguous()
            elif rest in _BLOCK_NAMES:
                out[prefix + _BLOCK_NAMES[rest]] = tensor
            else:
                unknown.append(key)
            break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"unknown OpenCLIP tensors: {', '.join(sorted(unknown))}")
    return out


def transformers_to_open_clip(state: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The inverse of :func:`open_clip_to_transformers`: ``CLIPModel`` names to OpenCLIP names."""
    singles = {v: k for k, v in _SINGLE_NAMES.items()}
    transposed = {v: k for k, v in _TRANSPOSED_NAMES.items()}
    block_names = {v: k for k, v in _BLOCK_NAMES.items()}
    fused = {v: k for k, v in _FUSED_QKV.items()}
    out: dict[str, torch.Tensor] = {}
    unknown = []
    for key, tensor in state.items():
        if key.endswith("position_ids"):
            continue
        if key in singles:
            out[singles[key]] = tensor
            continue
        if key in transposed:
            out[transposed[key]] = tensor.t().contiguous()
            continue
        for source, target in _TOWERS:
            block = _BLOCK_KEY.fullmatch(key[len(target) :]) if key.startswith(target) else None
            if block is None:
                continue
            prefix, rest = f"{source}{block['index']}.", block["rest"]
            qkv = re.fullmatch(r"self_attn\.([qkv])_proj\.(weight|bias)", rest)
            if qkv is not None:
                if qkv[1] == "q":
                    parts = [state[f"{target}{block['index']}.self_attn.{p}_proj.{qkv[2]}"] for p in "qkv"]
                    out[prefix + fused[qkv[2]]] = torch.cat(parts, dim=0)
            elif rest in block_names:
                out[prefix + block_names[rest]] = tensor
            else:
                unknown.append(key)
            break
        else:
            unknown.append(key)
    if unknown:
        raise CheckpointError(f"CLIPModel tensors without an OpenCLIP name: {', '.join(sorted(unknown))}")
    return out


class HPSv2Reward(ClipScoreReward):
    """HPS v2 score: cosine similarity of the HPS v2 image and prompt embeddings (times ``scale``).

    Load a folder written by :meth:`save_pretrained`; make one from a released OpenCLIP
    checkpoint (``HPS_v2_compressed.pt``, ``HPS_v2.1_compressed.pt``) with :meth:`from_open_clip`.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = HPSv2Params

    @classmethod
    def from_open_clip(
        cls,
        checkpoint: str | os.PathLike[str],
        tokenizer: str | os.PathLike[str],
        params: HPSv2Params | None = None,
    ) -> Self:
        """Convert an OpenCLIP checkpoint of the network ``params.network`` (ViT-H-14 by default).

        ``tokenizer`` is a folder with CLIP's BPE tokenizer in transformers format (any OpenAI or
        LAION CLIP folder: OpenCLIP uses the same vocabulary). Every missing, unexpected or
        mis-shaped tensor is reported by its OpenCLIP name.
        """
        params = params or HPSv2Params()
        try:
            text_tokenizer = AutoTokenizer.from_pretrained(str(tokenizer), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(
                f"{cls._owner()}: cannot load the tokenizer from {tokenizer}: {exc}"
            ) from exc
        found = load_open_clip_state_dict(checkpoint)
        # Built on the CPU, not on the meta device: CLIP's position-id buffers are not in state
        # dicts and would stay unmaterialised.
        model = CLIPModel(clip_config(params.network, text_tokenizer))
        expected = transformers_to_open_clip(model.state_dict())
        check_state_dict(expected, found, source=str(checkpoint), owner=cls._owner())
        model.load_state_dict(open_clip_to_transformers(found), strict=True)
        image_processor = clip_image_processor(params.network.image_size_px)
        return cls(params, model, text_tokenizer, image_processor)
