"""OpenMP and torch thread settings of a pipeline that runs on the CPU."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator

from .config import RuntimeSettings


def configure_cpu(runtime: RuntimeSettings) -> None:
    """Let OpenMP's idle workers sleep instead of spin, and cap torch's threads at ``runtime.threads``.

    Spinning is fastest while the process owns its cores. When other processes hold them (a
    training run on a 2-core machine), each small op waits for a descheduled spinner: sampling
    the tiny models then took 10x longer, with identical results. libgomp reads the policy
    once, when torch loads it, so it can only be set before the first torch import; a policy
    the user chose stays.
    """
    if runtime.device.split(":")[0] == "cpu" and "torch" not in sys.modules:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if runtime.threads is not None:
        import torch

        torch.set_num_threads(runtime.threads)


@contextlib.contextmanager
def cpu_threads(threads: int | None) -> Iterator[None]:
    """Run the block with torch's CPU threads at ``threads`` (``None``: as they are), then put
    back the count it found, so two pipelines with different settings share a process."""
    if threads is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before != threads:
        torch.set_num_threads(threads)
    try:
        yield
    finally:
        if torch.get_num_threads() != before:
            torch.set_num_threads(before)
