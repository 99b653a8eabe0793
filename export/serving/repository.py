"""A Triton model repository that serves whole pipelines.

Beside one model per exported graph (:mod:`xomni_export.triton`), the repository holds the
pipeline models, Triton Python-backend models that run the exported artefacts in process through
the same runtime components as ``pipeline.onnxruntime.yaml``:

* ``xomni_text_to_image``: prompt (and optional settings) -> image, PNG, image tokens, settings;
  the dynamic batcher groups requests and the model samples and decodes them as one batch;
* ``xomni_understanding``: image and question -> answer, one request at a time.

Each keeps its artefacts under ``<model>/1/pipeline/`` (hard links where the filesystem allows)
with ``artefacts.json``, so a repository can be copied to any machine whose Triton has the
Python backend and whose Python has ``xomni`` installed.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Literal

import yaml

from xomni_core import XomniError, atomic_directory

from ..manifest import read_manifest
from ..triton import (
    CONFIG_FILE,
    VERSION,
    TritonBackend,
    model_config_pb2,
    place,
    write_graph_models,
)
from .artefacts import PIPELINE_FOLDER, write_artefact_list
from .options import TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL, ServingOptions
from .service import TEXT_TO_IMAGE_INPUTS, TEXT_TO_IMAGE_OUTPUTS, ServedTensor
from .understanding import UNDERSTANDING_INPUTS, UNDERSTANDING_OUTPUTS

SLOTS = ("tokenizer", "backbone", "decoder")
RUNTIME_CONFIG = "pipeline.yaml"
MODEL_FILE = "model.py"
#: The whole of each pipeline model's ``model.py``: the code it runs is the installed package's.
MODEL_SOURCE = '''"""Triton Python-backend entry of an xomni pipeline model; the code is installed xomni's."""


class TritonPythonModel:
    def initialize(self, args):
        try:
            from xomni_export.serving.triton_model import load_model
        except ImportError as exc:
            import sys

            raise RuntimeError(
                f"xomni is not importable by this Python ({sys.executable}, prefix {sys.prefix}): {exc}. "
                "Install xomni into the Python that Triton's Python backend runs, or start the server "
                "with `xomni serve`"
            ) from exc
        self.model = load_model(args)

    def execute(self, requests):
        return self.model.execute(requests)
