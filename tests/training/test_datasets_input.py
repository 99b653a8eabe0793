"""SFT reads local Hugging Face data sets: ``save_to_disk`` folders and imagefolders, offline,
with named columns; images that do not decode are reported by row, then skipped or fatal."""

from __future__ import annotations

import copy
import io
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, run_xomni

from xomni_core.synthetic import render_scene, sample_scenes
from xomni_core.training.metrics import read_metrics

datasets = pytest.importorskip("datasets")

EXAMPLE = REPO / "examples" / "configs" / "tiny-sft.yaml"


def _scenes(n: int, seed: int) -> list[tuple[str, Any]]:
    scenes = sample_scenes("train", n, seed=seed, width_px=64, height_px=64)
    return [(scene.caption, render_scene(scene)) for scene in scenes]


def _png(image: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _disk_dataset(folder: Path, *, corrupt_row: int | None = None) -> Path:
    """Four scenes saved with ``save_to_disk``: columns ``picture`` (images) and ``prompt``."""
    rows = _scenes(4, seed=3)
    pictures = [{"bytes": _png(image), "path": f"scene-{i}.png"} for i, (_, image) in enumerate(rows)]
    if corrupt_row is not None:
        pictures[corrupt_row] = {"bytes": pictures[corrupt_row]["bytes"][:60], "path": "cut.png"}
    features = datasets.Features({"picture": datasets.Image(), "prompt": datasets.Value("string")})
    table = datasets.Dataset.from_dict(
        {"picture": pictures, "prompt": [caption for caption, _ in rows]}, features=features
    )
    table.save_to_disk(str(folder))
    return folder


def _imagefolder(folder: Path, *, bad: dict[str, bytes] | None = None) -> Path:
    """Three scenes as PNGs with ``metadata.jsonl`` (column ``text``), plus ``bad`` files."""
    folder.mkdir(parents=True)
    lines = []
    for index, (caption, image) in enumerate(_scenes(3, seed=4)):
        image.save(folder / f"{index}.png")
        lines.append({"file_name": f"{index}.png", "text": caption})
    for name, data in (bad or {}).items():
        (folder / name).write_bytes(data)
        lines.append({"file_name": name, "text": f"a picture called {name}"})
    (folder / "metadata.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder


def _config(tmp_path: Path, **sft: Any) -> Path:
    data = yaml.safe_load(EXAMPLE.read_text())
    del data["decoder"]
    settings = data["training"]["sft"]
    del settings["synthetic"]
    settings.update(batch_size=2, steps=2, checkpoint_every=2, output_dir=str(tmp_path / "out"))
    settings.update(copy.deepcopy(sft))
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_sft_trains_on_a_saved_dataset_with_named_columns_and_a_relative_path(tmp_path: Path) -> None:
    _disk_dataset(tmp_path / "scenes")
    columns = {"image_column": "picture", "caption_column": "prompt"}
    config = _config(
        tmp_path,
        dataset={"path": "scenes", **columns},
        eval={"dataset": {"path": "scenes", **columns}, "every": 1},
    )
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr
    records = read_metrics(tmp_path / "out" / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2]
    # The eval split read the same four pairs: 4 pairs x 16 tokens each.
    assert all(r["eval_loss"] > 0 for r in records)


def test_an_imagefolder_with_metadata_trains_and_a_bad_image_is_skipped_with_its_row_named(
    tmp_path: Path,
) -> None:
    good = _png(_scenes(1, seed=9)[0][1])
    _imagefolder(tmp_path / "images", bad={"cut.png": good[: len(good) // 2], "empty.png": b""})
    config = _config(tmp_path, dataset={"path": "images", "format": "imagefolder"}, on_bad_image="skip")
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr
    message = " ".join(result.stderr.split())
    assert "skipped 2 of 5 pairs" in message
    assert "cut.png" in message and "empty.png" in message
    assert "row 3" in message and "row 4" in message
    assert len(read_metrics(tmp_path / "out" / "metrics.jsonl")) == 2


def test_a_bad_image_stops_training_by_default_naming_the_setting_row_and_file(tmp_path: Path) -> None:
    _disk_dataset(tmp_path / "scenes", corrupt_row=2)
    columns = {"image_column": "picture", "caption_column": "prompt"}
    config = _config(tmp_path, dataset={"path": str(tmp_path / "scenes"), **columns})
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    message = " ".join(result.stderr.split())
    assert "training.sft.dataset" in message
    assert "row 2 (cut.png)" in message
    assert "on_bad_image: skip" in message
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_a_data_file_image_that_is_not_an_image_is_skipped_when_asked(tmp_path: Path) -> None:
    images = tmp_path / "data"
    images.mkdir()
    lines = []
    for index, (caption, image) in enumerate(_scenes(2, seed=5)):
        image.save(images / f"{index}.png")
        lines.append({"image": f"{index}.png", "caption": caption})
    (images / "notes.png").write_text("not a picture")
    lines.append({"image": "notes.png", "caption": "a note"})
    (images / "pairs.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    config = _config(tmp_path, data_file="data/pairs.jsonl", on_bad_image="skip")
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 0, result.stderr
    assert "line 3 (notes.png)" in result.stderr


def test_a_dataset_larger_than_max_rows_is_refused_before_any_image_is_decoded(tmp_path: Path) -> None:
    _disk_dataset(tmp_path / "scenes", corrupt_row=0)  # never reached: the size is checked first
    config = _config(
        tmp_path,
        dataset={"path": "scenes", "image_column": "picture", "caption_column": "prompt", "max_rows": 3},
    )
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "training.sft.dataset.max_rows" in message and "4 rows" in message
    assert "cut.png" not in message


@pytest.mark.parametrize(
    ("dataset", "field", "expected"),
    [
        ({"image_column": "img"}, "training.sft.dataset.image_column", "no column 'img'"),
        ({"caption_column": "words"}, "training.sft.dataset.caption_column", "no column 'words'"),
        ({"split": "test"}, "training.sft.dataset.split", "no split 'test'"),
    ],
    ids=["image-column", "caption-column", "split"],
)
def test_a_missing_column_or_split_is_named_with_what_the_folder_has(
    tmp_path: Path, dataset: dict[str, str], field: str, expected: str
) -> None:
    _imagefolder(tmp_path / "images")
    config = _config(tmp_path, dataset={"path": "images", **dataset})
    result = run_xomni("train", "sft", str(config), "--no-progress")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert field in message and expected in message
    assert "Traceback" not in result.stderr


def test_validating_a_dataset_config_imports_neither_torch_nor_datasets(tmp_path: Path) -> None:
    config = _config(tmp_path, dataset={"path": "anywhere", "format": "disk"})
    code = (
        "import sys\n"
        "from xomni_core.config import load_config\n"
        f"config = load_config({str(config)!r})\n"
        "assert config.training.sft.dataset.format == 'disk'\n"
        "print(sorted(m for m in ('torch', 'datasets') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "[]"


def test_two_data_sources_are_refused_at_validation(tmp_path: Path) -> None:
    config = _config(tmp_path, data_file="pairs.jsonl", dataset={"path": "images"})
    result = run_xomni("config", "validate", str(config))
    assert result.returncode == 2
    assert "give exactly one data source" in " ".join(result.stderr.split())
