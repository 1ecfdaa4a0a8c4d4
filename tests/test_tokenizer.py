"""seq2seq_kit.Tokenizer against transformers.AutoTokenizer (the oracle) on both real tokenizer fixtures.

bart: facebook/bart vocab.json + merges.txt (+ tokenizer_config.json); the oracle gets a config.json with
model_type "bart" beside them, as real checkpoints have (without one, transformers cannot pick a class).
kobart: the notebook's KoBART tokenizer.json + tokenizer_config.json.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from transformers import AutoTokenizer

from seq2seq_kit import Tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
PROSE = ("During the 1905–06 English football season, New Brompton F.C. competed in the Southern League Division "
         "One. The team's form improved in the new year, with three wins in the first seven games of 1906, but they "
         "ended the season in 17th place out of 18 teams. Bill Marriott was the club's top goalscorer.")
CORPUS = [
    PROSE,
    "  two leading spaces", "trailing spaces   ", "multiple     spaces   inside", " ", "   ",
    "line one\nline two\n\nline four\n", "tabs\tand\t\ttabs", "windows\r\nnewline",
    "Café naïve résumé — Ångström, Zoë; São Paulo", "ﬁ ligature, full-width ＡＢＣ １２３, combining é",
    "北京是中国的首都。東京は日本の首都です。", "혼자 공부하는 머신러닝 딥러닝", "KoBART 모델을 사용한 문서 요약",
    "1896년 하계 올림픽은 고대 올림픽 대회 이후 열린 첫 근대 올림픽 대회로 아테네에서 개최되었다.",
    "Emoji: 😀🎉👍🏽 👨‍👩‍👧‍👦 ❤️ ㅠㅠ :-)",
    "Numbers 3.14159, 1,000,000 and -42; 50% off! (really?) [x] {y} <z> @#$%^&*_+=|\\/~`",
    "Don't you think it's 'quoted' , spaced . out ? I'm sure they've gone , we're here !",
    "Special <s> tokens </s> inside <mask> text", "<s>", "</s>", "<mask>", " <mask> ", "a<mask>b",
    "<pad> <unk> <s></s>", "Fill the <mask>.", "",
]
LONG = " ".join([PROSE] * 30)  # ~1700 BART tokens, over model_max_length (1024)
PAIRS = [("Who won?", PROSE), ("", "second only"), ("first only", " "), ("혼자 공부", "딥러닝 <mask> 요약")]


def _bart_dir(root: Path) -> Path:
    """The BART files with a config.json (model_type bart) beside them, as a real checkpoint has."""
    shutil.copytree(FIXTURES / "bart-tokenizer", root, dirs_exist_ok=True)
    (root / "config.json").write_text(json.dumps({"model_type": "bart"}))
    return root


@pytest.fixture(scope="module", params=["bart", "kobart"])
def both(request, tmp_path_factory):
    """(ours, oracle) loaded once per module from the same directory."""
    path = FIXTURES / "kobart-tokenizer" if request.param == "kobart" else _bart_dir(tmp_path_factory.mktemp("bart"))
    return Tokenizer.from_pretrained(path), AutoTokenizer.from_pretrained(str(path))


@pytest.fixture(scope="module")
def bart():
    return Tokenizer.from_pretrained(FIXTURES / "bart-tokenizer")


@pytest.fixture(scope="module")
def kobart():
    return Tokenizer.from_pretrained(FIXTURES / "kobart-tokenizer")


def _same(ours, theirs, *args, **kwargs):
    a, b = ours(*args, **kwargs), theirs(*args, **kwargs)
    assert set(a) == {"input_ids", "attention_mask"}
    for key in a:
        if kwargs.get("return_tensors"):
            assert type(a[key]) is type(b[key]) and a[key].dtype == b[key].dtype
            assert a[key].tolist() == b[key].tolist(), key
        else:
            assert a[key] == b[key], key
    return a


# ---- parity with transformers ----
pytestmark = pytest.mark.filterwarnings("ignore:`?max_length`? is ignored when `?padding`?=`?True")


def test_attributes(both):
    ours, theirs = both
    assert ours.vocab_size == theirs.vocab_size and len(ours) == len(theirs)
    assert ours.vocab == theirs.get_vocab()
    assert ours.model_max_length == theirs.model_max_length
    assert ours.padding_side == theirs.padding_side == "right"
    assert ours.clean_up_tokenization_spaces == theirs.clean_up_tokenization_spaces
    assert ours.get_vocab() == theirs.get_vocab()
    for name in ("bos", "eos", "unk", "pad", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(theirs, f"{name}_token")
        assert getattr(ours, f"{name}_token_id") == getattr(theirs, f"{name}_token_id")
    assert ours.all_special_ids == theirs.all_special_ids
    assert ours.backend_tokenizer.get_added_tokens_decoder() == theirs.backend_tokenizer.get_added_tokens_decoder()
    assert ours.convert_tokens_to_ids(["never-a-token", ours.eos_token]) == theirs.convert_tokens_to_ids(
        ["never-a-token", theirs.eos_token])


@pytest.mark.parametrize("text", CORPUS + [LONG])
def test_encode_matches(both, text):
    ours, theirs = both
    assert ours.tokenize(text) == theirs.tokenize(text)
    assert ours.encode(text) == theirs.encode(text)
    assert ours.encode(text, add_special_tokens=False) == theirs.encode(text, add_special_tokens=False)
    ids = _same(ours, theirs, text)["input_ids"]
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        ids, skip_special_tokens=True)
    for skip in (False, True):
        for clean in (None, False, True):
            assert ours.decode(ids, skip, clean) == theirs.decode(
                ids, skip_special_tokens=skip, clean_up_tokenization_spaces=clean)


def test_decode_arbitrary_ids(both):
    ours, theirs = both
    n = len(ours)
    runs = [list(range(0, 300)), list(range(n - 200, n)), [7, 8, 0, 0, 2, 1, 3, 5, 6, 107, 216], [n - 1], []]
    for ids in runs:
        for skip in (False, True):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(5) == theirs.convert_ids_to_tokens(5)
    assert ours.batch_decode(runs) == theirs.batch_decode(runs)


@pytest.mark.parametrize("return_tensors", [None, "pt", "np"])
@pytest.mark.parametrize("padding,max_length", [(True, None), ("longest", None), ("max_length", 40),
                                                 ("max_length", 80), (True, 12), ("longest", 7)])
def test_batch_padding_and_truncation(both, padding, max_length, return_tensors):
    ours, theirs = both
    texts = ["short", PROSE, "", "혼자 공부하는 머신러닝 딥러닝 <mask>", "  spaced\tout\n"]
    truncation = True if return_tensors else None  # PROSE is longer than every max_length here: cut to stack
    out = _same(ours, theirs, texts, padding=padding, max_length=max_length, truncation=truncation,
                return_tensors=return_tensors)
    if return_tensors:
        assert out["input_ids"].shape[0] == len(texts)


@pytest.mark.parametrize("padding,max_length,truncation", [(True, None, None), ("longest", 9, True),
                                                             ("max_length", 20, None), ("max_length", 24, True)])
@pytest.mark.parametrize("multiple", [1, 8, 7])
def test_pad_to_multiple_of(both, padding, max_length, truncation, multiple):
    """Padded rows rounded up to a multiple, sources and targets; nothing without padding; refused as transformers
    refuses it (truncating and padding to a max_length that is no multiple)."""
    ours, theirs = both
    texts = ["short", PROSE, "", "혼자 공부하는 머신러닝 딥러닝 <mask>"]
    kwargs = dict(padding=padding, max_length=max_length, truncation=truncation, pad_to_multiple_of=multiple)
    if truncation and max_length % multiple:
        for tok in both:
            with pytest.raises(ValueError, match="multiple"):
                tok(texts, **kwargs)
        return
    assert dict(ours(texts, **kwargs)) == dict(theirs(texts, **kwargs))
    assert dict(ours(texts, text_target=texts[::-1], **kwargs)) == dict(theirs(texts, text_target=texts[::-1],
                                                                             **kwargs))
    assert ours(texts, pad_to_multiple_of=multiple)["input_ids"] == theirs(texts, pad_to_multiple_of=multiple)[
        "input_ids"]
    with pytest.raises(ValueError, match="pad_to_multiple_of"):
        ours(texts, padding=True, pad_to_multiple_of=0)


@pytest.mark.parametrize("return_attention_mask", [None, True, False])
def test_return_attention_mask(both, return_attention_mask):
    ours, theirs = both
    texts = ["short", PROSE]
    for kwargs in (dict(), dict(padding=True, return_tensors="pt"), dict(text_target=texts[::-1])):
        mine = dict(ours(texts, return_attention_mask=return_attention_mask, **kwargs))
        expected = dict(theirs(texts, return_attention_mask=return_attention_mask, **kwargs))
        assert mine.keys() == expected.keys()
        assert {k: v.tolist() if hasattr(v, "tolist") else v for k, v in mine.items()} == \
            {k: v.tolist() if hasattr(v, "tolist") else v for k, v in expected.items()}
    with pytest.raises(ValueError, match="return_attention_mask must be True, False or None"):
        ours(texts, return_attention_mask="no")


@pytest.mark.parametrize("truncation", [True, "longest_first", "only_first", None, False])
@pytest.mark.parametrize("max_length", [None, 2, 3, 9, 1024])
def test_truncation(both, truncation, max_length):
    ours, theirs = both
    for text in (LONG, PROSE, "", "혼자 공부하는 머신러닝 딥러닝"):
        _same(ours, theirs, text, truncation=truncation, max_length=max_length)
        assert ours.encode(text, truncation=truncation, max_length=max_length) == theirs.encode(
            text, truncation=truncation, max_length=max_length)
    _same(ours, theirs, [LONG, PROSE], truncation=truncation, max_length=max_length, padding=True)


def test_long_text_defaults(both):
    """Over model_max_length: kept whole without truncation, cut to model_max_length with truncation=True."""
    ours, theirs = both
    full = _same(ours, theirs, LONG)["input_ids"]
    cut = _same(ours, theirs, LONG, truncation=True)["input_ids"]
    if ours.model_max_length == 1024:  # bart
        assert len(full) > 1024 and len(cut) == 1024 and cut[-1] == ours.eos_token_id
        _same(ours, theirs, ["a b", LONG], padding="max_length", truncation=True)  # pads/cuts to 1024
    else:  # kobart: no model_max_length, nothing to cut to
        assert cut == full


@pytest.mark.parametrize("truncation,max_length", [(None, None), (True, 30), ("longest_first", 12),
                                                    ("only_second", 20), ("only_first", 40)])
def test_pairs(both, truncation, max_length):
    ours, theirs = both
    for first, second in PAIRS:
        try:
            expected = theirs(first, second, truncation=truncation, max_length=max_length)
        except Exception:  # the backend cannot cut only one side that far: we must refuse too
            with pytest.raises(ValueError, match="max_length"):
                ours(first, second, truncation=truncation, max_length=max_length)
            continue
        assert ours(first, second, truncation=truncation, max_length=max_length) == dict(expected)
        assert ours.encode(first, second, truncation=truncation, max_length=max_length) == expected["input_ids"]
    firsts, seconds = zip(*PAIRS)
    _same(ours, theirs, list(firsts), list(seconds), padding=True, truncation="longest_first", max_length=25,
          return_tensors="pt")


def test_pair_format(bart, kobart):
    """RoBERTa/BART post-processing: <s> A </s></s> B </s>; KoBART's template: <s> A </s> B </s>."""
    a, b = bart.encode("a", add_special_tokens=False), bart.encode("b", add_special_tokens=False)
    assert bart.encode("a", "b") == [0, *a, 2, 2, *b, 2]
    assert bart.encode("a") == [0, *a, 2]
    a, b = kobart.encode("a", add_special_tokens=False), kobart.encode("b", add_special_tokens=False)
    assert kobart.encode("a", "b") == [0, *a, 1, *b, 1]


