"""Training the backbone: settings (light), and the SFT and GRPO trainers (import torch on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .settings import GRPOSettings, SFTSettings, TrainingPrompt, TrainingSettings

if TYPE_CHECKING:
    from .grpo import GRPOResult, train_grpo
    from .losses import object_weights
    from .schedules import warmup_cosine
    from .sft import SFTResult, train_sft

__all__ = [
    "GRPOResult",
    "GRPOSettings",
    "SFTResult",
    "SFTSettings",
    "TrainingPrompt",
    "TrainingSettings",
    "object_weights",
    "train_grpo",
    "train_sft",
    "warmup_cosine",
]

_LAZY = {
    "GRPOResult": "xomni_core.training.grpo",
    "train_grpo": "xomni_core.training.grpo",
    "SFTResult": "xomni_core.training.sft",
    "train_sft": "xomni_core.training.sft",
    "warmup_cosine": "xomni_core.training.schedules",
    "object_weights": "xomni_core.training.losses",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xomni_core.training' has no attribute {name!r}")
