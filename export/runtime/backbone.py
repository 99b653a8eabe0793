"""Any backbone exported under the backbone spec, run behind the :class:`~xomni_core.Backbone`
interface on onnxruntime or TensorRT.

The exported folder holds the graphs of :mod:`xomni_export.specs.backbone` (``prefill`` and
``decode`` up to the last hidden state, ``text_head`` and ``image_head`` from it to one mode's
logits), the text tokenizer's files and ``backbone_runtime.json`` (:class:`BackboneRuntimeInfo`),
which the exporting plugin writes; the runtime needs nothing else from the plugin, so generation
here is the shared loop of :mod:`xomni_core.generation` on top of
:meth:`ExportedBackbone.forward_step`.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

from pydantic import BaseModel, ConfigDict, ValidationError

from xomni_core import (
    COMPONENT_FILE,
    Backbone,
    BackboneStep,
    BackboneVocab,
    CheckpointError,
    ComponentParams,
    GenerationMode,
    InputError,
    PluginError,
)

from ..manifest import read_manifest
from ..specs.backbone import DECODE, GRAPHS, HEADS, PREFILL, past_names, present_names
from .loading import LazySession, open_session

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedTokenizerBase
    from typing_extensions import Self

    from .sessions import GraphSession

RUNTIME_FILE = "backbone_runtime.json"


class BackboneRuntimeInfo(BaseModel):
    """What a backbone runtime needs besides its graphs and tokenizer files.

    ``image_prefix_template`` holds ``{grid_h}`` and ``{grid_w}``; ``chat_prompt_template``
    holds ``{user_turn}`` and is used when the tokenizer's own chat template is not.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    format: int = 1
    vocab: BackboneVocab
    image_prefix_template: str
    use_tokenizer_chat_template: bool
    chat_prompt_template: str = "{user_turn}"

    def write(self, folder: str | os.PathLike[str]) -> None:
        Path(folder, RUNTIME_FILE).write_text(self.model_dump_json(indent=2) + "\n")

    @classmethod
    def read(cls, folder: str | os.PathLike[str]) -> BackboneRuntimeInfo:
        path = Path(folder, RUNTIME_FILE)
        if not path.is_file():
            raise CheckpointError(f"{path} is missing: {folder} is not an exported backbone")
        try:
            return cls.model_validate_json(path.read_text())
        except ValidationError as exc:
            raise CheckpointError(f"{path} is invalid: {exc}") from exc


class ExportedParams(ComponentParams):
    """The record of the exported component: its plugin, precision and params as plain JSON.

    The runtime never rebuilds the network, so the source plugin's params stay unvalidated
    (``plugin_params``); read them to learn what was exported.
    """

    kind: str
    plugin: str
    plugin_version: str
    precision: str
    plugin_params: dict[str, Any]


