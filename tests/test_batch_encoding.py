"""BatchEncoding's maps between tokens, words and characters (tokens, word_ids, char_to_token, ...) against
transformers 5.25's AutoTokenizer results on the same texts and arguments, family by family; Marian and M2M100,
whose transformers tokenizers are Python ones, raise as those do. The tokenizers are test_family_tokenizers'."""

from __future__ import annotations

import copy
import pickle

import pytest
import test_family_tokenizers
import torch
from test_family_tokenizers import CORPUS, target_tokenizers

from seq2seq_kit.tokenizer import BatchEncoding, CharSpan, TokenSpan

# the fixtures target_tokenizers reads
marian_dir, m2m100_dir, nllb_dir = (test_family_tokenizers.marian_dir, test_family_tokenizers.m2m100_dir,
                                    test_family_tokenizers.nllb_dir)

FIRSTS = [CORPUS[0], CORPUS[3], "x", CORPUS[7]]
SECONDS = [CORPUS[6], "y z", CORPUS[2], CORPUS[4]]
CALLS = [
    dict(text=CORPUS[0]),
    dict(text=CORPUS[7], text_pair=CORPUS[1]),
    dict(text=[CORPUS[5]], return_tensors="pt"),
    dict(text=FIRSTS, padding=True),
    dict(text=FIRSTS, text_pair=SECONDS, padding=True, return_tensors="pt"),
    dict(text=FIRSTS, truncation=True, max_length=9, padding="max_length"),
    dict(text=[CORPUS[0], CORPUS[2]], text_pair=["y z", "x"], truncation="only_first", max_length=16, padding=True),
    dict(text=FIRSTS, text_pair=SECONDS, truncation="longest_first", max_length=13),
    dict(text=FIRSTS, add_special_tokens=False, padding=True, pad_to_multiple_of=8),
    dict(text=SECONDS, text_pair=FIRSTS, add_special_tokens=False, truncation=True, max_length=11, padding=True),
    dict(text_target=SECONDS, padding=True),
    dict(text=FIRSTS[:2], text_target=SECONDS[:2], padding=True, return_tensors="pt"),
]
METHODS = ("tokens", "word_ids", "sequence_ids", "token_to_sequence", "token_to_word", "word_to_tokens",
           "token_to_chars", "char_to_token", "word_to_chars", "char_to_word")
CHARS = max(map(len, CORPUS)) + 2      # every character index of the texts, and past them


def outcome(call):
    """A call's value (a span as its class name, fields and values), or the type of what it raised."""
    try:
        value = call()
    except Exception as e:  # noqa: BLE001 - the type is the outcome
        return type(e)
    return (type(value).__name__, value._fields, tuple(value)) if isinstance(value, tuple) else value


def probes(enc) -> list[tuple[str, tuple, dict]]:
    """(method, args, kwargs) for each map of each row of `enc`: every token, word and character index and one
    past them, each text of a pair, as (batch, index) and, for row 0, as (index) and the defaults."""
    calls = []
    for b, encoding in enumerate(enc.encodings):
        words = max([w for w in encoding.word_ids if w is not None], default=-1) + 2
        calls += [(m, (b,), {}) for m in METHODS[:3]]
        calls += [(m, (b, t), {}) for m in METHODS[3:5] + ("token_to_chars",) for t in range(len(encoding.ids) + 1)]
        for s in range(enc.n_sequences):
            calls += [(m, (b, w), {"sequence_index": s}) for m in ("word_to_tokens", "word_to_chars")
                      for w in range(words)]
            calls += [(m, (b, c), {"sequence_index": s}) for m in ("char_to_token", "char_to_word")
                      for c in range(CHARS)]
    calls += [(m, args[1:], kwargs) for m, args, kwargs in calls if args[0] == 0 and len(args) == 2]
    return calls + [(m, (), {}) for m in METHODS[:3]]


def answers(enc, calls) -> list:
    return [(m, args, kwargs, outcome(lambda: getattr(enc, m)(*args, **kwargs))) for m, args, kwargs in calls]


