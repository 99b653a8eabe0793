"""Startup cost: `xomni plugins list`, `xomni config validate` and whole `xomni generate` runs
against `import torch`.

Runs each command in a fresh interpreter, interleaved round by round so that machine noise
hits all of them alike, and reports the median wall time and peak memory. Two generate runs:
the README's main command (the shipped xomni-nano model, no config, 128 x 128 px), whose image
is then judged by the compositional benchmark, and the tiny random-weight config (64 x 64 px, 4
decoder steps), almost all fixed cost: imports and building components. A third runs the
README command with CPython's default collector behaviour, without the settings of
``xomni_core.heap``. Usage:

    .venv/bin/python benchmarks/startup.py --rounds 10 --json benchmarks/startup.json
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"

CLI = [sys.executable, "-m", "xomni_core.cli"]


PROMPT = "two red circles left of a blue square"
README_COMMAND = f'xomni generate "{PROMPT}"'
DEFAULT_COLLECTOR = "the same, default collector"

#: ``xomni`` with the collector settings of ``xomni_core.heap`` taken out.
DEFAULT_COLLECTOR_CLI = [
    sys.executable,
    "-c",
    "import contextlib, sys\n"
    "import xomni_core.generate_command as command\n"
    "import xomni_core.pipelines.text_to_image as text_to_image\n"
    "from xomni_core.cli import main\n"
    "command.long_lived_objects = text_to_image.long_lived_objects = contextlib.nullcontext\n"
    "sys.exit(main(sys.argv[1:]))",
]


def commands(out: Path) -> dict[str, list[str]]:
    """The commands to time; the generate runs write their images below ``out``."""
    tiny = [*CLI, "generate", PROMPT, "--config", str(CONFIG), "--out", str(out / "tiny"), "--no-progress"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "xomni plugins list": [*CLI, "plugins", "list"],
        "xomni config validate": [*CLI, "config", "validate", str(CONFIG)],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "xomni generate (tiny-random)": tiny,
        README_COMMAND: [*CLI, "generate", PROMPT, "--out", str(out / "nano")],
        DEFAULT_COLLECTOR: [*DEFAULT_COLLECTOR_CLI, "generate", PROMPT, "--out", str(out / "default-gc")],
    }


def judge_readme_image(out: Path) -> list[str]:
    """The benchmark's failed checks for the README command's image (empty: judged correct)."""
    from PIL import Image

    from xomni_core.synthetic import SceneJudge, parse_caption

    with Image.open(out / "nano" / "image-000.png") as image:
        return SceneJudge().judge(image.convert("RGB"), parse_caption(PROMPT)).failures()


def run_once(command: list[str], log: Path) -> tuple[float, float]:
    """Wall seconds and peak resident memory in MiB (``ru_maxrss`` of this child alone) of one
    run of ``command``; its stderr goes to ``log``."""
    start = time.perf_counter()
    pid = os.posix_spawn(
        command[0],
        command,
        os.environ,
        file_actions=[
            (os.POSIX_SPAWN_OPEN, 1, os.devnull, os.O_WRONLY, 0),
            (os.POSIX_SPAWN_OPEN, 2, str(log), os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644),
        ],
    )
    _, status, usage = os.wait4(pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise RuntimeError(f"{' '.join(command)} failed:\n{log.read_text()}")
    return seconds, usage.ru_maxrss / 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        timed = commands(Path(out))
        log = Path(out) / "stderr.log"
        for command in timed.values():  # warm the file cache
            run_once(command, log)
        seconds: dict[str, list[float]] = {name: [] for name in timed}
        peak_mib: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, command in timed.items():
                wall, memory = run_once(command, log)
                seconds[name].append(wall)
                peak_mib[name].append(memory)
        failures = judge_readme_image(Path(out))
    torch_median = statistics.median(seconds['python -c "import torch"'])
    rows = [
        {
            "command": name,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "ratio_to_import_torch": statistics.median(times) / torch_median,
            "median_peak_rss_mib": statistics.median(peak_mib[name]),
        }
        for name, times in seconds.items()
    ]
    print(f"{'command':30} {'median s':>9} {'min s':>7} {'vs import torch':>16} {'peak MiB':>9}")
    for name, times in seconds.items():
        median, memory = statistics.median(times), statistics.median(peak_mib[name])
        print(f"{name:30} {median:9.3f} {min(times):7.3f} {median / torch_median:16.2f} {memory:9.1f}")
    verdict = "correct" if not failures else "wrong: " + "; ".join(failures)
    print(f"{README_COMMAND}: the compositional benchmark judges its image {verdict}")
    if args.json:
        record = {"rounds": args.rounds, "results": rows, "readme_image_failures": failures}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
