"""The processes of a training run: one, or each of a ``torchrun`` launch.

:class:`Processes` initialises ``torch.distributed`` from the environment (NCCL on CUDA, gloo on
CPU) when ``WORLD_SIZE > 1`` and offers the few collectives the trainers need;
:func:`wrap_module` puts the backbone's trainable module under ``DistributedDataParallel``.
"""

from __future__ import annotations

import os
from contextlib import AbstractContextManager
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from ..errors import ConfigError


@dataclass(frozen=True)
class Processes:
    """This process's place in the run and the collectives the trainers need."""

    rank: int
    world_size: int
    device: str
    owns_group: bool

    @classmethod
    def start(cls, device: str) -> Processes:
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        cuda = device.startswith("cuda")
        if cuda:
            if not torch.cuda.is_available():
                raise ConfigError(f"runtime.device: {device!r} needs CUDA, which this machine lacks")
            if world_size > 1:
                device = f"cuda:{local_rank}"  # one GPU per process
            torch.cuda.set_device(torch.device(device))
        owns_group = False
        if world_size > 1 and not dist.is_initialized():
            dist.init_process_group(backend="nccl" if cuda else "gloo")
            owns_group = True
        if dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size(), device, owns_group)
        return cls(0, 1, device, owns_group)

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def gather(self, tensor: torch.Tensor) -> torch.Tensor:
        """Every process's ``tensor`` (same shape everywhere), concatenated in rank order."""
        if not self.distributed:
            return tensor
        local = tensor.to(self.device).contiguous()
        parts = [torch.empty_like(local) for _ in range(self.world_size)]
        dist.all_gather(parts, local)
        return torch.cat(parts).cpu()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return tensor
        total = tensor.to(self.device).clone()
        dist.all_reduce(total)
        return total.cpu()

    def gather_objects(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        values: list[Any] = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()

    def __enter__(self) -> Processes:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        """Close the group; after a clean run, only once every process is done with it.

        A process that tears gloo down while a peer still finishes its last step can abort.
        """
        if kind is None:
            self.barrier()
        self.close()


def wrap_module(module: torch.nn.Module, processes: Processes) -> torch.nn.Module | None:
    """``module`` under ``DistributedDataParallel`` when the run has several processes, else None."""
    if not processes.distributed:
        return None
    # Image mode never reads the text head, so some parameters get no gradient.
    cuda = processes.device.startswith("cuda")
    return DistributedDataParallel(
        module,
        device_ids=[torch.device(processes.device).index] if cuda else None,
        find_unused_parameters=True,
    )


def no_sync(wrapped: torch.nn.Module | None) -> AbstractContextManager[Any]:
    """Accumulate gradients without averaging them over processes (``wrapped`` is the DDP module)."""
    assert isinstance(wrapped, DistributedDataParallel)
    return wrapped.no_sync()
