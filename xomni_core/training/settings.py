"""Settings of the training commands: the ``training`` section of a pipeline config.

Pydantic only, so configs with a training section validate without importing torch.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, field_validator, model_validator

from ..checked import CheckedModel
from ..types import SamplingParams

LearningRateDecay = Literal["none", "cosine"]
_DECAY = "after warm-up, keep the learning rate (none) or decay it to 0 by the last step (cosine)"


class TrainingPrompt(CheckedModel):
    """A prompt with per-sample metadata that reaches the rewards (e.g. ``target_color``)."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompt: str = Field(min_length=1)
    metadata: dict[str, Any] = Field(default_factory=dict, description="passed to every reward")


class GRPOEvalSettings(CheckedModel):
    """Held-out prompts whose mean reward is measured every few steps: one seeded sample each,
    the same seeds at every evaluation, so the numbers follow the policy alone."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    prompts: tuple[str | TrainingPrompt, ...] = Field(
        (), description="held-out prompts, each a string or {prompt, metadata}"
    )
    prompts_file: str | None = Field(
        None,
        description="text file of one prompt a line, or .jsonl of {prompt, metadata}; relative to the config",
    )
    every: int = Field(50, ge=1, description="steps between evaluations (the last step always evaluates)")
    samples: int = Field(
        0,
        ge=0,
        le=64,
        description="of these, the images of the first this many prompts are saved at each evaluation "
        "into OUTPUT/samples/step-NNNNNNNN/ (and tensorboard)",
    )

    @model_validator(mode="after")
    def _one_source(self) -> GRPOEvalSettings:
        if bool(self.prompts) == (self.prompts_file is not None):
            raise ValueError("give exactly one of prompts (a list) and prompts_file (a path)")
        return self

    def training_prompts(self) -> list[TrainingPrompt]:
        """The inline prompts, each as a :class:`TrainingPrompt`."""
        return [p if isinstance(p, TrainingPrompt) else TrainingPrompt(prompt=p) for p in self.prompts]


class GRPOSettings(CheckedModel):
    """Group Relative Policy Optimisation of the backbone on image tokens.

    Each step samples ``group_size`` images for each of ``prompts_per_step`` prompts on every
    process, scores them with the config's rewards and takes ``updates_per_rollout`` optimiser
    steps on the clipped policy-ratio objective with a KL penalty to the starting weights.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    steps: int = Field(100, ge=1, description="optimisation steps (one rollout each)")
    group_size: int = Field(8, ge=2, description="images per prompt; advantages compare them")
    prompts_per_step: int = Field(
        1, ge=1, description="prompts per step and process; the global batch is this times the processes"
    )
    updates_per_rollout: int = Field(
        1, ge=1, description="optimiser steps per rollout; from the second on the ratio is clipped"
    )
    micro_batch_size: int | None = Field(
        None, ge=1, description="samples per forward and backward pass (None: a process's whole batch)"
    )
    learning_rate: float = Field(1e-5, gt=0.0, description="AdamW learning rate")
    warmup_steps: int = Field(
        0, ge=0, description="steps over which the learning rate rises linearly to learning_rate"
    )
    decay: LearningRateDecay = Field("none", description=_DECAY)
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="clip the gradient norm (None: never)")
    clip_epsilon: float = Field(0.2, gt=0.0, lt=1.0, description="policy ratios are clipped to 1 +- this")
    kl_coef: float = Field(0.04, ge=0.0, description="weight of the KL penalty to the reference (0: none)")
    advantage_eps: float = Field(1e-4, gt=0.0, description="added to a group's reward deviation")
    regional_credit: float = Field(
        0.0,
        ge=0.0,
        le=1.0,
        description="share of a reward part's advantage that only the image tokens under its regions "
        "take, for rewards that say where they were earned (compose-judge: the objects that decided "
        "a check); 0: every token takes the sample's advantage, as in GRPO",
    )
    sampling: SamplingParams = Field(
        SamplingParams(temperature=1.0),
        description="how image tokens are sampled during rollouts; with cfg_scale above 1 the policy "
        "trained is the guided one, which needs a backbone that learnt the unconditional branch",
    )
    height_px: int | None = Field(None, gt=0, description="image height (None: generation.height_px)")
    width_px: int | None = Field(None, gt=0, description="image width (None: generation.width_px)")
    grid_h: int | None = Field(None, ge=1, description="token rows, instead of height_px")
    grid_w: int | None = Field(None, ge=1, description="token columns, instead of width_px")
    num_inference_steps: int | None = Field(
        None, ge=1, le=1000, description="decoder steps, at most 1000 (None: generation.num_inference_steps)"
    )
    guidance_scale: float | None = Field(
        None, ge=0.0, description="decoder guidance (None: generation.guidance_scale)"
    )
    noise_scale: float | None = Field(
        None, ge=0.0, description="decoder initial-noise scale (None: generation.noise_scale)"
    )
    decoder_noise: Literal["shared", "independent"] = Field(
        "shared",
        description="shared: a group's images start from the same decoder noise, so their rewards "
        "differ by their tokens only; independent: each image draws its own",
    )
    decoder_draws: int = Field(
        1,
        ge=1,
        description="decoder draws per token sample; its reward is their mean, so a sample is "
        "credited for its tokens rather than for one lucky or unlucky rendering",
    )
    prompts: tuple[str | TrainingPrompt, ...] = Field(
        (), description="training prompts, each a string or {prompt, metadata}"
    )
    prompts_file: str | None = Field(
        None,
        description="text file of one prompt a line, or .jsonl of {prompt, metadata}; relative to the config",
    )
    shuffle: bool = Field(True, description="visit the prompts in a new seeded order each epoch")
    seed: int | None = Field(
        None, ge=0, lt=2**31, description="seed of data order and sampling (None: runtime.seed)"
    )
    output_dir: str = Field(
        "outputs/grpo",
        min_length=1,
        description="checkpoints, metrics and plot; relative to the working directory",
    )
    checkpoint_every: int = Field(
        50, ge=1, description="steps between checkpoints (the last step always saves)"
    )
    keep_checkpoints: int | None = Field(2, ge=1, description="newest checkpoints kept (None: all)")
    eval: GRPOEvalSettings | None = Field(
        None,
        description="held-out prompts {prompts | prompts_file, every, samples}: eval_reward in the metrics",
    )

    @field_validator("sampling")
    @classmethod
    def _samples_from_the_policy(cls, sampling: SamplingParams) -> SamplingParams:
        if sampling.greedy:
            raise ValueError("temperature must be above 0: greedy rollouts make every group identical")
        return sampling

    @model_validator(mode="after")
    def _one_source_and_one_size(self) -> GRPOSettings:
        if bool(self.prompts) == (self.prompts_file is not None):
            raise ValueError("give exactly one of prompts (a list) and prompts_file (a path)")
        pixels = (self.height_px, self.width_px)
        grid = (self.grid_h, self.grid_w)
        if any(v is not None for v in pixels) and any(v is not None for v in grid):
            raise ValueError("give the image size either as height_px/width_px or as grid_h/grid_w")
        if (self.grid_h is None) != (self.grid_w is None):
            raise ValueError("grid_h and grid_w go together")
        return self

    def training_prompts(self) -> list[TrainingPrompt]:
        """The inline prompts, each as a :class:`TrainingPrompt`."""
        return [p if isinstance(p, TrainingPrompt) else TrainingPrompt(prompt=p) for p in self.prompts]