'''


def write_serving_repository(
    export_dir: str | Path,
    repository: str | Path,
    options: ServingOptions | None = None,
    *,
    graph_models: bool = True,
) -> list[str]:
    """Write a repository serving the pipeline exported in ``export_dir`` (its component folders
    and ``pipeline.onnxruntime.yaml``, as ``xomni export`` leaves them); returns the model names.
    The repository appears whole or not at all."""
    with atomic_directory(repository) as tmp:
        return write_serving_models(export_dir, tmp, options, graph_models=graph_models)


def write_serving_models(
    export_dir: str | Path,
    repository: Path,
    options: ServingOptions | None = None,
    *,
    graph_models: bool = True,
) -> list[str]:
    """Write the pipeline models (and, with ``graph_models``, one model per graph) into the
    (new, being written) ``repository`` folder; returns the model names."""
    options = options or ServingOptions()
    export_dir = Path(export_dir)
    folders = _exported_folders(export_dir, options.backend)
    runtime = _runtime_config(export_dir, options.backend)
    names = []
    digests: dict[tuple[int, ...], str] = {}  # the two pipeline models share their files' hashes
    if graph_models:
        names += write_graph_models(
            folders,
            repository,
            backend=options.backend,
            max_batch_size=options.max_batch_size,
            max_queue_delay_us=options.max_queue_delay_us,
            instance_kind=options.instance_kind,
            instance_count=options.instance_count,
        )
    _write_pipeline_model(
        repository / TEXT_TO_IMAGE_MODEL,
        folders,
        runtime,
        options,
        TEXT_TO_IMAGE_INPUTS,
        TEXT_TO_IMAGE_OUTPUTS,
        digests=digests,
    )
    names.append(TEXT_TO_IMAGE_MODEL)
    understanding = {slot: folders[slot] for slot in ("tokenizer", "backbone")}
    _write_pipeline_model(
        repository / UNDERSTANDING_MODEL,
        understanding,
        {key: value for key, value in runtime.items() if key != "decoder"},
        options,
        UNDERSTANDING_INPUTS,
        UNDERSTANDING_OUTPUTS,
        dynamic_batching=False,
        digests=digests,
    )
    names.append(UNDERSTANDING_MODEL)
    return names


def _exported_folders(export_dir: Path, backend: TritonBackend) -> dict[str, Path]:
    """Every slot's export folder; a clear error when one was not exported (or, for TensorRT,
    has no engines)."""
    folders = {}
    for slot in SLOTS:
        folder = export_dir / slot
        manifest = read_manifest(folder)
        if backend == "tensorrt" and not manifest.get("tensorrt", {}).get("engines"):
            raise XomniError(f"{folder} has no TensorRT engines; export with --triton-backend tensorrt")
        folders[slot] = folder
    return folders


def _runtime_config(export_dir: Path, backend: TritonBackend) -> dict[str, Any]:
    """The export's runtime config with every slot on ``backend`` from its folder in the model."""
    source = export_dir / "pipeline.onnxruntime.yaml"
    if not source.is_file():
        source = export_dir / "pipeline.tensorrt.yaml"
    if not source.is_file():
        raise XomniError(f"{export_dir} holds no pipeline.onnxruntime.yaml: export the whole pipeline first")
    data = yaml.safe_load(source.read_text())
    if not isinstance(data, dict):
        raise XomniError(f"{source} is not a pipeline config")
    for slot in SLOTS:
        section = data.get(slot)
        if not isinstance(section, dict) or section.get("backend") not in ("onnxruntime", "tensorrt"):
            raise XomniError(f"{source}: {slot} does not run exported artefacts; export all three slots")
        data[slot] = {**section, "backend": backend, "weights": slot}
    return data


def _write_pipeline_model(
    model_dir: Path,
    folders: dict[str, Path],
    runtime: dict[str, Any],
    options: ServingOptions,
    inputs: Sequence[ServedTensor],
    outputs: Sequence[ServedTensor],
    *,
    dynamic_batching: bool = True,
    digests: dict[tuple[int, ...], str],
) -> None:
    from google.protobuf import text_format

    artefacts = model_dir / VERSION / PIPELINE_FOLDER
    for slot, folder in folders.items():
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            target = artefacts / slot / path.relative_to(folder)
            target.parent.mkdir(parents=True, exist_ok=True)
            place(path, target)
    (artefacts / RUNTIME_CONFIG).write_text(yaml.safe_dump(runtime, sort_keys=False))
    write_artefact_list(artefacts, digests)
    (model_dir / VERSION / MODEL_FILE).write_text(MODEL_SOURCE)
    config = _model_config(model_dir.name, options, inputs, outputs, dynamic_batching=dynamic_batching)
    (model_dir / CONFIG_FILE).write_text(text_format.MessageToString(config))


def _model_config(
    name: str,
    options: ServingOptions,
    inputs: Sequence[ServedTensor],
    outputs: Sequence[ServedTensor],
    *,
    dynamic_batching: bool,
) -> Any:
    pb = model_config_pb2()
    config = pb.ModelConfig(name=name, backend="python", max_batch_size=options.max_batch_size)
    for field, tensors in ((config.input, inputs), (config.output, outputs)):
        for tensor in tensors:
            io = field.add(name=tensor.name, data_type=pb.DataType.Value(tensor.data_type))
            io.dims.extend(tensor.dims)
            if field is config.input and tensor.optional:
                io.optional = True
    if dynamic_batching:
        config.dynamic_batching.SetInParent()
        config.dynamic_batching.max_queue_delay_microseconds = options.max_queue_delay_us
    kind: Literal["KIND_CPU", "KIND_GPU"] = "KIND_GPU" if options.instance_kind == "gpu" else "KIND_CPU"
    config.instance_group.add(kind=pb.ModelInstanceGroup.Kind.Value(kind), count=options.instance_count)
    config.parameters["pipeline_config"].string_value = RUNTIME_CONFIG
    if options.threads is not None:
        config.parameters["threads"].string_value = str(options.threads)
    return config
