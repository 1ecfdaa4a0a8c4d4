"""Bounds on a decode step's logits from an int8 copy of the LM head, and the exact logits of the few tokens that can
still win: what a greedy step needs to pick the same token as from every logit computed in float32.

The LM head is the largest weight a decode step reads (distilbart: 206 of its 540 MB at float32, 7 ms of a 19 ms
greedy step on 2 cores of an AMD EPYC Zen 4). A greedy search needs only each row's argmax of the processed logits.
LogitScreen holds the head's rows as int8 with one scale each (a quarter of the bytes) and bounds every logit from
them: with the scale s_n = max|w_n| / 127 and q_n = round(w_n / s_n), each weight is within s_n / 2 of s_n * q_nk,
so the float32 logit x . w_n differs from the int8 one by at most s_n * |x|_1 / 2 plus both sums' float32 rounding
(at most gamma_K * sum_k |x_k| |w_nk| each, gamma_K = K u / (1 - K u), u = 2^-24, |w_nk| <= 127.5 s_n); the bias is
added to both and each result rounded once more (a relative margin covers that). A token whose upper bound is below
some other token's lower bound cannot be the argmax; the others (a handful to a few hundred of 50k) get their exact
float32 logits from the float32 rows by gemv (gemv.c: each output's sum does not depend on which other rows are in
the call, so where the full head runs gemv they are its very bits; where it runs another kernel, the same product
rounded as gemv rounds it), and generation/screening.py picks the argmax from those, the processors applied.

The copy is made from the head's weight when a greedy search first asks for it and made again when that weight
changes (its storage, its version counter, or the values at a sample of positions, checked when a greedy generate
call starts and at each of the engine's greedy steps: an in-place write through `.data`, which bumps no version
counter, is caught by the sample unless it leaves every sampled value as it was). It costs a quarter of the head's bytes (distilbart: 51 MB) while the model keeps it.
Where gemv's int8 kernel cannot run, the weight is not float32 on the CPU or not finite, there is no screen.
"""

from __future__ import annotations

import torch

from . import gemv

U = 2.0 ** -24                  # float32's unit roundoff
# Rows a screened step takes at most. The int8 pass reads a quarter of the bytes but, at many rows, is bound by its
# multiply-adds as the float32 one is, and the bounds cost elementwise passes over [R, V]: measured on an AMD EPYC Zen 4
# (2 cores, distilbart's head, its greedy processors; screen + pick against head + processors + argmax), 1 row 38%
# less time, 4 rows 36%, 8 rows 21%, 16 rows 8%, 32 rows 4%, 64 rows 10% more.
MAX_ROWS = 32
SAMPLE = 4096                   # weight positions compared at each freshness check
CHUNK = 4096                    # rows quantized at a time (no float32 temporary of the whole table)


class ScreenedLogits:
    """One step's logits for R rows over V tokens, known to bounds: lower, upper [R, V] float32 (bias included),
    lower <= the float32 logit <= upper; exact(tokens) computes the logits of some tokens [U] -> [R, U] by gemv (bit
    for bit what a full head on gemv gives them)."""

    def __init__(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, approx: torch.Tensor,
                 radius: torch.Tensor):
        self.h, self.weight, self.bias = h, weight, bias                   # [R, D], [V, D], [V] or None
        self.lower, self.upper = approx - radius, approx + radius          # [R, V]

    def __getitem__(self, rows: slice) -> ScreenedLogits:
        """These rows' screened logits (as logits[a:b] of a tensor)."""
        part = ScreenedLogits.__new__(ScreenedLogits)
        part.h, part.weight, part.bias = self.h[rows], self.weight, self.bias
        part.lower, part.upper = self.lower[rows], self.upper[rows]
        return part

    def exact(self, tokens: torch.Tensor) -> torch.Tensor:
        """The float32 logits of these tokens (long [U]) for every row -> [R, U]."""
        logits = gemv.linear(self.h, self.weight.index_select(0, tokens), None)          # [R, U]
        return logits if self.bias is None else logits.add_(self.bias.index_select(0, tokens))


class LogitScreen:
    """An int8 copy of an LM head's weight [V, D] (float32, CPU) for ScreenedLogits; `of(weight)` makes one where it
    can run (None elsewhere)."""

    def __init__(self, weight: torch.Tensor):
        V, K = weight.shape
        self.scale = (weight.abs().amax(dim=1) / 127).clamp(min=1e-30)                   # [V]
        self.q = torch.empty(V, K, dtype=torch.int8, device=weight.device)               # [V, K]
        for start in range(0, V, CHUNK):
            rows = slice(start, start + CHUNK)
            self.q[rows] = torch.round(weight[rows] / self.scale[rows, None])
        gamma = K * U / (1 - K * U)
        # per token, times |x|_1: the int8 weights' error (s / 2, and w / s rounded: + 127.5 u < 2^-16 s) and both
        # sums' rounding
        self.radius = self.scale * ((0.5 + 2 ** -16) + 2 * 127.5 * gamma)                  # [V]
        self.positions = torch.randint(0, V * K, (SAMPLE,), generator=torch.Generator().manual_seed(0))
        self.source = self.fingerprint(weight)

    @staticmethod
    def runs_on(weight: torch.Tensor) -> bool:
        """Whether a screen of this weight can run here (its values aside)."""
        return gemv.available() and weight.dtype == torch.float32 and weight.device.type == "cpu" \
            and not weight.is_mkldnn and weight.dim() == 2

    @classmethod
    def of(cls, weight: torch.Tensor) -> LogitScreen | None:
        """A screen of weight where it can run and weight is finite, else None."""
        if not cls.runs_on(weight) or not torch.isfinite(weight).all():
            return None
        return cls(weight.detach())

    @staticmethod
    def identity(weight: torch.Tensor) -> tuple:
        return weight.data_ptr(), weight._version, tuple(weight.shape), weight.dtype, weight.device

    def fingerprint(self, weight: torch.Tensor) -> tuple:
        return self.identity(weight), weight.detach().reshape(-1)[self.positions]

    def fresh(self, weight: torch.Tensor) -> bool:
        """Whether this copy was made from weight as it is now (storage, version, shape, the sampled values)."""
        made, sample = self.source
        return self.identity(weight) == made and torch.equal(weight.detach().reshape(-1)[self.positions], sample)

    def screen(self, h: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> ScreenedLogits | None:
        """h [R, D] float32 -> the bounds of h @ weight^T + bias (weight: the head's, which this copy was made of);
        None where h is not finite (the caller computes the logits)."""
        l1 = h.abs().sum(dim=1, keepdim=True)                                            # [R, 1]
        if not torch.isfinite(l1).all():
            return None
        approx = gemv.linear_int8(h, self.q, self.scale, bias)                           # [R, V]
        # |x|_1 rounded (relative K u), and the scaling and the bias added rounded (relative 2^-20 of the terms,
        # 16 times float32's own rounding)
        terms = approx.abs() if bias is None else approx.abs() + bias.abs()
        radius = (l1 * (1 + 2 * h.shape[1] * U)) * self.radius + terms * 2 ** -20 + 1e-30       # [R, V]
        return ScreenedLogits(h, weight, bias, approx, radius)
