"""The Python API against the command line on the same work: 3 prompts through the shipped
xomni-nano pipeline, ``TextToImagePipeline.from_pretrained(...)(prompts)`` against the in-process
part of ``xomni generate`` (``xomni_core.cli.main``).

Each run is a fresh interpreter, the two interleaved round by round so that machine noise hits
both alike; the time is taken inside the child, from before the first xomni import to the last
image (the CLI's run includes writing its PNGs and record). Usage:

    .venv/bin/python benchmarks/api_vs_cli.py --rounds 5 --json benchmarks/api_vs_cli.json
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

PROMPTS = ["two red circles left of a blue square", "a green triangle", "three yellow stars"]

API = """
import json, sys, time
start = time.perf_counter()
from xomni_core.models import shipped_model_dir
from xomni_core.pipelines import TextToImagePipeline
pipe = TextToImagePipeline.from_pretrained(shipped_model_dir())
images = pipe(json.loads(sys.argv[1]), show_progress=False).images
print(json.dumps({"seconds": time.perf_counter() - start, "images": len(images)}))
"""

CLI = """
import json, sys, time, contextlib, io
start = time.perf_counter()
from xomni_core.cli import main
with contextlib.redirect_stdout(io.StringIO()):
    code = main(["generate", *json.loads(sys.argv[1]), "--out", sys.argv[2], "--no-progress"])
assert code == 0
print(json.dumps({"seconds": time.perf_counter() - start, "images": 3}))
"""


def run(script: str, *args: str) -> float:
    done = subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True, check=True)
    seconds: float = json.loads(done.stdout.strip().splitlines()[-1])["seconds"]
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--json", type=Path, help="write results to this file")
    args = parser.parse_args()
    prompts = json.dumps(PROMPTS)
    times: dict[str, list[float]] = {"python API": [], "xomni generate, in process": []}
    with tempfile.TemporaryDirectory() as out:
        run(API, prompts)  # warm the file cache
        for _ in range(args.rounds):
            times["python API"].append(run(API, prompts))
            times["xomni generate, in process"].append(run(CLI, prompts, out))
    print(f"{'3 prompts, xomni-nano 128 px':30} {'median s':>9} {'min s':>7} {'max s':>7}")
    for name, seconds in times.items():
        print(f"{name:30} {statistics.median(seconds):9.3f} {min(seconds):7.3f} {max(seconds):7.3f}")
    ratio = statistics.median(times["python API"]) / statistics.median(times["xomni generate, in process"])
    print(f"API / CLI median: {ratio:.2f}")
    if args.json:
        record = {"rounds": args.rounds, "prompts": PROMPTS, "seconds": times, "ratio_api_to_cli": ratio}
        args.json.write_text(json.dumps(record, indent=2) + "\n")


if __name__ == "__main__":
    main()
