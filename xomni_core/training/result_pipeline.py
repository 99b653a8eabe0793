"""The pipeline a training run ends with: ``OUTPUT/pipeline/``, ready for ``xomni generate
--config OUTPUT/pipeline/pipeline.yaml`` and ``TextToImagePipeline.from_pretrained``.

It holds ``pipeline.yaml`` and the trained part of the backbone: ``backbone/`` (the final
weights) after full training, or ``adapter/`` (the final LoRA adapter, applied on the config's
base with ``backbone.adapter``) after LoRA training. Both are hard links to the final
checkpoint's files where the file system allows (checkpoint files are never rewritten in place,
so pruning the checkpoint later leaves them intact), copies elsewhere. The tokenizer and decoder
are the training config's, their weight folders referred to by absolute path, so the multi-GB
folders are not duplicated; ``from_pretrained(...).save_pretrained(DIR)`` makes a standalone
copy. Rewards and the training section are left out: the folder is for generation.

The folder is written beside its place and renamed into it; a rerun or resume replaces it the
same way. A folder there that holds anything else is the user's and is never replaced.
"""

from __future__ import annotations

import copy
import os
import shutil
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from .._version import __version__
from ..atomic import atomic_directory, is_temporary
from ..config import PipelineConfig, load_config
from ..errors import ConfigError
from .checkpoint import ADAPTER, BACKBONE

if TYPE_CHECKING:
    from ..interfaces import Backbone

RESULT_DIR = "pipeline"
CONFIG_FILE = "pipeline.yaml"
_OURS = frozenset({CONFIG_FILE, BACKBONE, ADAPTER})
_ORDER = ("tokenizer", "backbone", "decoder", "runtime", "generation", "plugins")


def result_folder(output_dir: Path) -> Path:
    return output_dir / RESULT_DIR


def check_result_folder(output_dir: Path, *, section: str) -> None:
    """Refuse, before training, a run whose ``OUTPUT/pipeline`` holds files it did not write."""
    folder = result_folder(output_dir)
    if not os.path.lexists(folder):
        return
    if not folder.is_dir() or folder.is_symlink():
        raise ConfigError(
            f"training.{section}.output_dir: {folder} exists and is not a folder; the run writes its "
            "pipeline there: move it or choose another output_dir"
        )
    foreign = sorted(e.name for e in folder.iterdir() if e.name not in _OURS and not is_temporary(e.name))
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise ConfigError(
            f"training.{section}.output_dir: {folder} holds files that are not a run's pipeline "
            f"({shown}); they are kept: move them or choose another output_dir"
        )


def write_result_pipeline(
    output_dir: Path,
    config: PipelineConfig,
    *,
    section: str,
    checkpoint: Path | None,
    policy: Backbone[Any],
    lora: bool,
) -> Path:
    """Write ``OUTPUT/pipeline/`` for the final weights and return its ``pipeline.yaml``.

    ``checkpoint`` is the run's final checkpoint (its ``backbone/`` or ``adapter/`` is linked);
    without one, the weights are saved from ``policy``.
    """
    check_result_folder(output_dir, section=section)
    if config.backbone is None:
        raise ConfigError("the pipeline config has no backbone section")
    document: dict[str, Any] = {
        "runtime": config.runtime.model_dump(mode="json"),
        "generation": config.generation.model_dump(mode="json"),
    }
    if config.plugins != type(config.plugins)():
        document["plugins"] = config.plugins.model_dump(mode="json")
    for slot in ("tokenizer", "decoder"):
        section_config = getattr(config, slot)
        if section_config is not None:
            document[slot] = _absolute(section_config.model_dump(mode="json", exclude_defaults=True), config)
    backbone = config.backbone
    merged = lora and backbone.adapter is not None  # two adapters do not stack: save the sum
    folder = result_folder(output_dir)
    with atomic_directory(folder) as tmp:
        if lora and not merged:
            _place(checkpoint, ADAPTER, tmp / ADAPTER, lambda out: _save_adapter(policy, out))
            entry = _absolute(backbone.model_dump(mode="json", exclude_defaults=True), config)
            entry["adapter"] = ADAPTER
        else:
            save = (lambda out: _save_merged(policy, out)) if merged else policy.save_pretrained
            source = None if merged else checkpoint
            _place(source, BACKBONE, tmp / BACKBONE, save)
            entry = {"plugin": backbone.plugin, "weights": BACKBONE}
        document["backbone"] = entry
        document = {key: document[key] for key in _ORDER if key in document}
        header = (
            f"# The pipeline trained by `xomni train {section}` (xomni {__version__}): "
            f'xomni generate --config {folder / CONFIG_FILE} "a prompt"\n'
        )
        (tmp / CONFIG_FILE).write_text(header + yaml.safe_dump(document, sort_keys=False))
        load_config(tmp / CONFIG_FILE)  # what is written must validate, as `xomni config validate` does
    return folder / CONFIG_FILE


def _absolute(entry: dict[str, Any], config: PipelineConfig) -> dict[str, Any]:
    """A component section whose folders (weights, adapter) no longer depend on the config's place."""
    entry = copy.deepcopy(entry)
    for key in ("weights", "adapter"):
        value = entry.get(key)
        if isinstance(value, str):
            path = Path(os.path.expanduser(value))
            if not path.is_absolute() and config._base_dir is not None:
                path = config._base_dir / path
            entry[key] = str(path.resolve())
    return entry


def _place(checkpoint: Path | None, name: str, target: Path, save: Any) -> None:
    """Link (or copy) ``checkpoint/name`` to ``target``; without it, ``save(target)``."""
    source = checkpoint / name if checkpoint is not None else None
    if source is None or not source.is_dir():
        save(target)
        return
    for path in sorted(source.rglob("*")):
        destination = target / path.relative_to(source)
        if path.is_dir():
            destination.mkdir(parents=True, exist_ok=True)
            continue
        destination.parent.mkdir(parents=True, exist_ok=True)
        try:
            os.link(path, destination)
        except OSError:  # another file system, or one without hard links
            shutil.copy2(path, destination)


def _save_adapter(policy: Backbone[Any], out: Path) -> None:
    from .lora import save_adapter

    save_adapter(out, policy.trainable_module())


def _save_merged(policy: Backbone[Any], out: Path) -> None:
    from .lora import merge_lora

    merged = copy.deepcopy(policy)
    merge_lora(merged.trainable_module())
    merged.save_pretrained(out)


def finish_run(
    output_dir: Path,
    config: PipelineConfig,
    *,
    section: str,
    checkpoint: Path | None,
    policy: Backbone[Any],
    lora: bool,
    is_main: bool,
) -> Path | None:
    """Write the result pipeline on the main process and say where it is; ``None`` elsewhere."""
    if not is_main:
        return None
    path = write_result_pipeline(
        output_dir, config, section=section, checkpoint=checkpoint, policy=policy, lora=lora
    )
    print(f"pipeline: {path}")
    if config.decoder is None:
        print(
            f"{path} has no decoder (the training config has none): add a decoder section to generate images"
        )
    return path
