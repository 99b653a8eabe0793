"""What a component hands to the exporter: a spec, a module, and inputs for any sizes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .spec import GraphSpec, Precision

if TYPE_CHECKING:
    import torch


@dataclass(frozen=True)
class GraphExport:
    """A module to export under ``spec``.

    ``module.forward`` takes the spec's inputs in order and returns its outputs in order (a
    tuple, or a single tensor for one output). ``make_inputs(sizes, seed)`` builds valid inputs
    (ids in range, consistent masks) for given dim sizes: the exporter calls it with each dim's
    ``opt`` and the parity gate with the spec's ``validation_sizes``.
    """

    spec: GraphSpec
    module: torch.nn.Module
    make_inputs: Callable[[Mapping[str, int], int], Sequence[torch.Tensor]]


@runtime_checkable
class Exportable(Protocol):
    """A component that can be exported to ONNX."""

    def export_graphs(self, precision: Precision) -> list[GraphExport]:
        """The graphs to export, with modules already cast to ``precision``."""
        ...

    def write_export_assets(self, folder: Path) -> None:
        """Write what the runtime needs besides graphs (tokenizer files, scheduler config)."""
        ...
