"""Tokens drawn as transformers' sampling draws them, torch.multinomial over softmax(scores): eagerly (`draw`), or
with no host read (`draw_on_device`: what a CUDA graph of the whole sampling step captures).

torch.multinomial without replacement (and any single draw) is, in ATen (Distributions.cpp, multinomial_out), a
check of the probabilities that reads the host (no value inf, NaN or < 0; no row summing to 0), then q ~ Exp(1)
drawn from the generator into a tensor like the probabilities, q = probs / q, and argmax (one draw) or top-k (n
draws, best first) of q along the vocabulary (the Gumbel-max trick). draw_on_device runs those very ops: the same
indices, the generator left in the same state (tests/test_sampling.py compares them with torch.multinomial), and
instead of the check a fault code on the device, which the search reads with its stop flag (SearchProgress.stopped)
and raises as draw does.
"""

from __future__ import annotations

import math

import torch

CHECK = "probability tensor contains either `inf`, `nan` or element < 0"      # what multinomial's check says
# the settings that can empty a row alone first, `min_length` (it bans only EOS) last: a server names the first of
# them its client sent as the one at fault
BANNED = ("the settings that ban tokens (`no_repeat_ngram_size`, `encoder_no_repeat_ngram_size`, `bad_words_ids`, "
          "`suppress_tokens`, `begin_suppress_tokens`, a `sequence_bias` of -inf, `forced_eos_token_id` beside a "
          "banned EOS) left no token to draw")
OVERFLOWED = ("`temperature` near 0, `repetition_penalty` near 0, `encoder_repetition_penalty` far above 1, an "
              "`exponential_decay_length_penalty` factor far from 1 or a `sequence_bias` of +inf makes a score +inf")
CAUSES = {   # fault code (fault_code) -> what the message names
    1: f"every score of a row is -inf: {BANNED}, or a `temperature` near 0 overflowed every score (`min_length`, "
       "`min_new_tokens` ban EOS beside them)",
    # log_softmax of a row of -inf, or of one with +inf
    2: f"every score of a row is NaN: either {BANNED} (`min_length`, `min_new_tokens` ban EOS beside them), or the "
       f"scores overflowed float32 ({OVERFLOWED}); `renormalize_logits` makes NaN of a row with no finite score",
    3: f"the scores overflowed float32; {OVERFLOWED}",
}


def draw(scores: torch.Tensor, num_samples: int, generator) -> torch.Tensor:
    """torch.multinomial over softmax(scores [R, N]) -> indices [R, num_samples]. Probabilities that are not finite
    (a temperature so small or large that the float32 scores overflow, or every token banned) are a ValueError
    naming the settings (no_valid_probabilities), not torch's RuntimeError. generator: a torch.Generator or None
    (the default one)."""
    try:
        return torch.multinomial(scores.softmax(dim=-1), num_samples=num_samples, generator=generator)
    except RuntimeError as e:
        raise no_valid_probabilities(int(fault_code(scores)), (str(e).strip().splitlines() or [""])[0]) from None


def draw_on_device(scores: torch.Tensor, num_samples: int, generator) -> tuple[torch.Tensor, torch.Tensor]:
    """draw without a host read: (indices [R, num_samples], the same as draw's, the generator advanced as by draw;
    fault: long [], 0 where draw would return them, else fault_code(scores), where draw would raise). generator may
    also be a list of G (an engine's inputs, each drawing as generate draws it alone): the rows in G equal blocks,
    each drawn from its own, fault [G], one per block."""
    probs = scores.softmax(dim=-1)                                                            # [R, N]
    q = torch.empty_like(probs)
    blocks = generator if isinstance(generator, list) else [generator]
    for block, g in zip(q.chunk(len(blocks)), blocks):       # each block as multinomial draws it alone
        block.exponential_(1, generator=g)
    torch.div(probs, q, out=q)
    idx = q.argmax(dim=-1, keepdim=True) if num_samples == 1 else q.topk(num_samples).indices   # [R, n]
    per_block = probs.view(len(blocks), -1, probs.shape[-1])                                 # [G, R / G, N]
    valid = ((per_block.amax(dim=(1, 2)) < math.inf) & (per_block.amin(dim=(1, 2)) >= 0)      # multinomial's
             & (per_block.sum(dim=-1) != 0).all(dim=-1))                                     # checks: [G]
    fault = torch.where(valid, 0, fault_code(scores.view_as(per_block)))
    return idx, fault if isinstance(generator, list) else fault[0]


def fault_code(scores: torch.Tensor) -> torch.Tensor:
    """Why scores [..., R, N] leave nothing to draw (CAUSES' code, long [...]): 1 a row all -inf, 2 a row all NaN,
    3 else (a score overflowed to +inf)."""
    neginf, nan = (torch.isneginf(scores).all(dim=-1).any(dim=-1), torch.isnan(scores).all(dim=-1).any(dim=-1))
    return torch.where(neginf, 1, torch.where(nan, 2, 3))


def default_generator(device: torch.device) -> torch.Generator:
    """The generator torch.multinomial draws from on `device` when given none."""
    if device.type == "cuda":
        return torch.cuda.default_generators[device.index if device.index is not None else torch.cuda.current_device()]
    return torch.default_generator


def no_valid_probabilities(code: int, check: str = CHECK) -> ValueError:
    """The error for a draw with nothing valid to draw: fault code `code` (fault_code), torch's complaint `check`."""
    return ValueError(f"sampling found no valid probabilities ({check}): {CAUSES[code]}")
