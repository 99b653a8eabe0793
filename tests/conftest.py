"""Shared fixtures."""

from __future__ import annotations

import gc
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from support import write_distribution


@pytest.fixture
def plugin_site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., Path]]:
    """Write a distribution into a fresh folder on ``sys.path`` (and PYTHONPATH for children)."""
    site = tmp_path / "site"
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(site), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("XOMNI_PLUGINS", raising=False)
    monkeypatch.delenv("XOMNI_DISABLE_PLUGINS", raising=False)

    installed: list[str] = []

    def install(name: str, **kwargs: object) -> Path:
        installed.extend(kwargs.get("modules", {}))  # type: ignore[arg-type]
        return write_distribution(site, name, **kwargs)  # type: ignore[arg-type]

    yield install
    for module in installed:  # each test's distributions are new code under old module names
        sys.modules.pop(module, None)


@pytest.fixture(autouse=True)
def _restore_torch_threads() -> Iterator[None]:
    """Commands run in-process set torch's thread count from ``runtime.threads``; undo it."""
    import torch

    before = torch.get_num_threads()
    yield
    if torch.get_num_threads() != before:
        torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _unfreeze_the_heap() -> Iterator[None]:
    """Commands run in-process freeze the heap (``xomni_core.heap``); give it back to the collector."""
    yield
    gc.unfreeze()


@pytest.fixture(scope="session")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny random pipeline exported once per session with `xomni export --format triton`:
    validated ONNX folders, `pipeline.onnxruntime.yaml` and a Triton repository. Read only."""
    from support import REPO

    from xomni_core.cli import main

    out = tmp_path_factory.mktemp("tiny-export") / "export"
    config = REPO / "examples" / "configs" / "tiny-random.yaml"
    assert main(["export", str(config), "--out", str(out), "--format", "triton", "--no-progress"]) == 0
    return out
