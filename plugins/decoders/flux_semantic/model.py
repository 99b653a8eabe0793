"""X-Omni's offline diffusion decoder: FLUX.1-dev conditioned on semantic latents.

One semantic latent per transformer image token (FLUX packs 2x2 latents of an 8x VAE, so a token
covers 16 x 16 px), or with ``semantic_packing=2`` one 2x2 block of a twice finer semantic grid per
token, packed into its channels the way FLUX packs VAE latents. ``siglip_embed`` maps each token's
semantic input to the transformer width; its output is added to the image-token hidden states
between the dual-stream and the single-stream blocks.
Sampling is FLUX's flow-matching Euler loop with true classifier-free guidance whose
unconditional branch sees the empty prompt and all-zero semantic latents.

Folder layout (``save_pretrained``): ``xomni_component.json`` plus the diffusers-style subfolders
``transformer/``, ``vae/``, ``scheduler/`` and, when text-conditioned, ``text_encoder/`` (CLIP),
``tokenizer/``, ``text_encoder_2/`` (T5) and ``tokenizer_2/``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

import numpy as np
import torch
from diffusers.configuration_utils import register_to_config
from diffusers.image_processor import VaeImageProcessor
from diffusers.models.autoencoders.autoencoder_kl import AutoencoderKL
from diffusers.models.modeling_outputs import Transformer2DModelOutput
from diffusers.models.transformers.transformer_flux import FluxTransformer2DModel
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from diffusers.utils import is_accelerate_available
from pydantic import ValidationError
from torch import nn
from tqdm.auto import tqdm

from xomni_core import (
    CheckpointError,
    ConfigError,
    Decoder,
    DecodeRequest,
    InputError,
    atomic_directory,
    read_component_file,
    torch_dtype,
    write_component_file,
)
from xomni_core.text_tokenizers import build_byte_tokenizer

from .params import FLUX_MAX_T5_LENGTH, MAX_INFERENCE_STEPS, FluxSemanticParams

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import CLIPTextModel, PreTrainedTokenizerBase, T5EncoderModel

    from xomni_export import GraphExport, Precision

PLUGIN_NAME = "flux-semantic"
SEMANTIC_WEIGHT = "siglip_embed.weight"

#: FLUX.1-dev's scheduler: resolution-dependent shift between 0.5 (256 tokens) and 1.15 (4096).
FLUX_SCHEDULER_CONFIG: dict[str, Any] = {
    "num_train_timesteps": 1000,
    "shift": 3.0,
    "use_dynamic_shifting": True,
    "base_shift": 0.5,
    "max_shift": 1.15,
    "base_image_seq_len": 256,
    "max_image_seq_len": 4096,
}


class SemanticFluxTransformer(FluxTransformer2DModel):
    """``FluxTransformer2DModel`` plus ``siglip_embed``: semantic latents join the image tokens
    after the dual-stream blocks.

    With ``semantic_latents=None`` (or a zero ``siglip_embed``) the output equals the parent's.
    """

    _supports_gradient_checkpointing = False

    @register_to_config
    def __init__(
        self,
        patch_size: int = 1,
        in_channels: int = 64,
        out_channels: int | None = None,
        num_layers: int = 19,
        num_single_layers: int = 38,
        attention_head_dim: int = 128,
        num_attention_heads: int = 24,
        joint_attention_dim: int = 4096,
        pooled_projection_dim: int = 768,
        guidance_embeds: bool = False,
        axes_dims_rope: tuple[int, int, int] = (16, 56, 56),
        semantic_channels: int = 1536,
    ) -> None:
        super().__init__(
            patch_size=patch_size,
            in_channels=in_channels,
            out_channels=out_channels,
            num_layers=num_layers,
            num_single_layers=num_single_layers,
            attention_head_dim=attention_head_dim,
            num_attention_heads=num_attention_heads,
            joint_attention_dim=joint_attention_dim,
            pooled_projection_dim=pooled_projection_dim,
            guidance_embeds=guidance_embeds,
            axes_dims_rope=axes_dims_rope,
        )
        self.siglip_embed = nn.Linear(semantic_channels, self.inner_dim, bias=False)
        # Zero at initialisation, so fine-tuning starts from the unchanged FLUX model.
        nn.init.zeros_(self.siglip_embed.weight)

    def forward(
        self,
        hidden_states: torch.Tensor,
        encoder_hidden_states: torch.Tensor,
        pooled_projections: torch.Tensor,
        timestep: torch.Tensor,
        img_ids: torch.Tensor,
        txt_ids: torch.Tensor,
        guidance: torch.Tensor | None = None,
        semantic_latents: torch.Tensor | None = None,
        joint_attention_kwargs: dict[str, Any] | None = None,
        return_dict: bool = True,
    ) -> Transformer2DModelOutput | tuple[torch.Tensor]:
        """Velocity for packed latents ``(batch, h*w, in_channels)``.

        ``semantic_latents`` is ``(batch, h*w, semantic_channels)`` in the row-major order of the
        image tokens; ``timestep`` and ``guidance`` are per sample, ``timestep`` in ``[0, 1]``.
        ``txt_ids (text_len, 3)`` and ``img_ids (h*w, 3)`` are FLUX's rotary position ids.
        """
        # Embeddings: image tokens, text tokens, and one conditioning vector per sample.
        hidden_states = self.x_embedder(hidden_states)
        timestep = timestep.to(hidden_states.dtype) * 1000
        if guidance is None:
            temb = self.time_text_embed(timestep, pooled_projections)
        else:
            guidance = guidance.to(hidden_states.dtype) * 1000
            temb = self.time_text_embed(timestep, guidance, pooled_projections)
        encoder_hidden_states = self.context_embedder(encoder_hidden_states)
        image_rotary_emb = self.pos_embed(torch.cat((txt_ids, img_ids), dim=0))

        # Dual-stream blocks: text and image tokens keep separate weights, attend jointly.
        for block in self.transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                temb=temb,
                image_rotary_emb=image_rotary_emb,
                joint_attention_kwargs=joint_attention_kwargs,
            )

        # The X-Omni addition: one projected semantic latent per image token.
        if semantic_latents is not None:
            hidden_states = hidden_states + self.siglip_embed(semantic_latents.to(hidden_states.dtype))

        # Single-stream blocks: one sequence of text then image tokens.
        for block in self.single_transformer_blocks:
            encoder_hidden_states, hidden_states = block(
                hidden_states=hidden_states,
                encoder_hidden_states=encoder_hidden_states,
                temb=temb,
                image_rotary_emb=image_rotary_emb,
                joint_attention_kwargs=joint_attention_kwargs,
            )

        hidden_states = self.norm_out(hidden_states, temb)
        output = self.proj_out(hidden_states)
        if not return_dict:
            return (output,)
        return Transformer2DModelOutput(sample=output)


@dataclass(frozen=True)
class PromptEmbeddings:
    """What FLUX reads from prompts: T5 ``sequence (batch, text_len, joint_attention_dim)``, the
    pooled CLIP vector ``pooled (batch, pooled_projection_dim)`` and the all-zero rotary ids
    ``ids (text_len, 3)``. The text-free variant has ``text_len == 0`` and a zero pooled vector."""

    sequence: torch.Tensor
    pooled: torch.Tensor
    ids: torch.Tensor

    @property
    def batch_size(self) -> int:
        return int(self.sequence.shape[0])


class FluxSemanticDecoder(Decoder[FluxSemanticParams]):
    """Renders semantic latents (and prompts) into images with a FLUX.1-dev based decoder."""

    params_class = FluxSemanticParams

    def __init__(
        self,
        params: FluxSemanticParams,
        transformer: SemanticFluxTransformer,
        vae: AutoencoderKL,
        scheduler: FlowMatchEulerDiscreteScheduler,
        text_encoder: CLIPTextModel | None = None,
        tokenizer: PreTrainedTokenizerBase | None = None,
        text_encoder_2: T5EncoderModel | None = None,
        tokenizer_2: PreTrainedTokenizerBase | None = None,
    ) -> None:
        super().__init__(params)
        text_parts = (text_encoder, tokenizer, text_encoder_2, tokenizer_2)
        if params.text_conditioning and any(part is None for part in text_parts):
            raise ConfigError(
                "text_conditioning=True needs text_encoder, tokenizer, text_encoder_2 and tokenizer_2"
            )
        self.transformer = transformer.eval()
        self.vae = vae.eval()
        self.scheduler = scheduler
        self.text_encoder = text_encoder.eval() if text_encoder is not None else None
        self.tokenizer = tokenizer
        self.text_encoder_2 = text_encoder_2.eval() if text_encoder_2 is not None else None
        self.tokenizer_2 = tokenizer_2
        self.device = torch.device("cpu")
        self.dtype = self.transformer.dtype

    # ----------------------------------------------------------------------------- properties

    @property
    def latent_channels(self) -> int:
        return self.params.semantic_channels

    @property
    def pixels_per_token(self) -> int:
        return self.params.pixels_per_token

    def _modules(self) -> list[nn.Module]:
        modules: list[nn.Module] = [self.transformer, self.vae]
        modules += [m for m in (self.text_encoder, self.text_encoder_2) if m is not None]
        return modules

    def to(self, device: str | None = None, dtype: str | None = None) -> FluxSemanticDecoder:
        target = torch_dtype(dtype) if dtype is not None else None
        if target == self.dtype:
            target = None  # a no-op cast would only make diffusers warn
        # diffusers warns whenever a `dtype` keyword is present, even None: pass only what is set.
        moves: dict[str, Any] = {"device": device} if device is not None else {}
        if target is not None:
            moves["dtype"] = target
        for module in self._modules():
            module.to(**moves)
        if device is not None:
            self.device = torch.device(device)
        if target is not None:
            self.dtype = target
        return self

    # ------------------------------------------------------------------------------ sampling

    @torch.no_grad()
    def encode_prompts(self, prompts: Sequence[str] | None, batch_size: int) -> PromptEmbeddings:
        """FLUX's prompt embeddings (T5 sequence, pooled CLIP); empty for the text-free variant."""
        p = self.params
        if not p.text_conditioning:
            return PromptEmbeddings(
                sequence=torch.zeros(
                    batch_size, 0, p.joint_attention_dim, device=self.device, dtype=self.dtype
                ),
                pooled=torch.zeros(batch_size, p.pooled_projection_dim, device=self.device, dtype=self.dtype),
                ids=torch.zeros(0, 3, device=self.device, dtype=self.dtype),
            )
        assert self.tokenizer is not None and self.tokenizer_2 is not None
        if prompts is None or len(prompts) != batch_size:
            raise InputError(
                f"this decoder is text-conditioned: it needs {batch_size} prompts "
                f"(DecodeRequest.prompts), got {'none' if prompts is None else len(prompts)}"
            )
        clip_ids = self.tokenizer(
            list(prompts),
            padding="max_length",
            max_length=p.clip_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        pooled = self._encode_clip(clip_ids.to(self.device))
        t5_ids = self.tokenizer_2(
            list(prompts),
            padding="max_length",
            max_length=p.t5_max_length,
            truncation=True,
            return_tensors="pt",
        ).input_ids
        sequence = self._encode_t5(t5_ids.to(self.device))
        return PromptEmbeddings(
            sequence=sequence.to(self.dtype),
            pooled=pooled.to(self.dtype),
            ids=torch.zeros(sequence.shape[1], 3, device=self.device, dtype=self.dtype),
        )

    @torch.no_grad()
    def predict_velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        image_ids: torch.Tensor,
        text: PromptEmbeddings,
        semantic_latents: torch.Tensor,
        guidance_scale: float,
        negative_text: PromptEmbeddings | None = None,
    ) -> torch.Tensor:
        """Guided velocity for packed latents ``(batch, h*w, in_channels)`` at ``timestep``
        (per sample, in ``[0, 1]``).

        Above a scale of 1 this is true CFG, ``uncond + scale * (cond - uncond)``, where the
        unconditional branch sees ``negative_text`` (the empty prompt by default) and all-zero
        semantic latents; both branches share one batched forward pass.
        """
        batch = latents.shape[0]
        guidance = (
            torch.full((batch,), self.params.embedded_guidance, device=latents.device)
            if self.params.guidance_embeds
            else None
        )
        if guidance_scale <= 1.0:
            return self._velocity(latents, timestep, guidance, text, image_ids, semantic_latents)

        negative = negative_text if negative_text is not None else self.encode_prompts([""] * batch, batch)
        if negative.sequence.shape[1] != text.sequence.shape[1]:
            raise InputError(
                f"prompt and negative prompt embeddings differ in length "
                f"({text.sequence.shape[1]} vs {negative.sequence.shape[1]})"
            )
        both_text = PromptEmbeddings(
            sequence=torch.cat([text.sequence, negative.sequence]),
            pooled=torch.cat([text.pooled, negative.pooled]),
            ids=text.ids,
        )
        velocity = self._velocity(
            torch.cat([latents, latents]),
            torch.cat([timestep, timestep]),
            None if guidance is None else torch.cat([guidance, guidance]),
            both_text,
            image_ids,
            torch.cat([semantic_latents, torch.zeros_like(semantic_latents)]),
        )
        cond, uncond = velocity.chunk(2)
        return uncond + guidance_scale * (cond - uncond)

    # Model calls of the sampling loop, each one exported graph; a runtime overrides them.

    def _encode_clip(self, ids: torch.Tensor) -> torch.Tensor:
        """Pooled CLIP vectors ``(batch, pooled_projection_dim)`` for padded ids ``(batch, length)``."""
        assert self.text_encoder is not None
        pooled: torch.Tensor = self.text_encoder(ids).pooler_output
        return pooled

    def _encode_t5(self, ids: torch.Tensor) -> torch.Tensor:
        """T5 sequences ``(batch, length, joint_attention_dim)`` for padded ids ``(batch, length)``."""
        assert self.text_encoder_2 is not None
        sequence: torch.Tensor = self.text_encoder_2(ids)[0]
        return sequence

    def _velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None,
        text: PromptEmbeddings,
        image_ids: torch.Tensor,
        semantic_latents: torch.Tensor,
    ) -> torch.Tensor:
        """One transformer pass: the velocity for every sample of ``latents``, unguided."""
        output = self.transformer(
            hidden_states=latents,
            encoder_hidden_states=text.sequence,
            pooled_projections=text.pooled,
            timestep=timestep,
            img_ids=image_ids,
            txt_ids=text.ids,
            guidance=guidance,
            semantic_latents=semantic_latents,
            return_dict=False,
        )
        velocity: torch.Tensor = output[0]
        return velocity

    def initial_noise(
        self, batch_size: int, grid_h: int, grid_w: int, seed: int | Sequence[int], *, shared: bool = False
    ) -> torch.Tensor:
        """Packed Gaussian noise ``(batch, grid_h * grid_w, in_channels)``: image ``i`` draws from
        seed ``seed + i`` (or ``seed[i]`` given one per image), so it starts from the same noise
        alone as in a batch. Drawn on the CPU so a seed gives the same noise on every device.
        ``shared`` repeats the first image's."""
        channels = self.params.vae_latent_channels
        shape = (1, channels, 2 * grid_h, 2 * grid_w)
        seeds = [seed + i for i in range(batch_size)] if isinstance(seed, int) else list(seed)
        drawn = [
            torch.randn(shape, generator=torch.Generator(device="cpu").manual_seed(image_seed))
            for image_seed in seeds[: 1 if shared else batch_size]
        ]
        packed = pack_latents(torch.cat(drawn)).expand(batch_size, -1, -1)
        return packed.to(device=self.device, dtype=self.dtype)

    def timesteps(self, num_inference_steps: int, num_image_tokens: int) -> torch.Tensor:
        """Set the scheduler for a run and return its timesteps (FLUX's shifted sigmas * 1000)."""
        config = self.scheduler.config
        # FLUX's shift mu grows linearly with the number of image tokens.
        base_len, max_len = config.get("base_image_seq_len", 256), config.get("max_image_seq_len", 4096)
        base_shift, max_shift = config.get("base_shift", 0.5), config.get("max_shift", 1.15)
        slope = (max_shift - base_shift) / (max_len - base_len)
        mu = num_image_tokens * slope + (base_shift - slope * base_len)
        sigmas = np.linspace(1.0, 1 / num_inference_steps, num_inference_steps).tolist()
        self.scheduler.set_timesteps(sigmas=sigmas, device=self.device, mu=mu)
        self.scheduler.set_begin_index(0)
        return cast(torch.Tensor, self.scheduler.timesteps)

    @torch.no_grad()
    def decode(self, request: DecodeRequest) -> list[Image]:
        values = request.latents.values
        if request.latents.channels != self.latent_channels:
            raise InputError(
                f"semantic latents have {request.latents.channels} channels, this decoder takes "
                f"{self.latent_channels} (params.semantic_channels)"
            )
        steps = (
            self.params.num_inference_steps
            if request.num_inference_steps is None
            else request.num_inference_steps
        )
        if not 1 <= steps <= MAX_INFERENCE_STEPS:
            raise InputError(f"num_inference_steps must be between 1 and {MAX_INFERENCE_STEPS}, got {steps}")
        scale = self.params.guidance_scale if request.guidance_scale is None else request.guidance_scale
        noise_scale = self.params.noise_scale if request.noise_scale is None else request.noise_scale
        batch = request.latents.batch_size
        semantic, (grid_h, grid_w) = self.semantic_tokens(values.to(self.device, self.dtype))

        text = self.encode_prompts(request.prompts, batch)
        negative = None
        if scale > 1.0:
            negative = self.encode_prompts(request.negative_prompts or [""] * batch, batch)
        image_ids = latent_image_ids(grid_h, grid_w, self.device, self.dtype)
        noise = self.initial_noise(batch, grid_h, grid_w, request.sample_seeds(), shared=request.shared_noise)
        latents = noise * noise_scale

        for step, t in enumerate(
            tqdm(self.timesteps(steps, grid_h * grid_w), desc="decoding", disable=not request.show_progress)
        ):
            timestep = t.expand(batch).to(latents.dtype) / 1000
            velocity = self.predict_velocity(latents, timestep, image_ids, text, semantic, scale, negative)
            latents = self.scheduler.step(velocity, t, latents, return_dict=False)[0]
            if request.callback is not None:
                changed = request.callback(step, t, {"latents": latents})
                if changed and "latents" in changed:
                    latents = changed["latents"]
        settings = f"guidance_scale={scale}, noise_scale={noise_scale}, num_inference_steps={steps}"
        _require_finite(latents, f"decoder plugin '{PLUGIN_NAME}' produced non-finite latents ({settings})")
        return self.latents_to_images(latents, grid_h, grid_w)

    def semantic_tokens(self, values: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        """Semantic latents ``(batch, channels, h, w)`` as the transformer reads them, one row per
        image token: ``(batch, tokens, packed_semantic_channels)``, and that token grid.

        With ``semantic_packing`` p, each p x p block of latents becomes one token, in the channel
        order of FLUX's latent packing; rows follow the row-major order of FLUX's image tokens.
        """
        p = self.params.semantic_packing
        height, width = values.shape[-2:]
        if height % p or width % p:
            raise InputError(
                f"semantic latents of grid {height} x {width}: decoder plugin '{PLUGIN_NAME}' packs "
                f"{p} x {p} of them per image token (params.semantic_packing), so both sides must be "
                f"multiples of {p}"
            )
        return pack_latents(values, p), (height // p, width // p)

    def latents_to_images(self, latents: torch.Tensor, grid_h: int, grid_w: int) -> list[Image]:
        """VAE-decode packed latents of a ``grid_h x grid_w`` token grid into RGB images of
        ``grid * token_px`` pixels."""
        height_px, width_px = grid_h * self.params.token_px, grid_w * self.params.token_px
        scale_factor = self.params.vae_scale_factor
        latents = unpack_latents(latents, height_px, width_px, scale_factor)
        pixels = self._decode_vae(latents)
        _require_finite(pixels, f"decoder plugin '{PLUGIN_NAME}' produced non-finite pixels from its VAE")
        processor = VaeImageProcessor(vae_scale_factor=2 * scale_factor)
        images: list[Image] = processor.postprocess(pixels.float(), output_type="pil")
        return images

    def _decode_vae(self, latents: torch.Tensor) -> torch.Tensor:
        """Pixels in ``[-1, 1]`` for unpacked latents as the sampler leaves them."""
        return decode_vae_latents(self.vae, latents)

    # ------------------------------------------------------------------------------- export

    def export_graphs(self, precision: Precision) -> list[GraphExport]:
        """The graphs of the decoder export spec (transformer step, VAE decoder and, when
        text-conditioned, both text encoders); see :mod:`.export`."""
        from .export import export_graphs

        return export_graphs(self, precision)

    def write_export_assets(self, folder: Path) -> None:
        """The scheduler config and, when text-conditioned, both prompt tokenizers."""
        from .export import write_export_assets

        write_export_assets(self, folder)

    # ------------------------------------------------------------------------- construction

    @classmethod
    def from_params(cls, params: FluxSemanticParams, *, seed: int = 0) -> FluxSemanticDecoder:
        """Random initialisation of every sub-model; prompt tokenizers are byte-level."""
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            transformer = SemanticFluxTransformer(**_transformer_config(params))
            vae = AutoencoderKL(**_vae_config(params))
            text_parts: dict[str, Any] = {}
            if params.text_conditioning:
                text_parts = _random_text_encoders(params)
        scheduler = FlowMatchEulerDiscreteScheduler(**FLUX_SCHEDULER_CONFIG)
        return cls(params, transformer, vae, scheduler, **text_parts)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as tmp:
            write_component_file(tmp, kind=self.kind, plugin=PLUGIN_NAME, params=self.params)
            self.transformer.save_pretrained(tmp / "transformer", safe_serialization=True)
            self.vae.save_pretrained(tmp / "vae", safe_serialization=True)
            self.scheduler.save_pretrained(tmp / "scheduler")
            if self.params.text_conditioning:
                assert self.text_encoder is not None and self.tokenizer is not None
                assert self.text_encoder_2 is not None and self.tokenizer_2 is not None
                self.text_encoder.save_pretrained(tmp / "text_encoder")
                self.tokenizer.save_pretrained(tmp / "tokenizer")
                self.text_encoder_2.save_pretrained(tmp / "text_encoder_2")
                self.tokenizer_2.save_pretrained(tmp / "tokenizer_2")

    @classmethod
    def from_pretrained(
        cls, path: str | os.PathLike[str], *, dtype: str | None = None
    ) -> FluxSemanticDecoder:
        """Load a folder written by :meth:`save_pretrained`, optionally in ``dtype``."""
        folder = Path(path)
        params = read_component_file(
            folder, kind=cls.kind, plugin=PLUGIN_NAME, params_class=FluxSemanticParams
        )
        assert isinstance(params, FluxSemanticParams)
        parts = _load_parts(folder, folder / "transformer", params.text_conditioning, dtype)
        found = _architecture(**parts, text_conditioning=params.text_conditioning)
        # The transformer reads semantic_packing**2 latents per token; the params name one latent.
        packed, area = found["semantic_channels"], params.semantic_packing**2
        found["semantic_channels"] = packed // area if packed % area == 0 else packed / area
        recorded = params.model_dump()
        mismatched = [
            f"{name}={value!r} (params say {recorded[name]!r})"
            for name, value in found.items()
            if value != recorded[name]
        ]
        if mismatched:
            raise CheckpointError(
                f"decoder plugin '{PLUGIN_NAME}': sub-model configs in {folder} disagree with "
                f"{folder / 'xomni_component.json'}: " + ", ".join(mismatched)
            )
        decoder = cls(params, **parts)
        return decoder.to(dtype=dtype) if dtype else decoder

    @classmethod
    def from_flux_folders(
        cls,
        transformer_dir: str | os.PathLike[str],
        flux_dir: str | os.PathLike[str],
        *,
        text_conditioning: bool = True,
        num_inference_steps: int | None = None,
        guidance_scale: float | None = None,
        embedded_guidance: float | None = None,
        dtype: str | None = None,
    ) -> FluxSemanticDecoder:
        """Load the official layout: a diffusers transformer folder whose weights include
        ``siglip_embed.weight``, and a local FLUX.1-dev folder for the VAE, scheduler and (when
        ``text_conditioning``) the text encoders. Sizes are read from the folders' configs;
        ``semantic_channels`` from the shape of ``siglip_embed.weight``."""
        parts = _load_parts(Path(flux_dir), Path(transformer_dir), text_conditioning, dtype)
        sampler = {
            "num_inference_steps": num_inference_steps,
            "guidance_scale": guidance_scale,
            "embedded_guidance": embedded_guidance,
        }
        fields = _architecture(**parts, text_conditioning=text_conditioning)
        fields.update({k: v for k, v in sampler.items() if v is not None})
        try:
            params = FluxSemanticParams(**fields)
        except ValidationError as exc:
            raise CheckpointError(
                f"decoder plugin '{PLUGIN_NAME}': the configs in {transformer_dir} and {flux_dir} "
                f"do not describe a consistent decoder: {exc}"
            ) from exc
        decoder = cls(params, **parts)
        return decoder.to(dtype=dtype) if dtype else decoder


# ------------------------------------------------------------------------------- helpers
# FLUX's latent layout, written out so that sampling needs no diffusers pipeline module: those
# import the whole pipeline machinery and the transformers CLIP and T5 models.


def pack_latents(latents: torch.Tensor, factor: int = 2) -> torch.Tensor:
    """FLUX packing: latents ``(batch, channels, height, width)`` become one token per
    ``factor x factor`` patch (2 in FLUX), ``(batch, (height // f) * (width // f), channels * f * f)``,
    tokens in row-major order."""
    batch, channels, height, width = latents.shape
    f = factor
    patches = latents.reshape(batch, channels, height // f, f, width // f, f).permute(0, 2, 4, 1, 3, 5)
    return patches.reshape(batch, (height // f) * (width // f), channels * f * f)


def unpack_latents(
    packed: torch.Tensor, height_px: int, width_px: int, vae_scale_factor: int
) -> torch.Tensor:
    """Inverse of :func:`pack_latents` for an image of ``height_px x width_px`` pixels and a VAE
    that downsamples by ``vae_scale_factor``: ``(batch, channels // 4, height, width)``."""
    batch, _, channels = packed.shape
    # Packing needs even latent sizes: round the pixel sizes down to whole 2x2 patches.
    height = 2 * (int(height_px) // (vae_scale_factor * 2))
    width = 2 * (int(width_px) // (vae_scale_factor * 2))
    patches = packed.view(batch, height // 2, width // 2, channels // 4, 2, 2).permute(0, 3, 1, 4, 2, 5)
    return patches.reshape(batch, channels // 4, height, width)


def latent_image_ids(
    grid_h: int, grid_w: int, device: torch.device | str, dtype: torch.dtype
) -> torch.Tensor:
    """FLUX's rotary ids of the packed image tokens, ``(grid_h * grid_w, 3)``: ``(0, row, column)``
    in row-major order."""
    ids = torch.zeros(grid_h, grid_w, 3)
    ids[..., 1] = ids[..., 1] + torch.arange(grid_h)[:, None]
    ids[..., 2] = ids[..., 2] + torch.arange(grid_w)[None, :]
    return ids.reshape(grid_h * grid_w, 3).to(device=device, dtype=dtype)


def _require_finite(values: torch.Tensor, message: str) -> None:
    """Refuse to turn NaN or infinite values into an image (they would save as black pixels)."""
    if not bool(torch.isfinite(values).all()):
        raise InputError(f"{message}; no image was written, lower the guidance or noise scale")


def decode_vae_latents(vae: AutoencoderKL, latents: torch.Tensor) -> torch.Tensor:
    """Undo the VAE's latent scaling and shift, then decode to pixels in ``[-1, 1]``."""
    latents = latents / vae.config.scaling_factor + vae.config.shift_factor
    pixels: torch.Tensor = vae.decode(latents.to(vae.dtype), return_dict=False)[0]
    return pixels


def _transformer_config(params: FluxSemanticParams) -> dict[str, Any]:
    return {
        "in_channels": params.in_channels,
        "num_layers": params.num_dual_stream_layers,
        "num_single_layers": params.num_single_stream_layers,
        "attention_head_dim": params.attention_head_dim,
        "num_attention_heads": params.num_attention_heads,
        "joint_attention_dim": params.joint_attention_dim,
        "pooled_projection_dim": params.pooled_projection_dim,
        "guidance_embeds": params.guidance_embeds,
        "axes_dims_rope": params.axes_dims_rope,
        "semantic_channels": params.packed_semantic_channels,
    }


def _vae_config(params: FluxSemanticParams) -> dict[str, Any]:
    levels = len(params.vae_block_out_channels)
    return {
        "in_channels": 3,
        "out_channels": 3,
        "down_block_types": ("DownEncoderBlock2D",) * levels,
        "up_block_types": ("UpDecoderBlock2D",) * levels,
        "block_out_channels": params.vae_block_out_channels,
        "layers_per_block": params.vae_layers_per_block,
        "latent_channels": params.vae_latent_channels,
        "norm_num_groups": params.vae_norm_num_groups,
        "scaling_factor": params.vae_scaling_factor,
        "shift_factor": params.vae_shift_factor,
        # FLUX's VAE has no 1x1 convs around the latent.
        "use_quant_conv": False,
        "use_post_quant_conv": False,
    }


def _prompt_tokenizer(max_length: int) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer that, like CLIP's and T5's, ends every prompt with its end token
    (CLIP's pooled output is read at that token)."""
    from tokenizers import processors

    tokenizer = build_byte_tokenizer(model_max_length=max_length)
    eos, eos_id = tokenizer.eos_token, tokenizer.eos_token_id
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"$A {eos}", pair=f"$A {eos} $B {eos}", special_tokens=[(eos, eos_id)]
    )
    return tokenizer


def _random_text_encoders(params: FluxSemanticParams) -> dict[str, Any]:
    from transformers import CLIPTextConfig, CLIPTextModel, T5Config, T5EncoderModel

    clip_tokenizer = _prompt_tokenizer(params.clip_max_length)
    t5_tokenizer = _prompt_tokenizer(params.t5_max_length)
    for field, size in (("clip_vocab_size", params.clip_vocab_size), ("t5_vocab_size", params.t5_vocab_size)):
        if size < len(clip_tokenizer):
            raise ConfigError(
                f"decoder.params.{field}={size} is smaller than the byte-level tokenizer's "
                f"{len(clip_tokenizer)} tokens"
            )
    clip = CLIPTextModel(
        CLIPTextConfig(
            vocab_size=params.clip_vocab_size,
            hidden_size=params.clip_hidden_size,
            intermediate_size=params.clip_ffn_size,
            num_hidden_layers=params.clip_num_layers,
            num_attention_heads=params.clip_num_heads,
            max_position_embeddings=params.clip_max_length,
            projection_dim=params.clip_hidden_size,
            pad_token_id=clip_tokenizer.pad_token_id,
            bos_token_id=clip_tokenizer.eos_token_id,
            eos_token_id=clip_tokenizer.eos_token_id,
        )
    )
    t5 = T5EncoderModel(
        T5Config(
            vocab_size=params.t5_vocab_size,
            d_model=params.t5_hidden_size,
            d_kv=params.t5_head_dim,
            d_ff=params.t5_ffn_size,
            num_layers=params.t5_num_layers,
            num_heads=params.t5_num_heads,
            feed_forward_proj="gated-gelu",
            pad_token_id=t5_tokenizer.pad_token_id,
            eos_token_id=t5_tokenizer.eos_token_id,
            decoder_start_token_id=t5_tokenizer.pad_token_id,
        )
    )
    return {
        "text_encoder": clip,
        "tokenizer": clip_tokenizer,
        "text_encoder_2": t5,
        "tokenizer_2": t5_tokenizer,
    }


def _architecture(
    *,
    transformer: SemanticFluxTransformer,
    vae: AutoencoderKL,
    scheduler: FlowMatchEulerDiscreteScheduler,
    text_conditioning: bool,
    text_encoder: CLIPTextModel | None = None,
    tokenizer: PreTrainedTokenizerBase | None = None,
    text_encoder_2: T5EncoderModel | None = None,
    tokenizer_2: PreTrainedTokenizerBase | None = None,
) -> dict[str, Any]:
    """The architecture fields of :class:`FluxSemanticParams` as the loaded sub-models say."""
    tc: dict[str, Any] = dict(transformer.config)
    vc: dict[str, Any] = dict(vae.config)
    fields: dict[str, Any] = {
        "num_dual_stream_layers": tc["num_layers"],
        "num_single_stream_layers": tc["num_single_layers"],
        "num_attention_heads": tc["num_attention_heads"],
        "attention_head_dim": tc["attention_head_dim"],
        "joint_attention_dim": tc["joint_attention_dim"],
        "pooled_projection_dim": tc["pooled_projection_dim"],
        "in_channels": tc["in_channels"],
        "guidance_embeds": tc["guidance_embeds"],
        "axes_dims_rope": tuple(tc["axes_dims_rope"]),
        "semantic_channels": tc["semantic_channels"],
        "text_conditioning": text_conditioning,
        "vae_latent_channels": vc["latent_channels"],
        "vae_block_out_channels": tuple(vc["block_out_channels"]),
        "vae_layers_per_block": vc["layers_per_block"],
        "vae_norm_num_groups": vc["norm_num_groups"],
        "vae_scaling_factor": vc["scaling_factor"],
        "vae_shift_factor": vc["shift_factor"] if vc.get("shift_factor") is not None else 0.0,
    }
    if text_encoder is not None and text_encoder_2 is not None:
        clip, t5 = text_encoder.config, text_encoder_2.config
        fields.update(
            {
                "clip_vocab_size": clip.vocab_size,
                "clip_hidden_size": clip.hidden_size,
                "clip_ffn_size": clip.intermediate_size,
                "clip_num_layers": clip.num_hidden_layers,
                "clip_num_heads": clip.num_attention_heads,
                "t5_vocab_size": t5.vocab_size,
                "t5_hidden_size": t5.d_model,
                "t5_head_dim": t5.d_kv,
                "t5_ffn_size": t5.d_ff,
                "t5_num_layers": t5.num_layers,
                "t5_num_heads": t5.num_heads,
            }
        )
        if tokenizer is not None:
            fields["clip_max_length"] = min(clip.max_position_embeddings, tokenizer.model_max_length)
        if tokenizer_2 is not None:
            fields["t5_max_length"] = min(FLUX_MAX_T5_LENGTH, tokenizer_2.model_max_length)
    return fields


def _require_folder(folder: Path, what: str) -> Path:
    if not (folder / "config.json").is_file() and not (folder / "scheduler_config.json").is_file():
        state = "is missing" if not folder.is_dir() else "has no config"
        raise CheckpointError(
            f"decoder plugin '{PLUGIN_NAME}': subfolder '{folder.name}' ({what}) {state}: {folder}"
        )
    return folder


#: Weight files that unpickle when loaded; these folders are read from safetensors only.
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".ckpt", ".pkl")


def _require_safetensors(folder: Path, what: str) -> None:
    """Refuse a sub-model folder whose weights are pickle files, naming them."""
    if any(folder.glob("*.safetensors")):
        return
    pickles = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    found = (
        f"it holds the pickle file(s) {', '.join(pickles)}, which are never unpickled"
        if pickles
        else ("it holds no weights")
    )
    raise CheckpointError(
        f"decoder plugin '{PLUGIN_NAME}': {what} in {folder} must be stored as safetensors "
        f"(only *.safetensors weights are read); {found}. Save it with "
        "save_pretrained(..., safe_serialization=True)"
    )


def _semantic_channels(transformer_dir: Path) -> int:
    """Input width of ``siglip_embed.weight``, read from the safetensors headers only."""
    from safetensors import safe_open

    files = sorted(transformer_dir.glob("*.safetensors"))
    if not files:
        raise CheckpointError(f"decoder plugin '{PLUGIN_NAME}': no safetensors weights in {transformer_dir}")
    index = transformer_dir / "diffusion_pytorch_model.safetensors.index.json"
    if index.is_file():
        shard = json.loads(index.read_text()).get("weight_map", {}).get(SEMANTIC_WEIGHT)
        files = [transformer_dir / shard] if shard else []
    for file in files:
        with safe_open(str(file), framework="pt") as weights:
            if SEMANTIC_WEIGHT in weights.keys():  # noqa: SIM118 (safe_open is not a dict)
                shape = weights.get_slice(SEMANTIC_WEIGHT).get_shape()
                return int(shape[1])
    raise CheckpointError(
        f"decoder plugin '{PLUGIN_NAME}': the transformer weights in {transformer_dir} have no "
        f"'{SEMANTIC_WEIGHT}'; this is a plain FLUX transformer, not an X-Omni decoder"
    )


def _load_parts(
    flux_dir: Path, transformer_dir: Path, text_conditioning: bool, dtype: str | None
) -> dict[str, Any]:
    """Load every sub-model from diffusers-style subfolders, naming what is missing or broken."""
    from transformers import AutoTokenizer, CLIPTextModel, T5EncoderModel

    load_dtype = torch_dtype(dtype) if dtype else None
    if not flux_dir.is_dir():
        raise CheckpointError(f"decoder plugin '{PLUGIN_NAME}': folder {flux_dir} does not exist")
    _require_folder(transformer_dir, "the diffusion transformer")
    semantic_channels = _semantic_channels(transformer_dir)
    # Without accelerate diffusers loads in full memory anyway, but warns on every load unless asked to.
    options = {"torch_dtype": load_dtype, "low_cpu_mem_usage": is_accelerate_available()}
    loaders: list[tuple[str, str, Any]] = [
        (
            "transformer",
            "the diffusion transformer",
            lambda d: SemanticFluxTransformer.from_pretrained(
                d, semantic_channels=semantic_channels, **options
            ),
        ),
        ("vae", "the FLUX VAE", lambda d: AutoencoderKL.from_pretrained(d, **options)),
        ("scheduler", "the flow-matching scheduler", FlowMatchEulerDiscreteScheduler.from_pretrained),
    ]
    if text_conditioning:
        loaders += [
            (
                "text_encoder",
                "the CLIP text encoder",
                lambda d: CLIPTextModel.from_pretrained(d, dtype=load_dtype, use_safetensors=True),
            ),
            ("tokenizer", "the CLIP tokenizer", AutoTokenizer.from_pretrained),
            (
                "text_encoder_2",
                "the T5 text encoder",
                lambda d: T5EncoderModel.from_pretrained(d, dtype=load_dtype, use_safetensors=True),
            ),
            ("tokenizer_2", "the T5 tokenizer", AutoTokenizer.from_pretrained),
        ]
    parts: dict[str, Any] = {}
    for name, what, load in loaders:
        folder = transformer_dir if name == "transformer" else flux_dir / name
        if name.startswith("tokenizer"):
            if not folder.is_dir():
                raise CheckpointError(
                    f"decoder plugin '{PLUGIN_NAME}': subfolder '{name}' ({what}) is missing: {folder}"
                )
        else:
            _require_folder(folder, what)
            if name != "scheduler":
                _require_safetensors(folder, what)
        try:
            parts[name] = load(str(folder))
        except (OSError, ValueError, KeyError, RuntimeError) as exc:
            raise CheckpointError(
                f"decoder plugin '{PLUGIN_NAME}': could not load {what} from {folder}: {exc}"
            ) from exc
    return parts
