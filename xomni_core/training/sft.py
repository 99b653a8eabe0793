"""Supervised fine-tuning of the backbone on image-caption pairs.

Before training, the frozen tokenizer turns every image of the data set into a token grid, once,
and each caption into the ids generation conditions on, ``tokenize(caption + image_prefix(h,
w))``. A step takes ``batch_size`` pairs per process from a seeded, per-epoch shuffled stream,
left-pads ``prompt ids + image-token ids`` like the generation loop (attention mask, position ids
counting real tokens only) and minimises the mean negative log-likelihood of the image tokens
under the backbone's image-mode logits, teacher forced. With ``caption_drop``, a seeded share
of pairs is conditioned on the image prefix alone: the negative prompt that classifier-free
guidance at generation contrasts with. ``DistributedDataParallel`` averages gradients over
processes, so N processes with batch B take the step one process takes on N * B.

The pair at global position ``k`` of the stream depends on the run's seed and ``k`` only, so a
run resumed from a checkpoint (weights, optimiser, data position, RNG states) continues exactly
as if uninterrupted. The backbone stays in eval mode (no dropout), which keeps steps reproducible.
"""

from __future__ import annotations

import os
import random
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import PipelineConfig, load_config
from ..errors import ConfigError, InputError
from ..generation import image_prompt_ids
from ..interfaces import Backbone, Tokenizer
from ..pipelines.build import build_component, prepare
from ..registry import PluginRegistry
from ..types import GridSize
from .common import EpochStream, freeze
from .data_sources import CaptionedImage, read_pairs
from .distributed import Processes
from .engine import Engine
from .loop import (
    check_strategy,
    find_resume_point,
    make_optimizer,
    prepare_training,
    restore_policy,
    restore_progress,
    run_steps,
    save_training_checkpoint,
    start_engine,
)
from .metrics import METRICS_FILE, plot_loss
from .precision import Precision
from .schedules import learning_rate_share
from .settings import SFTEvalSettings, SFTSettings, TrainingSettings

if TYPE_CHECKING:
    from ..interfaces import Decoder
    from .samples import SampleWriter


PLOT_FILE = "loss.png"
_ENCODE_BATCH = 32  # images per tokenizer call while caching the token grids


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
    eval_examples: list[SFTExample] = field(default_factory=list)
    pipeline: Path | None = None  # OUTPUT/pipeline/pipeline.yaml, on the main process


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
    training = config.training or TrainingSettings()
    check_strategy(training, "sft")
    from .result_pipeline import check_result_folder

    check_result_folder(Path(os.path.expanduser(settings.output_dir)), section="sft")
    with Processes.start(config.runtime.device, group=training.distributed.strategy == "fsdp") as processes:
        from .estimate import announce_and_check

        announce_and_check(
            config,
            section="sft",
            world_size=processes.world_size,
            device=processes.device,
            show=processes.is_main,
        )
        return _SFTTrainer(config, settings, processes, registry=registry).run(
            resume=resume, show_progress=show_progress
        )


