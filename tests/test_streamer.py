"""generate(streamer=...): transformers' streamer protocol (put / end), call for call as transformers' generate makes
them: put(the decoder's first tokens [R, P]), put(each step's tokens [R]) (pad after a row's EOS), end(); greedy and
sampling (beam search refused, as there); with a prompt and max_time too. The engine does not take one. The text
streamers (generation/streamers.py) print what transformers' print."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from seq2seq_kit import Engine
from graph_emulation import emulate_generate_graphs, replays
from test_generation import inputs


class Recorder:
    def __init__(self):
        self.calls = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append(("put", value.dtype, value.device.type, value.tolist()))

    def end(self) -> None:
        self.calls.append(("end",))


CASES = {"greedy": {}, "sample": dict(do_sample=True, top_k=8, num_return_sequences=2),
         "prompt": dict(decoder_input_ids=torch.tensor([[2, 7, 8]] * 3)), "max_time": dict(max_time=0.0)}


@pytest.mark.parametrize("case", list(CASES))
def test_streamer_calls_match_transformers(pair, case):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    theirs, mine = Recorder(), Recorder()
    torch.manual_seed(2)
    want = hf.generate(ids, attention_mask=mask, streamer=theirs, max_new_tokens=8, **CASES[case])
    torch.manual_seed(2)
    got = ours.generate(ids, mask, streamer=mine, max_new_tokens=8, **CASES[case])
    assert torch.equal(got, want)
    assert mine.calls == theirs.calls and mine.calls[-1] == ("end",)
    assert any(2 in call[3] for call in mine.calls[1:-1]) or case == "max_time"     # rows ended (EOS) meanwhile


def test_streamer_refusals(pair):
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=r"`streamer` cannot be used with beam search \(as in transformers\)"):
        ours.generate(ids, mask, streamer=Recorder(), num_beams=2)
    with pytest.raises(TypeError, match=r"streamer must have put\(token_ids\) and end\(\) methods"):
        ours.generate(ids, mask, streamer=print)
    with Engine(ours, max_rows=4) as engine:
        with pytest.raises(ValueError, match="streamer: Python run on every step of one request is for generate"):
            engine.submit([5, 6, 7], streamer=Recorder())


GRAPHED = {"greedy": {}, "prompt": dict(decoder_input_ids=torch.tensor([[2, 7, 8]] * 3)),
           "sample, decoder graph": CASES["sample"], "sample, whole step": CASES["sample"]}


@pytest.mark.parametrize("case", list(GRAPHED))
def test_a_streamer_runs_on_the_cuda_graphs(pair, monkeypatch, case):
    """generate's CUDA graphs (emulated on the CPU) with a streamer: every put as transformers makes them, the same
    tokens, graphs replayed: the whole step for greedy and (decoding.WHOLE_STEP_SAMPLING) sampling, the decoder-only
    graph for sampling by default; each step's tokens put once the stop flag, read after every step, shows it ran.
    (It decoded eagerly until 2026-12-05.)"""
    hf, ours = pair("tiny-eos")
    emulate_generate_graphs(monkeypatch, whole_step_sampling=case.endswith("whole step"))
    monkeypatch.setattr(ours, "graphed_step", None)
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    theirs, mine = Recorder(), Recorder()
    torch.manual_seed(2)
    want = hf.generate(ids, attention_mask=mask, streamer=theirs, max_new_tokens=8, **GRAPHED[case])
    before = replays()
    torch.manual_seed(2)
    got = ours.generate(ids, mask, streamer=mine, max_new_tokens=8, cuda_graph=True, **GRAPHED[case])
    assert torch.equal(got, want) and mine.calls == theirs.calls and len(mine.calls) > 2
    assert replays() > before and (ours.graphed_step is not None) == (case == "sample, decoder graph")


@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(), dict(do_sample=True, top_k=8)])
def test_a_streamer_on_cuda_graphs_gets_the_eager_calls(tiny_eos_path, kwargs):
    """On a GPU, a streamer beside generate's CUDA graphs (the default there) gets the calls of cuda_graph=False."""
    from seq2seq_kit import BartForConditionalGeneration

    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    ids, mask = (t.cuda() for t in inputs(cuda.config.vocab_size, cuda.config.pad_token_id))
    calls = []
    for graphed in (True, False):
        streamer = Recorder()
        cuda.generate(ids, mask, streamer=streamer, max_new_tokens=8, cuda_graph=graphed,
                      generator=torch.Generator("cuda").manual_seed(0), **kwargs)
        calls.append(streamer.calls)
    assert calls[0] == calls[1] and len(calls[0]) > 2


# --- Text streamers: seq2seq_kit's TextStreamer / TextIteratorStreamer / AsyncTextIteratorStreamer print the pieces
# transformers' print, for the same puts (each tokenizer its library's, loaded from the same files).

MIXED = ("The summit ended.\nTalks go on; 会谈、将继续 进行。 Kim said: \"회담은 계속된다\" 😀 (2026)\n\n"
         "Prices rose 3.5% — élan, naïve café… 東京\nend")


def recorder_of(base):
    """A subclass of streamer class `base` that records its final pieces instead of printing them."""
    class Recording(base):
        def on_finalized_text(self, text, stream_end=False):
            self.pieces = getattr(self, "pieces", []) + [(text, stream_end)]
    return Recording


