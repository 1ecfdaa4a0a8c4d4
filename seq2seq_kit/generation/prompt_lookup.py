"""Prompt lookup decoding (transformers' `prompt_lookup_num_tokens`): greedy search or sampling that checks
several tokens per pass of the decoder, for one input. The same loop (decode) checks a draft model's guesses
(generation/draft.py).

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

Sampling is transformers' own assisted sampling, draw for draw: its guesses (sampled_guess: the output alone, cut
where the processors would ban a token of scores of ones), every position of a pass processed as if the guess held
(pass_scores) and drawn in one torch.multinomial (drawn), the tokens taken while they equal the guess. Its tokens
are not plain sampling's (a pass draws differently), so they must be transformers' to be checked at all, and the draws a
pass makes depend on its guess: the guess must be transformers'. transformers checks stop strings only once a
pass's tokens are taken, so where a string ends mid-pass its output goes on to the pass's end; here it ends where
the string does (a prefix of transformers' output), as for greedy.

A decode step streams every weight from memory for its one row (models/gemv.c): a pass over 1 + g positions reads
them once for all of them, so an accepted guessed token saves most of a step (distilbart on 2 CPU cores: a step
~16 ms, a pass of 2-4 positions ~18, of 6 ~23, of 11 ~31). Wide passes that fail cost that much more, so after a
miss greedy's next guess is short (Shortening); the plain step runs where there is no guess.
"""

from __future__ import annotations

import math
import time

import torch

from ..user_warnings import warn
from .config import GenerationConfig
from .logits_process import apply
from .protocol import EagerCache, ModelConfig, Seq2SeqModel, Step
from .sampling import SampleSearch

DEFAULT_NGRAM = 2        # transformers' max_matching_ngram_size when unset (or 0)


def runs(cfg: GenerationConfig, assisted: bool = False) -> bool:
    """Whether generate checks guessed tokens per pass: prompt_lookup_num_tokens set or a draft model given
    (assisted), with num_beams 1, greedy or sampling (with beams they do nothing, as in transformers)."""
    return (cfg.prompt_lookup_num_tokens is not None or assisted) and cfg.num_beams == 1


def used(cfg: GenerationConfig, batch: int, traced: bool, cuda_graph: bool | None, assisted: bool = False) -> bool:
    """Whether generate decodes with guesses (runs), after their checks (check); set beside beam search, where they
    do nothing, a warning says so (transformers logs one). assisted: an assistant_model given."""
    if not runs(cfg, assisted):
        warn_if_ignored(cfg, assisted)
        return False
    check(batch, cfg.num_return_sequences, traced, cuda_graph, "assistant_model" if assisted else
          "prompt_lookup_num_tokens")
    if assisted and cfg.prompt_lookup_num_tokens is not None:
        raise ValueError("assistant_model and prompt_lookup_num_tokens both guess the next tokens; pass one of them")
    return True


def warn_if_ignored(cfg: GenerationConfig, assisted: bool = False) -> None:
    """prompt_lookup_num_tokens (or an assistant_model) beside beam search, which ignores it (as transformers, which
    logs so): a UserWarning saying so."""
    if (cfg.prompt_lookup_num_tokens is not None or assisted) and not runs(cfg, assisted):
        name = "assistant_model" if assisted else "prompt_lookup_num_tokens"
        warn(f"{name} runs with greedy search or sampling (num_beams=1); this call runs beam search "
             f"(num_beams={cfg.num_beams}), which ignores it, as transformers does")


