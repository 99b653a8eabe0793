"""pluggy hook specifications of the ``xomni`` project.

An entry point in the ``xomni.plugins`` group may point at a :class:`~xomni_core.PluginSpec`,
a list of them, or an object (usually a module) with ``@hookimpl`` functions below: descriptors
from ``xomni_register_plugins``, build hooks, or both. A build hook that raises is reported as
a warning naming its plugin (:class:`~xomni_core.registry.PluginWarning`) and the build goes on.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .spec import PluginSpec

PROJECT = "xomni"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def xomni_register_plugins() -> list[PluginSpec]:  # type: ignore[empty-body]
    """Return the component descriptors this package provides (several from one hook)."""


@hookspec
def xomni_component_built(component: Any, slot: str, config: Any) -> None:
    """Called after a pipeline built or loaded the component for ``slot`` (``"backbone"``...)."""


@hookspec
def xomni_pipeline_built(pipeline: Any, config: Any) -> None:
    """Called once a pipeline has all its components, before its first use."""
