"""The OCR text reward: text units and matching rules, then real PP-OCRv4 readings of text
rendered with PIL (English in Pillow's bundled TrueType font, Chinese in Noto Sans CJK from the
``noto-cjk-sans-jp-regular`` wheel)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import noto_cjk_sans_jp_regular
import pytest
import rapidocr_onnxruntime
from PIL import Image, ImageDraw, ImageFont
from pydantic import ValidationError

from xomni_core import CheckpointError, RewardBatch
from xomni_plugins.rewards.ocr_text import (
    OcrTextParams,
    extract_quoted_text,
    match_text,
    requested_text,
    text_units,
)
from xomni_plugins.rewards.ocr_text.model import OcrTextReward

ENGLISH_FONT = ImageFont.load_default(size=40)
CHINESE_FONT = ImageFont.truetype(str(noto_cjk_sans_jp_regular.FONT_PATH), 48)


def render(text: str, font: ImageFont.FreeTypeFont, size: tuple[int, int] = (640, 256)) -> Image.Image:
    """Black text on white, one line per ``\\n``."""
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(text.split("\n")):
        draw.text((32, 32 + row * int(font.size * 1.5)), line, fill="black", font=font)
    return image


@pytest.fixture(scope="module")
def reward() -> OcrTextReward:
    return OcrTextReward.from_params(OcrTextParams(num_threads=2))


# --- text units and matching (no OCR) ---


def test_units_fold_case_width_and_punctuation_and_split_cjk_into_characters() -> None:
    assert text_units("Hello, WORLD! It's ＯＰＥＮ 24/7") == ["hello", "world", "its", "open", "24", "7"]
    assert text_units("春节快乐！Happy New Year") == ["春", "节", "快", "乐", "happy", "new", "year"]


def test_quoted_spans_of_every_quote_style_are_extracted_in_order() -> None:
    prompt = (
        "A sign \"OPEN\", a cup saying “hot tea”, a banner 「春节快乐」, 『福』 and a mug with 'BEST DAD'"
    )
    assert extract_quoted_text(prompt) == ["OPEN", "hot tea", "春节快乐", "福", "BEST DAD"]


def test_apostrophes_inside_words_do_not_open_quotes() -> None:
    assert extract_quoted_text("the dogs' bowl next to Joe's diner") == []
    assert extract_quoted_text("a neon sign reading 'Joe's Diner'") == ["Joe's Diner"]


def test_a_span_nested_in_another_is_not_counted_twice() -> None:
    assert extract_quoted_text("a poster: \"say 'cheese' now\"") == ["say 'cheese' now"]


def test_metadata_target_text_wins_over_quotes_in_the_prompt() -> None:
    assert requested_text('a sign saying "OPEN"', {"target_text": "CLOSED"}) == "CLOSED"
    assert requested_text('a sign saying "OPEN"', {"target_text": ["CLOSED", "SORRY"]}) == "CLOSED\nSORRY"
    assert requested_text('a sign saying "OPEN"', {"target_text": ""}) == "OPEN"
    assert requested_text("a quiet lake", {}) == ""


def test_matching_counts_words_as_a_multiset() -> None:
    match = match_text("no no no", "No. NO")
    assert (match.matched, match.requested, match.read) == (2, 3, 2)
    assert match.recall == pytest.approx(2 / 3) and match.precision == 1.0


def test_chinese_is_matched_character_by_character() -> None:
    match = match_text("欢迎光临", "欢迎光")
    assert match.recall == pytest.approx(0.75)


def test_words_read_without_the_space_between_them_still_match() -> None:
    assert match_text("HELLO WORLD", "HELLOWORLD").recall == 1.0
    assert match_text("HELLO WORLD", "HELLOWORLDS").recall == 0.0
    assert match_text("GOOD MORNING", "GOODNIGHT").recall == 0.0  # only whole concatenations count


def test_f1_penalises_text_that_was_not_asked_for() -> None:
    match = match_text("fresh bread", "fresh bread sold here today")
    assert match.recall == 1.0 and match.precision == pytest.approx(0.4)
    assert match.f1 == pytest.approx(2 * 0.4 / 1.4)


def test_the_letters_of_a_near_miss_earn_partial_credit() -> None:
    assert match_text("MOON", "VOON").characters == pytest.approx(0.75)  # 2 * 3 matches / 8 letters
    assert match_text("MOON", "moon").characters == 1.0
    assert match_text("MOON", "").characters == 0.0
    assert match_text("MOON", "VOON").recall == 0.0


# --- real OCR ---


def test_rendered_english_text_scores_high_and_other_text_low(reward: OcrTextReward) -> None:
    target = "FRESH BREAD\nBaked Daily"
    batch = RewardBatch(
        [render(target, ENGLISH_FONT), render("COLD MILK\nSold Out", ENGLISH_FONT)],
        ["a bakery sign", "a bakery sign"],
        [{"target_text": target}, {"target_text": target}],
    )
    right, wrong = reward.score(batch).scores
    assert right >= 0.9
    assert wrong <= 0.3


def test_rendered_chinese_text_scores_high_and_other_text_low(reward: OcrTextReward) -> None:
    prompt = "一张红色海报，上面写着“欢迎光临”和“春节快乐”"
    right, wrong = reward.score(
        RewardBatch(
            [render("欢迎光临\n春节快乐", CHINESE_FONT), render("深度学习\n模型训练", CHINESE_FONT)],
            [prompt, prompt],
        )
    ).scores
    assert right >= 0.9
    assert wrong <= 0.3


def test_partially_rendered_text_gets_partial_credit(reward: OcrTextReward) -> None:
    [score] = reward.score(
        RewardBatch([render("OPEN LATE", ENGLISH_FONT)], ['a shop front with the words "OPEN LATE TONIGHT"'])
    ).scores
    assert score == pytest.approx(2 / 3)


def test_the_characters_metric_scores_a_word_one_letter_off() -> None:
    reward = OcrTextReward.from_params(OcrTextParams(metric="characters", num_threads=2))
    batch = RewardBatch(
        [render("MOON", ENGLISH_FONT), render("MOOD", ENGLISH_FONT), render("", ENGLISH_FONT)],
        ["a sign"] * 3,
        [{"target_text": "MOON"}] * 3,
    )
    result = reward.score(batch)
    assert result.scores == pytest.approx((1.0, 0.75, 0.0))
    assert result.details["recall"] == (1.0, 0.0, 0.0)


def test_a_prompt_without_requested_text_gets_the_no_target_score(reward: OcrTextReward) -> None:
    batch = RewardBatch([render("ANYTHING", ENGLISH_FONT)], ["a quiet mountain lake at dawn"])
    result = reward.score(batch)
    assert result.scores == (1.0,)
    assert result.details["has_target"] == (0.0,)
    strict = OcrTextReward.from_params(OcrTextParams(no_target_score=0.0, num_threads=2))
    assert strict.score(batch).scores == (0.0,)


def test_the_f1_metric_lowers_the_score_for_extra_text() -> None:
    reward = OcrTextReward.from_params(OcrTextParams(metric="f1", num_threads=2))
    result = reward.score(
        RewardBatch([render("SALE\nEverything Must Go", ENGLISH_FONT)], ['a poster saying "SALE"'])
    )
    assert result.details["recall"] == (1.0,)
    assert result.scores[0] == pytest.approx(2 * 0.25 / 1.25)


def test_trl_style_call_reads_target_text_from_keyword_columns(reward: OcrTextReward) -> None:
    reward_function = reward.as_reward_function()
    scores = reward_function(
        prompts=["a sign", "a sign"],
        completions=[render("GOOD MORNING", ENGLISH_FONT), render("SEE YOU", ENGLISH_FONT)],
        target_text=["GOOD MORNING", "GOOD MORNING"],
    )
    assert reward_function.__name__ == "ocr-text"
    assert all(isinstance(s, float) for s in scores)
    assert scores[0] >= 0.9 and scores[1] <= 0.3


# --- folders and params ---


def test_save_and_load_keep_the_params(tmp_path: Path) -> None:
    params = OcrTextParams(metric="f1", min_confidence=0.7, no_target_score=0.0)
    OcrTextReward.from_params(params).save_pretrained(tmp_path / "ocr")
    assert OcrTextReward.from_pretrained(tmp_path / "ocr").params == params


def test_custom_model_files_are_copied_into_the_folder(tmp_path: Path) -> None:
    shipped = Path(rapidocr_onnxruntime.__file__).parent / "models"
    det = shutil.copyfile(next(shipped.glob("*det*.onnx")), tmp_path / "my_det.onnx")
    OcrTextReward.from_params(OcrTextParams(det_model=str(det))).save_pretrained(tmp_path / "ocr")
    det.unlink()
    record = json.loads((tmp_path / "ocr" / "xomni_component.json").read_text())
    assert record["params"]["det_model"] == "det.onnx"
    loaded = OcrTextReward.from_pretrained(tmp_path / "ocr")
    assert loaded.read_text(render("HELLO", ENGLISH_FONT)) == ["HELLO"]


def test_a_missing_model_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match=r"rec_model=.*nowhere\.onnx"):
        OcrTextReward.from_params(OcrTextParams(rec_model=str(tmp_path / "nowhere.onnx")))


def test_loading_a_missing_folder_names_it(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="absent"):
        OcrTextReward.from_pretrained(tmp_path / "absent")


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("metric", "bleu"),
        ("min_confidence", 1.5),
        ("no_target_score", -1.0),
        ("num_threads", -2),
        ("det_min_side_px", 16),
        ("det_model", ""),
        ("lang", "en"),
    ],
)
def test_invalid_params_are_refused_by_name(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        OcrTextParams.model_validate({field: value})
