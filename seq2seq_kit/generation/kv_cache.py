"""KV cache for incremental decoding, made by `BartForConditionalGeneration.new_cache`.

R = B * rows_per_input decoder rows (beams or samples); row r belongs to input r // rows_per_input.
Self-attention keys/values are preallocated per row and written in place at position `length`.
Cross-attention keys/values are computed once per *input* from the encoder output and shared by that
input's rows: a step views its queries [R, H, 1, Dh] as [B, H, rows_per_input, Dh] (rows as query positions).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class KVCache:
    self_k: list[torch.Tensor]          # per decoder layer: [R, H, max_length, Dh]
    self_v: list[torch.Tensor]          # per decoder layer: [R, H, max_length, Dh]
    cross_k: list[torch.Tensor]         # per decoder layer: [B, H, S, Dh]
    cross_v: list[torch.Tensor]         # per decoder layer: [B, H, S, Dh]
    cross_mask: torch.Tensor | None     # [B, 1, 1, S] bool, True = attend; None: no padding
    rows_per_input: int
    length: int = 0                     # tokens already in the self-attention cache

    @property
    def max_length(self) -> int:
        return self.self_k[0].shape[2] if self.self_k else 0

    @property
    def num_rows(self) -> int:
        return self.self_k[0].shape[0] if self.self_k else self.cross_k[0].shape[0] * self.rows_per_input

    @torch.inference_mode()
    def reorder(self, row_idx: torch.Tensor) -> None:
        """Row r continues the history of row row_idx[r] (beam search). row_idx: LongTensor [R].

        Rows must stay within their input's group (row_idx[r] // rows_per_input == r // rows_per_input),
        since the cross-attention keys/values are per input; this is not checked (it would sync the device).
        """
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        n = self.length
        for cache in (*self.self_k, *self.self_v):
            cache[:, :, :n].copy_(cache[:, :, :n].index_select(0, row_idx))   # [R, H, n, Dh]
