"""Corpus jobs on hostile and messy input: a bad record never stops a job, a file no job of ours wrote is never
overwritten, duplicate ids resolve in input order, the job's identity covers its input and weights, ids keep
their type, and a failing file is named."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import sys
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from helpers import GEN, by_id, make_docs, read_jsonl, write_jsonl
from seq2seq_kit import pipeline, summarize_corpus
from seq2seq_kit.corpus import output as output_module


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return checkpoint("tiny")


@pytest.fixture(scope="module")
def summary(tiny):
    pipe = pipeline("summarization", model=str(tiny))
    return lambda text: pipe(text, truncation=True, **GEN)[0]["summary_text"]


def run(docs_path, out, model, **kwargs):
    return summarize_corpus(docs_path, out, model=model, progress=False, **{"batch_size": 2, **GEN, **kwargs})


def write_lines(path, lines):
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def errors_of(out) -> dict:
    return {e["where"]: e for e in read_jsonl(out.with_name(out.name + ".errors.jsonl"))}


def test_text_and_ids_the_tokenizer_cannot_take_are_bad_records(tmp_path, tiny):
    """Valid JSON, not Unicode: a lone surrogate in a text or an id is that record's error, every re-run too."""
    good = make_docs(3)
    lines = [json.dumps(good[0]), '{"id": "s", "text": "abc \\ud800 def"}', '{"id": "\\udfff", "text": "fine"}',
             json.dumps(good[1]), json.dumps({"id": 2**63, "text": "x"}), json.dumps({"id": -2**63 - 1, "text": "x"}),
             json.dumps(good[2])]
    path, out = write_lines(tmp_path / "docs.jsonl", lines), tmp_path / "out.jsonl"
    for _ in range(2):
        result = run(path, out, tiny)
        assert result.failed == 4
    assert set(by_id(read_jsonl(out))) == {"doc0", "doc1", "doc2"}
    errors = errors_of(out)
    assert errors["docs.jsonl:2"]["reason"] == "bad_text"
    assert errors["docs.jsonl:2"]["message"] == ("docs.jsonl:2: field 'text' holds a lone surrogate '\\ud800' at "
                                                 "character 4, which is not Unicode text (a broken \\uXXXX escape?)")
    assert errors["docs.jsonl:3"]["reason"] == "bad_id" and errors["docs.jsonl:3"]["id"] == 3   # the line number
    assert "outside the 64-bit range" in errors["docs.jsonl:5"]["message"]
    assert errors["docs.jsonl:6"]["reason"] == "bad_id"


def test_a_text_the_tokenizer_refuses_fails_alone(tmp_path, tiny, monkeypatch):
    """Whatever the tokenizer refuses (here: a text it raises on) is that record's error, the rest summarized."""
    from seq2seq_kit.summarization import SummarizationPipeline

    original = SummarizationPipeline.preprocess

    def picky(self, texts, truncation=None):
        if any("poison" in t for t in texts):
            raise TypeError("TextEncodeInput must be Union[TextInputSequence, Tuple[InputSequence, InputSequence]]")
        return original(self, texts, truncation)

    monkeypatch.setattr(SummarizationPipeline, "preprocess", picky)
    docs = make_docs(3) + [{"id": "p", "text": "poison pill"}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    for written in (3, 0):   # a re-run fails it again: good to read but never written, its error stays
        result = run(path, out, tiny)
        assert (result.written, result.failed) == (written, 1)
        error = errors_of(out)["docs.jsonl:4"]
        assert error["reason"] == "bad_text" and "TextEncodeInput" in error["message"]
    assert json.loads(out.with_name("out.jsonl.meta.json").read_text())["counts"]["failed"] == 1


@pytest.mark.parametrize("name", ["notes.txt", "notes.txt.errors.jsonl"])
def test_a_file_no_job_wrote_is_refused_and_kept(tmp_path, tiny, name):
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(2))
    theirs = tmp_path / name
    theirs.write_text("my notes, one line without a newline")
    with pytest.raises(FileExistsError, match=rf"{name} exists and no notes.txt.meta.json says a corpus job wrote "
                                              r"it.*--overwrite"):
        run(path, tmp_path / "notes.txt", "no/such-model")     # refused before the model is looked up
    assert theirs.read_text() == "my notes, one line without a newline"
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(["docs.jsonl", name])   # nothing else written
    (tmp_path / "notes.txt.meta.json").write_text('{"counts": 3}')                   # not a job's meta file
    with pytest.raises(ValueError, match=r"notes.txt.meta.json is not a corpus job's meta file"):
        run(path, tmp_path / "notes.txt", tiny)
    assert run(path, tmp_path / "notes.txt", tiny, overwrite=True).written == 2


