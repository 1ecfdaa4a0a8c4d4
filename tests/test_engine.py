"""The continuous-batching engine: each request's output equals generate() for that input alone.

The acceptance test is a randomized stream (random lengths, settings, arrival times, cancellations) on the
EOS-biased tiny checkpoint (rows end at different steps), compared request by request against generate alone:
tokens equal, sequence scores within 1e-4 (fp32, CPU; the engine batches the linear layers over all running rows,
so rounding may differ from the one-request run).
"""

from __future__ import annotations

import asyncio
import itertools
import json
import random
import re
import shutil
import threading
import time
import warnings

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode

from seq2seq_kit import BartForConditionalGeneration, Engine, EngineClosed, EngineFull, cuda_capture, pipeline
from seq2seq_kit.engine.batch import FixedCapacity
from seq2seq_kit.engine.scheduler import PADDING_LIMIT, encoder_groups
from seq2seq_kit.generation import GenerationConfig
from seq2seq_kit.models.cuda_graph import BucketGraphs
from seq2seq_kit.models.kv_cache import KVCache
from graph_emulation import EmulatedGraph
from helpers import READS, random_settings

SCORE_ATOL = 1e-4
SETTINGS = [
    dict(num_beams=1),
    dict(num_beams=1, no_repeat_ngram_size=2, repetition_penalty=1.3),
    dict(num_beams=1, min_length=6, max_new_tokens=12),
    dict(num_beams=4),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=3),
    dict(num_beams=2, num_return_sequences=2, early_stopping="never", max_length=14),
    dict(num_beams=4, encoder_no_repeat_ngram_size=2, min_new_tokens=4),
    dict(num_beams=4, max_length=9),                    # differs from a setting above only in lengths: shares
    dict(num_beams=1, min_length=3, max_new_tokens=7),  # its search (one group) when both run
    dict(num_beams=4, encoder_no_repeat_ngram_size=2, min_length=3, max_new_tokens=16),
    dict(num_beams=2, repetition_penalty=1.3, no_repeat_ngram_size=2, max_new_tokens=15),
    dict(do_sample=True, top_k=20, temperature=0.8, seed=1),
    dict(do_sample=True, top_p=0.9, num_return_sequences=3, seed=2),
    dict(do_sample=True, num_beams=2, seed=3),
]
SEARCHES = [setting for setting in SETTINGS if not setting.get("do_sample")]


@pytest.fixture(scope="module")
def tiny_eos(tiny_eos_path):
    return BartForConditionalGeneration.from_pretrained(tiny_eos_path)


def failing_call(real, n: int, message: str):
    """`real` wrapped to raise RuntimeError(message) on its n-th call (counted from now), and to pass the others
    through (a method patched on its class gets self among the arguments)."""
    calls = itertools.count(1)

    def flaky(*args, **kwargs):
        if next(calls) == n:
            raise RuntimeError(message)
        return real(*args, **kwargs)

    return flaky


def kwargs_of(setting: dict) -> dict:
    """A setting -> generate kwargs; a seeded setting gets a fresh generator (the same draws alone and in the engine)."""
    setting = dict(setting)
    seed = setting.pop("seed", None)
    if seed is not None:
        setting["generator"] = torch.Generator().manual_seed(seed)
    return setting


def alone(model, ids: list[int], setting: dict):
    return model.generate(torch.tensor([ids]), **kwargs_of(setting), return_dict_in_generate=True,
                          output_scores=True)


def assert_same(out, ref, what: str) -> None:
    assert torch.equal(out.sequences, ref.sequences), f"{what}: {out.sequences} != {ref.sequences}"
    assert (out.beam_indices is None and ref.beam_indices is None) or torch.equal(out.beam_indices,
                                                                                  ref.beam_indices), what
    if ref.sequences_scores is not None:
        torch.testing.assert_close(out.sequences_scores, ref.sequences_scores, atol=SCORE_ATOL, rtol=0)


def random_ids(rng: random.Random, vocab: int) -> list[int]:
    return [rng.randrange(4, vocab) for _ in range(rng.randint(2, 40))]


@pytest.mark.parametrize("seed,fixed_capacity", [(0, False), (1, False), (2, True), (3, True)])
def test_random_stream_matches_generate_alone(tiny_eos, seed, fixed_capacity, monkeypatch):
    """fixed_capacity: every step runs all max_rows rows on the slot store, cross keys/values padded to a
    source-length bucket (the CUDA-graph step, eager on the CPU)."""
    model = tiny_eos
    groups, shared = [], []           # requests sharing each engine step; the largest group sharing one search
    real = Engine._step

    def step(self):
        groups.append(len(self.running))
        shared.append(max(len(group.members) for group in self.groups))
        real(self)

    monkeypatch.setattr(Engine, "_step", step)
    rng = random.Random(seed)
    jobs = [(random_ids(rng, model.config.vocab_size), rng.choice(SETTINGS)) for _ in range(24)]
    cancel = set(rng.sample(range(len(jobs)), 3))
    with Engine(model, max_rows=12, fixed_capacity=fixed_capacity) as engine:
        assert isinstance(engine.batch, FixedCapacity) == fixed_capacity
        requests = []
        for i, (ids, setting) in enumerate(jobs):
            requests.append(engine.submit(ids, **kwargs_of(setting), return_dict_in_generate=True,
                                          output_scores=True))
            if i in cancel:
                requests[-1].cancel()
            time.sleep(rng.choice([0, 0, 0.002, 0.01]))          # arrivals while steps run
        outputs = [None if i in cancel else r.result(timeout=120) for i, r in enumerate(requests)]
    assert max(groups) >= 4, f"requests hardly overlapped: {max(groups)} at most in one step"
    assert max(shared) >= 2, "no two requests shared a search"
    monkeypatch.undo()
    for i, ((ids, setting), out) in enumerate(zip(jobs, outputs)):
        if out is not None:
            assert_same(out, alone(model, ids, setting), f"request {i} {setting}")


@pytest.mark.parametrize("fixed_capacity,scores", [(False, True), (True, True), (False, False)])
@pytest.mark.parametrize("setting", [dict(num_beams=3, no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=2),
                                     dict(num_beams=1, repetition_penalty=1.3),
                                     dict(num_beams=2, encoder_repetition_penalty=1.6, begin_suppress_tokens=[2],
                                          exponential_decay_length_penalty=(2, 1.4),
                                          sequence_bias={(5,): 1.0, (6, 7): -2.0})])
def test_requests_differing_in_lengths_share_one_search_at_different_steps(tiny_eos, setting, fixed_capacity, scores,
                                                                           monkeypatch):
    """Requests whose settings differ only in max_length / min_length step in one search, joining it while the
    others are mid-way (each at its own length, its own forced-EOS step and minimum; the encoder repetition penalty
    on its own source, of its own length): each equals generate alone (scores: with output_scores and output_logits, the per-step scores and logits too; without, the search's
    in-place path)."""
    lengths = [dict(max_new_tokens=14, min_new_tokens=12), dict(max_length=9), dict(max_new_tokens=11, min_length=4),
               dict(max_new_tokens=6, min_new_tokens=5)]
    shared, real = [], Engine._step
    monkeypatch.setattr(Engine, "_step", lambda self: shared.append(len(self.groups[0].members)) or real(self))
    jobs = [([5 + 3 * i, 6, 7 + i, 8, 9, 5 + 3 * i, 6] * (i + 1), {**setting, **extra}) for i, extra in enumerate(lengths)]
    with Engine(tiny_eos, max_rows=16, fixed_capacity=fixed_capacity) as engine:
        requests = []
        for ids, kwargs in jobs:
            requests.append(engine.submit(ids, **kwargs, return_dict_in_generate=scores, output_scores=scores,
                                          output_logits=scores))
            steps = len(shared)
            while len(shared) < steps + 2 and not requests[0].done():        # the next one joins two steps later
                time.sleep(0.001)
        outputs = [r.result(timeout=60) for r in requests]
    assert max(shared) >= 3, shared
    monkeypatch.undo()
    for (ids, kwargs), out in zip(jobs, outputs):
        if not scores:
            assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), **kwargs)), kwargs
            continue
        ref = tiny_eos.generate(torch.tensor([ids]), **kwargs, return_dict_in_generate=True, output_scores=True,
                                output_logits=True)
        assert_same(out, ref, str(kwargs))
        for steps, ref_steps in ((out.scores, ref.scores), (out.logits, ref.logits)):
            assert len(steps) == len(ref_steps)
            for got, want in zip(steps, ref_steps):
                torch.testing.assert_close(got, want, atol=SCORE_ATOL, rtol=0)


@pytest.mark.parametrize("fixed_capacity", [False, True])
@pytest.mark.parametrize("ngram", [1, 2])
def test_encoder_ngram_blocking_follows_each_request_through_a_shared_search(tiny_eos, fixed_capacity, ngram):
    """Inputs made of what the model would generate, so that encoder n-gram blocking changes every output; requests
    of different source lengths (their n-gram windows, padded) share one search at different steps (fixed capacity:
    they take and free its slots): each equals generate alone. (n = 1 has no prefix: padding must not match.)"""
    blocked = dict(num_beams=3, encoder_no_repeat_ngram_size=ngram)
    jobs = []
    for i, n in enumerate((6, 10, 14, 8)):
        ids, kwargs = [5 + i, 6, 7, 8], dict(blocked, max_new_tokens=n)
        for _ in range(4):                  # prepend what it generates until blocking changes its output
            free = tiny_eos.generate(torch.tensor([ids]), num_beams=3, max_new_tokens=n)
            if not torch.equal(free, tiny_eos.generate(torch.tensor([ids]), **kwargs)):
                break
            ids = free[0, 1:].tolist() + ids
        else:
            pytest.fail(f"encoder n-gram blocking never changed the output of input {i}")
        jobs.append((ids, kwargs))
    with Engine(tiny_eos, max_rows=9, fixed_capacity=fixed_capacity) as engine:
        requests = []
        for ids, kwargs in jobs:                                    # the fourth waits for a slot
            requests.append(engine.submit(ids, **kwargs))
            time.sleep(0.005)
        outputs = [r.result(timeout=60) for r in requests]
    for (ids, kwargs), out in zip(jobs, outputs):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), **kwargs)), kwargs


def draw_setting(rng: random.Random, bases: list[dict]) -> dict:
    """Settings drawn at random, or half the time one of `bases` with lengths of its own (requests that share a
    search)."""
    if rng.random() < 0.5:
        return random_settings(rng)
    return dict(rng.choice(bases), max_new_tokens=rng.randint(1, 20), min_length=rng.randint(0, 10))


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_random_settings_stream_matches_generate_alone(small_path, fixed_capacity):
    """Requests whose settings are drawn at random (every search mode and processor; sampling with a generator of
    its own), half of them from a few base settings with their own lengths (so they share searches), arriving while
    others run, on a 64-token BART: each equals generate alone."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    rng = random.Random(20 + fixed_capacity)
    bases = [random_settings(rng) for _ in range(3)]

    jobs = [([rng.randint(3, 63) for _ in range(rng.randint(1, 12))], draw_setting(rng, bases), rng.randint(0, 999))
            for _ in range(40)]

    def kwargs(setting, seed):
        return dict(setting, generator=torch.Generator().manual_seed(seed)) if setting.get("do_sample") else setting

    with warnings.catch_warnings(), Engine(model, max_rows=12, fixed_capacity=fixed_capacity) as engine:
        warnings.simplefilter("ignore")              # generate's advice (min_length above max_length)
        requests = []
        for ids, setting, seed in jobs:
            requests.append(engine.submit(ids, **kwargs(setting, seed)))
            time.sleep(rng.choice([0, 0, 0.001, 0.005]))
        outputs = [r.result(timeout=60) for r in requests]
        for i, ((ids, setting, seed), out) in enumerate(zip(jobs, outputs)):
            assert torch.equal(out, model.generate(torch.tensor([ids]), **kwargs(setting, seed))), f"{i}: {setting}"


class Injected(RuntimeError):
    """The error a racing test's flaky step raises."""


