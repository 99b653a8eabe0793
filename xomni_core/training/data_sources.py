"""Image-caption pairs for SFT from the sources a config names: synthetic scenes, a ``.jsonl``
file, or a local Hugging Face ``datasets`` folder (``save_to_disk``) or ``imagefolder``.

Every image is decoded once, through the checks of :mod:`xomni_core.images` (regular file, not
empty, pixel limit before decoding, damaged or truncated data), and kept only at the training
size. An image that fails them is reported with its row (and file name when known): fatal by
default, or left out with one summary warning under ``on_bad_image: skip``. ``datasets`` is
imported only for a ``dataset`` source and never reaches the network.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import tempfile
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PipelineConfig
from ..errors import ConfigError, InputError
from ..images import decode_image_bytes, open_image
from .settings import DatasetSource, SFTEvalSettings, SFTSettings

if TYPE_CHECKING:
    from PIL.Image import Image

#: Bad images a summary names one by one; the rest are counted.
_SHOWN = 5
#: Files in a folder that ``save_to_disk`` wrote (a Dataset, or a DatasetDict).
_DISK_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


@dataclass(frozen=True)
class CaptionedImage:
    """One training pair, before tokenisation."""

    caption: str
    image: Image


@dataclass(frozen=True)
class _Row:
    """A pair whose image is decoded on demand; ``label`` names it in reports."""

    label: str
    caption: str
    image: Callable[[], Image]


def read_pairs(
    settings: SFTSettings | SFTEvalSettings,
    config: PipelineConfig,
    *,
    height: int,
    width: int,
    where: str,
) -> list[CaptionedImage]:
    """The pairs of the one source ``settings`` names, every image resized to ``width`` x
    ``height``; ``where`` names the settings in errors (``training.sft``)."""
    from PIL import Image as PILImage

    if settings.synthetic is not None:
        from ..synthetic import CATEGORIES, render_scene, sample_scenes

        source = settings.synthetic
        scenes = sample_scenes(
            source.split,
            source.n,
            seed=source.seed,
            categories=source.categories if source.categories is not None else CATEGORIES,
            width_px=width,
            height_px=height,
        )
        return [CaptionedImage(scene.caption, render_scene(scene)) for scene in scenes]

    if settings.data_file is not None:
        where = f"{where}.data_file"
        path = _resolve(settings.data_file, config)
        if not path.is_file():
            raise ConfigError(f"{where}: file {path} does not exist")
        rows: Generator[_Row, None, None] = _jsonl_rows(path, where)
    else:
        assert settings.dataset is not None
        where = f"{where}.dataset"
        path = _resolve(settings.dataset.path, config)
        rows = _dataset_rows(settings.dataset, path, where)

    pairs: list[CaptionedImage] = []
    bad: list[str] = []
    total = 0
    with contextlib.closing(rows):  # a stop at a bad image closes the data set at once
        for row in rows:
            total += 1
            try:
                image = row.image()
            except InputError as exc:
                if settings.on_bad_image == "error":
                    raise ConfigError(
                        f"{where}: {path} {row.label}: {exc} (on_bad_image: skip leaves such pairs out)"
                    ) from exc
                bad.append(f"{row.label}: {exc}")
                continue
            if image.size != (width, height):
                image = image.resize((width, height), PILImage.Resampling.BICUBIC)
            pairs.append(CaptionedImage(row.caption, image))
    if bad and int(os.environ.get("RANK", "0")) == 0:
        shown = "; ".join(bad[:_SHOWN]) + (f"; and {len(bad) - _SHOWN} more" if len(bad) > _SHOWN else "")
        print(
            f"{where}: skipped {len(bad)} of {total} pairs whose image does not decode: {shown}",
            file=sys.stderr,
        )
    if not pairs:
        raise ConfigError(f"{where}: {path} holds no pairs" + (" whose image decodes" if bad else ""))
    return pairs


def _resolve(value: str, config: PipelineConfig) -> Path:
    """A path of the config, relative to the config file's folder."""
    path = Path(os.path.expanduser(value))
    if not path.is_absolute() and config._base_dir is not None:
        path = config._base_dir / path
    return path


def _jsonl_rows(path: Path, where: str) -> Generator[_Row, None, None]:
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"{where}: {path} line {number} is not JSON: {exc}") from exc
        if not (
            isinstance(row, dict)
            and isinstance(row.get("image"), str)
            and isinstance(row.get("caption"), str)
        ):
            raise ConfigError(
                f"{where}: {path} line {number} must be an object {{image, caption}} of strings"
            )
        image_path = Path(os.path.expanduser(row["image"]))
        if not image_path.is_absolute():
            image_path = path.parent / image_path
        yield _Row(f"line {number} ({image_path.name})", row["caption"], _opener(image_path))


def _opener(path: Path) -> Callable[[], Image]:
    return lambda: open_image(path)


# ------------------------------------------------------------------------------ datasets


