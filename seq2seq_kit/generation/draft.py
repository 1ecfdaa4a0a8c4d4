"""Assisted decoding (transformers' `assistant_model`): the guesses of generate's greedy check-several-tokens loop
(prompt_lookup.decode) come from a draft model of the same vocabularies (a smaller checkpoint of the family, or the
model itself loaded in int8), whose tokens the model checks in one pass and keeps where they are greedy search's.
So the tokens are greedy search's whatever the draft says (tests/test_draft.py); a draft that agrees often saves
most of a step per token it guessed right.

The draft encodes the source once and decodes greedily after the output with its own eager cache, which follows the
output: before each guess it keeps the longest prefix of what it was fed that the output still starts with (what
the check confirmed) and feeds the output's tokens after that in one pass; then it steps on its own tokens. A guess
ends before EOS, at `tokens`, or after a token the draft gave less than CONFIDENCE probability (transformers'
assistant_confidence_threshold default): a doubtful guess costs a wider pass and more draft steps than it saves.
The draft's scores are the model's processors' (no_repeat_ngram_size, min_length, ...) over the draft's logits, as
transformers' assistant runs them, so it guesses what the model may take.
"""

from __future__ import annotations

import torch

from .logits_process import apply
from .protocol import Seq2SeqModel

CONFIDENCE = 0.4        # transformers' assistant_confidence_threshold default
DRAFT_TOKENS = 10       # the most a guess holds (transformers' default, 20, is a GPU's: on a CPU a pass's cost
                        # grows with its width; prompt_lookup.next_cap shortens guesses after a miss)


def check_draft(model: Seq2SeqModel, draft: Seq2SeqModel, source_length: int, max_length: int) -> None:
    """The draft must read the same source ids and write the same decoder ids (its guesses are checked as the
    model's tokens), on the model's device, and hold this call's source_length source tokens and max_length - 1
    decoder positions."""
    if draft is model:
        return
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


class Draft:
    """A draft model's guesses for one input (batch size 1): guess(output, tokens), as prompt_lookup.Lookup's."""
    adaptive = True                                 # prompt_lookup.decode shortens its guesses after a miss

    def __init__(self, draft: Seq2SeqModel, input_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                 processors: list, max_length: int, stop: set[int]):
        hidden = draft.encode_unchecked(input_ids, padding_mask)                             # [1, S, D']
        self.draft, self.processors, self.stop = draft, processors, stop
        self.step, self.cache = draft.start_decoding(hidden, padding_mask, 1, max_length=max_length - 1,
                                                     cuda_graph=False)
        self.fed: list[int] = []                        # the ids the draft's cache holds, in order
        self.most = DRAFT_TOKENS                         # the longest guess (prompt_lookup.decode's cap)

    def guess(self, output: list[int], tokens: int) -> list[int]:
        """Up to `tokens` ids the draft's greedy search writes after `output` (see the module's docstring)."""
        kept = next((i for i, (a, b) in enumerate(zip(self.fed, output[:-1])) if a != b),
                    min(len(self.fed), len(output) - 1))
        self.cache.crop(kept)
        del self.fed[kept:]
        logits = self.feed(output[kept:])                                                    # [1, V]
        guessed: list[int] = []
        while True:
            seq = torch.tensor([output + guessed], device=logits.device)                    # [1, L]
            with torch.inference_mode():
                scores = apply(self.processors, seq, seq.shape[1], logits.float())          # [1, V]
            p, token = (float(v) for v in scores.softmax(dim=-1).max(dim=-1))
            if int(token) in self.stop:
                return guessed
            guessed.append(int(token))
            if len(guessed) == tokens or p < CONFIDENCE:
                return guessed
            logits = self.feed(guessed[-1:])

    def feed(self, ids: list[int]) -> torch.Tensor:
        """ids after those the draft's cache holds -> the draft's logits [1, V] after the last of them."""
        fed = torch.tensor([ids], device=self.draft.device)                                 # [1, T]
        self.fed += ids
        if len(ids) == 1:
            return self.step(fed[0], self.cache)
        return self.draft.extend_unchecked(fed, self.cache)[-1:]
