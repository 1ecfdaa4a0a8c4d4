"""Decoding allocates the same tensor sizes at every step, whatever the step's position.

The CUDA caching allocator keeps every block it has handed out and serves a request from a cached block only if
that block is at least as large: a tensor that grows with the step (a gather over the cache's filled slots into
fresh memory) gets a new block at every step, and the process keeps ~ sum over steps of its size. That is what
held 57.5 GiB of cached blocks in the 2026-11-25 H100 run (fp32, batch 32, beam 4, distilbart: the eager
reorder's [6 layers, 2, 128 rows, 16 heads, t, 64] float32 gather is 6.3 MB x t, summed over t = 1..139: 57.0 GiB),
so that a second process on the GPU ran out of memory. This is checked on the CPU by recording the size of every
tensor an op allocates during decoding (a dispatch mode, which sees every op, on any device): decoding 60 steps
must allocate as many distinct large sizes per op as decoding 30 steps does (generate), or a handful, not one per
step (the engine, whose row count changes as requests join).
"""

from __future__ import annotations

import collections

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

from seq2seq_kit import BartForConditionalGeneration, Engine

LARGE = 64 << 10    # bytes; one step of the tiny model's KV cache over 16 rows is 16 KiB, its logits 3.2 MB


class Allocations(TorchDispatchMode):
    """Records {op: distinct sizes in bytes} of the tensors ops allocate (outputs not sharing an input's storage)
    of at least LARGE bytes."""

    def __init__(self):
        super().__init__()
        self.sizes: dict[str, set[int]] = collections.defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        given = {t.untyped_storage().data_ptr() for t in tree_leaves((args, kwargs)) if isinstance(t, torch.Tensor)}
        for t in tree_leaves(out):
            if isinstance(t, torch.Tensor) and t.untyped_storage().nbytes() >= LARGE \
                    and t.untyped_storage().data_ptr() not in given:
                self.sizes[str(func)].add(t.untyped_storage().nbytes())
        return out

    def counts(self) -> dict[str, int]:
        return {op: len(sizes) for op, sizes in self.sizes.items()}


@pytest.fixture(scope="module")
def model(checkpoint):
    return BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))


SOURCES = [list(range(5, 25 + 7 * i)) for i in range(4)]
SETTINGS = [dict(num_beams=4, no_repeat_ngram_size=3), dict(num_beams=1, repetition_penalty=1.3),
            dict(do_sample=True, top_k=20, num_return_sequences=4)]


@pytest.mark.parametrize("setting", SETTINGS)
def test_generate_allocates_no_tensor_that_grows_with_the_step(model, setting):
    ids = torch.tensor([s[:20] for s in SOURCES])                           # [4, 20]
    model.generate(ids, max_length=5, **setting)     # what a first call makes and the model keeps (a greedy screen)
    counts = []
    for steps in (30, 60):
        with Allocations() as seen:
            model.generate(ids, max_length=steps, min_length=steps, generator=torch.Generator().manual_seed(0)
                           if setting.get("do_sample") else None, **setting)
        counts.append(seen.counts())
    assert counts[1] == counts[0], f"sizes that grow with the step: {counts}"


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_engine_steps_allocate_no_tensor_that_grows_with_the_step(model, fixed_capacity, monkeypatch):
    """The engine's step runs on its own thread: the recording mode is entered there, around each step. The rows
    in use take at most 4 values here (requests join as they arrive), the fixed-capacity buckets a few: an op may
    allocate a few sizes, where a tensor that grows with the step takes one size per step (~50 above LARGE)."""
    real = Engine._step
    seen = Allocations()

    def step(self):
        with seen:
            real(self)

    monkeypatch.setattr(Engine, "_step", step)
    with Engine(model, max_rows=16, fixed_capacity=fixed_capacity) as engine:
        requests = [engine.submit(s, num_beams=4, max_length=60, min_length=60) for s in SOURCES]
        for r in requests:
            assert r.result(timeout=120).shape == (1, 60)
    assert seen.sizes, "nothing recorded"
    assert max(seen.counts().values()) <= 8, f"sizes that grow with the step: {seen.sizes}"


def reserved_after(decode) -> int:
    """Bytes the CUDA caching allocator holds after decode() ran from an emptied cache."""
    torch.cuda.synchronize()
    torch.cuda.empty_cache()
    decode()
    torch.cuda.synchronize()
    return torch.cuda.memory_reserved()


@pytest.mark.cuda
@pytest.mark.parametrize("path", ["generate", "engine"])
def test_cuda_cached_blocks_do_not_grow_with_the_steps(checkpoint, path):
    """The same check on the GPU's own allocator: 32 beam-4 inputs (128 rows) of the distilbart shape, fp32, decoded
    for 30 and then 60 steps. Growth as in the 2026-11-25 run would add ~ sum over steps 31..60 of a 1 MB gather
    (~1.4 GB); without it the difference is the longer run's larger self-attention cache (~30 MB here) and, for
    the engine, one more length bucket's CUDA graph."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("distilbart"), device="cuda", dtype="float32")
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, model.config.vocab_size, (32, 200), generator=g)
    settings = dict(num_beams=4, no_repeat_ngram_size=3, length_penalty=2.0)

    def decode(steps: int):
        if path == "generate":
            model.generate(ids.cuda(), max_length=steps, min_length=steps, cuda_graph=False, **settings)
            return
        with Engine(model, max_rows=128) as engine:
            for r in [engine.submit(row, max_length=steps, min_length=steps, **settings) for row in ids]:
                r.result(timeout=300)

    short = reserved_after(lambda: decode(30))
    long = reserved_after(lambda: decode(60))
    assert long - short < 256 << 20, f"cached blocks grew by {(long - short) / 2**20:.0f} MiB for 30 more steps"
