"""Hostile image files (bombs, absurd headers, truncated data, folders, FIFOs) end in one clear
error naming the file, wherever a user hands xomni an image: chat, bench and SFT data."""

from __future__ import annotations

import io
import json
import os
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from support import REPO

from xomni_core import ConfigError, InputError
from xomni_core.cli import main
from xomni_core.config import load_config
from xomni_core.images import MAX_PIXELS, open_image
from xomni_core.training.settings import SFTSettings
from xomni_core.training.sft import load_pairs

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"


def png_claiming(width: int, height: int) -> bytes:
    """A PNG whose header declares ``width`` x ``height`` pixels, with one row of real data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit greyscale
    rows = zlib.compress(b"\0" * 65)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", rows) + chunk(b"IEND", b"")


def truncated_png() -> bytes:
    pixels = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()[: len(buffer.getvalue()) // 2]


def hostile(tmp_path: Path, kind: str) -> Path:
    path = tmp_path / f"{kind}.png"
    if kind == "bomb":
        path.write_bytes(png_claiming(20_000, 20_000))  # PIL's DecompressionBombError
    elif kind == "bomb-warning":
        path.write_bytes(png_claiming(10_000, 10_000))  # PIL's DecompressionBombWarning
    elif kind == "huge-header":
        path.write_bytes(png_claiming(2_147_483_647, 1))
    elif kind == "truncated":
        path.write_bytes(truncated_png())
    elif kind == "not-an-image":
        path.write_text("hello")
    elif kind == "directory":
        path.mkdir()
    elif kind == "fifo":
        os.mkfifo(path)
    return path


KINDS = {
    "bomb": "pixels",
    "bomb-warning": "pixels",
    "huge-header": "pixels",
    "truncated": "truncated",
    "not-an-image": "not an image",
    "directory": "is a directory",
    "fifo": "not a regular file",
}


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_open_image_refuses_hostile_files_naming_them(tmp_path: Path, kind: str) -> None:
    path = hostile(tmp_path, kind)
    with pytest.raises(InputError) as caught:
        open_image(path, what="--image:")
    assert str(path) in str(caught.value) and KINDS[kind] in str(caught.value)


def test_the_pixel_cap_holds_whatever_pil_allows(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", None)
    path = tmp_path / "wide.png"
    path.write_bytes(png_claiming(MAX_PIXELS + 1, 1))
    with pytest.raises(InputError, match=rf"{MAX_PIXELS + 1} x 1 px .*the limit is {MAX_PIXELS} pixels"):
        open_image(path)


def test_an_ordinary_image_opens_as_rgb(tmp_path: Path) -> None:
    path = tmp_path / "grey.png"
    Image.new("L", (5, 3), 128).save(path)
    image = open_image(path)
    assert image.mode == "RGB" and image.size == (5, 3)


@pytest.mark.parametrize("kind", ["bomb", "huge-header", "truncated", "directory", "fifo"])
def test_chat_reports_a_hostile_image_without_a_traceback(
    tmp_path: Path, kind: str, capsys: pytest.CaptureFixture[str]
) -> None:
    path = hostile(tmp_path, kind)
    assert main(["chat", "what is this?", "--image", str(path), "--config", str(TINY)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xomni: error: --image:") and str(path) in err.replace("\n", " ")
    assert KINDS[kind].split()[-1] in err and "does not exist" not in err


def test_bench_reports_a_truncated_generated_image_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "generated"
    folder.mkdir()
    (folder / "image-000.png").write_bytes(truncated_png())
    record = {"images": ["image-000.png"], "settings": {"prompts": ["a red circle"]}}
    (folder / "generation.json").write_text(json.dumps(record))
    assert main(["bench", "compose", "--images", str(folder)]) == 2
    err = capsys.readouterr().err.replace("\n", " ")
    assert "Traceback" not in err and str(folder / "image-000.png") in err and "truncated" in err


@pytest.mark.parametrize("kind", ["bomb-warning", "huge-header", "directory"])
def test_sft_data_naming_a_hostile_image_stops_with_the_line_and_the_file(tmp_path: Path, kind: str) -> None:
    image = hostile(tmp_path, kind)
    data = tmp_path / "pairs.jsonl"
    data.write_text(json.dumps({"image": image.name, "caption": "a red circle"}) + "\n")
    settings = SFTSettings(data_file=str(data), steps=1)
    with pytest.raises(ConfigError) as caught:
        load_pairs(settings, load_config(TINY))
    message = str(caught.value)
    assert f"{data} line 1" in message and str(image) in message and KINDS[kind] in message
