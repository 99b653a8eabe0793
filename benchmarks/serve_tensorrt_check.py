"""On a machine with an NVIDIA GPU: serve a tiny pipeline's TensorRT engines through Triton.

Exports ``examples/configs/tiny-random.yaml`` with ``--format triton --triton-backend tensorrt``
(engines built on this GPU, GPU instances), starts Triton on the repository, sends a few requests
at once and checks each answer against the same engines run in this process with the same seed
(same tokens, pixels within 1/255). Exits 3 when TensorRT or Triton is not installed. Usage:

    python benchmarks/serve_tensorrt_check.py --out gpu_out/serve_tensorrt
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import sys
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"
MODEL = "xomni_text_to_image"


def main() -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    missing = [
        name for name in ("tensorrt", "pytriton", "tritonclient") if importlib.util.find_spec(name) is None
    ]
    if missing:
        print(f"not installed: {', '.join(missing)} (pip install 'xomni[gpu,serve]')")
        return 3

    import tritonclient.http as httpclient

    from xomni_core.cli import main as xomni
    from xomni_core.pipelines import TextToImagePipeline
    from xomni_export.serving.server import Endpoints, TritonServer

    export = args.out / "export"
    flags = ["--format", "triton", "--triton-backend", "tensorrt", "--instance-kind", "gpu", "--no-progress"]
    start = time.perf_counter()
    if xomni(["export", str(CONFIG), "--out", str(export), *flags, "--force"]) != 0:
        return 1
    print(f"export and engines: {time.perf_counter() - start:.1f} s")
    server = TritonServer(
        export / "triton",
        Endpoints("127.0.0.1", 18600, 18601, 18602),
        models=[MODEL],
        workdir=args.out / "work",
    )
    rows = [("a red circle", 1, 64), ("two blue squares", 2, 64), ("a green tree", 3, 32)]
    with server.running(timeout=600):
        client = httpclient.InferenceServerClient(server.endpoints.http, concurrency=len(rows))
        pending = []
        for prompt, seed, height in rows:
            inputs = []
            for name, value, kind, dtype in (
                ("prompt", prompt.encode(), "BYTES", np.object_),
                ("seed", seed, "INT64", np.int64),
                ("height", height, "INT32", np.int32),
            ):
                tensor = httpclient.InferInput(name, [1, 1], kind)
                tensor.set_data_from_numpy(np.array([[value]], dtype=dtype))
                inputs.append(tensor)
            pending.append(client.async_infer(MODEL, inputs))
        served = [request.get_result() for request in pending]
        client.close()
    runtime = export / "triton" / MODEL / "1" / "pipeline" / "pipeline.yaml"
    offline = TextToImagePipeline.from_config(runtime, overrides=["runtime.device=cuda:0"])
    results = []
    for (prompt, seed, height), answer in zip(rows, served, strict=True):
        twin = offline(prompt, seeds=[seed], height=height, show_progress=False)
        same_tokens = answer.as_numpy("tokens")[0].tolist() == twin.tokens.ids[0].reshape(-1).tolist()
        difference = int(
            np.abs(answer.as_numpy("image")[0].astype(int) - np.asarray(twin.images[0], dtype=int)).max()
        )
        results.append(
            {"prompt": prompt, "seed": seed, "same_tokens": same_tokens, "max_pixel_difference": difference}
        )
    print(json.dumps(results, indent=2))
    (args.out / "serve_tensorrt.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0 if all(r["same_tokens"] and r["max_pixel_difference"] <= 1 for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
