"""How much memory a training run needs per device, estimated before any weight exists.

The backbone's network is built on the ``meta`` device (shapes, no storage), so the estimate
for the 7.7 B-parameter X-Omni backbone takes a second and no memory. It adds up, per device:

- weights: every parameter at ``runtime.dtype`` (float32 master weights under mixed precision);
- gradients and AdamW state (two moments): the trainable parameters only, float32;
- autocast copies: under bf16/fp16 autocast keeps a half-precision copy of each trainable weight;
- activations of one micro-batch: what each decoder layer stores for its backward pass (with
  gradient checkpointing: each layer's input, plus one layer recomputed at a time) and the logits.

With FSDP over N processes (``training.distributed.strategy: fsdp``, or ``fsdp=True``), weights,
gradients, optimiser state and the autocast copies are divided by N; activations are not. With
``reshard_after_forward: false`` the gathered weights stay from each layer's forward pass to its
backward pass, so a device holds them whole; with ``cpu_offload`` the sharded weights, gradients
and optimiser state live in CPU memory instead. Under DDP every process holds all of them.
The per-layer activation count assumes the SDPA memory-efficient attention kernel (no
sequence-squared score matrix) and the Qwen2 decoder layer: ``8 h + 3 kv + 4 i`` values a token
(``h`` hidden, ``kv`` key/value width, ``i`` MLP width). It is an estimate: allocator
fragmentation, temporary buffers and the framework's own footprint come on top.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from ..config import PipelineConfig
from ..errors import ConfigError
from ..pipelines.build import prepare
from ..registry import PluginRegistry
from ..resources import DTYPE_BYTES, allow_large_from_env
from ..types import GridSize
from .settings import TrainingSettings

GIB = 1024**3
#: Tokens assumed for a caption plus the image prefix when the data is not read.
PROMPT_TOKENS = 64


class NoEstimate(ConfigError):
    """The backbone plugin cannot lay out its network on the meta device."""


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a training run needs on each device, by kind."""

    parameters: int
    trainable: int
    world_size: int
    fsdp: bool
    weights: int
    gradients: int
    optimizer: int
    autocast_copies: int
    activations: int
    micro_batch: int
    sequence_length: int
    label: str

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.optimizer + self.autocast_copies + self.activations

    def table(self) -> str:
        sharding = f"FSDP over {self.world_size}" if self.fsdp else f"DDP, {self.world_size} process(es)"
        rows = [
            ("weights", self.weights),
            ("gradients", self.gradients),
            ("optimiser (AdamW)", self.optimizer),
            ("autocast weight copies", self.autocast_copies),
            (f"activations ({self.micro_batch} x {self.sequence_length} tokens)", self.activations),
            ("total per device", self.total),
        ]
        lines = [
            f"memory estimate: {self.label}; {self.parameters / 1e9:.3f} B parameters, "
            f"{self.trainable / 1e6:.3f} M trainable; {sharding}",
        ]
        lines += [f"  {name:<44} {value / GIB:>10.2f} GiB" for name, value in rows]
        return "\n".join(lines)


def estimate_training_memory(
    config: PipelineConfig,
    *,
    section: str,
    world_size: int = 1,
    fsdp: bool = False,
    registry: PluginRegistry | None = None,
) -> MemoryEstimate:
    """The per-device memory of ``xomni train SECTION`` on ``config``, on the meta device; sharded
    as FSDP does when ``fsdp`` or the config's ``training.distributed.strategy`` says so."""
    training = config.training or TrainingSettings()
    distributed = training.distributed
    fsdp = fsdp or distributed.strategy == "fsdp"
    settings = getattr(training, section, None)
    if settings is None:
        raise ConfigError(f"the pipeline config has no training.{section} section to estimate")
    if config.backbone is None:
        raise ConfigError("the pipeline config has no backbone section, whose training is estimated")
    backbone = config.backbone
    weights = config.weights_path(backbone)
    if weights is not None and not weights.is_dir():
        backbone = backbone.model_copy(update={"weights": None})  # the params' sizes then
    # Only the backbone trains: the other slots need neither weights nor validation here.
    config = config.model_copy(
        update={"backbone": backbone, "tokenizer": None, "decoder": None, "rewards": ()}
    )
    resolved, registry = prepare(config, registry=registry, slots=(), allow_large=True)
    component = resolved.component("backbone")
    cls = component.spec.load("torch")
    meta_module = getattr(cls, "meta_module", None)
    if meta_module is None:
        raise NoEstimate(
            f"backbone plugin '{component.spec.name}' cannot build its network on the meta device "
            "(no meta_module classmethod), so its training memory cannot be estimated"
        )
    from ..config import slot_params

    params = slot_params(component)
    with torch.device("meta"):
        module: nn.Module = meta_module(params)
    parameters = sum(p.numel() for p in module.parameters())
    lora = training.lora
    if lora is None:
        trainable = parameters
    else:
        from .lora import lora_targets

        aliases = dict(cls.module_aliases_for(params)) if hasattr(cls, "module_aliases_for") else {}
        targets = lora_targets(module, lora.target_modules, aliases)
        trainable = sum(_lora_size(module.get_submodule(name), lora.r) for name in targets)

    weight_bytes = DTYPE_BYTES.get(config.runtime.dtype, 4)
    mixed = training.mixed_precision != "no"
    activation_bytes = 2 if mixed else weight_bytes
    shards = world_size if fsdp else 1
    # Unsharded between forward and backward, the weights are whole on the device at the peak.
    weight_shards = shards if distributed.reshard_after_forward else 1
    on_device = 0 if fsdp and distributed.cpu_offload else 1
    stored_weights = parameters * weight_bytes + (trainable * 4 if lora is not None else 0)
    micro, length, kept = _micro_batch(config, section, settings, training, params)
    activations = _activations(params, micro, length, kept, activation_bytes, training.gradient_checkpointing)
    trainable_bytes = 4 if (mixed or lora is not None) else weight_bytes
    kind = f"LoRA r={lora.r}" if lora is not None else "full"
    precision = training.mixed_precision if mixed else config.runtime.dtype
    return MemoryEstimate(
        parameters=parameters,
        trainable=trainable,
        world_size=world_size,
        fsdp=fsdp,
        weights=on_device * stored_weights // weight_shards,
        gradients=on_device * trainable * trainable_bytes // shards,
        optimizer=on_device * 2 * trainable * trainable_bytes // shards,
        autocast_copies=(trainable * 2 if mixed and lora is None else 0) // shards,
        activations=activations,
        micro_batch=micro,
        sequence_length=length,
        label=f"train {section}, {kind}, {precision}"
        + (", gradient checkpointing" if training.gradient_checkpointing else "")
        + (", weights kept whole between passes" if fsdp and not distributed.reshard_after_forward else "")
        + (", sharded state offloaded to the CPU" if fsdp and distributed.cpu_offload else ""),
    )


