"""The pipeline models as Triton Python-backend models.

A repository's ``<model>/1/model.py`` is a few lines that import this module; everything else
lives here, versioned with the package. ``triton_python_backend_utils`` exists only inside
Triton's Python-backend stub, so it is imported when a model is initialised.
"""

from __future__ import annotations

import json
import traceback
from pathlib import Path
from typing import Any

import numpy as np

from xomni_core import InputError, XomniError

from .artefacts import PIPELINE_FOLDER, verify_artefacts
from .options import UNDERSTANDING_MODEL
from .service import TEXT_TO_IMAGE_INPUTS, ImageRender, TextToImageService, outputs
from .understanding import UNDERSTANDING_INPUTS, UnderstandingService


def load_model(args: dict[str, str]) -> Any:
    """The model object behind a repository's ``model.py``, chosen by the model's name."""
    config = json.loads(args["model_config"])
    parameters = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
    folder = Path(args["model_repository"]) / args["model_version"] / PIPELINE_FOLDER
    verify_artefacts(folder)
    device = "cpu"
    if args.get("model_instance_kind") == "GPU":
        device = f"cuda:{args.get('model_instance_device_id', '0')}"
    overrides = [f"runtime.device={device}"]
    if parameters.get("threads"):
        overrides.append(f"runtime.threads={int(parameters['threads'])}")
    pipeline_config = folder / parameters["pipeline_config"]
    if config["name"] == UNDERSTANDING_MODEL or parameters.get("task") == "understanding":
        return UnderstandingModel(pipeline_config, overrides)
    return TextToImageModel(pipeline_config, overrides)


def _utils() -> Any:
    import triton_python_backend_utils as pb_utils

    return pb_utils


def _error(pb_utils: Any, message: str, *, client_fault: bool) -> Any:
    """An error response; a client's fault is ``INVALID_ARG`` (HTTP 400), anything else internal."""
    code = getattr(pb_utils.TritonError, "INVALID_ARG" if client_fault else "INTERNAL", None)
    error = pb_utils.TritonError(message) if code is None else pb_utils.TritonError(message, code)
    return pb_utils.InferenceResponse(output_tensors=[], error=error)


def _inputs(pb_utils: Any, request: Any, names: list[str]) -> dict[str, np.ndarray]:
    arrays = {}
    for name in names:
        tensor = pb_utils.get_input_tensor_by_name(request, name)
        if tensor is not None:
            arrays[name] = tensor.as_numpy()
    return arrays


def _load_pipeline(kind: str, pipeline_config: Path, overrides: list[str]) -> Any:
    from xomni_core.config import load_config

    config = load_config(pipeline_config, overrides)  # building applies its runtime settings
    if kind == "understanding":
        from xomni_core.pipelines import ImageUnderstandingPipeline

        return ImageUnderstandingPipeline.from_config(config)
    from xomni_core.pipelines import TextToImagePipeline

    return TextToImagePipeline.from_config(config)


class TextToImageModel:
    """Answers a batch of text-to-image requests: parse each, render all in as few batches as
    their settings allow, answer each with its images or its error."""

    def __init__(self, pipeline_config: Path, overrides: list[str]) -> None:
        self.service = TextToImageService(_load_pipeline("text_to_image", pipeline_config, overrides))
        self.input_names = [spec.name for spec in TEXT_TO_IMAGE_INPUTS]

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = _utils()
        parsed: list[list[Any] | InputError] = []
        for request in requests:
            try:
                parsed.append(self.service.jobs(_inputs(pb_utils, request, self.input_names)))
            except InputError as exc:
                parsed.append(exc)
        jobs = [job for item in parsed if not isinstance(item, InputError) for job in item]
        try:
            renders = iter(self.service.render(jobs))
        except Exception as exc:  # a fault of ours: every request of the batch is told, the server lives on
            message = f"text to image failed: {exc}"
            pb_utils.Logger.log_error(message + "\n" + traceback.format_exc())
            return [_error(pb_utils, message, client_fault=False) for _ in requests]
        responses = []
        for request, item in zip(requests, parsed, strict=True):
            if isinstance(item, InputError):
                responses.append(_error(pb_utils, str(item), client_fault=True))
                continue
            mine = [next(renders) for _ in item]
            failed = [render for render in mine if not isinstance(render, ImageRender)]
            if failed:
                responses.append(_error(pb_utils, str(failed[0]), client_fault=True))
                continue
            arrays = outputs(mine, request.requested_output_names())
            tensors = [pb_utils.Tensor(name, array) for name, array in arrays.items()]
            responses.append(pb_utils.InferenceResponse(output_tensors=tensors))
        return responses


class UnderstandingModel:
    """Answers questions about images, one request at a time."""

    def __init__(self, pipeline_config: Path, overrides: list[str]) -> None:
        self.service = UnderstandingService(_load_pipeline("understanding", pipeline_config, overrides))
        self.input_names = [spec.name for spec in UNDERSTANDING_INPUTS]

    def execute(self, requests: list[Any]) -> list[Any]:
        pb_utils = _utils()
        responses = []
        for request in requests:
            try:
                answers = self.service.answer(_inputs(pb_utils, request, self.input_names))
            except XomniError as exc:
                responses.append(_error(pb_utils, str(exc), client_fault=isinstance(exc, InputError)))
                continue
            except Exception as exc:
                pb_utils.Logger.log_error(f"understanding failed: {exc}\n{traceback.format_exc()}")
                responses.append(_error(pb_utils, f"understanding failed: {exc}", client_fault=False))
                continue
            responses.append(pb_utils.InferenceResponse(output_tensors=[pb_utils.Tensor("text", answers)]))
        return responses
