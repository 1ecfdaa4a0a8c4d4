"""Sampling: the same draws as transformers under torch.manual_seed, a seedable generator, and the top-k / top-p /
temperature distribution checked statistically against the exact filtered distribution."""

from __future__ import annotations

from types import SimpleNamespace
from unittest import mock

import numpy as np
import pytest
import torch

from seq2seq_kit.generation import GenerationConfig, generate, whole_step
from seq2seq_kit.generation.config import resolve
from seq2seq_kit.generation.decoding import check_generator
from seq2seq_kit.generation.draws import draw, draw_on_device
from seq2seq_kit.generation.sampling import SampleSearch
from graph_emulation import emulate_generate_graphs, replays
from helpers import random_batch


@pytest.fixture(scope="module")
def tiny_eos(pair):
    """(transformers, seq2seq_kit) on tiny-eos, so sampled rows end at different steps."""
    return pair("tiny-eos")


def batch(n: int):
    ids, mask = random_batch(50265, 1, (10, 6), 3)
    return ids[:n], mask[:n]


CASES = [
    dict(),                                                            # top_k 50 by default
    dict(temperature=0.7),
    dict(top_k=0, top_p=0.9),
    dict(top_k=0, top_p=0.0),                                          # the top token only
    dict(temperature=1.3, top_k=20, top_p=0.8, num_return_sequences=2),
    dict(top_k=5, num_return_sequences=2, no_repeat_ngram_size=2, repetition_penalty=1.2),
    dict(num_beams=3, temperature=1.5, num_return_sequences=2),        # beam sampling
    dict(num_beams=2, top_p=0.7, length_penalty=0.5, early_stopping=True),
]
NEAR_TIE = 1e-5      # relative gap between two tokens' probs / q that float32 rounding of the scores may cross


@pytest.fixture(params=["eager", "whole-step graph"])
def path(request, monkeypatch) -> dict:
    """generate's extra kwargs for the path under test: eager, or sampling on the whole-step CUDA graph
    (decoding.WHOLE_STEP_SAMPLING; emulated on the CPU: draws.draw_on_device, their check read with the stop flag
    every GRAPH_CHECK_EVERY replays), which the test then must have replayed."""
    if request.param == "eager":
        yield {}
        return
    emulate_generate_graphs(monkeypatch, whole_step_sampling=True)
    before = replays()
    yield dict(cuda_graph=True)
    assert replays() > before


def transformers_margins(run) -> list[float]:
    """Replay transformers' generate (`run`, under its seed) recording each torch.multinomial draw's margin, the
    least over the rows of two relative gaps: between the last token drawn and the runner-up in probs / q
    (multinomial is the argmax or top-k of probs / q, q ~ Exp(1) drawn from the generator: draws.py), and between
    two tokens drawn, in probs (beam sampling sorts the tokens drawn by their score: that order picks the beams)."""
    margins, multinomial = [], torch.multinomial

    def recording(probs, num_samples, **kwargs):
        generator = torch.Generator().set_state(torch.get_rng_state())       # the q the draw is about to take
        drawn = multinomial(probs, num_samples, **kwargs)
        top = (probs / torch.empty_like(probs).exponential_(generator=generator)).topk(num_samples + 1)
        positive = top.values[:, :num_samples] > 0             # past a row's tokens of nonzero probability: any order
        assert torch.equal(top.indices[:, :num_samples][positive], drawn[positive])   # the replay is transformers'
        gap = torch.where(top.values[:, -1] > 0, (top.values[:, -2] - top.values[:, -1]) / top.values[:, -2], 1.0)
        chosen = probs.gather(1, drawn).sort(dim=1, descending=True).values      # [rows, num_samples]
        order_gap = ((chosen[:, :-1] - chosen[:, 1:]) / chosen[:, :-1]).nan_to_num(1.0)   # tokens of 0: no order
        margins.append(min(gap.min().item(), order_gap.min().item() if order_gap.numel() else 1.0))
        return drawn

    with mock.patch.object(torch, "multinomial", recording):
        run()
    return margins


