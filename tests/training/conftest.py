"""A tiny GRPO setup whose pictures depend on the image tokens.

The random decoder's semantic projection starts at zero (its pictures ignore the tokens) and its
random velocity is small (its pictures are mostly the VAE's view of the starting noise). The
fixture saves a decoder with a random projection and a ten times larger output layer, so that an
image's mean colour moves by about 20 RGB units with its tokens and by about 2 with the noise,
and aims the target-colour reward at the colour of one constant token grid, which the policy can
therefore reach.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from support import REPO

from xomni_core import DecodeRequest, TextToImagePipeline, TokenGrid
from xomni_core.config import load_config

EXAMPLE = REPO / "examples" / "configs" / "tiny-grpo.yaml"
GRID = 2  # 2 x 2 image tokens, 32 x 32 px
PROMPT = "a red apple"


@dataclass(frozen=True)
class ColourSetup:
    """A config (as data) training the tiny backbone towards ``target``."""

    data: dict[str, Any]
    target: tuple[int, int, int]

    def config(self, **grpo: Any) -> dict[str, Any]:
        """The config data with ``training.grpo`` keys replaced."""
        data = copy.deepcopy(self.data)
        data["training"]["grpo"].update(grpo)
        return data

    def write(self, path: Path, **grpo: Any) -> Path:
        path.write_text(yaml.safe_dump(self.config(**grpo)))
        return path


@pytest.fixture(scope="session")
def colour_setup(tmp_path_factory: pytest.TempPathFactory) -> ColourSetup:
    data = yaml.safe_load(EXAMPLE.read_text())
    data["decoder"]["params"]["num_inference_steps"] = 1
    pipeline = TextToImagePipeline.from_config(load_config(data=data))
    transformer = pipeline.decoder.transformer  # type: ignore[attr-defined]
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        weight = transformer.siglip_embed.weight
        weight.copy_(torch.randn(weight.shape, generator=generator) * 10.0 / weight.shape[1] ** 0.5)
        transformer.proj_out.weight.mul_(10.0)
    folder = tmp_path_factory.mktemp("colour") / "decoder"
    pipeline.decoder.save_pretrained(folder)

    def mean_colour(ids: torch.Tensor) -> np.ndarray:
        latents = pipeline.tokenizer.decode(TokenGrid(ids))
        request = DecodeRequest(latents=latents, prompts=(PROMPT,), num_inference_steps=1, seed=0)
        image = pipeline.decoder.decode(request)[0]
        return np.asarray(image, dtype=np.float64).reshape(-1, 3).mean(axis=0)

    constant = np.stack([mean_colour(torch.full((1, GRID, GRID), k)) for k in range(256)])
    random_grids = torch.randint(0, 256, (64, 1, GRID, GRID), generator=generator)
    typical = np.stack([mean_colour(ids) for ids in random_grids]).mean(axis=0)
    # The constant grid farthest from what the untrained policy draws: reachable and far away.
    best = int(np.argmax(np.linalg.norm(constant - typical, axis=1)))
    target = tuple(round(c) for c in constant[best])

    data["decoder"]["weights"] = str(folder)
    data["rewards"] = [
        {
            "plugin": "target-color",
            "params": {"target_color": list(target), "measure": "mean", "radius": 32.0},
        }
    ]
    data["training"]["grpo"].update(
        {
            "prompts": [PROMPT],
            "height_px": GRID * 16,
            "width_px": GRID * 16,
            "num_inference_steps": 1,
            "group_size": 8,
            "prompts_per_step": 2,
            "learning_rate": 1.0e-2,
            "kl_coef": 0.01,
            "seed": 0,
        }
    )
    return ColourSetup(data, (target[0], target[1], target[2]))
