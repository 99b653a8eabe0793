"""Scene specs for synthetic captioned images: what a prompt asks for and where things are drawn.

A :class:`SceneSpec` is a frozen pydantic model that serialises to JSON, so it can ride along
with a prompt as per-sample metadata (``{"scene": ...}``). It holds both the *assertions* a
caption makes (colours, shapes, counts, a relation, a word, and optionally a size, a region
or the background) and the *layout* the renderer draws (centres and sizes in px). A judge only
checks the assertions, which are exactly what :func:`caption` writes, so two specs with the
same caption are the same requirement; :func:`parse_caption` reads a caption back into a spec.

Splits are deterministic: ``train`` and ``rl`` never contain a held-out (colour, shape) pair or
word, ``eval`` holds every caption that does plus a fixed share of the others, and the three
splits never share a caption.
"""

from __future__ import annotations

import difflib
import random
import re
import zlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Literal, get_args

from pydantic import BaseModel, ConfigDict, Field, model_validator

from ..errors import InputError

Shape = Literal["circle", "square", "triangle"]
ColorName = Literal["red", "green", "blue", "yellow", "purple", "orange", "white", "black", "gray"]
Size = Literal["small", "large"]
Region = Literal["left", "right", "top", "bottom", "center"]
Predicate = Literal["left of", "right of", "above", "below"]
Category = Literal["single_object", "two_object", "counting", "colors", "position", "color_attr", "text"]
Split = Literal["train", "rl", "eval"]

SHAPES: tuple[Shape, ...] = get_args(Shape)
CATEGORIES: tuple[Category, ...] = get_args(Category)
SPLITS: tuple[Split, ...] = get_args(Split)
PREDICATES: tuple[Predicate, ...] = get_args(Predicate)
REGIONS: tuple[Region, ...] = get_args(Region)

#: Named colours, far apart in RGB (the closest pair is about 93 apart).
PALETTE: dict[ColorName, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 160, 60),
    "blue": (30, 80, 220),
    "yellow": (245, 215, 30),
    "purple": (145, 50, 200),
    "orange": (240, 120, 20),
    "white": (250, 250, 250),
    "black": (15, 15, 15),
    "gray": (128, 128, 128),
}
OBJECT_COLORS: tuple[ColorName, ...] = (
    "red",
    "green",
    "blue",
    "yellow",
    "purple",
    "orange",
    "white",
    "black",
)
BACKGROUNDS: tuple[ColorName, ...] = ("white", "gray", "black")

#: (colour, shape) pairs that only ``eval`` scenes contain.
HELD_OUT_PAIRS: frozenset[tuple[ColorName, Shape]] = frozenset(
    {
        ("red", "triangle"),
        ("blue", "circle"),
        ("yellow", "square"),
        ("purple", "circle"),
        ("green", "triangle"),
    }
)

#: Words for the text category: uppercase, 3-6 letters, read reliably by OCR at 128 px.
WORDS: tuple[str, ...] = (
    "CAT", "DOG", "SUN", "STAR", "TREE", "BOOK", "FISH", "BIRD", "DOOR", "RAIN", "SNOW", "WIND",
    "FIRE", "GOLD", "ROSE", "MILK", "BREAD", "APPLE", "HOUSE", "RIVER", "STONE", "HORSE", "ROBOT",
    "PLANET", "CASTLE", "BRIDGE", "FOREST", "SILVER", "PAPER", "TRAIN", "MUSIC", "LIGHT", "NIGHT",
    "HAPPY", "SMILE", "OCEAN", "KING", "ZEBRA", "JUMP", "CODE", "DATA", "MOON", "TIGER", "PIANO",
    "GARDEN", "QUEEN", "LAMP", "CLOUD", "SHIP",
)  # fmt: skip
#: Words that only ``eval`` scenes contain.
HELD_OUT_WORDS: frozenset[str] = frozenset(
    {"MOON", "TIGER", "PIANO", "GARDEN", "QUEEN", "LAMP", "CLOUD", "SHIP"}
)

_COUNT_WORDS = {2: "two", 3: "three", 4: "four"}
_REGION_PHRASES: dict[Region, str] = {
    "left": "on the left",
    "right": "on the right",
    "top": "at the top",
    "bottom": "at the bottom",
    "center": "in the center",
}
# Half sizes as fractions of the shorter image side. An asserted size is drawn from its band; an
# unasserted one from the whole range. A judge separates the bands at SIZE_THRESHOLD.
SMALL_BAND = (0.075, 0.095)
LARGE_BAND = (0.15, 0.18)
SIZE_THRESHOLD = 0.12
_GAP = 0.07  # free space between bounding boxes, as a fraction of the shorter side
_MAX_TRIES = 200


