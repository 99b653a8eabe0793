"""The engine under both trainers: Hugging Face accelerate's ``Accelerator``.

One :class:`Engine` per run places the model, wraps it for the run's processes
(``DistributedDataParallel``), runs the forward passes under mixed precision, scales the fp16
loss, skips the gradient reduction of all but the last micro-batch of a step (``no_sync``) and
clips the gradients. Checkpoints stay ours (:mod:`.checkpoint`): accelerate's ``save_state``
pickles.

The trainers scale each micro-batch's loss themselves (the accelerator's own accumulation count
stays 1): GRPO's micro-batches (``micro_batch_size``) need not be the accumulation steps, and one
process without accumulation then computes exactly what it did before the engine existed.
"""

from __future__ import annotations

from contextlib import AbstractContextManager
from typing import Any

import torch
from torch import nn

from .distributed import Processes
from .precision import Mode, Precision, check_master_weights


class Engine(Precision):
    """accelerate's ``Accelerator`` for one run of ``processes``."""

    def __init__(
        self,
        processes: Processes,
        *,
        mixed_precision: Mode,
        weights_dtype: torch.dtype,
    ) -> None:
        from accelerate import Accelerator
        from accelerate.utils import DistributedDataParallelKwargs

        check_master_weights(mixed_precision, weights_dtype)
        self.processes = processes
        cpu = torch.device(processes.device).type == "cpu"
        accelerator = Accelerator(
            cpu=cpu,
            mixed_precision=mixed_precision,
            # Image mode never reads the text head, so some parameters get no gradient.
            kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
        )
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
        wrapped, stepper = self.accelerator.prepare(module, optimizer)
        self._prepared = wrapped
        parameters = [p for p in wrapped.parameters() if p.requires_grad]
        return wrapped, stepper, parameters

    def no_sync(self, wrapped: nn.Module) -> AbstractContextManager[Any]:
        """Accumulate this micro-batch's gradients without reducing them over processes."""
        assert self.accelerator is not None
        context: AbstractContextManager[Any] = self.accelerator.no_sync(wrapped)
        return context

    def release(self) -> None:
        """Undo what preparing did to the module (the autocast forward of mixed precision) and
        forget the run, so that the next run in this process starts afresh."""
        import torch.distributed as dist
        from accelerate.state import AcceleratorState, GradientState

        if self.accelerator is not None and self._prepared is not None:
            self.accelerator.unwrap_model(self._prepared, keep_fp32_wrapper=False)
        self._prepared = None
        AcceleratorState._reset_state(reset_partial_state=not dist.is_initialized())
        GradientState._reset_state()
