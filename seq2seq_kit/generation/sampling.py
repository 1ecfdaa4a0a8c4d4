"""Greedy search and multinomial sampling, token-exact with transformers 5.25 `GenerationMixin._sample`.

Rules: each step, logits -> float32 -> processors (on the raw logits; sampling adds temperature, top-k, top-p
after the others) -> argmax, or torch.multinomial(softmax(scores), 1) drawn from `generator` (None: the global
RNG, so torch.manual_seed reproduces transformers' draw). A row finishes at an EOS id or when its text ends in
one of stop_strings (stop_strings.py); with EOS ids, a row that has finished gets `pad_token_id` from then on
(without, it goes on writing tokens, as there); generation stops when every row has finished or the sequence
reaches max_length (start token included). Output: [R, T], T = P + steps taken (P: the decoder prompt, 1 = the
start token alone); R = batch * num_return_sequences (inputs repeated).
The step runs on the device at fixed shapes, cur_len included (`advance_on_device`, what a CUDA graph captures;
once stopped, further steps change nothing); the eager loop's `advance` reads its flags back once per step.
"""

from __future__ import annotations

import torch

from . import screening
from .config import GenerationConfig
from .logits_process import apply
from .search import SearchProgress, widen


class SampleSearch(SearchProgress):
    """Greedy (cfg.do_sample False) or sampled decoding from the start token, one step at a time: feed `tokens()`
    [R] to the model's step, hand its logits [R, V] to `advance`, until `done`; then `output()`.
    R = rows (inputs x num_return_sequences). All state stays on `device`; `advance` reads its flags back,
    `advance_on_device` none (`going` is the device flag). Independent (SearchProgress): each input stops as it
    would alone, at its own length and max_length."""

    def __init__(self, cfg: GenerationConfig, processors: list, prompt: torch.Tensor, device: torch.device,
                 generator=None, independent: bool = False, stop_strings=None):
        n = cfg.num_return_sequences                                  # prompt [B, P]: each input's first tokens
        super().__init__(cfg, processors, prompt.shape[0], n, device, generator, independent, prompt.shape[1],
                         stop_strings)
        rows = self.rows
        self.seq = torch.full((rows, cfg.max_length), cfg.decoder_start_token_id, dtype=torch.long, device=device)
        self.seq[:, :prompt.shape[1]] = prompt.repeat_interleave(n, dim=0)                           # [R, P]
        # [] (no EOS id) still pads a row after it ends (a stop string), as transformers' EOS criterion does
        self.eos = None if cfg.eos_token_id is None else torch.tensor(cfg.eos_token_id, dtype=torch.long, device=device)
        self.unfinished = torch.ones(rows, dtype=torch.bool, device=device)

    @property
    def screenable(self) -> bool:
        """Whether a step may hand advance ScreenedLogits (protocol.py) instead of logits: greedy, no scores or logits
        recorded, and processors that map each token's score alone (generation/screening.py)."""
        return not self.cfg.do_sample and not self.recorded and screening.screenable(self.processors)

    def tokens(self) -> torch.Tensor:
        return self.seq.gather(1, self.per_row(self.cur_len) - 1)[:, 0]                  # [R]

    def state(self) -> list[torch.Tensor]:
        return super().state() + [self.seq, self.unfinished]

    def load_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        self.seq, self.unfinished = super().load_state(tensors)
        return []

    def advance_on_device(self, logits, device_length: bool = False) -> None:
        """One step from logits [R, V] (a tensor, or a greedy search's protocol.ScreenedLogits: see screenable), no
        host read (but ScreenedLogits' one or few); device_length: the processors read the device cur_len.
        Rows never move: no cache reorder (None)."""
        active = self.active()                                                        # [] or [B, 1]
        row_active = self.per_row(active)[:, 0] if active.dim() else active          # [] or [R]
        length = self.processor_length(device_length)
        if not isinstance(logits, torch.Tensor):
            nxt = screening.pick(logits, self.processors, self.seq, length)          # [R]
        else:
            self.record_logits(logits)
            with torch.inference_mode():  # the processors may write the logits in place: the model's inference tensor
                scores = apply(self.processors, self.seq, length, logits.float())
            self.record("scores", scores)
            nxt = self.sample(scores, 1).squeeze(1) if self.cfg.do_sample else torch.argmax(scores, dim=-1)
        self.take_on_device(nxt, row_active)

    def advance_drawn(self, logits: torch.Tensor, scores: torch.Tensor, token: torch.Tensor) -> None:
        """One step of generate's batch whose token [R] was drawn already, from scores [R, V] processed from the
        model's logits [R, V] (both recorded as advance records them): prompt lookup's sampled pass, which draws
        every position at once, as transformers does. Reads the stop flag, as advance."""
        self.record_logits(logits)
        self.record("scores", scores)
        self.take_on_device(token, self.going)
        self.done = not self.going.item()

    def take_on_device(self, nxt: torch.Tensor, row_active: torch.Tensor) -> None:
        """The rest of a step once its tokens nxt [R] are chosen: rows that ended take the pad, tokens written,
        rows ended by EOS or a stop string, the stop flag. row_active: [] or [R], the rows this step advances."""
        cfg, n = self.cfg, self.rows_per_input
        unfinished = self.unfinished & row_active
        if self.eos is not None:
            nxt = torch.where(unfinished, nxt, cfg.pad_token_id)
            ended = (nxt[:, None] == self.eos).any(dim=-1)            # isin, which may sync a GPU (many EOS ids)
            torch.bitwise_and(unfinished, ~ended, out=self.unfinished)                        # state kept in place
        slot = torch.minimum(self.per_row(self.cur_len), self.per_row(self.max_len) - 1)     # [R, 1]
        self.seq.scatter_(1, slot, torch.where(row_active, nxt, self.seq.gather(1, slot)[:, 0])[:, None])
        if self.stop_strings is not None:               # transformers: without EOS ids, no pad follows the end
            ended = self.stop_strings.ended(self.seq, slot) & row_active                     # [R]
            torch.bitwise_and(self.unfinished, ~ended, out=self.unfinished)
        below_max = self.cur_len + 1 < self.max_len                                   # [B, 1] after this step
        ends = self.eos is not None or self.stop_strings is not None
        left = self.unfinished.view(self.batch, n).any(dim=1, keepdim=True) if ends else None
        if self.independent:                    # each input goes on while it would alone: [B, 1]
            going = below_max if left is None else below_max & left
        else:                                   # generate's batch: one length, any row unfinished: []
            going = below_max.all() if left is None else below_max.all() & left.any()
        self.stop(going)

    def join(self, other: SampleSearch) -> None:
        """SearchProgress.join, with the rows' sequences (padded to the longer max_length) and flags."""
        super().join(other)
        width = max(self.seq.shape[1], other.seq.shape[1])
        self.seq = torch.cat([widen(s, width, self.cfg.decoder_start_token_id) for s in (self.seq, other.seq)])
        self.unfinished = torch.cat((self.unfinished, other.unfinished))

    def keep(self, inputs: list[int]) -> torch.Tensor:
        index = super().keep(inputs)
        rows = self.input_rows(index)
        self.seq, self.unfinished = self.seq.index_select(0, rows), self.unfinished.index_select(0, rows)
        return index

    def put(self, slot: int, other: SampleSearch) -> None:
        """SearchProgress.put, with the rows' sequences (padded with the start token) and flags."""
        super().put(slot, other)
        rows, width = self.slot_rows(slot), other.seq.shape[1]
        self.seq[rows, width:] = self.cfg.decoder_start_token_id
        self.seq[rows, :width] = other.seq
        self.unfinished[rows] = other.unfinished

    def output(self, inputs: list[int] | None = None):
        """(sequences [R, T], None, None); inputs: only these inputs' rows (independent searches; None: all)."""
        seq, length = self.seq, int(self.cur_len.max())
        if inputs is not None:
            index = self.input_index(inputs)
            seq, length = seq.index_select(0, self.input_rows(index)), int(self.cur_len[index].max())
        return seq[:, :length], None, None
