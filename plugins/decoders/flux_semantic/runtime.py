"""The FLUX semantic decoder running its exported graphs on onnxruntime or TensorRT.

The sampling loop, scheduler, guidance and image post-processing are the torch decoder's own
code; only its four model calls (CLIP, T5, transformer step, VAE decoder) go through graph
sessions, so for the same seed and steps both backends walk the same path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from os import PathLike
from pathlib import Path
from typing import Any, NoReturn

import torch
from diffusers.schedulers.scheduling_flow_match_euler_discrete import FlowMatchEulerDiscreteScheduler
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from xomni_core import CheckpointError, Decoder, InputError, PluginError, read_component_file, torch_dtype
from xomni_export import read_manifest
from xomni_export.runtime.loading import open_session
from xomni_export.runtime.sessions import GraphSession
from xomni_export.specs.decoder import TEXT_ENCODER, TEXT_ENCODER_2, TRANSFORMER, VAE_DECODER

from .model import PLUGIN_NAME, FluxSemanticDecoder, PromptEmbeddings
from .params import FluxSemanticParams


class ExportedFluxSemanticDecoder(FluxSemanticDecoder):
    """The graphs of an ``xomni export`` folder behind the decoder interface; the device and
    precision are those chosen at load and export."""

    def __init__(
        self,
        params: FluxSemanticParams,
        sessions: Mapping[str, GraphSession],
        scheduler: FlowMatchEulerDiscreteScheduler,
        *,
        dtype: torch.dtype,
        device: torch.device,
        tokenizer: PreTrainedTokenizerBase | None = None,
        tokenizer_2: PreTrainedTokenizerBase | None = None,
    ) -> None:
        # No torch modules to hold: skip FluxSemanticDecoder.__init__.
        Decoder.__init__(self, params)
        self.sessions = dict(sessions)
        self.scheduler = scheduler
        self.tokenizer, self.tokenizer_2 = tokenizer, tokenizer_2
        self.text_encoder = self.text_encoder_2 = None
        self.device, self.dtype = device, dtype

    @classmethod
    def from_exported(
        cls,
        path: str | PathLike[str],
        *,
        backend: str,
        device: str = "cpu",
        providers: Sequence[str] = (),
    ) -> ExportedFluxSemanticDecoder:
        """Open the graphs, scheduler and prompt tokenizers of an export folder of this plugin."""
        folder = Path(path)
        params = read_component_file(
            folder, kind=cls.kind, plugin=PLUGIN_NAME, params_class=FluxSemanticParams
        )
        assert isinstance(params, FluxSemanticParams)
        precision = read_manifest(folder)["precision"]
        graphs = [TRANSFORMER, VAE_DECODER]
        if params.text_conditioning:
            graphs += [TEXT_ENCODER, TEXT_ENCODER_2]
        sessions = {
            name: open_session(folder, name, backend=backend, device=device, providers=providers)
            for name in graphs
        }
        scheduler = FlowMatchEulerDiscreteScheduler.from_pretrained(str(_asset(folder, "scheduler")))
        tokenizers: dict[str, Any] = {}
        if params.text_conditioning:
            for name in ("tokenizer", "tokenizer_2"):
                tokenizers[name] = AutoTokenizer.from_pretrained(str(_asset(folder, name)))
        return cls(
            params,
            sessions,
            scheduler,
            dtype=torch_dtype(precision),
            device=torch.device(device),
            **tokenizers,
        )

    @classmethod
    def from_params(cls, params: FluxSemanticParams, *, seed: int = 0) -> NoReturn:
        _torch_only(cls, "from_params")

    @classmethod
    def from_pretrained(cls, path: str | PathLike[str], *, dtype: str | None = None) -> NoReturn:
        _torch_only(cls, "from_pretrained")

    @classmethod
    def from_flux_folders(cls, *args: Any, **kwargs: Any) -> NoReturn:
        _torch_only(cls, "from_flux_folders")

    def save_pretrained(self, path: str | PathLike[str]) -> NoReturn:
        _torch_only(type(self), "save_pretrained")

    def export_graphs(self, precision: Any) -> NoReturn:
        _torch_only(type(self), "export_graphs")

    def write_export_assets(self, folder: Path) -> NoReturn:
        _torch_only(type(self), "write_export_assets")

    def to(self, device: str | None = None, dtype: str | None = None) -> ExportedFluxSemanticDecoder:
        """Only a no-op move is possible: exported graphs keep their load device and precision."""
        if dtype is not None and torch_dtype(dtype) != self.dtype:
            raise InputError(
                f"this decoder runs graphs exported in {self.dtype}; export again with "
                f"precision {dtype} instead of casting"
            )
        if device is not None and torch.device(device) != self.device:
            raise InputError(f"choose the device when loading: from_exported(..., device={device!r})")
        return self

    def _encode_clip(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(TEXT_ENCODER, ids=ids)["pooled"]

    def _encode_t5(self, ids: torch.Tensor) -> torch.Tensor:
        return self._run(TEXT_ENCODER_2, ids=ids)["text"]

    def _velocity(
        self,
        latents: torch.Tensor,
        timestep: torch.Tensor,
        guidance: torch.Tensor | None,
        text: PromptEmbeddings,
        image_ids: torch.Tensor,
        semantic_latents: torch.Tensor,
    ) -> torch.Tensor:
        inputs = {
            "latents": latents,
            "text": text.sequence,
            "pooled": text.pooled,
            "timestep": timestep,
            "img_ids": image_ids,
            "txt_ids": text.ids,
            "semantic": semantic_latents,
            "guidance": guidance,
        }
        # The graph's own inputs decide: a text-free graph has no text, a guidance-free none.
        names = self.sessions[TRANSFORMER].input_names
        return self._run(TRANSFORMER, **{name: inputs[name] for name in names})["velocity"]

    def _decode_vae(self, latents: torch.Tensor) -> torch.Tensor:
        return self._run(VAE_DECODER, latents=latents)["image"]

    def _run(self, graph: str, **inputs: torch.Tensor | None) -> dict[str, torch.Tensor]:
        feeds = {}
        for name, tensor in inputs.items():
            if tensor is None:
                raise InputError(f"graph {graph} needs input {name!r}")
            feeds[name] = tensor if not tensor.is_floating_point() else tensor.to(self.dtype)
        outputs = self.sessions[graph].run(feeds)
        return {name: value.to(self.device) for name, value in outputs.items()}


def _asset(folder: Path, name: str) -> Path:
    if not (folder / name).is_dir():
        raise CheckpointError(
            f"decoder plugin '{PLUGIN_NAME}': {folder} has no '{name}' folder; it is not a complete "
            "export of this plugin (run `xomni export` again)"
        )
    return folder / name


def _torch_only(cls: type, method: str) -> NoReturn:
    raise PluginError(
        f"{cls.__name__}.{method}: this class only runs artefacts written by `xomni export` "
        "(load them with from_exported); use FluxSemanticDecoder to build, load, save or export weights"
    )
