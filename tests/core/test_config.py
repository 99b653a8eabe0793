"""Pipeline configs: file formats, overrides, validation messages, JSON Schema."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from xomni_core import ConfigError
from xomni_core.config import config_json_schema, load_config, resolve_config
from xomni_core.registry import PluginRegistry

YAML = """
backbone:
  plugin: x-omni
  params: {hidden_size: 32}
decoder:
  plugin: flux-semantic
  params:
    num_inference_steps: 4
runtime: {seed: 7}
"""
TOML = """
[backbone]
plugin = "x-omni"
params = { hidden_size = 32 }

[decoder]
plugin = "flux-semantic"
params = { num_inference_steps = 4 }

[runtime]
seed = 7
"""
JSON = json.dumps(
    {
        "backbone": {"plugin": "x-omni", "params": {"hidden_size": 32}},
        "decoder": {"plugin": "flux-semantic", "params": {"num_inference_steps": 4}},
        "runtime": {"seed": 7},
    }
)


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry.discover(use_environment=False)


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_yaml_toml_and_json_files_give_the_same_config(tmp_path: Path) -> None:
    configs = [
        load_config(write(tmp_path, f"c.{ext}", text))
        for ext, text in (("yaml", YAML), ("toml", TOML), ("json", JSON))
    ]
    assert configs[0] == configs[1] == configs[2]
    assert configs[0].runtime.seed == 7


def test_unknown_file_format_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown format '\.ini'"):
        load_config(write(tmp_path, "c.ini", "x=1"))


def test_dotted_overrides_set_nested_values_with_yaml_typing(tmp_path: Path) -> None:
    config = load_config(
        write(tmp_path, "c.yaml", YAML),
        [
            "decoder.params.num_inference_steps=20",
            "runtime.device=cpu",
            "rewards=[{plugin: a}]",
            "rewards.0.weight=0.5",
        ],
    )
    assert config.decoder is not None and config.decoder.params["num_inference_steps"] == 20
    assert config.rewards[0].weight == 0.5


def test_override_without_equals_sign_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"must look like section\.key=value"):
        load_config(data={}, overrides=["runtime.seed"])


def test_wrong_param_type_names_path_plugin_value_and_expectation(registry: PluginRegistry) -> None:
    config = load_config(
        data={"decoder": {"plugin": "flux-semantic", "params": {"num_inference_steps": "many"}}}
    )
    with pytest.raises(ConfigError) as error:
        resolve_config(config, registry)
    message = str(error.value)
    assert "decoder.params.num_inference_steps" in message
    assert "decoder plugin 'flux-semantic'" in message
    assert "'many'" in message
    assert "expected integer >= 1" in message


def test_out_of_range_param_names_the_bound(registry: PluginRegistry) -> None:
    config = load_config(data={"decoder": {"plugin": "flux-semantic", "params": {"num_inference_steps": 0}}})
    with pytest.raises(
        ConfigError, match=r"decoder.params.num_inference_steps: .*\(got 0; expected integer >= 1 <= 1000\)"
    ):
        resolve_config(config, registry)


def test_unknown_param_key_suggests_the_closest_key(registry: PluginRegistry) -> None:
    config = load_config(data={"decoder": {"plugin": "flux-semantic", "params": {"num_inference_step": 3}}})
    with pytest.raises(
        ConfigError,
        match=r"decoder.params.num_inference_step: unknown key of decoder plugin "
        r"'flux-semantic'; did you mean 'num_inference_steps'\?",
    ):
        resolve_config(config, registry)


def test_unknown_plugin_name_says_did_you_mean(registry: PluginRegistry) -> None:
    config = load_config(data={"backbone": {"plugin": "x-omin"}})
    with pytest.raises(
        ConfigError, match=r"backbone.plugin: unknown backbone plugin 'x-omin'. Did you mean 'x-omni'\?"
    ):
        resolve_config(config, registry)


def test_unknown_top_level_section_is_refused_with_suggestion() -> None:
    with pytest.raises(ConfigError, match=r"decodr: unknown key; did you mean 'decoder'\?"):
        load_config(data={"decodr": {"plugin": "flux-semantic"}})


def test_relative_weights_resolve_against_the_config_file(tmp_path: Path, registry: PluginRegistry) -> None:
    (tmp_path / "weights" / "backbone").mkdir(parents=True)
    path = write(tmp_path, "c.yaml", "backbone: {plugin: x-omni, weights: weights/backbone}\n")
    resolved = resolve_config(load_config(path), registry)
    assert resolved.component("backbone").weights == tmp_path / "weights" / "backbone"


def test_missing_weights_folder_fails_at_validation(tmp_path: Path, registry: PluginRegistry) -> None:
    path = write(tmp_path, "c.yaml", "backbone: {plugin: x-omni, weights: nowhere}\n")
    with pytest.raises(ConfigError, match=r"backbone.weights: folder .*nowhere does not exist"):
        resolve_config(load_config(path), registry)


def test_schema_selects_each_plugins_params_by_name(registry: PluginRegistry) -> None:
    jsonschema = pytest.importorskip("jsonschema")
    schema = config_json_schema(registry)
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    good = {"decoder": {"plugin": "flux-semantic", "params": {"num_inference_steps": 3}}}
    bad = {"decoder": {"plugin": "flux-semantic", "params": {"num_inference_steps": "x"}}}
    assert not list(validator.iter_errors(good))
    assert list(validator.iter_errors(bad))


def test_negative_reward_weight_fails_at_validation_with_its_path() -> None:
    with pytest.raises(ConfigError, match=r"rewards\.0\.weight: .*\(got -1\.0; expected number >= 0"):
        load_config(data={"rewards": [{"plugin": "anything", "weight": -1.0}]})


def test_unknown_reward_fails_at_validation_with_its_path(registry: PluginRegistry) -> None:
    config = load_config(data={"rewards": [{"plugin": "no-such-reward"}]})
    with pytest.raises(ConfigError, match=r"rewards\.0\.plugin: unknown reward plugin 'no-such-reward'"):
        resolve_config(config, registry)


def test_missing_reward_model_folder_fails_at_validation(tmp_path: Path) -> None:
    registry = PluginRegistry.discover(use_environment=False)
    path = write(tmp_path, "c.yaml", "rewards: [{plugin: clip-score, weights: missing}]\n")
    with pytest.raises(ConfigError, match=r"rewards\.0\.weights: folder .*missing does not exist"):
        resolve_config(load_config(path), registry)
