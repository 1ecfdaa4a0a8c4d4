"""The whole decode step as one function (generation/whole_step.py), run eagerly on the CPU: the code a CUDA graph
captures and replays on a GPU (the `cuda` tests in test_cuda_graph.py check the replay).

On the eager KV cache the whole step (processors at the device cur_len, the state written back in place, the
cache reordered every step) gives generate's tokens and scores bit for bit. On the fixed-shape cache that a graph
captures (all slots read, those not written masked) the logits equal the eager cache's to float rounding: tokens
exact, scores within 1e-4; reading the stop flag every 1 or 8 steps gives bit-identical results. Tokens also
equal transformers' directly.
"""

from __future__ import annotations

import random
import warnings

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from seq2seq_kit import BartForConditionalGeneration, cuda_capture
from seq2seq_kit.generation.decoding import prepare, result, rows_per_input, start_search
from seq2seq_kit.generation import whole_step
from seq2seq_kit.generation.whole_step import decode_graphed, graphed_search, step_once
from graph_emulation import EmulatedGraph, emulate_generate_graphs, replays
from helpers import READS, assert_same_generation, decode_eagerly, random_batch, random_settings
from test_generation import ATOL, NO_FORCED_EOS, inputs

pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default:UserWarning")

CASES = [
    ("tiny-eos", 3, dict(max_length=30, **NO_FORCED_EOS)),                                       # greedy
    ("tiny", 3, dict(repetition_penalty=1.3, forced_bos_token_id=0, bad_words_ids=[[5], [6, 7]])),
    ("tiny-eos", 3, dict(eos_token_id=[2, 4], encoder_no_repeat_ngram_size=2, max_length=30, **NO_FORCED_EOS)),
    # beam 4 with a summarization checkpoint's settings (tiny's forced EOS at max_length - 1 included)
    ("tiny", 3, dict(num_beams=4, no_repeat_ngram_size=3, min_length=8, max_length=20, length_penalty=2.0,
                     early_stopping=True, forced_bos_token_id=0, repetition_penalty=1.2)),
    ("tiny-eos", 3, dict(num_beams=4, no_repeat_ngram_size=3, min_length=6, max_length=30, length_penalty=2.0,
                         early_stopping=True, forced_bos_token_id=0)),
    ("tiny-eos", 1, dict(num_beams=6, length_penalty=0.5, early_stopping="never", num_return_sequences=3,
                         min_new_tokens=4, max_new_tokens=20, **NO_FORCED_EOS)),
    ("tiny-eos", 3, dict(num_beams=4, length_penalty=0.5, early_stopping=True, repetition_penalty=1.3,
                         eos_token_id=[2, 4], max_length=30, **NO_FORCED_EOS)),
]
IDS = [f"{n}-b{b}-{k}" for n, b, k in CASES]


def whole_step_generate(model, ids, mask, kwargs, *, fixed_shape: bool, check_every: int, scores: bool = True):
    extra = dict(return_dict_in_generate=True, output_scores=True, output_logits=True) if scores else {}
    input_ids, padding_mask, cfg, _ = prepare(model, ids, mask, dict(kwargs, **extra), None)
    hidden = model.encode_unchecked(input_ids, padding_mask)
    cache = model.new_cache(hidden, mask, rows_per_input(cfg), cfg.max_length - 1, fixed_shape=fixed_shape)
    search = start_search(cfg, input_ids, model.config.decoder_vocab_size, model.device)
    decode_eagerly(model.decode_step_unchecked, cache, search, check_every)
    return result(cfg, search)


@pytest.mark.parametrize("first", [0, 60])
def test_whole_step_with_random_settings_is_generate(small_path, first, monkeypatch):
    """Greedy, beam search and sampling with settings drawn at random (every processor; with and without
    output_scores; padded batches of 1-3), the whole step on the fixed-shape cache that a CUDA graph captures,
    reading the stop flag every step or every 8, and generate's CUDA path with the graph emulated (no host read may
    hide in a processor; sampling with decoding.WHOLE_STEP_SAMPLING): generate's tokens (sampling: each run drawn
    from the global RNG seeded alike)."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_generate_graphs(monkeypatch, whole_step_sampling=True)
    for seed in range(first, first + 60):
        rng = random.Random(seed)
        kwargs = random_settings(rng)
        ids, mask = random_batch(64, 1, [rng.randint(1, 12) for _ in range(rng.randint(1, 3))], seed)
        scores = rng.random() < 0.5
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                 # generate's advice (min_length above max_length)
            torch.manual_seed(seed)
            want = model.generate(ids, mask, **kwargs, return_dict_in_generate=True)
            for check_every in (1, 8):
                torch.manual_seed(seed)
                got = whole_step_generate(model, ids, mask, kwargs, fixed_shape=True, check_every=check_every,
                                          scores=scores)
                got = got.sequences if scores else got
                assert torch.equal(got, want.sequences), f"seed {seed}, every {check_every}: {kwargs}"
            before = replays()
            torch.manual_seed(seed)
            assert torch.equal(model.generate(ids, mask, **kwargs, cuda_graph=True), want.sequences), \
                f"seed {seed}, graphed: {kwargs}"
            assert replays() > before, f"seed {seed}: no graph ran: {kwargs}"


def start_fixed_shape(model, kwargs):
    """(settings, a fixed-shape cache, a fresh search) for test_generation's inputs: what a graph would capture."""
    ids, mask = inputs(model.config.vocab_size, model.config.pad_token_id)
    input_ids, padding_mask, cfg, _ = prepare(model, ids, mask, kwargs, None)
    cache = model.new_cache(model.encode_unchecked(input_ids, padding_mask), mask, rows_per_input(cfg),
                            cfg.max_length - 1, fixed_shape=True)
    return cfg, cache, start_search(cfg, input_ids, model.config.vocab_size, model.device)


