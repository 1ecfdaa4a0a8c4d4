"""The fixed-shape decoder step (what a CUDA graph captures) and the CUDA-graphed generate.

On CPU: the fixed-shape step (a FixedShapeKVCache: device-side position, all cache slots read, unwritten ones
masked) gives the eager step's logits within 1e-5, through a beam reorder; cuda_graph's argument errors; the model's
graph bookkeeping (capture, reuse for the same shapes, recapture) with the graphs emulated on the CPU
(tests/graph_emulation.py: recorded ops replayed on the same tensors, none of the step's Python).
On CUDA (marker `cuda`): graphed generate gives the eager generate's tokens (fp32, tiny models with decisive
logits), reuses its graph for inputs of the same shapes and captures a new one for other shapes or weights; the
whole-step graph (generation/whole_step.py) replays what step_once computes eagerly and reads the stop flag back
every GRAPH_CHECK_EVERY steps; sampling keeps the decoder-only graph by default, and with
decoding.WHOLE_STEP_SAMPLING replays the whole step with the eager draws and generator states (the CPU's emulated
tests of that path are in test_sampling.py and test_whole_step.py).
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


def test_cuda_graph_is_on_by_default_on_a_cuda_device_only():
    """cuda_graph None: graphs on a CUDA device, none elsewhere; False: none anywhere; True: on a CUDA device (the
    choice reads the device's type only, so it is checked here without a GPU)."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    assert decoding.use_cuda_graph(None, cuda) is True and decoding.use_cuda_graph(None, cpu) is False
    assert decoding.use_cuda_graph(True, cuda) is True
    assert decoding.use_cuda_graph(False, cuda) is False and decoding.use_cuda_graph(False, cpu) is False


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


@pytest.mark.parametrize("kwargs", [dict(num_beams=2), dict(do_sample=True, top_k=8)])
def test_a_users_processors_run_beside_the_decoder_graph(checkpoint, monkeypatch, kwargs):
    """Where graphs are the default (a CUDA device), a logits_processor / prefix_allowed_tokens_fn of the user's
    (Python run inside every step) leaves the decoder's step on its graph and runs the search eagerly, reading the
    stop flag every step: the eager tokens, each processor called once per step as eagerly (not for replays past
    the stop), the decoder graph captured, no whole-step graph."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    ids, mask = batch(model)
    calls = []
    only_even = lambda batch_id, tokens: calls.append(len(tokens)) or list(range(4, 60, 2))   # noqa: E731
    runs = []
    for graphed in (None, False):
        calls.clear()
        torch.manual_seed(0)
        out = model.generate(ids, mask, max_length=10, prefix_allowed_tokens_fn=only_even, cuda_graph=graphed,
                             **kwargs)
        runs.append((out, list(calls)))
    assert torch.equal(runs[0][0], runs[1][0]) and runs[0][1] == runs[1][1]
    assert (runs[0][0][:, 1:-1] % 2 == 0).all() and model.graphed_step is not None and not whole_step.KEPT.get(model)


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


def test_kept_whole_step_graphs_are_bounded_the_least_recently_used_going_first(small_path, monkeypatch):
    """Up to KEEP whole-step graphs are kept per model: a call whose key has a kept graph replays it and makes it
    the most recently used; a new key with KEEP kept frees the least recently used graph first, and that key
    captures anew when it comes back. The calls that replay a kept graph give the eager tokens."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    keep = whole_step.KEEP
    sources = [(n,) for n in range(3, 3 + keep + 1)]             # KEEP + 1 keys: one input of 3, 4, ... tokens

    def call(lengths, check=False):
        ids, mask = batch(model, lengths=lengths)
        graphed = model.generate(ids, mask, cuda_graph=True, max_length=6)
        assert not check or torch.equal(graphed, model.generate(ids, mask, cuda_graph=False, max_length=6)), lengths
        return kept(model)

    graphs = [call(lengths) for lengths in sources[:keep]]
    assert list(whole_step.KEPT[model].values()) == graphs and len(set(map(id, graphs))) == keep
    assert call(sources[0], check=True) is graphs[0]             # replayed, now the most recently used
    newest = call(sources[keep])                                 # a new key: sources[1]'s graph goes
    assert list(whole_step.KEPT[model].values()) == graphs[2:] + [graphs[0], newest]
    assert call(sources[1], check=True) not in graphs            # captured anew; sources[2]'s goes
    assert list(whole_step.KEPT[model].values())[:-1] == graphs[3:] + [graphs[0], newest]


def test_padded_and_unpadded_batches_of_one_shape_keep_a_whole_step_graph_each(small_path, monkeypatch):
    """A batch without padding (its graph captured without a padding mask) and a padded batch of the same shape have
    whole-step graphs of their own: each call gives the eager tokens, and the first graph is replayed for the third
    call."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    graphs = []
    for lengths in ((8, 8), (8, 3), (8, 8)):                   # unpadded, padded, unpadded: [2, 8] each
        ids, mask = batch(model, lengths=lengths)
        graphed = model.generate(ids, mask, cuda_graph=True, max_length=8)
        assert torch.equal(graphed, model.generate(ids, mask, cuda_graph=False, max_length=8)), lengths
        graphs.append(kept(model))
    assert graphs[0] is graphs[2] is not graphs[1] and len(whole_step.KEPT[model]) == 2


@pytest.mark.parametrize("kwargs", [dict(encoder_no_repeat_ngram_size=1), dict(encoder_repetition_penalty=20.0),
                                    dict(num_beams=3, encoder_no_repeat_ngram_size=1)])
def test_a_kept_whole_step_graph_reads_the_next_calls_source_in_its_processors(small_path, monkeypatch, kwargs):
    """The encoder n-gram ban and the encoder repetition penalty read the source ids: a kept whole-step graph
    replayed for another input of the same shape bans / favours that input's tokens, not the first call's (the
    eager tokens for both calls)."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    for seed in (4, 3):                          # seed 3's second row would say 53 (in its source) but for the ban
        ids, mask = batch(model, lengths=(10, 6), seed=seed)
        before = replays()
        graphed = model.generate(ids, mask, cuda_graph=True, max_length=10, **kwargs)
        assert replays() > before
        assert torch.equal(graphed, model.generate(ids, mask, cuda_graph=False, max_length=10, **kwargs)), seed
    assert len(whole_step.KEPT[model]) == 1                       # the second call replayed the first's graph


@pytest.mark.parametrize("other", [dict(num_return_sequences=2), dict(max_length=14), dict(padded=True)])
def test_sampling_graph_is_captured_anew_for_other_rows_lengths_or_padding(small_path, monkeypatch, other):
    """The decoder-only graph (sampling) is replayed only for calls of its key: after a call on a batch without
    padding, the same source with more return sequences, a longer max_length, or padded to the same shape
    captures a graph of its own, and draws the eager tokens."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    ids, mask = batch(model, lengths=(8, 8))                      # nothing padded
    settings = dict(do_sample=True, top_k=8, max_length=8)
    graphs = []
    for kwargs in (settings, dict(settings, **other)):
        if kwargs.pop("padded", False):
            ids, mask = batch(model, lengths=(8, 3))              # [2, 8] as well
        draw = lambda graphed: model.generate(ids, mask, cuda_graph=graphed, generator=torch.Generator().manual_seed(1),
                                              **kwargs)
        assert torch.equal(draw(True), draw(False)), kwargs
        graphs.append(model.graphed_step)
    assert graphs[1] is not graphs[0]


def test_graphed_sampling_records_each_steps_own_scores_and_logits(small_path, monkeypatch):
    """Sampling on the decoder-only graph (emulated) with output_scores / output_logits: each step's processed
    scores and logits are its own (not the graph's output buffer, which the processors write in place and the next
    replay overwrites): the eager call's, within float rounding."""
    from helpers import assert_same_generation

    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    ids, mask = batch(model)
    kwargs = dict(do_sample=True, top_k=8, temperature=0.7, repetition_penalty=1.3, max_length=8,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    graphed, eager = (model.generate(ids, mask, cuda_graph=on, generator=torch.Generator().manual_seed(1), **kwargs)
                      for on in (True, False))
    assert model.graphed_step is not None and len(graphed.scores) == 7
    assert_same_generation(graphed, eager, atol=1e-4)


@pytest.mark.parametrize("kwargs", GRAPHED)
def test_graphs_are_recaptured_for_replaced_weights_on_cpu(small_path, monkeypatch, kwargs):
    """A kept graph reads the tensors it was captured on: after a weight is replaced by a new tensor (here the
    final_logits_bias buffer, now favouring token 7), the next graphed call captures anew and gives the eager
    tokens of the new weights (on a GPU the old graph would read freed memory). test_graph_recaptured_after_
    weights_move checks a dtype change on CUDA."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    ids, mask = batch(model)
    seeded = lambda: dict(generator=torch.Generator().manual_seed(1)) if kwargs.get("do_sample") else {}
    before = sequences(model.generate(ids, mask, cuda_graph=True, **seeded(), **kwargs))
    bias = model.final_logits_bias.clone()
    bias[0, 7] += 100.0
    model.final_logits_bias = bias                                # a new tensor, same shape, dtype and device
    replayed = replays()
    after = sequences(model.generate(ids, mask, cuda_graph=True, **seeded(), **kwargs))
    assert replays() > replayed
    assert torch.equal(after, sequences(model.generate(ids, mask, cuda_graph=False, **seeded(), **kwargs)))
    assert not torch.equal(after, before) and (after == 7).any()


def test_whole_step_graph_reads_the_stop_flag_every_few_replays_on_cpu(small_path, monkeypatch):
    """Greedy generate of 17 steps on the whole-step graph (emulated) replays it in runs of GRAPH_CHECK_EVERY (8)
    and reads the stop flag after each run: 24 replays (7 past the stop, which change nothing), 3 reads, and the
    eager tokens. (test_whole_step_graph_reads_the_device_back_every_few_steps on CUDA.)"""
    import math

    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    ids, mask = batch(model)
    kwargs = dict(max_length=18, min_length=18)                  # 17 steps for every row
    model.generate(ids, mask, cuda_graph=True, **kwargs)          # capture
    reads, real_item, before = [], torch.Tensor.item, replays()
    with monkeypatch.context() as patched:
        patched.setattr(torch.Tensor, "item", lambda t: reads.append(t.dtype) or real_item(t))
        out = model.generate(ids, mask, cuda_graph=True, **kwargs)
    runs = math.ceil(17 / decoding.GRAPH_CHECK_EVERY)
    assert replays() - before == runs * decoding.GRAPH_CHECK_EVERY and reads.count(torch.bool) == runs
    assert torch.equal(out, model.generate(ids, mask, cuda_graph=False, **kwargs)) and out.shape[1] == 18


def test_graphed_sampling_draws_no_more_than_eager_sampling(small_path, monkeypatch):
    """Sampling on the decoder-only graph reads the stop flag every step: a step after the stop would still draw
    from the generator. So one generator shared by consecutive calls gives the eager calls' tokens and ends in
    the eager calls' state."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    emulate_graphs(model, monkeypatch)
    ids, mask = batch(model)
    runs = {}
    for graphed in (True, False):
        generator = torch.Generator().manual_seed(1)
        runs[graphed] = [model.generate(ids, mask, cuda_graph=graphed, generator=generator, do_sample=True, top_k=8,
                                        max_length=13) for _ in range(2)] + [generator.get_state()]
    assert all(torch.equal(a, b) for a, b in zip(runs[True], runs[False]))
    assert model.graphed_step is not None


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
    new_search = lambda own=None: start_search(cfg, input_ids, cuda.config.vocab_size, cuda.device, own)  # noqa: E731
    with torch.no_grad():
        cache = cuda.new_cache(hidden, mask, rows_per_input(cfg), cfg.max_length - 1, fixed_shape=True)
        eager = new_search()
        decode_eagerly(cuda.decode_step_unchecked, cache, eager, check_every=8)
        graph = whole_step.graphed_search(cuda, hidden, padding_mask, cfg, input_ids, rows_per_input(cfg), None, None,
                                          new_search)
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
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    kwargs = dict(num_beams=4, no_repeat_ngram_size=3, min_length=6, max_length=12, repetition_penalty=1.2,
                  encoder_no_repeat_ngram_size=2, bad_words_ids=[[5], [6, 7]], forced_bos_token_id=0)
    assert not steps_without_syncs(cuda, kwargs).going.item()


def steps_without_syncs(cuda, kwargs: dict, generator=None):
    """step_once run past the stop (max_length + 2 times) on a fixed-shape cache for batch()'s inputs, under torch's
    sync debug mode set to error (an op that waits for the device raises); sampling: its draws' checks deferred, as
    the whole-step graph runs them. Returns the search."""
    from seq2seq_kit.generation.decoding import prepare, rows_per_input, start_search

    ids, mask = batch(cuda, device="cuda")
    input_ids, padding_mask, cfg, _ = prepare(cuda, ids, mask, kwargs, None)
    with torch.no_grad():
        cache = cuda.new_cache(cuda.encode_unchecked(input_ids, padding_mask), mask, rows_per_input(cfg),
                               cfg.max_length - 1, fixed_shape=True)
        search = start_search(cfg, input_ids, cuda.config.vocab_size, cuda.device, generator)
        if cfg.do_sample:
            search.defer_draw_checks()
        torch.cuda.synchronize()
        torch.cuda.set_sync_debug_mode("error")
        try:
            for _ in range(cfg.max_length + 2):
                whole_step.step_once(cuda.decode_step_unchecked, cache, search)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return search


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


@pytest.mark.cuda
def test_draw_on_device_is_torch_multinomial_on_cuda():
    """draws.draw_on_device on the GPU against torch.multinomial there (ATen's CUDA sampling path): the same indices
    and the generator left in the same state, for one and several draws; a row with nothing to draw is its fault."""
    from seq2seq_kit.generation.draws import draw_on_device

    g = torch.Generator().manual_seed(0)
    for case in range(40):
        rows, vocab, n = (int(torch.randint(1, high, (1,), generator=g)) for high in (9, 5000, 9))
        scores = (torch.randn(rows, vocab, generator=g) * float(torch.rand(1, generator=g) * 10)).cuda()
        theirs, ours = (torch.Generator("cuda").manual_seed(case) for _ in range(2))
        want = torch.multinomial(scores.softmax(dim=-1), n, generator=theirs)
        got, fault = draw_on_device(scores, n, ours)
        assert torch.equal(got, want) and fault.item() == 0, case
        assert torch.equal(ours.get_state(), theirs.get_state()), case
    scores[0] = -float("inf")
    assert draw_on_device(scores, 1, None)[1].item() == 1


@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(do_sample=True, top_k=8, max_length=20),
                                    dict(do_sample=True, num_return_sequences=2, top_p=0.9, temperature=0.8,
                                         repetition_penalty=1.2, max_length=16),
                                    dict(do_sample=True, num_beams=3, no_repeat_ngram_size=2, max_length=14)])
