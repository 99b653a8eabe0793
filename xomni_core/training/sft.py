"""Supervised fine-tuning of the backbone on image-caption pairs.

Before training, the frozen tokenizer turns every image of the data set into a token grid, once,
and each caption into the ids generation conditions on, ``tokenize(caption + image_prefix(h,
w))``. A step takes ``batch_size`` pairs per process from a seeded, per-epoch shuffled stream,
left-pads ``prompt ids + image-token ids`` like the generation loop (attention mask, position ids
counting real tokens only) and minimises the mean negative log-likelihood of the image tokens
under the backbone's image-mode logits, teacher forced. ``DistributedDataParallel`` averages
gradients over processes, so N processes with batch B take the step one process takes on N * B.

The pair at global position ``k`` of the stream depends on the run's seed and ``k`` only, so a
run resumed from a checkpoint (weights, optimiser, data position, RNG states) continues exactly
as if uninterrupted. The backbone stays in eval mode (no dropout), which keeps steps reproducible.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from tqdm.auto import tqdm

from ..atomic import atomic_file
from ..config import PipelineConfig, load_config
from ..errors import ConfigError, InputError
from ..interfaces import Backbone, Tokenizer
from ..pipelines.build import build_component, prepare
from ..registry import PluginRegistry
from ..types import GridSize
from .checkpoint import (
    BACKBONE,
    TrainerState,
    capture_rng_state,
    checkpoint_path,
    latest_checkpoint,
    load_trainer_state,
    prune_checkpoints,
    remove_partial_checkpoints,
    restore_rng_state,
    save_checkpoint,
)
from .common import EpochStream, freeze, load_backbone
from .distributed import Processes, wrap_module
from .metrics import METRICS_FILE, MetricsLog, plot_available
from .settings import SFTSettings

if TYPE_CHECKING:
    from PIL.Image import Image

#: Metrics that measure time and so differ between otherwise identical runs.
TIMING_METRICS = ("step_time_s", "wall_time_s", "tokens_per_s")
PLOT_FILE = "loss.png"
_ENCODE_BATCH = 32  # images per tokenizer call while caching the token grids


@dataclass(frozen=True)
class CaptionedImage:
    """One training pair, before tokenisation."""

    caption: str
    image: Image


@dataclass(frozen=True)
class SFTExample:
    """One training pair as the backbone sees it: conditioning ids and target image tokens."""

    caption: str
    prompt_ids: list[int]
    tokens: torch.Tensor  # (grid_h * grid_w,) image-token indices, row-major


@dataclass(frozen=True)
class SFTResult:
    """What a run left behind; ``records`` holds every step's metrics, earlier runs' included."""

    step: int
    output_dir: Path
    metrics_path: Path
    plot_path: Path | None
    checkpoint: Path | None
    backbone: Backbone[Any]
    grid: GridSize
    examples: list[SFTExample]
    records: list[dict[str, Any]] = field(default_factory=list)
    is_main_process: bool = True


def train_sft(
    config: PipelineConfig | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    registry: PluginRegistry | None = None,
) -> SFTResult:
    """Fine-tune the config's backbone on image-caption pairs as its ``training.sft`` section says.

    Runs in one process, or in each process of a ``torchrun`` launch (``WORLD_SIZE > 1``).
    ``resume`` continues from the newest checkpoint in the output folder (or starts afresh if
    there is none); without it, a folder that already holds checkpoints is refused.
    """
    if not isinstance(config, PipelineConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to config files; pass an already overridden PipelineConfig")
    settings = config.training.sft if config.training is not None else None
    if settings is None:
        raise ConfigError("the pipeline config has no training.sft section, which `train sft` needs")
    processes = Processes.start(config.runtime.device)
    try:
        trainer = _SFTTrainer(config, settings, processes, registry=registry)
        return trainer.run(resume=resume, show_progress=show_progress)
    finally:
        processes.close()


def load_pairs(settings: SFTSettings, config: PipelineConfig) -> list[CaptionedImage]:
    """The data set's pairs, every image resized to the run's image size."""
    from PIL import Image as PILImage

    height, width = _image_size(settings, config)
    if settings.synthetic is not None:
        from ..synthetic import render_scene, sample_scenes

        source = settings.synthetic
        scenes = sample_scenes(
            source.split,
            source.n,
            seed=source.seed,
            width_px=width,
            height_px=height,
            **({"categories": source.categories} if source.categories is not None else {}),
        )
        return [CaptionedImage(scene.caption, render_scene(scene)) for scene in scenes]

    assert settings.data_file is not None
    where = "training.sft.data_file"
    path = Path(os.path.expanduser(settings.data_file))
    if not path.is_absolute() and config._base_dir is not None:
        path = config._base_dir / path
    if not path.is_file():
        raise ConfigError(f"{where}: file {path} does not exist")
    pairs = []
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
        try:
            with PILImage.open(image_path) as opened:
                image = opened.convert("RGB")
        except OSError as exc:
            raise ConfigError(
                f"{where}: {path} line {number}: cannot read image {image_path}: {exc}"
            ) from exc
        if image.size != (width, height):
            image = image.resize((width, height), PILImage.Resampling.BICUBIC)
        pairs.append(CaptionedImage(row["caption"], image))
    if not pairs:
        raise ConfigError(f"{where}: {path} holds no pairs")
    return pairs


def plot_loss(records: list[dict[str, Any]], path: Path) -> Path:
    """Draw the training loss per step (log scale when it spans more than a factor of ten)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    figure = Figure(figsize=(7.0, 4.0), dpi=100)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot(1, 1, 1)
    steps = [r["step"] for r in records]
    losses = [r["loss"] for r in records]
    axes.plot(steps, losses, color="tab:blue", linewidth=1.5, label="image-token NLL")
    if losses and min(losses) > 0 and max(losses) / min(losses) > 10:
        axes.set_yscale("log")
    axes.set_xlabel("step")
    axes.set_ylabel("loss (nats per token)")
    axes.set_title("SFT loss per step")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best", fontsize="small")
    figure.tight_layout()
    with atomic_file(path) as tmp:
        figure.savefig(tmp, format="png")
    return path