def reference(model, ids, mask, kwargs):
    return model.generate(ids, mask, return_dict_in_generate=True, output_scores=True, output_logits=True, **kwargs)


@pytest.mark.parametrize("name,batch,kwargs", CASES, ids=IDS)
def test_whole_step_on_the_eager_cache_is_generate_bit_for_bit(pair, name, batch, kwargs):
    _, ours = pair(name)
    ids, mask = (t[:batch] for t in inputs(ours.config.vocab_size, ours.config.pad_token_id))
    want = reference(ours, ids, mask, kwargs)
    got = whole_step_generate(ours, ids, mask, kwargs, fixed_shape=False, check_every=1)
    assert_same_generation(got, want)


@pytest.mark.parametrize("name,batch,kwargs", CASES, ids=IDS)
def test_whole_step_on_the_fixed_shape_cache(pair, name, batch, kwargs):
    hf, ours = pair(name)
    ids, mask = (t[:batch] for t in inputs(ours.config.vocab_size, ours.config.pad_token_id))
    want = reference(ours, ids, mask, kwargs)
    every = whole_step_generate(ours, ids, mask, kwargs, fixed_shape=True, check_every=1)
    assert_same_generation(every, want, atol=ATOL)
    later = whole_step_generate(ours, ids, mask, kwargs, fixed_shape=True, check_every=8)  # up to 7 steps past
    assert_same_generation(later, every)
    theirs = hf.generate(ids, attention_mask=mask, **kwargs)                  # and transformers, directly
    assert torch.equal(every.sequences[:, :theirs.shape[1]], theirs)
    assert every.sequences.shape[1] == theirs.shape[1]


@pytest.mark.parametrize("name,batch,kwargs", CASES, ids=IDS)
def test_whole_step_graph_replayed_as_a_cuda_graph_would(pair, name, batch, kwargs, monkeypatch):
    """generate's CUDA path (graphed_search, decode_graphed) with the graph emulated on the CPU (tests/
    graph_emulation.py: the recorded ops replayed on the same tensors, none of the step's Python): generate's
    tokens, scores and logits within 1e-4, for a first call (capture) and for a second call on other inputs of the same shapes
    (the kept graph loaded with them), reading the stop flag every 8 replays."""
    _, ours = pair(name)
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    for seed in (9, 4):
        ids, mask = (t[:batch] for t in inputs(ours.config.vocab_size, ours.config.pad_token_id, seed=seed))
        input_ids, padding_mask, cfg, _ = prepare(ours, ids, mask, dict(kwargs, return_dict_in_generate=True,
                                                                     output_scores=True, output_logits=True), None)
        hidden = ours.encode_unchecked(input_ids, padding_mask)
        graph = graphed_search(ours, hidden, padding_mask, cfg, input_ids, rows_per_input(cfg), None, None,
                               lambda own: start_search(cfg, input_ids, ours.config.decoder_vocab_size, ours.device,
                                                        own))
        assert isinstance(graph.step, EmulatedGraph)
        got = result(cfg, decode_graphed(graph, check_every=8))
        assert_same_generation(got, reference(ours, ids, mask, kwargs), atol=ATOL)
    assert len(whole_step.KEPT[ours]) == 1 and graph.step.replays > 0          # the second call reused the graph


@pytest.mark.parametrize("kwargs", [dict(num_beams=4, no_repeat_ngram_size=3, min_length=5, max_length=12),
                                    dict(num_beams=1, repetition_penalty=1.2, max_length=12)])
def test_whole_step_keeps_every_tensors_memory(pair, kwargs):
    """What lets a CUDA graph replay it: each step writes the search's state into the same tensors."""
    _, ours = pair("tiny-eos")
    cfg, cache, search = start_fixed_shape(ours, kwargs)
    addresses = [t.data_ptr() for t in search.state()] + [cache.self_kv.data_ptr(), cache.positions.data_ptr()]
    lengths = []
    for _ in range(cfg.max_length + 3):                                       # past the stop too
        step_once(ours.decode_step_unchecked, cache, search)
        lengths.append(int(search.cur_len.max()))
        assert [t.data_ptr() for t in search.state()] + [cache.self_kv.data_ptr(),
                                                         cache.positions.data_ptr()] == addresses
    assert lengths[0] == 2 and lengths[-1] == lengths[-2] and not search.going      # stopped, then frozen




