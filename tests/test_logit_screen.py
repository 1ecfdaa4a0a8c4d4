"""Greedy steps from screened logits (models/logit_screen.py, generation/screening.py): the bounds hold, the picked
token is the argmax of every logit computed in float32 and processed, and generate's greedy tokens equal
transformers' and the unscreened path's, while the screen follows changes to the LM head's weight."""

from __future__ import annotations

import json
import math
import random
import warnings

import pytest
import torch

from helpers import random_settings
from seq2seq_kit.generation import logits_process as lp
from seq2seq_kit.generation import screening
from seq2seq_kit.models import gemv, kernels, logit_screen
from seq2seq_kit.models.logit_screen import LogitScreen

pytestmark = pytest.mark.skipif(not gemv.available(), reason="the screen runs gemv's int8 kernel")

FEW = {c: "gemv" for c in kernels.FEW_ROWS}


def head(V: int, K: int, seed: int, spread: float = 1.0) -> torch.Tensor:
    """An LM head's weight [V, K] with rows of very different sizes (and a zero row, as Marian's pad)."""
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(V, K, generator=g) * torch.rand(V, 1, generator=g) ** 4 * spread
    w[1] = 0
    return w


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("rows,V,K", [(1, 300, 64), (3, 1000, 100), (8, 257, 1024)])
def test_bounds_hold_and_exact_logits_are_the_full_heads(seed, rows, V, K):
    """lower <= the float32 logit (gemv on the float32 rows, the bias added, as the model's head) <= upper, for
    inputs of very different sizes; exact() gives those logits bit for bit."""
    g = torch.Generator().manual_seed(100 + seed)
    w = head(V, K, seed, spread=10.0 ** (seed % 3 - 1))
    bias = None if seed % 2 else torch.randn(V, generator=g) * 5
    h = torch.randn(rows, K, generator=g) * 10.0 ** (seed % 4 - 1)
    screened = LogitScreen(w).screen(h, w, bias)
    full = gemv.linear(h, w, None)
    if bias is not None:
        full = full.add_(bias)
    assert (screened.lower <= full).all() and (full <= screened.upper).all()
    assert torch.equal(screened.exact(torch.arange(V)), full)
    picked = torch.tensor([0, 5, V - 1])
    assert torch.equal(screened.exact(picked), full[:, picked])
    width = (screened.upper - screened.lower).median()
    assert width < (full.max() - full.min()) / 10          # bounds that screen anything at all


@pytest.mark.parametrize("bias", [None, 3.0])
def test_bounds_hold_where_every_weight_rounds_by_almost_half_a_step(bias):
    """The int8 rounding's worst case: every weight of a row but its largest (which sets the scale s) sits 0.51 s or
    0.49 s from zero, so that each rounds by 0.49 s or 0.51 s (truncated), and the input's signs follow the errors'
    (they all add up): the float32 logit is 0.49 s |x|_1 from the int8 one, and the bounds (s / 2 |x|_1) still hold
    it."""
    K = 256
    w = torch.zeros(4, K)
    w[:, 0] = 1.0                                                   # s = 1 / 127
    w[:, 1:] = torch.tensor([0.51, -0.51, 0.49, -0.49])[:, None] / 127
    h = torch.ones(2, K)
    h[:, 0] = 0
    h[1] = -h[1]
    b = None if bias is None else torch.full((4,), bias)
    screened = LogitScreen(w).screen(h, w, b)
    full = gemv.linear(h, w, None)
    if b is not None:
        full = full.add_(b)
    assert (screened.lower <= full).all() and (full <= screened.upper).all(), (screened.lower, full, screened.upper)
    assert ((screened.upper - screened.lower) / 2 < 0.51 / 127 * (K - 1)).all()     # within the bound's reach


def test_no_screen_where_it_cannot_run():
    assert LogitScreen.of(torch.randn(10, 8, dtype=torch.float64)) is None
    bad = torch.randn(10, 8)
    bad[3, 2] = math.inf
    assert LogitScreen.of(bad) is None
    w = torch.randn(10, 8)
    assert LogitScreen.of(w).screen(torch.full((1, 8), math.nan), w, None) is None


class Bounds:
    """Screened logits whose bounds are the exact logits -/+ `width` (a wide screen, or exact ones with width 0)."""

    def __init__(self, logits: torch.Tensor, width: float):
        self.logits, self.lower, self.upper = logits, logits - width, logits + width
        self.asked = []

    def exact(self, tokens):
        self.asked.append(tokens.tolist())
        return self.logits[:, tokens]


