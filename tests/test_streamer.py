"""generate(streamer=...): transformers' streamer protocol (put / end), call for call as transformers' generate makes
them: put(the decoder's first tokens [R, P]), put(each step's tokens [R]) (pad after a row's EOS), end(); greedy and
sampling (beam search refused, as there); with a prompt and max_time too. The engine does not take one."""

from __future__ import annotations

import pytest
import torch

from seq2seq_kit import Engine, cuda_capture
from seq2seq_kit.generation import decoding, whole_step
from graph_emulation import EmulatedGraph, replays
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


def test_a_streamer_decodes_eagerly_where_graphs_are_the_default(pair, monkeypatch):
    """On CUDA generate runs on graphs by default, which call no Python per step: with a streamer it decodes eagerly
    (every put, as transformers makes them) and runs no graph; cuda_graph=True beside a streamer is refused. The
    device is emulated: graphs are on by default here, as on a CUDA device, and replayed as graph_emulation does."""
    hf, ours = pair("tiny-eos")
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    before = replays()
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=8), hf.generate(ids, attention_mask=mask,
                                                                               max_new_tokens=8))
    assert replays() > before                                   # without a streamer: the graphed path
    theirs, mine = Recorder(), Recorder()
    hf.generate(ids, attention_mask=mask, streamer=theirs, max_new_tokens=8)
    before = replays()
    ours.generate(ids, mask, streamer=mine, max_new_tokens=8)
    assert mine.calls == theirs.calls and len(mine.calls) > 2 and replays() == before
    with pytest.raises(ValueError, match="are not run on CUDA graphs"):
        ours.generate(ids, mask, streamer=Recorder(), max_new_tokens=8, cuda_graph=True)
