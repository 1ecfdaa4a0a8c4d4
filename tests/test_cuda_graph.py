"""The fixed-shape decoder step (what a CUDA graph captures) and the CUDA-graphed generate.

On CPU: the fixed-shape step (a FixedShapeKVCache: device-side position, all cache slots read, unwritten ones
masked) gives the eager step's logits within 1e-5, through a beam reorder; cuda_graph's argument errors; the model's
graph bookkeeping (capture, reuse for the same shapes, recapture) with the graphs emulated on the CPU
(tests/graph_emulation.py: recorded ops replayed on the same tensors, none of the step's Python).
On CUDA (marker `cuda`): graphed generate gives the eager generate's tokens (fp32, tiny models with decisive
logits), reuses its graph for inputs of the same shapes and captures a new one for other shapes or weights; the
whole-step graph (generation/whole_step.py) replays what step_once computes eagerly and reads the stop flag back
every GRAPH_CHECK_EVERY steps; sampling keeps the decoder-only graph.
"""

from __future__ import annotations


import pytest
import torch

from seq2seq_kit import Tokenizer, cuda_capture
from seq2seq_kit.generation import decoding, whole_step
from seq2seq_kit.modeling import BartForConditionalGeneration
from seq2seq_kit.models.kv_cache import FixedShapeKVCache, KVCache
from graph_emulation import EmulatedGraph, replays
from helpers import decode_eagerly, random_batch


@pytest.fixture(scope="module")
def model(checkpoint):
    return BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))


def batch(model, lengths=(12, 7), seed=3, device="cpu"):
    ids, mask = random_batch(model.config.vocab_size, model.config.pad_token_id, lengths, seed)
    return ids.to(device), mask.to(device)


def test_fixed_shape_step_matches_eager_step(model):
    ids, mask = batch(model)
    rows_per_input, steps = 3, 9
    enc = model.encode(ids, mask)
    eager = model.new_cache(enc, mask, rows_per_input, max_length=steps)
    fixed = model.new_cache(enc, mask, rows_per_input, max_length=steps, fixed_shape=True)
    assert isinstance(eager, KVCache) and not isinstance(eager, FixedShapeKVCache)
    assert isinstance(fixed, FixedShapeKVCache) and fixed.position.device == fixed.self_kv.device
    R = eager.num_rows
    assert not fixed.self_kv.any()      # zeroed: the masked slots are multiplied by 0, and 0 * NaN garbage is NaN
    tokens = torch.randint(4, model.config.vocab_size, (R, steps), generator=torch.Generator().manual_seed(5))
    for t in range(steps):
        if t == 4:                                  # beam reorder within each input's rows
            row_idx = torch.arange(R).view(-1, rows_per_input).flip(1).flatten()
            eager.reorder(row_idx)
            fixed.reorder(row_idx)
        want = model.decode_step(tokens[:, t], eager)
        got = model.decode_step(tokens[:, t], fixed)
        # a full cache's position stays at its last slot (steps past the end rewrite it: sync_free.decode)
        assert fixed.length == eager.length == t + 1 and fixed.position.tolist() == [min(t + 1, steps - 1)]
        torch.testing.assert_close(got, want, atol=1e-5, rtol=0, msg=f"step {t}")


def test_cuda_graph_argument_errors(model):
    ids, mask = batch(model)
    with pytest.raises(ValueError, match="cuda_graph=True needs a model on a CUDA device"):
        model.generate(ids, mask, max_length=5, cuda_graph=True)
    with pytest.raises(TypeError, match="cuda_graph must be True, False or None"):
        model.generate(ids, mask, max_length=5, cuda_graph="yes")
    assert model.graphed_step is None


def kept(model):
    """The model's most recently used whole-step graph, or None."""
    graphs = list(whole_step.KEPT.get(model, {}).values())
    return graphs[-1] if graphs else None


GRAPHED = [dict(num_beams=3, max_length=16, return_dict_in_generate=True, output_scores=True),
           dict(num_beams=1, max_length=16), dict(do_sample=True, top_k=8, max_length=16)]
# the processors that read the step's length (a device tensor in a captured step)
BY_LENGTH = dict(exponential_decay_length_penalty=(1, 1.5), begin_suppress_tokens=[2], min_length=4,
                 forced_bos_token_id=0, no_repeat_ngram_size=2, sequence_bias={(5, 6): -2.0})


@pytest.mark.parametrize("kwargs", [dict(num_beams=1, max_length=24, no_repeat_ngram_size=3),
                                    dict(num_beams=4, max_length=24, length_penalty=2.0, early_stopping=True,
                                         encoder_no_repeat_ngram_size=2, min_length=5),
                                    dict(do_sample=True, top_k=8, max_length=16),
                                    dict(num_beams=1, max_length=24, **BY_LENGTH),
                                    dict(num_beams=3, max_length=24, **BY_LENGTH)])