def greedy_settings(rng: random.Random) -> dict:
    """helpers.random_settings' processors for greedy search (num_beams 1 over a checkpoint's beams)."""
    drawn = random_settings(rng)
    return {k: v for k, v in drawn.items() if k not in ("do_sample", "renormalize_logits", "num_return_sequences",
                                                       "length_penalty", "early_stopping", "top_k", "top_p",
                                                       "temperature")} | {"num_beams": 1}


def processors_for(settings: dict, V: int, ids: torch.Tensor) -> list:
    from seq2seq_kit.generation.config import GenerationConfig, resolve
    cfg = resolve(GenerationConfig(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, bos_token_id=0),
                  dict(settings, max_length=20), vocab_size=V, max_position_embeddings=64)
    return lp.build_processors(cfg, ids, 1, V)


@pytest.mark.parametrize("seed", range(40))
def test_pick_is_the_argmax_of_every_processed_logit(seed):
    """Random logits with ties and near-ties, random bounds' widths and greedy settings: pick() equals argmax of
    the processors over every exact logit, on rows of sequences of random lengths."""
    rng = random.Random(seed)
    V, R = 40, 3
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(R, V, generator=g).mul(3).round().div(2)             # many exact ties
    logits[:, 7] = logits[:, 7] + 1e-6                                          # a near-tie
    settings = greedy_settings(rng)
    ids = torch.randint(3, V, (R, 9), generator=g)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                    # min_length past max_length: allowed, warned about
        procs = processors_for(settings, V, ids)
    assert screening.screenable(procs)
    length = rng.randint(1, 12)
    seq = torch.randint(0, V, (R, 20), generator=g)
    expected = lp.apply(procs, seq, length, logits.clone()).argmax(dim=-1)
    for width in (0.0, 0.3, 2.0, 50.0):
        assert torch.equal(screening.pick(Bounds(logits, width), procs, seq, length), expected), (settings, width)


def test_a_banned_winner_takes_another_round_and_a_forced_token_too():
    """The only candidate is EOS and min_length bans it: the next round asks for the tokens that can still win,
    from the lower bounds through the processors, not the whole vocabulary; a forced token outside the candidates
    is asked for; a row with every token banned takes token 0, as argmax."""
    V = 1000
    logits = torch.linspace(-5, 0, V)[None].clone()
    logits[0, 2] = 30.0                                                        # EOS far ahead
    ban_eos = [lp.MinLength(10, [2])]
    screened = Bounds(logits, 0.01)
    assert screening.pick(screened, ban_eos, torch.zeros(1, 20, dtype=torch.long), 3).item() == V - 1
    assert screened.asked[0] == [2] and len(screened.asked) == 2 and len(screened.asked[1]) < 10
    forced = [lp.ForcedToken(3, [500], V)]
    assert screening.pick(Bounds(logits, 0.01), forced, torch.zeros(1, 20, dtype=torch.long), 3).item() == 500
    everything = [lp.SuppressTokens(list(range(V)), V)]
    assert screening.pick(Bounds(logits, 0.01), everything, torch.zeros(1, 20, dtype=torch.long), 3).item() == 0


@pytest.mark.parametrize("width", [0.0, 0.01, 0.3, 5.0])
def test_the_decay_penaltys_eos_is_always_exact(width):
    """exponential_decay_length_penalty gives EOS s + |s| (factor^n - 1): past factor^n = 2 a negative EOS logit far
    below the rest scores above them all, where its bounds through the penalty say it cannot (the penalty falls as
    a negative s rises), so its exact logit is always asked for, and the pick is transformers' argmax."""
    logits = torch.tensor([[0.0, 1.0, -10.0, 0.5, 2.0, 5.0, 1.5, 0.2, -1.0, 3.0]])   # EOS = 2, far below
    decay = [lp.ExponentialDecayLengthPenalty(1, 2.0, [2], max_length=20)]          # 2 steps past start: x 4 - 1
    seq = torch.zeros(1, 20, dtype=torch.long)
    assert lp.apply(decay, seq, 3, logits.clone()).argmax(dim=-1).item() == 2
    screened = Bounds(logits, width)
    assert screening.pick(screened, decay, seq, 3).item() == 2
    assert 2 in screened.asked[0]


def test_what_is_not_screenable():
    assert not screening.screenable([lp.log_softmax])
    assert not screening.screenable([lp.Temperature(0.5)])
    assert not screening.screenable([lp.UserProcessor(lambda ids, scores: scores)])
    assert screening.screenable([lp.remove_inf_nan, lp.RepetitionPenalty(1.3)])


