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
from .logits_process import apply
from .protocol import Cache, Step


def sample(step: Step, cache: Cache, cfg: GenerationConfig, processors: list, rows: int, device: torch.device,
           generator=None):
    """Greedy (cfg.do_sample False) or sampled decoding from the start token with the model's unchecked
    step(input_ids [R], cache) -> logits [R, V] (generation/protocol.py), on `device`.
    Returns (sequences [R, T], per-step processed scores (tuple of [R, V]) or None)."""
    seq = torch.full((rows, cfg.max_length), cfg.decoder_start_token_id, dtype=torch.long, device=device)
    eos = torch.tensor(cfg.eos_token_id, device=device) if cfg.eos_token_id else None
    unfinished = torch.ones(rows, dtype=torch.bool, device=device)
    step_scores = [] if cfg.output_scores else None

    cur_len = 1
    while True:
        logits = step(seq[:, cur_len - 1], cache).float()                           # [R, V]
        scores = apply(processors, seq[:, :cur_len], logits)
        if step_scores is not None:
            step_scores.append(scores)
        if cfg.do_sample:
            nxt = torch.multinomial(scores.softmax(dim=-1), num_samples=1, generator=generator).squeeze(1)
        else:
            nxt = torch.argmax(scores, dim=-1)                                        # [R]
        if eos is not None:
            nxt = torch.where(unfinished, nxt, cfg.pad_token_id)
            unfinished = unfinished & ~torch.isin(nxt, eos)
        seq[:, cur_len] = nxt
        cur_len += 1
        if cur_len >= cfg.max_length or (eos is not None and not unfinished.any()):   # one host transfer
            break
    return seq[:, :cur_len], tuple(step_scores) if step_scores is not None else None