@pytest.mark.parametrize("first, second", [("out.jsonl", "out.jsonl.errors.jsonl"), ("out.jsonl", "out.jsonl.meta.json"),
                                           ("out.jsonl.errors.jsonl", "out.jsonl")])
def test_another_jobs_files_are_refused_even_empty_or_with_overwrite(tmp_path, tiny, first, second):
    """A job's errors file is empty when its records were all good: a second job whose output is one of the first
    job's files, or whose errors file is the first job's output, must not take it over, with overwrite neither."""
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(2))
    assert run(path, tmp_path / first, tiny).written == 2
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    assert before[first + ".errors.jsonl"] == b""
    for overwrite in (False, True):
        with pytest.raises(FileExistsError, match=rf"belongs to the corpus job of {re.escape(first)}\.meta\.json"):
            run(path, tmp_path / second, tiny, overwrite=overwrite)
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert run(path, tmp_path / first, tiny).skipped == 2                          # the first job resumes


def test_an_errors_file_is_locked_with_its_output(tmp_path, tiny):
    """Two jobs starting together: the one whose output is the other's errors file waits for no meta file."""
    out = tmp_path / "out.jsonl"
    first = output_module.Output(out)
    first.open({"model": "m"}, revision=None, overwrite=False)
    try:
        first.meta_path.unlink()                                       # as before the first job wrote it
        with pytest.raises(BlockingIOError, match="is being written by another job"):
            run(write_jsonl(tmp_path / "docs.jsonl", make_docs(2)), tmp_path / "out.jsonl.errors.jsonl", tiny)
    finally:
        first.close()


def test_a_null_id_is_a_bad_id_and_a_null_text_is_named(tmp_path, tiny, summary):
    """A null id is no id: not the line's number (which another record may have as its id, and lose to it)."""
    lines = ['{"id": null, "text": "the tower is tall"}', '{"id": 1, "text": "the bridge is long"}',
             '{"id": "t", "text": null}', '{"text": "no id here"}']
    path, out = write_lines(tmp_path / "docs.jsonl", lines), tmp_path / "out.jsonl"
    result = run(path, out, tiny)
    assert (result.written, result.failed) == (2, 2)
    assert by_id(read_jsonl(out)).keys() == {1, 4}
    assert by_id(read_jsonl(out))[1]["summary_text"] == summary("the bridge is long")
    errors = errors_of(out)
    assert errors["docs.jsonl:1"]["reason"] == "bad_id" and "field 'id' is null" in errors["docs.jsonl:1"]["message"]
    assert errors["docs.jsonl:3"]["message"] == "docs.jsonl:3: field 'text' is null"


