"""summarize_corpus, local engine: records, length-sorted batches, resume, bad records, settings, Parquet,
a killed run, and the CLI's --input jobs. On the "tiny" random checkpoint; summaries are checked against
the pipeline (itself checked against transformers elsewhere)."""

from __future__ import annotations

import json
import os
import re
import logging
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from helpers import GEN, by_id, make_docs, read_jsonl, write_jsonl
from test_families_pipeline import marian_path  # noqa: F401 (a fixture)
from seq2seq_kit import Engine, Tokenizer, pipeline, summarize_corpus
from seq2seq_kit.cli import main
from seq2seq_kit.corpus.output import Output

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return checkpoint("tiny")


@pytest.fixture(scope="module")
def reference(tiny):
    """The pipeline's summary, token counts and output token count of a text, one text at a time."""
    pipe = pipeline("summarization", model=str(tiny))
    tok = Tokenizer.from_pretrained(tiny)
    cache = {}

    def get(text: str) -> dict:
        if text not in cache:
            out = pipe(text, return_tensors=True, truncation=True, **GEN)[0]["summary_token_ids"]
            ids = out.tolist()[1:]    # after the decoder start token
            cache[text] = {"summary_text": pipe(text, truncation=True, **GEN)[0]["summary_text"],
                           "input_tokens": min(len(tok(text)["input_ids"]), pipe.max_input_length),
                           "output_tokens": ids.index(2) + 1 if 2 in ids else len(ids)}
        return cache[text]

    return get


def run(docs_path, out, tiny, **kwargs):
    return summarize_corpus(docs_path, out, model=tiny, progress=False, **{"batch_size": 3, **GEN, **kwargs})


# ---------------------------------------------------------------------------------------------- records

def test_records_match_the_pipeline_and_meta(tmp_path, tiny, reference, caplog):
    caplog.set_level(logging.INFO, logger="seq2seq_kit")
    docs = make_docs(10)
    out = tmp_path / "out" / "summaries.jsonl"
    result = run(write_jsonl(tmp_path / "docs.jsonl", docs), out, tiny)
    assert (result.written, result.skipped, result.failed, result.truncated) == (10, 0, 0, 0)
    records = by_id(read_jsonl(out))
    assert set(records) == {d["id"] for d in docs}
    for d in docs:
        assert records[d["id"]] == {"id": d["id"], **reference(d["text"])}
    meta = json.loads((tmp_path / "out" / "summaries.jsonl.meta.json").read_text())
    job = meta["job"]
    assert job["model"] == str(Path(tiny).resolve()) and job["commit"] is None and job["dtype"] == "float32"
    assert (job["text_field"], job["id_field"]) == ("text", "id")
    gen = job["generation"]   # resolved: the kwargs, the checkpoint's ids, the library defaults
    assert (gen["max_length"], gen["num_beams"], gen["eos_token_id"], gen["decoder_start_token_id"],
            gen["length_penalty"]) == (9, 2, [2], 2, 1.0)
    assert meta["counts"] == {"summaries": 10, "failed": 0, "truncated": 0}
    assert not (tmp_path / "out" / "summaries.jsonl.errors.jsonl").read_text()
    assert "done 10, skipped 0" in caplog.text


@pytest.mark.parametrize("strategy", ["truncate", "map_reduce"])
def test_a_job_asking_for_generates_dict_writes_the_same_records(tmp_path, tiny, reference, strategy):
    """return_dict_in_generate=True (a generate setting a job takes and records): the engine answers such a request
    with a GenerateOutput, which the truncate strategy's worker indexed as a tensor (TypeError, its meta file
    written); its records are the summaries, as the pipeline's."""
    docs = make_docs(3)
    out = tmp_path / "summaries.jsonl"
    result = run(write_jsonl(tmp_path / "docs.jsonl", docs), out, tiny, return_dict_in_generate=True,
                 strategy=strategy)
    assert result.written == 3
    for record in read_jsonl(out):
        text = next(d["text"] for d in docs if d["id"] == record["id"])
        assert {k: record[k] for k in ("summary_text", "output_tokens")} == \
            {k: reference(text)[k] for k in ("summary_text", "output_tokens")}


def test_stop_strings_end_summaries_as_the_pipelines(tmp_path, tiny):
    """stop_strings reach the job's engine with the pipeline's tokenizer: each summary is pipe()'s with them, and
    the meta file keeps them among the job's settings."""
    pipe = pipeline("summarization", model=str(tiny))
    docs = make_docs(6, seed=2)
    first = pipe(docs[0]["text"], return_tensors=True, truncation=True, **GEN)[0]["summary_token_ids"].tolist()
    stops = [pipe.tokenizer.convert_tokens_to_string(pipe.tokenizer.convert_ids_to_tokens(first[1:4]))[-3:]]
    out = tmp_path / "out" / "summaries.jsonl"
    run(write_jsonl(tmp_path / "docs.jsonl", docs), out, tiny, stop_strings=stops)
    records = by_id(read_jsonl(out))
    for d in docs:
        want = pipe(d["text"], truncation=True, stop_strings=stops, **GEN)[0]["summary_text"]
        assert records[d["id"]]["summary_text"] == want
    assert records[docs[0]["id"]]["summary_text"] != pipe(docs[0]["text"], truncation=True, **GEN)[0]["summary_text"]
    meta = json.loads((tmp_path / "out" / "summaries.jsonl.meta.json").read_text())
    assert meta["job"]["generation"]["stop_strings"] == stops


def test_hub_arguments_reach_every_load_as_given(tmp_path, tiny, monkeypatch):
    """token=False ("send no token", not "the logged-in one") and local_files_only reach the Hub lookups."""
    from seq2seq_kit import hub

    seen, resolve = [], hub.resolve
    monkeypatch.setattr(hub, "resolve", lambda *a, **kw: seen.append(kw) or resolve(*a, **kw))
    run(write_jsonl(tmp_path / "docs.jsonl", make_docs(2)), tmp_path / "out.jsonl", tiny, token=False,
        local_files_only=True)
    given = [kw for kw in seen if set(kw) - {"purpose"}]     # the others read a directory already resolved
    assert seen[0] in given and {kw["purpose"] for kw in given} >= {"all", "tokenizer"}, seen
    assert all(kw.get("token") is False and kw.get("local_files_only") is True for kw in given), given


