"""Greedy search and multinomial sampling, token-exact with transformers 5.24 `GenerationMixin._sample`.

Rules: each step, logits -> float32 -> processors (on the raw logits; sampling adds temperature, top-k, top-p
after the others) -> argmax, or torch.multinomial(softmax(scores), 1) drawn from `generator` (None: the global
RNG, so torch.manual_seed reproduces transformers' draw). With EOS ids, a row that has finished gets
`pad_token_id` from then on; generation stops when every row has finished or the sequence reaches max_length
(start token included). Output: [R, T], T = 1 + steps taken; R = batch * num_return_sequences (inputs repeated).
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .logits_process import apply, draw


class SampleSearch:
    """Greedy (cfg.do_sample False) or sampled decoding from the start token, one step at a time: feed `tokens()`
    [R] to the model's step, hand its logits [R, V] to `advance`, until `done`; then `output()`.
    R = rows (inputs x num_return_sequences). All state stays on `device`; `advance` reads one flag back."""

    def __init__(self, cfg: GenerationConfig, processors: list, rows: int, device: torch.device, generator=None):
        self.cfg, self.processors, self.generator = cfg, processors, generator
        self.seq = torch.full((rows, cfg.max_length), cfg.decoder_start_token_id, dtype=torch.long, device=device)
        self.eos = torch.tensor(cfg.eos_token_id, device=device) if cfg.eos_token_id else None
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)
        self.step_scores = [] if cfg.output_scores else None
        self.cur_len = 1
        self.done = False

    def tokens(self) -> torch.Tensor:
        return self.seq[:, self.cur_len - 1]                                         # [R]

    def advance(self, logits: torch.Tensor) -> None:
        """Choose each row's next token from logits [R, V]. Rows never move, so there is no cache reorder."""
        cfg, cur_len = self.cfg, self.cur_len
        scores = apply(self.processors, self.seq[:, :cur_len], logits.float())
        if self.step_scores is not None:
            self.step_scores.append(scores)
        if cfg.do_sample:
            nxt = draw(scores, 1, self.generator).squeeze(1)
        else:
            nxt = torch.argmax(scores, dim=-1)                                        # [R]
        if self.eos is not None:
            nxt = torch.where(self.unfinished, nxt, cfg.pad_token_id)
            self.unfinished = self.unfinished & ~torch.isin(nxt, self.eos)
        self.seq[:, cur_len] = nxt
        self.cur_len = cur_len = cur_len + 1
        self.done = cur_len >= cfg.max_length or (self.eos is not None and not self.unfinished.any())   # 1 sync

    def output(self):
        """(sequences [R, T], None, per-step processed scores (tuple of [R, V]) or None)."""
        scores = tuple(self.step_scores) if self.step_scores is not None else None
        return self.seq[:, :self.cur_len], None, scores