class ExportedBackbone(Backbone[ExportedParams]):
    """A backbone running exported body graphs (``prefill``/``decode``) and head graphs.

    ``past`` of :meth:`forward_step` is a dict of tensors keyed by the decode graph's
    ``past.{i}.key`` / ``past.{i}.value`` inputs.
    """

    params_class: ClassVar[type[ComponentParams]] = ExportedParams

    def __init__(
        self,
        params: ExportedParams,
        info: BackboneRuntimeInfo,
        tokenizer: PreTrainedTokenizerBase,
        prefill: GraphSession,
        decode: GraphSession,
        heads: Mapping[GenerationMode, GraphSession],
        device: str = "cpu",
    ) -> None:
        super().__init__(params)
        self.info = info
        self.tokenizer = tokenizer
        self.prefill = prefill
        self.decode = decode
        self.heads = dict(heads)
        self._device = device
        self._num_layers = sum(1 for name in decode.input_names if name.endswith(".key"))

    # --- construction ---

    @classmethod
    def from_exported(
        cls,
        path: str | os.PathLike[str],
        *,
        backend: str,
        device: str = "cpu",
        providers: Sequence[str] = (),
        threads: int | None = None,
    ) -> Self:
        """Open the graphs of an exported backbone folder on ``backend`` (``threads``: see
        :func:`~xomni_export.runtime.loading.open_session`)."""
        from transformers import AutoTokenizer

        folder = Path(path)
        manifest = read_manifest(folder)
        if manifest.get("kind") != "backbone":
            raise CheckpointError(f"{folder} holds an exported {manifest.get('kind')}, not a backbone")
        _check_layout(folder, manifest)
        params = _read_params(folder, manifest)
        info = BackboneRuntimeInfo.read(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"cannot load the text tokenizer from {folder}: {exc}") from exc

        def session(graph: str, prepack: bool = True) -> GraphSession:
            return open_session(
                folder,
                graph,
                backend=backend,
                device=device,
                providers=providers,
                threads=threads,
                prepack=prepack,
            )

        # The prompt runs once per generation: its packed weights would be a second copy of
        # decode's for little gain. Each head opens when its mode first runs.
        sessions = {PREFILL: session(PREFILL, prepack=False), DECODE: session(DECODE)}
        for graph in HEADS.values():
            sessions[graph] = LazySession(partial(session, graph), manifest["graphs"][graph])
        heads: dict[GenerationMode, GraphSession] = {m: sessions[g] for m, g in HEADS.items()}
        # onnxruntime sessions pass numpy views: they take and return CPU tensors on any device.
        return cls(
            params,
            info,
            tokenizer,
            sessions[PREFILL],
            sessions[DECODE],
            heads,
            device=device if backend == "tensorrt" else "cpu",
        )

    @classmethod
    def from_params(cls, params: ExportedParams, *, seed: int = 0) -> Self:
        raise PluginError(_ONLY_EXPORTED.format(action="be built from params"))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        raise PluginError(_ONLY_EXPORTED.format(action="load a save_pretrained folder"))

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        raise PluginError(_ONLY_EXPORTED.format(action="save weights"))

    @property
    def device(self) -> torch.device:
        import torch

        return torch.device(self._device)

    # --- text ---

    @property
    def vocab(self) -> BackboneVocab:
        return self.info.vocab

    def tokenize(self, text: str) -> list[int]:
        ids: list[int] = self.tokenizer.encode(text, add_special_tokens=False)
        return ids

    def detokenize(self, ids: Sequence[int]) -> str:
        text_ids = [int(i) for i in ids if int(i) < self.vocab.text_vocab_size]
        return cast(str, self.tokenizer.decode(text_ids, skip_special_tokens=True))

    def chat_prompt(self, user_turn: str) -> str:
        if self.info.use_tokenizer_chat_template:
            prompt = self.tokenizer.apply_chat_template(
                [{"role": "user", "content": user_turn}], tokenize=False, add_generation_prompt=True
            )
            return str(prompt)
        return self.info.chat_prompt_template.replace("{user_turn}", user_turn)

    def image_prefix(self, grid_h: int, grid_w: int) -> str:
        template = self.info.image_prefix_template
        return template.replace("{grid_h}", str(grid_h)).replace("{grid_w}", str(grid_w))

    # --- forward ---

    def forward_step(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        position_ids: torch.Tensor,
        past: Any | None,
        mode: GenerationMode,
    ) -> BackboneStep:
        if mode not in ("text", "image"):
            raise InputError(f"generation mode must be 'text' or 'image', got {mode!r}")
        inputs: dict[str, torch.Tensor] = {
            "input_ids": input_ids.long(),
            "attention_mask": attention_mask.long(),
            "position_ids": position_ids.long(),
        }
        if past is None:
            outputs = self.prefill.run(inputs)
        else:
            if not isinstance(past, Mapping):
                raise InputError(
                    f"past must be the cache a previous forward_step returned, got {type(past).__name__}"
                )
            outputs = self.decode.run({**inputs, **past})
        cache = {
            past_name: outputs[present_name]
            for layer in range(self._num_layers)
            for past_name, present_name in zip(past_names(layer), present_names(layer), strict=True)
        }
        logits = self.heads[mode].run({"hidden": outputs["hidden"]})["logits"]
        return BackboneStep(logits=logits.to(self.device), past=cache)


_ONLY_EXPORTED = (
    "ExportedBackbone only runs artefacts written by `xomni export` (load them with "
    "from_exported or backend: onnxruntime/tensorrt in a config); it cannot {action}. "
    "Use the backbone plugin's torch implementation for that."
)


def _check_layout(folder: Path, manifest: Mapping[str, Any]) -> None:
    """Refuse, with the way out, a folder exported before the graphs stopped at the hidden state."""
    graphs = manifest.get("graphs") or {}
    missing = [graph for graph in GRAPHS if graph not in graphs]
    if not missing:
        for graph in GRAPHS:
            for name in (graphs[graph]["file"], *graphs[graph].get("external_data", [])):
                if not (folder / name).is_file():
                    raise CheckpointError(f"{folder / name} of graph {graph!r} is missing; re-export")
        return
    earlier = " (an earlier layout computed both heads in prefill/decode)" if PREFILL in graphs else ""
    raise CheckpointError(
        f"{folder} lacks the backbone graphs {missing}{earlier}; this xomni runs a backbone as "
        f"body graphs plus one head graph per generation mode. Re-export it: xomni export CONFIG "
        f"--component backbone --out {folder.parent}"
    )


def _read_params(folder: Path, manifest: Mapping[str, Any]) -> ExportedParams:
    path = folder / COMPONENT_FILE
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path} is missing or not valid JSON: {exc}") from exc
    return ExportedParams(
        kind=str(record.get("kind", manifest.get("kind"))),
        plugin=str(record.get("plugin", manifest.get("plugin"))),
        plugin_version=str(manifest.get("plugin_version", "")),
        precision=str(manifest.get("precision", "")),
        plugin_params=dict(record.get("params", {})),
    )
