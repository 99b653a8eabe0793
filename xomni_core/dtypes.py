"""Compute dtypes by name, as configs and the command line spell them."""

from __future__ import annotations

from typing import TYPE_CHECKING

from .errors import InputError

if TYPE_CHECKING:
    import torch

DTYPE_NAMES: tuple[str, ...] = ("float32", "float16", "bfloat16")


def torch_dtype(name: str) -> torch.dtype:
    """The torch dtype called ``name``; an unknown name is an :class:`InputError` listing the known ones."""
    import torch

    if name not in DTYPE_NAMES:
        raise InputError(f"dtype must be one of {', '.join(DTYPE_NAMES)}, got {name!r}")
    dtype: torch.dtype = getattr(torch, name)
    return dtype
