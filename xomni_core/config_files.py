"""Reading config files and override values with bounded work.

A config file is the first thing a hostile user controls, so reading one is bounded: at most
:data:`MAX_FILE_BYTES`, UTF-8 only, at most :data:`MAX_DEPTH` levels of nesting, at most
:data:`MAX_NODES` values (YAML aliases counted each time they are used, so an alias bomb stops
early), numbers of at most :data:`MAX_NUMBER_CHARS` characters, no duplicate keys and no
alias that contains itself. Every refusal is a :class:`~xomni_core.errors.ConfigError` that
names the file (or override) and, where it can, the key and line.
"""

from __future__ import annotations

import codecs
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import tomllib
import yaml

from .errors import ConfigError
from .quoting import quote, shorten

MAX_FILE_BYTES = 1 << 20
MAX_DEPTH = 64
MAX_NODES = 100_000
MAX_NUMBER_CHARS = 100


class _LongNumber:
    """A number too long to convert; reported with its key once the whole file is read."""

    def __init__(self, text: str) -> None:
        self.length = len(text)

    def __repr__(self) -> str:
        return f"<number of {self.length} characters>"


def read_file_data(file: Path) -> dict[str, Any]:
    """The mapping held by a YAML, TOML or JSON file, as plain JSON-like data."""
    suffix = file.suffix.lower()
    if suffix not in (".yaml", ".yml", ".toml", ".json"):
        raise ConfigError(
            f"config file {file}: unknown format '{shorten(suffix)}'; use .yaml, .toml or .json"
        )
    text = _read_text(file)
    where = f"config file {file}"
    if not text.strip():
        raise ConfigError(f"{where} is empty; a pipeline config is a mapping of sections")
    try:
        if suffix == ".toml":
            data = _parse_toml(text, where)
        elif suffix == ".json":
            data = _parse_json(text, where)
        else:
            data = parse_yaml(text, where)
    except RecursionError as exc:
        raise ConfigError(f"{where} is nested more than {MAX_DEPTH} levels deep") from exc
    if data is None or (suffix == ".toml" and data == {}):
        raise ConfigError(f"{where} is empty; a pipeline config is a mapping of sections")
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must hold a mapping at top level, got {type(data).__name__}")
    plain: dict[str, Any] = checked_data(data, where)
    return plain


def parse_yaml(text: str, where: str) -> Any:
    """``text`` parsed by the bounded YAML loader; errors name ``where``."""
    try:
        loader = _BoundedLoader(text)  # the reader refuses unprintable characters here
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        raise ConfigError(f"{where} could not be parsed: {_yaml_problem(exc)}") from exc


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """The problem of a YAML error and its line, without the echo of the offending text."""
    if not isinstance(exc, yaml.MarkedYAMLError) or exc.problem is None:
        return shorten(str(exc))
    mark = exc.problem_mark
    where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
    context = f"{exc.context}: " if exc.context else ""
    return shorten(f"{context}{exc.problem}") + where


def checked_data(data: Any, where: str, path: tuple[str, ...] = ()) -> Any:
    """A plain copy of parsed data (str keys; lists, dicts, str, int, float, bool, None).

    Walks without recursion, so a deep input cannot exhaust the stack, and refuses nesting
    beyond :data:`MAX_DEPTH`, more than :data:`MAX_NODES` values and over-long numbers, naming
    the key (``path`` is where ``data`` sits in the config).
    """
    root: list[Any] = [None]
    stack: list[tuple[Any, list[Any] | dict[str, Any], Any, tuple[str, ...]]] = [(data, root, 0, path)]
    count = 0
    while stack:
        value, parent, slot, path = stack.pop()
        count += 1
        if count > MAX_NODES:
            raise ConfigError(f"{where} holds more than {MAX_NODES} values")
        if len(path) > MAX_DEPTH:
            raise ConfigError(
                f"{where}: {_dotted(path[:MAX_DEPTH])}... is nested more than {MAX_DEPTH} levels deep"
            )
        if isinstance(value, dict):
            copy: dict[str, Any] = {}
            for key, item in value.items():
                name = _key_text(key, path, where)
                copy[name] = None
                stack.append((item, copy, name, (*path, name)))
            parent[slot] = copy
        elif isinstance(value, (list, tuple)):
            items: list[Any] = [None] * len(value)
            for index, item in enumerate(value):
                stack.append((item, items, index, (*path, str(index))))
            parent[slot] = items
        elif isinstance(value, _LongNumber):
            raise ConfigError(
                f"{where}: {_dotted(path)}: a number of {value.length} characters is too long "
                f"(at most {MAX_NUMBER_CHARS}; config integers fit in 64 bits)"
            )
        elif value is None or isinstance(value, (str, int, float, bool)):
            parent[slot] = value
        else:  # dates, binary and sets of YAML: their text, as before
            parent[slot] = str(value)
    return root[0]


def _key_text(key: Any, path: tuple[str, ...], where: str) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, _LongNumber):
        raise ConfigError(
            f"{where}: {_dotted(path) or 'top level'}: a key is a number of {key.length} characters"
        )
    if isinstance(key, bool) or key is None:
        return json.dumps(key)
    return str(key)


def _dotted(path: tuple[str, ...]) -> str:
    return shorten(".".join(path))