@pytest.mark.parametrize("seed", range(6))
def test_threads_racing_submits_cancels_and_close_leave_no_request_hanging(small_path, seed):
    """Threads submit random settings at once (some cancelled at once, some a moment later from a timer, some with a
    done-callback submitting again), steps and encoder passes fail at random, and the engine is closed while they
    submit: every request ends (answered, failed with the injected error or its own settings' error, or cancelled),
    the engine's thread stops, and every answer equals generate alone."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    rng = random.Random(seed)
    engine = Engine(model, max_rows=rng.choice([4, 8, 16]), max_queue=rng.choice([5, 50]),
                    fixed_capacity=seed % 2 == 1)
    flaky = random.Random(seed)

    def failing(real):
        def call(*args, **kwargs):
            if flaky.random() < 0.05:
                raise Injected("injected")
            return real(*args, **kwargs)
        return call

    engine.batch.step, engine._encode = failing(engine.batch.step), failing(engine._encode)
    sent, lock = [], threading.Lock()           # (ids, settings, request)

    def client(r: random.Random) -> None:
        for _ in range(r.randint(3, 8)):
            ids, setting = [r.randrange(4, 64) for _ in range(r.randint(2, 40))], random_settings(r)
            if setting.get("do_sample"):
                setting["seed"] = r.randrange(1000)
            try:
                request = engine.submit(ids, **kwargs_of(setting))
            except (EngineFull, EngineClosed):
                continue
            if r.random() < 0.2:
                request.add_done_callback(lambda _: suppress_refusal(lambda: sent.append(
                    ([5, 6, 7], {"max_new_tokens": 3}, engine.submit([5, 6, 7], max_new_tokens=3)))))
            with lock:
                sent.append((ids, setting, request))
            if r.random() < 0.15:
                request.cancel()
            elif r.random() < 0.1:
                threading.Timer(r.uniform(0, 0.2), request.cancel).start()
            time.sleep(r.choice([0, 0.001, 0.01]))

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")              # generate's advice (min_length above max_length)
        threads = [threading.Thread(target=client, args=(random.Random(rng.random()),)) for _ in range(3)]
        for thread in threads:
            thread.start()
        time.sleep(rng.uniform(0.05, 1.0))
        engine.close(cancel_pending=rng.random() < 0.5, timeout=60)
        for thread in threads:
            thread.join(60)
        assert not any(thread.is_alive() for thread in threads)
        assert engine._stopped.is_set(), "the engine's thread goes on after close"
        answered = 0
        for ids, setting, request in list(sent):
            assert request.done(), f"a request was left hanging: {setting}"
            if request.cancelled() or isinstance(request.exception(0), Injected):
                continue
            if request.exception(0) is not None:     # its own settings fail its search: as generate alone fails
                with pytest.raises(type(request.exception(0)), match=re.escape(str(request.exception(0)))):
                    model.generate(torch.tensor([ids]), **kwargs_of(setting))
                continue
            answered += 1
            assert torch.equal(request.result(0), model.generate(torch.tensor([ids]), **kwargs_of(setting))), setting
    assert answered >= 1


def suppress_refusal(submit) -> None:
    """submit(), an engine closed or full meanwhile being no error (a done-callback's own submit)."""
    try:
        submit()
    except (EngineFull, EngineClosed):
        pass


def test_fixed_capacity_rows_freed_by_one_group_serve_another(tiny_eos):
    """A beam request leaves its group (which steps on) and its store rows go to a greedy request of an earlier
    group: the empty slot must no longer feed tokens to those rows (each output equals generate alone)."""
    long = dict(num_beams=1, min_new_tokens=60, max_new_tokens=60)
    with Engine(tiny_eos, max_rows=8, fixed_capacity=True) as engine:
        first = engine.submit([5, 6, 7, 8], **long)                                    # group Y, stepped first
        short = engine.submit([9, 10, 11], num_beams=2, min_new_tokens=2, max_new_tokens=2)   # group X
        other = engine.submit([12, 13, 14, 15], num_beams=2, min_new_tokens=60, max_new_tokens=60)   # X too
        short.result(timeout=60)
        assert not other.done()
        late = engine.submit([16, 17, 18], num_beams=1, min_new_tokens=30, max_new_tokens=40)   # Y: short's row
        got = [r.result(timeout=60) for r in (first, short, other, late)]
    jobs = [([5, 6, 7, 8], long), ([9, 10, 11], dict(num_beams=2, min_new_tokens=2, max_new_tokens=2)),
            ([12, 13, 14, 15], dict(num_beams=2, min_new_tokens=60, max_new_tokens=60)),
            ([16, 17, 18], dict(num_beams=1, min_new_tokens=30, max_new_tokens=40))]
    for (ids, kwargs), out in zip(jobs, got):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), **kwargs)), kwargs


@given(st.lists(st.integers(1, 1024), max_size=40))
def test_encoder_groups_cover_every_input_once_and_bound_the_padding(lengths):
    groups = encoder_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        widths = [lengths[i] for i in g]
        assert widths == sorted(widths, reverse=True)                  # longest first: its length is the width
        assert len(g) * widths[0] <= PADDING_LIMIT * sum(widths)
    if len(set(lengths)) == 1:
        assert len(groups) == 1                                        # equal lengths: one pass, no padding


def test_inputs_of_close_lengths_share_one_padded_encoder_pass(tiny_eos, monkeypatch):
    """Requests admitted together are encoded in groups (encoder_groups): lengths 20, 17, 19, 18 in one padded pass,
    the 4-token one alone (too much padding beside the others); every output still equals generate alone."""
    model, passes, started, hold = tiny_eos, [], threading.Event(), threading.Event()
    encode = model.encode_unchecked

    def recording(ids, mask):
        started.set()
        hold.wait(60)                                 # the first pass waits until every request is queued
        passes.append((ids.shape[0], mask is not None))
        return encode(ids, mask)

    monkeypatch.setattr(model, "encode_unchecked", recording)
    jobs = [list(range(5, 5 + n)) for n in (40, 20, 17, 4, 19, 18)]
    with Engine(model, max_rows=32) as engine:
        submit = lambda ids: engine.submit(ids, num_beams=4, return_dict_in_generate=True, output_scores=True)
        requests = [submit(jobs[0])]
        assert started.wait(60)                       # the 40-token request is being encoded, alone
        requests += [submit(ids) for ids in jobs[1:]]     # all five queue behind it: one admission
        hold.set()
        outputs = [r.result(timeout=120) for r in requests]
    monkeypatch.undo()
    assert passes == [(1, False), (4, True), (1, False)], passes
    for ids, out in zip(jobs, outputs):
        assert_same(out, alone(model, ids, dict(num_beams=4)), f"{len(ids)} tokens")


def test_fixed_capacity_requests_up_to_the_last_position(tiny_eos):
    """max_new_tokens = max_position_embeddings (generate takes it) fills every self-attention slot; the finished
    request's one frozen step after its last (flags are read once the next step is launched) must stay in the
    position table and the slots, not fail its step (on a GPU: a device-side assert)."""
    last = tiny_eos.config.max_position_embeddings
    jobs = [([5, 6, 7, 8], dict(max_new_tokens=last)), ([9, 10, 11], dict(max_new_tokens=last - 3, num_beams=2))]
    with Engine(tiny_eos, max_rows=4, fixed_capacity=True) as engine:
        requests = [engine.submit(ids, bad_words_ids=[[2]], **kw) for ids, kw in jobs]
        outputs = [r.result(timeout=120) for r in requests]
    for (ids, kw), out in zip(jobs, outputs):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), bad_words_ids=[[2]], **kw))
    assert outputs[0].shape[1] == last + 1


def test_fixed_capacity_buckets_and_slots(tiny_eos, monkeypatch):
    """Requests of many lengths step on a few views (bucket sets: what CUDA captures one graph each for); every
    row and input slot is back in the free lists when the stream ends."""
    views = set()                             # (source slots, self slots, input slots, queries per input, rows)
    real = tiny_eos.next_token_logits
    monkeypatch.setattr(tiny_eos, "next_token_logits", lambda ids, cache: views.add(
        (cache.cross_k[0].shape[2], cache.cross_k[0].shape[0], cache.self_kv.shape[4], cache.group, ids.shape[0]))
        or real(ids, cache))
    rng = random.Random(5)
    with Engine(tiny_eos, max_rows=8, fixed_capacity=True) as engine:
        requests = [engine.submit(random_ids(rng, tiny_eos.config.vocab_size), num_beams=rng.choice([1, 2, 4]),
                                  max_new_tokens=rng.randint(3, 40)) for _ in range(12)]
        for r in requests:
            r.result(timeout=120)
        assert sorted(engine.batch.free) == list(range(8)) and engine.batch.free_inputs == list(range(8))
        assert not engine.batch.store.in_use.any() and (engine.batch.store.input_rows == 8).all()
    assert {rows for *_, rows in views} == {8}                          # always all max_rows rows
    assert {s for s, *_ in views} <= {16, 32, 64} and {n for _, _, n, _, _ in views} <= {16, 32, 64}
    assert {m for _, m, *_ in views} <= {1, 2, 4, 8} and {g for *_, g, _ in views} <= {1, 2, 4}
    assert len(views) <= 30, sorted(views)


def test_fixed_capacity_beams_share_their_inputs_keys_and_values(tiny_eos, monkeypatch):
    """Two beam-4 requests on eight rows: the step reads two input slots, each input's four rows as its queries
    (its cross-attention keys/values once, not once per beam)."""
    views = set()
    real = tiny_eos.next_token_logits
    monkeypatch.setattr(tiny_eos, "next_token_logits", lambda ids, cache: views.add(
        (cache.cross_k[0].shape[0], cache.group)) or real(ids, cache))
    with Engine(tiny_eos, max_rows=8, fixed_capacity=True) as engine:
        requests = [engine.submit([5 + i, 6, 7, 8], num_beams=4, min_new_tokens=6, max_new_tokens=6) for i in (0, 3)]
        outputs = [r.result(30) for r in requests]
    assert (2, 4) in views and views <= {(1, 4), (2, 4)}, views    # the second may join a step later
    monkeypatch.undo()
    for i, out in zip((0, 3), outputs):
        want = tiny_eos.generate(torch.tensor([[5 + i, 6, 7, 8]]), num_beams=4, min_new_tokens=6, max_new_tokens=6)
        assert torch.equal(out, want)


def test_fixed_capacity_failed_step_frees_its_slots(tiny_eos, monkeypatch):
    monkeypatch.setattr(tiny_eos, "next_token_logits",
                        failing_call(tiny_eos.next_token_logits, 3, "injected step failure"))
    with Engine(tiny_eos, max_rows=6, fixed_capacity=True) as engine:
        first = [engine.submit([5, 6, 7, 8], num_beams=b, min_new_tokens=10, max_new_tokens=10) for b in (2, 4)]
        for request in first:
            with pytest.raises(RuntimeError, match="injected step failure"):
                request.result(30)
        after = engine.submit([5, 6, 7, 8], num_beams=4, max_new_tokens=5).result(30)   # needs 4 of 6 rows
        assert sorted(engine.batch.free) == list(range(6))
    assert torch.equal(after, tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), num_beams=4, max_new_tokens=5))


def test_fixed_capacity_reads_a_steps_flags_after_launching_the_next(tiny_eos, monkeypatch):
    """Fixed capacity settles step t (reads its flags: one host read) only once step t + 1 is launched, so on a GPU
    the host's bookkeeping overlaps the device's work; the requests that finished meanwhile stepped once more,
    frozen, and still equal generate alone."""
    events, launch, settle = [], FixedCapacity.step, Engine._settle
    monkeypatch.setattr(FixedCapacity, "step", lambda *args: events.append("launch") or launch(*args))
    monkeypatch.setattr(Engine, "_settle", lambda *args: events.append("settle") or settle(*args))
    jobs = [([5 + i, 6, 7, 8], dict(num_beams=b, max_new_tokens=n)) for i, (b, n) in enumerate([(2, 5), (1, 9), (4, 7)])]
    with Engine(tiny_eos, max_rows=8, fixed_capacity=True) as engine:
        outputs = [r.result(30) for r in [engine.submit(ids, **kwargs) for ids, kwargs in jobs]]
    monkeypatch.undo()
    assert events[:2] == ["launch", "launch"] and "settle, settle" not in ", ".join(events), events
    for (ids, kwargs), out in zip(jobs, outputs):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), **kwargs)), kwargs