@pytest.mark.parametrize("batch_size", [1, 8])
def test_duplicate_ids_first_in_input_order_wins(tmp_path, tiny, summary, batch_size):
    """Length-sorted batches put the later, longer document first: the first in the input still wins, and the
    message names the later line as the repeat (within a chunk: batch_size 8; across chunks: 1)."""
    short, long = "the tower is tall", " ".join(make_docs(1)[0]["text"] for _ in range(3))
    docs = [{"id": "x", "text": short}] + make_docs(3) + [{"id": "x", "text": long}, {"id": 5, "text": short}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    result = run(path, out, tiny, batch_size=batch_size)
    assert (result.written, result.failed) == (5, 1)
    assert by_id(read_jsonl(out))["x"]["summary_text"] == summary(short)
    assert errors_of(out)["docs.jsonl:5"]["message"] == ("docs.jsonl:5 repeats id 'x' of docs.jsonl:1; only the "
                                                         "first is used")


def test_the_job_identity_covers_input_and_weights(tmp_path, tiny):
    model = shutil.copytree(tiny, tmp_path / "model")
    a = write_jsonl(tmp_path / "a.jsonl", [{"text": d["text"]} for d in make_docs(2)])      # ids: line numbers
    b = write_jsonl(tmp_path / "b.jsonl", [{"text": d["text"]} for d in make_docs(3, seed=1)])
    out = tmp_path / "out.jsonl"
    run(a, out, model)
    with pytest.raises(ValueError, match=rf"written with input='{a}'; this run asks for input='{b}'"):
        run(b, out, model)
    tensors = load_file(model / "model.safetensors")                  # other weights of the same shapes
    name = next(iter(tensors))
    tensors[name] = tensors[name] + 1.0
    save_file(tensors, model / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=r"written with model.safetensors='\d+:[0-9a-f]+'; this run asks for "
                                         r"model.safetensors='\d+:[0-9a-f]+'"):
        run(a, out, model)
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert set(meta["job"]["files"]) >= {"config.json", "model.safetensors", "vocab.json", "merges.txt"}


def test_parquet_output_needs_pyarrow_before_any_work(tmp_path, monkeypatch):
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(2))
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(ImportError, match="Parquet input and output need pyarrow"):
        run(path, tmp_path / "out.parquet", "no/such-model")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]


