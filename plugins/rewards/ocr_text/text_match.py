"""Comparing the text an image should show with the text OCR read from it; standard library only.

Both texts are cut into *units*: each CJK character (Han, kana) is a unit of its own, and every
other run of letters and digits is a word unit. Before cutting, text is NFKC-normalised (full-width
forms become ASCII) and case-folded, apostrophes are deleted (``don't`` -> ``dont``) and all other
punctuation separates words. Units are compared as multisets, so order and line breaks do not
matter but each requested unit must be read as many times as it is requested.

OCR of rendered English often drops the space between words (``HELLO WORLD`` read as
``HELLOWORLD``); a read word that is not requested but is exactly a concatenation of requested
words counts as those words.

``characters`` grades a reading that misses: the similarity of the requested units' letters,
joined, to the read units' letters, joined (``2 * matches / total length``; ``MOON`` read as
``VOON`` is 0.75), so a word one stroke off scores more than no word.
"""

from __future__ import annotations

import difflib
import re
import unicodedata
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

_CJK = re.compile("([\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0003134f])")
_APOSTROPHES = re.compile("['\u2019`]")
_WORD = re.compile(r"[^\W_]+")

# Quote pairs, in the order they win when spans overlap. Straight and curly single quotes only
# open after a non-letter and only close before one, so apostrophes inside words are not quotes.
_QUOTES = (
    re.compile(r'"([^"]+)"'),
    re.compile("\u201c([^\u201d]+)\u201d"),
    re.compile("\u300c([^\u300d]+)\u300d"),
    re.compile("\u300e([^\u300f]+)\u300f"),
    re.compile("(?<!\\w)\u2018(.+?)\u2019(?!\\w)"),
    re.compile(r"(?<!\w)'(.+?)'(?!\w)"),
)


def text_units(text: str) -> list[str]:
    """The comparison units of ``text``, in reading order."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    text = _CJK.sub(r" \1 ", text)
    return _WORD.findall(text)


def extract_quoted_text(prompt: str) -> list[str]:
    """The spans of ``prompt`` inside quotes ("...", “...”, '...', ‘...’, 「...」, 『...』), in order.

    A span nested in (or overlapping) an earlier one is not returned again.
    """
    found = sorted(
        (match.start(), priority, match.end(), match.group(1))
        for priority, pattern in enumerate(_QUOTES)
        for match in pattern.finditer(prompt)
    )
    spans: list[str] = []
    taken_until = -1
    for start, _, end, text in found:
        if start >= taken_until and text.strip():
            spans.append(text)
            taken_until = end
    return spans


def requested_text(prompt: str, metadata: Mapping[str, Any]) -> str:
    """The text a sample asks for: ``metadata["target_text"]`` (a string or a list of strings)
    when given and not empty, else the quoted spans of the prompt joined by newlines."""
    target = metadata.get("target_text")
    if isinstance(target, str) and target.strip():
        return target
    if isinstance(target, Sequence) and not isinstance(target, str):
        parts = [str(part) for part in target if str(part).strip()]
        if parts:
            return "\n".join(parts)
    return "\n".join(extract_quoted_text(prompt))


@dataclass(frozen=True)
class TextMatch:
    """Multiset overlap between requested units and read units."""

    matched: int
    requested: int
    read: int
    characters: float = 0.0

    @property
    def recall(self) -> float:
        return self.matched / self.requested if self.requested else 0.0

    @property
    def precision(self) -> float:
        return self.matched / self.read if self.read else 0.0

    @property
    def f1(self) -> float:
        total = self.recall + self.precision
        return 2 * self.recall * self.precision / total if total else 0.0


def match_text(requested: str, read: str) -> TextMatch:
    """Compare the text an image should show with the text read from it."""
    requested_units, read_units = text_units(requested), text_units(read)
    wanted = Counter(requested_units)
    got: Counter[str] = Counter()
    for unit in read_units:
        parts = None if unit in wanted else _split_joined(unit, wanted)
        got.update(parts or [unit])
    matched = sum((wanted & got).values())
    letters = difflib.SequenceMatcher(None, "".join(requested_units), "".join(read_units), autojunk=False)
    return TextMatch(
        matched=matched,
        requested=sum(wanted.values()),
        read=sum(got.values()),
        characters=letters.ratio(),
    )


def _split_joined(unit: str, vocabulary: Mapping[str, int]) -> list[str] | None:
    """``unit`` cut into two or more vocabulary words (the fewest possible), or ``None``."""
    best: list[list[str] | None] = [[]] + [None] * len(unit)
    for end in range(1, len(unit) + 1):
        for start in range(end):
            prefix = best[start]
            if prefix is not None and unit[start:end] in vocabulary:
                candidate = [*prefix, unit[start:end]]
                current = best[end]
                if current is None or len(candidate) < len(current):
                    best[end] = candidate
    parts = best[-1]
    return parts if parts is not None and len(parts) > 1 else None
