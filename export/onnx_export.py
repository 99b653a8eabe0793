"""ONNX export of a component: every graph of its spec, the parity gate, the manifest.

Graphs are traced with ``torch.onnx.export(dynamo=True)`` using ``dynamic_shapes`` built from
the spec; the example inputs take each dim's ``opt`` size, which must be at least 2 so that no
dynamic axis is specialised to 0 or 1. Their weights then move to one file shared by the
component's graphs (:mod:`.weights`), so weights that two graphs use are stored once.
Everything is written into a temporary folder that replaces the target only when export (and
validation, when asked) succeeded.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xomni_core import Component, XomniError, atomic_directory, atomic_file, write_component_file

from .graphs import Exportable, GraphExport
from .manifest import (
    FORMAT_VERSION,
    MANIFEST_FILE,
    listed_files,
    now_utc,
    sha256_of,
    tool_versions,
    write_manifest,
)
from .parity import ParityError, ParityReport, run_parity
from .spec import GraphSpec, Precision, axis_terms
from .weights import WEIGHTS_FILE, store_weights_once

OPSET = 18
#: Protobuf caps a single ONNX file at 2 GiB; larger graphs keep their weights beside it.
EXTERNAL_DATA_BYTES = 1_800_000_000
PARITY_FILE = "parity.json"


class ExportError(XomniError):
    """A component cannot be exported as asked."""


@dataclass(frozen=True)
class ExportResult:
    folder: Path
    manifest: dict[str, Any]
    parity: ParityReport | None


def export_component(
    component: Component[Any],
    folder: str | Path,
    *,
    plugin: str,
    plugin_version: str,
    precision: Precision = "float32",
    validate: bool = True,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    show_progress: bool = True,
    failed_report: str | Path | None = None,
) -> ExportResult:
    """Export ``component`` to ONNX in ``folder`` (replaced atomically).

    A failed parity gate writes its report to ``failed_report`` (default: beside ``folder``).
    """
    if not isinstance(component, Exportable):
        raise ExportError(
            f"{component.kind} plugin '{plugin}' cannot be exported: its component class "
            f"{type(component).__name__} has no export_graphs()/write_export_assets()"
        )
    target = Path(folder)
    graphs = component.export_graphs(precision)
    report: ParityReport | None = None
    with atomic_directory(target) as tmp:
        write_component_file(tmp, kind=component.kind, plugin=plugin, params=component.params)
        component.write_export_assets(tmp)
        entries = {}
        steps = tqdm(graphs, desc=f"export {component.kind}", disable=not show_progress, leave=False)
        for graph in steps:
            steps.set_postfix_str(graph.spec.name)
            entries[graph.spec.name] = export_graph(graph, tmp, precision)
        shared = store_weights_once(tmp, [entry["file"] for entry in entries.values()])
        for name, entry in entries.items():
            external = [WEIGHTS_FILE] if shared else []
            # Covers the weights too, so stale TensorRT engines are caught after a re-export.
            digest = sha256_of(*(tmp / file for file in (entry["file"], *external)))
            entries[name] = {"file": entry["file"], "sha256": digest, "external_data": external, **entry}
        if validate:
            report = run_parity(graphs, tmp, precision, providers, show_progress=show_progress)
            report_text = json.dumps(report.to_json(), indent=2) + "\n"
            if not report.passed:
                failed = Path(failed_report or target.parent / f"{target.name}.parity-failed.json")
                with atomic_file(failed) as report_tmp:
                    report_tmp.write_text(report_text)
                raise ParityError(report.summary() + f" Full report: {failed}")
            (tmp / PARITY_FILE).write_text(report_text)
        manifest = {
            "format": FORMAT_VERSION,
            "kind": component.kind,
            "plugin": plugin,
            "plugin_version": plugin_version,
            "precision": precision,
            "opset": OPSET,
            "created_utc": now_utc(),
            "versions": tool_versions(),
            "graphs": entries,
            "parity": None if report is None else {"passed": report.passed, "report": PARITY_FILE},
            "files": sorted({*listed_files(tmp), MANIFEST_FILE}),
        }
        write_manifest(tmp, manifest)
    return ExportResult(target, manifest, report)


def export_graph(graph: GraphExport, folder: Path, precision: Precision) -> dict[str, Any]:
    """Export one graph to ``folder/<name>.onnx`` (weights above 1.8 GB in
    ``<name>.onnx.data``); returns its manifest entry, without ``sha256`` and
    ``external_data``, which :func:`export_component` adds once the weights are shared."""
    import torch

    spec = graph.spec
    _check_examples(spec)
    example = tuple(graph.make_inputs(spec.sizes("opt"), 0))
    path = folder / f"{spec.name}.onnx"
    weight_bytes = sum(p.numel() * p.element_size() for p in graph.module.parameters())
    external = weight_bytes > EXTERNAL_DATA_BYTES
    module = graph.module.eval()
    with torch.no_grad(), _quiet_exporter():
        program = torch.onnx.export(
            module,
            example,
            dynamo=True,
            dynamic_shapes=forward_shapes(module, spec),
            input_names=spec.input_names,
            output_names=spec.output_names,
            opset_version=OPSET,
            optimize=True,
            verbose=False,
        )
        if program is None:
            raise ExportError(f"torch.onnx.export returned no program for graph {spec.name}")
        program.save(str(path), external_data=external)
    return {
        "file": path.name,
        "inputs": [
            {"name": t.name, "dtype": t.resolved_dtype(precision), "shape": list(t.shape)}
            for t in spec.inputs
        ],
        "outputs": [
            {"name": t.name, "dtype": t.resolved_dtype(precision), "shape": list(t.shape)}
            for t in spec.outputs
        ],
        "dims": [{"name": d.name, "min": d.min, "opt": d.opt, "max": d.max} for d in spec.dims],
    }


def dynamic_shapes(spec: GraphSpec) -> dict[str, dict[int, Any]]:
    """torch.export dynamic shapes: one shared ``Dim`` per spec dim, ``k * Dim`` for multiples;
    sums of dims are left for the exporter to infer."""
    from torch.export import Dim

    dims = {d.name: Dim(d.name, min=max(d.min, 1), max=d.max) for d in spec.dims}
    shapes: dict[str, dict[int, Any]] = {}
    for tensor in spec.inputs:
        axes: dict[int, Any] = {}
        for index, axis in enumerate(tensor.shape):
            if not isinstance(axis, str):
                continue
            terms = axis_terms(axis)
            if len(terms) == 1:
                factor, name = terms[0]
                axes[index] = dims[name] if factor == 1 else factor * dims[name]
            else:
                axes[index] = Dim.AUTO
        shapes[tensor.name] = axes
    return shapes


def forward_shapes(module: Any, spec: GraphSpec) -> dict[str, Any]:
    """:func:`dynamic_shapes` keyed by ``module.forward``'s parameters, which take the spec's
    inputs in order: names like ``past.0.key`` are no identifiers, and a ``*past`` parameter
    takes a tuple of them, as torch.export binds the example inputs."""
    import inspect

    shapes = dynamic_shapes(spec)
    signature = inspect.signature(module.forward)
    return dict(signature.bind(*(shapes[name] for name in spec.input_names)).arguments)


def _check_examples(spec: GraphSpec) -> None:
    small = [d.name for d in spec.dims if d.opt < 2]
    if small:
        raise ExportError(
            f"graph {spec.name}: dims {small} have opt < 2; the export example would specialise them"
        )


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """The dynamo exporter prints its stages and warns about torchvision; keep the CLI readable."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "torch._dynamo", "torch.export")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)
