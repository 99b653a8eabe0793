"""Turning a validated config into live components."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import PipelineConfig, ResolvedComponent, ResolvedConfig, load_config, resolve_config
from ..errors import ConfigError
from ..interfaces import Backbone, Component
from ..registry import PluginRegistry
from ..resources import check_resources

if TYPE_CHECKING:
    from ..params import ComponentParams


def prepare(
    config: PipelineConfig | str | os.PathLike[str],
    *,
    overrides: list[str] | None = None,
    registry: PluginRegistry | None = None,
    slots: Sequence[str] | None = None,
    allow_large: bool | None = None,
) -> tuple[ResolvedConfig, PluginRegistry]:
    """Load (if a path), discover plugins with the config's settings, resolve every slot, and
    check that the machine can hold the components about to be built (``slots``, default all).

    The device and memory checks run before anything is allocated; ``allow_large=True`` (or
    ``XOMNI_ALLOW_LARGE=1``) skips the memory check, see :mod:`xomni_core.resources`.
    """
    if not isinstance(config, PipelineConfig):
        config = load_config(config, overrides)
    elif overrides:
        raise ConfigError("overrides apply to config files; pass an already overridden PipelineConfig")
    registry = registry or PluginRegistry.discover(config.plugins)
    resolved = resolve_config(config, registry)
    check_resources(resolved, slots, allow_large=allow_large)
    return resolved, registry


def build_component(
    resolved: ResolvedComponent, config: PipelineConfig, registry: PluginRegistry
) -> Component[ComponentParams]:
    """Load pretrained weights or build fresh ones, then move to the runtime device and dtype.

    Other backends load the component's exported artefacts through its runtime class.
    """
    cls = resolved.spec.load(resolved.backend)
    if resolved.backend != "torch":
        assert resolved.weights is not None  # resolve_config insists on it
        component = cls.from_exported(
            resolved.weights,
            backend=resolved.backend,
            device=config.runtime.device,
            providers=resolved.providers,
        )
    elif resolved.weights is not None:
        component = cls.from_pretrained(resolved.weights)
    else:
        component = cls.from_params(resolved.params, seed=config.runtime.seed)
    adapter = _adapter_path(resolved, config)
    if adapter is not None:
        from ..training.lora import load_adapter, merge_lora

        # Merged before the cast to the runtime dtype, so half precision rounds the sum once.
        module = component.trainable_module()  # type: ignore[attr-defined]
        load_adapter(module, adapter)
        merge_lora(module)
    if resolved.backend == "torch":
        component = component.to(device=config.runtime.device, dtype=config.runtime.dtype)
        if config.runtime.compile and isinstance(component, Backbone):
            component.compile_decoding()
    registry.call_hook("xomni_component_built", component=component, slot=resolved.slot, config=config)
    return component


def _adapter_path(resolved: ResolvedComponent, config: PipelineConfig) -> Path | None:
    """The slot's ``adapter`` folder, relative paths resolved against the config file."""
    section = config.backbone if resolved.slot == "backbone" else None
    declared = getattr(getattr(config, resolved.slot, None), "adapter", None)
    if declared is not None and section is None:
        raise ConfigError(f"{resolved.slot}.adapter: only the backbone takes a LoRA adapter")
    if section is None or section.adapter is None:
        return None
    if resolved.backend != "torch":
        raise ConfigError(
            f"backbone.adapter: the {resolved.backend} backend runs exported artefacts; merge the "
            "adapter first (`xomni train merge-lora`) and export the merged backbone"
        )
    path = Path(os.path.expanduser(section.adapter))
    if not path.is_absolute() and config._base_dir is not None:
        path = config._base_dir / path
    if not path.is_dir():
        raise ConfigError(f"backbone.adapter: folder {path} does not exist")
    return path


def announce(pipeline: Any, config: PipelineConfig | None, registry: PluginRegistry | None) -> None:
    if registry is not None:
        registry.call_hook("xomni_pipeline_built", pipeline=pipeline, config=config)
