"""strategy="map_reduce": documents longer than the model's window, on the random checkpoints with the real BART
and KoBART tokenizers. Chunks are checked against transformers' tokenizer (they fit the window) and against
the document (whole sentences, every character held); summaries against the pipeline run on each chunk alone."""

from __future__ import annotations

import concurrent.futures
import json
import random
import re
import shutil
import threading
import time

import pytest
import torch

from checkpoints import KOBART, TINY, Spec, build
from helpers import read_jsonl, write_jsonl
from seq2seq_kit import GenerationConfig, Tokenizer, pipeline, summarize_corpus
from seq2seq_kit.cli import main
from seq2seq_kit.engine import EngineFull
from seq2seq_kit.long_documents import DocumentError, chunk_document, generate_all, map_reduce, summarize_documents

transformers = pytest.importorskip("transformers")

EN_WORDS = ("the tower is 324 metres tall about the same height as an 81-storey building and the tallest structure in "
            "Paris its base is square measuring 125 metres on each side during the 1905-06 season the club finished "
            "second in Division One with 3.5 points a game while U.S. and Korean visitors said so").split()
KO_WORDS = ("오늘은 날씨가 맑고 바람이 선선하다 혼자 공부하는 머신러닝 딥러닝 책을 읽고 모델을 사용한 문서 요약을 해 보았다 "
            "서울의 시민들은 공원에서 산책을 즐겼고 학생들은 도서관에서 시험을 준비했다 3.5퍼센트").split()
MAP = {"max_length": 8}      # the chunks' settings: short, so the tiny model's join of ~30 summaries fits its window
REDUCE = {"max_length": 12}


def document(words, sentences: int, ends, seed: int = 0) -> str:
    """Seeded prose: sentences of 4..30 words with the given ends, separated by spaces, line breaks or paragraphs."""
    rng = random.Random(seed)
    parts = []
    for _ in range(sentences):
        words_of = " ".join(rng.choices(words, k=rng.randint(4, 30)))
        parts.append(words_of[0].upper() + words_of[1:] + rng.choice(ends) + rng.choice([" ", " ", "\n", "\n\n"]))
    return "".join(parts)


EN_DOC = document(EN_WORDS, 300, [".", ".", "!", "?", '."'])            # ~6,500 BART tokens
KO_DOC = document(KO_WORDS, 200, ["다.", "다.", "요?", "다!", "。"])      # ~6,500 KoBART tokens
CASES = {"tiny": EN_DOC, "tiny-kobart": KO_DOC}
# "tiny" on KoBART's tokenizer and token ids: the real KoBART tokenizer, a fast model, a 256-token window.
TINY_KOBART = Spec({**TINY, **{k: KOBART[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id",
                                                      "decoder_start_token_id", "forced_eos_token_id")}},
                   tokenizer="kobart", seed=8)


# The tiny shape with a 64-token window, on both tokenizers.
SMALL = {"tiny64": Spec({**TINY, "max_position_embeddings": 64}),
         "ko64": Spec({**TINY_KOBART.config, "max_position_embeddings": 64}, tokenizer="kobart", seed=8)}
BUILT_HERE = {"tiny-kobart": TINY_KOBART, **SMALL}


@pytest.fixture(scope="module")
def paths(checkpoint, tmp_path_factory):
    """paths(name) -> the checkpoint directory of "tiny", or of one of BUILT_HERE (built on first use)."""
    built = {}

    def get(name: str):
        if name not in BUILT_HERE:
            return checkpoint(name)
        if name not in built:
            built[name] = build(BUILT_HERE[name], tmp_path_factory.mktemp(name))
        return built[name]

    return get


@pytest.fixture(scope="module")
def pipes(paths):
    loaded = {}

    def get(name: str):
        if name not in loaded:
            loaded[name] = pipeline("summarization", model=str(paths(name)))
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def oracle_lengths(paths):
    """oracle_lengths(name, texts) -> input lengths by transformers' tokenizer, as the 4.x pipeline tokenized."""
    toks = {}

    def get(name, texts):
        if name not in toks:
            toks[name] = transformers.AutoTokenizer.from_pretrained(str(paths(name)))
        return [len(ids) for ids in toks[name](texts)["input_ids"]]

    return get


def check_chunks(doc: str, chunks: list[dict], window: int, lengths: list[int]) -> None:
    """Each chunk is the document's own text, fits the window, and every non-whitespace character is in one."""
    held = bytearray(len(doc))
    for c in chunks:
        start, end = c["span"]
        assert c["text"] == doc[start:end] and c["text"].strip() == c["text"] != ""
        held[start:end] = b"\1" * (end - start)
    assert all(n <= window for n in lengths), (max(lengths), window)
    missing = [i for i, ch in enumerate(doc) if not ch.isspace() and not held[i]]
    assert not missing, f"characters in no chunk: {missing[:10]}"


def as_records(chunks) -> list[dict]:
    return [{"span": [c.start, c.end], "text": c.text} for c in chunks]


# ---------------------------------------------------------------------------------------------- tokenizer offsets

@pytest.mark.parametrize("name", ["tiny", "tiny-kobart"])       # the real BART and KoBART tokenizers
def test_offsets_mapping_is_transformers(paths, name):
    ours = Tokenizer.from_pretrained(paths(name))
    theirs = transformers.AutoTokenizer.from_pretrained(str(paths(name)))
    texts = ["Hello world. The end!  Next\n\nline 3.5 ok", "  오늘은 날씨가 맑다. 바람이 선선하다.\n한국어 😀 문장"]
    for kwargs in ({}, {"add_special_tokens": False}):
        a = ours(texts, return_offsets_mapping=True, **kwargs)["offset_mapping"]
        b = theirs(texts, return_offsets_mapping=True, **kwargs)["offset_mapping"]
        assert [list(map(tuple, r)) for r in a] == [list(map(tuple, r)) for r in b]
    a = ours(texts, padding=True, return_offsets_mapping=True, return_tensors="pt")["offset_mapping"]
    b = theirs(texts, padding=True, return_offsets_mapping=True, return_tensors="pt")["offset_mapping"]
    assert a.tolist() == b.tolist() and a.shape[-1] == 2
    assert "offset_mapping" not in ours(texts[0])                    # only when asked for


# ---------------------------------------------------------------------------------------------- chunking

