"""ONNX export of the X-Omni backbone at tiny size: the parity gate on unseen shapes, a corrupted
graph caught by it, head graphs that hold one mode's weights each, and the exported runtime
stepping and generating as the torch backbone does."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import onnx
import pytest
import torch
from onnx import numpy_helper

from xomni_core import (
    CheckpointError,
    GridSize,
    ImageGenerationRequest,
    PluginError,
    SamplingParams,
    TextGenerationRequest,
)
from xomni_core.config import load_config, resolve_config
from xomni_core.pipelines.build import build_component
from xomni_core.registry import PluginRegistry
from xomni_export import MANIFEST_FILE, export_component, read_manifest, run_parity
from xomni_export.manifest import sha256_of
from xomni_export.runtime.backbone import ExportedBackbone
from xomni_export.runtime.loading import LazySession
from xomni_export.specs.backbone import DECODE, GRAPHS, IMAGE_HEAD, PREFILL, TEXT_HEAD
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone

TINY = XOmniParams(
    hidden_size=32,
    intermediate_size=64,
    num_hidden_layers=4,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_mm_adap_layers=1,
    num_mm_head_layers=1,
    vocab_size=272,
    mm_vocab_size=80,
    image_vocab_size=64,
    max_position_embeddings=256,
)
PROMPTS = ("a cat", "a red bicycle leaning on a wall")


@pytest.fixture(scope="module")
def backbone() -> XOmniBackbone:
    return XOmniBackbone.from_params(TINY, seed=0)


@pytest.fixture(scope="module")
def exported(backbone: XOmniBackbone, tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("export") / "backbone"
    export_component(backbone, folder, plugin="x-omni", plugin_version="0.1.0", show_progress=False)
    return folder


@pytest.fixture(scope="module")
def runtime(exported: Path) -> ExportedBackbone:
    return ExportedBackbone.from_exported(exported, backend="onnxruntime")


def test_exporting_leaves_the_torch_backbone_as_it_was(backbone: XOmniBackbone, exported: Path) -> None:
    # The exported copy attends its own way; the backbone keeps transformers' SDPA.
    assert backbone.net.model.config._attn_implementation == "sdpa"


def test_export_passes_the_parity_gate_on_unseen_shapes(exported: Path) -> None:
    manifest = read_manifest(exported)
    assert manifest["kind"] == "backbone" and manifest["precision"] == "float32"
    assert manifest["parity"] == {"passed": True, "report": "parity.json"}
    assert sorted(manifest["graphs"]) == sorted(GRAPHS)
    for name in GRAPHS:
        entry = manifest["graphs"][name]
        assert entry["external_data"] == ["weights.bin"]
        assert entry["sha256"] == sha256_of(exported / entry["file"], exported / "weights.bin")
    report = json.loads((exported / "parity.json").read_text())
    assert report["passed"]
    cases = {graph: [c for c in report["cases"] if c["graph"] == graph] for graph in GRAPHS}
    assert [c["sizes"] for c in cases[PREFILL]] == [
        {"batch": 1, "seq": 3},
        {"batch": 3, "seq": 13},
        {"batch": 5, "seq": 4},
    ]
    assert all(len(cases[graph]) == 3 for graph in GRAPHS)
    for case in cases[PREFILL] + cases[DECODE]:
        names = [o["name"] for o in case["outputs"]]
        assert names[0] == "hidden" and len(names) == 1 + 2 * TINY.num_hidden_layers
    widths = {TEXT_HEAD: TINY.vocab_size, IMAGE_HEAD: TINY.image_vocab_size}
    for graph, width in widths.items():
        for case in cases[graph]:
            [logits] = case["outputs"]
            assert logits["name"] == "logits" and logits["shape"] == [case["sizes"]["batch"], width]
    for case in report["cases"]:
        assert all(o["passed"] and o["max_abs_error"] < 1e-5 for o in case["outputs"])


def initializers(path: Path) -> list[np.ndarray]:
    return [numpy_helper.to_array(t) for t in onnx.load(str(path)).graph.initializer]


def holds(arrays: list[np.ndarray], weight: torch.Tensor) -> bool:
    target = weight.detach().numpy()
    return any(a.shape == target.shape and np.array_equal(a, target) for a in arrays)


def test_each_head_weight_lives_in_its_own_head_graph_only(backbone: XOmniBackbone, exported: Path) -> None:
    lm_head = backbone.net.lm_head.weight
    image_rows = backbone.net.mm_head.weight[: TINY.image_vocab_size]
    graphs = {name: initializers(exported / f"{name}.onnx") for name in GRAPHS}
    # An image step runs decode and image_head: neither stores the text head.
    for name in (PREFILL, DECODE, IMAGE_HEAD):
        assert not holds(graphs[name], lm_head), name
    for name in (PREFILL, DECODE, TEXT_HEAD):
        assert not holds(graphs[name], image_rows), name
    assert holds(graphs[TEXT_HEAD], lm_head) and len(graphs[TEXT_HEAD]) == 1
    assert holds(graphs[IMAGE_HEAD], image_rows) and len(graphs[IMAGE_HEAD]) == 1


def external_ranges(path: Path) -> set[tuple[int, int]]:
    """(offset, length) in weights.bin of each initializer the graph keeps there."""
    model = onnx.load(str(path), load_external_data=False)
    ranges = set()
    for tensor in model.graph.initializer:
        if tensor.data_location == onnx.TensorProto.EXTERNAL:
            info = {e.key: e.value for e in tensor.external_data}
            assert info["location"] == "weights.bin"
            ranges.add((int(info["offset"]), int(info["length"])))
    return ranges


def test_weights_the_body_graphs_share_are_stored_once(backbone: XOmniBackbone, exported: Path) -> None:
    ranges = {name: external_ranges(exported / f"{name}.onnx") for name in GRAPHS}
    assert ranges[PREFILL] == ranges[DECODE]
    assert not ranges[TEXT_HEAD] & ranges[PREFILL] and not ranges[IMAGE_HEAD] & ranges[PREFILL]
    stored = sorted(set().union(*ranges.values()))
    assert all(
        end <= start
        for (_, end), (start, _) in zip([(o, o + n) for o, n in stored], stored[1:], strict=False)
    )  # no two tensors overlap
    assert (exported / "weights.bin").stat().st_size == stored[-1][0] + stored[-1][1]
    parameter_bytes = 4 * backbone.net.num_parameters()
    assert sum(n for _, n in stored) <= parameter_bytes
    assert not list(exported.glob("*.onnx.data"))


@pytest.mark.parametrize("mode", ["image", "text"])
def test_forward_step_logits_match_the_torch_backbone_over_the_modes_ids(
    backbone: XOmniBackbone, runtime: ExportedBackbone, mode: str
) -> None:
    prompts = [backbone.tokenize("a cat"), backbone.tokenize("two red bicycles<SOM>")]
    length = max(len(p) for p in prompts)
    ids = torch.tensor([[0] * (length - len(p)) + p for p in prompts])
    mask = torch.tensor([[0] * (length - len(p)) + [1] * len(p) for p in prompts])
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    next_ids = torch.tensor([[TINY.vocab_size + 3], [TINY.vocab_size + 60]])
    next_mask = torch.cat([mask, torch.ones(2, 1, dtype=torch.long)], dim=1)
    width = len(backbone.vocab.mode_range(mode))
    ours = runtime.forward_step(ids, mask, positions, None, mode)
    theirs = backbone.forward_step(ids, mask, positions, None, mode)
    assert ours.logits.shape == theirs.logits.shape == (2, width)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)
    # One step after the cache each returned.
    next_positions = positions[:, -1:] + 1
    ours = runtime.forward_step(next_ids, next_mask, next_positions, ours.past, mode)
    theirs = backbone.forward_step(next_ids, next_mask, next_positions, theirs.past, mode)
    assert ours.logits.shape == theirs.logits.shape == (2, width)
    torch.testing.assert_close(ours.logits, theirs.logits, atol=1e-5, rtol=1e-5)


def test_a_corrupted_graph_fails_the_parity_gate_naming_output_and_index(
    backbone: XOmniBackbone, exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "corrupted"
    shutil.copytree(exported, folder)
    model = onnx.load(str(folder / "decode.onnx"))
    [table] = [t for t in model.graph.initializer if t.name.endswith("lm_embed_tokens.weight")]
    table.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(table) + 0.5, table.name))
    onnx.save(model, str(folder / "decode.onnx"))

    report = run_parity(backbone.export_graphs("float32"), folder, "float32")

    assert not report.passed
    assert all(c.passed for c in report.cases if c.graph != DECODE)
    failed = [(c, o) for c in report.cases if c.graph == DECODE for o in c.outputs if not o.passed]
    assert "hidden" in {o.name for _, o in failed}
    case, check = next((c, o) for c, o in failed if o.name == "hidden")
    assert len(check.worst_index) == 2 and check.max_abs_error > check.atol
    assert f"decode ({', '.join(f'{k}={v}' for k, v in case.sizes.items())}): hidden" in report.summary()
    assert str(check.worst_index) in report.summary()


def test_runtime_matches_the_torch_backbone_text_interface(
    backbone: XOmniBackbone, runtime: ExportedBackbone
) -> None:
    assert runtime.vocab == backbone.vocab
    text = "hello <SOM>3 4<IMAGE><MM-Token-7><EOM> there<|im_end|>"
    assert runtime.tokenize(text) == backbone.tokenize(text)
    assert runtime.detokenize(backbone.tokenize(text)) == backbone.detokenize(backbone.tokenize(text))
    assert runtime.image_prefix(3, 4) == backbone.image_prefix(3, 4)
    assert runtime.chat_prompt("What is it?") == backbone.chat_prompt("What is it?")
    assert runtime.params.plugin == "x-omni"
    assert runtime.params.plugin_params == TINY.model_dump(mode="json")


def test_greedy_image_tokens_equal_the_torch_backbone(
    backbone: XOmniBackbone, runtime: ExportedBackbone
) -> None:
    request = ImageGenerationRequest(
        prompts=PROMPTS, grid=GridSize(3, 4), sampling=SamplingParams(temperature=0.0)
    )
    assert torch.equal(
        runtime.generate_image_tokens(request).ids, backbone.generate_image_tokens(request).ids
    )


def test_greedy_text_equals_the_torch_backbone(backbone: XOmniBackbone, runtime: ExportedBackbone) -> None:
    prompts = tuple(tuple(backbone.tokenize(backbone.chat_prompt(p))) for p in PROMPTS)
    request = TextGenerationRequest(input_ids=prompts, max_new_tokens=12)
    assert runtime.generate_text(request) == backbone.generate_text(request)


def test_sampled_image_tokens_equal_the_torch_backbone_for_a_seed(
    backbone: XOmniBackbone, runtime: ExportedBackbone
) -> None:
    request = ImageGenerationRequest(prompts=PROMPTS, grid=GridSize(2, 3), seed=7)
    assert torch.equal(
        runtime.generate_image_tokens(request).ids, backbone.generate_image_tokens(request).ids
    )


def test_drawing_images_never_opens_the_text_head(exported: Path) -> None:
    runtime = ExportedBackbone.from_exported(exported, backend="onnxruntime")
    heads = runtime.heads
    assert isinstance(heads["text"], LazySession) and isinstance(heads["image"], LazySession)
    runtime.generate_image_tokens(ImageGenerationRequest(prompts=PROMPTS[:1], grid=GridSize(2, 2)))
    assert heads["image"].is_open and not heads["text"].is_open


def test_a_folder_without_manifest_is_refused(exported: Path, tmp_path: Path) -> None:
    folder = tmp_path / "incomplete"
    shutil.copytree(exported, folder)
    (folder / MANIFEST_FILE).unlink()
    with pytest.raises(CheckpointError, match=r"manifest\.json is missing"):
        ExportedBackbone.from_exported(folder, backend="onnxruntime")


def test_a_folder_of_the_earlier_whole_vocabulary_layout_is_refused_with_the_way_out(
    exported: Path, tmp_path: Path
) -> None:
    folder = tmp_path / "backbone"
    shutil.copytree(exported, folder)
    manifest = read_manifest(folder)
    # The earlier layout: prefill and decode computed both heads, selected by an image_mode input.
    manifest["graphs"] = {name: manifest["graphs"][name] for name in (PREFILL, DECODE)}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError) as caught:
        ExportedBackbone.from_exported(folder, backend="onnxruntime")
    message = str(caught.value)
    assert str(folder) in message and "['text_head', 'image_head']" in message
    assert f"Re-export it: xomni export CONFIG --component backbone --out {tmp_path}" in message


def test_runtime_cannot_be_built_or_saved_as_a_torch_component(
    runtime: ExportedBackbone, tmp_path: Path
) -> None:
    with pytest.raises(PluginError, match="only runs artefacts written by `xomni export`"):
        ExportedBackbone.from_params(runtime.params)
    with pytest.raises(PluginError, match="only runs artefacts"):
        runtime.save_pretrained(tmp_path / "copy")


def test_a_pipeline_config_selects_the_export_with_backend_onnxruntime(exported: Path) -> None:
    config = load_config(
        data={
            "backbone": {
                "plugin": "x-omni",
                "params": TINY.model_dump(mode="json"),
                "weights": str(exported),
                "backend": "onnxruntime",
            }
        }
    )
    registry = PluginRegistry.discover(config.plugins, use_environment=False)
    resolved = resolve_config(config, registry)
    component = build_component(resolved.component("backbone"), config, registry)
    assert isinstance(component, ExportedBackbone)
    assert component.vocab.total_vocab_size == TINY.total_vocab_size
