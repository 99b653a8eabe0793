"""Opening the graphs of an exported folder on a backend."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xomni_core import CheckpointError, XomniError

from ..manifest import read_manifest
from .sessions import GraphSession, OrtSession

if TYPE_CHECKING:
    import torch


def default_providers(device: str) -> tuple[str, ...]:
    """onnxruntime execution providers for a torch-style device name."""
    if device.startswith("cuda"):
        return ("CUDAExecutionProvider", "CPUExecutionProvider")
    return ("CPUExecutionProvider",)


def open_session(
    folder: str | Path,
    graph: str,
    *,
    backend: str,
    device: str = "cpu",
    providers: Sequence[str] = (),
    threads: int | None = None,
    prepack: bool = True,
) -> GraphSession:
    """A session for graph ``graph`` of the exported ``folder`` on ``backend``; ``threads`` and
    ``prepack`` apply to onnxruntime (see :class:`OrtSession`)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    graphs = manifest.get("graphs", {})
    if graph not in graphs:
        raise CheckpointError(f"{folder} has no exported graph {graph!r}; it has {sorted(graphs)}")
    if backend == "onnxruntime":
        return OrtSession(
            folder / graphs[graph]["file"],
            providers or default_providers(device),
            threads=threads,
            prepack=prepack,
        )
    if backend == "tensorrt":
        from ..tensorrt import TrtSession

        return TrtSession.from_manifest(folder, graph, manifest, device=device)
    raise XomniError(f"backend {backend!r} does not run exported graphs; use onnxruntime or tensorrt")


class LazySession:
    """A session opened on its first run, so that a graph never run costs no memory (the text
    head of a backbone that only draws images)."""

    def __init__(self, open_session: Callable[[], GraphSession], entry: Mapping[str, Any]) -> None:
        self._open = open_session
        self._session: GraphSession | None = None
        self.input_names = [t["name"] for t in entry["inputs"]]
        self.output_names = [t["name"] for t in entry["outputs"]]

    @property
    def is_open(self) -> bool:
        return self._session is not None

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self._session is None:
            self._session = self._open()
        return self._session.run(inputs)