def test_documents_go_to_the_engine_longest_first_per_chunk(tmp_path, tiny, monkeypatch):
    docs = make_docs(18, seed=1)      # batch_size 3: chunks of 12 and 6 documents
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    real, submitted, overlap = Engine.submit, [], []

    def spy(self, input_ids, **kwargs):
        submitted.append(len(input_ids))
        overlap.append(self.queue_depth + len(self.running))
        return real(self, input_ids, **kwargs)

    monkeypatch.setattr(Engine, "submit", spy)
    run(path, tmp_path / "sorted.jsonl", tiny)
    sorted_order, submitted[:] = list(submitted), []
    run(path, tmp_path / "unsorted.jsonl", tiny, sort_by_length=False)
    tok = Tokenizer.from_pretrained(tiny)
    lengths = [len(tok(d["text"])["input_ids"]) for d in docs]
    assert submitted == lengths                                                          # input order
    assert sorted_order == sorted(lengths[:12], reverse=True) + sorted(lengths[12:], reverse=True)
    assert max(overlap) >= 3            # documents wait in the engine while others run: its rows stay busy
    # Same summaries either way: the order documents enter the engine does not change a result.
    assert by_id(read_jsonl(tmp_path / "sorted.jsonl")) == by_id(read_jsonl(tmp_path / "unsorted.jsonl"))


def test_a_batch_size_past_the_engines_default_queue(tmp_path, tiny):
    """The worker keeps two batches of documents submitted while one decodes: batch_size 1100 queues more than the
    engine's default max_queue (1024), which raised EngineFull mid-job; the worker sizes the queue to hold them."""
    docs = [{"id": f"d{i}", "text": "the tower is tall"} for i in range(2300)]
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    run(path, tmp_path / "out.jsonl", tiny, batch_size=1100, max_length=3, num_beams=1)
    assert len(by_id(read_jsonl(tmp_path / "out.jsonl"))) == 2300


# ---------------------------------------------------------------------------------------------- resume

def test_resume_skips_written_ids_and_drops_a_torn_line(tmp_path, tiny, caplog):
    caplog.set_level(logging.INFO, logger="seq2seq_kit")
    docs = make_docs(7, seed=2)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    run(path, out, tiny)
    full = by_id(read_jsonl(out))
    # A previous run wrote two records (kept as they are) and was killed while writing a third.
    earlier = [{"id": "doc1", "summary_text": "EARLIER 1"}, {"id": "doc4", "summary_text": "EARLIER 4"}]
    out.write_text("".join(json.dumps(r) + "\n" for r in earlier) + '{"id": "doc0", "summ', encoding="utf-8")
    caplog.clear()
    result = run(path, out, tiny)
    assert "dropped an incomplete last line" in caplog.text and "done 5, skipped 2" in caplog.text
    assert (result.written, result.skipped) == (5, 2)
    records = by_id(read_jsonl(out))
    assert records == {**full, **{r["id"]: r for r in earlier}}
    before = out.read_bytes()
    assert run(path, out, tiny).written == 0 and out.read_bytes() == before


def test_a_job_recorded_before_generation_gained_settings_resumes(tmp_path, tiny):
    """A meta file written by an earlier version, whose generation settings lack ones added since at their
    defaults (output_attentions / output_hidden_states: False), resumes (it was refused as another job's); a
    setting that differs is still refused."""
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(5, seed=4)), tmp_path / "out.jsonl"
    run(path, out, tiny)
    full = by_id(read_jsonl(out))
    meta_path = tmp_path / "out.jsonl.meta.json"
    meta = json.loads(meta_path.read_text())
    for name in ("output_attentions", "output_hidden_states"):
        assert meta["job"]["generation"].pop(name) is False
    assert "strategy" not in meta["job"]        # recorded only when not the default, as before map_reduce existed
    meta_path.write_text(json.dumps(meta))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]))                                  # that version wrote 2 of the 5
    assert run(path, out, tiny).written == 3 and by_id(read_jsonl(out)) == full
    meta["job"]["generation"]["num_beams"] = 3
    meta_path.write_text(json.dumps(meta))
    with pytest.raises(ValueError, match=r"out.jsonl was written with num_beams=3; this run asks for num_beams="):
        run(path, out, tiny)


@pytest.mark.parametrize("strategy", ["truncate", "map_reduce"])
def test_a_seeded_sampling_job_draws_each_document_as_it_would_alone(tmp_path, tiny, strategy):
    """seed=N: each document's summary is pipe(text, generator=torch.Generator().manual_seed(N))'s, alone, however
    the documents share the engine (batch sizes 1 and 3); the meta file records the seed, and a re-run with another
    one is refused as another job."""
    docs = make_docs(5, seed=5)
    pipe = pipeline("summarization", model=str(tiny))
    sampling = {"do_sample": True, "temperature": 2.0, "num_beams": 1, "strategy": strategy}
    alone = {d["id"]: pipe(d["text"], generator=torch.Generator().manual_seed(7), **{**GEN, **sampling})[0][
        "summary_text"] for d in docs}
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    for batch_size in (1, 3):
        out = tmp_path / f"out{batch_size}.jsonl"
        run(path, out, tiny, seed=7, batch_size=batch_size, **sampling)
        assert {i: r["summary_text"] for i, r in by_id(read_jsonl(out)).items()} == alone
    assert json.loads((tmp_path / "out3.jsonl.meta.json").read_text())["job"]["seed"] == 7
    assert len(set(alone.values())) == len(docs)       # (the documents' own draws: five summaries)
    with pytest.raises(ValueError, match=r"out3.jsonl was written with seed=7; this run asks for seed=8"):
        run(path, tmp_path / "out3.jsonl", tiny, seed=8, **sampling)


@pytest.mark.parametrize("seed", [-1, 2**64, 1.5, True, "7"])
def test_a_bad_seed_is_refused_before_any_work(tmp_path, tiny, seed):
    with pytest.raises(ValueError, match=r"seed must be an integer in \[0, 2\*\*64\)"):
        run(tmp_path / "missing.jsonl", tmp_path / "out.jsonl", tiny, seed=seed, do_sample=True)


def test_a_broken_line_before_the_last_is_an_error(tmp_path, tiny):
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    run(path, out, tiny)
    lines = out.read_text().splitlines()
    out.write_text(lines[0] + "\nnot json\n" + lines[1] + "\n")
    with pytest.raises(ValueError, match=r"out.jsonl:2 is not a summary record; fix or remove that line"):
        run(path, out, tiny)


