"""The package's warnings name the user's line (seq2seq_kit/user_warnings.py), from every entry point that raises
them: generate (under torch's inference_mode wrapper), the engine's submit, a pipeline's call, the tokenizer."""

from __future__ import annotations

import warnings

import pytest
import torch

from seq2seq_kit import Engine, Tokenizer, pipeline


def caught(call) -> list[warnings.WarningMessage]:
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    assert record, "no warning"
    return record


@pytest.mark.parametrize("entry", ["generate", "engine", "pipeline"])
def test_generation_warnings_name_the_callers_line(pair, tiny_eos_path, entry):
    """The unfeasible minimum length (transformers' warning, raised while the settings are resolved) and the
    model-agnostic default max_length: from generate, Engine.submit and a pipeline's call alike."""
    _, ours = pair("tiny-eos")
    ids = torch.tensor([[0, 5, 6, 7, 2]])
    long_min = dict(min_length=30, max_length=10)
    if entry == "generate":
        calls = [lambda: ours.generate(ids, **long_min), lambda: ours.generate(ids)]
    elif entry == "engine":
        engine = Engine(ours, max_rows=2)
        calls = [lambda: engine.submit(ids[0], **long_min).result(60)]
    else:
        pipe = pipeline("summarization", model=tiny_eos_path)
        calls = [lambda: pipe("a b c d", **long_min)]
    try:
        for call in calls:
            record = caught(call)
            assert {w.filename for w in record} == {__file__}, [(w.filename, str(w.message)[:60]) for w in record]
    finally:
        if entry == "engine":
            engine.close()


def test_tokenizer_warnings_name_the_callers_line(fixtures_dir):
    tok = Tokenizer.from_pretrained(fixtures_dir / "bart-tokenizer")
    for call in (lambda: tok(["a b", "c"], padding=True, max_length=4),
                 lambda: tok(["a b"], return_tensors="pt").to(torch.float16)):
        assert [w.filename for w in caught(call)] == [__file__]


def test_a_stream_checking_its_settings_leaves_other_threads_warnings_alone(tiny_eos_path, monkeypatch):
    """pipe(iterator) resolves its settings silently at the call. That used warnings.catch_warnings, which swaps the
    process's filters: another thread's warnings were lost meanwhile, and two threads inside at once could leave
    "ignore" in place for good (seen with 2 threads x 50 calls). Now only the checking thread is silenced."""
    import threading

    from seq2seq_kit import summarization
    from seq2seq_kit.user_warnings import warn

    inside, go_on = threading.Event(), threading.Event()
    resolve = summarization.settings

    def held(*args, **kwargs):                      # the check, held open while the main thread warns
        inside.set()
        assert go_on.wait(60)
        warn("from the checking thread")            # silenced: that thread's own check
        return resolve(*args, **kwargs)

    pipe = pipeline("summarization", model=str(tiny_eos_path), max_length=6)
    monkeypatch.setattr(summarization, "settings", held)
    before = list(warnings.filters)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        checking = threading.Thread(target=lambda: pipe(iter(["the tower is tall"])))
        checking.start()
        assert inside.wait(60)
        warn("from another thread")
        go_on.set()
        checking.join(60)
    assert [str(w.message) for w in seen] == ["from another thread"]
    assert warnings.filters == before
