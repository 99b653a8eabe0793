"""A tiny exportable component for tests of what runs on exported folders (TensorRT, Triton)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any

import torch

from xomni_core import Component, ComponentParams
from xomni_export import (
    Dim,
    ExportSpec,
    GraphExport,
    GraphSpec,
    Precision,
    TensorSpec,
    export_component,
    read_manifest,
)
from xomni_export.manifest import write_manifest
from xomni_export.specs.backbone import backbone_export_spec

WIDTH = 8


class TinyParams(ComponentParams):
    width: int = WIDTH


class Scale(torch.nn.Module):
    def forward(self, x: torch.Tensor, mode: torch.Tensor) -> torch.Tensor:
        return x * (mode + 1).to(x.dtype)


class TinyComponent(Component[TinyParams]):
    """Two graphs: an MLP over (batch, seq, width), and a scaling with an int64 scalar input."""

    kind = "backbone"
    params_class = TinyParams

    def __init__(self, params: TinyParams) -> None:
        super().__init__(params)
        torch.manual_seed(0)
        self.mlp = torch.nn.Sequential(
            torch.nn.Linear(params.width, 16), torch.nn.GELU(), torch.nn.Linear(16, params.width)
        )

    @classmethod
    def from_params(cls, params: TinyParams, *, seed: int = 0) -> TinyComponent:
        return cls(params)

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str]) -> TinyComponent:
        raise NotImplementedError

    def save_pretrained(self, path: str | PathLike[str]) -> None:
        raise NotImplementedError

    def export_graphs(self, precision: Precision) -> list[GraphExport]:
        width = self.params.width

        def features(sizes: Mapping[str, int], seed: int) -> Sequence[torch.Tensor]:
            generator = torch.Generator().manual_seed(seed)
            return [torch.randn(sizes["batch"], sizes["seq"], width, generator=generator)]

        def scaled(sizes: Mapping[str, int], seed: int) -> Sequence[torch.Tensor]:
            generator = torch.Generator().manual_seed(seed)
            return [torch.randn(sizes["batch"], width, generator=generator), torch.tensor(seed % 3)]

        batch = Dim("batch", 1, 2, 4)
        mlp = GraphSpec(
            "mlp",
            inputs=(TensorSpec("x", "compute", ("batch", "seq", width)),),
            outputs=(TensorSpec("y", "compute", ("batch", "seq", width)),),
            dims=(batch, Dim("seq", 1, 3, 16)),
            validation_sizes=({"batch": 1, "seq": 5}, {"batch": 4, "seq": 16}),
        )
        scale = GraphSpec(
            "scale",
            inputs=(TensorSpec("x", "compute", ("batch", width)), TensorSpec("mode", "int64", ())),
            outputs=(TensorSpec("y", "compute", ("batch", width)),),
            dims=(batch,),
            validation_sizes=({"batch": 1}, {"batch": 3}),
        )
        return [GraphExport(mlp, self.mlp, features), GraphExport(scale, Scale(), scaled)]

    def write_export_assets(self, folder: Path) -> None:
        pass


def export_tiny(folder: Path) -> Path:
    """Export :class:`TinyComponent` to ``folder`` (parity-checked) and return it."""
    export_component(
        TinyComponent(TinyParams()), folder, plugin="tiny", plugin_version="0", show_progress=False
    )
    return folder


def small_backbone_spec(max_batch: int = 64) -> ExportSpec:
    """The backbone export spec at toy sizes: 1 layer of 2 x 4 KV, hidden 8, 24 text and 8 image
    ids, 64 positions."""
    return backbone_export_spec(
        num_layers=1,
        num_kv_heads=2,
        head_dim=4,
        hidden_size=8,
        text_vocab_size=24,
        image_vocab_size=8,
        max_positions=64,
        max_batch=max_batch,
    )


def add_fake_engines(folder: Path, engines: Mapping[str, Mapping[str, bytes]]) -> None:
    """Record engines (opaque bytes by graph and compute capability) as build_engines would."""
    manifest = read_manifest(folder)
    section: dict[str, Any] = {}
    for graph, plans in engines.items():
        for capability, plan in plans.items():
            relative = f"tensorrt/{graph}.sm{capability.replace('.', '')}.plan"
            (folder / relative).parent.mkdir(exist_ok=True)
            (folder / relative).write_bytes(plan)
            section.setdefault(graph, {})[capability] = {
                "file": relative,
                "onnx_sha256": manifest["graphs"][graph]["sha256"],
                "tensorrt_version": "10.0.0",
            }
    manifest["tensorrt"] = {"engines": section}
    write_manifest(folder, manifest)