def test_a_stopped_job_cancels_its_documents_in_the_engine(tmp_path, tiny):
    """The results stream closed early (Ctrl-C in the driver's write loop) cancels the documents still in the
    engine: nobody writes them, and the engine's close waited for the running ones to finish (9 s of a 12 s run
    on the CLI, a batch of beam-4 summaries, before `interrupted`)."""
    from seq2seq_kit.corpus.reading import plan_chunks
    from seq2seq_kit.corpus.worker import Worker

    path = write_jsonl(tmp_path / "in.jsonl", [{"id": i, "text": f"word{i} " * (10 + i)} for i in range(8)])
    chunks, _ = plan_chunks([path], 8, folder=False)
    worker = Worker(model=str(tiny), hub_kwargs={}, device=None, dtype=None, eos_token_ids=[2],
                    generate_kwargs=dict(num_beams=2, min_new_tokens=60, max_new_tokens=60), text_field="text",
                    id_field="id", done=frozenset(), batch_size=2, sort_by_length=False)
    submitted = []
    submit = worker.engine.submit
    worker.engine.submit = lambda *args, **kwargs: submitted.append(submit(*args, **kwargs)) or submitted[-1]
    results = worker.process_stream(chunks)
    first = next(results)                   # documents 0 (and 1, the same step) done; 2 and 3 waited behind them
    results.close()
    assert first["records"][0]["id"] == 0 and len(submitted) == 4
    assert [r.done() for r in submitted] == [True] * 4
    assert [r.future.cancelled() for r in submitted[::2]] == [False, True]    # 1: done, or cancelled just before
    assert submitted[3].future.cancelled()
    worker.engine.close()


def test_killed_run_resumes_with_every_id_exactly_once(tmp_path, tiny):
    """A real process, slowed per result, SIGKILLed once 4 summaries are written; the re-run completes it."""
    docs = make_docs(24, seed=3)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    script = ("import sys, time\nfrom seq2seq_kit.corpus import summarize_corpus, worker\n"
              "real = worker.Worker.finished\n"
              "def slow(self, in_flight):\n    time.sleep(0.4)\n    return real(self, in_flight)\n"
              "worker.Worker.finished = slow\n"
              "summarize_corpus(sys.argv[1], sys.argv[2], model=sys.argv[3], batch_size=2, max_length=9, "
              "num_beams=2, progress=False)\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(path), str(out), str(tiny)], cwd=REPO_ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 180
    while time.monotonic() < deadline and proc.poll() is None:
        if out.exists() and out.read_bytes().count(b"\n") >= 4:
            break
        time.sleep(0.02)
    assert proc.poll() is None, f"the job ended before it was killed: {proc.stderr.read().decode()[-2000:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    proc.stderr.close()
    written = read_jsonl(out)
    assert 4 <= len(written) < 24 and len(by_id(written)) == len(written)

    result = run(path, out, tiny, batch_size=2)
    assert result.written == 24 - len(written) and result.skipped == len(written)
    run(path, tmp_path / "uninterrupted.jsonl", tiny, batch_size=2)
    assert by_id(read_jsonl(out)) == by_id(read_jsonl(tmp_path / "uninterrupted.jsonl"))


def test_another_job_on_the_same_output_is_refused(tmp_path, tiny):
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(2)), tmp_path / "out.jsonl"
    other = Output(out)
    other.open({"model": "m"}, revision=None, overwrite=False)
    try:
        with pytest.raises(BlockingIOError, match="is being written by another job"):
            run(path, out, tiny)
    finally:
        other.close()
    assert run(path, out, tiny, overwrite=True).written == 2


# ---------------------------------------------------------------------------------------------- bad records

def test_bad_records_go_to_the_errors_file(tmp_path, tiny, reference, caplog):
    caplog.set_level(logging.INFO, logger="seq2seq_kit")
    good = make_docs(3)
    long = {"id": "long", "text": " ".join(["word"] * 300)}       # 302 tokens; the tiny model takes 256
    lines = [json.dumps(good[0]), json.dumps({"id": "nofield", "body": "x"}), json.dumps({"id": "num", "text": 5}),
             json.dumps({"id": "blank", "text": "  \n "}), "{not json", "[1, 2]", json.dumps({"id": 1.5, "text": "x"}),
             "", json.dumps(long), json.dumps(good[1]), json.dumps({"id": "doc0", "text": "a repeated id"}),
             json.dumps({"text": good[2]["text"]})]
    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    result = run(path, out, tiny)
    assert (result.written, result.skipped, result.failed, result.truncated) == (4, 0, 7, 1)
    assert "failed 7 (see " in caplog.text
    records = by_id(read_jsonl(out))
    assert set(records) == {"doc0", "doc1", "long", 12}      # no id field: the line number
    assert records["long"] == {"id": "long", **reference(long["text"])} and records["long"]["input_tokens"] == 256
    assert records[12] == {"id": 12, **reference(good[2]["text"])}
    errors = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert [(e["id"], e["where"], e["reason"]) for e in errors] == [
        ("nofield", "docs.jsonl:2", "missing_field"), ("num", "docs.jsonl:3", "not_a_string"),
        ("blank", "docs.jsonl:4", "empty"), (5, "docs.jsonl:5", "invalid_json"), (6, "docs.jsonl:6", "not_an_object"),
        (7, "docs.jsonl:7", "bad_id"), ("doc0", "docs.jsonl:11", "duplicate_id"),   # found reading
        ("long", "docs.jsonl:9", "truncated")]                                       # found tokenizing
    messages = {e["reason"]: e["message"] for e in errors}
    assert messages["truncated"] == ("docs.jsonl:9 is 302 tokens long; summarized from its first 256 tokens, "
                                     "the most the model takes")
    assert messages["duplicate_id"] == "docs.jsonl:11 repeats id 'doc0' of docs.jsonl:1; only the first is used"
    assert messages["not_a_string"] == "docs.jsonl:3: field 'text' is a int, not a string"
    meta = json.loads((tmp_path / "out.jsonl.meta.json").read_text())
    assert meta["counts"] == {"summaries": 4, "failed": 7, "truncated": 1}
    # A re-run: the bad records still fail (a re-run cannot fix them), the errors file does not grow.
    before = (tmp_path / "out.jsonl.errors.jsonl").read_bytes()
    result = run(path, out, tiny)
    assert (result.written, result.failed) == (0, 7)   # the duplicate is refused again
    assert (tmp_path / "out.jsonl.errors.jsonl").read_bytes() == before


