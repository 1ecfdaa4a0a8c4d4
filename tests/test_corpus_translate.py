"""translate_corpus and `seq2seq-kit translate --input`: summarize_corpus's job (tests/test_corpus.py) with the
translation pipeline and its languages. Records are checked against pipeline("translation") one document at a time
(itself checked against transformers in tests/test_families_pipeline.py); the job's identity holds the languages.
"""

from __future__ import annotations

import json
import shutil
import warnings
from pathlib import Path

import pytest

from helpers import GEN, by_id, make_docs, read_jsonl, write_jsonl
from seq2seq_kit import pipeline
from seq2seq_kit.cli import main
from seq2seq_kit.corpus import summarize_corpus, translate_corpus
from test_families_pipeline import m2m100_path, marian_path, mbart_path  # noqa: F401 (fixtures)

pytest.importorskip("sentencepiece")
LANGS = dict(src_lang="de", tgt_lang="fr")


def expected(path, docs, eos: int, **langs) -> dict:
    """{id: the record a job writes} from the translation pipeline, one document at a time."""
    pipe = pipeline("translation", model=path, **langs)
    out = {}
    for d in docs:
        ids = pipe(d["text"], return_tensors=True, truncation=True, **GEN)[0]["translation_token_ids"].tolist()[1:]
        text = pipe(d["text"], truncation=True, **GEN)[0]["translation_text"]
        out[d["id"]] = {"id": d["id"], "translation_text": text,
                        "input_tokens": len(pipe.preprocess([d["text"]], truncation=True).rows[0]),
                        "output_tokens": ids.index(eos) + 1 if eos in ids else len(ids)}
    return out


def test_records_meta_and_resume(m2m100_path, tmp_path):
    docs = make_docs(7, seed=4)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "fr.jsonl"
    result = translate_corpus(path, out, m2m100_path, batch_size=3, progress=False, **LANGS, **GEN)
    assert (result.written, result.skipped, result.failed) == (7, 0, 0)
    reference = expected(m2m100_path, docs, eos=2, **LANGS)
    assert by_id(read_jsonl(out)) == reference
    meta = json.loads((tmp_path / "fr.jsonl.meta.json").read_text())
    pipe = pipeline("translation", model=m2m100_path, **LANGS)
    assert meta["job"]["task"] == "translation" and meta["job"]["languages"] == LANGS
    assert meta["job"]["generation"]["forced_bos_token_id"] == pipe.tokenizer.get_lang_id("fr")
    assert meta["counts"] == {"translations": 7, "failed": 0, "truncated": result.truncated}
    truncated = read_jsonl(tmp_path / "fr.jsonl.errors.jsonl")                # longer than model_max_length 128
    assert len(truncated) == result.truncated > 0 and "translated from its first 128 tokens" in truncated[0]["message"]
    assert {"sentencepiece.bpe.model", "vocab.json"} <= set(meta["job"]["files"])

    # killed mid-append after two records: the re-run keeps them, cuts the torn line, writes each other id once
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:2]) + lines[2][:20])
    result = translate_corpus(path, out, m2m100_path, batch_size=3, progress=False, **LANGS, **GEN)
    assert (result.written, result.skipped) == (5, 2) and by_id(read_jsonl(out)) == reference

    # another target language is another job
    with pytest.raises(ValueError, match=r"languages=\{'src_lang': 'de', 'tgt_lang': 'fr'\}.*'tgt_lang': 'de'"):
        translate_corpus(path, out, m2m100_path, progress=False, src_lang="de", tgt_lang="de", **GEN)
    # the source language is never assumed (as the pipeline's: transformers 4.x required it)
    with pytest.raises(ValueError, match=r"needs src_lang, the language of the input texts"):
        translate_corpus(path, out, m2m100_path, progress=False, tgt_lang="fr", **GEN)


def test_a_checkpoints_translation_task_gives_the_job_its_languages(mbart_path, tmp_path):
    """facebook/mbart-large-en-ro's config names its pair in task_specific_params ("translation_en_to_ro"): the job
    takes that task's languages and settings as pipeline("translation") does, with the same records, without the
    warning about the task name (neither translate_corpus nor the command line takes a task)."""
    root = Path(shutil.copytree(mbart_path, tmp_path / "mbart-en-ro"))
    config = json.loads((root / "config.json").read_text())
    config["task_specific_params"] = {"translation_en_to_ro": {"num_beams": 2}}
    (root / "config.json").write_text(json.dumps(config))
    docs = make_docs(3, seed=5)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "ro.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        result = translate_corpus(path, out, root, progress=False, **GEN)
    assert (result.written, result.failed) == (3, 0)
    with pytest.warns(UserWarning, match='defaulting to "translation_en_to_ro"'):
        reference = expected(root, docs, eos=2)
    assert by_id(read_jsonl(out)) == reference
    job = json.loads((tmp_path / "ro.jsonl.meta.json").read_text())["job"]
    assert job["languages"] == {"src_lang": "en_XX"} and job["generation"]["num_beams"] == 2
    # a language given that is no code is refused as pipeline() refuses it: only the task name's own may be none
    # (the job dropped it, translating into the checkpoint's own target, or tagging German text as English)
    for langs, code in ((dict(src_lang="en_XX", tgt_lang="de"), "de"), (dict(src_lang="de", tgt_lang="fr_XX"), "de")):
        with pytest.raises(ValueError, match=f"unknown language code '{code}'"):
            pipeline("translation", model=root, **langs)
        with pytest.raises(ValueError, match=f"unknown language code '{code}'"):
            translate_corpus(path, tmp_path / "other.jsonl", root, progress=False, **langs, **GEN)


