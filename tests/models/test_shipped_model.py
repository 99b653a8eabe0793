"""The shipped xomni-nano pipeline: intact files, the default of generate and export, onnxruntime parity."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image
from support import REPO

from xomni_core import CheckpointError, SamplingParams
from xomni_core.cli import main
from xomni_core.models import (
    DEFAULT_MODEL,
    default_pipeline_config,
    provenance,
    shipped_model_dir,
    verify_model_folder,
    verify_shipped_model,
)
from xomni_core.pipelines import TextToImagePipeline
from xomni_core.synthetic import find_blobs

HEADLINE = "two red circles left of a blue square"


def test_every_shipped_file_matches_its_recorded_hash() -> None:
    digest = verify_shipped_model()
    assert digest == provenance()["weights_sha256"]


def test_a_changed_file_fails_the_hash_check(tmp_path: Path) -> None:
    copy = tmp_path / DEFAULT_MODEL
    shutil.copytree(shipped_model_dir(), copy)
    assert verify_model_folder(copy) == provenance()["weights_sha256"]
    weights = copy / "backbone" / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))
    with pytest.raises(
        CheckpointError, match=r"1 file\(s\) differ from provenance.json: backbone/model\.safetensors"
    ):
        verify_model_folder(copy)


def test_shipped_model_is_small_safetensors_with_the_command_that_made_it() -> None:
    folder = shipped_model_dir()
    sizes = sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())
    assert sizes < 50 * 2**20
    suffixes = {p.suffix for p in folder.rglob("*") if p.is_file()}
    assert ".safetensors" in suffixes
    assert not suffixes & {".bin", ".pt", ".pth", ".pkl", ".ckpt"}  # nothing that unpickles
    record = provenance()
    assert record["command"].startswith("xomni train nano")
    assert set(record["seconds"]) == {"tokenizer", "decoder", "sft", "grpo", "eval"}


def test_generate_without_config_draws_the_prompts_colours_with_the_shipped_model(
    tmp_path: Path, capfd: pytest.CaptureFixture[str]
) -> None:
    assert main(["generate", HEADLINE, "--out", str(tmp_path), "--no-progress"]) == 0
    assert capfd.readouterr().err == ""  # no library warnings on the main command
    record = json.loads((tmp_path / "generation.json").read_text())
    assert record["config"]["backbone"]["plugin"] == "x-omni"
    with Image.open(tmp_path / "image-000.png") as image:
        assert image.size == (128, 128)
        _, blobs = find_blobs(image.convert("RGB"))
    assert {"red", "blue"} <= {blob.color for blob in blobs}


def test_benchmarks_quote_the_shipped_models_numbers() -> None:
    text = (REPO / "BENCHMARKS.md").read_text()
    overall = provenance()["benchmark"]["overall"]
    row = re.search(r"^\| \*\*overall\*\* \|(.+)\|$", text, re.MULTILINE)
    assert row is not None, "BENCHMARKS.md has no overall row of the nano comparison"
    quoted = [float(cell) for cell in row[1].split("|")]
    assert quoted == [
        round(100 * overall[mode], 1)
        for mode in ("sft_single", next(m for m in overall if m.startswith("sft_best")), "grpo_single")
    ]


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("nano-export")
    assert main(["export", "--out", str(out), "--no-progress"]) == 0
    return out


def test_exported_nano_runs_with_onnxruntime_and_matches_torch(exported: Path) -> None:
    greedy = SamplingParams(temperature=0.0)
    prompts = [HEADLINE, "a green triangle"]
    torch_run = TextToImagePipeline.from_config(default_pipeline_config())(
        prompts, sampling=greedy, seed=0, show_progress=False
    )
    runtime_config = yaml.safe_load((exported / "pipeline.onnxruntime.yaml").read_text())
    assert [runtime_config[slot]["backend"] for slot in ("tokenizer", "backbone", "decoder")] == [
        "onnxruntime"
    ] * 3
    onnx_pipeline = TextToImagePipeline.from_config(exported / "pipeline.onnxruntime.yaml")
    onnx_run = onnx_pipeline(prompts, sampling=greedy, seed=0, show_progress=False)
    assert onnx_run.tokens.rows() == torch_run.tokens.rows()
    for ours, reference in zip(onnx_run.images, torch_run.images, strict=True):
        difference = np.abs(np.asarray(ours, dtype=int) - np.asarray(reference, dtype=int))
        assert difference.max() <= 2


def test_models_command_reports_the_default_model_without_importing_torch() -> None:
    probe = (
        "import sys\n"
        "from xomni_core.cli import main\n"
        "code = main(['models', '--json'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'diffusers')]\n"
        "print('HEAVY', heavy, 'CODE', code, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert "HEAVY [] CODE 0" in result.stderr, result.stderr
    (row,) = json.loads(result.stdout)
    assert row["name"] == DEFAULT_MODEL and row["files"] == "intact"
    assert Path(row["config"]) == default_pipeline_config()
    assert row["benchmark_overall"] == provenance()["benchmark"]["overall"]