@pytest.mark.parametrize("name", ["out.jsonl", "out.parquet"])
def test_a_record_fixed_in_the_input_leaves_the_errors_on_resume(tmp_path, tiny, reference, name):
    """A record that failed (broken JSON), fixed in the input and the job run again (it resumes: same input path):
    it is summarized, and the errors file and the meta file's counts no longer hold it as failed (they did); the
    other record's error stays."""
    path, out = tmp_path / "docs.jsonl", tmp_path / name
    path.write_text('{"id": "a", "text": "The tower is tall."}\n{"id": "b", "text": "broken\n{"id": "c"}\n')
    assert (run(path, out, tiny).written, run(path, out, tiny).failed) == (1, 2)
    path.write_text('{"id": "a", "text": "The tower is tall."}\n{"id": "b", "text": "fixed now"}\n{"id": "c"}\n')
    result = run(path, out, tiny)
    assert (result.written, result.skipped, result.failed) == (1, 1, 1)
    errors = read_jsonl(Path(str(out) + ".errors.jsonl"))
    assert [(e["where"], e["reason"]) for e in errors] == [("docs.jsonl:3", "missing_field")]
    assert json.loads(Path(str(out) + ".meta.json").read_text())["counts"] == \
        {"summaries": 2, "failed": 1, "truncated": 0}


def test_a_fixed_record_written_by_an_interrupted_run_leaves_the_errors(tmp_path, tiny, monkeypatch):
    """A failed record fixed in the input, summarized by a re-run that was stopped before its end (Ctrl-C, kill):
    the next run, which skips it as written, drops its error too (only places written by the same run were)."""
    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "text": ""}\n{"id": "b", "text": "The tower is tall."}\n')
    assert run(path, out, tiny).failed == 1
    path.write_text('{"id": "a", "text": "fixed now"}\n{"id": "b", "text": "The tower is tall."}\n')
    with monkeypatch.context() as m:
        m.setattr(Output, "finish", lambda self, good: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            run(path, out, tiny)
    assert {r["id"] for r in read_jsonl(out)} == {"a", "b"}
    result = run(path, out, tiny)
    assert (result.written, result.skipped, result.failed) == (0, 2, 0)
    assert not (tmp_path / "out.jsonl.errors.jsonl").read_text()
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["counts"] == \
        {"summaries": 2, "failed": 0, "truncated": 0}


def test_a_repeat_of_an_id_written_before_names_the_summary_kept(tmp_path, tiny, reference):
    """A folder job gains a file that sorts first and repeats an id an earlier run wrote from another file: the
    output keeps that summary, and the errors file says so (it said the new file's record, never summarized, was
    kept)."""
    folder, out = tmp_path / "docs", tmp_path / "out.jsonl"
    folder.mkdir()
    write_jsonl(folder / "b.jsonl", [{"id": "X", "text": "The tower is tall."}])
    assert run(folder, out, tiny).written == 1
    write_jsonl(folder / "a.jsonl", [{"id": "X", "text": "Another text entirely."}])
    result = run(folder, out, tiny)
    assert (result.written, result.skipped, result.failed) == (0, 1, 1)
    assert read_jsonl(out) == [{"id": "X", **reference("The tower is tall.")}]
    [error] = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert error["message"] == ("b.jsonl:1 repeats id 'X' of a.jsonl:1; only one is kept: the summary an earlier "
                                "run wrote for that id, from a.jsonl:1 unless that record was added or fixed since")


@pytest.mark.parametrize("engine", ["local", "ray"])
def test_a_job_with_nothing_left_to_do_loads_no_model(tmp_path, tiny, monkeypatch, engine):
    """A finished job's re-run, or an input of bad records only: its errors and skips are counted without loading
    the model (nor starting or joining Ray), as an empty input finishes."""
    from seq2seq_kit.corpus import driver, ray_engine

    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_text('{"id": "a", "text": "The tower is tall."}\n{"id": "b", "text": ""}\n')
    assert run(path, out, tiny).written == 1
    monkeypatch.setattr(driver, "Worker", lambda **kwargs: pytest.fail("the model was loaded"))
    monkeypatch.setattr(ray_engine, "results", lambda *a, **k: pytest.fail("Ray was asked"))
    monkeypatch.setattr(ray_engine, "require_ray", lambda: SimpleNamespace(is_initialized=lambda: False))
    result = run(path, out, tiny, engine=engine)
    assert (result.written, result.skipped, result.failed) == (0, 1, 1)
    path.write_text('{"id": "c", "text": " "}\n')                      # bad records only: a new job
    result = run(path, tmp_path / "bad.jsonl", tiny, engine=engine)
    assert (result.written, result.skipped, result.failed) == (0, 0, 1)
    assert [e["reason"] for e in read_jsonl(tmp_path / "bad.jsonl.errors.jsonl")] == ["empty"]


@pytest.mark.parametrize("name,content", [
    ("docs.csv", 'id,text\n1,"The tower, in Paris, is tall."\n'),
    ("docs.json", json.dumps([{"id": 1, "text": "The tower is tall."}], indent=1))])
def test_an_input_with_no_json_object_fails_before_loading_a_model(tmp_path, name, content):
    """A CSV or a JSON array (read as JSONL: not a .parquet file) was run whole, every line an invalid_json
    error; refused up front, naming the formats read, before the model loads or an output is written."""
    (tmp_path / name).write_text(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(name)}:1 is not a JSON object, nor is any line of the first "
                                         r"\d+: the input is read as JSONL .* unless it is a .parquet file"):
        summarize_corpus(tmp_path / name, tmp_path / "out.jsonl", model="no/such-model")
    assert not (tmp_path / "out.jsonl").exists()


def test_a_wrong_text_field_fails_before_loading_a_model(tmp_path):
    path = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "body": "x"}, {"id": 2, "body": "y"}])
    with pytest.raises(ValueError, match=r"docs.jsonl:1 has no string field 'text' \(set --text-field; its fields: "
                                         r"id, body\), nor has any record of the first 2"):
        summarize_corpus(path, tmp_path / "out.jsonl", model="no/such-model")


def test_a_misspelt_id_field_fails_before_loading_a_model(tmp_path):
    """A job given an id field no record has would have numbered the records, their ids lost without a word; the
    default "id" may be missing (records are then numbered)."""
    path = write_jsonl(tmp_path / "docs.jsonl", [{"doc_id": "a", "text": "x"}, {"doc_id": "b", "text": "y"}])
    with pytest.raises(ValueError, match=r"docs.jsonl:1 has no field 'docid' \(set --id-field; its fields: doc_id, "
                                         r"text\), nor has any record of the first 2"):
        summarize_corpus(path, tmp_path / "out.jsonl", model="no/such-model", id_field="docid")
    assert not (tmp_path / "out.jsonl").exists()


