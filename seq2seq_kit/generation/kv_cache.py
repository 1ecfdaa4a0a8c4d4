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
    self_kv: torch.Tensor               # [layers, 2, R, H, max_length, Dh]: self-attention keys (0), values (1)
    cross_k: list[torch.Tensor]         # per decoder layer: [B, H, S, Dh]
    cross_v: list[torch.Tensor]         # per decoder layer: [B, H, S, Dh]
    cross_mask: torch.Tensor | None     # [B, 1, 1, S] bool, True = attend; None: no padding
    rows_per_input: int
    length: int = 0                     # tokens already in the self-attention cache

    @property
    def self_k(self) -> torch.Tensor:
        return self.self_kv[:, 0]       # [layers, R, H, max_length, Dh]; self_k[i] is layer i's, a view

    @property
    def self_v(self) -> torch.Tensor:
        return self.self_kv[:, 1]

    @property
    def max_length(self) -> int:
        return self.self_kv.shape[4]

    @property
    def num_rows(self) -> int:
        return self.self_kv.shape[2]

    @torch.inference_mode()
    def reorder(self, row_idx: torch.Tensor) -> None:
        """Row r continues the history of row row_idx[r] (beam search). row_idx: LongTensor [R].

        Rows must stay within their input's group (row_idx[r] // rows_per_input == r // rows_per_input),
        since the cross-attention keys/values are per input; this is not checked (it would sync the device).
        Every layer's keys and values move in one gather.
        """
        if row_idx.shape != (self.num_rows,):
            raise ValueError(f"row_idx must have shape [{self.num_rows}], got {list(row_idx.shape)}")
        filled = self.self_kv[..., :self.length, :]                           # [layers, 2, R, H, length, Dh]
        filled.copy_(filled.index_select(2, row_idx))
