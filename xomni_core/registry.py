"""Plugin discovery through the ``xomni.plugins`` entry-point group and pluggy hooks, and of
checkpoint converters through the ``xomni.converters`` group.

Each entry point is loaded on its own: one that fails to import, exits, hangs past its time
limit, or points at something that is not a sound descriptor, is recorded as broken with its
error and the others keep working (:mod:`xomni_core.guard`). Only descriptors are imported
here; implementations load on first use (:meth:`PluginSpec.load`). Hooks are called one plugin
at a time: a hook that raises is reported as a :class:`PluginWarning` and the work goes on.
"""

from __future__ import annotations

import difflib
import importlib.metadata as metadata
import importlib.util
import os
import re
import warnings
import weakref
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, TypeVar

import pluggy

from . import hookspecs
from ._version import CORE_API_VERSION
from .convert import ConverterSpec
from .errors import PluginError, XomniError
from .guard import Abandoned, guarded, import_timeout_s, run_guarded
from .settings import ALLOW_ENV, DENY_ENV, PluginSettings
from .spec import PluginSpec
from .types import COMPONENT_KINDS, ComponentKind

if TYPE_CHECKING:
    from .interfaces import Component
    from .params import ComponentParams

ENTRY_POINT_GROUP = "xomni.plugins"
#: Converters are not components (no params, no weights of their own), so they have their own
#: group; their descriptors are :class:`~xomni_core.convert.ConverterSpec`.
CONVERTER_GROUP = "xomni.converters"

#: What ``importlib.metadata`` can load: ``module``, ``module:attribute``, optional ``[extras]``.
_ENTRY_POINT_VALUE = re.compile(r"\s*[\w.]+\s*(:\s*[\w.]+\s*)?(\[.*\]\s*)?")

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


class PluginWarning(UserWarning):
    """A plugin misbehaved where xomni could carry on without it (a raising hook)."""


