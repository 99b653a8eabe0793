"""``xomni export``: export the components of a pipeline config, optionally build TensorRT
engines or a Triton model repository, and write a config that runs the exported artefacts."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from xomni_core import ConfigError, atomic_file
from xomni_core.config import PipelineConfig, load_config
from xomni_core.pipelines.build import build_component, prepare

from .onnx_export import ExportResult, export_component
from .spec import Precision

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
) -> dict[str, ExportResult]:
    """Export the chosen slots of a config into ``out/<slot>``; returns each slot's result."""
    config = load_config(config_path, list(overrides))
    resolved, registry = prepare(config)
    out_dir = Path(out)
    results: dict[str, ExportResult] = {}
    for slot in components:
        component_config = resolved.component(slot)
        if component_config.backend != "torch":
            raise ConfigError(
                f"{slot}.backend: export starts from the torch backend, got {component_config.backend!r}"
            )
        component = build_component(component_config, resolved.config, registry)
        results[slot] = export_component(
            component,
            out_dir / slot,
            plugin=component_config.spec.name,
            plugin_version=component_config.spec.version,
            precision=precision,
            validate=validate,
            show_progress=show_progress,
        )
        if export_format == "tensorrt" or (export_format == "triton" and triton_backend == "tensorrt"):
            from .tensorrt import build_engines

            build_engines(out_dir / slot, show_progress=show_progress)
    if export_format == "triton":
        from .triton import write_triton_repository

        write_triton_repository(
            {slot: out_dir / slot for slot in components}, out_dir / "triton", backend=triton_backend
        )
    backend = "tensorrt" if export_format == "tensorrt" else "onnxruntime"
    write_runtime_config(config, {slot: out_dir / slot for slot in components}, backend, out_dir)
    return results


def write_runtime_config(
    config: PipelineConfig, exported: dict[str, Path], backend: str, out_dir: Path
) -> Path:
    """A copy of ``config`` whose exported slots run on ``backend`` from their folders."""
    data: dict[str, Any] = config.model_dump(mode="json", exclude_defaults=True)
    for slot, folder in exported.items():
        section = data.get(slot) or {}
        data[slot] = {
            "plugin": section.get("plugin", getattr(config, slot).plugin),
            "backend": backend,
            "weights": str(folder.resolve().relative_to(out_dir.resolve())),
        }
    for slot in SLOTS:  # torch slots loading weights keep working from the new location
        section = data.get(slot)
        if slot not in exported and section and section.get("weights"):
            data[slot]["weights"] = str(config.weights_path(getattr(config, slot)))
    path = out_dir / f"pipeline.{backend}.yaml"
    with atomic_file(path) as tmp:
        tmp.write_text(yaml.safe_dump(data, sort_keys=False))
    return path
