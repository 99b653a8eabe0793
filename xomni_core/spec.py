"""Plugin descriptors: light objects that entry points point at.

A descriptor names a component and where its implementation lives without importing it, so
listing plugins and validating configs never pulls in torch.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from .errors import PluginError
from .params import ComponentParams
from .types import BACKENDS, COMPONENT_KINDS, ComponentKind

if TYPE_CHECKING:
    from .interfaces import Component


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
        problems = []
        if not self.name or not all(c.isalnum() or c in "-_." for c in self.name):
            problems.append(f"name {self.name!r} must be non-empty letters, digits, '-', '_', '.'")
        if self.kind not in COMPONENT_KINDS:
            problems.append(f"kind {self.kind!r} is not one of {', '.join(COMPONENT_KINDS)}")
        if ":" not in self.implementation:
            problems.append(
                f"implementation {self.implementation!r} must look like 'package.module:ClassName'"
            )
        bad_runtimes = [f"{b}={v!r}" for b, v in self.runtimes.items() if b not in BACKENDS or ":" not in v]
        if bad_runtimes:
            problems.append(
                f"runtimes {', '.join(bad_runtimes)} must map one of {', '.join(BACKENDS)} to "
                "'package.module:ClassName'"
            )
        if not (isinstance(self.params, type) and issubclass(self.params, ComponentParams)):
            problems.append("params must be a subclass of xomni_core.ComponentParams")
        if problems:
            raise PluginError(f"malformed plugin descriptor '{self.name}': " + "; ".join(problems))

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