def test_mask_token_flags_from_config(tmp_path):
    """<mask> with lstrip, an AddedToken in tokenizer_config.json (as transformers saves it), and a left
    padding side: honoured like transformers does."""
    root = _bart_dir(tmp_path / "bart")
    mask = {"content": "<mask>", "lstrip": True, "normalized": False, "rstrip": False, "single_word": False,
            "special": True}
    config = {"model_max_length": 1024, "padding_side": "left", "added_tokens_decoder": {"50264": mask},
              "mask_token": {"__type": "AddedToken", **mask}}
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    texts = ["Hello <mask> world", "Fill  <mask>.", "<mask>", "a\n<mask> b"]
    out = _same(ours, theirs, texts, padding=True)
    assert ours.padding_side == "left" and out["attention_mask"][2][0] == 0
    assert ours.encode("Hello <mask> world") == [0, 31414, 50264, 232, 2]  # no "Ġ" (1437): lstrip ate the space


def test_special_tokens_map_json(tmp_path):
    """tokenizer.json + special_tokens_map.json (legacy form): the map's tokens and flags win, as in transformers."""
    root = tmp_path / "kobart"
    shutil.copytree(FIXTURES / "kobart-tokenizer", root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    (root / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
         "additional_special_tokens": ["<usr>", "<sys>"]}))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert ours.all_special_ids == theirs.all_special_ids == [0, 1, 5, 3, 6, 2, 4]
    assert ours.pad_token_id == theirs.pad_token_id == 3
    ids = ours.encode("<usr> 안녕 <sys> 반가워 <unused0>")
    assert ids == theirs.encode("<usr> 안녕 <sys> 반가워 <unused0>")
    assert ours.convert_ids_to_tokens(ids, skip_special_tokens=True) == theirs.convert_ids_to_tokens(
        ids, skip_special_tokens=True)


