"""Low-rank adapters on the backbone through ``peft``: adding, saving, loading, merging.

Adapters are injected into the backbone's trainable module in place
(``peft.inject_adapter_in_model``), so the backbone's own forward, generation and training
code run unchanged. An adapter folder holds ``adapter_config.json`` (peft's ``LoraConfig``,
its ``target_modules`` the exact module names adapted) and ``adapter_model.safetensors`` (the
``lora_A`` / ``lora_B`` weights, peft's key names): the base weights are not in it.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..atomic import atomic_directory
from ..errors import CheckpointError, ConfigError
from ..folders import check_state_dict, load_tensors, save_tensors
from .settings import LoraSettings

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
#: Layer kinds peft's LoRA adapts that a pattern may select.
_ADAPTABLE = (nn.Linear, nn.Embedding)


def module_aliases(backbone: Any) -> dict[str, str]:
    """The backbone plugin's alias prefixes of its module names (``{}`` if it gives none)."""
    aliases = getattr(backbone, "module_aliases", None)
    return dict(aliases()) if callable(aliases) else {}


def lora_targets(module: nn.Module, patterns: tuple[str, ...], aliases: Mapping[str, str]) -> list[str]:
    """Names of the linear and embedding layers of ``module`` that a pattern matches, by name or
    by alias (a name whose prefix ``aliases`` maps is also matched with the alias in its place)."""
    names = [name for name, child in module.named_modules() if isinstance(child, _ADAPTABLE)]
    matched: set[str] = set()
    for pattern in patterns:
        hits = {name for name in names if any(fnmatchcase(n, pattern) for n in _spellings(name, aliases))}
        if not hits:
            examples = ", ".join(names[:6] + sorted(set(aliases.values()))[:3])
            raise ConfigError(
                f"training.lora.target_modules: {pattern!r} matches no linear or embedding layer of "
                f"the backbone (names look like: {examples}, ...)"
            )
        matched |= hits
    return [name for name in names if name in matched]


def _spellings(name: str, aliases: Mapping[str, str]) -> list[str]:
    spellings = [name]
    for prefix, alias in aliases.items():
        if name == prefix or name.startswith(prefix + "."):
            spellings.append(alias + name[len(prefix) :])
    return spellings


def add_lora(
    module: nn.Module, settings: LoraSettings, *, aliases: Mapping[str, str], seed: int
) -> list[str]:
    """Inject trainable adapters into ``module`` in place and freeze everything else.

    The adapters' random starting weights come from ``seed`` alone: the global RNG is left as
    it was, so a run's later random draws do not depend on whether it uses LoRA.
    """
    targets = lora_targets(module, settings.target_modules, aliases)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        _inject(module, _peft_config(settings.r, settings.alpha, settings.dropout, targets))
    # The adapters are the master weights: float32 even on a half-precision base (peft casts
    # each adapter's input to its dtype and the output back).
    for name, parameter in module.named_parameters():
        if ".lora_" in name:
            parameter.data = parameter.data.float()
    return targets


def _peft_config(r: int, alpha: float, dropout: float, targets: list[str]) -> Any:
    from peft import LoraConfig

    # lora_alpha is typed int in peft but only ever divided by r: a float alpha is exact.
    return LoraConfig(
        r=r,
        lora_alpha=alpha,  # type: ignore[arg-type]
        lora_dropout=dropout,
        target_modules=targets,
        bias="none",
    )


def _inject(module: nn.Module, config: Any) -> None:
    from peft import inject_adapter_in_model

    device = next(module.parameters()).device
    inject_adapter_in_model(config, module)
    module.to(device)  # new adapter weights start on the CPU
    module.train(module.training)  # new layers start in training mode; a backbone runs in eval


def _tuner_layers(module: nn.Module) -> list[Any]:
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [child for child in module.modules() if isinstance(child, BaseTunerLayer)]


def has_lora(module: nn.Module) -> bool:
    return bool(_tuner_layers(module))


