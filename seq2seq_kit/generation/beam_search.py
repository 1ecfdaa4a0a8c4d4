"""Beam search (and beam sampling), token-exact with transformers 5.25 `GenerationMixin._beam_search`.

The rules, read off the oracle (transformers/generation/utils.py, logits_process.py, stopping_criteria.py):

Lengths. The decoder prompt is the start token (prompt_len = 1) or generate's decoder_input_ids
  (decoder_prompt.py); cur_len starts at prompt_len. `max_length` and `min_length` count the prompt
  (max_new_tokens -> max_length = max_new_tokens + prompt_len, see config.py).
Scores. Each step: logits -> float32 -> log_softmax -> processors (on the log-probs, input_ids = the running
  sequences [B*K, cur_len]) -> + running beam score. Processors in transformers' `_get_logits_processor` order
  (logits_process.build_processors has them all); the common ones: repetition penalty, no-repeat n-gram, encoder
  no-repeat n-gram, bad words, min length, forced BOS (cur_len == 1), forced EOS (cur_len == max_length - 1),
  inf/nan removal, [sampling: temperature, top-k, top-p], [renormalize: log_softmax]. `output_scores` records the
  processed log-probs (before adding beam scores), `output_logits` the model's logits.
Initial beam scores: 0 for beam 0 and -1e9 for beams 1..K-1, so the first step only expands beam 0.
Candidates: top-k over the flattened [B, K*V] accumulated scores with k = max(2, 1 + n_eos) * K
  (beam sampling: multinomial without replacement over softmax of the same, then sorted descending).
  beam = index // V, token = index % V. A candidate "hits the stopping criteria" when its token is an EOS id,
  its text ends in one of stop_strings (stop_strings.py), or cur_len + 1 >= max_length.
Running beams for the next step: the top K candidates after adding -1e9 to those that hit the criteria.
  The cache is reordered by their parent rows (batch * K + beam).
Finished hypotheses (K slots per input, scores start at -1e9): a candidate may enter only if it is among
  the first K candidates and hit the criteria. Its score is sum_logprobs / (cur_len + 1 - prompt_len) **
  length_penalty, i.e. the number of generated tokens, EOS included, start token excluded. -1e9 is added
  (float32, in this order) when the input's slots are all finished and early_stopping is True, when the early-stop
  heuristic is satisfied, and when the candidate did not finish; then the best K of (slots + candidates) stay.
Early-stop heuristic (after cur_len += 1), per input, sticky once satisfied:
  best possible = best running score / L ** length_penalty, with L = max_length - prompt_len when
  early_stopping == "never" and length_penalty > 0, else cur_len - prompt_len; "unsatisfied" while
  best possible > the worst finished score (-1e9 if a slot is still empty).
Stop when: no input can improve (heuristic), or early_stopping is True and every slot of every input is
  finished, or every candidate hit the criteria (max_length).
Output: the first num_return_sequences slots of each input (best first), batch-major [B * nrs, T]; T = 1 + the
  longest returned hypothesis; positions after a hypothesis' end hold `pad_token_id` (eos_token_id[0] when
  pad_token_id is 0 or unset; -1 without EOS ids). `sequences_scores` are the length-normalised slot scores.
  `beam_indices` [B * nrs, T - 1]: the row (b * K + beam) each generated token was chosen from, -1 after the end
  (what transformers' compute_transition_scores reads); a hypothesis carries its own as it carries its tokens.

Lean parts: the whole step runs on the device at fixed shapes, cur_len included (`advance_on_device`: what a CUDA
graph captures; once stopped, further steps change nothing). The eager loop's `advance` reads one pair of flags
back per step (stop?, beams reordered?), and the cache is gathered only when some running row changed parent.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

from .config import GenerationConfig
from .logits_process import apply
from .search import SearchProgress, widen

NEG = -1.0e9                         # transformers' "very large negative" for beams and slots


@dataclass
class BeamState:
    running_seq: torch.Tensor        # [B, K, L] long
    running_scores: torch.Tensor     # [B, K] float32, sum of log-probs
    seq: torch.Tensor                # [B, K, L] long, finished slots
    scores: torch.Tensor             # [B, K] float32, length-normalised
    finished: torch.Tensor           # [B, K] bool
    lengths: torch.Tensor            # [B, K] long, generated tokens in the slot (0 = never filled)
    improvable: torch.Tensor         # [B, 1] bool, early-stop heuristic not yet satisfied
    running_beams: torch.Tensor      # [B, K, L] long, the beam each token of running_seq came from (-1: none)
    beams: torch.Tensor              # [B, K, L] long, the same for seq; both [B, K, 0] unless they are returned

    def merge_into(self, old: BeamState, keep_new: torch.Tensor) -> BeamState:
        """`old`, overwritten in place with this state's values where keep_new (bool [] for the whole batch, or
        [B, 1] per input): a stopped input keeps its state, and the state keeps its memory (a CUDA graph's replays
        read and write the same tensors, with no copy back)."""
        for a, b in zip(self.tensors(), old.tensors()):
            if a.numel():
                torch.where(keep_new.view(*keep_new.shape, *[1] * (a.dim() - keep_new.dim())), a, b, out=b)
        return old

    def tensors(self) -> list[torch.Tensor]:
        return [getattr(self, f.name) for f in fields(self)]

    @staticmethod
    def fills(token_fill: int, beams: bool) -> list[int | None]:
        """What widens each of tensors() past its length (None: not widened): the fill token for the sequences,
        -1 for the beams if they are kept."""
        widened = dict(running_seq=token_fill, seq=token_fill, **(dict(running_beams=-1, beams=-1) if beams else {}))
        return [widened.get(f.name) for f in fields(BeamState)]


def _gather(t: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """t [B, N, ...] picked along dim 1 by idx [B, M] -> [B, M, ...] (one gather kernel: take_along_dim would add
    a remainder kernel for negative indices)."""
    idx = idx.view(*idx.shape, *[1] * (t.dim() - 2)).expand(*idx.shape, *t.shape[2:])
    return t.gather(1, idx)


def _init_state(prompt: torch.Tensor, beams: int, max_length: int, fill: int, keep_beams: bool) -> BeamState:
    """Every input's beams start from its prompt [B, P]; beam 0 alone is live (the others score NEG)."""
    batch, device = prompt.shape[0], prompt.device
    running_seq = torch.full((batch, beams, max_length), fill, dtype=torch.long, device=device)
    running_seq[:, :, :prompt.shape[1]] = prompt[:, None, :]
    running_scores = torch.zeros(batch, beams, device=device)
    running_scores[:, 1:] = NEG
    return BeamState(
        running_seq=running_seq, running_scores=running_scores, seq=running_seq.clone(),
        scores=torch.full((batch, beams), NEG, device=device),
        finished=torch.zeros(batch, beams, dtype=torch.bool, device=device),
        lengths=torch.zeros(batch, beams, dtype=torch.long, device=device),
        improvable=torch.ones(batch, 1, dtype=torch.bool, device=device),
        running_beams=torch.full((batch, beams, max_length if keep_beams else 0), -1, dtype=torch.long,
                                 device=device),
        beams=torch.full((batch, beams, max_length if keep_beams else 0), -1, dtype=torch.long, device=device),
    )


