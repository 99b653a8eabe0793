"""Helpers shared by tests: real distributions on disk and the CLI in a child process."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def write_distribution(
    site: Path,
    name: str,
    *,
    entry_points: dict[str, str],
    modules: dict[str, str],
    version: str = "0.1.0",
) -> Path:
    """Install a minimal distribution into ``site``: modules plus a dist-info with entry points."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        path = site / (module.replace(".", "/") + ".py")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir(exist_ok=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[xomni.plugins]\n{lines}")
    return site


def run_xomni(
    *args: str, cwd: Path | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run the CLI in a child process, as a user would."""
    return subprocess.run(
        [sys.executable, "-m", "xomni_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        env={**os.environ, **(env or {})},
        timeout=600,
    )


def run_accelerate_xomni(*args: str, home: Path, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """Run the CLI under ``accelerate launch --multi_gpu`` on ``processes`` CPU processes of one
    thread each (the config's ``runtime.device: cpu``), with ``home`` as HF_HOME so that no user
    accelerate config applies."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    launch = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        str(processes),
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "--main_process_ip",
        "127.0.0.1",
        "--main_process_port",
        str(port),
    ]
    return _run_launched_cli(launch, args, HF_HOME=str(home))


def run_torchrun_xomni(*args: str, processes: int = 2) -> subprocess.CompletedProcess[str]:
    """Run the CLI under ``torchrun`` on ``processes`` CPU processes of one thread each."""
    launch = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        str(processes),
    ]
    return _run_launched_cli(launch, args)


def _run_launched_cli(
    launch: list[str], args: tuple[str, ...], **env: str
) -> subprocess.CompletedProcess[str]:
    """``launch -m xomni_core.cli ARGS`` in the repository, one thread a process."""
    return subprocess.run(
        [*launch, "-m", "xomni_core.cli", *args],
        capture_output=True,
        text=True,
        cwd=REPO,
        env={**os.environ, "OMP_NUM_THREADS": "1", **env},
        timeout=300,
    )
