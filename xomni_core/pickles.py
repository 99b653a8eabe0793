"""Reading PyTorch pickle files without ever running pickled code.

:func:`load_tensors_only` wraps ``torch.load(..., weights_only=True)``: only tensors and plain
containers are rebuilt. A file that needs anything else is refused with a
:class:`~xomni_core.errors.CheckpointError` that names the file and the global it asked for
(``the file needs the global 'os.system', which is not allowed``), never with torch's advice to
load it with ``weights_only=False``.
"""

from __future__ import annotations

import os
import pickle
import re
from typing import Any

from .errors import CheckpointError

_GLOBAL = re.compile(r"GLOBAL\s+([A-Za-z_][\w.]*)")
_REASON = re.compile(r"WeightsUnpickler error:\s*(.+)")


def load_tensors_only(path: str | os.PathLike[str], what: str) -> Any:
    """``torch.load(path, weights_only=True)`` on the CPU, every failure a CheckpointError."""
    import torch

    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(
            f"{what} {path} was refused by torch.load(weights_only=True): {refusal_reason(exc)}"
        ) from exc
    except FileNotFoundError as exc:
        raise CheckpointError(f"{what} {path} is missing") from exc
    except (OSError, RuntimeError, EOFError, ValueError, TypeError) as exc:
        raise CheckpointError(f"{what} {path} is not a readable PyTorch file: {_first_line(exc)}") from exc


def refusal_reason(exc: BaseException) -> str:
    """Why the tensors-only unpickler refused a file, in our words."""
    text = re.sub(r"\x1b\[[0-9;]*m", "", str(exc))
    found = _GLOBAL.search(text)
    if found:
        reason = f"the file needs the global '{found.group(1)}', which is not allowed"
    else:
        detail = _REASON.search(text)
        reason = (
            f"it holds something other than tensors and plain containers ({_first_sentence(detail.group(1))})"
            if detail
            else "it holds something other than tensors and plain containers"
        )
    return f"{reason}; only tensors and plain containers are read, pickled objects and code never are"


def _first_sentence(text: str) -> str:
    sentence = text.strip().split(". ")[0].strip().rstrip(".")
    return sentence[:200]


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__
