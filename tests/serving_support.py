"""Helpers of the serving tests: a real Triton server on a repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def start_server(repository: Path, workdir: Path, ports: list[int] | None = None) -> Any:
    from xomni_export.serving.options import TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL
    from xomni_export.serving.server import Endpoints, TritonServer, free_ports

    http, grpc, metrics = ports or free_ports(3)
    server = TritonServer(
        repository,
        Endpoints("127.0.0.1", http, grpc, metrics),
        models=[TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL],
        workdir=workdir,
    )
    server.start(timeout=300)
    return server
