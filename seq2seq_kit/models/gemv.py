"""seq2seq_kit's own kernel for a decode step's few rows: y = x @ weight^T + bias, float32 (the "gemv" kernel of
models/kernels.py), or int8 weight rows with a scale each and float32 x (linear_int8: an int8 model's tied LM head on
its embedding's table, models/quantize.py).

A decode step streams every weight from memory for 1 row (greedy) or a few (beams), so its speed is the rate at which
the kernel reads the weight. MKL's sgemm and oneDNN's brgemm read a 1024-wide weight at 13-28 GB/s on an AMD EPYC
Zen 4 with 2 cores; gemv.c, a plain loop over 8 weight rows at a time with one AVX-512 (or AVX2) accumulator per row,
reads it at 27-43 GB/s there (the machine's copy rate: 34-44). It is built at install time as models/_gemv where a C
compiler with OpenMP is at hand, runs on x86-64 CPUs with AVX2 and FMA, shares torch's OpenMP threads, and releases
the GIL while it runs. Where it is not built or cannot run, `available()` is False and the kernel choice leaves it out.
Its rounding: each output is a 16-lane (8 with AVX2) partial sum over the input width, summed across lanes, plus the
bias: as close to the float64 product as MKL's (tests/test_kernels.py).
"""

from __future__ import annotations

import functools
import hashlib
import math
from pathlib import Path

import torch
import torch.nn.functional as F

try:
    from . import _gemv
except ImportError:                         # not built: no C compiler at install, or not a CPython on x86-64
    _gemv = None

# 2: AVX-512, 1: AVX2 with FMA, 0: it cannot run here. The code `linear` runs (tests set 1 to run the AVX2 code on an
# AVX-512 CPU).
ISA = _gemv.isa() if _gemv is not None else 0


def built() -> bool:
    return _gemv is not None


@functools.cache
def build() -> str:
    """Which build this is: a digest of the compiled module ("none" unbuilt). The kernel choice's cached timings are
    kept per build, so a rebuilt kernel is timed again; read once, when the timings cache is first looked up."""
    return hashlib.sha256(Path(_gemv.__file__).read_bytes()).hexdigest()[:12] if _gemv is not None else "none"


def available() -> bool:
    """Whether the kernel was built and can run on this CPU."""
    return ISA > 0


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, prefetch: bool = True) -> torch.Tensor:
    """x [..., in] @ weight [out, in]^T + bias [out], all float32 on the CPU (the caller's contract, as for the other
    kernels of models/kernels.py). Anything else (another dtype or device, shapes that do not fit) gets F.linear and
    its error: the kernel itself reads whatever memory the shapes say. (A decode step calls this ~40 times: the
    checks read attributes torch keeps at hand, is_cpu rather than device.type.) prefetch False: the next weight
    rows are left to the hardware prefetcher (linear_noprefetch)."""
    if x.dtype != torch.float32 or weight.dtype != torch.float32 or not x.is_cpu or not weight.is_cpu \
            or weight.dim() != 2 or x.dim() < 1 or x.shape[-1] != weight.shape[1] \
            or bias is not None and (bias.dtype != torch.float32 or not bias.is_cpu or bias.shape != weight.shape[:1]):
        return F.linear(x, weight, bias)
    return run(x, weight.contiguous(), None, bias, prefetch)      # no copy for a module's parameters


def linear_noprefetch(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """linear without the software prefetch of the next weight rows (the "gemv-noprefetch" kernel): the same sums,
    the hardware prefetcher alone. One row of a decode step's weights in turn, AVX2 code: 8-14% faster on an AMD
    EPYC Zen 3; with 4 rows 15-20% slower there, and one row 15% slower on a Zen 4: the kernel choice times both."""
    return linear(x, weight, bias, prefetch=False)


def linear_int8(x: torch.Tensor, qweight: torch.Tensor, scale: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] float32 @ (qweight int8 [out, in] * scale float32 [out, 1])^T + bias [out]: int8 rows read as they
    are, x not quantized (an int8 model's tied LM head on its embedding's rows). Runs where available(); anything
    else (not available, other dtypes, shapes that do not fit) gets F.linear on the dequantized rows and its error."""
    fits = qweight.dim() == 2 and x.dim() >= 1 and x.shape[-1] == qweight.shape[1] and \
        scale.shape == qweight.shape[:1] and (bias is None or bias.shape == qweight.shape[:1])
    if not (available() and fits and qweight.dtype == torch.int8 and x.dtype == scale.dtype == torch.float32
            and (bias is None or bias.dtype == torch.float32)
            and all(t is None or t.device.type == "cpu" for t in (x, qweight, scale, bias))):
        return F.linear(x, qweight.float() * scale[:, None], bias)
    return run(x, qweight.contiguous(), scale.contiguous(), bias)


def run(x: torch.Tensor, weight: torch.Tensor, scale: torch.Tensor | None, bias: torch.Tensor | None,
        prefetch: bool = True) -> torch.Tensor:
    """The C call on checked tensors: weight [out, in] contiguous, float32, or int8 with scale [out]."""
    N, K = weight.shape
    bias = None if bias is None else bias.contiguous()      # held here: the C call reads its memory
    rows = x.contiguous()                                                    # [..., in]: M rows
    out = torch.empty(x.shape[:-1] + (N,), dtype=torch.float32, device=x.device)   # [..., out]: not the default device
    _gemv.linear(rows.data_ptr(), weight.data_ptr(), 0 if scale is None else scale.data_ptr(),
                 0 if bias is None else bias.data_ptr(), out.data_ptr(), math.prod(x.shape[:-1]), N, K,
                 torch.get_num_threads(), ISA, prefetch)
    return out
