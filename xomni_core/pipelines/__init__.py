"""Pipelines: built from a pipeline config or loaded from a pipeline folder."""

from ..registry import load_component
from .folder import INDEX_FILE, folder_config, read_model_index, write_model_index
from .text_to_image import TextToImagePipeline, TextToImageResult
from .understanding import ImageUnderstandingPipeline, TextStreamer

__all__ = [
    "INDEX_FILE",
    "ImageUnderstandingPipeline",
    "TextStreamer",
    "TextToImagePipeline",
    "TextToImageResult",
    "folder_config",
    "load_component",
    "read_model_index",
    "write_model_index",
]
