"""TensorRT engines built from an ONNX export, and a session that runs them.

:func:`build_engines` turns each graph of an ONNX export folder into a serialized engine for the
GPU it runs on: a strongly typed network (every tensor keeps the precision of the ONNX graph),
one optimisation profile spanning the dims of the manifest, and a timing cache kept beside the
engines so rebuilds are fast. Engines land in ``<folder>/tensorrt/<graph>.sm<XY>.plan`` and are
recorded in the manifest's ``tensorrt`` section::

    "tensorrt": {"engines": {"<graph>": {"9.0": {"file", "sha256", "onnx_sha256",
                 "tensorrt_version", "gpu", "compute_capability", "built_utc", "flags"}}}}

An engine runs only on the GPU architecture and TensorRT version that built it, and computes
only what its source graph computed; :class:`TrtSession` checks all three against the manifest
and refuses with the command that rebuilds. Those checks, the plan names and the profile shapes
are plain functions that need neither TensorRT nor a GPU.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tqdm.auto import tqdm

from xomni_core import CheckpointError, XomniError, atomic_file

from .manifest import now_utc, read_manifest, write_manifest
from .onnx_export import ExportError
from .spec import TensorSpec

if TYPE_CHECKING:
    import torch

ENGINE_FOLDER = "tensorrt"
DEFAULT_WORKSPACE_BYTES = 8 << 30
INSTALL_HINT = "pip install 'xomni[gpu]'"


@dataclass(frozen=True)
class ProfileShape:
    """The min/opt/max shapes of one input in a TensorRT optimisation profile."""

    min: tuple[int, ...]
    opt: tuple[int, ...]
    max: tuple[int, ...]

    def to_json(self) -> dict[str, list[int]]:
        return {"min": list(self.min), "opt": list(self.opt), "max": list(self.max)}


# --- pure helpers: no TensorRT, no GPU ------------------------------------------------------


def capability_key(capability: tuple[int, int]) -> str:
    """``(9, 0)`` -> ``"9.0"``: the manifest key, as Triton's ``cc_model_filenames`` spells it."""
    return f"{capability[0]}.{capability[1]}"


def plan_filename(graph: str, capability: tuple[int, int]) -> str:
    """``("prefill", (9, 0))`` -> ``"prefill.sm90.plan"``."""
    return f"{graph}.sm{capability[0]}{capability[1]}.plan"


def rebuild_command(kind: str, folder: str | Path) -> str:
    """The export that rebuilds the component folder ``folder``: ``--out`` names the export
    folder that holds it."""
    return f"xomni export CONFIG --component {kind} --format tensorrt --out {Path(folder).parent}"


def profile_shapes(graph_entry: Mapping[str, Any]) -> dict[str, ProfileShape]:
    """Profile shapes of the dynamic inputs of a manifest graph entry.

    Each dim takes its min, opt and max in turn; sum axes (``"past+seq"``) and multiples
    (``"16*grid_h"``) are evaluated from them. Inputs of fixed shape need no profile entry.
    """
    dims = graph_entry.get("dims", [])
    sizes = {which: {d["name"]: int(d[which]) for d in dims} for which in ("min", "opt", "max")}
    shapes = {}
    for tensor in graph_entry["inputs"]:
        shape = tuple(tensor["shape"])
        if all(isinstance(axis, int) for axis in shape):
            continue
        spec = TensorSpec(tensor["name"], tensor["dtype"], shape)
        low, opt, high = (spec.concrete_shape(sizes[which]) for which in ("min", "opt", "max"))
        shapes[spec.name] = ProfileShape(low, opt, high)
    return shapes


