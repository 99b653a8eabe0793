"""The example third-party distribution, installed with pip into a throwaway environment."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
from PIL import Image
from support import REPO

EXAMPLE = REPO / "examples" / "xomni-plugin-example"
TINY_CONFIG = REPO / "examples" / "configs" / "tiny-random.yaml"


@pytest.fixture(scope="module")
def environment(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A fresh venv with xomni and the example installed by pip (no network: --no-deps).

    The heavy dependencies (torch, transformers...) come from this interpreter's site-packages
    through a .pth file, so the test installs only the two distributions under test.
    """
    root = tmp_path_factory.mktemp("venv")
    venv.EnvBuilder(with_pip=True).create(root)
    python = root / "bin" / "python"
    site = subprocess.run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "outer.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    # Build with this interpreter's current setuptools, not the venv's bundled old one.
    subprocess.run(
        [str(python), "-m", "pip", "uninstall", "--quiet", "--yes", "setuptools"],
        check=True,
        capture_output=True,
        text=True,
    )
    for source in (REPO, EXAMPLE):
        subprocess.run(
            [
                str(python),
                "-m",
                "pip",
                "install",
                "--quiet",
                "--no-deps",
                "--no-build-isolation",
                "--no-index",
                str(source),
            ],
            check=True,
            capture_output=True,
            text=True,
        )
    return root


def xomni(environment: Path, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("PYTHONPATH", "XOMNI_PLUGINS", "XOMNI_DISABLE_PLUGINS")
    }
    return subprocess.run(
        [str(environment / "bin" / "xomni"), *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=cwd,
        timeout=600,
    )


@pytest.mark.slow
def test_installed_example_is_listed_with_its_distribution(environment: Path) -> None:
    result = xomni(environment, "plugins", "list", "--json")
    assert result.returncode == 0, result.stderr
    rows = {(r["kind"], r["name"]): r for r in json.loads(result.stdout)}
    for kind, name in (("reward", "brightness"), ("reward", "saturation"), ("decoder", "latent-preview")):
        assert rows[(kind, name)]["distribution"] == "xomni-plugin-example 0.1.0"
        assert rows[(kind, name)]["status"] == "ok"
    assert rows[("backbone", "x-omni")]["status"] == "ok"


@pytest.mark.slow
def test_config_selecting_the_example_reward_runs_end_to_end(environment: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = xomni(
        environment,
        "generate",
        "a bright red square",
        "--config",
        str(TINY_CONFIG),
        "--set",
        "rewards=[{plugin: brightness, params: {target: 0.5}, weight: 2.0}]",
        "--out",
        str(out),
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    record = json.loads((out / "generation.json").read_text())
    [score] = record["rewards"]["per_reward"]["rewards.0:brightness"]
    assert 0.0 <= score <= 1.0
    assert record["rewards"]["total"] == [pytest.approx(2.0 * score)]


@pytest.mark.slow
def test_example_params_are_validated_by_the_core(environment: Path, tmp_path: Path) -> None:
    config = tmp_path / "c.yaml"
    config.write_text("rewards:\n  - plugin: brightness\n    params: {target: 3}\n")
    result = xomni(environment, "config", "validate", str(config))
    assert result.returncode == 2
    assert "rewards.0.params.target" in result.stderr and "reward plugin 'brightness'" in result.stderr


@pytest.mark.slow
def test_a_config_using_the_example_decoder_generates_images(environment: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    result = xomni(
        environment,
        "generate",
        "a red square",
        "--config",
        str(TINY_CONFIG),
        "--set",
        "decoder={plugin: latent-preview, params: {latent_channels: 64}}",
        "--out",
        str(out),
        "--no-progress",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr
    with Image.open(out / "image-000.png") as image:
        assert image.size == (64, 64)  # the config's 4 x 4 tokens, 16 px each


@pytest.mark.slow
def test_convert_lists_the_example_converter_beside_ours_and_runs_it(
    environment: Path, tmp_path: Path
) -> None:
    listing = xomni(environment, "convert", "--list")
    assert listing.returncode == 0, listing.stderr
    names = {line.split("  ")[0]: line.split("  ")[1] for line in listing.stdout.splitlines()}
    assert names == {"x-omni": "(xomni 0.1.0)", "preview-csv": "(xomni-plugin-example 0.1.0)"}
    (tmp_path / "release").mkdir()
    (tmp_path / "release" / "projection.csv").write_text("1,0\n0,1\n1,1\n")
    converted = xomni(environment, "convert", "preview-csv", "release", "out", cwd=tmp_path)
    assert converted.returncode == 0, converted.stderr
    validated = xomni(environment, "config", "validate", "out/pipeline.yaml", cwd=tmp_path)
    assert validated.returncode == 0, validated.stderr


@pytest.mark.slow
def test_the_example_passes_its_own_tests_where_it_is_installed(environment: Path) -> None:
    result = subprocess.run(
        [str(environment / "bin" / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider"],
        capture_output=True,
        text=True,
        cwd=EXAMPLE,
        timeout=600,
    )
    assert result.returncode == 0, result.stdout + result.stderr