def assert_same_draws(mine: torch.Tensor, theirs: torch.Tensor, run_theirs) -> None:
    """mine equal to theirs; or, where float32 rounding (scores ~3e-6 apart: other kernels, the whole-step graph's
    fixed-shape cache) flipped a draw, a near-tie explains it: a draw of transformers' before the first token that
    differs within relative NEAR_TIE (transformers_margins; seen on torch 2.6: two beams 7.7e-6 apart, whole-step
    graph)."""
    if torch.equal(mine, theirs):
        return
    width = min(mine.shape[1], theirs.shape[1])
    differs = (mine[:, :width] != theirs[:, :width]).any(dim=0).nonzero()
    first = differs[0].item() if len(differs) else width      # the column of the first token drawn otherwise
    margins = transformers_margins(run_theirs)
    assert min(margins[:first], default=1.0) < NEAR_TIE, (mine, theirs, margins)   # draw s makes column s + 1


@pytest.mark.parametrize("kwargs", CASES, ids=[str(c) for c in CASES])
@pytest.mark.parametrize("n", [1, 2])
def test_same_draws_as_transformers(tiny_eos, kwargs, n, path):
    hf, ours = tiny_eos
    ids, mask = batch(n)
    for seed in (0, 1):
        def run_theirs():
            torch.manual_seed(seed)
            return hf.generate(ids, attention_mask=mask, do_sample=True, max_length=25, **kwargs)
        theirs = run_theirs()
        torch.manual_seed(seed)
        mine = ours.generate(ids, mask, do_sample=True, max_length=25, **kwargs, **path)
        assert_same_draws(mine, theirs, run_theirs)
        assert mine.shape[0] == n * kwargs.get("num_return_sequences", 1)


def test_each_inputs_decoder_prompt_starts_its_own_returned_sequences(tiny_eos, path):
    """num_return_sequences with decoder_input_ids that differ per input: each input's prompt starts its own
    num_return_sequences rows (inputs repeated in place, as transformers expands them), with transformers' draws."""
    hf, ours = tiny_eos
    ids, mask = batch(2)
    prompt = torch.tensor([[2, 0, 100], [2, 0, 200]])
    kwargs = dict(do_sample=True, num_return_sequences=2, max_new_tokens=8, decoder_input_ids=prompt)
    torch.manual_seed(0)
    theirs = hf.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(0)
    mine = ours.generate(ids, mask, **kwargs, **path)
    assert torch.equal(mine, theirs)
    assert torch.equal(mine[:, :3], prompt.repeat_interleave(2, dim=0))


def test_generator(tiny_eos, path):
    _, ours = tiny_eos
    ids, mask = batch(2)
    draw = lambda seed: ours.generate(ids, mask, do_sample=True, max_length=25,          # noqa: E731
                                      generator=torch.Generator().manual_seed(seed), **path)
    first = draw(5)
    torch.manual_seed(123)                                 # the global RNG does not matter with a generator
    assert torch.equal(draw(5), first)
    assert not torch.equal(draw(6), first)
    torch.manual_seed(0)
    expected = ours.generate(ids, mask, do_sample=True, max_length=25, **path)
    assert torch.equal(ours.generate(ids, mask, do_sample=True, max_length=25,
                                     generator=torch.Generator().manual_seed(0), **path), expected)


def test_a_generator_on_another_device_is_refused():
    """generate's check (prepare) of a generator for a model on CUDA: a CPU generator is refused, naming the fix
    (torch.multinomial's RuntimeError was read as "no valid probabilities")."""
    with pytest.raises(ValueError, match=r"generator is a cpu generator and the model is on cuda:0: .* "
                                         r"torch.Generator\(device='cuda:0'\)"):
        check_generator(torch.Generator(), torch.device("cuda:0"))
    check_generator(torch.Generator(), torch.device("cpu"))


@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_k=8, max_length=13),
                                    dict(do_sample=True, num_beams=2, temperature=1.5, max_length=11),
                                    dict(do_sample=True, top_p=0.8, max_length=25, min_length=3)])