def select_engine(
    manifest: Mapping[str, Any],
    graph: str,
    *,
    folder: str | Path,
    capability: tuple[int, int],
    tensorrt_version: str,
    onnx_sha256: str,
    gpu_name: str = "",
) -> dict[str, Any]:
    """The manifest entry of the engine of ``graph`` that may run here, or a refusal.

    Refuses (:class:`~xomni_core.CheckpointError`, naming the rebuild command) when no engine was
    built for this compute capability, when it was built by another TensorRT version, or when
    its source ONNX graph is not the one the folder holds now.
    """
    rebuild = rebuild_command(manifest.get("kind", "KIND"), folder)
    engines: Mapping[str, Any] = manifest.get("tensorrt", {}).get("engines", {}).get(graph, {})
    key = capability_key(capability)
    if not engines:
        raise CheckpointError(
            f"{folder} has no TensorRT engine for graph {graph!r}; build engines on this GPU with: {rebuild}"
        )
    if key not in engines:
        here = f"{gpu_name}, compute capability {key}" if gpu_name else f"compute capability {key}"
        built = ", ".join(sorted(engines, key=lambda k: tuple(int(p) for p in k.split("."))))
        raise CheckpointError(
            f"{folder} has no TensorRT engine of graph {graph!r} for this GPU ({here}); it has engines for "
            f"compute capability {built} only, and an engine runs only on the GPU architecture that built "
            f"it. Build one on this GPU with: {rebuild}"
        )
    entry: dict[str, Any] = dict(engines[key])
    if entry.get("tensorrt_version") != tensorrt_version:
        raise CheckpointError(
            f"{folder / entry['file']} was built with TensorRT {entry.get('tensorrt_version')} but TensorRT "
            f"{tensorrt_version} is installed; an engine loads only in the TensorRT version that built it. "
            f"Rebuild it with: {rebuild}"
        )
    if entry.get("onnx_sha256") != onnx_sha256:
        raise CheckpointError(
            f"{folder / entry['file']} was built from another ONNX graph than {folder} holds now (sha256 "
            f"{str(entry.get('onnx_sha256'))[:12]}... at build, {onnx_sha256[:12]}... now). "
            f"Rebuild it with: {rebuild}"
        )
    return entry


# --- TensorRT ---------------------------------------------------------------------------------


def import_tensorrt() -> Any:
    """The ``tensorrt`` module, or an error saying how to install it."""
    try:
        import tensorrt
    except ImportError as exc:
        raise XomniError(f"the tensorrt backend needs TensorRT and an NVIDIA GPU: {INSTALL_HINT}") from exc
    return tensorrt


_LOGGERS: dict[int, Any] = {}


def _logger(trt: Any) -> Any:
    # TensorRT wants one logger for the builders and runtimes of a process.
    if id(trt) not in _LOGGERS:
        _LOGGERS[id(trt)] = trt.Logger(trt.Logger.WARNING)
    return _LOGGERS[id(trt)]


def _cuda_device(device: str | torch.device) -> torch.device:
    import torch

    resolved = torch.device(device)
    if resolved.type != "cuda":
        raise XomniError(f"the tensorrt backend runs on CUDA devices, not {str(device)!r}")
    if not torch.cuda.is_available():
        raise XomniError("the tensorrt backend needs an NVIDIA GPU, and torch sees no CUDA device")
    return torch.device("cuda", torch.cuda.current_device() if resolved.index is None else resolved.index)


