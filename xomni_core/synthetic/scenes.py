"""Scene specs for synthetic captioned images: what a prompt asks for and where things are drawn.

A :class:`SceneSpec` is a frozen pydantic model that serialises to JSON, so it can ride along
with a prompt as per-sample metadata (``{"scene": ...}``). It holds both the *assertions* a
caption makes (colours, shapes, counts, a relation, a word, and optionally a size, a region
or the background) and the *layout* the renderer draws (centres and sizes in px). A judge only
checks the assertions, which are exactly what :func:`caption` writes, so two specs with the
same caption are the same requirement.

Splits are deterministic: ``train`` and ``rl`` never contain a held-out (colour, shape) pair or
word, ``eval`` holds every caption that does plus a fixed share of the others, and the three
splits never share a caption.
"""

from __future__ import annotations

import difflib
import random
import zlib
from collections.abc import Mapping, Sequence
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
_PREDICATE_PHRASES: dict[Predicate, str] = {
    "left of": "to the left of",
    "right of": "to the right of",
    "above": "above",
    "below": "below",
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
    """``objects[subject]`` is ``predicate`` ``objects[object]``, judged on centroids."""

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
        """The scene in per-sample metadata written by :meth:`metadata`, or ``None`` if absent."""
        scene = metadata.get("scene")
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
        color, shape, n = scene.groups()[0]
        return f"{_COUNT_WORDS.get(n, str(n))} {color} {shape}s"
    if scene.category == "position":
        assert scene.relation is not None
        rel = scene.relation
        phrase = _PREDICATE_PHRASES[rel.predicate]
        return f"{_noun(objs[rel.subject])} {phrase} {_noun(objs[rel.object])}"
    text = " and ".join(_noun(obj) for obj in objs)
    if objs[0].region is not None:
        text += f" {_REGION_PHRASES[objs[0].region]}"
    if scene.mentions_background:
        text += f" on {_article(scene.background)} {scene.background} background"
    return text


def _noun(obj: SceneObject) -> str:
    words = [w for w in (obj.size, obj.color, obj.shape) if w]
    return f"{_article(words[0])} {' '.join(words)}"


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def split_of_caption(text: str) -> Split:
    """The split a caption without held-out parts belongs to: a stable hash, 20% rl, 20% eval."""
    bucket = zlib.crc32(text.encode()) % 10
    return "eval" if bucket < 2 else "rl" if bucket < 4 else "train"


def in_split(scene: SceneSpec, split: Split) -> bool:
    """Whether ``scene`` belongs to ``split`` (held-out scenes belong to ``eval`` only)."""
    if scene.held_out():
        return split == "eval"
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
) -> list[SceneSpec]:
    """``n`` scenes of ``split``, cycling through ``categories`` so each gets an equal share.

    Scene ``i`` depends only on ``(split, seed, i)``, so a longer list extends a shorter one.
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
        )
        for index in range(n)
    ]


def sample_scene(
    rng: random.Random, category: Category, split: Split, *, width_px: int = 128, height_px: int = 128
) -> SceneSpec:
    """One random scene of ``category`` that belongs to ``split``."""
    sampler = _SAMPLERS[category]
    while True:
        scene = sampler(rng, width_px, height_px)
        if scene is not None and in_split(scene, split):
            return scene


def _sample_single(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    background = rng.choice(BACKGROUNDS)
    size: Size | None = rng.choice((None, "small", "large"))
    region: Region | None = rng.choice((None, *REGIONS))
    color = rng.choice(_colors_for(background))
    shape = rng.choice(SHAPES)
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
    return SceneSpec(category="single_object", width_px=w, height_px=h, background=background, objects=(obj,))


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
    side = min(w, h)
    halves = [_half_size(rng, None, w, h) for _ in range(2)]
    for _ in range(_MAX_TRIES):
        placed = _place(rng, halves, w, h)
        if placed is None:
            return None
        (ax, ay), (bx, by) = placed
        along, across = (bx - ax, by - ay) if predicate in ("left of", "right of") else (by - ay, bx - ax)
        if predicate in ("right of", "below"):
            along = -along
        # The subject lies clearly on the named side, along the dominant axis.
        if along >= 0.2 * side and along >= 1.5 * abs(across):
            objs = tuple(
                SceneObject(shape=s, color=c, center_x_px=x, center_y_px=y, half_size_px=half)
                for (c, s), (x, y), half in zip((first, second), placed, halves, strict=True)
            )
            relation = SceneRelation(subject=0, predicate=predicate, object=1)
            return SceneSpec(
                category="position", width_px=w, height_px=h, background=background, objects=objs,
                relation=relation,
            )  # fmt: skip
    return None


def _sample_text(rng: random.Random, w: int, h: int) -> SceneSpec | None:
    from .render import text_width_px

    background = rng.choice(BACKGROUNDS)
    text = rng.choice(WORDS)
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
) -> SceneSpec | None:
    # Crowded scenes draw smaller shapes so that four always fit.
    top = LARGE_BAND[1] if len(pairs) <= 2 else 0.13
    halves = [rng.uniform(SMALL_BAND[0], top) * min(w, h) for _ in pairs]
    placed = _place(rng, halves, w, h)
    if placed is None:
        return None
    objs = tuple(
        SceneObject(shape=shape, color=color, center_x_px=x, center_y_px=y, half_size_px=half)
        for (color, shape), (x, y), half in zip(pairs, placed, halves, strict=True)
    )
    return SceneSpec(category=category, width_px=w, height_px=h, background=background, objects=objs)


Corruption = Literal["color", "shape", "count", "relation", "swap_colors", "word", "missing_word"]
CORRUPTIONS: tuple[Corruption, ...] = get_args(Corruption)


def corrupt_scene(scene: SceneSpec, kind: str, *, seed: int = 0) -> SceneSpec | None:
    """A scene whose picture contradicts ``scene``'s caption in one way, or ``None`` if ``kind``
    does not apply to its category.

    ``color``/``shape`` repaint or reshape the first object, ``count`` removes or adds one of the
    counted objects, ``relation`` swaps the two related objects' places, ``swap_colors`` swaps
    the colours of two differently coloured objects, ``word`` draws another word and
    ``missing_word`` draws none. Judge the result against the original ``scene``.
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
        if scene.category != "counting":
            return None
        if rng.random() < 0.5 or len(objs) >= 4:
            objs.pop(rng.randrange(len(objs)))
        else:
            extra = _add_like(rng, objs, scene.width_px, scene.height_px)
            if extra is None:
                objs.pop(rng.randrange(len(objs)))
            else:
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


def _add_like(rng: random.Random, objs: list[SceneObject], w: int, h: int) -> SceneObject | None:
    half = min(o.half_size_px for o in objs)
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
            return objs[0].model_copy(update={"center_x_px": x, "center_y_px": y, "half_size_px": half})
    return None