# aten ops whose output size or value the host must wait for on CUDA (a capture refuses them)
SYNCING = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default",
           "aten._unique2.default", "aten.unique_dim.default", "aten.unique_consecutive.default",
           "aten.repeat_interleave.Tensor", "aten.multinomial.default"}


class RefuseSyncs(TorchDispatchMode):
    """Fails on an op in SYNCING, or indexing by a bool mask (a nonzero inside), while active."""

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        masks = str(func) == "aten.index.Tensor" and any(getattr(i, "dtype", None) == torch.bool for i in args[1])
        assert str(func) not in SYNCING and not masks, f"{func} waits for the device inside a group step"
        return func(*args, **(kwargs or {}))


def test_fixed_capacity_group_steps_could_be_captured(tiny_eos, monkeypatch):
    """What lets CUDA replay a group's search step from one graph captured before any request came (SlotGroup):
    the step reads no tensor value back to the host (in Python or in an op that waits for the device), and requests entering and leaving its slots (put, vacate)
    keep every tensor it reads and writes at the same address and shape. Checked here on the CPU, eagerly, on a
    stream of beam, greedy and sampling requests (seeded) with their processors; each output equals generate
    alone."""
    from seq2seq_kit.engine.batch import SlotGroup
    inside, seen = threading.local(), {}

    def guarded(name):
        real = getattr(torch.Tensor, name)

        def read(self, *args, **kwargs):
            assert not getattr(inside, "step", False), f"Tensor.{name} read a value back inside a group step"
            return real(self, *args, **kwargs)
        return read

    def memory(group):
        return [(t.data_ptr(), t.shape) for t in [*group.search.state(), group.read_rows, group.write_rows,
                                                  group.tokens]]

    real_step = SlotGroup.step_eagerly

    def step(self, logits):
        assert seen.setdefault(id(self), memory(self)) == memory(self)
        inside.step = True
        try:
            with RefuseSyncs():
                return real_step(self, logits)
        finally:
            inside.step = False
            assert seen[id(self)] == memory(self)

    for name in READS:
        monkeypatch.setattr(torch.Tensor, name, guarded(name))
    monkeypatch.setattr(SlotGroup, "step_eagerly", step)
    rng = random.Random(11)
    jobs = [(random_ids(rng, tiny_eos.config.vocab_size), rng.choice(SETTINGS)) for _ in range(16)]
    with Engine(tiny_eos, max_rows=12, fixed_capacity=True) as engine:
        requests = []
        for ids, setting in jobs:
            requests.append(engine.submit(ids, **kwargs_of(setting)))
            time.sleep(rng.choice([0, 0.002, 0.01]))
        outputs = [r.result(timeout=120) for r in requests]
    monkeypatch.undo()
    assert len(seen) >= 3, "too few groups stepped"
    assert any(setting.get("do_sample") for _, setting in jobs)
    for (ids, setting), out in zip(jobs, outputs):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([ids]), **kwargs_of(setting))), setting


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_capacity_group_steps_replayed_as_cuda_graphs_would(small_path, seed, monkeypatch):
    """The engine's CUDA path with its graphs emulated on the CPU (tests/graph_emulation.py: the decoder's step per
    bucket set and each group's search step, captured when the group is made, then only the recorded ops replayed
    on the same tensors, none of the step's Python): a stream of requests with random greedy / beam / sampling
    settings (each sampling request with a generator of its own: the group's slots draw from generators registered
    with its graph, set to each request's as it enters), many sharing searches, beside a few that step eagerly
    (output_scores), each equal to generate alone."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    model = BartForConditionalGeneration.from_pretrained(small_path)
    rng = random.Random(40 + seed)
    bases = [s for s in (random_settings(rng) for _ in range(12)) if not s.get("do_sample")][:3]
    bases += [dict(do_sample=True, top_k=5), dict(do_sample=True, num_beams=2, top_p=0.9)]
    eager = [dict(num_beams=2, output_scores=True, return_dict_in_generate=True)]
    jobs = [([rng.randint(3, 63) for _ in range(rng.randint(1, 12))],
             dict(rng.choice(bases) if rng.random() < 0.85 else rng.choice(eager), max_new_tokens=rng.randint(1, 20),
                  min_length=rng.randint(0, 10), seed=rng.randint(0, 99)))
            for _ in range(36)]
    with warnings.catch_warnings(), Engine(model, max_rows=12, fixed_capacity=True) as engine:
        warnings.simplefilter("ignore")              # generate's advice (min_length above max_length)
        batch = engine.batch
        batch.graphs, batch.capture = BucketGraphs(model.next_token_logits, batch.tokens[:-1], batch.logits), True
        requests = []
        for ids, setting in jobs:
            requests.append(engine.submit(ids, **kwargs_of(setting)))
            time.sleep(rng.choice([0, 0, 0.001, 0.005]))
        outputs = [r.result(timeout=60) for r in requests]
        graphs = [g.graph for g in [*engine.groups, *engine.batch.idle.values()] if g.graph is not None]
        for i, ((ids, setting), out) in enumerate(zip(jobs, outputs)):
            want = model.generate(torch.tensor([ids]), **kwargs_of(setting))
            if setting.get("output_scores"):
                assert_same(out, want, f"{i}: {setting}")
            else:
                assert torch.equal(out, want), f"{i}: {setting}"
    assert len(graphs) >= 2 and all(isinstance(g, EmulatedGraph) and g.replays > 0 for g in graphs)
    assert 1 <= len(batch.graphs.graphs) <= 30                  # bucket sets
    # each bucket set's graph is captured once and replayed for its later steps (not captured anew each step)
    assert sum(g.replays for g in batch.graphs.graphs.values()) > 2 * len(batch.graphs.graphs)


@pytest.mark.cuda
def test_fixed_capacity_on_cuda_captures_the_group_search_steps(tiny_eos_path):
    """Requests without output_scores (as a server sends them): each group's search step replays from its CUDA
    graph, sampling groups' draws from the slots' generators registered with it; tokens equal eager generate alone
    on the same GPU with the same CUDA generator."""
    model = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    rng = random.Random(8)
    jobs = [(random_ids(rng, model.config.vocab_size), rng.choice(SETTINGS)) for _ in range(32)]

    def kwargs(setting):
        setting = dict(setting)
        seed = setting.pop("seed", None)
        return setting if seed is None else dict(setting, generator=torch.Generator("cuda").manual_seed(seed))

    with Engine(model, max_rows=12) as engine:
        requests = []
        for ids, setting in jobs:
            requests.append(engine.submit(ids, **kwargs(setting)))
            time.sleep(rng.choice([0, 0.002, 0.01]))
        outputs = [r.result(timeout=120) for r in requests]
        groups = list(engine.batch.idle.values())
    assert groups and all(group.graph is not None for group in groups)
    assert any(setting.get("do_sample") for _, setting in jobs)
    for i, ((ids, setting), out) in enumerate(zip(jobs, outputs)):
        want = model.generate(torch.tensor([ids], device="cuda"), **kwargs(setting), cuda_graph=False)
        assert torch.equal(out, want), f"request {i} {setting}"


@pytest.mark.cuda
def test_fixed_capacity_on_cuda_replays_a_few_graphs(tiny_eos_path):
    """On CUDA the engine steps from CUDA graphs, one per bucket set; each request's tokens are generate's
    alone (fp32, eager generate on the same GPU)."""
    model = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    rng = random.Random(7)
    jobs = [(random_ids(rng, model.config.vocab_size), rng.choice(SETTINGS[:7])) for _ in range(16)]
    with Engine(model, max_rows=12) as engine:
        assert isinstance(engine.batch, FixedCapacity) and engine.batch.graphs is not None
        requests = [engine.submit(ids, **kwargs_of(setting), return_dict_in_generate=True, output_scores=True)
                    for ids, setting in jobs]
        outputs = [r.result(timeout=120) for r in requests]
        assert 1 <= len(engine.batch.graphs.graphs) <= 30       # bucket sets, as the CPU test counts them
    for i, ((ids, setting), out) in enumerate(zip(jobs, outputs)):
        ref = model.generate(torch.tensor([ids], device="cuda"), **kwargs_of(setting), cuda_graph=False,
                             return_dict_in_generate=True, output_scores=True)
        assert_same(out, ref, f"request {i} {setting}")


def test_padded_cross_attention_gives_masked_positions_zero_weight():
    """SDPA with a boolean mask gives padded positions exactly zero weight: huge values there change nothing
    beyond float rounding of the longer reduction (about 1e-7 in fp32, so tokens stay generate's)."""
    import torch.nn.functional as F

    g = torch.Generator().manual_seed(0)
    q = torch.randn(3, 4, 1, 8, generator=g)
    k, v = (torch.randn(3, 4, 7, 8, generator=g) for _ in range(2))
    padded_k, padded_v = (torch.cat((t, torch.full((3, 4, 9, 8), 1e30)), dim=2) for t in (k, v))
    mask = (torch.arange(16) < 7).view(1, 1, 1, 16)
    want = F.scaled_dot_product_attention(q, k, v)
    got = F.scaled_dot_product_attention(q, padded_k, padded_v, attn_mask=mask)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=0)


def test_one_request_alone_is_bit_identical(tiny_eos):
    ids = list(range(5, 30))
    with Engine(tiny_eos) as engine:
        out = engine.submit(ids, num_beams=4, return_dict_in_generate=True, output_scores=True).result(60)
    ref = alone(tiny_eos, ids, dict(num_beams=4))
    assert torch.equal(out.sequences, ref.sequences)
    assert torch.equal(out.sequences_scores, ref.sequences_scores)
    assert all(torch.equal(a, b) for a, b in zip(out.scores, ref.scores))


def test_result_is_generates_tensor(tiny_eos):
    with Engine(tiny_eos) as engine:
        ids = engine.submit(torch.tensor([5, 6, 7, 8]), num_beams=2, num_return_sequences=2).result(60)
    assert torch.equal(ids, tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), num_beams=2, num_return_sequences=2))


def test_a_generation_config_argument_as_generate_takes_it(tiny_eos):
    settings = dict(generation_config=GenerationConfig(num_beams=3, max_length=12), num_return_sequences=2)
    with Engine(tiny_eos) as engine:
        ids = engine.submit(torch.tensor([5, 6, 7, 8]), **settings).result(60)
    assert ids.shape == (2, 12)
    assert torch.equal(ids, tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), **settings))


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_beams=0), ValueError, "num_beams"),
    (dict(bogus=1), ValueError, "unknown argument"),
    (dict(num_beams=2, num_return_sequences=3), ValueError, "num_return_sequences"),
    (dict(num_beams=2, length_penalty=1000.0), ValueError, "length_penalty"),   # else OverflowError in the step
])
def test_bad_settings_fail_at_submit_with_generates_message(tiny_eos, kwargs, error, match):
    with pytest.raises(error, match=match) as ours:
        Engine(tiny_eos).submit([5, 6, 7], **kwargs)
    with pytest.raises(error) as theirs:
        tiny_eos.generate(torch.tensor([[5, 6, 7]]), **kwargs)
    assert str(ours.value) == str(theirs.value)


@pytest.mark.parametrize("ids, error, match", [
    ([], ValueError, "empty"),
    (torch.tensor([[5, 6]]), ValueError, "1-D"),
    ([5, 10 ** 9], ValueError, "vocabulary"),
    ("text", TypeError, "token ids"),
    ([[5, 6, 7]], ValueError, "submit each row of a batch on its own"),
    ([5, 6.0], TypeError, r"holds 6\.0 \(float\)"),
])
def test_bad_input_fails_at_submit(tiny_eos, ids, error, match):
    with Engine(tiny_eos) as engine:
        with pytest.raises(error, match=match):
            engine.submit(ids)
        assert engine.submit([5, 6, 7], max_new_tokens=3).result(30).shape[0] == 1   # the engine goes on