def test_the_fields_are_checked_on_the_same_records_whatever_the_batch_size(tmp_path, tiny):
    """The first 32 records decide whether the text field is wrong, not the first chunk (4 batches): a job was
    refused with batch_size 1 and ran with batch_size 2 on the same input."""
    docs = [{"id": i, "title": "x"} for i in range(4)] + make_docs(2)
    path = write_jsonl(tmp_path / "docs.jsonl", docs)
    for batch_size in (1, 2):
        result = run(path, tmp_path / f"out{batch_size}.jsonl", tiny, batch_size=batch_size)
        assert (result.written, result.failed) == (2, 4)
    late = write_jsonl(tmp_path / "late.jsonl", [{"id": i, "title": "x"} for i in range(32)] + make_docs(2))
    with pytest.raises(ValueError, match=r"late.jsonl:1 has no string field 'text' .* nor has any record of the "
                                         r"first 32"):
        run(late, tmp_path / "late-out.jsonl", tiny, batch_size=1)


@pytest.mark.parametrize("bad", [dict(device="gpu"), dict(device="cuda:0"), dict(strategy="map_reduce")],
                         ids=["unknown-device", "absent-device", "map-reduce-without-offsets"])
def test_overwrite_keeps_the_output_when_the_job_cannot_start(tmp_path, marian_path, bad):
    """A device this machine lacks, or a strategy the checkpoint's tokenizer cannot run (Marian: no offsets to cut
    at), is refused before the output is opened: --overwrite emptied it first, losing the finished job's results."""
    if bad.get("device") == "cuda:0" and torch.cuda.is_available():
        pytest.skip("this machine has the device")
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    kwargs = dict(progress=False, batch_size=3, max_new_tokens=4)
    assert summarize_corpus(path, out, model=marian_path, **kwargs).written == 3
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("out.jsonl")}
    with pytest.raises(ValueError, match="device|map-reduce cuts a document at its tokens' character offsets"):
        summarize_corpus(path, out, model=marian_path, overwrite=True, **kwargs, **bad)
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir() if f.name.startswith("out.jsonl")} == before


# ---------------------------------------------------------------------------------------------- settings

def test_other_settings_or_model_are_refused_unless_overwrite(tmp_path, tiny, checkpoint):
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    run(path, out, tiny)
    with pytest.raises(ValueError, match=r"out.jsonl was written with max_length=9; this run asks for max_length=10\. "
                                         r"Mixing them is refused.*--overwrite"):
        run(path, out, tiny, max_length=10)
    other = checkpoint("tiny-relu")
    with pytest.raises(ValueError, match=rf"written with config.json=.*model='{Path(tiny).resolve()}'.*; this run "
                                         rf"asks for .*model='{Path(other).resolve()}'"):
        run(path, out, other)
    with pytest.raises(ValueError, match=r"written with dtype='float32'.*asks for dtype='bfloat16'"):
        run(path, out, tiny, dtype="bfloat16")
    result = run(path, out, tiny, max_length=10, overwrite=True)
    assert result.written == 3 and len(read_jsonl(out)) == 3
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["job"]["generation"]["max_length"] == 10
    # A meta file that is not JSON is named.
    meta = tmp_path / "out.jsonl.meta.json"
    saved = meta.read_text()
    meta.write_text('{"job": ')
    with pytest.raises(ValueError, match=r"out.jsonl.meta.json is not valid JSON: .*; remove it, or pass --overwrite "
                                         r"\(overwrite=True\) to replace the output$"):
        run(path, out, tiny, max_length=10)
    meta.write_text(saved)
    # Output without its meta file: the settings that wrote it are unknown.
    (tmp_path / "out.jsonl.meta.json").unlink()
    with pytest.raises(FileExistsError, match="out.jsonl exists and no out.jsonl.meta.json says a corpus job wrote it"):
        run(path, out, tiny, max_length=10)


def test_a_dtype_from_pretrained_refuses_is_refused_before_the_output_is_written(tmp_path, tiny):
    """A dtype typo is refused as from_pretrained refuses it, with nothing written: the meta file recorded it, so
    the re-run with the dtype meant was refused as another job ("written with dtype='fp16'")."""
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    for typo in ("fp16", torch.float64):
        with pytest.raises(ValueError, match=rf"^dtype must be None, 'auto' or one of float32, float16, bfloat16 "
                                             rf"\(str or torch.dtype\), or 'int8' \(int8 linear layers, CPU\); "
                                             rf"got {re.escape(repr(typo))}$"):
            run(path, out, tiny, dtype=typo)
        assert sorted(p.name for p in tmp_path.iterdir()) == ["docs.jsonl"]
    assert run(path, out, tiny, dtype="float16").written == 3
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["job"]["dtype"] == "float16"
    assert run(path, out, tiny, dtype=torch.float16).skipped == 3          # the same job, by either name
    assert run(path, tmp_path / "int8.jsonl", tiny, dtype=torch.int8).written == 3
    assert json.loads((tmp_path / "int8.jsonl.meta.json").read_text())["job"]["dtype"] == "int8"


def test_settings_given_as_tuples_or_a_bias_dict_resume(tmp_path, tiny):
    """Settings in their Python forms (a tuple, transformers' {(token ids): bias} dict) are recorded as the meta file
    holds them: the job writes its meta file, a re-run with the same settings resumes, and equal forms agree."""
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(3))
    for i, kwargs in enumerate([dict(exponential_decay_length_penalty=(3, 1.5)), dict(suppress_tokens=(7, 8)),
                                dict(sequence_bias={(5,): -3.0})]):
        out = tmp_path / f"out{i}.jsonl"
        assert run(path, out, tiny, **kwargs).written == 3
        assert run(path, out, tiny, **kwargs).skipped == 3
    assert run(path, tmp_path / "out2.jsonl", tiny, sequence_bias=[[[5], -3.0]]).skipped == 3