@pytest.mark.parametrize("name", ["tiny", "tiny-kobart"])
@pytest.mark.parametrize("overlap", [0, 2])
def test_chunks_are_whole_sentences_that_fit_and_cover(pipes, oracle_lengths, name, overlap):
    pipe, doc = pipes(name), CASES[name]
    length, chunks = chunk_document(pipe, doc, overlap)
    assert length > 6000 and len(chunks) > length // pipe.max_input_length
    records = as_records(chunks)
    check_chunks(doc, records, pipe.max_input_length, oracle_lengths(name, [c.text for c in chunks]))
    assert [c.row for c in chunks] == pipe.preprocess([c.text for c in chunks], truncation=False).rows
    for c in chunks:                             # sentences are whole: a chunk starts and ends at sentence ends
        before = doc[:c.start].rstrip()
        assert before == "" or re.search(r"[.!?。]['\"]?$", before), doc[c.start - 20:c.start + 20]
        assert re.search(r"[.!?。]['\"]?$", c.text), c.text[-20:]
    for a, b in zip(chunks, chunks[1:]):
        if overlap:                              # the next chunk opens with the last sentences of this one
            assert a.start < b.start < a.end and doc[b.start:a.end] == a.text[b.start - a.start:]
        else:
            assert b.start >= a.end
    # the windows are used: most chunks are within a long sentence of the window
    assert sum(len(c.row) > pipe.max_input_length - 60 for c in chunks) >= len(chunks) // 2


