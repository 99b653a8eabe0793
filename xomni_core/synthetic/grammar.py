"""The caption grammar of the synthetic scenes, as data: what ``xomni bench grammar`` prints.

Everything here is read from :mod:`.scenes`, the module that writes and parses the captions, so
the listing cannot drift from what :func:`~.scenes.parse_caption` accepts.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, get_args

from .scenes import (
    _COUNT_WORDS,
    _MAX_COUNT,
    _REGION_PHRASES,
    BACKGROUNDS,
    EXAMPLE_CAPTIONS,
    HELD_OUT_PAIRS,
    HELD_OUT_WORDS,
    OBJECT_COLORS,
    PREDICATES,
    SHAPES,
    WORDS,
    Category,
    Size,
)


@dataclass(frozen=True)
class Template:
    """How captions of one category are built; upper-case slots name the vocabulary lists."""

    category: Category
    pattern: str
    example: str


#: One template per category, in benchmark order; each example is one of EXAMPLE_CAPTIONS.
TEMPLATES: tuple[Template, ...] = (
    Template(
        "single_object", "a [SIZE] COLOR SHAPE [REGION] [on a BACKGROUND background]", EXAMPLE_CAPTIONS[0]
    ),
    Template(
        "two_object",
        "a [SIZE] COLOR SHAPE and a [SIZE] COLOR SHAPE (one colour, two shapes)",
        EXAMPLE_CAPTIONS[2],
    ),
    Template("counting", "COUNT COLOR SHAPEs", EXAMPLE_CAPTIONS[4]),
    Template("colors", "a COLOR SHAPE on a BACKGROUND background", EXAMPLE_CAPTIONS[1]),
    Template(
        "position",
        "a [SIZE] COLOR SHAPE | COUNT COLOR SHAPEs, then RELATION a [SIZE] COLOR SHAPE",
        EXAMPLE_CAPTIONS[5],
    ),
    Template(
        "color_attr",
        "a [SIZE] COLOR SHAPE and a [SIZE] COLOR SHAPE (two colours) [on a BACKGROUND background]",
        EXAMPLE_CAPTIONS[3],
    ),
    Template("text", 'the word "WORD"', EXAMPLE_CAPTIONS[6]),
)


def vocabulary() -> dict[str, Any]:
    """The scene vocabulary by slot, with the category templates and what only ``eval`` holds."""
    counts = [*(_COUNT_WORDS[n] for n in sorted(_COUNT_WORDS)), f"2-{_MAX_COUNT} as digits"]
    return {
        "COLOR": list(OBJECT_COLORS),
        "BACKGROUND": list(BACKGROUNDS),
        "SHAPE": list(SHAPES),
        "SIZE": list(get_args(Size)),
        "COUNT": counts,
        "RELATION": [*PREDICATES, "to the left of", "to the right of"],
        "REGION": list(_REGION_PHRASES.values()),
        "WORD": list(WORDS),
        "templates": {t.category: {"pattern": t.pattern, "example": t.example} for t in TEMPLATES},
        "eval_only": {
            "pairs": sorted(f"{color} {shape}" for color, shape in HELD_OUT_PAIRS),
            "words": sorted(HELD_OUT_WORDS),
        },
    }


def describe() -> str:
    """:func:`vocabulary` as text for a terminal."""
    vocab = vocabulary()
    lines = ["Captions the compositional benchmark draws, judges and parses.", "", "Templates:"]
    width = max(len(t.category) for t in TEMPLATES)
    for t in TEMPLATES:
        lines.append(f"  {t.category.ljust(width)}  {t.pattern}")
        lines.append(f"  {''.ljust(width)}  e.g. {t.example}")
    lines += ["", "Slots:"]
    for slot in ("COLOR", "BACKGROUND", "SHAPE", "SIZE", "COUNT", "RELATION", "REGION", "WORD"):
        lead = f"  {slot.ljust(10)}  "
        words = ", ".join(vocab[slot])
        lines.append(textwrap.fill(words, 100, initial_indent=lead, subsequent_indent=" " * len(lead)))
    held = vocab["eval_only"]
    lines += [
        "",
        "Only in the eval split:",
        f"  pairs       {', '.join(held['pairs'])}",
        f"  words       {', '.join(held['words'])}",
        "",
        "Case, extra spaces and a final full stop do not matter; a COLOR object is never drawn on",
        "a background of its own colour.",
    ]
    return "\n".join(lines)
