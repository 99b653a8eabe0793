"""``xomni convert preview-csv``: a projection published as CSV becomes a latent-preview decoder.

The format: ``SRC/projection.csv``, three rows (red, green, blue) of one weight per latent
channel. The descriptor lives in :mod:`.converter_spec`, light enough to list without this module.
"""

from __future__ import annotations

import csv
from pathlib import Path

import yaml

from xomni_core import CheckpointError, XomniError, atomic_directory
from xomni_core.convert import ConversionResult, ConvertOptions

from .decoders import LatentPreviewDecoder
from .params import LatentPreviewParams


def convert_preview_csv(src: Path, dst: Path, options: ConvertOptions) -> ConversionResult:
    """Write ``dst/decoder`` and ``dst/pipeline.yaml`` naming it; a failure leaves no ``dst``."""
    source = src / "projection.csv"
    if not source.is_file():
        raise CheckpointError(f"{source} does not exist")
    if dst.exists() and not options.force:
        raise XomniError(f"destination {dst} already exists; pass --force to replace it")
    with source.open(newline="") as file:
        rows = [[float(value) for value in row] for row in csv.reader(file) if row]
    if len(rows) != 3 or len({len(row) for row in rows}) != 1:
        raise CheckpointError(f"{source}: expected 3 rows of equal length, got {[len(r) for r in rows]}")
    pixels = options.extra["pixels_per_token"]
    params = LatentPreviewParams(
        latent_channels=len(rows[0]), pixels_per_token=int(pixels or 16), projection=rows
    )
    with atomic_directory(dst) as out:
        LatentPreviewDecoder(params).save_pretrained(out / "decoder")
        config = {"version": 1, "decoder": {"plugin": "latent-preview", "weights": "decoder"}}
        (out / "pipeline.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    return ConversionResult(
        dst=dst,
        pipeline_config=dst / "pipeline.yaml",
        components=("decoder",),
        notes=(f"decoder: {len(rows[0])} latent channels to RGB",),
    )