def test_whole_step_sampling_on_cuda_equals_eager(tiny_eos_path, monkeypatch, kwargs):
    """decoding.WHOLE_STEP_SAMPLING on a GPU (what turning it on by default waits for): the graph's own generator,
    registered with the CUDA graph, started at the caller's state and handed back. Two calls with one CUDA
    generator, one with another, two on the default CUDA generator (torch.cuda.manual_seed): the eager calls'
    tokens, both generators left in the eager calls' state (the replays after the stop not counted); one graph
    kept, the decoder-only graph never captured."""
    monkeypatch.setattr(decoding, "WHOLE_STEP_SAMPLING", True)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    ids, mask = batch(cuda, device="cuda")
    runs = {}
    for graphed in (False, True):
        g = torch.Generator("cuda").manual_seed(1)
        drawn = [cuda.generate(ids, mask, generator=gen, cuda_graph=graphed, **kwargs)
                 for gen in (g, g, torch.Generator("cuda").manual_seed(2))]
        torch.cuda.manual_seed(3)
        drawn += [cuda.generate(ids, mask, cuda_graph=graphed, **kwargs) for _ in range(2)]
        runs[graphed] = drawn + [g.get_state(), torch.cuda.get_rng_state()]
    assert all(torch.equal(a, b) for a, b in zip(runs[True], runs[False]))
    assert len(whole_step.KEPT[cuda]) == 1 and cuda.graphed_step is None


