"""Training the backbone: settings (light) and the GRPO trainer (imports torch on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import GRPOSettings, TrainingPrompt, TrainingSettings

if TYPE_CHECKING:
    from .grpo import GRPOResult, train_grpo

__all__ = ["GRPOResult", "GRPOSettings", "TrainingPrompt", "TrainingSettings", "train_grpo"]

_LAZY = {"GRPOResult": "xomni_core.training.grpo", "train_grpo": "xomni_core.training.grpo"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xomni_core.training' has no attribute {name!r}")