def rows(enc, key: str = "input_ids") -> list[list[int]]:
    ids = enc[key]
    ids = ids.tolist() if isinstance(ids, torch.Tensor) else ids
    return ids if ids and isinstance(ids[0], list) else [ids]


def assert_same_maps(theirs, ours, call):
    want, got = theirs(**call), ours(**call)
    assert rows(got) == rows(want), call
    for b in range(len(want.encodings)):                    # enc[b]: row b's Encoding, as transformers'
        assert (got[b].ids, got[b].tokens, got[b].offsets) == (want[b].ids, want[b].tokens, want[b].offsets), call
    assert [e.ids for e in got[:1]] == [e.ids for e in want[:1]] and list(got.data) == list(want.data), call
    assert (got.is_fast, got.n_sequences, len(got.encodings)) == (True, want.n_sequences, len(want.encodings)), call
    assert [len(got.tokens(b)) for b in range(len(rows(got)))] == list(map(len, rows(got))), call   # padded too
    calls = probes(got)
    assert answers(got, calls) == answers(want, calls), call


@pytest.mark.parametrize("family", ["bart", "kobart", "pegasus", "nllb", "nllb-legacy", "mbart", "mbart50",
                                    "mbart50-spm"])
def test_maps_equal_transformers(request, tmp_path, family):
    """Each method, for each token, word and character of single texts, batches, pairs (both texts), padded right
    and left, truncated either side, lists and tensors, without special tokens, and text_target (alone: its own
    encodings; beside text: text's), equals transformers' fast tokenizer's; tokens() has one token per id."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for side in ("right", "left"):
        theirs.padding_side = ours.padding_side = theirs.truncation_side = ours.truncation_side = side
        for call in CALLS:
            assert_same_maps(theirs, ours, call)
    assert len({w for w in ours(CORPUS[0]).word_ids() if w is not None}) > 10      # no vacuous comparison


@pytest.mark.parametrize("family", ["marian", "m2m100"])
def test_python_tokenizers_families_raise_as_transformers(request, tmp_path, family):
    """Marian's and M2M100's pieces are cut by SentencePiece apart from the text (each its own "word", offsets not
    the text's), and transformers' tokenizers for them are Python ones: no encodings, every map a ValueError."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for call in (dict(text=CORPUS[0]), dict(text=FIRSTS, text_pair=SECONDS, padding=True, return_tensors="pt"),
                 dict(text_target=SECONDS)):
        want, got = theirs(**call), ours(**call)
        assert (got.is_fast, got.encodings, got.n_sequences) == (want.is_fast, want.encodings, want.n_sequences) \
            == (False, None, None)
        with pytest.raises(KeyError):
            want[0]
        with pytest.raises(KeyError, match="a row's Encoding is kept by the `tokenizers` library's tokenizers only"):
            got[0]
        assert rows(got[:1]) == rows(want[:1]) and list(got.data) == list(want.data)
        for method in METHODS:
            args = () if method in METHODS[:3] else (0,)
            with pytest.raises(ValueError) as raised:
                getattr(want, method)(*args)
            with pytest.raises(ValueError) as ours_raised:
                getattr(got, method)(*args)
            assert str(ours_raised.value) == str(raised.value) == \
                f"{method}() is not available when using Python based tokenizers"


def test_a_batch_encoding_without_encodings_raises_as_transformers():
    from transformers import BatchEncoding as TheirBatchEncoding

    ours, theirs = BatchEncoding({"input_ids": [[0, 2]]}), TheirBatchEncoding({"input_ids": [[0, 2]]})
    assert (ours.is_fast, ours.encodings, ours.n_sequences) == (theirs.is_fast, theirs.encodings, None)
    for method in METHODS:
        with pytest.raises(ValueError, match=rf"^{method}\(\) is not available when using Python based tokenizers$"):
            getattr(ours, method)(0)


