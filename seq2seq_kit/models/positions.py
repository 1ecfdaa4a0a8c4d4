"""Position embeddings of every family (config.family.positions, see seq2seq_kit/families.py), as one module.

  "learned"         BART, mBART: an nn.Embedding of max_position_embeddings + 2 rows, read from row 2 on
                    (fairseq's padding offset); `weight` is a checkpoint parameter.
  "sinusoidal"      Marian, Pegasus: a fixed table of max_position_embeddings rows, sin features then cos
                    features (transformers' MarianSinusoidalPositionalEmbedding.create_weight), read from row 0.
  "sinusoidal_pad"  M2M100 / NLLB: fairseq's fixed table of pad + max_position_embeddings + 1 rows (+ 2 with pad
                    1, as every published checkpoint; transformers grows its table for a larger pad) with row pad zeroed
                    (M2M100SinusoidalPositionalEmbedding.get_embedding); a token's row is pad + its count among
                    the non-pad tokens of its sequence, a pad token's is pad (zeros). Left padding shifts them.
The fixed tables are buffers computed here; a checkpoint that carries one is loaded over it, as transformers does.
During incremental decoding a row's position is the cache's (models/kv_cache.py): the token at cache position t
has row offset + t, or, with "sinusoidal_pad", pad when it is the pad token.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from ..config import BartConfig
    from .kv_cache import KVCache

LEARNED_OFFSET = 2


def marian_table(rows: int, dim: int) -> torch.Tensor:
    """[rows, dim] float32: sin(pos / 10000^(2i/dim)) in the first half, cos in the second, computed in float64 by
    numpy exactly as transformers does (so the float32 table is bit-identical)."""
    denominators = np.array([np.power(10000, 2 * (j // 2) / dim) for j in range(dim)])    # [dim]
    angles = np.arange(rows)[:, None] / denominators[None, :]                              # [rows, dim]
    out = torch.empty(rows, dim)
    half = dim // 2 if dim % 2 == 0 else dim // 2 + 1
    out[:, :half] = torch.from_numpy(np.sin(angles[:, 0::2])).float()
    out[:, half:] = torch.from_numpy(np.cos(angles[:, 1::2])).float()
    return out


def fairseq_table(rows: int, dim: int, padding_idx: int) -> torch.Tensor:
    """[rows, dim] float32 as M2M100SinusoidalPositionalEmbedding.get_embedding computes it: sin half, cos half,
    a zero column for an odd dim, row padding_idx zeroed."""
    half = dim // 2
    step = math.log(10000) / (half - 1)
    freqs = torch.exp(torch.arange(half, dtype=torch.int64).float() * -step)
    angles = torch.arange(rows, dtype=torch.int64).float().unsqueeze(1) * freqs.unsqueeze(0)
    table = torch.cat([torch.sin(angles), torch.cos(angles)], dim=1).view(rows, -1)
    if dim % 2 == 1:
        table = torch.cat([table, torch.zeros(rows, 1)], dim=1)
    table[padding_idx, :] = 0
    return table


class Positions(nn.Module):
    """`weight` [rows, D]: a parameter (learned) or a buffer (fixed tables). forward(ids [B, T]) -> the positions to
    add to their embeddings ([T, D], or [B, T, D] when they depend on padding); step(ids [R], caches) -> [R or 1, 1, D]."""

    def __init__(self, config: BartConfig):
        super().__init__()
        self.kind, D, P = config.family.positions, config.d_model, config.max_position_embeddings
        self.pad = config.pad_token_id if self.kind == "sinusoidal_pad" else None   # set: positions skip pad tokens
        if self.kind == "learned":
            self.offset = LEARNED_OFFSET
            self.weight = nn.Parameter(torch.empty(P + LEARNED_OFFSET, D))
        else:
            self.offset = 0 if self.pad is None else self.pad + 1
            self.register_buffer("weight", torch.empty(P if self.pad is None else self.pad + P + 1, D))
            if self.weight.device.type != "meta":
                self.reset_table()
        if self.kind == "learned" and self.weight.device.type != "meta":
            nn.init.normal_(self.weight)

    @property
    def fixed(self) -> bool:
        """A computed table (not a checkpoint parameter; optional in checkpoints, saved only for Pegasus)."""
        return self.kind != "learned"

    @torch.no_grad()
    def reset_table(self) -> None:
        """Fill a fixed table (after allocation on the meta device, or when a checkpoint lacks it)."""
        rows, dim = self.weight.shape
        table = marian_table(rows, dim) if self.pad is None else fairseq_table(rows, dim, self.pad)
        self.weight.copy_(table)

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        T = ids.shape[1]                                                    # ids [B, T]
        if self.pad is None:
            return self.weight[self.offset:self.offset + T]                 # [T, D]
        keep = ids.ne(self.pad)
        return self.weight[keep.cumsum(dim=1) * keep + self.pad]            # [B, T, D]

    def extend(self, ids: torch.Tensor, start: int) -> torch.Tensor:
        """ids [R, T] at decoder positions start .. start + T - 1 (after `start` cached tokens) -> [T, D], or
        [R, T, D] where a pad token's row is zeros (as step's); from the start (a decoder prompt), as forward
        numbers them."""
        if start == 0:
            return self(ids)
        pos = self.weight[self.offset + start:self.offset + start + ids.shape[1]]       # [T, D]
        if self.pad is not None:
            pos = pos * ids.ne(self.pad)[..., None].to(pos.dtype)                       # [R, T, D]
        return pos

    def step(self, ids: torch.Tensor, caches: list[KVCache]) -> torch.Tensor:
        """Each cache's rows at its own position (a host int, or a device tensor [P] on a fixed-shape cache)."""
        D = self.weight.shape[1]
        pos = [self.weight[self.offset + c.position].view(-1, 1, D) for c in caches]
        if len(caches) > 1:
            pos = [p.expand(c.num_rows, 1, D) for p, c in zip(pos, caches)]
        pos = pos[0] if len(pos) == 1 else torch.cat(pos)                   # [1 or R, 1, D]
        if self.pad is not None:                                            # a pad token's row is zeros
            pos = pos * ids.ne(self.pad).view(-1, 1, 1).to(pos.dtype)
        return pos