@dataclass(frozen=True)
class _Batch:
    """Left-padded prompt-plus-image sequences and the image tokens they end with."""

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor  # (samples, num_tokens)


class _SFTTrainer:
    def __init__(
        self,
        config: PipelineConfig,
        settings: SFTSettings,
        processes: Processes,
        *,
        registry: PluginRegistry | None,
    ) -> None:
        self.settings = settings
        self.processes = processes
        self.output_dir = Path(os.path.expanduser(settings.output_dir))
        self.seed = config.runtime.seed if settings.seed is None else settings.seed
        runtime = config.runtime.model_copy(update={"device": processes.device})
        self.config = config.model_copy(update={"runtime": runtime})
        resolved, registry = prepare(self.config, registry=registry)
        tokenizer = build_component(resolved.component("tokenizer"), self.config, registry)
        backbone = build_component(resolved.component("backbone"), self.config, registry)
        assert isinstance(tokenizer, Tokenizer) and isinstance(backbone, Backbone)
        freeze(tokenizer)
        self.tokenizer: Tokenizer[Any] = tokenizer
        self.policy: Backbone[Any] = backbone
        self.examples, self.grid = self._encode(load_pairs(settings, config))
        self.stream = EpochStream(self.examples, seed=self.seed, shuffle=settings.shuffle)
        self.total_steps = settings.total_steps(len(self.examples), processes.world_size)

    def _encode(self, pairs: list[CaptionedImage]) -> tuple[list[SFTExample], GridSize]:
        """Token grids and prompt ids of every pair, computed once for the whole run."""
        grids = []
        with torch.no_grad():
            for start in range(0, len(pairs), _ENCODE_BATCH):
                images = [pair.image for pair in pairs[start : start + _ENCODE_BATCH]]
                try:
                    grids.append(self.tokenizer.encode_images(images))
                except InputError as exc:
                    raise ConfigError(
                        f"training.sft: the tokenizer rejects the training images: {exc}"
                    ) from exc
        grid = grids[0].grid
        ids = torch.cat([g.ids.clone() for g in grids]).reshape(len(pairs), -1).cpu()
        prefix = self.policy.image_prefix(grid.grid_h, grid.grid_w)
        prompt_ids: dict[str, list[int]] = {}
        examples = []
        for pair, tokens in zip(pairs, ids, strict=True):
            if pair.caption not in prompt_ids:
                prompt_ids[pair.caption] = self.policy.tokenize(pair.caption + prefix)
            examples.append(SFTExample(pair.caption, prompt_ids[pair.caption], tokens))
        return examples, grid

    # ------------------------------------------------------------------------------ run

    def run(self, *, resume: bool, show_progress: bool) -> SFTResult:
        settings, processes = self.settings, self.processes
        checkpoint = latest_checkpoint(self.output_dir)
        if checkpoint is not None and not resume:
            raise ConfigError(
                f"training.sft.output_dir: {self.output_dir} already holds checkpoints (newest "
                f"{checkpoint.name}); pass --resume to continue that run or choose another output_dir"
            )
        if resume and checkpoint is None and processes.is_main:
            print(f"no checkpoint in {self.output_dir}; starting from step 0", file=sys.stderr)
        state = load_trainer_state(checkpoint) if resume and checkpoint is not None else None
        if state is not None:
            assert checkpoint is not None
            self.policy = load_backbone(type(self.policy), checkpoint / BACKBONE, self.config)

        module = self.policy.trainable_module()
        parameters = [p for p in module.parameters() if p.requires_grad]
        if not parameters:
            raise ConfigError("the backbone's trainable_module() has no parameters that require gradients")
        optimizer = torch.optim.AdamW(
            parameters, lr=settings.learning_rate, weight_decay=settings.weight_decay
        )
        start_step, data_position = 0, 0
        if state is not None:
            optimizer.load_state_dict(state.optimizer)
            start_step, data_position = state.step, state.data_position
            rng = state.rng_states
            restore_rng_state(rng[processes.rank] if len(rng) == processes.world_size else rng[0])
        wrapped = wrap_module(module, processes)

        self.output_dir.mkdir(parents=True, exist_ok=True)
        if processes.is_main:
            remove_partial_checkpoints(self.output_dir)
        metrics = MetricsLog(self.output_dir, resume_step=start_step) if processes.is_main else None
        can_plot = plot_available()
        if processes.is_main and not can_plot:
            print("matplotlib is not installed (pip install 'xomni[rl]'); no loss plot", file=sys.stderr)
        records: list[dict[str, Any]] = list(metrics.records) if metrics is not None else []
        plot_path: Path | None = None
        saved: Path | None = checkpoint if state is not None else None
        started = time.perf_counter()
        progress = tqdm(
            total=self.total_steps,
            initial=start_step,
            desc="sft",
            unit="step",
            disable=not (show_progress and processes.is_main),
        )
        try:
            for step in range(start_step + 1, self.total_steps + 1):
                step_started = time.perf_counter()
                record = self._step(step, data_position, optimizer, parameters, wrapped)
                data_position += settings.batch_size * processes.world_size
                elapsed = time.perf_counter() - step_started
                record["step_time_s"] = elapsed
                record["wall_time_s"] = time.perf_counter() - started
                record["tokens_per_s"] = record["tokens"] / elapsed
                records.append(record)
                if metrics is not None:
                    metrics.write(record)
                progress.update(1)
                progress.set_postfix(loss=f"{record['loss']:.4f}", acc=f"{record['token_accuracy']:.3f}")
                if step % settings.checkpoint_every == 0 or step == self.total_steps:
                    saved = self._save(step, data_position, optimizer)
                    if processes.is_main and can_plot:
                        plot_path = plot_loss(records, self.output_dir / PLOT_FILE)
        finally:
            progress.close()
        if processes.is_main and can_plot and records and plot_path is None:
            plot_path = plot_loss(records, self.output_dir / PLOT_FILE)
        return SFTResult(
            step=max(start_step, self.total_steps),
            output_dir=self.output_dir,
            metrics_path=self.output_dir / METRICS_FILE,
            plot_path=plot_path,
            checkpoint=saved,
            backbone=self.policy,
            grid=self.grid,
            examples=self.examples,
            records=records,
            is_main_process=processes.is_main,
        )

    # ----------------------------------------------------------------------------- step

    def _step(
        self,
        step: int,
        data_position: int,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        wrapped: torch.nn.Module | None,
    ) -> dict[str, Any]:
        settings, processes = self.settings, self.processes
        first = data_position + processes.rank * settings.batch_size
        batch = self._batch([self.stream[first + i] for i in range(settings.batch_size)])
        learning_rate = settings.learning_rate
        if settings.warmup_steps:
            learning_rate *= min(1.0, step / settings.warmup_steps)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate

        optimizer.zero_grad(set_to_none=True)
        nll, correct = self._token_losses(batch, wrapped)
        torch.autograd.backward(nll.mean())
        norm = torch.nn.utils.clip_grad_norm_(
            parameters, settings.max_grad_norm if settings.max_grad_norm is not None else float("inf")
        )
        optimizer.step()

        sums = torch.stack([nll.detach().sum(), correct.sum().to(nll.dtype)]).to(torch.float64).cpu()
        totals = processes.sum(sums)
        samples = settings.batch_size * processes.world_size
        tokens = samples * self.grid.num_tokens
        return {
            "step": step,
            "epoch": data_position / len(self.examples),
            "samples": samples,
            "tokens": tokens,
            "loss": float(totals[0]) / tokens,
            "token_accuracy": float(totals[1]) / tokens,
            "grad_norm": float(norm.detach().to(torch.float64).cpu()),
            "learning_rate": learning_rate,
        }

    def _batch(self, examples: list[SFTExample]) -> _Batch:
        vocab = self.policy.vocab
        rows = [ex.prompt_ids + (ex.tokens + vocab.image_token_offset).tolist() for ex in examples]
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), vocab.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, length - len(row) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        targets = torch.stack([ex.tokens for ex in examples])
        device = self.policy.device
        return _Batch(input_ids.to(device), attention_mask.to(device), position_ids.to(device), targets)

    def _token_losses(
        self, batch: _Batch, wrapped: torch.nn.Module | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log-likelihoods ``(samples, num_tokens)`` of the target image tokens, and
        whether each is the most likely one (teacher forced)."""
        count = self.grid.num_tokens
        vocab = self.policy.vocab
        logits = self.policy.sequence_logits(
            batch.input_ids,
            batch.attention_mask,
            batch.position_ids,
            "image",
            logits_to_keep=count + 1,
            module=wrapped,
        )[:, :-1]
        image_logits = logits[
            ..., vocab.image_token_offset : vocab.image_token_offset + vocab.image_vocab_size
        ]
        log_probs = torch.log_softmax(image_logits, dim=-1)
        targets = batch.targets.to(log_probs.device)
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
        correct = image_logits.detach().argmax(-1) == targets
        return nll, correct

    # ----------------------------------------------------------------------- checkpoints

    def _save(self, step: int, data_position: int, optimizer: torch.optim.Optimizer) -> Path:
        processes = self.processes
        rng_states = processes.gather_objects(capture_rng_state())
        path = checkpoint_path(self.output_dir, step)
        if processes.is_main:
            state = TrainerState(
                step=step,
                data_position=data_position,
                world_size=processes.world_size,
                optimizer=optimizer.state_dict(),
                rng_states=rng_states,
            )
            save_checkpoint(path, self.policy, state)
            prune_checkpoints(self.output_dir, self.settings.keep_checkpoints)
        processes.barrier()
        return path


def _image_size(settings: SFTSettings, config: PipelineConfig) -> tuple[int, int]:
    height = config.generation.height_px if settings.height_px is None else settings.height_px
    width = config.generation.width_px if settings.width_px is None else settings.width_px
    return height, width
