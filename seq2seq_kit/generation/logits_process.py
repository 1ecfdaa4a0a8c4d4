"""Logits processors with transformers' semantics, built in transformers' order.

A processor is a callable `(seq [R, L], cur_len, scores [R, V] float32) -> scores [R, V]`:
  seq      each row's decoder tokens in L fixed slots, decoder start token included; slots >= cur_len are ignored
  cur_len  the current length (tokens in seq so far): an int, or a long tensor [] on the scores' device (a step
           captured in a CUDA graph, where the host cannot branch on it), or one length per row, long [R, 1]
           (rows of requests at different lengths stepped together)
  scores   raw logits (greedy / sampling) or log-softmax (beam search), one row per hypothesis
  R = batch * rows_per_input (beams, or return sequences when sampling); row r belongs to input r // rows_per_input.
Shapes never depend on cur_len and nothing is read back to the host, so a whole search step, processors included,
can be captured in one CUDA graph (generation/whole_step.py); with an int cur_len, a processor that does nothing at
this length skips its work. Processors may write `scores` in place and return it (the searches hand them a tensor
of their own): a fresh vocabulary-wide tensor per processor per step would cost its page faults every step
(~30 MB at 128 rows of a 58k vocabulary); seq is never modified.
"""

from __future__ import annotations

import math

import torch

from .config import GenerationConfig, sequence_biases


class RepetitionPenalty:
    """Every token already in the sequence: score * penalty if score < 0 else score / penalty (in place)."""

    def __init__(self, penalty: float):
        self.penalty = penalty

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        # unwritten slots name the start token (slot 0, always written): penalised once, as it is anyway (a token
        # seen twice is written twice with the same value, as transformers' scatter does)
        idx = torch.where(_written(seq, cur_len), seq, seq[:, :1])           # [R, L]
        seen = scores.gather(1, idx)
        return scores.scatter_(1, idx, torch.where(seen < 0, seen * self.penalty, seen / self.penalty))


def _written(seq: torch.Tensor, cur_len) -> torch.Tensor:
    """bool [L] (or [R, L] for per-row lengths): the slots of seq [R, L] written so far."""
    return torch.arange(seq.shape[1], device=seq.device) < cur_len


def _last(seq: torch.Tensor, cur_len, n: int) -> torch.Tensor:
    """The last n tokens written, seq[:, cur_len - n:cur_len] -> [R, n] (slots outside seq read its first or last
    slot: callers mask those cases out)."""
    slots = (cur_len - n + torch.arange(n, device=seq.device)).clamp(0, seq.shape[1] - 1)    # [n] or [R, n]
    return seq.gather(1, slots.expand(seq.shape[0], n))


def _ban(scores: torch.Tensor, matches: torch.Tensor, next_tokens: torch.Tensor) -> torch.Tensor:
    """Set scores[r, next_tokens[r, w]] = -inf wherever matches[r, w] (matches, next_tokens: [R, W])."""
    vocab_size = scores.shape[-1]
    banned = scores.new_zeros((scores.shape[0], vocab_size + 1), dtype=torch.bool)
    # non-matching windows write to a spare column past the vocabulary
    banned.scatter_(1, torch.where(matches, next_tokens, vocab_size), True)
    return scores.masked_fill_(banned[:, :vocab_size], -math.inf)


class EncoderRepetitionPenalty:
    """Every token of the row's encoder input (padding included, as transformers): with p = 1 / penalty,
    score * p if score < 0 else score / p (penalty > 1 favours copying from the input)."""

    def __init__(self, penalty: float, encoder_input_ids: torch.Tensor, rows_per_input: int):
        self.inverse = 1 / penalty                                           # transformers' own rounding
        # [R, S]; -1 (empty fixed-capacity slots) reads column 0 of rows that are not stepped
        self.ids = encoder_input_ids.clamp(min=0).repeat_interleave(rows_per_input, dim=0)

    def join(self, other: EncoderRepetitionPenalty, rows: int, other_rows: int) -> EncoderRepetitionPenalty:
        width = max(self.ids.shape[1], other.ids.shape[1])
        self.ids = torch.cat((_widen(self.ids, width), _widen(other.ids, width)))
        return self

    def select(self, rows: torch.Tensor) -> EncoderRepetitionPenalty:
        self.ids = self.ids.index_select(0, rows)
        return self

    def put(self, rows: slice, other: EncoderRepetitionPenalty) -> None:
        self.ids[rows] = _widen(other.ids, self.ids.shape[1])

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        seen = scores.gather(1, self.ids)                                    # [R, S]
        return scores.scatter_(1, self.ids, torch.where(seen < 0, seen * self.inverse, seen / self.inverse))


