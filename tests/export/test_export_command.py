"""`xomni export` on the tiny pipeline, and the exported pipeline run through onnxruntime."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from support import REPO, run_xomni

from xomni_core import SamplingParams
from xomni_core.pipelines import TextToImagePipeline

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"
PROMPTS = ["a red circle", "two blue squares left of a tree"]


@pytest.fixture
def exported(tiny_export: Path) -> Path:
    return tiny_export


def test_export_writes_each_component_a_runtime_config_and_a_triton_repository(exported: Path) -> None:
    for slot in ("tokenizer", "backbone", "decoder"):
        assert (exported / slot / "manifest.json").is_file()
        assert (exported / slot / "parity.json").is_file()
    assert (exported / "pipeline.onnxruntime.yaml").is_file()
    models = sorted(p.name for p in (exported / "triton").iterdir())
    assert "backbone_decode" in models and "decoder_transformer" in models and "tokenizer_encode" in models
    assert "xomni_text_to_image" in models and "xomni_understanding" in models


def test_onnxruntime_pipeline_matches_torch_tokens_and_images(exported: Path) -> None:
    greedy = SamplingParams(temperature=0.0)
    torch_run = TextToImagePipeline.from_config(TINY)(PROMPTS, sampling=greedy, seed=2, show_progress=False)
    onnx_pipeline = TextToImagePipeline.from_config(exported / "pipeline.onnxruntime.yaml")
    assert type(onnx_pipeline.backbone).__name__ == "ExportedBackbone"
    onnx_run = onnx_pipeline(PROMPTS, sampling=greedy, seed=2, show_progress=False)
    assert onnx_run.tokens.rows() == torch_run.tokens.rows()
    for ours, reference in zip(onnx_run.images, torch_run.images, strict=True):
        difference = np.abs(np.asarray(ours, dtype=int) - np.asarray(reference, dtype=int))
        assert difference.max() <= 2  # levels of 255: float rounding at the uint8 boundary


def test_exporting_a_slot_that_already_runs_exported_artefacts_exits_2(
    exported: Path, tmp_path: Path
) -> None:
    result = run_xomni(
        "export",
        str(exported / "pipeline.onnxruntime.yaml"),
        "--component",
        "backbone",
        "--out",
        str(tmp_path),
    )
    assert result.returncode == 2
    assert "backbone.backend" in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "backbone").exists()