def test_parquet_ids_keep_their_type(tmp_path, tiny):
    pq = pytest.importorskip("pyarrow.parquet")
    docs = [{"id": 7, "text": "the tower is tall"}, {"id": "7", "text": "the base is square"},
            {"id": 8, "text": "the club finished second"}, {"id": 2**64, "text": "x"}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.parquet"
    for _ in range(2):   # a re-run reads the ids back with their type: nothing written twice
        result = run(path, out, tiny)
        assert result.failed == 2
    assert pq.read_table(out).column("id").to_pylist() == [7, 8]
    errors = errors_of(out)
    assert errors["docs.jsonl:2"]["message"] == (
        "docs.jsonl:2: id '7' is a string, but the job's first id (7, docs.jsonl:1) is a integer and a Parquet "
        "output's id column holds one type; use one type for every id, or write JSONL")
    assert errors["docs.jsonl:4"]["reason"] == "bad_id"


def test_parquet_strings_that_are_not_utf8_are_bad_records(tmp_path, tiny, summary):
    """A string column holding bytes that are not UTF-8 (a writer that did not check, e.g. Latin-1 text): that
    record's text or id is refused (bad_text, bad_id), as a JSONL line's lone surrogate is; the rest are summarized."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    not_utf8 = lambda values: pa.array(values, pa.binary()).view(pa.string())   # stored unchecked, as such writers do
    docs = make_docs(3)
    texts = [docs[0]["text"].encode(), b"caf\xe9 au lait", b"hot", docs[2]["text"].encode()]
    table = pa.table({"id": not_utf8([b"doc0", b"doc1", b"caf\xe9", b"doc2"]), "text": not_utf8(texts)})
    path, out = tmp_path / "docs.parquet", tmp_path / "out.jsonl"
    pq.write_table(table, path)
    result = run(path, out, tiny)
    assert (result.written, result.failed) == (2, 2)
    assert {i: r["summary_text"] for i, r in by_id(read_jsonl(out)).items()} == {
        "doc0": summary(docs[0]["text"]), "doc2": summary(docs[2]["text"])}
    errors = errors_of(out)
    assert errors["docs.parquet:2"]["message"] == ("docs.parquet:2: field 'text' holds a lone surrogate '\\udce9' at "
                                                   "character 3, which is not Unicode text (bytes that are not UTF-8 "
                                                   "in the file)")
    assert errors["docs.parquet:3"]["reason"] == "bad_id"


def test_an_empty_parquet_output_is_taken_as_an_empty_jsonl_one(tmp_path, tiny):
    """An empty file at the output path (touch, mktemp) holds nothing a job could lose: taken over for Parquet as for
    JSONL, not refused as an unreadable Parquet file."""
    pq = pytest.importorskip("pyarrow.parquet")
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(2))
    for name in ("out.jsonl", "out.parquet"):
        (tmp_path / name).touch()
        assert run(path, tmp_path / name, tiny).written == 2
    assert set(pq.read_table(tmp_path / "out.parquet").column("id").to_pylist()) == {"doc0", "doc1"}


@pytest.mark.parametrize("output", ["notes.txt/out.jsonl", "notes.txt/sub/out.parquet"])
def test_an_output_under_a_file_is_named(tmp_path, tiny, output):
    """--output notes.txt/out.jsonl, where notes.txt is a file: said so, not "[Errno 17] File exists: notes.txt"."""
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(2))
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(NotADirectoryError, match=r"notes.txt is a file, so the output .* cannot be written under it"):
        run(path, tmp_path / output, tiny)
    assert (tmp_path / "notes.txt").read_text() == "mine"


def test_a_corrupt_parquet_input_is_named(tmp_path):
    bad = tmp_path / "docs.parquet"
    bad.write_bytes(b"PAR1 this is not really parquet")
    with pytest.raises(ValueError, match=r"docs.parquet is not a readable Parquet file"):
        run(bad, tmp_path / "out.jsonl", "no/such-model")


def test_a_full_disk_names_the_file(tmp_path, tiny, monkeypatch):
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(2)), tmp_path / "out.jsonl"

    class FullDisk:   # the output module's os, whose write finds no space
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(output_module, "os", FullDisk())
    with pytest.raises(OSError, match=rf"cannot write {out}: No space left on device"):
        run(path, out, tiny)
    monkeypatch.undo()
    assert run(path, out, tiny).written == 2      # the next run, with room, finishes the job


def test_a_utf16_input_is_not_read_as_json(tmp_path, tiny):
    """A line that is not UTF-8 is invalid_json (json.loads on bytes would guess UTF-16 and take the file); a file
    of such lines only holds no JSON object, and is refused before any work."""
    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_bytes("".join(json.dumps(d) + "\n" for d in make_docs(2)).encode("utf-16-le"))
    with pytest.raises(ValueError, match=r"docs.jsonl:1 is not a JSON object, nor is any line of the first"):
        run(path, out, tiny)
    assert not out.exists()
    good = json.dumps(make_docs(1)[0]) + "\n"
    path.write_bytes(good.encode("utf-8") + "".join(json.dumps(d) + "\n" for d in make_docs(2)).encode("utf-16-le"))
    result = run(path, out, tiny)
    assert result.written == 1 and result.failed >= 2
    assert {e["reason"] for e in errors_of(out).values()} == {"invalid_json"}


def test_a_utf8_bom_and_crlf_lines_are_read(tmp_path, tiny, summary):
    """A Windows tool's JSONL: a UTF-8 byte order mark before line 1 (no part of its JSON), CRLF line ends."""
    docs = make_docs(3)
    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + "".join(json.dumps(d) + "\r\n" for d in docs).encode("utf-8"))
    result = run(path, out, tiny)
    assert (result.written, result.skipped, result.failed) == (3, 0, 0) and not errors_of(out)
    assert {i: r["summary_text"] for i, r in by_id(read_jsonl(out)).items()} == {d["id"]: summary(d["text"])
                                                                                for d in docs}
    path.write_bytes(b"\xef\xbb\xbf\r\n" + json.dumps(docs[0]).encode("utf-8"))   # a BOM alone: a blank line
    assert (run(path, tmp_path / "one.jsonl", tiny).written, run(path, tmp_path / "one.jsonl", tiny).skipped) == (1, 1)


def test_a_file_name_that_is_not_utf8_is_refused_before_any_work(tmp_path, tiny):
    """A name of Latin-1 bytes (b"caf\\xe9.jsonl"): its ids ("caf\\udce9.jsonl:1"), errors and the meta file's input
    path cannot be written as UTF-8, so the job is refused up front, naming the file, not stopped mid-way."""
    folder = tmp_path / "docs"
    folder.mkdir()
    try:
        bad = write_jsonl(Path(os.fsdecode(os.fsencode(folder) + b"/caf\xe9.jsonl")), make_docs(2))
    except OSError:
        pytest.skip("this file system takes only UTF-8 names")
    write_jsonl(folder / "b.jsonl", make_docs(2, seed=1))
    for path in (folder, bad):
        with pytest.raises(ValueError, match=r"input path b'.*caf\\xe9.jsonl' is not UTF-8; rename it"):
            run(path, tmp_path / "out.jsonl", tiny)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs"]


