"""The manifest written next to every exported artefact.

It records what was exported, from what, with which tools, and a hash of each file, so that a
runtime can refuse an artefact built for another GPU or TensorRT version and say how to rebuild.
"""

from __future__ import annotations

import hashlib
import json
import platform
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from xomni_core import CheckpointError, atomic_file

MANIFEST_FILE = "manifest.json"
FORMAT_VERSION = 1


def sha256_of(*paths: Path) -> str:
    """One digest over the files in order (a graph and its external weights)."""
    digest = hashlib.sha256()
    for path in paths:
        with path.open("rb") as handle:
            for block in iter(lambda: handle.read(1 << 20), b""):
                digest.update(block)
    return digest.hexdigest()


def tool_versions() -> dict[str, str]:
    """Versions of the libraries that shape an export."""
    import onnx
    import torch

    versions = {"torch": torch.__version__, "onnx": onnx.__version__, "python": platform.python_version()}
    try:
        import onnxruntime

        versions["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        pass
    from xomni_core import __version__

    versions["xomni"] = __version__
    return versions


def now_utc() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def write_manifest(folder: Path, manifest: dict[str, Any]) -> None:
    with atomic_file(folder / MANIFEST_FILE) as tmp:
        tmp.write_text(json.dumps(manifest, indent=2, sort_keys=False) + "\n")


def listed_files(folder: Path) -> list[str]:
    """Every file under ``folder`` as a sorted POSIX path relative to it (the manifest's ``files``)."""
    return sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())


def foreign_files(folder: Path, *, triton: bool = False) -> list[str]:
    """Files under an existing export ``folder`` that no export wrote (relative paths).

    A slot folder's manifest lists what the export wrote; one without a manifest is foreign
    throughout. A Triton repository holds model folders, each with a ``config.pbtxt``.
    """
    if triton:
        return sorted(p.name for p in folder.iterdir() if not (p.is_dir() and (p / "config.pbtxt").is_file()))
    ours: set[str] = set()
    try:
        manifest = read_manifest(folder)
    except (CheckpointError, ValueError, OSError):
        manifest = {}
    if manifest:
        ours = {MANIFEST_FILE, *map(str, manifest.get("files") or _known_files(manifest))}
    return [name for name in listed_files(folder) if name not in ours and not _is_temporary(name)]


def _known_files(manifest: dict[str, Any]) -> list[str]:
    """What an export whose manifest predates the ``files`` list is known to have written."""
    names = ["xomni_component.json", "parity.json"]
    for entry in (manifest.get("graphs") or {}).values():
        names += [entry.get("file", ""), *entry.get("external_data", [])]
    for engines in ((manifest.get("tensorrt") or {}).get("engines") or {}).values():
        names += [record.get("file", "") for record in engines.values()]
    return names


def _is_temporary(relative: str) -> bool:
    from xomni_core.atomic import is_temporary

    return any(is_temporary(part) for part in relative.split("/"))


def read_manifest(folder: Path) -> dict[str, Any]:
    """The manifest of an exported folder; a clear error when it is missing or not ours."""
    path = Path(folder) / MANIFEST_FILE
    if not path.is_file():
        raise CheckpointError(
            f"{path} is missing: {folder} is not a complete export (run `xomni export` to create it)"
        )
    manifest: dict[str, Any] = json.loads(path.read_text())
    if manifest.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: unknown manifest format {manifest.get('format')!r}")
    return manifest
