"""Text tokenizers in the layout of official X-Omni releases and of older xomni folders: every
placeholder, image token and multimodal marker listed as an extra special token."""

from __future__ import annotations

from transformers import PreTrainedTokenizerBase

from xomni_core.text_tokenizers import build_byte_tokenizer
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import CHAT_TEMPLATE


def listed_special_tokenizer(params: XOmniParams) -> PreTrainedTokenizerBase:
    """The ids of :func:`build_tokenizer`, every token past eos and pad listed as special."""
    placeholders = [f"<|reserved_{i}|>" for i in range(params.vocab_size - 259)]
    image = [params.image_token(k) for k in range(params.image_vocab_size)]
    tokenizer = build_byte_tokenizer(
        ["<|im_start|>", *placeholders, *image, *params.mm_special_tokens],
        pad_token=params.pad_token,
        eos_token=params.eos_token,
        model_max_length=params.max_position_embeddings,
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer
