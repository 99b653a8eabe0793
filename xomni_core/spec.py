"""Plugin descriptors: light objects that entry points point at.

A descriptor names a component and where its implementation lives without importing it, so
listing plugins and validating configs never pulls in torch.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ._version import CORE_API_VERSION
from .errors import PluginError
from .params import ComponentParams
from .types import BACKENDS, COMPONENT_KINDS, ComponentKind

if TYPE_CHECKING:
    from .interfaces import Component

_NAME = re.compile(r"[\w.-]+")
_API_VERSION = re.compile(r"\d+(\.\d+)*")
_TARGET = re.compile(r"[\w.]+:[\w.]+")


@dataclass(frozen=True)
class PluginSpec:
    """Describes one component plugin.

    ``implementation`` is ``"package.module:ClassName"``, imported on first use. ``params`` is
    the pydantic model of the component's parameters; it must live in a module that does not
    import torch. ``api_version`` is the xomni core API version the plugin was written for.
    ``runtimes`` maps other backends (``onnxruntime``, ``tensorrt``) to classes that run the
    component's exported artefacts behind the same interface.
    """

    name: str
    kind: ComponentKind
    version: str
    api_version: str
    implementation: str
    params: type[ComponentParams]
    description: str = ""
    tags: tuple[str, ...] = field(default=())
    runtimes: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if isinstance(self.tags, list):  # a list is as good as a tuple, but a tuple hashes
            object.__setattr__(self, "tags", tuple(self.tags))
        self.check()

    def check(self) -> None:
        """Raise :class:`PluginError` naming every malformed field.

        Runs at construction and again when discovery admits the descriptor, so one changed
        after construction is refused too.
        """
        problems = PluginSpec.problems(self)
        if problems:
            raise PluginError(f"malformed plugin descriptor {self.name!r}: " + "; ".join(problems))

    def problems(self) -> list[str]:
        """What is wrong with the fields, one phrase each; empty when the descriptor is sound."""
        problems = []
        if not (isinstance(self.name, str) and _NAME.fullmatch(self.name)):
            problems.append(f"name {self.name!r} must be non-empty letters, digits, '-', '_', '.'")
        if not (isinstance(self.kind, str) and self.kind in COMPONENT_KINDS):
            problems.append(f"kind {self.kind!r} is not one of {', '.join(COMPONENT_KINDS)}")
        if not (isinstance(self.version, str) and self.version.strip()):
            problems.append(f"version {self.version!r} must be a non-empty string such as '1.0.0'")
        if not (isinstance(self.api_version, str) and _API_VERSION.fullmatch(self.api_version)):
            problems.append(
                f"api_version {self.api_version!r} must be a string such as {CORE_API_VERSION!r} "
                "(the xomni core API the plugin targets)"
            )
        if not (isinstance(self.implementation, str) and _TARGET.fullmatch(self.implementation)):
            problems.append(
                f"implementation {self.implementation!r} must look like 'package.module:ClassName'"
            )
        if not (isinstance(self.params, type) and issubclass(self.params, ComponentParams)):
            problems.append("params must be a subclass of xomni_core.ComponentParams")
        if not isinstance(self.description, str):
            problems.append(f"description {self.description!r} must be a string")
        if not (isinstance(self.tags, tuple) and all(isinstance(t, str) for t in self.tags)):
            problems.append(f"tags {self.tags!r} must be a tuple of strings")
        if not isinstance(self.runtimes, Mapping):
            problems.append(f"runtimes {self.runtimes!r} must map backends to 'package.module:ClassName'")
        else:
            bad = [
                f"{b!r}={v!r}"
                for b, v in self.runtimes.items()
                if b not in BACKENDS or not (isinstance(v, str) and _TARGET.fullmatch(v))
            ]
            if bad:
                problems.append(
                    f"runtimes {', '.join(bad)} must map one of {', '.join(BACKENDS)} to "
                    "'package.module:ClassName'"
                )
        return problems

    @property
    def qualified_name(self) -> str:
        return f"{self.kind}/{self.name}"

    @property
    def backends(self) -> tuple[str, ...]:
        """Backends this plugin runs on: always ``torch``, plus its declared runtimes."""
        return ("torch", *(b for b in BACKENDS if b in self.runtimes))

    def load(self, backend: str = "torch") -> type[Component[ComponentParams]]:
        """Import and return the implementation class for ``backend``."""
        from .interfaces import Component

        if backend == "torch":
            target = self.implementation
        elif backend in self.runtimes:
            target = self.runtimes[backend]
        else:
            raise PluginError(
                f"{self.kind} plugin '{self.name}' has no {backend} runtime; it runs on "
                f"{', '.join(self.backends)}"
            )
        module_name, _, attr = target.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), attr)
        except Exception as exc:
            raise PluginError(
                f"{self.kind} plugin '{self.name}' failed to load its implementation "
                f"{target}: {type(exc).__name__}: {exc}"
            ) from exc
        if not (isinstance(cls, type) and issubclass(cls, Component) and cls.kind == self.kind):
            raise PluginError(
                f"{self.kind} plugin '{self.name}': {target} is not a xomni_core {self.kind} component class"
            )
        return cls
