"""compute_transition_scores: the score of each token generate wrote, from its output (sequences, scores,
beam_indices), as transformers' GenerationMixin.compute_transition_scores computes it; inputs that do not come
from one generate call are named, not left to fail inside torch.
"""

from __future__ import annotations

import torch


def compute_transition_scores(sequences: torch.Tensor, scores, beam_indices: torch.Tensor | None = None,
                               normalize_logits: bool = False) -> torch.Tensor:
    """The score of each generated token, as transformers' compute_transition_scores computes it: sequences [N, T]
    with the scores of generate(..., output_scores=True, return_dict_in_generate=True) (per step [R, V]) and, after
    beam search, its beam_indices [N, T - P] -> [N, L] (L: the longest hypothesis' steps, the sequences' last L
    tokens), 0 where a hypothesis had ended. normalize_logits: log_softmax each step's scores first (greedy and
    sampling record processed logits; beam search records log-probabilities already). V is the scores' width (the
    decoder's vocabulary: transformers takes config.vocab_size, which a separate Marian target vocabulary is not)."""
    S, R, V = scores_shape(scores)
    beam_indices = checked_beam_indices(sequences, beam_indices, R, S)
    stacked = torch.stack(tuple(scores)).reshape(S, R * V).transpose(0, 1)        # [R * V, S], transformers' layout
    if normalize_logits:                                        # (in that layout: the same rounding as there)
        stacked = stacked.reshape(R, V, S).log_softmax(dim=1).reshape(R * V, S)
    if beam_indices is None:                                    # greedy / sampling: row n's tokens are its own
        beam_indices = torch.arange(R, device=stacked.device)[:, None].expand(-1, S)
    ended = beam_indices.to(stacked.device) < 0                                    # [N, S']
    length = int((~ended).sum(dim=-1).max())
    ended = ended[:, :length]                                                      # [N, L]
    rows = beam_indices[:, :length].to(stacked.device).clamp(min=0)
    tokens = checked_tokens(sequences, length, V, ended.to(sequences.device)).to(stacked.device)   # [N, L]
    return stacked.gather(0, tokens + rows * V).masked_fill(ended, 0.0)


SCORES_FIX = "pass the .sequences, .scores (or .logits) and .beam_indices of one generate(..., output_scores=True, " \
             "return_dict_in_generate=True) call"


def scores_shape(scores) -> tuple[int, int, int]:
    """(S steps, R rows, V vocabulary) of generate's scores: a non-empty tuple or list of [R, V] tensors."""
    if scores is None or isinstance(scores, (tuple, list)) and not scores:
        raise ValueError("scores is empty: generate with output_scores=True and return_dict_in_generate=True, and "
                         "pass its .scores")
    if not isinstance(scores, (tuple, list)):
        raise ValueError(f"scores must be a tuple of [rows, vocab] tensors, one per step, got {describe(scores)}: "
                         f"{SCORES_FIX}")
    shapes = {tuple(step.shape) if isinstance(step, torch.Tensor) else None for step in scores}
    if len(shapes) != 1 or None in shapes or len(next(iter(shapes))) != 2:
        raise ValueError(f"scores must hold one [rows, vocab] tensor per step, all of one shape, got shapes "
                         f"{sorted(map(str, shapes))}: {SCORES_FIX}")
    return (len(scores), *next(iter(shapes)))


def describe(value) -> str:
    if isinstance(value, torch.Tensor):
        return f"a {str(value.dtype).removeprefix('torch.')} tensor of shape {tuple(value.shape)}"
    return type(value).__name__


def checked_beam_indices(sequences, beam_indices, R: int, S: int) -> torch.Tensor | None:
    """beam_indices [N, S'] checked against sequences [N, T] and the scores' R rows and S steps (None stays None
    where every sequence is its own scores' row: greedy and sampling)."""
    if not isinstance(sequences, torch.Tensor) or sequences.dim() != 2 or sequences.is_floating_point():
        raise ValueError(f"sequences must be generate's .sequences, an integer tensor [rows, length], got "
                         f"{describe(sequences)}: {SCORES_FIX}")
    N = sequences.shape[0]
    if beam_indices is None:
        if N != R:
            raise ValueError(f"sequences has {N} rows and scores {R}, without beam_indices: after beam search "
                             f"pass its .beam_indices; else {SCORES_FIX}")
        return None
    if not isinstance(beam_indices, torch.Tensor) or beam_indices.dim() != 2 or beam_indices.shape[0] != N \
            or beam_indices.is_floating_point():
        raise ValueError(f"beam_indices must be an integer tensor [{N}, steps] (sequences has {N} rows), got "
                         f"{describe(beam_indices)}: {SCORES_FIX}")
    if beam_indices.numel() and not bool(((beam_indices >= -1) & (beam_indices < R)).all()):
        raise ValueError(f"beam_indices holds a row outside the scores' {R} rows (or below -1): {SCORES_FIX}")
    steps = (beam_indices >= 0).sum(dim=-1)                                        # [N]
    if steps.numel() and int(steps.max()) > S:
        raise ValueError(f"beam_indices counts more steps than the scores' {S}: {SCORES_FIX}")
    return beam_indices


def checked_tokens(sequences: torch.Tensor, length: int, V: int, ended: torch.Tensor) -> torch.Tensor:
    """The last `length` tokens of sequences [N, T] -> [N, length], each a row of the scores' V columns where not
    `ended` [N, length] (a finished beam hypothesis: its fill, -1 without a pad_token_id, is not read)."""
    if sequences.shape[1] < length:
        raise ValueError(f"sequences has {sequences.shape[1]} tokens a row, fewer than the {length} steps scored: "
                         f"{SCORES_FIX}")
    tokens = sequences[:, sequences.shape[1] - length:].long().masked_fill(ended, 0)
    if tokens.numel() and not bool(((tokens >= 0) & (tokens < V)).all()):
        raise ValueError(f"sequences holds a token id outside the scores' vocabulary of {V}: {SCORES_FIX}")
    return tokens