@pytest.mark.cuda
def test_whole_step_sampling_never_synchronizes(checkpoint):
    """step_once of beam sampling and of sampling with every warper, their draws' checks deferred, under torch's
    sync debug mode set to error: no operation waits for the device (torch.multinomial's check would)."""
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    for kwargs in (dict(do_sample=True, num_beams=3, max_length=12, no_repeat_ngram_size=2),
                   dict(do_sample=True, max_length=12, top_k=20, top_p=0.9, min_p=0.05, typical_p=0.9,
                        epsilon_cutoff=3e-3, temperature=0.7, repetition_penalty=1.2, num_return_sequences=2),
                   dict(do_sample=True, max_length=12, top_h=0.5, eta_cutoff=3e-3)):
        search = steps_without_syncs(cuda, kwargs, torch.Generator("cuda").manual_seed(0))
        assert search.stopped(), kwargs


@pytest.mark.cuda
def test_a_failed_draw_on_the_cuda_graph_is_named_as_eagerly(tiny_eos_path, monkeypatch):
    """A draw with nothing valid to draw on the whole-step graph raises, at the stop flag's read, the ValueError the
    eager draw raises (the cause named)."""
    monkeypatch.setattr(decoding, "WHOLE_STEP_SAMPLING", True)
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    ids, mask = batch(cuda, device="cuda")
    errors = []
    for graphed in (False, True):
        with pytest.raises(ValueError, match="no valid probabilities") as error:
            cuda.generate(ids, mask, do_sample=True, max_length=5, temperature=1e-320, cuda_graph=graphed)
        errors.append(str(error.value))
    assert errors[0] == errors[1]