@pytest.mark.parametrize("cuda_graph", [0, "", "off", 1.5])
def test_cuda_graph_of_the_wrong_type_is_refused_as_generate_refuses_it(tiny_eos, cuda_graph):
    with pytest.raises(TypeError) as ours:
        Engine(tiny_eos).submit([5, 6, 7], cuda_graph=cuda_graph)
    with pytest.raises(TypeError) as theirs:
        tiny_eos.generate(torch.tensor([[5, 6, 7]]), cuda_graph=cuda_graph)
    assert str(ours.value) == str(theirs.value)


def test_engine_arguments_that_are_no_model_or_no_count_are_named(tiny_eos, tiny_eos_path):
    """Engine(pipe), Engine(path) and max_rows=None raised AttributeError / TypeError from inside the constructor
    ('... has no attribute config', "unsupported operand type(s) for *"); each now names the fix."""
    pipe = pipeline("summarization", model=str(tiny_eos_path))
    with pytest.raises(TypeError) as error:
        Engine(pipe)
    assert str(error.value) == ("Engine takes a model, got a SummarizationPipeline; call its .engine() for an engine "
                                "on its model with its generation defaults (or pass Engine(pipe.model))")
    with pytest.raises(TypeError) as error:
        Engine(str(tiny_eos_path))
    assert str(error.value) == ("Engine takes a loaded model, got str; load one with "
                                "BartForConditionalGeneration.from_pretrained(path_or_hub_id)")
    for name in ("max_rows", "max_source_tokens", "max_queue"):
        with pytest.raises(ValueError) as error:
            Engine(tiny_eos, **{name: None if name == "max_rows" else 0})
        assert str(error.value) == f"{name} must be a positive integer, got {None if name == 'max_rows' else 0}"


@pytest.mark.parametrize("defaults", [dict(num_beam=2), dict(num_beams=0), dict(logits_processor=[lambda i, s: s]),
                                      dict(attention_mask=[1, 1, 1]), dict(stop_strings=["."]),
                                      dict(return_dict_in_generate=True, output_attentions=True)])
def test_bad_defaults_fail_at_construction_with_submits_message(tiny_eos, defaults):
    """Engine(model, defaults=...) took any defaults and every submit then failed (logits_processor and
    attention_mask as 'unknown argument(s)'; stop strings without the engine's tokenizer; attentions, which the
    engine does not return); they are refused at once with the message submit gives them."""
    with Engine(tiny_eos) as engine:
        with pytest.raises((TypeError, ValueError)) as given:
            engine.submit([5, 6, 7], **defaults)
    with pytest.raises(type(given.value)) as error:
        Engine(tiny_eos, defaults=defaults)
    assert str(error.value) == str(given.value)


def test_arguments_given_as_not_given_are_taken_as_generate_takes_them(tiny_eos):
    """streamer, logits_processor, prefix_allowed_tokens_fn, tokenizer, attention_mask: the engine does not take
    them, but None (or an empty logits_processor list) is generate's "not given", which wrappers forward; a request
    or the defaults holding them so is served as generate serves it."""
    unset = dict(streamer=None, logits_processor=None, prefix_allowed_tokens_fn=None, tokenizer=None,
                 attention_mask=None)
    want = tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6, **unset)
    with Engine(tiny_eos, defaults={**unset, "logits_processor": []}) as engine:
        assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=6, **unset).result(30), want)
        assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=6, logits_processor=[]).result(30), want)


def test_too_many_rows_for_the_engine(tiny_eos):
    with Engine(tiny_eos, max_rows=2) as engine, pytest.raises(ValueError, match="max_rows=2"):
        engine.submit([5, 6, 7], num_beams=4)


def test_an_attention_mask_is_refused_saying_submit_takes_unpadded_ids(tiny_eos):
    with Engine(tiny_eos) as engine, pytest.raises(ValueError, match="unpadded: leave attention_mask out"):
        engine.submit([5, 6, 7], attention_mask=[1, 1, 1])


def test_encoder_outputs_are_refused_saying_the_engine_encodes(tiny_eos):
    """generate's encoder_outputs: the engine runs its own encoder passes (several requests in one); None is taken
    as not given, as generate takes it."""
    with Engine(tiny_eos) as engine:
        with pytest.raises(ValueError, match="encoder_outputs: the engine encodes the requests it admits itself"):
            engine.submit([5, 6, 7], encoder_outputs=tiny_eos.encode(torch.tensor([[5, 6, 7]])))
        assert engine.submit([5, 6, 7], encoder_outputs=None, max_new_tokens=3).result(60).shape[0] == 1


def test_queue_full_raises_at_once(tiny_eos):
    engine = Engine(tiny_eos, max_rows=1, max_queue=2)
    held = [engine.submit([5, 6, 7], max_new_tokens=20, min_new_tokens=20)]
    with pytest.raises(EngineFull, match="queue is full"):
        for _ in range(10):
            held.append(engine.submit([5, 6, 7], max_new_tokens=20, min_new_tokens=20))
    engine.close(cancel_pending=True)
    assert all(r.done() for r in held)


def test_step_exception_fails_that_steps_requests_and_the_engine_goes_on(tiny_eos, monkeypatch):
    monkeypatch.setattr(tiny_eos, "decode_group_unchecked",
                        failing_call(tiny_eos.decode_group_unchecked, 3, "injected step failure"))
    with Engine(tiny_eos) as engine:
        first = engine.submit([5, 6, 7, 8], min_new_tokens=10, max_new_tokens=10)
        with pytest.raises(RuntimeError, match="injected step failure"):
            first.result(30)
        after = engine.submit([5, 6, 7, 8], max_new_tokens=5).result(30)
    assert torch.equal(after, tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=5))


def test_one_host_read_per_step_whatever_the_number_of_requests(tiny_eos, monkeypatch):
    """Every running request's search steps on the device and their flags come back in one transfer
    (SearchProgress.flags / settle): one read per step for four requests, not four (on a GPU each read is a wait).
    A CPU cache's reorder reads which of its rows moved, from a tensor already on the host (a device cache's reorder
    reads nothing): not counted."""
    reads, steps, reordering = [], [], []
    real_tolist, real_item, real_step = torch.Tensor.tolist, torch.Tensor.item, tiny_eos.decode_group_unchecked
    real_reorder = KVCache.reorder

    def counted(real):
        def read(self):
            if threading.current_thread().name == "seq2seq_kit-engine" and not reordering:
                reads.append(1)
            return real(self)
        return read

    def reorder(cache, row_idx):
        assert row_idx.device.type == "cpu"
        reordering.append(1)
        try:
            real_reorder(cache, row_idx)
        finally:
            reordering.pop()

    def step(*args, **kwargs):
        steps.append(1)
        return real_step(*args, **kwargs)

    monkeypatch.setattr(torch.Tensor, "tolist", counted(real_tolist))
    monkeypatch.setattr(torch.Tensor, "item", counted(real_item))
    monkeypatch.setattr(tiny_eos, "decode_group_unchecked", step)
    monkeypatch.setattr(KVCache, "reorder", reorder)
    with Engine(tiny_eos, max_rows=16) as engine:
        requests = [engine.submit([5 + i, 6, 7], num_beams=2, min_new_tokens=10, max_new_tokens=10) for i in range(4)]
        outputs = [r.result(30) for r in requests]
    assert all(out.shape[1] == 11 for out in outputs)
    assert len(steps) >= 10 and len(reads) == len(steps), (len(reads), len(steps))


def test_cancel_frees_rows_at_the_next_step(tiny_eos):
    with Engine(tiny_eos, max_rows=4) as engine:
        long = engine.submit([5, 6, 7], num_beams=4, min_new_tokens=200, max_new_tokens=200)
        deadline = time.monotonic() + 30
        while engine.active_rows == 0 and time.monotonic() < deadline:
            time.sleep(0.001)
        assert engine.active_rows == 4
        long.cancel()
        short = engine.submit([5, 6, 7], num_beams=4, max_new_tokens=3)   # needs the cancelled rows
        assert short.result(30).shape[0] == 1
        assert long.done() and long.future.cancelled()


def test_cancelled_requests_count_as_done_for_wait_and_as_completed(tiny_eos):
    """concurrent.futures.wait / as_completed see a cancelled request as done (an executor's future is notified),
    whether it was waiting or running, cancelled by request.cancel() or by its future (asyncio's wrap_future)."""
    from concurrent.futures import ALL_COMPLETED, as_completed, wait

    with Engine(tiny_eos, max_rows=1) as engine:
        running = engine.submit([5, 6, 7], min_new_tokens=200, max_new_tokens=200)      # the only row, a while
        while engine.active_rows == 0:
            time.sleep(0.001)
        waiting = [engine.submit([5, 6, 8 + i], max_new_tokens=3) for i in range(2)]
        waiting[0].cancel()
        waiting[1].future.cancel()                  # not through the Request: the engine notifies it when met
        running.cancel()
        futures = [r.future for r in (running, *waiting)]
        done, _ = wait(futures, timeout=5, return_when=ALL_COMPLETED)
        assert done == set(futures)
        assert set(as_completed(futures, timeout=5)) == set(futures)
        assert all(r.future.cancelled() and r.cancel() for r in (running, *waiting))    # still cancelled


def test_close_finishes_accepted_requests(tiny_eos):
    engine = Engine(tiny_eos, max_rows=2)
    requests = [engine.submit([5 + i, 6, 7], max_new_tokens=6) for i in range(6)]
    engine.close()
    assert all(r.done() and not r.future.cancelled() for r in requests)
    with pytest.raises(EngineClosed):
        engine.submit([5, 6, 7])


def test_close_with_a_timeout_says_whether_the_engine_stopped(tiny_eos):
    """close(timeout=) returned None whether or not the engine's thread had ended; it returns that, as
    threading.Event.wait does (a long request still running: False, and the thread ends after it)."""
    engine = Engine(tiny_eos, max_rows=1)
    request = engine.submit([5, 6, 7], min_new_tokens=250, max_new_tokens=250)
    while not engine.running:
        time.sleep(0.001)
    assert engine.close(timeout=0.01) is False and not request.done()
    request.cancel()
    assert engine.close(timeout=60) is True and engine.close() is True


def test_close_can_cancel_the_waiting_ones(tiny_eos):
    engine = Engine(tiny_eos, max_rows=1)
    requests = [engine.submit([5 + i, 6, 7], max_new_tokens=30, min_new_tokens=30) for i in range(5)]
    engine.close(cancel_pending=True)
    assert all(r.done() for r in requests)
    assert any(r.future.cancelled() for r in requests)


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_an_engine_dropped_without_close_is_collected_and_its_thread_ends(tiny_eos, fixed_capacity):
    """As ThreadPoolExecutor's workers: an idle engine nobody holds goes, with its thread and its slot store."""
    import gc
    import weakref

    engine = Engine(tiny_eos, max_rows=4, fixed_capacity=fixed_capacity)
    assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=6).result(60),
                       tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=6))
    thread, ref = engine._thread, weakref.ref(engine)
    del engine
    gc.collect()
    thread.join(10)
    assert ref() is None and not thread.is_alive()


def test_an_engine_nobody_holds_answers_the_futures_submitted_to_it(tiny_eos):
    """Only a request's future kept, the engine collected as soon as the garbage collector may: every future is
    answered, and the engines go once idle (also those whose last request finished at its first step)."""
    import gc
    import weakref

    want = tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=8)
    for _ in range(12):
        engine = Engine(tiny_eos, max_rows=2)
        future, ref = engine.submit([5, 6, 7], max_new_tokens=8).future, weakref.ref(engine)
        del engine
        gc.collect()                                    # before the engine's thread has woken, most times
        assert torch.equal(future.result(60), want)
    for _ in range(3):
        engine = Engine(tiny_eos, max_rows=2)
        engine.submit([5, 6, 7], max_new_tokens=1).result(60)
        ref = weakref.ref(engine)
        del engine
        for _ in range(100):
            gc.collect()
            if ref() is None:
                break
            time.sleep(0.01)
        assert ref() is None


