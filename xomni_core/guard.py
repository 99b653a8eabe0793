"""Running a plugin's import so that it can neither end, stall nor garble the command.

:func:`guarded` installs, for the length of a discovery, an ``os._exit`` that raises inside
guarded calls and a standard output that sends their writes to standard error (so ``--json``
output stays valid). :func:`run_guarded` runs one call in a daemon thread and waits a bounded
time for it. Signals are delivered to the main thread only, so a ``KeyboardInterrupt`` raised
in the guarded thread is the plugin's own doing, while a real Ctrl-C interrupts the wait in
the main thread and stops the command as usual.

A call past its time limit is abandoned, not stopped: its thread runs on until the process
ends, without the guards once the discovery is over.
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, NoReturn, TypeVar

from .errors import PluginError
from .settings import positive_number_from_env

TIMEOUT_ENV = "XOMNI_PLUGIN_IMPORT_TIMEOUT"
DEFAULT_TIMEOUT_S = 10.0

T = TypeVar("T")

_state = threading.local()


class Abandoned(Exception):
    """A guarded call ended the way no import should: an exit, an interrupt or a time-out."""


class _ExitCalled(BaseException):
    """Raised in place of ``os._exit`` inside a guarded call."""

    def __init__(self, code: int) -> None:
        super().__init__(code)
        self.code = code


def import_timeout_s(environ: Mapping[str, str] | None = None) -> float:
    """The time limit of one plugin import: ``XOMNI_PLUGIN_IMPORT_TIMEOUT`` seconds, or 10."""
    value = positive_number_from_env(TIMEOUT_ENV, "seconds", PluginError, environ)
    return DEFAULT_TIMEOUT_S if value is None else value


@contextmanager
def guarded() -> Iterator[None]:
    """Install the guards of :func:`run_guarded` for the block; other threads are unaffected."""
    real_exit = os._exit
    real_stdout = sys.stdout

    def exit_guard(status: int) -> NoReturn:
        if getattr(_state, "active", False):
            _state.exit_code = status
            raise _ExitCalled(status)
        real_exit(status)

    os._exit = exit_guard
    if real_stdout is not None:
        sys.stdout = _RoutedStdout(real_stdout)
    try:
        yield
    finally:
        os._exit = real_exit
        sys.stdout = real_stdout


def run_guarded(call: Callable[[], T], *, timeout_s: float, activity: str = "importing") -> T:
    """``call()`` in a daemon thread: its value, or its exception (an :class:`Exception`).

    Raises :class:`Abandoned` when the call exits the interpreter, raises a ``BaseException``
    such as ``KeyboardInterrupt``, or has not returned after ``timeout_s`` seconds.
    """
    outcome: list[tuple[str, Any]] = []

    def target() -> None:
        _state.active = True
        _state.exit_code = None
        try:
            value = call()
        except _ExitCalled as exc:
            outcome.append(("abandoned", f"called os._exit({exc.code!r}) while {activity}"))
        except SystemExit as exc:
            code = "" if exc.code is None else repr(exc.code)
            outcome.append(("abandoned", f"called sys.exit({code}) while {activity}"))
        except Exception as exc:
            outcome.append(("error", exc))
        except BaseException as exc:
            outcome.append(("abandoned", f"raised {type(exc).__name__} while {activity}"))
        else:
            if _state.exit_code is not None:  # the plugin swallowed the exception of os._exit
                outcome.append(("abandoned", f"called os._exit({_state.exit_code!r}) while {activity}"))
            else:
                outcome.append(("value", value))

    thread = threading.Thread(target=target, name="xomni-plugin-import", daemon=True)
    thread.start()
    thread.join(timeout_s)
    if not outcome:
        noun = "import" if activity == "importing" else activity
        raise Abandoned(f"{noun} did not finish within {timeout_s:g} s")
    kind, payload = outcome[0]
    if kind == "abandoned":
        raise Abandoned(payload)
    if kind == "error":
        raise payload
    result: T = payload
    return result


class _RoutedStdout:
    """Standard output for the main program, standard error for guarded calls."""

    def __init__(self, stdout: Any) -> None:
        self._stdout = stdout

    def _target(self) -> Any:
        if getattr(_state, "active", False):
            return sys.stderr if sys.stderr is not None else self._stdout
        return self._stdout

    def write(self, text: str) -> int:
        written: int = self._target().write(text)
        return written

    def flush(self) -> None:
        self._target().flush()

    def close(self) -> None:
        if not getattr(_state, "active", False):  # a plugin closing "stdout" would close stderr
            self._stdout.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._target(), name)