def check(batch: int, num_return_sequences: int, traced: bool, cuda_graph: bool | None,
          name: str = "prompt_lookup_num_tokens") -> None:
    """What guessed tokens (`name`'s) are not checked with: more than one input or output (as transformers'
    assisted generate), recorded attentions / hidden states, a CUDA graph asked for (it decodes eagerly: a graph's
    step is one token per row)."""
    if batch != 1:
        raise ValueError(f"{name} checks one input's guesses (batch size 1, as transformers' assisted generate), got "
                         f"{batch} inputs: generate them one at a time (a pipeline: batch_size=1)")
    if num_return_sequences != 1:
        raise ValueError(f"{name} checks one sequence's guesses (batch size 1, as transformers' assisted generate), "
                         f"got num_return_sequences={num_return_sequences}: generate one at a time, or leave {name} "
                         "out")
    if traced:
        raise ValueError(f"output_attentions / output_hidden_states are not recorded with {name} (a pass checks "
                         "several positions): leave one of them out")
    if cuda_graph:
        raise ValueError(f"{name} decodes eagerly (a CUDA graph's step feeds one token per row): leave cuda_graph "
                         "unset or pass False")


def lookup(cfg: GenerationConfig, config: ModelConfig, input_ids: torch.Tensor | None,
           padding_mask: torch.Tensor | None, search: SampleSearch) -> Lookup | SampledLookup:
    """The guesser for cfg's prompt_lookup_num_tokens: greedy's Lookup of generate's input (its ids [1, S], None
    where only encoder_outputs were given: guesses from the output alone), or sampling's SampledLookup."""
    ngram, stop, most = cfg.max_matching_ngram_size or DEFAULT_NGRAM, set(cfg.eos_token_id or []), \
        cfg.prompt_lookup_num_tokens
    if cfg.do_sample:
        return SampledLookup(ngram, stop, most, cfg.max_length, banned_by(search, config.decoder_vocab_size))
    source = [] if input_ids is None else source_ids(config, input_ids, padding_mask)
    return Lookup(source, ngram, stop, most)


def source_ids(config: ModelConfig, input_ids: torch.Tensor, padding_mask: torch.Tensor | None) -> list[int]:
    """The one input's ids [1, S] without its padding, where guesses are looked up first; [] where the decoder has a
    vocabulary of its own (the source's ids are other tokens)."""
    if not config.shared_embeddings:
        return []
    ids = input_ids[0] if padding_mask is None else input_ids[0][padding_mask[0]]
    return ids.tolist()


class Lookup:
    """Greedy's guesses for one input: its source's n-grams (n = 1 .. ngram) indexed once, where each first occurs
    with an id after it; the output, short, is searched each time. Guesses hold up to `most` tokens, fewer after a
    miss (Shortening)."""

    def __init__(self, source: list[int], ngram: int, stop: set[int], most: int):
        self.source, self.ngram, self.stop = source, ngram, stop
        self.lengths = Shortening(most)
        self.first: dict[tuple[int, ...], int] = {}              # n-gram -> the index after its first occurrence
        for n in range(1, ngram + 1):
            for i in range(len(source) - n):
                self.first.setdefault(tuple(source[i:i + n]), i + n)

    def guess(self, output: list[int], room: int) -> list[int]:
        """The next pass's guess after `output`, at most `room` tokens (those max_length leaves to check): find's."""
        return self.find(output, min(self.lengths.tokens, room))

    def learn(self, guessed: list[int], taken: list[int]) -> None:
        """What the pass after a guess took: the next guess's length (Shortening)."""
        self.lengths.learn(guessed, taken)

    def find(self, output: list[int], tokens: int) -> list[int]:
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


class Shortening:
    """How many tokens greedy's next guess may hold (`tokens`): twice as many (up to `most`) after a guess that held
    whole, else one more than held. A pass's cost grows with its width past a few tokens (each weight is read once
    for all of them, but the products grow), and after a miss the output has often left the copied text: a short
    guess costs little and, if it holds, the next may be long again. (Greedy's tokens do not depend on it.)"""

    def __init__(self, most: int):
        self.most = self.tokens = most

    def learn(self, guessed: list[int], taken: list[int]) -> None:
        if not guessed:
            return
        held = next((i for i, (a, b) in enumerate(zip(guessed, taken)) if a != b), min(len(guessed), len(taken)))
        self.tokens = min(self.most, 2 * self.tokens) if held == len(guessed) else held + 1