def _widen(ids: torch.Tensor, width: int) -> torch.Tensor:
    """ids [R, S] -> [R, width], each row padded with its first token (a token it penalises anyway: the same
    value scattered twice)."""
    return torch.cat((ids, ids[:, :1].expand(-1, width - ids.shape[1])), dim=1)


class SequenceBias:
    """Add each token sequence's bias to its last token's score where the rest of it ends the sequence (a
    one-token sequence: always), summed as transformers' SequenceBiasLogitsProcessor sums them; only the
    columns of biased tokens are touched."""

    def __init__(self, biases: dict[tuple[int, ...], float], device):
        self.columns = torch.tensor(sorted({s[-1] for s in biases}), dtype=torch.long, device=device)     # [C]
        column = {token: i for i, token in enumerate(self.columns.tolist())}
        single = [0.0] * len(column)
        for s, bias in biases.items():
            if len(s) == 1:
                single[column[s[0]]] = bias
        self.single = torch.tensor(single, device=device)                                                # [C]
        by_prefix_len: dict[int, list] = {}
        for s, bias in biases.items():
            if len(s) > 1:
                by_prefix_len.setdefault(len(s) - 1, []).append((s, bias))
        self.groups = [                     # (prefixes [G, P], their last tokens' columns [G], biases [G])
            (torch.tensor([s[:-1] for s, _ in g], device=device),
             torch.tensor([column[s[-1]] for s, _ in g], device=device),
             torch.tensor([bias for _, bias in g], device=device))
            for g in by_prefix_len.values()
        ]

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        bias = self.single.expand(scores.shape[0], -1).clone()                                           # [R, C]
        for prefixes, columns, biases in self.groups:
            n = prefixes.shape[1]
            if n > seq.shape[1]:
                continue
            matches = (_last(seq, cur_len, n)[:, None] == prefixes).all(dim=-1) & (cur_len >= n)         # [R, G]
            bias.index_add_(1, columns, torch.where(matches, biases, 0.0))
        return scores.index_copy_(1, self.columns, scores.index_select(1, self.columns) + bias)


class Diversity:
    """transformers' HammingDiversityLogitsProcessor (group beam search, generation/group_beam_search.py): a group's
    rows lose penalty times the number of times each token was chosen at this step by their input's earlier groups'
    beams, `earlier` (long [B, n], set by the search before each group; n = 0 for the first group: no change).
    The rows are the group's, G per input."""

    def __init__(self, penalty: float, group_size: int):
        self.penalty, self.group_size = penalty, group_size
        self.earlier: torch.Tensor | None = None

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        if self.earlier is None or self.earlier.shape[1] == 0:
            return scores
        counts = torch.zeros((self.earlier.shape[0], scores.shape[-1]), dtype=torch.long, device=scores.device)
        counts.scatter_add_(1, self.earlier, torch.ones_like(self.earlier))                 # [B, V]
        return scores.sub_(self.penalty * counts.repeat_interleave(self.group_size, dim=0))


class NoRepeatNGram:
    """Ban every token that would complete an n-gram already present in the sequence."""

    def __init__(self, ngram_size: int):
        self.n = ngram_size

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        n = self.n
        if seq.shape[1] < n:
            return scores
        prefix = _last(seq, cur_len, n - 1)                                  # [R, n-1]
        windows = seq.unfold(1, n, 1)                                        # [R, W, n], W = L - n + 1
        inside = torch.arange(windows.shape[1], device=seq.device) + n <= cur_len      # [W] or [R, W]: written
        matches = (windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1) & inside      # [R, W]
        return _ban(scores, matches, windows[..., -1])