@pytest.mark.parametrize("kwargs,error,message", [
    (dict(engine="spark"), ValueError, "engine must be one of ('local', 'ray'), got 'spark'"),
    (dict(actors=2), ValueError, "ray_address and actors apply to engine='ray'"),
    (dict(ray_address="auto"), ValueError, "ray_address and actors apply to engine='ray'"),
    (dict(engine="ray", ray_address=" "), ValueError, "ray_address is empty: pass 'auto'"),
    (dict(batch_size=0), ValueError, "batch_size must be a positive integer, got 0"),
    (dict(num_return_sequences=2, num_beams=2), ValueError, "num_return_sequences=2: a corpus job writes one summary"),
    (dict(num_beams=2, num_beam_groups=2, diversity_penalty=1.0), ValueError,
     "num_beam_groups: group (diverse) beam search runs in generate() only"),
    (dict(watermarking_config={}), ValueError, "watermarking_config: a corpus job records its settings in OUTPUT's"),
    (dict(num_beams=2, force_words_ids=[[5]]), ValueError, "force_words_ids / constraints: constrained beam search"),
    (dict(num_beams=1, penalty_alpha=0.6, top_k=4), ValueError, "penalty_alpha: contrastive search runs in gene"),
    (dict(nmu_beams=2), ValueError, "unknown argument(s) ['nmu_beams']"),
    (dict(strategy="map_reduce", map_kwargs={"max_length": 20}, chunk_overlap=1), TypeError,
     "map_kwargs, chunk_overlap: options of a pipeline call, not of a corpus job; with strategy='map_reduce' a job "
     "summarizes each document's chunks (no overlap) and their summaries with the job's own settings"),
])
def test_argument_errors(tmp_path, tiny, kwargs, error, message):
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(1))
    with pytest.raises(error) as e:
        summarize_corpus(path, tmp_path / "out.jsonl", model=tiny, **kwargs)
    assert message in str(e.value)
    assert not (tmp_path / "out.jsonl").exists()


def test_input_path_errors(tmp_path):
    for empty in (dict(input="", output=tmp_path / "out.jsonl"), dict(input=tmp_path / "a.jsonl", output="")):
        with pytest.raises(ValueError, match=f"the {'input' if empty['input'] == '' else 'output'} path is empty"):
            summarize_corpus(**empty)                       # not the current folder
    with pytest.raises(FileNotFoundError, match="input '.*nope.jsonl': no such file or folder"):
        summarize_corpus(tmp_path / "nope.jsonl", tmp_path / "out.jsonl")
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(ValueError, match="holds no .jsonl or .parquet file"):
        summarize_corpus(tmp_path / "empty", tmp_path / "out.jsonl")
    write_jsonl(tmp_path / "empty" / "a.jsonl", make_docs(1))
    with pytest.raises(ValueError, match="is inside the input folder"):
        summarize_corpus(tmp_path / "empty", tmp_path / "empty" / "out.jsonl")
    with pytest.raises(ValueError, match="is the output; write the output to another path"):
        summarize_corpus(tmp_path / "empty" / "a.jsonl", tmp_path / "empty" / "a.jsonl")
    sidecars = {"out.jsonl.errors.jsonl": "out.jsonl", "out.jsonl.meta.json": "out.jsonl",
                "out.parquet.partial.jsonl": "out.parquet"}
    for name, output in sidecars.items():       # with overwrite=True, which empties the output's files
        source = write_jsonl(tmp_path / name, make_docs(1))
        content = source.read_text()
        with pytest.raises(ValueError, match=f"is the output's file '.*{name}'"):
            summarize_corpus(source, tmp_path / output, overwrite=True)
        assert source.read_text() == content
    for name in ("out.jsonl", "out.jsonl.errors.jsonl"):     # the same file by a hard link
        source = write_jsonl(tmp_path / f"linked-{name}", make_docs(1))
        (tmp_path / name).unlink(missing_ok=True)
        os.link(source, tmp_path / name)
        with pytest.raises(ValueError, match=f"is the output(|'s file '.*{name}'); write the output"):
            summarize_corpus(source, tmp_path / "out.jsonl", overwrite=True)
        assert source.read_text() != ""
        (tmp_path / name).unlink()
    folder, elsewhere = tmp_path / "folder", tmp_path / "elsewhere"
    folder.mkdir(), elsewhere.mkdir()
    write_jsonl(elsewhere / "o.jsonl.errors.jsonl", make_docs(1))
    (folder / "z.jsonl").symlink_to(elsewhere / "o.jsonl.errors.jsonl")   # a folder member that is a side file
    with pytest.raises(ValueError, match="z.jsonl' is the output's file"):
        summarize_corpus(folder, elsewhere / "o.jsonl", overwrite=True)
    assert (elsewhere / "o.jsonl.errors.jsonl").read_text() != ""
    with pytest.raises(ValueError, match="/dev/full is not a regular file"):     # not read, not written
        summarize_corpus(tmp_path / "empty" / "a.jsonl", "/dev/full", overwrite=True)


def test_ray_engine_without_ray_names_the_extra(tmp_path, tiny, monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)     # import ray -> ImportError
    path = write_jsonl(tmp_path / "docs.jsonl", make_docs(1))
    with pytest.raises(ImportError, match=r'needs Ray Data: pip install "seq2seq-kit\[ray\]"'):
        summarize_corpus(path, tmp_path / "out.jsonl", model=tiny, engine="ray")
    code = main(["summarize", "--input", str(path), "--output", str(tmp_path / "o.jsonl"), "--model", str(tiny),
                 "--ray"])
    assert code == 1


# ---------------------------------------------------------------------------------------------- parquet, folders

@pytest.mark.parametrize("rows, row_group_size, size, chunks", [
    (100, None, 8, 13), (100, 30, 8, 14), (10_000, None, 8, 64), (7, None, 8, 1)])
def test_a_large_parquet_row_group_is_read_in_parts(tmp_path, rows, row_group_size, size, chunks):
    """A row group larger than a chunk is planned in parts of max(chunk size, rows / 64) rows (a file written in one
    go is one row group: one chunk, one Ray actor, every text read at once); the parts read every row once, in
    order, numbered from the file's first row, as they travel to Ray actors (JSON)."""
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    from seq2seq_kit.corpus.reading import plan_chunks, read_chunk

    path = tmp_path / "docs.parquet"
    pq.write_table(pa.table({"id": list(range(rows)), "text": [f"text {i}" for i in range(rows)]}), path,
                   **({"row_group_size": row_group_size} if row_group_size else {}))
    planned, total = plan_chunks([path], size, folder=False)
    read = [doc for chunk in json.loads(json.dumps(planned)) for doc in read_chunk(chunk, "text", "id")]
    assert (len(planned), total) == (chunks, rows)
    assert [(doc_id, where, text) for doc_id, where, text, _ in read] == \
        [(i, f"docs.parquet:{i + 1}", f"text {i}") for i in range(rows)]


