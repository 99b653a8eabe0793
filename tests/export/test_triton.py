"""Triton model repositories written from real (tiny) ONNX exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_exportable import WIDTH, add_fake_engines, export_tiny, small_backbone_spec

from xomni_core import CheckpointError, XomniError
from xomni_export import TensorSpec, read_manifest, weights
from xomni_export.manifest import write_manifest
from xomni_export.triton import model_config, write_triton_repository

model_config_pb2 = pytest.importorskip("tritonclient.grpc.model_config_pb2")
text_format = pytest.importorskip("google.protobuf.text_format")


@pytest.fixture(scope="module")
def tiny_export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export_tiny(tmp_path_factory.mktemp("export") / "backbone")


def read_config(path: Path) -> Any:
    return text_format.Parse(path.read_text(), model_config_pb2.ModelConfig())


def test_one_model_per_graph_with_a_version_folder(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    names = write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime")
    assert names == ["tiny_mlp", "tiny_scale"]
    assert sorted(p.name for p in repository.iterdir()) == names
    for name in names:
        assert sorted(p.name for p in (repository / name).iterdir()) == ["1", "config.pbtxt"]
        assert [p.name for p in (repository / name / "1").iterdir()] == ["model.onnx"]


def test_every_config_parses_as_triton_model_config(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime")
    for folder in repository.iterdir():
        config = read_config(folder / "config.pbtxt")
        assert config.name == folder.name
        assert config.platform == "onnxruntime_onnx"
        assert config.backend == "onnxruntime"
        assert config.instance_group[0].kind == model_config_pb2.ModelInstanceGroup.KIND_GPU


def test_batched_graph_leaves_out_the_batch_axis(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime", max_batch_size=16)
    config = read_config(repository / "tiny_mlp" / "config.pbtxt")
    assert config.max_batch_size == 4  # capped at the batch dim's max
    assert config.HasField("dynamic_batching")
    (x,) = config.input
    assert (x.name, x.data_type, list(x.dims)) == ("x", model_config_pb2.TYPE_FP32, [-1, WIDTH])
    assert list(config.output[0].dims) == [-1, WIDTH]


def test_graph_with_a_scalar_input_is_not_batched(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime")
    config = read_config(repository / "tiny_scale" / "config.pbtxt")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    x, mode = config.input
    assert list(x.dims) == [-1, WIDTH]
    assert (mode.data_type, list(mode.dims)) == (model_config_pb2.TYPE_INT64, [1])
    assert mode.HasField("reshape") and list(mode.reshape.shape) == []


def test_batching_off_keeps_full_dims(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime", max_batch_size=0)
    config = read_config(repository / "tiny_mlp" / "config.pbtxt")
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert list(config.input[0].dims) == [-1, -1, WIDTH]


def test_external_weights_sit_beside_the_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(weights, "MIN_BYTES", 0)  # the tiny weights would stay inside the graphs
    export = export_tiny(tmp_path / "backbone")
    assert read_manifest(export)["graphs"]["mlp"]["external_data"] == ["weights.bin"]
    repository = tmp_path / "models"
    write_triton_repository({"tiny": export}, repository, backend="onnxruntime")
    version = repository / "tiny_mlp" / "1"
    assert sorted(p.name for p in version.iterdir()) == ["model.onnx", "weights.bin"]
    # Linked, not copied, on one filesystem.
    assert (version / "weights.bin").stat().st_ino == (export / "weights.bin").stat().st_ino

    from xomni_export.runtime.sessions import OrtSession

    x = torch.randn(2, 3, WIDTH)
    expected = OrtSession(export / "mlp.onnx").run({"x": x})["y"]
    torch.testing.assert_close(OrtSession(version / "model.onnx").run({"x": x})["y"], expected)


def test_tensorrt_models_choose_a_plan_per_compute_capability(tmp_path: Path) -> None:
    export = export_tiny(tmp_path / "backbone")
    plans = {"8.6": b"plan for sm86", "9.0": b"plan for sm90"}
    add_fake_engines(export, {"mlp": plans, "scale": {"9.0": b"scale plan"}})
    repository = tmp_path / "models"
    write_triton_repository({"tiny": export}, repository, backend="tensorrt")
    config = read_config(repository / "tiny_mlp" / "config.pbtxt")
    assert (config.platform, config.backend) == ("tensorrt_plan", "tensorrt")
    assert dict(config.cc_model_filenames) == {"8.6": "model.sm86.plan", "9.0": "model.sm90.plan"}
    assert config.default_model_filename == "model.sm90.plan"
    version = repository / "tiny_mlp" / "1"
    assert {p.name: p.read_bytes() for p in version.iterdir()} == {
        "model.sm86.plan": plans["8.6"],
        "model.sm90.plan": plans["9.0"],
    }


def test_tensorrt_repository_needs_engines_and_says_how_to_build_them(
    tiny_export: Path, tmp_path: Path
) -> None:
    with pytest.raises(CheckpointError, match="xomni export CONFIG --component backbone --format tensorrt"):
        write_triton_repository({"tiny": tiny_export}, tmp_path / "models", backend="tensorrt")


def test_tensorrt_repository_refuses_engines_of_another_onnx_graph(tmp_path: Path) -> None:
    export = export_tiny(tmp_path / "backbone")
    add_fake_engines(export, {"mlp": {"9.0": b"plan"}, "scale": {"9.0": b"plan"}})
    manifest = json.loads((export / "manifest.json").read_text())
    manifest["tensorrt"]["engines"]["mlp"]["9.0"]["onnx_sha256"] = "0" * 64
    write_manifest(export, manifest)
    with pytest.raises(CheckpointError, match=r"another ONNX graph.*--format tensorrt"):
        write_triton_repository({"tiny": export}, tmp_path / "models", backend="tensorrt")


def test_failed_write_leaves_no_repository(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    with pytest.raises(CheckpointError):
        write_triton_repository(
            {"tiny": tiny_export, "missing": tmp_path / "nowhere"}, repository, backend="onnxruntime"
        )
    assert list(tmp_path.iterdir()) == []


def test_failed_rewrite_keeps_the_previous_repository(tiny_export: Path, tmp_path: Path) -> None:
    repository = tmp_path / "models"
    write_triton_repository({"tiny": tiny_export}, repository, backend="onnxruntime")
    before = sorted(str(p.relative_to(repository)) for p in repository.rglob("*"))
    with pytest.raises(XomniError):
        write_triton_repository({"tiny": tiny_export}, repository, backend="tensorrt")
    assert sorted(str(p.relative_to(repository)) for p in repository.rglob("*")) == before
    assert [p.name for p in tmp_path.iterdir()] == ["models"]


def backbone_entry(graph: str) -> dict[str, Any]:
    """The manifest entry of a graph of a small backbone spec, in bfloat16."""
    spec = small_backbone_spec().graph(graph)

    def tensors(specs: tuple[TensorSpec, ...]) -> list[dict[str, Any]]:
        return [
            {"name": t.name, "dtype": t.resolved_dtype("bfloat16"), "shape": list(t.shape)} for t in specs
        ]

    return {
        "inputs": tensors(spec.inputs),
        "outputs": tensors(spec.outputs),
        "dims": [{"name": d.name, "min": d.min, "opt": d.opt, "max": d.max} for d in spec.dims],
    }


def test_backbone_decode_graph_batches_on_its_leading_axis() -> None:
    plans = {"9.0": "model.sm90.plan"}
    config = model_config(
        "backbone_decode", backbone_entry("decode"), backend="tensorrt", cc_model_filenames=plans
    )
    assert config.max_batch_size == 8 and config.HasField("dynamic_batching")
    inputs = {i.name: i for i in config.input}
    assert list(inputs["attention_mask"].dims) == [-1]
    assert list(inputs["past.0.key"].dims) == [2, -1, 4]
    assert inputs["past.0.key"].data_type == model_config_pb2.TYPE_BF16
    outputs = {o.name: o for o in config.output}
    assert list(outputs["hidden"].dims) == [8]
    parsed = text_format.Parse(text_format.MessageToString(config), model_config_pb2.ModelConfig())
    assert parsed == config


def test_backbone_head_graphs_give_float32_logits_of_their_mode() -> None:
    text = model_config("backbone_text_head", backbone_entry("text_head"), backend="onnxruntime")
    image = model_config("backbone_image_head", backbone_entry("image_head"), backend="onnxruntime")
    for config, width in ((text, 24), (image, 8)):
        assert [(i.name, list(i.dims)) for i in config.input] == [("hidden", [8])]
        assert [(o.name, list(o.dims)) for o in config.output] == [("logits", [width])]
        assert config.output[0].data_type == model_config_pb2.TYPE_FP32