def test_graph_bookkeeping_on_cpu(checkpoint, monkeypatch, kwargs):
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)    # in GraphedStep and WholeStepGraph
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: bool(cuda_graph))
    # greedy and beam search keep a whole-step graph; sampling the decoder-only one
    graph_of = (lambda: model.graphed_step) if kwargs.get("do_sample") else (lambda: kept(model))

    def both(ids, mask):
        seeded = (dict(generator=torch.Generator().manual_seed(1)) for _ in range(2))
        return (model.generate(ids, mask, cuda_graph=True, **next(seeded), **kwargs),
                model.generate(ids, mask, cuda_graph=False, **next(seeded), **kwargs))

    first = None
    for seed in (3, 4):                             # same shapes: the second call reuses the first's graph
        graphed, eager = both(*batch(model, seed=seed))
        assert torch.equal(graphed, eager), f"seed {seed}"
        first = first or graph_of()
        assert graph_of() is first and isinstance(first.cache, FixedShapeKVCache)
    graphed, eager = both(*batch(model, lengths=(9, 9, 4)))     # other shapes: a new graph
    assert torch.equal(graphed, eager)
    assert graph_of() is not first
    if not kwargs.get("do_sample"):             # the first shapes' graph is still kept, and reused
        assert torch.equal(*both(*batch(model, seed=5)))
        assert graph_of() is first and len(whole_step.KEPT[model]) == 2
    whole_step.KEPT.pop(model, None)                # the kept graphs hold the model's step: let the model go




def emulate_graphs(model, monkeypatch):
    """generate's CUDA-graph paths on the CPU (the graphs emulated)."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: bool(cuda_graph))


def sequences(out):
    return out if isinstance(out, torch.Tensor) else out.sequences


def test_a_users_processors_decode_eagerly_on_a_cuda_device(checkpoint, monkeypatch):
    """Where graphs are the default (a CUDA device), logits_processor / prefix_allowed_tokens_fn decode eagerly;
    cuda_graph=True with them is refused."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    ids, mask = batch(model)
    only_even = lambda batch_id, tokens: list(range(4, 60, 2))
    out = model.generate(ids, mask, max_length=10, num_beams=2, prefix_allowed_tokens_fn=only_even)
    assert torch.equal(out, model.generate(ids, mask, max_length=10, num_beams=2, prefix_allowed_tokens_fn=only_even,
                                           cuda_graph=False))
    assert (out[:, 1:-1] % 2 == 0).all() and model.graphed_step is None and not whole_step.KEPT.get(model)
    with pytest.raises(ValueError, match="are not run on CUDA graphs"):
        model.generate(ids, mask, max_length=10, prefix_allowed_tokens_fn=only_even, cuda_graph=True)


