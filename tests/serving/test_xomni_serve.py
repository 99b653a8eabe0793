"""`xomni serve` started as a user starts it, driven with the official openai client."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import run_xomni

from xomni_core import XomniError
from xomni_core.cli import main
from xomni_export.serving.server import free_ports

openai = pytest.importorskip("openai")


@pytest.fixture(scope="module")
def served(repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    http, grpc, metrics, front = free_ports(4)
    workdir = tmp_path_factory.mktemp("serve")
    command = [sys.executable, "-m", "xomni_core.cli", "serve", "--repository", str(repository)]
    ports = ["--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics, "--openai-port", front]
    process = subprocess.Popen(
        [*command, *map(str, ports), "--workdir", str(workdir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines = []
    deadline = time.monotonic() + 300
    assert process.stdout is not None
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        lines.append(line)
        if line.startswith("ready") or process.poll() is not None:
            break
    assert lines[-1].startswith("ready"), "".join(lines)
    yield {"process": process, "output": "".join(lines), "ports": (http, grpc, metrics, front)}
    if process.poll() is None:
        process.kill()
        process.wait()


def client(served: dict[str, Any]) -> Any:
    return openai.OpenAI(
        base_url=f"http://127.0.0.1:{served['ports'][3]}/v1", api_key="unused", max_retries=0
    )


def test_serve_prints_the_urls_it_serves(served: dict[str, Any]) -> None:
    http, grpc, _metrics, front = served["ports"]
    assert f"http://127.0.0.1:{http}" in served["output"]
    assert f"127.0.0.1:{grpc}" in served["output"]
    assert f"http://127.0.0.1:{front}/v1" in served["output"]


def test_the_openai_client_gets_the_images_xomni_generate_makes(
    served: dict[str, Any], tiny_export: Path, tmp_path: Path
) -> None:
    prompt = "a red circle above a tree"
    answer = client(served).images.generate(
        prompt=prompt, n=2, size="32x64", response_format="b64_json", extra_body={"seed": 5}
    )
    assert [item.model_extra["seed"] for item in answer.data] == [5, 6]
    config = str(tiny_export / "pipeline.onnxruntime.yaml")
    flags = ["--height", "64", "--width", "32", "--no-progress", "--out", str(tmp_path)]
    assert main(["generate", prompt, prompt, "--config", config, "--seed", "5", *flags]) == 0
    for index, item in enumerate(answer.data):
        served_pixels = np.asarray(Image.open(io.BytesIO(base64.b64decode(item.b64_json))).convert("RGB"))
        offline = np.asarray(Image.open(tmp_path / f"image-{index:03d}.png").convert("RGB"))
        assert served_pixels.shape == (64, 32, 3)
        assert np.abs(served_pixels.astype(int) - offline.astype(int)).max() <= 1


@pytest.mark.parametrize(
    ("request_args", "status", "message"),
    [
        ({"prompt": "a red circle", "size": "30x64"}, 400, "width=30 is not a positive multiple of 16"),
        ({"prompt": "a red circle", "size": "large"}, 400, "size"),
        ({"prompt": " "}, 400, "prompt: empty"),
        ({"prompt": "a red circle", "n": 99}, 400, "n:"),
        ({"prompt": "a red circle", "response_format": "url"}, 400, "response_format"),
        ({"prompt": "a red circle", "extra_body": {"colour": "red"}}, 400, "colour: unknown field"),
        ({"prompt": "a red circle", "model": "dall-e-3"}, 404, "not served here"),
        ({"prompt": "a red circle", "size": "4096x4096"}, 400, "ask for a smaller image"),
    ],
)
def test_a_bad_request_gets_a_clear_4xx_and_the_next_one_succeeds(
    served: dict[str, Any], request_args: dict[str, Any], status: int, message: str
) -> None:
    images = client(served).images
    with pytest.raises(openai.APIStatusError) as refused:
        images.generate(**request_args)
    assert refused.value.status_code == status
    assert message in refused.value.message
    assert len(images.generate(prompt="a red circle", extra_body={"seed": 1}).data) == 1


def test_a_body_over_the_cap_is_refused_before_it_is_read(served: dict[str, Any]) -> None:
    url = f"http://127.0.0.1:{served['ports'][3]}/v1/images/generations"
    body = json.dumps({"prompt": "x" * 200_000}).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as refused:
        urllib.request.urlopen(request, timeout=30)
    assert refused.value.code == 413
    assert "at most" in json.loads(refused.value.read())["error"]["message"]


def test_sigterm_stops_the_front_and_triton(served: dict[str, Any]) -> None:
    process = served["process"]
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    for port in served["ports"]:
        with socket.socket() as probe:
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # closed connections may linger
            probe.bind(("127.0.0.1", port))  # nobody listens on any port any more


def test_serve_exits_1_when_triton_dies_so_that_a_supervisor_restarts_it(
    repository: Path, tmp_path: Path
) -> None:
    http, grpc, metrics = free_ports(3)
    command = [sys.executable, "-m", "xomni_core.cli", "serve", "--repository", str(repository)]
    ports = ["--http-port", http, "--grpc-port", grpc, "--metrics-port", metrics, "--openai-port", 0]
    process = subprocess.Popen(
        [*command, *map(str, ports), "--workdir", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    while not process.stdout.readline().startswith("ready"):
        assert process.poll() is None
    children = Path(f"/proc/{process.pid}/task/{process.pid}/children").read_text().split()
    tritonserver = [pid for pid in children if "tritonserver" in Path(f"/proc/{pid}/cmdline").read_text()]
    assert len(tritonserver) == 1
    os.kill(int(tritonserver[0]), signal.SIGKILL)
    assert process.wait(timeout=60) == 1
    assert "tritonserver exited with status -9" in process.stderr.read()  # type: ignore[union-attr]


def test_the_front_alone_forwards_to_a_triton_that_runs_elsewhere(triton: Any) -> None:
    (port,) = free_ports(1)
    command = [sys.executable, "-m", "xomni_core.cli", "serve", "--triton-grpc", triton.endpoints.grpc]
    process = subprocess.Popen([*command, "--openai-port", str(port)], stdout=subprocess.PIPE, text=True)
    try:
        assert process.stdout is not None
        while not process.stdout.readline().startswith("ready"):
            assert process.poll() is None
        images = openai.OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0).images
        assert len(images.generate(prompt="a red circle", n=3, extra_body={"seed": 2}).data) == 3
    finally:
        process.terminate()
        process.wait(timeout=60)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--repository", "nowhere"], "has no xomni_text_to_image model"),
        (["cfg.yaml", "--repository", "nowhere"], "not both"),
        (["--http-port", "0"], "--http-port: 0 is not a port"),
        (["--http-port", "9100", "--grpc-port", "9100"], "must all differ"),
        (["--max-batch-size", "0"], "max_batch_size (--max-batch-size) must be from 1 to 256"),
        (["--instances", "1000"], "instance_count (--instances) must be from 1 to 64"),
        (
            ["--repository", "REPO", "--max-batch-size", "4"],
            "--max-batch-size shape a repository as it is written",
        ),
    ],
)
def test_serve_refuses_bad_flags_before_starting_anything(
    args: list[str], message: str, repository: Path
) -> None:
    result = run_xomni("serve", *[str(repository) if arg == "REPO" else arg for arg in args])
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_serve_refuses_a_port_in_use() -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = run_xomni("serve", "--repository", "nowhere", "--http-port", str(port))
    assert result.returncode == 2
    assert f"--http-port: cannot listen on 127.0.0.1:{port}" in result.stderr


def test_an_old_pytriton_is_refused_with_the_version_needed(monkeypatch: pytest.MonkeyPatch) -> None:
    from xomni_export.serving import server

    pytest.importorskip("pytriton")
    monkeypatch.setattr(server.metadata, "version", lambda name: "0.5.7")
    with pytest.raises(
        XomniError, match=r"nvidia-pytriton 0\.5\.7 is installed; serving needs 0\.7 or newer"
    ):
        server.TritonInstall.find()
