"""The decoder's KV caches: what incremental decoding keeps between steps, and the one way a step writes to it.

Shapes: B inputs, S source tokens, R = B * rows_per_input decoder rows (beams or samples; row r belongs to input
r // rows_per_input), H heads, Dh head size, L = max_length self-attention slots.

Self-attention keys/values are preallocated, L slots per row, and written by `update(layer, k, v)`, which also
returns what the attention reads. Cross-attention keys/values are computed once per *input* (the model's
`project_cross_kv`) and shared by that input's rows: a step views its queries [R, H, 1, Dh] as
[B, H, rows_per_input, Dh] (rows as query positions).

Two kinds, one interface (`position`, `update`, `advance`, `reorder`):
  KVCache            eager: the position is the host int `length`; attention reads slots [:length + 1] unmasked.
  FixedShapeKVCache  for CUDA-graph capture: the position is a device tensor [P] (P = 1: every row at one position;
                     P = R: one position per row); attention reads all L slots with those past the row's position
                     masked, so shapes and addresses never change and a captured step can be replayed.
"""

from __future__ import annotations

import torch


class KVCache:
    """The eager cache: `length` tokens written so far (host int); the next step writes slot `length`."""

    def __init__(self, self_kv: torch.Tensor, cross_k: list[torch.Tensor], cross_v: list[torch.Tensor],
                 cross_mask: torch.Tensor | None, rows_per_input: int):
        self.self_kv = self_kv                  # [layers, 2, R, H, L, Dh]: self-attention keys (0), values (1)
        self.cross_k = cross_k                  # per decoder layer: [B, H, S, Dh]
        self.cross_v = cross_v                  # per decoder layer: [B, H, S, Dh]
        self.cross_mask = cross_mask            # [B, 1, 1, S] bool, True = attend; None: no padding
        self.rows_per_input = rows_per_input
        self.length = 0                         # tokens already in the self-attention cache

    @classmethod
    def empty(cls, *, layers: int, inputs: int, rows_per_input: int, heads: int, head_dim: int, max_length: int,
              source_length: int, padded: bool, dtype: torch.dtype, device: torch.device) -> KVCache:
        """A cache with nothing written: self-attention slots zeroed, cross-attention tensors to be filled."""
        R = inputs * rows_per_input
        # zeros, not empty: the fixed-shape step multiplies unwritten value slots by a zero weight, and 0 * a NaN
        # left in uninitialised memory would be NaN
        self_kv = torch.zeros(layers, 2, R, heads, max_length, head_dim, dtype=dtype, device=device)
        cross = [torch.empty(inputs, heads, source_length, head_dim, dtype=dtype, device=device)
                 for _ in range(2 * layers)]
        mask = torch.empty(inputs, 1, 1, source_length, dtype=torch.bool, device=device) if padded else None
        return cls(self_kv, cross[:layers], cross[layers:], mask, rows_per_input)

    @property
    def self_k(self) -> torch.Tensor:
        return self.self_kv[:, 0]               # [layers, R, H, L, Dh]; self_k[i] is layer i's, a view

    @property
    def self_v(self) -> torch.Tensor:
        return self.self_kv[:, 1]

    @property
    def max_length(self) -> int:
        return self.self_kv.shape[4]

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    @property
    def position(self) -> int:
        """The decoder position of the token the next step feeds."""
        return self.length

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write this step's keys/values k, v [R, H, 1, Dh] of decoder layer `layer` at slot `length`.
        Returns what its attention reads: keys, values [R, H, length + 1, Dh] and mask None."""
        k_cache, v_cache = self.self_kv[layer]                              # each [R, H, L, Dh]
        t = self.length
        k_cache[:, :, t] = k[:, :, 0]
        v_cache[:, :, t] = v[:, :, 0]
        return k_cache[:, :, :t + 1], v_cache[:, :, :t + 1], None

    def advance(self) -> None:
        """After a step's last layer: the next step writes the next slot."""
        self.length += 1

    @torch.inference_mode()
    def reorder(self, row_idx: torch.Tensor) -> None:
        """Row r continues the history of row row_idx[r] (beam search). row_idx: LongTensor [R].

        Rows must stay within their input's group (row_idx[r] // rows_per_input == r // rows_per_input),
        since the cross-attention keys/values are per input; this is not checked (it would sync the device).
        Every layer's keys and values move in one gather.
        """
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        filled = self.self_kv[..., :self.length, :]                          # [layers, 2, R, H, length, Dh]
        filled.copy_(filled.index_select(2, row_idx))


class FixedShapeKVCache(KVCache):
    """The cache a CUDA graph captures: positions live on the device, every step reads all L slots.

    `length` (host) still counts the steps taken, for `reorder` and the callers' bounds; `positions` [P] is its
    device copy that a captured step reads. Masked slots add exact zeros to the softmax, but the longer reduction
    rounds differently, so logits match the eager cache's to float rounding, not bit for bit.
    """

    def __init__(self, self_kv, cross_k, cross_v, cross_mask, rows_per_input):
        super().__init__(self_kv, cross_k, cross_v, cross_mask, rows_per_input)
        self.positions = torch.zeros(1, dtype=torch.long, device=self_kv.device)       # [P], P = 1 or R
        self.slots = torch.arange(self.max_length, device=self_kv.device)              # [L]

    @property
    def position(self) -> torch.Tensor:
        return self.positions

    def update(self, layer: int, k: torch.Tensor, v: torch.Tensor):
        """Write k, v [R, H, 1, Dh] at each row's position. Returns keys, values [R, H, L, Dh] and the mask
        [P, 1, 1, L] (True = attend: slots up to the row's position)."""
        k_cache, v_cache = self.self_kv[layer]                              # each [R, H, L, Dh]
        slot = self.positions.view(-1, 1, 1, 1).expand_as(k)                # [R, H, 1, Dh]
        k_cache.scatter_(2, slot, k)
        v_cache.scatter_(2, slot, v)
        mask = self.slots <= self.positions[:, None]                        # [P, L]
        return k_cache, v_cache, mask[:, None, None, :]

    def advance(self) -> None:
        """The next slot; past the last one, the last slot again (steps after a search stopped, whose results
        nobody reads: generation/sync_free.py)."""
        super().advance()
        self.positions.add_(1).clamp_(max=self.max_length - 1)

    @torch.inference_mode()
    def reorder(self, row_idx: torch.Tensor) -> None:
        """KVCache.reorder over all L slots: fixed shapes, so a CUDA graph can hold it."""
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        self.self_kv.copy_(self.self_kv.index_select(2, row_idx))

    def reset(self) -> None:
        """Start over at position 0 (a reused graph's cache; the stale slots are masked until rewritten)."""
        self.length = 0
        self.positions.zero_()


def row_ranges(caches: list[KVCache]) -> list[tuple[slice, KVCache]]:
    """Where each cache's rows sit in a step over several caches (their rows concatenated in order):
    [(slice of rows, cache), ...]. One cache: [(slice(0, R), cache)]."""
    out, start = [], 0
    for cache in caches:
        out.append((slice(start, start + cache.num_rows), cache))
        start += cache.num_rows
    return out
