"""One misbehaving third-party plugin never breaks the commands that do not use it.

Each case installs a real distribution on disk and, where the whole process is at stake (an
exit, a hang, a corrupted standard output), runs the real command line in a child process.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from support import REPO, run_xomni

from xomni_core import CORE_API_VERSION, ConfigError, PluginError, PluginSpec
from xomni_core.config import load_config, resolve_config
from xomni_core.registry import PluginRegistry, PluginWarning

TINY_CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"

PARAMS_MODULE = """
from pydantic import Field
from xomni_core import ComponentParams

class LuckyParams(ComponentParams):
    threshold: float = Field(0.5, ge=0.0, le=1.0)
"""


def spec_source(name: str, *, kind: str = "reward", api_version: str = repr(CORE_API_VERSION)) -> str:
    """A descriptor module; ``api_version`` is Python source, so non-strings can be written."""
    return f"""
from xomni_core import PluginSpec
from {name}_params import LuckyParams

PLUGIN = PluginSpec(name="{name}", kind="{kind}", version="1.0.0", api_version={api_version},
                    implementation="{name}_impl:Lucky", params=LuckyParams)
"""


def install_plugin(plugin_site: Any, name: str, *, prelude: str = "", **spec: str) -> None:
    """A distribution ``<name>-dist`` whose entry point ``name`` runs ``prelude`` at import."""
    plugin_site(
        f"{name}-dist",
        entry_points={name: f"{name}_spec:PLUGIN"},
        modules={
            f"{name}_params": PARAMS_MODULE,
            f"{name}_spec": prelude + spec_source(name, **spec),
            f"{name}_impl": "",  # listing looks the implementation module up without importing it
        },
    )


def listing(*, env: dict[str, str] | None = None) -> dict[str, dict[str, Any]]:
    """``xomni plugins list --json`` in a child process, by name; it must succeed."""
    result = run_xomni("plugins", "list", "--json", env=env)
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    return {row["name"]: row for row in json.loads(result.stdout)}


def assert_reference_plugins_work(rows: dict[str, dict[str, Any]]) -> None:
    for name in ("siglip-vq", "x-omni", "flux-semantic"):
        assert rows[name]["status"] == "ok", rows[name]


# Descriptor fields are checked when a plugin is admitted.


@pytest.mark.parametrize("api_version", ["1", "None"])
def test_descriptor_with_a_non_string_api_version_is_broken_and_the_others_work(
    plugin_site: Any, api_version: str
) -> None:
    install_plugin(plugin_site, "lucky", api_version=api_version)
    rows = listing()
    assert rows["lucky"]["status"] == "broken"
    assert f"api_version {api_version}" in rows["lucky"]["error"]
    assert_reference_plugins_work(rows)


def test_descriptor_changed_after_construction_is_refused_at_admission(plugin_site: Any) -> None:
    plugin_site(
        "mutant-dist",
        entry_points={"mutant": "mutant_patch:PLUGIN"},
        modules={
            "mutant_params": PARAMS_MODULE,
            "mutant_spec": spec_source("mutant"),
            "mutant_patch": """
                import mutant_spec
                object.__setattr__(mutant_spec.PLUGIN, "api_version", 1)
                PLUGIN = mutant_spec.PLUGIN
            """,
        },
    )
    registry = PluginRegistry.discover()
    [record] = registry.find("mutant")
    assert record.status == "broken" and record.spec is None
    assert "api_version 1" in (record.error or "")
    assert registry.get("backbone", "x-omni").name == "x-omni"


@settings(max_examples=60, deadline=None)
@given(
    field=st.sampled_from(["name", "version", "api_version", "implementation", "description", "tags"]),
    value=st.one_of(st.none(), st.integers(), st.floats(), st.text(max_size=8), st.lists(st.integers())),
)
def test_any_descriptor_field_value_is_accepted_or_refused_with_a_plugin_error(
    field: str, value: object
) -> None:
    from xomni_core import ComponentParams

    fields: dict[str, Any] = {
        "name": "lucky",
        "kind": "reward",
        "version": "1.0",
        "api_version": CORE_API_VERSION,
        "implementation": "lucky_impl:Lucky",
        "params": ComponentParams,
        field: value,
    }
    try:
        spec = PluginSpec(**fields)
    except PluginError as exc:
        assert "malformed plugin descriptor" in str(exc)
    else:
        assert isinstance(getattr(spec, field), str | tuple)


# A plugin that ends the process, or pretends the user pressed Ctrl-C, while importing.


@pytest.mark.parametrize(
    ("prelude", "expected"),
    [
        ("import sys\nsys.exit(3)\n", "called sys.exit(3) while importing"),
        ("import os\nos._exit(0)\n", "called os._exit(0) while importing"),
        ("raise KeyboardInterrupt\n", "raised KeyboardInterrupt while importing"),
    ],
)
def test_plugin_ending_the_process_at_import_is_broken_and_the_others_work(
    plugin_site: Any, prelude: str, expected: str
) -> None:
    install_plugin(plugin_site, "quitter", prelude=prelude)
    rows = listing()
    assert rows["quitter"]["status"] == "broken"
    assert expected in rows["quitter"]["error"]
    assert_reference_plugins_work(rows)


def test_config_using_a_plugin_that_exited_at_import_names_why_it_is_broken(plugin_site: Any) -> None:
    install_plugin(plugin_site, "quitter", prelude="import sys\nsys.exit(3)\n")
    config = load_config(data={"rewards": [{"plugin": "quitter"}]})
    with pytest.raises(
        ConfigError, match=r"rewards.0.plugin: reward plugin 'quitter' is broken: called sys.exit\(3\)"
    ):
        resolve_config(config, PluginRegistry.discover())


def test_a_real_ctrl_c_while_plugins_import_still_stops_the_command(plugin_site: Any, tmp_path: Path) -> None:
    marker = tmp_path / "importing"
    install_plugin(
        plugin_site,
        "dawdler",
        prelude=f"import pathlib, time\npathlib.Path({str(marker)!r}).touch()\ntime.sleep(60)\n",
    )
    process = subprocess.Popen(
        [sys.executable, "-m", "xomni_core.cli", "plugins", "list"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        # A job started in the background inherits an ignored SIGINT, and Python then installs no
        # Ctrl-C handler: give the command the disposition a terminal gives it.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )
    try:
        deadline = time.monotonic() + 30
        while not marker.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert marker.exists(), "the plugin was never imported"
        started = time.monotonic()
        process.send_signal(signal.SIGINT)
        _, stderr = process.communicate(timeout=30)
    finally:
        process.kill()
    assert process.returncode == 130, stderr
    assert "interrupted" in stderr
    assert time.monotonic() - started < 10


# Output and time of plugin imports.


def test_plugin_printing_at_import_leaves_the_json_listing_valid(plugin_site: Any) -> None:
    install_plugin(plugin_site, "chatty", prelude="print('hello from chatty')\n")
    result = run_xomni("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["chatty"]["status"] == "ok"
    assert "hello from chatty" in result.stderr


def test_plugin_import_past_the_time_limit_is_broken_and_listing_goes_on(plugin_site: Any) -> None:
    install_plugin(plugin_site, "sleeper", prelude="import time\ntime.sleep(120)\n")
    started = time.monotonic()
    rows = listing(env={"XOMNI_PLUGIN_IMPORT_TIMEOUT": "1"})
    assert time.monotonic() - started < 60
    assert rows["sleeper"]["status"] == "broken"
    assert "import did not finish within 1 s" in rows["sleeper"]["error"]
    assert_reference_plugins_work(rows)


def test_malformed_import_time_limit_is_a_clear_error() -> None:
    result = run_xomni("plugins", "list", env={"XOMNI_PLUGIN_IMPORT_TIMEOUT": "soon"})
    assert result.returncode == 2
    assert "XOMNI_PLUGIN_IMPORT_TIMEOUT" in result.stderr and "'soon'" in result.stderr
    assert "Traceback" not in result.stderr


# Params models that misbehave.

OPAQUE_PARAMS = """
from pydantic import ConfigDict
from xomni_core import ComponentParams

