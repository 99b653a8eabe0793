"""onnxruntime sessions: thread count, idle threads that sleep, and weight packing as asked."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tiny_exportable import export_tiny

from xomni_core import XomniError
from xomni_export.runtime.loading import LazySession, open_session
from xomni_export.runtime.sessions import OrtSession


@pytest.fixture(scope="module")
def graph(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("tiny") / "export") / "mlp.onnx"


def test_threads_default_to_torchs_and_idle_threads_sleep(graph: Path) -> None:
    options = OrtSession(graph).session.get_session_options()
    assert options.intra_op_num_threads == torch.get_num_threads()
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "0"


def test_a_thread_count_spinning_and_packing_are_honoured(graph: Path) -> None:
    options = OrtSession(graph, threads=3, spinning=True, prepack=False).session.get_session_options()
    assert options.intra_op_num_threads == 3
    assert options.get_session_config_entry("session.intra_op.allow_spinning") == "1"
    assert options.get_session_config_entry("session.disable_prepacking") == "1"


def test_fewer_than_one_thread_is_refused(graph: Path) -> None:
    with pytest.raises(XomniError, match="at least 1"):
        OrtSession(graph, threads=0)


def test_a_lazy_session_opens_on_its_first_run_only(graph: Path) -> None:
    opened: list[str] = []

    def open_mlp() -> OrtSession:
        opened.append("mlp")
        return open_session(graph.parent, "mlp", backend="onnxruntime")

    entry = {"inputs": [{"name": "x"}], "outputs": [{"name": "y"}]}
    lazy = LazySession(open_mlp, entry)
    assert (lazy.input_names, lazy.output_names, lazy.is_open) == (["x"], ["y"], False)
    x = torch.randn(2, 3, 8)
    first, second = lazy.run({"x": x})["y"], lazy.run({"x": x})["y"]
    assert opened == ["mlp"] and lazy.is_open
    torch.testing.assert_close(first, second)