class PluginRegistry:
    """The installed plugins, as admitted by :class:`PluginSettings`."""

    def __init__(
        self,
        records: Sequence[PluginRecord],
        manager: pluggy.PluginManager,
        hook_sources: Mapping[str, str] | None = None,
    ) -> None:
        self.records = tuple(records)
        self.manager = manager
        # pluggy plugin name -> the distribution that registered its hooks
        self.hook_sources = dict(hook_sources or {})

    @classmethod
    def discover(
        cls,
        settings: PluginSettings | None = None,
        *,
        entry_points: Iterable[metadata.EntryPoint] | None = None,
        use_environment: bool = True,
        timeout_s: float | None = None,
    ) -> PluginRegistry:
        """Load every entry point of the ``xomni.plugins`` group and resolve name clashes.

        Each import may take ``timeout_s`` seconds (default: ``XOMNI_PLUGIN_IMPORT_TIMEOUT``,
        else 10); a slower one is recorded as broken and left behind.
        """
        settings = settings or PluginSettings()
        if use_environment:
            settings = settings.with_environment()
        if timeout_s is None:
            timeout_s = import_timeout_s() if use_environment else import_timeout_s({})
        manager = pluggy.PluginManager(hookspecs.PROJECT)
        manager.add_hookspecs(hookspecs)
        if entry_points is None:
            entry_points = metadata.entry_points(group=ENTRY_POINT_GROUP)
        records: list[PluginRecord] = []
        hook_sources: dict[str, str] = {}
        with guarded():
            for entry_point in _unique(entry_points):
                loaded, found = _load_entry_point(entry_point, settings, timeout_s)
                records.extend(found)
                if any(r.status == "ok" for r in found) and any(r.hooks for r in found):
                    registered = _register_hooks(manager, loaded, entry_point.name, found[0].distribution)
                    if registered is not None:
                        hook_sources[registered] = found[0].distribution
        records = _resolve_conflicts(records, settings)
        registry = cls(records, manager, hook_sources)
        if settings.strict:
            registry.raise_for_problems()
        return registry

    @property
    def hook(self) -> Any:
        """pluggy hook relay: ``registry.hook.xomni_pipeline_built(pipeline=..., config=...)``.

        A hook called through the relay stops at the first plugin that raises; prefer
        :meth:`call_hook`.
        """
        return self.manager.hook

    def call_hook(self, name: str, **kwargs: Any) -> None:
        """Call hook ``name`` of each plugin in pluggy's order, one plugin at a time.

        A plugin whose hook raises is reported as a :class:`PluginWarning` naming it, its
        distribution and the exception; the other plugins' hooks still run.
        """
        caller = getattr(self.manager.hook, name)
        plugins: dict[str, object] = {}
        for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
            plugins.setdefault(impl.plugin_name, impl.plugin)
        for plugin_name, plugin in plugins.items():
            others = [p for p in plugins.values() if p is not plugin]
            try:
                self.manager.subset_hook_caller(name, remove_plugins=others)(**kwargs)
            except Exception as exc:
                source = self.hook_sources.get(plugin_name)
                owner = f"plugin '{plugin_name}'" + (f" ({source})" if source else "")
                warnings.warn(
                    f"{owner}: its {name} hook raised {type(exc).__name__}: {exc}; ignored",
                    PluginWarning,
                    stacklevel=2,
                )

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
        # An entry point that was never imported (denied) or failed to load has no kind yet;
        # one named like the plugin most likely provides it.
        unloaded = [r for r in self.records if r.kind is None]
        named = [r for r in unloaded if r.status != "ok" and _entry_point_name(r) == name]
        if named:
            record = named[0]
            outcome = "was not imported" if record.status == "disabled" else "gave no descriptor"
            raise PluginError(
                f"{kind} plugin '{name}' is {record.status}: {record.error}, so its entry point "
                f"{record.entry_point} of {record.distribution} {outcome}"
            )
        broken_here = [r for r in unloaded if r.status == "broken"]
        disabled_here = [r for r in unloaded if r.status == "disabled"]
        available = sorted({r.name for r in self.records if r.kind == kind and r.usable})
        message = f"unknown {kind} plugin '{name}'."
        close = difflib.get_close_matches(name, available, n=1)
        if close:
            message += f" Did you mean '{close[0]}'?"
        message += f" Available {kind} plugins: {', '.join(available) or 'none'}."
        others = sorted(
            {r.qualified_name for r in self.records if r.name == name and r.kind not in (kind, None)}
        )
        if others:
            message += f" '{name}' exists as {', '.join(others)}."
        if broken_here:
            message += (
                " Broken plugins that might provide it: "
                + ", ".join(f"{r.entry_point} ({r.distribution})" for r in broken_here)
                + "."
            )
        if disabled_here:
            message += (
                " Disabled entry points (not imported) that might provide it: "
                + ", ".join(f"{r.entry_point} ({r.distribution})" for r in disabled_here)
                + "."
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


# Each ``dist.metadata`` parses the distribution's METADATA file anew; one parse per
# distribution object is enough.
_DIST_NAMES: weakref.WeakKeyDictionary[metadata.Distribution, tuple[str, str]] = weakref.WeakKeyDictionary()


def _distribution_names(entry_point: metadata.EntryPoint) -> tuple[str, str]:
    """The entry point's distribution name and its ``name version`` label."""
    dist = entry_point.dist
    if dist is None:
        return "<unknown>", "<unknown>"
    names = _DIST_NAMES.get(dist)
    if names is None:
        info = dist.metadata
        names = (info["Name"], f"{info['Name']} {info['Version']}")
        _DIST_NAMES[dist] = names
    return names


def _distribution_name(entry_point: metadata.EntryPoint) -> str:
    return _distribution_names(entry_point)[0]


def _distribution_label(entry_point: metadata.EntryPoint) -> str:
    return _distribution_names(entry_point)[1]


def _entry_point_name(record: PluginRecord) -> str:
    return record.entry_point.split(" = ")[0]


def _matching(entries: Iterable[str], *names: str) -> str | None:
    """The first of ``names`` listed in ``entries``."""
    wanted = set(entries)
    return next((name for name in names if name in wanted), None)


def _denied(name: str) -> str:
    return f"disabled by the plugin denylist (plugins.deny or {DENY_ENV} names '{name}')"


def _not_allowed() -> str:
    return f"not in the plugin allowlist (plugins.allow or {ALLOW_ENV})"


class _MalformedDescriptor(Exception):
    """The entry point imported, but what it points at gives no sound descriptors."""


def _load_entry_point(
    entry_point: metadata.EntryPoint, settings: PluginSettings, timeout_s: float
) -> tuple[object, list[PluginRecord]]:
    """The object the entry point names (``None`` if it gave none) and its records."""
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
    denied = _matching(settings.deny, entry_point.name, dist_name)
    if denied:
        return None, [replace(base, status="disabled", error=_denied(denied))]
    if not _ENTRY_POINT_VALUE.fullmatch(entry_point.value):
        error = f"malformed entry point value {entry_point.value!r} (expected 'module:attribute')"
        return None, [replace(base, error=error)]
    try:
        loaded, specs, hooks = run_guarded(lambda: _descriptors(entry_point), timeout_s=timeout_s)
    except Abandoned as exc:
        return None, [replace(base, error=str(exc))]
    except _MalformedDescriptor as exc:
        return None, [replace(base, error=f"malformed descriptor: {exc}")]
    except PluginError as exc:  # a PluginSpec refusing its fields while the module imports
        return None, [replace(base, error=str(exc))]
    except Exception as exc:
        return None, [replace(base, error=f"import failed: {type(exc).__name__}: {exc}")]
    if not specs:  # hooks only: it watches pipelines but provides no component
        names = (entry_point.name, dist_name)
        record = replace(base, status="ok", hooks=hooks)
        if settings.allow is not None and not _matching(settings.allow, *names):
            record = replace(record, status="disabled", error=_not_allowed())
        return loaded, [record]
    records = []
    for spec in specs:
        try:
            PluginSpec.check(spec)  # again: fields may have changed since construction
        except Exception as exc:
            records.append(replace(base, error=f"malformed descriptor: {exc}"))
        else:
            records.append(_admit(spec, label, dist_name, where, hooks, settings))
    return loaded, records


def _descriptors(entry_point: metadata.EntryPoint) -> tuple[object, list[PluginSpec], tuple[str, ...]]:
    """Import the entry point and collect its descriptors; runs under :func:`run_guarded`."""
    loaded = entry_point.load()
    try:
        hooks: tuple[str, ...] = ()
        if isinstance(loaded, PluginSpec):
            specs = [loaded]
        elif isinstance(loaded, list | tuple):
            specs = list(loaded)
        else:
            specs, hooks = _specs_from_hooks(loaded, entry_point.name)
        bad = [s for s in specs if not isinstance(s, PluginSpec)]
    except Exception as exc:
        raise _MalformedDescriptor(str(exc)) from exc
    if bad or not (specs or set(hooks) - {"xomni_register_plugins"}):
        raise _MalformedDescriptor(
            "entry point must point at a PluginSpec, a list of them, or an object with @hookimpl "
            "functions (xomni_register_plugins returning them, or other hooks); "
            f"got {type(bad[0] if bad else loaded).__name__}"
        )
    return loaded, specs, hooks


def _specs_from_hooks(plugin: object, name: str) -> tuple[list[Any], tuple[str, ...]]:
    """Call the plugin's ``xomni_register_plugins``, registered with a scratch manager so a
    plugin left behind by a time-out never touches the registry's own."""
    scratch = pluggy.PluginManager(hookspecs.PROJECT)
    scratch.add_hookspecs(hookspecs)
    scratch.register(plugin, name=name)
    hooks = tuple(sorted(h.name for h in scratch.get_hookcallers(plugin) or ()))
    specs: list[Any] = []
    for impl in scratch.hook.xomni_register_plugins.get_hookimpls():
        returned: Any = impl.function()
        specs.extend(returned or ())
    return specs, hooks


def _register_hooks(manager: pluggy.PluginManager, plugin: object, name: str, label: str) -> str | None:
    """Register an admitted plugin's hooks; returns the name they run under."""
    if manager.is_registered(plugin):  # one module behind two entry points
        return None
    if manager.has_plugin(name):  # two distributions with the same entry-point name
        name = f"{name} ({label})"
    try:
        return manager.register(plugin, name=name)
    except Exception:  # already validated by the scratch manager; nothing left to report
        return None


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
    denied = _matching(settings.deny, *names)
    if denied:
        return replace(record, status="disabled", error=_denied(denied))
    if settings.allow is not None and not _matching(settings.allow, *names):
        return replace(record, status="disabled", error=_not_allowed())
    if int(spec.api_version.split(".")[0]) != int(CORE_API_VERSION.split(".")[0]):
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


@dataclass(frozen=True)
class ConverterRecord:
    """What discovery found for one converter (or one entry point that failed to give any)."""

    name: str
    distribution: str
    entry_point: str
    status: PluginStatus
    error: str | None = None
    spec: ConverterSpec | None = None
    kind: Literal["converter"] = "converter"

    @property
    def usable(self) -> bool:
        return self.status == "ok"


def discover_converters(
    settings: PluginSettings | None = None,
    *,
    entry_points: Iterable[metadata.EntryPoint] | None = None,
    use_environment: bool = True,
    timeout_s: float | None = None,
) -> tuple[ConverterRecord, ...]:
    """Load every entry point of the ``xomni.converters`` group, as :meth:`PluginRegistry.discover`
    loads plugins: each on its own and under a time limit, admitted by the allow and deny lists
    (which match a converter as ``name``, ``converter/name``, entry-point or distribution name),
    and a name two distributions provide is a conflict unless ``plugins.prefer`` pins
    ``converter/name``. An entry point points at a ``ConverterSpec`` or a list of them."""
    settings = settings or PluginSettings()
    if use_environment:
        settings = settings.with_environment()
    if timeout_s is None:
        timeout_s = import_timeout_s() if use_environment else import_timeout_s({})
    if entry_points is None:
        entry_points = metadata.entry_points(group=CONVERTER_GROUP)
    records: list[ConverterRecord] = []
    with guarded():
        for entry_point in _unique(entry_points):
            records.extend(_load_converters(entry_point, settings, timeout_s))
    return tuple(_resolve_conflicts(records, settings))


def usable_converters() -> Mapping[str, ConverterSpec]:
    """The usable installed converters by name, in discovery order."""
    return MappingProxyType({r.name: r.spec for r in discover_converters() if r.usable and r.spec})


def find_converter(name: str, records: Sequence[ConverterRecord] | None = None) -> ConverterSpec:
    """The usable converter ``name``; errors say why it is not usable, or list the known ones."""
    records = discover_converters() if records is None else records
    matches = [r for r in records if r.name == name]
    usable = [r for r in matches if r.usable and r.spec is not None]
    if usable:
        assert usable[0].spec is not None
        return usable[0].spec
    if matches:
        record = next((r for r in matches if r.status != "overridden"), matches[0])
        raise PluginError(f"converter '{name}' ({record.distribution}) is {record.status}: {record.error}")
    known = sorted({r.name for r in records if r.usable})
    close = difflib.get_close_matches(name, known, n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    message = f"unknown checkpoint format '{name}'.{hint} Known formats: {', '.join(known) or 'none'}."
    broken = [r for r in records if r.spec is None and r.status != "ok"]
    if broken:
        message += " Converter entry points that gave none: " + ", ".join(
            f"{r.entry_point} ({r.distribution}: {r.status})" for r in broken
        )
        message += "."
    raise XomniError(message)


def _load_converters(
    entry_point: metadata.EntryPoint, settings: PluginSettings, timeout_s: float
) -> list[ConverterRecord]:
    dist_name = _distribution_name(entry_point)
    where = f"{entry_point.name} = {entry_point.value}"
    label = _distribution_label(entry_point)
    base = ConverterRecord(name=entry_point.name, distribution=label, entry_point=where, status="broken")
    denied = _matching(settings.deny, entry_point.name, dist_name)
    if denied:
        return [replace(base, status="disabled", error=_denied(denied))]
    if not _ENTRY_POINT_VALUE.fullmatch(entry_point.value):
        return [replace(base, error=f"malformed entry point value {entry_point.value!r}")]
    try:
        loaded = run_guarded(entry_point.load, timeout_s=timeout_s)
    except Abandoned as exc:
        return [replace(base, error=str(exc))]
    except PluginError as exc:  # a ConverterSpec refusing its fields while the module imports
        return [replace(base, error=str(exc))]
    except Exception as exc:
        return [replace(base, error=f"import failed: {type(exc).__name__}: {exc}")]
    specs = list(loaded) if isinstance(loaded, list | tuple) else [loaded]
    if not specs or not all(isinstance(s, ConverterSpec) for s in specs):
        error = (
            "malformed descriptor: expected a ConverterSpec or a list of them, "
            f"got {type(loaded).__name__}"
        )
        return [replace(base, error=error)]
    records = []
    for spec in specs:
        problems = ConverterSpec.problems(spec)  # again: fields may have changed since construction
        if problems:
            records.append(replace(base, error="malformed descriptor: " + "; ".join(problems)))
            continue
        record = replace(base, name=spec.name, status="ok", spec=spec)
        names = (spec.name, f"converter/{spec.name}", entry_point.name, dist_name)
        denied = _matching(settings.deny, *names)
        if denied:
            record = replace(record, status="disabled", error=_denied(denied))
        elif settings.allow is not None and not _matching(settings.allow, *names):
            record = replace(record, status="disabled", error=_not_allowed())
        records.append(record)
    return records


def missing_implementation(spec: PluginSpec) -> str | None:
    """Why an implementation module of ``spec`` cannot be found, or ``None``; looks the modules
    up without running them (only their parent packages, which discovery mostly imported), so
    listing stays free of torch."""
    for target in (spec.implementation, *spec.runtimes.values()):
        module = target.partition(":")[0]
        try:
            found = importlib.util.find_spec(module)
        except Exception as exc:  # a parent package that is missing or fails to import
            reason = f"{type(exc).__name__}: {exc}"
            return f"implementation module {module!r} of {target} cannot be found: {reason}"
        if found is None:
            return f"implementation module {module!r} of {target} does not exist"
    return None


_Record = TypeVar("_Record", PluginRecord, ConverterRecord)


def _resolve_conflicts(records: list[_Record], settings: PluginSettings) -> list[_Record]:
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


@dataclass(frozen=True)
class ImplementationCheck:
    """Whether one plugin's implementation (and each declared runtime) imports."""

    record: PluginRecord
    backend: str
    target: str
    error: str | None

    @property
    def ok(self) -> bool:
        return self.error is None


def check_implementations(registry: PluginRegistry) -> list[ImplementationCheck]:
    """Import the implementation of every usable plugin, and of each runtime it declares.

    Discovery imports descriptors only, so a plugin whose implementation module is missing
    lists as ``ok``; this is where that shows. Imports the implementations (torch with them).
    """
    checks = []
    for record in registry.records:
        if not record.usable or record.spec is None:
            continue
        spec = record.spec
        for backend in spec.backends:
            target = spec.implementation if backend == "torch" else spec.runtimes[backend]
            try:
                spec.load(backend)
                error = None
            except PluginError as exc:
                error = str(exc)
            except Exception as exc:  # a runtime class whose import fails oddly
                error = f"{type(exc).__name__}: {exc}"
            checks.append(ImplementationCheck(record, backend, target, error))
    return checks


def load_component(
    path: str | os.PathLike[str], *, registry: PluginRegistry | None = None
) -> Component[ComponentParams]:
    """Load a component folder written by ``save_pretrained`` without naming its class: its
    ``xomni_component.json`` names the kind and plugin, the registry supplies the class."""
    from .pipelines.folder import component_plugin

    kind, plugin = component_plugin(path)
    if kind not in COMPONENT_KINDS:
        kinds = ", ".join(COMPONENT_KINDS)
        raise PluginError(f"{path}: unknown component kind {kind!r}; expected one of {kinds}")
    registry = registry or PluginRegistry.discover()
    cls = registry.get(kind, plugin).load()
    return cls.from_pretrained(path)
