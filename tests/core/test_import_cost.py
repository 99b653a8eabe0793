"""What `xomni generate` imports, and the small FLUX helpers that spare it diffusers' pipelines."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from diffusers.pipelines.flux.pipeline_flux import FluxPipeline, calculate_shift, retrieve_timesteps

from xomni_plugins.decoders.flux_semantic.model import (
    FLUX_SCHEDULER_CONFIG,
    FluxSemanticDecoder,
    latent_image_ids,
    pack_latents,
    unpack_latents,
)
from xomni_plugins.decoders.flux_semantic.params import FluxSemanticParams

REPO = Path(__file__).resolve().parents[2]
TINY_CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"

#: Modules that text to image with torch components never runs.
UNUSED_BY_GENERATE = ("diffusers.pipelines", "onnx", "onnxruntime", "tensorrt", "matplotlib", "xomni_export")


@pytest.mark.parametrize(
    ("batch", "channels", "height", "width"), [(1, 4, 2, 2), (2, 16, 8, 6), (3, 4, 10, 4)]
)
def test_pack_latents_matches_flux_pipeline(batch: int, channels: int, height: int, width: int) -> None:
    latents = torch.randn(batch, channels, height, width, generator=torch.Generator().manual_seed(0))
    expected = FluxPipeline._pack_latents(latents, batch, channels, height, width)
    assert torch.equal(pack_latents(latents), expected)


@pytest.mark.parametrize(
    ("batch", "height_px", "width_px", "scale"),
    [(1, 32, 32, 8), (2, 64, 48, 8), (1, 40, 24, 4), (3, 70, 35, 8)],
)
def test_unpack_latents_matches_flux_pipeline(batch: int, height_px: int, width_px: int, scale: int) -> None:
    tokens = (height_px // (2 * scale)) * (width_px // (2 * scale))
    packed = torch.randn(batch, tokens, 16, generator=torch.Generator().manual_seed(1))
    expected = FluxPipeline._unpack_latents(packed, height_px, width_px, scale)
    assert torch.equal(unpack_latents(packed, height_px, width_px, scale), expected)


def test_unpack_latents_inverts_pack_latents() -> None:
    latents = torch.randn(2, 4, 6, 8, generator=torch.Generator().manual_seed(2))
    assert torch.equal(unpack_latents(pack_latents(latents), 6 * 8, 8 * 8, 8), latents)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize(("grid_h", "grid_w"), [(1, 1), (2, 3), (7, 5)])
def test_latent_image_ids_match_flux_pipeline(grid_h: int, grid_w: int, dtype: torch.dtype) -> None:
    expected = FluxPipeline._prepare_latent_image_ids(2, grid_h, grid_w, "cpu", dtype)
    ids = latent_image_ids(grid_h, grid_w, "cpu", dtype)
    assert ids.dtype == expected.dtype
    assert torch.equal(ids, expected)


@pytest.mark.parametrize(("steps", "tokens"), [(1, 4), (4, 16), (8, 64), (28, 4096)])
def test_timesteps_match_flux_pipeline(steps: int, tokens: int) -> None:
    decoder = FluxSemanticDecoder.from_params(
        FluxSemanticParams(
            num_dual_stream_layers=1,
            num_single_stream_layers=1,
            num_attention_heads=2,
            attention_head_dim=16,
            axes_dims_rope=(4, 6, 6),
            joint_attention_dim=32,
            pooled_projection_dim=32,
            in_channels=16,
            semantic_channels=8,
            vae_latent_channels=4,
            vae_block_out_channels=(8, 8),
            vae_layers_per_block=1,
            vae_norm_num_groups=4,
            text_conditioning=False,
        )
    )
    reference = type(decoder.scheduler).from_config(FLUX_SCHEDULER_CONFIG)
    config = reference.config
    mu = calculate_shift(
        tokens,
        config.get("base_image_seq_len", 256),
        config.get("max_image_seq_len", 4096),
        config.get("base_shift", 0.5),
        config.get("max_shift", 1.15),
    )
    sigmas = np.linspace(1.0, 1 / steps, steps).tolist()
    expected, _ = retrieve_timesteps(reference, steps, "cpu", sigmas=sigmas, mu=mu)
    assert torch.equal(decoder.timesteps(steps, tokens), expected)
    assert torch.equal(decoder.scheduler.sigmas, reference.sigmas)


def test_generate_imports_only_what_it_runs_and_sets_up_openmp_and_the_collector(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import gc, os, sys
        from xomni_core.cli import main
        config, out, *unused = sys.argv[1:]
        args = ["--config", config, "--out", out, "--steps", "1", "--set", "runtime.threads=1"]
        code = main(["generate", "a red circle", *args])
        loaded = sorted({p for p in unused for m in sys.modules if m == p or m.startswith(p + ".")})
        policy, threads = os.environ.get("OMP_WAIT_POLICY"), sys.modules["torch"].get_num_threads()
        print("CODE", code, "LOADED", loaded, "POLICY", policy, "THREADS", threads, file=sys.stderr)
        frozen = gc.get_freeze_count() > 100_000
        print("COLLECTOR ON", gc.isenabled(), "LIBRARIES FROZEN", frozen, file=sys.stderr)
        """
    )
    env = {k: v for k, v in os.environ.items() if k != "OMP_WAIT_POLICY"}
    result = subprocess.run(
        [sys.executable, "-c", probe, str(TINY_CONFIG), str(tmp_path / "out"), *UNUSED_BY_GENERATE],
        capture_output=True,
        text=True,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "CODE 0 LOADED [] POLICY PASSIVE THREADS 1" in result.stderr
    assert "COLLECTOR ON True LIBRARIES FROZEN True" in result.stderr
    assert (tmp_path / "out" / "image-000.png").is_file()
