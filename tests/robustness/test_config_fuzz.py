"""Generated hostile configs through the real CLI: exit 0 or 2, one short error line, no traceback.

Documents mix the real structure (sections, plugin names, their params) with hostile values
(wrong types, huge integers, booleans, inf and nan, deep nesting, unknown keys, odd unicode and
control characters); the files are written as YAML, JSON or TOML, some then damaged at the byte
level (non-UTF-8 bytes, UTF-16, YAML anchors and aliases, duplicate keys, huge numbers).
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from xomni_core.cli import main
from xomni_core.registry import PluginRegistry

MAX_ERROR_CHARS = 2000
REGISTRY = PluginRegistry.discover(use_environment=False)
KINDS = ("tokenizer", "backbone", "decoder", "reward")
PLUGINS = {kind: REGISTRY.names(kind) for kind in KINDS}  # type: ignore[arg-type]
PARAMS = {
    (kind, name): sorted(REGISTRY.get(kind, name).params.model_fields)  # type: ignore[arg-type]
    for kind in KINDS
    for name in PLUGINS[kind]
}

ODD_TEXT = st.one_of(
    st.text(
        alphabet=st.one_of(
            st.characters(codec="utf-8"),
            st.sampled_from(["\x1b", "\r", "\x00", "\u202e", "\ufeff", "\x7f", "\u2028", "\U0001f600", "\\"]),
        ),
        max_size=30,
    ),
    st.sampled_from(["\x1b[31mred\x1b[0m", "a\rb", "seed", "device", "params", "plugin"]),
)
HOSTILE = st.one_of(
    st.booleans(),
    st.none(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=10**18, max_value=10**80),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from(["inf", "-inf", "nan", ".inf", ".nan", "Infinity", "1e999", "", "cuda:99999", "meta"]),
    ODD_TEXT,
    st.just("x" * 5000),
)
VALUES = st.recursive(
    HOSTILE,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(st.one_of(ODD_TEXT, st.sampled_from(["a", "seed"])), inner, max_size=4),
    ),
    max_leaves=12,
)


def nested(depth: int) -> Any:
    value: Any = 1
    for _ in range(depth):
        value = {"a": value}
    return value


@st.composite
def component(draw: st.DrawFn, kind: str) -> dict[str, Any]:
    names = PLUGINS[kind] or ["missing"]
    plugin = draw(st.one_of(st.sampled_from(names), ODD_TEXT))
    keys = PARAMS.get((kind, plugin), [])
    params = draw(
        st.dictionaries(st.one_of(st.sampled_from(keys), ODD_TEXT) if keys else ODD_TEXT, VALUES, max_size=4)
    )
    section: dict[str, Any] = {"plugin": plugin, "params": params}
    if draw(st.booleans()):
        section["weights"] = draw(st.one_of(ODD_TEXT, st.just("w" * 4000), HOSTILE))
    if kind == "reward":
        section["weight"] = draw(st.one_of(st.floats(0, 10), HOSTILE))
    return section


@st.composite
def documents(draw: st.DrawFn) -> dict[str, Any]:
    sections: dict[str, Any] = {}
    for kind in ("tokenizer", "backbone", "decoder"):
        if draw(st.booleans()):
            sections[kind] = draw(component(kind))
    if draw(st.booleans()):
        sections["rewards"] = draw(st.lists(component("reward"), max_size=2))
    if draw(st.booleans()):
        runtime_value = st.one_of(st.sampled_from(["cpu", "cuda:1", "mps"]), st.integers(0, 2**64), HOSTILE)
        sections["runtime"] = draw(
            st.dictionaries(
                st.sampled_from(["device", "dtype", "seed", "threads", "extra"]), runtime_value, max_size=4
            )
        )
    if draw(st.booleans()):
        sampling = st.dictionaries(
            st.sampled_from(["temperature", "top_k", "top_p", "min_p", "cfg_scale"]), HOSTILE, max_size=3
        )
        generation_value = st.one_of(HOSTILE, sampling, st.integers(1, 2000))
        sections["generation"] = draw(
            st.dictionaries(
                st.sampled_from(
                    ["height_px", "width_px", "sampling", "num_inference_steps", "guidance_scale"]
                ),
                generation_value,
                max_size=4,
            )
        )
    if draw(st.booleans()):
        grpo = st.dictionaries(
            st.sampled_from(["learning_rate", "steps", "prompts", "seed", "sampling", "bogus"]),
            VALUES,
            max_size=4,
        )
        sections["training"] = {"grpo": draw(grpo)}
    if draw(st.integers(0, 9)) == 0:
        sections["plugins"] = {"allow": draw(VALUES)}
    if draw(st.integers(0, 4)) == 0:
        sections.update(draw(st.dictionaries(ODD_TEXT, VALUES, max_size=5)))
    if draw(st.integers(0, 9)) == 0:
        sections["deep"] = nested(draw(st.integers(50, 200)))
    if draw(st.integers(0, 19)) == 0:
        sections["many"] = {f"k{i}": i for i in range(draw(st.integers(20, 400)))}
    return sections


def to_toml(document: dict[str, Any]) -> str:
    """A TOML rendering of ``document``; values TOML cannot hold (None) are left out."""
    lines = []
    tables = []
    for key, value in document.items():
        if isinstance(value, dict):
            tables.append((key, value))
        elif value is not None:
            lines.append(f"{toml_key(key)} = {toml_value(value)}")
    for key, table in tables:
        lines.append(f"[{toml_key(key)}]")
        lines += [f"{toml_key(k)} = {toml_value(v)}" for k, v in table.items() if v is not None]
    return "\n".join(lines) + "\n"


def toml_key(key: str) -> str:
    return json.dumps(key, ensure_ascii=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return (
            "nan"
            if math.isnan(value)
            else ("inf" if value > 0 else "-inf")
            if math.isinf(value)
            else repr(value)
        )
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str):
        return json.dumps(value, ensure_ascii=False)
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value if v is not None) + "]"
    if isinstance(value, dict):
        items = (f"{toml_key(k)} = {toml_value(v)}" for k, v in value.items() if v is not None)
        return "{" + ", ".join(items) + "}"
    return '""'


def render(document: dict[str, Any], form: str) -> bytes:
    if form == "json":
        return json.dumps(document, ensure_ascii=False).encode("utf-8", "surrogatepass")
    if form == "toml":
        return to_toml(document).encode("utf-8", "surrogatepass")
    return yaml.safe_dump(document, allow_unicode=True).encode("utf-8", "surrogatepass")


DAMAGE = [
    "none",
    "latin1",
    "utf16",
    "alias_bomb",
    "self_alias",
    "duplicate",
    "huge_int",
    "deep_brackets",
    "truncate",
    "nul",
]


def damage(data: bytes, form: str, how: str, where: int) -> bytes:
    at = where % (len(data) + 1)
    if how == "latin1":
        return data[:at] + b"\xe9\xff" + data[at:]
    if how == "utf16":
        return data.decode("utf-8", "replace").encode("utf-16")
    if how == "alias_bomb":
        rows = [b'a0: &a0 ["x","x","x","x","x","x","x","x","x"]']
        rows += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]".encode() for i in range(1, 9)]
        return b"\n".join(rows) + b"\n" + data
    if how == "self_alias":
        return b"loop: &l [1, *l]\n" + data
    if how == "duplicate":
        extra = {
            "yaml": b"runtime: {}\nruntime: {}\n",
            "json": b'{"a": 1, "a": 2}',
            "toml": b"a = 1\na = 2\n",
        }
        return data + b"\n" + extra[form] if form != "json" else extra[form]
    if how == "huge_int":
        row = {"yaml": b"seed_x: ", "json": b'{"seed_x": ', "toml": b"seed_x = "}[form] + b"7" * 5000
        return row + (b"}" if form == "json" else b"\n") + (data if form != "json" else b"")
    if how == "deep_brackets":
        depth = 300 if form == "yaml" else 5000  # PyYAML's scanner looks ahead quadratically in depth
        row = {"yaml": b"d: ", "json": b'{"d": ', "toml": b"d = "}[form] + b"[" * depth + b"]" * depth
        return row + (b"}" if form == "json" else b"\n") + (data if form != "json" else b"")
    if how == "truncate":
        return data[:at]
    if how == "nul":
        return data[:at] + b"\x00" + data[at:]
    return data


def check_cli(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    capsys.readouterr()
    code = main(argv)  # an exception escaping here fails the test with its traceback
    out, err = capsys.readouterr()
    assert code in (0, 2), (code, err)
    assert "Traceback" not in out + err
    if code == 2:
        assert err.startswith("xomni: error:"), err
        assert len(err) <= MAX_ERROR_CHARS, err[:300]
    else:
        assert err == "" and out.rstrip().endswith(": valid")


@settings(
    max_examples=int(os.environ.get("FUZZ_N", "1000")),
    derandomize=True,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(
    document=documents(),
    form=st.sampled_from(["yaml", "json", "toml"]),
    how=st.sampled_from(DAMAGE),
    where=st.integers(0, 10_000),
)
def test_generated_config_files_exit_0_or_2_with_one_short_error(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    document: dict[str, Any],
    form: str,
    how: str,
    where: int,
) -> None:
    path = tmp_path / f"config.{form}"
    path.write_bytes(damage(render(document, form), form, how, where))
    check_cli(capsys, ["config", "validate", str(path)])


OVERRIDE_KEYS = st.one_of(
    st.sampled_from(
        [
            "runtime.seed",
            "runtime.device",
            "runtime.threads",
            "generation.num_inference_steps",
            "generation.sampling.temperature",
            "decoder.params.num_attention_heads",
            "rewards.0.weight",
            "training.grpo.learning_rate",
            "version",
            "a" + ".a" * 100,
        ]
    ),
    ODD_TEXT,
)
OVERRIDE_VALUES = st.one_of(
    st.sampled_from(
        [
            "true",
            ".inf",
            ".nan",
            "-1",
            "9" * 5000,
            "&a [*a]",
            "[" * 3000,
            "{a: 1, a: 2}",
            "cuda:0",
            "meta",
            "null",
        ]
    ),
    ODD_TEXT,
    st.integers().map(str),
)


@settings(
    max_examples=200,
    derandomize=True,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(overrides=st.lists(st.tuples(OVERRIDE_KEYS, OVERRIDE_VALUES), min_size=1, max_size=3))
def test_generated_overrides_exit_0_or_2_with_one_short_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], overrides: list[tuple[str, str]]
) -> None:
    path = tmp_path / "config.yaml"
    path.write_text("decoder:\n  plugin: flux-semantic\n")
    argv = ["config", "validate", str(path)]
    for key, value in overrides:
        argv += ["--set", f"{key}={value}"]
    check_cli(capsys, argv)
