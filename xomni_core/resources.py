"""Refusing configs the machine cannot run, before anything is allocated.

A config can validate and still ask for terabytes of weights or a device that does not exist.
:func:`check_resources` runs after validation and before construction: it checks that the
runtime device exists and that the components' estimated memory fits what the machine has.

A component's params opt in to the memory check with a ``memory_estimate`` method (see
:class:`MemoryEstimating`); params without one count as unknown and are not checked. The
estimates are plain arithmetic, so nothing here imports torch unless the device is not the CPU.

Overrides, for those who know better: ``XOMNI_ALLOW_LARGE=1`` (or ``allow_large=True``) skips
the memory check; ``XOMNI_MEMORY_LIMIT_GB`` (or ``limit_bytes``) replaces the detected limit.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from .errors import CheckpointError, ConfigError
from .settings import positive_number_from_env

if TYPE_CHECKING:
    from .config import ResolvedComponent, ResolvedConfig
    from .params import ComponentParams

ALLOW_LARGE_ENV = "XOMNI_ALLOW_LARGE"
MEMORY_LIMIT_ENV = "XOMNI_MEMORY_LIMIT_GB"
GB = 1_000_000_000
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
#: Fresh components are built in float32 and cast to the runtime dtype afterwards.
BUILD_DTYPE_BYTES = 4


@runtime_checkable
class MemoryEstimating(Protocol):
    """Params that can say, from their values alone, how much memory their component needs."""

    def memory_estimate(self, dtype_bytes: int = 4) -> int | None:
        """Bytes of the weights (and any fixed working memory) at ``dtype_bytes`` per value;
        None when unknown."""


@dataclass(frozen=True)
class MemoryLimit:
    """How many bytes may be allocated, and where that number comes from."""

    limit_bytes: int
    source: str


@dataclass(frozen=True)
class ComponentEstimate:
    slot: str
    kind: str
    plugin: str
    estimate_bytes: int


def format_bytes(count: float) -> str:
    """``count`` bytes in decimal units, three significant digits."""
    for unit, size in (("PB", 1e15), ("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if count >= size:
            return f"{count / size:.3g} {unit}"
    return f"{int(count)} bytes"


def allow_large_from_env() -> bool:
    """Whether ``XOMNI_ALLOW_LARGE`` asks to skip the memory check."""
    return os.environ.get(ALLOW_LARGE_ENV, "").strip().lower() in ("1", "true", "yes", "on")


def memory_estimate(params: ComponentParams, dtype_bytes: int = 4) -> int | None:
    """The params' own estimate in bytes, or None where they have none (or a useless one)."""
    if not isinstance(params, MemoryEstimating):
        return None
    value = params.memory_estimate(dtype_bytes=dtype_bytes)
    if isinstance(value, bool) or not isinstance(value, int | float) or not value >= 0:
        return None
    return int(value) if math.isfinite(value) else sys.maxsize


def check_device(device: str) -> None:
    """Refuse a torch device this machine does not have, naming what it does have.

    The CPU is always there and needs no torch import; any other device imports torch.
    """
    if device.split(":")[0] == "cpu":
        return
    import torch

    try:
        parsed = torch.device(device)
    except (RuntimeError, ValueError) as exc:
        raise ConfigError(
            f"runtime.device: {device!r} is not a torch device ({exc}); expected cpu or cuda"
        ) from exc
    version = torch.__version__
    if parsed.type == "cuda":
        if torch.version.cuda is None and torch.version.hip is None:
            reason = f"torch {version} was built without CUDA"
        elif not torch.cuda.is_available():
            reason = f"no GPU is visible to torch {version}"
        else:
            count = torch.cuda.device_count()
            if parsed.index is None or parsed.index < count:
                return
            reason = f"torch {version} sees {count} GPU{'s' if count != 1 else ''}"
            raise ConfigError(
                f"runtime.device: {device} is not available ({reason}); "
                f"expected cpu or cuda:0 to cuda:{count - 1}"
            )
        raise ConfigError(f"runtime.device: {device} is not available ({reason}); expected cpu")
    if parsed.type == "mps":
        if not torch.backends.mps.is_built():
            reason = f"torch {version} was built without MPS"
        elif not torch.backends.mps.is_available():
            reason = f"this machine has no MPS device for torch {version}"
        else:
            return
        raise ConfigError(f"runtime.device: {device} is not available ({reason}); expected cpu")
    backend = getattr(torch, parsed.type, None)
    is_available = getattr(backend, "is_available", None)
    if callable(is_available) and not is_available():
        raise ConfigError(
            f"runtime.device: {device} is not available "
            f"(torch {version} has no usable {parsed.type} device); expected cpu"
        )


