"""Load test of ``xomni serve``: throughput and latency of dynamic batching against one at a time.

Starts ``xomni serve`` on the shipped xomni-nano (exported once into ``--cache``), then, in
alternating rounds, sends the same requests (``--requests`` prompts of the synthetic eval split,
seed ``i`` for prompt ``i``) two ways over Triton's gRPC endpoint:

* one at a time: a single client waits for each answer before sending the next;
* concurrent: ``--clients`` clients, each sending its share back to back; Triton's dynamic batcher
  groups what arrives together and the pipeline model samples and decodes each group as a batch.

It reports images/s of both, their ratio per round (the rounds interleave, so a noisy neighbour
hits both alike), latency percentiles, failed requests, and then checks every served image
against its offline twin, made in this process from the same export with the same seed (same
tokens; pixels within 1/255). Usage:

    .venv/bin/python benchmarks/serve_load.py --rounds 3 --json benchmarks/serve_load.json
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import queue
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

MODEL = "xomni_text_to_image"


def start_serve(args: argparse.Namespace, workdir: Path) -> tuple[subprocess.Popen[str], int]:
    from xomni_export.serving.server import free_ports

    http, grpc, metrics = free_ports(3)
    command = [
        sys.executable, "-m", "xomni_core.cli", "serve", "--no-progress", "--openai-port", "0",
        "--http-port", str(http), "--grpc-port", str(grpc), "--metrics-port", str(metrics),
        "--max-batch-size", str(args.max_batch_size), "--max-queue-delay-us", str(args.max_queue_delay_us),
        "--instances", str(args.instances), "--workdir", str(workdir),
    ]  # fmt: skip
    if args.threads:
        command += ["--threads", str(args.threads)]
    env = {**os.environ, "XOMNI_CACHE": str(args.cache)}
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    assert process.stdout is not None
    lines = []
    while True:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("ready") or process.poll() is not None:
            break
    if not lines[-1].startswith("ready"):
        raise SystemExit("xomni serve did not start:\n" + "".join(lines))
    print("".join(lines), end="", flush=True)
    return process, grpc


def prompts(count: int) -> list[str]:
    from xomni_core.synthetic import sample_scenes

    return [scene.caption for scene in sample_scenes("eval", count, seed=0, width_px=128, height_px=128)]


def send(client: Any, module: Any, prompt: str, seed: int) -> tuple[float, Any]:
    text = module.InferInput("prompt", [1, 1], "BYTES")
    text.set_data_from_numpy(np.array([[prompt.encode()]], dtype=np.object_))
    number = module.InferInput("seed", [1, 1], "INT64")
    number.set_data_from_numpy(np.array([[seed]], dtype=np.int64))
    outputs = [module.InferRequestedOutput("png"), module.InferRequestedOutput("tokens")]
    start = time.perf_counter()
    result = client.infer(MODEL, [text, number], outputs=outputs, client_timeout=600)
    return time.perf_counter() - start, result


def run_phase(url: str, work: list[tuple[int, str]], clients: int) -> dict[str, Any]:
    """Send ``work`` from ``clients`` threads (each its own connection); latencies and answers."""
    import tritonclient.grpc as grpcclient
    from tritonclient.utils import InferenceServerException

    todo: queue.Queue[tuple[int, str]] = queue.Queue()
    for item in work:
        todo.put(item)
    latencies: list[float] = []
    answers: dict[int, Any] = {}
    failures: list[str] = []
    lock = threading.Lock()

    def client_loop() -> None:
        client = grpcclient.InferenceServerClient(url)
        try:
            while True:
                try:
                    index, prompt = todo.get_nowait()
                except queue.Empty:
                    return
                try:
                    seconds, result = send(client, grpcclient, prompt, index)
                except InferenceServerException as exc:
                    with lock:
                        failures.append(f"{index}: {exc}")
                    continue
                with lock:
                    latencies.append(seconds)
                    answers[index] = (result.as_numpy("png")[0, 0], result.as_numpy("tokens")[0].tolist())
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop) for _ in range(clients)]
    start = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    wall = time.perf_counter() - start
    return {"wall_s": wall, "latencies": latencies, "answers": answers, "failures": failures}


def percentile(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


def offline_twins(export: Path, work: list[tuple[int, str]]) -> dict[int, tuple[np.ndarray, list[int]]]:
    """Every image made in this process from the same export, one at a time, seed ``i``."""
    from xomni_core.pipelines import TextToImagePipeline

    pipeline = TextToImagePipeline.from_config(export / "pipeline.onnxruntime.yaml")
    twins = {}
    for index, prompt in work:
        result = pipeline(prompt, seeds=[index], show_progress=False)
        pixels = np.asarray(result.images[0].convert("RGB"))
        twins[index] = (pixels, result.tokens.ids[0].reshape(-1).tolist())
    return twins


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--requests", type=int, default=64)
    parser.add_argument("--clients", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--max-batch-size", type=int, default=8)
    parser.add_argument("--max-queue-delay-us", type=int, default=20_000)
    parser.add_argument("--instances", type=int, default=1, help="model instances")
    parser.add_argument("--threads", type=int, help="threads per instance (default: runtime.threads)")
    parser.add_argument("--cache", type=Path, default=Path(tempfile.gettempdir()) / "xomni-serve-load-cache")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args()

    from PIL import Image

    from xomni_export.serving.command import exported_pipeline

    os.environ["XOMNI_CACHE"] = str(args.cache)
    export = exported_pipeline(None, [], show_progress=False)
    work = list(enumerate(prompts(args.requests)))
    workdir = Path(tempfile.mkdtemp(prefix="serve-load-"))
    process, grpc_port = start_serve(args, workdir)
    url = f"127.0.0.1:{grpc_port}"
    rounds = []
    try:
        run_phase(url, work[:2], 1)  # warm-up: first calls pay for lazy initialisation
        for number in range(args.rounds):
            one = run_phase(url, work, 1)
            many = run_phase(url, work, args.clients)
            rounds.append({"one_at_a_time": one, "concurrent": many})
            ratio = one["wall_s"] / many["wall_s"]
            print(
                f"round {number + 1}: one at a time {len(work) / one['wall_s']:.2f} images/s, "
                f"{args.clients} clients {len(work) / many['wall_s']:.2f} images/s, ratio {ratio:.2f}",
                flush=True,
            )
    finally:
        process.terminate()
        process.wait(timeout=120)
        shutil.rmtree(workdir, ignore_errors=True)

    twins = offline_twins(export, work)
    mismatched, failed, lost = [], 0, 0
    for record in rounds:
        for phase in record.values():
            failed += len(phase["failures"])
            lost += len(work) - len(phase["answers"]) - len(phase["failures"])
            for index, (png, tokens) in phase["answers"].items():
                pixels = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
                twin_pixels, twin_tokens = twins[index]
                if tokens != twin_tokens or np.abs(pixels.astype(int) - twin_pixels.astype(int)).max() > 1:
                    mismatched.append(index)

    def summary(phase: str) -> dict[str, float]:
        latencies = [s for record in rounds for s in record[phase]["latencies"]]
        rates = [len(work) / record[phase]["wall_s"] for record in rounds]
        return {
            "images_per_s_median": statistics.median(rates),
            "latency_p50_s": percentile(latencies, 50),
            "latency_p99_s": percentile(latencies, 99),
        }

    ratios = [r["one_at_a_time"]["wall_s"] / r["concurrent"]["wall_s"] for r in rounds]
    report = {
        "command": " ".join(["benchmarks/serve_load.py", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "settings": {
            "requests": len(work),
            "clients": args.clients,
            "rounds": args.rounds,
            "max_batch_size": args.max_batch_size,
            "max_queue_delay_us": args.max_queue_delay_us,
            "instances": args.instances,
            "threads": args.threads,
        },
        "one_at_a_time": summary("one_at_a_time"),
        "concurrent": summary("concurrent"),
        "ratio_per_round": ratios,
        "ratio_median": statistics.median(ratios),
        "failed": failed,
        "lost": lost,
        "mismatched_with_offline": sorted(set(mismatched)),
    }
    print(json.dumps({key: value for key, value in report.items() if key != "machine"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
