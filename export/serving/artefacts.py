"""The artefacts a pipeline model serves, and the list that proves they are the ones exported.

A pipeline model keeps its exported component folders and runtime config under
``<model>/1/pipeline/``; ``artefacts.json`` beside them lists every file with its size and
sha256. A model refuses to load when a file is missing, changed or unlisted, naming the file.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from xomni_core import CheckpointError

PIPELINE_FOLDER = "pipeline"
LIST_FILE = "artefacts.json"
_CHUNK = 1 << 22


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _files(folder: Path) -> list[str]:
    return sorted(
        path.relative_to(folder).as_posix()
        for path in folder.rglob("*")
        if path.is_file() and path.name != LIST_FILE
    )


def write_artefact_list(folder: Path, digests: dict[tuple[int, ...], str] | None = None) -> None:
    """Record every file under ``folder`` (its size and sha256) in ``folder/artefacts.json``.

    ``digests`` remembers the sha256 of each file by inode, so that hard links shared by several
    models (the backbone of both pipeline models) are read once."""
    digests = {} if digests is None else digests
    entries = {}
    for name in _files(folder):
        stat = (folder / name).stat()
        key = (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns)
        if key not in digests:
            digests[key] = file_sha256(folder / name)
        entries[name] = {"bytes": stat.st_size, "sha256": digests[key]}
    (folder / LIST_FILE).write_text(json.dumps({"files": entries}, indent=1) + "\n")


def verify_artefacts(folder: Path) -> None:
    """Check ``folder`` against its ``artefacts.json``; :class:`CheckpointError` names the first
    file that is missing, of another size or content, or not listed."""
    listing = folder / LIST_FILE
    if not listing.is_file():
        raise CheckpointError(f"{listing} is missing: write the repository again with `xomni export`")
    try:
        entries = json.loads(listing.read_text())["files"]
    except (ValueError, KeyError, TypeError) as exc:
        raise CheckpointError(f"{listing} is not an artefact list ({exc})") from exc
    for name, entry in entries.items():
        path = folder / name
        if not path.is_file():
            raise CheckpointError(f"{path} is missing; the repository no longer matches {listing}")
        if path.stat().st_size != entry["bytes"] or file_sha256(path) != entry["sha256"]:
            raise CheckpointError(
                f"{path} differs from the file exported (size or sha256 in {listing}); "
                "write the repository again"
            )
    unlisted = [name for name in _files(folder) if name not in entries]
    if unlisted:
        raise CheckpointError(
            f"{folder / unlisted[0]} is not in {listing}; remove it or write the repository again"
        )