def build_engines(
    folder: str | Path,
    *,
    graphs: Sequence[str] | None = None,
    timing_cache: str | Path | None = None,
    workspace_bytes: int = DEFAULT_WORKSPACE_BYTES,
    show_progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Build a TensorRT engine for each graph of the ONNX export ``folder`` on the current GPU.

    ``timing_cache`` defaults to ``<folder>/tensorrt/timing.sm<XY>.cache``: timings hold only for
    the GPU that measured them, so each architecture keeps its own. Returns the new manifest
    entries by graph; the manifest is rewritten after each engine.
    """
    import torch

    trt = import_tensorrt()
    folder = Path(folder)
    manifest = read_manifest(folder)
    available = manifest.get("graphs", {})
    names = list(available) if graphs is None else list(graphs)
    unknown = [name for name in names if name not in available]
    if unknown:
        raise ExportError(f"{folder} has no ONNX graphs {unknown}; it has {sorted(available)}")
    device = _cuda_device("cuda")
    capability = torch.cuda.get_device_capability(device)
    gpu_name = torch.cuda.get_device_name(device)
    sm = f"sm{capability[0]}{capability[1]}"
    cache_path = Path(timing_cache) if timing_cache else folder / ENGINE_FOLDER / f"timing.{sm}.cache"

    logger = _logger(trt)
    builder = trt.Builder(logger)
    cache = None
    built: dict[str, dict[str, Any]] = {}
    steps = tqdm(names, desc="tensorrt", disable=not show_progress, leave=False)
    for name in steps:
        steps.set_postfix_str(name)
        entry = available[name]
        config = builder.create_builder_config()
        config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, workspace_bytes)
        if cache is None:
            cache = _load_timing_cache(config, cache_path)
        elif not config.set_timing_cache(cache, False):
            raise ExportError("TensorRT refused its own timing cache")
        # The parser owns weights the network references: keep it alive until the build is done.
        network, _parser = _parse_network(trt, builder, logger, folder / entry["file"])
        shapes = profile_shapes(entry)
        _check_inputs(network, entry, shapes, name)
        profile = builder.create_optimization_profile()
        for input_name, shape in shapes.items():
            profile.set_shape(input_name, shape.min, shape.opt, shape.max)
        config.add_optimization_profile(profile)
        serialized = builder.build_serialized_network(network, config)
        if serialized is None:
            raise ExportError(f"TensorRT could not build an engine for graph {name!r} (see its log above)")
        relative = f"{ENGINE_FOLDER}/{plan_filename(name, capability)}"
        with atomic_file(folder / relative) as tmp:
            tmp.write_bytes(serialized)
        with atomic_file(cache_path) as tmp:
            tmp.write_bytes(config.get_timing_cache().serialize())
        record = {
            "file": relative,
            "sha256": hashlib.sha256(serialized).hexdigest(),
            "onnx_sha256": entry["sha256"],
            "tensorrt_version": trt.__version__,
            "gpu": gpu_name,
            "compute_capability": capability_key(capability),
            "built_utc": now_utc(),
            "flags": {
                "strongly_typed": True,
                "workspace_bytes": workspace_bytes,
                "builder_optimization_level": config.builder_optimization_level,
                "tf32": bool(hasattr(trt.BuilderFlag, "TF32") and config.get_flag(trt.BuilderFlag.TF32)),
                "profile": {input_name: shape.to_json() for input_name, shape in shapes.items()},
            },
        }
        if isinstance(manifest.get("files"), list):  # what `xomni export` may replace later
            written = {relative}
            if cache_path.resolve().parent.is_relative_to(folder.resolve()):
                written.add(cache_path.resolve().relative_to(folder.resolve()).as_posix())
            manifest["files"] = sorted({*manifest["files"], *written})
        engines = manifest.setdefault("tensorrt", {}).setdefault("engines", {})
        engines.setdefault(name, {})[capability_key(capability)] = record
        write_manifest(folder, manifest)
        built[name] = record
    return built


def _load_timing_cache(config: Any, path: Path) -> Any:
    blob = path.read_bytes() if path.is_file() else b""
    cache = config.create_timing_cache(blob)
    if config.set_timing_cache(cache, False):
        return cache
    # A cache measured on another GPU model or TensorRT version is refused; start afresh.
    cache = config.create_timing_cache(b"")
    if not config.set_timing_cache(cache, False):
        raise ExportError("TensorRT refused an empty timing cache")
    return cache


def _parse_network(trt: Any, builder: Any, logger: Any, onnx_path: Path) -> tuple[Any, Any]:
    if not onnx_path.is_file():
        raise CheckpointError(f"ONNX graph {onnx_path} is missing")
    flags = 0
    strongly_typed = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    if strongly_typed is not None:  # TensorRT 11 is always strongly typed and deprecates the flag
        flags |= 1 << int(strongly_typed)
    network = builder.create_network(flags)
    parser = trt.OnnxParser(network, logger)
    # Parsing from the path (not bytes) lets the parser find external weight files beside it.
    if not parser.parse_from_file(str(onnx_path)):
        errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
        raise ExportError(f"TensorRT cannot parse {onnx_path}: {errors}")
    return network, parser


def _check_inputs(
    network: Any, entry: Mapping[str, Any], shapes: Mapping[str, ProfileShape], graph: str
) -> None:
    parsed = [network.get_input(i) for i in range(network.num_inputs)]
    expected = [t["name"] for t in entry["inputs"]]
    if sorted(t.name for t in parsed) != sorted(expected):
        raise ExportError(
            f"graph {graph}: the ONNX inputs {[t.name for t in parsed]} differ from the manifest's {expected}"
        )
    shape_tensors = [t.name for t in parsed if t.is_shape_tensor]
    if shape_tensors:
        raise ExportError(
            f"graph {graph}: inputs {shape_tensors} are shape tensors, which these engines do not support"
        )
    for tensor in parsed:
        if any(axis < 0 for axis in tensor.shape) and tensor.name not in shapes:
            raise ExportError(
                f"graph {graph}: input {tensor.name} has dynamic axes {tuple(tensor.shape)}, "
                "but the manifest gives it a fixed shape"
            )


def _torch_dtypes(trt: Any) -> dict[Any, torch.dtype]:
    import torch

    pairs = {
        "FLOAT": torch.float32,
        "HALF": torch.float16,
        "BF16": torch.bfloat16,
        "INT8": torch.int8,
        "UINT8": torch.uint8,
        "INT32": torch.int32,
        "INT64": torch.int64,
        "BOOL": torch.bool,
        "FP8": torch.float8_e4m3fn,
    }
    known = [name for name in pairs if hasattr(trt.DataType, name)]
    return {getattr(trt.DataType, name): pairs[name] for name in known}


class TrtSession:
    """A deserialized TensorRT engine behind the :class:`GraphSession` face.

    Inputs are moved to the engine's device (they must already have the engine's dtypes);
    outputs are fresh CUDA tensors. Execution runs on the session's own CUDA stream, ordered
    after the caller's current stream, and :meth:`run` returns once it has finished.
    """

    def __init__(
        self, plan: bytes, *, device: str | torch.device = "cuda", name: str = "TensorRT engine"
    ) -> None:
        import torch

        trt = import_tensorrt()
        self.device = _cuda_device(device)
        with torch.cuda.device(self.device):
            # The runtime must outlive the engines it deserialized.
            self._runtime = trt.Runtime(_logger(trt))
            self.engine = self._runtime.deserialize_cuda_engine(plan)
            if self.engine is None:
                raise CheckpointError(f"TensorRT could not load {name} (see its log above)")
            self.context = self.engine.create_execution_context()
            self.stream = torch.cuda.Stream(self.device)
        names = [self.engine.get_tensor_name(i) for i in range(self.engine.num_io_tensors)]
        is_input = {n: self.engine.get_tensor_mode(n) == trt.TensorIOMode.INPUT for n in names}
        self.input_names = [n for n in names if is_input[n]]
        self.output_names = [n for n in names if not is_input[n]]
        dtypes = _torch_dtypes(trt)
        self._dtypes = {n: dtypes[self.engine.get_tensor_dtype(n)] for n in names}
        self._host_inputs = {
            n for n in self.input_names if self.engine.get_tensor_location(n) == trt.TensorLocation.HOST
        }
        self.name = name

    @classmethod
    def from_manifest(
        cls, folder: str | Path, graph: str, manifest: Mapping[str, Any], device: str = "cuda"
    ) -> TrtSession:
        """The engine of ``graph`` built for this GPU, after the checks of :func:`select_engine`."""
        import torch

        trt = import_tensorrt()
        folder = Path(folder)
        resolved = _cuda_device(device)
        entry = select_engine(
            manifest,
            graph,
            folder=folder,
            capability=torch.cuda.get_device_capability(resolved),
            tensorrt_version=trt.__version__,
            onnx_sha256=manifest["graphs"][graph]["sha256"],
            gpu_name=torch.cuda.get_device_name(resolved),
        )
        path = folder / entry["file"]
        rebuild = rebuild_command(manifest.get("kind", "KIND"), folder)
        if not path.is_file():
            raise CheckpointError(f"TensorRT engine {path} is missing; rebuild it with: {rebuild}")
        plan = path.read_bytes()
        if hashlib.sha256(plan).hexdigest() != entry["sha256"]:
            raise CheckpointError(
                f"TensorRT engine {path} changed since it was built; rebuild it with: {rebuild}"
            )
        return cls(plan, device=resolved, name=str(path))

    def run(self, inputs: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        import torch

        missing = [n for n in self.input_names if n not in inputs]
        if missing:
            raise XomniError(f"{self.name}: inputs {missing} not given; got {sorted(inputs)}")
        feeds: dict[str, torch.Tensor] = {}  # referenced until the stream has finished
        outputs: dict[str, torch.Tensor] = {}
        with torch.cuda.device(self.device):
            for name in self.input_names:
                tensor = inputs[name]
                expected = self._dtypes[name]
                if tensor.dtype != expected:
                    raise XomniError(f"{self.name}: input {name!r} must be {expected}, got {tensor.dtype}")
                place = torch.device("cpu") if name in self._host_inputs else self.device
                tensor = feeds[name] = tensor.detach().to(place).contiguous()
                if not self.context.set_input_shape(name, tuple(tensor.shape)):
                    raise XomniError(
                        f"{self.name}: input {name!r} of shape {tuple(tensor.shape)} is outside the shapes "
                        f"the engine was built for ({self._allowed_shapes(name)})"
                    )
                self.context.set_tensor_address(name, tensor.data_ptr())
            for name in self.output_names:
                shape = tuple(self.context.get_tensor_shape(name))
                if any(axis < 0 for axis in shape):
                    raise XomniError(f"{self.name}: output {name!r} has a data-dependent shape {shape}")
                outputs[name] = torch.empty(shape, dtype=self._dtypes[name], device=self.device)
                self.context.set_tensor_address(name, outputs[name].data_ptr())
            self.stream.wait_stream(torch.cuda.current_stream(self.device))
            if not self.context.execute_async_v3(self.stream.cuda_stream):
                raise XomniError(f"{self.name}: TensorRT execution failed (see its log above)")
            self.stream.synchronize()
        return outputs

    def _allowed_shapes(self, name: str) -> str:
        if -1 not in tuple(self.engine.get_tensor_shape(name)):
            return f"fixed {tuple(self.engine.get_tensor_shape(name))}"
        low, _, high = self.engine.get_tensor_profile_shape(name, 0)
        return f"from {tuple(low)} to {tuple(high)}"
