"""Image understanding: image -> token grid (tokenizer) -> chat turn -> greedy text (backbone)."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from ..config import PipelineConfig
from ..interfaces import Backbone, Tokenizer
from ..registry import PluginRegistry
from ..types import GREEDY, SamplingParams, TextGenerationRequest
from .build import announce, build_component, prepare

if TYPE_CHECKING:
    from PIL.Image import Image

_IMAGE_SLOT = "\x00image\x00"


class ImageUnderstandingPipeline:
    """Answers questions about an image with a tokenizer and a backbone."""

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
        self.config = config or PipelineConfig()
        announce(self, config, registry)

    @classmethod
    def from_config(
        cls,
        config: PipelineConfig | str | os.PathLike[str],
        *,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
    ) -> ImageUnderstandingPipeline:
        """Build from a pipeline config; only its tokenizer and backbone are used."""
        resolved, registry = prepare(
            config, overrides=overrides, registry=registry, slots=("tokenizer", "backbone")
        )
        tokenizer: Any = build_component(resolved.component("tokenizer"), resolved.config, registry)
        backbone: Any = build_component(resolved.component("backbone"), resolved.config, registry)
        return cls(tokenizer, backbone, config=resolved.config, registry=registry)

    def prompt_ids(self, image: Image, question: str) -> list[int]:
        """The chat turn's ids with the image segment in place of the image."""
        grid = self.tokenizer.encode_images([image])
        before, after = self.backbone.chat_prompt(f"{_IMAGE_SLOT}\n{question}").split(_IMAGE_SLOT)
        return [
            *self.backbone.tokenize(before),
            *self.backbone.image_segment_ids(grid),
            *self.backbone.tokenize(after),
        ]

    def __call__(
        self,
        image: Image,
        question: str,
        *,
        max_new_tokens: int = 256,
        sampling: SamplingParams = GREEDY,
        seed: int | None = None,
        show_progress: bool = True,
    ) -> str:
        """Answer ``question`` about ``image`` (greedy by default)."""
        ids = self.prompt_ids(image, question)
        request = TextGenerationRequest(
            input_ids=(tuple(ids),),
            max_new_tokens=max_new_tokens,
            sampling=sampling,
            seed=self.config.runtime.seed if seed is None else seed,
            show_progress=show_progress,
        )
        return self.backbone.detokenize(self.backbone.generate_text(request)[0])
