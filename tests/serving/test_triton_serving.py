"""A real Triton Inference Server serving a tiny exported pipeline, spoken to over HTTP and gRPC."""

from __future__ import annotations

import io
import json
import queue
import shutil
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from serving_support import start_server

from xomni_core import CheckpointError, XomniError
from xomni_core.cli import main
from xomni_export.serving.server import free_ports

httpclient = pytest.importorskip("tritonclient.http")
grpcclient = pytest.importorskip("tritonclient.grpc")
from tritonclient.utils import InferenceServerException  # noqa: E402

MODEL = "xomni_text_to_image"
DATATYPES = {
    "prompt": "BYTES",
    "height": "INT32",
    "width": "INT32",
    "seed": "INT64",
    "temperature": "FP32",
    "top_k": "INT32",
    "min_p": "FP32",
    "num_inference_steps": "INT32",
    "noise_scale": "FP32",
}
FLAGS = {
    "height": "--height",
    "width": "--width",
    "seed": "--seed",
    "temperature": "--temperature",
    "top_k": "--top-k",
    "min_p": "--min-p",
    "num_inference_steps": "--steps",
    "noise_scale": "--noise-scale",
}


def request_inputs(module: Any, row: dict[str, Any]) -> list[Any]:
    """One request of one row, every value typed as the model declares it."""
    inputs = []
    for name, value in row.items():
        kind = DATATYPES[name]
        array = (
            np.array([[value.encode()]], dtype=np.object_)
            if kind == "BYTES"
            else np.array([[value]], dtype={"INT32": np.int32, "INT64": np.int64, "FP32": np.float32}[kind])
        )
        tensor = module.InferInput(name, [1, 1], kind)
        tensor.set_data_from_numpy(array)
        inputs.append(tensor)
    return inputs


def offline(export: Path, out: Path, row: dict[str, Any]) -> tuple[list[int], np.ndarray]:
    """The same image made by `xomni generate` on the exported pipeline: its tokens and pixels."""
    args = [
        "generate",
        row["prompt"],
        "--config",
        str(export / "pipeline.onnxruntime.yaml"),
        "--out",
        str(out),
    ]
    for name, flag in FLAGS.items():
        if name in row:
            args += [flag, str(row[name])]
    assert main([*args, "--no-progress"]) == 0
    record = json.loads((out / "generation.json").read_text())
    tokens = record["tokens"][0]
    return tokens, np.asarray(Image.open(out / record["images"][0]).convert("RGB"))


def assert_same_image(result: Any, expected: tuple[list[int], np.ndarray]) -> None:
    tokens, pixels = expected
    assert result.as_numpy("tokens")[0].tolist() == tokens
    served = result.as_numpy("image")[0]
    assert served.shape == pixels.shape
    assert np.abs(served.astype(int) - pixels.astype(int)).max() <= 1  # within 1/255
    png = np.asarray(Image.open(io.BytesIO(result.as_numpy("png")[0, 0])).convert("RGB"))
    assert np.array_equal(png, served)


def test_an_http_request_gets_the_image_xomni_generate_makes(
    triton: Any, tiny_export: Path, tmp_path: Path
) -> None:
    row = {"prompt": "a red circle above a tree", "seed": 7, "height": 64, "width": 32}
    client = httpclient.InferenceServerClient(triton.endpoints.http)
    result = client.infer(MODEL, request_inputs(httpclient, row))
    client.close()
    assert_same_image(result, offline(tiny_export, tmp_path, row))
    settings = json.loads(result.as_numpy("settings")[0, 0])
    assert settings["seed"] == 7 and (settings["height_px"], settings["width_px"]) == (64, 32)
    assert settings["num_inference_steps"] == 4  # the pipeline's default, as nothing was asked


def test_concurrent_grpc_requests_of_mixed_sizes_and_settings_are_batched_and_never_mixed_up(
    triton: Any, tiny_export: Path, tmp_path: Path
) -> None:
    rows = [
        {"prompt": "a red circle", "seed": 1},
        {"prompt": "two blue squares left of a tree", "seed": 2},
        {"prompt": "a red circle", "seed": 3, "height": 32, "width": 64},
        {"prompt": "a green triangle", "seed": 4, "temperature": 0.7, "top_k": 20},
        {"prompt": "a yellow star", "seed": 5},
        {"prompt": "a red circle", "seed": 6, "num_inference_steps": 2, "noise_scale": 0.5},
        {"prompt": "a purple moon", "seed": 1, "min_p": 0.1},
    ]
    client = grpcclient.InferenceServerClient(triton.endpoints.grpc)
    before = batch_counts(client)
    answers: queue.Queue[tuple[int, Any, Any]] = queue.Queue()
    for index, row in enumerate(rows):
        client.async_infer(
            MODEL,
            request_inputs(grpcclient, row),
            lambda result, error, i=index: answers.put((i, result, error)),
        )
    results: dict[int, Any] = {}
    for _ in rows:
        index, result, error = answers.get(timeout=300)
        assert error is None, error
        results[index] = result
    batched = {size: count - before.get(size, 0) for size, count in batch_counts(client).items()}
    client.close()
    assert sum(size * count for size, count in batched.items()) == len(rows)
    assert max(size for size, count in batched.items() if count) > 1  # the batcher grouped requests
    for index, row in enumerate(rows):
        assert_same_image(results[index], offline(tiny_export, tmp_path / str(index), row))


