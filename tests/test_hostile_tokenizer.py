"""A Tokenizer shared by threads (the engine's, a server's): every call gets the ids a lone call gets, although
each call sets the backend's truncation and padding."""

from __future__ import annotations

import threading

from seq2seq_kit import Tokenizer

TEXT = "The quick brown fox jumps over the lazy dog, again and again, until the dog wakes up. " * 3
CALLS = [  # (kwargs, text): settings that each leave a different truncation/padding state behind
    (dict(truncation=True, max_length=6), TEXT),
    (dict(), TEXT),
    (dict(padding="max_length", max_length=80, truncation=True), "short"),
    (dict(truncation="only_first", max_length=12), TEXT),
]


def test_shared_tokenizer_across_threads():
    tok = Tokenizer.from_default()
    expected = [tok(text, **kwargs)["input_ids"] for kwargs, text in CALLS]
    wrong, barrier = [], threading.Barrier(8)

    def hammer(offset: int):
        barrier.wait()
        for i in range(300):
            k = (i + offset) % len(CALLS)
            kwargs, text = CALLS[k]
            if tok(text, **kwargs)["input_ids"] != expected[k]:
                wrong.append(k)

    threads = [threading.Thread(target=hammer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []


def test_source_languages_across_threads(tmp_path):
    """TranslationTokenizer.encode_source: threads encoding with their own source language each get its ids (a
    pipeline call's src_lang), and the tokenizer's src_lang is never changed."""
    import json

    import pytest

    from seq2seq_kit import AutoTokenizer

    pytest.importorskip("sentencepiece")
    from test_family_tokenizers import CORPUS, fairseq_vocab, train

    train(tmp_path / "sentencepiece.bpe.model", "bpe")
    vocab = fairseq_vocab(tmp_path / "sentencepiece.bpe.model", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    tok = AutoTokenizer.from_pretrained(tmp_path, src_lang="en")
    langs = ["de", "fr", "ru", "en"]
    expected = {}
    for lang in langs:
        alone = AutoTokenizer.from_pretrained(tmp_path, src_lang=lang)
        expected[lang] = alone(CORPUS)["input_ids"]
    wrong, barrier = [], threading.Barrier(len(langs))

    def encode(lang: str):
        barrier.wait()
        for _ in range(100):
            try:
                if tok.encode_source(CORPUS, lang) != expected[lang]:
                    wrong.append(lang)
                tok.src_lang = "en"       # setting src_lang meanwhile changes no other thread's encoding
            except Exception as e:   # noqa: BLE001 - reported by the test's thread
                wrong.append(e)
                return

    threads = [threading.Thread(target=encode, args=(lang,), daemon=True) for lang in langs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads), "threads stuck"
    assert wrong == [] and tok.src_lang == "en" and tok(CORPUS)["input_ids"] == expected["en"]
    assert tok.encode_source(CORPUS, "ru") == expected["ru"]     # (the threads set src_lang after each call)
    assert tok(CORPUS)["input_ids"] == expected["en"]             # no "ru" left behind


DECODE_BESIDE_ENCODE = """
import threading
from seq2seq_kit import AutoTokenizer
tok = AutoTokenizer.from_pretrained({root!r}, src_lang="de")
texts = {texts!r}
ids = tok(texts, padding=True)["input_ids"]
expected = tok.batch_decode(ids, skip_special_tokens=True)
wrong = []
def decode():
    for _ in range(300):
        if tok.batch_decode(ids, skip_special_tokens=True) != expected:
            wrong.append(1)
def encode():
    for _ in range(300):
        tok(texts, padding=True, truncation=True, max_length=12)
threads = [threading.Thread(target=f) for f in (decode, encode, decode, encode)]
for t in threads:
    t.start()
for t in threads:
    t.join()
print("wrong" if wrong else "finished")
"""


def test_decoding_beside_encoding_does_not_deadlock(tmp_path):
    """A SentencePiece tokenizer (M2M100) decodes through a Python decoder: threads decoding while others encode
    (a pipeline shared by threads: postprocess beside preprocess) must not hang the process. A child process runs
    them, as a deadlock there holds the GIL."""
    import json
    import subprocess
    import sys

    import pytest

    pytest.importorskip("sentencepiece")
    from test_family_tokenizers import CORPUS, fairseq_vocab, train

    train(tmp_path / "sentencepiece.bpe.model", "bpe")
    vocab = fairseq_vocab(tmp_path / "sentencepiece.bpe.model", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (tmp_path / "vocab.json").write_text(json.dumps(vocab))
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer"}))
    code = DECODE_BESIDE_ENCODE.format(root=str(tmp_path), texts=CORPUS)
    try:
        run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.fail("decoding beside encoding deadlocked the process")
    assert run.returncode == 0 and run.stdout.strip() == "finished", run.stderr[-2000:]
