"""generate(streamer=...): transformers' streamer protocol (put / end), call for call as transformers' generate makes
them: put(the decoder's first tokens [R, P]), put(each step's tokens [R]) (pad after a row's EOS), end(); greedy and
sampling (beam search refused, as there); with a prompt and max_time too. The engine gives a request's streamer generate's calls. The text
streamers (generation/streamers.py) print what transformers' print."""

from __future__ import annotations

import queue
import shutil
import threading
import time
from pathlib import Path

import pytest
import torch

from seq2seq_kit import Engine
from seq2seq_kit.models.cuda_graph import BucketGraphs
from graph_emulation import EmulatedGraph, emulate_generate_graphs, replays
from test_generation import inputs


class Recorder:
    def __init__(self):
        self.calls = []

    def put(self, value: torch.Tensor) -> None:
        self.calls.append(("put", value.dtype, value.device.type, value.tolist()))

    def end(self) -> None:
        self.calls.append(("end",))


class LastRecorder(Recorder):
    """A streamer with the engine's put_last (the tokens a request ends on)."""

    def put_last(self, value: torch.Tensor) -> None:
        self.calls.append(("put_last", value.dtype, value.device.type, value.tolist()))


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
        with pytest.raises(ValueError, match=r"`streamer` cannot be used with beam search \(as in transformers\)"):
            engine.submit([5, 6, 7], streamer=Recorder(), num_beams=2)
    with pytest.raises(ValueError, match=r"streamer: a streamer is one request's, not a default of the engine; "
                                         r"pass it to submit\(input_ids, streamer=...\)"):
        Engine(ours, defaults=dict(streamer=Recorder()))


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


def test_text_streamer_takes_several_tokens_in_one_put_as_transformers(fixtures_dir):
    """put([n] tokens): one input's n tokens, as transformers' TextStreamer reads them (they were taken as n rows and
    refused); [1, n] likewise; [R, n] with R > 1 rows is refused, as there."""
    import transformers

    from seq2seq_kit import TextStreamer
    theirs_tok, ours_tok = both_tokenizers(fixtures_dir, "bart")
    ids = ours_tok("The tower is tall.\nIt is in Paris.", add_special_tokens=False)["input_ids"]
    theirs = recorder_of(transformers.TextStreamer)(theirs_tok, skip_special_tokens=True)
    mine = recorder_of(TextStreamer)(ours_tok, skip_special_tokens=True)
    for streamer in (theirs, mine):
        streamer.put(torch.tensor(ids[:3]))
        streamer.put(torch.tensor([ids[3:6]]))
        streamer.put(torch.tensor(ids[6:]))
        streamer.end()
    assert mine.pieces == theirs.pieces and "".join(t for t, _ in mine.pieces) == ours_tok.decode(ids)
    with pytest.raises(ValueError, match=r"streams one input's tokens \(batch size 1\); this call has 2 rows"):
        TextStreamer(ours_tok).put(torch.tensor([ids[:2], ids[2:4]]))


def test_async_streamer_takes_a_waiting_piece_whatever_its_timeout(fixtures_dir):
    """timeout=0 polls: a piece already queued is taken (asyncio.wait_for gave up before the queue's get ran, a
    TimeoutError with the text there), as transformers' asyncio.timeout takes it; an empty queue is a TimeoutError
    (the builtin one, on Python 3.10 too)."""
    import asyncio

    from seq2seq_kit import AsyncTextIteratorStreamer
    _, tok = both_tokenizers(fixtures_dir, "bart")

    async def poll():
        streamer = AsyncTextIteratorStreamer(tok, timeout=0)
        with pytest.raises(TimeoutError, match=r"no text within the streamer's timeout \(0 s\)"):
            await streamer.__anext__()
        streamer.put(torch.tensor([[2, 133]]))
        streamer.put(torch.tensor([4119]))
        streamer.end()
        await asyncio.sleep(0.05)                    # the pieces are queued from call_soon_threadsafe callbacks
        return [piece async for piece in streamer]

    assert "".join(asyncio.run(poll())) == tok.decode([2, 133, 4119])


def test_text_streamer_takes_one_input(fixtures_dir, pair):
    from seq2seq_kit import TextStreamer
    _, ours = pair("tiny-eos")
    _, tok = both_tokenizers(fixtures_dir, "bart")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=r"TextStreamer streams one input's tokens \(batch size 1\); this call has 3 "
                                         r"rows"):
        ours.generate(ids, mask, max_new_tokens=4, streamer=TextStreamer(tok))


