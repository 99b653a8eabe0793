"""Settings of the xomni-nano recipe: data, one section per stage, and the evaluation.

The defaults are the recipe that produced the shipped weights; ``--set stage.field=value`` on
the command line changes any of them (``--set grpo.steps=200``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from xomni_core import SamplingParams
from xomni_core.training.settings import LearningRateDecay
from xomni_plugins.decoders.flux_semantic.training import FlowSettings, VAESettings
from xomni_plugins.tokenizers.siglip_vq.training import IBQSettings

#: The architecture of the nano pipeline (components, generation defaults).
PIPELINE_TEMPLATE = Path(__file__).with_name("pipeline.yaml")


class NanoData(BaseModel):
    """The synthetic training images that the tokenizer and decoder learn from."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    train_images: int = Field(4000, ge=8, description="train-split scenes rendered once for stages 1-2")
    word_images: int = Field(
        2000, ge=0, description="extra train-split word scenes for stages 1-2, after the train_images"
    )
    image_px: int = Field(128, ge=32, description="side of every image, a multiple of 16")
    seed: int = Field(0, ge=0, description="seed of the scenes")


class NanoTokenizer(IBQSettings):
    """IBQ with object pixels weighed up and shape maps named per pixel.

    Without either, a token inside a square matches one inside a circle of the same colour, and
    the decoder draws every shape as a rounded blob.
    """

    object_weight: float = Field(10.0, ge=0.0, description="extra weight of painted object pixels")
    segmentation_weight: float = Field(
        1.0, ge=0.0, description="weight of naming the shape (or letter) under each painted pixel"
    )
    letter_classes: bool = Field(
        True,
        description="name each letter of a word in the segmentation target instead of 'text', so "
        "the codes have to tell letters apart",
    )


class NanoVAE(VAESettings):
    """The VAE on half-size images, then the whole VAE refined on full-size ones: pooled to half
    size, a word's strokes are a pixel wide and the VAE draws words as bars; trained at full size
    from the start, it draws them too thick and objects worse (BENCHMARKS.md, "Words: the text
    ceiling")."""

    refine_steps: int = Field(3000, ge=0, description="full-size steps after the pooled ones")
    refine_learning_rate: float = Field(2e-3, gt=0.0, description="peak learning rate of the refining steps")
    refine_encoder: bool = Field(True, description="the refining steps train the encoder too")


class NanoSFT(BaseModel):
    """Backbone supervised fine-tuning on train-split captions (``xomni train sft``)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenes: int = Field(12000, ge=1, description="train-split scenes, rendered and tokenized once")
    steps: int = Field(2500, ge=1)
    batch_size: int = Field(32, ge=1)
    learning_rate: float = Field(1e-3, gt=0.0)
    warmup_steps: int = Field(100, ge=0)
    decay: LearningRateDecay = Field("none", description="learning-rate decay after warm-up")
    weight_decay: float = Field(0.01, ge=0.0)
    caption_drop: float = Field(
        0.0, ge=0.0, lt=1.0, description="share of pairs trained on the image prefix alone (for CFG)"
    )
    checkpoint_every: int = Field(
        250, ge=1, description="steps between checkpoints; a stopped run resumes from the newest"
    )


class NanoGRPO(BaseModel):
    """GRPO of the SFT backbone on rl-split prompts, rewarded by the compositional judge."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    prompts: int = Field(2000, ge=1, description="rl-split scenes whose captions are the prompts")
    held_out_prompts: bool = Field(
        True,
        description="prompts may name the colour-shape pairs and words that no train image shows "
        "(those whose caption hashes to rl, never a caption of the comparison's eval scenes): the "
        "policy learns them from the reward alone",
    )
    held_out_share: float | None = Field(
        None,
        ge=0.0,
        le=1.0,
        description="share of the prompts that name a held-out pair or word, spread evenly over the "
        "prompt list (None: as the rl split draws them, about a fifth); needs held_out_prompts",
    )
    steps: int = Field(600, ge=1)
    group_size: int = Field(8, ge=2)
    prompts_per_step: int = Field(8, ge=1)
    updates_per_rollout: int = Field(1, ge=1, description="optimiser steps on each step's rollouts")
    learning_rate: float = Field(3e-4, gt=0.0)
    warmup_steps: int = Field(20, ge=0, description="steps of linear learning-rate warm-up")
    decay: LearningRateDecay = Field("cosine", description="learning-rate decay after warm-up")
    kl_coef: float = Field(0.01, ge=0.0)
    clip_epsilon: float = Field(0.2, gt=0.0, lt=1.0)
    correct_bonus: float = Field(
        0.0,
        ge=0.0,
        description="the reward's extra for an image whose every check passes, on top of the share "
        "of passed checks",
    )
    attribute_credit: float = Field(
        0.5,
        ge=0.0,
        le=1.0,
        description="the reward's share of a missed object's check for drawing its colour (half) or "
        "its shape (half) as often as the caption names it",
    )
    regional_credit: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of each check's advantage that only the image tokens under the objects "
        "that decided it take (0: every token takes the image's advantage)",
    )
    sampling: SamplingParams = Field(
        SamplingParams(temperature=1.0),
        description="temperature and truncation of the rollouts (untruncated: min-p would cut the rare "
        "first token of each object); their guidance is the recipe's cfg_scale",
    )
    num_inference_steps: int = Field(
        2,
        ge=1,
        description="decoder steps of the rollouts (2 judge 205 of 210 eval images as 8 do, at a "
        "quarter of the cost)",
    )
    checkpoint_every: int = Field(
        25, ge=1, description="steps between checkpoints; a stopped run resumes from the newest"
    )
    eval_prompts: int = Field(
        64,
        ge=0,
        description="rl-split scenes after the training prompts whose mean reward (one seeded sample "
        "each) the metrics record every eval_every steps (0: none)",
    )
    eval_every: int = Field(50, ge=1, description="steps between evaluations of the eval_prompts")

    @model_validator(mode="after")
    def _share_needs_held_out_prompts(self) -> NanoGRPO:
        if self.held_out_share and not self.held_out_prompts:
            raise ValueError(
                f"held_out_share {self.held_out_share} asks for held-out prompts, which "
                "held_out_prompts=false leaves out; set held_out_share=null or held_out_prompts=true"
            )
        return self


