"""Thresholds of the scene detector: pydantic only, so reward params can hold them without numpy."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from .scenes import SIZE_THRESHOLD


class DetectorParams(BaseModel):
    """Thresholds of the detector; fractions are of the image's width, height or area."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_color_distance: float = Field(80.0, gt=0, description="RGB distance to accept a palette colour.")
    color_ratio: float = Field(
        0.75, gt=0, le=1, description="Nearest colour must be this much closer than the second."
    )
    min_area_frac: float = Field(0.002, ge=0, lt=1, description="Smaller blobs are ignored as noise.")
    min_core_share: float = Field(
        0.2, ge=0, le=1, description="Share of a blob that must survive erosion; thinner blobs are fringes."
    )
    core_erosion_px: int = Field(
        2, ge=0, le=8, description="4-neighbour erosion steps that find a blob's core."
    )
    squareness: float = Field(
        0.38, description="Four-fold fourth-moment pattern (disc 0, square 1) from which a blob is a square."
    )
    triangle_fill: float = Field(0.62, description="Box fill below which a blob is a triangle.")
    triangle_top_share: float = Field(0.4, description="Top-half share below which a blob is a triangle.")
    triangle_skew: float = Field(-0.22, description="Skewness of the rows below which a blob is a triangle.")
    size_threshold: float = Field(
        SIZE_THRESHOLD, gt=0, description="Half box side over the shorter image side that splits small/large."
    )
    forbid_extra_objects: bool = Field(
        True, description="Fail an image showing an object of a colour and shape its caption does not name."
    )
    relation_margin: float = Field(
        0.02, ge=0, description="Centroid offset needed for left/right/above/below."
    )
    region_edge: float = Field(0.4, gt=0, le=0.5, description="'left' means a centroid x below this.")
    region_center: float = Field(0.15, gt=0, le=0.5, description="'center' means within this of the middle.")
    ocr_threads: int = Field(1, ge=0, description="onnxruntime threads of the default OCR reward.")
