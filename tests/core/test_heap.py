"""The collector settings of the short commands: no walks over the loaded libraries."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
from pathlib import Path

from xomni_core.heap import long_lived_objects


def test_long_lived_objects_pauses_collection_then_freezes_what_the_block_built() -> None:
    frozen_before = gc.get_freeze_count()
    with long_lived_objects():
        assert not gc.isenabled()
        built = [[index] for index in range(1000)]
    assert gc.isenabled()
    assert gc.get_freeze_count() >= frozen_before + len(built)


def test_long_lived_objects_leaves_a_disabled_collector_disabled() -> None:
    gc.disable()
    try:
        with long_lived_objects():
            pass
        assert not gc.isenabled()
    finally:
        gc.enable()


def test_console_script_freezes_the_heap_before_exit_and_keeps_the_exit_status(tmp_path: Path) -> None:
    probe = textwrap.dedent(
        """
        import atexit, gc, sys
        from xomni_core.cli import run
        atexit.register(lambda: print("FROZEN", gc.get_freeze_count() > 0, file=sys.stderr))
        sys.argv = ["xomni", *sys.argv[1:]]
        run()
        """
    )
    listed = subprocess.run([sys.executable, "-c", probe, "plugins", "list"], capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "FROZEN True" in listed.stderr
    missing = str(tmp_path / "missing.yaml")
    failed = subprocess.run(
        [sys.executable, "-c", probe, "generate", "a red circle", "--config", missing],
        capture_output=True,
        text=True,
    )
    assert failed.returncode == 2
    assert "missing.yaml" in failed.stderr and "FROZEN True" in failed.stderr