def batch_counts(client: Any) -> dict[int, int]:
    """How many executions the model ran at each batch size (Triton's own statistics)."""
    stats = client.get_inference_statistics(MODEL, as_json=True)["model_stats"][0]
    return {
        int(entry["batch_size"]): int(entry["compute_infer"].get("count", 0))
        for entry in stats.get("batch_stats", [])
    }


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"prompt": "   "}, "input 'prompt' is empty"),
        ({"prompt": "a red circle", "height": 60}, "height=60 is not a positive multiple of 16"),
        ({"prompt": "a red circle", "height": 2048, "width": 2048}, "ask for a smaller image"),
        ({"prompt": "word " * 800}, "exceeds the backbone's context"),
        ({"prompt": "a red circle", "temperature": -1.0}, "input temperature"),
        ({"prompt": "a red circle", "num_inference_steps": 0}, "input num_inference_steps"),
        ({"prompt": "a red circle", "seed": -3}, "input 'seed' must be from 0"),
    ],
)
def test_a_bad_request_gets_a_400_naming_the_input_and_the_next_request_succeeds(
    triton: Any, row: dict[str, Any], message: str
) -> None:
    client = httpclient.InferenceServerClient(triton.endpoints.http)
    with pytest.raises(InferenceServerException) as refused:
        client.infer(MODEL, request_inputs(httpclient, row))
    assert refused.value.status() == "400"
    assert message in refused.value.message()
    good = client.infer(MODEL, request_inputs(httpclient, {"prompt": "a red circle", "seed": 0}))
    assert good.as_numpy("image").shape == (1, 64, 64, 3)
    client.close()


def test_an_unknown_input_is_refused_by_the_server(triton: Any) -> None:
    client = httpclient.InferenceServerClient(triton.endpoints.http)
    inputs = request_inputs(httpclient, {"prompt": "a red circle"})
    extra = httpclient.InferInput("colour", [1, 1], "INT32")
    extra.set_data_from_numpy(np.array([[1]], dtype=np.int32))
    with pytest.raises(InferenceServerException, match="colour"):
        client.infer(MODEL, [*inputs, extra])
    client.close()


def test_the_understanding_model_answers_with_text(triton: Any) -> None:
    client = httpclient.InferenceServerClient(triton.endpoints.http)
    image = httpclient.InferInput("image", [1, 48, 64, 3], "UINT8")
    image.set_data_from_numpy(np.full((1, 48, 64, 3), 200, dtype=np.uint8))
    question = httpclient.InferInput("question", [1, 1], "BYTES")
    question.set_data_from_numpy(np.array([[b"what is drawn?"]], dtype=np.object_))
    budget = httpclient.InferInput("max_new_tokens", [1, 1], "INT32")
    budget.set_data_from_numpy(np.array([[4]], dtype=np.int32))
    result = client.infer("xomni_understanding", [image, question, budget])
    assert isinstance(result.as_numpy("text")[0, 0], bytes)
    empty = httpclient.InferInput("question", [1, 1], "BYTES")
    empty.set_data_from_numpy(np.array([[b""]], dtype=np.object_))
    with pytest.raises(InferenceServerException, match="input 'question' is empty"):
        client.infer("xomni_understanding", [image, empty])
    client.close()


def test_a_killed_server_fails_its_clients_fast_and_a_restarted_one_serves(
    repository: Path, tmp_path: Path
) -> None:
    ports = free_ports(3)
    server: Any = start_server(repository, tmp_path / "first", ports)
    errors: queue.Queue[BaseException | None] = queue.Queue()

    def client_loop() -> None:
        client = grpcclient.InferenceServerClient(server.endpoints.grpc)
        try:
            while True:
                client.infer(
                    MODEL, request_inputs(grpcclient, {"prompt": "a red circle"}), client_timeout=120
                )
        except InferenceServerException as exc:
            errors.put(exc)
        finally:
            client.close()

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(3)]
    for thread in threads:
        thread.start()
    time.sleep(2.0)
    killed = time.monotonic()
    server.kill()
    for _ in threads:
        assert isinstance(errors.get(timeout=30), InferenceServerException)
    assert time.monotonic() - killed < 30  # no client hangs on a dead server
    restarted: Any = start_server(repository, tmp_path / "second", ports)
    try:
        client = httpclient.InferenceServerClient(restarted.endpoints.http)
        assert (
            client.infer(MODEL, request_inputs(httpclient, {"prompt": "a red circle"}))
            .as_numpy("image")
            .shape[0]
            == 1
        )
        client.close()
    finally:
        restarted.stop()


def test_a_repository_whose_artefacts_changed_is_refused_at_load_naming_the_file(
    repository: Path, tmp_path: Path
) -> None:
    tampered = tmp_path / "repository"
    shutil.copytree(repository, tampered)
    weights = tampered / MODEL / "1" / "pipeline" / "decoder" / "weights.bin"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0xFF
    weights.unlink()  # the copy may share its inode with the original: write a new file
    weights.write_bytes(bytes(data))
    with pytest.raises(XomniError, match=r"decoder/weights\.bin differs from the file exported"):
        server: Any = start_server(tampered, tmp_path / "work")
        server.stop()


def test_an_artefact_list_names_a_missing_or_unlisted_file(repository: Path, tmp_path: Path) -> None:
    from xomni_export.serving.artefacts import verify_artefacts

    folder = tmp_path / "pipeline"
    shutil.copytree(repository / MODEL / "1" / "pipeline", folder)
    verify_artefacts(folder)
    (folder / "backbone" / "stray.txt").write_text("?")
    with pytest.raises(CheckpointError, match=r"stray\.txt is not in"):
        verify_artefacts(folder)
    (folder / "backbone" / "stray.txt").unlink()
    (folder / "tokenizer" / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match=r"tokenizer/manifest\.json is missing"):
        verify_artefacts(folder)
