"""`xomni config validate` sees whether components fit without loading weights; `xomni plugins
check` imports every implementation."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

from support import REPO, run_xomni

from xomni_core.models import shipped_model_dir

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"

PARAMS = """
from xomni_core import ComponentParams

class GhostParams(ComponentParams):
    pass
"""
SPEC = """
from xomni_core import PluginSpec
from ghost_params import GhostParams

PLUGIN = PluginSpec(name="ghost", kind="reward", version="0.1.0", api_version="1",
                    implementation="ghost_impl_that_does_not_exist:Ghost", params=GhostParams)
"""


def test_a_decoder_that_does_not_take_the_tokenizers_latents_is_invalid() -> None:
    result = run_xomni("config", "validate", str(TINY), "--set", "decoder.params.semantic_channels=32")
    assert result.returncode == 2
    message = " ".join(result.stderr.split())
    assert "tokenizer latent_channels 64 (plugin 'siglip-vq') != decoder latent_channels 32" in message


def test_codebook_and_image_vocab_must_agree() -> None:
    overrides = ["backbone.params.image_vocab_size=128", "backbone.params.mm_vocab_size=136"]
    result = run_xomni("config", "validate", str(TINY), *(a for o in overrides for a in ("--set", o)))
    assert result.returncode == 2
    assert "tokenizer codebook_size 256" in result.stderr and "backbone image_vocab_size 128" in result.stderr


def test_valid_config_lists_what_was_compared() -> None:
    result = run_xomni("config", "validate", str(TINY))
    assert result.returncode == 0, result.stderr
    assert "fits: tokenizer downsample_factor = decoder pixels_per_token = 16" in result.stdout


def test_saved_params_of_a_pipeline_folder_are_checked_without_torch(tmp_path: Path) -> None:
    folder = tmp_path / "nano"
    shutil.copytree(shipped_model_dir(), folder)
    record_path = folder / "decoder" / "xomni_component.json"
    record = json.loads(record_path.read_text())
    record["params"]["semantic_channels"] = 32
    record_path.write_text(json.dumps(record))
    probe = textwrap.dedent(
        """
        import sys
        from xomni_core.cli import main
        code = main(["config", "validate", sys.argv[1]])
        print("CODE", code, "TORCH", "torch" in sys.modules, file=sys.stderr)
        """
    )
    result = subprocess.run([sys.executable, "-c", probe, str(folder)], capture_output=True, text=True)
    assert "CODE 2 TORCH False" in result.stderr
    assert "decoder latent_channels 32" in " ".join(result.stderr.split())


def test_a_plugin_without_its_implementation_module_is_not_listed_ok(plugin_site) -> None:
    plugin_site(
        "ghost-dist",
        entry_points={"ghost": "ghost_spec:PLUGIN"},
        modules={"ghost_params": PARAMS, "ghost_spec": SPEC},
    )
    listed = run_xomni("plugins", "list", "--json")
    [ghost] = [row for row in json.loads(listed.stdout) if row["name"] == "ghost"]
    assert ghost["status"] == "broken"
    assert "ghost_impl_that_does_not_exist" in ghost["error"]
    checked = run_xomni("plugins", "check")
    assert checked.returncode == 2
    assert "ghost" in checked.stdout and "fails" in checked.stdout
    assert "1 implementation(s) fail to import" in checked.stderr


def test_plugins_check_imports_every_reference_implementation() -> None:
    result = run_xomni("plugins", "check", "--json")
    assert result.returncode == 0, result.stderr
    rows = json.loads(result.stdout)
    assert {("backbone", "x-omni", "torch"), ("decoder", "flux-semantic", "onnxruntime")} <= {
        (r["kind"], r["name"], r["backend"]) for r in rows
    }
    assert all(r["status"] == "ok" for r in rows)
