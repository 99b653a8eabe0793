"""The engine under both trainers: Hugging Face accelerate's ``Accelerator``.

One :class:`Engine` per run places the model, wraps it for the run's processes
(``DistributedDataParallel``, or FSDP2 when ``training.distributed.strategy`` is ``fsdp``), runs
the forward passes under mixed precision, scales the fp16 loss, skips the gradient reduction of
all but the last micro-batch of a step (``no_sync``) and clips the gradients. Checkpoints stay
ours (:mod:`.checkpoint`): accelerate's ``save_state`` pickles. Under FSDP the engine gathers the
full weights and optimiser state for them, and shards a checkpoint's optimiser state again on
resume.

The trainers scale each micro-batch's loss themselves (the accelerator's own accumulation count
stays 1): GRPO's micro-batches (``micro_batch_size``) need not be the accumulation steps, and one
process without accumulation then computes exactly what it did before the engine existed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any, cast

import torch
from torch import nn

from ..errors import ConfigError
from .distributed import Processes
from .precision import Mode, Precision, check_master_weights
from .settings import DistributedSettings


class Engine(Precision):
    """accelerate's ``Accelerator`` for one run of ``processes``."""

    def __init__(
        self,
        processes: Processes,
        *,
        mixed_precision: Mode,
        weights_dtype: torch.dtype,
        distributed: DistributedSettings | None = None,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs, DistributedType

        check_master_weights(mixed_precision, weights_dtype)
        _forget_earlier_runs()
        self.processes = processes
        self.fsdp = distributed is not None and distributed.strategy == "fsdp"
        plugin = _fsdp_plugin(distributed) if distributed is not None and self.fsdp else None
        if self.fsdp and not processes.owns_group:
            raise ConfigError(
                "training.distributed.strategy: fsdp shards over the processes of a launch; start the run "
                "with torchrun or accelerate launch (--nproc_per_node 1 for a single device)"
            )
        cpu = torch.device(processes.device).type == "cpu"
        accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision,
            fsdp_plugin=plugin,
            # Image mode never reads the text head, so some parameters get no gradient.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
        if plugin is not None and accelerator.distributed_type != DistributedType.FSDP:
            # accelerate turns FSDP on for accelerator devices only and would fall back to DDP on
            # the CPU; its FSDP2 path itself runs on gloo as well, so ask for it explicitly.
            accelerator.state.distributed_type = DistributedType.FSDP
            accelerator.state.fsdp_plugin = plugin
        if mixed_precision == "fp16" and accelerator.scaler is None:
            # accelerate leaves fp16 on the CPU without autocast or a scaler; torch has both.
            accelerator.native_amp = True
            accelerator.scaler = torch.amp.GradScaler(accelerator.device.type)
        super().__init__(accelerator)
        self._prepared: nn.Module | None = None

    def prepare(
        self, module: nn.Module, optimizer: torch.optim.Optimizer
    ) -> tuple[nn.Module, torch.optim.Optimizer, list[nn.Parameter]]:
        """``module`` placed and wrapped for the run's processes (itself in a single process), the
        optimiser that steps it and the parameters it trains: forward passes go through the first."""
        assert self.accelerator is not None
        if self.fsdp:
            plugin = self.accelerator.state.fsdp_plugin
            plugin.transformer_cls_names_to_wrap = decoder_layer_classes(module)
        wrapped, stepper = self.accelerator.prepare(module, optimizer)
        self._prepared = wrapped
        # FSDP replaces the parameters by their shards (and the optimiser's with them).
        parameters = [p for p in wrapped.parameters() if p.requires_grad]
        return wrapped, stepper, parameters

    def no_sync(self, wrapped: nn.Module) -> AbstractContextManager[Any]:
        """Accumulate this micro-batch's gradients without reducing them over processes."""
        assert self.accelerator is not None
        context: AbstractContextManager[Any] = self.accelerator.no_sync(wrapped)
        return context

    # ------------------------------------------------------------------ checkpoint contents

    def optimizer_state(self, optimizer: torch.optim.Optimizer) -> dict[str, Any]:
        """The optimiser's whole state; under FSDP gathered from every process (all must call),
        on the main process only (the others get ``{}``)."""
        if not self.fsdp:
            return optimizer.state_dict()
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_optimizer_state_dict

        assert self._prepared is not None
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return dict(get_optimizer_state_dict(self._prepared, _inner(optimizer), options=options))

    def load_optimizer_state(self, optimizer: torch.optim.Optimizer, state: dict[str, Any]) -> None:
        """Undo :meth:`optimizer_state` (after :meth:`prepare`); under FSDP each process keeps its shard."""
        # A gathered state names its parameters; a plain one numbers them.
        sharded = any(isinstance(p, str) for group in state.get("param_groups", []) for p in group["params"])
        if sharded != self.fsdp:
            written, now = ("fsdp", "ddp") if sharded else ("ddp", "fsdp")
            raise ConfigError(
                f"training.distributed.strategy: the checkpoint was written under {written}, this run is "
                f"{now}; resume it with strategy: {written}"
            )
        if not self.fsdp:
            optimizer.load_state_dict(state)
            return
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict

        assert self._prepared is not None
        # Not strict: parameters that never had a gradient (image mode leaves the text head
        # alone) have no AdamW state, here as in the run that saved it.
        options = StateDictOptions(full_state_dict=True, strict=False)
        set_optimizer_state_dict(self._prepared, _inner(optimizer), optim_state_dict=state, options=options)

    def full_weights(self) -> dict[str, torch.Tensor] | None:
        """Under FSDP the whole model's weights, gathered on the main process (all must call; the
        others get ``{}``); None otherwise, where every process holds them anyway."""
        if not self.fsdp:
            return None
        from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

        assert self._prepared is not None
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        return cast(dict[str, torch.Tensor], get_model_state_dict(self._prepared, options=options))

    def release(self) -> None:
        """Undo what preparing did to the module (the autocast forward of mixed precision) and
        forget the run, so that the next run in this process starts afresh."""
        if self.accelerator is not None and self._prepared is not None:
            self.accelerator.unwrap_model(self._prepared, keep_fp32_wrapper=False)
        self._prepared = None
        _forget_earlier_runs()


def _forget_earlier_runs() -> None:
    """Clear accelerate's process-wide record of a run (its mixed precision and wrapping), which a
    later run in the same process would otherwise inherit or clash with; a process group stays."""
    import torch.distributed as dist
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=not dist.is_initialized())
    GradientState._reset_state()


def decoder_layer_classes(module: nn.Module) -> list[str]:
    """Class names of the decoder layers (the elements of a ``layers`` module list): FSDP's unit."""
    names = {
        type(layer).__name__
        for name, child in module.named_modules()
        if isinstance(child, nn.ModuleList) and name.rsplit(".", 1)[-1] == "layers"
        for layer in child
    }
    if not names:
        raise ConfigError(
            "training.distributed.strategy: fsdp shards the backbone by decoder layer, but its trainable "
            f"module ({type(module).__name__}) has no 'layers' module list"
        )
    return sorted(names)


def _fsdp_plugin(settings: DistributedSettings) -> Any:
    from accelerate import FullyShardedDataParallelPlugin

    return FullyShardedDataParallelPlugin(
        fsdp_version=2,
        auto_wrap_policy="transformer_based_wrap",
        reshard_after_forward=settings.reshard_after_forward,
        cpu_offload=settings.cpu_offload,
        state_dict_type="FULL_STATE_DICT",
    )


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """The torch optimiser inside accelerate's wrapper."""
    inner = getattr(optimizer, "optimizer", optimizer)
    assert isinstance(inner, torch.optim.Optimizer)
    return inner