class Opaque:
    pass

class LuckyParams(ComponentParams):
    model_config = ConfigDict(arbitrary_types_allowed=True)
    handle: Opaque | None = None
"""


def test_params_model_without_a_json_schema_gets_a_permissive_one_and_others_keep_theirs(
    plugin_site: Any,
) -> None:
    plugin_site(
        "opaque-dist",
        entry_points={"opaque": "opaque_spec:PLUGIN"},
        modules={"opaque_params": OPAQUE_PARAMS, "opaque_spec": spec_source("opaque")},
    )
    result = run_xomni("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    branches = {
        b["if"]["properties"]["plugin"]["const"]: b["then"]["properties"]["params"]
        for b in schema["$defs"]["rewardSlot"]["allOf"]
    }
    assert branches["opaque"]["type"] == "object"
    assert "no JSON schema" in branches["opaque"]["description"]
    assert "properties" in branches["target-color"]
    decoder = schema["$defs"]["decoderSlot"]["allOf"][0]["then"]["properties"]["params"]
    assert "num_inference_steps" in decoder["properties"]
    shown = run_xomni("plugins", "show", "opaque")
    assert shown.returncode == 0, shown.stderr
    assert "handle:" in shown.stdout


FAILING_FACTORY = """
from pydantic import Field
from xomni_core import ComponentParams

