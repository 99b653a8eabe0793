"""``xomni export``: export the components of a pipeline config, optionally build TensorRT
engines or a Triton model repository, and write a config that runs the exported artefacts.

A run builds everything in one hidden temporary folder beside ``--out`` and puts it in place at
the end: a new ``--out`` appears whole in one rename; into an existing one, each new slot folder
(then the Triton repository, then the pipeline yaml) is swapped in atomically, so every folder
is always either the old one or the new one. Folders the run replaces may only hold files an
earlier export wrote; anything else is refused unless ``force``.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import yaml

from xomni_core import ConfigError, InputError, atomic_file
from xomni_core.atomic import (
    current_umask,
    make_temporary_directory,
    remove_stale_temporaries,
    swap_into_place,
)
from xomni_core.config import PipelineConfig, load_config
from xomni_core.pipelines.build import build_component, prepare

from .manifest import MANIFEST_FILE, foreign_files
from .onnx_export import ExportResult, export_component
from .spec import Precision

if TYPE_CHECKING:
    from .serving.repository import ServingOptions

ExportFormat = Literal["onnx", "tensorrt", "triton"]
SLOTS = ("tokenizer", "backbone", "decoder")


def run_export(
    config_path: str | Path,
    *,
    overrides: Sequence[str] = (),
    components: Sequence[str] = SLOTS,
    export_format: ExportFormat = "onnx",
    out: str | Path,
    precision: Precision = "float32",
    validate: bool = True,
    triton_backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime",
    show_progress: bool = True,
    force: bool = False,
    serving: ServingOptions | None = None,
) -> dict[str, ExportResult]:
    """Export the chosen slots of a config into ``out/<slot>``; returns each slot's result.

    With the Triton format, ``out/triton`` holds one model per graph and, when every slot is
    exported, the pipeline models (see :mod:`xomni_export.serving.repository`) shaped by
    ``serving``. Files in the folders it replaces that no earlier export wrote raise
    :class:`InputError` before any work, unless ``force``.
    """
    config = load_config(config_path, list(overrides))
    resolved, registry = prepare(config)
    out_dir = Path(out)
    triton = export_format == "triton"
    _check_replaced_folders(out_dir, [*components, *(["triton"] if triton else [])], force)
    staging = make_temporary_directory(out_dir)
    try:
        results: dict[str, ExportResult] = {}
        for slot in components:
            component_config = resolved.component(slot)
            if component_config.backend != "torch":
                raise ConfigError(
                    f"{slot}.backend: export starts from the torch backend, got {component_config.backend!r}"
                )
            component = build_component(component_config, resolved.config, registry)
            result = export_component(
                component,
                staging / slot,
                plugin=component_config.spec.name,
                plugin_version=component_config.spec.version,
                precision=precision,
                validate=validate,
                show_progress=show_progress,
                failed_report=out_dir / f"{slot}.parity-failed.json",
            )
            results[slot] = ExportResult(out_dir / slot, result.manifest, result.parity)
            if export_format == "tensorrt" or (triton and triton_backend == "tensorrt"):
                from .tensorrt import build_engines

                build_engines(staging / slot, show_progress=show_progress)
        backend = "tensorrt" if export_format == "tensorrt" else "onnxruntime"
        write_runtime_config(
            config,
            {slot: staging / slot for slot in components},
            backend,
            staging,
            earlier=out_dir / f"pipeline.{backend}.yaml",
        )
        if triton:
            _write_repository(staging, components, triton_backend, serving)
        _publish(staging, out_dir, [*components, *(["triton"] if triton else []), f"pipeline.{backend}.yaml"])
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return results


def _write_repository(
    staging: Path,
    components: Sequence[str],
    triton_backend: Literal["onnxruntime", "tensorrt"],
    serving: ServingOptions | None,
) -> None:
    from .serving.repository import ServingOptions, write_serving_repository
    from .triton import write_triton_repository

    options = serving or ServingOptions(
        backend=triton_backend, instance_kind="gpu" if triton_backend == "tensorrt" else "cpu"
    )
    if options.backend != triton_backend:
        raise ConfigError(f"serving options run {options.backend}, the export builds for {triton_backend}")
    if set(components) == set(SLOTS):
        write_serving_repository(staging, staging / "triton", options)
        return
    write_triton_repository(
        {slot: staging / slot for slot in components},
        staging / "triton",
        backend=triton_backend,
        max_batch_size=options.max_batch_size,
        max_queue_delay_us=options.max_queue_delay_us,
        instance_kind=options.instance_kind,
        instance_count=options.instance_count,
    )


def _check_replaced_folders(out_dir: Path, names: Sequence[str], force: bool) -> None:
    """Refuse to replace folders holding files that ``xomni export`` did not write."""
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out: {out_dir} is a file, not a folder")
    if force or not out_dir.is_dir():
        return
    for name in names:
        folder = out_dir / name
        if not folder.exists():
            continue
        if not folder.is_dir():
            raise InputError(
                f"--out: {folder} is not a folder; export writes its {name} there. "
                "Move it away, or pass --force to replace it"
            )
        foreign = foreign_files(folder, triton=name == "triton")
        if foreign:
            shown = ", ".join(foreign[:8]) + (f" and {len(foreign) - 8} more" if len(foreign) > 8 else "")
            raise InputError(
                f"--out: {folder} holds files that `xomni export` did not write ({shown}); exporting "
                f"would delete them. Move them away, or pass --force to replace the folder"
            )


def _publish(staging: Path, out_dir: Path, names: Sequence[str]) -> None:
    """Put the staged export in place: the whole folder when ``out_dir`` is new or empty,
    otherwise entry by entry (the pipeline yaml last), each swap atomic."""
    if not os.path.lexists(out_dir) or (not out_dir.is_symlink() and not any(out_dir.iterdir())):
        os.chmod(staging, 0o777 & ~current_umask())  # made private while it was being written
        swap_into_place(staging, out_dir)
        return
    remove_stale_temporaries(out_dir)
    for name in names:
        swap_into_place(staging / name, out_dir / name)


def write_runtime_config(
    config: PipelineConfig,
    exported: dict[str, Path],
    backend: str,
    out_dir: Path,
    *,
    earlier: Path | None = None,
) -> Path:
    """A copy of ``config`` whose exported slots run on ``backend`` from their folders.

    Slots not exported now keep their section of ``earlier`` (the yaml of an earlier export
    into the same folder) when it ran them on ``backend`` from a folder of that export.
    """
    data: dict[str, Any] = config.model_dump(mode="json", exclude_defaults=True)
    previous = _earlier_sections(earlier, backend)
    for slot, folder in exported.items():
        section = data.get(slot) or {}
        data[slot] = {
            "plugin": section.get("plugin", getattr(config, slot).plugin),
            "backend": backend,
            "weights": str(folder.resolve().relative_to(out_dir.resolve())),
        }
    for slot in SLOTS:  # torch slots loading weights keep working from the new location
        section = data.get(slot)
        if slot in exported:
            continue
        if slot in previous:
            data[slot] = previous[slot]
        elif section and section.get("weights"):
            data[slot]["weights"] = str(config.weights_path(getattr(config, slot)))
    path = out_dir / f"pipeline.{backend}.yaml"
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _earlier_sections(earlier: Path | None, backend: str) -> dict[str, Any]:
    """The slot sections of an earlier export's yaml that run its own exported folders."""
    if earlier is None or not earlier.is_file():
        return {}
    try:
        data = yaml.safe_load(earlier.read_text())
    except (OSError, yaml.YAMLError, UnicodeDecodeError):
        return {}
    if not isinstance(data, dict):
        return {}
    kept = {}
    for slot in SLOTS:
        section = data.get(slot)
        if not isinstance(section, dict) or section.get("backend") != backend:
            continue
        weights = section.get("weights")
        if weights == slot and (earlier.parent / slot / MANIFEST_FILE).is_file():
            kept[slot] = section
    return kept
