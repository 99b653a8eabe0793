"""Export specs: the named inputs, outputs, dynamic dimensions and tolerances of a graph.

A spec says what an exported graph looks like from outside, independent of the model inside:
runtimes, TensorRT optimisation profiles, Triton configs and the parity gate all read it. One
module in :mod:`xomni_export.specs` builds the specs of each component kind; a third-party
component may build its own from these classes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Literal

#: ``compute`` stands for the export precision (float32, float16 or bfloat16).
TensorDtype = Literal["float32", "float16", "bfloat16", "int64", "int32", "bool", "compute"]
Precision = Literal["float32", "float16", "bfloat16"]
PRECISIONS: tuple[Precision, ...] = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class Dim:
    """A dynamic dimension with the range TensorRT profiles and validation use."""

    name: str
    min: int
    opt: int
    max: int

    def __post_init__(self) -> None:
        if not 0 <= self.min <= self.opt <= self.max:
            raise ValueError(
                f"dim {self.name}: need 0 <= min <= opt <= max, got {self.min}, {self.opt}, {self.max}"
            )


@dataclass(frozen=True)
class TensorSpec:
    """A named graph input or output; each axis is a fixed size or the name of a :class:`Dim`.

    An axis may also be an expression of dim names: a sum ``"past+seq"`` (an attention mask over
    past and new positions) or a multiple ``"16*grid_h"`` (pixels of a token grid). Such an
    axis is never a free dimension of its own.
    """

    name: str
    dtype: TensorDtype
    shape: tuple[int | str, ...]

    def resolved_dtype(self, precision: Precision) -> str:
        return precision if self.dtype == "compute" else self.dtype

    def concrete_shape(self, sizes: Mapping[str, int]) -> tuple[int, ...]:
        """The shape for given dim sizes."""
        return tuple(axis if isinstance(axis, int) else _evaluate(axis, sizes) for axis in self.shape)


def axis_terms(axis: str) -> list[tuple[int, str]]:
    """``"past+seq"`` -> ``[(1, "past"), (1, "seq")]``; ``"16*grid_h"`` -> ``[(16, "grid_h")]``."""
    terms = []
    for term in axis.split("+"):
        factor, _, name = term.strip().rpartition("*")
        terms.append((int(factor) if factor else 1, name.strip()))
    return terms


def _evaluate(axis: str, sizes: Mapping[str, int]) -> int:
    try:
        return sum(factor * sizes[name] for factor, name in axis_terms(axis))
    except KeyError as exc:
        raise KeyError(f"axis {axis!r} names unknown dim {exc.args[0]!r}") from None


@dataclass(frozen=True)
class Tolerance:
    """Largest allowed ``|onnx - torch|``: ``atol + rtol * |torch|`` elementwise."""

    atol: float
    rtol: float


DEFAULT_TOLERANCES: Mapping[Precision, Tolerance] = {
    "float32": Tolerance(atol=1e-4, rtol=1e-4),
    "float16": Tolerance(atol=2e-2, rtol=2e-2),
    "bfloat16": Tolerance(atol=1e-1, rtol=5e-2),
}


@dataclass(frozen=True)
class GraphSpec:
    """One exported graph.

    ``validation_sizes`` are dim sizes the parity gate runs after export; they should differ
    from each dim's ``opt`` (the export example) so that specialisation would be caught.
    ``exact_outputs`` are compared for equality (integer ids), the others by tolerance.
    """

    name: str
    inputs: tuple[TensorSpec, ...]
    outputs: tuple[TensorSpec, ...]
    dims: tuple[Dim, ...]
    validation_sizes: tuple[Mapping[str, int], ...] = ()
    tolerances: Mapping[Precision, Tolerance] = field(default_factory=lambda: dict(DEFAULT_TOLERANCES))
    exact_outputs: tuple[str, ...] = ()
    description: str = ""

    def __post_init__(self) -> None:
        names = {d.name for d in self.dims}
        for tensor in (*self.inputs, *self.outputs):
            for axis in tensor.shape:
                if isinstance(axis, str):
                    unknown = [name for _, name in axis_terms(axis) if name not in names]
                    if unknown:
                        raise ValueError(f"graph {self.name}: {tensor.name} uses undeclared dims {unknown}")
        for sizes in self.validation_sizes:
            for dim in self.dims:
                value = sizes.get(dim.name, dim.opt)
                if not dim.min <= value <= dim.max:
                    raise ValueError(
                        f"graph {self.name}: validation size {dim.name}={value} "
                        f"outside [{dim.min}, {dim.max}]"
                    )

    @property
    def input_names(self) -> list[str]:
        return [t.name for t in self.inputs]

    @property
    def output_names(self) -> list[str]:
        return [t.name for t in self.outputs]

    def dim(self, name: str) -> Dim:
        return next(d for d in self.dims if d.name == name)

    def sizes(self, which: Literal["min", "opt", "max"]) -> dict[str, int]:
        return {d.name: getattr(d, which) for d in self.dims}

    def tolerance(self, precision: Precision) -> Tolerance:
        return self.tolerances.get(precision, DEFAULT_TOLERANCES[precision])


@dataclass(frozen=True)
class ExportSpec:
    """All graphs of one exported component."""

    kind: str
    graphs: tuple[GraphSpec, ...]

    def graph(self, name: str) -> GraphSpec:
        for graph in self.graphs:
            if graph.name == name:
                return graph
        raise KeyError(f"{self.kind} export has no graph {name!r}; graphs: {[g.name for g in self.graphs]}")
