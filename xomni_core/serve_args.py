"""The command-line flags of ``xomni serve`` and ``xomni triton-repo`` (and the serving flags of
``xomni export``). Defining them imports nothing of the export package, so that every other
command starts without it; the commands themselves live in :mod:`xomni_export.serving.command`.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    Subcommands = argparse._SubParsersAction[argparse.ArgumentParser]

TEXT_TO_IMAGE_MODEL = "xomni_text_to_image"
UNDERSTANDING_MODEL = "xomni_understanding"
DEFAULT_MAX_BATCH_SIZE = 8
DEFAULT_MAX_QUEUE_DELAY_US = 20_000


def _run_serve(args: argparse.Namespace) -> int:
    from xomni_export.serving.command import run_serve

    code: int = run_serve(args)
    return code


def _run_repository(args: argparse.Namespace) -> int:
    from xomni_export.serving.command import run_repository

    code: int = run_repository(args)
    return code


def add_serve_parser(
    commands: Subcommands, add_overrides: Callable[[argparse.ArgumentParser], None]
) -> argparse.ArgumentParser:
    serve = commands.add_parser(
        "serve",
        help="serve text to image with Triton Inference Server and an OpenAI-compatible API",
        description="Start Triton Inference Server on a pipeline (exported on the fly from CONFIG, "
        "the shipped xomni-nano by default, or a ready --repository) and an OpenAI-compatible "
        "POST /v1/images/generations in front of it. Binds to 127.0.0.1 unless --host says otherwise.",
    )
    serve.add_argument("config", nargs="?", help="pipeline config (default: the shipped xomni-nano model)")
    add_overrides(serve)
    serve.add_argument(
        "--repository", help="serve this Triton repository (from `xomni export --format triton`)"
    )
    serve.add_argument(
        "--triton-grpc",
        metavar="HOST:PORT",
        help="start only the OpenAI-compatible front, forwarding to the Triton server at HOST:PORT",
    )
    serve.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1)")
    serve.add_argument("--http-port", type=int, default=8000, help="Triton HTTP/REST port (default: 8000)")
    serve.add_argument("--grpc-port", type=int, default=8001, help="Triton gRPC port (default: 8001)")
    serve.add_argument("--metrics-port", type=int, default=8002, help="Triton metrics port (default: 8002)")
    serve.add_argument(
        "--openai-port",
        type=int,
        default=8080,
        help="OpenAI-compatible API port; 0 turns it off (default: 8080)",
    )
    serve.add_argument(
        "--model",
        dest="models",
        action="append",
        choices=(TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL),
        help=f"model to load; repeat for several (default: {TEXT_TO_IMAGE_MODEL})",
    )
    add_serving_flags(serve)
    serve.add_argument(
        "--workdir", help="folder for the server's files and log (default: a temporary folder)"
    )
    serve.add_argument(
        "--timeout", type=float, default=600.0, help="seconds to wait for the models (default: 600)"
    )
    serve.add_argument("--no-progress", action="store_true", help="hide progress bars of the export")
    serve.set_defaults(handler=_run_serve)
    return serve


def add_repository_parser(commands: Subcommands) -> argparse.ArgumentParser:
    repository = commands.add_parser(
        "triton-repo",
        help="turn an export folder into a Triton model repository that serves the pipeline",
        description="Write a Triton model repository from EXPORT (a folder written by `xomni export` "
        "with all three components): the pipeline models xomni_text_to_image and xomni_understanding, "
        "and one model per exported graph.",
    )
    repository.add_argument(
        "export", help="export folder (holds tokenizer/, backbone/, decoder/ and pipeline.onnxruntime.yaml)"
    )
    repository.add_argument(
        "--out", required=True, help="repository folder to write (appears whole or not at all)"
    )
    repository.add_argument(
        "--triton-backend",
        choices=("onnxruntime", "tensorrt"),
        default="onnxruntime",
        help="what the models run; tensorrt needs engines built by `xomni export --format tensorrt`",
    )
    repository.add_argument(
        "--graph-models",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also write one model per exported graph (default: on)",
    )
    repository.add_argument("--force", action="store_true", help="replace OUT even when it holds other files")
    add_serving_flags(repository)
    repository.set_defaults(handler=_run_repository)
    return repository


def add_serving_flags(parser: argparse.ArgumentParser) -> None:
    """Flags that shape the pipeline models of a repository (``export --format triton``, ``serve``)."""
    parser.add_argument(
        "--max-batch-size",
        type=int,
        default=DEFAULT_MAX_BATCH_SIZE,
        help=f"most requests Triton batches together (default: {DEFAULT_MAX_BATCH_SIZE})",
    )
    parser.add_argument(
        "--max-queue-delay-us",
        type=int,
        default=DEFAULT_MAX_QUEUE_DELAY_US,
        help="how long the dynamic batcher waits to fill a batch, in microseconds "
        f"(default: {DEFAULT_MAX_QUEUE_DELAY_US})",
    )
    parser.add_argument(
        "--instance-kind",
        choices=("cpu", "gpu"),
        help="where model instances run (default: gpu for TensorRT, cpu otherwise)",
    )
    parser.add_argument("--instances", type=int, default=1, help="model instances (default: 1)")
    parser.add_argument(
        "--threads", type=int, help="CPU threads per instance (default: the config's runtime.threads)"
    )