def load_pairs(
    settings: SFTSettings | SFTEvalSettings, config: PipelineConfig, *, where: str = "training.sft"
) -> list[CaptionedImage]:
    """The data set's pairs, every image resized to the run's image size; ``where`` names the
    settings in errors. ``settings`` is the training section or its ``eval`` split."""
    if isinstance(settings, SFTEvalSettings):
        from .samples import check_can_draw

        check_can_draw(settings.samples, config, where=where)
    height, width = _image_size(config.training.sft if config.training else None, config)
    return read_pairs(settings, config, height=height, width=width, where=where)


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
        self.training = config.training or TrainingSettings()
        self.lora = self.training.lora
        self.accumulation = self.training.gradient_accumulation_steps
        runtime = config.runtime.model_copy(update={"device": processes.device})
        self.config = config.model_copy(update={"runtime": runtime})
        resolved, registry = prepare(self.config, registry=registry, slots=("tokenizer", "backbone"))
        tokenizer = build_component(resolved.component("tokenizer"), self.config, registry)
        backbone = build_component(resolved.component("backbone"), self.config, registry)
        assert isinstance(tokenizer, Tokenizer) and isinstance(backbone, Backbone)
        freeze(tokenizer)
        self.tokenizer: Tokenizer[Any] = tokenizer
        self.policy: Backbone[Any] = backbone
        self.examples, self.grid = self._encode(load_pairs(settings, config))
        self.eval_examples: list[SFTExample] = []
        self._sampler: tuple[Decoder[Any], SampleWriter] | None = None  # built at the first samples
        if settings.eval is not None:
            pairs = load_pairs(settings.eval, config, where="training.sft.eval")
            self.eval_examples, _ = self._encode(pairs)
        self.unconditional_ids = image_prompt_ids(self.policy, "", self.grid)
        self.stream = EpochStream(self.examples, seed=self.seed, shuffle=settings.shuffle)
        # A step takes batch_size pairs per micro-batch, process and accumulated micro-batch.
        self.total_steps = settings.total_steps(len(self.examples), processes.world_size * self.accumulation)

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
        prompt_ids: dict[str, list[int]] = {}
        examples = []
        for pair, tokens in zip(pairs, ids, strict=True):
            if pair.caption not in prompt_ids:
                prompt_ids[pair.caption] = image_prompt_ids(self.policy, pair.caption, grid)
            examples.append(SFTExample(pair.caption, prompt_ids[pair.caption], tokens))
        return examples, grid

    # ------------------------------------------------------------------------------ run

    def run(self, *, resume: bool, show_progress: bool) -> SFTResult:
        settings, processes = self.settings, self.processes
        self._check_sharded_evaluation()
        checkpoint, state = find_resume_point(
            self.output_dir, section="sft", resume=resume, processes=processes
        )
        self.policy = restore_policy(
            self.policy,
            lora=self.lora,
            checkpoint=checkpoint if state is not None else None,
            config=self.config,
            seed=self.seed,
            rank=processes.rank,
        )
        engine = start_engine(self.policy, self.training, processes)
        module, parameters, optimizer = make_optimizer(
            self.policy, learning_rate=settings.learning_rate, weight_decay=settings.weight_decay
        )
        start_step, data_position = restore_progress(state, processes, engine)
        wrapped, optimizer, parameters = prepare_training(engine, module, optimizer, state)
        outcome = run_steps(
            name="sft",
            output_dir=self.output_dir,
            processes=processes,
            start_step=start_step,
            total_steps=self.total_steps,
            data_position=data_position,
            samples_per_step=settings.batch_size * self.accumulation,
            checkpoint_every=settings.checkpoint_every,
            resumed_from=checkpoint if state is not None else None,
            step=lambda step, position: self._step(step, position, optimizer, parameters, wrapped, engine),
            tokens=lambda record: float(record["tokens"]),
            postfix=lambda record: {
                "loss": f"{record['loss']:.4f}",
                "acc": f"{record['token_accuracy']:.3f}",
            },
            save=lambda step, position: save_training_checkpoint(
                self.output_dir,
                step=step,
                data_position=position,
                optimizer=optimizer,
                policy=self.policy,
                keep=settings.keep_checkpoints,
                processes=processes,
                precision=engine,
            ),
            plot=plot_loss,
            plot_file=PLOT_FILE,
            show_progress=show_progress,
            report_to=self.training.report_to,
            engine=engine,
        )
        if self._sampler is not None:
            self._sampler[1].close()
        from .result_pipeline import finish_run

        pipeline = finish_run(
            self.output_dir,
            self.config,
            section="sft",
            checkpoint=outcome.checkpoint,
            policy=self.policy,
            lora=self.lora is not None,
            is_main=processes.is_main,
        )
        return SFTResult(
            step=max(start_step, self.total_steps),
            output_dir=self.output_dir,
            metrics_path=self.output_dir / METRICS_FILE,
            plot_path=outcome.plot_path,
            checkpoint=outcome.checkpoint,
            backbone=self.policy,
            grid=self.grid,
            examples=self.examples,
            records=outcome.records,
            is_main_process=processes.is_main,
            pipeline=pipeline,
            eval_examples=self.eval_examples,
        )

    def _check_sharded_evaluation(self) -> None:
        """Under FSDP every forward pass is collective: each process must evaluate as many batches."""
        settings, world = self.settings.eval, self.processes.world_size
        if settings is None or self.training.distributed.strategy != "fsdp":
            return
        batches = {-(-len(self.eval_examples[rank::world]) // settings.batch_size) for rank in range(world)}
        if len(batches) > 1:
            raise ConfigError(
                f"training.sft.eval: under training.distributed.strategy fsdp each of the {world} "
                f"processes must evaluate the same number of batches, but {len(self.eval_examples)} pairs "
                f"in batches of {settings.batch_size} do not split so; use a multiple of "
                f"{world * settings.batch_size} pairs"
            )

    # ----------------------------------------------------------------------------- step

    def _schedule(self, step: int) -> float:
        """The share of the learning rate that step ``step`` (from 1) takes."""
        return learning_rate_share(step, self.settings.warmup_steps, self.total_steps, self.settings.decay)

    def _step(
        self,
        step: int,
        data_position: int,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        wrapped: torch.nn.Module,
        engine: Engine,
    ) -> dict[str, Any]:
        settings, processes = self.settings, self.processes
        batch_size, accumulation = settings.batch_size, self.accumulation
        learning_rate = settings.learning_rate * self._schedule(step)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate

        optimizer.zero_grad(set_to_none=True)
        sums = torch.zeros(2, dtype=torch.float64)
        for micro in range(accumulation):
            # Process r's micro-batch m is the global step's batch r * accumulation + m: N
            # processes then take the step that one process takes accumulating N times as many.
            first = data_position + (processes.rank * accumulation + micro) * batch_size
            batch = self._batch(
                [self.stream[first + i] for i in range(batch_size)],
                [self._drops_caption(first + i) for i in range(batch_size)],
            )
            # Only the last micro-batch's backward pass averages the gradients over processes.
            with nullcontext() if micro == accumulation - 1 else engine.no_sync(wrapped):
                nll, correct = self._token_losses(batch, wrapped, engine)
                engine.backward(nll.mean() / accumulation)
            sums += torch.stack([nll.detach().sum(), correct.sum().to(nll.dtype)]).to(torch.float64).cpu()
        norm = engine.step(optimizer, parameters, settings.max_grad_norm)

        evaluation = self._evaluate(step, engine)
        totals = processes.sum(sums)
        samples = batch_size * accumulation * processes.world_size
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
            **evaluation,
        }

    def _evaluate(self, step: int, precision: Precision) -> dict[str, float]:
        """Loss and token accuracy on the validation pairs, at every ``eval.every`` steps and the
        last; the processes share the pairs."""
        settings = self.settings.eval
        if settings is None or not (step % settings.every == 0 or step == self.total_steps):
            return {}
        processes = self.processes
        mine = self.eval_examples[processes.rank :: processes.world_size]
        sums = torch.zeros(3, dtype=torch.float64)
        with torch.no_grad():
            for start in range(0, len(mine), settings.batch_size):
                chunk = mine[start : start + settings.batch_size]
                batch = self._batch(chunk, [False] * len(chunk))
                nll, correct = self._token_losses(batch, None, precision, train=False)
                counts = [nll.sum(), correct.sum().to(nll.dtype), torch.tensor(float(nll.numel()))]
                sums += torch.stack([c.to(torch.float64).cpu() for c in counts])
        totals = processes.sum(sums)
        tokens = float(totals[2])
        self._draw_samples(step)
        return {"eval_loss": float(totals[0]) / tokens, "eval_token_accuracy": float(totals[1]) / tokens}

    def _draw_samples(self, step: int) -> None:
        """Images of the first ``eval.samples`` held-out captions under the current weights,
        drawn by the main process with fixed seeds and without touching the run's generators."""
        settings = self.settings.eval
        if settings is None or not settings.samples or not self.processes.is_main:
            return
        from ..pipelines import TextToImagePipeline
        from .samples import SampleWriter, build_decoder, preserved_rng, sample_seed

        if self._sampler is None:
            writer = SampleWriter(
                self.output_dir, tensorboard="tensorboard" in self.training.report_to, first_step=step
            )
            self._sampler = (build_decoder(self.config, where="training.sft.eval"), writer)
        decoder, writer = self._sampler
        captions = [example.caption for example in self.eval_examples[: settings.samples]]
        height, width = _image_size(self.settings, self.config)
        with preserved_rng(self.processes.device):
            pipeline = TextToImagePipeline(self.tokenizer, self.policy, decoder, config=self.config)
            drawn = pipeline(
                captions, height=height, width=width, seed=sample_seed(self.seed), show_progress=False
            )
        writer.write(step, drawn.images, captions, drawn.tokens.rows())

    def _dropout(self) -> AbstractContextManager[Any]:
        if self.lora is None or self.lora.dropout == 0.0:
            return nullcontext()
        from .lora import adapter_dropout

        return adapter_dropout(self.policy.trainable_module())

    def _drops_caption(self, position: int) -> bool:
        """Whether the pair at global stream position ``position`` trains the unconditional branch;
        a function of the run's seed and the position only, like the stream itself."""
        drop = self.settings.caption_drop
        return drop > 0.0 and random.Random(f"{self.seed}:{position}").random() < drop

    def _batch(self, examples: list[SFTExample], drop_caption: list[bool]) -> _Batch:
        vocab = self.policy.vocab
        rows = [
            (self.unconditional_ids if drop else ex.prompt_ids)
            + (ex.tokens + vocab.image_token_offset).tolist()
            for ex, drop in zip(examples, drop_caption, strict=True)
        ]
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
        self, batch: _Batch, wrapped: torch.nn.Module | None, precision: Precision, *, train: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Negative log-likelihoods ``(samples, num_tokens)`` of the target image tokens, and
        whether each is the most likely one (teacher forced)."""
        count = self.grid.num_tokens
        vocab = self.policy.vocab
        with self._dropout() if train else nullcontext(), precision.autocast():
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
        log_probs = torch.log_softmax(image_logits.float(), dim=-1)
        targets = batch.targets.to(log_probs.device)
        nll = -log_probs.gather(-1, targets[..., None]).squeeze(-1)
        correct = image_logits.detach().argmax(-1) == targets
        return nll, correct

    # ----------------------------------------------------------------------- checkpoints


def _image_size(settings: SFTSettings | None, config: PipelineConfig) -> tuple[int, int]:
    height = settings.height_px if settings is not None and settings.height_px is not None else None
    width = settings.width_px if settings is not None and settings.width_px is not None else None
    return (
        config.generation.height_px if height is None else height,
        config.generation.width_px if width is None else width,
    )
