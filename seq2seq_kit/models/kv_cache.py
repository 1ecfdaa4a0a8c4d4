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
SlotStore, the continuous-batching engine's fixed-capacity caches, hands out FixedShapeKVCache views of itself.
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
        self.spare: torch.Tensor | None = None  # like self_kv: where `reorder` gathers into (then the two swap)

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
        Every layer's keys and values move in one gather, into a second buffer of the same shape that then becomes
        the cache (allocated at the first reorder and kept: a gather into fresh memory each step pays a page fault
        per 4 KiB, which at 128 rows cost more than the gather itself).
        """
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        if self.spare is None:
            self.spare = torch.empty_like(self.self_kv)      # slots past `length` are written before they are read
        t = self.length                                                      # each [layers, 2, R, H, t, Dh]:
        torch.index_select(self.self_kv[..., :t, :], 2, row_idx, out=self.spare[..., :t, :])
        self.self_kv, self.spare = self.spare, self.self_kv


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


class SlotStore:
    """The continuous-batching engine's fixed-capacity caches: N row slots, each with its own self-attention slots
    (L) and its own cross-attention keys/values (S source slots; an input's keys/values are copied into each of its
    rows' slots), and a device position per row. A step runs on `view(source_length, length)`, a FixedShapeKVCache
    over every row's first `source_length` cross slots and `length` self slots (rows_per_input 1, one position per
    row): its shapes depend only on those two buckets, so a CUDA graph per bucket pair replays the step for any mix
    of requests. Rows not in use are stepped too, and ignored: position 0, their cross attention on slot 0 only.

    Padding the source to a bucket adds exact zeros to the attention (masked positions get zero weight), but the
    longer reduction rounds differently: logits equal the one-request cache's to float rounding (about 1e-7 in
    fp32), not bit for bit. Each row reads its input's keys/values on its own (beams read them once per beam).
    """

    def __init__(self, *, layers: int, rows: int, heads: int, head_dim: int, max_length: int, max_source: int,
                 dtype: torch.dtype, device: torch.device):
        self.self_kv = torch.zeros(layers, 2, rows, heads, max_length, head_dim, dtype=dtype, device=device)
        self.cross_k = torch.zeros(layers, rows, heads, max_source, head_dim, dtype=dtype, device=device)
        self.cross_v = torch.zeros_like(self.cross_k)
        self.cross_mask = torch.zeros(rows, 1, 1, max_source, dtype=torch.bool, device=device)   # True = attend
        self.cross_mask[..., 0] = True                      # a free row attends to slot 0 (no all-masked NaN)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)       # [N] the slot each row writes next
        self.in_use = torch.zeros(rows, dtype=torch.long, device=device)          # [N] 1 = a request's row
        self.views: dict[tuple[int, int], FixedShapeKVCache] = {}

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    @property
    def max_length(self) -> int:
        return self.self_kv.shape[4]

    @property
    def max_source(self) -> int:
        return self.cross_k.shape[3]

    def view(self, source_length: int, length: int) -> FixedShapeKVCache:
        """The cache a step over all N rows uses: cross slots [:source_length], self slots [:length] (views of this
        store, the same objects for the same pair: what a captured graph reads)."""
        key = (source_length, length)
        if key not in self.views:
            layers = self.cross_k.shape[0]
            cache = FixedShapeKVCache(self.self_kv[..., :length, :],
                                      [self.cross_k[i][:, :, :source_length] for i in range(layers)],
                                      [self.cross_v[i][:, :, :source_length] for i in range(layers)],
                                      self.cross_mask[..., :source_length], rows_per_input=1)
            cache.positions = self.positions                                  # [N]: one position per row
            self.views[key] = cache
        return self.views[key]

    @torch.no_grad()
    def fill(self, slots: torch.Tensor, cache: KVCache) -> None:
        """Give rows `slots` (long [k]) the cross-attention keys/values of a one-input cache (B = 1) and start
        them at position 0."""
        S = cache.cross_k[0].shape[2]
        for i, (k, v) in enumerate(zip(cache.cross_k, cache.cross_v)):      # each [1, H, S, Dh]
            self.cross_k[i, slots, :, :S] = k
            self.cross_v[i, slots, :, :S] = v
        mask = torch.zeros(self.max_source, dtype=torch.bool, device=slots.device)
        mask[:S] = True if cache.cross_mask is None else cache.cross_mask[0, 0, 0]
        self.cross_mask[slots] = mask.view(1, 1, -1)
        self.positions[slots] = 0
        self.in_use[slots] = 1

    @torch.no_grad()
    def free(self, slots: torch.Tensor) -> None:
        """Rows `slots` leave: stepped from now on at position 0, attending to source slot 0."""
        self.in_use[slots] = 0
        self.positions[slots] = 0
        self.cross_mask[slots] = False
        self.cross_mask[slots, ..., 0] = True

    @torch.no_grad()
    def advance(self) -> None:
        """After a step: the rows in use move to their next slot."""
        self.positions.add_(self.in_use)

    @torch.no_grad()
    def reorder(self, rows: torch.Tensor, parents: torch.Tensor, length: int) -> None:
        """Rows `rows` (long [k]) continue the histories of rows `parents` (long [k]; beam search within one
        request), over their first `length` self-attention slots."""
        self.self_kv[:, :, rows, :, :length] = self.self_kv[:, :, parents, :, :length]