class SyntheticCaptions(CheckedModel):
    """Captioned scenes drawn by :mod:`xomni_core.synthetic`, seeded and rendered on the fly."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    split: Literal["train", "rl", "eval"] = Field("train", description="which split's captions")
    n: int = Field(ge=1, description="number of scenes")
    seed: int = Field(0, ge=0, description="scene ``i`` depends on (split, seed, i) only")
    categories: tuple[str, ...] | None = Field(
        None, min_length=1, description="scene categories to cycle through (None: all)"
    )

    @field_validator("categories")
    @classmethod
    def _known_categories(cls, categories: tuple[str, ...] | None) -> tuple[str, ...] | None:
        if categories is not None:
            from ..synthetic.scenes import check_categories  # numpy, Pillow and pydantic only

            check_categories(categories)
        return categories


#: Most rows a data set may hold by default: every image is decoded once and kept, at the
#: training size, for the whole run.
MAX_DATASET_ROWS = 100_000

BadImagePolicy = Literal["error", "skip"]
_ON_BAD_IMAGE = (
    "an image that does not decode (damaged, truncated, empty, not an image, over the pixel limit): "
    "error stops before training naming its row; skip leaves the pair out and warns once with a summary"
)
_SOURCES = "synthetic {split, n, ...}, data_file (a path) or dataset {path, ...}"


class DatasetSource(CheckedModel):
    """A local Hugging Face ``datasets`` folder (``save_to_disk``) or an ``imagefolder``
    directory (images with ``metadata.jsonl`` or ``metadata.csv``), read offline."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    path: str = Field(min_length=1, description="the folder; relative to the config file")
    format: Literal["auto", "disk", "imagefolder"] = Field(
        "auto",
        description="disk: written by Dataset(Dict).save_to_disk; imagefolder: images plus metadata; "
        "auto: disk when the folder holds dataset_info.json or dataset_dict.json, else imagefolder",
    )
    image_column: str = Field("image", min_length=1, description="column of the images (or their paths)")
    caption_column: str = Field("text", min_length=1, description="column of the captions")
    split: str = Field("train", min_length=1, description="split of a DatasetDict (imagefolder: train)")
    max_rows: int = Field(
        MAX_DATASET_ROWS,
        ge=1,
        description="refuse a split with more rows, before decoding any image (each is kept in memory "
        "at the training size)",
    )