@pytest.mark.parametrize("config_key, map_key, both", [("extra_special_tokens", "extra_special_tokens", True),
                                                       ("additional_special_tokens", "additional_special_tokens", False),
                                                       ("extra_special_tokens", "additional_special_tokens", False),
                                                       ("additional_special_tokens", "extra_special_tokens", True)])
def test_extra_tokens_of_both_files_as_transformers_merges_them(tmp_path, config_key, map_key, both):
    """Legacy form: the map's extra_special_tokens are added to the config's; its additional_special_tokens are
    ignored where the config has extra tokens (transformers renames the config's additional ones first)."""
    root = tmp_path / "kobart"
    shutil.copytree(FIXTURES / "kobart-tokenizer", root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast",
                                                            config_key: ["<usr>"]}))
    (root / "special_tokens_map.json").write_text(json.dumps(
        {"bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>", "pad_token": "<pad>", "mask_token": "<mask>",
         map_key: ["<sys>"]}))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert ("<sys>" in ours.all_special_tokens) is both and "<usr>" in ours.all_special_tokens
    assert ours.encode("<usr> 안녕 <sys>") == theirs.encode("<usr> 안녕 <sys>")


def test_all_special_ids_follow_the_tokens_and_the_backend():
    """all_special_ids is kept between calls (a lookup of every special token per decode was slow): it still
    follows a token added to extra_special_tokens, and a token's id once the backend gains it (unk's id before)."""
    tok = Tokenizer.from_pretrained(FIXTURES / "kobart-tokenizer")
    before = tok.all_special_ids
    tok.extra_special_tokens.append("<unused0>")
    assert tok.all_special_ids == [*before, tok.convert_tokens_to_ids("<unused0>")] and "<unused0>" in tok.get_vocab()
    tok.extra_special_tokens.append("<new special>")
    assert tok.all_special_ids[-1] == tok.unk_token_id                         # not in the vocabulary yet
    tok.backend_tokenizer.add_special_tokens(["<new special>"])
    assert tok.all_special_ids[-1] == tok.convert_tokens_to_ids("<new special>") == len(tok.get_vocab()) - 1
    assert tok.decode(tok.encode("a <new special> b"), skip_special_tokens=True) == "a  b"


def test_a_maps_extra_tokens_named_in_a_dict_add_to_the_configs(tmp_path):
    root = tmp_path / "kobart"
    shutil.copytree(FIXTURES / "kobart-tokenizer", root)
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "extra_special_tokens": ["<usr>"]}))
    (root / "special_tokens_map.json").write_text(json.dumps({"extra_special_tokens": {"system_token": "<sys>"}}))
    ours = Tokenizer.from_pretrained(root)
    assert ours.extra_special_tokens == ["<usr>", "<sys>"]
    assert ours.convert_ids_to_tokens(ours.encode("<usr> 안녕 <sys>", add_special_tokens=False))[::3] == ["<usr>", "<sys>"]


@pytest.mark.parametrize("name, settings, words", [
    ("tokenizer_config.json", {"pad_token": 5}, "'pad_token' must be a token"),
    ("special_tokens_map.json", {"additional_special_tokens": "<usr>"}, "'additional_special_tokens' must be a list"),
    ("special_tokens_map.json", {"extra_special_tokens": [["<usr>"]]}, "'extra_special_tokens' must be a list")])