@pytest.fixture
def bart(request, tmp_path):
    return target_tokenizers(request, tmp_path, "bart")


def test_errors_equal_transformers(bart):
    """A row past the batch: IndexError; a word the text lacks: word_to_chars' TypeError; a negative token, word or
    character index: the `tokenizers` library's OverflowError; a negative row counts from the end. (transformers'
    token_to_sequence, token_to_word and word_to_tokens fail on any negative index with a bare AttributeError, as
    they read attributes BatchEncoding lacks; here they do as its other methods.)"""
    theirs, ours = bart
    want, got = theirs(["a b", "Hello world"], padding=True), ours(["a b", "Hello world"], padding=True)
    for method in METHODS:
        args = (2,) if method in METHODS[:3] else (2, 0)
        with pytest.raises(IndexError, match="list index out of range"):
            getattr(want, method)(*args)
        with pytest.raises(IndexError, match="list index out of range"):
            getattr(got, method)(*args)
    for call in (lambda e: e.word_to_chars(5), lambda e: e.word_to_chars(1, 2), lambda e: e.word_to_chars(0, 2, 0)):
        assert outcome(lambda: call(want)) is outcome(lambda: call(got)) is TypeError
    for method in ("token_to_chars", "char_to_token", "word_to_chars", "char_to_word"):
        for args in ((-1,), (1, -1), (-1, 0), (-1, 1)):
            assert outcome(lambda: getattr(got, method)(*args)) == outcome(lambda: getattr(want, method)(*args))
        assert outcome(lambda: getattr(got, method)(-1)) is OverflowError
    for method in METHODS[:3]:
        assert getattr(got, method)(-1) == getattr(want, method)(-1) == getattr(want, method)(1)
    for method in ("token_to_sequence", "token_to_word", "word_to_tokens"):
        assert outcome(lambda: getattr(want, method)(-1)) is AttributeError
        assert outcome(lambda: getattr(got, method)(-1)) is OverflowError
        assert getattr(got, method)(-1, 1) == getattr(got, method)(1, 1) == getattr(want, method)(1, 1)


def test_spans_are_named_tuples_as_transformers(bart):
    from transformers.tokenization_utils_base import CharSpan as TheirCharSpan
    from transformers.tokenization_utils_base import TokenSpan as TheirTokenSpan

    fields = ("start", "end")
    assert (CharSpan._fields, TokenSpan._fields) == (TheirCharSpan._fields, TheirTokenSpan._fields) == (fields, fields)
    enc = bart[1]("Hello tokenization")
    assert enc.word_to_tokens(1) == TokenSpan(2, 4) and isinstance(enc.word_to_tokens(1), TokenSpan)
    assert enc.token_to_chars(3) == CharSpan(11, 18) and isinstance(enc.word_to_chars(1), CharSpan)
    assert enc.word_to_chars(1) == CharSpan(6, 18) and enc.word_to_tokens(5) is None and enc.token_to_chars(0) is None


def test_encodings_survive_to_pickle_and_copies_and_stay_out_of_the_dict(bart):
    theirs, ours = bart
    enc = ours(FIRSTS, SECONDS, padding=True, return_tensors="pt")
    word_ids = theirs(FIRSTS, SECONDS, padding=True).word_ids(3)
    assert list(enc) == list(enc.keys()) == list(dict(enc)) == ["input_ids", "attention_mask"]
    assert "encodings" not in enc and type(dict(enc)) is dict
    moved = enc.to("cpu")
    assert isinstance(moved, BatchEncoding) and moved.encodings is enc.encodings and moved.word_ids(3) == word_ids
    with pytest.warns(UserWarning, match="ignored"):
        assert enc.to(torch.float16).word_ids(3) == word_ids
    for copied in (pickle.loads(pickle.dumps(enc)), copy.deepcopy(enc), copy.copy(enc)):
        assert copied.word_ids(3) == word_ids and copied.n_sequences == 2 and list(copied) == list(enc)
        assert torch.equal(copied.input_ids, enc.input_ids)
