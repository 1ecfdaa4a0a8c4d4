"""The decoder's KV caches: what incremental decoding keeps between steps, and the one way a step writes to it.

Shapes: B inputs, S source tokens, R = B * rows_per_input decoder rows (beams or samples; row r belongs to input
r // rows_per_input), H heads, Dh head size, L = max_length self-attention slots.

Self-attention keys/values are preallocated, L slots per row, and written by `update(layer, kv)`, which also
returns what the attention reads, or, for a decoder prompt fed in one pass, by `extend(layer, kv)` into an
empty cache's first T slots (followed by `advance(T)`: the next step then continues as after T single steps).
Cross-attention keys/values are computed once per *input* (the model's `project_cross_kv`) and shared by that
input's rows: a step views its queries [R, H, 1, Dh] as [B, H, rows_per_input, Dh] (rows as query positions; a
prefill's [R, H, T, Dh] as [B, H, rows_per_input * T, Dh]).

A check of several tokens at once (prompt lookup) writes them after the cached ones with `extend(layer, kv)` and
keeps those it accepted with `crop(length)` (the eager cache only).

Two kinds, one interface (`position`, `update`, `extend`, `advance`, `reorder`):
  KVCache            eager: the position is the host int `length`; attention reads slots [:length + 1] unmasked.
  FixedShapeKVCache  for CUDA-graph capture: the position is a device tensor [P] (P = 1: every row at one position;
                     P = R: one position per row); attention reads all L slots with those past the row's position
                     masked, so shapes and addresses never change and a captured step can be replayed.
SlotStore, the continuous-batching engine's fixed-capacity caches, hands out FixedShapeKVCache views of itself.
"""

from __future__ import annotations

import contextlib

import torch

