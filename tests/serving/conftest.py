"""The tiny exported pipeline's serving repository and a real Triton server on it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from serving_support import start_server


@pytest.fixture(scope="session")
def repository(tiny_export: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("pytriton", reason="needs the serve extra: pip install 'xomni[serve]'")
    from xomni_export.serving.options import ServingOptions
    from xomni_export.serving.repository import write_serving_repository

    out = tmp_path_factory.mktemp("serving") / "repository"
    # A long queue delay, so that requests sent together surely meet in one batch.
    write_serving_repository(tiny_export, out, ServingOptions(max_queue_delay_us=300_000), graph_models=False)
    return out


@pytest.fixture(scope="session")
def triton(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[object]:
    server = start_server(repository, tmp_path_factory.mktemp("triton"))
    try:
        yield server
    finally:
        server.stop()  # type: ignore[attr-defined]
