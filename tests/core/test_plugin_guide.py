"""docs/writing-a-plugin.md: the package its code blocks spell out registers, validates and runs."""

from __future__ import annotations

import importlib.metadata as metadata
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomllib
import torch
import yaml
from PIL import Image
from support import REPO

from xomni_core import DecodeRequest, PluginRegistry, RewardBatch, SemanticLatents, TextToImagePipeline
from xomni_core.convert import ConvertOptions
from xomni_core.interfaces import Backbone, Decoder, Reward, Tokenizer
from xomni_core.registry import discover_converters, find_converter
from xomni_core.types import ImageGenerationRequest

GUIDE = REPO / "docs" / "writing-a-plugin.md"
PACKAGE = "my_xomni_plugin"
_BLOCK = re.compile(r"```(\w+)\n(.*?)```", re.DOTALL)


@dataclass(frozen=True)
class Installed:
    site: Path
    registry: PluginRegistry
    config: dict[str, object]


def blocks(language: str) -> list[str]:
    return [body for lang, body in _BLOCK.findall(GUIDE.read_text()) if lang == language]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Installed]:
    """The guide's package written out file by file, with a dist-info from its pyproject."""
    site = tmp_path_factory.mktemp("site")
    for body in blocks("python"):
        first = body.splitlines()[0]
        if first.startswith(f"# {PACKAGE}/"):
            path = site / first.removeprefix("# ")
            path.parent.mkdir(exist_ok=True)
            path.write_text(body)
    [pyproject] = blocks("toml")
    project = tomllib.loads(pyproject)["project"]
    info = site / f"{PACKAGE}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    groups = "".join(
        f"[{group}]\n" + "".join(f"{name} = {value}\n" for name, value in points.items())
        for group, points in project["entry-points"].items()
    )
    (info / "entry_points.txt").write_text(groups)
    [config] = [yaml.safe_load(body) for body in blocks("yaml") if "tokenizer:" in body]
    with pytest.MonkeyPatch.context() as patch:
        patch.syspath_prepend(str(site))
        registry = PluginRegistry.discover(
            entry_points=entry_points(site, "xomni.plugins"), use_environment=False
        )
        yield Installed(site, registry, config)


def entry_points(site: Path, group: str) -> list[metadata.EntryPoint]:
    return [
        ep
        for dist in metadata.distributions(path=[str(site)])
        for ep in dist.entry_points.select(group=group)
    ]


def test_the_guide_lays_out_one_file_per_module(installed: Installed) -> None:
    files = sorted(p.name for p in (installed.site / PACKAGE).glob("*.py"))
    assert files == [
        "__init__.py",
        "backbone.py",
        "converter.py",
        "decoder.py",
        "params.py",
        "reward.py",
        "tokenizer.py",
    ]


@pytest.mark.parametrize(
    ("kind", "name", "base"),
    [
        ("tokenizer", "palette", Tokenizer),
        ("backbone", "bigram", Backbone),
        ("decoder", "flat", Decoder),
        ("reward", "redness", Reward),
    ],
)
def test_each_kind_is_listed_from_its_distribution_and_loads(
    installed: Installed, kind: str, name: str, base: type
) -> None:
    assert not installed.registry.problems()
    [record] = installed.registry.find(name)
    assert (record.kind, record.status, record.distribution) == (kind, "ok", "my-xomni-plugin 0.1.0")
    assert issubclass(installed.registry.get(kind, name).load(), base)  # type: ignore[arg-type]


def test_the_config_validates_and_generates_scored_images(installed: Installed, tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(installed.config))
    pipeline = TextToImagePipeline.from_config(path, registry=installed.registry)
    result = pipeline(["a red square", "a blue sky"], seed=1, show_progress=False)
    assert [image.size for image in result.images] == [(64, 64), (64, 64)]
    assert result.scores is not None
    again = pipeline(["a red square", "a blue sky"], seed=1, show_progress=False)
    assert torch.equal(result.tokens.ids, again.tokens.ids)


def test_components_with_weights_round_trip_through_their_folders(
    installed: Installed, tmp_path: Path
) -> None:
    tokenizer_class = installed.registry.get("tokenizer", "palette").load()
    backbone_class = installed.registry.get("backbone", "bigram").load()
    tokenizer = tokenizer_class.from_params(tokenizer_class.params_class(), seed=3)
    backbone = backbone_class.from_params(backbone_class.params_class(), seed=4)
    tokenizer.save_pretrained(tmp_path / "tokenizer")
    backbone.save_pretrained(tmp_path / "backbone")
    image = Image.new("RGB", (48, 32), (200, 30, 30))
    grid = tokenizer.encode_images([image])
    loaded = tokenizer_class.from_pretrained(tmp_path / "tokenizer")
    assert torch.equal(loaded.encode_images([image]).ids, grid.ids)
    assert loaded.decode(grid).values.shape == (1, 3, 2, 3)
    request = ImageGenerationRequest(prompts=("a cat",), grid=grid.grid, seed=5)
    tokens = backbone_class.from_pretrained(tmp_path / "backbone").generate_image_tokens(request)
    assert torch.equal(tokens.ids, backbone.generate_image_tokens(request).ids)
    assert backbone.detokenize(backbone.tokenize("a cat<SOM>2 3<IMAGE>")) == "a cat2 3"


def test_weightless_decoder_and_reward_save_their_params_only(installed: Installed, tmp_path: Path) -> None:
    decoder_class = installed.registry.get("decoder", "flat").load()
    reward_class = installed.registry.get("reward", "redness").load()
    decoder = decoder_class.from_params(decoder_class.params_class(pixels_per_token=2))
    decoder.save_pretrained(tmp_path / "decoder")
    assert [p.name for p in (tmp_path / "decoder").iterdir()] == ["xomni_component.json"]
    latents = torch.zeros(1, 3, 1, 2)
    latents[0, 0] = 1.0
    [image] = decoder_class.from_pretrained(tmp_path / "decoder").decode(
        DecodeRequest(SemanticLatents(latents))
    )
    assert image.size == (4, 2) and image.getpixel((3, 1)) == (255, 0, 0)
    reward = reward_class.from_params(reward_class.params_class())
    assert reward.score(RewardBatch([image], ["red"])).scores == (1.0,)


def test_the_converter_is_listed_and_writes_a_loadable_tokenizer(
    installed: Installed, tmp_path: Path
) -> None:
    points = entry_points(installed.site, "xomni.converters")
    records = discover_converters(entry_points=points, use_environment=False)
    assert [(r.name, r.distribution, r.status) for r in records] == [
        ("palette-json", "my-xomni-plugin 0.1.0", "ok")
    ]
    spec = find_converter("palette-json", records)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "palette.json").write_text(json.dumps([[255, 0, 0], [0, 0, 255]]))
    result = spec.load()(tmp_path / "src", tmp_path / "dst", spec.resolve(ConvertOptions()))
    assert result.components == ("tokenizer",)
    tokenizer = (
        installed.registry.get("tokenizer", "palette").load().from_pretrained(tmp_path / "dst" / "tokenizer")
    )
    assert tokenizer.encode_images([Image.new("RGB", (16, 16), (250, 10, 10))]).ids.tolist() == [[[0]]]
