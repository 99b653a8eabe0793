"""The xomni command line as a user meets it: exit codes, messages, startup cost."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from support import run_xomni


def test_plugins_list_shows_reference_plugins_with_kind_version_distribution() -> None:
    result = run_xomni("plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for key in (("tokenizer", "siglip-vq"), ("backbone", "x-omni"), ("decoder", "flux-semantic")):
        assert rows[key]["status"] == "ok"
        assert rows[key]["version"] == "0.1.0"
        assert rows[key]["distribution"].startswith("xomni ")


def test_listing_and_validating_never_import_torch_or_implementations(tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("backbone: {plugin: x-omni, params: {hidden_size: 64}}\n")
    probe = (
        "import sys\n"
        "from xomni_core.cli import main\n"
        "main(['plugins', 'list']); main(['config', 'validate', sys.argv[1]]); main(['config', 'schema'])\n"
        "heavy = [m for m in sys.modules if m.split('.')[0] in ('torch', 'transformers', 'diffusers')"
        " or m.endswith('.model')]\n"
        "print('HEAVY', heavy, file=sys.stderr)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe, str(config)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "HEAVY []" in result.stderr


def test_broken_plugin_is_listed_as_broken_and_strict_exits_non_zero(plugin_site) -> None:
    plugin_site(
        "broken-dist",
        entry_points={"boom": "boom_module:PLUGIN"},
        modules={"boom_module": "raise RuntimeError('exploded on import')"},
    )
    listing = run_xomni("plugins", "list")
    assert listing.returncode == 0
    assert "broken" in listing.stdout and "exploded on import" in listing.stdout
    assert "x-omni" in listing.stdout
    strict = run_xomni("plugins", "list", "--strict")
    assert strict.returncode == 2
    assert "strict" in strict.stderr


def test_config_errors_exit_2_with_one_paragraph_and_no_traceback(tmp_path: Path) -> None:
    cases = {
        "wrong_type.yaml": (
            "decoder: {plugin: flux-semantic, params: {num_inference_steps: lots}}\n",
            "decoder.params.num_inference_steps",
        ),
        "unknown_plugin.yaml": ("backbone: {plugin: x-omin}\n", "Did you mean 'x-omni'?"),
        "unknown_key.yaml": (
            "decoder: {plugin: flux-semantic, params: {steps: 3}}\n",
            "decoder.params.steps: unknown key",
        ),
    }
    for name, (text, expected) in cases.items():
        path = tmp_path / name
        path.write_text(text)
        result = run_xomni("config", "validate", str(path))
        assert result.returncode == 2, (name, result.stderr)
        assert "Traceback" not in result.stderr
        assert expected in " ".join(result.stderr.split()), (name, result.stderr)
        assert result.stderr.strip().count("\n\n") == 0


def test_bad_sampling_flags_of_generate_exit_2_naming_the_flag_before_loading_anything(
    tmp_path: Path,
) -> None:
    for flag, value, expected in [
        ("--temperature", "-1", "--temperature: Input should be greater than or equal to 0"),
        ("--top-k", "0", "--top-k: Input should be greater than or equal to 1"),
        ("--top-p", "2", "--top-p: Input should be less than or equal to 1"),
        ("--min-p", "1.5", "--min-p: Input should be less than 1"),
    ]:
        result = run_xomni("generate", "a red circle", "--out", str(tmp_path), flag, value)
        assert result.returncode == 2, (flag, result.stderr)
        assert "Traceback" not in result.stderr
        assert expected in " ".join(result.stderr.split()), (flag, result.stderr)
    assert not list(tmp_path.iterdir())


def test_debug_flag_shows_the_traceback(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("backbone: {plugin: x-omin}\n")
    result = run_xomni("--debug", "config", "validate", str(path))
    assert result.returncode != 0
    assert "Traceback" in result.stderr


def test_set_override_is_validated_like_the_file(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("decoder: {plugin: flux-semantic}\n")
    ok = run_xomni("config", "validate", str(path), "--set", "decoder.params.num_inference_steps=20")
    assert ok.returncode == 0, ok.stderr
    bad = run_xomni("config", "validate", str(path), "--set", "decoder.params.num_inference_steps=-1")
    assert bad.returncode == 2
    assert "decoder.params.num_inference_steps" in bad.stderr


def test_plugins_show_lists_params_with_types_defaults_and_origin() -> None:
    result = run_xomni("plugins", "show", "flux-semantic")
    assert result.returncode == 0, result.stderr
    assert "decoder/flux-semantic 0.1.0" in result.stdout
    assert "num_inference_steps: int (default 28)" in result.stdout
    assert "distribution:   xomni" in result.stdout


def test_plugins_show_unknown_name_exits_2_with_suggestion() -> None:
    result = run_xomni("plugins", "show", "flux-semantik")
    assert result.returncode == 2
    assert "Did you mean 'flux-semantic'?" in " ".join(result.stderr.split())


def test_config_schema_is_json_with_plugin_params() -> None:
    result = run_xomni("config", "schema")
    assert result.returncode == 0, result.stderr
    schema = json.loads(result.stdout)
    assert "decoder.flux-semantic.FluxSemanticParams" in json.dumps(schema) or "allOf" in json.dumps(schema)
    assert schema["$defs"]["decoderSlot"]["properties"]["plugin"]["enum"] == ["flux-semantic"]
