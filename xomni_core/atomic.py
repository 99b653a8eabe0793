"""Atomic writes: a file or folder appears complete under its final name, or not at all.

Temporaries live beside their target as hidden ``.NAME.xomni-PID-XXXX.tmp`` (or ``.old``)
entries, where ``PID`` is the writing process. A process killed mid-write leaves its temporary
behind; the next write of the same name (or :func:`remove_stale_temporaries`) removes those
whose process is gone. Entries of live processes, of other users, and any name outside this
pattern are never touched.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_TEMPORARY = re.compile(r"^\.(?P<name>.+)\.xomni-(?P<pid>\d+)-[A-Za-z0-9_]+\.(?:tmp|old)$")
_RENAME_EXCHANGE = 2


def temporary_prefix(name: str) -> str:
    """The prefix of this process's temporaries for an entry called ``name``."""
    return f".{name}.xomni-{os.getpid()}-"


@contextlib.contextmanager
def atomic_file(path: str | os.PathLike[str], *, overwrite: bool = True) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it onto ``path`` when the block succeeds.

    With ``overwrite=False`` an existing ``path`` is never replaced: :class:`FileExistsError`
    is raised instead (and the temporary removed), even when another process wins the race.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    fd, tmp_name = tempfile.mkstemp(prefix=temporary_prefix(target.name), suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        os.chmod(tmp, 0o666 & ~current_umask())  # mkstemp creates 0600; give the usual permissions
        if overwrite:
            os.replace(tmp, target)
        else:
            _link_no_replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_directory(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield an empty temporary folder beside ``path``; it replaces ``path`` when the block succeeds.

    An existing folder at ``path`` is only removed once the new one is complete; the two are
    swapped in one step where the system allows it.
    """
    target = Path(path)
    tmp = make_temporary_directory(target)
    try:
        yield tmp
        os.chmod(tmp, 0o777 & ~current_umask())
        swap_into_place(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def make_temporary_directory(target: Path) -> Path:
    """An empty temporary folder beside ``target``, after removing stale ones of killed runs."""
    target.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(target.parent, target.name)
    return Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), suffix=".tmp", dir=target.parent))


def swap_into_place(new: Path, target: Path) -> None:
    """Put ``new`` at ``target``; whatever was at ``target`` ends up at ``new`` (or is removed).

    ``new`` and ``target`` must be on the same filesystem. On Linux the swap is a single
    ``renameat2(RENAME_EXCHANGE)``, so a kill at any moment leaves either folder whole.
    """
    if not os.path.lexists(target):
        os.replace(new, target)
        return
    if _exchange(new, target):
        return
    old = Path(tempfile.mkdtemp(prefix=temporary_prefix(target.name), suffix=".old", dir=target.parent))
    try:
        os.replace(target, old / target.name)
        os.replace(new, target)
    finally:
        shutil.rmtree(old, ignore_errors=True)


def _link_no_replace(source: Path, target: Path) -> None:
    """Give ``source``'s file the name ``target`` unless that exists (FileExistsError)."""
    try:
        os.link(source, target)
    except FileExistsError:
        raise
    except OSError:  # no hard links here: check, then rename (a narrow race remains)
        if os.path.lexists(target):
            raise FileExistsError(errno.EEXIST, os.strerror(errno.EEXIST), str(target)) from None
        os.replace(source, target)


def remove_stale_temporaries(folder: str | os.PathLike[str], name: str | None = None) -> list[Path]:
    """Remove temporaries in ``folder`` (of entry ``name``, or of any entry) whose writing process
    no longer runs; returns what was removed. Others' files and live writers' files are kept."""
    root = Path(folder)
    removed: list[Path] = []
    try:
        entries = list(os.scandir(root))
    except OSError:
        return removed
    uid = os.getuid() if hasattr(os, "getuid") else None
    for entry in entries:
        match = _TEMPORARY.match(entry.name)
        if not match or (name is not None and match.group("name") != name):
            continue
        try:
            if uid is not None and entry.stat(follow_symlinks=False).st_uid != uid:
                continue
        except OSError:
            continue
        if process_alive(int(match.group("pid"))):
            continue
        path = Path(entry.path)
        if entry.is_dir(follow_symlinks=False):
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed.append(path)
    return removed


def is_temporary(name: str) -> bool:
    """Whether ``name`` is the name of one of our temporaries."""
    return _TEMPORARY.match(name) is not None


def process_alive(pid: int) -> bool:
    """Whether a process ``pid`` exists (one of another user counts as alive)."""
    if pid <= 0:
        return False
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return True
    return True


def current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths with ``renameat2``; ``False`` where the system cannot."""
    rename = _renameat2()
    if rename is None:
        return False
    import ctypes

    at_cwd = -100
    if rename(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(code, os.strerror(code), str(b))


@functools.cache
def _renameat2() -> Any:
    """libc's ``renameat2`` (Linux, glibc 2.28+), or ``None``."""
    if os.name != "posix":
        return None
    import ctypes

    try:
        function = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):
        return None
    function.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    function.restype = ctypes.c_int
    return function