def test_sampling_on_the_whole_step_graph_leaves_the_generator_where_eager_sampling_does(tiny_eos, monkeypatch,
                                                                                         kwargs):
    """The whole-step graph (emulated) draws from a generator of its own, started at the caller's state, and reads
    the stop flag every 8 replays, so up to 7 replays past the stop draw again; the caller's generator is left where
    eager sampling leaves it (those not counted): three calls with one generator, and three on the global RNG
    (generator None), give the eager calls' tokens and end in their state. The second call replays the first's
    kept graph with the same generator, the third with another."""
    _, ours = tiny_eos
    ids, mask = batch(2)
    runs = {}
    for graphed in (False, True):
        if graphed:
            emulate_generate_graphs(monkeypatch, whole_step_sampling=True)
        generators = [torch.Generator().manual_seed(1)] * 2 + [torch.Generator().manual_seed(2)]
        drawn = [ours.generate(ids, mask, generator=g, cuda_graph=graphed, **kwargs) for g in generators]
        torch.manual_seed(3)
        drawn += [ours.generate(ids, mask, cuda_graph=graphed, **kwargs) for _ in range(3)]
        runs[graphed] = drawn + [g.get_state() for g in generators[1:]] + [torch.get_rng_state()]
    assert all(torch.equal(a, b) for a, b in zip(runs[True], runs[False]))
    assert len(whole_step.KEPT[ours]) == 1
    assert any((out.shape[1] - 1) % 8 for out in runs[True][:6])            # some replays past the stop drew


def test_draw_on_device_is_torch_multinomial():
    """draws.draw_on_device (no host read) against torch.multinomial over softmax(scores), 300 random cases of rows,
    vocabulary, number of draws, scale and banned tokens: the same indices and the generator left in the same
    state; fault 0. Scores with nothing to draw: draw's ValueError names the cause draw_on_device codes."""
    g = torch.Generator().manual_seed(0)
    for case in range(300):
        rows, vocab = int(torch.randint(1, 9, (1,), generator=g)), int(torch.randint(2, 3000, (1,), generator=g))
        n = int(torch.randint(1, min(vocab, 9) + 1, (1,), generator=g))
        scores = torch.randn(rows, vocab, generator=g) * float(torch.rand(1, generator=g) * 10)
        if case % 3 == 0:
            scores[:, ::3] = -float("inf")
        theirs, ours = torch.Generator().manual_seed(case), torch.Generator().manual_seed(case)
        want = torch.multinomial(scores.softmax(dim=-1), n, generator=theirs)
        got, fault = draw_on_device(scores, n, ours)
        assert torch.equal(got, want) and fault.item() == 0, case
        assert torch.equal(ours.get_state(), theirs.get_state()), case
    scores = torch.randn(3, 10, generator=g)
    for code, cause, change in ((1, "every score of a row is -inf", lambda s: s[1].fill_(-float("inf"))),
                                (2, "every score of a row is NaN", lambda s: s[2].fill_(float("nan"))),
                                (3, "the scores overflowed float32", lambda s: s[0, 4].fill_(float("inf")))):
        bad = scores.clone()
        change(bad)
        assert draw_on_device(bad, 1, None)[1].item() == code
        with pytest.raises(ValueError, match=f"no valid probabilities .*: {cause}"):
            draw(bad, 1, None)


def test_a_deferred_draw_fails_only_before_the_stop():
    """With its draws' checks deferred, a search records a draw with nothing valid to draw as a fault only while it
    still steps (a sync-free loop's steps past the stop draw too), and raises it at the stop flag's read."""
    cfg = resolve(GenerationConfig(decoder_start_token_id=0), dict(do_sample=True, max_length=5), vocab_size=10,
                  max_position_embeddings=8)
    search = SampleSearch(cfg, [], torch.zeros(2, 1, dtype=torch.long), torch.device("cpu"))
    search.defer_draw_checks()
    nothing = torch.full((2, 10), -float("inf"))
    search.going.zero_()
    search.sample(nothing, 1)
    assert search.stopped()                                           # stopped, no fault
    search.going.fill_(True)
    search.sample(nothing, 1)
    search.going.zero_()
    with pytest.raises(ValueError, match="no valid probabilities .*every score of a row is -inf"):
        search.stopped()


