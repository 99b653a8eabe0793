"""Converters from published checkpoint layouts to xomni component folders (``xomni convert``).

This module is light (standard library only): the registry names each converter's
implementation as ``"package.module:function"`` and imports it only when a conversion runs, so
the CLI can list the formats without importing torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Literal, Protocol, cast

from ..errors import PluginError, XomniError

ConvertDtype = Literal["float32", "float16", "bfloat16"]
CONVERT_DTYPES: tuple[ConvertDtype, ...] = ("float32", "float16", "bfloat16")


@dataclass(frozen=True)
class ConvertOptions:
    """Choices a user makes when converting; a converter ignores those its format does not use.

    ``dtype`` casts floating-point weights; ``None`` keeps the dtype they are stored in.
    ``flux_dir`` is a local FLUX.1-dev folder, for formats whose decoder builds on FLUX.
    ``text_free`` marks a decoder that takes no prompt, for formats that do not record it.
    """

    flux_dir: Path | None = None
    dtype: ConvertDtype | None = None
    force: bool = False
    text_free: bool = False
    show_progress: bool = True


@dataclass(frozen=True)
class ConversionResult:
    """What a conversion wrote: the output folder, its pipeline config and remarks for the user."""

    dst: Path
    pipeline_config: Path
    components: tuple[str, ...]
    notes: tuple[str, ...] = ()


class Converter(Protocol):
    """Reads ``src`` in some published layout and writes ``dst`` atomically."""

    def __call__(self, src: Path, dst: Path, options: ConvertOptions) -> ConversionResult: ...


@dataclass(frozen=True)
class ConverterSpec:
    """One registered format: its name, a one-line description and where the code lives."""

    name: str
    description: str
    implementation: str

    def load(self) -> Converter:
        """Import and return the converter function."""
        module_name, _, attr = self.implementation.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise PluginError(
                f"converter '{self.name}' failed to load {self.implementation}: {type(exc).__name__}: {exc}"
            ) from exc
        return cast(Converter, function)


CONVERTERS: Mapping[str, ConverterSpec] = MappingProxyType(
    {
        "x-omni": ConverterSpec(
            name="x-omni",
            description=(
                "the official X-Omni release (config.json with vision_config, safetensors backbone, "
                "SigLIP ViT and VQ projector state dicts, FLUX-based decoder transformer)"
            ),
            implementation="xomni_core.convert.x_omni:convert_x_omni",
        ),
    }
)


def get_converter(name: str) -> ConverterSpec:
    """The converter registered as ``name``; the error lists the formats and a close match."""
    if name in CONVERTERS:
        return CONVERTERS[name]
    close = difflib.get_close_matches(name, list(CONVERTERS), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    raise XomniError(f"unknown checkpoint format '{name}'.{hint} Known formats: {', '.join(CONVERTERS)}.")


def convert(name: str, src: Path, dst: Path, options: ConvertOptions | None = None) -> ConversionResult:
    """Convert ``src`` (in format ``name``) into xomni component folders under ``dst``."""
    return get_converter(name).load()(Path(src), Path(dst), options or ConvertOptions())


__all__ = [
    "CONVERTERS",
    "CONVERT_DTYPES",
    "ConversionResult",
    "ConvertDtype",
    "ConvertOptions",
    "Converter",
    "ConverterSpec",
    "convert",
    "get_converter",
]
