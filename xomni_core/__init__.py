"""xomni core: component interfaces, configuration, plugin discovery, pipelines and CLI.

Importing this package is cheap: nothing here imports torch. Pipelines and generation load
torch when first used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ._version import CORE_API_VERSION, __version__
from .atomic import atomic_directory, atomic_file
from .dtypes import DTYPE_NAMES, torch_dtype
from .errors import (
    CheckpointError,
    ConfigError,
    ImageRejectedError,
    InputError,
    PluginError,
    XomniError,
)
from .folders import (
    COMPONENT_FILE,
    check_state_dict,
    load_module_weights,
    load_tensors,
    load_transformers_model,
    read_component_file,
    save_tensors,
    write_component_file,
)
from .hookspecs import hookimpl
from .interfaces import (
    Backbone,
    BackboneStep,
    BackboneVocab,
    Component,
    Decoder,
    Reward,
    Tokenizer,
)
from .params import ComponentParams
from .spec import PluginSpec
from .types import (
    BACKENDS,
    COMPONENT_KINDS,
    Backend,
    ComponentKind,
    DecodeRequest,
    GenerationMode,
    GridSize,
    ImageGenerationRequest,
    PreprocessedImage,
    RewardBatch,
    RewardDirection,
    RewardResult,
    SamplingParams,
    ScorePart,
    SemanticLatents,
    TextGenerationRequest,
    TokenGrid,
)

if TYPE_CHECKING:
    from .images import open_image
    from .pickles import load_tensors_only
    from .pipelines import ImageUnderstandingPipeline, TextToImagePipeline
    from .registry import PluginWarning
    from .resources import MemoryEstimating

__all__ = [
    "BACKENDS",
    "COMPONENT_FILE",
    "COMPONENT_KINDS",
    "CORE_API_VERSION",
    "DTYPE_NAMES",
    "Backbone",
    "BackboneStep",
    "BackboneVocab",
    "Backend",
    "CheckpointError",
    "Component",
    "ComponentKind",
    "ComponentParams",
    "ConfigError",
    "DecodeRequest",
    "Decoder",
    "GenerationMode",
    "GridSize",
    "ImageGenerationRequest",
    "ImageRejectedError",
    "ImageUnderstandingPipeline",
    "InputError",
    "MemoryEstimating",
    "PipelineConfig",
    "PluginError",
    "PluginRegistry",
    "PluginSpec",
    "PluginWarning",
    "PreprocessedImage",
    "Reward",
    "RewardBatch",
    "RewardDirection",
    "RewardResult",
    "SamplingParams",
    "ScorePart",
    "SemanticLatents",
    "TextGenerationRequest",
    "TextToImagePipeline",
    "TokenGrid",
    "Tokenizer",
    "XomniError",
    "__version__",
    "atomic_directory",
    "atomic_file",
    "check_state_dict",
    "hookimpl",
    "load_config",
    "load_module_weights",
    "load_tensors",
    "load_tensors_only",
    "load_transformers_model",
    "open_image",
    "read_component_file",
    "save_tensors",
    "torch_dtype",
    "write_component_file",
]

_LAZY = {
    "PipelineConfig": "xomni_core.config",
    "load_config": "xomni_core.config",
    "PluginRegistry": "xomni_core.registry",
    "PluginWarning": "xomni_core.registry",
    "MemoryEstimating": "xomni_core.resources",
    "open_image": "xomni_core.images",
    "load_tensors_only": "xomni_core.pickles",
    "TextToImagePipeline": "xomni_core.pipelines",
    "ImageUnderstandingPipeline": "xomni_core.pipelines",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'xomni_core' has no attribute {name!r}")
