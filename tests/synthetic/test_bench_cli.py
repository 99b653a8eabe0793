"""``xomni bench compose``: the report table and JSON, each image source, and usage errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image
from support import REPO

from xomni_core.cli import main
from xomni_core.synthetic import parse_caption, read_prompts, render_scene, sample_scenes

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"


def test_ground_truth_run_prints_and_writes_the_accuracy_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "report" / "gt.json"
    code = main(
        ["bench", "compose", "--ground-truth", "--n", "14", "--seed", "3", "--out", str(out), "--no-progress"]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "CATEGORY" in printed and "overall" in printed and "color_attr" in printed
    report = json.loads(out.read_text())
    assert (report["mode"], report["split"], report["n"]) == ("ground-truth", "eval", 14)
    assert set(report["categories"]) == {
        "single_object", "two_object", "counting", "colors", "position", "color_attr", "text"
    }  # fmt: skip
    assert all(c["total"] == 2 for c in report["categories"].values())
    assert report["overall"] == 1.0
    assert len(report["samples"]) == 14 and report["samples"][0]["correct"] is True
    held_out = [sample["held_out"] for sample in report["samples"]]
    assert 0 < sum(held_out) < 14  # eval scenes with and without held-out pairs or words
    assert report["held_out"] == {"correct": sum(held_out), "total": sum(held_out), "accuracy": 1.0}
    assert report["seen"]["total"] == 14 - sum(held_out)
    line = next(line for line in printed.splitlines() if line.startswith("held-out pairs/words per image"))
    assert line.split()[-3:] == [str(sum(held_out)), str(sum(held_out)), "1.000"]


def test_a_generate_folder_is_scored_against_the_prompt_file(tmp_path: Path) -> None:
    specs = tmp_path / "eval.jsonl"
    categories = "single_object,counting,position"
    assert (
        main(["bench", "compose", "--write-prompts", str(specs), "--n", "6", "--categories", categories]) == 0
    )
    pairs = read_prompts(specs)
    folder = tmp_path / "generated"  # laid out as 'xomni generate --out' does, with the true pictures
    folder.mkdir()
    names = []
    for index, (_, scene) in enumerate(pairs):
        names.append(f"image-{index:03d}.png")
        render_scene(scene).save(folder / names[-1])
    record = {"images": names, "settings": {"prompts": [prompt for prompt, _ in pairs]}}
    (folder / "generation.json").write_text(json.dumps(record))
    out = tmp_path / "report.json"
    args = [
        "bench",
        "compose",
        "--images",
        str(folder),
        "--specs",
        str(specs),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "images" and report["overall"] == 1.0
    assert [s["prompt"] for s in report["samples"]] == [prompt for prompt, _ in pairs]


def write_generation_folder(folder: Path, prompts: list[str], images: list[Image.Image]) -> None:
    """A folder laid out as 'xomni generate --out' writes it."""
    folder.mkdir()
    names = [f"image-{index:03d}.png" for index in range(len(images))]
    for name, image in zip(names, images, strict=True):
        image.save(folder / name)
    record = {"images": names, "settings": {"prompts": prompts, "height_px": 128, "width_px": 128}}
    (folder / "generation.json").write_text(json.dumps(record))


def test_a_generate_folder_without_a_prompt_file_is_scored_against_its_parsed_prompts(tmp_path: Path) -> None:
    prompts = ["two red circles left of a blue square", "three green triangles", "a small red square"]
    prompts += [s.caption for s in sample_scenes("eval", 4, seed=9, categories=["position", "color_attr"])]
    folder = tmp_path / "generated"
    write_generation_folder(folder, prompts, [render_scene(parse_caption(p, seed=1)) for p in prompts])
    out = tmp_path / "report.json"
    assert main(["bench", "compose", "--images", str(folder), "--out", str(out), "--no-progress"]) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "images" and "specs" not in report and report["overall"] == 1.0
    assert [s["prompt"] for s in report["samples"]] == prompts
    assert report["samples"][0]["category"] == "position"


def test_a_prompt_that_does_not_parse_is_reported_for_its_image_and_the_others_are_scored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "generated"
    prompts = ["three green triangles", "a cat on a sofa", "a red circle"]
    write_generation_folder(folder, prompts, [render_scene(parse_caption(prompts[0], seed=1))] * 3)
    out = tmp_path / "report.json"
    assert main(["bench", "compose", "--images", str(folder), "--out", str(out), "--no-progress"]) == 0
    printed = capsys.readouterr().out
    assert "not scored: 1 image(s) whose prompt names no scene" in printed
    assert "image 1 'a cat on a sofa': cannot read the caption" in printed and "--specs" in printed
    report = json.loads(out.read_text())
    assert [s["index"] for s in report["samples"]] == [0, 2]
    assert [s["correct"] for s in report["samples"]] == [True, False]
    assert [(u["index"], u["prompt"]) for u in report["unscored"]] == [(1, "a cat on a sofa")]


def test_a_prompt_missing_from_the_prompt_file_is_reported_for_its_image(tmp_path: Path) -> None:
    specs = tmp_path / "eval.jsonl"
    assert (
        main(["bench", "compose", "--write-prompts", str(specs), "--n", "1", "--categories", "counting"]) == 0
    )
    [(prompt, scene)] = read_prompts(specs)
    folder = tmp_path / "generated"
    write_generation_folder(folder, [prompt, "an unknown prompt"], [render_scene(scene)] * 2)
    out = tmp_path / "report.json"
    args = [
        "bench",
        "compose",
        "--images",
        str(folder),
        "--specs",
        str(specs),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["overall"] == 1.0 and len(report["samples"]) == 1
    assert report["unscored"] == [
        {"index": 1, "prompt": "an unknown prompt", "reason": "no scene in the prompt file"}
    ]


def test_a_folder_where_no_prompt_parses_exits_2_naming_the_first(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "generated"
    blank = Image.new("RGB", (128, 128), "white")
    write_generation_folder(folder, ["a cat on a sofa", "a dog"], [blank, blank])
    assert main(["bench", "compose", "--images", str(folder), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no prompt names a scene" in err and "'a cat on a sofa'" in err and "Traceback" not in err


def test_the_table_gives_overall_per_category_and_per_image(capsys: pytest.CaptureFixture[str]) -> None:
    from xomni_core.synthetic import BenchReport, SampleResult

    samples = (
        SampleResult(0, "counting", "two red circles", True, 1.0),
        SampleResult(1, "counting", "three red circles", True, 1.0),
        SampleResult(2, "counting", "four red circles", True, 1.0),
        SampleResult(3, "text", 'the word "CAT"', False, 0.0),
    )
    lines = BenchReport(samples).table().splitlines()
    per_category = next(line for line in lines if line.startswith("overall per category (mean)"))
    per_image = next(line for line in lines if line.startswith("overall per image"))
    assert per_category.split()[-1] == "0.500"  # (1.0 + 0.0) / 2 categories
    assert per_image.split()[-3:] == ["3", "4", "0.750"]  # 3 of 4 images
    assert not any(line.startswith("held-out") for line in lines)  # no held-out scene, no split

    samples = (*samples[:3], SampleResult(3, "text", 'the word "MOON"', False, 0.0, held_out=True))
    lines = BenchReport(samples).table().splitlines()
    held_out = next(line for line in lines if line.startswith("held-out pairs/words per image"))
    seen = next(line for line in lines if line.startswith("seen pairs/words per image"))
    assert held_out.split()[-3:] == ["0", "1", "0.000"] and seen.split()[-3:] == ["3", "3", "1.000"]


def test_a_config_generates_and_scores_its_own_images(tmp_path: Path) -> None:
    out = tmp_path / "tiny.json"
    args = ["bench", "compose", "--config", str(TINY), "--n", "2", "--categories", "single_object,colors",
            "--height", "64", "--width", "64", "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(args) == 0
    report = json.loads(out.read_text())
    assert report["mode"] == "config" and len(report["samples"]) == 2
    assert 0.0 <= report["overall"] <= 1.0  # random weights draw noise


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--ground-truth", "--split", "evl"], "Did you mean 'eval'"),
        (["--ground-truth", "--categories", "colours"], "unknown category"),
        (["--images", "/no/such/folder", "--specs", "x.jsonl"], "does not exist"),
        (["--images", "."], "has no generation.json"),
        ([], "choose the images"),
    ],
)
def test_bad_arguments_exit_2_with_one_paragraph(
    args: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "compose", "--no-progress", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("xomni: error:") and message in err and "Traceback" not in err


def test_grammar_lists_every_slot_and_each_template_example_parses_to_its_category(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["bench", "grammar", "--json"]) == 0
    vocab = json.loads(capsys.readouterr().out)
    assert vocab["SHAPE"] == ["circle", "square", "triangle"] and "gray" in vocab["BACKGROUND"]
    assert "MOON" in vocab["WORD"] and "MOON" in vocab["eval_only"]["words"]
    for category, template in vocab["templates"].items():
        assert parse_caption(template["example"]).category == category
    for color in vocab["COLOR"]:
        for shape in vocab["SHAPE"]:
            for size in vocab["SIZE"]:
                assert parse_caption(f"a {size} {color} {shape}").category == "single_object"
    for relation in vocab["RELATION"]:
        assert parse_caption(f"a red circle {relation} a blue square").relation is not None
    for region in vocab["REGION"]:
        assert parse_caption(f"a red circle {region}").objects[0].region is not None
    for count in ("two", "three", "four", "9"):
        assert parse_caption(f"{count} green squares").category == "counting"
    assert main(["bench", "grammar"]) == 0
    printed = capsys.readouterr().out
    assert "Templates:" in printed and "COLOR" in printed and 'the word "CAT"' in printed