class NanoEval(BaseModel):
    """The held-out comparison: SFT single sample, SFT best-of-N, GRPO single sample."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    scenes: int = Field(210, ge=1, description="eval-split scenes, shared across the categories")
    seed: int = Field(0, ge=0, description="seed of the scenes and of sampling")
    best_of: int | None = Field(None, ge=2, description="N of best-of-N (None: the GRPO group size)")
    batch_size: int = Field(16, ge=1, description="prompts per pipeline call")


class NanoRecipe(BaseModel):
    """Every stage of ``xomni train nano``, in order."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    seed: int = Field(0, ge=0, description="seed of every random initialisation")
    threads: int | None = Field(2, ge=1, description="torch CPU threads (None: torch's default)")
    decoder_noise_scale: float | None = Field(
        0.0,
        ge=0.0,
        description="generation.noise_scale of the GRPO rollouts, the evaluation and the model folder "
        "(None: the decoder's default); 0 makes every reward a function of the tokens alone",
    )
    cfg_scale: float = Field(
        1.0,
        ge=1.0,
        description="backbone classifier-free guidance of the GRPO rollouts, the evaluation and the "
        "model folder (generation.sampling.cfg_scale): GRPO trains the policy that generation samples",
    )
    data: NanoData = NanoData()
    tokenizer: NanoTokenizer = NanoTokenizer()
    vae: NanoVAE = NanoVAE()
    flow: FlowSettings = FlowSettings()
    sft: NanoSFT = NanoSFT()
    grpo: NanoGRPO = NanoGRPO()
    eval: NanoEval = NanoEval()

    @model_validator(mode="after")
    def _guidance_has_an_unconditional_branch(self) -> NanoRecipe:
        if self.cfg_scale > 1.0 and self.sft.caption_drop == 0.0:
            raise ValueError(
                f"cfg_scale {self.cfg_scale} guides against the empty prompt, which only sft.caption_drop "
                "> 0 trains; set sft.caption_drop (0.1 works) or cfg_scale=1"
            )
        if self.grpo.sampling.cfg_scale != 1.0:
            raise ValueError("grpo.sampling.cfg_scale: the rollouts' guidance is the recipe's cfg_scale")
        return self

    @property
    def best_of(self) -> int:
        return self.eval.best_of or self.grpo.group_size


def pipeline_template() -> dict[str, Any]:
    """The nano pipeline config (no weights, no training section) as a dict."""
    loaded: dict[str, Any] = yaml.safe_load(PIPELINE_TEMPLATE.read_text())
    return loaded