def sampled_guess(output: list[int], tokens: int, ngram: int, max_length: int, stop: set[int],
                  forbidden) -> list[int]:
    """The guess of a sampled pass: transformers' PromptLookupCandidateGenerator.get_candidates, exactly (each
    guessed position takes its own draw from the generator, so another guess would leave transformers' draws). The
    (up to `tokens`) ids after the first earlier occurrence of output's last n ids (n from ngram down to 1) in the
    output, cut before the first that forbidden(the ids before it, it) says the processors ban (none held: the next
    occurrence), then before the first stop id; [] when nothing matches, or one token short of max_length."""
    if len(output) + 1 == max_length:
        return []
    for n in range(min(ngram, len(output) - 1), 0, -1):
        tail = output[-n:]
        for i in range(len(output) - n):
            if output[i:i + n] != tail:
                continue
            found = output[i + n:i + n + tokens]
            held = next((j for j, t in enumerate(found) if forbidden(output + found[:j], t)), len(found))
            if held:
                return found[:next((j for j, t in enumerate(found[:held]) if t in stop), held)]
    return []


class SampledLookup:
    """A sampled pass's guesses, sampled_guess's: always up to `most` tokens, as transformers guesses (each guessed
    position takes a draw, so the guess's length must be transformers' too), whatever the pass before took."""

    def __init__(self, ngram: int, stop: set[int], most: int, max_length: int, forbidden):
        self.ngram, self.stop, self.most, self.max_length, self.forbidden = ngram, stop, most, max_length, forbidden

    def guess(self, output: list[int], room: int) -> list[int]:
        return sampled_guess(output, self.most, self.ngram, self.max_length, self.stop, self.forbidden)

    def learn(self, guessed: list[int], taken: list[int]) -> None:
        pass

    @staticmethod
    def choose(search: SampleSearch, scores: torch.Tensor, guessed: list[int]) -> list[int]:
        """The tokens a sampled pass takes (transformers' assisted sampling without a draft's scores): every one of
        its 1 + len(guessed) positions drawn in one torch.multinomial (drawn), kept while they equal the guess,
        the first that differs included."""
        tokens = drawn(search, scores, len(guessed)).tolist()
        return tokens[:next((i for i, (t, g) in enumerate(zip(tokens, guessed)) if t != g), len(guessed)) + 1]


def banned_by(search: SampleSearch, vocab_size: int):
    """sampled_guess's `forbidden` for this search: whether its processors (the sampling ones included) set a score
    of ones [1, V] to -inf (or float32's lowest) for `token` after `ids` (transformers' probe of its guesses)."""
    def forbidden(ids: list[int], token: int) -> bool:
        seq = torch.tensor([ids], device=search.seq.device)                                   # [1, L]
        ones = torch.ones((1, vocab_size), device=search.seq.device)
        with torch.inference_mode():
            score = float(apply(search.processors, seq, len(ids), ones)[0, token])
        return score in (-math.inf, torch.finfo(torch.float32).min)
    return forbidden


def pass_scores(search: SampleSearch, logits: torch.Tensor, output: list[int], guessed: list[int]) -> torch.Tensor:
    """A sampled pass's scores, as transformers' assisted generate processes them: each position i's from its logits
    (logits [N, V], N <= 1 + len(guessed)), the processors seeing the output and guessed[:i] -> [N, V]."""
    seq, length = search.seq.clone(), len(output)                                            # [1, max_length]
    seq[0, length:length + logits.shape[0] - 1] = torch.tensor(guessed[:logits.shape[0] - 1])
    with torch.inference_mode():          # the processors write in place (the model's logits: inference tensors)
        logits = logits.to(torch.float32, copy=True)          # on a copy: the logits are recorded as they came
        return torch.cat([apply(search.processors, seq, length + i, logits[i:i + 1])
                          for i in range(logits.shape[0])])                                   # [N, V]