def _read_text(file: Path) -> str:
    try:
        if not file.is_file():
            raise ConfigError(f"config file {file} does not exist")
        size = file.stat().st_size
        if size > MAX_FILE_BYTES:
            raise ConfigError(
                f"config file {file} is {size} bytes; a config file holds at most {MAX_FILE_BYTES} bytes"
            )
        with file.open("rb") as handle:
            raw = handle.read(MAX_FILE_BYTES + 1)
    except (OSError, ValueError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError(f"config file {file} cannot be read: {reason}") from exc
    if len(raw) > MAX_FILE_BYTES:
        raise ConfigError(f"config file {file} holds more than {MAX_FILE_BYTES} bytes")
    if raw.startswith((codecs.BOM_UTF16_LE, codecs.BOM_UTF16_BE, codecs.BOM_UTF32_LE, codecs.BOM_UTF32_BE)):
        raise ConfigError(f"config file {file} is UTF-16 or UTF-32 text; save it as UTF-8")
    try:
        return raw.decode("utf-8").removeprefix("\ufeff")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise ConfigError(
            f"config file {file} is not UTF-8 text: byte 0x{raw[exc.start]:02x} at offset {exc.start} "
            f"(line {line}); save it as UTF-8"
        ) from exc


def _parse_json(text: str, where: str) -> Any:
    try:
        return json.loads(
            text,
            parse_int=_number(int),
            parse_float=_number(float),
            object_pairs_hook=_unique_pairs(where),
        )
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{where} could not be parsed: {exc}") from exc


def _parse_toml(text: str, where: str) -> Any:
    try:
        return tomllib.loads(text, parse_float=_number(float))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where} could not be parsed: {exc}") from exc
    except ValueError as exc:  # an integer beyond Python's digit limit for int()
        raise ConfigError(
            f"{where}{_long_toml_integer(text)}: an integer is too long "
            f"(at most {MAX_NUMBER_CHARS} digits; config integers fit in 64 bits)"
        ) from exc


def _long_toml_integer(text: str) -> str:
    """Where a TOML file holds an over-long integer: ``: line N, key K``, or nothing."""
    for number, line in enumerate(text.splitlines(), start=1):
        if re.search(rf"[0-9_]{{{MAX_NUMBER_CHARS + 1},}}", line):
            key = line.partition("=")[0].strip()
            return f": line {number}" + (f", key {quote(key)}" if key and key != line.strip() else "")
    return ""


def _number(convert: Callable[[str], Any]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        return _LongNumber(text) if len(text) > MAX_NUMBER_CHARS else convert(text)

    return parse


def _unique_pairs(where: str) -> Callable[[list[tuple[str, Any]]], dict[str, Any]]:
    def build(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        data: dict[str, Any] = {}
        for key, value in pairs:
            if key in data:
                raise ConfigError(f"{where}: key {quote(key)} appears twice in one object")
            data[key] = value
        return data

    return build


class _BoundedLoader(yaml.SafeLoader):
    """PyYAML's safe loader with limits on depth, values (aliases expanded) and numbers."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self._depth = 0
        self._nodes = 0
        self._sizes: dict[int, int] = {}

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        if self.check_event(yaml.AliasEvent):
            event = self.peek_event()  # type: ignore[no-untyped-call]
            anchored = self.anchors.get(event.anchor)
            if anchored is not None:
                if id(anchored) not in self._sizes:
                    raise yaml.composer.ComposerError(
                        None,
                        None,
                        f"alias *{shorten(event.anchor)} refers to a value that contains it",
                        event.start_mark,
                    )
                self._count(self._sizes[id(anchored)], event.start_mark)
            return super().compose_node(parent, index)
        start_mark = self.peek_event().start_mark  # type: ignore[no-untyped-call]
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise yaml.composer.ComposerError(
                None, None, f"values are nested more than {MAX_DEPTH} levels deep", start_mark
            )
        before = self._nodes
        self._count(1, start_mark)
        node = super().compose_node(parent, index)
        self._depth -= 1
        if node is not None:
            self._sizes[id(node)] = self._nodes - before
        return node

    def _count(self, nodes: int, mark: Any) -> None:
        self._nodes += nodes
        if self._nodes > MAX_NODES:
            raise yaml.composer.ComposerError(
                None, None, f"more than {MAX_NODES} values (aliases counted each time they are used)", mark
            )

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=False)
            try:
                duplicate = key in seen
            except TypeError:
                continue  # unhashable: the base class reports it
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {quote(key)} appears twice in one mapping", key_node.start_mark
                )
            seen.add(key)
        mapping: dict[Any, Any] = super().construct_mapping(node, deep=deep)
        return mapping

    def construct_yaml_int(self, node: yaml.ScalarNode) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            return _LongNumber(node.value)
        return super().construct_yaml_int(node)

    def construct_yaml_float(self, node: yaml.ScalarNode) -> Any:
        if len(node.value) > MAX_NUMBER_CHARS:
            return _LongNumber(node.value)
        return super().construct_yaml_float(node)


_BoundedLoader.add_constructor("tag:yaml.org,2002:int", _BoundedLoader.construct_yaml_int)
_BoundedLoader.add_constructor("tag:yaml.org,2002:float", _BoundedLoader.construct_yaml_float)