class EncoderNoRepeatNGram:
    """Ban every token that would complete an n-gram of the row's encoder input (padding included, as transformers)."""

    def __init__(self, ngram_size: int, encoder_input_ids: torch.Tensor, rows_per_input: int):
        self.n = ngram_size
        seq_len = encoder_input_ids.shape[1]
        self.windows = None                                                  # [R, W, n], or None: input shorter than n
        if seq_len >= ngram_size:
            windows = encoder_input_ids.unfold(1, ngram_size, 1)             # [B, W, n]
            self.windows = windows.repeat_interleave(rows_per_input, dim=0)

    def join(self, other: EncoderNoRepeatNGram, rows: int, other_rows: int) -> EncoderNoRepeatNGram:
        """Append other's rows' windows (an input without windows gets one of -1s, which never matches: see
        __call__; the shorter input's windows are padded so)."""
        if self.windows is None and other.windows is None:
            return self
        device = (self.windows if self.windows is not None else other.windows).device
        first, second = (_windows(p.windows, r, self.n, device) for p, r in ((self, rows), (other, other_rows)))
        width = max(first.shape[1], second.shape[1])
        self.windows = torch.cat([torch.cat((w, w.new_full((w.shape[0], width - w.shape[1], self.n), -1)), dim=1)
                                  for w in (first, second)])
        return self

    def select(self, rows: torch.Tensor) -> EncoderNoRepeatNGram:
        if self.windows is not None:
            self.windows = self.windows.index_select(0, rows)
        return self

    def put(self, rows: slice, other: EncoderNoRepeatNGram) -> None:
        """These rows (one input's) take other's windows, padded with -1s, in place (fixed capacity: this
        processor was built on the widest input, all -1s: generation.start_slots)."""
        if self.windows is None:                      # no input this wide: none has a window
            return
        self.windows[rows] = -1
        if other.windows is not None:
            self.windows[rows, :other.windows.shape[1]] = other.windows

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        if self.windows is None:
            return scores
        prefix = _last(seq, cur_len, self.n - 1)                             # [R, n-1]
        real = self.windows[..., -1] >= 0           # [R, W]: not padding (needed for n = 1, which has no prefix)
        matches = (self.windows[..., :-1] == prefix.unsqueeze(1)).all(dim=-1) & real & (cur_len >= self.n - 1)
        return _ban(scores, matches, self.windows[..., -1])


class NoBadWords:
    """Ban single-token bad words always, and the last token of a longer bad word when its prefix ends the sequence.

    Bad words that are exactly one EOS id are dropped, as transformers does.
    """

    def __init__(self, bad_words_ids: list[list[int]], eos_token_id: list[int] | None, device):
        eos = eos_token_id or []
        words = {tuple(w) for w in bad_words_ids if not any(w == [e] for e in eos)}
        self.single = torch.tensor(sorted(w[0] for w in words if len(w) == 1), dtype=torch.long, device=device)
        by_prefix_len: dict[int, list[tuple[int, ...]]] = {}
        for w in sorted(words):
            if len(w) > 1:
                by_prefix_len.setdefault(len(w) - 1, []).append(w)
        self.groups = [                                                      # (prefixes [G, P], last tokens [G])
            (torch.tensor([w[:-1] for w in ws], device=device), torch.tensor([w[-1] for w in ws], device=device))
            for ws in by_prefix_len.values()
        ]

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        scores = scores.index_fill_(1, self.single, -math.inf)             # one pass: Marian's [[pad]] ends here
        for prefixes, last in self.groups:
            n = prefixes.shape[1]
            if n > seq.shape[1]:
                continue
            matches = (_last(seq, cur_len, n)[:, None] == prefixes).all(dim=-1) & (cur_len >= n)   # [R, G]
            scores = _ban(scores, matches, last.expand_as(matches))
        return scores


class LengthSetting:
    """A processor whose one setting, `length`, is an int for every row or one per row (long [R, 1]): the rows
    of inputs whose max_length / min_length differ, stepped in one search."""
    length: int | torch.Tensor
    device: torch.device | str | None

    def join(self, other: LengthSetting, rows: int, other_rows: int) -> LengthSetting:
        """Append other's rows: an int where both hold that int, else long [rows + other_rows, 1]."""
        mine, theirs = self.length, other.length
        if isinstance(mine, int) and isinstance(theirs, int) and mine == theirs:
            return self
        def column(v, n):
            return v if isinstance(v, torch.Tensor) else torch.full((n, 1), v, dtype=torch.long, device=self.device)
        self.length = torch.cat((column(mine, rows), column(theirs, other_rows)))
        return self

    def select(self, rows: torch.Tensor) -> LengthSetting:
        if isinstance(self.length, torch.Tensor):
            self.length = self.length.index_select(0, rows)
        return self

    def per_row(self, rows: int) -> None:
        """The setting as one length per row, long [rows, 1] (fixed capacity: put writes an input's rows)."""
        if isinstance(self.length, int):
            self.length = torch.full((rows, 1), self.length, dtype=torch.long, device=self.device)

    def put(self, rows: slice, other: LengthSetting) -> None:
        """These rows (one input's) take other's setting, in place."""
        self.length[rows] = other.length


class MinLength(LengthSetting):
    """EOS gets -inf while the decoder sequence (start token included) is shorter than `length` (min_length)."""

    def __init__(self, min_length: int, eos_token_id: list[int], device=None):
        self.length, self.device = min_length, device
        self.eos = torch.tensor(eos_token_id, device=device)

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        below = cur_len < self.length                                        # bool, or a tensor [] or [R, 1]
        if isinstance(below, bool):
            return scores.index_fill_(1, self.eos, -math.inf) if below else scores
        eos_scores = scores.index_select(1, self.eos)                        # [R, E]: only these columns change
        return scores.index_copy_(1, self.eos, torch.where(below, -math.inf, eos_scores))


