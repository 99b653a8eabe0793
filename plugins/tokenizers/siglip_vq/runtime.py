"""SigLIP-VQ running its exported graphs on onnxruntime or TensorRT.

Preprocessing and input checks are the torch tokenizer's own code; only the two model calls
go through graph sessions, so both backends agree on every image they accept or reject.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, cast

import torch

from xomni_core import GridSize, InputError, PluginError, Tokenizer, read_component_file, torch_dtype
from xomni_export import read_manifest
from xomni_export.runtime.loading import open_session
from xomni_export.runtime.sessions import GraphSession
from xomni_export.specs.tokenizer import DECODE, ENCODE

from .model import PLUGIN_NAME, SigLIPVQTokenizer
from .params import SigLIPVQParams

if TYPE_CHECKING:
    from typing_extensions import Self


class ExportedSigLIPVQTokenizer(SigLIPVQTokenizer):
    """The ``encode`` and ``decode`` graphs of an ``xomni export`` folder behind the tokenizer
    interface; the device and precision are those chosen at load and export."""

    def __init__(
        self,
        params: SigLIPVQParams,
        sessions: Mapping[str, GraphSession],
        *,
        dtype: torch.dtype,
        device: torch.device,
    ) -> None:
        # No torch model to hold: skip SigLIPVQTokenizer.__init__.
        Tokenizer.__init__(self, params)
        self.sessions = dict(sessions)
        self.dtype = dtype
        self.device = device

    @classmethod
    def from_exported(
        cls,
        path: str | PathLike[str],
        *,
        backend: str,
        device: str = "cpu",
        providers: Sequence[str] = (),
    ) -> Self:
        """Open the graphs of an export folder of this plugin on ``backend``."""
        params = cast(
            SigLIPVQParams,
            read_component_file(path, kind=cls.kind, plugin=PLUGIN_NAME, params_class=SigLIPVQParams),
        )
        precision = read_manifest(Path(path))["precision"]
        sessions = {
            name: open_session(path, name, backend=backend, device=device, providers=providers)
            for name in (ENCODE, DECODE)
        }
        return cls(params, sessions, dtype=torch_dtype(precision), device=torch.device(device))

    @classmethod
    def from_params(cls, params: SigLIPVQParams, *, seed: int = 0) -> Self:
        _torch_only(cls, "from_params")

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str]) -> Self:
        _torch_only(cls, "from_pretrained")

    def save_pretrained(self, path: str | PathLike[str]) -> None:
        _torch_only(type(self), "save_pretrained")

    def export_graphs(self, precision: Any) -> NoReturn:
        _torch_only(type(self), "export_graphs")

    def write_export_assets(self, folder: Path) -> NoReturn:
        _torch_only(type(self), "write_export_assets")

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        """Only a no-op move is possible: exported graphs keep their load device and precision."""
        if dtype is not None and torch_dtype(dtype) != self.dtype:
            raise InputError(
                f"this tokenizer runs graphs exported in {self.dtype}; export again with "
                f"precision {dtype} instead of casting"
            )
        if device is not None and torch.device(device) != self.device:
            raise InputError(f"choose the device when loading: from_exported(..., device={device!r})")
        return self

    def vit_features(self, pixels: torch.Tensor) -> NoReturn:
        _no_features()

    def quantize(self, features: torch.Tensor, grid: GridSize) -> NoReturn:
        _no_features()

    def _placement(self) -> tuple[torch.device, torch.dtype]:
        return self.device, self.dtype

    def _run_encode(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.sessions[ENCODE].run({"pixels": pixels})["ids"].to(self.device)

    def _run_decode(self, ids: torch.Tensor) -> torch.Tensor:
        return self.sessions[DECODE].run({"ids": ids})["latents"].to(self.device)


def _no_features() -> NoReturn:
    raise PluginError(
        "the exported encode graph fuses the ViT and the quantiser, so ViT features are not "
        "available; use encode(), or the torch SigLIPVQTokenizer for features"
    )


def _torch_only(cls: type, method: str) -> NoReturn:
    raise PluginError(
        f"{cls.__name__}.{method}: this class only runs artefacts written by `xomni export` "
        "(load them with from_exported); use SigLIPVQTokenizer to build, load, save or export weights"
    )
