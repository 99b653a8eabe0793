"""Evaluation draws sample images (SFT) and measures held-out rewards (GRPO) without changing
what training computes, and draws the same images after a resume."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from support import REPO, run_torchrun_xomni

from xomni_core.cli import main
from xomni_core.config import load_config
from xomni_core.training.grpo import train_grpo
from xomni_core.training.loop import TIMING_METRICS
from xomni_core.training.metrics import read_metrics
from xomni_core.training.sft import train_sft

SFT_EXAMPLE = REPO / "examples" / "configs" / "tiny-sft.yaml"
GRPO_EXAMPLE = REPO / "examples" / "configs" / "tiny-grpo.yaml"
EVAL_KEYS = ("eval_loss", "eval_token_accuracy", "eval_reward", "eval_rewards")


def _sft(output: Path, *, steps: int, eval_samples: int | None) -> dict[str, Any]:
    """LoRA with adapter dropout: training draws from the global generator, so any draw made by
    evaluation would change the losses."""
    data = yaml.safe_load(SFT_EXAMPLE.read_text())
    data["decoder"]["params"]["num_inference_steps"] = 1
    data["training"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.3}
    data["training"]["report_to"] = ["tensorboard"]
    data["training"]["sft"].update(
        synthetic={"split": "train", "n": 4, "seed": 0},
        batch_size=2,
        steps=steps,
        learning_rate=3.0e-3,
        warmup_steps=0,
        checkpoint_every=2,
        output_dir=str(output),
    )
    if eval_samples is not None:
        data["training"]["sft"]["eval"] = {
            "synthetic": {"split": "eval", "n": 3, "seed": 0},
            "every": 2,
            "samples": eval_samples,
        }
    return data


def _training_metrics(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    dropped = (*TIMING_METRICS, *EVAL_KEYS)
    return [{k: v for k, v in r.items() if k not in dropped} for r in records]


def _board_images(folder: Path) -> list[tuple[str, int]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder), size_guidance={"images": 0})
    events.Reload()
    return sorted((tag, event.step) for tag in events.Tags()["images"] for event in events.Images(tag))


def test_sft_evaluation_saves_seeded_sample_images_without_changing_training(tmp_path: Path) -> None:
    plain = train_sft(load_config(data=_sft(tmp_path / "a", steps=4, eval_samples=None)), show_progress=False)
    sampled = train_sft(load_config(data=_sft(tmp_path / "b", steps=4, eval_samples=2)), show_progress=False)
    assert _training_metrics(sampled.records) == _training_metrics(plain.records)

    samples = tmp_path / "b" / "samples"
    assert sorted(p.name for p in samples.iterdir()) == ["step-00000002", "step-00000004"]
    for step in (2, 4):
        folder = samples / f"step-{step:08d}"
        assert sorted(p.name for p in folder.iterdir()) == ["00.png", "01.png", "captions.json"]
        record = json.loads((folder / "captions.json").read_text())
        assert [i["caption"] for i in record["images"]] == [e.caption for e in sampled.eval_examples[:2]]
    # The weights moved between the evaluations, the seeds did not: the tokens drawn changed.
    tokens = [
        [i["tokens"] for i in json.loads((samples / f"step-{s:08d}" / "captions.json").read_text())["images"]]
        for s in (2, 4)
    ]
    assert tokens[0] != tokens[1] and all(len(row) == 16 for row in tokens[0])
    assert _board_images(tmp_path / "b" / "tensorboard" / "samples") == [
        ("sample/00", 2),
        ("sample/00", 4),
        ("sample/01", 2),
        ("sample/01", 4),
    ]


def test_a_resumed_sft_run_draws_the_same_samples_at_the_same_step(tmp_path: Path) -> None:
    whole = tmp_path / "whole"
    train_sft(load_config(data=_sft(whole, steps=4, eval_samples=2)), show_progress=False)
    parts = tmp_path / "parts"
    train_sft(load_config(data=_sft(parts, steps=2, eval_samples=2)), show_progress=False)
    resumed = train_sft(
        load_config(data=_sft(parts, steps=4, eval_samples=2)), resume=True, show_progress=False
    )
    assert _training_metrics(resumed.records) == _training_metrics(read_metrics(whole / "metrics.jsonl"))
    for name in ("00.png", "01.png", "captions.json"):
        expected = (whole / "samples" / "step-00000004" / name).read_bytes()
        assert (parts / "samples" / "step-00000004" / name).read_bytes() == expected


def test_sample_images_without_a_decoder_are_refused_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _sft(tmp_path / "out", steps=2, eval_samples=1)
    del data["decoder"]
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(data))
    assert main(["train", "sft", str(config), "--no-progress"]) == 2
    assert "training.sft.eval.samples" in capsys.readouterr().err
    assert not (tmp_path / "out" / "checkpoints").exists()


def _grpo(output: Path, *, evaluate: bool) -> dict[str, Any]:
    data = yaml.safe_load(GRPO_EXAMPLE.read_text())
    data["training"]["lora"] = {"r": 4, "alpha": 8, "dropout": 0.3}
    data["training"]["grpo"].update(steps=3, group_size=2, prompts_per_step=1, checkpoint_every=3)
    data["training"]["grpo"]["output_dir"] = str(output)
    if evaluate:
        data["training"]["grpo"]["eval"] = {
            "prompts": [
                "a green field",
                {"prompt": "a blue sea", "metadata": {"target_color": [20, 40, 200]}},
            ],
            "every": 2,
            "samples": 1,
        }
    return data


def test_grpo_evaluation_reports_the_held_out_reward_without_changing_training(tmp_path: Path) -> None:
    plain = train_grpo(load_config(data=_grpo(tmp_path / "a", evaluate=False)), show_progress=False)
    evaluated = train_grpo(load_config(data=_grpo(tmp_path / "b", evaluate=True)), show_progress=False)
    assert _training_metrics(evaluated.records) == _training_metrics(plain.records)
    assert [r["step"] for r in evaluated.records if "eval_reward" in r] == [2, 3]
    last = evaluated.records[-1]
    (name,) = last["eval_rewards"]
    assert name.endswith("target-color")
    # One reward of weight 1 that is maximised: the total is its raw mean.
    assert last["eval_reward"] == pytest.approx(last["eval_rewards"][name])
    assert 0.0 <= last["eval_reward"] <= 1.0
    assert sorted(p.name for p in (tmp_path / "b" / "samples").iterdir()) == [
        "step-00000002",
        "step-00000003",
    ]
    record = json.loads((tmp_path / "b" / "samples" / "step-00000003" / "captions.json").read_text())
    assert [(i["file"], i["caption"], len(i["tokens"])) for i in record["images"]] == [
        ("00.png", "a green field", 4)
    ]

    again = train_grpo(load_config(data=_grpo(tmp_path / "c", evaluate=True)), show_progress=False)
    assert [r.get("eval_reward") for r in again.records] == [r.get("eval_reward") for r in evaluated.records]


def test_a_missing_grpo_eval_prompts_file_stops_the_run_before_training(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _grpo(tmp_path / "out", evaluate=False)
    data["training"]["grpo"]["eval"] = {"prompts_file": "held-out.txt"}
    config = tmp_path / "c.yaml"
    config.write_text(yaml.safe_dump(copy.deepcopy(data)))
    assert main(["train", "grpo", str(config), "--no-progress"]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "training.grpo.eval.prompts_file" in err and str(tmp_path / "held-out.txt") in err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_draws_inside_preserved_rng_leave_every_global_generator_where_it_was() -> None:
    import random

    import numpy as np
    import torch

    from xomni_core.training.samples import preserved_rng

    def seed_all() -> None:
        random.seed(1)
        np.random.seed(1)
        torch.manual_seed(1)

    seed_all()
    expected = (random.random(), np.random.rand(), torch.rand(1).item())
    seed_all()
    with preserved_rng("cpu"):
        random.random()
        np.random.rand(3)
        torch.rand(5)
        torch.manual_seed(7)
    assert (random.random(), np.random.rand(), torch.rand(1).item()) == expected


def test_two_processes_share_the_held_out_prompts_and_report_what_one_process_does(tmp_path: Path) -> None:
    def config(output: Path, processes: int) -> dict[str, Any]:
        data = _grpo(output, evaluate=True)
        del data["training"]["lora"]
        data["training"]["grpo"].update(steps=1, prompts_per_step=2 // processes)  # the same global batch
        # Three prompts over two processes: two on the first, one on the second, whose image
        # the main process gathers for samples: 2.
        data["training"]["grpo"]["eval"].update(
            prompts=["a green field", "a blue sea", "a red roof"], samples=2
        )
        return data

    single = train_grpo(load_config(data=config(tmp_path / "one", 1)), show_progress=False).records[-1]
    path = tmp_path / "two.yaml"
    path.write_text(yaml.safe_dump(config(tmp_path / "two", 2)))
    done = run_torchrun_xomni("train", "grpo", str(path), "--no-progress")
    assert done.returncode == 0, done.stderr
    double = read_metrics(tmp_path / "two" / "metrics.jsonl")[-1]
    assert double["eval_reward"] == pytest.approx(single["eval_reward"], rel=1e-6)
    record = json.loads((tmp_path / "two" / "samples" / "step-00000001" / "captions.json").read_text())
    assert [i["caption"] for i in record["images"]] == ["a green field", "a blue sea"]