@pytest.mark.parametrize("kwargs", [
    dict(num_beams=4, no_repeat_ngram_size=3, min_length=6, max_length=12, length_penalty=2.0,
         early_stopping=True, forced_bos_token_id=0, forced_eos_token_id=2, repetition_penalty=1.2,
         encoder_no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]], eos_token_id=[2, 4]),
    dict(num_beams=3, early_stopping="never", length_penalty=0.5, max_length=10),
    dict(num_beams=1, no_repeat_ngram_size=2, min_length=5, max_length=10, forced_bos_token_id=0,
         repetition_penalty=1.3, encoder_no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]]),
])
def test_whole_step_reads_nothing_back(pair, monkeypatch, kwargs):
    """No tensor value reaches the host inside step_once (what a CUDA graph capture would refuse): every
    Python-level way of reading one raises while it runs, on a fixed-shape cache, before and after the stop.
    (Reads inside torch's C++ are caught on CUDA: test_cuda_graph's sync-debug test.)"""
    _, ours = pair("tiny-eos")
    cfg, cache, search = start_fixed_shape(ours, dict(kwargs, return_dict_in_generate=True, output_scores=True))

    def refuse(*args, **kw):
        raise AssertionError("a tensor value was read back to the host inside the step")

    with monkeypatch.context() as patched:
        for name in READS:
            patched.setattr(torch.Tensor, name, refuse)
        for _ in range(cfg.max_length + 2):
            step_once(ours.decode_step_unchecked, cache, search)
    assert not search.going


# Ops that only make a view or a host scalar: no kernel on a GPU.
NO_KERNEL = {"aten.view.default", "aten.expand.default", "aten.slice.Tensor", "aten.unsqueeze.default",
             "aten.select.int", "aten._unsafe_view.default", "aten.reshape.default", "aten.t.default",
             "aten.transpose.int", "aten.alias.default", "aten.detach.default", "aten.squeeze.dim",
             "aten.permute.default", "aten.as_strided.default", "aten.unfold.default", "aten.scalar_tensor.default",
             "aten.lift_fresh.default", "aten.expand_as.default"}


class KernelCount(TorchDispatchMode):
    """Counts the ops that launch a kernel (on a GPU) while active, except inside `excluded()`."""

    def __init__(self):
        super().__init__()
        self.count, self.paused = 0, False

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if not self.paused and str(func) not in NO_KERNEL:
            self.count += 1
        return func(*args, **(kwargs or {}))

    def excluded(self, fn):
        def run(*args, **kw):
            self.paused = True
            try:
                return fn(*args, **kw)
            finally:
                self.paused = False
        return run


@pytest.mark.parametrize("kwargs,budget", [
    (dict(num_beams=4, no_repeat_ngram_size=3, min_length=8, max_length=20, length_penalty=2.0, early_stopping=True,
          forced_bos_token_id=0, forced_eos_token_id=2), 102),
    (dict(num_beams=1, no_repeat_ngram_size=3, min_length=8, max_length=20, forced_bos_token_id=0,
          forced_eos_token_id=2), 47),
])
def test_whole_step_kernels_around_the_decoder(pair, kwargs, budget):
    """Every kernel of the search, processors and cache reorder is one more launch in each replay of the whole-step
    graph (a few microseconds each on a GPU, next to a batch-1 decoder step of ~0.5 ms): with a summarization
    checkpoint's settings, beam 4 runs at most `budget` ops that launch a kernel outside the decoder (98 now; 134
    before the gathers lost take_along_dim's remainder kernel, the -1e9 masks their casts and products, the
    state its copies back, and the stop rule the flags of the other kind of search), greedy 46 (50 before)."""
    _, ours = pair("tiny")
    cfg, cache, search = start_fixed_shape(ours, kwargs)
    counter = KernelCount()
    decoder = counter.excluded(ours.decode_step_unchecked)
    for _ in range(10):                                     # past the forced BOS, before the minimum length
        step_once(decoder, cache, search)
    with counter:
        step_once(decoder, cache, search)
    assert 0 < counter.count <= budget, f"{counter.count} kernels around the decoder (budget {budget})"


def test_decoder_step_kernels(pair):
    """The decoder step on the fixed-shape cache, as a graph replays it: per layer its kernel-launching ops are the
    projections, attentions, layer norms and residual adds, one scatter of the keys and values and no mask of its
    own (layer 0 makes the step's one mask). tiny, 2 layers: 43 (52 before keys and values shared a scatter and the
    layers a mask)."""
    _, ours = pair("tiny")
    _, cache, _ = start_fixed_shape(ours, dict(num_beams=4))
    tokens = torch.full((cache.num_rows,), ours.config.decoder_start_token_id)
    ours.decode_step_unchecked(tokens, cache)
    counter = KernelCount()
    with counter:
        ours.decode_step_unchecked(tokens, cache)
    assert 0 < counter.count <= 44, f"{counter.count} kernels in a 2-layer decoder step"
