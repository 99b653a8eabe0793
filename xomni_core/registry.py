"""Plugin discovery through the ``xomni.plugins`` entry-point group and pluggy hooks.

Each entry point is loaded on its own: one that fails to import, or points at something that
is not a descriptor, is recorded as broken with its error and the others keep working. Only
descriptors are imported here; implementations load on first use (:meth:`PluginSpec.load`).
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import pluggy

from . import hookspecs
from ._version import CORE_API_VERSION
from .errors import PluginError
from .settings import PluginSettings
from .spec import PluginSpec
from .types import ComponentKind

ENTRY_POINT_GROUP = "xomni.plugins"

PluginStatus = Literal["ok", "broken", "disabled", "incompatible", "conflict", "overridden"]


@dataclass(frozen=True)
class PluginRecord:
    """What discovery found for one plugin (or one entry point that failed to give any)."""

    name: str
    kind: ComponentKind | None
    version: str | None
    distribution: str
    entry_point: str
    status: PluginStatus
    error: str | None = None
    spec: PluginSpec | None = None
    hooks: tuple[str, ...] = ()

    @property
    def usable(self) -> bool:
        return self.status == "ok"

    @property
    def qualified_name(self) -> str:
        return f"{self.kind}/{self.name}" if self.kind else self.name


class PluginRegistry:
    """The installed plugins, as admitted by :class:`PluginSettings`."""

    def __init__(self, records: Sequence[PluginRecord], manager: pluggy.PluginManager) -> None:
        self.records = tuple(records)
        self.manager = manager

    @classmethod
    def discover(
        cls,
        settings: PluginSettings | None = None,
        *,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        use_environment: bool = True,
    ) -> PluginRegistry:
        """Load every entry point of the ``xomni.plugins`` group and resolve name clashes."""
        settings = settings or PluginSettings()
        if use_environment:
            settings = settings.with_environment()
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        records: list[PluginRecord] = []
        for entry_point in _unique(entry_points):
            records.extend(_load_entry_point(entry_point, manager, settings))
        records = _resolve_conflicts(records, settings)
        registry = cls(records, manager)
        if settings.strict:
            registry.raise_for_problems()
        return registry

    @property
    def hook(self) -> Any:
        """pluggy hook relay: ``registry.hook.xomni_pipeline_built(pipeline=..., config=...)``."""
        return self.manager.hook

    def problems(self) -> list[PluginRecord]:
        """Records that are broken, incompatible or in an unresolved clash."""
        return [r for r in self.records if r.status in ("broken", "incompatible", "conflict")]

    def raise_for_problems(self) -> None:
        """Strict mode: fail when any installed plugin has a problem."""
        problems = self.problems()
        if problems:
            lines = "; ".join(f"{r.qualified_name} from {r.distribution}: {r.error}" for r in problems)
            raise PluginError(f"strict plugin mode: {len(problems)} plugin(s) have problems: {lines}")

    def find(self, name: str) -> list[PluginRecord]:
        """Records whose name or ``kind/name`` is ``name``."""
        return [r for r in self.records if name in (r.name, r.qualified_name)]

    def get(self, kind: ComponentKind, name: str) -> PluginSpec:
        """The usable descriptor of ``kind/name``; errors say what exists and why not usable."""
        matches = [r for r in self.records if r.kind == kind and r.name == name]
        usable = [r for r in matches if r.usable]
        if usable:
            assert usable[0].spec is not None
            return usable[0].spec
        if matches:
            record = next((r for r in matches if r.status != "overridden"), matches[0])
            raise PluginError(f"{kind} plugin '{name}' is {record.status}: {record.error}")
        broken_here = [r for r in self.records if r.kind is None and r.status == "broken"]
        available = sorted({r.name for r in self.records if r.kind == kind and r.usable})
        message = f"unknown {kind} plugin '{name}'."
        close = difflib.get_close_matches(name, available, n=1)
        if close:
            message += f" Did you mean '{close[0]}'?"
        message += f" Available {kind} plugins: {', '.join(available) or 'none'}."
        others = sorted({r.qualified_name for r in self.records if r.name == name and r.kind != kind})
        if others:
            message += f" '{name}' exists as {', '.join(others)}."
        if broken_here:
            message += " Broken plugins that might provide it: " + ", ".join(
                f"{r.entry_point} ({r.distribution})" for r in broken_here
            )
        raise PluginError(message)

    def names(self, kind: ComponentKind) -> list[str]:
        return sorted({r.name for r in self.records if r.kind == kind and r.usable})


def _unique(entry_points: Iterable[metadata.EntryPoint]) -> list[metadata.EntryPoint]:
    """Drop entry points seen twice (a distribution visible through two path entries)."""
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for entry_point in entry_points:
        key = (_distribution_name(entry_point), entry_point.name, entry_point.value)
        if key not in seen:
            seen.add(key)
            unique.append(entry_point)
    return unique


def _distribution_name(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return dist.metadata["Name"] if dist is not None else "<unknown>"


def _distribution_label(entry_point: metadata.EntryPoint) -> str:
    dist = entry_point.dist
    return f"{dist.metadata['Name']} {dist.version}" if dist is not None else "<unknown>"


def _matches(entries: Iterable[str], *names: str) -> bool:
    wanted = set(entries)
    return any(name in wanted for name in names)


def _load_entry_point(
    entry_point: metadata.EntryPoint, manager: pluggy.PluginManager, settings: PluginSettings
) -> list[PluginRecord]:
    dist_name = _distribution_name(entry_point)
    label = _distribution_label(entry_point)
    where = f"{entry_point.name} = {entry_point.value}"
    base = PluginRecord(
        name=entry_point.name,
        kind=None,
        version=None,
        distribution=label,
        entry_point=where,
        status="broken",
    )
    # Denied entry points are never imported, so a denylist can silence a plugin that crashes.
    if _matches(settings.deny, entry_point.name, dist_name):
        return [replace(base, status="disabled", error="disabled by the plugin denylist")]
    try:
        loaded = entry_point.load()
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [replace(base, error=f"import failed: {type(exc).__name__}: {exc}")]
    hooks: tuple[str, ...] = ()
    try:
        if isinstance(loaded, PluginSpec):
            specs = [loaded]
        elif isinstance(loaded, list | tuple):
            specs = list(loaded)
        else:
            specs, hooks = _specs_from_hooks(loaded, entry_point.name, manager)
        bad = [s for s in specs if not isinstance(s, PluginSpec)]
        if bad or not specs:
            raise PluginError(
                f"entry point must point at a PluginSpec, a list of them, or an object with "
                f"@hookimpl functions returning them; got {type(bad[0] if bad else loaded).__name__}"
            )
    except BaseException as exc:
        if isinstance(exc, KeyboardInterrupt):
            raise
        return [replace(base, error=f"malformed descriptor: {exc}")]
    return [_admit(spec, label, dist_name, where, hooks, settings) for spec in specs]


def _specs_from_hooks(
    plugin: object, name: str, manager: pluggy.PluginManager
) -> tuple[list[Any], tuple[str, ...]]:
    manager.register(plugin, name=name)
    hooks = tuple(sorted(h.name for h in manager.get_hookcallers(plugin) or ()))
    impls = [i for i in manager.hook.xomni_register_plugins.get_hookimpls() if i.plugin is plugin]
    specs: list[Any] = []
    for impl in impls:
        returned: Any = impl.function()
        specs.extend(returned or ())
    return specs, hooks


def _admit(
    spec: PluginSpec,
    label: str,
    dist_name: str,
    where: str,
    hooks: tuple[str, ...],
    settings: PluginSettings,
) -> PluginRecord:
    record = PluginRecord(
        name=spec.name,
        kind=spec.kind,
        version=spec.version,
        distribution=label,
        entry_point=where,
        status="ok",
        spec=spec,
        hooks=hooks,
    )
    names = (spec.name, spec.qualified_name, where.split(" = ")[0], dist_name)
    if _matches(settings.deny, *names):
        return replace(record, status="disabled", error="disabled by the plugin denylist")
    if settings.allow is not None and not _matches(settings.allow, *names):
        return replace(record, status="disabled", error="not in the plugin allowlist")
    if spec.api_version.split(".")[0] != CORE_API_VERSION.split(".")[0]:
        return replace(
            record,
            status="incompatible",
            error=(
                f"targets xomni core API {spec.api_version} but this xomni provides "
                f"{CORE_API_VERSION}; install a release of {dist_name} built for core API "
                f"{CORE_API_VERSION.split('.')[0]}.x, or an xomni matching {spec.api_version}"
            ),
        )
    return record


def _resolve_conflicts(records: list[PluginRecord], settings: PluginSettings) -> list[PluginRecord]:
    groups: dict[tuple[str | None, str], list[int]] = defaultdict(list)
    for index, record in enumerate(records):
        if record.kind is not None and record.status == "ok":
            groups[(record.kind, record.name)].append(index)
    resolved = list(records)
    for (kind, name), indices in groups.items():
        if len(indices) < 2:
            continue
        dists = [records[i].distribution for i in indices]
        pin = settings.prefer.get(f"{kind}/{name}") or settings.prefer.get(name)
        for i in indices:
            record = records[i]
            if pin is None:
                error = (
                    f"{kind} plugin '{name}' is provided by several distributions: "
                    f"{', '.join(dists)}; pin one with plugins.prefer = "
                    f"{{'{kind}/{name}': '<distribution>'}}"
                )
                resolved[i] = replace(record, status="conflict", error=error)
            elif record.distribution.split(" ")[0] != pin:
                resolved[i] = replace(
                    record,
                    status="overridden",
                    error=f"plugins.prefer picks {pin} for {kind}/{name}",
                )
        if pin is not None and not any(records[i].distribution.split(" ")[0] == pin for i in indices):
            for i in indices:
                resolved[i] = replace(
                    records[i],
                    status="conflict",
                    error=f"plugins.prefer names {pin} for {kind}/{name}, but it is provided by "
                    f"{', '.join(dists)}",
                )
    return resolved
