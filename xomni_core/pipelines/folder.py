"""Pipeline folders: ``model_index.json`` beside one component folder per slot.

``model_index.json`` is what diffusers users know: the pipeline class, which plugin (and which
version of which distribution) fills each slot, the generation and runtime defaults, and what
the model was trained for. ``pipeline.yaml`` in the same folder holds the same pipeline for the
command line's ``--config``. Nothing here imports torch.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .._version import __version__
from ..atomic import atomic_file
from ..config import SINGLE_SLOTS, PipelineConfig, load_config
from ..errors import CheckpointError, ConfigError
from ..folders import COMPONENT_FILE

if TYPE_CHECKING:
    from ..registry import PluginRegistry

INDEX_FILE = "model_index.json"
CONFIG_FILE = "pipeline.yaml"
INDEX_FORMAT = 1
#: What a model can do; a missing key means "yes" (folders written before the flag existed).
CAPABILITIES = ("text_to_image", "understanding")


def is_pipeline_folder(folder: str | os.PathLike[str]) -> bool:
    """Whether ``folder`` holds a pipeline (``model_index.json`` or ``pipeline.yaml``)."""
    path = Path(folder)
    return (path / INDEX_FILE).is_file() or (path / CONFIG_FILE).is_file()


def read_model_index(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The parsed ``model_index.json`` of ``folder``, or ``None`` when it has none."""
    path = Path(folder, INDEX_FILE)
    if not path.is_file():
        return None
    try:
        index = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(index, dict) or index.get("format") != INDEX_FORMAT:
        raise CheckpointError(f"{path} is not a format-{INDEX_FORMAT} xomni model index")
    return index


def folder_config(folder: str | os.PathLike[str], overrides: list[str] | None = None) -> PipelineConfig:
    """The pipeline a folder describes: from ``model_index.json``, else from ``pipeline.yaml``.

    Component weights are the slot folders, relative to ``folder``.
    """
    root = Path(folder).expanduser()
    if not root.is_dir():
        raise ConfigError(f"pipeline folder {root} does not exist")
    index = read_model_index(root)
    if index is None:
        if not (root / CONFIG_FILE).is_file():
            raise ConfigError(
                f"{root} is not a pipeline folder: it holds neither {INDEX_FILE} nor {CONFIG_FILE} "
                "(write one with save_pretrained)"
            )
        return load_config(root / CONFIG_FILE, overrides)
    data: dict[str, Any] = {key: index[key] for key in ("runtime", "generation", "plugins") if key in index}
    for slot in SINGLE_SLOTS:
        entry = index.get(slot)
        if entry is None:
            continue
        if not isinstance(entry, Mapping) or not isinstance(entry.get("plugin"), str):
            raise CheckpointError(f"{root / INDEX_FILE}: {slot} must name its plugin")
        data[slot] = {"plugin": entry["plugin"], "weights": str(entry.get("folder", slot))}
    config = load_config(data=data, overrides=overrides)
    return config.with_base_dir(root.resolve())


def capabilities(folder: str | os.PathLike[str]) -> dict[str, bool]:
    """What the model in ``folder`` was trained for; unflagged capabilities count as present."""
    index = read_model_index(folder) or {}
    flags = index.get("capabilities") or {}
    return {name: bool(flags.get(name, True)) for name in CAPABILITIES}