def drawn(search: SampleSearch, scores: torch.Tensor, guessed: int) -> torch.Tensor:
    """Every position of a pass that checked `guessed` tokens drawn in one torch.multinomial, as transformers draws
    them (scores [N, V]; positions past max_length, whose logits were not computed, drawn from even scores: theirs
    is never kept, but their draws leave the generator as transformers' do) -> tokens [1 + guessed]."""
    unseen = scores.new_zeros((1 + guessed - scores.shape[0], scores.shape[1]))
    return search.sample(torch.cat((scores, unseen)), 1)[:, 0]


def decode(model: Seq2SeqModel, step: Step, cache: EagerCache, search: SampleSearch, cfg: GenerationConfig,
           guesser, screened: bool, streamer=None, ends: float = float("inf")) -> None:
    """generate's greedy or sampling loop for one input with guessed tokens, until search.done: each pass feeds the
    last token and a guess [1, 1 + g] to model.extend_unchecked (without a guess: `step`, generate's), steps the
    search on its positions' logits while the guess holds, and crops the cache to the tokens fed that were right.
    guesser: guess(output, room) -> the next guess (room: the guessed tokens max_length leaves to be kept; a
    sampled lookup's guess may run past it), learn(guessed, taken) after each pass and, for sampling,
    choose(search, scores, guessed) -> the tokens a pass with a guess takes: greedy's Lookup, a draft model's
    draft.Draft, sampling's SampledLookup (transformers' guesses).
    screened: ScreenedLogits where the model screens the pass's rows (as `step` may).
    streamer: the tokens each pass took, [1, n] (as transformers puts them); ends: the time.monotonic() past which
    the pass running is the last (max_time)."""
    while not search.done:
        output = search.seq[0, :int(search.cur_len)].tolist()
        room = cfg.max_length - len(output) - 1               # the guessed tokens that may still be kept
        guessed = guesser.guess(output, room) if room > 0 else []
        fed = guessed[:room]                                  # (a sampled guess may run past max_length)
        start = cache.length
        if fed:
            tokens = torch.tensor([output[-1:] + fed], device=search.seq.device)             # [1, 1 + g]
            logits = model.extend_unchecked(tokens, cache, screened)                        # [1 + g, V]
        else:                                                 # nothing to check: the plain step (its own kernels)
            logits = step(search.tokens(), cache)                                           # [1, V]
        timed_out = time.monotonic() > ends
        if cfg.do_sample:
            taken = take_drawn(search, logits, output, guessed, guesser)
        else:
            taken = take_greedy(search, logits, guessed)
        cache.crop(start + len(taken))                        # the last token and the guessed ones it confirmed
        guesser.learn(guessed, taken)
        if streamer is not None:
            streamer.put(torch.tensor([taken]))
        if timed_out:
            search.end()


def take_greedy(search: SampleSearch, logits, guessed: list[int]) -> list[int]:
    """Greedy steps on a pass's logits [1 + len(guessed), V] (or their ScreenedLogits) one position at a time while
    they take the guessed tokens -> the tokens taken (those that held and the one after them; fewer where the search
    ended)."""
    taken = []
    for i in range(len(guessed) + 1):
        search.advance(logits[i:i + 1])                       # greedy: rows never move (no cache reorder)
        taken.append(int(search.tokens()))
        if search.done or i == len(guessed) or taken[-1] != guessed[i]:
            break
    return taken


def take_drawn(search: SampleSearch, logits: torch.Tensor, output: list[int], guessed: list[int],
               guesser) -> list[int]:
    """take_greedy for sampling: the pass's scores (pass_scores), the tokens the guesser chooses from them (the
    plain draw without a guess), each taken as a step's (scores and logits recorded) until the search ends."""
    scores = pass_scores(search, logits, output, guessed)                                     # [N, V]
    tokens = guesser.choose(search, scores, guessed) if guessed else drawn(search, scores, 0).tolist()
    taken = []
    for i, token in enumerate(tokens[:logits.shape[0]]):    # (the search ends at max_length before)
        search.advance_drawn(logits[i:i + 1], scores[i:i + 1], torch.tensor([token], device=scores.device))
        taken.append(token)
        if search.done:
            break
    return taken