def test_token_settings_of_the_wrong_type_name_the_file(tmp_path, name, settings, words):
    """A number for a token failed deep in the tokenizer; a string for a list made every character a special token."""
    root = tmp_path / "kobart"
    shutil.copytree(FIXTURES / "kobart-tokenizer", root)
    (root / name).write_text(json.dumps(settings))
    with pytest.raises(ValueError, match=f"{name}: {words}"):
        Tokenizer.from_pretrained(root)


def test_clean_up_applies_to_non_bpe_models(tmp_path):
    """transformers 5.25 applies clean_up_tokenization_spaces only to non-BPE models: a tiny WordLevel one."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import models, pre_tokenizers

    words = ["[UNK]", "[PAD]", "hello", ",", "world", ".", "do", "n't", "it", "'s", "?"]
    backend = Backend(models.WordLevel({w: i for i, w in enumerate(words)}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    backend.save(str(tmp_path / "tokenizer.json"))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps(
        {"tokenizer_class": "PreTrainedTokenizerFast", "unk_token": "[UNK]", "pad_token": "[PAD]",
         "clean_up_tokenization_spaces": True}))
    ours, theirs = Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    ids = ours.encode("hello , world . do n't it 's ?")
    assert ids == theirs.encode("hello , world . do n't it 's ?")
    assert ours.decode(ids) == theirs.decode(ids) == "hello, world. don't it's?"
    assert ours.decode(ids, clean_up_tokenization_spaces=False) == "hello , world . do n't it 's ?"


@pytest.mark.parametrize("model_type", ["bart", None])
def test_clean_up_of_bpe_text_when_the_config_insists_as_transformers(tmp_path, model_type):
    """transformers 5.25 skips clean_up_tokenization_spaces for BPE models unless tokenizer_config.json also sets
    clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output; it survives save_pretrained."""
    root = _bart_dir(tmp_path / "bart")
    (root / "tokenizer_config.json").write_text(json.dumps(
        {"clean_up_tokenization_spaces": True, **({} if model_type else {"tokenizer_class": "BartTokenizer"}),
         "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output": True}))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    ids = theirs("hello , world . do n't it 's ?")["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True) == \
        "hello, world. don't it's?"
    ours.save_pretrained(tmp_path / "saved")
    assert Tokenizer.from_pretrained(tmp_path / "saved").decode(ids, skip_special_tokens=True) == \
        "hello, world. don't it's?"


def test_bart_tokenizer_json_reads_as_its_class_builds_it(tmp_path):
    """A BART checkpoint's tokenizer.json (config.json: model_type "bart", so transformers' RobertaTokenizer):
    that class keeps the file's vocabulary, merges and post-processor and builds its own byte-level pre-tokenizer
    (add_prefix_space from tokenizer_config.json) and decoder, without normalizer; a file holding others reads
    as the class builds it, here too."""
    from tokenizers import Tokenizer as Backend

    root = _bart_dir(tmp_path / "bart")
    AutoTokenizer.from_pretrained(str(root)).backend_tokenizer.save(str(root / "tokenizer.json"))
    (root / "vocab.json").unlink()
    (root / "merges.txt").unlink()
    saved = json.loads((root / "tokenizer.json").read_text())
    saved["normalizer"] = {"type": "Lowercase"}
    saved["pre_tokenizer"] = {**saved["pre_tokenizer"], "add_prefix_space": True}
    saved["model"] = {**saved["model"], "fuse_unk": True, "unk_token": "<unk>"}
    (root / "tokenizer.json").write_text(json.dumps(saved))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    for text in CORPUS[:12]:
        _same(ours, theirs, text)
        ids = theirs(text)["input_ids"]
        assert ours.decode(ids) == theirs.decode(ids)
    file_as_is = Backend.from_file(str(root / "tokenizer.json"))
    assert file_as_is.encode(PROSE).ids != ours(PROSE)["input_ids"]     # the rewritten file alone differs


def _bart_json_dir(root: Path) -> Path:
    """The BART files as transformers 5.25 saves them (tokenizer.json, RobertaTokenizer's tokenizer_config.json)."""
    source = _bart_dir(root / "source")
    AutoTokenizer.from_pretrained(str(source)).save_pretrained(str(root / "saved"))
    shutil.copy(source / "config.json", root / "saved")
    return root / "saved"


def test_a_tokenizer_json_model_without_type_is_read_as_its_class_builds_it(tmp_path):
    """KoBART's tokenizer.json, written by an older `tokenizers`, has no model "type": under a class of its own
    (here RobertaTokenizer, as config.json model_type "bart" picks it) it is rebuilt as that class builds it, as
    a typed one is (it was used as it is: other ids)."""
    root = Path(shutil.copytree(FIXTURES / "kobart-tokenizer", tmp_path / "kobart"))
    config = json.loads((root / "tokenizer_config.json").read_text())
    del config["tokenizer_class"]
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    (root / "config.json").write_text(json.dumps({"model_type": "bart"}))
    assert "type" not in json.loads((root / "tokenizer.json").read_text())["model"]
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert type(theirs).__name__ == "RobertaTokenizer"
    for text in ["hello", "안녕하세요", *CORPUS[10:14]]:
        _same(ours, theirs, text)


def test_a_bart_tokenizer_json_gets_robertas_post_processor(tmp_path):
    """RobertaTokenizer replaces tokenizer.json's post-processor with RobertaProcessing (sep, cls, trim_offsets and
    add_prefix_space of tokenizer_config.json): seq2seq_kit kept the file's (a pair's ids, offsets differed)."""
    root = _bart_json_dir(tmp_path)
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "add_prefix_space": True}))
    saved = json.loads((root / "tokenizer.json").read_text())
    ends = [{"SpecialToken": {"id": "<s>", "type_id": 0}}, {"Sequence": {"id": "A", "type_id": 0}},
            {"SpecialToken": {"id": "</s>", "type_id": 0}}]
    saved["post_processor"] = {"type": "TemplateProcessing", "single": ends,
                               "pair": ends + [{"Sequence": {"id": "B", "type_id": 0}}, ends[-1]],
                               "special_tokens": {"<s>": {"id": "<s>", "ids": [0], "tokens": ["<s>"]},
                                                  "</s>": {"id": "</s>", "ids": [2], "tokens": ["</s>"]}}}
    (root / "tokenizer.json").write_text(json.dumps(saved))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    for first, second in [("Hello world", None), ("Hello", "world"), *PAIRS]:
        want, got = (t(first, second, return_offsets_mapping=True) for t in (theirs, ours))
        assert got["input_ids"] == want["input_ids"] and got["offset_mapping"] == list(want["offset_mapping"])


