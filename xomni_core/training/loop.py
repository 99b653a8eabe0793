"""What every trainer of the backbone does around its own step: resuming, the optimiser, the
step loop with metrics, progress, checkpoints and the plot."""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from ..config import PipelineConfig
from ..errors import ConfigError
from ..interfaces import Backbone
from .checkpoint import (
    ADAPTER,
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
from .common import load_backbone
from .distributed import Processes
from .engine import Engine
from .metrics import MetricsLog, TensorBoardLog, plot_available
from .precision import Precision
from .settings import LoraSettings, TrainingSettings

Record = dict[str, Any]

#: Metrics that measure time and so differ between otherwise identical runs.
TIMING_METRICS = ("step_time_s", "wall_time_s", "tokens_per_s")


def find_resume_point(
    output_dir: Path, *, section: str, resume: bool, processes: Processes
) -> tuple[Path | None, TrainerState | None]:
    """The newest checkpoint and its state when resuming; refuses to overwrite a run otherwise."""
    checkpoint = latest_checkpoint(output_dir)
    if checkpoint is not None and not resume:
        raise ConfigError(
            f"training.{section}.output_dir: {output_dir} already holds checkpoints (newest "
            f"{checkpoint.name}); pass --resume to continue that run or choose another output_dir"
        )
    if resume and checkpoint is None and processes.is_main:
        print(f"no checkpoint in {output_dir}; starting from step 0", file=sys.stderr)
    state = load_trainer_state(checkpoint) if resume and checkpoint is not None else None
    return checkpoint, state


def restore_policy(
    policy: Backbone[Any],
    *,
    lora: LoraSettings | None,
    checkpoint: Path | None,
    config: PipelineConfig,
    seed: int,
    rank: int,
) -> Backbone[Any]:
    """The policy a run trains: the config's build with fresh adapters (LoRA), or the
    checkpoint's weights (its adapter on the config's build, with LoRA) when resuming."""
    if lora is None:
        if checkpoint is None:
            return policy
        return load_backbone(type(policy), checkpoint / BACKBONE, config)
    from .lora import add_lora, load_adapter_weights, module_aliases

    module = policy.trainable_module()
    add_lora(module, lora, aliases=module_aliases(policy), seed=seed)
    if lora.dropout > 0.0:
        # Adapter dropout draws from the global generator: seed it per process, so that a run
        # repeats; a resumed run then restores the checkpoint's states over this.
        torch.manual_seed(seed * 1_000_003 + rank)
    if checkpoint is not None:
        if not (checkpoint / ADAPTER).is_dir():
            raise ConfigError(
                f"training.lora: the checkpoint {checkpoint} holds full weights, not an adapter; resume "
                "it without training.lora"
            )
        load_adapter_weights(module, checkpoint / ADAPTER)
    return policy


def check_strategy(training: TrainingSettings | None, section: str) -> None:
    """Refuse the combinations of ``training.distributed.strategy`` that the trainers do not run."""
    if training is None or training.distributed.strategy != "fsdp":
        return
    if section == "grpo":
        raise ConfigError(
            "training.distributed.strategy: fsdp trains SFT only; GRPO's rollouts run the backbone's "
            "generation, which reads whole weights, so train GRPO with strategy: ddp (LoRA keeps it small)"
        )
    if training.lora is not None:
        raise ConfigError(
            "training.distributed.strategy: fsdp shards full fine-tuning; with training.lora the trainable "
            "adapters are a few percent of the backbone, so use strategy: ddp (the default)"
        )
    evaluation = training.sft.eval if training.sft is not None else None
    if evaluation is not None and evaluation.samples > 0:
        raise ConfigError(
            "training.sft.eval.samples: sample images are drawn by one process with whole weights, which "
            "strategy: fsdp does not hold; set samples: 0 (eval_loss is still measured) or use strategy: ddp"
        )
    if "LOCAL_RANK" not in os.environ:
        raise ConfigError(
            "training.distributed.strategy: fsdp shards over the processes of a launch; start the run "
            "with torchrun or accelerate launch (--nproc_per_node 1 for a single device)"
        )


def start_engine(policy: Backbone[Any], training: TrainingSettings | None, processes: Processes) -> Engine:
    """The run's engine (mixed precision, process wrapping), and gradient checkpointing switched
    on if asked for."""
    training = training or TrainingSettings()
    if training.gradient_checkpointing:
        enable = getattr(policy, "enable_gradient_checkpointing", None)
        if not callable(enable):
            raise ConfigError(
                f"training.gradient_checkpointing: this backbone ({type(policy).__name__}) has no "
                "enable_gradient_checkpointing()"
            )
        enable()
    # With LoRA only the adapters are master weights; a half-precision base stays frozen.
    trainable = [p for p in policy.trainable_module().parameters() if p.requires_grad]
    dtype = trainable[0].dtype if trainable else torch.float32
    return Engine(
        processes,
        mixed_precision=training.mixed_precision,
        weights_dtype=dtype,
        distributed=training.distributed,
    )


def make_optimizer(
    policy: Backbone[Any], *, learning_rate: float, weight_decay: float
) -> tuple[torch.nn.Module, list[torch.nn.Parameter], torch.optim.Optimizer]:
    """AdamW over the trainable parameters of ``policy``'s trainable module."""
    module = policy.trainable_module()
    parameters = [p for p in module.parameters() if p.requires_grad]
    if not parameters:
        raise ConfigError("the backbone's trainable_module() has no parameters that require gradients")
    optimizer = torch.optim.AdamW(parameters, lr=learning_rate, weight_decay=weight_decay)
    return module, parameters, optimizer


def restore_progress(
    state: TrainerState | None, processes: Processes, precision: Precision
) -> tuple[int, int]:
    """``(step, data_position)`` to continue from, with loss-scaler and RNG states restored (the
    optimiser's follows once the engine has prepared it)."""
    if state is None:
        return 0, 0
    precision.load_state_dict(state.scaler)
    rng = state.rng_states
    restore_rng_state(rng[processes.rank] if len(rng) == processes.world_size else rng[0])
    return state.step, state.data_position


def prepare_training(
    engine: Engine, module: torch.nn.Module, optimizer: torch.optim.Optimizer, state: TrainerState | None
) -> tuple[torch.nn.Module, torch.optim.Optimizer, list[torch.nn.Parameter]]:
    """The engine's module, optimiser and trainable parameters, with a resumed run's optimiser
    state loaded into them."""
    wrapped, optimizer, parameters = engine.prepare(module, optimizer)
    if state is not None:
        engine.load_optimizer_state(optimizer, state.optimizer)
    return wrapped, optimizer, parameters


def save_training_checkpoint(
    output_dir: Path,
    *,
    step: int,
    data_position: int,
    optimizer: torch.optim.Optimizer,
    policy: Backbone[Any],
    keep: int | None,
    processes: Processes,
    precision: Engine,
) -> Path:
    """Every process's RNG state, written with the weights and optimiser by the main process
    (under FSDP gathered from all processes first)."""
    rng_states = processes.gather_objects(capture_rng_state())
    optimizer_state = precision.optimizer_state(optimizer)
    weights = precision.full_weights()
    path = checkpoint_path(output_dir, step)
    if processes.is_main:
        state = TrainerState(
            step=step,
            data_position=data_position,
            world_size=processes.world_size,
            optimizer=optimizer_state,
            rng_states=rng_states,
            scaler=precision.state_dict(),
        )
        save_checkpoint(path, policy, state, weights=weights)
        prune_checkpoints(output_dir, keep)
    processes.barrier()
    return path


@dataclass(frozen=True)
class LoopOutcome:
    records: list[Record]
    plot_path: Path | None
    checkpoint: Path | None


def run_steps(
    *,
    name: str,
    output_dir: Path,
    processes: Processes,
    start_step: int,
    total_steps: int,
    data_position: int,
    samples_per_step: int,
    checkpoint_every: int,
    resumed_from: Path | None,
    step: Callable[[int, int], Record],
    tokens: Callable[[Record], float],
    postfix: Callable[[Record], dict[str, str]],
    save: Callable[[int, int], Path],
    plot: Callable[[list[Record], Path], Path],
    plot_file: str,
    show_progress: bool,
    report_to: tuple[str, ...] = (),
    engine: Engine | None = None,
) -> LoopOutcome:
    """Run ``step(step, data_position)`` from ``start_step + 1`` to ``total_steps``.

    Each record gains its timings and throughput and goes to ``metrics.jsonl``; a checkpoint is
    saved every ``checkpoint_every`` steps and at the end, the plot redrawn with it. The
    ``engine`` is released at the end, so the backbone runs as it did before the run.
    """
    output_dir.mkdir(parents=True, exist_ok=True)
    if processes.is_main:
        remove_partial_checkpoints(output_dir)
    metrics = MetricsLog(output_dir, resume_step=start_step) if processes.is_main else None
    board = (
        TensorBoardLog(output_dir, resume_step=start_step)
        if processes.is_main and "tensorboard" in report_to
        else None
    )
    can_plot = plot_available()
    if processes.is_main and not can_plot:
        print(f"matplotlib is not installed (pip install 'xomni[rl]'); no {plot_file}", file=sys.stderr)
    records: list[Record] = list(metrics.records) if metrics is not None else []
    plot_path: Path | None = None
    saved = resumed_from
    started = time.perf_counter()
    progress = tqdm(
        total=total_steps,
        initial=start_step,
        desc=name,
        unit="step",
        disable=not (show_progress and processes.is_main),
    )
    try:
        for index in range(start_step + 1, total_steps + 1):
            step_started = time.perf_counter()
            record = step(index, data_position)
            data_position += samples_per_step * processes.world_size
            elapsed = time.perf_counter() - step_started
            record["step_time_s"] = elapsed
            record["wall_time_s"] = time.perf_counter() - started
            record["tokens_per_s"] = tokens(record) / elapsed
            records.append(record)
            if metrics is not None:
                metrics.write(record)
            if board is not None:
                board.write(record)
            progress.update(1)
            progress.set_postfix(postfix(record))
            if index % checkpoint_every == 0 or index == total_steps:
                saved = save(index, data_position)
                if processes.is_main and can_plot:
                    plot_path = plot(records, output_dir / plot_file)
    finally:
        progress.close()
        if board is not None:
            board.close()
        if engine is not None:
            engine.release()
    if processes.is_main and can_plot and records and plot_path is None:
        plot_path = plot(records, output_dir / plot_file)
    return LoopOutcome(records, plot_path, saved)