def adapter_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The adapter weights of ``module`` under peft's saved names (``...lora_A.weight``)."""
    from peft.utils import get_peft_model_state_dict

    state: dict[str, torch.Tensor] = get_peft_model_state_dict(module)
    return {name: tensor.detach().contiguous() for name, tensor in state.items()}


def save_adapter(folder: str | os.PathLike[str], module: nn.Module) -> None:
    """Write ``module``'s adapter (config and weights, no base weights) to ``folder`` atomically."""
    config = getattr(module, "peft_config", {}).get("default")
    if config is None:
        raise CheckpointError("the backbone carries no LoRA adapter to save")
    from peft.tuners.tuners_utils import BaseTunerLayer

    data = config.to_dict()
    # peft may shorten the list to name suffixes; the file names each adapted layer in full.
    data["target_modules"] = [n for n, m in module.named_modules() if isinstance(m, BaseTunerLayer)]
    data["peft_type"] = getattr(data["peft_type"], "value", data["peft_type"])
    with atomic_directory(folder) as out:
        (out / ADAPTER_CONFIG).write_text(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")
        save_tensors(adapter_state(module), out / ADAPTER_WEIGHTS)


def read_adapter_config(folder: str | os.PathLike[str]) -> dict[str, Any]:
    path = Path(folder, ADAPTER_CONFIG)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is not a readable LoRA adapter config: {exc}") from exc
    if not isinstance(data, dict) or data.get("peft_type") != "LORA" or not data.get("target_modules"):
        raise CheckpointError(f"{path} is not a LoRA adapter config (peft_type LORA with target_modules)")
    return data


def load_adapter(module: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Add the adapter saved in ``folder`` to ``module`` (which has none yet) with its weights."""
    data = read_adapter_config(folder)
    targets = list(data["target_modules"])
    present = {name for name, _ in module.named_modules()}
    missing = [name for name in targets if name not in present]
    if missing:
        raise CheckpointError(
            f"the adapter in {folder} adapts layers this backbone lacks (e.g. {missing[0]}): it was "
            "trained on another architecture"
        )
    config = _peft_config(int(data["r"]), float(data["lora_alpha"]), float(data["lora_dropout"]), targets)
    _inject(module, config)
    load_adapter_weights(module, folder)


def load_adapter_weights(module: nn.Module, folder: str | os.PathLike[str]) -> None:
    """Overwrite the adapter weights of ``module`` with those saved in ``folder``, bit for bit."""
    from peft.utils import set_peft_model_state_dict

    path = Path(folder, ADAPTER_WEIGHTS)
    tensors = load_tensors(path)
    check_state_dict(adapter_state(module), tensors, source=str(path), owner="LoRA adapter")
    set_peft_model_state_dict(module, tensors)


@contextmanager
def adapters_disabled(module: nn.Module) -> Iterator[None]:
    """Run ``module`` as its base weights alone: GRPO's frozen reference, at no memory cost."""
    layers = _tuner_layers(module)
    for layer in layers:
        layer.enable_adapters(False)
    try:
        yield
    finally:
        for layer in layers:
            layer.enable_adapters(True)


@contextmanager
def adapter_dropout(module: nn.Module) -> Iterator[None]:
    """Switch the adapters' dropout on (the backbone itself stays in eval mode)."""
    dropouts = [
        child
        for layer in _tuner_layers(module)
        for child in getattr(layer, "lora_dropout", {}).values()
        if isinstance(child, nn.Dropout)
    ]
    for dropout in dropouts:
        dropout.train()
    try:
        yield
    finally:
        for dropout in dropouts:
            dropout.eval()


def merge_lora(module: nn.Module) -> None:
    """Fold every adapter into its base layer and put the plain layer back, in place."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    for name, child in list(module.named_modules()):
        if isinstance(child, BaseTunerLayer):
            child.merge()
            parent_name, _, attribute = name.rpartition(".")
            parent = module.get_submodule(parent_name) if parent_name else module
            setattr(parent, attribute, child.get_base_layer())
    if hasattr(module, "peft_config"):
        del module.peft_config