def _lora_size(layer: nn.Module, r: int) -> int:
    if isinstance(layer, nn.Linear):
        return r * (layer.in_features + layer.out_features)
    if isinstance(layer, nn.Embedding):
        return r * (layer.num_embeddings + layer.embedding_dim)
    return 0


def _micro_batch(
    config: PipelineConfig, section: str, settings: Any, training: TrainingSettings, params: Any
) -> tuple[int, int, int]:
    """Sequences per forward pass, their length and the positions whose logits are kept."""
    pixels = getattr(params, "pixels_per_token", 16)
    height = settings.height_px or config.generation.height_px
    width = settings.width_px or config.generation.width_px
    if section == "grpo" and settings.grid_h is not None:
        grid = GridSize(settings.grid_h, settings.grid_w)
    else:
        grid = GridSize.from_pixels(height, width, pixels)
    tokens = grid.num_tokens
    if section == "sft":
        micro = settings.batch_size
    else:
        samples = settings.prompts_per_step * settings.group_size
        micro = settings.micro_batch_size or samples
        if settings.sampling.cfg_scale > 1.0:
            micro *= 2
    return micro, PROMPT_TOKENS + tokens, tokens + 1


def _activations(params: Any, micro: int, length: int, kept: int, nbytes: int, checkpointing: bool) -> int:
    hidden = params.hidden_size
    kv = params.num_key_value_heads * (hidden // params.num_attention_heads)
    per_layer = 8 * hidden + 3 * kv + 4 * params.intermediate_size
    layers = params.num_hidden_layers
    stored = layers * hidden + per_layer if checkpointing else layers * per_layer
    tokens = micro * length
    body = tokens * (stored + 3 * hidden) * nbytes  # + embeddings and the final norms
    total_vocab = params.vocab_size + params.mm_vocab_size
    # The logits over the whole id space (compute dtype, then float32) and the image slice's
    # log-softmax and its gradient (float32).
    logits = micro * kept * (total_vocab * (nbytes + 4) + params.image_vocab_size * 8)
    return int(body + logits)


def device_memory(device: str) -> int | None:
    """Bytes of memory of ``device`` (the machine's RAM for the CPU), if known."""
    kind = torch.device(device).type
    if kind == "cuda" and torch.cuda.is_available():
        index = torch.device(device).index or 0
        return int(torch.cuda.get_device_properties(index).total_memory)
    if kind == "cpu":
        try:
            return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
        except (ValueError, OSError, AttributeError):
            return None
    return None


def check_training_memory(estimate: MemoryEstimate, device: str, *, allow_large: bool | None = None) -> None:
    """Refuse a run whose estimate exceeds the device's memory (``XOMNI_ALLOW_LARGE=1`` skips)."""
    if allow_large is None:
        allow_large = allow_large_from_env()
    available = device_memory(device)
    if allow_large or available is None or estimate.total <= available:
        return
    raise ConfigError(
        f"training needs about {estimate.total / GIB:.1f} GiB per device by the estimate below, more than "
        f"the {available / GIB:.1f} GiB of {device}; train LoRA adapters (training.lora), turn on "
        "training.gradient_checkpointing and training.mixed_precision, lower the micro-batch, or shard "
        "over more GPUs (set XOMNI_ALLOW_LARGE=1 to try anyway)\n" + estimate.table()
    )


def announce_and_check(
    config: PipelineConfig, *, section: str, world_size: int, device: str, show: bool
) -> None:
    """Print the run's estimate (when ``show``) and refuse a run that would not fit ``device``.

    Backbones that cannot lay out their network on the meta device are not estimated.
    """
    try:
        estimate = estimate_training_memory(config, section=section, world_size=world_size)
    except NoEstimate:
        return
    if show:
        print(estimate.table(), file=sys.stderr)
    check_training_memory(estimate, device)
