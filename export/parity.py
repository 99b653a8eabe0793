"""The parity gate: run exported graphs and the PyTorch modules on unseen shapes and compare.

Each graph runs on every ``validation_sizes`` entry of its spec (shapes other than the export
example). Every output is compared elementwise against ``atol + rtol * |torch|``; integer
outputs listed as exact must be equal. The report names the worst element of each output.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from tqdm.auto import tqdm

from xomni_core import XomniError

from .graphs import GraphExport
from .spec import Precision


class ParityError(XomniError):
    """An exported graph does not compute what the PyTorch module computes."""


@dataclass(frozen=True)
class OutputCheck:
    name: str
    shape: tuple[int, ...]
    max_abs_error: float
    max_rel_error: float
    worst_index: tuple[int, ...]
    atol: float
    rtol: float
    exact: bool
    passed: bool
    problem: str = ""


@dataclass(frozen=True)
class CaseReport:
    graph: str
    sizes: Mapping[str, int]
    outputs: tuple[OutputCheck, ...]

    @property
    def passed(self) -> bool:
        return all(o.passed for o in self.outputs)


@dataclass(frozen=True)
class ParityReport:
    precision: str
    providers: tuple[str, ...]
    cases: tuple[CaseReport, ...]

    @property
    def passed(self) -> bool:
        return all(c.passed for c in self.cases)

    def summary(self) -> str:
        failures = []
        for case in self.cases:
            sizes = ", ".join(f"{k}={v}" for k, v in case.sizes.items())
            for check in case.outputs:
                if not check.passed:
                    detail = check.problem or (
                        f"max abs error {check.max_abs_error:.3g} (max rel {check.max_rel_error:.3g}) "
                        f"at {check.worst_index} exceeds atol {check.atol:g} + rtol {check.rtol:g} * |torch|"
                    )
                    failures.append(f"{case.graph} ({sizes}): {check.name}: {detail}")
        if not failures:
            return f"parity gate passed: {len(self.cases)} cases"
        return f"parity gate failed in {len(failures)} output(s): " + "; ".join(failures)

    def to_json(self) -> dict[str, Any]:
        return {
            "passed": self.passed,
            "precision": self.precision,
            "providers": list(self.providers),
            "cases": [
                {
                    "graph": c.graph,
                    "sizes": dict(c.sizes),
                    "passed": c.passed,
                    "outputs": [asdict(o) for o in c.outputs],
                }
                for c in self.cases
            ],
        }


def run_parity(
    graphs: Sequence[GraphExport],
    folder: Path,
    precision: Precision,
    providers: Sequence[str] = ("CPUExecutionProvider",),
    *,
    show_progress: bool = False,
) -> ParityReport:
    """Compare each exported graph in ``folder`` with its module on the spec's validation sizes."""
    import torch

    from .runtime.sessions import OrtSession

    cases = []
    jobs = [(g, sizes) for g in graphs for sizes in g.spec.validation_sizes]
    progress = tqdm(jobs, desc="parity", disable=not show_progress, leave=False)
    sessions: dict[str, OrtSession] = {}
    for index, (graph, partial_sizes) in enumerate(progress):
        spec = graph.spec
        sizes = {**spec.sizes("opt"), **partial_sizes}
        if spec.name not in sessions:
            with _runtime_errors(spec.name, precision, providers):
                sessions[spec.name] = OrtSession(folder / f"{spec.name}.onnx", providers)
        inputs = list(graph.make_inputs(sizes, index + 1))
        with torch.no_grad():
            expected = graph.module(*inputs)
        if isinstance(expected, torch.Tensor):
            expected = (expected,)
        with _runtime_errors(spec.name, precision, providers):
            actual = sessions[spec.name].run(dict(zip(spec.input_names, inputs, strict=True)))
        tolerance = spec.tolerance(precision)
        checks = tuple(
            compare(
                name,
                actual[name],
                reference,
                tolerance.atol,
                tolerance.rtol,
                exact=name in spec.exact_outputs,
            )
            for name, reference in zip(spec.output_names, expected, strict=True)
        )
        cases.append(CaseReport(spec.name, {k: sizes[k] for k in partial_sizes}, checks))
    return ParityReport(precision, tuple(providers), tuple(cases))


@contextlib.contextmanager
def _runtime_errors(graph: str, precision: str, providers: Sequence[str]) -> Iterator[None]:
    """onnxruntime's own exceptions become one actionable message."""
    try:
        yield
    except XomniError:
        raise
    except Exception as exc:  # onnxruntime raises its own pybind exception types
        hint = (
            " onnxruntime's CPU provider lacks bfloat16 kernels for many operators: validate on a GPU "
            "provider, or export with --no-validate."
            if precision == "bfloat16"
            else ""
        )
        raise ParityError(
            f"onnxruntime could not run graph {graph!r} ({precision}, providers {list(providers)}): "
            f"{type(exc).__name__}: {exc}.{hint}"
        ) from exc


def compare(
    name: str, actual: Any, expected: Any, atol: float, rtol: float, *, exact: bool = False
) -> OutputCheck:
    """Elementwise comparison of one output, locating the worst element."""
    import torch

    actual = torch.as_tensor(actual).detach().cpu()
    expected = expected.detach().cpu()
    shape = tuple(expected.shape)
    if tuple(actual.shape) != shape:
        return OutputCheck(
            name,
            shape,
            float("inf"),
            float("inf"),
            (),
            atol,
            rtol,
            exact,
            False,
            problem=f"shape {tuple(actual.shape)} != torch shape {shape}",
        )
    if expected.numel() == 0:
        return OutputCheck(name, shape, 0.0, 0.0, (), atol, rtol, exact, True)
    a, e = actual.double(), expected.double()
    difference = (a - e).abs()
    nan_mismatch = torch.isnan(a) != torch.isnan(e)
    difference = torch.where(torch.isnan(a) & torch.isnan(e), torch.zeros_like(difference), difference)
    difference = torch.where(nan_mismatch, torch.full_like(difference, float("inf")), difference)
    relative = difference / e.abs().clamp(min=1e-12)
    flat = int(difference.argmax())
    worst = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), shape))
    allowed = torch.zeros_like(e) if exact else atol + rtol * e.abs()
    passed = bool((difference <= allowed).all())
    return OutputCheck(
        name, shape, float(difference.max()), float(relative.max()), worst, atol, rtol, exact, passed
    )
