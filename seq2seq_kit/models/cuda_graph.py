"""The decoder step replayed from a CUDA graph: one launch per step instead of ~15 kernels per layer.

A decode step at batch 1 moves little data and is bound by kernel launches; a CUDA graph records the step's
kernels once and replays them. A graph runs on fixed buffers with fixed shapes, so it captures the model's
`next_token_logits` on a FixedShapeKVCache (models/kv_cache.py: a device-side position, all cache slots read,
those not yet written masked), which the graph then owns. Its logits match the eager step's to float rounding,
not bit for bit (see the GPU results in benchmarks/results/).

The model keeps its graph (`graphed_step`) and reuses it for the next generate call with the same `graph_key`
(rows, cache length, source shape, padding mask or none, dtype, device, weights), after writing that call's
cross-attention keys/values into the graph's cache. Other keys capture a new graph (some tens of ms).
generate replays this decoder-only graph for sampling; greedy and beam search replay the whole step, search
included (generation/whole_step.py). BucketGraphs is the continuous-batching engine's step on a SlotStore, one
graph per bucket set (SlotStore.view).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .. import cuda_capture
from .kv_cache import FixedShapeKVCache


def graph_key(model: nn.Module, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
              rows_per_input: int, max_length: int) -> tuple:
    """What a captured step depends on: every shape, padding or none, dtype, device and the weights' addresses."""
    return (tuple(encoder_hidden.shape), rows_per_input, max_length, padding_mask is None, encoder_hidden.dtype,
            str(encoder_hidden.device), cuda_capture.weights_key(model))


class GraphedStep:
    """Callable like the model's decode_step_unchecked, and as unchecked, on the one cache it was captured with
    (`self.cache`): input_ids [R] -> float32 logits [R, V], the cache advanced."""

    def __init__(self, next_token_logits: Callable, cache: FixedShapeKVCache, key: tuple):
        self.key, self.cache = key, cache
        self.input_ids = torch.zeros(cache.num_rows, dtype=torch.long, device=cache.self_kv.device)     # [R]
        self.step = cuda_capture.CapturedStep(lambda: next_token_logits(self.input_ids, cache).float(),  # [R, V]
                                              self.input_ids.device)        # its warm-up writes slot 0

    def __call__(self, input_ids: torch.Tensor, cache: FixedShapeKVCache) -> torch.Tensor:
        self.input_ids.copy_(input_ids)
        logits = self.step()
        cache.advance()
        return logits.clone()          # the graph's buffer is overwritten by the next replay


class BucketGraphs:
    """The continuous-batching engine's decoder step on a SlotStore (models/kv_cache.py), one CUDA graph per view
    (source-length, length, input-slot and rows-per-input buckets): a stream of requests of any lengths captures a
    handful of graphs. Every graph reads the tokens in `input_ids` [N] and writes float32 logits into `logits`
    [N, V], the same two buffers for all (what the search steps captured after it read: the engine's SlotGroup).
    `__call__(cache)` replays the graph of that view, capturing it on first use: its warm-up and capture write
    this step's keys/values, which the replay then writes again, the same. The graphs share one memory pool (the
    first one's): they never run at once, and none keeps anything alive."""

    def __init__(self, next_token_logits: Callable, input_ids: torch.Tensor, logits: torch.Tensor):
        self.next_token_logits = next_token_logits
        self.input_ids, self.logits = input_ids, logits                                # [N], [N, V]
        self.graphs: dict[int, cuda_capture.CapturedStep] = {}
        self.pool = None

    def __call__(self, cache: FixedShapeKVCache) -> torch.Tensor:
        if id(cache) not in self.graphs:
            graph = cuda_capture.CapturedStep(
                lambda: self.logits.copy_(self.next_token_logits(self.input_ids, cache)),    # [N, V] as float32
                self.input_ids.device, self.pool)
            self.graphs[id(cache)], self.pool = graph, graph.pool
        return self.graphs[id(cache)]()