def test_text_streamer_refuses_decode_keywords_at_once(fixtures_dir):
    """A keyword our tokenizer's decode does not take (a typo, or a slow tokenizer's option) is refused where the
    streamer is made, naming it, not as a TypeError from inside generate's first step; the ones it takes pass."""
    from seq2seq_kit import TextIteratorStreamer, TextStreamer
    _, tok = both_tokenizers(fixtures_dir, "bart")
    for cls in (TextStreamer, TextIteratorStreamer):
        with pytest.raises(TypeError, match=rf"{cls.__name__}: the tokenizer's decode refuses \['skip_special_token'\] "
                                            r".*skip_special_tokens=True"):
            cls(tok, skip_special_token=True)
    TextStreamer(tok, skip_special_tokens=True, clean_up_tokenization_spaces=False)


# --- The engine streams a request as generate streams it alone.

def engine_jobs(vocab: int, seed: int) -> list[dict]:
    """Requests of random lengths and settings (greedy, sampling, a prompt, max_new_tokens), every other one
    streaming."""
    rng = torch.Generator().manual_seed(seed)
    jobs = []
    for i in range(8):
        ids = torch.randint(3, vocab, (int(torch.randint(3, 14, (), generator=rng)),), generator=rng).tolist()
        kwargs = dict(max_new_tokens=int(torch.randint(2, 12, (), generator=rng)))
        if i % 3 == 1:
            kwargs.update(do_sample=True, top_k=20)
        if i % 4 == 2:
            kwargs.update(decoder_input_ids=[2, 9 + i])
        jobs.append(dict(ids=ids, kwargs=kwargs, seed=i, streams=i % 2 == 0 or i == 7))
    return jobs


def check_engine_streams(model, mode: str) -> None:
    """Streaming and plain requests submitted at once, stepping together in an engine (mode: "eager", "fixed"
    capacity, or fixed capacity on "graphs"): each streamer gets the calls generate alone gives with the same
    generator (its first tokens [1, P], each step's token [1], end()), and the tokens are generate's; a streamer
    with put_last gets the same calls, but the last token's there."""
    device = model.device
    jobs = engine_jobs(model.config.vocab_size, seed=5)
    want = []
    for job in jobs:
        recorder = Recorder()
        prompt = job["kwargs"].get("decoder_input_ids")
        out = model.generate(torch.tensor([job["ids"]], device=device), streamer=recorder, cuda_graph=False,
                             generator=torch.Generator(device).manual_seed(job["seed"]),
                             **dict(job["kwargs"], decoder_input_ids=None if prompt is None else
                                    torch.tensor([prompt], device=device)))
        want.append((out, recorder.calls))
    with Engine(model, max_rows=4, fixed_capacity=mode != "eager") as engine:
        if mode == "graphs" and device.type == "cpu":
            batch = engine.batch
            batch.graphs, batch.capture = BucketGraphs(model.next_token_logits, batch.tokens[:-1], batch.logits), True
        recorders = [(LastRecorder() if i % 4 == 0 else Recorder()) if job["streams"] else None
                     for i, job in enumerate(jobs)]
        requests = [engine.submit(job["ids"], streamer=recorder, **job["kwargs"],
                                  generator=torch.Generator(device).manual_seed(job["seed"]))
                    for job, recorder in zip(jobs, recorders)]
        outputs = [r.result(60) for r in requests]
        assert mode != "graphs" or any(g.graph is not None for g in [*engine.groups, *engine.batch.idle.values()])
    for (out, calls), got, recorder in zip(want, outputs, recorders):
        assert torch.equal(got, out)
        if isinstance(recorder, LastRecorder):
            calls = [*calls[:-2], ("put_last", *calls[-2][1:]), calls[-1]]
        if recorder is not None:
            assert recorder.calls == calls and calls[-1] == ("end",) and len(calls) > 2
    assert any(isinstance(r, LastRecorder) for r in recorders) and any(type(r) is Recorder for r in recorders)


@pytest.mark.parametrize("mode", ["eager", "fixed", "graphs"])
def test_engine_streams_each_request_as_generate_streams_it_alone(pair, monkeypatch, mode):
    """check_engine_streams on the CPU; "graphs": the engine's CUDA path with its graphs emulated (the decoder's
    step per bucket set and each group's search step replayed; tests/graph_emulation.py)."""
    from seq2seq_kit import cuda_capture
    if mode == "graphs":
        monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    check_engine_streams(pair("tiny-eos")[1], mode)


