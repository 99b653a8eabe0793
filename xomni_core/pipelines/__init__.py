"""Pipelines built from a pipeline config."""

from .text_to_image import TextToImagePipeline, TextToImageResult
from .understanding import ImageUnderstandingPipeline

__all__ = ["ImageUnderstandingPipeline", "TextToImagePipeline", "TextToImageResult"]