def _candidates(acc: torch.Tensor, n: int, sample) -> tuple[torch.Tensor, torch.Tensor]:
    """Best n of acc [B, K*V] (or, given sample (SearchProgress.sample), n sampled without replacement, sorted by
    score) -> (scores, flat indices) [B, n]."""
    if sample is None:
        return torch.topk(acc, k=n)
    idx = sample(acc, n)
    scores, order = acc.gather(1, idx).sort(dim=-1, descending=True)
    return scores, idx.gather(-1, order)


def _finish(st: BeamState, cand_seq, cand_beams, cand_scores, hits, first_k, generated, norm_len,
            cfg: GenerationConfig) -> BeamState:
    """Merge the candidates that just finished into the K slots per input (transformers' `_update_finished_beams`).
    first_k: bool [K2], True for the first K candidates; generated: the tokens each input's candidates hold, EOS
    counted (long [B, 1]); norm_len: generated ** length_penalty (float32 [B, 1]). NEG is added where transformers
    adds `mask.to(float32) * -1e9` (the same float32 sums, -0.0 where the mask is False, in one kernel each)."""
    beams = st.scores.shape[1]
    just_finished = hits & first_k
    norm = cand_scores / norm_len
    if cfg.early_stopping is True:                          # an input whose K slots are full takes no more
        norm.add_(torch.all(st.finished, dim=-1, keepdim=True), alpha=NEG)
    norm.add_(~st.improvable, alpha=NEG)
    norm.add_(~just_finished, alpha=NEG)

    keep = torch.topk(torch.cat((st.scores, norm), dim=1), k=beams)[1]               # [B, K]
    lengths = generated.expand_as(hits)
    return replace(
        st, seq=_gather(torch.cat((st.seq, cand_seq), dim=1), keep),
        scores=_gather(torch.cat((st.scores, norm), dim=1), keep),
        finished=_gather(torch.cat((st.finished, just_finished), dim=1), keep),
        lengths=_gather(torch.cat((st.lengths, lengths), dim=1), keep),
        beams=st.beams if cand_beams is None else _gather(torch.cat((st.beams, cand_beams), dim=1), keep))


