"""Plugin discovery: isolation of broken plugins, clashes, allow and deny lists, API versions."""

from __future__ import annotations

import sys

import pytest

from xomni_core import CORE_API_VERSION, PluginError
from xomni_core.registry import PluginRegistry
from xomni_core.settings import PluginSettings

REFERENCE = {("tokenizer", "siglip-vq"), ("backbone", "x-omni"), ("decoder", "flux-semantic")}

PARAMS_MODULE = """
from pydantic import Field
from xomni_core import ComponentParams

class LuckyParams(ComponentParams):
    threshold: float = Field(0.5, ge=0.0, le=1.0)
"""


def spec_module(name: str = "lucky", api_version: str = CORE_API_VERSION, kind: str = "reward") -> str:
    return f"""
from xomni_core import PluginSpec
from lucky_params import LuckyParams

PLUGIN = PluginSpec(name="{name}", kind="{kind}", version="1.2.3", api_version="{api_version}",
                    implementation="lucky_impl:Lucky", params=LuckyParams)
"""


def test_reference_plugins_are_discovered_through_entry_points() -> None:
    registry = PluginRegistry.discover()
    found = {(r.kind, r.name) for r in registry.records if r.usable and r.distribution.startswith("xomni ")}
    assert found >= REFERENCE


def test_broken_import_is_reported_and_others_still_work(plugin_site) -> None:
    plugin_site(
        "broken-dist",
        entry_points={"boom": "boom_module:PLUGIN"},
        modules={"boom_module": "raise RuntimeError('plugin exploded on import')"},
    )
    registry = PluginRegistry.discover()
    broken = registry.find("boom")
    assert [r.status for r in broken] == ["broken"]
    assert "plugin exploded on import" in (broken[0].error or "")
    assert broken[0].distribution == "broken-dist 0.1.0"
    assert registry.get("backbone", "x-omni").name == "x-omni"


def test_malformed_descriptor_is_reported_as_broken(plugin_site) -> None:
    plugin_site("odd-dist", entry_points={"odd": "odd_module:PLUGIN"}, modules={"odd_module": "PLUGIN = 42"})
    [record] = PluginRegistry.discover().find("odd")
    assert record.status == "broken"
    assert "malformed descriptor" in (record.error or "")


def test_descriptor_with_invalid_fields_is_reported_as_broken(plugin_site) -> None:
    plugin_site(
        "bad-kind-dist",
        entry_points={"lucky": "lucky_spec:PLUGIN"},
        modules={"lucky_params": PARAMS_MODULE, "lucky_spec": spec_module(kind="painter")},
    )
    [record] = PluginRegistry.discover().find("lucky")
    assert record.status == "broken"
    assert "kind 'painter' is not one of" in (record.error or "")


def test_strict_mode_turns_a_broken_plugin_into_a_failure(plugin_site) -> None:
    plugin_site(
        "broken-dist",
        entry_points={"boom": "boom_module:PLUGIN"},
        modules={"boom_module": "raise ImportError('no such thing')"},
    )
    with pytest.raises(PluginError, match=r"strict plugin mode.*no such thing"):
        PluginRegistry.discover(PluginSettings(strict=True))


def test_same_kind_and_name_from_two_distributions_is_an_error_naming_both(plugin_site) -> None:
    modules = {"lucky_params": PARAMS_MODULE, "lucky_spec": spec_module()}
    plugin_site("first-dist", entry_points={"lucky": "lucky_spec:PLUGIN"}, modules=modules)
    plugin_site("second-dist", entry_points={"lucky": "lucky_spec:PLUGIN"}, modules=modules)
    registry = PluginRegistry.discover()
    with pytest.raises(PluginError) as error:
        registry.get("reward", "lucky")
    assert "first-dist 0.1.0" in str(error.value) and "second-dist 0.1.0" in str(error.value)
    assert "plugins.prefer" in str(error.value)


