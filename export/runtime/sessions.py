"""One exported graph, ready to run: the common face of onnxruntime and TensorRT.

A session takes torch tensors keyed by the spec's names and returns torch tensors, so runtime
components do not care which engine runs underneath. Outputs named in ``keep`` may come back in
the engine's own form instead (an ``OrtValue`` for onnxruntime), to be given back as inputs of a
later run without a conversion: a decode loop keeps its KV cache that way.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from xomni_core import CheckpointError, XomniError

if TYPE_CHECKING:
    import torch


class GraphSession(Protocol):
    input_names: list[str]
    output_names: list[str]

    def run(self, inputs: Mapping[str, Any], keep: Collection[str] = ()) -> dict[str, Any]:
        """Outputs by name for inputs by name: torch tensors, except that outputs in ``keep``
        may stay engine-native values, which any later run accepts as inputs."""
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
    """

    def __init__(
        self,
        path: str | Path,
        providers: Sequence[str] = ("CPUExecutionProvider",),
        *,
        threads: int | None = None,
        spinning: bool = False,
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
        self.session = ort.InferenceSession(str(path), sess_options=options, providers=list(providers))
        self.input_names = [i.name for i in self.session.get_inputs()]
        self.output_names = [o.name for o in self.session.get_outputs()]
        self._ort_value = ort.OrtValue

    def run(self, inputs: Mapping[str, Any], keep: Collection[str] = ()) -> dict[str, Any]:
        """Inputs are torch tensors or ``OrtValue`` s; outputs in ``keep`` stay ``OrtValue`` s
        (in CPU memory) that a later run takes without a copy."""
        import torch

        binding = self.session.io_binding()
        for name in self.input_names:
            if name not in inputs:
                raise XomniError(f"ONNX graph input {name!r} not given; got {sorted(inputs)}")
            value = inputs[name]
            if isinstance(value, self._ort_value):
                binding.bind_ortvalue_input(name, value)
            else:
                binding.bind_cpu_input(name, _to_numpy(value))
        for name in self.output_names:
            binding.bind_output(name, "cpu")
        self.session.run_with_iobinding(binding)
        values = binding.get_outputs()
        return {
            name: value if name in keep else _to_torch(value.numpy(), torch)
            for name, value in zip(self.output_names, values, strict=True)
        }


def to_torch(value: Any) -> torch.Tensor:
    """A torch tensor of a session output, kept or not."""
    import torch

    if isinstance(value, torch.Tensor):
        return value
    return _to_torch(value.numpy(), torch)


def _to_torch(array: Any, torch: Any) -> torch.Tensor:
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
