"""The decoder step replayed from a CUDA graph: one launch per step instead of ~15 kernels per layer.

A decode step at batch 1 moves little data and is bound by kernel launches; a CUDA graph records the step's
kernels once and replays them. A graph runs on fixed buffers with fixed shapes, so the graphed step uses the
model's fixed-shape step (`step_logits` with a device-side position: the self-attention reads all max_length
cache slots and masks those not yet written) on one KV cache that the graph owns. Masked slots add exact zeros
to the softmax, but the longer reduction rounds differently, so its logits match the eager step's to float
rounding, not bit for bit (see the GPU results in benchmarks/results/).

The graph is kept on the model (`model.graphed_step`) and reused by the next generate call with the same shapes
(rows, cache length, source length, padding mask or none, dtype, weights), which then only copies its
cross-attention keys/values in. Other shapes capture a new graph (some tens of ms) and free the old one.
"""

from __future__ import annotations

import torch

from .kv_cache import KVCache


def _key(model, cache: KVCache) -> tuple:
    return (cache.num_rows, cache.rows_per_input, cache.max_length, tuple(cache.cross_k[0].shape),
            cache.cross_mask is None, model.dtype, str(model.device), tuple(p.data_ptr() for p in model.parameters()))


class GraphedDecodeStep:
    """Callable like `model.decode_step(input_ids, cache)`, for the cache it owns (`self.cache`)."""

    def __init__(self, model, cache: KVCache):
        self.key, self.cache = _key(model, cache), cache
        self.input_ids = torch.zeros(cache.num_rows, dtype=torch.long, device=model.device)   # [R]
        self.position = torch.zeros(1, dtype=torch.long, device=model.device)
        side = torch.cuda.Stream(model.device)
        side.wait_stream(torch.cuda.current_stream(model.device))
        with torch.cuda.stream(side):          # warm-up on a side stream, as torch.cuda.graph asks; writes slot 0
            for _ in range(2):
                model.step_logits(self.input_ids, cache, self.position)
        torch.cuda.current_stream(model.device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = model.step_logits(self.input_ids, cache, self.position).float()   # [R, V], reused

    def load(self, cache: KVCache) -> KVCache:
        """Start over on another input of the same shapes: copy its cross-attention keys/values and mask in."""
        for mine, theirs in zip((*self.cache.cross_k, *self.cache.cross_v), (*cache.cross_k, *cache.cross_v)):
            mine.copy_(theirs)
        if cache.cross_mask is not None:
            self.cache.cross_mask.copy_(cache.cross_mask)
        self.cache.length = 0
        return self.cache

    def __call__(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """input_ids [R] -> float32 logits [R, V]; advances cache.length."""
        if cache is not self.cache:
            raise ValueError("this graphed step runs on its own cache only (GraphedDecodeStep.cache)")
        if cache.length >= cache.max_length:
            raise ValueError(f"the KV cache is full ({cache.max_length} tokens)")
        self.input_ids.copy_(input_ids)
        self.position.fill_(cache.length)
        self.graph.replay()
        cache.length += 1
        return self.logits.clone()          # the graph's buffer is overwritten by the next replay


def graphed_step(model, cache: KVCache) -> GraphedDecodeStep:
    """The model's graphed step for a fresh cache's shapes, reused if it has one, else captured (replacing it).
    Decode with the returned step on `step.cache`, which then holds `cache`'s cross-attention keys/values."""
    step = model.graphed_step
    if step is not None and step.key == _key(model, cache):
        step.load(cache)
        return step
    model.graphed_step = None                  # free the old graph and its cache before capturing a new one
    model.graphed_step = GraphedDecodeStep(model, cache)
    return model.graphed_step