class ForcedToken(LengthSetting):
    """At decoder length `length`, every score is -inf except `token_ids` (0): forced BOS (length 1) / EOS
    (max_length - 1)."""

    def __init__(self, at_length: int, token_ids: list[int], vocab_size: int, device=None):
        self.length, self.device = at_length, device
        self.forced = torch.full((vocab_size,), -math.inf, device=device)              # [V]: the scores then
        self.forced[token_ids] = 0.0

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        at = cur_len == self.length                                          # bool, or a tensor [] or [R, 1]
        if isinstance(at, bool):
            return scores.copy_(self.forced.expand_as(scores)) if at else scores
        return torch.where(at, self.forced, scores, out=scores)                # in place: no fresh [R, V]


class ExponentialDecayLengthPenalty:
    """From decoder length `start` on (the setting's start + the decoder prompt), EOS scores grow each step:
    s + |s| * (factor ** steps - 1), steps counted past start (transformers' ExponentialDecayLengthPenalty;
    factor ** steps in double, as there, kept per step in a table for lengths held in tensors)."""

    def __init__(self, start: int, factor: float, eos_token_id: list[int], max_length: int, device=None):
        self.start, self.factor = start, factor
        self.eos = torch.tensor(eos_token_id, device=device)
        # indexed by cur_len (0..max_length), not by steps: a table as long as max_length whatever start is (a
        # start of -2**63 made a 2**63-entry table by steps, wedging the caller)
        self.growth = torch.tensor([_power(factor, n - self.start) - 1 if n > self.start else 0.0
                                    for n in range(max(max_length, 0) + 1)],
                                   dtype=torch.float32, device=device)      # [max_length + 1]; 0: no change

    def join(self, other: ExponentialDecayLengthPenalty, rows: int, other_rows: int) -> ExponentialDecayLengthPenalty:
        if other.growth.shape[0] > self.growth.shape[0]:                     # the longer max_length's table
            self.growth = other.growth
        return self

    def put(self, rows: slice, other: ExponentialDecayLengthPenalty) -> None:
        self.join(other, 0, 0)

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        steps = cur_len - self.start
        if isinstance(steps, int):
            if steps <= 0:
                return scores
            growth = _power(self.factor, steps) - 1
        else:
            index = cur_len.clamp(0, self.growth.shape[0] - 1)                # [] or [R, 1]
            growth = self.growth.index_select(0, index.flatten()).view(index.shape)   # indexing by [] reads it
        eos_scores = scores.index_select(1, self.eos)                        # [R, E]
        penalty = (eos_scores.abs() * growth).masked_fill_(~torch.isfinite(eos_scores), 0.0)
        return scores.index_copy_(1, self.eos, eos_scores + penalty)


def _power(factor: float, steps: int) -> float:
    """factor ** steps in double; past double's range inf (transformers raises OverflowError there; float32
    scores became inf long before)."""
    try:
        return math.pow(factor, steps)
    except OverflowError:
        return math.inf


class SuppressTokens:
    """These tokens get -inf (ids outside the vocabulary are none, as in transformers); at_length: only when the
    decoder sequence has that length (begin_suppress_tokens)."""

    def __init__(self, token_ids: list[int], vocab_size: int, at_length: int | None = None, device=None):
        self.mask = torch.zeros(vocab_size, dtype=torch.bool, device=device)                              # [V]
        self.mask[[t for t in token_ids if 0 <= t < vocab_size]] = True
        self.at_length = at_length

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        at = True if self.at_length is None else cur_len == self.at_length  # bool, or a tensor [] or [R, 1]
        if isinstance(at, bool):
            return scores.masked_fill_(self.mask, -math.inf) if at else scores
        return scores.masked_fill_(at & self.mask, -math.inf)


def _windows(windows: torch.Tensor | None, rows: int, n: int, device) -> torch.Tensor:
    """Encoder n-gram windows [rows, W, n], or one window of -1s per row for an input shorter than n."""
    return windows if windows is not None else torch.full((rows, 1, n), -1, dtype=torch.long, device=device)


