"""Tokenizer.pad against transformers 5.25's tokenizer.pad (what DataCollatorWithPadding calls), on the same files:
BART, KoBART, Pegasus and Marian (pad ids 1, 3, 0 and the last of Marian's vocabulary). Every returned key, its type,
dtype and values, for each padding strategy, max_length, pad_to_multiple_of, padding side (argument and the
tokenizer's own), return_tensors, each input form (a dict of rows, a list of examples' dicts, one example, tensors
and arrays) and extra keys; the errors, of transformers' types; and where pad departs from transformers on purpose.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import test_family_tokenizers
import torch
from test_family_tokenizers import CORPUS, target_tokenizers

from seq2seq_kit import AutoTokenizer
from seq2seq_kit.tokenizer import BatchEncoding

marian_dir = test_family_tokenizers.marian_dir    # the fixture target_tokenizers reads
FAMILIES = ["bart", "kobart", "pegasus", "marian"]
TEXTS = [CORPUS[0], "x", CORPUS[3], CORPUS[6]]
SETTINGS = [
    {}, dict(padding=True), dict(padding="longest"), dict(padding=False), dict(padding="do_not_pad"),
    dict(padding="max_length", max_length=40), dict(padding="max_length", max_length=5),     # 5: shorter rows stay
    dict(padding=True, pad_to_multiple_of=8), dict(padding="max_length", max_length=30, pad_to_multiple_of=8),
    dict(padding=False, max_length=40, pad_to_multiple_of=8), dict(padding_side="left"),
    dict(padding_side="right"), dict(padding_side="left", padding="max_length", max_length=33),
    dict(return_attention_mask=False), dict(return_attention_mask=True), dict(return_tensors="pt"),
    dict(return_tensors="np"), dict(return_tensors="pt", padding_side="left", pad_to_multiple_of=16),
    dict(return_tensors="np", padding="max_length", max_length=36, return_attention_mask=False),
]


@pytest.fixture(scope="module", params=FAMILIES)
def pair(request, tmp_path_factory):
    """(transformers' tokenizer, ours) of one family's files, and its rows: TEXTS tokenized, unpadded."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs, ours = target_tokenizers(request, tmp_path_factory.mktemp(request.param), request.param)
    assert ours.pad_token_id == theirs.pad_token_id and ours.padding_side == theirs.padding_side
    enc = theirs(TEXTS, return_special_tokens_mask=True)
    rows = {"input_ids": enc["input_ids"], "attention_mask": enc["attention_mask"],
            "token_type_ids": [[0] * (len(r) // 2) + [1] * (len(r) - len(r) // 2) for r in enc["input_ids"]],
            "special_tokens_mask": enc["special_tokens_mask"]}
    assert len({len(r) for r in rows["input_ids"]}) == len(TEXTS)
    return theirs, ours, rows


def forms(rows: dict) -> dict:
    """The input forms pad takes, each a function making a fresh one (transformers' pad changes some in place)."""
    n = len(rows["input_ids"])
    return {"dict of rows": lambda: {k: [list(r) for r in v] for k, v in rows.items()},
            "list of dicts": lambda: [{k: list(v[i]) for k, v in rows.items()} for i in range(n)],
            "one example": lambda: {k: list(v[2]) for k, v in rows.items()},
            "list of tensors": lambda: [{k: torch.tensor(v[i]) for k, v in rows.items()} for i in range(n)],
            "list of arrays": lambda: [{k: np.array(v[i]) for k, v in rows.items()} for i in range(n)],
            "one example's tensors": lambda: {k: torch.tensor(v[0]) for k, v in rows.items()}}


def assert_same(theirs, ours, make, **kwargs) -> BatchEncoding:
    """ours.pad equals theirs.pad key for key (order too): type, dtype, shape and values; or both raise the same
    type (rows of several lengths as tensors). Where transformers makes such rows a numpy array of arrays (dtype
    object), ours raises the ValueError it raises for torch. An attention_mask given is padded, as transformers
    pads it unless return_attention_mask=False (then it leaves it unpadded, out of step with input_ids)."""
    given = make()
    given = given[0] if isinstance(given, list) else given
    theirs_kwargs = {**kwargs, "return_attention_mask": True} if "attention_mask" in given else kwargs
    try:
        expected = theirs.pad(make(), **theirs_kwargs)
    except ValueError:
        expected = None
    if expected is None or any(getattr(v, "dtype", None) == object for v in expected.values()):
        with pytest.raises(ValueError, match="cannot make one tensor of 'input_ids'"):
            ours.pad(make(), **kwargs)
        return None
    got = ours.pad(make(), **kwargs)
    assert type(got) is BatchEncoding and got.encodings is None and expected.encodings is None
    assert list(got) == list(expected), kwargs
    for key, value in expected.items():
        assert type(got[key]) is type(value), (key, kwargs)
        if isinstance(value, (torch.Tensor, np.ndarray)):
            assert (got[key].dtype, got[key].shape) == (value.dtype, value.shape), (key, kwargs)
            assert got[key].tolist() == value.tolist(), (key, kwargs)
        else:
            assert got[key] == value, (key, kwargs)
    return got


@pytest.mark.parametrize("form", list(forms({"input_ids": []})))
def test_pad_equals_transformers(pair, form):
    theirs, ours, rows = pair
    for keys in (["input_ids"], ["input_ids", "attention_mask"], list(rows)):
        make = forms({k: rows[k] for k in keys})[form]
        for kwargs in SETTINGS:
            assert_same(theirs, ours, make, **kwargs)


def test_the_tokenizers_padding_side_and_model_max_length_are_the_default(pair):
    theirs, ours, rows = pair
    make = forms(rows)["list of dicts"]
    try:
        theirs.padding_side = ours.padding_side = "left"
        assert assert_same(theirs, ours, make)["input_ids"][1][0] == ours.pad_token_id
        assert_same(theirs, ours, make, padding_side="right", return_tensors="pt")
    finally:
        theirs.padding_side = ours.padding_side = "right"
    if ours.model_max_length < 10_000:      # KoBART has none: test_max_length_padding_needs_a_length
        assert_same(theirs, ours, make, padding="max_length")


def test_padding_side_from_tokenizer_config(tmp_path):
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "bart-tokenizer", tmp_path / "bart"))
    (root / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 1024, "padding_side": "left"}))
    (root / "config.json").write_text('{"model_type": "bart"}')
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    got = assert_same(theirs, ours, lambda: {"input_ids": [[0, 9, 2], [0, 2]]})
    assert got["input_ids"] == [[0, 9, 2], [1, 0, 2]]