def test_parquet_in_and_out_and_folders(tmp_path, tiny, reference):
    pa = pytest.importorskip("pyarrow")
    pq = pytest.importorskip("pyarrow.parquet")
    docs = make_docs(8)
    src = tmp_path / "in"
    src.mkdir()
    texts = [d["text"] for d in docs]
    pq.write_table(pa.table({"text": texts[:5]}), src / "a.parquet", row_group_size=2)   # 3 row groups: 3 chunks
    write_jsonl(src / "b.JSONL", [{"text": t} for t in texts[5:]])       # any case
    (src / "c.jsonl").symlink_to(src / "b.JSONL")                        # the same file again: read once
    os.link(src / "b.JSONL", src / "d.jsonl")                            # and again, by a hard link
    result = run(src, tmp_path / "out.parquet", tiny)
    assert result.written == 8 and result.failed == 0
    assert not (tmp_path / "out.parquet.partial.jsonl").exists()
    rows = by_id(pq.read_table(tmp_path / "out.parquet").to_pylist())
    ids = [f"a.parquet:{n}" for n in range(1, 6)] + [f"b.JSONL:{n}" for n in range(1, 4)]   # no id field
    assert rows == {i: {"id": i, **reference(t)} for i, t in zip(ids, texts)}

    # A single Parquet file with an id column, into JSONL; then resume into Parquet from a journal.
    pq.write_table(pa.table({"id": [d["id"] for d in docs], "text": texts}), tmp_path / "docs.parquet")
    run(tmp_path / "docs.parquet", tmp_path / "out.jsonl", tiny)
    assert by_id(read_jsonl(tmp_path / "out.jsonl")) == {d["id"]: {"id": d["id"], **reference(d["text"])}
                                                        for d in docs}
    out = tmp_path / "again.parquet"
    run(tmp_path / "docs.parquet", out, tiny)
    journal = tmp_path / "again.parquet.partial.jsonl"   # as a killed run leaves it: 2 records, no .parquet yet
    out.unlink()
    journal.write_text("".join(json.dumps({"id": d["id"], **reference(d["text"])}) + "\n" for d in docs[:2]))
    result = run(tmp_path / "docs.parquet", out, tiny)
    assert (result.written, result.skipped) == (6, 2) and not journal.exists()
    assert by_id(pq.read_table(out).to_pylist()) == by_id(read_jsonl(tmp_path / "out.jsonl"))


# ---------------------------------------------------------------------------------------------- CLI

def test_cli_corpus_job_and_exit_codes(tmp_path, tiny, reference, capsys):
    docs = make_docs(4)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs + [{"id": "empty", "text": ""}]), tmp_path / "out.jsonl"
    argv = ["summarize", "--input", path, "--output", out, "--model", tiny, "--batch-size", "2",
            "--max-length", "9", "--num-beams", "2"]
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    assert code == 3 and "done 4, skipped 0 (already in out.jsonl), failed 1 (see " in err   # 3: failed records
    assert by_id(read_jsonl(out)) == {d["id"]: {"id": d["id"], **reference(d["text"])} for d in docs}
    write_jsonl(path, docs)
    assert main([str(a) for a in argv]) == 0 and "done 0, skipped 4" in capsys.readouterr().err
    code = main([str(a) for a in argv[:-1]] + ["3"])
    assert code == 1 and "Mixing them is refused" in capsys.readouterr().err
    assert main([str(a) for a in argv[:-1]] + ["3", "--overwrite"]) == 0
    sampled = ["--do-sample", "--temperature", "2.0", "--seed", "7", "--overwrite"]
    assert main([str(a) for a in argv[:-1]] + ["1", *sampled]) == 0
    pipe = pipeline("summarization", model=str(tiny))
    assert by_id(read_jsonl(out)) == {d["id"]: {"id": d["id"], **reference(d["text"]), "summary_text": pipe(
        d["text"], max_length=9, num_beams=1, do_sample=True, temperature=2.0,
        generator=torch.Generator().manual_seed(7))[0]["summary_text"]} for d in docs}


@pytest.mark.parametrize("argv,message", [
    (["summarize", "text", "--ray"], "--ray applies to --input jobs"),
    (["summarize", "text", "--overwrite"], "--overwrite applies to --input jobs"),
    (["summarize", "--input", "a.jsonl", "--output", "b.jsonl", "--actors", "2"], "--actors applies to --ray jobs"),
    (["summarize", "--input", "a.jsonl", "--output", "b.jsonl", "--ray", "--actors", "0"], "must be a positive"),
])
def test_cli_usage_errors(capsys, argv, message):
    assert main(argv) == 2 and message in capsys.readouterr().err


def test_the_writer_drops_a_record_delivered_twice(tmp_path):
    """A Ray task retried after its actor died may yield its results again: the driver writes each id once."""
    out = Output(tmp_path / "out.jsonl")
    out.open({"model": "m"}, revision=None, overwrite=False)
    record = lambda where: {"id": "a", "summary_text": "s", "input_tokens": 3, "output_tokens": 2, "where": where}
    error = {"id": "b", "where": "docs.jsonl:2", "reason": "empty", "message": "docs.jsonl:2: field 'text' is empty"}
    for _ in range(2):
        out.write({"records": [record("docs.jsonl:1")], "errors": [error], "skipped": 0})
    out.write({"records": [record("docs.jsonl:3")], "errors": [], "skipped": 0})   # the same id on another line
    out.close()
    assert read_jsonl(tmp_path / "out.jsonl") == [{"id": "a", "summary_text": "s", "input_tokens": 3,
                                                   "output_tokens": 2}]
    assert [(e["where"], e["reason"]) for e in read_jsonl(tmp_path / "out.jsonl.errors.jsonl")] == [
        ("docs.jsonl:2", "empty"), ("docs.jsonl:3", "duplicate_id")]
    assert out.written == 1 and out.failed_now == {("docs.jsonl:2", "empty"), ("docs.jsonl:3", "duplicate_id")}


def test_a_whole_last_line_without_its_newline_is_torn(tmp_path, tiny):
    """A crash can stop an append after a whole JSON record but before its newline: that line is cut off too (kept,
    the next append would join it on one line, the output no longer JSONL), and its document done again."""
    docs = make_docs(3, seed=2)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    run(path, out, tiny)
    full = by_id(read_jsonl(out))
    lines = out.read_text().splitlines(keepends=True)
    out.write_text(lines[0] + lines[1].rstrip("\n"))
    result = run(path, out, tiny)
    assert (result.written, result.skipped) == (2, 1)
    assert out.read_text().count("\n") == 3 and by_id(read_jsonl(out)) == full


def test_a_line_without_the_records_fields_before_the_last_is_an_error(tmp_path, tiny):
    """A JSON object that is no summary record (no "summary_text", or no "id") in the output is named, not taken as
    a document written (its id skipped, with no summary) nor a KeyError."""
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.jsonl"
    run(path, out, tiny)
    lines = out.read_text().splitlines()
    for bad in ('{"id": "doc0"}', '{"summary_text": "s"}'):
        out.write_text(bad + "\n" + "\n".join(lines[1:]) + "\n")
        with pytest.raises(ValueError, match=r"out.jsonl:1 is not a summary record; fix or remove that line"):
            run(path, out, tiny)


