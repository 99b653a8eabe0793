"""Export spec of a tokenizer: two graphs, ``encode`` and ``decode``.

``encode`` maps preprocessed pixels ``(batch, 3, patch*grid_h, patch*grid_w)`` in the compute
dtype to token ids ``(batch, grid_h, grid_w)``; the ids are compared exactly by the parity gate,
so the nearest-code search must pick the same code as PyTorch. ``decode`` maps ids back to
semantic latents ``(batch, channels, grid_h, grid_w)``. Preprocessing (resize, normalise) stays
outside the graphs: it runs on PIL images, before any tensor exists.
"""

from __future__ import annotations

from .. import Dim, ExportSpec, GraphSpec, TensorSpec

ENCODE = "encode"
DECODE = "decode"

#: Grids the parity gate runs: neither square nor the export example, one with a single row.
VALIDATION_GRIDS = ((1, 3, 5), (3, 7, 2), (4, 1, 6))


def tokenizer_export_spec(
    *,
    patch_size_px: int,
    latent_channels: int,
    max_grid: int,
    opt_grid: int = 24,
    max_batch: int = 16,
) -> ExportSpec:
    """The two graphs of a tokenizer with ``patch_size_px`` pixels per token along each side.

    ``max_grid`` bounds both grid sides (the largest image the preprocessing produces, in
    tokens); ``opt_grid`` is the side of the export example and of TensorRT's optimal shape
    (24 tokens: the 384 px short side the preprocessing scales small images up to).
    """
    patch = patch_size_px
    batch = Dim("batch", 1, 2, max_batch)
    side = min(opt_grid, max_grid)
    grid_h = Dim("grid_h", 1, side, max_grid)
    grid_w = Dim("grid_w", 1, side, max_grid)
    dims = (batch, grid_h, grid_w)
    validation = tuple(
        {d.name: min(value, d.max) for d, value in zip(dims, sizes, strict=True)}
        for sizes in VALIDATION_GRIDS
    )
    ids = TensorSpec("ids", "int64", ("batch", "grid_h", "grid_w"))
    encode = GraphSpec(
        name=ENCODE,
        inputs=(TensorSpec("pixels", "compute", ("batch", 3, f"{patch}*grid_h", f"{patch}*grid_w")),),
        outputs=(ids,),
        dims=dims,
        validation_sizes=validation,
        exact_outputs=("ids",),
        description="preprocessed pixels to the ids of the nearest codes",
    )
    decode = GraphSpec(
        name=DECODE,
        inputs=(ids,),
        outputs=(TensorSpec("latents", "compute", ("batch", latent_channels, "grid_h", "grid_w")),),
        dims=dims,
        validation_sizes=validation,
        description="ids to semantic latents",
    )
    return ExportSpec("tokenizer", (encode, decode))