def _random_flags(rng: random.Random) -> dict:
    return {**{k: rng.random() < 0.3 for k in ("lstrip", "rstrip", "single_word")},
            "normalized": rng.random() < 0.2, "special": True}


def _disagreeing_files(root: Path, rng: random.Random) -> None:
    """Rewrite the tokenizer files in root so that they disagree on the special tokens: named tokens as strings
    or AddedToken fields with random flags, two names on one text, an added_tokens_decoder listing some of
    tokenizer.json's tokens with other flags, tokenizer.json's own flags changed, add_prefix_space/trim_offsets."""
    path = root / "tokenizer_config.json"
    config = json.loads(path.read_text()) if path.is_file() else {}
    texts = ["<s>", "</s>", "<unk>", "<pad>", "<mask>"]
    defaults = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>", pad_token="<pad>",
                    cls_token="<s>", mask_token="<mask>")
    for name, default in defaults.items():
        form = rng.random()
        if form < 0.3:
            continue
        text = rng.choice(texts) if rng.random() < 0.3 else default
        config[name] = text if form < 0.6 else {"__type": "AddedToken", "content": text, **_random_flags(rng)}
    saved_path = root / "tokenizer.json"
    if saved_path.is_file():
        saved = json.loads(saved_path.read_text())
        if rng.random() < 0.5:
            listed = {str(t["id"]): {"content": t["content"], **_random_flags(rng)} for t in saved["added_tokens"][:8]
                      if t["content"] in texts and rng.random() < 0.6}
            config["added_tokens_decoder"] = listed or config.get("added_tokens_decoder", {})
        if rng.random() < 0.4:
            for token in saved["added_tokens"]:
                if token["content"] in texts:
                    token.update(_random_flags(rng))
            saved_path.write_text(json.dumps(saved))
    for name in ("add_prefix_space", "trim_offsets"):
        if config.get("tokenizer_class") != "PreTrainedTokenizerFast" and rng.random() < 0.3:
            config[name] = rng.random() < 0.5
    path.write_text(json.dumps(config))


@pytest.mark.parametrize("seed", range(24))
def test_special_token_files_that_disagree_read_as_transformers_reads_them(tmp_path, seed):
    """The flags (lstrip, rstrip, single_word, normalized) of a special token the files give twice are the last
    given (a name's plain string keeps the token as it is), an added_tokens_decoder replaces tokenizer.json's
    added tokens under a class of its own, as transformers 5.25's TokenizersBackend reads them (seq2seq_kit kept
    the first given, and the file's added tokens: other ids for "a</s> b", "<mask>" beside spaces)."""
    rng = random.Random(seed)
    form = ["bart", "bart-json", "kobart"][seed % 3]
    root = (_bart_dir(tmp_path / "bart") if form == "bart" else _bart_json_dir(tmp_path) if form == "bart-json"
            else Path(shutil.copytree(FIXTURES / "kobart-tokenizer", tmp_path / "kobart")))
    _disagreeing_files(root, rng)
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    for text in ["a</s> b <mask> c", " <s>x<pad> y</s>", "Hello <mask>world", "안녕 <mask> 하세요</s> 끝",
                 "x <unk>  <mask>  z", " </s> "]:
        want, got = (t(text, "and a <mask> pair", return_offsets_mapping=True) for t in (theirs, ours))
        assert got["input_ids"] == want["input_ids"], text
        assert got["offset_mapping"] == list(want["offset_mapping"]), text


def test_special_token_count_and_mask_as_transformers(both):
    """num_special_tokens_to_add (code that cuts long documents into chunks takes it off model_max_length) and
    get_special_tokens_mask of encoded ids (data collators' call) as transformers' (both were missing); ids
    without their special tokens are a NotImplementedError, as in its fast tokenizers, and a second sequence
    beside encoded ids a ValueError."""
    ours, theirs = both
    for pair in (False, True):
        assert ours.num_special_tokens_to_add(pair) == ours.num_special_tokens_to_add(pair=pair) == \
            theirs.num_special_tokens_to_add(pair)
    assert ours.num_special_tokens_to_add() == theirs.num_special_tokens_to_add() == 2
    for text, pair in [(PROSE, None), ("Special <s> tokens </s> inside <mask> text <pad>", None), *PAIRS]:
        ids = theirs(text, pair)["input_ids"]
        mask = theirs.get_special_tokens_mask(ids, already_has_special_tokens=True)
        assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == mask, (text, pair)
        assert ours.get_special_tokens_mask(torch.tensor(ids), None, True) == mask
    assert 0 < sum(mask) < len(mask)
    with pytest.raises(NotImplementedError, match=r"pass ids encoded with them, tok\(text\)\['input_ids'\], and "
                                                  "already_has_special_tokens=True"):
        ours.get_special_tokens_mask(ids)
    pytest.raises(NotImplementedError, theirs.get_special_tokens_mask, ids)
    with pytest.raises(ValueError, match="pass them as token_ids_0 alone"):
        ours.get_special_tokens_mask(ids, ids, already_has_special_tokens=True)
    pytest.raises(ValueError, theirs.get_special_tokens_mask, ids, ids, already_has_special_tokens=True)


