"""Converters from published checkpoint layouts to xomni component folders (``xomni convert``).

The core knows no checkpoint format: every converter, the reference ones included, is a
:class:`ConverterSpec` that a distribution registers in the ``xomni.converters`` entry-point
group. A spec names its implementation as ``"package.module:function"``, imported only when a
conversion runs, so listing converters never imports torch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, Protocol, cast

from ..errors import PluginError, XomniError

ConvertDtype = Literal["float32", "float16", "bfloat16"]
CONVERT_DTYPES: tuple[ConvertDtype, ...] = ("float32", "float16", "bfloat16")

#: What a converter's own option holds: a folder or file, an on/off switch, or free text.
OptionKind = Literal["path", "flag", "text"]

_NAME = re.compile(r"[\w.-]+")
_OPTION_NAME = re.compile(r"[A-Za-z_]\w*")
_TARGET = re.compile(r"[\w.]+:[\w.]+")
#: Flags every converter's command line has.
_SHARED_FLAGS = ("--help", "--dtype", "--force", "--no-progress")


@dataclass(frozen=True, init=False)
class ConvertOptions:
    """Choices a user makes when converting.

    ``dtype`` casts floating-point weights (``None`` keeps the stored dtype), ``force`` replaces
    an existing destination, ``show_progress`` shows progress bars. Every other keyword is an
    option of one converter (declared in its :attr:`ConverterSpec.options`) and lands in
    :attr:`extra`; it also reads as an attribute: ``ConvertOptions(suffix="!").suffix``.
    """

    dtype: ConvertDtype | None
    force: bool
    show_progress: bool
    extra: Mapping[str, Any] = field(hash=False)

    def __init__(
        self,
        *,
        dtype: ConvertDtype | None = None,
        force: bool = False,
        show_progress: bool = True,
        **extra: Any,
    ) -> None:
        object.__setattr__(self, "dtype", dtype)
        object.__setattr__(self, "force", force)
        object.__setattr__(self, "show_progress", show_progress)
        object.__setattr__(self, "extra", MappingProxyType(dict(extra)))

    def __getattr__(self, name: str) -> Any:
        extra = self.__dict__.get("extra", {})
        if name in extra:
            return extra[name]
        raise AttributeError(f"{type(self).__name__} has no option {name!r}")


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
class ConverterOption:
    """An option of one converter: ``name`` in :attr:`ConvertOptions.extra`, ``flag`` on the
    command line (default ``--name-with-dashes``). A ``flag`` option defaults to ``False``, the
    others to ``None``."""

    name: str
    help: str
    kind: OptionKind = "text"
    flag: str | None = None
    metavar: str | None = None

    @property
    def cli_flag(self) -> str:
        return self.flag or "--" + self.name.replace("_", "-")

    @property
    def default(self) -> bool | None:
        return False if self.kind == "flag" else None


@dataclass(frozen=True)
class ConverterSpec:
    """One registered format: its name, a one-line description, where the code lives and the
    options of its own that it takes."""

    name: str
    description: str
    implementation: str
    options: tuple[ConverterOption, ...] = ()

    def __post_init__(self) -> None:
        if isinstance(self.options, list):
            object.__setattr__(self, "options", tuple(self.options))
        problems = self.problems()
        if problems:
            raise PluginError(f"malformed converter descriptor {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the fields, one phrase each; empty when the descriptor is sound."""
        problems = []
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)):
            problems.append(f"name {self.name!r} must be non-empty letters, digits, '-', '_', '.'")
        if not isinstance(self.description, str):
            problems.append(f"description {self.description!r} must be a string")
        if not (isinstance(self.implementation, str) and _TARGET.fullmatch(self.implementation)):
            problems.append(
                f"implementation {self.implementation!r} must look like 'package.module:function'"
            )
        options = self.options
        if not (isinstance(options, tuple) and all(isinstance(o, ConverterOption) for o in options)):
            problems.append("options must be a tuple of xomni_core.convert.ConverterOption")
            return problems
        reserved = {"dtype", "force", "show_progress"}
        for option in self.options:
            if not _OPTION_NAME.fullmatch(option.name) or option.name in reserved:
                problems.append(
                    f"option name {option.name!r} must be an identifier other than {sorted(reserved)}"
                )
            if not re.fullmatch(r"--[a-z0-9][a-z0-9-]*", option.cli_flag) or option.cli_flag in _SHARED_FLAGS:
                problems.append(
                    f"option {option.name!r}: flag {option.cli_flag!r} must be '--lower-case-words' "
                    f"other than {', '.join(_SHARED_FLAGS)}"
                )
            if option.kind not in ("path", "flag", "text"):
                problems.append(f"option {option.name!r}: kind {option.kind!r} is not path, flag or text")
        names = [o.name for o in self.options]
        if len(set(names)) != len(names):
            problems.append(f"option names repeat: {names}")
        return problems

    def load(self) -> Converter:
        """Import and return the converter function."""
        module_name, _, attr = self.implementation.partition(":")
        try:
            function = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise PluginError(
                f"converter '{self.name}' failed to load {self.implementation}: {type(exc).__name__}: {exc}"
            ) from exc
        if not callable(function):
            raise PluginError(f"converter '{self.name}': {self.implementation} is not callable")
        return cast(Converter, function)

    def resolve(self, options: ConvertOptions) -> ConvertOptions:
        """``options`` with this converter's defaults filled in; an option it does not declare
        is refused, naming those it takes."""
        declared = {o.name: o for o in self.options}
        unknown = sorted(set(options.extra) - set(declared))
        if unknown:
            takes = ", ".join(f"{o.name} ({o.cli_flag})" for o in self.options) or "none of its own"
            raise XomniError(
                f"converter '{self.name}' takes no option {', '.join(map(repr, unknown))}; "
                f"its options: {takes}"
            )
        extra: dict[str, Any] = {}
        for name, option in declared.items():
            value = options.extra.get(name, option.default)
            if option.kind == "path" and value is not None:
                value = Path(value)
            extra[name] = value
        return ConvertOptions(
            dtype=options.dtype, force=options.force, show_progress=options.show_progress, **extra
        )


def get_converter(name: str) -> ConverterSpec:
    """The installed converter registered as ``name``; the error lists the others and a close
    match, or says why the one named is not usable."""
    from ..registry import find_converter

    return find_converter(name)


def convert(name: str, src: Path, dst: Path, options: ConvertOptions | None = None) -> ConversionResult:
    """Convert ``src`` (in format ``name``) into xomni component folders under ``dst``."""
    spec = get_converter(name)
    resolved = spec.resolve(options or ConvertOptions())
    return spec.load()(Path(src), Path(dst), resolved)


def __getattr__(name: str) -> Any:
    # CONVERTERS reads the entry points when first asked for, not at import.
    if name == "CONVERTERS":
        from ..registry import usable_converters

        return usable_converters()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "CONVERTERS",
    "CONVERT_DTYPES",
    "ConversionResult",
    "ConvertDtype",
    "ConvertOptions",
    "Converter",
    "ConverterOption",
    "ConverterSpec",
    "convert",
    "get_converter",
]
