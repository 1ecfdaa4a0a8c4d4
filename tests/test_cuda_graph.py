"""The fixed-shape decoder step (what a CUDA graph captures) and the CUDA-graphed generate.

On CPU: the fixed-shape step (a FixedShapeKVCache: device-side position, all cache slots read, unwritten ones
masked) gives the eager step's logits within 1e-5, through a beam reorder; cuda_graph's argument errors; the model's
graph bookkeeping (capture, reuse for the same shapes, recapture) with a CPU stand-in for the graph.
On CUDA (marker `cuda`): graphed generate gives the eager generate's tokens (fp32, tiny models with decisive
logits), reuses its graph for inputs of the same shapes and captures a new one for other shapes or weights.
"""

from __future__ import annotations

import importlib

import pytest
import torch

from seq2seq_kit.modeling import BartForConditionalGeneration
from seq2seq_kit.models.kv_cache import FixedShapeKVCache, KVCache
from helpers import random_batch


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


class EagerReplay:
    """Stands in for models/cuda_graph.py's GraphedStep on the CPU: "replays" the captured function on the same
    input buffer and cache, so the model's graph bookkeeping (capture, reuse, cross K/V written into the kept
    cache) runs without a GPU."""

    def __init__(self, next_token_logits, cache, key):
        self.key, self.cache, self.function = key, cache, next_token_logits
        self.input_ids = torch.zeros(cache.num_rows, dtype=torch.long)
        next_token_logits(self.input_ids, cache)        # the warm-up writes slot 0, as on CUDA

    def __call__(self, input_ids, cache):
        self.input_ids.copy_(input_ids)
        logits = self.function(self.input_ids, self.cache).float()
        cache.advance()
        return logits


@pytest.mark.parametrize("kwargs", [dict(num_beams=1, max_length=24, no_repeat_ngram_size=3),
                                    dict(num_beams=4, max_length=24, length_penalty=2.0, early_stopping=True)])
def test_graph_bookkeeping_on_cpu(checkpoint, monkeypatch, kwargs):
    from seq2seq_kit.models import bart

    generate_module = importlib.import_module("seq2seq_kit.generation.generate")   # the package shadows its name
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    monkeypatch.setattr(bart, "GraphedStep", EagerReplay)
    monkeypatch.setattr(generate_module, "use_cuda_graph", lambda cuda_graph, device: bool(cuda_graph))
    first = None
    for seed in (3, 4):                             # same shapes: the second call reuses the first's graph
        ids, mask = batch(model, seed=seed)
        assert torch.equal(model.generate(ids, mask, cuda_graph=True, **kwargs),
                           model.generate(ids, mask, cuda_graph=False, **kwargs)), f"seed {seed}"
        first = first or model.graphed_step
        assert model.graphed_step is first and isinstance(first.cache, FixedShapeKVCache)
    ids, mask = batch(model, lengths=(9, 9, 4))     # other shapes: a new graph
    assert torch.equal(model.generate(ids, mask, cuda_graph=True, **kwargs),
                       model.generate(ids, mask, cuda_graph=False, **kwargs))
    assert model.graphed_step is not first


# ---- CUDA (run when a GPU is lent) --------------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(num_beams=1, max_length=24, no_repeat_ngram_size=3),
                                    dict(num_beams=4, max_length=24, length_penalty=2.0, early_stopping=True),
                                    dict(num_beams=3, num_return_sequences=2, max_length=20, min_length=6)])
def test_graphed_generate_matches_eager(checkpoint, kwargs):
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    first = None
    for seed in (3, 4):                             # same shapes: the second call replays the first's graph
        ids, mask = batch(cuda, seed=seed, device="cuda")
        eager = cuda.generate(ids, mask, cuda_graph=False, **kwargs)
        graphed = cuda.generate(ids, mask, **kwargs)       # default on CUDA: graphed
        assert torch.equal(graphed, eager), f"seed {seed}"
        first = first or cuda.graphed_step
        assert cuda.graphed_step is first
    ids, mask = batch(cuda, lengths=(9, 9, 4), device="cuda")     # other shapes: a new graph
    assert torch.equal(cuda.generate(ids, mask, **kwargs), cuda.generate(ids, mask, cuda_graph=False, **kwargs))
    assert cuda.graphed_step is not first


@pytest.mark.cuda
def test_graph_recaptured_after_weights_move(checkpoint):
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = batch(cuda, device="cuda")
    cuda.generate(ids, mask, max_length=10)
    first = cuda.graphed_step
    cuda.to(torch.float64)                          # new weight tensors: the old graph would read freed memory
    assert torch.equal(cuda.generate(ids, mask, max_length=10),
                       cuda.generate(ids, mask, max_length=10, cuda_graph=False))
    assert cuda.graphed_step is not first and cuda.graphed_step.cache.self_kv.dtype == torch.float64
