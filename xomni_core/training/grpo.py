"""GRPO on image tokens: the backbone learns to emit tokens that the frozen decoder renders into
images the rewards like.

Each step, every process takes its share of the global batch of prompts and samples
``group_size`` token grids per prompt from the backbone in image mode. The frozen tokenizer and
decoder turn them into images, the config's rewards score them (:func:`~xomni_core.score_all`,
one group at a time), and rewards become advantages within each group: ``(r - mean) / (std +
eps)``. The loss on each image token is the clipped policy-ratio objective
``-min(ratio * A, clip(ratio, 1 - eps, 1 + eps) * A)``, the ratio taken against the log-probability
under the weights that sampled the rollout, plus ``kl_coef`` times the k3 estimate of the KL
divergence to a frozen copy of the starting weights, ``exp(ref - logp) - (ref - logp) - 1``
(with ``training.lora`` the starting weights are the policy with its adapters switched off).
It is averaged over tokens and samples; ``DistributedDataParallel`` averages gradients over
processes, so N processes with P prompts each take the step that one process takes on N * P.

Reproducibility is by construction: the prompt at global position ``k`` of the (seeded, per-epoch
shuffled) prompt stream, the sampling seed of global sample ``k`` and the decoder seed of global
prompt ``k`` depend on the run's seed and ``k`` only. So the data split across processes never
changes a sample, and a run resumed from a checkpoint continues exactly as if uninterrupted.

Log-probabilities are those of the temperature-scaled policy; top-k, top-p and min-p truncation
at sampling time is not part of them. The backbone stays in eval mode (no dropout), so the
log-probabilities of a rollout are reproducible.

TRL's ``GRPOTrainer`` was not used: its documentation describes a trainer for a transformers
causal language model (loaded with ``AutoModelForCausalLM``) that generates text completions
itself and hands them, as text or chat messages, to reward functions. Here a rollout is a grid of
image tokens that a separate diffusion decoder renders, and rewards score the pixels.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Sequence
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from pydantic import ValidationError

from ..config import PipelineConfig, load_config
from ..errors import ConfigError
from ..generation import guided_scores, image_prompt_ids
from ..interfaces import Backbone, Decoder, Tokenizer
from ..pipelines import TextToImagePipeline
from ..registry import PluginRegistry
from ..scoring import WeightedReward, score_all
from ..types import DecodeRequest, GridSize, ImageGenerationRequest, RewardBatch, SemanticLatents, TokenGrid
from .checkpoint import (
    BACKBONE,
)
from .common import EpochStream, freeze, load_backbone
from .credit import token_advantages
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
from .metrics import PLOT_FILE, plot_rewards
from .precision import Precision
from .schedules import learning_rate_share
from .settings import GRPOEvalSettings, GRPOSettings, TrainingPrompt, TrainingSettings

if TYPE_CHECKING:
    from .samples import SampleWriter

#: Index offset between the decoder draws of one prompt (``decoder_draws``): draw ``d`` of
#: prompt ``i`` is seeded ``stream_seed(seed, 1, i + d * DRAW_STRIDE)``.
DRAW_STRIDE = 2**24


def stream_seed(seed: int, stream: int, index: int) -> int:
    """The seed of item ``index`` of random stream ``stream`` (0: image-token samples, 1: decoder
    noise of prompts) of a run seeded ``seed``.

    CPU generators keep only the low 32 bits of a seed, so runs differ by where their streams
    start in that range rather than by high bits. A generation request seeded
    ``stream_seed(seed, 0, k)`` draws its ``i``-th sample from ``stream_seed(seed, 0, k + i)``.
    """
    return (seed * 0x9E3779B1 + stream * 2**31 + index) % 2**32


@dataclass(frozen=True)
class GRPOResult:
    """What a run left behind; ``records`` holds every step's metrics, earlier runs' included."""

    step: int
    output_dir: Path
    metrics_path: Path
    plot_path: Path | None
    checkpoint: Path | None
    records: list[dict[str, Any]] = field(default_factory=list)
    is_main_process: bool = True
    pipeline: Path | None = None  # OUTPUT/pipeline/pipeline.yaml, on the main process


def train_grpo(
    config: PipelineConfig | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    resume: bool = False,
    show_progress: bool = True,
    registry: PluginRegistry | None = None,
) -> GRPOResult:
    """Train the config's backbone with GRPO as its ``training.grpo`` section says.

    Runs in one process, or in each process of a ``torchrun`` launch (``WORLD_SIZE > 1``), where
    it initialises ``torch.distributed`` from the environment: NCCL on CUDA, gloo on CPU.
    ``resume`` continues from the newest checkpoint in the output folder (or starts afresh if
    there is none); without it, a folder that already holds checkpoints is refused.
    """
    if not isinstance(config, PipelineConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to config files; pass an already overridden PipelineConfig")
    settings = config.training.grpo if config.training is not None else None
    if settings is None:
        raise ConfigError("the pipeline config has no training.grpo section, which `train grpo` needs")
    if not config.rewards:
        raise ConfigError("training.grpo needs at least one reward in the config's rewards list")
    from .result_pipeline import check_result_folder

    check_result_folder(Path(os.path.expanduser(settings.output_dir)), section="grpo")
    check_strategy(config.training, "grpo")
    with Processes.start(config.runtime.device) as processes:
        from .estimate import announce_and_check

        announce_and_check(
            config,
            section="grpo",
            world_size=processes.world_size,
            device=processes.device,
            show=processes.is_main,
        )
        return _GRPOTrainer(config, settings, processes, registry=registry).run(
            resume=resume, show_progress=show_progress
        )


@dataclass(frozen=True)
class _Rollout:
    """A process's samples of one step, group after group (``group_size`` rows per prompt)."""

    tokens: torch.Tensor  # (samples, num_tokens) image-token indices
    rewards: torch.Tensor  # (samples,) float64 weighted totals
    components: torch.Tensor  # (samples, rewards) float64 raw scores
    component_names: tuple[str, ...]
    advantages: torch.Tensor  # (samples,) float64, or (samples, num_tokens) under regional credit

    @staticmethod
    def concat(parts: list[_Rollout]) -> _Rollout:
        """The rollouts of consecutive micro-batches as one."""
        if len(parts) == 1:
            return parts[0]
        return _Rollout(
            tokens=torch.cat([p.tokens for p in parts]),
            rewards=torch.cat([p.rewards for p in parts]),
            components=torch.cat([p.components for p in parts]),
            component_names=parts[0].component_names,
            advantages=torch.cat([p.advantages for p in parts]),
        )