def _improvable(st: BeamState, best_len_norm: torch.Tensor) -> torch.Tensor:
    """transformers' `_check_early_stop_heuristic` (cur_len already advanced): [B, 1] bool.
    best_len_norm: each input's best reachable length ** length_penalty (float32 [B, 1])."""
    best_running = st.running_scores[:, :1] / best_len_norm                                      # [B, 1]
    worst_finished = torch.where(st.finished, torch.min(st.scores, dim=1, keepdim=True)[0], NEG)  # [B, K]
    return st.improvable & torch.any(best_running > worst_finished, dim=-1, keepdim=True)


def _powers(max_length: int, exponent: float, device) -> torch.Tensor:
    """t ** exponent for t = 0..max_length as float32 [max_length + 1] (computed in double on the host and rounded
    once, as transformers' Python-scalar divisors are; slot 0 unused). Past double's range inf: config.resolve
    refuses a length_penalty whose own lengths get there (transformers raises OverflowError), so only the lengths
    of a wider search than the request's (the engine's fixed-capacity slots) may."""
    return torch.tensor([1.0] + [_power(t, exponent) for t in range(1, max_length + 1)], device=device)


def _power(base: int, exponent: float) -> float:
    """base ** exponent in double; inf past its range."""
    try:
        return math.pow(base, exponent)
    except OverflowError:
        return math.inf