class SceneObject(BaseModel):
    """A filled shape: colour and shape are always asserted, ``size`` and ``region`` when set.

    The shape fills the square box of half side ``half_size_px`` around its centre (a triangle
    points up, its base on the box's bottom edge).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    shape: Shape
    color: ColorName
    center_x_px: float
    center_y_px: float
    half_size_px: float = Field(gt=0)
    size: Size | None = None
    region: Region | None = None

    def box_px(self) -> tuple[float, float, float, float]:
        """``(left, top, right, bottom)`` of the square the shape fills."""
        h = self.half_size_px
        return (self.center_x_px - h, self.center_y_px - h, self.center_x_px + h, self.center_y_px + h)


class SceneWord(BaseModel):
    """A word drawn in Pillow's default TrueType font, centred at ``(center_x_px, center_y_px)``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    text: str = Field(min_length=1)
    color: ColorName
    center_x_px: float
    center_y_px: float
    font_size_px: int = Field(gt=0)


class SceneRelation(BaseModel):
    """``objects[subject]`` is ``predicate`` ``objects[object]``, judged on centroids.

    The subject may be a counted group: every object of ``objects[subject]``'s colour and shape
    (see :meth:`SceneSpec.group_of`) must stand on the named side of the object.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: int = Field(ge=0)
    predicate: Predicate
    object: int = Field(ge=0)


class SceneSpec(BaseModel):
    """One synthetic image and the claims its caption makes.

    ``mentions_background`` says whether the caption names the background colour.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    category: Category
    width_px: int = Field(gt=0)
    height_px: int = Field(gt=0)
    background: ColorName
    objects: tuple[SceneObject, ...] = ()
    relation: SceneRelation | None = None
    word: SceneWord | None = None
    mentions_background: bool = False

    @model_validator(mode="after")
    def _consistent(self) -> SceneSpec:
        if self.relation is not None:
            n = len(self.objects)
            if not (self.relation.subject < n and self.relation.object < n) or (
                self.relation.subject == self.relation.object
            ):
                raise ValueError(
                    f"relation names objects {self.relation.subject} and {self.relation.object} of {n}"
                )
            if self.category == "position":
                subjects = self.group_of(self.relation.subject)
                if self.relation.object in subjects or len(subjects) + 1 != n:
                    raise ValueError(
                        "a position scene holds its subject (one object, or a group of one colour and "
                        "shape) and one object of another colour or shape"
                    )
        elif self.category == "position":
            raise ValueError("a position scene needs a relation")
        if self.category == "text" and self.word is None:
            raise ValueError("a text scene needs a word")
        if self.category != "text" and not self.objects:
            raise ValueError(f"a {self.category} scene needs objects")
        return self

    @property
    def caption(self) -> str:
        return caption(self)

    def groups(self) -> list[tuple[ColorName, Shape, int]]:
        """The asserted (colour, shape, count) groups, in order of first appearance."""
        counts: dict[tuple[ColorName, Shape], int] = {}
        for obj in self.objects:
            counts[obj.color, obj.shape] = counts.get((obj.color, obj.shape), 0) + 1
        return [(color, shape, n) for (color, shape), n in counts.items()]

    def group_of(self, index: int) -> tuple[int, ...]:
        """Indices of the objects with the colour and shape of ``objects[index]``."""
        key = self.objects[index].color, self.objects[index].shape
        return tuple(i for i, obj in enumerate(self.objects) if (obj.color, obj.shape) == key)

    def held_out(self) -> bool:
        """Whether the scene holds a held-out (colour, shape) pair or word."""
        pairs = any((o.color, o.shape) in HELD_OUT_PAIRS for o in self.objects)
        return pairs or (self.word is not None and self.word.text in HELD_OUT_WORDS)

    def metadata(self) -> dict[str, Any]:
        """Per-sample metadata for rewards: the scene as JSON, plus ``target_text`` for words."""
        meta: dict[str, Any] = {"scene": self.model_dump(mode="json")}
        if self.word is not None:
            meta["target_text"] = self.word.text
        return meta

    @classmethod
    def from_metadata(cls, metadata: Mapping[str, Any]) -> SceneSpec | None:
        """The scene in per-sample metadata written by :meth:`metadata` (or as a JSON string, as a
        dataset column may hold it), or ``None`` if absent."""
        scene = metadata.get("scene")
        if isinstance(scene, str | bytes):
            return cls.from_json(scene)
        return None if scene is None else cls.model_validate(scene)

    def to_json(self) -> str:
        return self.model_dump_json()

    @classmethod
    def from_json(cls, text: str | bytes) -> SceneSpec:
        return cls.model_validate_json(text)


