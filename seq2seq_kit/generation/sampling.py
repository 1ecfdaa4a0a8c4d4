"""Greedy search and multinomial sampling, token-exact with transformers 5.24 `GenerationMixin._sample`.

Rules: each step, logits -> float32 -> processors (on the raw logits; sampling adds temperature, top-k, top-p
after the others) -> argmax, or torch.multinomial(softmax(scores), 1) drawn from `generator` (None: the global
RNG, so torch.manual_seed reproduces transformers' draw). With EOS ids, a row that has finished gets
`pad_token_id` from then on; generation stops when every row has finished or the sequence reaches max_length
(start token included). Output: [R, T], T = 1 + steps taken; R = batch * num_return_sequences (inputs repeated).
The step runs on the device at fixed shapes, cur_len included (`advance_on_device`, what a CUDA graph captures;
once stopped, further steps change nothing); the eager loop's `advance` reads its flags back once per step.
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .logits_process import apply, draw
from .sync_free import SearchProgress


class SampleSearch(SearchProgress):
    """Greedy (cfg.do_sample False) or sampled decoding from the start token, one step at a time: feed `tokens()`
    [R] to the model's step, hand its logits [R, V] to `advance`, until `done`; then `output()`.
    R = rows (inputs x num_return_sequences). All state stays on `device`; `advance` reads its flags back,
    `advance_on_device` none (`going` is the device flag)."""

    def __init__(self, cfg: GenerationConfig, processors: list, rows: int, device: torch.device, generator=None):
        super().__init__(cfg, device)
        self.processors, self.generator = processors, generator
        self.seq = torch.full((rows, cfg.max_length), cfg.decoder_start_token_id, dtype=torch.long, device=device)
        self.eos = torch.tensor(cfg.eos_token_id, device=device) if cfg.eos_token_id else None
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)

    def tokens(self) -> torch.Tensor:
        return self.seq.index_select(1, self.cur_len[None] - 1)[:, 0]                 # [R]

    def state(self) -> list[torch.Tensor]:
        return super().state() + [self.seq, self.unfinished]

    def load_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        self.seq, self.unfinished = super().load_state(tensors)
        return []

    def advance_on_device(self, logits: torch.Tensor, device_length: bool = False) -> None:
        """One step from logits [R, V], no host read; device_length: the processors read the device cur_len.
        Rows never move: no cache reorder (None)."""
        cfg, cur_len, active = self.cfg, self.cur_len, self.going
        with torch.inference_mode():      # the processors may write the logits in place: the model's inference tensor
            scores = apply(self.processors, self.seq, self.processor_length(device_length), logits.float())
        if self.step_scores is not None:
            self.step_scores.append(scores)
        if cfg.do_sample:
            nxt = draw(scores, 1, self.generator).squeeze(1)
        else:
            nxt = torch.argmax(scores, dim=-1)                                        # [R]
        unfinished = self.unfinished & active
        if self.eos is not None:
            nxt = torch.where(unfinished, nxt, cfg.pad_token_id)
            self.unfinished = unfinished & ~torch.isin(nxt, self.eos)
        slot = cur_len.clamp(max=cfg.max_length - 1)[None]                            # [1]
        self.seq.index_copy_(1, slot, torch.where(active, nxt, self.seq.index_select(1, slot)[:, 0])[:, None])
        self.cur_len = cur_len = cur_len + active.long()
        going = cur_len < cfg.max_length
        if self.eos is not None:
            going = going & self.unfinished.any()
        self.going = active & going
        self.steps += 1

    def output(self):
        """(sequences [R, T], None, per-step processed scores (tuple of [R, V]) or None)."""
        return self.seq[:, :int(self.cur_len)], None, self.recorded_scores()