def model_index(
    config: PipelineConfig,
    *,
    class_name: str,
    registry: PluginRegistry | None = None,
    capability_flags: Mapping[str, bool] | None = None,
) -> dict[str, Any]:
    """The ``model_index.json`` record of ``config`` whose slots are saved in folders named
    after them; ``registry`` supplies each plugin's version and distribution."""
    index: dict[str, Any] = {"_class_name": class_name, "format": INDEX_FORMAT, "xomni_version": __version__}
    for slot in SINGLE_SLOTS:
        section = getattr(config, slot)
        if section is None:
            continue
        entry: dict[str, Any] = {"plugin": section.plugin, "folder": slot}
        record = _record(registry, slot, section.plugin)
        if record is not None:
            entry.update(version=record.version, distribution=record.distribution)
        index[slot] = entry
    index["generation"] = config.generation.model_dump(mode="json")
    index["runtime"] = config.runtime.model_dump(mode="json")
    if config.plugins != type(config.plugins)():
        index["plugins"] = config.plugins.model_dump(mode="json")
    if capability_flags:
        index["capabilities"] = {name: bool(value) for name, value in capability_flags.items()}
    return index


def write_pipeline_files(
    folder: Path,
    config: PipelineConfig,
    *,
    class_name: str,
    registry: PluginRegistry | None = None,
    capability_flags: Mapping[str, bool] | None = None,
) -> None:
    """Write ``model_index.json`` and ``pipeline.yaml`` for slot folders already in ``folder``."""
    index = model_index(config, class_name=class_name, registry=registry, capability_flags=capability_flags)
    (folder / INDEX_FILE).write_text(json.dumps(index, indent=2) + "\n")
    document: dict[str, Any] = {"runtime": index["runtime"], "generation": index["generation"]}
    if "plugins" in index:
        document["plugins"] = index["plugins"]
    for slot in SINGLE_SLOTS:
        if slot in index:
            document[slot] = {"plugin": index[slot]["plugin"], "weights": slot}
    header = f"# {class_name} saved by xomni {__version__}; {INDEX_FILE} describes the same pipeline\n"
    (folder / CONFIG_FILE).write_text(header + yaml.safe_dump(document, sort_keys=False))


def write_model_index(
    folder: str | os.PathLike[str],
    *,
    class_name: str = "TextToImagePipeline",
    capability_flags: Mapping[str, bool] | None = None,
    registry: PluginRegistry | None = None,
) -> Path:
    """Add ``model_index.json`` to a folder that holds ``pipeline.yaml`` and one folder per slot
    (what converters and training recipes write), so that ``from_pretrained`` reads it; returns
    its path. ``capability_flags`` such as ``{"understanding": False}`` record what the model was
    not trained for."""
    root = Path(folder)
    config = load_config(root / CONFIG_FILE)
    for slot in SINGLE_SLOTS:
        section = getattr(config, slot)
        if section is not None and config.weights_path(section) != (root / slot).resolve():
            raise ConfigError(
                f"{root / CONFIG_FILE}: {slot}.weights must be the folder {slot!r} beside it "
                f"for {INDEX_FILE} to describe the pipeline"
            )
    if registry is None:
        from ..registry import PluginRegistry

        registry = PluginRegistry.discover(config.plugins)
    index = model_index(config, class_name=class_name, registry=registry, capability_flags=capability_flags)
    path = root / INDEX_FILE
    with atomic_file(path) as tmp:  # a user's folder: never half a file
        tmp.write_text(json.dumps(index, indent=2) + "\n")
    return path


def component_plugin(folder: str | os.PathLike[str]) -> tuple[str, str]:
    """``(kind, plugin)`` recorded in a component folder's ``xomni_component.json``."""
    path = Path(folder, COMPONENT_FILE)
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing; {folder} is not a component folder written by save_pretrained"
        )
    try:
        record = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} cannot be read as JSON: {exc}") from exc
    if not isinstance(record, dict):
        raise CheckpointError(f"{path} does not hold a JSON object")
    kind, plugin = record.get("kind"), record.get("plugin")
    if not isinstance(kind, str) or not isinstance(plugin, str):
        raise CheckpointError(f"{path} does not name the component's kind and plugin")
    return kind, plugin


def _record(registry: PluginRegistry | None, kind: str, plugin: str) -> Any:
    if registry is None:
        return None
    return next((r for r in registry.records if r.kind == kind and r.name == plugin and r.usable), None)
