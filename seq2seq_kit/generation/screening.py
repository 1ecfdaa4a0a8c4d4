"""Greedy's argmax from screened logits (protocol.ScreenedLogits: bounds on every logit, exact ones on request): the
token the processors and torch.argmax would pick from every float32 logit, computing only the logits that can win.

Each processor a greedy search may run maps each token's score on its own, by a non-decreasing function of that
score alone (a penalty, a bias, a ban to -inf, a forced token; SCREENABLE), up to its float32 rounding - except the
exponential decay penalty's EOS scores, s + |s| (factor^n - 1), which fall as a negative s rises once factor^n > 2
(and as a positive one rises where factor^n < 0): those tokens are always candidates (exact_always). So:
  1. candidates: the tokens whose upper bound reaches the row's best lower bound (no other can be the largest logit),
     and exact_always's;
  2. scores: the candidates' exact logits, every other token's upper bound, through the processors;
  3. the argmax of those is the argmax of the exact scores when it is a candidate and every other token's score
     stays below it with a margin (2^-18 of its size and of its bound's: the processors' rounding) - then no
     exact score elsewhere can reach it, and the candidates' scores are exact;
  4. else the tokens that could still reach the winning score become candidates too (their reach against the best
     of the candidates' scores and of every lower bound through the processors: a step whose candidates were all
     banned), and 2-3 run again.
A row whose every other token is -inf after the processors (banned: a ban does not depend on the score) takes the
same first index as from exact scores. The processors run on a tensor of their own at each round (they are pure:
their result depends on the sequences, the length and the scores only).
"""

from __future__ import annotations

import math

import torch

from .logits_process import (EncoderNoRepeatNGram, EncoderRepetitionPenalty, ExponentialDecayLengthPenalty,
                             ForcedToken, MinLength, NoBadWords, NoRepeatNGram, RepetitionPenalty, SequenceBias,
                             SuppressTokens, apply, remove_inf_nan)

SCREENABLE = (RepetitionPenalty, EncoderRepetitionPenalty, SequenceBias, NoRepeatNGram, EncoderNoRepeatNGram,
              NoBadWords, MinLength, ForcedToken, ExponentialDecayLengthPenalty, SuppressTokens)
MARGIN = 2.0 ** -18


def screenable(processors: list) -> bool:
    """Whether a greedy search with these processors can pick its tokens from screened logits."""
    return all(isinstance(p, SCREENABLE) or p is remove_inf_nan for p in processors)


def pick(screened, processors: list, seq: torch.Tensor, cur_len) -> torch.Tensor:
    """The greedy tokens [R] from screened logits [R, V] (see the module docstring); seq, cur_len: the processors'."""
    upper = screened.upper                                                        # [R, V]
    slack = torch.maximum(upper.amax(dim=1).abs(), upper.amin(dim=1).abs()) * MARGIN   # [R]: MARGIN max |upper|
    candidate = (upper >= screened.lower.amax(dim=1, keepdim=True)).any(dim=0)   # [V]
    candidate[exact_always(processors)] = True
    tokens = candidate.nonzero()[:, 0]                                            # [N] ascending
    exact = screened.exact(tokens)                                                # [R, N]
    while True:
        scores = apply(processors, seq, cur_len, upper.clone().index_copy_(1, tokens, exact))   # [R, V]
        best, at = scores.index_select(1, tokens).max(dim=1)                      # [R]: the first largest
        # a row all -inf takes token 0, as torch.argmax
        winner = torch.where(best > -math.inf, tokens[at], 0)                     # [R]
        rest = scores.index_fill_(1, tokens, -math.inf)                           # [R, V] the other tokens'
        top = rest.amax(dim=1)                                                    # [R]
        # x + |x| MARGIN grows with x: the largest other score bounds every other token's reach
        if not torch.isnan(best).any() and ((top == -math.inf) | (top + top.abs() * MARGIN + slack < best)).all():
            return winner
        more = rivals(screened, processors, seq, cur_len, tokens, exact, rest, best)   # [M]
        if not more.numel():
            return winner
        tokens, order = torch.cat((tokens, more)).sort()
        exact = torch.cat((exact, screened.exact(more)), dim=1)[:, order]


def exact_always(processors: list) -> list[int]:
    """The tokens whose processed score need not grow with their logit (the decay penalty's EOS ids): screening
    cannot bound those from the logits' bounds, so their exact logits are always computed."""
    return [i for p in processors if isinstance(p, ExponentialDecayLengthPenalty) for i in p.eos.tolist()]


def rivals(screened, processors: list, seq: torch.Tensor, cur_len, tokens: torch.Tensor, exact: torch.Tensor,
           rest: torch.Tensor, best: torch.Tensor) -> torch.Tensor:
    """The tokens without exact logits yet (rest [R, V]: their scores from upper bounds, -inf at `tokens`) that may
    still reach the winning score: their reach reaches best [R] and the best score the lower bounds give (a row
    whose candidates were all banned: best -inf). -> [M] ascending. Every token where best is NaN."""
    if torch.isnan(best).any():
        return (rest > -math.inf).any(dim=0).nonzero()[:, 0]
    lows = apply(processors, seq, cur_len, screened.lower.clone().index_copy_(1, tokens, exact))   # [R, V]
    floor = torch.maximum(best, lows.amax(dim=1))                                 # [R] <= the winning score
    reach = rest + ((rest.abs() + screened.upper.abs()) * MARGIN).nan_to_num(posinf=0.0)   # -inf stays -inf
    return ((reach >= floor[:, None]) & (reach > -math.inf)).any(dim=0).nonzero()[:, 0]
