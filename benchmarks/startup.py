"""Startup cost: `xomni plugins list` and `xomni config validate` against `import torch`.

Runs each command in a fresh interpreter, interleaved round by round so that machine noise
hits all of them alike, and reports the median wall time. Usage:

    .venv/bin/python benchmarks/startup.py --rounds 15 --json benchmarks/startup.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"

COMMANDS = {
    "python -c pass": [sys.executable, "-c", "pass"],
    "xomni plugins list": [sys.executable, "-m", "xomni_core.cli", "plugins", "list"],
    "xomni config validate": [sys.executable, "-m", "xomni_core.cli", "config", "validate", str(CONFIG)],
    'python -c "import torch"': [sys.executable, "-c", "import torch"],
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
    for command in COMMANDS.values():  # warm the file cache
        wall_time(command)
    samples: dict[str, list[float]] = {name: [] for name in COMMANDS}
    for _ in range(args.rounds):
        for name, command in COMMANDS.items():
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
    print(f"{'command':28} {'median s':>9} {'min s':>7} {'vs import torch':>16}")
    for row in rows:
        ratio = row["ratio_to_import_torch"]
        print(f"{row['command']:28} {row['median_s']:9.3f} {row['min_s']:7.3f} {ratio:16.2f}")
    if args.json:
        args.json.write_text(json.dumps({"rounds": args.rounds, "results": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
