"""Pieces both trainers share: a seeded data order, frozen components, reloaded backbones."""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, Generic, TypeVar

import torch

from ..config import PipelineConfig
from ..interfaces import Backbone

T = TypeVar("T")


class EpochStream(Generic[T]):
    """An endless stream of ``items``: epoch after epoch, each in a seeded order.

    Position ``k`` depends on the seed and ``k`` only, so a run that knows how many items it has
    consumed can continue the stream exactly where it left off.
    """

    def __init__(self, items: Sequence[T], *, seed: int, shuffle: bool) -> None:
        self.items = items
        self.seed = seed
        self.shuffle = shuffle
        self._orders: dict[int, list[int]] = {}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, position: int) -> T:
        epoch, offset = divmod(position, len(self.items))
        return self.items[self._order(epoch)[offset]]

    def _order(self, epoch: int) -> list[int]:
        if epoch not in self._orders:
            order = list(range(len(self.items)))
            if self.shuffle:
                random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
            self._orders = {epoch: order}  # positions only move forward
        return self._orders[epoch]


def freeze(component: Any) -> None:
    """Stop gradients into a component's modules (those it exposes as attributes)."""
    for value in vars(component).values():
        if isinstance(value, torch.nn.Module):
            value.requires_grad_(False)


def load_backbone(cls: type[Backbone[Any]], path: Path, config: PipelineConfig) -> Backbone[Any]:
    """A backbone saved at ``path`` (e.g. a checkpoint's), on the config's device and dtype."""
    backbone = cls.from_pretrained(path)
    return backbone.to(device=config.runtime.device, dtype=config.runtime.dtype)
