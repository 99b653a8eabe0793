"""GRPO training: it learns, resumes identically after a kill, and splits across processes."""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml
from support import REPO, run_torchrun_xomni, run_xomni

from xomni_core import (
    DecodeRequest,
    GridSize,
    ImageGenerationRequest,
    RewardBatch,
    TextToImagePipeline,
)
from xomni_core.config import load_config
from xomni_core.folders import load_tensors
from xomni_core.generation import guided_scores, image_prompt_ids
from xomni_core.pipelines.build import build_component, prepare
from xomni_core.scoring import score_all
from xomni_core.training.checkpoint import STATE_FILE, list_checkpoints, load_trainer_state
from xomni_core.training.distributed import Processes
from xomni_core.training.grpo import DRAW_STRIDE, _GRPOTrainer, stream_seed, train_grpo
from xomni_core.training.loop import TIMING_METRICS
from xomni_core.training.metrics import read_metrics
from xomni_core.training.settings import GRPOSettings

# Four prompts of one length: batches of any split then pad identically.
EQUAL_PROMPTS = ["a red apple", "a red piano", "a red chair", "a red plane"]


def _flat(record: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            flat.update(_flat(value, f"{prefix}{key}/"))
        elif key not in TIMING_METRICS:
            flat[prefix + key] = value
    return flat


def _assert_records_close(actual: list[dict[str, Any]], expected: list[dict[str, Any]], rel: float) -> None:
    assert [r["step"] for r in actual] == [r["step"] for r in expected]
    for got, want in zip(map(_flat, actual), map(_flat, expected), strict=True):
        assert got.keys() == want.keys()
        for key, value in want.items():
            assert got[key] == pytest.approx(value, rel=rel, abs=1e-7), (got["step"], key)


def test_grpo_raises_the_target_colour_reward_far_beyond_noise(colour_setup: Any, tmp_path: Path) -> None:
    config = load_config(data=colour_setup.config(steps=40, checkpoint_every=40, output_dir=str(tmp_path)))
    result = train_grpo(config, show_progress=False)
    rewards = [r["reward_mean"] for r in result.records]
    first, last = sum(rewards[:10]) / 10, sum(rewards[-10:]) / 10
    # Measured with seeds 0-3: without learning (learning_rate 1e-9) a step's mean reward varies
    # with a deviation of about 0.06 and last-10 minus first-10 came out between -0.04 and +0.03
    # (deviation 0.033); with training it rose by 0.34 to 0.50. 0.2 is six of those deviations.
    assert last - first > 0.2, rewards
    assert last > 0.7


def test_the_learning_rate_warms_up_linearly_then_holds(colour_setup: Any, tmp_path: Path) -> None:
    config = colour_setup.config(steps=5, checkpoint_every=5, output_dir=str(tmp_path), warmup_steps=4)
    records = train_grpo(load_config(data=config), show_progress=False).records
    peak = config["training"]["grpo"]["learning_rate"]
    assert [r["learning_rate"] for r in records] == pytest.approx([peak * f for f in (0.25, 0.5, 0.75, 1, 1)])


def test_cosine_decay_takes_the_learning_rate_to_zero_by_the_last_step(
    colour_setup: Any, tmp_path: Path
) -> None:
    config = colour_setup.config(
        steps=6, checkpoint_every=6, output_dir=str(tmp_path), warmup_steps=2, decay="cosine"
    )
    records = train_grpo(load_config(data=config), show_progress=False).records
    peak = config["training"]["grpo"]["learning_rate"]
    half_cosine = [0.5 * (1 + math.cos(math.pi * k / 4)) for k in range(5)]  # 1, 0.85, 0.5, 0.15, 0
    expected = [peak * 0.5, *(peak * f for f in half_cosine)]
    assert [r["learning_rate"] for r in records] == pytest.approx(expected, abs=1e-12)


#: ``training`` settings besides ``grpo`` under which a killed run must resume exactly.
RESUME_SETTINGS = {
    "full": {},
    "lora": {"lora": {"r": 4, "alpha": 8.0, "dropout": 0.1, "target_modules": ["*_proj", "mm_head"]}},
    "lora-accumulation-bf16": {
        "lora": {"r": 4, "alpha": 8.0, "target_modules": ["*_proj", "mm_head"]},
        "gradient_accumulation_steps": 2,
        "mixed_precision": "bf16",
        "gradient_checkpointing": True,
    },
}


@pytest.mark.parametrize("training", list(RESUME_SETTINGS.values()), ids=list(RESUME_SETTINGS))
def test_a_killed_run_resumes_exactly_where_its_last_checkpoint_left_off(
    colour_setup: Any, tmp_path: Path, training: dict[str, Any]
) -> None:
    steps, every = 10, 3

    def config_data(output: Path) -> dict[str, Any]:
        # The warm-up outlasts the first checkpoint, so the resumed steps pick it up midway.
        data = colour_setup.config(
            steps=steps, checkpoint_every=every, output_dir=str(output), warmup_steps=5
        )
        data["training"].update(training)
        return data

    expected = train_grpo(load_config(data=config_data(tmp_path / "a")), show_progress=False).records

    output = tmp_path / "b"
    config = tmp_path / "b.yaml"
    config.write_text(yaml.safe_dump(config_data(output)))
    child = subprocess.Popen(
        [sys.executable, "-m", "xomni_core.cli", "train", "grpo", str(config), "--no-progress"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while len(read_metrics(output / "metrics.jsonl")) < every + 2 and child.poll() is None:
        assert time.monotonic() < deadline, "the training child made no progress"
        time.sleep(0.01)
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    stopped_at = len(read_metrics(output / "metrics.jsonl"))
    assert child.returncode == -signal.SIGKILL, child.stderr.read() if child.stderr else ""
    assert every < stopped_at < steps
    resumed_from = list_checkpoints(output)[-1][0]
    assert resumed_from in (every, 2 * every)

    done = run_xomni("train", "grpo", str(config), "--resume", "--no-progress")
    assert done.returncode == 0, done.stderr
    assert f"trained to step {steps}" in done.stdout
    # Steps the killed run logged after its checkpoint were dropped and run again.
    _assert_records_close(read_metrics(output / "metrics.jsonl"), expected, rel=1e-9)


def test_two_processes_take_the_step_that_one_process_takes_on_their_prompts(
    colour_setup: Any, tmp_path: Path
) -> None:
    single = train_grpo(
        load_config(
            data=colour_setup.config(
                steps=2, prompts=EQUAL_PROMPTS, prompts_per_step=4, output_dir=str(tmp_path / "one")
            )
        ),
        show_progress=False,
    )
    config = colour_setup.write(
        tmp_path / "two.yaml",
        steps=2,
        prompts=EQUAL_PROMPTS,
        prompts_per_step=2,
        output_dir=str(tmp_path / "two"),
    )
    done = run_torchrun_xomni("train", "grpo", str(config), "--no-progress")
    assert done.returncode == 0, f"stdout:\n{done.stdout}\nstderr:\n{done.stderr}"
    assert done.stdout.count("trained to step 2") == 1  # only rank 0 reports

    two = read_metrics(tmp_path / "two" / "metrics.jsonl")
    assert single.records[0]["samples"] == two[0]["samples"] == 32
    assert single.records[0]["advantage_abs_max"] > 0.5  # a step that moves the weights
    _assert_records_close(two, single.records, rel=1e-5)
    # One process accumulating two micro-batches of the two processes' size takes their step.
    accumulated = colour_setup.config(
        steps=2, prompts=EQUAL_PROMPTS, prompts_per_step=2, output_dir=str(tmp_path / "accumulated")
    )
    accumulated["training"]["gradient_accumulation_steps"] = 2
    accumulating = train_grpo(load_config(data=accumulated), show_progress=False)
    _assert_records_close(accumulating.records[:1], two[:1], rel=1e-5)
    # The weights moved alike. Adam divides each gradient by its own size, so where a gradient is
    # nearly zero the rounding differences between one batch of 32 and two of 16 become a visible
    # part of a step: compare the difference with the whole update, not element by element.
    start = _built_backbone_weights(config)
    one = load_tensors(tmp_path / "one" / "checkpoints" / "step-00000002" / "backbone" / "model.safetensors")
    two = load_tensors(tmp_path / "two" / "checkpoints" / "step-00000002" / "backbone" / "model.safetensors")
    for name, weight in one.items():
        update = float((weight - start[name]).norm())
        assert float((two[name] - weight).norm()) <= 1e-2 * update + 1e-7, name
    difference = sum(float((two[n] - w).norm()) ** 2 for n, w in one.items()) ** 0.5
    update = sum(float((w - start[n]).norm()) ** 2 for n, w in one.items()) ** 0.5
    assert difference < 1e-3 * update


def _built_backbone_weights(config: Path) -> dict[str, torch.Tensor]:
    resolved, registry = prepare(load_config(config))
    backbone: Any = build_component(resolved.component("backbone"), resolved.config, registry)
    return {k: v.detach().clone() for k, v in backbone.trainable_module().state_dict().items()}


def test_training_writes_metrics_a_reward_plot_and_loadable_checkpoints(tmp_path: Path) -> None:
    example = REPO / "examples" / "configs" / "tiny-grpo.yaml"
    settings = ["--set", "training.grpo.steps=3", "--set", "training.grpo.checkpoint_every=2"]
    settings += ["--set", f"training.grpo.output_dir={tmp_path}"]
    done = run_xomni("train", "grpo", str(example), *settings, "--no-progress")
    assert done.returncode == 0, done.stderr

    records = read_metrics(tmp_path / "metrics.jsonl")
    assert [r["step"] for r in records] == [1, 2, 3]
    for key in ("reward_mean", "reward_std", "advantage_mean", "advantage_std", "kl", "clip_fraction"):
        assert isinstance(records[-1][key], float)
    for key in ("loss", "tokens_per_s", "wall_time_s", "step_time_s"):
        assert isinstance(records[-1][key], float)
    assert set(records[-1]["rewards"]) == {"rewards.0:target-color"}
    plot = (tmp_path / "rewards.png").read_bytes()
    assert plot.startswith(b"\x89PNG\r\n\x1a\n") and len(plot) > 1000

    assert [step for step, _ in list_checkpoints(tmp_path)] == [2, 3]
    latest = list_checkpoints(tmp_path)[-1][1]
    state = load_trainer_state(latest)  # torch.load(weights_only=True)
    assert (state.step, state.data_position, state.world_size) == (3, 6, 1)
    assert (latest / STATE_FILE).is_file()
    check = run_xomni("config", "validate", str(example), "--set", f"backbone.weights={latest / 'backbone'}")
    assert check.returncode == 0, check.stderr

    again = run_xomni("train", "grpo", str(example), *settings, "--no-progress")
    assert again.returncode == 2
    assert "--resume" in again.stderr


@pytest.mark.parametrize(
    ("override", "path"),
    [
        ("training.grpo.group_size=1", "training.grpo.group_size"),
        ("training.grpo.learning_rate=-0.001", "training.grpo.learning_rate"),
        ("training.grpo.sampling.temperature=0", "training.grpo.sampling"),
        ("training.grpo.noise_scale=-1", "training.grpo.noise_scale"),
    ],
)
def test_a_bad_training_setting_fails_validation_naming_its_path(override: str, path: str) -> None:
    example = REPO / "examples" / "configs" / "tiny-grpo.yaml"
    done = run_xomni("config", "validate", str(example), "--set", override)
    assert done.returncode == 2
    assert path in done.stderr


def test_prompts_file_metadata_reaches_the_rewards(tmp_path: Path) -> None:
    example = yaml.safe_load((REPO / "examples" / "configs" / "tiny-grpo.yaml").read_text())
    grpo = example["training"]["grpo"]
    grpo.update(steps=1, prompts=[], prompts_per_step=1)
    (tmp_path / "plain.txt").write_text("a red apple\n\n")
    (tmp_path / "white.jsonl").write_text(
        '{"prompt": "a red apple", "metadata": {"target_color": "#ffffff"}}\n'
    )
    rewards = {}
    for name in ("plain.txt", "white.jsonl"):
        grpo.update(prompts_file=name, output_dir=str(tmp_path / f"out-{name}"))
        config = tmp_path / f"{name}.yaml"  # prompts_file is relative to the config file
        config.write_text(yaml.safe_dump(example))
        rewards[name] = train_grpo(config, show_progress=False).records[0]["rewards"][
            "rewards.0:target-color"
        ]
    # The same images, scored against the params' dark red and against the file's white.
    assert rewards["plain.txt"]["mean"] != pytest.approx(rewards["white.jsonl"]["mean"], abs=0.05)


@pytest.mark.parametrize("cfg_scale", [1.0, 2.0])
def test_micro_batches_change_memory_not_the_step(
    colour_setup: Any, tmp_path: Path, cfg_scale: float
) -> None:
    runs = {}
    for micro in (None, 4):
        data = colour_setup.config(
            steps=2,
            updates_per_rollout=2,
            micro_batch_size=micro,
            sampling={"temperature": 1.0, "cfg_scale": cfg_scale},
            output_dir=str(tmp_path / str(micro)),
        )
        runs[micro] = train_grpo(load_config(data=data), show_progress=False).records
    # Micro-batches change the shapes, hence the summation order, of float32 reductions: the
    # guided KL moves by about 1e-5 relative on some CPUs' kernels. A wrong split weighs whole
    # micro-batches wrongly, far beyond 1e-4.
    _assert_records_close(runs[4], runs[None], rel=1e-4)
    assert runs[None][1]["clip_fraction"] > 0.0  # the second update on a rollout is clipped


def test_decoder_draws_credit_each_sample_with_its_mean_reward_over_renderings(
    colour_setup: Any, tmp_path: Path
) -> None:
    data = colour_setup.config(steps=1, prompts_per_step=1, decoder_draws=2, output_dir=str(tmp_path / "two"))
    config = load_config(data=data)
    drawn_twice = train_grpo(config, show_progress=False).records[0]["reward_mean"]
    once = colour_setup.config(steps=1, prompts_per_step=1, output_dir=str(tmp_path / "one"))
    drawn_once = train_grpo(load_config(data=once), show_progress=False).records[0]["reward_mean"]

    # The same step by hand: the step's tokens, each drawn with the group's noise of draw 0 and 1.
    pipeline = TextToImagePipeline.from_config(config)
    settings = GRPOSettings.model_validate(data["training"]["grpo"])
    (prompt,) = settings.prompts
    group = settings.group_size
    tokens = pipeline.backbone.generate_image_tokens(
        ImageGenerationRequest(
            prompts=(prompt,) * group,
            grid=GridSize(2, 2),
            sampling=settings.sampling,
            seed=stream_seed(0, 0, 0),
        )
    )
    latents = pipeline.tokenizer.decode(tokens)
    means = []
    for draw in range(2):
        images = pipeline.decoder.decode(
            DecodeRequest(
                latents=latents,
                prompts=(prompt,) * group,
                num_inference_steps=1,
                seed=stream_seed(0, 1, draw * DRAW_STRIDE),
                shared_noise=True,
            )
        )
        scored = score_all(pipeline.rewards, RewardBatch(images, [prompt] * group, [{}] * group))
        means.append(sum(scored.total) / group)
    assert drawn_once == pytest.approx(means[0], abs=1e-9)
    assert drawn_twice == pytest.approx((means[0] + means[1]) / 2, abs=1e-9)
    assert means[1] != pytest.approx(means[0], abs=1e-6)


def test_decoder_noise_scale_zero_makes_each_reward_a_function_of_the_tokens_alone(
    colour_setup: Any, tmp_path: Path
) -> None:
    def first_reward(**settings: Any) -> float:
        folder = tmp_path / "-".join(f"{k}={v}" for k, v in settings.items())
        data = colour_setup.config(steps=1, prompts_per_step=1, output_dir=str(folder), **settings)
        return float(train_grpo(load_config(data=data), show_progress=False).records[0]["reward_mean"])

    quiet_once = first_reward(noise_scale=0.0)
    quiet_twice = first_reward(noise_scale=0.0, decoder_draws=2)
    noisy_once = first_reward()
    assert quiet_twice == pytest.approx(quiet_once, abs=1e-9)  # both draws render the same images
    assert noisy_once != pytest.approx(quiet_once, abs=1e-6)


def test_guided_rollouts_are_scored_under_the_guided_distribution_they_sample(colour_setup: Any) -> None:
    scale, temperature = 2.5, 0.7
    config = load_config(
        data=colour_setup.config(
            prompts=["a red apple", "a blue whale on a red piano"],
            prompts_per_step=2,
            group_size=2,
            sampling={"temperature": temperature, "cfg_scale": scale},
        )
    )
    assert config.training is not None and config.training.grpo is not None
    trainer = _GRPOTrainer(config, config.training.grpo, Processes(0, 1, "cpu", False), registry=None)
    items = [trainer.prompts[0], trainer.prompts[1]]
    count = trainer.grid.num_tokens
    tokens = torch.randint(0, 256, (4, count), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        batched = trainer._log_probs(trainer.policy, trainer._sequences(items, tokens))

        # Each sample alone, unpadded: its prompt row and its image-prefix-only row.
        policy, vocab = trainer.policy, trainer.policy.vocab
        image = slice(vocab.image_token_offset, vocab.image_token_offset + vocab.image_vocab_size)
        expected, unguided = [], []
        for row, sample in enumerate(tokens):
            prompt = items[row // 2].prompt
            scores = []
            for text in (prompt, ""):
                prefix = image_prompt_ids(policy, text, trainer.grid)
                ids = torch.tensor([prefix + (sample + vocab.image_token_offset).tolist()])
                positions = torch.arange(ids.shape[1])[None]
                logits = policy.sequence_logits(
                    ids, torch.ones_like(ids), positions, "image", logits_to_keep=count + 1
                )
                scores.append(logits[0, :-1, image])
            guided = guided_scores(torch.cat(scores), count, scale) / temperature
            expected.append(torch.log_softmax(guided, -1).gather(-1, sample[:, None]).squeeze(-1))
            plain = torch.log_softmax(scores[0] / temperature, -1)
            unguided.append(plain.gather(-1, sample[:, None]).squeeze(-1))
    torch.testing.assert_close(batched, torch.stack(expected), atol=1e-5, rtol=1e-5)
    assert not torch.allclose(batched, torch.stack(unguided), atol=1e-3)  # guidance changes the scores