def caption(scene: SceneSpec) -> str:
    """The prompt for ``scene``: one template per category; it states exactly what a judge checks."""
    objs = scene.objects
    if scene.category == "text":
        assert scene.word is not None
        return f'the word "{scene.word.text}"'
    if scene.category == "counting":
        return _counted(*scene.groups()[0])
    if scene.category == "position":
        assert scene.relation is not None
        rel = scene.relation
        subject, count = objs[rel.subject], len(scene.group_of(rel.subject))
        noun = _noun(subject) if count == 1 else _counted(subject.color, subject.shape, count)
        return f"{noun} {rel.predicate} {_noun(objs[rel.object])}"
    text = " and ".join(_noun(obj) for obj in objs)
    if objs[0].region is not None:
        text += f" {_REGION_PHRASES[objs[0].region]}"
    if scene.mentions_background:
        text += f" on {_article(scene.background)} {scene.background} background"
    return text


def _noun(obj: SceneObject) -> str:
    words = [w for w in (obj.size, obj.color, obj.shape) if w]
    return f"{_article(words[0])} {' '.join(words)}"


def _counted(color: ColorName, shape: Shape, count: int) -> str:
    return f"{_COUNT_WORDS.get(count, str(count))} {color} {shape}s"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


#: One caption per template, shown when a caption does not parse.
EXAMPLE_CAPTIONS: tuple[str, ...] = (
    "a large orange triangle on the left",
    "a red circle on a white background",
    "a green circle and a green square",
    "a red circle and a blue square",
    "three yellow triangles",
    "two red circles left of a blue square",
    'the word "CAT"',
)

_COLORS: dict[str, ColorName] = {name: name for name in PALETTE}
_SHAPE_NAMES: dict[str, Shape] = {name: name for name in SHAPES}
_SIZES: dict[str, Size] = {"small": "small", "large": "large"}
_PREDICATE_NAMES: dict[str, Predicate] = {name: name for name in PREDICATES}
_NUMBERS = {word: n for n, word in _COUNT_WORDS.items()}
_MAX_COUNT = 9  # about as many small shapes as fit apart on the image
_COLOR_RE = "|".join(PALETTE)
_SHAPE_RE = "|".join(SHAPES)
_NOUN_RE = re.compile(rf"an? (?:(small|large) )?({_COLOR_RE}) ({_SHAPE_RE})")
_GROUP_RE = re.compile(rf"({'|'.join(_NUMBERS)}|\d+) ({_COLOR_RE}) ({_SHAPE_RE})s")
_PREDICATE_RE = re.compile(r" (?:to the )?(left of|right of) | (above|below) ")
_BACKGROUND_RE = re.compile(rf" on an? ({_COLOR_RE}) background$")
_WORD_RE = re.compile(r'the word "([^"]+)"', re.IGNORECASE)

_Noun = tuple[ColorName, Shape, Size | None]
_Layout = Callable[[random.Random, int, int], SceneSpec | None]


def parse_caption(text: str, *, width_px: int = 128, height_px: int = 128, seed: int = 0) -> SceneSpec:
    """The scene a caption asks for: the inverse of :func:`caption` for every category.

    The assertions come from ``text`` (case, extra spaces and a final full stop aside; "to the
    left of" reads as "left of"); the layout is drawn from ``seed`` so that the rendered scene
    bears them out. Text outside the grammar raises :class:`InputError` with examples.
    """
    if min(width_px, height_px) < 32:
        raise InputError(f"scenes need at least 32 x 32 px, got {width_px} x {height_px}")
    clean = " ".join(text.split()).removesuffix(".")
    rng = random.Random(f"xomni-parse/{seed}/{clean}")
    word = _WORD_RE.fullmatch(clean)
    if word:
        return _word_scene(rng, rng.choice(BACKGROUNDS), word[1], width_px, height_px)
    layout = _parse_shapes(text, clean.lower())
    for _ in range(20):
        scene = layout(rng, width_px, height_px)
        if scene is not None:
            return scene
    raise InputError(f"cannot lay out the caption {text!r} in {width_px} x {height_px} px")