def _one_of(*sources: object) -> None:
    if sum(source is not None for source in sources) != 1:
        raise ValueError(f"give exactly one data source: {_SOURCES}")


class SFTEvalSettings(CheckedModel):
    """Held-out pairs whose loss (validation loss) is measured every few steps, and captions of
    which a few images are drawn."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    synthetic: SyntheticCaptions | None = Field(
        None, description="synthetic captioned scenes {split, n, seed, categories}, e.g. split: eval"
    )
    data_file: str | None = Field(
        None, description=".jsonl of {image, caption}; paths relative to the config (the file's to the file)"
    )
    dataset: DatasetSource | None = Field(
        None, description="a local datasets folder or imagefolder {path, format, image_column, ...}"
    )
    on_bad_image: BadImagePolicy = Field("error", description=_ON_BAD_IMAGE)
    every: int = Field(50, ge=1, description="steps between evaluations (the last step always evaluates)")
    batch_size: int = Field(8, ge=1, description="pairs per forward pass")
    samples: int = Field(
        0,
        ge=0,
        le=64,
        description="images drawn at each evaluation for the first this many held-out captions, "
        "seeded, into OUTPUT/samples/step-NNNNNNNN/ (and tensorboard); they need the config's decoder",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SFTEvalSettings:
        _one_of(self.synthetic, self.data_file, self.dataset)
        return self


class SFTSettings(CheckedModel):
    """Supervised fine-tuning of the backbone on image-caption pairs.

    The frozen tokenizer turns each image into a token grid (once, before training); the loss is
    the mean negative log-likelihood of those tokens after ``caption + image_prefix``, teacher
    forced, under the backbone's image-mode logits.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    synthetic: SyntheticCaptions | None = Field(
        None, description="train on synthetic captioned scenes {split, n, seed, categories}"
    )
    data_file: str | None = Field(
        None, description=".jsonl of {image, caption}; paths relative to the config (the file's to the file)"
    )
    dataset: DatasetSource | None = Field(
        None, description="a local datasets folder or imagefolder {path, format, image_column, ...}"
    )
    on_bad_image: BadImagePolicy = Field("error", description=_ON_BAD_IMAGE)
    height_px: int | None = Field(None, gt=0, description="image height (None: generation.height_px)")
    width_px: int | None = Field(None, gt=0, description="image width (None: generation.width_px)")
    batch_size: int = Field(8, ge=1, description="pairs per step and process")
    learning_rate: float = Field(1e-5, gt=0.0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0.0, description="AdamW weight decay")
    warmup_steps: int = Field(0, ge=0, description="steps of linear learning-rate warm-up from 0")
    decay: LearningRateDecay = Field("none", description=_DECAY)
    steps: int | None = Field(None, ge=1, description="optimisation steps (instead of epochs)")
    epochs: int | None = Field(
        None, ge=1, description="passes over the data (instead of steps); the last step may wrap around"
    )
    max_grad_norm: float | None = Field(1.0, gt=0.0, description="clip the gradient norm (None: never)")
    caption_drop: float = Field(
        0.0,
        ge=0.0,
        lt=1.0,
        description="share of pairs trained on the image prefix alone, which teaches the "
        "unconditional branch that classifier-free guidance (sampling.cfg_scale) contrasts with",
    )
    shuffle: bool = Field(True, description="visit the pairs in a new seeded order each epoch")
    seed: int | None = Field(None, ge=0, lt=2**31, description="seed of the data order (None: runtime.seed)")
    output_dir: str = Field(
        "outputs/sft",
        min_length=1,
        description="checkpoints, metrics and plot; relative to the working directory",
    )
    checkpoint_every: int = Field(
        100, ge=1, description="steps between checkpoints (the last step always saves)"
    )
    keep_checkpoints: int | None = Field(2, ge=1, description="newest checkpoints kept (None: all)")
    eval: SFTEvalSettings | None = Field(
        None,
        description="validation split {synthetic | data_file | dataset, every, batch_size, samples}: "
        "eval_loss in the metrics, sample images in OUTPUT/samples",
    )

    @model_validator(mode="after")
    def _one_source_and_one_length(self) -> SFTSettings:
        _one_of(self.synthetic, self.data_file, self.dataset)
        if (self.steps is None) == (self.epochs is None):
            raise ValueError("give exactly one of steps and epochs")
        return self

    def total_steps(self, num_pairs: int, world_size: int) -> int:
        """Steps of the run: ``steps``, or enough global batches to cover ``epochs`` passes."""
        if self.steps is not None:
            return self.steps
        assert self.epochs is not None
        per_step = self.batch_size * world_size
        return max(1, -(-self.epochs * num_pairs // per_step))


class LoraSettings(CheckedModel):
    """Low-rank adapters (LoRA, through ``peft``) on the backbone instead of full fine-tuning.

    The base weights stay frozen; each targeted linear (or embedding) layer ``W`` computes
    ``W x + (alpha / r) B A x`` with trainable ``A`` (r x in) and ``B`` (out x r, starting at
    zero). Checkpoints then hold the adapter alone, a pipeline loads it on top of the base with
    ``backbone.adapter``, and ``xomni train merge-lora`` folds it into a full backbone folder.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    r: int = Field(16, ge=1, le=4096, description="rank of each adapter")
    alpha: float = Field(32.0, gt=0.0, description="scale numerator: the update is multiplied by alpha / r")
    dropout: float = Field(
        0.0, ge=0.0, lt=1.0, description="dropout on each adapter's input during gradient passes"
    )
    target_modules: tuple[str, ...] = Field(
        ("*_proj",),
        min_length=1,
        description="glob patterns over module names of the backbone's trainable module, or over "
        "the aliases its plugin gives them (x-omni: mm_adap_layers.I, shared_layers.I, "
        "mm_head_layers.I for decoder layer I; lm_head, mm_head); e.g. 'shared_layers.*_proj'",
    )

    @field_validator("target_modules")
    @classmethod
    def _no_blank_patterns(cls, patterns: tuple[str, ...]) -> tuple[str, ...]:
        if any(not p.strip() for p in patterns):
            raise ValueError("patterns must not be blank")
        return patterns


class DistributedSettings(CheckedModel):
    """How the processes of a ``torchrun`` or ``accelerate launch`` launch share the training."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    strategy: Literal["ddp", "fsdp"] = Field(
        "ddp",
        description="ddp: every process holds the whole model and gradients are averaged; fsdp: "
        "weights, gradients and optimiser state are sharded over the processes (FSDP2, one unit per "
        "decoder layer), for full SFT of backbones that do not fit one device",
    )
    reshard_after_forward: bool = Field(
        True,
        description="fsdp: free each layer's gathered weights after its forward pass (gather again for "
        "the backward pass); false keeps them, trading memory for communication",
    )
    cpu_offload: bool = Field(
        False, description="fsdp: keep the sharded weights, gradients and optimiser state in CPU memory"
    )


class TrainingSettings(CheckedModel):
    """How the ``xomni train`` commands train this pipeline."""

    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    lora: LoraSettings | None = Field(
        None, description="train low-rank adapters {r, alpha, dropout, target_modules} (None: all weights)"
    )
    gradient_accumulation_steps: int = Field(
        1,
        ge=1,
        le=4096,
        description="micro-batches whose gradients one optimiser step sums: a process takes this many "
        "batches (sft.batch_size pairs, grpo.prompts_per_step prompts) per step, one pass at a time",
    )
    mixed_precision: Literal["no", "bf16", "fp16"] = Field(
        "no",
        description="autocast the forward passes to bfloat16 or float16 while weights, gradients and "
        "optimiser state stay float32 (runtime.dtype float32); fp16 scales the loss against underflow",
    )
    gradient_checkpointing: bool = Field(
        False,
        description="recompute each decoder layer in the backward pass instead of storing its activations",
    )
    report_to: tuple[Literal["tensorboard"], ...] = Field(
        (),
        description="loggers besides metrics.jsonl (none by default); tensorboard writes "
        "OUTPUT/tensorboard for `tensorboard --logdir OUTPUT` (pip install 'xomni[train]')",
    )
    grpo: GRPOSettings | None = Field(None, description="settings of `xomni train grpo`")
    sft: SFTSettings | None = Field(None, description="settings of `xomni train sft`")
    distributed: DistributedSettings = Field(
        DistributedSettings(),
        description="how several processes share the training {strategy: ddp | fsdp, reshard_after_forward, "
        "cpu_offload}",
    )