EAGER_ONLY = {"output_attentions": dict(output_attentions=True, return_dict_in_generate=True),
              "output_hidden_states": dict(output_hidden_states=True, return_dict_in_generate=True)}


@pytest.mark.parametrize("name", list(EAGER_ONLY))
def test_traces_decode_eagerly_where_graphs_are_the_default(model, monkeypatch, name):
    """On CUDA generate runs on graphs unless told otherwise; output_attentions / output_hidden_states (every
    layer's traces, recorded beside the step) decode eagerly instead (the eager tokens and traces, no graph
    replayed), and cuda_graph=True beside them is refused. The CUDA device is emulated: graphs on by default, replayed on the CPU."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    ids, mask = batch(model)
    kwargs = dict(EAGER_ONLY[name], max_new_tokens=6, num_beams=3)
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


@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2),
                                    dict(do_sample=True, top_k=5)])
def test_stop_strings_run_on_the_graphs_as_eagerly(model, monkeypatch, kwargs):
    """stop_strings on generate's CUDA graphs (emulated on the CPU): their check is a device-side part of the search's
    step, so greedy and beam search replay the whole step with it and sampling its decoder graph (they decoded
    eagerly until 2026-12-05). Tokens equal the eager call's; a second call with the same stop strings and
    tokenizer reuses the kept graph; another tokenizer object (other tables) captures anew."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    monkeypatch.setattr(model, "graphed_step", None)
    tok, other_tok = Tokenizer.from_default(), Tokenizer.from_default()
    ids, mask = batch(model)
    free = model.generate(ids, mask, max_new_tokens=10)[0].tolist()
    stops = [tok.convert_tokens_to_string(tok.convert_ids_to_tokens(free[1:5]))[-3:]]
    seeded = (lambda: dict(generator=torch.Generator().manual_seed(4))) if kwargs.get("do_sample") else dict
    call = dict(kwargs, max_new_tokens=10, stop_strings=stops)
    want = model.generate(ids, mask, **call, **seeded(), tokenizer=tok)
    assert want.shape[1] < model.generate(ids, mask, **kwargs, **seeded(), max_new_tokens=10).shape[1]   # stops act
    runs = [(lambda tokenizer=tokenizer: dict(call, **seeded(), tokenizer=tokenizer), want, captures)
            for tokenizer, captures in ((tok, 1), (tok, 0), (other_tok, 1))]
    assert_graphed_as_eager(model, monkeypatch, runs, (ids, mask), sampling=bool(kwargs.get("do_sample")))


