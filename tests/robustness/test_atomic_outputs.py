"""Outputs appear whole, stale temporaries of killed runs are removed, and files a user put in an
output folder are never deleted or replaced without --force."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from support import REPO, run_xomni

from xomni_core import atomic_directory, atomic_file
from xomni_core.cli import main
from xomni_core.synthetic.bench import read_generation_folder

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"


def dead_pid() -> int:
    """The id of a process that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_write_removes_temporaries_of_dead_writers_only(tmp_path: Path) -> None:
    stale_folder = tmp_path / f".model.xomni-{dead_pid()}-a1b2.tmp"
    stale_folder.mkdir()
    (stale_folder / "weights.bin").write_bytes(b"half")
    stale_file = tmp_path / f".model.xomni-{dead_pid()}-c3d4.old"
    stale_file.write_text("old")
    live = tmp_path / f".model.xomni-{os.getpid()}-e5f6.tmp"
    live.mkdir()
    users = [tmp_path / ".model.backup.tmp", tmp_path / ".model.1234.tmp", tmp_path / ".other.xomni.tmp"]
    for path in users:
        path.write_text("mine")

    with atomic_directory(tmp_path / "model") as folder:
        (folder / "v").write_text("1")

    assert not stale_folder.exists() and not stale_file.exists()
    assert live.is_dir()
    assert all(path.read_text() == "mine" for path in users)


def test_a_file_write_removes_stale_temporaries_of_that_file(tmp_path: Path) -> None:
    stale = tmp_path / f".image.png.xomni-{dead_pid()}-zz.tmp"
    stale.write_bytes(b"partial")
    with atomic_file(tmp_path / "image.png") as tmp:
        tmp.write_bytes(b"png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]


def test_a_no_replace_write_refuses_an_existing_file(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_text("earlier")
    with pytest.raises(FileExistsError), atomic_file(tmp_path / "image.png", overwrite=False) as tmp:
        tmp.write_text("later")
    assert (tmp_path / "image.png").read_text() == "earlier"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["image.png"]


def test_replacing_a_folder_swaps_it_whole(tmp_path: Path) -> None:
    target = tmp_path / "model"
    for version in ("1", "2"):
        with atomic_directory(target) as folder:
            (folder / "v").write_text(version)
            (folder / version).write_text("")
    assert sorted(p.name for p in target.iterdir()) == ["2", "v"]
    assert [p.name for p in tmp_path.iterdir()] == ["model"]


def test_export_refuses_to_delete_files_it_did_not_write_unless_forced(tmp_path: Path) -> None:
    out = tmp_path / "out"
    notes = out / "tokenizer" / "notes.txt"
    notes.parent.mkdir(parents=True)
    notes.write_text("my notes")
    args = ["export", str(TINY), "--component", "tokenizer", "--no-validate", "--no-progress"]

    refused = run_xomni(*args, "--out", str(out))
    assert refused.returncode == 2
    assert "Traceback" not in refused.stderr
    assert str(out / "tokenizer") in refused.stderr and "notes.txt" in refused.stderr
    assert "--force" in refused.stderr
    assert notes.read_text() == "my notes"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]

    forced = run_xomni(*args, "--out", str(out), "--force")
    assert forced.returncode == 0, forced.stderr
    assert not notes.exists()
    assert (out / "tokenizer" / "manifest.json").is_file()
    assert (out / "pipeline.onnxruntime.yaml").is_file()
    assert oct((out / "tokenizer").stat().st_mode & 0o777) == oct(0o777 & ~_umask())


def test_export_refuses_a_file_as_its_output_folder(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.write_text("not a folder")
    assert main(["export", str(TINY), "--out", str(out), "--force", "--no-progress"]) == 2
    assert f"--out: {out} is a file" in capsys.readouterr().err.replace("\n", " ")
    assert out.read_text() == "not a folder"
    assert [p.name for p in tmp_path.iterdir()] == ["out"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def generate(out: Path, *prompts: str, seed: int) -> None:
    args = ["generate", *prompts, "--config", str(TINY), "--out", str(out), "--seed", str(seed)]
    assert main([*args, "--no-progress"]) == 0


def test_generate_never_replaces_earlier_images_and_records_the_latest_run(tmp_path: Path) -> None:
    out = tmp_path / "outputs"
    generate(out, "a red circle", "a blue square", seed=1)
    first = {name: (out / name).read_bytes() for name in ("image-000.png", "image-001.png")}
    first_record = (out / "generation.json").read_text()

    generate(out, "a green triangle", seed=2)

    assert {name: (out / name).read_bytes() for name in first} == first
    record = json.loads((out / "generation.json").read_text())
    assert record["images"] == ["image-002.png"]
    assert (out / "generation-000.json").read_text() == first_record
    files, scenes = read_generation_folder(out)
    assert files == [out / "image-002.png"] and scenes[0].caption == "a green triangle"

    generate(out, "a red circle", seed=3)
    assert json.loads((out / "generation.json").read_text())["images"] == ["image-003.png"]
    assert json.loads((out / "generation-002.json").read_text())["images"] == ["image-002.png"]
    assert sorted(p.name for p in out.iterdir()) == [
        "generation-000.json",
        "generation-002.json",
        "generation.json",
        "image-000.png",
        "image-001.png",
        "image-002.png",
        "image-003.png",
    ]


def test_a_saved_backbone_writes_the_same_tokenizer_files_however_it_was_loaded(tmp_path: Path) -> None:
    from core.test_convert import BACKBONE as params

    from xomni_plugins.backbones.x_omni.model import XOmniBackbone

    XOmniBackbone.from_params(params, seed=0).save_pretrained(tmp_path / "fresh")
    XOmniBackbone.from_pretrained(tmp_path / "fresh").save_pretrained(tmp_path / "reloaded")
    XOmniBackbone.from_pretrained(tmp_path / "reloaded").save_pretrained(tmp_path / "again")
    fresh = (tmp_path / "fresh" / "tokenizer_config.json").read_text()
    assert (tmp_path / "reloaded" / "tokenizer_config.json").read_text() == fresh
    assert (tmp_path / "again" / "tokenizer_config.json").read_text() == fresh
    assert "local_files_only" not in fresh and "is_local" not in fresh