def test_a_done_callback_closing_the_engine_while_close_cancels(tiny_eos):
    """close(cancel_pending=True) (here: the with block left by an exception) cancels a waiting request whose
    done-callback closes the engine: no deadlock (the callbacks run outside the engine's lock)."""
    outcome = []

    def leave_by_an_exception():
        engine = Engine(tiny_eos, max_rows=1)
        running = engine.submit([5, 6, 7], max_new_tokens=30, min_new_tokens=30)
        waiting = engine.submit([5, 6, 8], max_new_tokens=30)
        waiting.future.add_done_callback(lambda f: engine.close())
        try:
            with engine:
                raise KeyboardInterrupt
        except KeyboardInterrupt:
            outcome.append((waiting.future.cancelled(), running.done()))

    thread = threading.Thread(target=leave_by_an_exception, daemon=True)
    thread.start()
    thread.join(60)
    assert not thread.is_alive() and outcome == [(True, True)]


def test_the_interpreter_exits_cleanly_with_an_engine_stepping(tiny_eos_path):
    """An engine's daemon thread inside torch when the interpreter stops it aborted the process ("terminate called
    without an active exception"): engines are stopped at exit (their requests cancelled)."""
    import subprocess
    import sys

    script = (f"from seq2seq_kit import BartForConditionalGeneration, Engine\n"
              f"model = BartForConditionalGeneration.from_pretrained({str(tiny_eos_path)!r})\n"
              f"engine = Engine(model, max_rows=4)\n"
              f"requests = [engine.submit([5 + i, 6, 7], max_new_tokens=60, min_new_tokens=50, num_beams=2) "
              f"for i in range(6)]\n"
              f"requests[0].future.add_done_callback(lambda f: print('cancelled' if f.cancelled() else 'done'))\n")
    for _ in range(3):
        run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
        assert run.returncode == 0 and run.stderr == "", (run.returncode, run.stderr[-2000:])


def test_the_interpreter_exit_cancels_a_request_in_its_encoder_pass(tiny_eos_path):
    """A request the engine's thread had taken from the queue was in neither `waiting` nor `running` during its
    encoder pass, so close_at_exit missed it: it ran to its end while the exit waited (up to 30 s, then the
    process aborted). Now it is cancelled: the exit waits for the encoder pass alone."""
    import subprocess
    import sys

    script = (f"import time\n"
              f"from seq2seq_kit import BartForConditionalGeneration, Engine\n"
              f"model = BartForConditionalGeneration.from_pretrained({str(tiny_eos_path)!r})\n"
              f"encode = model.encode_unchecked\n"
              f"def slow_encode(*args, **kwargs):\n"
              f"    time.sleep(1.0)\n"                     # a long input's encoder pass
              f"    return encode(*args, **kwargs)\n"
              f"model.encode_unchecked = slow_encode\n"
              f"engine = Engine(model, max_rows=4)\n"
              f"request = engine.submit([5, 6, 7], max_new_tokens=200, min_new_tokens=200)\n"
              f"request.add_done_callback(lambda r: print('cancelled' if r.cancelled() else 'ran to its end'))\n"
              f"time.sleep(0.3)\n"                         # the script ends inside the encoder pass
              f"print(len(engine.waiting), len(engine.admitting), len(engine.running))\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, "0 1 0\ncancelled\n", "")


def test_an_engine_collected_before_its_thread_starts_ends_the_thread_quietly():
    """serve_until_done met an engine collected before its first line (an Engine made and dropped at once) and
    died with AttributeError on None (a traceback on stderr through threading.excepthook)."""
    import weakref

    from seq2seq_kit.engine.scheduler import serve_until_done

    class Dropped:
        pass

    ref = weakref.ref(Dropped())            # dead at once
    assert ref() is None
    serve_until_done(ref, threading.Condition(), [])


def test_an_engine_used_in_a_forked_child_is_refused_there(tiny_eos):
    """A fork copies no thread: a forked child's submit to its parent's engine was accepted and never answered
    (result() blocked forever). It is refused, naming the fix; the parent's engine goes on."""
    import multiprocessing
    import os

    engine = Engine(tiny_eos, max_rows=2)
    want = engine.submit([5, 6, 7], max_new_tokens=6).result(60)
    context = multiprocessing.get_context("fork")
    answers = context.SimpleQueue()

    def child():
        try:
            engine.submit([5, 6, 7], max_new_tokens=6).result(10)
            answers.put("answered")
        except Exception as e:   # noqa: BLE001 - the parent asserts which
            answers.put(f"{type(e).__name__}: {e}")
        engine.close()                      # returns: no engine thread here (it waited forever for one)
        with engine:
            pass
        answers.put("closed")

    process = context.Process(target=child)
    process.start()
    process.join(60)
    assert process.exitcode == 0
    assert answers.get() == (f"EngineClosed: this engine was created in process {os.getpid()}, whose engine thread "
                             f"a fork does not copy into this one ({process.pid}); create a new Engine in this "
                             "process")
    assert answers.get() == "closed"
    assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=6).result(60), want)


def test_the_queue_depth_of_an_engine_forked_while_its_lock_was_held_answers(tiny_eos):
    """A fork while the engine's lock was held (its thread admitting, /metrics reading) copies the lock held, with
    no thread to release it: queue_depth in the child waited forever. It is 0 there, as nothing waits."""
    import multiprocessing
    import threading

    with Engine(tiny_eos, max_rows=2) as engine:
        context = multiprocessing.get_context("fork")
        held, release = threading.Event(), threading.Event()

        def hold():                             # another thread holds the lock as the fork happens
            with engine._wake:
                held.set()
                release.wait(30)

        holder = threading.Thread(target=hold)
        holder.start()
        held.wait(30)
        process = context.Process(target=lambda: exit(0 if engine.queue_depth == 0 else 1))
        process.start()
        release.set()
        holder.join()
        process.join(30)
        if process.exitcode is None:
            process.kill()
        assert process.exitcode == 0
    engine.close()


def test_ctrl_c_while_close_waits_cancels_the_waiting_and_the_interpreter_exits_cleanly(tiny_eos_path):
    """Ctrl-C while the with block's close waits for the queue: Thread.join interrupted marked the running engine
    thread stopped (CPython 3.11), so its waiting requests kept running and close_at_exit let the interpreter stop
    the thread inside torch ("terminate called without an active exception", exit 134). Now the waiting requests
    are cancelled, as when the block is left by Ctrl-C, and the process exits 0."""
    import subprocess
    import sys

    script = (f"import os, signal\n"
              f"signal.signal(signal.SIGINT, signal.default_int_handler)\n"   # a shell's `cmd &` ignores SIGINT
              f"from seq2seq_kit import BartForConditionalGeneration, Engine\n"
              f"model = BartForConditionalGeneration.from_pretrained({str(tiny_eos_path)!r})\n"
              f"try:\n"
              f"    with Engine(model, max_rows=4) as engine:\n"
              f"        requests = [engine.submit([5 + i, 6, 7], num_beams=4, max_new_tokens=200, "
              f"min_new_tokens=200) for i in range(20)]\n"
              # Ctrl-C once the first request is answered: the block's close is waiting for the other 19 then (a
              # timer fired after the queue was done on a fast machine)
              f"        requests[0].add_done_callback(lambda r: os.kill(os.getpid(), signal.SIGINT))\n"
              f"except KeyboardInterrupt:\n"
              f"    print(engine.queue_depth, sum(r.future.cancelled() for r in requests) >= 18)\n")
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert (run.returncode, run.stdout, run.stderr) == (0, "0 True\n", "")


def test_leaving_the_block_by_an_exception_cancels_the_waiting_requests(tiny_eos):
    requests = []
    with pytest.raises(KeyboardInterrupt), Engine(tiny_eos, max_rows=1) as engine:
        requests += [engine.submit([5 + i, 6, 7], max_new_tokens=30, min_new_tokens=30) for i in range(6)]
        raise KeyboardInterrupt
    assert all(r.done() for r in requests)
    assert sum(r.future.cancelled() for r in requests) >= 4       # the running one (or two) finished


def test_closing_from_a_requests_callback_on_the_engines_thread(tiny_eos):
    engine = Engine(tiny_eos, max_rows=2)
    request = engine.submit([5, 6, 7], max_new_tokens=5)
    errors = []

    def close(future):
        try:
            engine.close()
            errors.append(None)
        except Exception as e:   # noqa: BLE001 - Future logs a callback's exception: keep it for the assert
            errors.append(e)

    request.future.add_done_callback(close)
    request.result(60)
    engine._thread.join(10)
    assert errors == [None] and not engine._thread.is_alive()
    with pytest.raises(EngineClosed):
        engine.submit([5, 6, 7])


def test_generate_async(tiny_eos):
    async def main(engine):
        return await asyncio.gather(*(engine.generate_async([5 + i, 6, 7], max_new_tokens=8) for i in range(4)))

    with Engine(tiny_eos) as engine:
        outs = asyncio.run(main(engine))
    for i, out in enumerate(outs):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([[5 + i, 6, 7]]), max_new_tokens=8))


def test_generate_async_takes_settings_and_generator_as_they_stand_at_the_call(tiny_eos):
    """Coroutines made in a loop that reseeds one generator (and edits a list) for each: every request gets its own
    seed's draws and list, as submit's do (the coroutine submitted only when gather ran it: the last seed's draws
    for all)."""
    ids, sample, seeds = [5, 6, 7], dict(do_sample=True, top_k=0, max_new_tokens=8), [1, 2, 3]

    async def main(engine):
        generator, bad = torch.Generator(), [[0]]
        calls = []
        for seed in seeds:
            bad[0][0] = 10 + seed
            calls.append(engine.generate_async(ids, generator=generator.manual_seed(seed), bad_words_ids=bad,
                                               **sample))
        generator.manual_seed(0)
        return await asyncio.gather(*calls)

    with Engine(tiny_eos) as engine:
        outs = asyncio.run(main(engine))
    for seed, out in zip(seeds, outs):
        want = tiny_eos.generate(torch.tensor([ids]), generator=torch.Generator().manual_seed(seed),
                                 bad_words_ids=[[10 + seed]], **sample)
        assert torch.equal(out, want), (seed, out, want)
    assert len({tuple(out[0].tolist()) for out in outs}) == len(seeds)


@pytest.mark.parametrize("dict_checkpoint", [False, True])
def test_pipeline_engine_gives_the_pipelines_summaries(checkpoint, tmp_path, dict_checkpoint):
    """pipe.engine()'s requests answer token ids for postprocess, also where the checkpoint's generation config
    sets return_dict_in_generate (the server and corpus jobs stand on it)."""
    path = checkpoint("tiny")
    if dict_checkpoint:
        shutil.copytree(path, tmp_path / "tiny")
        path = tmp_path / "tiny"
        settings = path / "generation_config.json"
        saved = json.loads(settings.read_text()) if settings.exists() else {"bos_token_id": 0, "eos_token_id": 2,
                                                                             "decoder_start_token_id": 2}
        settings.write_text(json.dumps({**saved, "return_dict_in_generate": True, "output_scores": True}))
    pipe = pipeline("summarization", model=str(path))
    assert pipe.model.generation_config.return_dict_in_generate is (True if dict_checkpoint else None)
    texts = ["The tower is 324 metres tall.", "Its base is square, measuring 125 metres on each side. " * 3,
             "Short one."]
    expected = pipe(texts, max_length=12, num_beams=2)
    with pipe.engine(max_rows=8) as engine:
        requests = [engine.submit(row, max_length=12, num_beams=2) for row in pipe.preprocess(texts).rows]
        got = [pipe.postprocess(r.result(60)[None])[0][0] for r in requests]
    assert got == expected


@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(defaults={"num_beams": 1}), dict(tokenizer=None)])
def test_pipeline_engine_names_what_it_takes(tiny_eos_path, kwargs):
    """A generation setting (or the defaults / tokenizer pipe.engine() passes itself) given to pipe.engine() is
    named with where settings go, not Engine's "unexpected keyword" / "multiple values" message."""
    pipe = pipeline("summarization", model=str(tiny_eos_path))
    with pytest.raises(TypeError, match=rf"^pipe.engine\(\) takes max_rows, max_source_tokens, max_encoder_tokens, "
                                        rf"max_queue, fixed_capacity, not {next(iter(kwargs))}: generation settings go "
                                        rf"with each request, engine.submit\(ids, num_beams=1, ...\), over the "
                                        rf"pipeline's$"):
        pipe.engine(**kwargs)


