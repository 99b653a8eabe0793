"""Text tokenizers built from scratch, for randomly initialised components.

A byte-level tokenizer covers any text with 256 base tokens, so a freshly built model can take
real prompts without downloading a vocabulary. Pretrained components load their own tokenizer
files instead; :func:`unlist_special_tokens` keeps such files quick to load when they list
thousands of special tokens.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Sequence
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
TOKENIZER_FILE = "tokenizer.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
#: How :func:`build_byte_tokenizer` names placeholder ``i``; decoding drops every token matching
#: :data:`PLACEHOLDER_PATTERN`.
PLACEHOLDER = "<|reserved_{index}|>"
PLACEHOLDER_PATTERN = r"^<\|reserved_\d+\|>$"


def build_byte_tokenizer(
    special_tokens: Sequence[str] = (),
    *,
    placeholders: int = 0,
    bulk_special_tokens: Sequence[str] = (),
    added_tokens: Sequence[str] = (),
    model_max_length: int = 512,
    pad_token: str = "<|pad|>",
    eos_token: str = "<|endoftext|>",
) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer without merges.

    Ids 0-255 are bytes, then ``eos`` and ``pad``, then ``special_tokens``, then ``placeholders``
    tokens ``<|reserved_i|>``, then ``bulk_special_tokens``, then ``added_tokens``, in the order
    given. Special tokens of both kinds are never split and are skipped when decoding; added
    tokens are never split and kept when decoding. Placeholders only reserve ids: the
    vocabulary holds them, no text encodes to them and decoding drops them.

    Only ``special_tokens`` are listed as transformers' extra special tokens. Bulk special
    tokens are marked special in ``tokenizer.json`` alone, and placeholders are not added
    tokens at all: loading a folder checks every listed special token against a list of all
    added tokens, which takes minutes for the ~10^5 tokens of a real-sized id space.
    """
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    alphabet = pre_tokenizers.ByteLevel.alphabet()
    byte_of = _byte_of_char()
    byte_chars = sorted(alphabet, key=byte_of.__getitem__)
    vocab = {char: index for index, char in enumerate(byte_chars)}
    byte_level = decoders.ByteLevel()
    if placeholders:
        # Placeholders sit between added tokens, so the vocabulary holds everything before them
        # too (transformers registers eos before pad); added tokens found in it keep its ids.
        held = [*dict.fromkeys([eos_token, pad_token]), *special_tokens]
        held += [PLACEHOLDER.format(index=i) for i in range(placeholders)]
        vocab.update((token, len(byte_chars) + i) for i, token in enumerate(held))
    core = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.decoder = (
        decoders.Sequence([decoders.Replace(Regex(PLACEHOLDER_PATTERN), ""), byte_level])
        if placeholders
        else byte_level
    )
    tokenizer = PreTrainedTokenizerFast(  # type: ignore[no-untyped-call]
        tokenizer_object=core,
        pad_token=pad_token,
        eos_token=eos_token,
        model_max_length=model_max_length,
    )
    if special_tokens:
        tokenizer.add_special_tokens({"additional_special_tokens": list(special_tokens)})
    if bulk_special_tokens:
        tokenizer.add_tokens(
            [AddedToken(token, special=True, normalized=False) for token in bulk_special_tokens]
        )
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


def unlist_special_tokens(folder: str | os.PathLike[str], tokens: Collection[str]) -> int:
    """Drop ``tokens`` from the lists of special tokens in ``folder``'s ``tokenizer_config.json``
    and ``special_tokens_map.json`` where ``tokenizer.json`` already holds them as special added
    tokens; return how many were dropped.

    Such tokens stay exactly as they were for encoding and decoding (never split, the same ids,
    skipped when decoding); only transformers' list of extra special tokens loses them, which
    keeps loading fast when there are thousands (each listed token is checked against a list of
    all added tokens).
    """
    special = _special_added_tokens(Path(folder, TOKENIZER_FILE))
    drop = special.intersection(tokens)
    if not drop:
        return 0
    dropped: set[str] = set()

    def keep(entry: Any) -> bool:
        content = entry.get("content") if isinstance(entry, dict) else entry
        if isinstance(content, str) and content in drop:
            dropped.add(content)
            return False
        return True

    for name in (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP):
        path = Path(folder, name)
        if not path.is_file():
            continue
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, dict):
            continue
        changed = False
        for key in ("additional_special_tokens", "extra_special_tokens"):
            if isinstance(record.get(key), list):
                kept = [entry for entry in record[key] if keep(entry)]
                changed |= len(kept) != len(record[key])
                record[key] = kept
        decoder = record.get("added_tokens_decoder")
        if isinstance(decoder, dict):
            kept_decoder = {index: entry for index, entry in decoder.items() if keep(entry)}
            changed |= len(kept_decoder) != len(decoder)
            record["added_tokens_decoder"] = kept_decoder
        if changed:
            path.write_text(json.dumps(record, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return len(dropped)


def _special_added_tokens(path: Path) -> set[str]:
    """The contents of the added tokens that ``tokenizer.json`` marks special."""
    if not path.is_file():
        return set()
    record = json.loads(path.read_text(encoding="utf-8"))
    added = record.get("added_tokens") if isinstance(record, dict) else None
    if not isinstance(added, list):
        return set()
    return {
        entry["content"]
        for entry in added
        if isinstance(entry, dict) and entry.get("special") and isinstance(entry.get("content"), str)
    }


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
