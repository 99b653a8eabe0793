"""Mixed precision of a training run: autocast forward passes over float32 master weights.

``bf16`` and ``fp16`` run the forward passes under ``torch.autocast``: matrix products in half
precision, reductions and the weights, gradients and optimiser state in float32. ``fp16`` also
scales the loss (``torch.amp.GradScaler``) so that small gradients do not underflow; the
scaler's state travels in checkpoints, so a resumed run scales as the uninterrupted one would.
"""

from __future__ import annotations

from contextlib import AbstractContextManager, nullcontext
from typing import Any, Literal

import torch

from ..errors import ConfigError

Mode = Literal["no", "bf16", "fp16"]
_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class Precision:
    """Autocast, loss scaling, clipping and the optimiser step of one run."""

    def __init__(self, mode: Mode, *, device: str, weights_dtype: torch.dtype) -> None:
        if mode != "no" and weights_dtype != torch.float32:
            raise ConfigError(
                f"training.mixed_precision: {mode} keeps float32 master weights, but runtime.dtype makes "
                f"them {str(weights_dtype).removeprefix('torch.')}; set runtime.dtype: float32, train "
                "LoRA adapters (float32 on a frozen half-precision base), or set mixed_precision: no "
                "to train in runtime.dtype throughout"
            )
        self.mode = mode
        self.device_type = torch.device(device).type
        self.scaler = torch.amp.GradScaler(self.device_type) if mode == "fp16" else None

    def autocast(self) -> AbstractContextManager[Any]:
        """The context forward passes run in."""
        if self.mode == "no":
            return nullcontext()
        return torch.autocast(device_type=self.device_type, dtype=_DTYPES[self.mode])

    def backward(self, loss: torch.Tensor) -> None:
        torch.autograd.backward(self.scaler.scale(loss) if self.scaler is not None else loss)

    def step(
        self,
        optimizer: torch.optim.Optimizer,
        parameters: list[torch.nn.Parameter],
        max_grad_norm: float | None,
    ) -> torch.Tensor:
        """Clip the (unscaled) gradients to ``max_grad_norm`` and step; returns their norm.

        With fp16 a step whose gradients overflowed is skipped and the scale lowered.
        """
        if self.scaler is not None:
            self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(
            parameters, max_grad_norm if max_grad_norm is not None else float("inf")
        )
        if self.scaler is not None:
            self.scaler.step(optimizer)
            self.scaler.update()
        else:
            optimizer.step()
        return norm

    def state_dict(self) -> dict[str, Any] | None:
        return self.scaler.state_dict() if self.scaler is not None else None

    def load_state_dict(self, state: dict[str, Any] | None) -> None:
        if self.scaler is not None and state is not None:
            self.scaler.load_state_dict(state)
