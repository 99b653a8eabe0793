"""The CLIP score reward on transformers' ``CLIPModel``.

A component folder is a transformers CLIP folder (``config.json``, weights, tokenizer files,
``preprocessor_config.json``) plus ``xomni_component.json`` with the reward's params; a plain
transformers CLIP folder without that file loads with the default params. Images are
preprocessed by the PIL image processor (resize the short side, centre crop, CLIP mean/std), so
torchvision is not needed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, ClassVar, cast

import torch
from tokenizers import processors
from transformers import AutoTokenizer, CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig
from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

from xomni_core import (
    COMPONENT_FILE,
    CheckpointError,
    Reward,
    RewardBatch,
    RewardResult,
    atomic_directory,
    load_transformers_model,
    read_component_file,
    torch_dtype,
    write_component_file,
)
from xomni_core.text_tokenizers import build_byte_tokenizer

from .params import ClipNetworkParams, ClipScoreParams

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase
    from typing_extensions import Self

PLUGIN_NAME = "clip-score"
PREPROCESSOR_FILE = "preprocessor_config.json"
START_TOKEN, END_TOKEN, PAD_TOKEN = "<|startoftext|>", "<|endoftext|>", "<|pad|>"


def build_clip_byte_tokenizer(max_text_tokens: int) -> PreTrainedTokenizerBase:
    """A byte-level tokenizer that wraps each text in start and end tokens, as CLIP's does."""
    tokenizer = build_byte_tokenizer(
        [START_TOKEN], eos_token=END_TOKEN, pad_token=PAD_TOKEN, model_max_length=max_text_tokens
    )
    start = cast(int, tokenizer.convert_tokens_to_ids(START_TOKEN))
    end = cast(int, tokenizer.convert_tokens_to_ids(END_TOKEN))
    tokenizer.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=f"{START_TOKEN} $A {END_TOKEN}", special_tokens=[(START_TOKEN, start), (END_TOKEN, end)]
    )
    tokenizer.bos_token = START_TOKEN
    return tokenizer


def clip_config(network: ClipNetworkParams, tokenizer: PreTrainedTokenizerBase) -> CLIPConfig:
    """The transformers config of ``network``; special-token ids come from ``tokenizer``.

    CLIP pools the text at the first end token, so the config must know the tokenizer's id.
    """
    text = {
        "vocab_size": network.vocab_size or len(tokenizer),
        "hidden_size": network.text_hidden_size,
        "intermediate_size": network.text_intermediate_size,
        "num_hidden_layers": network.text_num_layers,
        "num_attention_heads": network.text_num_heads,
        "max_position_embeddings": network.max_text_tokens,
        "hidden_act": network.hidden_act,
        "layer_norm_eps": network.layer_norm_eps,
        "bos_token_id": tokenizer.bos_token_id,
        "eos_token_id": tokenizer.eos_token_id,
        "pad_token_id": tokenizer.pad_token_id,
        "projection_dim": network.projection_dim,
    }
    vision = {
        "hidden_size": network.vision_hidden_size,
        "intermediate_size": network.vision_intermediate_size,
        "num_hidden_layers": network.vision_num_layers,
        "num_attention_heads": network.vision_num_heads,
        "image_size": network.image_size_px,
        "patch_size": network.patch_size_px,
        "hidden_act": network.hidden_act,
        "layer_norm_eps": network.layer_norm_eps,
        "projection_dim": network.projection_dim,
    }
    return CLIPConfig(text_config=text, vision_config=vision, projection_dim=network.projection_dim)


def network_from_config(config: CLIPConfig) -> ClipNetworkParams:
    """The network params that describe a loaded ``config``."""
    text = cast(CLIPTextConfig, config.text_config)
    vision = cast(CLIPVisionConfig, config.vision_config)
    return ClipNetworkParams(
        vocab_size=text.vocab_size,
        text_hidden_size=text.hidden_size,
        text_intermediate_size=text.intermediate_size,
        text_num_layers=text.num_hidden_layers,
        text_num_heads=text.num_attention_heads,
        max_text_tokens=text.max_position_embeddings,
        vision_hidden_size=vision.hidden_size,
        vision_intermediate_size=vision.intermediate_size,
        vision_num_layers=vision.num_hidden_layers,
        vision_num_heads=vision.num_attention_heads,
        image_size_px=cast(int, vision.image_size),
        patch_size_px=cast(int, vision.patch_size),
        projection_dim=config.projection_dim,
        hidden_act=text.hidden_act,
        layer_norm_eps=text.layer_norm_eps,
    )


def clip_image_processor(image_size_px: int) -> CLIPImageProcessorPil:
    """CLIP's preprocessing: bicubic resize of the short side, centre crop, CLIP mean and std."""
    return CLIPImageProcessorPil(
        size={"shortest_edge": image_size_px}, crop_size={"height": image_size_px, "width": image_size_px}
    )