@pytest.mark.cuda
def test_engine_streams_on_cuda_as_generate_alone(tiny_eos_path):
    """On a GPU the engine's fixed-capacity step replays CUDA graphs: its streamers still get generate's calls."""
    from seq2seq_kit import BartForConditionalGeneration
    check_engine_streams(BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda"), "graphs")


def test_engine_ends_a_stream_however_its_request_ends(pair):
    """end() once and no put after it: a request cancelled while it runs (by its own streamer, in the engine's
    thread), one cancelled while it waits, one whose streamer's put raises (it fails with that error); a request
    streaming beside them gets generate's calls."""

    _, ours = pair("tiny-eos")
    ready = threading.Event()

    class Cancels(Recorder):                    # at its third put: cancels its own request and the waiting one
        def put(self, value):
            super().put(value)
            if len(self.calls) == 3:
                assert ready.wait(60)
                self.request.cancel()
                self.waiting.cancel()

    class Breaks(Recorder):
        def put(self, value):
            super().put(value)
            if len(self.calls) == 3:
                raise RuntimeError("the client went away")

    cancels, breaks, watched, waits = Cancels(), Breaks(), Recorder(), LastRecorder()
    long = dict(min_new_tokens=12, max_new_tokens=12)
    want = Recorder()
    ours.generate(torch.tensor([[5, 6, 8]]), streamer=want, **long)
    with Engine(ours, max_rows=3) as engine:
        cancels.request = engine.submit([5, 6, 7], streamer=cancels, **long)
        failing = engine.submit([5, 6, 9], streamer=breaks, **long)
        answered = engine.submit([5, 6, 8], streamer=watched, **long)
        cancels.waiting = engine.submit([5, 6, 10], streamer=waits, **long)     # no rows free: it waits
        ready.set()
        with pytest.raises(RuntimeError, match="the client went away"):
            failing.result(60)
        assert answered.result(60).shape[1] == 13 and cancels.request.cancelled() and cancels.waiting.cancelled()
    assert watched.calls == want.calls
    assert waits.calls == [("end",)]
    for recorder in (cancels, breaks):
        assert len(recorder.calls) == 4 and recorder.calls[-1] == ("end",)


class Bounded:
    """A back-pressured streamer: put and end wait while its reader is behind (a queue of one item)."""

    def __init__(self):
        self.items, self.in_put = queue.Queue(maxsize=1), threading.Event()

    def put(self, value):
        self.in_put.set()
        self.items.put(("put", value.tolist()))
        self.in_put.clear()

    def end(self):
        self.items.put(("end",))


def cancel_at_once(request) -> None:
    """request.cancel() from another thread returns within 10 s (it waited on the reader: for good)."""
    cancelled = threading.Event()
    threading.Thread(target=lambda: (request.cancel(), cancelled.set()), daemon=True).start()
    assert cancelled.wait(10), "cancel() waited for the streamer's reader"


def read_to_end(streamer: Bounded, read: list) -> list:
    while not read or read[-1] != ("end",):
        read.append(streamer.items.get(timeout=60))
    return read


def test_a_reader_that_cancels_then_reads_to_the_end_gets_end(pair):
    """A back-pressured streamer whose reader cancels its request, then reads until end(): cancel() ran end() in the
    reader's thread, waiting for the put in progress (itself waiting for the reader), so the reader, the engine and
    every other request froze for good. cancel() now returns at once; end() comes after the put it cut short (a
    running request) or from a thread of its own (a waiting one, whose end() waits for the reader too), once, and no
    put after it; the requests beside are answered."""
    _, ours = pair("tiny-eos")
    running, waiting = Bounded(), Bounded()
    waiting.items.put(("earlier item",))                       # its reader is behind: end() must wait for it
    with Engine(ours, max_rows=2) as engine:
        request = engine.submit([5, 6, 7], min_new_tokens=40, max_new_tokens=40, streamer=running)
        beside = engine.submit([5, 6, 8], min_new_tokens=20, max_new_tokens=20)
        queued = engine.submit([5, 6, 9], max_new_tokens=12, streamer=waiting)   # no row free: it waits
        read = [running.items.get(timeout=60), running.items.get(timeout=60)]
        deadline = time.monotonic() + 60
        while not (running.items.full() and running.in_put.is_set()) and time.monotonic() < deadline:
            time.sleep(0.005)                                  # the engine waits in the next put
        cancel_at_once(request)
        cancel_at_once(queued)
        read = read_to_end(running, read)
        assert read_to_end(waiting, []) == [("earlier item",), ("end",)]
        assert beside.result(60).shape[0] == 1 and request.cancelled() and queued.cancelled()
    assert [call[0] for call in read].count("end") == 1 and len(read) < 42
    assert running.items.empty() and waiting.items.empty()     # nothing after end()


def test_the_interpreter_exits_with_a_streamer_stuck_in_put(tiny_eos_path):
    """A streaming request whose put never returns (its reader gone): the exit cancelled it and waited for that put
    forever, where close_at_exit leaves an engine stuck for EXIT_WAIT seconds as it is."""
    import subprocess
    import sys

    script = (f"import threading\n"
              f"from seq2seq_kit import BartForConditionalGeneration, Engine\n"
              f"from seq2seq_kit.engine import scheduler\n"
              f"scheduler.EXIT_WAIT = 1.0\n"
              f"model = BartForConditionalGeneration.from_pretrained({str(tiny_eos_path)!r})\n"
              f"engine = Engine(model, max_rows=4)\n"
              f"entered = threading.Event()\n"
              f"class Stuck:\n"
              f"    def put(self, value):\n"
              f"        entered.set()\n"
              f"        threading.Event().wait()\n"
              f"    def end(self):\n"
              f"        print('end')\n"
              f"request = engine.submit([5, 6, 7], max_new_tokens=20, streamer=Stuck())\n"
              f"assert entered.wait(60)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stderr) == (0, ""), run.stderr[-2000:]


def test_text_iterator_streamer_reads_an_engine_request(fixtures_dir, pair):
    """A server's use: TextIteratorStreamer on a request beside others; its pieces join to the request's text."""
    from seq2seq_kit import TextIteratorStreamer
    _, ours = pair("tiny-eos")
    _, tok = both_tokenizers(fixtures_dir, "bart")
    with Engine(ours, max_rows=4) as engine:
        others = [engine.submit([5, 6, 7 + i], max_new_tokens=20) for i in range(3)]
        streamer = TextIteratorStreamer(tok, skip_prompt=True, timeout=60, skip_special_tokens=True)
        request = engine.submit([9, 10, 11, 12], do_sample=True, max_new_tokens=30, streamer=streamer)
        pieces = list(streamer)
        assert "".join(pieces) == tok.decode(request.result(60)[0], skip_special_tokens=True) and len(pieces) > 2
        assert all(r.result(60).shape[0] == 1 for r in others)


def test_async_text_iterator_streamer_reads_an_engine_request(fixtures_dir, pair):
    """An asyncio server's use: engine.generate_async(..., streamer=AsyncTextIteratorStreamer(...)) awaited beside
    `async for` over the streamer; the pieces join to the request's text."""
    import asyncio

    from seq2seq_kit import AsyncTextIteratorStreamer
    _, ours = pair("tiny-eos")
    _, tok = both_tokenizers(fixtures_dir, "bart")

    async def serve(engine):
        streamer = AsyncTextIteratorStreamer(tok, skip_prompt=True, timeout=60, skip_special_tokens=True)
        answer = asyncio.ensure_future(engine.generate_async([9, 10, 11, 12], max_new_tokens=30, streamer=streamer))
        pieces = [piece async for piece in streamer]
        return pieces, await answer

    with Engine(ours, max_rows=4) as engine:
        pieces, out = asyncio.run(serve(engine))
    assert "".join(pieces) == tok.decode(out[0], skip_special_tokens=True) and len(pieces) > 2


def test_a_pipeline_call_streams_its_summary(checkpoint, capsys):
    """pipe(text, streamer=TextStreamer(pipe.tokenizer, ...)) prints the summary the call returns, as it is made."""
    from seq2seq_kit import TextStreamer, pipeline
    pipe = pipeline("summarization", model=str(checkpoint("tiny")))
    streamer = TextStreamer(pipe.tokenizer, skip_prompt=True, skip_special_tokens=True)
    out = pipe("The summit ended without a deal; talks go on next week.", num_beams=1, max_new_tokens=12,
               streamer=streamer)
    assert capsys.readouterr().out == out[0]["summary_text"] + "\n" and len(out[0]["summary_text"]) > 10
