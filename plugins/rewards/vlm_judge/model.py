"""The VLM judge reward on transformers' ``Qwen2_5_VLForConditionalGeneration``.

Each sample becomes one Qwen2.5-VL chat turn: an optional system turn, then a user turn holding
the image (``<|vision_start|>``, one ``<|image_pad|>`` per merged patch, ``<|vision_end|>``) and
the question, then the opening of the assistant's answer. One forward pass gives the logits of
the answer's first token. Images are preprocessed by transformers' PIL Qwen2-VL image processor
(no torchvision), and the image placeholders are expanded here exactly as Qwen2.5-VL's
processor does: ``grid_t * grid_h * grid_w / spatial_merge_size**2`` pads per image.

A component folder is a transformers Qwen2.5-VL folder (``config.json``, weights, tokenizer
files, ``preprocessor_config.json``) plus ``xomni_component.json``; a plain transformers folder
loads with the default params.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, cast

import torch
from transformers import AutoTokenizer, Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from xomni_core import (
    COMPONENT_FILE,
    CheckpointError,
    ConfigError,
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

from .params import QwenVLNetworkParams, VlmJudgeParams

if TYPE_CHECKING:
    from PIL.Image import Image
    from transformers import PreTrainedTokenizerBase
    from typing_extensions import Self

PLUGIN_NAME = "vlm-judge"
_OWNER = f"reward plugin '{PLUGIN_NAME}'"
PREPROCESSOR_FILE = "preprocessor_config.json"

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
VISION_START, VISION_END = "<|vision_start|>", "<|vision_end|>"
IMAGE_PAD, VIDEO_PAD = "<|image_pad|>", "<|video_pad|>"
_MARKUP = (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD)


def build_judge_tokenizer() -> PreTrainedTokenizerBase:
    """A byte-level tokenizer with the Qwen2.5-VL chat and vision tokens."""
    return build_byte_tokenizer(
        [IM_START, VISION_START, VISION_END, IMAGE_PAD, VIDEO_PAD], eos_token=IM_END, pad_token=PAD
    )


def qwen_vl_config(network: QwenVLNetworkParams, tokenizer: PreTrainedTokenizerBase) -> Qwen2_5_VLConfig:
    """The transformers config of ``network``; token ids come from ``tokenizer``."""
    ids = {token: cast(int, tokenizer.convert_tokens_to_ids(token)) for token in _MARKUP}
    text = {
        "vocab_size": network.vocab_size or len(tokenizer),
        "hidden_size": network.hidden_size,
        "intermediate_size": network.intermediate_size,
        "num_hidden_layers": network.num_layers,
        "num_attention_heads": network.num_heads,
        "num_key_value_heads": network.num_kv_heads,
        "max_position_embeddings": network.max_positions,
        "rms_norm_eps": network.rms_norm_eps,
        "initializer_range": network.initializer_range,
        "rope_parameters": {
            "rope_type": "default",
            "rope_theta": network.rope_theta,
            "mrope_section": list(network.mrope_section),
        },
        "bos_token_id": None,
        "eos_token_id": ids[IM_END],
        "pad_token_id": tokenizer.pad_token_id,
    }
    vision = {
        "depth": network.vision_depth,
        "hidden_size": network.vision_hidden_size,
        "intermediate_size": network.vision_intermediate_size,
        "num_heads": network.vision_num_heads,
        "out_hidden_size": network.hidden_size,
        "window_size": network.vision_window_size_px,
        "fullatt_block_indexes": list(network.vision_full_attention_blocks),
        "patch_size": network.patch_size_px,
        "spatial_merge_size": network.spatial_merge_size,
        "temporal_patch_size": network.temporal_patch_size,
        "initializer_range": network.initializer_range,
    }
    return Qwen2_5_VLConfig(
        text_config=text,
        vision_config=vision,
        image_token_id=ids[IMAGE_PAD],
        video_token_id=ids[VIDEO_PAD],
        vision_start_token_id=ids[VISION_START],
        vision_end_token_id=ids[VISION_END],
        tie_word_embeddings=False,
    )


class VlmJudgeReward(Reward[VlmJudgeParams]):
    """P(yes) of a Qwen2.5-VL model asked whether the image matches the prompt, in [0, 1].

    ``details["answer_mass"]`` is the unnormalised probability of all yes and no answers: low
    values mean the model wanted to say something else.
    """

    name: ClassVar[str] = PLUGIN_NAME
    params_class = VlmJudgeParams

    def __init__(
        self,
        params: VlmJudgeParams,
        model: Qwen2_5_VLForConditionalGeneration,
        tokenizer: PreTrainedTokenizerBase,
        image_processor: Qwen2VLImageProcessorPil,
    ) -> None:
        super().__init__(params)
        self.model = model
        self.model.train(False)
        self.tokenizer = tokenizer
        self.image_processor = image_processor
        _check_markup(model.config, tokenizer)
        self.yes_ids = self._first_token_ids(params.yes_answers)
        self.no_ids = self._first_token_ids(params.no_answers)
        shared = sorted(set(self.yes_ids) & set(self.no_ids))
        if shared:
            tokens = self.tokenizer.convert_ids_to_tokens(shared)
            raise ConfigError(
                f"{_OWNER}: yes_answers {params.yes_answers} and no_answers {params.no_answers} share "
                f"first tokens {tokens} in this tokenizer"
            )

    def _first_token_ids(self, answers: Sequence[str]) -> list[int]:
        ids = []
        for answer in answers:
            encoded = self.tokenizer.encode(answer, add_special_tokens=False)
            if not encoded:
                raise ConfigError(f"{_OWNER}: answer {answer!r} encodes to no token")
            if encoded[0] not in ids:
                ids.append(encoded[0])
        return ids

    @classmethod
    def from_params(cls, params: VlmJudgeParams, *, seed: int = 0) -> Self:
        """Random weights (reproducible for ``seed``) and a byte-level tokenizer."""
        tokenizer = build_judge_tokenizer()
        config = qwen_vl_config(params.network, tokenizer)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            model = Qwen2_5_VLForConditionalGeneration(config)
        image_processor = Qwen2VLImageProcessorPil(
            patch_size=params.network.patch_size_px,
            merge_size=params.network.spatial_merge_size,
            temporal_patch_size=params.network.temporal_patch_size,
        )
        return cls(params, model, tokenizer, image_processor)

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike[str]) -> Self:
        """Load a folder written by :meth:`save_pretrained`, or a plain transformers Qwen2.5-VL folder."""
        folder = Path(path)
        if not folder.is_dir():
            raise CheckpointError(f"{_OWNER}: model folder {folder} does not exist")
        if (folder / COMPONENT_FILE).is_file():
            params = cast(
                VlmJudgeParams,
                read_component_file(folder, kind="reward", plugin=PLUGIN_NAME, params_class=VlmJudgeParams),
            )
        else:
            params = VlmJudgeParams()
        model = _load_model(folder)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{_OWNER}: cannot load the tokenizer from {folder}: {exc}") from exc
        if not (folder / PREPROCESSOR_FILE).is_file():
            raise CheckpointError(f"{_OWNER}: {folder / PREPROCESSOR_FILE} is missing")
        image_processor = Qwen2VLImageProcessorPil.from_pretrained(str(folder))
        return cls(params, model, tokenizer, image_processor)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        with atomic_directory(path) as folder:
            write_component_file(folder, kind="reward", plugin=PLUGIN_NAME, params=self.params)
            self.model.save_pretrained(str(folder))
            self.tokenizer.save_pretrained(str(folder))
            self.image_processor.save_pretrained(str(folder))

    def to(self, device: str | None = None, dtype: str | None = None) -> Self:
        self.model.to(device=device, dtype=torch_dtype(dtype) if dtype else None)
        return self

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def chat_text(self, prompt: str, num_image_tokens: int) -> str:
        """The chat text of one sample, image placeholders expanded, ending where the answer starts."""
        for token in _MARKUP:
            prompt = prompt.replace(token, "")
        question = self.params.question_template.format(prompt=prompt.strip())
        system = self.params.system_prompt
        turns = f"{IM_START}system\n{system}{IM_END}\n" if system is not None else ""
        image = f"{VISION_START}{IMAGE_PAD * num_image_tokens}{VISION_END}"
        return f"{turns}{IM_START}user\n{image}{question}{IM_END}\n{IM_START}assistant\n"

    @torch.inference_mode()
    def answer_log_probs(
        self, images: Sequence[Image], prompts: Sequence[str]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Log-probabilities of the yes answers and of the no answers, one pair per sample."""
        size = self.image_processor.size
        sizes = {
            "shortest_edge": self.params.min_pixels or size["shortest_edge"],
            "longest_edge": self.params.max_pixels or size["longest_edge"],
        }
        merge = self.image_processor.merge_size**2
        yes_parts, no_parts = [], []
        for start in range(0, len(images), self.params.batch_size):
            batch_images = [image.convert("RGB") for image in images[start : start + self.params.batch_size]]
            vision = self.image_processor(images=batch_images, size=sizes, return_tensors="pt")
            texts = [
                self.chat_text(prompt, int(grid.prod()) // merge)
                for prompt, grid in zip(
                    prompts[start : start + len(batch_images)], vision["image_grid_thw"], strict=True
                )
            ]
            encoded = self.tokenizer(
                texts, padding=True, padding_side="left", add_special_tokens=False, return_tensors="pt"
            )
            output: Any = self.model(
                input_ids=encoded["input_ids"].to(self.device),
                attention_mask=encoded["attention_mask"].to(self.device),
                pixel_values=vision["pixel_values"].to(self.device, self.model.lm_head.weight.dtype),
                image_grid_thw=vision["image_grid_thw"].to(self.device),
                logits_to_keep=1,
            )
            log_probs = torch.log_softmax(output.logits[:, -1].float(), dim=-1)
            yes_parts.append(torch.logsumexp(log_probs[:, self.yes_ids], dim=-1))
            no_parts.append(torch.logsumexp(log_probs[:, self.no_ids], dim=-1))
        return torch.cat(yes_parts).cpu(), torch.cat(no_parts).cpu()

    def score(self, batch: RewardBatch) -> RewardResult:
        if not batch.images:
            return RewardResult(self.name, (), self.direction, details={"answer_mass": ()})
        log_yes, log_no = self.answer_log_probs(batch.images, batch.prompts)
        scores = torch.sigmoid(log_yes - log_no)
        mass = torch.logaddexp(log_yes, log_no).exp()
        return RewardResult(
            self.name, tuple(scores.tolist()), self.direction, details={"answer_mass": tuple(mass.tolist())}
        )


def _check_markup(config: Qwen2_5_VLConfig, tokenizer: PreTrainedTokenizerBase) -> None:
    """The tokenizer must hold the chat and vision tokens with the ids the network expects."""
    problems = []
    for token in (IM_START, IM_END, VISION_START, VISION_END, IMAGE_PAD):
        found = tokenizer.convert_tokens_to_ids(token)
        if not isinstance(found, int) or tokenizer.convert_ids_to_tokens(found) != token:
            problems.append(f"{token} is not a token")
    for token, expected in ((IMAGE_PAD, config.image_token_id), (VISION_START, config.vision_start_token_id)):
        found = tokenizer.convert_tokens_to_ids(token)
        if isinstance(found, int) and found != expected:
            problems.append(f"{token} has id {found} but the network expects {expected}")
    if problems:
        raise CheckpointError(f"{_OWNER}: the tokenizer does not fit the network: " + "; ".join(problems))


def _load_model(folder: Path) -> Qwen2_5_VLForConditionalGeneration:
    """Weights from a transformers folder, in float32; any name or shape mismatch fails."""
    model = load_transformers_model(
        Qwen2_5_VLForConditionalGeneration, folder, model_type="qwen2_5_vl", owner=_OWNER
    )
    return cast(Qwen2_5_VLForConditionalGeneration, model)
