"""The processes of a training run: one, or each of a ``torchrun`` or ``accelerate launch`` launch.

:class:`Processes` sets the processes up through accelerate's ``PartialState``, which reads the
launcher's environment (``WORLD_SIZE``, ``RANK``, ``LOCAL_RANK``, ``MASTER_ADDR``/``PORT``: both
launchers set the same variables) and initialises ``torch.distributed`` (NCCL on CUDA, gloo on the
CPU) when there are several processes, and offers the few collectives the trainers need.
Wrapping the model for DDP or FSDP is the :class:`~.engine.Engine`'s job.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import torch

from ..errors import ConfigError


@dataclass(frozen=True)
class Processes:
    """This process's place in the run and the collectives the trainers need."""

    rank: int
    world_size: int
    device: str
    owns_group: bool

    @classmethod
    def start(cls, device: str, *, group: bool = False) -> Processes:
        """This process's place; ``group`` sets up a process group for a launch of a single
        process too (FSDP shards through one)."""
        import torch.distributed as dist

        try:
            from accelerate import PartialState
        except ImportError as exc:
            raise ConfigError("training needs accelerate: pip install 'xomni[train]'") from exc

        cuda = device.startswith("cuda")
        if cuda and not torch.cuda.is_available():
            raise ConfigError(f"runtime.device: {device!r} needs CUDA, which this machine lacks")
        world_size = int(os.environ.get("WORLD_SIZE", "1"))
        _refuse_a_lone_cpu_launch()
        launched = "LOCAL_RANK" in os.environ
        if world_size <= 1 and not (group and launched):
            # One process: no process group, the configured device as it is.
            if cuda:
                torch.cuda.set_device(torch.device(device))
            return cls(0, 1, device, False)
        owns_group = not dist.is_initialized()
        state = PartialState(cpu=not cuda)
        # One GPU per process (cuda:LOCAL_RANK); the CPU stays "cpu".
        placed = str(state.device) if cuda else device
        return cls(state.process_index, state.num_processes, placed, owns_group)

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
        from accelerate.utils import gather

        gathered: torch.Tensor = gather(tensor.to(self.device).contiguous())
        return gathered.cpu()

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        if not self.distributed:
            return tensor
        from accelerate.utils import reduce

        total: torch.Tensor = reduce(tensor.to(self.device), reduction="sum")
        return total.cpu()

    def gather_objects(self, value: Any) -> list[Any]:
        if not self.distributed:
            return [value]
        from accelerate.utils import gather_object

        return list(gather_object([value]))

    def barrier(self) -> None:
        if self.distributed:
            from accelerate import PartialState

            PartialState().wait_for_everyone()

    def close(self) -> None:
        """Tear down the process group this run set up, and accelerate's record of it."""
        if not self.owns_group:
            return
        import torch.distributed as dist
        from accelerate import PartialState

        if dist.is_initialized():
            dist.destroy_process_group()
        PartialState._reset_state()

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


def _refuse_a_lone_cpu_launch() -> None:
    """``accelerate launch --cpu --num_processes N`` starts several processes only through mpirun;
    otherwise it starts this one alone (with a rendezvous address but no ``WORLD_SIZE``)."""
    cpu_launch = os.environ.get("ACCELERATE_USE_CPU", "").lower() in ("1", "true", "yes")
    if cpu_launch and "MASTER_ADDR" in os.environ and "WORLD_SIZE" not in os.environ:
        raise ConfigError(
            "accelerate launch --cpu started one process although more were asked for (it starts several "
            "CPU processes through mpirun only); for N processes on the CPU run `accelerate launch "
            "--multi_gpu --num_processes N` or `torchrun --nproc_per_node N` with runtime.device: cpu"
        )
