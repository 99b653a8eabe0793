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


class OrtSession:
    """An ONNX Runtime inference session over torch tensors (through numpy)."""

    def __init__(self, path: str | Path, providers: Sequence[str] = ("CPUExecutionProvider",)) -> None:
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
        options = ort.SessionOptions()
        options.log_severity_level = 3
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        feeds: dict[str, Any] = {}
        for name in self.input_names:
            if name not in inputs:
                raise XomniError(f"ONNX graph input {name!r} not given; got {sorted(inputs)}")
            feeds[name] = _to_numpy(inputs[name])
        outputs = self.session.run(self.output_names, feeds)
        return {name: torch.from_numpy(value) for name, value in zip(self.output_names, outputs, strict=True)}


def _to_numpy(tensor: torch.Tensor) -> Any:
    import torch

    tensor = tensor.detach().cpu().contiguous()
    if tensor.dtype == torch.bfloat16:
        import ml_dtypes

        return tensor.view(torch.int16).numpy().view(ml_dtypes.bfloat16)
    return tensor.numpy()
