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
