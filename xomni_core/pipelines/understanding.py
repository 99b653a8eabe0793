"""Image understanding: image -> token grid (tokenizer) -> chat turns -> text (backbone)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

from ..config import PipelineConfig
from ..cpu import cpu_threads
from ..errors import InputError
from ..heap import long_lived_objects
from ..interfaces import Backbone, Tokenizer
from ..registry import PluginRegistry
from ..types import GREEDY, SamplingParams, TextGenerationRequest
from .arguments import sampling_from
from .base import PipelineBase, apply_runtime, config_capabilities
from .build import announce, build_component, prepare

if TYPE_CHECKING:
    from PIL.Image import Image

_IMAGE_SLOT = "\x00image\x00"
#: New tokens an answer may take when the caller sets no budget and the context has room.
DEFAULT_MAX_NEW_TOKENS = 256


class Streamer(Protocol):
    """What transformers' streamers implement: ``put`` the prompt's ids, then each new id, then ``end``."""

    def put(self, value: Any) -> None: ...

    def end(self) -> None: ...


class ImageUnderstandingPipeline(PipelineBase):
    """Answers questions about an image with a tokenizer and a backbone, over one or more turns."""

    slots: ClassVar[tuple[str, ...]] = ("tokenizer", "backbone")

    def __init__(
        self,
        tokenizer: Tokenizer[Any],
        backbone: Backbone[Any],
        *,
        config: PipelineConfig | None = None,
        registry: PluginRegistry | None = None,
    ) -> None:
        self.tokenizer = tokenizer
        self.backbone = backbone
        self._init_base(config, registry)
        announce(self, config, registry)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | os.PathLike[str],
        *,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
        components: Mapping[str, Any] | None = None,
    ) -> ImageUnderstandingPipeline:
        """Build from a pipeline config; only its tokenizer and backbone are used (a decoder
        passed in ``components`` is ignored, so a text-to-image folder's components fit)."""
        given = {slot: c for slot, c in (components or {}).items() if slot in cls.slots}
        missing = [slot for slot in cls.slots if slot not in given]
        with long_lived_objects():
            resolved, registry = prepare(config, overrides=overrides, registry=registry, slots=missing)
            apply_runtime(resolved.config.runtime)
            built: dict[str, Any] = {
                slot: given[slot]
                if slot in given
                else build_component(resolved.component(slot), resolved.config, registry)
                for slot in cls.slots
            }
            pipeline = cls(built["tokenizer"], built["backbone"], config=resolved.config, registry=registry)
        pipeline.capabilities = config_capabilities(config)
        return pipeline

    def check_can_answer(self) -> None:
        """Raise :class:`InputError` when the model's folder says it was not trained to answer."""
        if not self.capabilities.get("understanding", True):
            raise InputError(
                "this model was not trained for image understanding (its model_index.json sets "
                "capabilities.understanding to false), so its answers would be noise; use a model "
                "trained for it, such as a converted X-Omni release"
            )

    def prompt_ids(self, image: Image, question: str, history: Sequence[tuple[str, str]] = ()) -> list[int]:
        """The conversation's ids: earlier ``(question, answer)`` turns, the first holding the
        image segment, then ``question`` and the opening of the answer."""
        grid = self.tokenizer.encode_images([image])
        turns = [*history, (question, None)]
        ids: list[int] = []
        for number, (asked, answered) in enumerate(turns):
            if number == 0:
                before, after = self.backbone.chat_prompt(f"{_IMAGE_SLOT}\n{asked}").split(_IMAGE_SLOT)
                ids += [
                    *self.backbone.tokenize(before),
                    *self.backbone.image_segment_ids(grid),
                    *self.backbone.tokenize(after),
                ]
            else:
                ids += self.backbone.tokenize(self.backbone.chat_prompt(asked))
            if answered is not None:
                ids += [*self.backbone.tokenize(answered), self.backbone.vocab.eos_id]
        return ids

    def __call__(
        self,
        image: Image,
        question: str,
        *,
        history: Sequence[tuple[str, str]] = (),
        max_new_tokens: int | None = None,
        sampling: SamplingParams | None = None,
        generation_config: Any = None,
        temperature: float | None = None,
        top_k: int | None = None,
        top_p: float | None = None,
        min_p: float | None = None,
        seed: int | None = None,
        streamer: Streamer | None = None,
        show_progress: bool | None = None,
    ) -> str:
        """Answer ``question`` about ``image`` after the earlier turns in ``history``.

        Greedy unless ``sampling``, a transformers ``generation_config`` or the sampling
        keywords say otherwise. Without ``max_new_tokens`` (or the generation config's) the
        answer may take up to 256 tokens, fewer when the context holds less. ``streamer``
        receives the prompt's ids, then each new id, then ``end()``, as in transformers.
        """
        self.check_can_answer()
        ids = self.prompt_ids(image, question, history)
        if max_new_tokens is None and generation_config is not None:
            max_new_tokens = getattr(generation_config, "max_new_tokens", None)
        room = self.backbone.vocab.max_positions - len(ids)
        if room < 1:
            raise InputError(
                f"the conversation takes {len(ids)} tokens, the backbone's whole context of "
                f"{self.backbone.vocab.max_positions} positions; drop earlier turns"
            )
        budget = min(DEFAULT_MAX_NEW_TOKENS, room) if max_new_tokens is None else max_new_tokens
        sampling = sampling_from(
            sampling or GREEDY,
            generation_config,
            temperature=temperature,
            top_k=top_k,
            top_p=top_p,
            min_p=min_p,
        )
        callback = None
        if streamer is not None:
            import torch

            streamer.put(torch.tensor([ids]))
            eos = self.backbone.vocab.eos_id

            def callback(step: int, timestep: Any, tensors: dict[str, Any]) -> None:
                token = tensors["tokens"][0, -1:]
                if int(token) != eos:
                    streamer.put(token.cpu())

        request = TextGenerationRequest(
            input_ids=(tuple(ids),),
            max_new_tokens=budget,
            sampling=sampling,
            seed=self.config.runtime.seed if seed is None else seed,
            show_progress=self._show_progress(show_progress) and streamer is None,
            callback=callback,
        )
        try:
            with cpu_threads(self.runtime.threads):
                answer = self.backbone.detokenize(self.backbone.generate_text(request)[0])
        finally:
            if streamer is not None:
                streamer.end()
        return answer


class TextStreamer:
    """Prints an answer as it is generated, like transformers' ``TextStreamer``: text is shown
    once the ids decoded so far end in a complete character."""

    def __init__(self, backbone: Backbone[Any], *, skip_prompt: bool = True, file: Any = None) -> None:
        self.backbone = backbone
        self.skip_prompt = skip_prompt
        self.file = file
        self._ids: list[int] = []
        self._printed = 0
        self._prompt_seen = False

    def put(self, value: Any) -> None:
        ids = [int(i) for i in value.reshape(-1).tolist()]
        if not self._prompt_seen:
            self._prompt_seen = True
            if self.skip_prompt:
                return
        self._ids += ids
        text = self.backbone.detokenize(self._ids)
        if text.endswith("\ufffd"):  # a character split over ids: wait for the rest
            return
        self.on_text(text[self._printed :])
        self._printed = len(text)

    def end(self) -> None:
        text = self.backbone.detokenize(self._ids)
        self.on_text(text[self._printed :], stream_end=True)
        self._ids, self._printed, self._prompt_seen = [], 0, False

    def on_text(self, text: str, stream_end: bool = False) -> None:
        """Print ``text``; a line break ends the stream."""
        print(text, end="\n" if stream_end else "", flush=True, file=self.file)
