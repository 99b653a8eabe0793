"""One exported graph, ready to run: the common face of onnxruntime and TensorRT.

A session takes and returns torch tensors keyed by the spec's names, so runtime components do
not care which engine runs underneath.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xomni_core import CheckpointError, XomniError

if TYPE_CHECKING:
    import torch


class GraphSession(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Outputs by name for inputs by name."""
        ...


def default_threads() -> int:
    """torch's intra-op thread count (``runtime.threads`` when a command set it), so both
    runtimes of a process use the same number of cores."""
    import torch

    return torch.get_num_threads()


class OrtSession:
    """An ONNX Runtime inference session over torch tensors.

    ``threads`` intra-op threads (default :func:`default_threads`). Idle threads sleep rather
    than spin unless ``spinning``: a spinning pool keeps its cores busy between runs, which slows
    everything else the process does between them (sampling, torch ops, the other session).
    ``prepack`` lets matrix products keep a private copy of their weights in the layout their
    kernels read fastest: batched products gain (without it a batch-16 decode step of X-Omni's
    layout took 1.5x as long), a single row does not, and the copy is memory that sessions
    sharing the weights do not share.
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        *,
        threads: int | None = None,
        spinning: bool = False,
        prepack: bool = True,
    ) -> None:
        try:
            import onnxruntime as ort
        except ImportError as exc:
            raise XomniError("the onnxruntime backend needs onnxruntime: pip install 'xomni[onnx]'") from exc
        if not Path(path).is_file():
            raise CheckpointError(f"ONNX graph {path} is missing")
        available = ort.get_available_providers()
        unknown = [p for p in providers if p not in available]
        if unknown:
            raise XomniError(
                f"execution providers {unknown} are not available in this onnxruntime "
                f"(available: {', '.join(available)})"
            )
        if threads is not None and threads < 1:
            raise XomniError(f"onnxruntime threads must be at least 1, got {threads}")
        options = ort.SessionOptions()
        options.log_severity_level = 3
        options.intra_op_num_threads = threads or default_threads()
        options.inter_op_num_threads = 1  # the graphs run sequentially
        spin = "1" if spinning else "0"
        options.add_session_config_entry("session.intra_op.allow_spinning", spin)
        options.add_session_config_entry("session.inter_op.allow_spinning", spin)
        if not prepack:
            options.add_session_config_entry("session.disable_prepacking", "1")
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """CPU tensors cross as numpy arrays without copies both ways: onnxruntime reads the
        inputs' memory and its outputs' arrays wrap its own buffers. So a KV cache fed back step
        after step is never copied here (binding OrtValues measured no faster)."""

        feeds: dict[str, Any] = {}
        for name in self.input_names:
            if name not in inputs:
                raise XomniError(f"ONNX graph input {name!r} not given; got {sorted(inputs)}")
            feeds[name] = _to_numpy(inputs[name])
        outputs = self.session.run(self.output_names, feeds)
        return {name: _to_torch(value) for name, value in zip(self.output_names, outputs, strict=True)}


def _to_torch(array: Any) -> torch.Tensor:
    import torch

    if array.dtype.name == "bfloat16":
        return torch.from_numpy(array.view("int16")).view(torch.bfloat16)
    return torch.from_numpy(array)


def _to_numpy(tensor: torch.Tensor) -> Any:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
