"""Garbage-collector settings of the commands that load a pipeline, use it once and exit.

Importing torch, transformers and diffusers and loading components leaves about 400,000
long-lived objects that the cyclic collector tracks. CPython walks all of them each time its
oldest generation grows by a quarter (six full passes while ``xomni generate`` loads the nano
pipeline) and once more at interpreter shutdown. Those walks took more than a second of a 5 s
``xomni generate`` (BENCHMARKS.md) and free nothing a process about to end needs back.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def long_lived_objects() -> Iterator[None]:
    """Run the block (heavy imports, component loading) without automatic collections, then
    freeze everything alive (:func:`gc.freeze`) so that later collections skip it.

    Cyclic garbage made inside the block is never reclaimed; keep the block to one-off setup.
    """
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        gc.freeze()
        if was_enabled:
            gc.enable()


def skip_collection_at_exit() -> None:
    """Freeze the heap so that interpreter shutdown does not walk it; call right before exiting."""
    gc.freeze()
