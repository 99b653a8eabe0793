"""The component folder format: ``xomni_component.json`` plus safetensors weights.

``xomni_component.json`` records the kind, the plugin and its version, and the params; weights
are safetensors files. Loading checks tensor names and shapes and reports every mismatch by name.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from ._version import __version__
from .atomic import current_umask
from .errors import CheckpointError
from .params import ComponentParams

if TYPE_CHECKING:
    import torch

COMPONENT_FILE = "xomni_component.json"
FORMAT_VERSION = 1


def write_component_file(
    folder: str | os.PathLike[str], *, kind: str, plugin: str, params: ComponentParams
) -> None:
    """Write ``xomni_component.json`` into ``folder`` (normally a temporary folder)."""
    record = {
        "format": FORMAT_VERSION,
        "kind": kind,
        "plugin": plugin,
        "xomni_version": __version__,
        "params": params.model_dump(mode="json"),
    }
    Path(folder, COMPONENT_FILE).write_text(json.dumps(record, indent=2) + "\n")


def read_component_file(
    folder: str | os.PathLike[str], *, kind: str, plugin: str, params_class: type[ComponentParams]
) -> ComponentParams:
    """Read and validate the params recorded in ``folder`` for the given kind and plugin."""
    path = Path(folder, COMPONENT_FILE)
    if not Path(folder).is_dir():
        raise CheckpointError(f"{kind} plugin '{plugin}': model folder {folder} does not exist")
    if not path.is_file():
        raise CheckpointError(
            f"{kind} plugin '{plugin}': {path} is missing; the folder was not written by "
            "save_pretrained (convert official checkpoints with `xomni convert`)"
        )
    try:
        record = json.loads(path.read_text())
    except json.JSONDecodeError as exc:
        raise CheckpointError(f"{path} is not valid JSON: {exc}") from exc
    if record.get("kind") != kind or record.get("plugin") != plugin:
        raise CheckpointError(
            f"{path} holds a {record.get('kind')} of plugin '{record.get('plugin')}', "
            f"expected a {kind} of plugin '{plugin}'"
        )
    try:
        return params_class.model_validate(record.get("params", {}))
    except ValidationError as exc:
        raise CheckpointError(f"{path}: params invalid for plugin '{plugin}': {exc}") from exc


def save_tensors(tensors: Mapping[str, torch.Tensor], path: str | os.PathLike[str]) -> None:
    """Save tensors to a safetensors file; tensors sharing storage (tied weights) are copied."""
    from safetensors.torch import save_file

    seen: set[int] = set()
    out: dict[str, torch.Tensor] = {}
    for name, tensor in tensors.items():
        data = tensor.detach().cpu().contiguous()
        pointer = data.untyped_storage().data_ptr()
        out[name] = data.clone() if pointer in seen else data
        seen.add(pointer)
    save_file(out, str(path), metadata={"format": "pt"})
    os.chmod(path, 0o666 & ~current_umask())  # safetensors creates 0600 files


def load_tensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """Load a safetensors file, with a clear error when it is missing."""
    from safetensors.torch import load_file

    if not Path(path).is_file():
        raise CheckpointError(f"weights file {path} is missing")
    return load_file(str(path))


def check_state_dict(
    expected: Mapping[str, Any], found: Mapping[str, Any], *, source: str, owner: str
) -> None:
    """Raise :class:`CheckpointError` naming missing, unexpected and mis-shaped tensors."""
    misshaped = [
        f"{name} {tuple(found[name].shape)} (expected {tuple(expected[name].shape)})"
        for name in sorted(set(expected) & set(found))
        if tuple(found[name].shape) != tuple(expected[name].shape)
    ]
    _raise_mismatch(set(expected) - set(found), set(found) - set(expected), misshaped, source, owner)


def _raise_mismatch(
    missing: Iterable[str], unexpected: Iterable[str], misshaped: Iterable[str], source: str, owner: str
) -> None:
    problems = []
    for label, names in (
        ("missing", sorted(missing)),
        ("unexpected", sorted(unexpected)),
        ("mis-shaped", list(misshaped)),
    ):
        if names:
            shown = ", ".join(names[:8]) + (f" and {len(names) - 8} more" if len(names) > 8 else "")
            problems.append(f"{len(names)} {label}: {shown}")
    if problems:
        raise CheckpointError(f"{owner}: weights in {source} do not match: " + "; ".join(problems))


def load_transformers_model(
    model_class: Any, folder: str | os.PathLike[str], *, model_type: str, owner: str
) -> Any:
    """A transformers model from a local folder in float32, refusing any other model type and
    naming every missing, unexpected or mis-shaped weight (transformers would only warn)."""
    import torch

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(
            f"{owner}: {folder / 'config.json'} is missing; expected a transformers {model_type} folder"
        )
    try:
        config = model_class.config_class.from_pretrained(str(folder), local_files_only=True)
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{owner}: cannot read a {model_type} config.json in {folder}: {exc}") from exc
    if config.model_type != model_type:
        raise CheckpointError(f"{owner}: {folder} holds a '{config.model_type}' model, not {model_type}")
    try:
        model, info = model_class.from_pretrained(
            str(folder), config=config, dtype=torch.float32, local_files_only=True, output_loading_info=True
        )
    except (OSError, ValueError) as exc:
        raise CheckpointError(f"{owner}: cannot load {model_type} weights from {folder}: {exc}") from exc
    misshaped = [str(item) for item in info.get("mismatched_keys") or ()]
    _raise_mismatch(
        map(str, info.get("missing_keys") or ()),
        map(str, info.get("unexpected_keys") or ()),
        misshaped,
        str(folder),
        owner,
    )
    return model


def load_module_weights(module: torch.nn.Module, path: str | os.PathLike[str], *, owner: str) -> None:
    """Load a safetensors file into ``module`` after checking every name and shape."""
    found = load_tensors(path)
    check_state_dict(module.state_dict(), found, source=str(path), owner=owner)
    module.load_state_dict(found, strict=True)
