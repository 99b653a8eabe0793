"""Export spec of a FLUX-style diffusion decoder: one denoising step, the VAE decoder and, for
a text-conditioned decoder, its two text encoders. The sampling loop (scheduler, guidance, noise)
stays in Python around these graphs.

``transformer``, one velocity prediction; float inputs are in the compute dtype:

- ``latents (batch, tokens, in_channels)``: packed VAE latents, one token per semantic latent
- ``text (batch, text_len, joint_dim)``: the T5 sequence (text-conditioned only)
- ``pooled (batch, pooled_dim)``: the pooled CLIP vector (text-conditioned only)
- ``timestep (batch,)``: the flow-matching sigma in ``[0, 1]`` (the graph scales it by 1000)
- ``img_ids (tokens, 3)``, ``txt_ids (text_len, 3)``: FLUX's rotary position ids (``txt_ids``
  text-conditioned only)
- ``semantic (batch, tokens, semantic_channels)``: the semantic latents in row-major token order
- ``guidance (batch,)``: the distilled guidance value, last, only for models that embed it
- output ``velocity (batch, tokens, in_channels)``

A text-free decoder's ``transformer`` has no text inputs: its empty sequence and zero pooled
vector are constants inside the graph.

``vae_decoder``: unpacked latents ``(batch, vae_channels, f*grid_h, f*grid_w)`` as the sampler
leaves them (the graph undoes the VAE's scaling and shift) to an image ``(batch, 3,
p*grid_h, p*grid_w)`` in ``[-1, 1]``; ``f`` latents and ``p`` pixels per token along each side.

``text_encoder`` (CLIP): ``ids (batch, text_len)`` int64 to ``pooled (batch, pooled_dim)``;
``text_encoder_2`` (T5): ``ids (batch, text_len)`` int64 to ``text (batch, text_len, joint_dim)``.
Their outputs are named as the ``transformer`` inputs they feed.
"""

from __future__ import annotations

from dataclasses import dataclass

from .. import Dim, ExportSpec, GraphSpec, TensorSpec

TRANSFORMER = "transformer"
VAE_DECODER = "vae_decoder"
TEXT_ENCODER = "text_encoder"
TEXT_ENCODER_2 = "text_encoder_2"

#: (batch, grid_h, grid_w, text_len) of the parity gate's cases: small, non-square, and none
#: equal to the export example.
VALIDATION = ((1, 2, 3, 3), (3, 5, 1, 1), (4, 1, 4, 7))


@dataclass(frozen=True)
class TextConditioning:
    """The prompt path of a text-conditioned decoder: widths and padded prompt lengths."""

    joint_dim: int
    pooled_dim: int
    clip_length: int
    t5_length: int


def decoder_export_spec(
    *,
    in_channels: int,
    semantic_channels: int,
    vae_channels: int,
    latents_per_token: int,
    pixels_per_token: int,
    guidance_embeds: bool,
    text: TextConditioning | None,
    max_grid: int = 128,
    opt_grid: int = 32,
    max_batch: int = 16,
) -> ExportSpec:
    """The graphs of a FLUX-style decoder; ``text=None`` for a decoder without prompts.

    ``max_batch`` counts the doubled batch of classifier-free guidance; ``max_grid`` bounds both
    sides of the token grid and ``opt_grid`` is the side of the export example.
    """
    side = min(opt_grid, max_grid)
    batch = Dim("batch", 1, 2, max_batch)
    tokens = Dim("tokens", 1, side * side, max_grid * max_grid)
    grid_h = Dim("grid_h", 1, side, max_grid)
    grid_w = Dim("grid_w", 1, side, max_grid)
    # Text-only inputs, in the order they take among the transformer's inputs.
    text_dims: tuple[Dim, ...] = ()
    sequence: tuple[TensorSpec, ...] = ()
    txt_ids: tuple[TensorSpec, ...] = ()
    if text is not None:
        text_dims = (Dim("text_len", 1, text.t5_length, text.t5_length),)
        sequence = (
            TensorSpec("text", "compute", ("batch", "text_len", text.joint_dim)),
            TensorSpec("pooled", "compute", ("batch", text.pooled_dim)),
        )
        txt_ids = (TensorSpec("txt_ids", "compute", ("text_len", 3)),)
    guidance = (TensorSpec("guidance", "compute", ("batch",)),) if guidance_embeds else ()
    step_dims = (batch, tokens, *text_dims)
    transformer = GraphSpec(
        name=TRANSFORMER,
        inputs=(
            TensorSpec("latents", "compute", ("batch", "tokens", in_channels)),
            *sequence,
            TensorSpec("timestep", "compute", ("batch",)),
            TensorSpec("img_ids", "compute", ("tokens", 3)),
            *txt_ids,
            TensorSpec("semantic", "compute", ("batch", "tokens", semantic_channels)),
            *guidance,
        ),
        outputs=(TensorSpec("velocity", "compute", ("batch", "tokens", in_channels)),),
        dims=step_dims,
        validation_sizes=_validation(step_dims),
        description="one velocity prediction of the flow-matching sampler",
    )
    f, p = latents_per_token, pixels_per_token
    vae_decoder = GraphSpec(
        name=VAE_DECODER,
        inputs=(TensorSpec("latents", "compute", ("batch", vae_channels, f"{f}*grid_h", f"{f}*grid_w")),),
        outputs=(TensorSpec("image", "compute", ("batch", 3, f"{p}*grid_h", f"{p}*grid_w")),),
        dims=(batch, grid_h, grid_w),
        validation_sizes=_validation((batch, grid_h, grid_w)),
        description="sampled latents to an image in [-1, 1]",
    )
    if text is None:
        return ExportSpec("decoder", (transformer, vae_decoder))
    ids = TensorSpec("ids", "int64", ("batch", "text_len"))
    clip_dims = (batch, Dim("text_len", 1, text.clip_length, text.clip_length))
    text_encoder = GraphSpec(
        name=TEXT_ENCODER,
        inputs=(ids,),
        outputs=(TensorSpec("pooled", "compute", ("batch", text.pooled_dim)),),
        dims=clip_dims,
        validation_sizes=_validation(clip_dims),
        description="CLIP: padded prompt ids to the pooled vector",
    )
    t5_dims = (batch, *text_dims)
    text_encoder_2 = GraphSpec(
        name=TEXT_ENCODER_2,
        inputs=(ids,),
        outputs=(TensorSpec("text", "compute", ("batch", "text_len", text.joint_dim)),),
        dims=t5_dims,
        validation_sizes=_validation(t5_dims),
        description="T5: padded prompt ids to the sequence",
    )
    return ExportSpec("decoder", (transformer, vae_decoder, text_encoder, text_encoder_2))


def _validation(dims: tuple[Dim, ...]) -> tuple[dict[str, int], ...]:
    """:data:`VALIDATION` for the given dims, each size kept within its dim's range."""
    cases = []
    for batch, grid_h, grid_w, text_len in VALIDATION:
        sizes = {"batch": batch, "grid_h": grid_h, "grid_w": grid_w, "text_len": text_len}
        sizes["tokens"] = grid_h * grid_w
        cases.append({d.name: min(sizes[d.name], d.max) for d in dims})
    return tuple(cases)
