"""Hostile config files, overrides and flags: each is refused quickly with a clear error."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from xomni_core import ConfigError
from xomni_core.cli import main
from xomni_core.config import load_config, resolve_config
from xomni_core.params import ComponentParams
from xomni_core.registry import PluginRegistry

BILLION_LAUGHS = """\
a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]
b: &b [*a,*a,*a,*a,*a,*a,*a,*a,*a]
c: &c [*b,*b,*b,*b,*b,*b,*b,*b,*b]
d: &d [*c,*c,*c,*c,*c,*c,*c,*c,*c]
e: &e [*d,*d,*d,*d,*d,*d,*d,*d,*d]
f: &f [*e,*e,*e,*e,*e,*e,*e,*e,*e]
g: &g [*f,*f,*f,*f,*f,*f,*f,*f,*f]
h: &h [*g,*g,*g,*g,*g,*g,*g,*g,*g]
i: &i [*h,*h,*h,*h,*h,*h,*h,*h,*h]
"""
HUGE = "9" * 5000


@pytest.fixture(scope="module")
def registry() -> PluginRegistry:
    return PluginRegistry.discover(use_environment=False)


def write(tmp_path: Path, name: str, content: str | bytes) -> Path:
    path = tmp_path / name
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def refusal(path: Path, overrides: list[str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        load_config(path, overrides)
    return str(caught.value)


# --- reading files -------------------------------------------------------------------------


def test_latin1_byte_is_refused_naming_the_file_and_offset(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", b"runtime:\n  device: caf\xe9\n")
    message = refusal(path)
    assert str(path) in message and "not UTF-8" in message and "offset 22" in message


def test_utf16_file_is_refused_as_not_utf8(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "version: 1\n".encode("utf-16"))
    assert "UTF-16" in refusal(path)


def test_utf8_byte_order_mark_is_accepted(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", b'\xef\xbb\xbf{"runtime": {"seed": 3}}')
    assert load_config(path).runtime.seed == 3


def test_alias_that_refers_to_itself_is_refused(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "c.yaml", "runtime: &a {seed: *a}\n"))
    assert "alias *a refers to a value that contains it" in message


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.yaml", "a: " + "[" * 20_000 + "]" * 20_000),
        ("c.yaml", "a:\n" + "- " * 20_000 + "1"),
        ("c.json", '{"a": ' + "[" * 20_000 + "]" * 20_000 + "}"),
        ("c.toml", "a = " + "[" * 20_000 + "]" * 20_000),
        ("c.json", '{"a": ' + "[" * 100 + "]" * 100 + "}"),
        ("c.toml", "a." * 20_000 + "b = 1"),
    ],
)
def test_deep_nesting_is_refused_with_the_limit(tmp_path: Path, name: str, text: str) -> None:
    assert "nested more than 64 levels deep" in refusal(write(tmp_path, name, text))


def test_nesting_within_the_limit_is_read(tmp_path: Path) -> None:
    metadata = '{"a": ' * 50 + "1" + "}" * 50
    path = write(
        tmp_path,
        "c.json",
        f'{{"training": {{"grpo": {{"prompts": [{{"prompt": "x", "metadata": {metadata}}}]}}}}}}',
    )
    config = load_config(path)
    assert config.training is not None and config.training.grpo is not None


@pytest.mark.parametrize(
    ("name", "text", "where"),
    [
        ("c.yaml", f"runtime:\n  seed: {HUGE}\n", "runtime.seed"),
        ("c.json", f'{{"runtime": {{"seed": {HUGE}}}}}', "runtime.seed"),
        ("c.toml", f"[runtime]\nseed = {HUGE}\n", "key 'seed'"),
    ],
)
def test_integer_of_5000_digits_is_refused_naming_the_key(
    tmp_path: Path, name: str, text: str, where: str
) -> None:
    message = refusal(write(tmp_path, name, text))
    assert where in message and "too long" in message


def test_integer_of_5000_digits_in_an_override_is_refused_naming_the_key(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "version: 1\n")
    message = refusal(path, [f"runtime.seed={HUGE}"])
    assert "runtime.seed: a number of 5000 characters is too long" in message
    assert len(message) < 600


def test_alias_bomb_is_refused_quickly(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", BILLION_LAUGHS)
    start = time.perf_counter()
    message = refusal(path)
    assert time.perf_counter() - start < 2.0
    assert "more than 100000 values" in message


def test_alias_bomb_in_an_override_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "version: 1\n")
    bomb = "{" + ", ".join(BILLION_LAUGHS.splitlines()) + "}"
    assert "more than 100000 values" in refusal(path, [f"training.x={bomb}"])


def test_aliases_within_the_budget_are_expanded(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, "c.yaml", "generation: {height_px: &side 128, width_px: *side}\n"))
    assert config.generation.width_px == 128


def test_duplicate_yaml_key_is_refused_naming_key_and_line(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "c.yaml", "runtime:\n  seed: 1\n  seed: 2\n"))
    assert "key 'seed' appears twice" in message and "line 3" in message


def test_duplicate_json_key_is_refused_naming_it(tmp_path: Path) -> None:
    assert "key 'seed' appears twice" in refusal(
        write(tmp_path, "c.json", '{"runtime": {"seed": 1, "seed": 2}}')
    )


def test_yaml_merge_keys_may_be_overridden(tmp_path: Path) -> None:
    text = "base: &b {seed: 1, dtype: float32}\nruntime:\n  <<: *b\n  seed: 2\n"
    assert "appears twice" not in refusal(write(tmp_path, "c.yaml", text))  # only 'base' is unknown


def test_file_too_large_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    with path.open("wb") as handle:
        handle.truncate(4 * 2**30)  # sparse: reading it all would take long
    start = time.perf_counter()
    message = refusal(path)
    assert time.perf_counter() - start < 1.0
    assert "at most 1048576 bytes" in message


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("c.yaml", ""),
        ("c.yaml", "null\n"),
        ("c.yaml", "# only a comment\n"),
        ("c.json", " \n"),
        ("c.toml", "# x\n"),
    ],
)
def test_empty_config_file_is_refused(tmp_path: Path, name: str, text: str) -> None:
    path = write(tmp_path, name, text)
    assert f"config file {path} is empty" in refusal(path)


def test_empty_config_file_fails_config_validate(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "c.yaml", "")
    assert main(["config", "validate", str(path)]) == 2
    assert "is empty" in " ".join(capsys.readouterr().err.split())


def test_deep_override_key_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "c.yaml", "version: 1\n")
    assert "nested more than 64 levels deep" in refusal(path, ["a" + ".a" * 20_000 + "=1"])


@pytest.mark.parametrize("index", ["9" * 5000, "\u00b2", "-1", "1"])
def test_override_of_a_list_item_that_does_not_exist_is_refused(tmp_path: Path, index: str) -> None:
    path = write(tmp_path, "c.yaml", "rewards:\n  - {plugin: target-color}\n")
    assert "is not an index of a list of 1" in refusal(path, [f"rewards.{index}.weight=2"])


def test_non_string_yaml_keys_do_not_crash(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "c.yaml", "runtime:\n  2020-01-01: 1\n  null: 2\n"))
    assert "runtime.2020-01-01: unknown key" in message


# --- validating values ---------------------------------------------------------------------


def test_fifty_thousand_unknown_keys_give_a_short_message(tmp_path: Path) -> None:
    path = write(tmp_path, "c.json", json.dumps({f"k{i}": "v" for i in range(50_000)}))
    message = refusal(path)
    assert len(message) < 1000
    assert message.startswith("invalid config: 50000 problems:") and message.endswith("... and 49990 more.")


def test_long_value_is_quoted_shortened(tmp_path: Path) -> None:
    message = refusal(write(tmp_path, "c.yaml", f"runtime:\n  device: {'x' * 100_000}\n"))
    assert "... (99802 more characters)" in message and len(message) < 600


@pytest.mark.parametrize(
    ("override", "where"),
    [
        ("runtime.threads=true", "runtime.threads"),
        ("generation.height_px=true", "generation.height_px"),
        ("generation.num_inference_steps=false", "generation.num_inference_steps"),
        ("generation.sampling.top_k=true", "generation.sampling.top_k"),
        ("generation.sampling.temperature=true", "generation.sampling.temperature"),
        ("version=true", "version"),
    ],
)
def test_booleans_are_refused_for_numbers(tmp_path: Path, override: str, where: str) -> None:
    message = refusal(write(tmp_path, "c.yaml", "version: 1\n"), [override])
    assert f"{where}: Input should be a number, not a boolean" in message


def test_booleans_are_refused_for_plugin_params(tmp_path: Path, registry: PluginRegistry) -> None:
    config = load_config(
        write(
            tmp_path, "c.yaml", "decoder:\n  plugin: flux-semantic\n  params: {num_attention_heads: true}\n"
        )
    )
    with pytest.raises(
        ConfigError, match=r"decoder\.params\.num_attention_heads: Input should be a number, not a boolean"
    ):
        resolve_config(config, registry)


def test_any_component_params_model_refuses_booleans_and_non_finite_floats() -> None:
    class Params(ComponentParams):
        layers: int = 1
        sizes: tuple[int, ...] = ()
        scale: float | None = None

    for bad in ({"layers": True}, {"sizes": [1, False]}, {"scale": float("inf")}, {"scale": float("nan")}):
        with pytest.raises(ValueError):
            Params.model_validate(bad)
    assert Params.model_validate({"layers": 2, "sizes": [3], "scale": 2}).scale == 2.0


@pytest.mark.parametrize(
    "override",
    [
        "generation.sampling.temperature=.inf",
        "generation.sampling.cfg_scale=.inf",
        "generation.guidance_scale=.nan",
        "generation.noise_scale=.inf",
        "training.grpo.learning_rate=.nan",
        "training.sft.learning_rate=.inf",
        "training.grpo.sampling.temperature=.inf",
    ],
)
def test_non_finite_floats_are_refused(tmp_path: Path, override: str) -> None:
    message = refusal(write(tmp_path, "c.yaml", "version: 1\n"), [override])
    assert f"{override.partition('=')[0]}: Input should be a finite number" in message


def test_non_finite_reward_weight_is_refused(tmp_path: Path) -> None:
    text = "rewards:\n  - {plugin: target-color, weight: .inf}\n"
    assert "rewards.0.weight: Input should be a finite number" in refusal(write(tmp_path, "c.yaml", text))


def test_non_finite_plugin_param_is_refused(tmp_path: Path, registry: PluginRegistry) -> None:
    text = '{"decoder": {"plugin": "flux-semantic", "params": {"guidance_scale": NaN}}}'
    config = load_config(write(tmp_path, "c.json", text))
    with pytest.raises(
        ConfigError, match=r"decoder\.params\.guidance_scale: Input should be a finite number"
    ):
        resolve_config(config, registry)


@pytest.mark.parametrize("device", ["cpu", "cuda", "cuda:0", "cuda:12", "mps", "xpu", "xpu:1"])
def test_torch_devices_are_accepted(tmp_path: Path, device: str) -> None:
    assert (
        load_config(write(tmp_path, "c.yaml", f"runtime: {{device: '{device}'}}\n")).runtime.device == device
    )


@pytest.mark.parametrize(
    "device", ["meta", "gpu", "cuda:", "cuda:x", "CPU", "cpu ", "cuda:1:2", "", "\x1b[31m"]
)
def test_other_devices_are_refused(tmp_path: Path, device: str) -> None:
    message = refusal(write(tmp_path, "c.json", json.dumps({"runtime": {"device": device}})))
    assert "runtime.device: expected a torch device: cpu, cuda, cuda:N, mps, xpu or xpu:N" in message


@pytest.mark.parametrize("seed", [2**63, 2**64, -1, 10**30])
def test_seed_beyond_64_bits_or_negative_is_refused(tmp_path: Path, seed: int) -> None:
    assert "runtime.seed: Input should be" in refusal(
        write(tmp_path, "c.yaml", f"runtime: {{seed: {seed}}}\n")
    )


def test_largest_seed_is_accepted(tmp_path: Path) -> None:
    assert (
        load_config(write(tmp_path, "c.yaml", f"runtime: {{seed: {2**63 - 1}}}\n")).runtime.seed == 2**63 - 1
    )


@pytest.mark.parametrize(
    ("flag", "value", "expected"),
    [
        ("--temperature", "inf", "--temperature: Input should be a finite number"),
        ("--cfg-scale", "inf", "--cfg-scale: Input should be a finite number"),
        ("--guidance", "inf", "--guidance: Input should be a finite number"),
        ("--noise-scale", "nan", "--noise-scale: Input should be a finite number"),
        ("--steps", "1000000", "--steps: Input should be less than or equal to 1000"),
        ("--steps", "-5", "--steps: Input should be greater than or equal to 1"),
        ("--seed", str(2**64), "--seed: Input should be less than 9223372036854775808"),
        ("--seed", "-1", "--seed: Input should be greater than or equal to 0"),
    ],
)
def test_bad_generate_flag_exits_2_naming_it_before_anything_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], flag: str, value: str, expected: str
) -> None:
    out = tmp_path / "out"
    assert main(["generate", "x", "--out", str(out), flag, value]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("xomni: error:") and expected in err
    assert not out.exists()


def test_weights_path_too_long_names_the_key(tmp_path: Path, registry: PluginRegistry) -> None:
    text = f"decoder:\n  plugin: flux-semantic\n  weights: {'w' * 5000}\n"
    config = load_config(write(tmp_path, "c.yaml", text))
    with pytest.raises(ConfigError) as caught:
        resolve_config(config, registry)
    message = str(caught.value)
    assert message.startswith("decoder.weights:") and "too long" in message and len(message) < 600


def test_config_file_name_too_long_is_a_config_error(tmp_path: Path) -> None:
    assert "cannot be read" in refusal(tmp_path / ("c" * 5000 + ".yaml"))


# --- output hygiene -------------------------------------------------------------------------


def test_control_characters_of_user_input_are_escaped_on_output(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path, "c.json", json.dumps({"runtime": {"device": "\x1b[31mred\r\x00"}, "\x1b]0;t\x07": 1})
    )
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert "\x1b" not in err and "\r" not in err and "\x00" not in err and "\x07" not in err
    assert "\\x1b[31mred\\r\\x00" in err


def test_error_output_is_capped(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    keys = {("k" * 190) + str(i): "v" * 190 for i in range(20)}
    path = write(tmp_path, "c.json", json.dumps(keys))
    assert main(["config", "validate", str(path)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xomni: error:") and len(err) <= 2000