def remove_inf_nan(seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
    """nan -> 0, +-inf -> the dtype's max / min."""
    finfo = torch.finfo(scores.dtype)
    return scores.nan_to_num_(nan=0.0, posinf=finfo.max, neginf=finfo.min)


class Temperature:
    def __init__(self, temperature: float):
        self.temperature = temperature

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        return scores.div_(self.temperature)


class TopK:
    """Keep scores >= the k-th largest; k is at least min_tokens_to_keep."""

    def __init__(self, top_k: int, min_tokens_to_keep: int):
        self.k = max(top_k, min_tokens_to_keep)

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        k = min(self.k, scores.shape[-1])
        kth = torch.topk(scores, k)[0][..., -1, None]                        # [R, 1]
        return scores.masked_fill_(scores < kth, -math.inf)


class TopP:
    """Keep the smallest set of top tokens whose probability sums to >= top_p (at least min_tokens_to_keep)."""

    def __init__(self, top_p: float, min_tokens_to_keep: int):
        self.top_p = top_p
        self.min_keep = min_tokens_to_keep

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        sorted_scores, order = torch.sort(scores, descending=False)          # ascending: [R, V]
        cumulative = sorted_scores.softmax(dim=-1).cumsum(dim=-1)
        remove = cumulative <= (1 - self.top_p)
        remove[..., -self.min_keep:].fill_(False)       # fill_, not `= False`: no scalar tensor (a graph)
        remove = remove.scatter(1, order, remove)
        return scores.masked_fill_(remove, -math.inf)


class TopH:
    """Of the 100 best tokens, keep the first ones whose running entropy sum stays <= top_h * their distribution's
    entropy (the best always) (transformers' TopHLogitsWarper)."""
    top_n = 100

    def __init__(self, top_h: float):
        self.top_h = top_h

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        top_logits, top_idx = torch.topk(scores, min(self.top_n, scores.shape[-1]), dim=-1)              # [R, N]
        logits, probs = _categorical(top_logits)
        tau = (_entropy(logits, probs) * self.top_h).unsqueeze(-1)                                       # [R, 1]
        selected = torch.cumsum(-probs * torch.log(probs), dim=-1) <= tau
        selected[:, 0].fill_(True)
        keep = torch.zeros_like(scores, dtype=torch.bool).scatter_(1, top_idx, selected)
        return scores.masked_fill_(~keep, -math.inf)


def _categorical(scores: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """torch.distributions.Categorical(logits=scores)'s normalised logits and probs (without its argument
    validation, a host read)."""
    logits = scores - scores.logsumexp(dim=-1, keepdim=True)
    return logits, logits.softmax(dim=-1)


def _entropy(logits: torch.Tensor, probs: torch.Tensor) -> torch.Tensor:
    """Categorical.entropy() of _categorical's pair -> [R]."""
    return -(logits.clamp(min=torch.finfo(logits.dtype).min) * probs).sum(-1)


class MinP:
    """Drop tokens less probable than min_p times the best one (keeping the min_tokens_to_keep best)."""

    def __init__(self, min_p: float, min_tokens_to_keep: int):
        self.min_p, self.min_keep = min_p, min_tokens_to_keep

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)
        remove = probs < self.min_p * probs.amax(dim=-1, keepdim=True)
        remove.scatter_(-1, torch.topk(probs, min(self.min_keep, probs.shape[-1]), dim=-1).indices, False)
        return scores.masked_fill_(remove, -math.inf)


class Typical:
    """Keep the tokens whose surprisal is closest to the entropy, until their probability sums to typical_p."""

    def __init__(self, mass: float, min_tokens_to_keep: int):
        self.mass, self.min_keep = mass, min_tokens_to_keep

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        normalized = scores.log_softmax(dim=-1)
        p = torch.exp(normalized)
        ent = -(normalized * p).nansum(-1, keepdim=True)                                                 # [R, 1]
        shifted = torch.abs((-normalized) - ent)
        sorted_shifted, order = torch.sort(shifted, descending=False)
        cumulative = scores.gather(-1, order).softmax(dim=-1).cumsum(dim=-1)
        last = (cumulative < self.mass).sum(dim=1).clamp_(max=sorted_shifted.shape[-1] - 1)              # [R]
        remove = sorted_shifted > sorted_shifted.gather(1, last.view(-1, 1))
        remove[..., :self.min_keep].fill_(False)
        return scores.masked_fill_(remove.scatter(1, order, remove), -math.inf)


class Epsilon:
    """Drop tokens of probability < epsilon (eta: < min(eta, sqrt(eta) * exp(-entropy)), the eta_cutoff
    setting), keeping the min_tokens_to_keep best."""

    def __init__(self, epsilon: float, min_tokens_to_keep: int, eta: bool = False, device=None):
        self.epsilon = torch.tensor(epsilon, device=device) if eta else epsilon
        self.eta, self.min_keep = eta, min_tokens_to_keep

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        probs = scores.softmax(dim=-1)
        cutoff = self.epsilon
        if self.eta:
            entropy = _entropy(*_categorical(scores))                                                    # [R]
            cutoff = torch.min(self.epsilon, torch.sqrt(self.epsilon) * torch.exp(-entropy))[..., None]
        kth = torch.topk(scores, min(self.min_keep, scores.shape[-1]))[0][..., -1, None]                 # [R, 1]
        return scores.masked_fill_((probs < cutoff) & (scores < kth), -math.inf)


def log_softmax(seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
    return scores.log_softmax(dim=-1)


class Watermark:
    """transformers' WatermarkLogitsProcessor (watermarking_config; Kirchenbauer et al. 2023): each row's "green"
    tokens, the first greenlist_ratio of a permutation of the vocabulary drawn by torch.randperm from a generator
    seeded with hashing_key * its last token ("lefthash"), get `bias` added. "selfhash" seeds with the smallest of
    hashing_key * table[t] * table[last] over the last context_width tokens t, each of the row's 40 best next tokens
    in turn appended, and greens those that are green under their own seed. Rows shorter than context_width are left
    as they are. Python per row per step, reading each row's length on the host (transformers' too): generate's
    eager search and the engine's eager batch, not a step captured in a CUDA graph."""

    TABLE_SIZE = 1_000_003

    def __init__(self, vocab_size: int, device, greenlist_ratio: float, bias: float, hashing_key: int,
                 seeding_scheme: str, context_width: int):
        self.vocab_size, self.greenlist_size = vocab_size, int(vocab_size * greenlist_ratio)
        self.bias, self.hash_key, self.context_width = bias, hashing_key, context_width
        self.selfhash = seeding_scheme == "selfhash"
        self.rng = torch.Generator(device=device)
        self.rng.manual_seed(hashing_key)
        self.fixed_table = torch.randperm(self.TABLE_SIZE, generator=self.rng, device=device)

    def greenlist(self, context: torch.Tensor) -> torch.Tensor:
        """The green token ids [greenlist_size] after `context` (a row's tokens [t])."""
        context = context[-self.context_width:]
        if self.selfhash:
            a = self.fixed_table[context % self.TABLE_SIZE] + 1
            b = self.fixed_table[context[-1] % self.TABLE_SIZE] + 1
            seed = (self.hash_key * a * b).min().item()
        else:
            seed = self.hash_key * context[-1].item()
        self.rng.manual_seed(seed % (2**64 - 1))
        return torch.randperm(self.vocab_size, device=context.device, generator=self.rng)[:self.greenlist_size]

    def self_green(self, row: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        """selfhash: which of the row's 40 best next tokens are green after themselves."""
        best = scores.sort(dim=-1, descending=True)[1][:40]
        green = [t for t in best if t in self.greenlist(torch.cat((row, t[None])))]
        return torch.stack(green) if green else best[:0]

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        """cur_len: an int or a device length [] (every row's), or each row's length [R, 1] (an engine's inputs at
        their own lengths), read here."""
        lengths = [cur_len] if isinstance(cur_len, int) else cur_len.view(-1).tolist()
        lengths = lengths * seq.shape[0] if len(lengths) == 1 else lengths
        for r, (row, n) in enumerate(zip(seq, lengths)):
            if n >= self.context_width:
                row = row[:n]
                green = self.self_green(row, scores[r]) if self.selfhash else self.greenlist(row)
                scores[r, green] += self.bias
        return scores


class PrefixAllowedTokens:
    """generate's prefix_allowed_tokens_fn(input index, row's tokens [cur_len]) -> the token ids allowed next: every
    other token gets -inf; an input whose rows have only -inf left (the allowed tokens banned by the processors
    before) gets the allowed tokens at score 0 (transformers' PrefixConstrainedLogitsProcessor). Python per row:
    the eager path only."""

    def __init__(self, fn, rows_per_input: int):
        self.fn, self.rows_per_input = fn, rows_per_input

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        mask = torch.full_like(scores, -math.inf)
        for row, tokens in enumerate(seq[:, :_host_length(cur_len, "prefix_allowed_tokens_fn")]):
            allowed = self.fn(row // self.rows_per_input, tokens)
            if len(allowed) == 0:
                raise ValueError(f"prefix_allowed_tokens_fn returned no token for input {row // self.rows_per_input}"
                                 f": the constraint cannot be met")
            mask[row, allowed] = 0
        constrained = scores + mask
        stuck = constrained.amax(dim=-1).isneginf().view(-1, self.rows_per_input).all(dim=-1, keepdim=True)   # [B, 1]
        return torch.where(stuck.repeat_interleave(self.rows_per_input, dim=0), mask, constrained)


class UserProcessor:
    """One of generate's logits_processor: processor(input_ids [R, cur_len], scores [R, V]) -> scores, as
    transformers calls it (the eager path only); what it returns is taken as float32 and contiguous (a float64
    result is rounded to float32, where transformers would go on in float64)."""

    def __init__(self, processor):
        self.processor = processor

    def __call__(self, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
        out = self.processor(seq[:, :_host_length(cur_len, "logits_processor")], scores)
        return out.float().contiguous()


def _host_length(cur_len, name: str) -> int:
    if not isinstance(cur_len, int):
        raise ValueError(f"`{name}` runs Python on every step, which only generate's eager path can run "
                         "(generate goes eager for it and refuses cuda_graph=True; the engine refuses it)")
    return cur_len


def build_processors(cfg: GenerationConfig, encoder_input_ids: torch.Tensor, rows_per_input: int,
                     vocab_size: int, prompt_len: int = 1, logits_processor: list = (),
                     prefix_allowed_tokens_fn=None) -> list:
    """The processors of a resolved config, in transformers' `_get_logits_processor` order, generate's own
    logits_processor merged in as transformers merges them (see merged). prompt_len: the decoder prompt's tokens
    (1: the start token), which the settings counting new tokens start after."""
    eos = cfg.eos_token_id or None             # [] (no EOS): no processor acts on EOS
    device = encoder_input_ids.device
    built: list = []                  # (the transformers processor each stands for, it)
    if cfg.sequence_bias is not None:
        built.append(("SequenceBiasLogitsProcessor",
                      SequenceBias(sequence_biases(cfg.sequence_bias, vocab_size), device)))
    if cfg.num_beams > 1 and cfg.num_beam_groups > 1 and cfg.diversity_penalty > 0.0:
        built.append(("HammingDiversityLogitsProcessor", Diversity(cfg.diversity_penalty, rows_per_input)))
    if cfg.encoder_repetition_penalty is not None and cfg.encoder_repetition_penalty != 1.0:
        built.append(("EncoderRepetitionPenaltyLogitsProcessor",
                      EncoderRepetitionPenalty(cfg.encoder_repetition_penalty, encoder_input_ids, rows_per_input)))
    if cfg.repetition_penalty is not None and cfg.repetition_penalty != 1.0:
        built.append(("RepetitionPenaltyLogitsProcessor", RepetitionPenalty(cfg.repetition_penalty)))
    if cfg.no_repeat_ngram_size > 0:
        built.append(("NoRepeatNGramLogitsProcessor", NoRepeatNGram(cfg.no_repeat_ngram_size)))
    if cfg.encoder_no_repeat_ngram_size > 0:
        built.append(("EncoderNoRepeatNGramLogitsProcessor",
                      EncoderNoRepeatNGram(cfg.encoder_no_repeat_ngram_size, encoder_input_ids, rows_per_input)))
    if cfg.bad_words_ids is not None:
        built.append(("NoBadWordsLogitsProcessor", NoBadWords(cfg.bad_words_ids, eos, device)))
    if cfg.min_length and eos is not None:            # min_new_tokens is folded into min_length by resolve()
        built.append(("MinLengthLogitsProcessor", MinLength(cfg.min_length, eos, device)))
    if logits_processor and cfg.min_new_tokens and eos is not None:
        # transformers builds MinNewTokensLengthLogitsProcessor besides MinLength for min_new_tokens: a user's
        # processor of either class replaces only its own (the same bans; only with a user's list, so the engine's
        # searches keep one processor list for every min_length / min_new_tokens)
        built.append(("MinNewTokensLengthLogitsProcessor", MinLength(cfg.min_new_tokens + prompt_len, eos, device)))
    if prefix_allowed_tokens_fn is not None:
        built.append(("PrefixConstrainedLogitsProcessor",
                      PrefixAllowedTokens(prefix_allowed_tokens_fn, rows_per_input)))
    if cfg.forced_bos_token_id is not None:
        built.append(("ForcedBOSTokenLogitsProcessor", ForcedToken(1, [cfg.forced_bos_token_id], vocab_size, device)))
    if cfg.forced_eos_token_id is not None:
        forced_eos = cfg.forced_eos_token_id if isinstance(cfg.forced_eos_token_id, list) else [cfg.forced_eos_token_id]
        built.append(("ForcedEOSTokenLogitsProcessor",
                      ForcedToken(cfg.max_length - 1, forced_eos, vocab_size, device)))
    if cfg.remove_invalid_values:
        built.append(("InfNanRemoveLogitsProcessor", remove_inf_nan))
    if cfg.exponential_decay_length_penalty is not None and eos is not None:
        start, factor = cfg.exponential_decay_length_penalty
        built.append(("ExponentialDecayLengthPenalty",
                      ExponentialDecayLengthPenalty(start + prompt_len, factor, eos, cfg.max_length, device)))
    if cfg.suppress_tokens is not None:
        built.append(("SuppressTokensLogitsProcessor",
                      SuppressTokens(cfg.suppress_tokens, vocab_size, device=device)))
    if cfg.begin_suppress_tokens is not None:       # the first new token's step; after a forced BOS, the next
        begin = prompt_len + (prompt_len == 1 and cfg.forced_bos_token_id is not None)
        built.append(("SuppressTokensAtBeginLogitsProcessor",
                      SuppressTokens(cfg.begin_suppress_tokens, vocab_size, begin, device)))
    tail = sampling_processors(cfg, device)
    if cfg.watermarking_config is not None:         # after the sampling ones, before renormalize_logits' (as
        watermark = Watermark(device=device, **cfg.watermarking_config)        # transformers; with its vocab_size)
        tail.insert(len(tail) - bool(cfg.renormalize_logits), watermark)
    return merged(built, logits_processor) + tail


def sampling_processors(cfg: GenerationConfig, device: torch.device) -> list:
    """What transformers' `_get_logits_processor` appends after merging a user's processors in: the sampling ones
    (temperature, top-k, top-p, ...; when sampling) and renormalize_logits' log-softmax."""
    procs: list = []
    if cfg.do_sample:
        # beams keep one non-EOS token more than there are EOS ids, so a beam can always continue (transformers:
        # 2 without eos_token_id, 1 with eos_token_id=[])
        min_keep = (len(cfg.eos_token_id) + 1 if cfg.eos_token_id is not None else 2) if cfg.num_beams > 1 else 1
        if cfg.temperature is not None and cfg.temperature != 1.0:
            procs.append(Temperature(cfg.temperature))
        if cfg.top_h is not None:
            procs.append(TopH(cfg.top_h))
        if cfg.top_k:
            procs.append(TopK(cfg.top_k, min_keep))
        if cfg.top_p is not None and cfg.top_p < 1.0:
            procs.append(TopP(cfg.top_p, min_keep))
        if cfg.min_p is not None:
            procs.append(MinP(cfg.min_p, min_keep))
        if cfg.typical_p is not None and cfg.typical_p < 1.0:
            procs.append(Typical(cfg.typical_p, min_keep))
        if cfg.epsilon_cutoff is not None and 0.0 < cfg.epsilon_cutoff < 1.0:
            procs.append(Epsilon(cfg.epsilon_cutoff, min_keep))
        if cfg.eta_cutoff is not None and 0.0 < cfg.eta_cutoff < 1.0:
            procs.append(Epsilon(cfg.eta_cutoff, min_keep, eta=True, device=device))
    if cfg.renormalize_logits:
        procs.append(log_softmax)
    return procs


def merged(built: list[tuple[str, object]], users: list) -> list:
    """transformers' `_merge_criteria_processor_list`: a user's processor of the transformers class a built one
    stands for takes its place; the user's others follow, in their order."""
    users = list(users)
    taken = []
    procs = []
    for name, proc in built:
        user = next((u for u in users if type(u).__name__ == name and type(u).__module__.startswith("transformers.")),
                    None)
        if user is not None:
            taken.append(user)
        procs.append(proc if user is None else UserProcessor(user))
    for u in users:             # transformers: `if custom not in final_list` (a processor given twice runs once)
        if u not in taken:
            taken.append(u)
            procs.append(UserProcessor(u))
    return procs


def apply(processors: list, seq: torch.Tensor, cur_len, scores: torch.Tensor) -> torch.Tensor:
    for proc in processors:
        scores = proc(seq, cur_len, scores)
    return scores


def join_processors(processors: list, others: list, rows: int, other_rows: int) -> list:
    """One list for the rows of two searches whose settings differ at most in max_length / min_length (the same
    processors in the same order): `processors`' rows, then `others`'. Processors with per-row state (encoder
    n-grams, min length, forced EOS) join theirs; the others are the same for every row."""
    return [p.join(q, rows, other_rows) if hasattr(p, "join") else p for p, q in zip(processors, others)]


def select_processors(processors: list, rows: torch.Tensor) -> list:
    """The processors for these rows (long [R']) only."""
    return [p.select(rows) if hasattr(p, "select") else p for p in processors]


def settings_per_row(processors: list, rows: int) -> None:
    """Every per-row setting (min length, forced EOS) as a tensor of `rows` rows, in place (fixed capacity)."""
    for p in processors:
        if isinstance(p, LengthSetting):
            p.per_row(rows)


def put_processors(processors: list, others: list, rows: slice) -> None:
    """These rows (one input slot's) take the per-row state of `others`, a one-input search's processors (the same
    processors in the same order), in place (fixed capacity)."""
    for p, q in zip(processors, others):
        if hasattr(p, "put"):
            p.put(rows, q)