def _no_default():
    raise LookupError("no default today")

class LuckyParams(ComponentParams):
    threshold: float = Field(default_factory=_no_default)
"""


def test_plugins_show_survives_a_default_factory_that_raises(plugin_site: Any) -> None:
    plugin_site(
        "moody-dist",
        entry_points={"moody": "moody_spec:PLUGIN"},
        modules={"moody_params": FAILING_FACTORY, "moody_spec": spec_source("moody")},
    )
    for args in (("plugins", "show", "moody"), ("plugins", "show", "moody", "--json")):
        result = run_xomni(*args)
        assert result.returncode == 0, result.stderr
        assert "LookupError: no default today" in result.stdout


RAISING_VALIDATOR = """
from pydantic import field_validator
from xomni_core import ComponentParams

class LuckyParams(ComponentParams):
    threshold: float = 0.5

    @field_validator("threshold")
    @classmethod
    def _check(cls, value):
        raise RuntimeError("the validator fell over")
"""


def test_params_validator_raising_any_exception_is_a_config_error_naming_slot_and_plugin(
    plugin_site: Any,
) -> None:
    plugin_site(
        "fussy-dist",
        entry_points={"fussy": "fussy_spec:PLUGIN"},
        modules={"fussy_params": RAISING_VALIDATOR, "fussy_spec": spec_source("fussy", kind="decoder")},
    )
    config = load_config(data={"decoder": {"plugin": "fussy", "params": {"threshold": 0.2}}})
    with pytest.raises(ConfigError) as error:
        resolve_config(config, PluginRegistry.discover())
    message = str(error.value)
    assert message.startswith("decoder.params:")
    assert "decoder plugin 'fussy'" in message
    assert "RuntimeError: the validator fell over" in message


def test_params_validator_raising_exits_2_without_a_traceback(plugin_site: Any, tmp_path: Path) -> None:
    plugin_site(
        "fussy-dist",
        entry_points={"fussy": "fussy_spec:PLUGIN"},
        modules={"fussy_params": RAISING_VALIDATOR, "fussy_spec": spec_source("fussy", kind="decoder")},
    )
    config = tmp_path / "c.yaml"
    config.write_text("decoder: {plugin: fussy, params: {threshold: 0.2}}\n")
    result = run_xomni("config", "validate", str(config))
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "decoder.params" in result.stderr and "the validator fell over" in result.stderr


# Hooks that raise while a pipeline is built.

RAISING_HOOKS = """
from xomni_core import CORE_API_VERSION, PluginSpec, hookimpl
from grumpy_params import LuckyParams

