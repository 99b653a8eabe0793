"""How Triton serves the pipeline models: batching, instances, runtime, threads."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from xomni_core import ConfigError
from xomni_core.serve_args import (
    DEFAULT_MAX_BATCH_SIZE,
    DEFAULT_MAX_QUEUE_DELAY_US,
    TEXT_TO_IMAGE_MODEL,
    UNDERSTANDING_MODEL,
)

__all__ = ["TEXT_TO_IMAGE_MODEL", "UNDERSTANDING_MODEL", "ServingOptions"]

MAX_BATCH_SIZE = 256
MAX_QUEUE_DELAY_US = 10_000_000
MAX_INSTANCES = 64
MAX_THREADS = 256


@dataclass(frozen=True)
class ServingOptions:
    """How Triton runs the pipeline models."""

    max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
    max_queue_delay_us: int = DEFAULT_MAX_QUEUE_DELAY_US
    instance_kind: Literal["cpu", "gpu"] = "cpu"
    instance_count: int = 1
    backend: Literal["onnxruntime", "tensorrt"] = "onnxruntime"
    threads: int | None = None

    def __post_init__(self) -> None:
        ranges = {
            "max_batch_size (--max-batch-size)": (self.max_batch_size, 1, MAX_BATCH_SIZE),
            "max_queue_delay_us (--max-queue-delay-us)": (self.max_queue_delay_us, 0, MAX_QUEUE_DELAY_US),
            "instance_count (--instances)": (self.instance_count, 1, MAX_INSTANCES),
            "threads (--threads)": (1 if self.threads is None else self.threads, 1, MAX_THREADS),
        }
        for name, (value, low, high) in ranges.items():
            if not low <= value <= high:
                raise ConfigError(f"serving option {name} must be from {low} to {high}, got {value}")
        if self.backend == "tensorrt" and self.instance_kind != "gpu":
            raise ConfigError("TensorRT engines run on GPU instances only: use --instance-kind gpu")
