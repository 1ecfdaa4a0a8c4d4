"""Input checks of the model's public entry points: each raises TypeError / ValueError naming the problem and the fix.

The vocabulary range check and the padding-mask checks read values back from the device (a host sync each), so the
public entry points run them once per call and the decoding loop runs none.
"""

from __future__ import annotations

import torch

INT_DTYPES = (torch.int64, torch.int32)
IGNORE_INDEX = -100      # a label the loss leaves out (transformers' and torch's cross-entropy default)


def check_device(t: torch.Tensor, name: str, device: torch.device) -> None:
    if t.device != device:
        raise ValueError(f"{name} is on {t.device} but the model is on {device}; move it with .to(model.device)")


def check_vocab_range(ids: torch.Tensor, name: str, vocab_size: int) -> None:
    """Every id in [0, vocab_size): one host sync."""
    lo, hi = (int(t) for t in torch.aminmax(ids))
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"{name} contains token id {lo if lo < 0 else hi}, outside the model's vocabulary "
                         f"[0, vocab_size={vocab_size}); does the tokenizer match the model?")


def check_dense(t: torch.Tensor, name: str) -> None:
    """A tensor with values to read: not on the meta device, not sparse, not nested (torch fails inside on those)."""
    if t.is_meta:
        raise ValueError(f"{name} is on the meta device, which holds no values; pass the tensor itself")
    if t.is_nested or t.layout != torch.strided:
        raise TypeError(f"{name} must be a dense tensor, got a {'nested' if t.is_nested else t.layout} one; pass "
                        ".to_dense() (nested rows: pad them into one tensor with an attention_mask)")


def check_token_ids(ids, name: str, *, vocab_size: int, max_positions: int, device: torch.device) -> None:
    """ids: an integer tensor [B, L] on `device`, not empty, L <= max_positions, every id in the vocabulary."""
    check_id_tensor(ids, name, max_positions=max_positions, device=device)
    check_vocab_range(ids, name, vocab_size)


def check_labels(labels, decoder_input_ids, *, batch: int, vocab_size: int, max_positions: int,
                 device: torch.device) -> None:
    """labels: a loss's target ids [batch, T] as check_token_ids', IGNORE_INDEX where a position is not scored, the
    shape of decoder_input_ids when those are given."""
    check_id_tensor(labels, "labels", max_positions=max_positions, device=device)
    if labels.shape[0] != batch:
        raise ValueError(f"labels has batch size {labels.shape[0]} but input_ids has {batch}; they must match")
    if isinstance(decoder_input_ids, torch.Tensor) and labels.shape != decoder_input_ids.shape:
        raise ValueError(f"labels has shape {list(labels.shape)} but decoder_input_ids has shape "
                         f"{list(decoder_input_ids.shape)}; labels[:, i] is the target of the logits at i, so they "
                         "must match (or leave decoder_input_ids out: they are made from labels)")
    scored = labels[labels != IGNORE_INDEX]
    lo, hi = (int(t) for t in torch.aminmax(scored)) if scored.numel() else (0, 0)
    if lo < 0 or hi >= vocab_size:
        raise ValueError(f"labels contains token id {lo if lo < 0 else hi}, outside the model's vocabulary [0, "
                         f"vocab_size={vocab_size}); {IGNORE_INDEX} marks a position the loss leaves out")


def check_id_tensor(ids, name: str, *, max_positions: int, device: torch.device) -> None:
    """ids: an integer tensor [B, L] on `device`, not empty, L <= max_positions (its values unread)."""
    if not isinstance(ids, torch.Tensor):     # a numpy array's dtype alone ("int64") reads as the right one
        raise TypeError(f"{name} must be an integer torch.Tensor of token ids, got a {type(ids).__name__} (a "
                        "tokenizer makes tensors with return_tensors='pt')")
    check_dense(ids, name)
    if ids.dtype not in INT_DTYPES:
        raise TypeError(f"{name} must be an integer torch.Tensor of token ids, got {ids.dtype}")
    if ids.dim() != 2:
        raise ValueError(f"{name} must have shape [batch, sequence], got {list(ids.shape)}")
    if ids.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(ids.shape)}); pass at least one token per sequence")
    if ids.shape[1] > max_positions:
        raise ValueError(f"{name} has {ids.shape[1]} tokens per sequence, more than the model's "
                         f"max_position_embeddings={max_positions}; truncate it (tokenizer truncation=True, "
                         f"max_length={max_positions})")
    check_device(ids, name, device)


def padding_mask(mask, like: torch.Tensor, name: str, like_name: str, device: torch.device) -> torch.Tensor | None:
    """An attention mask [B, L] (nonzero = attend) of a tensor `like` [B, L, ...] -> bool [B, L], or None when
    nothing is padded. Every row must attend to at least one position."""
    if mask is None:
        return None
    if not isinstance(mask, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(mask).__name__}")
    check_dense(mask, name)
    if mask.shape != like.shape[:2]:
        raise ValueError(f"{name} has shape {list(mask.shape)} but {like_name} has shape "
                         f"{list(like.shape[:2])}; they must match")
    check_device(mask, name, device)
    mask = mask.bool()
    if not mask.any(dim=1).all():
        raise ValueError(f"{name} has a row with no token to attend to (all zeros); remove that row or give it "
                         "at least one token")
    return None if mask.all() else mask


def check_positive_int(value, name: str) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{name} must be a positive integer, got {value!r}")


def check_hidden_states(hidden, name: str, *, width: int, dtype: torch.dtype, device: torch.device) -> None:
    """hidden: a floating tensor [B, S, width] of `dtype` on `device`, not empty (an encoder's output, given)."""
    if not isinstance(hidden, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor of hidden states [batch, sequence, d_model], got a "
                        f"{type(hidden).__name__}")
    check_dense(hidden, name)
    if hidden.dim() != 3 or hidden.shape[2] != width:
        raise ValueError(f"{name} must have shape [batch, sequence, d_model={width}], got {list(hidden.shape)}: "
                         "pass this model's encoder output (model.encode, or model.get_encoder()(...))")
    if hidden.numel() == 0:
        raise ValueError(f"{name} is empty (shape {list(hidden.shape)}); pass at least one position per sequence")
    if hidden.dtype != dtype:
        raise TypeError(f"{name} is {hidden.dtype} but the model computes in {dtype}; pass .to(model.dtype)")
    check_device(hidden, name, device)