def test_pipeline_engine_ends_outputs_at_the_pipelines_stop_sequence(tiny_eos_path):
    """pipeline(..., stop_sequence=".") ends pipe()'s outputs at "."'s token (its eos_token_id): pipe.engine()'s
    requests end there too (they ended at the checkpoint's EOS)."""
    pipe = pipeline("summarization", model=str(tiny_eos_path), stop_sequence=".", num_beams=2, max_length=20)
    texts = ["The tower is 324 metres tall, about the same height as an 81-storey building.",
             "Short one here, and more."]
    expected = [record["summary_token_ids"].tolist() for record in pipe(texts, return_tensors=True)]
    with pipe.engine(max_rows=8) as engine:
        got = [engine.submit(row).result(60)[0].tolist() for row in pipe.preprocess(texts).rows]
    assert got == expected
    assert expected[0] == [2] * 20          # "." (4) is the EOS: the checkpoint's own (2) no longer ends it


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_sampling_requests_share_a_search_each_drawing_from_its_own_generator(tiny_eos, monkeypatch, fixed_capacity):
    """Sampling requests whose settings differ at most in their lengths step in one search (one group), each input
    drawing from its own generator: each equals generate alone with that generator. Requests given no generator get
    one seeded from torch's global RNG at submit: two runs after the same torch.manual_seed draw the same, and two
    such requests for the same input within a run draw differently."""
    sample = dict(do_sample=True, top_k=0, temperature=1.3)
    lengths = [6, 9, 12, 7]

    joined, join = [], Engine._join
    monkeypatch.setattr(Engine, "_join", lambda self, request, search: join(self, request, search) or
                        joined.append(request.group))

    def run(seeded: bool):
        torch.manual_seed(5)
        with Engine(tiny_eos, max_rows=8, fixed_capacity=fixed_capacity) as engine:
            requests = [engine.submit([5, 6, 7], max_new_tokens=n, min_new_tokens=n, **sample,
                                      **(dict(generator=torch.Generator().manual_seed(i)) if seeded else {}))
                        for i, n in enumerate(lengths)]
            return [r.result(30) for r in requests]

    outputs = run(seeded=True)
    assert len(joined) == len(lengths) and all(group is joined[0] for group in joined)      # admitted together
    for i, (n, out) in enumerate(zip(lengths, outputs)):
        assert torch.equal(out, tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=n, min_new_tokens=n,
                                                  generator=torch.Generator().manual_seed(i), **sample)), i
    unseeded = run(seeded=False)
    assert all(torch.equal(a, b) for a, b in zip(unseeded, run(seeded=False)))
    assert not torch.equal(unseeded[0][:, :7], unseeded[3][:, :7])


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_sampling_requests_draw_without_reading_the_device(tiny_eos, monkeypatch, fixed_capacity):
    """The engine's sampling requests draw with draws.draw_on_device (torch.multinomial's check of the probabilities
    would wait for the device in every sampling request's step on a GPU, where a fixed-capacity step reads its flags
    a step late), and a failed draw comes back with the flags: with the eager draw made to fail, sampling, beam
    sampling and several return sequences give generate alone's draws, and a request with nothing to draw fails
    with generate's error."""
    from seq2seq_kit.generation import search

    settings = [dict(do_sample=True, top_k=20, temperature=0.8), dict(do_sample=True, top_p=0.9,
                                                                       num_return_sequences=3),
                dict(do_sample=True, num_beams=2)]
    seeded = lambda i: dict(settings[i], generator=torch.Generator().manual_seed(i), max_new_tokens=10)  # noqa: E731
    wants = [tiny_eos.generate(torch.tensor([[5 + i, 6, 7]]), **seeded(i)) for i in range(len(settings))]
    with pytest.raises(ValueError, match="sampling found no valid probabilities") as eager:
        tiny_eos.generate(torch.tensor([[9, 6, 7]]), do_sample=True, temperature=1e-320, max_new_tokens=8)

    def refuse(*args, **kwargs):
        raise AssertionError("torch.multinomial's draw, which reads the device back")

    monkeypatch.setattr(search, "draw", refuse)
    with Engine(tiny_eos, max_rows=12, fixed_capacity=fixed_capacity) as engine:
        requests = [engine.submit([5 + i, 6, 7], **seeded(i)) for i in range(len(settings))]
        failing = engine.submit([9, 6, 7], do_sample=True, temperature=1e-320, max_new_tokens=8)
        for request, want in zip(requests, wants):
            assert torch.equal(request.result(30), want)
        assert str(failing.exception(30)) == str(eager.value)


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_a_failed_draw_fails_its_own_request_in_a_shared_search(small_path, fixed_capacity):
    """Sampling requests of one setting share a search, and a draw fails for one input alone: with
    encoder_no_repeat_ngram_size 1 every token of a source holding all 64 ids is banned. That request fails with
    generate's error; the others beside it, and one that takes its slot afterwards, equal generate alone."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    sample = dict(do_sample=True, encoder_no_repeat_ngram_size=1, max_new_tokens=12, min_new_tokens=12)
    seeded = lambda i: dict(sample, generator=torch.Generator().manual_seed(i))      # noqa: E731
    everything, sources = list(range(64)), [[5, 6, 7], [9, 10, 11, 12], [20, 21]]
    with pytest.raises(ValueError, match="sampling found no valid probabilities") as alone:
        model.generate(torch.tensor([everything]), **seeded(9))
    with Engine(model, max_rows=4, fixed_capacity=fixed_capacity) as engine:
        first = [engine.submit(ids, **seeded(i)) for i, ids in enumerate(sources[:2])]
        failing = engine.submit(everything, **seeded(9))
        assert str(failing.exception(30)) == str(alone.value)
        later = engine.submit(sources[2], **seeded(2))                   # the failed request's slot, reused
        outputs = [r.result(30) for r in [*first, later]]
    for i, (ids, out) in enumerate(zip(sources, outputs)):
        assert torch.equal(out, model.generate(torch.tensor([ids]), **seeded(i))), i


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_a_search_that_fails_fails_its_own_requests_only(tiny_eos, fixed_capacity):
    """A sampling request whose temperature overflows every probability fails in its search, after the shared
    decoder step, with generate's error; the requests stepping beside it (other searches) finish as generate
    alone gives them, and the engine goes on."""
    bad = dict(do_sample=True, temperature=1e-320, max_new_tokens=8)
    with pytest.raises(ValueError, match="sampling found no valid probabilities"):
        tiny_eos.generate(torch.tensor([[5, 6, 7]]), **bad)
    good = [dict(num_beams=2, min_new_tokens=12, max_new_tokens=12), dict(min_new_tokens=12, max_new_tokens=12)]
    with Engine(tiny_eos, max_rows=6, fixed_capacity=fixed_capacity) as engine:
        others = [engine.submit([5 + i, 6, 7], **kw) for i, kw in enumerate(good)]
        while engine.active_rows < 3:                      # both running before the bad one joins
            time.sleep(0.001)
        failing = engine.submit([9, 6, 7], **bad)
        with pytest.raises(ValueError, match="sampling found no valid probabilities"):
            failing.result(30)
        for i, (request, kw) in enumerate(zip(others, good)):
            assert torch.equal(request.result(30), tiny_eos.generate(torch.tensor([[5 + i, 6, 7]]), **kw))
        assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=4).result(30),
                           tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4))


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_a_length_penalty_past_double_range_only_beyond_the_requests_lengths(tiny_eos, fixed_capacity):
    """length_penalty 150 with 10 new tokens: t ** 150 stays in double's range up to the request's own max_length,
    which generate and submit accept; fixed capacity builds its slots' search at the widest max_length, past that
    range (an OverflowError failed the request and every request running beside it). Both equal generate alone."""
    steep = dict(num_beams=2, length_penalty=150.0, max_new_tokens=10)
    steady = dict(min_new_tokens=30, max_new_tokens=30)
    with Engine(tiny_eos, max_rows=8, fixed_capacity=fixed_capacity) as engine:
        beside = engine.submit([9, 10, 11], **steady)
        while engine.active_rows == 0:
            time.sleep(0.001)
        request = engine.submit([5, 6, 7], **steep)
        assert torch.equal(request.result(60), tiny_eos.generate(torch.tensor([[5, 6, 7]]), **steep))
        assert torch.equal(beside.result(60), tiny_eos.generate(torch.tensor([[9, 10, 11]]), **steady))


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_a_request_whose_search_cannot_start_fails_alone(tiny_eos, monkeypatch, fixed_capacity):
    """An error starting one admitted request's search fails that request only: those admitted with it and those
    running beside it finish as generate alone gives them, its rows are free again, and the engine goes on."""
    import seq2seq_kit.engine.scheduler as scheduler

    real = scheduler.start_search

    def failing(cfg, input_ids, *args, **kwargs):
        if input_ids[0, 0].item() == 13:
            raise RuntimeError("injected start failure")
        return real(cfg, input_ids, *args, **kwargs)

    monkeypatch.setattr(scheduler, "start_search", failing)
    setting = dict(num_beams=2, min_new_tokens=12, max_new_tokens=12)
    with Engine(tiny_eos, max_rows=6, fixed_capacity=fixed_capacity) as engine:
        running = engine.submit([9, 10, 11], **setting)
        while engine.active_rows == 0:
            time.sleep(0.001)
        bad, good = engine.submit([13, 10, 11], **setting), engine.submit([14, 10, 11], max_new_tokens=8)
        with pytest.raises(RuntimeError, match="injected start failure"):
            bad.result(30)
        assert torch.equal(running.result(30), tiny_eos.generate(torch.tensor([[9, 10, 11]]), **setting))
        assert torch.equal(good.result(30), tiny_eos.generate(torch.tensor([[14, 10, 11]]), max_new_tokens=8))
        assert engine.submit([5, 6], num_beams=6, max_new_tokens=4).result(30).shape[0] == 1   # every row free
        if fixed_capacity:
            assert sorted(engine.batch.free) == list(range(6))


@pytest.mark.parametrize("where", ["decoder", "search"])
def test_fixed_capacity_output_finished_before_a_failed_step_is_kept(tiny_eos, monkeypatch, where):
    """Fixed capacity reads a step's flags once the next step is launched, so a request that finished at step 3
    steps a 4th time, frozen. That step failing (in the decoder, or in the search the two requests share) fails the
    request still going with its error, while the finished one gets its output, not the error."""
    from seq2seq_kit.generation.sampling import SampleSearch

    short, going = dict(min_new_tokens=3, max_new_tokens=3), dict(min_new_tokens=9, max_new_tokens=9)
    want = tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), **short)
    owner, name = (tiny_eos, "next_token_logits") if where == "decoder" else (SampleSearch, "advance_on_device")
    with Engine(tiny_eos, max_rows=4, fixed_capacity=True) as engine:
        monkeypatch.setattr(owner, name, failing_call(getattr(owner, name), 4, f"injected {where} failure"))
        requests = [engine.submit([5, 6, 7, 8], **short), engine.submit([9, 10, 11], **going)]   # one step, one search
        assert torch.equal(requests[0].result(timeout=30), want)
        with pytest.raises(RuntimeError, match=f"injected {where} failure"):
            requests[1].result(timeout=30)
        monkeypatch.undo()
        assert torch.equal(engine.submit([5, 6, 7, 8], **short).result(30), want)     # the engine goes on


def test_search_exception_fails_every_request_of_that_search(tiny_eos, monkeypatch):
    """An error after the decoder ran, in a search that three requests share, settles all three."""
    from seq2seq_kit.generation.sampling import SampleSearch

    flaky = failing_call(SampleSearch.advance_on_device, 7, "injected search failure")
    with Engine(tiny_eos, max_rows=4) as engine:
        requests = [engine.submit([5 + i, 6, 7], min_new_tokens=20, max_new_tokens=20) for i in range(3)]
        while engine.active_rows < 3:                      # all three share every step before patching
            time.sleep(0.001)
        monkeypatch.setattr(SampleSearch, "advance_on_device", flaky)
        for request in requests:
            with pytest.raises(RuntimeError, match="injected search failure"):
                request.result(timeout=30)
        monkeypatch.undo()
        assert engine.submit([5, 6, 7], max_new_tokens=4).result(30).shape[0] == 1


def test_a_second_failure_while_failing_a_step_settles_every_request(tiny_eos, monkeypatch):
    """A device that stays broken (fixed capacity: freeing the failed step's slots raises too) and a
    BaseException from a step: every request still gets an error, the engine's thread lives, and it serves the
    next request."""
    from seq2seq_kit.models.kv_cache import SlotStore

    real_step, real_free, broken = tiny_eos.next_token_logits, SlotStore.free, {"on": False, "steps": 0}

    def step(*args):
        broken["steps"] += 1
        if broken["steps"] == 3:
            broken["on"] = True
            raise SystemExit("a BaseException from user code")
        return real_step(*args)

    def free(self, *args):
        if broken["on"]:
            raise RuntimeError("the device is still broken")
        return real_free(self, *args)

    monkeypatch.setattr(tiny_eos, "next_token_logits", step)
    monkeypatch.setattr(SlotStore, "free", free)
    with Engine(tiny_eos, max_rows=8, fixed_capacity=True) as engine:
        requests = [engine.submit([5 + i, 6, 7], min_new_tokens=9, max_new_tokens=9) for i in range(2)]
        for request in requests:
            with pytest.raises(RuntimeError, match="the engine's step raised SystemExit.*BaseException from user"):
                request.result(timeout=30)
        broken["on"] = False
        assert engine._thread.is_alive()
        want = tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4)
        assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=4).result(30), want)   # the rows left


@pytest.mark.parametrize("fixed_capacity", [False, True])
@pytest.mark.parametrize("failing_step", [False, True])
def test_a_done_callback_raising_a_base_exception_leaves_no_request_hanging(tiny_eos, monkeypatch, fixed_capacity,
                                                                          failing_step):
    """A request's done-callback that raises SystemExit on the engine's thread, as its output is settled (or, in a
    failed step, its error): the other requests of that step are still settled, and the engine serves on."""
    if failing_step:
        name = "next_token_logits" if fixed_capacity else "decode_group_unchecked"     # each batch's decoder step
        monkeypatch.setattr(tiny_eos, name, failing_call(getattr(tiny_eos, name), 2, "injected step failure"))
    with Engine(tiny_eos, max_rows=4, fixed_capacity=fixed_capacity) as engine:
        first, second = (engine.submit([5, 6, 7], min_new_tokens=8, max_new_tokens=8) for _ in range(2))
        first.future.add_done_callback(lambda future: (_ for _ in ()).throw(SystemExit("a callback exits")))
        for request in (first, second):
            if failing_step:
                with pytest.raises(RuntimeError, match="injected step failure"):
                    request.result(30)
            else:
                assert request.result(30).shape[1] == 9
        want = tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4)
        assert torch.equal(engine.submit([5, 6, 7], max_new_tokens=4).result(30), want)


def test_a_request_answers_a_futures_questions(tiny_eos):
    """cancelled(), exception(timeout) and add_done_callback(fn) as a concurrent.futures.Future's (they raised
    AttributeError: only result / cancel / done were there), fn called with the request."""
    from concurrent.futures import CancelledError

    seen = []
    with Engine(tiny_eos, max_rows=1) as engine:
        running = engine.submit([5, 6, 7], min_new_tokens=200, max_new_tokens=200)
        running.add_done_callback(seen.append)
        with pytest.raises(TimeoutError):
            running.exception(0.01)
        assert not running.cancelled() and seen == []
        assert running.cancel() and running.cancelled() and seen == [running]
        with pytest.raises(CancelledError):
            running.exception(0)
        answered = engine.submit([5, 6, 7], max_new_tokens=4)
        assert answered.exception(30) is None and not answered.cancelled()
        answered.add_done_callback(seen.append)                         # done already: called at once
        failed = engine.submit([5, 6, 7], do_sample=True, temperature=1e-320, max_new_tokens=4)
        error = failed.exception(30)
    assert seen == [running, answered]
    assert isinstance(error, ValueError) and "sampling found no valid probabilities" in str(error)


def test_requests_are_themselves_as_their_futures(tiny_eos):
    """Hashable, == by identity (a dataclass compared their tensors: `in` and list.remove raised)."""
    with Engine(tiny_eos) as engine:
        a, b = engine.submit([5, 6, 7], max_new_tokens=2), engine.submit([5, 6, 7], max_new_tokens=2)
        assert a != b and b in [a, b] and len({a, b}) == 2 and {a: 1}[a] == 1


def test_a_fill_that_fails_takes_no_slots(tiny_eos, monkeypatch):
    """Fixed capacity: a request whose slots fail to fill fails alone, and its rows and input slot stay free (they
    were taken first and lost: later requests failed with 'pop from empty list')."""
    from seq2seq_kit.models.kv_cache import SlotStore

    monkeypatch.setattr(SlotStore, "fill", failing_call(SlotStore.fill, 1, "injected fill failure"))
    with Engine(tiny_eos, max_rows=4, fixed_capacity=True) as engine:
        with pytest.raises(RuntimeError, match="injected fill failure"):
            engine.submit([5, 6, 7], num_beams=4, max_new_tokens=4).result(30)
        assert sorted(engine.batch.free) == [0, 1, 2, 3] and engine.batch.free_inputs == [0, 1, 2, 3]
        out = engine.submit([5, 6, 7], num_beams=4, max_new_tokens=4).result(30)    # needs every row
    assert torch.equal(out, tiny_eos.generate(torch.tensor([[5, 6, 7]]), num_beams=4, max_new_tokens=4))


def test_cancelled_waiting_requests_leave_room_in_the_queue(tiny_eos):
    with Engine(tiny_eos, max_rows=1, max_queue=2) as engine:
        running = engine.submit([5, 6, 7], min_new_tokens=200, max_new_tokens=200)     # the only row, a while
        while engine.active_rows == 0:
            time.sleep(0.001)
        waiting = [engine.submit([5, 6, 8 + i], max_new_tokens=3) for i in range(2)]
        with pytest.raises(EngineFull):
            engine.submit([5, 6, 10], max_new_tokens=3)
        waiting[1].cancel()
        assert engine.queue_depth == 1
        late = engine.submit([5, 6, 10], max_new_tokens=3)                          # room again
        running.cancel()
        assert torch.equal(late.result(30), tiny_eos.generate(torch.tensor([[5, 6, 10]]), max_new_tokens=3))


def test_requests_cancelled_while_the_queue_is_blocked_do_not_pile_up(tiny_eos):
    """A client that submits and cancels while the head of the queue cannot start (a server's disconnects): the
    queue keeps at most max_queue requests, cancelled ones dropped when it reaches that."""
    with Engine(tiny_eos, max_rows=1, max_queue=2) as engine:
        running = engine.submit([5, 6, 7], min_new_tokens=200, max_new_tokens=200)
        while engine.active_rows == 0:
            time.sleep(0.001)
        for i in range(50):
            engine.submit([5, 6, 8 + i % 9], max_new_tokens=3).cancel()
        assert len(engine.waiting) <= 2 and engine.queue_depth == 0
        running.cancel()


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_submit_all_gives_each_input_what_submit_gives_it(tiny_eos, fixed_capacity):
    """submit_all(rows, **settings): one request per row, the settings resolved once, each output the one submit
    (and generate alone) gives that row; a sampling call's generator starts each request from its state now, as
    submits one after another with the generator reseeded to that state would."""
    rows = [[5, 6, 7], torch.tensor([8, 9, 10, 11]), (12, 13)]
    settings = dict(num_beams=2, max_new_tokens=6, sequence_bias=[[[7], 1.5], [[9, 10], -2.0]])
    sample = dict(do_sample=True, top_k=0, max_new_tokens=6)
    with Engine(tiny_eos, fixed_capacity=fixed_capacity) as engine:
        beams = engine.submit_all(rows, **settings)
        drawn = engine.submit_all(rows, generator=torch.Generator().manual_seed(3), **sample)
        assert len(beams) == len(drawn) == 3 and beams[0].config is beams[2].config     # resolved once
        for requests, kwargs in ((beams, settings), (drawn, sample)):
            for request, row in zip(requests, rows):
                seeded = dict(generator=torch.Generator().manual_seed(3)) if kwargs is sample else {}
                want = tiny_eos.generate(torch.tensor([list(row)]), **kwargs, **seeded)
                assert torch.equal(request.result(60), want), row


def test_submit_all_queues_every_input_or_none(tiny_eos):
    """A refused input (its place named by the message, as submit names it), a list the queue cannot hold, or no
    list at all: nothing is queued, and the engine goes on."""
    with Engine(tiny_eos, max_rows=1, max_queue=3) as engine:
        blocker = engine.submit([9, 10], min_new_tokens=250, max_new_tokens=250)    # keeps the others waiting
        with pytest.raises(ValueError, match="vocabulary"):
            engine.submit_all([[5, 6], [5, 10 ** 9]], max_new_tokens=3)
        with pytest.raises(ValueError, match="num_beams"):
            engine.submit_all([[5, 6], [7, 8]], num_beams=0)
        assert engine.queue_depth == 0
        with pytest.raises(ValueError, match=r"^submit_all\(\) got 4 inputs, more than this engine's max_queue=3 can "
                                             r"ever hold at once; submit them in smaller lists, or raise max_queue$"):
            engine.submit_all([[5, 6]] * 4, max_new_tokens=3)
        engine.submit([5, 6], max_new_tokens=3)
        with pytest.raises(EngineFull, match=r"\(3 waiting requests; 3 inputs at once do not fit beside the 1 "
                                             r"waiting\); retry later$"):
            engine.submit_all([[5, 6]] * 3, max_new_tokens=3)
        assert engine.queue_depth == 1
        for rows in ([], [5, 6], "text", None):
            with pytest.raises(TypeError, match=r"^submit_all\(\) takes a non-empty list of inputs"):
                engine.submit_all(rows)
        requests = engine.submit_all([[5, 6]] * 2, max_new_tokens=3)
        assert engine.queue_depth == 3
        blocker.cancel()
        assert [r.result(60).shape[0] for r in requests] == [1, 1]


def test_waiting_on_a_request_in_the_engines_thread_is_refused_not_a_deadlock(tiny_eos):
    """A done-callback (or a streamer) runs in the engine's thread, the one that answers requests: waiting there on
    one not yet done (result(), exception()) stalled every request for good; it is a RuntimeError naming the way to
    chain instead. Submitting from there, and reading a request already done, work."""
    errors, chained, threads = [], [], []

    def chain(request):                     # "summarize the summary", in the engine's thread
        threads.append(threading.current_thread().name)
        follow = engine.submit(request.result()[0].tolist(), max_new_tokens=3)      # done: read at once
        for wait in (follow.result, follow.exception):
            try:
                wait(5)
            except RuntimeError as e:
                errors.append(str(e))
        chained.append(follow)

    with Engine(tiny_eos, max_rows=1) as engine:
        blocker = engine.submit([9, 10], min_new_tokens=20, max_new_tokens=20)      # keeps `first` waiting
        first = engine.submit([5, 6, 7], max_new_tokens=4)
        first.add_done_callback(chain)      # not done yet: called in the thread that answers it
        blocker.result(30)
        other = engine.submit([8, 9], max_new_tokens=3)
        assert other.result(30).shape[0] == 1 and first.result(30).shape[0] == 1
        deadline = time.monotonic() + 30
        while not chained and time.monotonic() < deadline:
            time.sleep(0.01)
        assert chained and chained[0].result(30).shape[0] == 1
    assert threads == ["seq2seq_kit-engine"]
    assert [e.split(" in the engine's")[0] for e in errors] == ["request.result()", "request.exception()"]
    assert errors[0].endswith("would wait forever: that thread answers it; wait in another thread, or chain the next "
                              "step with request.add_done_callback")


def test_the_callers_tensor_is_copied_at_submit(tiny_eos):
    ids = torch.tensor([5, 6, 7, 8])
    with Engine(tiny_eos, max_rows=1) as engine:
        first = engine.submit([9, 10], min_new_tokens=20, max_new_tokens=20)       # keeps the next one waiting
        request = engine.submit(ids, max_new_tokens=5)
        ids.fill_(11)                                                               # the caller reuses its buffer
        assert request.input_ids.tolist() == [[5, 6, 7, 8]]
        first.result(30)
        assert torch.equal(request.result(30), tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=5))


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_settings_and_generator_are_kept_as_they_stand_at_submit(tiny_eos, fixed_capacity):
    """A waiting request is not changed by its caller editing the lists it passed, or reseeding / reusing the
    generator it passed (the reseed-before-each-submit pattern gives each request the seed's draws)."""
    bad, eos = [[5]], [2]
    generator = torch.Generator().manual_seed(7)
    sample = dict(do_sample=True, top_k=0, max_new_tokens=8)
    with Engine(tiny_eos, max_rows=1, fixed_capacity=fixed_capacity) as engine:
        blocker = engine.submit([9, 10], min_new_tokens=250, max_new_tokens=250)    # keeps the others waiting
        listed = engine.submit([5, 6, 7], bad_words_ids=bad, eos_token_id=eos, max_new_tokens=8)
        bad[0][0], eos[0] = 6, 6                           # the caller edits its lists while the request waits
        drawn = [engine.submit([5, 6, 7], generator=generator, **sample)]
        drawn.append(engine.submit([8, 9], generator=generator.manual_seed(7), **sample))
        generator.manual_seed(0)
        blocker.result(60)
        outputs = [listed.result(60)] + [r.result(60) for r in drawn]
    assert torch.equal(outputs[0], tiny_eos.generate(torch.tensor([[5, 6, 7]]), bad_words_ids=[[5]],
                                                     eos_token_id=[2], max_new_tokens=8))
    for out, ids in zip(outputs[1:], ([5, 6, 7], [8, 9])):
        ref = tiny_eos.generate(torch.tensor([ids]), generator=torch.Generator().manual_seed(7), **sample)
        assert torch.equal(out, ref), (out, ref)


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_a_checkpoint_without_pad_token_serves_batched_encoder_passes(tmp_path, fixed_capacity):
    """pad_token_id null (generate pads with eos, as transformers): the engine's batched encoder pass pads with a
    masked 0; each request equals generate alone."""
    import transformers

    config = transformers.BartConfig(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=32,
                                     decoder_ffn_dim=32, max_position_embeddings=32, pad_token_id=None, init_std=0.3)
    torch.manual_seed(0)
    transformers.BartForConditionalGeneration(config).save_pretrained(tmp_path)
    model = BartForConditionalGeneration.from_pretrained(tmp_path)
    rows = [[0, 17, 23, 9, 31, 2], [0, 17, 23, 9, 2]]                   # close lengths: one encoder batch, padded
    with Engine(model, max_rows=2, fixed_capacity=fixed_capacity) as engine:
        blocker = engine.submit([0, 5, 2], num_beams=2, min_new_tokens=25, max_new_tokens=25)   # every row
        while engine.active_rows == 0 and not blocker.done():
            time.sleep(0.001)
        requests = [engine.submit(row, max_new_tokens=5) for row in rows]
        blocker.cancel()                                                # both admitted at the next step
        outputs = [r.result(60) for r in requests]
    for row, out in zip(rows, outputs):
        assert torch.equal(out, model.generate(torch.tensor([row]), max_new_tokens=5))


@pytest.mark.parametrize("budget", ["rows", "source_tokens"])
def test_the_first_waiting_request_that_does_not_fit_waits_and_nothing_overtakes_it(tiny_eos, monkeypatch, budget):
    """Admission is first come, first served within max_rows and max_source_tokens: the head of the queue that does
    not fit beside the running request waits, and so does a smaller one behind it that would fit (no overtaking);
    the running requests never hold more rows or source tokens than the bounds, and requests that fit exactly
    (source tokens: 5 + 4 + 1 of 10) are admitted together. Each output equals generate alone."""
    model, started, hold = tiny_eos, threading.Event(), threading.Event()
    encode, admit, step = model.encode_unchecked, Engine._admit, Engine._step
    admissions, held = [], []                   # the requests of each admission; (rows, source tokens) per step

    def encoding(ids, mask):
        started.set()
        hold.wait(60)                           # the first request's encoder pass waits until every request is queued
        return encode(ids, mask)

    def stepping(self):
        held.append((self.active_rows, sum(r.source_tokens for r in self.running)))
        step(self)

    monkeypatch.setattr(model, "encode_unchecked", encoding)
    monkeypatch.setattr(Engine, "_admit", lambda self, requests: (admissions.append(list(requests)) if requests
                                                                  else None) or admit(self, requests))
    monkeypatch.setattr(Engine, "_step", stepping)
    long, short = dict(min_new_tokens=12, max_new_tokens=12), dict(max_new_tokens=6)
    if budget == "rows":            # 1 of 2 rows in use: the beam-2 head waits, the greedy one behind it too
        bounds = dict(max_rows=2)
        jobs = [([5, 6, 7], long), ([8, 9, 10], dict(num_beams=2, max_new_tokens=6)), ([11, 12], short)]
        want = [[0], [1], [2]]
    else:                           # 6 of 10 source tokens in use: the 5-token head waits, the 4-token one too
        bounds = dict(max_rows=8, max_source_tokens=10)
        jobs = [(list(range(5, 11)), long), (list(range(11, 16)), short), (list(range(16, 20)), short), ([20], short)]
        want = [[0], [1, 2, 3]]
    with Engine(model, **bounds) as engine:
        requests = [engine.submit(jobs[0][0], **jobs[0][1])]
        assert started.wait(60)                 # the first request is in its encoder pass: the others queue
        requests += [engine.submit(ids, **kwargs) for ids, kwargs in jobs[1:]]
        hold.set()
        outputs = [r.result(timeout=60) for r in requests]
    monkeypatch.undo()
    assert [[requests.index(r) for r in admitted] for admitted in admissions] == want, admissions
    assert max(rows for rows, _ in held) <= engine.max_rows, held
    assert max(tokens for _, tokens in held) <= engine.max_source_tokens, held
    for (ids, kwargs), out in zip(jobs, outputs):
        assert torch.equal(out, model.generate(torch.tensor([ids]), **kwargs)), kwargs


def test_the_tokens_encoded_before_a_step_stay_within_max_encoder_tokens(tiny_eos, monkeypatch):
    """Each admission encodes at most max_encoder_tokens source tokens, the first waiting request always (a longer
    one alone), in arrival order, a step between admissions; on the CPU the default is one full window. Each output
    equals generate alone."""
    model, started, hold = tiny_eos, threading.Event(), threading.Event()
    encode, admit = model.encode_unchecked, Engine._admit
    admissions = []

    def encoding(ids, mask):
        started.set()
        hold.wait(60)                           # the first request's encoder pass waits until every request is queued
        return encode(ids, mask)

    monkeypatch.setattr(model, "encode_unchecked", encoding)
    monkeypatch.setattr(Engine, "_admit", lambda self, requests: (admissions.append(list(requests)) if requests
                                                                  else None) or admit(self, requests))
    lengths = (6, 5, 4, 6, 12, 1)               # 5 + 4 within 10; 6 + 12 not; 12 alone; then 1
    jobs = [list(range(5, 5 + n)) for n in lengths]
    with Engine(model, max_encoder_tokens=10) as engine:
        requests = [engine.submit(jobs[0], min_new_tokens=12, max_new_tokens=12)]
        assert started.wait(60)
        requests += [engine.submit(ids, max_new_tokens=6) for ids in jobs[1:]]
        hold.set()
        outputs = [r.result(timeout=60) for r in requests]
    monkeypatch.undo()
    assert [[requests.index(r) for r in admitted] for admitted in admissions] == [[0], [1, 2], [3], [4], [5]]
    for ids, out, n in zip(jobs, outputs, (12, 6, 6, 6, 6, 6)):
        expected = model.generate(torch.tensor([ids]), max_new_tokens=n, min_new_tokens=12 if n == 12 else None)
        assert torch.equal(out, expected), ids
    with Engine(model) as engine:
        assert engine.max_encoder_tokens == model.config.max_position_embeddings
    with pytest.raises(ValueError, match="max_encoder_tokens"):
        Engine(model, max_encoder_tokens=0)


def test_an_input_of_max_source_tokens_is_taken_and_a_longer_one_refused(tiny_eos):
    with Engine(tiny_eos, max_source_tokens=4) as engine:
        with pytest.raises(ValueError, match="input_ids has 5 tokens, more than this engine's max_source_tokens=4"):
            engine.submit([5, 6, 7, 8, 9], max_new_tokens=4)
        out = engine.submit([5, 6, 7, 8], max_new_tokens=4).result(30)
    assert torch.equal(out, tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), max_new_tokens=4))