def memory_limit(device: str) -> MemoryLimit | None:
    """Bytes available on ``device``: free GPU memory for CUDA when torch is already imported,
    otherwise available RAM (also bounded by a cgroup limit). None when unknown."""
    gigabytes = positive_number_from_env(MEMORY_LIMIT_ENV, "gigabytes", ConfigError)
    if gigabytes is not None:
        return MemoryLimit(int(gigabytes * GB), MEMORY_LIMIT_ENV)
    if device.startswith("cuda") and "torch" in sys.modules:
        torch = sys.modules["torch"]
        if torch.cuda.is_available():
            index = torch.device(device).index
            free, _total = torch.cuda.mem_get_info(torch.cuda.current_device() if index is None else index)
            return MemoryLimit(int(free), f"free memory of {device}")
    return available_ram()


def available_ram() -> MemoryLimit | None:
    """Available RAM: MemAvailable of /proc/meminfo (else sysconf), capped by a cgroup v2 limit."""
    found: MemoryLimit | None = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                found = MemoryLimit(int(line.split()[1]) * 1024, "available RAM")
                break
    except (OSError, ValueError, IndexError):
        found = None
    if found is None:
        try:
            found = MemoryLimit(os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"), "available RAM")
        except (ValueError, OSError, AttributeError):
            return None
    cgroup = _cgroup_room()
    if cgroup is not None and cgroup < found.limit_bytes:
        return MemoryLimit(cgroup, "the memory left under this process's cgroup limit")
    return found


def _cgroup_room() -> int | None:
    try:
        limit = Path("/sys/fs/cgroup/memory.max").read_text().strip()
        used = Path("/sys/fs/cgroup/memory.current").read_text().strip()
        return None if limit == "max" else max(int(limit) - int(used), 0)
    except (OSError, ValueError):
        return None


def estimate_components(
    resolved: ResolvedConfig, slots: Sequence[str] | None = None
) -> list[ComponentEstimate]:
    """Each chosen slot's estimate in bytes (slots whose params give none are left out)."""
    dtype_bytes = DTYPE_BYTES.get(resolved.config.runtime.dtype, 4)
    chosen = list(resolved.components) if slots is None else [s for s in slots if s in resolved.components]
    estimates = []
    for slot in chosen:
        component = resolved.components[slot]
        params = _effective_params(component)
        if params is None:
            continue
        # Fresh weights are initialised in float32 before the cast to the runtime dtype.
        per_value = max(dtype_bytes, BUILD_DTYPE_BYTES) if component.weights is None else dtype_bytes
        nbytes = memory_estimate(params, dtype_bytes=per_value)
        if nbytes is not None:
            estimates.append(ComponentEstimate(slot, component.spec.kind, component.spec.name, nbytes))
    return estimates


def _effective_params(component: ResolvedComponent) -> ComponentParams | None:
    """The params the component is built with: a weights folder's own record (pretrained or
    exported) overrides the config's; None when that record cannot be read."""
    if component.weights is None:
        return component.params
    from .config import saved_params  # config.py loads pydantic models: not on every import

    try:
        return saved_params(component)
    except CheckpointError:
        return None  # unknown: loading reports the folder's problem itself


def check_memory(
    resolved: ResolvedConfig,
    slots: Sequence[str] | None = None,
    *,
    allow_large: bool | None = None,
    limit_bytes: int | None = None,
) -> None:
    """Refuse with :class:`ConfigError` when the components' estimates exceed the memory limit."""
    if allow_large if allow_large is not None else allow_large_from_env():
        return
    estimates = estimate_components(resolved, slots)
    if not estimates:
        return
    device = resolved.config.runtime.device
    limit = MemoryLimit(limit_bytes, "limit_bytes") if limit_bytes is not None else memory_limit(device)
    total = sum(e.estimate_bytes for e in estimates)
    if limit is None or total <= limit.limit_bytes:
        return
    estimates.sort(key=lambda e: e.estimate_bytes, reverse=True)
    parts = ", ".join(
        f"{e.slot} ({e.kind} plugin '{e.plugin}') {format_bytes(e.estimate_bytes)}" for e in estimates
    )
    largest = estimates[0]
    raise ConfigError(
        f"{largest.slot}.params: the pipeline needs about {format_bytes(total)} of memory for its weights "
        f"in {resolved.config.runtime.dtype} ({parts}), more than the {format_bytes(limit.limit_bytes)} "
        f"limit on {device} ({limit.source}); reduce the sizes in {largest.slot}.params, or set "
        f"{ALLOW_LARGE_ENV}=1 to build anyway"
    )


def check_resources(
    resolved: ResolvedConfig,
    slots: Sequence[str] | None = None,
    *,
    allow_large: bool | None = None,
    limit_bytes: int | None = None,
) -> None:
    """Refuse a missing runtime device, then weights that cannot fit; both before any allocation.

    ``slots`` limits the check to the components about to be built (default: all of them).
    """
    chosen = list(resolved.components) if slots is None else [s for s in slots if s in resolved.components]
    if any(resolved.components[slot].backend == "torch" for slot in chosen):
        check_device(resolved.config.runtime.device)
    check_memory(resolved, chosen, allow_large=allow_large, limit_bytes=limit_bytes)
