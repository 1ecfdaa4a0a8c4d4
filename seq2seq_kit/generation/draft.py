"""Assisted decoding (transformers' `assistant_model`): the guesses of generate's check-several-tokens loop
(prompt_lookup.decode) come from a draft model of the same vocabularies (a smaller checkpoint of the family, or the
model itself loaded in int8), whose tokens the model checks in one pass. A draft that agrees often saves most of a
step per token it guessed right.

Greedy search keeps the guessed tokens where they are greedy search's: its tokens are greedy search's whatever the
draft says. Sampling is transformers' speculative sampling, draw for draw (speculative_draw): the draft samples its
guess, each token drawn from its own processed scores q; the pass gives the model's scores p at every position; each
guessed token is kept with probability min(1, p / q) (one uniform draw per guessed token), and after the first
rejected one a token is drawn from max(p - q, 0), after a guess kept whole from p. The tokens follow the model's
distribution, but are not plain sampling's: transformers' own are the reference (tests/test_draft.py).

The draft encodes the source once and decodes after the output with its own eager cache, which follows the output:
before each guess it keeps the longest prefix of what it was fed that the output still starts with (what the check
confirmed) and feeds the output's tokens after that in one pass; then it steps on its own tokens. Its scores are the
model's processors (no_repeat_ngram_size, min_length, the sampling ones, ...) over the draft's logits, then the
sampling ones (temperature, top-k, ...) and renormalize_logits' again, as transformers' assistant runs them (its
generate merges the model's list in before appending its own). A guess ends at EOS (included), at its length, or
after a token the draft gave less than the confidence threshold's probability. transformers 5.25, where it is not
given a decoder_attention_mask, feeds its encoder-decoder assistant the whole output again after the part of its
cache it kept (its _prefill slices the input only where that mask is as long), so its draft guesses from a garbled
prefix and other tokens are drawn; this draft reads the output as it is, which is transformers' own run given
decoder_input_ids=[[start]], decoder_attention_mask=[[1]] (tests/test_draft.py).

Settings, read from the draft's generation_config as transformers reads its assistant's:
  num_assistant_tokens            the longest guess (20)
  num_assistant_tokens_schedule   "constant": always that long; "heuristic": 2 tokens longer after a guess kept
                                  whole, else 1 shorter (at least 1), written back to the draft's generation_config
                                  (the next call starts there); "heuristic_transient": the same within one call
  assistant_confidence_threshold  0.4 (where unset); 0: off
With scikit-learn installed, transformers also retunes the threshold after each pass from an ROC curve of the
draft's probabilities; seq2seq_kit does not (sampled tokens equal transformers' where scikit-learn is absent;
greedy's are equal either way). Greedy search with neither length setting given guesses up to DRAFT_TOKENS,
shorter after a miss (prompt_lookup.Shortening): cheaper on a CPU, the same tokens.
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .logits_process import apply, sampling_processors
from .prompt_lookup import Shortening
from .protocol import Seq2SeqModel
from .sampling import SampleSearch

CONFIDENCE = 0.4        # transformers' assistant_confidence_threshold default
TOKENS = 20             # transformers' num_assistant_tokens default
DRAFT_TOKENS = 10       # greedy's longest guess when the draft sets no length (transformers' 20 is a GPU's: on a
                        # CPU a pass's cost grows with its width)
SCHEDULES = ("constant", "heuristic", "heuristic_transient")


def check_draft(model: Seq2SeqModel, draft: Seq2SeqModel, source_length: int, max_length: int) -> None:
    """The draft must read the same source ids and write the same decoder ids (its guesses are checked as the
    model's tokens), on the model's device, and hold this call's source_length source tokens and max_length - 1
    decoder positions; its generation_config's settings must be valid."""
    if draft is not model:
        check_pairing(model, draft, source_length, max_length)
    settings = draft.generation_config or GenerationConfig()
    tokens, schedule = settings.num_assistant_tokens, settings.num_assistant_tokens_schedule
    if tokens is not None and not (isinstance(tokens, int) and not isinstance(tokens, bool) and tokens >= 1):
        raise ValueError(f"assistant_model.generation_config.num_assistant_tokens must be an integer >= 1, got "
                         f"{tokens!r}")
    if schedule is not None and schedule not in SCHEDULES:
        raise ValueError(f"assistant_model.generation_config.num_assistant_tokens_schedule must be one of "
                         f"{', '.join(map(repr, SCHEDULES))}, got {schedule!r}")
    threshold = settings.assistant_confidence_threshold
    if threshold is not None and not (isinstance(threshold, (int, float)) and not isinstance(threshold, bool)
                                      and threshold >= 0):
        raise ValueError(f"assistant_model.generation_config.assistant_confidence_threshold must be a number >= 0 (0: "
                         f"off), got {threshold!r}")


def check_pairing(model: Seq2SeqModel, draft: Seq2SeqModel, source_length: int, max_length: int) -> None:
    if not all(hasattr(draft, name) for name in ("encode_unchecked", "start_decoding", "extend_unchecked")):
        raise TypeError(f"assistant_model must be a seq2seq_kit model (AutoModelForSeq2SeqLM.from_pretrained(path), "
                        f"dtype='int8' for the model's own int8 copy), got a {type(draft).__module__.split('.')[0]} "
                        f"{type(draft).__name__}")
    for name in ("vocab_size", "decoder_vocab_size"):
        ours, theirs = getattr(model.config, name), getattr(draft.config, name, None)
        if ours != theirs:
            raise ValueError(f"assistant_model has {name}={theirs} but the model {ours}: the draft must share the "
                             "model's tokenizer and vocabularies (a smaller checkpoint of the same family, or the "
                             "model loaded with dtype='int8')")
    positions = draft.config.max_position_embeddings
    if max(source_length, max_length - 1) > positions:
        raise ValueError(f"assistant_model has max_position_embeddings={positions}, fewer than this call needs (a "
                         f"source of {source_length} tokens, max_length {max_length}): truncate the input and lower "
                         "max_new_tokens, or use a draft with as many positions as the model")
    if draft.device != model.device:
        raise ValueError(f"assistant_model is on {draft.device} but the model is on {model.device}; move it with "
                         ".to(model.device)")


class Schedule:
    """transformers' guess lengths (`tokens`), num_assistant_tokens_schedule's rule: a heuristic one grows by 2
    after a pass that kept its whole guess (a pass without one counts), else shrinks by 1."""

    def __init__(self, tokens: int, kind: str):
        self.tokens, self.kind = tokens, kind

    def learn(self, guessed: list[int], taken: list[int]) -> None:
        if self.kind != "constant":
            self.tokens = self.tokens + 2 if len(taken) - 1 == len(guessed) else max(1, self.tokens - 1)


class Draft:
    """A draft model's guesses for one input (batch size 1), for prompt_lookup.decode: guess(output, room),
    learn(guessed, taken), scores (sampling: the draft's scores of its last guess [g, V]) and choose."""

    def __init__(self, draft: Seq2SeqModel, input_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                 search: SampleSearch):
        hidden = draft.encode_unchecked(input_ids, padding_mask)                             # [1, S, D']
        self.draft, self.search, self.stop = draft, search, set(search.cfg.eos_token_id or [])
        # transformers' assistant runs the model's processors, then its own sampling ones again (its generate appends
        # them after merging the model's list in): a temperature divides the draft's logits twice
        self.processors = search.processors + sampling_processors(search.cfg, draft.device)
        self.sampling = search.cfg.do_sample
        self.step, self.cache = draft.start_decoding(hidden, padding_mask, 1, max_length=search.cfg.max_length - 1,
                                                     cuda_graph=False)
        self.fed: list[int] = []                        # the ids the draft's cache holds, in order
        self.settings = draft.generation_config or GenerationConfig()
        tokens, kind = self.settings.num_assistant_tokens, self.settings.num_assistant_tokens_schedule
        self.lengths = Shortening(DRAFT_TOKENS) if not self.sampling and tokens is None and kind is None \
            else Schedule(tokens or TOKENS, kind or "constant")
        threshold = self.settings.assistant_confidence_threshold
        self.threshold = CONFIDENCE if threshold is None else threshold
        self.scores: torch.Tensor | None = None

    def guess(self, output: list[int], room: int) -> list[int]:
        """Up to min(the length's, room) ids the draft writes after `output` (see the module's docstring)."""
        tokens = min(self.lengths.tokens, room)
        kept = next((i for i, (a, b) in enumerate(zip(self.fed, output[:-1])) if a != b),
                    min(len(self.fed), len(output) - 1))
        self.cache.crop(kept)
        del self.fed[kept:]
        logits = self.feed(output[kept:])                                                    # [1, V]
        guessed, scores = [], []
        while True:
            seq = torch.tensor([output + guessed], device=logits.device)                    # [1, L]
            with torch.inference_mode():
                step_scores = apply(self.processors, seq, seq.shape[1], logits.float())   # [1, V]
            probs = step_scores.softmax(dim=-1)
            token = int(self.search.sample(step_scores, 1)[0, 0]) if self.sampling else int(probs.argmax())
            guessed.append(token)
            scores.append(step_scores)
            if token in self.stop or len(guessed) == tokens or float(probs[0, token]) < self.threshold:
                break
            logits = self.feed(guessed[-1:])
        self.scores = torch.cat(scores)                                                   # [g, V]
        return guessed

    def learn(self, guessed: list[int], taken: list[int]) -> None:
        """What a pass took: the next guess's length; a "heuristic" schedule's written back to the draft's config."""
        self.lengths.learn(guessed, taken)
        if self.settings.num_assistant_tokens_schedule == "heuristic":          # (the draft's config: it has one)
            self.settings.num_assistant_tokens = self.lengths.tokens

    def choose(self, search: SampleSearch, scores: torch.Tensor, guessed: list[int]) -> list[int]:
        """A sampled pass's tokens: speculative_draw of the model's scores [1 + g, V] against the draft's."""
        return speculative_draw(scores, self.scores, guessed, search.generator)

    def feed(self, ids: list[int]) -> torch.Tensor:
        """ids after those the draft's cache holds -> the draft's logits [1, V] after the last of them."""
        fed = torch.tensor([ids], device=self.draft.device)                                 # [1, T]
        self.fed += ids
        if len(ids) == 1:
            return self.step(fed[0], self.cache)
        return self.draft.extend_unchecked(fed, self.cache)[-1:]


def speculative_draw(scores: torch.Tensor, drafted: torch.Tensor, guessed: list[int], generator) -> list[int]:
    """transformers' _speculative_sampling for one input, draw for draw: scores [1 + g, V] the model's processed
    scores at the pass's positions, drafted [g, V] the draft's at its guessed tokens -> the tokens kept (guessed[:n],
    n the guessed tokens before the first rejected one) and the one drawn after them. generator: the search's (None:
    the device's default, as transformers' torch.rand_like and torch.multinomial draw)."""
    g = len(guessed)
    index = torch.tensor(guessed, device=scores.device)[:, None]                               # [g, 1]
    q, p = drafted.softmax(dim=-1), scores.softmax(dim=-1)                                     # [g, V], [1 + g, V]
    ratio = p[:g].gather(1, index)[:, 0] / q.gather(1, index)[:, 0]                             # [g]
    accepted = torch.rand(ratio.shape, generator=generator, device=ratio.device) < ratio    # (a token p gives 0: never)
    n = int(((~accepted).cumsum(dim=0) < 1).sum())
    last = p[n]                                                                                  # [V]
    if n < g:
        last = (last - q[n]).clamp(min=0)
        last = last / last.sum()
    return guessed[:n] + [int(torch.multinomial(last[None], 1, generator=generator))]
