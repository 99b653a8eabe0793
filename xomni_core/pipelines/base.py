"""What every pipeline shares: its components by slot, its runtime settings, its folder format."""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, MutableMapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from ..atomic import atomic_directory
from ..config import PipelineConfig, RuntimeSettings, validation_message
from ..cpu import configure_cpu
from ..errors import ConfigError, InputError
from ..registry import PluginRegistry
from .folder import (
    CONFIG_FILE,
    INDEX_FILE,
    capabilities,
    component_plugin,
    folder_config,
    write_pipeline_files,
)

if TYPE_CHECKING:
    import torch

_Pipeline = TypeVar("_Pipeline", bound="PipelineBase")


class Components(MutableMapping[str, Any]):
    """A pipeline's components by slot; setting one swaps it in the pipeline (checked to fit)."""

    def __init__(self, pipeline: PipelineBase) -> None:
        self._pipeline = pipeline

    def __getitem__(self, slot: str) -> Any:
        if slot not in self._pipeline.slots:
            raise KeyError(slot)
        return getattr(self._pipeline, slot)

    def __setitem__(self, slot: str, component: Any) -> None:
        self._pipeline.swap(slot, component)

    def __delitem__(self, slot: str) -> None:
        raise TypeError(f"a pipeline cannot lose its {slot}; set another component instead")

    def __iter__(self) -> Iterator[str]:
        return iter(self._pipeline.slots)

    def __len__(self) -> int:
        return len(self._pipeline.slots)


class PipelineBase:
    """Components by slot, runtime settings (device, dtype, threads, seed) and pipeline folders.

    The runtime settings belong to the pipeline: building it applies them, and every call runs
    with its thread count, however the pipeline was made (command line, config, folder or code).
    Building runs as the command line does, under :func:`xomni_core.heap.long_lived_objects`:
    no automatic collections while weights load, then what is alive is frozen, so later
    collections do not walk the libraries' and the weights' objects again.
    """

    slots: ClassVar[tuple[str, ...]]
    config: PipelineConfig
    registry: PluginRegistry | None
    capabilities: dict[str, bool]

    def _init_base(self, config: PipelineConfig | None, registry: PluginRegistry | None) -> None:
        self.config = config or PipelineConfig()
        self.registry = registry
        self.capabilities = {}
        self._progress: dict[str, Any] = {}

    @property
    def runtime(self) -> RuntimeSettings:
        return self.config.runtime

    @property
    def components(self) -> Components:
        """The components by slot; ``pipe.components["decoder"] = other`` swaps one, and
        ``type(pipe)(**pipe.components)`` builds another pipeline on the same components."""
        return Components(self)

    def swap(self, slot: str, component: Any) -> None:
        """Put ``component`` in ``slot``, after checking that it fits the other components."""
        if slot not in self.slots:
            raise KeyError(f"{type(self).__name__} has no slot {slot!r}; slots: {', '.join(self.slots)}")
        current = {name: getattr(self, name) for name in self.slots}
        current[slot] = component
        self._check(current)
        setattr(self, slot, component)

    def _check(self, components: Mapping[str, Any]) -> None:
        """Raise :class:`ConfigError` when ``components`` do not fit together."""

    def set_progress_bar_config(self, **kwargs: Any) -> None:
        """Progress bar settings, as in diffusers; ``disable=True`` hides them."""
        self._progress.update(kwargs)

    def _show_progress(self, show_progress: bool | None) -> bool:
        if show_progress is not None:
            return show_progress
        return not self._progress.get("disable", False)

    # ------------------------------------------------------------------ runtime

    def to(
        self: _Pipeline,
        device: str | torch.device | None = None,
        dtype: str | torch.dtype | None = None,
        *,
        torch_dtype: str | torch.dtype | None = None,
    ) -> _Pipeline:
        """Move every component to ``device`` and ``dtype``; the runtime settings follow."""
        runtime = with_runtime(self.runtime, device=device, dtype=dtype if dtype is not None else torch_dtype)
        for slot in self.slots:
            component = getattr(self, slot)
            moved = component.to(device=runtime.device, dtype=runtime.dtype)
            setattr(self, slot, moved if moved is not None else component)
        self.config = _replace_runtime(self.config, runtime)
        return self

    # ------------------------------------------------------------------ folders

    @classmethod
    def from_config(
        cls: type[_Pipeline],
        config: PipelineConfig | str | os.PathLike[str],
        *,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
        components: Mapping[str, Any] | None = None,
    ) -> _Pipeline:
        """Build from a pipeline config; each pipeline class says which slots it uses."""
        raise NotImplementedError

    @classmethod
    def from_pretrained(
        cls: type[_Pipeline],
        path: str | os.PathLike[str],
        *,
        torch_dtype: str | torch.dtype | None = None,
        device: str | torch.device | None = None,
        threads: int | None = None,
        seed: int | None = None,
        overrides: list[str] | None = None,
        registry: PluginRegistry | None = None,
        **components: Any,
    ) -> _Pipeline:
        """Load a pipeline folder (``model_index.json``, or ``pipeline.yaml``, beside the
        component folders), such as the shipped xomni-nano or a converted X-Omni release.

        ``torch_dtype``, ``device``, ``threads`` and ``seed`` replace the folder's runtime
        settings; a component passed by slot name (``decoder=...``) is used instead of loading
        that slot.
        """
        config = folder_config(path, overrides)
        runtime = with_runtime(config.runtime, device=device, dtype=torch_dtype, threads=threads, seed=seed)
        return cls.from_config(_replace_runtime(config, runtime), registry=registry, components=components)

    def save_pretrained(self, path: str | os.PathLike[str]) -> None:
        """Write a pipeline folder: one folder per slot, ``model_index.json`` and ``pipeline.yaml``.

        The folder is written beside ``path`` and renamed into place when complete. An existing
        folder is replaced only when it holds nothing but an earlier pipeline's entries; any
        other file in it is the user's, and the save is refused. Rewards are not saved.
        """
        target = Path(path).expanduser()
        _refuse_foreign_entries(target, {*self.slots, INDEX_FILE, CONFIG_FILE})
        sections: dict[str, dict[str, Any]] = {}
        with atomic_directory(target) as folder:
            for slot in self.slots:
                getattr(self, slot).save_pretrained(folder / slot)
                _, plugin = component_plugin(folder / slot)
                sections[slot] = {"plugin": plugin, "weights": slot}
            data = {
                **sections,
                "runtime": self.runtime.model_dump(mode="json"),
                "generation": self.config.generation.model_dump(mode="json"),
                "plugins": self.config.plugins.model_dump(mode="json"),
            }
            config = PipelineConfig.model_validate(data)
            flags = {name: value for name, value in self.capabilities.items() if not value}
            write_pipeline_files(
                folder,
                config,
                class_name=type(self).__name__,
                registry=self.registry or PluginRegistry.discover(config.plugins),
                capability_flags=flags or None,
            )


