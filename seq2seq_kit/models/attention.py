"""seq2seq_kit's own attention for a decode step on the CPU (attention.c): `attend` takes
F.scaled_dot_product_attention's arguments and runs the C kernel for what a decode step asks, float32 on the CPU: a
few query rows per (input, head) against cached keys and values, no causal mask, a boolean padding mask [B or 1, 1, 1,
S] or none. Anything else goes to F.scaled_dot_product_attention.

Why: a decode step reads every cached key and value once per head. On an AMD EPYC Zen 4 (2 cores, distilbart shape,
512-token source) torch's flash kernel took 2.1-2.7 ms of a ~21 ms greedy step for the six layers' self- and cross-
attention; this kernel reads the same keys and values near the machine's copy rate. Its results differ from torch's in
the last bits (a different order of summation and a polynomial exp): the model runs it where the kernel choice says
(kernel_choice.choose_attention: measured, like the matmul kernels; never under a forced matmul kernel but gemv).
It is built at install time as models/_attention where a C compiler with OpenMP is at hand; `available()` says so.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from . import _attention
except ImportError:                         # not built: no C compiler at install, or not a CPython on x86-64
    _attention = None

KERNELS = ("sdpa", "own")   # what a decode step's attention runs: torch's scaled_dot_product_attention, or ours
CAN_RUN = _attention is not None and bool(_attention.isa())     # the CPU has AVX2 and FMA: probed once, at import
MAX_QUERIES = 64            # query rows per (input, head) it takes: a decode step's beams or an engine group's rows


def available() -> bool:
    """Whether the kernel was built and can run on this CPU (x86-64 with AVX2 and FMA)."""
    return CAN_RUN


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, attn_mask: torch.Tensor | None = None,
           is_causal: bool = False, scale: float | None = None) -> torch.Tensor:
    """softmax(scale * q @ k^T, attn_mask) @ v: q [B, H, Q, D], k and v [B, H, S, D] -> [B, H, Q, D]; attn_mask
    bool (True = attend) broadcast over heads and queries. Runs the C kernel where it applies (module docstring),
    else F.scaled_dot_product_attention."""
    if not applies(q, k, v, attn_mask, is_causal):
        return F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)
    B, H, Q, D = q.shape
    S = k.shape[2]
    y = torch.empty(B, H, Q, D, dtype=torch.float32, device=q.device)   # not the default device
    threads = max(1, torch.get_num_threads())
    scratch = torch.empty(threads, S, dtype=torch.float32, device=q.device)
    mask, mb = 0, 0
    if attn_mask is not None:
        flat = attn_mask[:, 0, 0]                                           # [B or 1, S], dense along S
        mask, mb = flat.data_ptr(), flat.stride(0) if flat.shape[0] > 1 else 0
    _attention.attend(q.data_ptr(), k.data_ptr(), v.data_ptr(), mask, y.data_ptr(), scratch.data_ptr(),
                      B, H, Q, S, D, *q.stride()[:3], *k.stride()[:3], *v.stride()[:3], mb,
                      D ** -0.5 if scale is None else scale, threads)
    return y


def applies(q, k, v, attn_mask, is_causal) -> bool:
    """Whether the C kernel takes these arguments: float32 CPU tensors of the shapes `attend` names, each one's last
    dimension dense, the head width a multiple of 8, no autograd; a mask bool [B or 1, 1, 1, S], dense along S."""
    if not available() or is_causal or torch.is_grad_enabled() and any(t.requires_grad for t in (q, k, v)):
        return False
    if not all(t.dim() == 4 and t.dtype == torch.float32 and t.is_cpu and t.stride(-1) == 1
               and t.numel() > 0 for t in (q, k, v)):
        return False
    B, H, Q, D = q.shape
    if k.shape != v.shape or k.shape[:2] != (B, H) or k.shape[3] != D or D % 8 or Q > MAX_QUERIES:
        return False
    if attn_mask is None:
        return True
    S = k.shape[2]
    return attn_mask.dtype == torch.bool and attn_mask.is_cpu and attn_mask.dim() == 4 \
        and attn_mask.shape[0] in (1, B) and attn_mask.shape[1:3] == (1, 1) and attn_mask.shape[3] == S \
        and attn_mask.stride(3) == 1