def test_name_or_path_as_transformers(tmp_path):
    """name_or_path is what from_pretrained was passed, as a str: a path as passed (a Path as its str, a trailing
    "/" kept), a Hub id as the id, as transformers keeps it; "" for a tokenizer built directly."""
    from hub_cache import read_dir, write_cache
    from tokenizers import Tokenizer as Backend
    from tokenizers import models

    from seq2seq_kit.tokenizer import DEFAULT_DIR

    root = _bart_dir(tmp_path / "bart")
    for passed in (root, f"{root}/"):
        assert Tokenizer.from_pretrained(passed).name_or_path == AutoTokenizer.from_pretrained(passed).name_or_path \
            == str(passed)
    write_cache(tmp_path / "hub", "org/bart", {"main": read_dir(root)})
    hub = dict(cache_dir=tmp_path / "hub", local_files_only=True)      # read from the cache alone
    assert Tokenizer.from_pretrained("org/bart", **hub).name_or_path == \
        AutoTokenizer.from_pretrained("org/bart", **hub).name_or_path == "org/bart"
    assert Tokenizer.from_default().name_or_path == str(DEFAULT_DIR)
    assert Tokenizer(Backend(models.WordLevel({"<unk>": 0}, unk_token="<unk>")), {}).name_or_path == ""


def test_save_pretrained_round_trip(both, tmp_path):
    ours, _ = both
    ours("a", padding="max_length", max_length=9, truncation=True)  # settings of a call must not be saved
    ours.save_pretrained(tmp_path)
    again, oracle = Tokenizer.from_pretrained(tmp_path), AutoTokenizer.from_pretrained(str(tmp_path))
    for other in (again, oracle):
        assert other.vocab_size == ours.vocab_size and len(other) == len(ours)
        assert other.model_max_length == ours.model_max_length and other.all_special_ids == ours.all_special_ids
    for text in CORPUS:
        ids = ours.encode(text)
        assert again.encode(text) == oracle.encode(text) == ids
        assert again.decode(ids) == oracle.decode(ids) == ours.decode(ids)
        assert again.decode(ids, skip_special_tokens=True) == oracle.decode(ids, skip_special_tokens=True)


@pytest.mark.parametrize("config_sides", [False, True])
def test_tokenizer_json_saved_padding_and_truncation_as_transformers(tmp_path, config_sides):
    """A tokenizer.json saved with padding and truncation on (the `tokenizers` library's enable_padding /
    enable_truncation): its directions and pad token are the tokenizer's, as transformers reads them, unless
    tokenizer_config.json names its own."""
    root = Path(shutil.copytree(FIXTURES / "kobart-tokenizer", tmp_path / "kobart"))
    saved = json.loads((root / "tokenizer.json").read_text())
    saved["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 1,
                        "pad_type_id": 0, "pad_token": "</s>"}
    saved["truncation"] = {"direction": "Left", "max_length": 5, "strategy": "LongestFirst", "stride": 0}
    (root / "tokenizer.json").write_text(json.dumps(saved))
    config = json.loads((root / "tokenizer_config.json").read_text())
    config.pop("pad_token")
    if config_sides:
        config.update(padding_side="right", truncation_side="right", pad_token="<pad>")
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert (ours.padding_side, ours.truncation_side, ours.pad_token) == \
        (theirs.padding_side, theirs.truncation_side, theirs.pad_token) == \
        (("right", "right", "<pad>") if config_sides else ("left", "left", "</s>"))
    texts = ["a", PROSE]
    for call in (dict(), dict(padding=True), dict(padding=True, truncation=True, max_length=7),
                 dict(padding="max_length", truncation=True, max_length=12)):
        assert dict(ours(texts, **call)) == {k: theirs(texts, **call)[k] for k in ("input_ids", "attention_mask")}


@pytest.mark.parametrize("tokenizer_class,model_type,pad", [
    ("PreTrainedTokenizerFast", "bart", "</s>"), ("BartTokenizer", None, "<pad>"),
    ("RobertaTokenizer", "bart", "<pad>"), (None, "bart", "<pad>"), (None, None, "</s>")])
def test_tokenizer_json_saved_pad_token_only_for_transformers_generic_class(tmp_path, tokenizer_class, model_type,
                                                                            pad):
    """A tokenizer.json saved with padding names its pad_token only where transformers loads it as its generic
    TokenizersBackend (so named, or no class and no config.json model_type); a class of its own (BART's, as a
    config.json model_type 'bart' picks it) keeps its "<pad>" default (it padded with the saved '</s>')."""
    root = Path(shutil.copytree(FIXTURES / "kobart-tokenizer", tmp_path / "kobart"))
    saved = json.loads((root / "tokenizer.json").read_text())
    saved["padding"] = {"strategy": "BatchLongest", "direction": "Left", "pad_to_multiple_of": None, "pad_id": 1,
                        "pad_type_id": 0, "pad_token": "</s>"}
    (root / "tokenizer.json").write_text(json.dumps(saved))
    config = {k: v for k, v in json.loads((root / "tokenizer_config.json").read_text()).items()
              if k not in ("pad_token", "tokenizer_class")}
    (root / "tokenizer_config.json").write_text(json.dumps({**config, **({"tokenizer_class": tokenizer_class}
                                                                        if tokenizer_class else {})}))
    if model_type:
        (root / "config.json").write_text(json.dumps({"model_type": model_type}))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert (ours.pad_token, ours.pad_token_id, ours.padding_side) == \
        (theirs.pad_token, theirs.pad_token_id, theirs.padding_side) == (pad, ours.convert_tokens_to_ids(pad), "left")
    short = ours(["a", PROSE], padding=True)["input_ids"][0]      # (a class's own pieces may differ: the pads only)
    assert short[:3] == [ours.pad_token_id] * 3 and theirs(["a", PROSE], padding=True)["input_ids"][0][:3] == short[:3]