def test_extra_keys_are_returned_as_given(pair):
    """labels (one length per row) and label (one int or float per example) are not padded; as tensors where
    return_tensors asks for them and their rows are of one length (transformers' dtype: int64, float32/64)."""
    theirs, ours, rows = pair
    ragged = [[5, 6, 7][: i + 1] for i in range(len(TEXTS))]
    examples = [{"input_ids": r, "labels": ragged[i], "label": i % 2, "score": i / 4}
                for i, r in enumerate(rows["input_ids"])]
    for kwargs in ({}, dict(padding_side="left", pad_to_multiple_of=8), dict(padding=False)):
        got = assert_same(theirs, ours, lambda: [dict(e) for e in examples], **kwargs)
        assert got["labels"] == ragged
    even = [{**e, "labels": [5, 6]} for e in examples]
    for kwargs in (dict(return_tensors="pt"), dict(return_tensors="np"), {}):
        assert_same(theirs, ours, lambda: [dict(e) for e in even], **kwargs)
        assert_same(theirs, ours, lambda: [{k: torch.tensor(v) for k, v in e.items()} for e in even], **kwargs)
    one = {k: even[0][k] for k in ("input_ids", "labels")}
    assert_same(theirs, ours, lambda: dict(one), return_tensors="pt")    # one example: [length] tensors


def test_padded_tensors_pad_again(pair):
    """A dict of [batch, length] tensors or arrays (already padded): padded further, tensors of the same kind."""
    theirs, ours, rows = pair
    for kind in ("pt", "np"):
        batch = theirs(TEXTS, padding=True, return_tensors=kind)
        for kwargs in ({}, dict(padding="max_length", max_length=50, padding_side="left"),
                       dict(pad_to_multiple_of=16), dict(return_tensors="np" if kind == "pt" else "pt")):
            got = assert_same(theirs, ours, lambda: dict(batch), **kwargs)
            assert got["input_ids"].shape[0] == len(TEXTS)


