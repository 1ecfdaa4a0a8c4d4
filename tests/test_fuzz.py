"""Fuzzing the input boundaries with hypothesis: random strings, bytes and settings into the tokenizer, generate's
arguments and the corpus reader. They may only succeed or raise their documented, clean exceptions (ValueError
or TypeError with a message); the corpus reader never raises: every record is a text or a named error.
Bounded (few examples, no deadline) so the suite stays fast."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from seq2seq_kit import BartConfig, BartForConditionalGeneration, Tokenizer
from seq2seq_kit.corpus.reading import REASONS, plan_chunks, read_chunk, refuse_repeats
from seq2seq_kit.generation.config import GENERATE_KWARGS

FUZZ = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                        HealthCheck.too_slow])
CLEAN = (ValueError, TypeError)

# Text as it arrives from JSON, HTTP and argv: any code point, lone surrogates included.
texts = st.text(st.characters(codec=None, categories=None), max_size=60)
values = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True),
                   st.text(max_size=5), st.lists(st.integers(-5, 200), max_size=3),
                   st.lists(st.lists(st.integers(-5, 200), max_size=2), max_size=2))


def assert_clean(e: Exception) -> None:
    assert isinstance(e, CLEAN) and str(e).strip(), f"{type(e).__name__}: {e}"


@pytest.fixture(scope="module")
def tok():
    return Tokenizer.from_default()


@FUZZ
@given(text=texts, pair=st.one_of(st.none(), texts), padding=st.sampled_from([False, True, "max_length", "x", 3]),
       truncation=st.sampled_from([None, True, False, "only_first", "only_second", "longest_first", "bad"]),
       max_length=st.one_of(st.none(), st.integers(-3, 40)))
def test_tokenizer_calls(tok, text, pair, padding, truncation, max_length):
    try:
        out = tok(text, pair, padding=padding, truncation=truncation, max_length=max_length)
    except Exception as e:   # noqa: BLE001 - what is raised is the point
        assert_clean(e)
        assert isinstance(e, ValueError), e      # str texts: a bad value, never the backend's TypeError
        return
    assert all(isinstance(i, int) for i in out["input_ids"])
    assert isinstance(tok.decode(out["input_ids"]), str)


@FUZZ
@given(ids=st.lists(st.one_of(st.integers(-2**40, 2**40), st.booleans(), st.floats()), max_size=8))
def test_tokenizer_decode(tok, ids):
    try:
        assert isinstance(tok.decode(ids, skip_special_tokens=True), str)
    except Exception as e:   # noqa: BLE001
        assert_clean(e)


@pytest.fixture(scope="module")
def model():
    config = BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
                        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32,
                        max_position_embeddings=32)
    torch.manual_seed(0)
    return BartForConditionalGeneration(config).eval()


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(GENERATE_KWARGS), values, max_size=4))
def test_generate_arguments(model, kwargs):
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")        # transformers' warnings (e.g. min_length > max_length) are fine
            out = model.generate(ids, **kwargs)
    except Exception as e:   # noqa: BLE001
        assert_clean(e)
        return
    sequences = out if isinstance(out, torch.Tensor) else out.sequences
    assert sequences.dtype == torch.long and sequences.shape[1] <= 33


@FUZZ
@given(kwargs=st.dictionaries(st.sampled_from(["temperature", "top_p", "length_penalty", "repetition_penalty"]),
                              st.floats(allow_nan=True, allow_infinity=True), min_size=1, max_size=2),
       do_sample=st.booleans())
def test_non_finite_float_settings_are_refused(model, kwargs, do_sample):
    ids = torch.tensor([[0, 5, 6, 2]])
    try:
        model.generate(ids, do_sample=do_sample, max_length=4, **kwargs)
    except ValueError as e:
        assert any(f"`{k}`" in str(e) for k in (*kwargs, "temperature")), str(e)     # names the setting
        return
    assert all(math.isfinite(v) for v in kwargs.values())


lines = st.one_of(st.binary(max_size=40), texts.map(lambda t: t.encode("utf-8", "surrogatepass")),
                  st.fixed_dictionaries({}, optional={"id": values, "text": st.one_of(texts, values)}).map(
                      lambda d: json.dumps(d).encode()))


@FUZZ
@given(records=st.lists(lines, max_size=8), folder=st.booleans(), one_type=st.booleans())
def test_corpus_reader_never_raises(tmp_path_factory, records, folder, one_type):
    path = tmp_path_factory.mktemp("fuzz") / "docs.jsonl"
    path.write_bytes(b"\n".join(r.replace(b"\n", b" ") for r in records))
    chunks, total = plan_chunks([path], 3, folder=folder)
    refuse_repeats(chunks, "text", "id", one_id_type=one_type)
    seen = 0
    for chunk in json.loads(json.dumps(chunks)):          # as the chunks travel to a Ray actor
        for doc_id, where, text, error in read_chunk(chunk, "text", "id"):
            seen += 1
            record = {"id": doc_id, "where": where}
            if error is None:
                assert isinstance(text, str) and text.strip()
                text.encode("utf-8")                     # the tokenizer and the output can take it
            else:
                assert text is None and error[0] in REASONS and error[1].startswith(where)
                record["message"] = error[1]
            json.dumps(record, ensure_ascii=False).encode("utf-8")   # the output files can hold it
            assert isinstance(doc_id, (int, str)) and not isinstance(doc_id, bool)
    assert seen == total