def test_a_chunk_is_counted_on_its_own_tokens(pipes, paths, oracle_lengths):
    """" Consequently" is one BART token inside the document but "Consequently" three at a chunk's start: counted
    from the document's tokens alone, chunks that open with it would overflow the window."""
    pipe, rng = pipes("tiny"), random.Random(0)
    doc = " ".join(rng.choice(["Consequently", "Somewhere"]) + " "
                   + " ".join(rng.choices(EN_WORDS, k=rng.randint(1, 3))) + "." for _ in range(600))
    chunks = as_records(chunk_document(pipe, doc)[1])
    own = oracle_lengths("tiny", [c["text"] for c in chunks])
    check_chunks(doc, chunks, pipe.max_input_length, own)
    theirs = transformers.AutoTokenizer.from_pretrained(str(paths("tiny")))
    spans = theirs(doc, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    in_doc = [2 + sum(c["span"][0] <= s and e <= c["span"][1] for s, e in spans) for c in chunks]
    assert any(n > m for n, m in zip(own, in_doc)) and max(own) >= pipe.max_input_length - 2


def test_one_sentence_longer_than_the_window_is_cut_between_words(pipes, oracle_lengths):
    pipe = pipes("tiny")
    doc = " ".join(random.Random(1).choices(EN_WORDS, k=4300))                  # ~5,000 tokens, no punctuation
    length, chunks = chunk_document(pipe, doc)
    assert length > 5000 and len(chunks) > 15
    check_chunks(doc, as_records(chunks), pipe.max_input_length, oracle_lengths("tiny", [c.text for c in chunks]))
    assert all(c.start == 0 or doc[c.start - 1] == " " for c in chunks)          # at word starts
    out = pipe(doc, strategy="map_reduce", map_kwargs=MAP, **REDUCE)
    assert isinstance(out[0]["summary_text"], str)


@pytest.mark.parametrize("words, sep", [(["東京", "日本語", "文章", "です"], ""), (KO_WORDS, " ")])
def test_a_sentence_cut_to_fit_leaves_no_fragment_chunk(pipes, oracle_lengths, words, sep):
    """KoBART puts "▁" before a chunk's first token, so a piece of an over-long sentence is a token over the window
    alone: the token cut off opens the sentence's next piece, never a chunk of one word or character."""
    pipe = pipes("tiny-kobart")
    doc = sep.join(random.Random(3).choices(words, k=1500))              # one sentence of ~3,000 KoBART tokens
    chunks = chunk_document(pipe, doc)[1]
    lengths = oracle_lengths("tiny-kobart", [c.text for c in chunks])
    check_chunks(doc, as_records(chunks), pipe.max_input_length, lengths)
    assert min(lengths[:-1]) >= pipe.max_input_length - 4, lengths
    if not sep:                                                          # no word starts: every piece fills it
        assert lengths[:-1] == [pipe.max_input_length] * (len(chunks) - 1)


def test_whitespace_and_punctuation_only(pipes, oracle_lengths):
    pipe = pipes("tiny")
    short = " ... !!! ?? \n . "
    assert pipe(short, strategy="map_reduce", **REDUCE) == pipe(short, **REDUCE)
    long = ". ! ? \n" * 1500                                                    # ~6,000 tokens
    length, chunks = chunk_document(pipe, long)
    assert length > 6000
    check_chunks(long, as_records(chunks), pipe.max_input_length, oracle_lengths("tiny", [c.text for c in chunks]))
    out = pipe(long, strategy="map_reduce", return_chunks=True, map_kwargs=MAP, **REDUCE)
    assert len(out[0]["chunks"]) == len(chunks) and isinstance(out[0]["summary_text"], str)


def test_empty_documents_are_refused(pipes):
    pipe = pipes("tiny")
    for text in ("", " \n\t "):
        with pytest.raises(ValueError, match="input 0 is empty: there is nothing to summarize"):
            pipe(text, strategy="map_reduce")
    with pytest.raises(ValueError, match="input 1 is empty"):
        pipe(["Fine.", ""], strategy="map_reduce")


# ---------------------------------------------------------------------------------------------- map and reduce

@pytest.mark.parametrize("name", ["tiny", "tiny-kobart"])
def test_map_reduce_is_the_pipeline_on_chunks_then_on_their_summaries(pipes, oracle_lengths, name):
    pipe, doc = pipes(name), CASES[name]
    out = pipe(doc, strategy="map_reduce", return_chunks=True, map_kwargs=MAP, **REDUCE)
    assert len(out) == 1 and set(out[0]) == {"summary_text", "chunks"}
    chunks = out[0]["chunks"]
    check_chunks(doc, chunks, pipe.max_input_length, oracle_lengths(name, [c["text"] for c in chunks]))
    assert [c["span"] for c in chunks] == [c["span"] for c in as_records(chunk_document(pipe, doc)[1])]
    alone = pipe([c["text"] for c in chunks], **MAP)                          # each chunk alone, one at a time
    assert [c["summary_text"] for c in chunks] == [r["summary_text"] for r in alone]
    joined = " ".join(c["summary_text"] for c in chunks)
    assert oracle_lengths(name, [joined])[0] <= pipe.max_input_length            # the join fits: one reduce
    assert out[0]["summary_text"] == pipe(joined, **REDUCE)[0]["summary_text"]
    assert len({c["summary_text"] for c in chunks}) > 1                          # the chunks say different things


@pytest.mark.parametrize("call, chunks", [({"max_new_tokens": 30}, {"max_length": 5}),
                                          ({"max_length": 30, "min_length": 20}, {"max_new_tokens": 4,
                                                                                  "min_new_tokens": 1})])
@pytest.mark.parametrize("given", ["call", "pipeline", "generation_config"])
def test_a_map_length_replaces_the_calls_in_either_form(pipes, paths, call, chunks, given):
    """map_kwargs={"max_length": 5} on a call with max_new_tokens=30: the chunks stop at 5, as pipe(chunk,
    max_length=5) would (merged as dicts, generate would let the call's max_new_tokens win). So too where the
    call's length is pipeline()'s or a generation_config's (their max_new_tokens won over the map max_length)."""
    pipe = pipes("tiny")
    if given == "pipeline":
        pipe, call = pipeline("summarization", model=str(paths("tiny")), **call), {}
    elif given == "generation_config":
        call = {"generation_config": GenerationConfig(**call)}
    out = pipe(EN_DOC[:3000], strategy="map_reduce", return_chunks=True, map_kwargs=chunks, **call)[0]
    alone = pipes("tiny")([c["text"] for c in out["chunks"]], **chunks)
    assert len(out["chunks"]) > 1 and [c["summary_text"] for c in out["chunks"]] == [r["summary_text"] for r in alone]


def test_sampling_with_a_generator_samples_each_chunk_from_its_state(pipes):
    """pipe(text, do_sample=True, generator=g) works with strategy="truncate"; with map_reduce each chunk (and the
    reduce) samples from a copy of g's state at the call, as pipe(chunk, generator=<g reseeded>) would."""
    pipe = pipes("tiny")

    def sample() -> dict:                      # a generator in the same state for each call
        return dict(do_sample=True, top_k=50, generator=torch.Generator().manual_seed(0))

    out = pipe(EN_DOC[:3000], strategy="map_reduce", return_chunks=True, map_kwargs=MAP, **REDUCE, **sample())[0]
    alone = [pipe(c["text"], **MAP, **sample())[0]["summary_text"] for c in out["chunks"]]
    assert len(alone) > 1 and [c["summary_text"] for c in out["chunks"]] == alone
    joined = " ".join(alone)
    assert out["summary_text"] == pipe(joined, **REDUCE, **sample())[0]["summary_text"]
    short = "The tower is 324 metres tall. Its base is square!"
    assert pipe(short, strategy="map_reduce", **REDUCE, **sample()) == pipe(short, **REDUCE, **sample())


def test_a_document_that_fits_is_summarized_as_truncate_does(pipes):
    pipe = pipes("tiny")
    texts = ["  The tower is 324 metres tall. Its base is square!\n", "Short one."]
    kwargs = dict(num_beams=2, max_length=10)
    out = pipe(texts, strategy="map_reduce", return_chunks=True, **kwargs)
    for text, record, truncated in zip(texts, out, pipe(texts, **kwargs)):
        assert record["summary_text"] == truncated["summary_text"]
        assert record["chunks"] == [{"span": [0, len(text)], "text": text, "summary_text": record["summary_text"]}]
    assert pipe(texts[0], strategy="map_reduce", **kwargs) == pipe(texts[0], **kwargs)


def test_documents_of_one_call_share_the_batch_and_keep_their_order(pipes):
    pipe = pipes("tiny")
    texts = [EN_DOC, "Short one.", EN_DOC[: len(EN_DOC) // 3]]
    together = pipe(texts, strategy="map_reduce", batch_size=4, map_kwargs=MAP, **REDUCE)
    assert together == [pipe(t, strategy="map_reduce", batch_size=1, map_kwargs=MAP, **REDUCE)[0] for t in texts]


def test_a_join_longer_than_the_window_is_chunked_again_to_a_bounded_depth(pipes):
    pipe = pipes("tiny")
    long_map = {"min_length": 16, "max_length": 16}       # ~30 chunk summaries of 15 tokens: ~450 > 256 tokens
    out = pipe(EN_DOC, strategy="map_reduce", return_chunks=True, map_kwargs=long_map, **REDUCE)
    joined = " ".join(c["summary_text"] for c in out[0]["chunks"])
    assert len(pipe.tokenizer(joined)["input_ids"]) > pipe.max_input_length
    # the join's own map-reduce is the document's summary; it needs one round of chunking, which max_depth=1 allows
    again = map_reduce(pipe, [joined], map_kwargs=long_map, max_depth=1, **REDUCE)
    assert out[0]["summary_text"] == again[0]["summary_text"]
    with pytest.raises(DocumentError, match=r"input 0: .* after 1 round\(s\) of chunking \(max_depth=1\); give the "
                                            r"chunks a smaller max_length \(map_kwargs, over HTTP map_parameters"):
        map_reduce(pipe, [EN_DOC], map_kwargs=long_map, max_depth=1, **REDUCE)
    results = summarize_documents(pipe, [EN_DOC, "Short one."], pipe.engine(), map_kwargs=long_map, max_depth=1,
                                  **REDUCE)
    assert isinstance(results[0].error, ValueError) and results[1].error is None and results[1].summary_text


def test_a_given_engine_is_used_and_left_open(pipes):
    pipe = pipes("tiny")
    with pipe.engine(max_rows=4) as engine:
        first = map_reduce(pipe, [EN_DOC[:3000]], engine=engine, map_kwargs=MAP, **REDUCE)
        assert engine.generated_tokens > 0
        assert map_reduce(pipe, [EN_DOC[:3000]], engine=engine, map_kwargs=MAP, **REDUCE) == first


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(strategy="summarize"), ValueError, "strategy must be one of 'truncate', 'map_reduce', got 'summarize'"),
    (dict(chunk_overlap=1), ValueError, "chunk_overlap applies to strategy='map_reduce' only"),
    (dict(return_chunks=True, map_kwargs={"max_length": 5}), ValueError,
     "map_kwargs and return_chunks apply to strategy='map_reduce' only"),
    (dict(strategy="map_reduce", chunk_overlap=-1), ValueError, "chunk_overlap must be a number of sentences"),
    (dict(strategy="map_reduce", map_kwargs=[("max_length", 5)]), TypeError, "map_kwargs must be a dict"),
    (dict(strategy="map_reduce", return_tensors=True), ValueError, "return_tensors=True applies to strategy="),
    (dict(strategy="map_reduce", batch_size=0), ValueError, "batch_size must be a positive integer"),
    (dict(strategy="map_reduce", num_beams=2, num_return_sequences=2), ValueError,
     "num_return_sequences=2 in the reduce stage"),
    (dict(strategy="map_reduce", map_kwargs={"num_beams": 2, "num_return_sequences": 2}), ValueError,
     "num_return_sequences=2 in the map stage"),
    (dict(strategy="map_reduce", map_kwargs={"num_beams": 0}), ValueError, "num_beams"),
    (dict(strategy="map_reduce", streamer=object()), ValueError,
     "map_reduce summarizes the chunks on an engine; leave it out, or use strategy='truncate'"),
    (dict(strategy="map_reduce", map_kwargs={"prefix_allowed_tokens_fn": lambda batch, ids: [2]}), ValueError,
     "prefix_allowed_tokens_fn: Python run on every step"),
])
def test_bad_options(pipes, kwargs, error, message):
    with pytest.raises(error, match=re.escape(message)):
        pipes("tiny")("A sentence.", **kwargs)


