"""Training checkpoints: one folder per step, written atomically.

``OUTPUT/checkpoints/step-00000010/`` holds ``backbone/`` (the backbone's own
``save_pretrained`` folder, safetensors weights), or ``adapter/`` alone when LoRA trains (see
:mod:`.lora`; the base weights are the config's), and ``trainer_state.pt``: the step, the data
position, the optimiser state and every process's RNG states, as tensors and plain containers
only, so it loads with ``torch.load(weights_only=True)``. A folder appears complete under its
final name or not at all, so the newest folder is always a usable one.
"""

from __future__ import annotations

import random
import re
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import nn

from ..atomic import atomic_directory, remove_stale_temporaries
from ..errors import CheckpointError
from ..pickles import load_tensors_only

if TYPE_CHECKING:
    from ..interfaces import Backbone

CHECKPOINTS = "checkpoints"
BACKBONE = "backbone"
ADAPTER = "adapter"
STATE_FILE = "trainer_state.pt"
FORMAT_VERSION = 1
_STEP_FOLDER = re.compile(r"^step-(\d{8})$")


@dataclass(frozen=True)
class TrainerState:
    """Everything besides the weights that a resumed run needs to continue identically.

    ``data_position`` counts the prompts the whole run (all processes) has consumed.
    ``rng_states`` holds one entry per process, in rank order.
    """

    step: int
    data_position: int
    world_size: int
    optimizer: dict[str, Any]
    rng_states: list[dict[str, Any]]
    scaler: dict[str, Any] | None = None  # fp16 loss scaling


def checkpoint_path(output_dir: Path, step: int) -> Path:
    return output_dir / CHECKPOINTS / f"step-{step:08d}"


def list_checkpoints(output_dir: Path) -> list[tuple[int, Path]]:
    """Complete checkpoints under ``output_dir``, oldest first."""
    folder = output_dir / CHECKPOINTS
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        match = _STEP_FOLDER.match(path.name)
        if match and path.is_dir() and (path / STATE_FILE).is_file():
            found.append((int(match.group(1)), path))
    return sorted(found)


def latest_checkpoint(output_dir: Path) -> Path | None:
    checkpoints = list_checkpoints(output_dir)
    return checkpoints[-1][1] if checkpoints else None


def save_checkpoint(
    path: Path,
    backbone: Backbone[Any],
    state: TrainerState,
    *,
    weights: dict[str, torch.Tensor] | None = None,
) -> None:
    """Write the backbone's current weights (its adapter alone, if it has one) and ``state`` to
    ``path`` atomically; ``weights``, if given, is its trainable module's whole state dict (gathered
    from the shards of a sharded module)."""
    module = backbone.trainable_module()
    with atomic_directory(path) as folder:
        if getattr(module, "peft_config", None):
            from .lora import save_adapter

            save_adapter(folder / ADAPTER, module)
        elif weights is not None:
            with _state_dict_as(module, weights):
                backbone.save_pretrained(folder / BACKBONE)
        else:
            backbone.save_pretrained(folder / BACKBONE)
        payload = {
            "format_version": FORMAT_VERSION,
            "step": state.step,
            "data_position": state.data_position,
            "world_size": state.world_size,
            "optimizer": state.optimizer,
            "rng_states": state.rng_states,
            "scaler": state.scaler,
        }
        torch.save(payload, folder / STATE_FILE)


@contextmanager
def _state_dict_as(module: nn.Module, weights: dict[str, torch.Tensor]) -> Iterator[None]:
    """``module.state_dict()`` returns ``weights`` meanwhile, so that the backbone's own
    ``save_pretrained`` writes them."""
    module.state_dict = lambda *args, **kwargs: weights  # type: ignore[method-assign, assignment]
    try:
        yield
    finally:
        del module.state_dict


def load_trainer_state(path: Path) -> TrainerState:
    """Read ``trainer_state.pt`` of a checkpoint folder (tensors and plain containers only)."""
    file = path / STATE_FILE
    payload = load_tensors_only(file, "training state")
    if not isinstance(payload, dict) or payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{file} is not a training state of format version {FORMAT_VERSION}")
    return TrainerState(
        step=int(payload["step"]),
        data_position=int(payload["data_position"]),
        world_size=int(payload["world_size"]),
        optimizer=payload["optimizer"],
        rng_states=list(payload["rng_states"]),
        scaler=payload.get("scaler"),
    )


def prune_checkpoints(output_dir: Path, keep: int | None) -> None:
    """Remove all but the newest ``keep`` checkpoints (``None``: keep all)."""
    if keep is None:
        return
    for _, path in list_checkpoints(output_dir)[:-keep]:
        shutil.rmtree(path, ignore_errors=True)


def remove_partial_checkpoints(output_dir: Path) -> None:
    """Remove the temporary folders of checkpoints whose writing was cut short (by a process
    that is gone: a live writer's folder is left alone)."""
    remove_stale_temporaries(output_dir / CHECKPOINTS)


def capture_rng_state() -> dict[str, Any]:
    """This process's torch, CUDA, NumPy and Python RNG states as tensors and plain values."""
    _, keys, position, has_gauss, cached_gaussian = np.random.get_state(legacy=True)
    version, python_state, gauss_next = random.getstate()
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": {
            "keys": torch.from_numpy(np.asarray(keys, dtype=np.int64)),
            "position": int(position),
            "has_gauss": int(has_gauss),
            "cached_gaussian": float(cached_gaussian),
        },
        "python": {"version": version, "state": list(python_state), "gauss_next": gauss_next},
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    """Undo :func:`capture_rng_state`; CUDA states are restored when the device count matches."""
    torch.set_rng_state(state["torch"])
    cuda = state.get("cuda") or []
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    numpy_state = state["numpy"]
    np.random.set_state(
        (
            "MT19937",
            numpy_state["keys"].numpy().astype(np.uint32),
            numpy_state["position"],
            numpy_state["has_gauss"],
            numpy_state["cached_gaussian"],
        )
    )
    python_state = state["python"]
    random.setstate((python_state["version"], tuple(python_state["state"]), python_state["gauss_next"]))