# ---- the filtered distribution, statistically ------------------------------------------------------------------

LOGITS = torch.tensor([3.0, 2.6, 2.1, 1.7, 1.0, 0.6, 0.0, -0.7, -1.5, -2.0])


class FixedLogits:
    """A stand-in model (generation/protocol.py's Seq2SeqModel) whose decoder always returns LOGITS, so one generate() call with many return sequences
    draws many samples through the real sampling path (processors, softmax, multinomial)."""

    def __init__(self):
        self.config = SimpleNamespace(decoder_vocab_size=len(LOGITS), max_position_embeddings=8,
                                      generation_settings_assigned=dict)          # (protocol.ModelConfig's: none)
        self.generation_config = GenerationConfig(decoder_start_token_id=0)
        self.device = torch.device("cpu")

    def check_inputs(self, input_ids, attention_mask=None):
        return None

    def encode_unchecked(self, input_ids, padding_mask):
        return torch.zeros(*input_ids.shape, 1)

    def start_decoding(self, encoder_hidden, padding_mask, rows_per_input, max_length, *, cuda_graph, screened=False):
        return self.step, SimpleNamespace()

    def step(self, input_ids, cache):
        return LOGITS.expand(len(input_ids), -1).clone()      # the caller's own (protocol.Step)


def exact_distribution(temperature: float, top_k: int, top_p: float) -> np.ndarray:
    """softmax(logits / T), keep the top_k largest, renormalise, keep the smallest most-probable prefix whose
    mass reaches top_p (a token stays while the mass strictly before it is < top_p), renormalise."""
    p = np.exp(LOGITS.double().numpy() / temperature)
    p /= p.sum()
    order = np.argsort(-p)
    keep = np.zeros_like(p, dtype=bool)
    keep[order[:top_k or len(p)]] = True
    p = np.where(keep, p, 0) / p[keep].sum()
    before = np.cumsum(p[order]) - p[order]
    keep[order[before >= top_p]] = False
    return np.where(keep, p, 0) / p[keep].sum()


@pytest.mark.parametrize("temperature,top_k,top_p", [(1.0, 4, 1.0), (1.0, 0, 0.75), (0.8, 6, 0.9), (2.0, 0, 1.0)])
def test_filtered_distribution(temperature, top_k, top_p):
    """20000 draws; total variation from the exact distribution below 0.02 (its standard deviation here is
    about 0.003), and no filtered token is ever drawn."""
    n = 20000
    out = generate(FixedLogits(), torch.zeros(1, 1, dtype=torch.long), do_sample=True, max_new_tokens=1,
                   num_return_sequences=n, temperature=temperature, top_k=top_k, top_p=top_p,
                   generator=torch.Generator().manual_seed(0))
    counts = np.bincount(out[:, 1].numpy(), minlength=len(LOGITS))
    exact = exact_distribution(temperature, top_k, top_p)
    assert (counts[exact == 0] == 0).all()
    assert 0 < (exact > 0).sum() < len(LOGITS) or (top_k == 0 and top_p == 1.0)
    tv = 0.5 * np.abs(counts / n - exact).sum()
    assert tv < 0.02, (counts / n, exact)


def test_every_token_banned_is_named_as_such(tiny_eos, path):
    """Sampling with nothing left to draw (transformers: torch's RuntimeError) names the banning settings; a
    temperature that overflows the scores names the temperature."""
    _, ours = tiny_eos
    ids, mask = batch(1)
    everything = [[t] for t in range(ours.config.vocab_size)]      # but EOS (transformers keeps it): min_length
    with pytest.raises(ValueError, match=r"no valid probabilities .*-inf: the settings that ban tokens \(`no_repeat_ngram_size`, .* no token"):
        ours.generate(ids, mask, **path, do_sample=True, max_length=5, min_length=5, bad_words_ids=everything)
    with pytest.raises(ValueError, match=r"no valid probabilities .*overflowed float32; `temperature`"):
        ours.generate(ids, mask, **path, do_sample=True, max_length=5, temperature=1e-320)
    but_eos = [t for t in range(ours.config.vocab_size) if t != 2]        # EOS is forced at max_length: min_length
    for bans in (dict(suppress_tokens=but_eos), dict(begin_suppress_tokens=but_eos),      # named too (were not)
                 dict(sequence_bias={(t,): -float("inf") for t in but_eos})):
        named = rf"no valid probabilities .*-inf: the settings that ban tokens .*`{next(iter(bans))}`"
        with pytest.raises(ValueError, match=named):
            ours.generate(ids, mask, **path, do_sample=True, max_length=5, min_length=5, **bans)