def _parse_shapes(text: str, clean: str) -> _Layout:
    """How to lay out a caption about shapes; ``text`` is the caption as given, for errors."""
    group = _GROUP_RE.fullmatch(clean)
    if group:
        color, shape, count = _group_of(text, group)
        return lambda rng, w, h: _scene_of(
            rng, "counting", _free_background(rng, [color]), [(color, shape)] * count, w, h
        )
    relation = _PREDICATE_RE.search(clean)
    if relation:
        return _parse_position(text, clean, relation)
    body, mentioned = clean, None
    background = _BACKGROUND_RE.search(body)
    if background:
        body, mentioned = body[: background.start()], _COLORS[background[1]]
    region = next((r for r, phrase in _REGION_PHRASES.items() if body.endswith(f" {phrase}")), None)
    if region is not None:
        body = body.removesuffix(f" {_REGION_PHRASES[region]}")
    nouns = [_noun_of(text, part) for part in body.split(" and ")]
    colors = [color for color, _, _ in nouns]
    if mentioned in colors:
        raise InputError(f"caption {text!r}: a {mentioned} object does not show on a {mentioned} background")
    if len(nouns) == 1:
        plain = region is None and nouns[0][2] is None and mentioned is not None
        category: Category = "colors" if plain else "single_object"
        return lambda rng, w, h: _mentioning(
            _single_scene(rng, category, mentioned or _free_background(rng, colors), nouns[0], region, w, h),
            mentioned,
        )
    if len(nouns) > 2 or region is not None or nouns[0][:2] == nouns[1][:2]:
        raise _unknown(text)
    category = "two_object" if colors[0] == colors[1] else "color_attr"
    pairs = [(color, shape) for color, shape, _ in nouns]
    sizes = [size for _, _, size in nouns]
    return lambda rng, w, h: _mentioning(
        _scene_of(rng, category, mentioned or _free_background(rng, colors), pairs, w, h, sizes), mentioned
    )


def _parse_position(text: str, clean: str, relation: re.Match[str]) -> _Layout:
    predicate = _PREDICATE_NAMES[relation[1] or relation[2]]
    left, right = clean[: relation.start()], clean[relation.end() :]
    group = _GROUP_RE.fullmatch(left)
    if group:
        color, shape, count = _group_of(text, group)
        subject: _Noun = (color, shape, None)
    else:
        subject, count = _noun_of(text, left), 1
    other = _noun_of(text, right)
    if other[:2] == subject[:2]:
        raise InputError(f"caption {text!r}: the two related objects need different colours or shapes")
    colors = [subject[0], other[0]]
    return lambda rng, w, h: _position_scene(
        rng, _free_background(rng, colors), subject, count, other, predicate, w, h
    )


def _noun_of(text: str, part: str) -> _Noun:
    match = _NOUN_RE.fullmatch(part)
    if match is None:
        raise _unknown(text)
    size = None if match[1] is None else _SIZES[match[1]]
    return _object_color(text, match[2]), _SHAPE_NAMES[match[3]], size


def _group_of(text: str, match: re.Match[str]) -> tuple[ColorName, Shape, int]:
    count = _NUMBERS.get(match[1]) or int(match[1])
    if not 2 <= count <= _MAX_COUNT:
        raise InputError(f"caption {text!r}: a counted group holds 2 to {_MAX_COUNT} objects")
    return _object_color(text, match[2]), _SHAPE_NAMES[match[3]], count


def _object_color(text: str, name: str) -> ColorName:
    color = _COLORS[name]
    if color not in OBJECT_COLORS:
        raise InputError(
            f"caption {text!r}: {name} is a background colour; objects are {', '.join(OBJECT_COLORS)}"
        )
    return color


def _free_background(rng: random.Random, colors: Sequence[ColorName]) -> ColorName:
    # Gray is a background only, so some background is always free.
    return rng.choice([b for b in BACKGROUNDS if b not in colors])


def _mentioning(scene: SceneSpec | None, background: ColorName | None) -> SceneSpec | None:
    if scene is None or background is None:
        return scene
    return scene.model_copy(update={"mentions_background": True})


