"""Atomic writes: an interrupted write leaves neither a partial file nor a partial folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from xomni_core import atomic_directory, atomic_file


def test_failed_folder_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "model") as folder:
        (folder / "weights.bin").write_bytes(b"half")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_old_folder(tmp_path: Path) -> None:
    with atomic_directory(tmp_path / "model") as folder:
        (folder / "v").write_text("1")
    with pytest.raises(RuntimeError), atomic_directory(tmp_path / "model") as folder:
        (folder / "v").write_text("2")
        raise RuntimeError("killed")
    assert (tmp_path / "model" / "v").read_text() == "1"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_successful_rewrite_replaces_the_folder(tmp_path: Path) -> None:
    for version in ("1", "2"):
        with atomic_directory(tmp_path / "model") as folder:
            (folder / "v").write_text(version)
    assert (tmp_path / "model" / "v").read_text() == "2"
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_failed_file_write_leaves_nothing(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError), atomic_file(tmp_path / "image.png") as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("killed")
    assert list(tmp_path.iterdir()) == []
