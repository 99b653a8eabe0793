"""Startup cost: `xomni plugins list`, `xomni config validate` and a whole tiny `xomni generate`
against `import torch`.

Runs each command in a fresh interpreter, interleaved round by round so that machine noise
hits all of them alike, and reports the median wall time. The generate run (random weights,
64 x 64 px, 4 decoder steps) is almost all fixed cost: imports and building components. Usage:

    .venv/bin/python benchmarks/startup.py --rounds 15 --json benchmarks/startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"

CLI = [sys.executable, "-m", "xomni_core.cli"]


def commands(out: Path) -> dict[str, list[str]]:
    """The commands to time; ``generate`` writes its image into ``out``."""
    prompt = "two red circles left of a blue square"
    generate = [*CLI, "generate", prompt, "--config", str(CONFIG), "--out", str(out), "--no-progress"]
    return {
        "python -c pass": [sys.executable, "-c", "pass"],
        "xomni plugins list": [*CLI, "plugins", "list"],
        "xomni config validate": [*CLI, "config", "validate", str(CONFIG)],
        'python -c "import torch"': [sys.executable, "-c", "import torch"],
        "xomni generate (tiny-random)": generate,
    }


def wall_time(command: list[str]) -> float:
    start = time.perf_counter()
    subprocess.run(command, check=True, capture_output=True)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as out:
        timed = commands(Path(out))
        for command in timed.values():  # warm the file cache
            wall_time(command)
        samples: dict[str, list[float]] = {name: [] for name in timed}
        for _ in range(args.rounds):
            for name, command in timed.items():
                samples[name].append(wall_time(command))
    torch_median = statistics.median(samples['python -c "import torch"'])
    rows = [
        {
            "command": name,
            "median_s": statistics.median(times),
            "min_s": min(times),
            "ratio_to_import_torch": statistics.median(times) / torch_median,
        }
        for name, times in samples.items()
    ]
    print(f"{'command':30} {'median s':>9} {'min s':>7} {'vs import torch':>16}")
    for row in rows:
        ratio = row["ratio_to_import_torch"]
        print(f"{row['command']:30} {row['median_s']:9.3f} {row['min_s']:7.3f} {ratio:16.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
