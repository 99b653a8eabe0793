"""Mixed precision of a training run: autocast forward passes over float32 master weights,
carried out by accelerate's ``Accelerator``.

``bf16`` and ``fp16`` run the forward passes under ``torch.autocast``: matrix products in half
precision, reductions and the weights, gradients and optimiser state in float32. ``fp16`` also
scales the loss (``torch.amp.GradScaler``) so that small gradients do not underflow; the
scaler's state travels in checkpoints, so a resumed run scales as the uninterrupted one would.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any, Literal

import torch

from ..errors import ConfigError

if TYPE_CHECKING:
    from accelerate import Accelerator

Mode = Literal["no", "bf16", "fp16"]


def check_master_weights(mode: Mode, weights_dtype: torch.dtype) -> None:
    """Refuse mixed precision over half-precision trainable weights."""
    if mode != "no" and weights_dtype != torch.float32:
        raise ConfigError(
            f"training.mixed_precision: {mode} keeps float32 master weights, but runtime.dtype makes "
            f"them {str(weights_dtype).removeprefix('torch.')}; set runtime.dtype: float32, train "
            "LoRA adapters (float32 on a frozen half-precision base), or set mixed_precision: no "
            "to train in runtime.dtype throughout"
        )


class Precision:
    """Autocast, loss scaling, clipping and the optimiser step of one run.

    Without an accelerator (outside a run) forward passes run as they are.
    """

    def __init__(self, accelerator: Accelerator | None = None) -> None:
        self.accelerator = accelerator

    @property
    def mode(self) -> Mode:
        mode: Mode = self.accelerator.mixed_precision if self.accelerator is not None else "no"
        return mode

    def autocast(self) -> AbstractContextManager[Any]:
        """The context forward passes run in."""
        if self.accelerator is None or self.mode == "no":
            return nullcontext()
        context: AbstractContextManager[Any] = self.accelerator.autocast()
        return context

    def backward(self, loss: torch.Tensor) -> None:
        """Gradients of ``loss`` (scaled under fp16); the caller divides by its micro-batches."""
        if self.accelerator is None:
            torch.autograd.backward(loss)
        else:
            self.accelerator.backward(loss)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        max_grad_norm: float | None,
    ) -> torch.Tensor:
        """Clip the (unscaled) gradients to ``max_grad_norm`` and step; returns their norm.

        With fp16 a step whose gradients overflowed is skipped and the scale lowered.
        """
        limit = max_grad_norm if max_grad_norm is not None else float("inf")
        if self.accelerator is None:
            norm = torch.nn.utils.clip_grad_norm_(parameters, limit)
        else:
            norm = self.accelerator.clip_grad_norm_(parameters, limit)
        optimizer.step()
        return norm

    def state_dict(self) -> dict[str, Any] | None:
        scaler = self.accelerator.scaler if self.accelerator is not None else None
        return scaler.state_dict() if scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        scaler = self.accelerator.scaler if self.accelerator is not None else None
        if scaler is not None and state is not None:
            scaler.load_state_dict(state)