@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(num_beams=3), dict(num_beams=2, num_return_sequences=2),
                                    dict(do_sample=True, top_k=5)])
def test_decoder_prompts_run_on_the_graphs_as_eagerly(small_path, fixtures_dir, monkeypatch, kwargs):
    """decoder_input_ids on generate's CUDA graphs (emulated on the CPU): the prompt is fed to the graph's cache in
    one pass (its positions are device-side) before the first replayed step, for the whole step (greedy, beam) and
    the decoder graph (sampling); they decoded eagerly until 2026-12-05. On the 64-token BART, whose continuations
    depend on the prompt: tokens equal the eager call's; another prompt of the same length reuses the kept graph
    (fed anew), one of another length captures anew; stop strings beside a prompt too."""
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    monkeypatch.setattr(whole_step, "KEPT", type(whole_step.KEPT)())
    model = BartForConditionalGeneration.from_pretrained(small_path)
    tok = Tokenizer.from_pretrained(fixtures_dir / "bart-tokenizer")          # ids 0..63: '<s>', '.', 'Ġthe', ...
    ids = torch.tensor([[5, 9, 14, 20, 33, 41, 2], [7, 8, 9, 10, 11, 12, 2]])
    seeded = (lambda: dict(generator=torch.Generator().manual_seed(4))) if kwargs.get("do_sample") else dict
    prompts = [torch.tensor([[2, 7, 8]] * 2), torch.tensor([[2, 9, 30], [2, 11, 5]]), torch.tensor([[2, 40]] * 2)]
    calls = [dict(kwargs, max_new_tokens=8, decoder_input_ids=prompt) for prompt in prompts]
    free = model.generate(ids, **calls[1], **seeded()).tolist()
    stops = [tok.convert_tokens_to_string(tok.convert_ids_to_tokens(row[3:6]))[-2:] for row in free]     # each row's
    calls.append(dict(calls[1], stop_strings=stops, tokenizer=tok))
    wants = [model.generate(ids, **call, **seeded()) for call in calls]
    assert not torch.equal(wants[0][:, 3:], wants[1][:, 3:]) and wants[3].shape[1] < wants[1].shape[1]
    runs = [(lambda call=call: dict(call, **seeded()), want, captures)
            for call, want, captures in zip(calls, wants, (1, 0, 1, 1))]
    assert_graphed_as_eager(model, monkeypatch, runs, (ids,), sampling=bool(kwargs.get("do_sample")))


