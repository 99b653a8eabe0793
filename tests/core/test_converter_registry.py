"""`xomni convert NAME`: converters come from the `xomni.converters` entry points, ours and others' alike."""

from __future__ import annotations

import importlib.metadata as metadata
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from support import REPO, run_xomni

from xomni_core import PluginError, XomniError
from xomni_core.convert import ConverterOption, ConverterSpec, ConvertOptions, convert
from xomni_core.registry import discover_converters, find_converter
from xomni_core.settings import PluginSettings

TOY_MODULE = """
    from pathlib import Path

    from xomni_core.convert import ConversionResult, ConverterOption, ConverterSpec

    CONVERTER = ConverterSpec(
        name="toy",
        description="a text file, upper-cased",
        implementation="acme_toy:convert_toy",
        options=(ConverterOption(name="suffix", help="appended to the text"),),
    )


    def convert_toy(src, dst, options):
        dst.mkdir(parents=True, exist_ok=options.force)
        text = (src / "in.txt").read_text().upper() + (options.extra["suffix"] or "")
        (dst / "out.txt").write_text(text)
        (dst / "pipeline.yaml").write_text("version: 1\\n")
        return ConversionResult(dst, dst / "pipeline.yaml", ("out.txt",), notes=("upper-cased",))
"""


def write_converter_distribution(
    site: Path, name: str, *, entry_points: dict[str, str], modules: dict[str, str], version: str = "2.3.0"
) -> Path:
    """A minimal installed distribution whose entry points are in the `xomni.converters` group."""
    site.mkdir(parents=True, exist_ok=True)
    for module, source in modules.items():
        (site / f"{module}.py").write_text(textwrap.dedent(source))
    info = site / f"{name.replace('-', '_')}-{version}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n")
    lines = "".join(f"{key} = {value}\n" for key, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[xomni.converters]\n{lines}")
    return site


def entry_points_in(site: Path) -> list[metadata.EntryPoint]:
    return [ep for dist in metadata.distributions(path=[str(site)]) for ep in dist.entry_points]


@pytest.fixture
def acme(tmp_path: Path) -> Path:
    return write_converter_distribution(
        tmp_path / "site",
        "acme-converters",
        entry_points={"toy": "acme_toy:CONVERTER"},
        modules={"acme_toy": TOY_MODULE},
    )


def test_listing_shows_ours_and_a_third_party_converter_with_distributions_without_importing_torch(
    acme: Path,
) -> None:
    code = (
        "import sys; from xomni_core.cli import main; code = main(['convert', '--list']); "
        "assert 'torch' not in sys.modules, 'torch imported'; sys.exit(code)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env={"PYTHONPATH": str(acme), "PATH": ""},
        cwd=REPO,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.startswith("x-omni  (xomni 0.1.0)  the official X-Omni release") for line in lines)
    assert "toy  (acme-converters 2.3.0)  a text file, upper-cased" in lines


def test_a_third_party_converter_runs_through_the_cli_with_its_own_option(acme: Path, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "in.txt").write_text("hello")
    dst = tmp_path / "dst"
    result = run_xomni("convert", "toy", str(src), str(dst), "--suffix", "!", env={"PYTHONPATH": str(acme)})
    assert result.returncode == 0, result.stderr
    assert (dst / "out.txt").read_text() == "HELLO!"
    assert "  upper-cased" in result.stdout.splitlines()
    usage = run_xomni("convert", "toy", "--help", env={"PYTHONPATH": str(acme)})
    assert "--suffix SUFFIX" in usage.stdout and "--dtype" in usage.stdout


def test_unknown_converter_names_the_installed_ones_and_a_close_match() -> None:
    result = run_xomni("convert", "x-omini", "a", "b")
    assert result.returncode == 2
    assert "unknown checkpoint format 'x-omini'. Did you mean 'x-omni'?" in result.stderr


def test_an_option_the_converter_does_not_declare_is_refused_before_it_loads(tmp_path: Path) -> None:
    with pytest.raises(XomniError, match=r"takes no option 'flux'; its options: flux_dir \(--flux\)"):
        convert("x-omni", tmp_path, tmp_path / "out", ConvertOptions(flux=tmp_path))


def test_declared_options_get_their_defaults_and_paths() -> None:
    spec = find_converter("x-omni")
    options = spec.resolve(ConvertOptions(flux_dir="flux", show_progress=False))
    assert dict(options.extra) == {"flux_dir": Path("flux"), "text_free": False}
    assert options.flux_dir == Path("flux") and not options.show_progress


def test_a_broken_converter_is_listed_with_its_error_and_the_others_still_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    site = write_converter_distribution(
        tmp_path / "site",
        "broken-conv",
        entry_points={"bad": "no_such_module:CONVERTER", "odd": "odd_converter_module:CONVERTER"},
        modules={"odd_converter_module": "CONVERTER = 42\n"},
    )
    monkeypatch.syspath_prepend(str(site))
    records = {r.name: r for r in discover_converters(entry_points=entry_points_in(site))}
    assert records["bad"].status == "broken"
    assert "import failed: ModuleNotFoundError" in str(records["bad"].error)
    assert records["odd"].status == "broken" and "expected a ConverterSpec" in str(records["odd"].error)
    with pytest.raises(PluginError, match=r"converter 'bad' \(broken-conv 2\.3\.0\) is broken"):
        find_converter("bad", tuple(records.values()))


def test_one_name_from_two_distributions_is_a_conflict_until_pinned(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    points = []
    for dist in ("one-conv", "two-conv"):
        module = dist.replace("-", "_")
        site = write_converter_distribution(
            tmp_path / dist,
            dist,
            entry_points={"toy": f"{module}:CONVERTER"},
            modules={module: TOY_MODULE.replace("acme_toy:", f"{module}:")},
        )
        monkeypatch.syspath_prepend(str(site))
        points += entry_points_in(site)
    clash = discover_converters(entry_points=points, use_environment=False)
    assert [r.status for r in clash] == ["conflict", "conflict"]
    pinned = discover_converters(
        PluginSettings(prefer={"converter/toy": "two-conv"}), entry_points=points, use_environment=False
    )
    assert find_converter("toy", pinned).implementation == "two_conv:convert_toy"


def test_a_denied_converter_is_not_imported(acme: Path) -> None:
    records = discover_converters(
        PluginSettings(deny=("acme-converters",)), entry_points=entry_points_in(acme), use_environment=False
    )
    assert [(r.name, r.status) for r in records] == [("toy", "disabled")]
    assert "acme_toy" not in sys.modules


def test_malformed_descriptors_are_refused_naming_each_field() -> None:
    with pytest.raises(PluginError, match=r"implementation 'nowhere'.*option name 'force'.*flag '--dtype'"):
        ConverterSpec(
            name="x",
            description="",
            implementation="nowhere",
            options=(
                ConverterOption(name="force", help=""),
                ConverterOption(name="x", help="", flag="--dtype"),
            ),
        )
