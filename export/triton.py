"""A Triton Inference Server model repository from exported components.

Every exported graph becomes one model, ``<component>_<graph>``, with a ``config.pbtxt`` built as
Triton's own ``ModelConfig`` protobuf and a version folder ``1/``:

* ``onnxruntime``: ``1/model.onnx`` plus the graph's external weight files under their exported
  names (the graph refers to them by name);
* ``tensorrt``: ``1/model.sm<XY>.plan`` for every GPU architecture an engine was built for,
  chosen by Triton through ``cc_model_filenames``; the newest is also the default file. Triton's
  TensorRT must be the version recorded in the export manifest, or the plans will not load.

Batching: a graph whose every input and output starts with the batch dim gets
``max_batch_size`` (at most the dim's max) and, when asked, ``dynamic_batching``; its dims leave
out the batch axis, as Triton implies it. Other graphs get ``max_batch_size: 0`` and full dims.
Dynamic axes are ``-1``. Triton wants at least one dim per tensor, so a scalar (or a tensor that
is only the batch axis) is declared ``dims: [1]`` with ``reshape: { shape: [] }``: clients send
one element and the model sees a scalar.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

from xomni_core import CheckpointError, XomniError, atomic_directory

from .manifest import read_manifest
from .tensorrt import rebuild_command

TritonBackend = Literal["onnxruntime", "tensorrt"]
InstanceKind = Literal["gpu", "cpu"]

PLATFORMS: Mapping[str, str] = {"onnxruntime": "onnxruntime_onnx", "tensorrt": "tensorrt_plan"}
DATA_TYPES: Mapping[str, str] = {
    "float32": "TYPE_FP32",
    "float16": "TYPE_FP16",
    "bfloat16": "TYPE_BF16",
    "int64": "TYPE_INT64",
    "int32": "TYPE_INT32",
    "int8": "TYPE_INT8",
    "uint8": "TYPE_UINT8",
    "bool": "TYPE_BOOL",
}
VERSION = "1"
CONFIG_FILE = "config.pbtxt"
ONNX_FILE = "model.onnx"


def model_config_pb2() -> Any:
    """Triton's ``model_config_pb2`` module, or an error saying how to install it."""
    try:
        from tritonclient.grpc import model_config_pb2
    except (ImportError, RuntimeError) as exc:  # tritonclient raises RuntimeError without grpc
        raise XomniError(
            "writing a Triton repository needs Triton's model config protobuf: "
            "pip install 'tritonclient[grpc]' (part of 'xomni[gpu]')"
        ) from exc
    return model_config_pb2


def batch_size_for(graph_entry: Mapping[str, Any], max_batch_size: int, batch_dim: str = "batch") -> int:
    """Triton's ``max_batch_size`` for a manifest graph entry: 0 unless it can batch on axis 0."""
    dims = {d["name"]: d for d in graph_entry.get("dims", [])}
    tensors = [*graph_entry["inputs"], *graph_entry["outputs"]]
    if max_batch_size <= 0 or batch_dim not in dims or dims[batch_dim]["min"] > 1:
        return 0
    if not all(t["shape"] and t["shape"][0] == batch_dim for t in tensors):
        return 0
    return min(max_batch_size, int(dims[batch_dim]["max"]))


def model_config(
    name: str,
    graph_entry: Mapping[str, Any],
    *,
    backend: TritonBackend,
    max_batch_size: int = 8,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 0,
    instance_kind: InstanceKind = "gpu",
    instance_count: int = 1,
    cc_model_filenames: Mapping[str, str] | None = None,
    batch_dim: str = "batch",
) -> Any:
    """The ``ModelConfig`` message of one exported graph (see the module docstring)."""
    pb = model_config_pb2()
    batch = batch_size_for(graph_entry, max_batch_size, batch_dim)
    config = pb.ModelConfig(name=name, platform=PLATFORMS[backend], backend=backend, max_batch_size=batch)
    for field, tensors in ((config.input, graph_entry["inputs"]), (config.output, graph_entry["outputs"])):
        for tensor in tensors:
            if tensor["dtype"] not in DATA_TYPES:
                raise XomniError(f"model {name}: Triton has no type for {tensor['name']} ({tensor['dtype']})")
            shape = list(tensor["shape"])[1 if batch else 0 :]
            io = field.add(name=tensor["name"], data_type=pb.DataType.Value(DATA_TYPES[tensor["dtype"]]))
            if shape:
                io.dims.extend(axis if isinstance(axis, int) else -1 for axis in shape)
            else:
                io.dims.append(1)
                io.reshape.SetInParent()  # an empty reshape: the model sees a scalar
    if batch and dynamic_batching:
        config.dynamic_batching.SetInParent()
        if max_queue_delay_us:
            config.dynamic_batching.max_queue_delay_microseconds = max_queue_delay_us
    kind = pb.ModelInstanceGroup.Kind.Value(f"KIND_{instance_kind.upper()}")
    config.instance_group.add(kind=kind, count=instance_count)
    if backend == "onnxruntime":
        config.default_model_filename = ONNX_FILE
    elif cc_model_filenames:
        config.cc_model_filenames.update(cc_model_filenames)
        config.default_model_filename = cc_model_filenames[max(cc_model_filenames, key=_capability)]
    return config


