"""Prompt lookup decoding (transformers' `prompt_lookup_num_tokens`): greedy search that checks several tokens per
pass of the decoder, for one input.

A guess of the next tokens is copied from text the output is likely to repeat: the output's last n tokens (n =
max_matching_ngram_size, 2 by default, down to 1) are looked up in the source, then in the output itself, and the
(up to prompt_lookup_num_tokens) tokens that followed their first occurrence there are the guess. One pass of the
decoder over the last token and the guess (the model's extend_unchecked) gives the logits of every position; the
search takes its steps from them one at a time, as from single steps, while its token equals the guessed one. The
first that differs ends the pass (that token is still right: its position's input was), and the cache forgets the
guessed tokens after it. So the tokens are greedy search's whatever the guess (a pass's logits are the steps' to
float rounding; not an int8 model's, whose layers quantize a pass's positions with one scale, as a batch's rows); a
wrong guess costs only the wider pass. transformers looks the guess up in the output alone (its
`input_ids`, the decoder's), which a summary seldom repeats and no_repeat_ngram_size forbids repeating, while it
copies the source all the time; looking in the source first changes which tokens are checked together, not the
tokens (nor a score).

A decode step streams every weight from memory for its one row (models/gemv.c): a pass over 1 + g positions reads
them once for all of them, so an accepted guessed token saves most of a step (distilbart on 2 CPU cores: a step
~16 ms, a pass of 2-4 positions ~18, of 6 ~23, of 11 ~31). Wide passes that fail cost that much more, so after a
miss the next guess is short (next_cap); the plain step runs where there is no guess.
"""

from __future__ import annotations

import time
import warnings

import torch

from .config import GenerationConfig
from .protocol import EagerCache, ModelConfig, Seq2SeqModel, Step
from .sampling import SampleSearch

DEFAULT_NGRAM = 2        # transformers' max_matching_ngram_size when unset (or 0)


def runs(cfg: GenerationConfig) -> bool:
    """Whether generate decodes with prompt lookup: prompt_lookup_num_tokens set, one row per input (greedy: config
    refuses sampling with it; with beams it does nothing, as in transformers)."""
    return cfg.prompt_lookup_num_tokens is not None and cfg.num_beams == 1


def used(cfg: GenerationConfig, batch: int, traced: bool, cuda_graph: bool | None) -> bool:
    """Whether generate decodes with prompt lookup (runs), after its checks (check); set beside beam search, where
    it does nothing, a warning says so (transformers logs one)."""
    if not runs(cfg):
        if cfg.prompt_lookup_num_tokens is not None:
            warnings.warn(f"prompt_lookup_num_tokens runs with greedy search (num_beams=1); this call runs beam "
                          f"search (num_beams={cfg.num_beams}), which ignores it, as transformers does", UserWarning,
                          stacklevel=5)                       # the caller of model.generate
        return False
    check(batch, traced, cuda_graph)
    return True


def check(batch: int, traced: bool, cuda_graph: bool | None) -> None:
    """What prompt lookup does not run with: more than one input (as transformers' assisted generate), recorded
    attentions / hidden states, a CUDA graph asked for (it decodes eagerly: a graph's step is one token per row)."""
    if batch != 1:
        raise ValueError(f"prompt_lookup_num_tokens checks one input's guesses (batch size 1, as transformers' "
                         f"assisted generate), got {batch} inputs: generate them one at a time (a pipeline: "
                         "batch_size=1)")
    if traced:
        raise ValueError("output_attentions / output_hidden_states are not recorded with prompt_lookup_num_tokens "
                         "(a pass checks several positions): leave one of them out")
    if cuda_graph:
        raise ValueError("prompt_lookup_num_tokens decodes eagerly (a CUDA graph's step feeds one token per row): "
                         "leave cuda_graph unset or pass False")


def source_ids(config: ModelConfig, input_ids: torch.Tensor, padding_mask: torch.Tensor | None) -> list[int]:
    """The one input's ids [1, S] without its padding, where guesses are looked up first; [] where the decoder has a
    vocabulary of its own (the source's ids are other tokens)."""
    if not config.shared_embeddings:
        return []
    ids = input_ids[0] if padding_mask is None else input_ids[0][padding_mask[0]]
    return ids.tolist()