def test_encoder_groups_share_a_pass_up_to_exactly_the_padding_limit():
    """5, 4 and 3 tokens padded to 5: 15 computed for 12 real, exactly PADDING_LIMIT: one pass."""
    assert encoder_groups([4, 5, 3]) == [[1, 0, 2]]
    assert encoder_groups([4, 5, 2]) == [[1, 0], [2]]          # 15 for 11: past the limit


def test_a_waiting_request_cancelled_counts_as_done_at_once(tiny_eos, monkeypatch):
    """request.cancel() on a waiting request tells concurrent.futures.wait at once (not when the engine's thread
    meets it in the queue, which may be a long time behind a busy head)."""
    from concurrent.futures import wait

    started, hold = threading.Event(), threading.Event()
    encode = tiny_eos.encode_unchecked

    def encoding(ids, mask):
        started.set()
        hold.wait(60)                           # the engine's thread stays in the first request's encoder pass
        return encode(ids, mask)

    monkeypatch.setattr(tiny_eos, "encode_unchecked", encoding)
    with Engine(tiny_eos, max_rows=1) as engine:
        first = engine.submit([5, 6, 7], max_new_tokens=4)
        assert started.wait(60)
        waiting = engine.submit([5, 6, 8], max_new_tokens=4)
        assert waiting.cancel()
        done, _ = wait([waiting.future], timeout=0)
        hold.set()
        assert done == {waiting.future}
        first.result(30)