from .. import cpu_memory


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
        self.row_spare: torch.Tensor | None = None    # a CPU reorder's saved row, every layer: [layers, 2, H, L, Dh]
        self.layer_spare: torch.Tensor | None = None  # a device reorder's gathered rows, one layer: [2, R, H, L, Dh]

    @classmethod
    def empty(cls, *, layers: int, inputs: int, rows_per_input: int, heads: int, head_dim: int, max_length: int,
              source_length: int, padded: bool, dtype: torch.dtype, device: torch.device) -> KVCache:
        """A cache with nothing written: self-attention slots zeroed, cross-attention tensors to be filled."""
        R = inputs * rows_per_input
        # on the CPU its blocks get mappings of their own where the heap has no room (cpu_memory.own_mappings)
        with cpu_memory.own_mappings() if torch.device(device).type == "cpu" else contextlib.nullcontext():
            # zeros, not empty: the fixed-shape step multiplies unwritten value slots by a zero weight, and 0 * a
            # NaN left in uninitialised memory would be NaN
            self_kv = torch.zeros(layers, 2, R, heads, max_length, head_dim, dtype=dtype, device=device)
            cross = [torch.empty(inputs, heads, source_length, head_dim, dtype=dtype, device=device)
                     for _ in range(2 * layers)]
        mask = torch.empty(inputs, 1, 1, source_length, dtype=torch.bool, device=device) if padded else None
        return cls(self_kv, cross[:layers], cross[layers:], mask, rows_per_input)

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

    def input_queries(self, q: torch.Tensor, heads: int) -> torch.Tensor:
        """This cache's rows' cross-attention queries q [R, T, D] (T tokens per row: 1 in a step, a prompt's in a
        prefill) as its inputs' query positions [B, H, n * T, Dh] (n = rows_per_input; an input's rows are
        consecutive), against cross_k / cross_v [B, H, S, Dh]."""
        B = self.num_rows // self.rows_per_input
        return q.view(B, -1, heads, q.shape[2] // heads).transpose(1, 2)

    def row_outputs(self, y: torch.Tensor) -> torch.Tensor:
        """The cross-attention output per input [B, H, n * T, Dh] back as T tokens of each row [R, T, D]."""
        _, H, _, Dh = y.shape
        return y.transpose(1, 2).reshape(self.num_rows, -1, H * Dh)

    def update(self, layer: int, kv: torch.Tensor):
        """Write this step's keys and values kv [2, R, H, 1, Dh] (keys 0, values 1) of decoder layer `layer` at slot
        `length`, in one copy. Returns what its attention reads: keys, values [R, H, length + 1, Dh] and mask None."""
        cache, t = self.self_kv[layer], self.length                         # [2, R, H, L, Dh]
        cache[:, :, :, t] = kv[:, :, :, 0]
        return cache[0, :, :, :t + 1], cache[1, :, :, :t + 1], None

    def extend(self, layer: int, kv: torch.Tensor):
        """Write T tokens' keys and values kv [2, R, H, T, Dh] (keys 0, values 1) of decoder layer `layer` at slots
        length .. length + T - 1 (a decoder prompt from an empty cache; tokens checked in one pass:
        generation/prompt_lookup.py; advance(T) follows its last layer). Returns what their attention reads: keys,
        values [R, H, length + T, Dh]."""
        cache, t = self.self_kv[layer], self.length                         # [2, R, H, L, Dh]
        cache[..., t:t + kv.shape[3], :] = kv
        return cache[0, :, :, :t + kv.shape[3]], cache[1, :, :, :t + kv.shape[3]]

    def advance(self, tokens: int = 1) -> None:
        """After a step's (or a prefill's) last layer: the next step writes the slot after those `tokens`."""
        self.length += tokens

    def crop(self, length: int) -> None:
        """Keep the first `length` tokens (those of an extend that a check accepted): the next step writes slot
        `length`, and attention no longer reads the slots after it."""
        if not 0 <= length <= self.length:
            raise ValueError(f"crop keeps 0 to {self.length} tokens (what the cache holds), not {length}")
        self.length = length

    @torch.inference_mode()
    def reorder(self, row_idx: torch.Tensor) -> None:
        """Row r continues the history of row row_idx[r] (beam search). row_idx: LongTensor [R].

        Rows must stay within their input's group (row_idx[r] // rows_per_input == r // rows_per_input),
        since the cross-attention keys/values are per input; this is not checked (it would sync the device).
        On the CPU only the rows whose parent is another row are written, each once, straight from its parent, in
        an order that reads every row before overwriting it (copy_order; a one-row spare breaks a cycle, as two
        beams trading places): a beam step moves most of its rows, and a gather into a buffer and back moved each
        of them twice. On a device, where which rows moved is not read (a host read would sync), every row is
        gathered into a buffer of one layer's size, kept from the first reorder, and copied back.
        """
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        t = self.length
        if row_idx.device.type == "cpu":
            self.copy_rows(copy_order(row_idx.tolist()))
            return
        if self.layer_spare is None:
            self.layer_spare = torch.empty_like(self.self_kv[0])             # [2, R, H, L, Dh]
        moved = self.layer_spare[..., :t, :]                                      # [2, R, H, t, Dh]
        for layer in self.self_kv:                                           # [2, R, H, L, Dh]
            torch.index_select(layer[..., :t, :], 1, row_idx, out=moved)
            layer[..., :t, :].copy_(moved)

    def copy_rows(self, copies: list[tuple[int, int]]) -> None:
        """Each (row, source) of `copies` in order, all layers in one copy: row's written slots (the first `length`)
        become source's (SPARE: row_spare)."""
        if self.row_spare is None and any(SPARE in copy for copy in copies):
            self.row_spare = torch.empty_like(self.self_kv[:, :, 0])         # [layers, 2, H, L, Dh]
        t = self.length
        for row, source in copies:
            into = self.row_spare if row == SPARE else self.self_kv[:, :, row]   # [layers, 2, H, L, Dh]
            out_of = self.row_spare if source == SPARE else self.self_kv[:, :, source]
            into[..., :t, :].copy_(out_of[..., :t, :])


SPARE = -1      # copy_order's name for a one-row buffer


def copy_order(parents: list[int]) -> list[tuple[int, int]]:
    """Row copies (row, source) that leave row r holding what row parents[r] held, each moved row written once
    and every row read before it is overwritten. Rows in a cycle (beams trading places) wait on each other: one of
    them is first saved to SPARE, which its readers then read instead.
    [0, 0, 1, 2] -> [(3, 2), (2, 1), (1, 0)]; [1, 0] -> [(SPARE, 0), (0, 1), (1, SPARE)]."""
    pending = {row: parent for row, parent in enumerate(parents) if parent != row}
    order = []
    while pending:
        read = set(pending.values())
        free = [row for row in pending if row not in read]                  # nobody still needs what they hold
        if not free:                                                         # only cycles: save one row
            saved = next(iter(pending))
            order.append((SPARE, saved))
            pending = {row: SPARE if parent == saved else parent for row, parent in pending.items()}
            continue
        order += [(row, pending.pop(row)) for row in free]
    return order


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
        self.mask: torch.Tensor | None = None           # this step's [P, 1, 1, L], made by layer 0's update

    @property
    def position(self) -> torch.Tensor:
        return self.positions

    def update(self, layer: int, kv: torch.Tensor):
        """Write kv [2, R, H, 1, Dh] (keys, values) at each row's position, in one scatter. Returns keys, values
        [R, H, L, Dh] and the mask [P, 1, 1, L] (True = attend: slots up to the row's position)."""
        cache = self.self_kv[layer]                                         # [2, R, H, L, Dh]
        cache.scatter_(3, self.positions.view(1, -1, 1, 1, 1).expand_as(kv), kv)
        if layer == 0:                                  # one mask per step, which every layer reads
            self.mask = (self.slots <= self.positions[:, None])[:, None, None, :]     # [P, 1, 1, L]
        return cache[0], cache[1], self.mask

    def extend(self, layer: int, kv: torch.Tensor):
        """KVCache.extend from an empty cache only (a decoder prompt, before the graph's first step)."""
        if self.length:
            raise TypeError("extend writes an eager KVCache (its position a host int), or a FixedShapeKVCache (a CUDA "
                            "graph's) before its first step; past that it steps one token at a time")
        return super().extend(layer, kv)

    def crop(self, length: int) -> None:
        raise TypeError("crop cuts an eager KVCache; a FixedShapeKVCache (a CUDA graph's) steps one token at a time")

    def advance(self, tokens: int = 1) -> None:
        """The slot after those `tokens`; past the last one, the last slot again (steps after a search stopped,
        whose results nobody reads: generation/sync_free.py)."""
        super().advance(tokens)
        self.positions.add_(tokens).clamp_(max=self.max_length - 1)

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


def bucket(n: int, limit: int, least: int = 16) -> int:
    """The smallest power of two >= n, at least `least` and at most limit: few shapes, so few CUDA graphs (the
    SlotStore's views) and few allocation sizes (its reorder scratch)."""
    return min(limit, max(least, 1 << (n - 1).bit_length()))


class SlotStore:
    """The continuous-batching engine's fixed-capacity caches: N row slots, each with its own self-attention slots
    (L) and a device position, and M = N input slots, each with one input's cross-attention keys/values (S source
    slots) shared by that input's rows. A step runs on `view(source_length, length, inputs, group)`: a SlotView
    over every row's first `length` self slots and the first `inputs` input slots' first `source_length` cross
    slots, each input's rows gathered as `group` query positions (rows_per_input 1 for the self-attention, one
    position per row). Its shapes depend only on those four buckets, so a CUDA graph per bucket set replays the
    step for any mix of requests. Rows not in use are stepped too, and ignored: position 0, their cross attention on
    input slot 0's first query (an unused input slot attends to source slot 0 only).

    Padding the source to a bucket adds exact zeros to the attention (masked positions get zero weight), but the
    longer reduction rounds differently: logits equal the one-request cache's to float rounding (about 1e-7 in
    fp32), not bit for bit. Each input's keys/values are read once per step, whatever its number of rows (beams).
    """

    def __init__(self, *, layers: int, rows: int, heads: int, head_dim: int, max_length: int, max_source: int,
                 dtype: torch.dtype, device: torch.device):
        self.self_kv = torch.zeros(layers, 2, rows, heads, max_length, head_dim, dtype=dtype, device=device)
        self.cross_k = torch.zeros(layers, rows, heads, max_source, head_dim, dtype=dtype, device=device)
        self.cross_v = torch.zeros_like(self.cross_k)         # [layers, M, H, S, Dh]: per input slot
        self.cross_mask = torch.zeros(rows, 1, 1, max_source, dtype=torch.bool, device=device)   # True = attend
        self.cross_mask[..., 0] = True                      # an unused input attends to slot 0 (no all-masked NaN)
        self.positions = torch.zeros(rows, dtype=torch.long, device=device)       # [N] the slot each row writes next
        self.in_use = torch.zeros(rows, dtype=torch.long, device=device)          # [N] 1 = a request's row
        self.input_rows = torch.full((rows, rows), rows, dtype=torch.long, device=device)   # [M, N] rows, N = none
        self.row_input = torch.zeros(rows, dtype=torch.long, device=device)       # [N] each row's input slot
        self.row_offset = torch.zeros(rows, dtype=torch.long, device=device)      # [N] its place among that input's
        self.views: dict[tuple[int, int, int, int], SlotView] = {}
        self.scratch: torch.Tensor | None = None      # [layers, 2, N, H, <= L, Dh]: where `reorder` gathers

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    @property
    def max_length(self) -> int:
        return self.self_kv.shape[4]

    @property
    def max_source(self) -> int:
        return self.cross_k.shape[3]

    def view(self, source_length: int, length: int, inputs: int, group: int) -> SlotView:
        """The cache a step over all N rows uses: input slots [:inputs] with cross slots [:source_length], each
        input's rows as `group` query positions, self slots [:length] (views of this store, the same object for
        the same buckets: what a captured graph reads)."""
        key = (source_length, length, inputs, group)
        if key not in self.views:
            layers = self.cross_k.shape[0]
            self.views[key] = SlotView(self, self.self_kv[..., :length, :],
                                       [self.cross_k[i][:inputs, :, :source_length] for i in range(layers)],
                                       [self.cross_v[i][:inputs, :, :source_length] for i in range(layers)],
                                       self.cross_mask[:inputs, ..., :source_length], group)
        return self.views[key]

    @torch.no_grad()
    def fill(self, rows: torch.Tensor, input_slot: int, cache: KVCache) -> None:
        """Give input slot `input_slot` the cross-attention keys/values of a one-input cache (B = 1), and rows
        `rows` (long [k]) to that input, each starting from the cache's first row: its cache.length self-attention
        slots written so far (a decoder prompt's tokens but the last; 0: none), its next position cache.length."""
        n = cache.length
        if n:                                           # [layers, 2, 1, H, n, Dh] -> every row [layers, 2, k, H, n, Dh]
            self.self_kv[:, :, rows, :, :n] = cache.self_kv[:, :, :1, :, :n]
        S = cache.cross_k[0].shape[2]
        for i, (k, v) in enumerate(zip(cache.cross_k, cache.cross_v)):      # each [1, H, S, Dh]
            self.cross_k[i, input_slot, :, :S] = k[0]
            self.cross_v[i, input_slot, :, :S] = v[0]
        mask = torch.zeros(self.max_source, dtype=torch.bool, device=rows.device)
        mask[:S] = True if cache.cross_mask is None else cache.cross_mask[0, 0, 0]
        self.cross_mask[input_slot] = mask.view(1, 1, -1)
        self.input_rows[input_slot, :len(rows)] = rows
        self.row_input[rows] = input_slot
        self.row_offset[rows] = torch.arange(len(rows), device=rows.device)
        self.positions[rows] = n
        self.in_use[rows] = 1

    @torch.no_grad()
    def free(self, rows: torch.Tensor, input_slot: int) -> None:
        """Rows `rows` and their input slot leave: the rows stepped from now on at position 0, the input slot
        attending to source slot 0 with no rows."""
        self.in_use[rows] = 0
        self.positions[rows] = 0
        self.row_input[rows] = 0
        self.row_offset[rows] = 0
        self.input_rows[input_slot] = self.num_rows
        self.cross_mask[input_slot] = False
        self.cross_mask[input_slot, ..., 0] = True

    @torch.no_grad()
    def advance(self) -> None:
        """After a step: the rows in use move to their next slot; past the last one, the last slot again (a
        finished request's one frozen step, whose results nobody reads: engine/batch.py's fixed capacity)."""
        self.positions.add_(self.in_use).clamp_(max=self.max_length - 1)

    @torch.no_grad()
    def reorder(self, rows: torch.Tensor, parents: torch.Tensor, length: int) -> None:
        """Rows `rows` (long [k]) continue the histories of rows `parents` (long [k]; beam search within one
        request), over their first `length` self-attention slots: gathered into a kept scratch buffer, then copied
        back. (A gather into fresh memory would grow with `length` at every step, and the CUDA caching allocator
        keeps a block of each size it hands out: ~ the sum over steps, tests/test_allocations.py.)"""
        if self.scratch is None or self.scratch.shape[4] < length:                   # capacity doubles: a few sizes
            self.scratch = self.self_kv.new_empty(*self.self_kv.shape[:4], bucket(length, self.max_length),
                                                  self.self_kv.shape[5])
        filled = self.self_kv[..., :length, :]                                        # [layers, 2, N, H, length, Dh]
        moved = self.scratch[:, :, :len(rows), :, :length]                            # [layers, 2, k, H, length, Dh]
        torch.index_select(filled, 2, parents, out=moved)
        filled.index_copy_(2, rows, moved)


class SlotView(FixedShapeKVCache):
    """A SlotStore's cache for one step over all its N rows (see SlotStore): self-attention per row at the row's
    own position; cross-attention per input slot, its rows' queries gathered into `group` query positions (a
    missing row's query is zeros) and the outputs scattered back to the rows."""

    def __init__(self, store: SlotStore, self_kv, cross_k, cross_v, cross_mask, group: int):
        super().__init__(self_kv, cross_k, cross_v, cross_mask, rows_per_input=1)
        self.positions = store.positions                                  # [N]: one position per row
        self.store, self.group = store, group

    def input_queries(self, q: torch.Tensor, heads: int) -> torch.Tensor:
        """q [N, 1, D] -> [inputs, H, group, Dh]: input slot m's rows in order, zeros past them."""
        inputs = self.cross_k[0].shape[0]
        padded = torch.cat((q[:, 0], q.new_zeros(1, q.shape[2])))                     # [N + 1, D]
        picked = padded[self.store.input_rows[:inputs, :self.group]]                  # [inputs, group, D]
        return picked.view(inputs, self.group, heads, -1).transpose(1, 2)

    def row_outputs(self, y: torch.Tensor) -> torch.Tensor:
        """[inputs, H, group, Dh] -> each row's output [N, 1, D] (a free row gets input slot 0's first)."""
        inputs, H, group, Dh = y.shape
        flat = y.transpose(1, 2).reshape(inputs * group, H * Dh)
        return flat[self.store.row_input * group + self.store.row_offset][:, None]
