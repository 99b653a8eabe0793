"""``xomni serve``: a real Triton Inference Server on a pipeline, and an OpenAI-compatible front.

Given a repository (``--repository``) it serves it as is. Given a config (the shipped xomni-nano
by default) it exports the pipeline once into a cache folder keyed by the config and the files
of its weights, writes a repository from that export with the serving flags, and serves it.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from xomni_core import XomniError
from xomni_core._version import __version__
from xomni_core.serve_args import DEFAULT_MAX_BATCH_SIZE, DEFAULT_MAX_QUEUE_DELAY_US

from .options import TEXT_TO_IMAGE_MODEL, ServingOptions

CACHE_ENV = "XOMNI_CACHE"


def run_repository(args: argparse.Namespace) -> int:
    from ..manifest import foreign_files
    from .repository import write_serving_repository

    out = Path(args.out)
    if out.exists() and not args.force:
        if not out.is_dir():
            raise XomniError(f"--out: {out} is a file; move it away or pass --force")
        foreign = foreign_files(out, triton=True)
        if foreign:
            raise XomniError(
                f"--out: {out} holds files that are not Triton models ({', '.join(foreign[:5])}); "
                "writing the repository would delete them. Move them away, or pass --force"
            )
    names = write_serving_repository(
        args.export, out, serving_options(args, args.triton_backend), graph_models=args.graph_models
    )
    print(f"wrote {out}: {', '.join(names)}")
    print(f"serve it: xomni serve --repository {out}")
    return 0


def serving_options(args: argparse.Namespace, backend: str = "onnxruntime") -> ServingOptions:
    kind = args.instance_kind or ("gpu" if backend == "tensorrt" else "cpu")
    return ServingOptions(
        max_batch_size=args.max_batch_size,
        max_queue_delay_us=args.max_queue_delay_us,
        instance_kind=kind,
        instance_count=args.instances,
        backend=backend,  # type: ignore[arg-type]
        threads=args.threads,
    )


def run_serve(args: argparse.Namespace) -> int:
    from .repository import write_serving_repository
    from .server import Endpoints, TritonServer

    if args.triton_grpc:
        return _front_only(args)
    options = serving_options(args)
    ports = {
        "--http-port": args.http_port,
        "--grpc-port": args.grpc_port,
        "--metrics-port": args.metrics_port,
    }
    if args.openai_port:
        ports["--openai-port"] = args.openai_port
    for flag, port in ports.items():
        if not 1 <= port <= 65535:
            raise XomniError(f"{flag}: {port} is not a port (1 to 65535)")
        _check_free(args.host, port, flag)
    if len(set(ports.values())) != len(ports):
        raise XomniError("--http-port, --grpc-port, --metrics-port and --openai-port must all differ")
    if args.repository:
        _check_repository_args(args)
    workdir = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="xomni-serve-"))
    try:
        if args.repository:
            repository = Path(args.repository)
        else:
            export_dir = exported_pipeline(args.config, args.overrides, show_progress=not args.no_progress)
            repository = workdir / "repository"
            print(f"writing the Triton repository: {repository}", flush=True)
            write_serving_repository(export_dir, repository, options, graph_models=False)
        endpoints = Endpoints(args.host, args.http_port, args.grpc_port, args.metrics_port)
        models = args.models or [TEXT_TO_IMAGE_MODEL]
        server = TritonServer(repository, endpoints, models=models, workdir=workdir)
        print(f"starting Triton Inference Server (log: {server.log_path})", flush=True)
        server.start(timeout=args.timeout)
        try:
            print(f"Triton HTTP    http://{endpoints.http}  (POST /v2/models/{TEXT_TO_IMAGE_MODEL}/infer)")
            print(f"Triton gRPC    {endpoints.grpc}")
            print(f"metrics        http://{args.host}:{args.metrics_port}/metrics")
            if args.openai_port:
                print(
                    f"OpenAI API     http://{args.host}:{args.openai_port}/v1  (POST /v1/images/generations)"
                )
            return _serve_front(args, server)
        finally:
            server.stop()
    finally:
        if not args.workdir:  # ours: the repository's links and the server's log go with it
            shutil.rmtree(workdir, ignore_errors=True)


def _check_repository_args(args: argparse.Namespace) -> None:
    """A ready repository keeps its own settings: refuse flags that would have shaped it."""
    if args.config or args.overrides:
        raise XomniError("give either a config (with --set) or --repository, not both")
    repository = Path(args.repository)
    if not (repository / TEXT_TO_IMAGE_MODEL / "config.pbtxt").is_file():
        raise XomniError(
            f"--repository: {repository} has no {TEXT_TO_IMAGE_MODEL} model; write one with "
            "`xomni export CONFIG --format triton --out DIR` and pass DIR/triton"
        )
    shaping = {
        "--max-batch-size": args.max_batch_size != DEFAULT_MAX_BATCH_SIZE,
        "--max-queue-delay-us": args.max_queue_delay_us != DEFAULT_MAX_QUEUE_DELAY_US,
        "--instance-kind": args.instance_kind is not None,
        "--instances": args.instances != 1,
        "--threads": args.threads is not None,
    }
    given = [flag for flag, changed in shaping.items() if changed]
    if given:
        raise XomniError(
            f"{', '.join(given)} shape a repository as it is written; --repository {repository} keeps "
            "its own settings. Write it again with `xomni triton-repo EXPORT --out DIR` and these flags"
        )


def _front_only(args: argparse.Namespace) -> int:
    """The OpenAI front alone, in front of a Triton server that runs elsewhere."""
    if args.config or args.overrides or args.repository:
        raise XomniError("--triton-grpc serves the front alone: give no config, --set or --repository")
    if not 1 <= args.openai_port <= 65535:
        raise XomniError("--triton-grpc needs the front: give --openai-port a port (1 to 65535)")
    _check_free(args.host, args.openai_port, "--openai-port")
    print(f"OpenAI API     http://{args.host}:{args.openai_port}/v1  -> Triton gRPC {args.triton_grpc}")
    front = _front(args.triton_grpc, args.host, args.openai_port, on_ready=_announce_ready)
    front.run()
    return 0


def _announce_ready() -> None:
    print("ready; Ctrl-C stops", flush=True)


def _front(triton_grpc: str, host: str, port: int, *, on_ready: Any, own_signals: bool = False) -> Any:
    """The OpenAI front as a uvicorn server that calls ``on_ready`` once it listens; with
    ``own_signals`` it leaves SIGINT/SIGTERM to the caller."""
    import uvicorn

    from .openai_api import create_app

    class Front(uvicorn.Server):
        def capture_signals(self) -> Any:
            return contextlib.nullcontext() if own_signals else super().capture_signals()

        async def startup(self, sockets: Any = None) -> None:
            await super().startup(sockets)
            if self.started:
                on_ready()

    return Front(uvicorn.Config(create_app(triton_grpc), host=host, port=port, log_level="warning"))


def _serve_front(args: argparse.Namespace, server: Any) -> int:
    """Run the OpenAI front (or just wait) until SIGINT/SIGTERM or until Triton exits; a Triton
    that exits by itself makes the command fail, so that a supervisor restarts it."""
    stopping = threading.Event()
    stop_front = stopping.set
    if args.openai_port:
        # Signals are ours: Triton must stop after the front.
        front = _front(
            server.endpoints.grpc, args.host, args.openai_port, on_ready=_announce_ready, own_signals=True
        )

        def stop_front() -> None:
            stopping.set()
            front.should_exit = True

    for signum in (signal.SIGINT, signal.SIGTERM):
        signal.signal(signum, lambda *_: stop_front())
    died = {"code": 0}

    def watch() -> None:
        while server.process.poll() is None and not stopping.is_set():
            time.sleep(0.5)
        if not stopping.is_set():
            print(
                f"xomni: tritonserver exited with status {server.process.returncode}:\n{server.log_tail()}",
                file=sys.stderr,
                flush=True,
            )
            died["code"] = 1
            stop_front()

    threading.Thread(target=watch, daemon=True).start()
    if args.openai_port:
        front.run()
    else:
        _announce_ready()
        stopping.wait()
    stopping.set()
    return died["code"]


def _check_free(host: str, port: int, flag: str) -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            raise XomniError(
                f"{flag}: cannot listen on {host}:{port} ({exc.strerror}); pick another port"
            ) from exc


def cache_root() -> Path:
    if os.environ.get(CACHE_ENV):
        return Path(os.environ[CACHE_ENV])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "xomni"


def exported_pipeline(config_path: str | None, overrides: Sequence[str], *, show_progress: bool) -> Path:
    """An export of the config's pipeline: from the cache when its config and weights are unchanged."""
    from xomni_core.config import load_config
    from xomni_core.models import default_pipeline_config

    from ..command import run_export

    path = Path(config_path) if config_path else default_pipeline_config()
    config = load_config(path, list(overrides))
    folder = cache_root() / "exports" / _config_key(config)
    if (folder / "pipeline.onnxruntime.yaml").is_file():
        print(f"using the export in {folder}", flush=True)
        return folder
    print(f"exporting {path} to ONNX (once; kept in {folder})", flush=True)
    folder.parent.mkdir(parents=True, exist_ok=True)
    run_export(path, overrides=list(overrides), out=folder, show_progress=show_progress)
    return folder


def _config_key(config: Any) -> str:
    """A digest of the config and of the name, size and time of every file its weights hold."""
    digest = hashlib.sha256(__version__.encode())
    digest.update(config.model_dump_json().encode())
    for slot in ("tokenizer", "backbone", "decoder"):
        section = getattr(config, slot)
        weights = config.weights_path(section) if section is not None and section.weights else None
        if weights is None:
            continue
        for file in sorted(Path(weights).rglob("*")):
            if file.is_file():
                stat = file.stat()
                digest.update(json.dumps([str(file), stat.st_size, stat.st_mtime_ns]).encode())
    return digest.hexdigest()[:16]
