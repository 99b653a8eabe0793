"""Pipelines shipped inside the package, ready to run with no download and no config.

``xomni-nano`` is the default: the three reference architectures at laptop size, trained by
``xomni train nano`` on synthetic scenes (``provenance.json`` in its folder holds the command,
the settings, the benchmark it scored and the SHA-256 of every file). Nothing here imports
torch.
"""

from __future__ import annotations

import hashlib
import json
import os
from importlib import resources
from pathlib import Path
from typing import Any

from ..errors import CheckpointError, InputError

DEFAULT_MODEL = "xomni-nano"
SHIPPED_MODELS = (DEFAULT_MODEL,)


def shipped_model_dir(name: str = DEFAULT_MODEL) -> Path:
    """The folder of a shipped pipeline (``pipeline.yaml``, components, ``provenance.json``)."""
    if name not in SHIPPED_MODELS:
        raise InputError(f"unknown shipped model {name!r}; shipped: {', '.join(SHIPPED_MODELS)}")
    folder = Path(str(resources.files(__name__) / name))
    if not (folder / "pipeline.yaml").is_file():
        raise CheckpointError(
            f"the shipped model {name!r} is missing from this installation ({folder}); "
            "reinstall xomni, or pass --config with a pipeline of your own"
        )
    return folder


def default_pipeline_config() -> Path:
    """``pipeline.yaml`` of the default shipped model, what ``xomni generate`` runs without ``--config``."""
    return shipped_model_dir() / "pipeline.yaml"


def provenance(name: str = DEFAULT_MODEL) -> dict[str, Any]:
    """How a shipped model was made and how it scored (its ``provenance.json``)."""
    loaded: dict[str, Any] = json.loads((shipped_model_dir(name) / "provenance.json").read_text())
    return loaded


def hash_files(folder: Path) -> dict[str, str]:
    """SHA-256 of every file below ``folder`` except ``provenance.json``, by relative path."""
    hashes = {}
    for path in sorted(folder.rglob("*")):
        if path.is_file() and path.name != "provenance.json" and "__pycache__" not in path.parts:
            hashes[path.relative_to(folder).as_posix()] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def combined_hash(files: dict[str, str]) -> str:
    """One hash for a whole folder: SHA-256 over the sorted ``path:hash`` lines."""
    lines = "".join(f"{path}:{digest}\n" for path, digest in sorted(files.items()))
    return hashlib.sha256(lines.encode()).hexdigest()


def verify_model_folder(folder: str | os.PathLike[str]) -> str:
    """Check every file of a model folder against its ``provenance.json``; return the combined hash."""
    root = Path(folder)
    recorded = json.loads((root / "provenance.json").read_text())
    expected: dict[str, str] = recorded["sha256"]
    actual = hash_files(root)
    changed = sorted(path for path in set(actual) | set(expected) if actual.get(path) != expected.get(path))
    if changed:
        listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
        raise CheckpointError(f"{root}: {len(changed)} file(s) differ from provenance.json: {listed}")
    digest = combined_hash(actual)
    if digest != recorded["weights_sha256"]:
        raise CheckpointError(f"{root}: combined hash {digest} differs from provenance.json")
    return digest


def verify_shipped_model(name: str = DEFAULT_MODEL) -> str:
    """Check every file of a shipped model against its provenance; return the combined hash."""
    return verify_model_folder(shipped_model_dir(name))
