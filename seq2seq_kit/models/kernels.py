"""Which matmul kernel runs each linear layer of the decoder step on the CPU.

A decode step multiplies 1 row (greedy), K rows (beams) or R rows (the engine's batches) by each weight: a
memory-bound matrix-vector-like product whose speed depends on the kernel far more than on the CPU's FLOPs, and
differently on each CPU family (MKL's sgemm is fast at one row on Intel, up to 3x slower than oneDNN on AMD).
Kernels, all float32 on the CPU (any other dtype or device always runs F.linear):

  "mkl"            F.linear: MKL's sgemm on the dense weight (torch's default, and transformers' kernel).
  "onednn"         oneDNN's matmul (mkldnn._linear_pointwise) on the dense weight; for more than one row it
                   reorders the weight into its blocked layout on every call.
  "onednn-packed"  oneDNN's matmul on the weight reordered once (mkldnn._reorder_linear_weight). The packed weight
                   REPLACES the dense one (same bytes, no second copy), so every call of that layer, any row
                   count, runs oneDNN; a weight shared with the embedding (a tied LM head) is never packed.

Rejected candidates (measured on an AMD EPYC, family 25): addmm on a transposed contiguous weight (slower than
oneDNN at every decode shape, and a second layout of the weight); MKL's packed sgemm (mkl._mkl_linear needs the
dense weight beside the packed one: twice the memory).

A table says which kernel runs where: {kind: {row class: kernel}} for the kinds in KINDS and the row classes in
ROW_CLASSES; a kind or class left out runs "mkl", and more than 64 rows (the teacher-forced forward, the
cross-attention K/V projection of a whole source) run "mkl" unless the layer is packed. seq2seq_kit/kernel_choice.py
picks the table by measurement among ELIGIBLE; the model only applies it (apply).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

KINDS = ("self_qkv", "self_out", "cross_q", "cross_out", "fc1", "fc2", "lm_head")
KERNELS = ("mkl", "onednn", "onednn-packed")
ROW_CLASSES = {"1": (1, 1), "2-8": (2, 8), "9-64": (9, 64)}          # name -> (first, last) row count
MAX_ROWS = 64

# Which kernels may run each kind without breaking token parity with transformers (test_generation.py,
# test_families.py, test_model.py: tokens equal, beam and step scores within 1e-4), established by running those
# tests with the candidate forced through SEQ2SEQ_KIT_CPU_KERNELS (AMD EPYC family 25, torch 2.13):
#  - "onednn-packed" for self_out, cross_q, cross_out, fc1, fc2 and lm_head at once (a tied LM head: "onednn"):
#    all pass (tests/test_kernels.py keeps a few of those cases); "onednn" (dense) likewise, test_engine.py too:
#    tests/conftest.py runs the whole suite that way;
#  - the self-attention's qkv_proj stays on MKL: oneDNN's rounding of the cached keys/values moved beam scores by
#    more than 1e-4 from transformers' (found with oneDNN on the dense weight for 2..64 rows, on an Intel Xeon).
#    With the packed weight test_generation's parity cases pass, but the whole suite has not been run that way.
# "onednn" and "onednn-packed" round differently from each other (one-row products differ in the last bit).
ELIGIBLE = {
    "self_qkv": ("mkl",),
    "self_out": ("mkl", "onednn", "onednn-packed"),
    "cross_q": ("mkl", "onednn", "onednn-packed"),
    "cross_out": ("mkl", "onednn", "onednn-packed"),
    "fc1": ("mkl", "onednn", "onednn-packed"),
    "fc2": ("mkl", "onednn", "onednn-packed"),
    "lm_head": ("mkl", "onednn", "onednn-packed"),
}

# Without a measurement (a network built directly, or SEQ2SEQ_KIT_CPU_KERNELS=default): what was tuned on an
# Intel Xeon, oneDNN on the dense weight for 2..64 rows of the FFN and the LM head.
DEFAULT = {kind: {"2-8": "onednn", "9-64": "onednn"} for kind in ("fc1", "fc2", "lm_head")}

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ weight [out, in]^T + bias by oneDNN; weight dense or packed (pack)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] float32 -> the same values in oneDNN's blocked layout (an opaque mkldnn tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


class KernelLinear(nn.Linear):
    """nn.Linear whose float32 CPU kernel is chosen per row count by `use` (default: F.linear everywhere).

    A packed layer's weight is the oneDNN-layout tensor (`packed` True); `use` with any other kernel, or
    `dense_weight`, gives back the dense values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.onednn_rows = frozenset()          # row counts (<= MAX_ROWS) run by oneDNN on the dense weight
        self.packed = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # x [..., in] -> [..., out]
        if self.packed:
            return onednn_linear(x, self.weight, self.bias)
        if self.onednn_rows and x.numel() // x.shape[-1] in self.onednn_rows and x.dtype == torch.float32 \
                and x.device.type == "cpu":
            return onednn_linear(x, self.weight, self.bias)
        return F.linear(x, self.weight, self.bias)

    def dense_weight(self) -> torch.Tensor:
        return self.weight.to_dense() if self.packed else self.weight

    def use(self, kernels: dict[str, str], packable: bool = True) -> None:
        """kernels: {row class: kernel} (ROW_CLASSES, KERNELS; missing: "mkl"). "onednn-packed" anywhere packs
        the weight (all row counts then run it) unless packable is False (a shared weight) or the weight is not
        float32 on the CPU, where it counts as "onednn". "onednn" runs only for float32 CPU inputs."""
        bad = [k for k in kernels.values() if k not in KERNELS] + [c for c in kernels if c not in ROW_CLASSES]
        if bad:
            raise ValueError(f"unknown kernel or row class {bad}; kernels: {KERNELS}, row classes: "
                             f"{tuple(ROW_CLASSES)}")
        packed = ONEDNN and packable and "onednn-packed" in kernels.values() \
            and self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
        if packed != self.packed:
            values = pack(self.weight) if packed else self.weight.detach().to_dense()
            self.weight = nn.Parameter(values, requires_grad=False)
            self.packed = packed
        self.onednn_rows = frozenset(
            n for name, kernel in kernels.items() if ONEDNN and not packed and kernel != "mkl"
            for n in range(ROW_CLASSES[name][0], ROW_CLASSES[name][1] + 1))

    def kernels(self) -> dict[str, str]:
        """The {row class: kernel} this layer runs now."""
        if self.packed:
            return dict.fromkeys(ROW_CLASSES, "onednn-packed")
        return {name: "onednn" if first in self.onednn_rows else "mkl" for name, (first, _) in ROW_CLASSES.items()}


def apply(layers: dict[str, list[KernelLinear]], table: dict[str, dict[str, str]],
          shared: frozenset[str] = frozenset()) -> None:
    """Set every layer of each kind (layers: {kind: [KernelLinear]}) to table[kind] (missing: all "mkl").
    shared: the kinds whose weight another module uses too (never packed)."""
    unknown = set(table) - set(KINDS)
    if unknown:
        raise ValueError(f"unknown layer kind(s) {sorted(unknown)}; kinds: {KINDS}")
    for kind, modules in layers.items():
        for module in modules:
            module.use(table.get(kind, {}), packable=kind not in shared)


def current(layers: dict[str, list[KernelLinear]]) -> dict[str, dict[str, str]]:
    """The table the layers run now (each kind's first layer)."""
    return {kind: modules[0].kernels() for kind, modules in layers.items() if modules}
