"""A SIGKILL at any moment of `xomni export` or `xomni convert` leaves the output folder absent
or complete, and the next run removes what the killed runs left behind."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
import yaml
from support import REPO

from xomni_export.manifest import sha256_of

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"
EXPORT = ["export", str(TINY), "--component", "tokenizer", "--no-validate", "--no-progress"]


def xomni(*args: str) -> list[str]:
    return [sys.executable, "-m", "xomni_core.cli", *args]


def run_until(command: list[str], condition: Callable[[], bool], timeout: float = 120) -> bool:
    """Run ``command``; SIGKILL it as soon as ``condition()`` holds. True if it was killed."""
    child = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + timeout
    try:
        while child.poll() is None:
            if condition():
                child.kill()
                child.wait()
                return True
            assert time.monotonic() < deadline, f"{command} ran past {timeout} s"
            time.sleep(0.02)
    finally:
        if child.poll() is None:
            child.kill()
        child.wait()
    stderr = child.stderr.read().decode() if child.stderr else ""
    assert child.returncode == 0, stderr
    return False


def hidden_entries(folder: Path) -> list[Path]:
    return list(folder.rglob(".*"))


def staged(parent: Path, pattern: str) -> Callable[[], bool]:
    """True once an entry matching ``pattern`` exists inside a hidden (temporary) folder."""

    def condition() -> bool:
        try:
            return any(
                any(part.startswith(".") for part in path.relative_to(parent).parts[:-1])
                for path in parent.rglob(pattern)
            )
        except FileNotFoundError:  # a folder renamed while it was walked: look again
            return False

    return condition


def assert_export_absent_or_complete(out: Path) -> None:
    if not out.exists():
        return
    config = yaml.safe_load((out / "pipeline.onnxruntime.yaml").read_text())
    folder = out / config["tokenizer"]["weights"]
    manifest = json.loads((folder / "manifest.json").read_text())
    present = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    assert present == manifest["files"]
    for entry in manifest["graphs"].values():
        files = [folder / entry["file"], *(folder / name for name in entry["external_data"])]
        assert sha256_of(*files) == entry["sha256"]


def test_killed_exports_leave_no_partial_folder_and_the_next_run_cleans_up(tmp_path: Path) -> None:
    out = tmp_path / "exported"
    export = xomni(*EXPORT, "--out", str(out))
    # Killed while the graphs are written: nothing appears, the temporaries stay behind.
    assert run_until(export, staged(tmp_path, "*.onnx"))
    assert not out.exists()
    assert hidden_entries(tmp_path)

    run_until(export, lambda: False)
    assert_export_absent_or_complete(out)
    assert out.exists()
    assert hidden_entries(tmp_path) == []

    # Killed while exporting again into a complete export: it stays complete.
    run_until(export, staged(tmp_path, "manifest.json"))
    assert_export_absent_or_complete(out)
    assert out.exists()


CONVERT_SCRIPT = """
import sys
from xomni_core.cli import main
from xomni_plugins.converters.x_omni.converter import SIGLIP_VITS, SigLIPViTShape
SIGLIP_VITS["siglip_tiny_patch16_test"] = SigLIPViTShape(
    width=32, depth=2, heads=2, mlp_ratio=4.0, patch_size_px=16
)
sys.exit(main(sys.argv[1:]))
"""


@pytest.fixture(scope="module")
def release(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A tiny official release and FLUX folder, as tests/core/test_convert.py writes them."""
    from core.test_convert import BACKBONE, DECODER, TOKENIZER, write_flux_folder, write_release

    from xomni_plugins.backbones.x_omni.model import XOmniBackbone
    from xomni_plugins.decoders.flux_semantic.model import FluxSemanticDecoder
    from xomni_plugins.tokenizers.siglip_vq.model import SigLIPVQTokenizer

    root = tmp_path_factory.mktemp("official")
    decoder = FluxSemanticDecoder.from_params(DECODER, seed=2)
    with torch.no_grad():
        decoder.transformer.siglip_embed.weight.normal_()
    src = write_release(
        root,
        SigLIPVQTokenizer.from_params(TOKENIZER, seed=0),
        XOmniBackbone.from_params(BACKBONE, seed=1),
        decoder,
    )
    return src, write_flux_folder(root, decoder)


def assert_conversion_absent_or_complete(dst: Path) -> None:
    if not dst.exists():
        return
    names = ["backbone", "decoder", "model_index.json", "pipeline.yaml", "tokenizer"]
    assert sorted(p.name for p in dst.iterdir()) == names
    for slot in ("tokenizer", "backbone", "decoder"):
        assert (dst / slot / "xomni_component.json").is_file()


def test_killed_conversions_leave_no_partial_folder_and_the_next_run_cleans_up(
    release: tuple[Path, Path], tmp_path: Path
) -> None:
    src, flux = release
    dst = tmp_path / "converted"
    command = [sys.executable, "-c", CONVERT_SCRIPT, "convert", "x-omni", str(src), str(dst)]
    command += ["--flux", str(flux), "--force", "--no-progress"]
    # Killed with the tokenizer and backbone written, the decoder not yet: nothing appears.
    assert run_until(command, staged(tmp_path, "backbone"))
    assert not dst.exists()
    assert hidden_entries(tmp_path)

    run_until(command, lambda: False)
    assert_conversion_absent_or_complete(dst)
    assert dst.exists()
    assert hidden_entries(tmp_path) == []