def test_nothing_to_pad_is_returned_as_given(pair):
    theirs, ours, _ = pair
    for make in (lambda: {"input_ids": []}, lambda: {"input_ids": [], "labels": [3]}, lambda: {"input_ids": None}):
        for kwargs in ({}, dict(return_attention_mask=True), dict(return_tensors="pt")):
            expected = theirs.pad(make(), **kwargs)
            assert ours.pad(make(), **kwargs) == expected, kwargs
    assert_same(theirs, ours, lambda: {"input_ids": [[], []]}, return_tensors="pt")     # empty rows: int64
    assert_same(theirs, ours, lambda: {"input_ids": [[], [], [4]]}, padding_side="left")


def test_max_length_warning_as_transformers(pair):
    theirs, ours, rows = pair
    for tok in (theirs, ours):
        with pytest.warns(UserWarning, match="max_length"):
            tok.pad(forms(rows)["dict of rows"](), padding=True, max_length=7)
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            tok.pad(forms(rows)["dict of rows"](), padding=True, max_length=7, verbose=False)
            tok.pad(forms(rows)["dict of rows"](), padding="max_length", max_length=7)


ERRORS = [   # (input, kwargs, exception, words of our message): where transformers raises the same type
    ({"attention_mask": [[1, 1]]}, {}, ValueError, "has no input_ids"),
    ([{"input_ids": [1, 2], "labels": [5]}, {"input_ids": [3]}], {}, KeyError, "example 1 has no 'labels'"),
    ({"input_ids": [[1, 2], [3]]}, dict(padding="foo"), ValueError, "padding='foo'"),
    ({"input_ids": [[1, 2], [3]]}, dict(padding_side="up"), ValueError, "padding_side='up'"),
    ({"input_ids": [[1, 2], [3]]}, dict(return_tensors="tf"), ValueError, "return_tensors='tf'"),
    ({"input_ids": [["a", "b"]]}, {}, ValueError, "must be token ids"),
    ({"input_ids": [1.0, 2.0]}, {}, ValueError, "must be token ids"),
    ({"input_ids": [[1, 2], [3]], "labels": [[4], [5, 6]]}, dict(return_tensors="pt"), ValueError,
     "cannot make one tensor of 'labels'"),
]


@pytest.mark.parametrize("inputs, kwargs, error, words", ERRORS)
def test_errors_are_transformers_types(pair, inputs, kwargs, error, words):
    theirs, ours, _ = pair
    with pytest.raises(error):
        theirs.pad(json.loads(json.dumps(inputs)), **kwargs)
    with pytest.raises(error, match=words):
        ours.pad(inputs, **kwargs)


def test_no_pad_token_is_refused_as_transformers(tmp_path):
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "bart-tokenizer", tmp_path / "bart"))
    (root / "tokenizer_config.json").write_text(json.dumps({"pad_token": None}))
    (root / "config.json").write_text('{"model_type": "bart"}')
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    assert ours.pad_token is None and theirs.pad_token is None
    for tok in (theirs, ours):
        with pytest.raises(ValueError, match="pad"):
            tok.pad({"input_ids": [[0, 9, 2], [0, 2]]})
    with pytest.raises(ValueError, match="no pad_token.*padding=False"):
        ours.pad({"input_ids": [[0, 9, 2], [0, 2]]}, return_tensors="pt")
    assert_same(theirs, ours, lambda: {"input_ids": [[0, 9, 2], [0, 2]]}, padding=False)