def _unknown(text: str) -> InputError:
    examples = "; ".join(EXAMPLE_CAPTIONS)
    return InputError(f"cannot read the caption {text!r}; captions look like: {examples}")


def split_of_caption(text: str) -> Split:
    """The split a caption without held-out parts belongs to: a stable hash, 20% rl, 20% eval."""
    bucket = zlib.crc32(text.encode()) % 10
    return "eval" if bucket < 2 else "rl" if bucket < 4 else "train"


def in_split(scene: SceneSpec, split: Split, *, rl_held_out: bool = False) -> bool:
    """Whether ``scene`` belongs to ``split``.

    Held-out scenes belong to ``eval``; with ``rl_held_out`` those whose caption hashes to ``rl``
    belong to ``rl`` as well, so prompts may name what no train image shows.
    """
    if scene.held_out():
        return split == "eval" or (rl_held_out and split == "rl" and split_of_caption(caption(scene)) == "rl")
    return split_of_caption(caption(scene)) == split


def check_split(split: str) -> Split:
    if split not in SPLITS:
        close = difflib.get_close_matches(split, SPLITS, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InputError(f"unknown split '{split}'.{hint} Splits: {', '.join(SPLITS)}.")
    return split


def check_categories(names: Sequence[str]) -> tuple[Category, ...]:
    unknown = [name for name in names if name not in CATEGORIES]
    if unknown:
        close = difflib.get_close_matches(unknown[0], CATEGORIES, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise InputError(f"unknown category '{unknown[0]}'.{hint} Categories: {', '.join(CATEGORIES)}.")
    if not names:
        raise InputError("at least one category is needed")
    return tuple(names)  # type: ignore[arg-type]


def sample_scenes(
    split: str,
    n: int,
    *,
    seed: int = 0,
    categories: Sequence[str] = CATEGORIES,
    width_px: int = 128,
    height_px: int = 128,
    rl_held_out: bool = False,
) -> list[SceneSpec]:
    """``n`` scenes of ``split``, cycling through ``categories`` so each gets an equal share.

    Scene ``i`` depends only on ``(split, seed, i)``, so a longer list extends a shorter one.
    ``rl_held_out`` lets ``rl`` scenes hold held-out pairs and words (see :func:`in_split`).
    """
    chosen_split = check_split(split)
    chosen = check_categories(categories)
    if n < 0:
        raise InputError(f"n must be at least 0, got {n}")
    if min(width_px, height_px) < 32:
        raise InputError(f"scenes need at least 32 x 32 px, got {width_px} x {height_px}")
    return [
        sample_scene(
            random.Random(f"xomni-scene/{chosen_split}/{seed}/{index}"),
            chosen[index % len(chosen)],
            chosen_split,
            width_px=width_px,
            height_px=height_px,
            rl_held_out=rl_held_out,
        )
        for index in range(n)
    ]


def sample_scene(
    rng: random.Random,
    category: Category,
    split: Split,
    *,
    width_px: int = 128,
    height_px: int = 128,
    rl_held_out: bool = False,
) -> SceneSpec:
    """One random scene of ``category`` that belongs to ``split``."""
    sampler = _SAMPLERS[category]
    while True:
        scene = sampler(rng, width_px, height_px)
        if scene is not None and in_split(scene, split, rl_held_out=rl_held_out):
            return scene


def _sample_single(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    size: Size | None = rng.choice((None, "small", "large"))
    region: Region | None = rng.choice((None, *REGIONS))
    color = rng.choice(_colors_for(background))
    shape = rng.choice(SHAPES)
    return _single_scene(rng, "single_object", background, (color, shape, size), region, w, h)


def _sample_two(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    color = rng.choice(_colors_for(background))
    shapes = rng.sample(SHAPES, 2)
    return _scene_of(rng, "two_object", background, [(color, s) for s in shapes], w, h)


def _sample_color_attr(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    colors = rng.sample(_colors_for(background), 2)
    shapes = rng.sample(SHAPES, 2)
    return _scene_of(rng, "color_attr", background, list(zip(colors, shapes, strict=True)), w, h)


def _sample_counting(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    color = rng.choice(_colors_for(background))
    shape = rng.choice(SHAPES)
    count = rng.choice((2, 3, 4))
    return _scene_of(rng, "counting", background, [(color, shape)] * count, w, h)


def _sample_colors(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    pair = (rng.choice(_colors_for(background)), rng.choice(SHAPES))
    scene = _scene_of(rng, "colors", background, [pair], w, h)
    return None if scene is None else scene.model_copy(update={"mentions_background": True})


def _sample_position(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    colors = _colors_for(background)
    first = (rng.choice(colors), rng.choice(SHAPES))
    second = (rng.choice(colors), rng.choice(SHAPES))
    if first == second:
        return None
    predicate = rng.choice(PREDICATES)
    count = 2 if rng.random() < 1 / 3 else 1
    return _position_scene(rng, background, (*first, None), count, (*second, None), predicate, w, h)


def _sample_text(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    return _word_scene(rng, background, rng.choice(WORDS), w, h)


_SAMPLERS = {
    "single_object": _sample_single,
    "two_object": _sample_two,
    "counting": _sample_counting,
    "colors": _sample_colors,
    "position": _sample_position,
    "color_attr": _sample_color_attr,
    "text": _sample_text,
}


def _colors_for(background: ColorName) -> list[ColorName]:
    return [c for c in OBJECT_COLORS if c != background]


def _half_size(rng: random.Random, size: Size | None, w: int, h: int) -> float:
    low, high = {"small": SMALL_BAND, "large": LARGE_BAND, None: (SMALL_BAND[0], LARGE_BAND[1])}[size]
    return rng.uniform(low, high) * min(w, h)


def _region_center(rng: random.Random, region: Region, half: float, w: int, h: int) -> tuple[float, float]:
    margin = 0.03 * min(w, h) + half

    def edge(extent: int) -> float:  # a centre near the low edge of an axis
        return rng.uniform(margin, max(margin, 0.28 * extent))

    def middle(extent: int, spread: float) -> float:
        return rng.uniform(0.5 - spread, 0.5 + spread) * extent

    if region == "left":
        return edge(w), middle(h, 0.15)
    if region == "right":
        return w - edge(w), middle(h, 0.15)
    if region == "top":
        return middle(w, 0.15), edge(h)
    if region == "bottom":
        return middle(w, 0.15), h - edge(h)
    return middle(w, 0.06), middle(h, 0.06)


def _place(rng: random.Random, halves: Sequence[float], w: int, h: int) -> list[tuple[float, float]] | None:
    """Centres for boxes of the given half sizes, inside the image and apart by the gap."""
    border = 0.03 * min(w, h)
    gap = _GAP * min(w, h)
    for _ in range(_MAX_TRIES):
        centers: list[tuple[float, float]] = []
        for half in halves:
            for _ in range(50):
                x = rng.uniform(border + half, w - border - half)
                y = rng.uniform(border + half, h - border - half)
                if all(
                    abs(x - px) >= half + other + gap or abs(y - py) >= half + other + gap
                    for (px, py), other in zip(centers, halves, strict=False)
                ):
                    centers.append((x, y))
                    break
            else:
                break
        if len(centers) == len(halves):
            return centers
    return None


def _scene_of(
    rng: random.Random,
    category: Category,
    background: ColorName,
    pairs: Sequence[tuple[ColorName, Shape]],
    w: int,
    h: int,
    sizes: Sequence[Size | None] = (),
) -> SceneSpec | None:
    """Objects placed anywhere; ``sizes[i]``, when given, asserts object ``i``'s size."""
    sizes = list(sizes) or [None] * len(pairs)
    # Crowded scenes draw smaller shapes so that four always fit.
    top = LARGE_BAND[1] if len(pairs) <= 2 else 0.13
    halves = [_half_in(rng, size, top, w, h) for size in sizes]
    placed = _place(rng, halves, w, h)
    if placed is None:
        return None
    objs = tuple(
        SceneObject(shape=shape, color=color, center_x_px=x, center_y_px=y, half_size_px=half, size=size)
        for (color, shape), (x, y), half, size in zip(pairs, placed, halves, sizes, strict=True)
    )
    return SceneSpec(category=category, width_px=w, height_px=h, background=background, objects=objs)


def _single_scene(
    rng: random.Random,
    category: Category,
    background: ColorName,
    noun: tuple[ColorName, Shape, Size | None],
    region: Region | None,
    w: int,
    h: int,
) -> SceneSpec | None:
    color, shape, size = noun
    half = _half_size(rng, size, w, h)
    if region is None:
        placed = _place(rng, [half], w, h)
        if placed is None:
            return None
        cx, cy = placed[0]
    else:
        cx, cy = _region_center(rng, region, half, w, h)
    obj = SceneObject(
        shape=shape, color=color, center_x_px=cx, center_y_px=cy, half_size_px=half, size=size, region=region
    )
    return SceneSpec(category=category, width_px=w, height_px=h, background=background, objects=(obj,))


def _position_scene(
    rng: random.Random,
    background: ColorName,
    subject: tuple[ColorName, Shape, Size | None],
    count: int,
    other: tuple[ColorName, Shape, Size | None],
    predicate: Predicate,
    w: int,
    h: int,
) -> SceneSpec | None:
    """``count`` subject objects, each clearly on the ``predicate`` side of the other object."""
    side = min(w, h)
    top = LARGE_BAND[1] if count == 1 else 0.13
    nouns = [subject] * count + [other]
    halves = [_half_in(rng, size, top, w, h) for _, _, size in nouns]
    for _ in range(_MAX_TRIES):
        placed = _place(rng, halves, w, h)
        if placed is None:
            return None
        bx, by = placed[-1]
        if all(_clearly(predicate, bx - ax, by - ay, side) for ax, ay in placed[:-1]):
            objs = tuple(
                SceneObject(shape=s, color=c, center_x_px=x, center_y_px=y, half_size_px=half, size=size)
                for (c, s, size), (x, y), half in zip(nouns, placed, halves, strict=True)
            )
            relation = SceneRelation(subject=0, predicate=predicate, object=count)
            return SceneSpec(
                category="position", width_px=w, height_px=h, background=background, objects=objs,
                relation=relation,
            )  # fmt: skip
    return None


def _clearly(predicate: Predicate, dx: float, dy: float, side: int) -> bool:
    """Whether an offset ``(dx, dy)`` to the other object puts the subject clearly on the named
    side: far enough along the predicate's axis, and mostly along it."""
    along, across = (dx, dy) if predicate in ("left of", "right of") else (dy, dx)
    if predicate in ("right of", "below"):
        along = -along
    return along >= 0.2 * side and along >= 1.5 * abs(across)


def _word_scene(rng: random.Random, background: ColorName, text: str, w: int, h: int) -> SceneSpec:
    from .render import text_width_px

    ink: ColorName = "white" if background == "black" else "black"
    font_size = max(8, round(0.19 * min(w, h)))
    while font_size > 8 and text_width_px(text, font_size) > 0.8 * w:
        font_size -= 1
    slack = max(0.0, (0.9 * w - text_width_px(text, font_size)) / 2)
    word = SceneWord(
        text=text,
        color=ink,
        center_x_px=w / 2 + rng.uniform(-slack, slack),
        center_y_px=rng.uniform(0.3, 0.7) * h,
        font_size_px=font_size,
    )
    return SceneSpec(category="text", width_px=w, height_px=h, background=background, word=word)


def _half_in(rng: random.Random, size: Size | None, top: float, w: int, h: int) -> float:
    """A half size from ``size``'s band, or from the small band's bottom to ``top`` if unasserted."""
    if size is not None:
        return _half_size(rng, size, w, h)
    return rng.uniform(SMALL_BAND[0], top) * min(w, h)


Corruption = Literal["color", "shape", "count", "relation", "swap_colors", "extra", "word", "missing_word"]
CORRUPTIONS: tuple[Corruption, ...] = get_args(Corruption)


def corrupt_scene(scene: SceneSpec, kind: str, *, seed: int = 0) -> SceneSpec | None:
    """A scene whose picture contradicts ``scene``'s caption in one way, or ``None`` if ``kind``
    does not apply to its category.

    ``color``/``shape`` repaint or reshape the first object, ``count`` removes or adds one of the
    counted objects (of a counting scene or a position scene's counted subject), ``relation``
    swaps the places of the object and the (first) subject, ``swap_colors`` swaps the colours of
    two differently coloured objects, ``extra`` adds an object of a colour and shape the caption
    does not name, ``word`` draws another word and ``missing_word`` draws none. Judge the result
    against the original ``scene``.
    """
    if kind not in CORRUPTIONS:
        raise InputError(f"unknown corruption '{kind}'; known: {', '.join(CORRUPTIONS)}")
    rng = random.Random(f"xomni-corrupt/{kind}/{seed}")
    objs = list(scene.objects)
    if kind in ("word", "missing_word"):
        if scene.word is None:
            return None
        if kind == "missing_word":
            return scene.model_copy(update={"word": None})
        text = rng.choice([w for w in WORDS if w != scene.word.text and len(w) <= len(scene.word.text)])
        return scene.model_copy(update={"word": scene.word.model_copy(update={"text": text})})
    if not objs:
        return None
    if kind == "color":
        taken = {scene.background, objs[0].color}
        objs[0] = objs[0].model_copy(
            update={"color": rng.choice([c for c in OBJECT_COLORS if c not in taken])}
        )
    elif kind == "shape":
        objs[0] = objs[0].model_copy(update={"shape": rng.choice([s for s in SHAPES if s != objs[0].shape])})
    elif kind == "count":
        counted = _counted_indices(scene)
        if not counted:
            return None
        extra = None
        if rng.random() >= 0.5 and len(counted) < 4:
            extra = _add_like(rng, [objs[i] for i in counted], objs, scene.width_px, scene.height_px)
        if extra is None:
            return _without(scene, counted[rng.randrange(len(counted))])
        objs.append(extra)
    elif kind == "relation":
        if scene.relation is None:
            return None
        a, b = scene.relation.subject, scene.relation.object
        objs[a], objs[b] = (
            objs[a].model_copy(
                update={"center_x_px": objs[b].center_x_px, "center_y_px": objs[b].center_y_px}
            ),
            objs[b].model_copy(
                update={"center_x_px": objs[a].center_x_px, "center_y_px": objs[a].center_y_px}
            ),
        )
    elif kind == "extra":
        named = {(o.color, o.shape) for o in objs}
        color, shape = rng.choice(
            [(c, s) for c in OBJECT_COLORS for s in SHAPES if c != scene.background and (c, s) not in named]
        )
        like = [o.model_copy(update={"color": color, "shape": shape}) for o in objs]
        extra = _add_like(rng, like, objs, scene.width_px, scene.height_px)
        if extra is None:
            return None
        objs.append(extra)
    elif kind == "swap_colors":
        pairs = [(i, j) for i in range(len(objs)) for j in range(i + 1, len(objs))
                 if objs[i].color != objs[j].color and objs[i].shape != objs[j].shape]  # fmt: skip
        if not pairs:
            return None
        i, j = pairs[0]
        objs[i], objs[j] = (
            objs[i].model_copy(update={"color": objs[j].color}),
            objs[j].model_copy(update={"color": objs[i].color}),
        )
    # model_copy skips validation: a corrupted scene only needs to be drawable.
    return scene.model_copy(update={"objects": tuple(objs)})


def _counted_indices(scene: SceneSpec) -> tuple[int, ...]:
    """The objects of the counted group: all of a counting scene, a position scene's group subject."""
    if scene.category == "counting":
        return tuple(range(len(scene.objects)))
    if scene.category == "position" and scene.relation is not None:
        members = scene.group_of(scene.relation.subject)
        return members if len(members) > 1 else ()
    return ()


def _without(scene: SceneSpec, index: int) -> SceneSpec:
    """``scene`` less ``objects[index]``, its relation (if any) still naming the same objects."""
    objs = scene.objects[:index] + scene.objects[index + 1 :]
    update: dict[str, Any] = {"objects": objs}
    rel = scene.relation
    if rel is not None:
        # The subject's group keeps a member: a removed subject hands over to the next one.
        subject = next(i for i in scene.group_of(rel.subject) if i != index)
        update["relation"] = rel.model_copy(
            update={"subject": subject - (subject > index), "object": rel.object - (rel.object > index)}
        )
    return scene.model_copy(update=update)


def _add_like(
    rng: random.Random, like: Sequence[SceneObject], objs: Sequence[SceneObject], w: int, h: int
) -> SceneObject | None:
    """One more object like ``like[0]``, as small as the smallest of ``like``, clear of ``objs``."""
    half = min(o.half_size_px for o in like)
    gap = _GAP * min(w, h)
    border = 0.03 * min(w, h)
    for _ in range(_MAX_TRIES):
        x = rng.uniform(border + half, w - border - half)
        y = rng.uniform(border + half, h - border - half)
        if all(
            abs(x - o.center_x_px) >= half + o.half_size_px + gap
            or abs(y - o.center_y_px) >= half + o.half_size_px + gap
            for o in objs
        ):
            return like[0].model_copy(update={"center_x_px": x, "center_y_px": y, "half_size_px": half})
    return None