def test_default_and_configless_bart_files(bart, tmp_path):
    """The embedded files equal the fixture; vocab.json + merges.txt load with no config at all (BART defaults)."""
    default = Tokenizer.from_default()
    for name in ("vocab.json", "merges.txt"):
        shutil.copy(FIXTURES / "bart-tokenizer" / name, tmp_path / name)
    bare = Tokenizer.from_pretrained(tmp_path)
    assert bare.model_max_length == int(1e30)  # nothing configured: no limit, as transformers
    for text in CORPUS:
        assert default.encode(text) == bare.encode(text) == bart.encode(text)
    assert (bare.bos_token_id, bare.pad_token_id, bare.eos_token_id, bare.unk_token_id, bare.mask_token_id) == (
        0, 1, 2, 3, 50264)


def test_ids_from_tensors_and_arrays(bart):
    ids = bart.encode(PROSE)
    text = bart.decode(ids)
    assert bart.decode(torch.tensor(ids)) == bart.decode(np.array(ids)) == bart.decode(tuple(ids)) == text
    assert bart.decode([np.int64(i) for i in ids]) == text
    assert bart.decode(ids[5]) == bart.convert_ids_to_tokens(ids[5]).replace("Ġ", " ")
    batch = bart(["one", "two three"], padding=True, return_tensors="pt")
    assert bart.batch_decode(batch["input_ids"], skip_special_tokens=True) == ["one", "two three"]
    assert bart.decode(batch.input_ids.numpy(), skip_special_tokens=True) == ["one", "two three"]
    assert bart.convert_ids_to_tokens(torch.tensor(ids[:3])) == bart.convert_ids_to_tokens(ids[:3])
    moved = batch.to("cpu")
    assert moved.attention_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1]]
    assert torch.equal(batch.to(torch.device("cpu"), non_blocking=True).input_ids, batch.input_ids)


def test_arguments_of_the_wrong_type_are_named(bart):
    """Where the `tokenizers` library's own error named nothing ("'int' object is not an instance of 'bool'") or
    Python's did ("'NoneType' object is not iterable")."""
    with pytest.raises(TypeError, match="^add_special_tokens must be True or False, got 0$"):
        bart("a b", add_special_tokens=0)
    with pytest.raises(TypeError, match="^add_special_tokens must be True or False"):
        bart.encode("a b", add_special_tokens=None)
    with pytest.raises(TypeError, match=r"^convert_tokens_to_ids takes a token \(str\) or a list of them, got None"):
        bart.convert_tokens_to_ids(None)
    for tokens in ("the", ["the", 5]):
        with pytest.raises(TypeError, match=r"^convert_tokens_to_string takes a list of tokens \(str\)"):
            bart.convert_tokens_to_string(tokens)


def test_batch_encoding_to_a_dtype_changes_nothing_as_in_transformers(bart, tmp_path):
    """`inputs.to(model.dtype)` (a dtype where a device goes): transformers' BatchEncoding.to warns and leaves the
    ids as they are; here they were cast, float16 turning them into other tokens, silently."""
    theirs = AutoTokenizer.from_pretrained(str(_bart_dir(tmp_path)))(PROSE, return_tensors="pt")
    batch = bart(PROSE, return_tensors="pt")
    with pytest.warns(UserWarning, match=r"BatchEncoding.to\(torch.float16\) ignored"):
        same = batch.to(torch.float16)
    assert same.input_ids.dtype == torch.int64 and torch.equal(same.input_ids, theirs.to(torch.float16).input_ids)
    assert bart("one", return_tensors="np")["input_ids"].shape == (1, 3)


_pieces = st.one_of(st.text(max_size=12), st.sampled_from(
    ["<s>", "</s>", "<mask>", "<pad>", " ", "  ", "\n", "\t", "😀", "혼자", "é", "ﬁ", "Ａ", "中文", "'s", "."]))


@settings(max_examples=150, deadline=None)
@given(text=st.lists(_pieces, max_size=8).map("".join))
def test_random_text_matches(both, text):
    ours, theirs = both
    ids = ours.encode(text)
    assert ids == theirs.encode(text)
    for skip in (False, True):
        mine, oracle = ours.decode(ids, skip_special_tokens=skip), theirs.decode(ids, skip_special_tokens=skip)
        assert mine == oracle
        assert (mine == text) == (oracle == text)
    if ours.vocab_size == 50265 and not any(t in text for t in ours.all_special_tokens):
        assert ours.decode(ids[1:-1]) == text  # byte-level BPE loses nothing


# ---- bad input ----
def test_missing_directory_or_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere") as err:
        Tokenizer.from_pretrained(tmp_path / "nowhere")
    assert "tokenizer.json" in str(err.value) and "vocab.json" in str(err.value)
    with pytest.raises(FileNotFoundError, match="tokenizer.json, or vocab.json \\+ merges.txt") as err:
        Tokenizer.from_pretrained(tmp_path)
    assert str(tmp_path) in str(err.value)
    shutil.copy(FIXTURES / "bart-tokenizer" / "vocab.json", tmp_path)
    with pytest.raises(FileNotFoundError, match="merges.txt.*found \\['vocab.json'\\]"):
        Tokenizer.from_pretrained(tmp_path)