def test_an_encoder_pass_that_fails_fails_the_requests_it_was_encoding(tiny_eos, monkeypatch):
    """An error in the admitted requests' encoder pass (before they join any search) settles them with it (they
    were in neither the queue nor the running batch: nothing else would answer them), and the engine goes on."""
    monkeypatch.setattr(tiny_eos, "encode_unchecked",
                        failing_call(tiny_eos.encode_unchecked, 1, "injected encoder failure"))
    with Engine(tiny_eos) as engine:
        with pytest.raises(RuntimeError, match="injected encoder failure"):
            engine.submit([5, 6, 7], max_new_tokens=4).result(30)
        out = engine.submit([5, 6, 7], max_new_tokens=4).result(30)
    monkeypatch.undo()
    assert torch.equal(out, tiny_eos.generate(torch.tensor([[5, 6, 7]]), max_new_tokens=4))


def test_an_encoder_pass_that_fails_leaves_the_running_requests_running(tiny_eos, monkeypatch):
    """A new request whose encoder pass fails (out of memory on a long input) fails alone: a request already
    decoding goes on to generate's tokens (before, it failed with the other's error)."""
    real, decoding = tiny_eos.encode_unchecked, threading.Event()

    def long_inputs_fail(ids, mask):
        if ids.shape[1] > 30:
            raise RuntimeError("injected encoder failure on the long input")
        return real(ids, mask)

    step = tiny_eos.decode_group_unchecked

    def stepping(*args, **kwargs):
        decoding.set()
        return step(*args, **kwargs)

    monkeypatch.setattr(tiny_eos, "encode_unchecked", long_inputs_fail)
    monkeypatch.setattr(tiny_eos, "decode_group_unchecked", stepping)
    kwargs = dict(min_new_tokens=40, max_new_tokens=40)
    with Engine(tiny_eos, max_rows=4) as engine:
        running = engine.submit([5, 6, 7], **kwargs)
        assert decoding.wait(30)
        long = engine.submit(list(range(4, 60)), max_new_tokens=4)
        with pytest.raises(RuntimeError, match="injected encoder failure on the long input"):
            long.result(30)
        assert not running.done() or running.exception() is None
        out = running.result(60)
    monkeypatch.undo()
    assert torch.equal(out, tiny_eos.generate(torch.tensor([[5, 6, 7]]), **kwargs))
