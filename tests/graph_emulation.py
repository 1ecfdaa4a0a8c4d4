"""A CUDA graph's semantics on the CPU, to test the code the CUDA paths capture (whole_step.CapturedStep's users:
generate's whole step, the engine's group search steps) on a machine without a GPU.

What a CUDA graph keeps of a captured call is the device work, not the Python: replaying it runs the same kernels
on the same memory, reading whatever the tensors hold by then, and a tensor made during the capture is a fixed
buffer that every replay writes again. EmulatedGraph records the aten ops of one call of fn (after the two warm-up
calls CapturedStep makes) and replays exactly those ops on the very tensors they ran on: an op that made a new
tensor writes its result into the recorded one (a static buffer), an in-place or out= op writes where it wrote.
So a step whose Python decides anything from state that changes between steps (a host counter, a tensor rebound
instead of written in place, a shape) gives other tokens here than when it runs eagerly; a host read inside the
step is refused, as a capture refuses it.
"""

from __future__ import annotations

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class _Recorder(TorchDispatchMode):
    def __init__(self, ops: list):
        super().__init__()
        self.ops = ops

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        assert str(func) != "aten._local_scalar_dense.default", "a host read inside a captured step"
        out = func(*args, **kwargs)
        self.ops.append((func, args, kwargs, out))       # keeps every tensor alive: addresses stay unique
        return out


class EmulatedGraph:
    """Drop-in for whole_step.CapturedStep (fn, device): two warm-up calls, one recorded; calling replays."""

    def __init__(self, fn, device=None):
        for _ in range(2):
            fn()
        self.ops: list = []
        with _Recorder(self.ops):
            self.outputs = fn()
        self.replays = 0

    def __call__(self):
        with torch.inference_mode():                     # the recorded buffers may be inference tensors
            for func, args, kwargs, out in self.ops:
                result = func(*args, **kwargs)
                for new, old in zip(_tensors(result), _tensors(out)):
                    if new.data_ptr() != old.data_ptr():  # a new tensor: into the recorded buffer
                        old.copy_(new)
        self.replays += 1
        return self.outputs


def _tensors(value) -> list[torch.Tensor]:
    return [t for t in tree_leaves(value) if isinstance(t, torch.Tensor)]


class EmulatedBucketGraphs:
    """Drop-in for models/cuda_graph.py BucketGraphs (the engine's decoder step, one graph per SlotStore view) on
    EmulatedGraph: each view's step recorded on first use, then replayed, writing `logits`."""

    def __init__(self, next_token_logits, input_ids: torch.Tensor, logits: torch.Tensor):
        self.next_token_logits, self.input_ids, self.logits = next_token_logits, input_ids, logits
        self.graphs: dict[int, EmulatedGraph] = {}

    def __call__(self, cache) -> torch.Tensor:
        if id(cache) not in self.graphs:        # its warm-up and recorded calls write this step's keys/values: the
            self.graphs[id(cache)] = EmulatedGraph(     # replay writes them again, the same
                lambda: self.logits.copy_(self.next_token_logits(self.input_ids, cache)))
        self.graphs[id(cache)]()
        return self.logits


class EmulatedGraphedStep:
    """Drop-in for models/cuda_graph.py GraphedStep (generate's decoder-only graph, which sampling replays): the
    decoder step on the graph's own cache recorded once and replayed, so the model's graph bookkeeping (capture,
    reuse, cross K/V written into the kept cache) runs as on a GPU."""

    def __init__(self, next_token_logits, cache, key):
        self.key, self.cache = key, cache
        self.input_ids = torch.zeros(cache.num_rows, dtype=torch.long)
        self.graph = EmulatedGraph(lambda: next_token_logits(self.input_ids, cache).float())   # writes slot 0

    def __call__(self, input_ids, cache):
        self.input_ids.copy_(input_ids)
        logits = self.graph()
        cache.advance()
        return logits.clone()
