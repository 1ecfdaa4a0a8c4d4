"""generate(max_time=...): transformers' MaxTimeCriteria. The step during which max_time seconds of decoding have
passed is the last for every row (greedy and sampling stop; beam search finishes its candidates as at max_length),
token-exact with transformers: with a clock that ticks once per step (both libraries read theirs once before
decoding and once after each step's forward), and with max_time 0 (one token) and large (no effect). The engine
gives each request its own deadline."""

from __future__ import annotations

import pytest
import torch
from transformers.generation import stopping_criteria

from seq2seq_kit import Engine
from seq2seq_kit.generation import decoding
from test_generation import assert_parity, inputs, run_both

MODES = {"greedy": {}, "beam": dict(num_beams=3, num_return_sequences=2, length_penalty=1.5),
         "never": dict(num_beams=2, early_stopping="never"), "sample": dict(do_sample=True, top_k=8)}


class TickingClock:
    """time.time / time.monotonic that advance one second per call."""

    def __init__(self):
        self.now = 0.0

    def read(self) -> float:
        self.now += 1.0
        return self.now

    time = monotonic = read


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("max_time", [0.0, 2.0, 2.5, 100.0])
def test_max_time_matches_transformers(pair, monkeypatch, mode, max_time):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    theirs_clock, our_clock = TickingClock(), TickingClock()
    monkeypatch.setattr(stopping_criteria, "time", theirs_clock)
    monkeypatch.setattr(decoding, "time", our_clock)
    torch.manual_seed(5)
    theirs = hf.generate(ids, attention_mask=mask, max_time=max_time, max_new_tokens=10, return_dict_in_generate=True,
                         output_scores=True, output_logits=True, **MODES[mode])
    torch.manual_seed(5)
    mine = ours.generate(ids, mask, max_time=max_time, max_new_tokens=10, return_dict_in_generate=True,
                         output_scores=True, output_logits=True, **MODES[mode])
    assert_parity(theirs, mine)
    # 0 s: after the first step; 2.5 s: ticks 2, 3, 4 -> 3 steps; 2.0 s: 2 s have passed at tick 3, but the time
    # taken must exceed max_time (MaxTimeCriteria's >, exact here: whole seconds) -> 3 steps too
    steps = len(mine.scores)
    assert steps == {0.0: 1, 2.0: 3, 2.5: 3}.get(max_time, len(theirs.scores))
    assert our_clock.now == theirs_clock.now == steps + 1      # read before decoding and after each step


@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
@pytest.mark.parametrize("max_time", [0.0, 2.5])
@pytest.mark.parametrize("whole_step", [True, False])
def test_max_time_on_the_cuda_graphs_matches_transformers(pair, monkeypatch, mode, max_time, whole_step):
    """generate's CUDA graphs (emulated on the CPU) with max_time: the clock is read before each replay (the stop
    flag read every step) instead of after each step's forward, the same reads one per step, so with the ticking
    clock the tokens, scores and steps are transformers'. whole_step False: the decoder-only graph with the
    search eager (sampling's path by default, and greedy / beam search with WHOLE_STEP_GRAPH off)."""
    from graph_emulation import emulate_generate_graphs, replays

    hf, ours = pair("tiny-eos")
    emulate_generate_graphs(monkeypatch, whole_step_sampling=whole_step)
    monkeypatch.setattr(decoding, "WHOLE_STEP_GRAPH", whole_step)
    monkeypatch.setattr(ours, "graphed_step", None)
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    theirs_clock, our_clock = TickingClock(), TickingClock()
    monkeypatch.setattr(stopping_criteria, "time", theirs_clock)
    monkeypatch.setattr(decoding, "time", our_clock)
    kwargs = dict(max_time=max_time, max_new_tokens=10, return_dict_in_generate=True, output_scores=True,
                  output_logits=True, **MODES[mode])
    torch.manual_seed(5)
    theirs = hf.generate(ids, attention_mask=mask, **kwargs)
    before = replays()
    torch.manual_seed(5)
    mine = ours.generate(ids, mask, cuda_graph=True, **kwargs)
    assert replays() > before
    assert_parity(theirs, mine, atol=1e-4)
    assert len(mine.scores) == {0.0: 1, 2.5: 3}[max_time] and our_clock.now == theirs_clock.now


