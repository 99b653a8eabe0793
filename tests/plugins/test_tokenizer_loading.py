"""Backbone folders with X-Omni's real id space (151,936 text + 16,448 multimodal ids) load their
text tokenizer in seconds and keep every id; folders whose tokenizer lists every extra token as
special (official releases, older xomni folders) still load with the same ids."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from tokenizer_layouts import listed_special_tokenizer
from transformers import AutoTokenizer, PreTrainedTokenizerBase

from xomni_core.models import shipped_model_dir
from xomni_core.text_tokenizers import save_text_tokenizer, unlist_special_tokens
from xomni_plugins.backbones.x_omni import XOmniParams
from xomni_plugins.backbones.x_omni.model import XOmniBackbone, build_tokenizer

#: The real id space with a 8-wide network: about 11 MB of weights.
REAL_IDS = XOmniParams(
    vocab_size=151936,
    image_vocab_size=16384,
    mm_vocab_size=16448,
    hidden_size=8,
    intermediate_size=8,
    num_hidden_layers=2,
    num_attention_heads=2,
    num_key_value_heads=1,
    num_mm_adap_layers=1,
    num_mm_head_layers=1,
)
SMALL = REAL_IDS.model_copy(update={"vocab_size": 320, "image_vocab_size": 512, "mm_vocab_size": 520})
SAMPLES = (
    "a cat",
    "<SOM>16 16<IMAGE><MM-Token-5><MM-Token-0><MM-Token-511><EOM>",
    "<|im_start|>user\nzwei Würfel, 漢字 🙂<|im_end|>\n<|im_start|>assistant\n",
    " <|endoftext|>\ttabs  and  spaces <SOM>",
)
#: Loading the listed layout at the real id space takes minutes; this layout takes seconds.
LOAD_SECONDS_BOUND = 30.0


@pytest.fixture(scope="module")
def real_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("real-ids") / "backbone"
    XOmniBackbone.from_params(REAL_IDS, seed=0).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def timed_load(real_folder: Path) -> tuple[XOmniBackbone, float]:
    start = time.perf_counter()
    backbone = XOmniBackbone.from_pretrained(real_folder)
    return backbone, time.perf_counter() - start


@pytest.fixture(scope="module")
def loaded(timed_load: tuple[XOmniBackbone, float]) -> XOmniBackbone:
    return timed_load[0]


@pytest.fixture(scope="module")
def listed() -> PreTrainedTokenizerBase:
    """The listed layout of the real id space, in memory (building it is quick, loading is not)."""
    return listed_special_tokenizer(REAL_IDS)


def image_names(params: XOmniParams) -> list[str]:
    return [params.image_token(k) for k in range(params.image_vocab_size)]


def test_real_id_space_folder_lists_one_extra_special_token_and_loads_in_seconds(
    real_folder: Path, timed_load: tuple[XOmniBackbone, float]
) -> None:
    config = json.loads((real_folder / "tokenizer_config.json").read_text())
    assert config["extra_special_tokens"] == ["<|im_start|>"]
    assert timed_load[1] < LOAD_SECONDS_BOUND


def test_every_image_token_sits_at_vocab_size_plus_its_index(loaded: XOmniBackbone) -> None:
    names = image_names(REAL_IDS)
    ids = list(range(REAL_IDS.vocab_size, REAL_IDS.vocab_size + REAL_IDS.image_vocab_size))
    tokenizer = loaded.tokenizer
    assert tokenizer.convert_tokens_to_ids(names) == ids
    assert tokenizer.convert_ids_to_tokens(ids) == names
    assert tokenizer(names, add_special_tokens=False)["input_ids"] == [[i] for i in ids]


def test_special_tokens_and_placeholders_keep_their_ids(
    loaded: XOmniBackbone, listed: PreTrainedTokenizerBase
) -> None:
    last = REAL_IDS.vocab_size - 260
    tokens = ["<|im_end|>", "<|endoftext|>", "<|im_start|>", "<|reserved_0|>", f"<|reserved_{last}|>"]
    tokens += list(REAL_IDS.mm_special_tokens)
    assert loaded.tokenizer.convert_tokens_to_ids(tokens) == listed.convert_tokens_to_ids(tokens)
    assert loaded.tokenizer.convert_tokens_to_ids(tokens[:5]) == [256, 257, 258, 259, REAL_IDS.vocab_size - 1]
    vocab, first_marker = loaded.vocab, REAL_IDS.vocab_size + REAL_IDS.image_vocab_size
    assert (vocab.eos_id, vocab.pad_id) == (256, 257)
    assert (vocab.som_id, vocab.eom_id, vocab.image_id) == (first_marker, first_marker + 1, first_marker + 2)
    assert len(loaded.tokenizer) == len(listed) == first_marker + 3


def test_text_encodes_and_decodes_as_with_listed_special_tokens(
    loaded: XOmniBackbone, listed: PreTrainedTokenizerBase
) -> None:
    for text in SAMPLES:
        ids = loaded.tokenize(text)
        assert ids == listed.encode(text, add_special_tokens=False)
        text_ids = [i for i in ids if i < REAL_IDS.vocab_size]
        assert loaded.detokenize(ids) == listed.decode(text_ids, skip_special_tokens=True)


def test_detokenize_drops_placeholders_multimodal_and_special_tokens(loaded: XOmniBackbone) -> None:
    vocab = loaded.vocab
    ids = [*loaded.tokenize("a"), 259, REAL_IDS.vocab_size - 1, vocab.image_token_id(5), vocab.som_id]
    ids += [vocab.eos_id, *loaded.tokenize("<|im_start|> b")]
    assert loaded.detokenize(ids) == "a b"


def test_placeholders_are_not_produced_from_text(loaded: XOmniBackbone) -> None:
    assert loaded.tokenize("<|reserved_7|>") == list(b"<|reserved_7|>")


def test_tokenizer_built_in_memory_matches_the_loaded_one(loaded: XOmniBackbone) -> None:
    built = build_tokenizer(REAL_IDS)
    assert built.get_vocab() == loaded.tokenizer.get_vocab()
    for text in SAMPLES:
        assert built.encode(text, add_special_tokens=False) == loaded.tokenize(text)


def test_exported_tokenizer_files_keep_the_layout(loaded: XOmniBackbone, tmp_path: Path) -> None:
    loaded.write_export_assets(tmp_path)
    config = json.loads((tmp_path / "tokenizer_config.json").read_text())
    assert config["extra_special_tokens"] == ["<|im_start|>"]
    exported = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert exported.get_vocab() == loaded.tokenizer.get_vocab()


def test_folder_with_listed_special_tokens_loads_with_the_same_ids(tmp_path: Path) -> None:
    current = XOmniBackbone.from_params(SMALL, seed=0)
    folder = tmp_path / "backbone"
    current.save_pretrained(folder)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        (folder / name).unlink()
    save_text_tokenizer(listed_special_tokenizer(SMALL), folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    assert len(config["extra_special_tokens"]) == 1 + (SMALL.vocab_size - 259) + SMALL.image_vocab_size + 3

    old = XOmniBackbone.from_pretrained(folder)
    assert old.vocab == current.vocab
    for text in SAMPLES:
        ids = current.tokenize(text)
        assert old.tokenize(text) == ids
        assert old.detokenize(ids) == current.detokenize(ids)


def test_shipped_nano_backbone_keeps_the_ids_of_a_freshly_built_tokenizer() -> None:
    shipped = XOmniBackbone.from_pretrained(shipped_model_dir() / "backbone")
    fresh = XOmniBackbone(shipped.params, shipped.net, build_tokenizer(shipped.params))
    assert fresh.vocab == shipped.vocab
    for text in SAMPLES:
        assert fresh.tokenize(text) == shipped.tokenize(text)
        assert fresh.detokenize(fresh.tokenize(text)) == shipped.detokenize(shipped.tokenize(text))


def test_unlisting_image_tokens_keeps_ids_and_the_other_special_tokens(tmp_path: Path) -> None:
    listed_special_tokenizer(SMALL).save_pretrained(str(tmp_path))
    names = image_names(SMALL)
    assert unlist_special_tokens(tmp_path, names) == len(names)
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    kept = tokenizer.extra_special_tokens
    assert "<|im_start|>" in kept and "<SOM>" in kept and not set(names) & set(kept)
    listed = listed_special_tokenizer(SMALL)
    assert tokenizer.get_vocab() == listed.get_vocab()
    for text in SAMPLES:
        ids = listed.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text, add_special_tokens=False) == ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == listed.decode(ids, skip_special_tokens=True)


def write_transformers_4_layout(folder: Path) -> None:
    """Rewrite a saved tokenizer's config as transformers 4 wrote it: ``additional_special_tokens``,
    an ``added_tokens_decoder`` of every added token, and ``special_tokens_map.json``."""
    config = json.loads((folder / "tokenizer_config.json").read_text())
    listed = config.pop("extra_special_tokens")
    added = json.loads((folder / "tokenizer.json").read_text())["added_tokens"]
    config["additional_special_tokens"] = listed
    config["added_tokens_decoder"] = {str(entry.pop("id")): entry for entry in added}
    (folder / "tokenizer_config.json").write_text(json.dumps(config))
    special_map = {"eos_token": config["eos_token"], "pad_token": config["pad_token"]}
    (folder / "special_tokens_map.json").write_text(
        json.dumps(special_map | {"additional_special_tokens": listed})
    )


def test_unlisting_handles_the_transformers_4_layout(tmp_path: Path) -> None:
    listed = listed_special_tokenizer(SMALL)
    listed.save_pretrained(str(tmp_path))
    write_transformers_4_layout(tmp_path)
    names = image_names(SMALL)
    assert unlist_special_tokens(tmp_path, names) == len(names)
    for file in ("tokenizer_config.json", "special_tokens_map.json"):
        assert not set(names) & set(json.loads((tmp_path / file).read_text())["additional_special_tokens"])
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path), local_files_only=True)
    assert not set(names) & set(tokenizer.extra_special_tokens)
    assert tokenizer.get_vocab() == listed.get_vocab()
    for text in SAMPLES:
        ids = listed.encode(text, add_special_tokens=False)
        assert tokenizer.encode(text, add_special_tokens=False) == ids
        assert tokenizer.decode(ids, skip_special_tokens=True) == listed.decode(ids, skip_special_tokens=True)


def test_unlisting_leaves_tokens_that_tokenizer_json_does_not_hold(tmp_path: Path) -> None:
    listed_special_tokenizer(SMALL).save_pretrained(str(tmp_path))
    before = (tmp_path / "tokenizer_config.json").read_text()
    assert unlist_special_tokens(tmp_path, ["<MM-Token-100000>", "not a token"]) == 0
    assert (tmp_path / "tokenizer_config.json").read_text() == before