def screened_model(model):
    """The model with screened greedy steps and its LM head on gemv for a few rows (the screen's exact logits are
    then the full head's bits; tests/conftest.py forces oneDNN, which turns the screen off at load)."""
    model.set_kernels({**model.kernel_table(), "lm_head": FEW})
    model.set_greedy_screen(True)
    return model


@pytest.mark.parametrize("name", ["tiny-eos", "tiny", "distilbart", "marian", "pegasus", "m2m100"])
def test_greedy_generate_equals_transformers_and_the_unscreened_path(pair, name, monkeypatch):
    """Random greedy settings (processors of every screenable kind, batches with padding): the tokens equal
    transformers' and those of the full head (output_scores, which the screen does not serve); the screened step ran.
    "tiny" (no EOS bias: its EOS logits run negative, where the decay penalty's EOS score falls as the logit
    rises) takes more draws: it is where screening missed transformers' EOS before exact_always."""
    theirs, ours = pair(name)
    screened_model(ours)
    calls = []
    step = type(ours).decode_step_screened
    monkeypatch.setattr(type(ours), "decode_step_screened",
                        lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    rng = random.Random(name)
    V = ours.config.vocab_size
    for trial in range(40 if name == "tiny" else 6):
        settings = greedy_settings(rng)
        g = torch.Generator().manual_seed(trial)
        ids = torch.randint(4, min(V, 300), (2, 12), generator=g)
        mask = torch.ones_like(ids)
        mask[1, 8:] = 0
        settings = {k: v for k, v in settings.items() if not (isinstance(v, int) and not isinstance(v, bool)
                                                            and k.endswith("token_id") and v >= V)}
        before = len(calls)
        got = ours.generate(ids, mask, **settings)
        assert len(calls) > before
        full = ours.generate(ids, mask, output_scores=True, return_dict_in_generate=True, **settings).sequences
        want = theirs.generate(ids, attention_mask=mask, **settings)
        assert torch.equal(got, full), settings
        assert torch.equal(got, want), settings


@pytest.mark.parametrize("name", ["tiny", "distilbart"])
def test_greedy_with_a_steep_decay_penalty_equals_transformers(pair, name):
    """exponential_decay_length_penalty steep enough that EOS's penalty falls as its (negative) logit rises
    (factor^n > 2): screened greedy tokens equal transformers' and the full head's."""
    theirs, ours = pair(name)
    screened_model(ours)
    g = torch.Generator().manual_seed(7)
    ids = torch.randint(4, 300, (3, 10), generator=g)
    for decay in ((1, 2.0), (3, 1.6), (0, 3.0)):
        settings = dict(num_beams=1, max_new_tokens=14, min_length=0, exponential_decay_length_penalty=decay)
        got = ours.generate(ids, **settings)
        full = ours.generate(ids, output_scores=True, return_dict_in_generate=True, **settings).sequences
        assert torch.equal(got, full) and torch.equal(got, theirs.generate(ids, **settings)), decay


def test_the_screen_follows_the_heads_weight(pair):
    """Made on the first greedy call; a write through .data (no version bump), a load_state_dict and a move each
    make the next greedy call screen with the new weight (tokens as the full head gives them)."""
    _, model = pair("tiny-eos")
    model = screened_model(model)
    ids = torch.tensor([[0, 5, 9, 22, 41, 2]])
    model.screen = None
    first = model.generate(ids, max_new_tokens=12)
    screen = model.screen
    assert screen is not None and screen.fresh(model.lm_head.weight)
    model.generate(ids, max_new_tokens=12)
    assert model.screen is screen                                              # kept while the weight stays
    state = {k: v.clone() for k, v in model.state_dict().items()}
    try:
        w = model.lm_head.weight
        order = torch.randperm(w.shape[0], generator=torch.Generator().manual_seed(0))
        w.data.copy_(w.data[order])                                           # no version bump
        assert not screen.fresh(w)
        got = model.generate(ids, max_new_tokens=12)
        assert model.screen is not screen
        full = model.generate(ids, max_new_tokens=12, output_scores=True, return_dict_in_generate=True).sequences
        assert torch.equal(got, full) and not torch.equal(got, first)
    finally:
        model.load_state_dict(state)
    assert torch.equal(model.generate(ids, max_new_tokens=12), first)
    assert not LogitScreen(torch.randn(20, 8)).fresh(torch.randn(3, 4))       # another shape: no sample read past it
    model.to(torch.float64)
    try:
        assert model.screen is None and model.logit_screen() is None
    finally:
        model.to(torch.float32)
        screened_model(model)


def test_freshness_reads_the_storage_and_the_version_beside_the_sample():
    """fresh(): a copy of the weight (the same values and version, another storage) is not the weight the screen was
    made of, nor is the weight after an in-place write that leaves every sampled value as it was (a version bump)."""
    w = torch.randn(1000, 64)
    screen = LogitScreen(w)
    assert screen.fresh(w) and not screen.fresh(w.clone())
    unsampled = torch.ones(w.numel(), dtype=torch.bool)
    unsampled[screen.positions] = False
    w.view(-1)[int(unsampled.nonzero()[0])] += 1.0                         # in place, no sampled value moved
    assert not screen.fresh(w)


def test_only_greedy_steps_without_recorded_scores_are_screened(pair, monkeypatch):
    _, model = pair("tiny-eos")
    screened_model(model)
    calls = []
    step = type(model).decode_step_screened
    monkeypatch.setattr(type(model), "decode_step_screened",
                        lambda self, *a, **k: calls.append(1) or step(self, *a, **k))
    ids = torch.tensor([[0, 5, 9, 22, 41, 2]])
    for kwargs in (dict(num_beams=3), dict(do_sample=True), dict(output_scores=True, return_dict_in_generate=True),
                   dict(output_logits=True, return_dict_in_generate=True), dict(renormalize_logits=True),
                   dict(logits_processor=[lambda i, s: s]), dict(output_attentions=True, return_dict_in_generate=True)):
        model.generate(ids, max_new_tokens=5, **kwargs)
        assert not calls, kwargs
    assert model.screens(1) and model.screens(logit_screen.MAX_ROWS) and not model.screens(logit_screen.MAX_ROWS + 1)
    model.set_greedy_screen(False)
    model.generate(ids, max_new_tokens=5)
    assert not calls and model.screen is None
    screened_model(model).generate(ids, max_new_tokens=5)
    assert calls


@pytest.mark.parametrize("setting,screened", [(None, True), ("gemv", True), ("onednn", False), ("mkl", False),
                                              ("lm_head=gemv", True), ("fc1=gemv", False)])
def test_greedy_steps_are_screened_wherever_gemv_runs_unless_a_kernel_is_forced_on_the_head(
        checkpoint, monkeypatch, setting, screened):
    from seq2seq_kit import BartForConditionalGeneration, kernel_choice

    if setting is None:
        monkeypatch.delenv(kernel_choice.ENV, raising=False)
        monkeypatch.setattr(kernel_choice, "choose", lambda model: None)        # no timing: the default table
    else:
        monkeypatch.setenv(kernel_choice.ENV, setting)
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    assert model.greedy_screen is screened and model.screens(1) is screened
    assert BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8").screens(1) is False


def test_the_engines_greedy_steps_are_screened_and_equal_generate_alone(pair, monkeypatch):
    """A stream of greedy requests with different processors through the engine (eager batch): its steps over
    every running row are screened, each group picks from its rows' part, and every request's tokens equal
    generate's alone; a beam request running beside them makes those steps unscreened."""
    from seq2seq_kit import Engine

    _, model = pair("tiny-eos")
    screened_model(model)
    steps = []
    real = type(model).decode_group_unchecked
    monkeypatch.setattr(type(model), "decode_group_unchecked",
                        lambda self, ids, caches, screened=False: steps.append(screened) or real(self, ids, caches,
                                                                                                 screened))
    rng = random.Random(7)
    jobs = [([rng.randrange(4, 300) for _ in range(rng.randint(2, 30))], greedy_settings(rng)) for _ in range(16)]
    jobs.append(([5, 9, 22, 41], dict(num_beams=3, max_new_tokens=10)))
    with warnings.catch_warnings(), Engine(model, max_rows=12) as engine:
        warnings.simplefilter("ignore")
        requests = [engine.submit(ids, **setting) for ids, setting in jobs]
        outputs = [r.result(timeout=120) for r in requests]
        assert True in steps and False in steps
        for i, ((ids, setting), out) in enumerate(zip(jobs, outputs)):
            full = model.generate(torch.tensor([ids]), output_scores=True, return_dict_in_generate=True, **setting)
            assert torch.equal(out, full.sequences), f"{i}: {setting}"


def test_inspect_says_whether_greedy_steps_are_screened(checkpoint, capsys, monkeypatch):
    from seq2seq_kit import kernel_choice
    from seq2seq_kit.cli import main

    monkeypatch.setenv(kernel_choice.ENV, "gemv")
    assert main(["inspect", str(checkpoint("tiny")), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["cpu_kernels"]["greedy_screen"] is True
    assert main(["inspect", str(checkpoint("tiny"))]) == 0
    assert "; decode-step attention own; greedy LM head screened (int8 bounds) (gemv: " in capsys.readouterr().out