def test_the_progress_bar_counts_each_document_once(tmp_path, tiny, monkeypatch):
    """The bar ends at the input's record count: a truncated document once (its notice is no second document), and
    the ids a re-run skips in a chunk that also has documents to do."""
    import tqdm.auto

    bars = []

    class Bar(tqdm.auto.tqdm):
        def close(self):
            if not self.disable:                # once: tqdm closes a bar again when it is collected
                bars.append((self.total, self.n))
            super().close()

    monkeypatch.setattr(tqdm.auto, "tqdm", Bar)
    docs = make_docs(3) + [{"id": "long", "text": " ".join(["word"] * 300)}]
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.jsonl"
    kwargs = dict(model=tiny, batch_size=3, progress=True, **GEN)
    assert summarize_corpus(path, out, **kwargs).truncated == 1
    write_jsonl(path, docs + make_docs(5, seed=7)[3:])                   # two more documents
    result = summarize_corpus(path, out, **kwargs)
    assert (result.written, result.skipped) == (2, 4)
    assert bars == [(4, 4), (6, 6)]


def test_a_numbered_record_repeating_an_integer_id_says_why(tmp_path, tiny):
    """In a single file a record without an id takes its line number, which another record's integer id can be:
    the later one is a duplicate_id, and the message says where its id came from."""
    path, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    path.write_text('{"id": 2, "text": "The tower is tall."}\n{"text": "The bridge is long."}\n')
    result = run(path, out, tiny)
    assert (result.written, result.failed) == (1, 1)
    assert [r["id"] for r in read_jsonl(out)] == [2]
    [error] = read_jsonl(tmp_path / "out.jsonl.errors.jsonl")
    assert error == {"id": 2, "where": "docs.jsonl:2", "reason": "duplicate_id",
                     "message": "docs.jsonl:2 repeats id 2 of docs.jsonl:1; only the first is used (a record without "
                                "an id has its line number as id)"}


def test_overwrite_replaces_the_errors_file_too(tmp_path, tiny):
    """overwrite=True starts the output over: the errors of the job it replaces are gone from the errors file and
    from the meta file's counts (a clean input's job reported the old input's failures)."""
    bad = tmp_path / "a.jsonl"
    bad.write_text('{"id": "x", "text": ""}\n{"id": "y", "text": "The tower is tall."}\n')
    out = tmp_path / "out.jsonl"
    assert run(bad, out, tiny).failed == 1
    clean = write_jsonl(tmp_path / "b.jsonl", make_docs(2))
    result = run(clean, out, tiny, overwrite=True)
    assert (result.written, result.failed) == (2, 0)
    assert (tmp_path / "out.jsonl.errors.jsonl").read_text() == ""
    assert json.loads((tmp_path / "out.jsonl.meta.json").read_text())["counts"] == \
        {"summaries": 2, "failed": 0, "truncated": 0}
    assert {r["id"] for r in read_jsonl(out)} == {"doc0", "doc1"}


def test_a_parquet_output_resumes_overwrites_and_merges_once(tmp_path, tiny, reference):
    """A finished Parquet job run again skips the ids in the .parquet file; overwrite=True with other settings
    summarizes every document again (none skipped as written); a journal left beside a written .parquet file (a
    crash after the rename, before the journal was emptied) is merged keeping each id once, the file's first."""
    pq = pytest.importorskip("pyarrow.parquet")
    docs = make_docs(3)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "out.parquet"
    assert run(path, out, tiny).written == 3
    rows = pq.read_table(out).to_pylist()
    result = run(path, out, tiny)
    assert (result.written, result.skipped) == (0, 3) and pq.read_table(out).to_pylist() == rows
    journal = tmp_path / "out.parquet.partial.jsonl"
    journal.write_text(json.dumps({"id": "doc1", "summary_text": "JOURNAL", "input_tokens": 1, "output_tokens": 1})
                       + "\n")
    assert run(path, out, tiny).skipped == 3
    assert pq.read_table(out).to_pylist() == rows and not journal.exists()
    result = run(path, out, tiny, max_length=10, overwrite=True)
    assert (result.written, result.skipped) == (3, 0)
    run(path, tmp_path / "ten.jsonl", tiny, max_length=10)
    assert by_id(pq.read_table(out).to_pylist()) == by_id(read_jsonl(tmp_path / "ten.jsonl"))


def test_a_stopped_parquet_job_keeps_its_journal(tmp_path, tiny, monkeypatch):
    """A Parquet job stopped before its end (Ctrl-C) leaves its journal, the summaries it wrote, for the next run to
    skip and merge (only a finished job's journal, emptied into the .parquet file, is removed)."""
    pq = pytest.importorskip("pyarrow.parquet")
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(3)), tmp_path / "out.parquet"
    with monkeypatch.context() as m:
        m.setattr(Output, "finish", lambda self, good: (_ for _ in ()).throw(KeyboardInterrupt))
        with pytest.raises(KeyboardInterrupt):
            run(path, out, tiny)
    journal = tmp_path / "out.parquet.partial.jsonl"
    written = by_id(read_jsonl(journal))
    assert set(written) == {"doc0", "doc1", "doc2"} and not out.exists()
    result = run(path, out, tiny)
    assert (result.written, result.skipped) == (0, 3) and not journal.exists()
    assert by_id(pq.read_table(out).to_pylist()) == written


def test_checkpoint_digests_run_on_python_3_10_and_keep_their_values(tiny_eos_path, monkeypatch):
    """hashlib.file_digest is Python 3.11's, the package takes 3.10: every corpus job on a local checkpoint failed
    there with an AttributeError. The streamed digest equals file_digest's, so outputs written before still match."""
    import hashlib

    from seq2seq_kit.corpus.driver import checkpoint_digests

    before = {}
    for path in sorted(tiny_eos_path.iterdir()):
        if path.name in ("config.json", "model.safetensors"):
            with open(path, "rb") as f:
                before[path.name] = f"{path.stat().st_size}:{hashlib.file_digest(f, 'blake2b').hexdigest()[:32]}"
    monkeypatch.delattr(hashlib, "file_digest")                       # as on Python 3.10
    digests = checkpoint_digests(tiny_eos_path)
    assert before and all(digests[name] == value for name, value in before.items())
