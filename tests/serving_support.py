"""Helpers of the serving tests: free ports and a real Triton server on a repository."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any


def free_ports(count: int) -> list[int]:
    """Ports nobody listens on now (held open together, so they differ)."""
    sockets = [socket.socket() for _ in range(count)]
    try:
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]
    finally:
        for sock in sockets:
            sock.close()


def start_server(repository: Path, workdir: Path, ports: list[int] | None = None) -> Any:
    from xomni_export.serving.options import TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL
    from xomni_export.serving.server import Endpoints, TritonServer

    http, grpc, metrics = ports or free_ports(3)
    server = TritonServer(
        repository,
        Endpoints("127.0.0.1", http, grpc, metrics),
        models=[TEXT_TO_IMAGE_MODEL, UNDERSTANDING_MODEL],
        workdir=workdir,
    )
    server.start(timeout=300)
    return server