class BeamSearch(SearchProgress):
    """Beam search (and beam sampling) from the decoder start token, one step at a time: feed `tokens()` [R] to
    the model's step, hand its logits [R, V] to `advance`, which returns the cache reorder (parent row of every
    row, LongTensor [R]) or None when no row changed parent; until `done`, then `output()`. R = batch * beams.
    `advance_on_device` is the same step without any host read (always returns the reorder; `going` is the device
    flag), for loops that check the stop flag only every few steps. Independent (SearchProgress): each input
    stops as it would alone, at its own length and max_length."""

    def __init__(self, cfg: GenerationConfig, processors: list, prompt: torch.Tensor, device: torch.device,
                 generator=None, independent: bool = False, stop_strings=None):
        beams = cfg.num_beams                                         # prompt [B, P]: each input's first tokens
        super().__init__(cfg, processors, prompt.shape[0], beams, device, generator, independent, prompt.shape[1],
                         stop_strings)
        # [] (no EOS id): no hypothesis ends on a token, but positions after a stop string's end hold the fill
        self.eos = None if cfg.eos_token_id is None else torch.tensor(cfg.eos_token_id, dtype=torch.long, device=device)
        self.n_candidates = max(2, 1 + (len(self.eos) if self.eos is not None else 0)) * beams
        self.fill = (cfg.pad_token_id or cfg.eos_token_id[0]) if self.eos is not None else -1
        self.keep_beams = cfg.return_dict_in_generate                 # beam_indices are returned: [B, K, L] kept
        self.st = _init_state(prompt.to(device), beams, cfg.max_length, self.fill, self.keep_beams)
        self.norm_len = _powers(cfg.max_length, cfg.length_penalty, device)               # [max_length + 1]
        self.first_k = torch.arange(self.n_candidates, device=device) < beams             # [K2]
        self.row_index = torch.arange(self.rows, device=device)                          # [R]

    @property
    def identity(self) -> torch.Tensor:
        """Every row's own index [R] (made once per batch size, not a kernel per step)."""
        if len(self.row_index) != self.rows:
            self.row_index = torch.arange(self.rows, device=self.row_index.device)
        return self.row_index

    def tokens(self) -> torch.Tensor:
        slot = (self.cur_len - 1)[:, :, None].expand(self.batch, self.rows_per_input, 1)    # [B, K, 1]
        return self.st.running_seq.gather(2, slot).reshape(self.rows)                      # [R]

    def state(self) -> list[torch.Tensor]:
        return super().state() + self.st.tensors()

    def load_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        rest = super().load_state(tensors)
        self.st = BeamState(*rest)
        return []

    def advance_on_device(self, logits: torch.Tensor, device_length: bool = False) -> torch.Tensor:
        """One step from logits [R, V]; returns every row's parent row [R] (the identity once stopped).
        device_length: the processors read the device cur_len (SearchProgress.processor_length)."""
        cfg, st, cur_len, active = self.cfg, self.st, self.cur_len, self.active()      # cur_len [B, 1]
        batch, beams, rows = self.batch, cfg.num_beams, self.rows
        self.record_logits(logits)
        log_probs = apply(self.processors, st.running_seq.view(rows, -1), self.processor_length(device_length),
                          logits.float().log_softmax(dim=-1))
        self.record("scores", log_probs)
        vocab = log_probs.shape[-1]
        scores, prior = log_probs.view(batch, beams, vocab), st.running_scores[:, :, None]
        acc = scores + prior if "scores" in self.recorded else scores.add_(prior)     # unrecorded: add in place
        acc = acc.view(batch, beams * vocab)

        cand_scores, cand_idx = _candidates(acc, self.n_candidates, self.sample if cfg.do_sample else None)   # [B, K2]
        parent, token = cand_idx // vocab, cand_idx % vocab
        cand_seq = _gather(st.running_seq, parent)                                    # [B, K2, L]
        slot = torch.minimum(cur_len, self.max_len - 1)[:, :, None].expand_as(token[:, :, None])   # (stopped: any)
        cand_seq.scatter_(2, slot, token[:, :, None])
        cand_beams = _gather(st.running_beams, parent) if self.keep_beams else None   # [B, K2, L]
        if cand_beams is not None:
            cand_beams.scatter_(2, slot, parent[:, :, None])
        hits = (cur_len + 1 >= self.max_len).expand_as(token)                        # [B, K2]
        if self.eos is not None:
            hits = hits | (token[:, :, None] == self.eos).any(dim=-1)               # isin, never a host sync
        if self.stop_strings is not None:                                            # a stop string ends them too
            ended = self.stop_strings.ended(cand_seq.flatten(0, 1), slot.flatten(0, 1))
            hits = hits | ended.view_as(hits)

        running = torch.add(cand_scores, hits, alpha=NEG)                             # finished: not running
        nxt = torch.topk(running, k=beams)[1]                                         # [B, K]
        offset = self.identity.view(batch, beams)[:, :1]                              # [B, 1]: b * K
        parent_rows = (_gather(parent, nxt) + offset).view(rows)                      # [R]
        generated = cur_len + 1 - self.prompt_len                                     # [B, 1] EOS counted
        new = _finish(replace(st, running_seq=_gather(cand_seq, nxt), running_scores=_gather(running, nxt),
                              running_beams=st.running_beams if cand_beams is None else _gather(cand_beams, nxt)),
                      cand_seq, cand_beams, cand_scores, hits, self.first_k, generated, self.norm_len[generated], cfg)
        reach = self.max_len if cfg.early_stopping == "never" and cfg.length_penalty > 0.0 \
            else cur_len + active.long()                                              # [B, 1] after this step
        new.improvable = _improvable(new, self.norm_len[reach - self.prompt_len])
        all_done = new.finished.all(dim=1, keepdim=True) if cfg.early_stopping is True else None   # [B, 1]
        if self.independent:                    # each input goes on while it would alone: [B, 1]
            going = new.improvable & ~hits.all(dim=1, keepdim=True)
            going = going if all_done is None else going & ~all_done
        else:                                   # transformers' batch rule: []
            going = new.improvable.any() & ~hits.all()
            going = going if all_done is None else going & ~all_done.all()
        self.st = new.merge_into(st, active)
        self.stop(going)
        return torch.where(self.per_row(active)[:, 0] if active.dim() else active,
                           parent_rows, self.identity)

    def join(self, other: BeamSearch) -> None:
        """SearchProgress.join, with the beams' state (sequences padded to the longer max_length)."""
        super().join(other)
        width = max(self.st.running_seq.shape[2], other.st.running_seq.shape[2])

        def pad(t: torch.Tensor, fill: int | None) -> torch.Tensor:    # the sequences [B, K, L]; the rest as it is
            return t if fill is None else widen(t, width, fill)
        self.st = BeamState(*(torch.cat((pad(a, fill), pad(b, fill))) for a, b, fill in
                              zip(self.st.tensors(), other.st.tensors(), self.fills())))
        if len(other.norm_len) > len(self.norm_len):
            self.norm_len = other.norm_len

    def fills(self) -> list[int | None]:
        return BeamState.fills(self.fill, self.keep_beams)

    def keep(self, inputs: list[int]) -> torch.Tensor:
        index = super().keep(inputs)
        self.st = BeamState(*(t.index_select(0, index) for t in self.st.tensors()))
        return index

    def put(self, slot: int, other: BeamSearch) -> None:
        """SearchProgress.put, with the beams' state (sequences padded with the fill token)."""
        super().put(slot, other)
        width = other.st.running_seq.shape[2]
        for mine, theirs, fill in zip(self.st.tensors(), other.st.tensors(), self.fills()):
            if fill is not None:                              # the sequences [B, K, L]
                mine[slot, :, width:] = fill
                mine[slot, :, :width] = theirs[0]
            else:
                mine[slot] = theirs[0]

    def output(self, inputs: list[int] | None = None):
        """(sequences [B*nrs, T], sequences_scores [B*nrs], beam_indices [B*nrs, T-P] or None); inputs: only these
        inputs' (independent searches, each input's beam indices as if it ran alone; None: all)."""
        st, nrs, K = self.st, self.cfg.num_return_sequences, self.cfg.num_beams
        seq, scores, lengths, beams = st.seq, st.scores, st.lengths, st.beams
        if inputs is not None:
            index = self.input_index(inputs)
            seq, scores, lengths, beams = seq[index], scores[index], lengths[index], beams[index]
        length = self.prompt_len + int(lengths[:, :nrs].max())
        sequences = seq[:, :nrs, :length].reshape(-1, length)
        beam_indices = None
        if self.keep_beams:
            beams = beams[:, :nrs, self.prompt_len:length]                             # [B, nrs, T - P]
            if inputs is None:                              # rows of the whole batch: b * K + beam
                offset = torch.arange(0, beams.shape[0] * K, K, device=beams.device)[:, None, None]
                beams = torch.where(beams >= 0, beams + offset, beams)
            beam_indices = beams.flatten(0, 1).int()             # [B * nrs, T - 1]: int32, as transformers returns
        return sequences, scores[:, :nrs].reshape(-1), beam_indices