@contextlib.contextmanager
def _offline() -> Iterator[None]:
    """Hugging Face libraries in offline mode: nothing they do here may reach the network.

    The environment covers a first import; the modules' flags cover libraries already imported.
    """
    names = ("HF_DATASETS_OFFLINE", "HF_HUB_OFFLINE")
    saved_env = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    flags: list[tuple[Any, str, Any]] = []
    for module_name, attribute in (
        ("datasets.config", "HF_DATASETS_OFFLINE"),
        ("datasets.config", "HF_HUB_OFFLINE"),
        ("huggingface_hub.constants", "HF_HUB_OFFLINE"),
    ):
        module = sys.modules.get(module_name)
        if module is not None and hasattr(module, attribute):
            flags.append((module, attribute, getattr(module, attribute)))
            setattr(module, attribute, True)
    try:
        yield
    finally:
        for module, attribute, value in flags:
            setattr(module, attribute, value)
        for name, old in saved_env.items():
            if old is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = old


def _dataset_rows(source: DatasetSource, path: Path, where: str) -> Generator[_Row, None, None]:
    if not path.is_dir():
        raise ConfigError(f"{where}.path: folder {path} does not exist")
    fmt = source.format
    if fmt == "auto":
        fmt = "disk" if any((path / name).is_file() for name in _DISK_MARKERS) else "imagefolder"
    with _offline():
        try:
            import datasets
        except ImportError as exc:
            raise ConfigError(
                f"{where}: reading a datasets folder needs the datasets package (pip install 'xomni[train]')"
            ) from exc
    # Entered after the import, so that the flags of the modules just imported are set too.
    with _offline(), tempfile.TemporaryDirectory(prefix="xomni-datasets-") as cache:
        table = _open_split(datasets, source, path, fmt, where, cache)
        yield from _table_rows(datasets, table, source, path, where)


def _open_split(datasets: Any, source: DatasetSource, path: Path, fmt: str, where: str, cache: str) -> Any:
    """The split ``source.split`` of the folder, as a ``datasets.Dataset``."""
    bars_were_off = datasets.utils.are_progress_bars_disabled()
    datasets.disable_progress_bars()  # the run's own output stays readable
    try:
        if fmt == "disk":
            loaded = datasets.load_from_disk(str(path))
        else:
            # The packaged builder reads the local folder; its cache goes to a temporary folder.
            loaded = datasets.load_dataset("imagefolder", data_dir=str(path), cache_dir=cache)
    except Exception as exc:  # the library's own errors vary by version and format
        raise ConfigError(f"{where}: {path} cannot be read as a {fmt} dataset: {exc}") from exc
    finally:
        if not bars_were_off:
            datasets.enable_progress_bars()
    if isinstance(loaded, datasets.DatasetDict):
        if source.split not in loaded:
            raise ConfigError(
                f"{where}.split: {path} has no split {source.split!r} (it has: {', '.join(loaded)})"
            )
        loaded = loaded[source.split]
    columns = list(loaded.column_names)
    for field, column in (("image_column", source.image_column), ("caption_column", source.caption_column)):
        if column not in columns:
            raise ConfigError(
                f"{where}.{field}: {path} has no column {column!r} (it has: {', '.join(columns)})"
            )
    if loaded.num_rows > source.max_rows:
        raise ConfigError(
            f"{where}.max_rows: {path} holds {loaded.num_rows} rows, more than the limit of "
            f"{source.max_rows}; raise max_rows if the images fit in memory at the training size"
        )
    return loaded


def _table_rows(datasets: Any, table: Any, source: DatasetSource, path: Path, where: str) -> Iterator[_Row]:
    image_column, caption_column = source.image_column, source.caption_column
    feature = table.features[image_column]
    if isinstance(feature, datasets.Image):
        # Undecoded cells ({bytes, path}): the images are decoded here, once, under our checks.
        table = table.cast_column(image_column, datasets.Image(decode=False))
    elif not (isinstance(feature, datasets.Value) and feature.dtype in ("string", "large_string")):
        raise ConfigError(
            f"{where}.image_column: column {image_column!r} of {path} holds {feature}, not images or paths"
        )
    table = table.select_columns([image_column, caption_column])
    for index, row in enumerate(table):
        caption = row[caption_column]
        if not isinstance(caption, str):
            raise ConfigError(
                f"{where}.caption_column: {path} row {index}: the caption is "
                f"{type(caption).__name__}, not text"
            )
        yield _cell_row(index, row[image_column], caption, path, where)


def _cell_row(index: int, cell: Any, caption: str, folder: Path, where: str) -> _Row:
    if isinstance(cell, str):
        file = Path(os.path.expanduser(cell))
        file = file if file.is_absolute() else folder / file
        return _Row(f"row {index} ({file.name})", caption, _opener(file))
    if not isinstance(cell, dict):
        raise ConfigError(f"{where}.image_column: {folder} row {index} holds no image")
    data, name = cell.get("bytes"), cell.get("path")
    label = f"row {index}" + (f" ({Path(name).name})" if name else "")
    if data is not None:
        return _Row(label, caption, lambda: decode_image_bytes(data, what="the image"))
    if name:
        return _Row(label, caption, _opener(Path(name)))
    return _Row(label, caption, _no_image(label))


def _no_image(label: str) -> Callable[[], Image]:
    def fail() -> Image:
        raise InputError(f"{label} holds neither image bytes nor a path (an empty cell)")

    return fail
