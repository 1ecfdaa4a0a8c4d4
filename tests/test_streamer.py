"""generate(streamer=...): transformers' streamer protocol (put / end), call for call as transformers' generate makes
them: put(the decoder's first tokens [R, P]), put(each step's tokens [R]) (pad after a row's EOS), end(); greedy and
sampling (beam search refused, as there); with a prompt and max_time too. The engine does not take one."""

from __future__ import annotations

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