@pytest.mark.cuda
@pytest.mark.parametrize("mode", ["greedy", "beam", "sample"])
def test_max_time_on_cuda_graphs(tiny_eos_path, mode):
    """On a GPU, max_time beside generate's CUDA graphs (the default there): 0 s gives one token per row, as
    eagerly; an hour gives the tokens of cuda_graph=False."""
    from seq2seq_kit import BartForConditionalGeneration

    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    ids, mask = (t.cuda() for t in inputs(cuda.config.vocab_size, cuda.config.pad_token_id))
    seeded = lambda: dict(generator=torch.Generator("cuda").manual_seed(3), **MODES[mode])   # noqa: E731
    assert cuda.generate(ids, mask, max_time=0.0, max_new_tokens=10, **seeded()).shape[1] == 2
    assert torch.equal(cuda.generate(ids, mask, max_time=3600.0, max_new_tokens=10, **seeded()),
                       cuda.generate(ids, mask, max_new_tokens=10, cuda_graph=False, **seeded()))


def test_max_time_on_the_real_clock(pair):
    """Unpatched: 0 s gives one token per row, as transformers; an hour changes nothing."""
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    for max_time in (0.0, 3600.0):
        theirs, mine = run_both(hf, ours, ids, mask, num_beams=2, max_new_tokens=6, max_time=max_time)
        assert_parity(theirs, mine)
    assert mine.sequences.shape[1] > 2


@pytest.mark.parametrize("value", [-1.0, float("nan"), "1"])
def test_bad_max_time_is_refused(pair, value):
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=r"`max_time` must be a number of seconds >= 0 \(None: no limit\)"):
        ours.generate(ids, mask, max_time=value)


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_engine_requests_keep_their_own_max_time(pair, fixed_capacity):
    """Requests with and without max_time step in one group; each ends as generate alone would (0 s: one token)."""
    _, ours = pair("tiny")                                       # never emits EOS: rows run to max_new_tokens
    ids = [5, 6, 7, 8, 9]
    settings = dict(max_new_tokens=30, num_beams=2)
    with Engine(ours, max_rows=8, fixed_capacity=fixed_capacity) as engine:
        timed, untimed = engine.submit(ids, max_time=0.0, **settings), engine.submit(ids, **settings)
        assert torch.equal(timed.result(), ours.generate(torch.tensor([ids]), max_time=0.0, **settings))
        assert torch.equal(untimed.result(), ours.generate(torch.tensor([ids]), **settings))
        assert timed.group is untimed.group and timed.result().shape[1] == 2


def test_a_max_time_past_any_float_is_no_limit(pair):
    """transformers compares the time taken with max_time (exact for any int): 10**400 s is no limit there. Here it
    is too, in generate and in the engine, where it fails neither its request nor the one running beside it."""
    hf, ours = pair("tiny")
    ids, huge = [5, 6, 7, 8], 10**400
    want = hf.generate(torch.tensor([ids]), max_new_tokens=8, max_time=huge)
    assert torch.equal(ours.generate(torch.tensor([ids]), max_new_tokens=8, max_time=huge), want)
    with Engine(ours, max_rows=8) as engine:
        other = engine.submit([9, 6, 7, 8], max_new_tokens=8)
        timed = engine.submit(ids, max_new_tokens=8, max_time=huge)
        assert torch.equal(timed.result(60), want)
        assert torch.equal(other.result(60), ours.generate(torch.tensor([[9, 6, 7, 8]]), max_new_tokens=8))


def test_the_decoder_prompts_forward_counts_in_max_time(pair, monkeypatch):
    """transformers' first step feeds the whole decoder prompt after its MaxTimeCriteria starts the clock: a prompt
    whose forward outlasts max_time makes that step the last. Here the prompt's prefill is decoding time too."""
    from transformers.generation import stopping_criteria as hf_stopping
    from seq2seq_kit.generation import decoder_prompt

    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    theirs_clock, our_clock = TickingClock(), TickingClock()
    monkeypatch.setattr(hf_stopping, "time", theirs_clock)
    monkeypatch.setattr(decoding, "time", our_clock)
    hf_forward, prefill = hf.forward, decoder_prompt.prefill

    def slow_hf_forward(*args, **kwargs):            # the prompt's forward (its 3 tokens at once) takes 100 s
        theirs_clock.now += 100.0 if kwargs["decoder_input_ids"].shape[1] > 1 else 0.0
        return hf_forward(*args, **kwargs)

    def slow_prefill(*args):                         # ours: the prompt's first 2 tokens, then its last in step 1
        our_clock.now += 100.0
        prefill(*args)

    monkeypatch.setattr(hf, "forward", slow_hf_forward)
    monkeypatch.setattr(decoder_prompt, "prefill", slow_prefill)
    prompt = torch.tensor([[2, 7, 8]] * 3)
    want = hf.generate(ids, attention_mask=mask, decoder_input_ids=prompt, max_time=50.0, max_new_tokens=8)
    got = ours.generate(ids, mask, decoder_input_ids=prompt, max_time=50.0, max_new_tokens=8)
    assert torch.equal(got, want) and got.shape[1] == 4              # the prompt and one token
    assert our_clock.now == theirs_clock.now == 102.0