def with_runtime(
    runtime: RuntimeSettings,
    *,
    device: str | torch.device | None = None,
    dtype: str | torch.dtype | None = None,
    threads: int | None = None,
    seed: int | None = None,
) -> RuntimeSettings:
    """``runtime`` with the given settings replaced, validated; errors name the argument."""
    changes: dict[str, Any] = {}
    if device is not None:
        changes["device"] = str(device)
    if dtype is not None:
        changes["dtype"] = str(dtype).removeprefix("torch.")
    if threads is not None:
        changes["threads"] = threads
    if seed is not None:
        changes["seed"] = seed
    if not changes:
        return runtime
    from pydantic import ValidationError

    names = {"dtype": "torch_dtype"}
    try:
        return RuntimeSettings.model_validate({**runtime.model_dump(), **changes})
    except ValidationError as exc:
        message = validation_message(exc, RuntimeSettings)
        for field, name in names.items():
            message = message.replace(f"{field}:", f"{name}:")
        raise ConfigError(message) from exc


def config_capabilities(config: PipelineConfig | str | os.PathLike[str]) -> dict[str, bool]:
    """What the model of a config was trained for, from the ``model_index.json`` beside it."""
    folder = config._base_dir if isinstance(config, PipelineConfig) else Path(config).resolve().parent
    return capabilities(folder) if folder is not None else {}


def apply_runtime(runtime: RuntimeSettings) -> None:
    """The process-wide part of the runtime settings, applied before components are built."""
    configure_cpu(runtime)


def _replace_runtime(config: PipelineConfig, runtime: RuntimeSettings) -> PipelineConfig:
    if runtime == config.runtime:
        return config
    return config.model_copy(update={"runtime": runtime})


def _refuse_foreign_entries(target: Path, ours: set[str]) -> None:
    if not os.path.lexists(target):
        return
    if not target.is_dir():
        raise InputError(f"save_pretrained: {target} exists and is not a folder; choose another path")
    foreign = sorted(entry.name for entry in target.iterdir() if entry.name not in ours)
    if foreign:
        shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
        raise InputError(
            f"save_pretrained: {target} holds files that are not a pipeline's ({shown}); "
            "they are kept: save into an empty or new folder"
        )
