"""The example third-party distribution, installed with pip into a throwaway environment."""

from __future__ import annotations

import json
import os
import subprocess
import sysconfig
import venv
from pathlib import Path

import pytest
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
    for name in ("brightness", "saturation"):
        assert rows[("reward", name)]["distribution"] == "xomni-plugin-example 0.1.0"
        assert rows[("reward", name)]["status"] == "ok"
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
