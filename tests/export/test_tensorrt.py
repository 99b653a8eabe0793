"""TensorRT engines: plan choice, refusals and profiles everywhere; build and parity on a GPU."""

from __future__ import annotations

import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch
from tiny_exportable import TinyComponent, TinyParams, export_tiny, small_backbone_spec

from xomni_core import CheckpointError, XomniError
from xomni_export import Dim, GraphSpec, Precision, TensorSpec, read_manifest
from xomni_export.manifest import FORMAT_VERSION, write_manifest
from xomni_export.runtime.loading import open_session
from xomni_export.tensorrt import (
    ProfileShape,
    capability_key,
    plan_filename,
    profile_shapes,
    select_engine,
)

REBUILD = "xomni export CONFIG --component backbone --format tensorrt --out"
ONNX_SHA = "a" * 64
HAS_TENSORRT = importlib.util.find_spec("tensorrt") is not None
needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="TensorRT tests need an NVIDIA GPU")


def manifest_with_engines(engines: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """A manifest whose graph ``mlp`` has engines by compute capability (overrides per engine)."""
    return {
        "format": FORMAT_VERSION,
        "kind": "backbone",
        "graphs": {"mlp": {"file": "mlp.onnx", "sha256": ONNX_SHA}},
        "tensorrt": {
            "engines": {
                "mlp": {
                    key: {
                        "file": f"tensorrt/mlp.sm{key.replace('.', '')}.plan",
                        "onnx_sha256": ONNX_SHA,
                        "tensorrt_version": "10.13.0",
                        **overrides,
                    }
                    for key, overrides in engines.items()
                }
            }
        },
    }


def select(manifest: Mapping[str, Any], capability: tuple[int, int], **kwargs: Any) -> dict[str, Any]:
    options = {"tensorrt_version": "10.13.0", "onnx_sha256": ONNX_SHA, "gpu_name": "NVIDIA H100", **kwargs}
    return select_engine(manifest, "mlp", folder=Path("/exports/backbone"), capability=capability, **options)


def manifest_entry(spec: GraphSpec, precision: Precision = "float16") -> dict[str, Any]:
    """A graph's manifest entry as the ONNX export records it."""
    return {
        "inputs": [
            {"name": t.name, "dtype": t.resolved_dtype(precision), "shape": list(t.shape)}
            for t in spec.inputs
        ],
        "dims": [{"name": d.name, "min": d.min, "opt": d.opt, "max": d.max} for d in spec.dims],
    }


# --- without TensorRT or a GPU ------------------------------------------------------------------


def test_plan_files_are_named_for_the_compute_capability() -> None:
    assert plan_filename("prefill", (9, 0)) == "prefill.sm90.plan"
    assert plan_filename("decode", (12, 0)) == "decode.sm120.plan"
    assert capability_key((8, 6)) == "8.6"


def test_the_plan_of_this_compute_capability_is_chosen() -> None:
    manifest = manifest_with_engines({"8.6": {}, "9.0": {}})
    assert select(manifest, (9, 0))["file"] == "tensorrt/mlp.sm90.plan"
    assert select(manifest, (8, 6))["file"] == "tensorrt/mlp.sm86.plan"


def test_refuses_a_gpu_without_a_plan_and_says_how_to_rebuild() -> None:
    manifest = manifest_with_engines({"8.6": {}, "9.0": {}})
    with pytest.raises(CheckpointError) as caught:
        select(manifest, (8, 0), gpu_name="NVIDIA A100")
    message = str(caught.value)
    assert "NVIDIA A100, compute capability 8.0" in message
    assert "compute capability 8.6, 9.0 only" in message
    assert re.search(re.escape(REBUILD) + " /exports(?!/)", message), "--out names the export folder"


def test_refuses_a_folder_without_engines() -> None:
    manifest = manifest_with_engines({})
    with pytest.raises(CheckpointError, match=f"no TensorRT engine for graph 'mlp'.*{REBUILD}"):
        select(manifest, (9, 0))


def test_refuses_an_engine_of_another_tensorrt_version() -> None:
    manifest = manifest_with_engines({"9.0": {"tensorrt_version": "10.3.0"}})
    with pytest.raises(CheckpointError) as caught:
        select(manifest, (9, 0), tensorrt_version="10.13.0")
    message = str(caught.value)
    assert "built with TensorRT 10.3.0 but TensorRT 10.13.0 is installed" in message
    assert REBUILD in message


def test_refuses_an_engine_built_from_another_onnx_graph() -> None:
    manifest = manifest_with_engines({"9.0": {"onnx_sha256": "b" * 64}})
    with pytest.raises(CheckpointError, match=f"another ONNX graph.*{REBUILD}"):
        select(manifest, (9, 0))


def test_profile_shapes_span_each_dims_range() -> None:
    spec = small_backbone_spec(max_batch=8).graph("decode")
    shapes = profile_shapes(manifest_entry(spec))
    assert sorted(shapes) == sorted(spec.input_names)
    assert shapes["input_ids"] == ProfileShape((1, 1), (2, 2), (8, 64))
    assert shapes["past.0.key"] == ProfileShape((1, 2, 1, 4), (2, 2, 16, 4), (8, 2, 64, 4))
    # past+seq: each end of the range is the sum of the dims' ends.
    assert shapes["attention_mask"] == ProfileShape((1, 2), (2, 18), (8, 128))


def test_profile_shapes_evaluate_multiples() -> None:
    spec = GraphSpec(
        "decode_image",
        inputs=(TensorSpec("pixels", "compute", ("batch", 3, "16*grid_h", "16*grid_w")),),
        outputs=(),
        dims=(Dim("batch", 1, 2, 4), Dim("grid_h", 1, 8, 32), Dim("grid_w", 2, 8, 16)),
    )
    assert profile_shapes(manifest_entry(spec))["pixels"] == ProfileShape(
        (1, 3, 16, 32), (2, 3, 128, 128), (4, 3, 512, 256)
    )


@pytest.mark.skipif(HAS_TENSORRT, reason="checks the message shown when TensorRT is not installed")
def test_opening_a_tensorrt_session_without_tensorrt_says_what_to_install(tmp_path: Path) -> None:
    write_manifest(tmp_path, manifest_with_engines({"9.0": {}}))
    with pytest.raises(XomniError, match=r"pip install 'xomni\[gpu\]'"):
        open_session(tmp_path, "mlp", backend="tensorrt", device="cuda")


# --- with TensorRT and a GPU ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def engines(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("tensorrt")
    if not torch.cuda.is_available():
        pytest.skip("TensorRT tests need an NVIDIA GPU")
    from xomni_export.tensorrt import build_engines

    folder = export_tiny(tmp_path_factory.mktemp("export") / "backbone")
    build_engines(folder, show_progress=False)
    return folder


@needs_gpu
def test_build_records_each_engine_in_the_manifest(engines: Path) -> None:
    import tensorrt

    manifest = read_manifest(engines)
    key = capability_key(torch.cuda.get_device_capability())
    for graph in ("mlp", "scale"):
        entry = manifest["tensorrt"]["engines"][graph][key]
        assert (engines / entry["file"]).is_file()
        assert entry["onnx_sha256"] == manifest["graphs"][graph]["sha256"]
        assert entry["tensorrt_version"] == tensorrt.__version__
        assert entry["flags"]["strongly_typed"] is True
    assert manifest["tensorrt"]["engines"]["mlp"][key]["flags"]["profile"]["x"] == {
        "min": [1, 1, 8],
        "opt": [2, 3, 8],
        "max": [4, 16, 8],
    }
    assert list((engines / "tensorrt").glob("timing.*.cache"))


@needs_gpu
def test_engines_compute_what_onnxruntime_computes(engines: Path) -> None:
    from xomni_export.runtime.sessions import OrtSession

    for graph in TinyComponent(TinyParams()).export_graphs("float32"):
        spec = graph.spec
        trt_session = open_session(engines, spec.name, backend="tensorrt", device="cuda")
        ort_session = OrtSession(engines / f"{spec.name}.onnx")
        assert sorted(trt_session.input_names) == sorted(spec.input_names)
        for seed, partial in enumerate(spec.validation_sizes):
            values = graph.make_inputs({**spec.sizes("opt"), **partial}, seed)
            inputs = dict(zip(spec.input_names, values, strict=True))
            actual = trt_session.run(inputs)
            expected = ort_session.run(inputs)
            for name in spec.output_names:
                assert actual[name].is_cuda
                # TensorRT may run float32 matmuls in TF32.
                torch.testing.assert_close(actual[name].cpu(), expected[name], atol=1e-2, rtol=1e-2)


@needs_gpu
def test_a_rebuilt_onnx_graph_makes_the_engine_refuse(engines: Path, tmp_path: Path) -> None:
    from xomni_export.tensorrt import TrtSession

    manifest = read_manifest(engines)
    manifest["graphs"]["mlp"]["sha256"] = "0" * 64
    with pytest.raises(CheckpointError, match=f"another ONNX graph.*{REBUILD}"):
        TrtSession.from_manifest(engines, "mlp", manifest, device="cuda")