@pytest.mark.parametrize("max_depth", [0, True, 2.0, None])
def test_a_max_depth_that_is_no_positive_integer_is_named(pipes, max_depth):
    with pytest.raises(ValueError) as error:
        map_reduce(pipes("tiny"), ["A sentence."], max_depth=max_depth)
    assert str(error.value) == f"max_depth must be a positive integer, got {max_depth!r}"


# ---------------------------------------------------------------------------------------------- CLI and corpus

def test_cli_summarize_strategy(capsys, pipes, checkpoint, tmp_path):
    path = tmp_path / "long.txt"
    path.write_text(EN_DOC, encoding="utf-8")
    tiny = str(checkpoint("tiny"))
    assert main(["summarize", "--file", str(path), "--model", tiny, "--strategy", "map-reduce", "--max-length",
                 "8", "--json"]) == 0
    expected = pipes("tiny")(EN_DOC, strategy="map_reduce", max_length=8)[0]["summary_text"]
    assert capsys.readouterr().out == f'{{"summary_text": {json_str(expected)}}}\n'
    assert main(["summarize", "--file", str(path), "--model", tiny, "--strategy", "map-reduce", "--max-length",
                 "8", "--json", "--batch-size", "1"]) == 0        # the chunks one at a time: the same summary
    assert capsys.readouterr().out == f'{{"summary_text": {json_str(expected)}}}\n'
    assert main(["summarize", "x.", "--batch-size", "2"]) == 2
    assert "--batch-size applies to --input jobs (and to a text's chunks with --strategy map-reduce)" in \
        capsys.readouterr().err
    assert main(["summarize", "x.", "--strategy", "chunks"]) == 2
    assert "invalid choice: 'chunks'" in capsys.readouterr().err