@dataclass(frozen=True)
class _Sequences:
    """Left-padded prompt-plus-image sequences and the image tokens they end with.

    Under guidance the rows after the first ``len(targets)`` are their unconditional twins: the
    same image tokens after the image prefix alone.
    """

    input_ids: torch.Tensor
    attention_mask: torch.Tensor
    position_ids: torch.Tensor
    targets: torch.Tensor  # (samples, num_tokens) image-token indices

    def rows(self, start: int, stop: int) -> _Sequences:
        index = torch.arange(start, stop)
        samples = self.targets.shape[0]
        if self.input_ids.shape[0] > samples:
            index = torch.cat([index, index + samples])
        ids, mask, positions = self.input_ids[index], self.attention_mask[index], self.position_ids[index]
        return _Sequences(ids, mask, positions, self.targets[start:stop])


class _GRPOTrainer:
    def __init__(
        self,
        config: PipelineConfig,
        settings: GRPOSettings,
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
        self.precision = Precision()  # the run's engine replaces it
        self.prompts = EpochStream(_load_prompts(settings, config), seed=self.seed, shuffle=settings.shuffle)
        # Read now, so that a mistake in them stops the run before training.
        held_out = settings.eval
        where = "training.grpo.eval"
        self.eval_prompts = [] if held_out is None else _load_prompts(held_out, config, where=where)
        runtime = config.runtime.model_copy(update={"device": processes.device})
        self.config = config.model_copy(update={"runtime": runtime})
        pipeline = TextToImagePipeline.from_config(self.config, registry=registry)
        self.tokenizer: Tokenizer[Any] = pipeline.tokenizer
        self.decoder: Decoder[Any] = pipeline.decoder
        self.rewards: tuple[WeightedReward, ...] = pipeline.rewards
        self._built_backbone: Backbone[Any] = pipeline.backbone
        self.policy: Backbone[Any] = pipeline.backbone
        self.grid = _grid(settings, config, self.decoder.pixels_per_token)
        generation = config.generation
        self.decoder_steps = (
            generation.num_inference_steps
            if settings.num_inference_steps is None
            else settings.num_inference_steps
        )
        self.decoder_guidance = (
            generation.guidance_scale if settings.guidance_scale is None else settings.guidance_scale
        )
        self.decoder_noise_scale = (
            generation.noise_scale if settings.noise_scale is None else settings.noise_scale
        )
        for component in (self.tokenizer, self.decoder):
            freeze(component)
        self._prompt_ids: dict[str, list[int]] = {}
        self._sample_writer: SampleWriter | None = None  # opened at the first saved samples

    # ------------------------------------------------------------------------------ run

    def run(self, *, resume: bool, show_progress: bool) -> GRPOResult:
        settings, processes = self.settings, self.processes
        checkpoint, state = find_resume_point(
            self.output_dir, section="grpo", resume=resume, processes=processes
        )
        reference = None
        if self.lora is None:
            if state is not None:
                assert checkpoint is not None
                self.policy = load_backbone(type(self._built_backbone), checkpoint / BACKBONE, self.config)
            reference = self._reference(restored=state is not None)
            self._built_backbone = self.policy  # the starting weights live on only as the reference
        else:
            # The reference is the policy with its adapters switched off: no second copy.
            self.policy = restore_policy(
                self.policy,
                lora=self.lora,
                checkpoint=checkpoint if state is not None else None,
                config=self.config,
                seed=self.seed,
                rank=processes.rank,
            )
        self.precision = engine = start_engine(self.policy, self.training, processes)
        module, parameters, optimizer = make_optimizer(
            self.policy, learning_rate=settings.learning_rate, weight_decay=settings.weight_decay
        )
        start_step, data_position = restore_progress(state, processes, engine)
        wrapped, optimizer, parameters = prepare_training(engine, module, optimizer, state)
        outcome = run_steps(
            name="grpo",
            output_dir=self.output_dir,
            processes=processes,
            start_step=start_step,
            total_steps=settings.steps,
            data_position=data_position,
            samples_per_step=settings.prompts_per_step * self.accumulation,
            checkpoint_every=settings.checkpoint_every,
            resumed_from=checkpoint if state is not None else None,
            step=lambda step, position: self._step(
                step, position, optimizer, parameters, wrapped, reference, engine
            ),
            tokens=lambda record: record["samples"] * self.grid.num_tokens,
            postfix=lambda record: {"reward": f"{record['reward_mean']:.4f}", "kl": f"{record['kl']:.2e}"},
            save=lambda step, position: self._save(step, position, optimizer, engine),
            plot=plot_rewards,
            plot_file=PLOT_FILE,
            show_progress=show_progress,
            report_to=self.training.report_to,
            engine=engine,
        )
        if self._sample_writer is not None:
            self._sample_writer.close()
        from .result_pipeline import finish_run

        pipeline = finish_run(
            self.output_dir,
            self.config,
            section="grpo",
            checkpoint=outcome.checkpoint,
            policy=self.policy,
            lora=self.lora is not None,
            is_main=processes.is_main,
        )
        return GRPOResult(
            step=max(start_step, settings.steps),
            output_dir=self.output_dir,
            metrics_path=self.output_dir / "metrics.jsonl",
            plot_path=outcome.plot_path,
            checkpoint=outcome.checkpoint,
            records=outcome.records,
            is_main_process=processes.is_main,
            pipeline=pipeline,
        )

    def _reference(self, *, restored: bool) -> Backbone[Any] | None:
        """The frozen starting weights for the KL penalty (none when ``kl_coef`` is 0)."""
        if self.settings.kl_coef == 0.0:
            return None
        # A resumed policy was loaded from its checkpoint, so the config's build is the start.
        reference = self._built_backbone if restored else copy.deepcopy(self._built_backbone)
        freeze(reference)
        return reference

    # ----------------------------------------------------------------------------- step

    def _step(
        self,
        step: int,
        data_position: int,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        wrapped: torch.nn.Module,
        reference: Backbone[Any] | None,
        engine: Engine,
    ) -> dict[str, Any]:
        settings, processes = self.settings, self.processes
        per_micro, accumulation = settings.prompts_per_step, self.accumulation
        share = learning_rate_share(step, settings.warmup_steps, settings.steps, settings.decay)
        for group in optimizer.param_groups:
            group["lr"] = settings.learning_rate * share
        # Process r's micro-batch m is the global step's batch r * accumulation + m, so N
        # processes take the step one process takes accumulating N times as many; samples and
        # decoder noise depend on global positions only, so rolling out a micro-batch at a time
        # draws the same images as one rollout of them all.
        first = data_position + processes.rank * per_micro * accumulation
        items = [self.prompts[first + i] for i in range(per_micro * accumulation)]
        rollout = _Rollout.concat(
            [
                self._rollout(items[m * per_micro : (m + 1) * per_micro], first + m * per_micro)
                for m in range(accumulation)
            ]
        )
        sequences = self._sequences(items, rollout.tokens)
        advantages = rollout.advantages.to(torch.float32)

        with torch.no_grad():
            old_logp = self._log_probs(self.policy, sequences) if settings.updates_per_rollout > 1 else None
            ref_logp = self._reference_log_probs(reference, sequences)

        samples = sequences.targets.shape[0]
        micro = settings.micro_batch_size or samples // accumulation
        chunks = [(start, min(start + micro, samples)) for start in range(0, samples, micro)]
        sums = torch.zeros(4, dtype=torch.float64)  # loss, policy loss, kl, clipped tokens
        grad_norm = torch.zeros((), dtype=torch.float64)
        for _ in range(settings.updates_per_rollout):
            optimizer.zero_grad(set_to_none=True)
            for index, (start, stop) in enumerate(chunks):
                # Only the last micro-batch's backward pass averages the gradients over processes.
                context = nullcontext() if index == len(chunks) - 1 else engine.no_sync(wrapped)
                with context, self._dropout():
                    part = sequences.rows(start, stop)
                    logp = self._log_probs(self.policy, part, module=wrapped)
                    old = logp.detach() if old_logp is None else old_logp[start:stop]
                    ref = None if ref_logp is None else ref_logp[start:stop]
                    loss, terms = self._loss(logp, old, ref, advantages[start:stop])
                    engine.backward(loss / samples)
                sums += terms
            norm = engine.step(optimizer, parameters, settings.max_grad_norm)
            grad_norm = norm.detach().to(torch.float64).cpu()

        totals = processes.sum(sums)
        global_samples = samples * processes.world_size
        tokens = global_samples * self.grid.num_tokens * settings.updates_per_rollout
        rewards = processes.gather(rollout.rewards)
        components = processes.gather(rollout.components)
        advantages_all = processes.gather(rollout.advantages)
        record: dict[str, Any] = {
            "step": step,
            "samples": global_samples,
            "reward_mean": float(rewards.mean()),
            "reward_std": float(rewards.std(unbiased=False)),
            "rewards": {
                name: {
                    "mean": float(components[:, i].mean()),
                    "std": float(components[:, i].std(unbiased=False)),
                }
                for i, name in enumerate(rollout.component_names)
            },
            "advantage_mean": float(advantages_all.mean()),
            "advantage_std": float(advantages_all.std(unbiased=False)),
            "advantage_abs_max": float(advantages_all.abs().max()),
            "loss": float(totals[0]) / (global_samples * settings.updates_per_rollout),
            "policy_loss": float(totals[1]) / tokens,
            "kl": float(totals[2]) / tokens,
            "clip_fraction": float(totals[3]) / tokens,
            "grad_norm": float(grad_norm),
            "learning_rate": optimizer.param_groups[0]["lr"],
        }
        record.update(self._evaluate(step))
        return record

    def _evaluate(self, step: int) -> dict[str, Any]:
        """The mean reward of one seeded sample per held-out prompt (``eval``), at every
        ``eval.every`` steps and the last; the processes share the prompts."""
        settings = self.settings.eval
        if settings is None or not (step % settings.every == 0 or step == self.settings.steps):
            return {}
        from .samples import preserved_rng

        processes = self.processes
        prompts = self.eval_prompts
        share = -(-len(prompts) // processes.world_size)
        start = min(len(prompts), processes.rank * share)
        mine = prompts[start : start + share]
        with preserved_rng(processes.device), torch.no_grad():
            scored, images, rows = self._score_held_out(mine, start)
        # Sums by name, merged on every process (a process without prompts sends none).
        sums: dict[str, float] = {}
        count = 0
        shown = [
            (start + i, image, rows[i]) for i, image in enumerate(images) if start + i < settings.samples
        ]
        gathered: list[tuple[int, Any, list[int]]] = []
        for part_sums, part_count, part_shown in processes.gather_objects(
            ({name: sum(values) for name, values in scored.items()}, len(mine), shown)
        ):
            for name, value in part_sums.items():
                sums[name] = sums.get(name, 0.0) + value
            count += part_count
            gathered += part_shown
        if processes.is_main and gathered:
            self._write_samples(step, sorted(gathered, key=lambda pair: pair[0]), prompts)
        means = {name: value / count for name, value in sums.items()}
        return {"eval_reward": means.pop("total"), "eval_rewards": means}

    def _score_held_out(
        self, items: Sequence[TrainingPrompt], start: int
    ) -> tuple[dict[str, list[float]], list[Any], list[list[int]]]:
        """Each prompt's sample scored by every reward (raw) and their weighted sum (``total``,
        without per-batch normalisation, which would centre the held-out set on zero)."""
        from .samples import DECODER_OFFSET, sample_seed

        totals: dict[str, list[float]] = {"total": []}
        if not items:
            return totals, [], []
        seed = sample_seed(self.seed, start)  # sample i draws from sample_seed(seed, start + i)
        grid = self.policy.generate_image_tokens(
            ImageGenerationRequest(
                prompts=tuple(item.prompt for item in items),
                grid=self.grid,
                sampling=self.settings.sampling,
                seed=seed,
                show_progress=False,
            )
        )
        ids = grid.ids.clone()
        images = []
        for index, item in enumerate(items):
            latents = self.tokenizer.decode(TokenGrid(ids[index : index + 1]))
            decoder_seed = sample_seed(self.seed, DECODER_OFFSET + start + index)
            images += self._decode(latents, item.prompt, seed=decoder_seed)
        raw = [dataclasses.replace(reward, normalize="none") for reward in self.rewards]
        scored = score_all(
            raw, RewardBatch(images, [item.prompt for item in items], [item.metadata for item in items])
        )
        totals["total"] = list(scored.total)
        for name, scores in scored.per_reward.items():
            totals[name] = list(scores)
        return totals, images, ids.reshape(len(items), -1).tolist()

    def _write_samples(
        self, step: int, samples: list[tuple[int, Any, list[int]]], prompts: Sequence[TrainingPrompt]
    ) -> None:
        from .samples import SampleWriter

        if self._sample_writer is None:
            self._sample_writer = SampleWriter(
                self.output_dir, tensorboard="tensorboard" in self.training.report_to, first_step=step
            )
        self._sample_writer.write(
            step,
            [image for _, image, _ in samples],
            [prompts[index].prompt for index, _, _ in samples],
            [tokens for _, _, tokens in samples],
        )

    def _reference_log_probs(
        self, reference: Backbone[Any] | None, sequences: _Sequences
    ) -> torch.Tensor | None:
        """Log-probabilities under the starting weights, for the KL penalty (None without one)."""
        if self.settings.kl_coef == 0.0:
            return None
        if self.lora is not None:
            from .lora import adapters_disabled

            with adapters_disabled(self.policy.trainable_module()):
                return self._log_probs(self.policy, sequences)
        assert reference is not None
        return self._log_probs(reference, sequences)

    def _dropout(self) -> AbstractContextManager[Any]:
        if self.lora is None or self.lora.dropout == 0.0:
            return nullcontext()
        from .lora import adapter_dropout

        return adapter_dropout(self.policy.trainable_module())

    def _rollout(self, items: Sequence[TrainingPrompt], first: int) -> _Rollout:
        """Sample, decode and score ``group_size`` images for each prompt."""
        group = self.settings.group_size
        prompts = tuple(item.prompt for item in items for _ in range(group))
        grid = self.policy.generate_image_tokens(
            ImageGenerationRequest(
                prompts=prompts,
                grid=self.grid,
                sampling=self.settings.sampling,
                seed=stream_seed(self.seed, 0, first * group),
                show_progress=False,
            )
        )
        ids = grid.ids.clone()  # a normal tensor: generation ran in inference mode
        totals: list[float] = []
        per_reward: dict[str, list[float]] = {}
        advantages: list[torch.Tensor] = []
        draws = self.settings.decoder_draws
        regional = self.settings.regional_credit
        for index, item in enumerate(items):
            latents = self.tokenizer.decode(TokenGrid(ids[index * group : (index + 1) * group]))
            rewards = torch.zeros(group, dtype=torch.float64)
            parts: dict[str, torch.Tensor] = {}
            score_parts = []
            for draw in range(draws):
                seed = stream_seed(self.seed, 1, first + index + draw * DRAW_STRIDE)
                images = self._decode(latents, item.prompt, seed=seed)
                scored = score_all(
                    self.rewards, RewardBatch(images, [item.prompt] * group, [item.metadata] * group)
                )
                rewards += torch.tensor(scored.total, dtype=torch.float64) / draws
                score_parts.append(scored.parts)
                for name, scores in scored.per_reward.items():
                    part = parts.setdefault(name, torch.zeros(group, dtype=torch.float64))
                    part += torch.tensor(scores, dtype=torch.float64) / draws
            totals.extend(rewards.tolist())
            for name, part in parts.items():
                per_reward.setdefault(name, []).extend(part.tolist())
            scale = float(rewards.std(unbiased=False)) + self.settings.advantage_eps
            if regional > 0.0:
                per_draw = [token_advantages(p, scale, self.grid, regional) for p in score_parts]
                advantages.append(torch.stack(per_draw).mean(dim=0))
            else:
                advantages.append((rewards - rewards.mean()) / scale)
        names = tuple(per_reward)
        return _Rollout(
            tokens=ids.reshape(ids.shape[0], -1),
            rewards=torch.tensor(totals, dtype=torch.float64),
            components=torch.tensor([per_reward[n] for n in names], dtype=torch.float64).T.contiguous(),
            component_names=names,
            advantages=torch.cat(advantages),
        )

    def _decode(self, latents: SemanticLatents, prompt: str, *, seed: int) -> list[Any]:
        return self.decoder.decode(
            DecodeRequest(
                latents=latents,
                prompts=(prompt,) * latents.batch_size,
                num_inference_steps=self.decoder_steps,
                guidance_scale=self.decoder_guidance,
                noise_scale=self.decoder_noise_scale,
                seed=seed,
                shared_noise=self.settings.decoder_noise == "shared",
            )
        )

    def _sequences(self, items: Sequence[TrainingPrompt], tokens: torch.Tensor) -> _Sequences:
        vocab = self.policy.vocab
        group = self.settings.group_size
        rows = []
        for index, item in enumerate(items):
            prompt_ids = self._prompt_tokens(item.prompt)
            for sample in tokens[index * group : (index + 1) * group]:
                rows.append(prompt_ids + (sample + vocab.image_token_offset).tolist())
        if self.settings.sampling.cfg_scale > 1.0:
            empty = self._prompt_tokens("")
            rows += [empty + (sample + vocab.image_token_offset).tolist() for sample in tokens]
        length = max(len(row) for row in rows)
        input_ids = torch.full((len(rows), length), vocab.pad_id, dtype=torch.long)
        attention_mask = torch.zeros((len(rows), length), dtype=torch.long)
        for i, row in enumerate(rows):
            input_ids[i, length - len(row) :] = torch.tensor(row, dtype=torch.long)
            attention_mask[i, length - len(row) :] = 1
        position_ids = (attention_mask.cumsum(-1) - 1).clamp(min=0)
        return _Sequences(input_ids, attention_mask, position_ids, tokens)

    def _prompt_tokens(self, prompt: str) -> list[int]:
        """The ids generation conditions on: the prompt followed by the image prefix."""
        if prompt not in self._prompt_ids:
            self._prompt_ids[prompt] = image_prompt_ids(self.policy, prompt, self.grid)
        return self._prompt_ids[prompt]

    def _log_probs(
        self, backbone: Backbone[Any], sequences: _Sequences, *, module: torch.nn.Module | None = None
    ) -> torch.Tensor:
        """Log-probabilities ``(samples, num_tokens)`` of the image tokens under ``backbone``."""
        count = self.grid.num_tokens
        vocab = backbone.vocab
        with self.precision.autocast():
            logits = backbone.sequence_logits(
                sequences.input_ids,
                sequences.attention_mask,
                sequences.position_ids,
                "image",
                logits_to_keep=count + 1,
                module=module,
            )[:, :-1]
        image_logits = logits[
            ..., vocab.image_token_offset : vocab.image_token_offset + vocab.image_vocab_size
        ]
        # The guided distribution, as generation samples it: the rollouts' policy.
        image_logits = guided_scores(image_logits, len(sequences.targets), self.settings.sampling.cfg_scale)
        temperature = self.settings.sampling.temperature
        if temperature != 1.0:
            image_logits = image_logits / temperature
        log_probs = torch.log_softmax(image_logits, dim=-1)
        targets = sequences.targets.to(log_probs.device)
        return log_probs.gather(-1, targets[..., None]).squeeze(-1)

    def _loss(
        self,
        logp: torch.Tensor,
        old_logp: torch.Tensor,
        ref_logp: torch.Tensor | None,
        advantages: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The summed per-sample losses of a micro-batch and its metric sums (loss, policy loss,
        KL and clipped tokens, summed over tokens)."""
        epsilon = self.settings.clip_epsilon
        advantage = advantages.to(logp.device)
        if advantage.dim() == 1:
            advantage = advantage[:, None]
        ratio = torch.exp(logp - old_logp)
        unclipped = ratio * advantage
        clipped = ratio.clamp(1.0 - epsilon, 1.0 + epsilon) * advantage
        policy = -torch.minimum(unclipped, clipped)
        if ref_logp is not None:
            delta = ref_logp - logp
            kl = torch.exp(delta) - delta - 1.0
        else:
            kl = torch.zeros_like(logp)
        per_token = policy + self.settings.kl_coef * kl
        loss = per_token.mean(dim=1).sum()
        clipped_tokens = (clipped < unclipped).sum()
        terms = torch.stack(
            [loss.detach(), policy.detach().sum(), kl.detach().sum(), clipped_tokens.to(logp.dtype)]
        )
        return loss, terms.to(torch.float64).cpu()

    # ----------------------------------------------------------------------- checkpoints

    def _save(self, step: int, data_position: int, optimizer: torch.optim.Optimizer, engine: Engine) -> Path:
        return save_training_checkpoint(
            self.output_dir,
            step=step,
            data_position=data_position,
            optimizer=optimizer,
            policy=self.policy,
            keep=self.settings.keep_checkpoints,
            processes=self.processes,
            precision=engine,
        )


def _grid(settings: GRPOSettings, config: PipelineConfig, pixels_per_token: int) -> GridSize:
    if settings.grid_h is not None and settings.grid_w is not None:
        return GridSize(settings.grid_h, settings.grid_w)
    height = config.generation.height_px if settings.height_px is None else settings.height_px
    width = config.generation.width_px if settings.width_px is None else settings.width_px
    return GridSize.from_pixels(height, width, pixels_per_token)


def _load_prompts(
    settings: GRPOSettings | GRPOEvalSettings, config: PipelineConfig, *, where: str = "training.grpo"
) -> list[TrainingPrompt]:
    """The inline prompts, or those of ``prompts_file`` (relative to the config file)."""
    if settings.prompts_file is None:
        return settings.training_prompts()
    path = Path(os.path.expanduser(settings.prompts_file))
    base_dir = config._base_dir
    if not path.is_absolute() and base_dir is not None:
        path = base_dir / path
    where = f"{where}.prompts_file"
    if not path.is_file():
        raise ConfigError(f"{where}: file {path} does not exist")
    prompts = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        if path.suffix.lower() != ".jsonl":
            prompts.append(TrainingPrompt(prompt=line.strip()))
            continue
        try:
            prompts.append(TrainingPrompt.model_validate(json.loads(line)))
        except (json.JSONDecodeError, ValidationError) as exc:
            raise ConfigError(
                f"{where}: {path} line {number} is not a JSON object {{prompt, metadata}}: {exc}"
            ) from exc
    if not prompts:
        raise ConfigError(f"{where}: {path} holds no prompts")
    return prompts
