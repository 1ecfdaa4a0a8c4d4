"""The decoder step replayed from a CUDA graph: one launch per step instead of ~15 kernels per layer.

A decode step at batch 1 moves little data and is bound by kernel launches; a CUDA graph records the step's
kernels once and replays them. A graph runs on fixed buffers with fixed shapes, so it captures the model's
`next_token_logits` on a FixedShapeKVCache (models/kv_cache.py: a device-side position, all cache slots read,
those not yet written masked), which the graph then owns. Its logits match the eager step's to float rounding,
not bit for bit (see the GPU results in benchmarks/results/).

The model keeps its graph (`graphed_step`) and reuses it for the next generate call with the same `graph_key`
(rows, cache length, source shape, padding mask or none, dtype, device, weights), after writing that call's
cross-attention keys/values into the graph's cache. Other keys capture a new graph (some tens of ms).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from .kv_cache import FixedShapeKVCache


def graph_key(model: nn.Module, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
              rows_per_input: int, max_length: int) -> tuple:
    """What a captured step depends on: every shape, padding or none, dtype, device and the tensors' addresses
    (weights moved or converted would leave a graph reading freed memory)."""
    tensors = (*model.parameters(), *model.buffers())
    return (tuple(encoder_hidden.shape), rows_per_input, max_length, padding_mask is None, encoder_hidden.dtype,
            str(encoder_hidden.device), tuple(t.data_ptr() for t in tensors))


class GraphedStep:
    """Callable like the model's decode_step_unchecked, and as unchecked, on the one cache it was captured with
    (`self.cache`): input_ids [R] -> float32 logits [R, V], the cache advanced."""

    def __init__(self, next_token_logits: Callable, cache: FixedShapeKVCache, key: tuple):
        self.key, self.cache = key, cache
        device = cache.self_kv.device
        self.input_ids = torch.zeros(cache.num_rows, dtype=torch.long, device=device)     # [R]
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):          # warm-up on a side stream, as torch.cuda.graph asks; writes slot 0
            for _ in range(2):
                next_token_logits(self.input_ids, cache)
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.logits = next_token_logits(self.input_ids, cache).float()            # [R, V], reused

    def __call__(self, input_ids: torch.Tensor, cache: FixedShapeKVCache) -> torch.Tensor:
        self.input_ids.copy_(input_ids)
        self.graph.replay()
        cache.advance()
        return self.logits.clone()          # the graph's buffer is overwritten by the next replay