def both_tokenizers(fixtures_dir, name):
    """(transformers', seq2seq_kit's) AutoTokenizer of tests/fixtures/<name>-tokenizer (a BART model's folder)."""
    import tempfile

    import transformers

    from seq2seq_kit import AutoTokenizer
    with tempfile.TemporaryDirectory() as folder:
        shutil.copytree(fixtures_dir / f"{name}-tokenizer", folder, dirs_exist_ok=True)
        (Path(folder) / "config.json").write_text('{"model_type": "bart"}')
        return transformers.AutoTokenizer.from_pretrained(folder), AutoTokenizer.from_pretrained(folder)


@pytest.mark.parametrize("name", ["bart", "kobart"])
@pytest.mark.parametrize("decode_kwargs", [{}, dict(skip_special_tokens=True)])
@pytest.mark.parametrize("skip_prompt", [False, True])
def test_text_streamer_prints_transformers_pieces(fixtures_dir, name, decode_kwargs, skip_prompt):
    """A prompt put [1, 2], then one token per put: the text of MIXED's tokens (words, newlines, CJK, Hangul, an
    emoji split over byte tokens in BART's vocabulary; KoBART's has neither) and random ids, flushed by end(); twice on one streamer."""
    import transformers

    theirs_tok, ours_tok = both_tokenizers(fixtures_dir, name)
    from seq2seq_kit import TextStreamer
    ids = ours_tok(MIXED, add_special_tokens=False)["input_ids"]
    assert ids == theirs_tok(MIXED, add_special_tokens=False)["input_ids"]
    gen = torch.Generator().manual_seed(len(ids))
    ids += torch.randint(0, len(ours_tok), (40,), generator=gen).tolist() + [ours_tok.eos_token_id]
    theirs = recorder_of(transformers.TextStreamer)(theirs_tok, skip_prompt, **decode_kwargs)
    mine = recorder_of(TextStreamer)(ours_tok, skip_prompt, **decode_kwargs)
    for streamer in (theirs, mine):
        for _ in range(2):
            streamer.put(torch.tensor([[ours_tok.eos_token_id, ids[0]]]))
            for token in ids[1:]:
                streamer.put(torch.tensor([token]))
            streamer.end()
    assert mine.pieces == theirs.pieces
    assert sum(text != "" for text, _ in mine.pieces) > 40          # pieces come out as they are made
    assert {"\n", "회"} | ({"会", "😀"} if name == "bart" else set()) <= set("".join(t for t, _ in mine.pieces))


def test_text_streamer_prints_generate_as_transformers_does(fixtures_dir, pair, capsys):
    """generate(streamer=TextStreamer(tok, skip_special_tokens=True)) on the BART vocabulary: stdout is transformers'
    for its own generate and streamer, greedy and sampling."""
    import transformers

    from seq2seq_kit import TextStreamer
    hf, ours = pair("tiny-eos")
    theirs_tok, ours_tok = both_tokenizers(fixtures_dir, "bart")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id, lengths=(12,))
    for kwargs in (dict(), dict(do_sample=True, top_k=50)):
        torch.manual_seed(3)
        hf.generate(ids, attention_mask=mask, max_new_tokens=30,
                    streamer=transformers.TextStreamer(theirs_tok, skip_special_tokens=True), **kwargs)
        want = capsys.readouterr().out
        torch.manual_seed(3)
        out = ours.generate(ids, mask, max_new_tokens=30, streamer=TextStreamer(ours_tok, skip_special_tokens=True),
                            **kwargs)
        assert capsys.readouterr().out == want == ours_tok.decode(out[0], skip_special_tokens=True) + "\n"


def test_text_iterator_streamers_give_the_text_from_another_thread(fixtures_dir, pair):
    """TextIteratorStreamer / AsyncTextIteratorStreamer read beside generate running in a thread: the pieces join
    to the decoded output; a timeout ends a wait for a stream that never ends."""
    import asyncio
    import queue
    import threading

    from seq2seq_kit import AsyncTextIteratorStreamer, TextIteratorStreamer
    _, ours = pair("tiny-eos")
    _, tok = both_tokenizers(fixtures_dir, "bart")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id, lengths=(12,))
    want = tok.decode(ours.generate(ids, mask, max_new_tokens=30)[0], skip_special_tokens=True)

    def run(streamer):
        thread = threading.Thread(target=ours.generate, args=(ids, mask),
                                  kwargs=dict(max_new_tokens=30, streamer=streamer))
        thread.start()
        return thread

    streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=30, skip_special_tokens=True)
    thread = run(streamer)
    pieces = list(streamer)
    thread.join()
    assert "".join(pieces) == want and len(pieces) > 2

    async def read():
        streamer = AsyncTextIteratorStreamer(tok, skip_prompt=True, timeout=30, skip_special_tokens=True)
        thread = run(streamer)
        pieces = [piece async for piece in streamer]
        thread.join()
        return pieces

    assert "".join(asyncio.run(read())) == want
    with pytest.raises(queue.Empty):
        next(iter(TextIteratorStreamer(tok, timeout=0.01)))


def test_text_streamer_takes_one_input(fixtures_dir, pair):
    from seq2seq_kit import TextStreamer
    _, ours = pair("tiny-eos")
    _, tok = both_tokenizers(fixtures_dir, "bart")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=r"TextStreamer streams one input's tokens \(batch size 1\); this call has 3 "
                                         r"rows"):
        ours.generate(ids, mask, max_new_tokens=4, streamer=TextStreamer(tok))
