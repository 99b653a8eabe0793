"""Judging an image against a :class:`~xomni_core.synthetic.scenes.SceneSpec`'s caption.

Each pixel takes its nearest palette colour when that colour is clearly nearest (within
``max_color_distance`` and closer than ``color_ratio`` times the runner-up), else it is left
unlabelled; anti-aliased edges and blur fall there. The background is the commonest colour on
the border. Same-coloured 4-connected pixels form blobs; blobs smaller than ``min_area_frac`` of
the image are noise, and so are thin ones: a blob that keeps less than ``min_core_share`` of its
pixels when eroded by ``core_erosion_px`` is a fringe of colour bleed along another blob's edge.
An upward triangle is told by how little of a blob lies in its box's top half (about 0.25, the
others about 0.5), how its rows skew (its mass low, its tip trailing up: skewness about -0.57,
the others 0) or how little of the box it fills (about 0.5). A square is told from a disc by its
fourth moments about the centroid: along the diagonals a square reaches further than along its
sides, and the strength of that four-fold pattern, as a share of an ideal square's
(``squareness``: disc 0, square 1), is independent of orientation. Unlike the share of the
bounding box filled, it is carried by the whole blob rather than its corners, so it survives the
rounded corners, soft edges and slight tilt of a decoder's squares.

Words are read by a reward that honours ``metadata["target_text"]`` (by default the
``ocr-text`` reward plugin, found through the plugin registry), and a word is correct when the
reward's score is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
from PIL import ImageOps

from ..errors import PluginError
from ..types import RewardBatch
from .params import DetectorParams
from .scenes import OBJECT_COLORS, PALETTE, ColorName, SceneSpec, Shape

if TYPE_CHECKING:
    from numpy.typing import NDArray
    from PIL.Image import Image

    from ..interfaces import Reward

_NAMES: tuple[ColorName, ...] = tuple(PALETTE)
_RGB = np.array([PALETTE[name] for name in _NAMES], dtype=np.float32)


PixelBox = tuple[int, int, int, int]  # left, top, right, bottom (inclusive)


@dataclass(frozen=True)
class Blob:
    """A connected region of one palette colour."""

    color: ColorName
    shape: Shape
    center_x_px: float
    center_y_px: float
    area_px: int
    box_px: PixelBox
    fill_ratio: float
    top_share: float
    squareness: float = 0.0
    vertical_skew: float = 0.0

    @property
    def half_size_px(self) -> float:
        left, top, right, bottom = self.box_px
        return max(right - left + 1, bottom - top + 1) / 2

    def describe(self) -> str:
        return f"{self.color} {self.shape} at ({self.center_x_px:.0f}, {self.center_y_px:.0f})"


@dataclass(frozen=True)
class Check:
    """One claim of a caption and whether the image bears it out; ``credit`` grades a failed claim
    that came close (a word read one letter off), ``None`` where a claim only holds or fails.

    ``boxes`` are the objects that decided the check where they alone did: those that bear out a
    passed claim, or that a failed one blames (an extra object, a misplaced one); none where the
    cause has no place, such as a missing object.
    """

    name: str
    passed: bool
    detail: str = ""
    credit: float | None = None
    boxes: tuple[PixelBox, ...] = ()

    @property
    def value(self) -> float:
        """1 for a passed claim, else its credit (0 without one)."""
        return 1.0 if self.passed else (self.credit or 0.0)


@dataclass(frozen=True)
class Judgement:
    """The checks made for one image; it is correct when every check passes."""

    category: str
    checks: tuple[Check, ...]
    background: ColorName | None = None
    blobs: tuple[Blob, ...] = field(default=(), repr=False)

    @property
    def correct(self) -> bool:
        return all(check.passed for check in self.checks)

    @property
    def score(self) -> float:
        """Share of passed checks, failed ones counted at their credit: a graded signal for training."""
        return sum(c.value for c in self.checks) / len(self.checks) if self.checks else 1.0

    def failures(self) -> list[str]:
        return [f"{c.name}: {c.detail}" if c.detail else c.name for c in self.checks if not c.passed]


def classify_pixels(image: Image, params: DetectorParams | None = None) -> NDArray[np.int64]:
    """Per pixel, the index into ``PALETTE`` of its clearly nearest colour, or -1."""
    params = params or DetectorParams()
    rgb = np.asarray(image.convert("RGB"), dtype=np.float32)
    dist = np.sqrt(((rgb[:, :, None, :] - _RGB[None, None, :, :]) ** 2).sum(axis=-1))
    order = np.argsort(dist, axis=-1)
    nearest = order[..., 0]
    d1 = np.take_along_axis(dist, order[..., :1], axis=-1)[..., 0]
    d2 = np.take_along_axis(dist, order[..., 1:2], axis=-1)[..., 0]
    clear = (d1 <= params.max_color_distance) & (d1 <= params.color_ratio * d2)
    return np.where(clear, nearest, -1).astype(np.int64)


def label_components(classes: NDArray[np.int64]) -> NDArray[np.int64]:
    """4-connected components of equal non-negative values; each pixel gets its component's
    smallest flat index, unlabelled (negative) pixels get -1.

    Labels spread to smaller neighbours and then jump along labels (a label is the index of a
    pixel of the same component), so few numpy passes suffice even for large blobs.
    """
    h, w = classes.shape
    inside = classes >= 0
    size = h * w
    labels = np.where(inside, np.arange(size).reshape(h, w), size)
    join_x = inside[:, :-1] & (classes[:, :-1] == classes[:, 1:])
    join_y = inside[:-1, :] & (classes[:-1, :] == classes[1:, :])
    flat_inside = inside.ravel()
    while True:
        new = labels.copy()
        np.minimum(new[:, :-1], np.where(join_x, new[:, 1:], size), out=new[:, :-1])
        np.minimum(new[:, 1:], np.where(join_x, new[:, :-1], size), out=new[:, 1:])
        np.minimum(new[:-1, :], np.where(join_y, new[1:, :], size), out=new[:-1, :])
        np.minimum(new[1:, :], np.where(join_y, new[:-1, :], size), out=new[1:, :])
        flat = new.ravel()
        for _ in range(4):
            flat[flat_inside] = flat[flat[flat_inside]]
        if np.array_equal(new, labels):
            break
        labels = new
    return np.where(inside, labels, -1)


def find_blobs(image: Image, params: DetectorParams | None = None) -> tuple[ColorName | None, list[Blob]]:
    """The background colour (commonest clear colour on the border) and the blobs on top of it."""
    params = params or DetectorParams()
    classes = classify_pixels(image, params)
    h, w = classes.shape
    border = np.concatenate([classes[0], classes[-1], classes[:, 0], classes[:, -1]])
    border = border[border >= 0]
    background_index = int(np.bincount(border, minlength=len(_NAMES)).argmax()) if border.size else -1
    foreground = np.where(classes == background_index, -1, classes)
    labels = label_components(foreground)
    ys, xs = np.nonzero(labels >= 0)
    background = _NAMES[background_index] if background_index >= 0 else None
    if ys.size == 0:
        return background, []
    ids, inverse, areas = np.unique(labels[ys, xs], return_inverse=True, return_counts=True)
    count = ids.size
    left = np.full(count, w)
    top = np.full(count, h)
    right = np.full(count, -1)
    bottom = np.full(count, -1)
    np.minimum.at(left, inverse, xs)
    np.minimum.at(top, inverse, ys)
    np.maximum.at(right, inverse, xs)
    np.maximum.at(bottom, inverse, ys)
    sum_x = np.bincount(inverse, weights=xs, minlength=count)
    sum_y = np.bincount(inverse, weights=ys, minlength=count)
    # Rows above and below the box's middle; the middle row of an odd-height box is in neither.
    middle = (top + bottom)[inverse] / 2
    in_top = np.bincount(inverse, weights=ys < middle, minlength=count)
    in_bottom = np.bincount(inverse, weights=ys > middle, minlength=count)
    dx, dy = xs - (sum_x / areas)[inverse], ys - (sum_y / areas)[inverse]
    squareness = _squareness(dx, dy, inverse, count)
    # Skewness of the rows: an upward triangle's mass sits low, its tip trails up (about -0.57).
    var_y = np.bincount(inverse, weights=dy * dy, minlength=count) / areas
    skew = np.bincount(inverse, weights=dy**3, minlength=count) / areas / np.maximum(var_y, 1e-12) ** 1.5
    core = _core_areas(labels, params.core_erosion_px, ids)
    min_area = params.min_area_frac * h * w
    blobs = []
    for k in range(count):
        color = _NAMES[int(classes.ravel()[ids[k]])]
        # Gray only arises as a background or where black and white blur into each other.
        if areas[k] < max(min_area, 1) or color not in OBJECT_COLORS:
            continue
        if core[k] < params.min_core_share * areas[k]:
            continue
        box_area = (right[k] - left[k] + 1) * (bottom[k] - top[k] + 1)
        fill = float(areas[k] / box_area)
        top_share = float(in_top[k] / max(in_top[k] + in_bottom[k], 1))
        blobs.append(
            Blob(
                color=color,
                shape=_shape(fill, top_share, float(skew[k]), float(squareness[k]), params),
                center_x_px=float(sum_x[k] / areas[k]) + 0.5,
                center_y_px=float(sum_y[k] / areas[k]) + 0.5,
                area_px=int(areas[k]),
                box_px=(int(left[k]), int(top[k]), int(right[k]), int(bottom[k])),
                fill_ratio=fill,
                top_share=top_share,
                squareness=float(squareness[k]),
                vertical_skew=float(skew[k]),
            )
        )
    return background, blobs


# Fourth-moment harmonics of an axis-aligned square of side 1: the mean of E[(x cos t + y sin t)^4]
# over t is 7/480, its four-fold amplitude 1/480, so an ideal square's ratio is 1/7.
_SQUARE_HARMONIC = 1 / 7


def _squareness(
    dx: NDArray[np.float64], dy: NDArray[np.float64], inverse: NDArray[np.int64], count: int
) -> NDArray[np.float64]:
    """Per blob, the amplitude of the four-fold term of its directional fourth moment
    ``E[(x cos t + y sin t)^4]`` over the mean of that moment, as a share of an ideal square's.

    Offsets are first whitened by the blob's covariance, so a rectangle counts as a square and an
    ellipse as a disc whatever their aspect."""

    def moment(values: NDArray[np.float64]) -> NDArray[np.float64]:
        return np.bincount(inverse, weights=values, minlength=count).astype(np.float64)

    # Covariance of the pixels (each a unit square: 1/12 on the diagonal), then its inverse root
    # from the closed form sqrt(M) = (M + sqrt(det M) I) / sqrt(tr M + 2 sqrt(det M)).
    areas = moment(np.ones_like(dx))
    a = moment(dx * dx) / areas + 1 / 12
    b = moment(dx * dy) / areas
    c = moment(dy * dy) / areas + 1 / 12
    root_det = np.sqrt(a * c - b * b)
    scale = np.sqrt(a + c + 2 * root_det)
    s11, s12, s22 = (a + root_det) / scale, b / scale, (c + root_det) / scale
    det = s11 * s22 - s12 * s12
    w11, w12, w22 = (s22 / det)[inverse], (-s12 / det)[inverse], (s11 / det)[inverse]
    dx, dy = w11 * dx + w12 * dy, w12 * dx + w22 * dy
    x2, y2 = dx * dx, dy * dy
    m40, m04, m22 = moment(x2 * x2), moment(y2 * y2), moment(x2 * y2)
    m31, m13 = moment(x2 * dx * dy), moment(dx * dy * y2)
    mean = 3 * (m40 + m04 + 2 * m22) / 8
    cos4 = (m40 + m04 - 6 * m22) / 8
    sin4 = (m31 - m13) / 2
    amplitude = np.sqrt(cos4 * cos4 + sin4 * sin4)
    return np.asarray(amplitude / np.maximum(mean, 1e-12) / _SQUARE_HARMONIC, dtype=np.float64)


def _core_areas(labels: NDArray[np.int64], erosion_px: int, ids: NDArray[np.int64]) -> NDArray[np.int64]:
    """Per component of ``ids``, its pixels left after ``erosion_px`` steps of 4-neighbour erosion."""
    core = labels.copy()
    for _ in range(erosion_px):
        kept = core >= 0
        kept[1:, :] &= core[1:, :] == core[:-1, :]
        kept[:-1, :] &= core[:-1, :] == core[1:, :]
        kept[:, 1:] &= core[:, 1:] == core[:, :-1]
        kept[:, :-1] &= core[:, :-1] == core[:, 1:]
        kept[0, :] = kept[-1, :] = False
        kept[:, 0] = kept[:, -1] = False
        core = np.where(kept, core, -1)
    remaining = core[core >= 0]
    if remaining.size == 0:
        return np.zeros(ids.size, dtype=np.int64)
    position = np.searchsorted(ids, remaining)
    return np.bincount(position, minlength=ids.size).astype(np.int64)


def _shape(fill: float, top_share: float, skew: float, squareness: float, params: DetectorParams) -> Shape:
    if fill < params.triangle_fill or top_share < params.triangle_top_share or skew < params.triangle_skew:
        return "triangle"
    return "square" if squareness >= params.squareness else "circle"


class SceneJudge:
    """Decides whether an image shows what a scene's caption says.

    ``text_reward`` reads words: any reward that scores 1 when ``metadata["target_text"]`` is
    legible in the image (it sees the image in grey with stretched contrast). ``None`` loads the
    ``ocr-text`` reward plugin on the first word.

    ``attribute_credit`` grades a failed object check by its attributes: half of it when the
    image holds as many objects of the named colour as the caption names (any shape), half when
    it holds as many of the named shape (any colour). It changes scores, never verdicts.
    """

    def __init__(
        self,
        params: DetectorParams | None = None,
        *,
        text_reward: Reward[Any] | None = None,
        attribute_credit: float = 0.0,
    ) -> None:
        if not 0.0 <= attribute_credit <= 1.0:
            raise ValueError(f"attribute_credit must be within [0, 1], got {attribute_credit}")
        self.params = params or DetectorParams()
        self.attribute_credit = attribute_credit
        self._text_reward = text_reward

    @property
    def text_reward(self) -> Reward[Any]:
        if self._text_reward is None:
            self._text_reward = load_ocr_reward(threads=self.params.ocr_threads)
        return self._text_reward

    def __call__(self, image: Image, scene: SceneSpec) -> Judgement:
        return self.judge(image, scene)

    def judge(self, image: Image, scene: SceneSpec) -> Judgement:
        if scene.category == "text":
            return Judgement(scene.category, (self._check_word(image, scene),))
        background, blobs = find_blobs(image, self.params)
        width, height = image.size
        checks: list[Check] = []
        found = _listed(blobs, 8) or "nothing"
        matched: dict[tuple[ColorName, Shape], list[Blob]] = {}
        for color, shape, count in scene.groups():
            hits = [b for b in blobs if b.color == color and b.shape == shape]
            matched[color, shape] = hits
            noun = f"{color} {shape}" + ("s" if count > 1 else "")
            passed = len(hits) == count
            evidence = _boxes(hits) if passed else ()
            credit = None if passed else self._attribute_credit(color, shape, scene, blobs)
            checks.append(Check(f"{count} {noun}", passed, f"found {found}", credit=credit, boxes=evidence))
        for obj in scene.objects:
            hits = matched[obj.color, obj.shape]
            blob = hits[0] if len(hits) == 1 else None
            if obj.size is not None:
                checks.append(self._check_size(obj.size, blob, min(width, height)))
            if obj.region is not None:
                checks.append(self._check_region(obj.region, blob, width, height))
        if self.params.forbid_extra_objects:
            checks.append(_check_nothing_else(blobs, matched))
        if scene.relation is not None:
            rel = scene.relation
            subject, other = scene.objects[rel.subject], scene.objects[rel.object]
            a, b = matched[subject.color, subject.shape], matched[other.color, other.shape]
            count = len(scene.group_of(rel.subject))
            checks.append(self._check_relation(rel.predicate, a if len(a) == count else None,
                                               b[0] if len(b) == 1 else None, width, height))  # fmt: skip
        if scene.mentions_background:
            checks.append(
                Check(f"{scene.background} background", background == scene.background, f"found {background}")
            )
        return Judgement(scene.category, tuple(checks), background, tuple(blobs))

    def judge_many(self, images: Sequence[Image], scenes: Sequence[SceneSpec]) -> list[Judgement]:
        return [self.judge(image, scene) for image, scene in zip(images, scenes, strict=True)]

    def _attribute_credit(
        self, color: ColorName, shape: Shape, scene: SceneSpec, blobs: Sequence[Blob]
    ) -> float | None:
        """Credit for a missed (colour, shape) group whose colour or shape alone is drawn as often
        as the caption names it."""
        if not self.attribute_credit:
            return None
        color_right = sum(b.color == color for b in blobs) == sum(o.color == color for o in scene.objects)
        shape_right = sum(b.shape == shape for b in blobs) == sum(o.shape == shape for o in scene.objects)
        return self.attribute_credit * (color_right + shape_right) / 2

    def _check_word(self, image: Image, scene: SceneSpec) -> Check:
        assert scene.word is not None
        text = scene.word.text
        # Stretching contrast keeps blurred dark-on-gray words legible to the OCR detector.
        legible = ImageOps.autocontrast(image.convert("L"), cutoff=1).convert("RGB")
        result = self.text_reward.score(RewardBatch([legible], [scene.caption], [{"target_text": text}]))
        score = result.scores[0]
        # The ocr-text reward grades a near miss by its letters; other text rewards by their score.
        credit = result.details.get("characters", result.scores)[0]
        return Check(f'word "{text}"', score >= 1.0 - 1e-6, f"{result.name} score {score:.2f}", credit)

    def _check_size(self, size: str, blob: Blob | None, side: int) -> Check:
        if blob is None:
            return Check(f"{size} size", False, "object not found once")
        ratio = blob.half_size_px / side
        large = ratio >= self.params.size_threshold
        detail = f"half size {ratio:.3f} of the image"
        return Check(f"{size} size", large == (size == "large"), detail, boxes=(blob.box_px,))

    def _check_region(self, region: str, blob: Blob | None, width: int, height: int) -> Check:
        if blob is None:
            return Check(f"in region {region}", False, "object not found once")
        x, y = blob.center_x_px / width, blob.center_y_px / height
        edge, center = self.params.region_edge, self.params.region_center
        passed = {
            "left": x < edge,
            "right": x > 1 - edge,
            "top": y < edge,
            "bottom": y > 1 - edge,
            "center": abs(x - 0.5) < center and abs(y - 0.5) < center,
        }[region]
        detail = f"centroid at ({x:.2f}, {y:.2f}) of the image"
        return Check(f"in region {region}", passed, detail, boxes=(blob.box_px,))

    def _check_relation(
        self, predicate: str, subjects: Sequence[Blob] | None, b: Blob | None, width: int, height: int
    ) -> Check:
        """Every subject blob must stand on the named side of the object blob ``b``."""
        if subjects is None or b is None:
            return Check(predicate, False, "the subject or the object was not found as often as named")
        margin = self.params.relation_margin
        passed = True
        offsets = []
        for a in subjects:
            dx = (b.center_x_px - a.center_x_px) / width
            dy = (b.center_y_px - a.center_y_px) / height
            offsets.append(f"({dx:+.2f}, {dy:+.2f})")
            passed &= {
                "left of": dx > margin,
                "right of": -dx > margin,
                "above": dy > margin,
                "below": -dy > margin,
            }[predicate]
        label = "offset" if len(offsets) == 1 else "offsets"
        detail = f"{label} to the other object {', '.join(offsets)}"
        return Check(predicate, passed, detail, boxes=_boxes([*subjects, b]))


def _check_nothing_else(blobs: Sequence[Blob], named: dict[tuple[ColorName, Shape], list[Blob]]) -> Check:
    """No object beyond the caption's: otherwise an image could hedge, drawing a red square and a
    red circle for "a red circle", and pass whichever the shape reading picks."""
    extra = [blob for blob in blobs if (blob.color, blob.shape) not in named]
    if not extra:
        return Check("nothing else", True)
    return Check("nothing else", False, f"found also {_listed(extra, 4)}", boxes=_boxes(extra))


def _boxes(blobs: Sequence[Blob]) -> tuple[PixelBox, ...]:
    return tuple(blob.box_px for blob in blobs)


def _listed(blobs: Sequence[Blob], limit: int) -> str:
    listed = ", ".join(blob.describe() for blob in blobs[:limit])
    return listed + (f" and {len(blobs) - limit} more" if len(blobs) > limit else "")


def load_ocr_reward(*, threads: int = 1) -> Reward[Any]:
    """The ``ocr-text`` reward plugin, scoring recall of the requested text."""
    from ..interfaces import Reward
    from ..registry import PluginRegistry

    try:
        spec = PluginRegistry.discover().get("reward", "ocr-text")
        # Scene images are small: detecting text at 256 px reads them as well as at 736, 5x faster.
        settings = {"metric": "recall", "num_threads": threads, "use_angle_classifier": False}
        params = spec.params.model_validate({**settings, "det_min_side_px": 256})
        reward = spec.load().from_params(params)
    except PluginError as exc:
        raise PluginError(
            f"judging words needs the 'ocr-text' reward plugin (pip install 'xomni[ocr]'): {exc}"
        ) from exc
    if not isinstance(reward, Reward):
        raise PluginError("the 'ocr-text' plugin did not build a reward")
    return reward