class ClipScoreReward(Reward[ClipScoreParams]):
    """``scale * max(cos, 0)`` (or ``scale * cos``) of CLIP image and prompt embeddings.

    ``details["cosine"]`` holds the raw cosine similarities.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = ClipScoreParams

    def __init__(
        self,
        params: ClipScoreParams,
        model: CLIPModel,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: CLIPImageProcessorPil,
    ) -> None:
        super().__init__(params)
        self.model = model
        self.model.train(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor

    @classmethod
    def _owner(cls) -> str:
        return f"reward plugin '{cls.name}'"

    @classmethod
    def from_params(cls, params: ClipScoreParams, *, seed: int = 0) -> Self:
        """Random weights (reproducible for ``seed``) and a byte-level tokenizer."""
        tokenizer = build_clip_byte_tokenizer(params.network.max_text_tokens)
        config = clip_config(params.network, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = CLIPModel(config)
        return cls(params, model, tokenizer, clip_image_processor(params.network.image_size_px))

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        """Load a folder written by :meth:`save_pretrained`, or a plain transformers CLIP folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"{cls._owner()}: model folder {folder} does not exist")
        if (folder / COMPONENT_FILE).is_file():
            params = cast(
                ClipScoreParams,
                read_component_file(folder, kind="reward", plugin=cls.name, params_class=cls.params_class),
            )
        else:
            params = cls.params_class()
        model = load_clip_model(folder, owner=cls._owner())
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{cls._owner()}: cannot load the tokenizer from {folder}: {exc}") from exc
        network = network_from_config(model.config)
        if (folder / PREPROCESSOR_FILE).is_file():
            image_processor = CLIPImageProcessorPil.from_pretrained(str(folder))
        else:
            image_processor = clip_image_processor(network.image_size_px)
        params = params.model_copy(update={"network": network})
        return cls(params, model, tokenizer, image_processor)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as folder:
            write_component_file(folder, kind="reward", plugin=self.name, params=self.params)
            self.model.save_pretrained(str(folder))
            self.tokenizer.save_pretrained(str(folder))
            self.image_processor.save_pretrained(str(folder))

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        self.model.to(device=device, dtype=torch_dtype(dtype) if dtype else None)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.inference_mode()
    def embed_images(self, images: Sequence[Image]) -> torch.Tensor:
        """L2-normalised image embeddings ``(len(images), projection_dim)`` in float32."""
        chunks = []
        for start in range(0, len(images), self.params.batch_size):
            batch = [image.convert("RGB") for image in images[start : start + self.params.batch_size]]
            pixels = self.image_processor(images=batch, return_tensors="pt")["pixel_values"]
            pixels = pixels.to(self.device, self.model.logit_scale.dtype)
            chunks.append(self.model.get_image_features(pixel_values=pixels).pooler_output.float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    @torch.inference_mode()
    def embed_texts(self, texts: Sequence[str]) -> torch.Tensor:
        """L2-normalised text embeddings ``(len(texts), projection_dim)``; long texts are truncated."""
        max_length = min(self.tokenizer.model_max_length, self.params.network.max_text_tokens)
        chunks = []
        for start in range(0, len(texts), self.params.batch_size):
            encoded = self.tokenizer(
                list(texts[start : start + self.params.batch_size]),
                padding=True,
                truncation=True,
                max_length=max_length,
                return_tensors="pt",
            ).to(self.device)
            features = self.model.get_text_features(
                input_ids=encoded["input_ids"], attention_mask=encoded["attention_mask"]
            )
            chunks.append(features.pooler_output.float())
        return torch.nn.functional.normalize(torch.cat(chunks), dim=-1)

    def cosine(self, images: Sequence[Image], prompts: Sequence[str]) -> torch.Tensor:
        """Cosine similarity of each image with its own prompt."""
        return (self.embed_images(images) * self.embed_texts(prompts)).sum(dim=-1)

    def score(self, batch: RewardBatch) -> RewardResult:
        if not batch.images:
            return RewardResult(self.name, (), self.direction, details={"cosine": ()})
        cosine = self.cosine(batch.images, batch.prompts)
        scaled = cosine.clamp(min=0.0) if self.params.clamp_negative else cosine
        scores = (self.params.scale * scaled).tolist()
        return RewardResult(
            self.name, tuple(scores), self.direction, details={"cosine": tuple(cosine.tolist())}
        )


def load_clip_model(folder: Path, *, owner: str) -> CLIPModel:
    """``CLIPModel`` weights from a transformers folder, in float32; any name or shape mismatch fails."""
    return cast(CLIPModel, load_transformers_model(CLIPModel, folder, model_type="clip", owner=owner))
