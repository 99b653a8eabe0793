"""Text tokenizers built from scratch, for randomly initialised components.

A byte-level tokenizer covers any text with 256 base tokens, so a freshly built model can take
real prompts without downloading a vocabulary. Pretrained components load their own tokenizer
files instead.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

#: Keys ``from_pretrained`` records about how a tokenizer was loaded, not what it is; saving
#: them would make a folder differ with the way its tokenizer was last read.
LOADER_ONLY_KEYS = (
    "is_local",
    "local_files_only",
    "cache_dir",
    "force_download",
    "proxies",
    "token",
    "revision",
    "subfolder",
    "trust_remote_code",
    "_commit_hash",
)
TOKENIZER_CONFIG = "tokenizer_config.json"


def build_byte_tokenizer(
    special_tokens: Sequence[str] = (),
    *,
    added_tokens: Sequence[str] = (),
    model_max_length: int = 512,
    pad_token: str = "<|pad|>",
    eos_token: str = "<|endoftext|>",
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges: ids 0-255 are bytes, then ``pad``, ``eos``,
    then ``special_tokens`` (never split, skipped when decoding), then ``added_tokens`` (never
    split, kept when decoding), in the order given."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_of = _byte_of_char()
    byte_chars = sorted(alphabet, key=byte_of.__getitem__)
    vocab = {char: index for index, char in enumerate(byte_chars)}
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = decoders.ByteLevel()
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token=pad_token,
        eos_token=eos_token,
        model_max_length=model_max_length,
    )
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    if added_tokens:
        tokenizer.add_tokens(list(added_tokens))
    return tokenizer


def save_text_tokenizer(tokenizer: Any, folder: str | os.PathLike[str]) -> None:
    """``tokenizer.save_pretrained(folder)`` without the :data:`LOADER_ONLY_KEYS`, so that a
    tokenizer saves the same files however it was loaded."""
    tokenizer.save_pretrained(str(folder))
    path = Path(folder, TOKENIZER_CONFIG)
    if not path.is_file():
        return
    record = json.loads(path.read_text(encoding="utf-8"))
    if isinstance(record, dict) and any(key in record for key in LOADER_ONLY_KEYS):
        for key in LOADER_ONLY_KEYS:
            record.pop(key, None)
        path.write_text(
            json.dumps(record, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )


def _byte_of_char() -> dict[str, int]:
    """Map each ByteLevel alphabet character to the byte it stands for (GPT-2's table)."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    chars = list(printable)
    extra = 0
    for byte in range(256):
        if byte not in printable:
            printable.append(byte)
            chars.append(256 + extra)
            extra += 1
    return {chr(c): b for b, c in zip(printable, chars, strict=True)}