def test_cli_marian_job_to_parquet(marian_path, tmp_path, capsys):
    pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    docs = make_docs(5, seed=5)
    path, out = write_jsonl(tmp_path / "docs.jsonl", docs), tmp_path / "fr.parquet"
    argv = ["translate", "--model", str(marian_path), "--tgt-lang", "fra", "--input", str(path), "--output",
            str(out), "--batch-size", "2", "--num-beams", "2", "--max-new-tokens", "8"]
    assert main(argv) == 0
    rows = by_id(pq.read_table(out).to_pylist())
    pipe = pipeline("translation", model=marian_path, tgt_lang="fra")
    assert {k: r["translation_text"] for k, r in rows.items()} == \
        {d["id"]: pipe(d["text"], truncation=True, num_beams=2, max_new_tokens=8)[0]["translation_text"] for d in docs}
    assert main(argv) == 0 and len(pq.read_table(out)) == 5                    # resumed: nothing to do


def test_cli_translates_a_files_contents_as_the_same_text_given_as_text(marian_path, tmp_path, capsys):
    """`translate --file PATH` prints what `translate TEXT` prints for the file's text; an empty file is refused."""
    text = make_docs(1, seed=6)[0]["text"]
    (tmp_path / "source.txt").write_text(text, encoding="utf-8")
    argv = ["translate", "--model", str(marian_path), "--tgt-lang", "fra", "--max-new-tokens", "8"]
    assert main([*argv, text]) == 0
    by_text = capsys.readouterr().out
    assert main([*argv, "--file", str(tmp_path / "source.txt")]) == 0
    assert capsys.readouterr().out == by_text and by_text.strip()
    (tmp_path / "empty.txt").write_text(" \n")
    assert main([*argv, "--file", str(tmp_path / "empty.txt")]) == 1
    assert "empty.txt' is empty: there is nothing to translate" in capsys.readouterr().err


def test_cli_advice_names_the_flags(marian_path, checkpoint, capsys):
    """The library's advice, told on the command line, names the flags (--tgt-lang, --strategy truncate), not the
    library's arguments (tgt_lang, strategy='truncate')."""
    assert main(["translate", "--model", str(checkpoint("tiny")), "--tgt-lang", "fr", "hello"]) == 1
    assert capsys.readouterr().err.strip().endswith("no language codes (a single language pair): drop --src-lang / "
                                                    "--tgt-lang")
    assert main(["summarize", "--model", str(marian_path), "--strategy", "map-reduce", "hello there"]) == 1
    assert capsys.readouterr().err.strip().endswith("(MarianTokenizer) does not give; summarize it with --strategy "
                                                    "truncate")


@pytest.mark.parametrize("call, message", [
    (lambda p, o, m: translate_corpus(p, o, None), "needs model="),
    (lambda p, o, m: translate_corpus(p, o, m, strategy="map_reduce", **LANGS), "applies to summarization"),
    (lambda p, o, m: summarize_corpus(p, o, m, tgt_lang="fr"), "apply to translation jobs"),
    (lambda p, o, m: summarize_corpus(p, o, m, src_lang="de"), "apply to translation jobs"),
    (lambda p, o, m: translate_corpus(p, o, m, src_lang="de", tgt_lang="xx"), "unknown language code 'xx'"),
    (lambda p, o, m: translate_corpus(p, o, m, src_lang="de"), "needs tgt_lang"),
])
def test_refused_before_any_output(m2m100_path, tmp_path, call, message):
    path, out = write_jsonl(tmp_path / "docs.jsonl", make_docs(2)), tmp_path / "out.jsonl"
    with pytest.raises(ValueError, match=message):
        call(path, out, m2m100_path)
    assert not any(p.name.startswith("out.jsonl") for p in tmp_path.iterdir())


def test_cli_usage_errors(capsys):
    assert main(["translate", "--model", "m", "text", "--input", "d.jsonl", "--output", "o.jsonl"]) == 2
    assert "give exactly one of TEXT, - (stdin), --file PATH or --input docs.jsonl" in capsys.readouterr().err
    assert main(["translate", "--model", "m", "--input", "d.jsonl"]) == 2
    assert "--input and --output go together" in capsys.readouterr().err