def test_a_pipe_as_input_is_named(tmp_path, tiny):
    fifo = tmp_path / "docs.jsonl"
    os.mkfifo(fifo)
    with pytest.raises(ValueError, match="is not a regular file or a folder .a pipe or a device."):
        run(fifo, tmp_path / "out.jsonl", tiny)


def test_a_broken_error_line_is_named_as_an_error_record(tmp_path, tiny):
    path, out = write_lines(tmp_path / "docs.jsonl", ["not json", *map(json.dumps, make_docs(2)), "[1]"]), \
        tmp_path / "out.jsonl"
    run(path, out, tiny)
    errors = out.with_name(out.name + ".errors.jsonl")
    lines = errors.read_text().splitlines()
    errors.write_text("\n".join([lines[0], "garbage", *lines[1:]]) + "\n")
    with pytest.raises(ValueError, match="errors.jsonl:2 is not an error record"):
        run(path, out, tiny)


def test_a_short_write_is_finished(tmp_path, tiny, monkeypatch):
    """os.write may take part of a result's bytes (a signal, a pipe, a network file system): the rest is written,
    every record whole."""
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    run(path, tmp_path / "whole.jsonl", tiny)

    class ShortWrites:   # the output module's os, whose write takes 5 bytes at a time
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            return os.write(fd, data[:5])

    monkeypatch.setattr(output_module, "os", ShortWrites())
    assert run(path, out, tiny).written == 3
    assert out.read_bytes() == (tmp_path / "whole.jsonl").read_bytes()


def test_each_result_is_fsynced_before_the_next(tmp_path, tiny, monkeypatch):
    """Crash safety: every write to the output or errors file is followed by an fsync of that file before anything
    else is written (what was reported written survives a power cut)."""
    docs = make_docs(3) + [{"id": "e", "text": ""}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    events = []

    class Recorder:   # the output module's os, recording writes and fsyncs by file
        def __getattr__(self, name):
            return getattr(os, name)

        def write(self, fd, data):
            events.append(("write", os.path.realpath(f"/proc/self/fd/{fd}")))
            return os.write(fd, data)

        def fsync(self, fd):
            events.append(("fsync", os.path.realpath(f"/proc/self/fd/{fd}")))
            return os.fsync(fd)

    monkeypatch.setattr(output_module, "os", Recorder())
    assert run(path, out, tiny).written == 3
    writes = [(i, f) for i, (what, f) in enumerate(events) if what == "write"]
    assert {f for _, f in writes} == {os.path.realpath(out), os.path.realpath(out) + ".errors.jsonl"}
    for i, f in writes:
        assert events[i + 1] == ("fsync", f), events


def test_ids_at_the_edges_of_their_types(tmp_path, tiny):
    """A JSON true/false is no integer id (Python's bool is an int: it was written as id true); the ends of the
    64-bit range are ids."""
    lines = ['{"id": true, "text": "the tower is tall"}', json.dumps({"id": 2**63 - 1, "text": "the bridge is long"}),
             json.dumps({"id": -2**63, "text": "the club finished second"}), '{"id": false, "text": "its base"}']
    path, out = write_lines(tmp_path / "docs.jsonl", lines), tmp_path / "out.jsonl"
    result = run(path, out, tiny)
    assert (result.written, result.failed) == (2, 2)
    assert sorted(r["id"] for r in read_jsonl(out)) == [-2**63, 2**63 - 1]
    errors = errors_of(out)
    assert [(e["id"], e["reason"], e["message"]) for e in errors.values()] == [
        (1, "bad_id", "docs.jsonl:1: field 'id' must be a string or an integer, got True"),
        (4, "bad_id", "docs.jsonl:4: field 'id' must be a string or an integer, got False")]
