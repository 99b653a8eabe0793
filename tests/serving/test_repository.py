"""Repositories that serve whole pipelines, written from an export; read back as Triton reads them."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import run_xomni
from tiny_exportable import add_fake_engines

from xomni_core import ConfigError, XomniError
from xomni_export import read_manifest
from xomni_export.serving.options import ServingOptions
from xomni_export.serving.repository import write_serving_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


def read_config(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_the_pipeline_models_take_the_serving_flags(tiny_export: Path, tmp_path: Path) -> None:
    options = ServingOptions(max_batch_size=4, max_queue_delay_us=1500, instance_count=3, threads=2)
    names = write_serving_repository(tiny_export, tmp_path / "repo", options)
    assert names[-2:] == ["xomni_text_to_image", "xomni_understanding"]
    assert "backbone_decode" in names and "decoder_transformer" in names
    config = read_config(tmp_path / "repo" / "xomni_text_to_image" / "config.pbtxt")
    assert config.backend == "python" and config.max_batch_size == 4
    assert config.dynamic_batching.max_queue_delay_microseconds == 1500
    assert [(group.kind, group.count) for group in config.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 3)
    ]
    assert config.parameters["threads"].string_value == "2"
    inputs = {tensor.name: tensor for tensor in config.input}
    assert not inputs["prompt"].optional and inputs["seed"].optional
    assert {tensor.name for tensor in config.output} == {"image", "png", "tokens", "settings"}
    understanding = read_config(tmp_path / "repo" / "xomni_understanding" / "config.pbtxt")
    assert not understanding.HasField("dynamic_batching")
    graph = read_config(tmp_path / "repo" / "backbone_decode" / "config.pbtxt")
    assert [(group.kind, group.count) for group in graph.instance_group] == [
        (model_config_pb2.ModelInstanceGroup.KIND_CPU, 3)
    ]


def test_a_pipeline_model_holds_its_artefacts_and_a_runtime_config_that_points_at_them(
    tiny_export: Path, tmp_path: Path
) -> None:
    write_serving_repository(tiny_export, tmp_path / "repo", graph_models=False)
    version = tmp_path / "repo" / "xomni_text_to_image" / "1"
    runtime = yaml.safe_load((version / "pipeline" / "pipeline.yaml").read_text())
    for slot in ("tokenizer", "backbone", "decoder"):
        assert runtime[slot]["weights"] == slot and runtime[slot]["backend"] == "onnxruntime"
        assert (version / "pipeline" / slot / "manifest.json").is_file()
    listed = json.loads((version / "pipeline" / "artefacts.json").read_text())["files"]
    assert "decoder/weights.bin" in listed and "pipeline.yaml" in listed
    assert "import" in (version / "model.py").read_text()
    understanding = yaml.safe_load(
        (tmp_path / "repo" / "xomni_understanding" / "1" / "pipeline" / "pipeline.yaml").read_text()
    )
    assert "decoder" not in understanding


def test_a_tensorrt_repository_runs_gpu_instances_from_the_engines(tiny_export: Path, tmp_path: Path) -> None:
    export = tmp_path / "export"
    shutil.copytree(tiny_export, export)
    tensorrt = ServingOptions(backend="tensorrt", instance_kind="gpu")
    with pytest.raises(XomniError, match="has no TensorRT engines"):
        write_serving_repository(export, tmp_path / "refused", tensorrt, graph_models=False)
    for slot in ("tokenizer", "backbone", "decoder"):
        graphs = read_manifest(export / slot)["graphs"]
        add_fake_engines(export / slot, {graph: {"9.0": b"plan"} for graph in graphs})
    write_serving_repository(export, tmp_path / "repo", tensorrt, graph_models=False)
    model = tmp_path / "repo" / "xomni_text_to_image"
    config = read_config(model / "config.pbtxt")
    assert [group.kind for group in config.instance_group] == [model_config_pb2.ModelInstanceGroup.KIND_GPU]
    runtime = yaml.safe_load((model / "1" / "pipeline" / "pipeline.yaml").read_text())
    assert {runtime[slot]["backend"] for slot in ("tokenizer", "backbone", "decoder")} == {"tensorrt"}
    assert (model / "1" / "pipeline" / "backbone" / "tensorrt" / "decode.sm90.plan").is_file()
    # The model loads through the TensorRT runner, which says what it lacks on a machine without it.
    from xomni_export.serving.triton_model import load_model

    args = {
        "model_config": json.dumps(
            {
                "name": "xomni_text_to_image",
                "parameters": {"pipeline_config": {"string_value": "pipeline.yaml"}},
            }
        ),
        "model_repository": str(model),
        "model_version": "1",
        "model_instance_kind": "GPU",
        "model_instance_device_id": "0",
    }
    with pytest.raises(XomniError, match="the tensorrt backend needs TensorRT and an NVIDIA GPU"):
        load_model(args)
    with pytest.raises(ConfigError, match="GPU instances only"):
        ServingOptions(backend="tensorrt", instance_kind="cpu")


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_batch_size": 0}, "max_batch_size"),
        ({"max_queue_delay_us": -1}, "max_queue_delay_us"),
        ({"instance_count": 65}, "instance_count"),
        ({"threads": 0}, "threads"),
    ],
)
def test_serving_options_out_of_range_are_refused_naming_the_flag(
    options: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ServingOptions(**options)  # type: ignore[arg-type]


def test_triton_repo_writes_a_repository_and_never_deletes_foreign_files(
    tiny_export: Path, tmp_path: Path
) -> None:
    out = tmp_path / "repo"
    result = run_xomni(
        "triton-repo", str(tiny_export), "--out", str(out), "--no-graph-models", "--max-batch-size", "2"
    )
    assert result.returncode == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["xomni_text_to_image", "xomni_understanding"]
    assert read_config(out / "xomni_text_to_image" / "config.pbtxt").max_batch_size == 2
    (out / "notes.txt").write_text("mine")
    again = run_xomni("triton-repo", str(tiny_export), "--out", str(out))
    assert again.returncode == 2 and "notes.txt" in again.stderr and "--force" in again.stderr
    assert (out / "notes.txt").read_text() == "mine"


def test_triton_repo_refuses_a_folder_that_is_not_a_whole_export(tmp_path: Path) -> None:
    (tmp_path / "export").mkdir()
    result = run_xomni("triton-repo", str(tmp_path / "export"), "--out", str(tmp_path / "repo"))
    assert result.returncode == 2
    message = " ".join(result.stderr.split())  # the CLI wraps long lines
    assert "tokenizer/manifest.json is missing" in message and "Traceback" not in message
    assert not (tmp_path / "repo").exists()