def write_triton_repository(
    export_folders: Mapping[str, str | Path], repository: str | Path, **settings: Any
) -> list[str]:
    """Write a Triton model repository for the export folders (by component name); returns the
    model names. ``settings`` are those of :func:`write_graph_models`. The repository is
    replaced atomically: a failed write leaves the old one."""
    with atomic_directory(repository) as tmp:
        return write_graph_models(export_folders, tmp, **settings)


def write_graph_models(
    export_folders: Mapping[str, str | Path],
    repository: Path,
    *,
    backend: TritonBackend,
    max_batch_size: int = 8,
    dynamic_batching: bool = True,
    max_queue_delay_us: int = 0,
    instance_kind: InstanceKind = "gpu",
    instance_count: int = 1,
    batch_dim: str = "batch",
) -> list[str]:
    """Write one model per exported graph into the (new, being written) ``repository`` folder."""
    from google.protobuf import text_format

    if backend not in PLATFORMS:
        raise XomniError(f"Triton backend {backend!r} is not supported; use one of {sorted(PLATFORMS)}")
    if backend == "tensorrt" and instance_kind != "gpu":
        raise XomniError("TensorRT models run on GPU instances only")
    names: list[str] = []
    for component, folder in export_folders.items():
        folder = Path(folder)
        manifest = read_manifest(folder)
        for graph, entry in manifest["graphs"].items():
            name = f"{component}_{graph}"
            if name in names:
                raise XomniError(f"two exported graphs would both be Triton model {name!r}")
            version = repository / name / VERSION
            version.mkdir(parents=True)
            if backend == "onnxruntime":
                place(folder / entry["file"], version / ONNX_FILE)
                for extra in entry.get("external_data", []):
                    place(folder / extra, version / extra)
                plans = None
            else:
                plans = _place_plans(folder, manifest, graph, version)
            config = model_config(
                name,
                entry,
                backend=backend,
                max_batch_size=max_batch_size,
                dynamic_batching=dynamic_batching,
                max_queue_delay_us=max_queue_delay_us,
                instance_kind=instance_kind,
                instance_count=instance_count,
                cc_model_filenames=plans,
                batch_dim=batch_dim,
            )
            (repository / name / CONFIG_FILE).write_text(text_format.MessageToString(config))
            names.append(name)
    return names


def _place_plans(folder: Path, manifest: Mapping[str, Any], graph: str, version: Path) -> dict[str, str]:
    """Copy the graph's engines into ``version``; ``cc_model_filenames`` for them."""
    rebuild = rebuild_command(manifest.get("kind", "KIND"), folder)
    engines: Mapping[str, Any] = manifest.get("tensorrt", {}).get("engines", {}).get(graph, {})
    if not engines:
        raise CheckpointError(
            f"{folder} has no TensorRT engine for graph {graph!r}; build engines with: {rebuild}"
        )
    filenames = {}
    for capability, engine in engines.items():
        if engine.get("onnx_sha256") != manifest["graphs"][graph]["sha256"]:
            raise CheckpointError(
                f"{folder / engine['file']} was built from another ONNX graph than {folder} holds now; "
                f"rebuild it with: {rebuild}"
            )
        filename = "model.sm" + capability.replace(".", "") + ".plan"
        place(folder / engine["file"], version / filename)
        filenames[capability] = filename
    return filenames


def _capability(key: str) -> tuple[int, ...]:
    return tuple(int(part) for part in key.split("."))


def place(source: Path, target: Path) -> None:
    """Put ``source`` at ``target``: a hard link where the filesystem allows, else a copy."""
    if not source.is_file():
        raise CheckpointError(f"{source} is missing; re-export the component")
    # Weights can be gigabytes: share the file when the repository is on the same filesystem.
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