def test_prefer_pins_which_distribution_wins_a_clash(plugin_site) -> None:
    modules = {"lucky_params": PARAMS_MODULE, "lucky_spec": spec_module()}
    plugin_site("first-dist", entry_points={"lucky": "lucky_spec:PLUGIN"}, modules=modules)
    plugin_site("second-dist", entry_points={"lucky": "lucky_spec:PLUGIN"}, modules=modules)
    registry = PluginRegistry.discover(PluginSettings(prefer={"reward/lucky": "second-dist"}))
    statuses = {r.distribution: r.status for r in registry.find("lucky")}
    assert statuses == {"first-dist 0.1.0": "overridden", "second-dist 0.1.0": "ok"}
    assert registry.get("reward", "lucky").name == "lucky"


def test_denylist_from_environment_skips_importing_the_plugin(plugin_site, monkeypatch) -> None:
    plugin_site(
        "broken-dist",
        entry_points={"boom": "boom_module:PLUGIN"},
        modules={"boom_module": "raise RuntimeError('must not be imported')"},
    )
    monkeypatch.setenv("XOMNI_DISABLE_PLUGINS", "boom")
    [record] = PluginRegistry.discover(PluginSettings(strict=True)).find("boom")
    assert record.status == "disabled"
    assert "boom_module" not in sys.modules


def test_allowlist_from_environment_disables_everything_else(monkeypatch) -> None:
    monkeypatch.setenv("XOMNI_PLUGINS", "x-omni")
    registry = PluginRegistry.discover()
    assert registry.get("backbone", "x-omni").name == "x-omni"
    with pytest.raises(PluginError, match="siglip-vq' is disabled: not in the plugin allowlist"):
        registry.get("tokenizer", "siglip-vq")


def test_config_allowlist_is_narrowed_by_the_environment(monkeypatch) -> None:
    monkeypatch.setenv("XOMNI_PLUGINS", "x-omni,flux-semantic")
    settings = PluginSettings(allow=("x-omni", "siglip-vq")).with_environment()
    assert settings.allow == ("x-omni",)


def test_core_api_major_mismatch_is_a_clear_error(plugin_site) -> None:
    plugin_site(
        "future-dist",
        entry_points={"lucky": "lucky_spec:PLUGIN"},
        modules={"lucky_params": PARAMS_MODULE, "lucky_spec": spec_module(api_version="2.0")},
    )
    registry = PluginRegistry.discover()
    with pytest.raises(
        PluginError, match=r"incompatible: targets xomni core API 2.0 but this xomni provides"
    ):
        registry.get("reward", "lucky")


def test_one_hook_registers_several_components(plugin_site) -> None:
    plugin_site(
        "hooked-dist",
        entry_points={"hooked": "hooked_module"},
        modules={
            "lucky_params": PARAMS_MODULE,
            "hooked_module": """
                from xomni_core import PluginSpec, hookimpl, CORE_API_VERSION
                from lucky_params import LuckyParams

                @hookimpl
                def xomni_register_plugins():
                    return [PluginSpec(name=n, kind="reward", version="0.1", api_version=CORE_API_VERSION,
                                       implementation="lucky_impl:Lucky", params=LuckyParams)
                            for n in ("lucky-a", "lucky-b")]

                @hookimpl
                def xomni_pipeline_built(pipeline, config):
                    pass
            """,
        },
    )
    registry = PluginRegistry.discover()
    assert {r.name for r in registry.records if r.distribution.startswith("hooked-dist")} == {
        "lucky-a",
        "lucky-b",
    }
    assert registry.find("lucky-a")[0].hooks == ("xomni_pipeline_built", "xomni_register_plugins")


def test_unknown_name_suggests_the_closest_one() -> None:
    registry = PluginRegistry.discover()
    with pytest.raises(PluginError, match=r"unknown backbone plugin 'x-omin'. Did you mean 'x-omni'\?"):
        registry.get("backbone", "x-omin")


def test_failing_implementation_import_names_the_plugin(plugin_site) -> None:
    plugin_site(
        "lucky-dist",
        entry_points={"lucky": "lucky_spec:PLUGIN"},
        modules={
            "lucky_params": PARAMS_MODULE,
            "lucky_spec": spec_module(),
            "lucky_impl": "raise RuntimeError('heavy import failed')",
        },
    )
    spec = PluginRegistry.discover().get("reward", "lucky")
    with pytest.raises(PluginError, match=r"reward plugin 'lucky' failed to load .*heavy import failed"):
        spec.load()