@hookimpl
def xomni_register_plugins():
    return [PluginSpec(name="grumpy", kind="reward", version="1.0.0", api_version=CORE_API_VERSION,
                       implementation="grumpy_impl:Lucky", params=LuckyParams)]

@hookimpl
def xomni_component_built(component, slot, config):
    raise RuntimeError(f"cannot stand the {slot}")

@hookimpl
def xomni_pipeline_built(pipeline, config):
    raise ValueError("cannot stand pipelines")
"""


def test_raising_build_hooks_are_warnings_naming_the_plugin_and_generate_still_works(
    plugin_site: Any, tmp_path: Path
) -> None:
    plugin_site(
        "grumpy-dist",
        entry_points={"grumpy": "grumpy_hooks"},
        modules={"grumpy_params": PARAMS_MODULE, "grumpy_hooks": RAISING_HOOKS},
    )
    out = tmp_path / "out"
    result = run_xomni(
        "generate", "a red square", "--config", str(TINY_CONFIG), "--out", str(out), "--no-progress"
    )
    assert result.returncode == 0, result.stderr
    assert (out / "image-000.png").is_file()
    stderr = " ".join(result.stderr.split())
    assert "plugin 'grumpy' (grumpy-dist 0.1.0)" in stderr
    assert "xomni_component_built hook raised RuntimeError: cannot stand the backbone" in stderr
    assert "xomni_pipeline_built hook raised ValueError: cannot stand pipelines" in stderr


WATCHER_HOOKS = """
from xomni_core import hookimpl
SEEN = []

@hookimpl
def xomni_pipeline_built(pipeline, config):
    SEEN.append(pipeline)
"""


def test_a_raising_hook_does_not_keep_the_other_plugins_hooks_from_running(plugin_site: Any) -> None:
    plugin_site(
        "grumpy-dist",
        entry_points={"grumpy": "grumpy_hooks"},
        modules={"grumpy_params": PARAMS_MODULE, "grumpy_hooks": RAISING_HOOKS},
    )
    plugin_site(
        "watcher-dist", entry_points={"watcher": "watcher_hooks"}, modules={"watcher_hooks": WATCHER_HOOKS}
    )
    registry = PluginRegistry.discover()
    with pytest.warns(PluginWarning, match=r"plugin 'grumpy' \(grumpy-dist 0.1.0\).*ValueError"):
        registry.call_hook("xomni_pipeline_built", pipeline="the pipeline", config=None)
    import watcher_hooks

    assert watcher_hooks.SEEN == ["the pipeline"]


# Entry points and denylists.


@pytest.mark.parametrize("value", ["not a valid::value", ":PLUGIN"])
def test_malformed_entry_point_value_is_a_clear_error(plugin_site: Any, value: str) -> None:
    plugin_site("garbled-dist", entry_points={"garbled": value}, modules={})
    registry = PluginRegistry.discover()
    [record] = registry.find("garbled")
    assert record.status == "broken"
    assert record.error == f"malformed entry point value '{value}' (expected 'module:attribute')"
    assert registry.get("backbone", "x-omni").name == "x-omni"


def test_config_using_a_denied_plugin_says_it_is_disabled(
    plugin_site: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    install_plugin(plugin_site, "lucky")
    monkeypatch.setenv("XOMNI_DISABLE_PLUGINS", "lucky")
    with pytest.raises(PluginError, match=r"reward plugin 'lucky' is disabled.*denylist"):
        PluginRegistry.discover().get("reward", "lucky")
    config = tmp_path / "c.yaml"
    config.write_text("rewards: [{plugin: lucky}]\n")
    result = run_xomni("config", "validate", str(config))
    assert result.returncode == 2
    stderr = " ".join(result.stderr.split())
    assert "rewards.0.plugin: reward plugin 'lucky' is disabled" in stderr
    assert "XOMNI_DISABLE_PLUGINS" in stderr
