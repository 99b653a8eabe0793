"""Opening the graphs of an exported folder on a backend."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from xomni_core import CheckpointError, XomniError

from ..manifest import read_manifest
from .sessions import GraphSession, OrtSession


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
) -> GraphSession:
    """A session for graph ``graph`` of the exported ``folder`` on ``backend``; ``threads`` are
    onnxruntime's intra-op threads (default: torch's thread count)."""
    folder = Path(folder)
    manifest = read_manifest(folder)
    graphs = manifest.get("graphs", {})
    if graph not in graphs:
        raise CheckpointError(f"{folder} has no exported graph {graph!r}; it has {sorted(graphs)}")
    if backend == "onnxruntime":
        return OrtSession(
            folder / graphs[graph]["file"], providers or default_providers(device), threads=threads
        )
    if backend == "tensorrt":
        from ..tensorrt import TrtSession

        return TrtSession.from_manifest(folder, graph, manifest, device=device)
    raise XomniError(f"backend {backend!r} does not run exported graphs; use onnxruntime or tensorrt")
