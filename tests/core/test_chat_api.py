"""Chat: a context-fitted answer budget, the understanding flag, turns, sampling and streaming."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image
from support import REPO, run_xomni

from xomni_core import InputError
from xomni_core.config import load_config
from xomni_core.models import shipped_model_dir
from xomni_core.pipelines import ImageUnderstandingPipeline, TextStreamer

TINY = REPO / "examples" / "configs" / "tiny-random.yaml"
IMAGE = Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8))


class Collector:
    """A streamer as transformers defines them: the prompt's ids first, then each new id."""

    def __init__(self) -> None:
        self.puts: list[list[int]] = []
        self.ended = 0

    def put(self, value: Any) -> None:
        self.puts.append([int(i) for i in value.reshape(-1).tolist()])

    def end(self) -> None:
        self.ended += 1


@pytest.fixture(scope="module")
def chat() -> ImageUnderstandingPipeline:
    # A context too short for the prompt plus 256 new tokens, as the shipped nano's is.
    config = load_config(TINY, ["backbone.params.max_position_embeddings=100"])
    chat = ImageUnderstandingPipeline.from_config(config)
    chat.set_progress_bar_config(disable=True)
    return chat


def test_default_answer_budget_fits_the_context(chat: ImageUnderstandingPipeline) -> None:
    prompt = len(chat.prompt_ids(IMAGE, "What is shown?"))
    streamed = Collector()
    chat(IMAGE, "What is shown?", temperature=1.0, streamer=streamed)  # sampling rarely stops early
    assert prompt + len(streamed.puts) - 1 <= chat.backbone.vocab.max_positions


def test_an_explicit_budget_beyond_the_context_is_refused(chat: ImageUnderstandingPipeline) -> None:
    with pytest.raises(InputError, match="exceeds the backbone's context"):
        chat(IMAGE, "What is shown?", max_new_tokens=256)


def test_streamer_gets_the_prompt_then_each_new_id_then_end(chat: ImageUnderstandingPipeline) -> None:
    streamed = Collector()
    answer = chat(IMAGE, "What is shown?", max_new_tokens=6, temperature=1.0, seed=3, streamer=streamed)
    assert streamed.puts[0] == chat.prompt_ids(IMAGE, "What is shown?")
    assert all(len(ids) == 1 for ids in streamed.puts[1:])
    assert streamed.ended == 1
    assert chat.backbone.detokenize([i for ids in streamed.puts[1:] for i in ids]) == answer


def test_text_streamer_prints_the_answer(
    chat: ImageUnderstandingPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    answer = chat(IMAGE, "What is shown?", max_new_tokens=6, streamer=TextStreamer(chat.backbone))
    assert capsys.readouterr().out == answer + "\n"


def test_sampling_keywords_and_generation_config(chat: ImageUnderstandingPipeline) -> None:
    from transformers import GenerationConfig

    greedy = chat(IMAGE, "What is shown?", max_new_tokens=6)
    assert chat(IMAGE, "What is shown?", generation_config=GenerationConfig(max_new_tokens=6)) == greedy
    assert chat(IMAGE, "What is shown?", max_new_tokens=6, temperature=1.0, top_k=1) == greedy


def test_a_later_turn_follows_the_earlier_question_and_answer(chat: ImageUnderstandingPipeline) -> None:
    first = chat.prompt_ids(IMAGE, "What is shown?")
    later = chat.prompt_ids(IMAGE, "And its colour?", history=[("What is shown?", "a cat")])
    answer = chat.backbone.tokenize("a cat")
    assert later[: len(first) + len(answer) + 1] == [*first, *answer, chat.backbone.vocab.eos_id]
    assert later[len(first) + len(answer) + 1 :] == chat.backbone.tokenize(
        chat.backbone.chat_prompt("And its colour?")
    )


def test_the_shipped_nano_says_it_was_not_trained_to_answer() -> None:
    chat = ImageUnderstandingPipeline.from_pretrained(shipped_model_dir())
    assert chat.capabilities["understanding"] is False
    with pytest.raises(InputError, match="not trained for image understanding"):
        chat(IMAGE, "What is shown?")


def test_chat_command_refuses_the_nano_and_runs_turns_with_sampling_flags(tmp_path: Path) -> None:
    image = tmp_path / "picture.png"
    IMAGE.save(image)
    refused = run_xomni("chat", "What is shown?", "--image", str(image))
    assert refused.returncode == 2
    assert "not trained for image understanding" in " ".join(refused.stderr.split())
    answered = run_xomni(
        "chat", "What is shown?", "--image", str(image), "--config", str(TINY), "--then", "And then?",
        "--temperature", "0.7", "--top-k", "5", "--seed", "2", "--no-progress",
        "--max-new-tokens", "4",
    )  # fmt: skip
    assert answered.returncode == 0, answered.stderr
    assert "> And then?" in answered.stdout
    bad = run_xomni("chat", "?", "--image", str(image), "--config", str(TINY), "--top-p", "2")
    assert bad.returncode == 2 and "--top-p" in bad.stderr


def test_transformers_text_streamer_prints_the_answer(
    chat: ImageUnderstandingPipeline, capsys: pytest.CaptureFixture[str]
) -> None:
    from transformers import TextStreamer as TransformersTextStreamer

    streamer = TransformersTextStreamer(chat.backbone.tokenizer, skip_prompt=True, skip_special_tokens=True)
    answer = chat(IMAGE, "What is shown?", max_new_tokens=6, streamer=streamer)
    assert capsys.readouterr().out == answer + "\n"


def test_saved_understanding_pipeline_answers_the_same(
    chat: ImageUnderstandingPipeline, tmp_path: Path
) -> None:
    chat.save_pretrained(tmp_path / "saved")
    assert json.loads((tmp_path / "saved" / "model_index.json").read_text())["_class_name"] == (
        "ImageUnderstandingPipeline"
    )
    reloaded = ImageUnderstandingPipeline.from_pretrained(tmp_path / "saved")
    reloaded.set_progress_bar_config(disable=True)
    question = "What is shown?"
    assert reloaded(IMAGE, question, max_new_tokens=6) == chat(IMAGE, question, max_new_tokens=6)