@pytest.mark.parametrize("kwargs", GRAPHED)
def test_a_graphed_result_is_not_overwritten_by_the_next_call(checkpoint, monkeypatch, kwargs):
    """The whole-step graph's search state is the next same-shape call's: what generate returned is a copy."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    emulate_graphs(model, monkeypatch)
    first, second = batch(model, seed=3), batch(model, seed=4)
    seeded = lambda: dict(generator=torch.Generator().manual_seed(1)) if kwargs.get("do_sample") else {}
    out = model.generate(*first, cuda_graph=True, **seeded(), **kwargs)
    eager = model.generate(*first, cuda_graph=False, **seeded(), **kwargs)
    before = replays()
    model.generate(*second, cuda_graph=True, **seeded(), **kwargs)
    assert replays() > before                  # the second call replayed the first's graph
    assert torch.equal(sequences(out), sequences(eager))
    if kwargs.get("output_scores"):
        torch.testing.assert_close(out.sequences_scores, eager.sequences_scores, atol=1e-5, rtol=0)
    whole_step.KEPT.pop(model, None)


@pytest.mark.parametrize("kwargs", GRAPHED)
def test_calls_from_two_threads_take_turns_on_the_kept_graphs(checkpoint, monkeypatch, kwargs):
    """A second thread's same-shape call would load its inputs into the graph the first is replaying: it waits
    for the first call to end (the first call gives it 1 s to barge in)."""
    import threading

    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    emulate_graphs(model, monkeypatch)
    inputs = {"first": batch(model, seed=3), "second": batch(model, seed=4)}
    seeded = lambda: dict(generator=torch.Generator().manual_seed(1)) if kwargs.get("do_sample") else {}
    eager = {name: model.generate(*x, cuda_graph=False, **seeded(), **kwargs) for name, x in inputs.items()}
    second_loaded = threading.Event()
    load, run = (("start_decoding", "decode") if kwargs.get("do_sample") else ("graphed_search", "decode_graphed"))
    owner = model if load == "start_decoding" else decoding
    real_load, real_run = getattr(owner, load), getattr(decoding, run)

    def loading(*args, **kw):
        out = real_load(*args, **kw)
        if threading.current_thread().name == "second":
            second_loaded.set()
        return out

    def running(*args, **kw):
        if threading.current_thread().name == "first":
            threads.append(threading.Thread(target=call, args=("second",), name="second"))
            threads[-1].start()
            second_loaded.wait(1.0)
        return real_run(*args, **kw)

    outputs, threads = {}, []

    def call(name):
        outputs[name] = model.generate(*inputs[name], cuda_graph=True, **seeded(), **kwargs)

    monkeypatch.setattr(owner, load, loading)
    monkeypatch.setattr(decoding, run, running)
    threads.append(threading.Thread(target=call, args=("first",), name="first"))
    threads[0].start()
    threads[0].join()
    threads[1].join()
    assert second_loaded.is_set()
    for name in inputs:
        assert torch.equal(sequences(outputs[name]), sequences(eager[name])), name
    whole_step.KEPT.pop(model, None)


# ---- CUDA (run when a GPU is lent) --------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(num_beams=1, max_length=24, no_repeat_ngram_size=3),
                                    dict(num_beams=4, max_length=24, length_penalty=2.0, early_stopping=True),
                                    dict(num_beams=3, num_return_sequences=2, max_length=20, min_length=6),
                                    dict(num_beams=1, max_length=20, eos_token_id=list(range(2, 16)))])  # no isin
def test_graphed_generate_matches_eager(checkpoint, kwargs):
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    first = None
    for seed in (3, 4):                             # same shapes: the second call replays the first's graph
        ids, mask = batch(cuda, seed=seed, device="cuda")
        eager = cuda.generate(ids, mask, cuda_graph=False, **kwargs)
        graphed = cuda.generate(ids, mask, **kwargs)       # default on CUDA: the whole step graphed
        assert torch.equal(graphed, eager), f"seed {seed}"
        first = first or kept(cuda)
        assert kept(cuda) is first and isinstance(first, whole_step.WholeStepGraph)
    ids, mask = batch(cuda, lengths=(9, 9, 4), device="cuda")     # other shapes: a new graph
    assert torch.equal(cuda.generate(ids, mask, **kwargs), cuda.generate(ids, mask, cuda_graph=False, **kwargs))
    assert kept(cuda) is not first
    assert cuda.graphed_step is None                # greedy and beam search never capture the decoder-only graph


@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(num_beams=4, no_repeat_ngram_size=3, min_length=6, max_length=20,
                                         length_penalty=2.0, early_stopping=True, repetition_penalty=1.2),
                                    dict(num_beams=1, encoder_no_repeat_ngram_size=2, max_length=20)])
def test_whole_step_replay_equals_eager_step_once(checkpoint, kwargs):
    """The captured step replayed gives what step_once computes eagerly on the same fixed-shape cache, bit for bit
    (the same kernels), scores included; the stop flag read every 8 replays."""
    from seq2seq_kit.generation.decoding import prepare, result, rows_per_input, start_search

    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True)
    input_ids, padding_mask, cfg, _ = prepare(cuda, ids, mask, kwargs, None)
    hidden = cuda.encode_unchecked(input_ids, padding_mask)
    new_search = lambda: start_search(cfg, input_ids, cuda.config.vocab_size, cuda.device)   # noqa: E731
    with torch.no_grad():
        cache = cuda.new_cache(hidden, mask, rows_per_input(cfg), cfg.max_length - 1, fixed_shape=True)
        eager = new_search()
        decode_eagerly(cuda.decode_step_unchecked, cache, eager, check_every=8)
        graph = whole_step.graphed_search(cuda, hidden, padding_mask, cfg, input_ids, rows_per_input(cfg), new_search)
        replayed = whole_step.decode_graphed(graph, check_every=8)
    want, got = result(cfg, eager), result(cfg, replayed)
    assert torch.equal(got.sequences, want.sequences)
    if want.sequences_scores is not None:
        assert torch.equal(got.sequences_scores, want.sequences_scores)
        assert torch.equal(got.beam_indices, want.beam_indices)
    assert len(got.scores) == len(want.scores) and all(torch.equal(a, b) for a, b in zip(got.scores, want.scores))


@pytest.mark.cuda
def test_whole_step_never_synchronizes(checkpoint):
    """step_once run eagerly on CUDA with torch's sync debug mode set to error: no operation in the step waits
    for the device (what capture needs), processors and beam bookkeeping included."""
    from seq2seq_kit.generation.decoding import prepare, rows_per_input, start_search

    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    kwargs = dict(num_beams=4, no_repeat_ngram_size=3, min_length=6, max_length=12, repetition_penalty=1.2,
                  encoder_no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]], forced_bos_token_id=0)
    input_ids, padding_mask, cfg, _ = prepare(cuda, ids, mask, kwargs, None)
    with torch.no_grad():
        cache = cuda.new_cache(cuda.encode_unchecked(input_ids, padding_mask), mask, rows_per_input(cfg),
                               cfg.max_length - 1, fixed_shape=True)
        search = start_search(cfg, input_ids, cuda.config.vocab_size, cuda.device)
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(cfg.max_length + 2):
                whole_step.step_once(cuda.decode_step_unchecked, cache, search)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert not search.going.item()


@pytest.mark.cuda
def test_whole_step_graph_reads_the_device_back_every_few_steps(checkpoint):
    """Greedy generate of 20 steps on the whole-step graph reads the stop flag 3 times (k = 8), not 20."""
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    cuda.generate(ids, mask, max_length=21, min_length=21)          # capture
    reads = []
    real_item = torch.Tensor.item
    torch.Tensor.item = lambda t: reads.append(t.dtype) or real_item(t)
    try:
        cuda.generate(ids, mask, max_length=21, min_length=21)
    finally:
        torch.Tensor.item = real_item
    assert reads.count(torch.bool) == 3                # the stop flag, after replays 8, 16 and 24


@pytest.mark.cuda
def test_graph_recaptured_after_weights_move(checkpoint):
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    cuda.generate(ids, mask, max_length=10)
    first = kept(cuda)
    cuda.to(torch.float64)                          # new weight tensors: the old graph would read freed memory
    assert torch.equal(cuda.generate(ids, mask, max_length=10),
                       cuda.generate(ids, mask, max_length=10, cuda_graph=False))
    assert kept(cuda) is not first and kept(cuda).cache.self_kv.dtype == torch.float64


@pytest.mark.cuda
def test_sampling_on_cuda_keeps_the_decoder_only_graph(checkpoint):
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    draws = [cuda.generate(ids, mask, do_sample=True, top_k=8, max_length=12, cuda_graph=graphed,
                           generator=torch.Generator("cuda").manual_seed(0)) for graphed in (True, False)]
    assert torch.equal(*draws) and cuda.graphed_step is not None


class Keep:
    """A logits processor that changes nothing (it only has to run in Python)."""

    def __call__(self, input_ids, scores):
        return scores


EAGER_ONLY = {"logits_processor": dict(logits_processor=[Keep()]),
              "prefix_allowed_tokens_fn": dict(prefix_allowed_tokens_fn=lambda row, seq: list(range(4, 30))),
              "decoder_input_ids": dict(decoder_input_ids=torch.tensor([[2, 7, 8]] * 2)),
              "max_time": dict(max_time=0.0),
              "stop_strings": dict(stop_strings=[" the"]),                          # with the BART tokenizer
              "output_attentions": dict(output_attentions=True, return_dict_in_generate=True),
              "output_hidden_states": dict(output_hidden_states=True, return_dict_in_generate=True)}


@pytest.mark.parametrize("name", list(EAGER_ONLY))
def test_what_needs_the_host_each_step_decodes_eagerly_where_graphs_are_the_default(model, monkeypatch, name):
    """On CUDA generate runs on graphs unless told otherwise; an argument a graph cannot take (Python each step, a
    clock, a prompt, traces) decodes eagerly instead (the eager tokens and traces, no graph replayed), and
    cuda_graph=True beside it is refused. The CUDA device is emulated: graphs on by default, replayed on the CPU."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    ids, mask = batch(model)
    kwargs = dict(EAGER_ONLY[name], max_new_tokens=6, num_beams=3)
    if name == "stop_strings":
        kwargs["tokenizer"] = Tokenizer.from_default()
    want = model.generate(ids, mask, **kwargs)                      # on the CPU: eager
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    before = replays()
    model.generate(ids, mask, max_new_tokens=6)
    assert replays() > before                                       # without it: the graphed path
    before = replays()
    got = model.generate(ids, mask, **kwargs)
    assert replays() == before
    if isinstance(want, torch.Tensor):
        assert torch.equal(got, want)
    else:
        assert torch.equal(got.sequences, want.sequences)
        for field in ("encoder_attentions", "decoder_attentions", "encoder_hidden_states", "decoder_hidden_states"):
            assert (getattr(got, field) is None) == (getattr(want, field) is None), field
        assert got.encoder_attentions is not None or got.encoder_hidden_states is not None
    with pytest.raises(ValueError, match="are not run on CUDA graphs"):
        model.generate(ids, mask, **kwargs, cuda_graph=True)
