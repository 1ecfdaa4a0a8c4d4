"""A decoder prompt: generate(..., decoder_input_ids=[B, P]) starts every row from these tokens instead of the
decoder start token alone, as transformers 5.25 does (`_prepare_decoder_input_ids_for_generation`):

  - the start token is prepended when no row's prompt begins with it (when some row's does, none gets it);
  - the prompt, start token included, counts in max_length and min_length as the start token alone does without
    one (max_new_tokens -> max_length = max_new_tokens + P; see config.resolve), and is part of the output;
  - the processors read it as part of each row's sequence (repetition penalty, n-gram bans, prefix functions), and
    the length-dependent ones count it (forced BOS acts at length 1 only, i.e. never after a longer prompt);
  - a decoder_attention_mask may be given when it masks nothing (every row's prompt has the same length), and the
    pad token may stand only as the start token (Marian's) or as a prompt of one token, and in M2M100 / NLLB
    (positions_skip_pads) only as a prompt of one token: transformers numbers their prompt positions around pad
    tokens in its one pass over the whole prompt, while here the prompt's last token is the search's first step,
    numbered by the cache's length (elsewhere a pad token in a prompt is padding, which prompts do not have: see
    the mask).

The prompt's tokens but the last are fed to the decoder in one causal pass before the search starts (`prefill`, the
model's prefill_unchecked), as transformers runs its whole prompt in one forward; the search then steps from the
last one.
"""

from __future__ import annotations

import torch

ID_DTYPES = (torch.int64, torch.int32)          # what an embedding reads (transformers' prompts too: Long or Int)


def check(decoder_input_ids, decoder_attention_mask, batch: int, vocab_size: int, device: torch.device,
          inputs: str = "input_ids") -> torch.Tensor | None:
    """generate's decoder_input_ids (None: no prompt) checked -> long [B, P] on `device`; decoder_attention_mask
    must be None or all ones of the same shape. inputs: what holds the `batch` inputs (for the message)."""
    if decoder_input_ids is None:
        if decoder_attention_mask is not None:
            raise ValueError("decoder_attention_mask was given without decoder_input_ids: pass both, or neither")
        return None
    ids = decoder_input_ids
    if not _dense(ids) or ids.dtype not in ID_DTYPES or ids.dim() != 2:
        raise TypeError(f"decoder_input_ids must be an integer tensor [batch, length] (int64 or int32, e.g. "
                        f"torch.tensor([[2, 0]])), got {_described(ids)}")
    if ids.shape[0] != batch or ids.shape[1] == 0:
        raise ValueError(f"decoder_input_ids must have shape [{batch}, length >= 1] (one prompt per input, "
                         f"{inputs} has {batch}), got {list(ids.shape)}")
    _check_not_meta(ids, "decoder_input_ids", device)
    low, high = int(ids.min()), int(ids.max())
    if low < 0 or high >= vocab_size:
        raise ValueError(f"decoder_input_ids holds id {low if low < 0 else high}, outside the decoder's vocabulary "
                         f"[0, {vocab_size})")
    _check_mask(decoder_attention_mask, ids, device)
    return ids.to(device=device, dtype=torch.long)


def _check_mask(mask, ids: torch.Tensor, device: torch.device) -> None:
    if mask is None:
        return
    if not _dense(mask) or mask.shape != ids.shape:
        raise ValueError(f"decoder_attention_mask must be a tensor of decoder_input_ids' shape {list(ids.shape)}, "
                         f"got {_described(mask)}")
    _check_not_meta(mask, "decoder_attention_mask", device)
    if not bool((mask == 1).all()):
        raise ValueError("decoder_attention_mask masks prompt tokens (zeros): padded decoder prompts are not "
                         "supported; give every input's prompt the same length (or generate them separately), "
                         "and leave decoder_attention_mask unset")


def _dense(value) -> bool:
    """A plain (strided, not nested) tensor: the only kind whose values the checks can read."""
    return isinstance(value, torch.Tensor) and not value.is_nested and value.layout == torch.strided


def _check_not_meta(t: torch.Tensor, name: str, device: torch.device) -> None:
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device, which holds no values: make it on the CPU or on the "
                         f"model's device ({device})")


def _described(value) -> str:
    if isinstance(value, torch.Tensor) and not _dense(value):
        return f"a {'nested' if value.is_nested else value.layout} {value.dtype} tensor"
    if isinstance(value, torch.Tensor):
        return f"a {value.dtype} tensor of shape {list(value.shape)}"
    return type(value).__name__


def needs_start_token(prompt: torch.Tensor, start: int) -> bool:
    """transformers' rule: the start token is prepended when no row of prompt [B, P] begins with it."""
    return bool((prompt[:, 0] != start).all())


def length(prompt: torch.Tensor | None, start: int | None) -> int:
    """The decoder's tokens before the first generated one: the prompt's (with the start token it gets), else 1."""
    if prompt is None:
        return 1
    return prompt.shape[1] + int(start is not None and needs_start_token(prompt, start))


def complete(prompt: torch.Tensor, start: int, pad: int | None, positions_skip_pads: bool) -> torch.Tensor:
    """prompt [B, P] -> [B, P'] as the decoder reads it: the start token prepended when needs_start_token; a pad
    token other than the start token or a one-token prompt is refused, and with positions_skip_pads (M2M100) any
    in a longer prompt (see the module docstring)."""
    if needs_start_token(prompt, start):
        prompt = torch.cat((prompt.new_full((prompt.shape[0], 1), start), prompt), dim=1)
    if pad is None:
        return prompt
    pads = prompt == pad                                                                   # [B, P']
    if positions_skip_pads and pad == start and prompt.shape[1] > 1 and bool(pads[:, 0].any()):
        raise ValueError(f"decoder_input_ids starts with the pad token (id {pad}, the decoder start token here) in a "
                         f"prompt of {prompt.shape[1]} tokens: this model's positions skip pad tokens, which "
                         "transformers numbers in one pass over the prompt and seq2seq_kit's cached decoding does "
                         "not; start the prompt with the eos token (the published checkpoints' decoder start), or "
                         "give the start token alone")
    pads[:, 0] &= pad != start and prompt.shape[1] > 1
    if bool(pads.any()):
        raise ValueError(f"decoder_input_ids holds the pad token (id {pad}) in a prompt, which may hold it only as "
                         f"the decoder start token (id {start}): padded decoder prompts are not supported; give "
                         "every input's prompt the same length without pad tokens (or generate them separately)")
    return prompt


def prefill(model, cache, prompt: torch.Tensor, rows_per_input: int, trace=None) -> None:
    """Feed prompt [B, P]'s tokens but the last to the model (protocol.Seq2SeqModel.prefill_unchecked) on each
    input's rows in one pass, filling the empty cache's first P - 1 positions; their logits are not needed (the
    search steps from the last token). trace: generate's Trace (generation/traces.py), which records the pass."""
    if prompt.shape[1] > 1:
        rows = prompt[:, :-1].repeat_interleave(rows_per_input, dim=0)                         # [R, P - 1]
        model.prefill_unchecked(rows, cache, **({} if trace is None else {"trace": trace.record()}))