class Lookup:
    """Guesses for one input: its source's n-grams (n = 1 .. ngram) indexed once, where each first occurs with an id
    after it; the output, short, is searched each time."""

    def __init__(self, source: list[int], ngram: int, stop: set[int]):
        self.source, self.ngram, self.stop = source, ngram, stop
        self.first: dict[tuple[int, ...], int] = {}              # n-gram -> the index after its first occurrence
        for n in range(1, ngram + 1):
            for i in range(len(source) - n):
                self.first.setdefault(tuple(source[i:i + n]), i + n)

    def guess(self, output: list[int], tokens: int) -> list[int]:
        """Up to `tokens` ids that may follow `output`: those after the first occurrence of output's last n ids (n
        from ngram down to 1) in the source, else in the output before its end; cut before the first stop id (EOS:
        a guess never runs past the end). [] when nothing matches."""
        for n in range(min(self.ngram, len(output) - 1), 0, -1):
            tail = tuple(output[-n:])
            after = self.first.get(tail)
            found = self.source[after:after + tokens] if after is not None else next(
                (output[i + n:i + n + tokens] for i in range(len(output) - n) if tuple(output[i:i + n]) == tail), [])
            cut = next((j for j, t in enumerate(found) if t in self.stop), len(found))
            if cut:
                return found[:cut]
        return []


def next_cap(cap: int, most: int, guessed: list[int], taken: list[int]) -> int:
    """How many tokens the next guess may hold: twice as many (up to `most`) after a guess that held whole, else
    one more than held. A pass's cost grows with its width past a few tokens (each weight is read once for all of
    them, but the products grow), and after a miss the output has often left the copied text: a short guess costs
    little and, if it holds, the next may be long again. (Greedy's tokens do not depend on it.)"""
    held = next((i for i, (a, b) in enumerate(zip(guessed, taken)) if a != b), min(len(guessed), len(taken)))
    return min(most, 2 * cap) if held == len(guessed) else held + 1


def decode(model: Seq2SeqModel, step: Step, cache: EagerCache, search: SampleSearch, cfg: GenerationConfig,
           source: list[int], screened: bool, streamer=None, ends: float = float("inf")) -> None:
    """generate's greedy loop for one input with cfg.prompt_lookup_num_tokens, until search.done: each pass feeds
    the last token and a guess [1, 1 + g] to model.extend_unchecked (without a guess: `step`, generate's), steps the
    search on its positions' logits while the guess holds, and crops the cache to the tokens fed that were right.
    source: the input's ids (unpadded; [] where the decoder's vocabulary is its own); screened: ScreenedLogits where
    the model screens the pass's rows (as `step` may).
    streamer: the tokens each pass took, [1, n] (as transformers puts them); ends: the time.monotonic() past which
    the pass running is the last (max_time)."""
    lookup = Lookup(source, cfg.max_matching_ngram_size or DEFAULT_NGRAM, set(cfg.eos_token_id or []))
    cap = cfg.prompt_lookup_num_tokens                        # this pass's most guessed tokens (see next_cap)
    while not search.done:
        output = search.seq[0, :int(search.cur_len)].tolist()
        room = cfg.max_length - len(output) - 1               # the guessed tokens that may still be kept
        guessed = lookup.guess(output, min(cap, room)) if room > 0 else []
        start = cache.length
        if guessed:
            fed = torch.tensor([output[-1:] + guessed], device=search.seq.device)           # [1, 1 + g]
            logits = model.extend_unchecked(fed, cache, screened)                           # [1 + g, V]
        else:                                                 # nothing to check: the plain step (its own kernels)
            logits = step(search.tokens(), cache)                                           # [1, V]
        timed_out = time.monotonic() > ends
        taken = []
        for i in range(len(guessed) + 1):
            search.advance(logits[i:i + 1])                   # greedy: rows never move (no cache reorder)
            taken.append(int(search.tokens()))
            if search.done or i == len(guessed) or taken[-1] != guessed[i]:
                break
        cache.crop(start + len(taken))                        # the last token and the guessed ones it confirmed
        if guessed:
            cap = next_cap(cap, cfg.prompt_lookup_num_tokens, guessed, taken)
        if streamer is not None:
            streamer.put(torch.tensor([taken]))
        if timed_out:
            search.end()