@pytest.mark.parametrize("fixture,name", [("kobart-tokenizer", "tokenizer.json"),
                                          ("kobart-tokenizer", "tokenizer_config.json"),
                                          ("kobart-tokenizer", "special_tokens_map.json"),
                                          ("bart-tokenizer", "vocab.json")])
def test_malformed_json_names_the_file(tmp_path, fixture, name):
    shutil.copytree(FIXTURES / fixture, tmp_path, dirs_exist_ok=True)
    (tmp_path / name).write_text('{"pad_token": "<pad>",')
    with pytest.raises(ValueError, match=rf"{tmp_path / name} is not valid JSON"):
        Tokenizer.from_pretrained(tmp_path)


def test_non_string_text(bart):
    with pytest.raises(TypeError, match="text must be a str, got int"):
        bart(123)
    with pytest.raises(TypeError, match=r"text\[1\] must be a str, got bytes"):
        bart(["fine", b"bytes"])
    with pytest.raises(TypeError, match="got NoneType"):
        bart.encode(None)
    with pytest.raises(TypeError, match="got list .*batch"):
        bart.encode(["a", "b"])
    with pytest.raises(TypeError, match="got float"):
        bart.tokenize(1.5)
    with pytest.raises(TypeError, match="text_pair must be a str, got int"):
        bart("a", 7)
    with pytest.raises(TypeError, match="text_pair must be a list"):
        bart(["a", "b"], "c")
    with pytest.raises(ValueError, match="2 texts but text_pair 1"):
        bart(["a", "b"], ["c"])


def test_bad_padding_truncation_and_tensors(bart, kobart):
    with pytest.raises(ValueError, match="max_length=N"):
        kobart(["a", "b c"], padding="max_length")  # no model_max_length to pad to
    for bad in (-1, 2.5, "10", True):
        with pytest.raises(ValueError, match="pass an int >= 0"):
            bart("a", max_length=bad, truncation=True)
    with pytest.raises(ValueError, match="max_length >= 2"):
        bart(PROSE, max_length=1, truncation=True)  # transformers silently returns it uncut
    with pytest.raises(ValueError, match="max_length >= 4"):
        bart(PROSE, "pair", max_length=3, truncation=True)
    with pytest.raises(ValueError, match="'pt'"):
        bart("a", return_tensors="tf")
    with pytest.raises(ValueError, match="'max_length'"):
        bart("a", padding="longestt")
    with pytest.raises(ValueError, match="'only_first'"):
        bart("a", truncation="sometimes")
    with pytest.raises(ValueError, match="padding=True"):
        bart(["a", "b c d"], return_tensors="pt")
    with pytest.raises(ValueError, match="only tensors"):
        bart("a").to("cpu")


def test_max_length_ignored_warning(bart):
    """padding=True with a max_length but no truncation ignores max_length: transformers warns, so do we."""
    with pytest.warns(UserWarning, match="padding='max_length'"):
        out = bart(["a", PROSE], padding=True, max_length=5, truncation=False)
    assert len(out["input_ids"][0]) == len(out["input_ids"][1]) > 5


def test_bad_ids(bart):
    with pytest.raises(ValueError, match="50265 is out of range.*0..50264"):
        bart.decode([0, 50265])
    with pytest.raises(ValueError, match="-1 is out of range"):
        bart.convert_ids_to_tokens([-1])
    with pytest.raises(TypeError, match="got str"):
        bart.decode(["a"])
    with pytest.raises(TypeError, match="got float"):
        bart.decode(torch.tensor([1.0, 2.0]))
    with pytest.raises(ValueError, match="use decode"):
        bart.batch_decode([0, 1, 2])
    with pytest.raises(ValueError, match="one more dimension: flatten"):     # transformers: TypeError; it was a
        bart.batch_decode(torch.ones(2, 2, 3, dtype=torch.long))              # list of lists of texts


@pytest.mark.parametrize("specials", [None, "special_tokens_map.json", "tokenizer_config.json"])
def test_legacy_added_tokens_json_as_transformers(tmp_path, specials):
    """vocab.json + merges.txt with added_tokens.json (transformers 4.x's slow tokenizers saved added tokens there):
    its tokens keep their ids, as transformers 5 reads them (special, unnormalized, if among the special tokens)."""
    root = Path(shutil.copytree(FIXTURES / "bart-tokenizer", tmp_path / "bart"))
    (root / "config.json").write_text(json.dumps({"model_type": "bart"}))      # for transformers
    (root / "added_tokens.json").write_text(json.dumps({"<sep>": 50265, "[ent]": 50266}))
    if specials is not None:
        config = json.loads((root / "tokenizer_config.json").read_text()) if specials.startswith("tokenizer") else {}
        (root / specials).write_text(json.dumps({**config, "additional_special_tokens": ["<sep>"]}))
    ours, theirs = Tokenizer.from_pretrained(root), AutoTokenizer.from_pretrained(str(root))
    assert (len(ours), ours.vocab_size) == (len(theirs), theirs.vocab_size) == (50267, 50265)
    assert ours.all_special_ids == theirs.all_special_ids
    for text in ["a <sep> b [ent] c", "<sep>", "x[ent]<sep>y", PROSE]:
        ids = theirs(text)["input_ids"]
        assert ours(text)["input_ids"] == ids, text
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    (root / "added_tokens.json").write_text(json.dumps({"<sep>": "50265"}))
    with pytest.raises(ValueError, match=r"added_tokens.json must map each token to its id \(an int >= 0\)"):
        Tokenizer.from_pretrained(root)