def assert_graphed_as_eager(model, monkeypatch, runs: list, inputs: tuple, sampling: bool) -> None:
    """Each run (a function giving the call's generate kwargs, its eager output, the whole-step graphs it captures)
    on the emulated CUDA graphs, in order: the eager output, and for greedy / beam search that many new kept graphs
    (a reused one: none); sampling replays the model's decoder graph."""
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    before_replays = replays()
    for kwargs, want, captures in runs:
        before = len(whole_step.KEPT.get(model, {}))
        assert torch.equal(model.generate(*inputs, **kwargs(), cuda_graph=True), want)
        if not sampling:
            assert len(whole_step.KEPT[model]) == before + captures
    assert replays() > before_replays and (model.graphed_step is not None) == sampling


@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(num_beams=3), dict(do_sample=True, top_k=5)])
def test_decoder_prompts_on_cuda_graphs_equal_eager(small_path, kwargs):
    """generate on a GPU with decoder prompts: on its CUDA graphs (the default there) the tokens of cuda_graph=False
    on the same GPU, a kept graph reused by a second prompt of the same length."""
    model = BartForConditionalGeneration.from_pretrained(small_path, device="cuda")
    ids = torch.tensor([[5, 9, 14, 20, 33, 41, 2], [7, 8, 9, 10, 11, 12, 2]], device="cuda")
    seeded = (lambda: dict(generator=torch.Generator("cuda").manual_seed(4))) if kwargs.get("do_sample") else dict
    for prompt in ([[2, 7, 8]] * 2, [[2, 9, 30], [2, 11, 5]]):
        call = dict(kwargs, max_new_tokens=8, decoder_input_ids=torch.tensor(prompt, device="cuda"))
        assert torch.equal(model.generate(ids, **call, **seeded()),
                           model.generate(ids, **call, **seeded(), cuda_graph=False)), prompt