def json_str(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def test_corpus_strategy(pipes, checkpoint, tmp_path, capsys):
    pipe, tiny = pipes("tiny"), checkpoint("tiny")
    docs = [{"id": "long", "text": EN_DOC[:6000]}, {"id": "short", "text": "Short one."},
            {"id": "mid", "text": EN_DOC[6000:9000]}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    result = summarize_corpus(path, out, model=tiny, strategy="map_reduce", batch_size=2, progress=False, **MAP)
    assert (result.written, result.failed, result.truncated) == (3, 0, 0)
    records = {r["id"]: r for r in read_jsonl(out)}
    for doc in docs:
        expected = pipe(doc["text"], strategy="map_reduce", return_chunks=True, **MAP)[0]
        record = records[doc["id"]]
        assert record["summary_text"] == expected["summary_text"]
        assert record["chunks"] == len(expected["chunks"])
        assert record["input_tokens"] == len(pipe.tokenizer(doc["text"])["input_ids"])
        assert 0 < record["output_tokens"] < MAP["max_length"]
        # output_tokens: the final summary's tokens after the decoder start, to its first EOS (the reduce's)
        chunks = expected["chunks"]
        reduced = doc["text"] if len(chunks) == 1 else " ".join(c["summary_text"] for c in chunks)
        ids = pipe(reduced, return_tensors=True, **MAP)[0]["summary_token_ids"].tolist()[1:]
        assert record["output_tokens"] == (ids.index(2) + 1 if 2 in ids else len(ids))
    assert records["long"]["chunks"] > 1 and records["short"]["chunks"] == 1
    # the strategy is part of the job: a resume with another one is refused, by the library and the CLI
    with pytest.raises(ValueError, match="strategy='map_reduce'.*strategy='truncate'"):
        summarize_corpus(path, out, model=tiny, batch_size=2, progress=False, **MAP)
    assert main(["summarize", "--input", str(path), "--output", str(out), "--model", str(tiny),
                 "--max-length", "8", "--batch-size", "2"]) == 1
    assert "strategy" in capsys.readouterr().err
    assert main(["summarize", "--input", str(path), "--output", str(out), "--model", str(tiny),
                 "--max-length", "8", "--batch-size", "2", "--strategy", "map-reduce"]) == 0   # resumes: all done
    assert read_jsonl(out) == list(records.values())
    with pytest.raises(ValueError, match="strategy must be one of"):
        summarize_corpus(path, tmp_path / "other.jsonl", model=tiny, strategy="map-reduce", progress=False)


def test_corpus_strategy_parquet_records_the_chunk_count(pipes, checkpoint, tmp_path):
    parquet = pytest.importorskip("pyarrow.parquet", reason='Parquet output needs pip install "seq2seq-kit[parquet]"')
    docs = [{"id": "long", "text": EN_DOC[:6000]}, {"id": "short", "text": "Short one."}]
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    kwargs = dict(model=checkpoint("tiny"), strategy="map_reduce", batch_size=2, progress=False, **MAP)
    summarize_corpus(path, tmp_path / "out.jsonl", **kwargs)
    summarize_corpus(path, tmp_path / "out.parquet", **kwargs)
    rows = {r["id"]: r for r in parquet.read_table(tmp_path / "out.parquet").to_pylist()}
    assert rows == {r["id"]: r for r in read_jsonl(tmp_path / "out.jsonl")} and rows["long"]["chunks"] > 1


# ---------------------------------------------------------------------------------------------- 64-position models


def test_a_full_engine_queue_waits_for_the_calls_own_requests(pipes):
    """~20 chunks on an idle engine whose queue holds 2: EngineFull is backpressure, not the call's error."""
    pipe = pipes("tiny64")
    doc = "The tower is tall and it is in Paris. " * 100
    with pipe.engine(max_rows=2, max_queue=2) as engine:
        out = map_reduce(pipe, [doc], engine=engine, return_chunks=True, max_length=8, map_kwargs={"max_length": 4})
    assert len(out[0]["chunks"]) > 10
    assert out == pipe(doc, strategy="map_reduce", batch_size=2, return_chunks=True, max_length=8,
                       map_kwargs={"max_length": 4})

    class Full:                                   # a queue full of other callers' requests, none of this call's
        max_rows, Full = 1, EngineFull

        def submit(self, row, **kwargs):
            raise EngineFull("the engine's queue is full")

    with pytest.raises(EngineFull):
        generate_all(Full(), [([0, 2], {})])


def test_an_emoji_zwj_run_whose_offsets_drift_is_cut_by_characters(pipes, tmp_path):
    """KoBART's offsets for a run of family emoji (ZWJ sequences) drift: one token's text holds much of the run.
    Its text is cut into the longest pieces that fit, between the sequences, every character in one chunk. The
    drifting offsets map later token units to a character each: those pieces are merged while their joined text
    fits (56 chunks, 50 of one or two characters, before the merge; 6 now)."""
    pipe = pipes("ko64")
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    doc = "오늘은 날씨가 맑다. " * 10 + family * 60 + " 바람이 선선하다." * 10
    chunks = chunk_document(pipe, doc)[1]
    assert len(chunks) <= 8 and all(len(c.text) > 2 for c in chunks), [(c.start, c.end) for c in chunks]
    specials = len(pipe.preprocess([""]).rows[0])
    for a, b in zip(chunks, chunks[1:]):          # neighbours left apart: their joined text does not fit
        if len(a.row) + len(b.row) - specials <= pipe.max_input_length:
            assert pipe.preprocess([doc[a.start:b.end]], truncation=True).truncated
    lengths = [len(row) for row in pipe.preprocess([c.text for c in chunks], truncation=False).rows]
    check_chunks(doc, as_records(chunks), pipe.max_input_length, lengths)
    assert all(b.start >= a.end for a, b in zip(chunks, chunks[1:]))         # each character in one chunk
    cut = [c for c in chunks if c.text.startswith(family) and c.text.endswith(family)]   # between whole sequences
    assert cut and all(len(c.row) > pipe.max_input_length - 8 for c in cut)            # the longest that fit
    assert isinstance(pipe(doc, strategy="map_reduce", max_length=6)[0]["summary_text"], str)


def test_a_document_exactly_as_long_as_the_window_is_one_chunk_as_given(pipes):
    """A text of exactly max_input_length tokens fits: one chunk, the whole text as given (its surrounding whitespace
    kept, not stripped as a chunk's text is), summarized as strategy="truncate" does; one token more is chunked
    (here into one chunk: stripped of the space token before it, the text fits)."""
    pipe = pipes("tiny64")
    words = ("The tower is tall and it is in Paris. " * 20).split()
    text = next(t for n in range(1, len(words)) if len(pipe.preprocess([t := "  " + " ".join(words[:n]) + "\n"])
                                                        .rows[0]) == pipe.max_input_length)
    out = pipe(text, strategy="map_reduce", return_chunks=True, max_length=8)
    assert out == [{"summary_text": pipe(text, max_length=8)[0]["summary_text"],
                    "chunks": [{"span": [0, len(text)], "text": text, "summary_text": out[0]["summary_text"]}]}]
    longer = text[:-1] + " Paris\n"
    assert len(pipe.preprocess([longer], truncation=True).truncated) == 1
    assert [(c.start, c.end) for c in chunk_document(pipe, longer)[1]] == [(2, len(longer) - 1)]


def test_chunk_summaries_that_are_all_empty_give_an_empty_summary(pipes):
    """max_length=2 with forced_eos_token_id: every chunk's summary is EOS alone, its text empty. The document's
    summary is empty too; the blank join is not summarized again."""
    pipe = pipes("tiny64")
    doc = "The tower is tall and it is in Paris. " * 20
    out = pipe(doc, strategy="map_reduce", return_chunks=True, max_length=8, map_kwargs={"max_length": 2})[0]
    assert len(out["chunks"]) > 1 and {c["summary_text"] for c in out["chunks"]} == {""}
    assert out["summary_text"] == ""
    [result] = summarize_documents(pipe, [doc], pipe.engine(), max_length=8, map_kwargs={"max_length": 2})
    assert (result.summary_text, result.summary_ids, result.error) == ("", [], None)


def test_a_cancelled_call_waiting_on_a_full_queue_stops_and_frees_the_engine(pipes):
    pipe = pipes("tiny64")
    doc = "The tower is tall and it is in Paris. " * 300                    # ~60 chunks of 60 tokens each
    cancel = threading.Event()
    with pipe.engine(max_rows=2, max_queue=2) as engine:
        threading.Timer(0.3, cancel.set).start()
        with pytest.raises(concurrent.futures.CancelledError):
            map_reduce(pipe, [doc], engine=engine, cancel=cancel, max_length=8,
                       map_kwargs={"min_length": 60, "max_length": 60})
        deadline = time.monotonic() + 5
        while (engine.queue_depth or engine.active_rows) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (engine.queue_depth, engine.active_rows) == (0, 0)
        assert engine.generated_tokens < 60 * 60 / 2


LINES = {"tiny64": "Line number {} of the list of titles with some words",
         "ko64": "시민들 {} 오늘은 날씨가 맑고 바람이 선선하여 산책하기 좋은 날입니다"}


@pytest.mark.parametrize("name", ["tiny64", "ko64"])
@pytest.mark.parametrize("sep", ["\n", "\r\n", "\r", "\u2028", "\u2029", "\x85", "\x0b", "\x0c"])
@pytest.mark.parametrize("lead", ["", "the "])
def test_every_line_break_ends_a_sentence(pipes, sep, name, lead):
    """KoBART folds a line break into the next word's token ('\\n오늘'): the cut goes before that token. It drops
    U+2028 and U+2029 and gives the next word's tokens ("the" after them) the break's offsets: the cut goes before
    those too (it went after them, cutting "the" off its line)."""
    pipe = pipes(name)
    line = lead + LINES[name]
    doc = sep.join(line.format(i) for i in range(40))
    chunks = chunk_document(pipe, doc)[1]
    assert len(chunks) > 4
    assert all(doc[c.end:].startswith(sep) for c in chunks[:-1]), [c.text[-20:] for c in chunks]
    assert all(c.text.startswith(line[:4]) for c in chunks), [c.text[:20] for c in chunks]


def test_a_request_failing_as_it_runs_names_its_stage(pipes):
    """Sampling with nothing to draw (temperature 1e-38 overflows) fails the chunks' requests as they run: a
    StageError (a ValueError) names the map stage, the engine's error kept as .error."""
    from seq2seq_kit.long_documents import StageError

    with pytest.raises(StageError) as error:
        pipes("tiny64")("The tower is tall and it is in Paris. " * 20, strategy="map_reduce", do_sample=True,
                        max_length=8, map_kwargs={"temperature": 1e-38})
    assert error.value.stage == "map" and "sampling found no valid probabilities" in str(error.value.error)
    assert str(error.value).startswith("the map stage (map_kwargs over the call's settings): sampling")


def test_the_command_line_names_a_failing_stage_in_its_own_terms(paths, capsys):
    """The CLI has no map_kwargs: a stage failing as it runs is named by what it summarizes (its message said
    "map_kwargs over the call's settings")."""
    from seq2seq_kit.cli import main

    assert main(["summarize", "The tower is tall and it is in Paris. " * 20, "--model", str(paths("tiny64")),
                 "--strategy", "map-reduce", "--do-sample", "--temperature", "1e-38", "--max-length", "8"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("seq2seq-kit: error: the map stage (the chunks' summaries): sampling found no valid "
                          "probabilities") and "map_kwargs" not in err and err.count("\n") == 1


def test_an_empty_logits_processor_list_is_taken_by_map_reduce(pipes):
    """logits_processor=[] is generate's "none" (the engine takes it): map_reduce refused it as unknown."""
    pipe = pipes("tiny")
    assert pipe(EN_DOC[:3000], strategy="map_reduce", logits_processor=[], map_kwargs=MAP, **REDUCE) == \
        pipe(EN_DOC[:3000], strategy="map_reduce", map_kwargs=MAP, **REDUCE)


@pytest.mark.parametrize("quote", ['"', "”", "」", "』", ")"])
def test_a_sentence_end_before_a_closing_quote_ends_the_sentence(pipes, quote):
    """다.」 and 다.』 (Korean and Japanese quotes) end a sentence as 다.” does: chunks were cut mid-sentence."""
    pipe = pipes("ko64")
    rng = random.Random(0)
    doc = " ".join(" ".join(rng.choices(KO_WORDS, k=rng.randint(4, 9))) + "다." + quote for _ in range(60))
    chunks = chunk_document(pipe, doc)[1]
    assert len(chunks) > 4
    assert all(c.text.endswith("다." + quote) for c in chunks), [c.text[-8:] for c in chunks]


@pytest.mark.parametrize("name", ["tiny64", "ko64"])
def test_chunks_take_the_next_sentence_and_the_overlap_when_they_fit(pipes, name):
    """A chunk ends before a sentence only when that sentence does not fit beside it, and opens with `overlap`
    sentences unless they do not fit beside its first new one (the whitespace after a sentence is not counted)."""
    pipe = pipes(name)
    words = "the tower is tall about the same height as an building and the tallest structure in Paris".split()
    for seed in range(24):
        rng = random.Random(seed)
        doc = "".join(f"S{i} " + " ".join(rng.choices(words, k=rng.randint(1, 12))) + rng.choice(".!?")
                      + rng.choice([" ", "\n", "  ", "\n\n", "\n \n \n"]) for i in range(60))
        starts = [m.start() for m in re.finditer(r"S\d+ ", doc)] + [len(doc)]          # sentence k: [k, k + 1)
        for overlap in (0, 2):
            chunks = chunk_document(pipe, doc, overlap)[1]
            for a, b in zip(chunks, chunks[1:]):
                first, new, carried = starts.index(a.start), sum(s < a.end for s in starts), starts.index(b.start)
                wider = [doc[a.start:starts[new + 1]]]                         # a and the next sentence
                if carried > max(first + 1, new - overlap):                    # fewer carried than asked
                    wider.append(doc[starts[carried - 1]:starts[new + 1]])     # one more, and b's first new one
                over = pipe.preprocess([t.strip() for t in wider], truncation=True).truncated
                assert len(over) == len(wider), (seed, overlap, a.text[-30:], b.text[:30])


def test_a_sentence_cut_at_tokens_is_cut_before_a_word(pipes, oracle_lengths):
    """One sentence (no sentence end: "U.S." left out) of words that are several tokens ("81-storey", "1905-06",
    "3.5"), on a 64-token window: every piece is cut before a word (a space before it), never between the tokens
    of one word, where the window's last token boundary often is."""
    pipe = pipes("tiny64")
    doc = " ".join(random.Random(1).choices([w for w in EN_WORDS if w != "U.S."], k=400))
    chunks = chunk_document(pipe, doc)[1]
    assert len(chunks) > 5
    check_chunks(doc, as_records(chunks), pipe.max_input_length, oracle_lengths("tiny64", [c.text for c in chunks]))
    assert all(c.start == 0 or doc[c.start - 1] == " " for c in chunks), [doc[c.start - 8:c.start + 8]
                                                                          for c in chunks]


def test_a_text_cut_by_characters_is_cut_at_whitespace_first(pipes):
    """KoBART's offsets for a ZWJ emoji run drift: one token's text holds much of the run, and is cut by characters.
    Where the longest piece that fits has whitespace (a tab) in its second half, the piece ends there, before the
    tab, rather than at its last grapheme boundary (8 characters later, inside the next family)."""
    pipe = pipes("ko64")
    family = "\U0001F468\u200d\U0001F469\u200d\U0001F467\u200d\U0001F466"
    doc = "오늘은 날씨가 맑다. " * 10 + family * 40 + "\t" + family * 20 + " 바람이 선선하다." * 10
    tab = doc.index("\t")
    chunks = chunk_document(pipe, doc)[1]
    lengths = [len(row) for row in pipe.preprocess([c.text for c in chunks], truncation=False).rows]
    check_chunks(doc, as_records(chunks), pipe.max_input_length, lengths)
    assert [(a.end, b.start) for a, b in zip(chunks, chunks[1:]) if a.end <= tab < b.start] == [(tab, tab + 1)]


@pytest.mark.parametrize("prefix", ["summarize:", "x", "요약: "])
def test_a_prefix_token_is_not_counted_as_the_documents(paths, prefix):
    """The document is tokenized behind the prefix; the prefix's last token, ending where the text starts, is none
    of the text's tokens. Counted as one, the first chunk came out a sentence short (the next sentence fit)."""
    pipe = pipeline("summarization", model=str(paths("tiny64")))
    pipe.prefix = prefix
    words = "the tower is tall about the same height as an building and the tallest structure in Paris".split()
    for seed in range(12):
        rng = random.Random(seed)
        doc = rng.choice(["", " ", "  ", "\n", "\n\n", "\t"]) + "".join(
            f"S{i} " + " ".join(rng.choices(words, k=rng.randint(1, 12))) + rng.choice(".!?")
            + rng.choice([" ", "\n", "  ", "\n\n", "\n \n \n"]) for i in range(20))
        starts = [m.start() for m in re.finditer(r"S\d+ ", doc)] + [len(doc)]
        chunks = chunk_document(pipe, doc)[1]
        assert all(len(c.row) <= pipe.max_input_length for c in chunks)
        for a, b in zip(chunks, chunks[1:]):
            new = sum(s < a.end for s in starts)                             # the next sentence: [new, new + 1)
            wider = doc[a.start:starts[new + 1]].strip()
            assert pipe.preprocess([wider], truncation=True).truncated, (prefix, seed, a.text[-30:], b.text[:30])


def test_a_prefix_that_fills_the_window_is_named(paths):
    """A prefix that, with the special tokens, fills every position leaves no room for any text: the document's
    error says so (it is not chunked into pieces that can never fit)."""
    pipe = pipeline("summarization", model=str(paths("tiny64")))
    for n in range(1, 64):
        pipe.prefix = "word " * n
        if len(pipe.preprocess([""]).rows[0]) == pipe.max_input_length:
            break
    assert len(pipe.preprocess([""]).rows[0]) == pipe.max_input_length
    message = f"input 0: the prefix {pipe.prefix!r} and special tokens fill the model's 64 positions; no text fits"
    with pytest.raises(DocumentError, match=re.escape(message)):
        pipe("The tower is tall. " * 3, strategy="map_reduce", max_length=4)


def test_a_step_failing_requests_of_both_stages_names_neither(pipes):
    """The engine fails every request of a failed step with one error: where those are of both stages (a short
    document's reduce beside a long one's chunks), the error is the engine's, not a StageError naming one stage;
    of one stage, the StageError names it."""
    from seq2seq_kit.long_documents import StageError

    class Failing:                                # every request fails with the step's one error
        max_rows, Full = 4, EngineFull

        def __init__(self):
            self.error = ValueError("sampling found no valid probabilities")

        def submit(self, row, **kwargs):
            future = concurrent.futures.Future()
            future.set_exception(self.error)
            return future

    engine = Failing()
    with pytest.raises(ValueError) as error:
        generate_all(engine, [([0, 2], {}), ([0, 2], {})], stages=["map", "reduce"])
    assert error.value is engine.error and not isinstance(error.value, StageError)
    with pytest.raises(StageError) as error:
        generate_all(engine, [([0, 2], {}), ([0, 2], {})], stages=["map", "map"])
    assert error.value.stage == "map" and error.value.error is engine.error


def test_map_reduce_errors_name_the_input_and_the_option(pipes):
    pipe = pipes("tiny64")
    doc = "The tower is tall. " * 40
    with pytest.raises(DocumentError, match=r"input 1: text holds a lone surrogate") as e:
        pipe(["Fine.", "\ud800 x. " * 30], strategy="map_reduce", max_length=8)
    assert e.value.index == 1
    for kwargs, error, message in [
        (dict(return_chunks="yes"), TypeError, "return_chunks must be True or False, got 'yes'"),
        (dict(chunk_overlap=64), ValueError, "chunk_overlap=64 sentences can never be carried"),
        (dict(engine=1), TypeError, "engine must be an Engine on the pipeline's model (pipe.engine()) or None, "
                                    "got int"),
        (dict(cancel=1), TypeError, "cancel must be a threading.Event (set it to stop the call) or None, got int"),
    ]:
        with pytest.raises(error, match=re.escape(message)):
            pipe(doc, strategy="map_reduce", max_length=8, **kwargs)


# ---------------------------------------------------------------------------------------------- over HTTP

@pytest.fixture(scope="module")
def client(paths):
    """The server app on "tiny64" in process (max_rows 8, max_queue 8), through starlette's TestClient."""
    pytest.importorskip("fastapi", reason='the server needs its extra (pip install "seq2seq-kit[serve]")')
    pytest.importorskip("httpx", reason='the server tests need httpx (pip install "seq2seq-kit[test]")')
    from fastapi.testclient import TestClient

    from seq2seq_kit.server.app import Settings, build_app

    app = build_app(Settings(model=str(paths("tiny64")), max_rows=8, max_queue=8), load_in_background=False)
    with TestClient(app) as c:
        yield c


def test_a_map_reduce_request_of_many_chunks_on_an_idle_server_is_answered(client):
    doc = "The tower is tall and it is in Paris. " * 100                       # ~20 chunks, a queue of 8
    answer = client.post("/summarize", json={"inputs": doc, "parameters": {
        "strategy": "map_reduce", "max_length": 8, "map_parameters": {"max_length": 4}, "return_chunks": True}})
    assert answer.status_code == 200, answer.text
    assert len(answer.json()[0]["chunks"]) > 10


@pytest.mark.parametrize("inputs, parameters, field, words", [
    ("A sentence.", {"map_parameters": {"num_beams": 2, "num_return_sequences": 2}},
     "parameters.map_parameters.num_return_sequences", "num_return_sequences=2"),
    ("A sentence.", {"num_beams": 2, "num_return_sequences": 2}, "parameters.num_return_sequences",
     "num_return_sequences=2"),
    (["Fine.", "\ud800 x. " * 30], {}, "inputs", "input 1: text holds a lone surrogate"),
    ("A sentence.", {"chunk_overlap": 10**9}, "parameters.chunk_overlap", "can never be carried"),
    ("The tower is tall and it is in Paris. " * 20, {"map_parameters": {"min_length": 60, "max_length": 60}},
     "parameters.map_parameters.max_length", "send a smaller parameters.map_parameters.max_length"),
    # a chunk's search failing as it runs names the map stage's field, also where the top level sends it too
    ("The tower is tall and it is in Paris. " * 20, {"do_sample": True, "temperature": 1.0,
                                                      "map_parameters": {"temperature": 1e-38}},
     "parameters.map_parameters.temperature", "sampling found no valid probabilities"),
    ("The tower is tall and it is in Paris. " * 20, {"do_sample": True, "temperature": 1e-38},
     "parameters.temperature", "sampling found no valid probabilities"),
])
def test_map_reduce_refusals_name_the_field(client, inputs, parameters, field, words):
    body = json.dumps({"inputs": inputs, "parameters": {"strategy": "map_reduce", "max_length": 8, **parameters}})
    answer = client.post("/summarize", content=body, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["error"], answer.json()


def test_a_corpus_job_writes_the_others_when_the_chunker_refuses_a_document(paths, tmp_path):
    """A prefix that leaves one position: an emoji's token cannot fit beside it. That document is the job's
    bad_text record; the others (a document that fits) are written, not lost with it."""
    from seq2seq_kit import summarize_corpus

    path = tmp_path / "model"
    shutil.copytree(paths("tiny64"), path)
    config = json.loads((path / "config.json").read_text())
    pipe = pipeline("summarization", model=str(path))
    for n in range(1, 64):                                   # the longest prefix that leaves one position
        pipe.prefix = "word " * n
        if len(pipe.preprocess([""]).rows[0]) == pipe.max_input_length - 1:
            break
    (path / "config.json").write_text(json.dumps({**config, "prefix": pipe.prefix}))
    docs = [{"id": "fits", "text": "A"}, {"id": "emoji", "text": "The tower is tall. \U0001F9D1\U0001F3FF " * 3}]
    out = tmp_path / "out.jsonl"
    result = summarize_corpus(write_jsonl(tmp_path / "docs.jsonl", docs), out, model=path, strategy="map_reduce",
                              max_length=4, progress=False)
    assert (result.written, result.failed) == (1, 1)
    [record] = read_jsonl(out)
    assert record["id"] == "fits" and record["summary_text"] == pipeline("summarization", model=str(path))(
        "A", max_length=4)[0]["summary_text"]
    [error] = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert error["id"] == "emoji" and error["reason"] == "bad_text" and "does not fit" in error["message"]


def test_a_refused_character_is_named_where_the_text_has_it_behind_a_prefix(paths, tmp_path):
    """The document is tokenized behind the config's prefix; the error names the character's place in the text
    (as strategy="truncate" does), not in prefix + text."""
    path = tmp_path / "model"
    shutil.copytree(paths("tiny64"), path)
    config = json.loads((path / "config.json").read_text())
    (path / "config.json").write_text(json.dumps({**config, "prefix": "summarize: "}))
    pipe = pipeline("summarization", model=str(path))
    where = "lone surrogate '\\ud800' at character 2,"
    with pytest.raises(DocumentError, match=re.escape(f"input 1: text holds a {where}")):
        pipe(["Fine.", "ok\ud800 fine. " * 3], strategy="map_reduce", max_length=4)
    with pytest.raises(ValueError, match=re.escape(where)):
        pipe("ok\ud800 fine. " * 3, max_length=4)


def test_summaries_too_long_are_explained_to_the_cli_and_corpus_user(paths, tmp_path, capsys):
    """Chunk summaries as long as the window never shrink: after max_depth rounds the CLI and a corpus job say to
    lower --max-length / max_length (they have no map_kwargs), not the library's advice."""
    from seq2seq_kit import summarize_corpus
    from seq2seq_kit.cli import main

    path, doc = paths("tiny64"), "The tower is tall and it is in Paris. " * 40
    (tmp_path / "doc.txt").write_text(doc)
    code = main(["summarize", "--file", str(tmp_path / "doc.txt"), "--model", str(path), "--strategy", "map-reduce",
                 "--max-length", "60", "--min-length", "59"])
    err = capsys.readouterr().err.strip()
    assert code == 1 and err.endswith("(max_depth=3); a smaller --max-length shortens the chunks' summaries"), err
    (tmp_path / "docs.jsonl").write_text(json.dumps({"id": 1, "text": doc}) + "\n")
    result = summarize_corpus(tmp_path / "docs.jsonl", tmp_path / "out.jsonl", model=path, strategy="map_reduce",
                              max_length=60, min_length=59, progress=False)
    error = json.loads((tmp_path / "out.jsonl.errors.jsonl").read_text())
    assert result.failed == 1 and error["reason"] == "too_long"
    assert error["message"].endswith("; a smaller max_length (--max-length) shortens the chunks' summaries")
    result = summarize_corpus(tmp_path / "docs.jsonl", tmp_path / "new.jsonl", model=path, strategy="map_reduce",
                              max_new_tokens=59, min_new_tokens=58, progress=False)
    error = json.loads((tmp_path / "new.jsonl.errors.jsonl").read_text())      # the length it was given by
    assert result.failed == 1 and error["message"].endswith("; a smaller max_new_tokens (--max-new-tokens) "
                                                            "shortens the chunks' summaries"), error