# Where transformers' pad fails by accident, or returns what no model can take, ours raises a clear error or pads:
# each case shows transformers' outcome beside ours.
def test_departures_from_transformers(pair):
    theirs, ours, _ = pair
    with pytest.raises(AttributeError):      # formatting its own ValueError fails
        theirs.pad([])
    with pytest.raises(ValueError, match="got an empty list"):
        ours.pad([])
    with pytest.raises(ValueError, match="got a list of list"):
        ours.pad([[1, 2], [3]])
    mismatched = {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1]]}
    with pytest.raises(AssertionError):     # an assert statement (gone under python -O)
        theirs.pad(dict(mismatched))
    with pytest.raises(ValueError, match="input_ids has 2 rows but attention_mask 1"):
        ours.pad(mismatched)
    short_mask = {"input_ids": [[1, 2], [3]], "attention_mask": [[1], [1]]}
    assert theirs.pad(dict(short_mask))["attention_mask"] == [[1], [1, 0]]      # out of step with input_ids
    with pytest.raises(ValueError, match="row 0 has 2 input_ids but 1 attention_mask"):
        ours.pad(short_mask)
    with pytest.raises(ZeroDivisionError):
        theirs.pad({"input_ids": [[1, 2], [3]]}, pad_to_multiple_of=0)
    with pytest.raises(ValueError, match="pad_to_multiple_of=0"):
        ours.pad({"input_ids": [[1, 2], [3]]}, pad_to_multiple_of=0)
    ragged = {"input_ids": [[1, 2], [3]], "labels": [[4], [5, 6]]}
    assert theirs.pad(json.loads(json.dumps(ragged)), return_tensors="np")["labels"].dtype == object
    with pytest.raises(ValueError, match="cannot make one tensor of 'labels'.*DataCollatorForSeq2Seq"):
        ours.pad(ragged, return_tensors="np")
    assert theirs.pad({"input_ids": [[1, 2], [3]]}, padding="max_length", max_length=-1)["input_ids"][1] == [3]
    with pytest.raises(ValueError, match="max_length=-1"):
        ours.pad({"input_ids": [[1, 2], [3]]}, padding="max_length", max_length=-1)
    equal = {"input_ids": [[1, 2], [3, 4]]}
    assert theirs.pad(dict(equal), padding_side="up") == {**equal, "attention_mask": [[1, 1], [1, 1]]}
    with pytest.raises(ValueError, match="padding_side='up'"):   # refused even where no row needs padding
        ours.pad(equal, padding_side="up")
    with pytest.raises(ValueError, match="`label`"):    # its len() of the int fails, reported as its ValueError
        theirs.pad({"input_ids": [1, 2], "label": 1}, return_tensors="pt")
    assert ours.pad({"input_ids": [1, 2], "label": 1}, return_tensors="pt")["label"].shape == ()
    # return_attention_mask=False: transformers makes none, and leaves one given unpadded; ours pads it
    given = {"input_ids": [[1, 2], [3]], "attention_mask": [[1, 1], [1]]}
    pad = ours.pad_token_id
    assert theirs.pad(json.loads(json.dumps(given)), return_attention_mask=False)["attention_mask"] == [[1, 1], [1]]
    assert dict(ours.pad(given, return_attention_mask=False)) == {"input_ids": [[1, 2], [3, pad]],
                                                                  "attention_mask": [[1, 1], [1, 0]]}
    # transformers pads one example's dict in place; ours leaves every input as it was
    example = {"input_ids": [1, 2, 3]}
    theirs.pad(example, pad_to_multiple_of=4)
    assert example == {"input_ids": [1, 2, 3, pad], "attention_mask": [1, 1, 1, 0]}
    padded, example = dict(example), {"input_ids": [1, 2, 3]}
    assert dict(ours.pad(example, pad_to_multiple_of=4)) == padded and example == {"input_ids": [1, 2, 3]}


def test_max_length_padding_needs_a_length(tmp_path):
    """KoBART has no model_max_length: transformers' padding='max_length' then pads nothing; ours asks for one."""
    theirs, ours = target_tokenizers(None, tmp_path, "kobart")
    rows = {"input_ids": [[0, 9, 2], [0, 2]]}
    assert theirs.pad(dict(rows), padding="max_length") == {**rows, "attention_mask": [[1, 1, 1], [1, 1]]}
    with pytest.raises(ValueError, match="needs max_length=N"):
        ours.pad(rows, padding="max_length")
    assert_same(theirs, ours, lambda: dict(rows), padding="max_length", max_length=6)