def test_a_renormalized_row_with_nothing_to_draw_is_named_by_its_causes(tiny_eos, path):
    """renormalize_logits turns a row of -inf (every token banned) or one holding +inf (overflow) into NaN: the
    message names both kinds of cause, the banning settings first (a server blames the first one its client sent),
    not "the scores overflowed" alone."""
    _, ours = tiny_eos
    ids, mask = batch(1)
    everything = [[t] for t in range(ours.config.vocab_size)]
    nan_row = r"no valid probabilities .*every score of a row is NaN: either the settings that ban tokens"
    with pytest.raises(ValueError, match=nan_row + r" .*`bad_words_ids`.* or the scores overflowed float32 \(`temperature`"):
        ours.generate(ids, mask, **path, do_sample=True, max_length=5, min_length=5, bad_words_ids=everything,
                      renormalize_logits=True)
    with pytest.raises(ValueError, match=nan_row):             # EOS forced at the last step, EOS suppressed there
        ours.generate(ids, mask, **path, do_sample=True, max_new_tokens=1, forced_eos_token_id=2,
                      begin_suppress_tokens=[2], renormalize_logits=True)
    with pytest.raises(ValueError, match=nan_row + r".*`temperature` near 0"):
        ours.generate(ids, mask, **path, do_sample=True, max_length=5, temperature=1e-320, renormalize_logits=True)
    with pytest.raises(ValueError, match=r"every score of a row is -inf: .*`forced_eos_token_id` beside a banned EOS"):
        ours.generate(ids, mask, **path, do_sample=True, max_new_tokens=1, forced_eos_token_id=2,
                      begin_suppress_tokens=[2])


@pytest.mark.parametrize("kwargs,setting", [(dict(sequence_bias={(5,): float("inf")}), "sequence_bias"),
                                            (dict(repetition_penalty=1e-39), "repetition_penalty"),
                                            (dict(exponential_decay_length_penalty=(0, -1e38)),
                                             "exponential_decay_length_penalty")])
def test_scores_raised_to_inf_name_the_setting(tiny_eos, kwargs, setting, path):
    """A +inf score from a setting other than the temperature (transformers: torch's RuntimeError) names it too,
    not only the temperature the caller left at 1. (Seeded: unseeded, the decay penalty's case drew EOS before the
    overflow in about 1 run of 30, and raised nothing.)"""
    _, ours = tiny_eos
    ids, mask = batch(1)
    with pytest.raises(ValueError, match=rf"no valid probabilities .*overflowed float32; .*`{setting}`"):
        ours.generate(ids, mask, **path, do_sample=True, max_length=5, generator=torch.Generator().manual_seed(0),
                      **kwargs)


def test_set_seed_seeds_as_transformers(tiny_eos):
    """seq2seq_kit.set_seed (transformers' name: sampling tutorials call it before generate) seeds Python's, numpy's
    and torch's generators as transformers.set_seed does: the same draws, so the same sampled tokens."""
    import random

    import transformers

    from seq2seq_kit import set_seed

    hf, ours = tiny_eos
    ids, mask = batch(2)
    runs = []
    for seeding, model in ((transformers.set_seed, hf), (set_seed, ours)):
        seeding(7)
        runs.append((random.random(), np.random.rand(),
                     model.generate(ids, attention_mask=mask, do_sample=True, max_length=12)))
    assert runs[0][:2] == runs[1][:2] and torch.equal(runs[0][2], runs[1][2])
    with pytest.raises(TypeError, match="set_seed takes an int, got float"):
        set_seed(1.5)
