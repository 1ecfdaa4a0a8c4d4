"""Which matmul kernel runs each linear layer on the CPU.

A decode step multiplies 1 row (greedy), K rows (beams) or R rows (the engine's batches) by each weight: a
memory-bound matrix-vector-like product whose speed depends on the kernel far more than on the CPU's FLOPs, and
differently on each CPU family (MKL's sgemm is fast at one row on Intel, up to 3x slower than oneDNN on AMD). The
encoder (and the cross-attention K/V projection of its output) multiplies a source's hundreds of rows: compute-bound,
where MKL runs its AVX2 code on AMD CPUs and oneDNN their AVX-512 (measured on an AMD EPYC family 26, Zen 5, 512
rows: MKL 190 GFLOP/s, oneDNN 380-460).
Kernels, all float32 on the CPU (any other dtype or device always runs F.linear):

  "mkl"            F.linear: MKL's sgemm on the dense weight (torch's default, and transformers' kernel).
  "mkl-t"          MKL's sgemm on the transposed problem, (weight @ x^T)^T: the weight's long side is the
                   product's M. Measured on an AMD EPYC (family 25), 4 rows, weights streamed from memory:
                   20-22 GB/s where F.linear reaches 6.5-8.
  "onednn"         oneDNN's matmul (mkldnn._linear_pointwise) on the dense weight; for more than one row it
                   reorders the weight into its blocked layout on every call.
  "onednn-packed"  oneDNN's matmul on the weight reordered once (mkldnn._reorder_linear_weight). The packed weight
                   REPLACES the dense one (same bytes, no second copy), so every call of that layer, any row
                   count, runs oneDNN; a weight shared with the embedding (a tied LM head) is never packed.
  "gemv"           seq2seq_kit's own loop for a few rows (models/gemv.py, gemv.c) on the dense weight: measured on an
                   AMD EPYC (family 25), weights streamed: one row 27-47 GB/s where oneDNN packed reaches 16-30 and
                   F.linear 12-20; 4 rows 22-30 against 16-29; at 32 rows (compute-bound) oneDNN packed is 5-20%
                   ahead. Where it is not built or the CPU lacks AVX2 and FMA it is never chosen (a layer told to use
                   it runs F.linear).
  "gemv-noprefetch"  the same loop and sums without its software prefetch of the next weight rows: the hardware
                   prefetcher alone. A decode step's weights in turn, one row: 8-14% faster on an AMD EPYC Zen 3
                   (family 25 model 1, AVX2; the greedy step 8%), 15% slower on a Zen 4 (model 17; the greedy step
                   9%). With 4 rows 15-20% slower on the Zen 3 (the beam-4 step 3%) and 70% on the Zen 4. Only
                   a stream of calls shows this (kernel_choice.time_layer): a single cold call of one weight timed
                   gemv-noprefetch ahead at one row on the Zen 4, and level with gemv at 4 rows on the Zen 3.

Rejected candidates (measured on an AMD EPYC, family 25): x @ a transposed contiguous copy of the weight (slower
than oneDNN at every decode shape, and a second layout of the weight); MKL's packed sgemm (mkl._mkl_linear needs the
dense weight beside the packed one: twice the memory).

A table says which kernel runs where: {kind: {row class: kernel}} for the kinds in KINDS (the decoder step's
layers, then the encoder's and the cross-attention K/V projection) and the row classes in ROW_CLASSES (the last,
"257+", takes every count above MAX_ROWS: a source's rows, the teacher-forced forward); a kind or class left out
runs "mkl". seq2seq_kit/kernel_choice.py picks the table by measurement among ELIGIBLE; the model only applies it
(apply).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from . import gemv

STEP_KINDS = ("self_qkv", "self_out", "cross_q", "cross_out", "fc1", "fc2", "lm_head")        # a decode step's rows
ENCODER_KINDS = ("encoder_qkv", "encoder_out", "encoder_fc1", "encoder_fc2", "cross_kv")   # a source's rows
KINDS = (*STEP_KINDS, *ENCODER_KINDS)
LIBRARY = ("mkl", "mkl-t", "onednn", "onednn-packed")   # torch's: MKL and oneDNN
GEMV = ("gemv", "gemv-noprefetch")                      # seq2seq_kit's own loop, with and without its software prefetch
KERNELS = (*LIBRARY, *GEMV)
MAX_ROWS = 256
ROW_CLASSES = {"1": (1, 1), "2-8": (2, 8), "9-64": (9, 64), "65-256": (65, MAX_ROWS),   # name -> (first, last) rows
               "257+": (MAX_ROWS + 1, MAX_ROWS + 1)}                                     # every count above MAX_ROWS

# Which kernels may run each kind and row class without breaking token parity with transformers (tokens equal,
# beam and step scores within 1e-4), established by running the suite's parity tests (test_generation.py,
# test_families.py, test_model.py, test_engine.py, test_whole_step.py, test_sync_free.py, test_sampling.py,
# test_pipeline.py, ...) with the candidate forced for every kind through SEQ2SEQ_KIT_CPU_KERNELS (AMD EPYC
# family 25, torch 2.13):
#  - "mkl-t": every kind, every row class, all pass;
#  - "onednn-packed" (a tied LM head: "onednn", never packed) and "onednn" (dense) for the decoder step's kinds but
#    self_qkv: all pass (tests/conftest.py runs the whole suite with "onednn" wherever allowed,
#    tests/test_kernels.py a few packed cases);
#  - the decoder self-attention's qkv_proj with several rows (beams), the encoder's layers and the cross-attention
#    K/V projection run oneDNN on the packed weight only (the packed weight serves every row count; dense oneDNN
#    reorders the weight on every call, never faster at a source's row counts). There the tokens stay equal but the
#    step scores move by up to 3.7e-4 from transformers' on the 1024-wide test checkpoints (test_generation.py's
#    distilbart and KoBART cases; for the qkv_proj, oneDNN's rounding of the cached keys/values), where
#    transformers' own float32 scores are 2e-4 from float64 ones and ours 2.5-3.7e-4: the same order of rounding.
#    tests/test_kernels.py holds the packed layers to 3x transformers' own distance from float64 instead of 1e-4;
#    the suite's other tests run these kinds on MKL (tests/conftest.py). Fuzzed (440 random generate calls over the
#    five families, d_model 32-1024, sources up to 600 tokens, all packed or measured): tokens equal in 436, the 4
#    others near-ties where transformers' own float64 run disagrees with its float32 one; the packed encoder's
#    output 0.8-3.1x as far from float64 as transformers'; on very sensitive random models (init std 0.3, 300-token
#    sources, beam 4) step scores up to 11x transformers' own float32-to-float64 distance, tokens still equal.
#  - "gemv": the decoder step's kinds, self_qkv included, up to 64 rows (a source's rows are compute-bound: not what
#    it is for). The whole suite with SEQ2SEQ_KIT_CPU_KERNELS=gemv (AMD EPYC family 25, 2026-12-03): every parity
#    test passes; what fails is what cannot see it: tests that want F.linear's bits exactly (float8 upcast logits
#    against transformers' with torch.equal) and those that emulate a CUDA graph on the CPU by recording torch's
#    operations (gemv is a C call torch's dispatcher does not see; on CUDA it never runs). Again on 2026-12-04 with
#    models/attention.py's attention, which that setting runs too: tokens equal in every parity test; in one beam
#    case of test_generation.py's matrix two live beams swap slots at a near-tie (beam_indices differ; sequences
#    equal, scores within 1e-4 and as close to float64 as transformers' own). "gemv-noprefetch" computes gemv's sums
#    bit for bit (tests/test_kernels.py): eligible wherever gemv is.
# "onednn" and "onednn-packed" round differently from each other (one-row products differ in the last bit).
FEW_ROWS = ("1", "2-8", "9-64")
OWN = dict.fromkeys(FEW_ROWS, GEMV)                               # row class -> gemv's kernels eligible there
ELIGIBLE = {kind: {c: LIBRARY + OWN.get(c, ()) for c in ROW_CLASSES} for kind in KINDS}
ELIGIBLE["self_qkv"] = {c: ("mkl", "mkl-t", "onednn-packed") + OWN.get(c, ()) for c in ROW_CLASSES}
ELIGIBLE["self_qkv"]["1"] = LIBRARY + OWN["1"]          # one row (greedy: no beams): dense oneDNN as the others
ELIGIBLE |= {kind: dict.fromkeys(ROW_CLASSES, ("mkl", "mkl-t", "onednn-packed")) for kind in ENCODER_KINDS}

# The row classes whose timings decide whether a kind's weight is packed (kernel_choice.select). For the decode step's
# kinds: the row counts decode steps run (greedy, beams, and the engine's, corpus jobs' and server's default max_rows
# of 32); larger batches and the teacher-forced forward (65+ rows) run the layout these chose, on its fastest kernel
# there. Scored over every class instead, the packed weight's lead at 65+ rows (7-25% over dense oneDNN) outweighed
# gemv's at one row and kept the decoder packed, though gemv on the dense weight was faster in the decode step itself
# at 1, 4 and 32 rows (paired whole steps, distilbart shape, AMD EPYC family 25: 16%, 8% and 2% less time).
DECIDING = dict.fromkeys(STEP_KINDS, FEW_ROWS) | dict.fromkeys(ENCODER_KINDS, tuple(ROW_CLASSES))

# Without a measurement (a network built directly, or SEQ2SEQ_KIT_CPU_KERNELS=default): what was tuned on an
# Intel Xeon, oneDNN on the dense weight for 2..64 rows of the FFN and the LM head.
DEFAULT = {kind: {"2-8": "onednn", "9-64": "onednn"} for kind in ("fc1", "fc2", "lm_head")}

ONEDNN = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise") \
    and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def onednn_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """x [..., in] @ weight [out, in]^T + bias by oneDNN; weight dense or packed (pack)."""
    return torch.ops.mkldnn._linear_pointwise(x, weight, bias, "none", [], "")


def mkl_transposed_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The same product as the transposed problem, (weight [out, in] @ x^T [in, N])^T: MKL's sgemm with the long
    side (out) as its M, which streams the weight at up to 3x F.linear's speed for a few rows on some CPUs."""
    rows = x.reshape(-1, x.shape[-1])                                        # [N, in]
    y = torch.mm(weight, rows.t()) if bias is None else torch.addmm(bias[:, None], weight, rows.t())   # [out, N]
    return y.t().contiguous().view(*x.shape[:-1], weight.shape[0])


# kernels on the dense weight besides "mkl" that can run here
DENSE = {"onednn": onednn_linear, "mkl-t": mkl_transposed_linear} | (
    {"gemv": gemv.linear, "gemv-noprefetch": gemv.linear_noprefetch} if gemv.available() else {})


def pack(weight: torch.Tensor) -> torch.Tensor:
    """weight [out, in] float32 -> the same values in oneDNN's blocked layout (an opaque mkldnn tensor)."""
    return torch.ops.mkldnn._reorder_linear_weight(weight.detach(), None)


class KernelLinear(nn.Linear):
    """nn.Linear whose float32 CPU kernel is chosen per row count by `use` (default: F.linear everywhere).

    A packed layer's weight is the oneDNN-layout tensor (`packed` True); `use` with any other kernel, or
    `dense_weight`, gives back the dense values."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.row_kernels: dict[int, str] = {}    # row count (MAX_ROWS + 1: more) -> a dense kernel other than "mkl"

    @property
    def packed(self) -> bool:
        return self.weight.is_mkldnn

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # x [..., in] -> [..., out]
        weight = self.weight        # read once: `use` from another thread swaps it (its layout decides the kernel)
        if torch.is_autocast_enabled("cpu"):                # autocast's dtype: its F.linear, on the dense values
            return F.linear(x, weight.to_dense() if weight.is_mkldnn else weight, self.bias)
        if weight.is_mkldnn:
            return onednn_linear(x, weight, self.bias)
        kernel = self.row_kernels.get(min(x.numel() // x.shape[-1], MAX_ROWS + 1)) if self.row_kernels else None
        if kernel is not None and x.dtype == torch.float32 and x.is_cpu:
            return DENSE[kernel](x, weight, self.bias)
        return F.linear(x, weight, self.bias)

    def dense_weight(self) -> torch.Tensor:
        return self.weight.to_dense() if self.packed else self.weight

    # A packed weight is an opaque oneDNN tensor, which torch can neither serialize, copy into, nor clone: the
    # module's state dict and pickled state hold the dense values, loading either packs again, and a deep copy packs
    # a copy.

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        if self.packed:
            destination[prefix + "weight"] = self.weight.detach().to_dense()

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        packed = self.packed
        if packed:
            self.weight = nn.Parameter(self.weight.detach().to_dense(), requires_grad=False)
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)
        if packed:
            self.weight = nn.Parameter(pack(self.weight), requires_grad=False)

    def __getstate__(self) -> dict:
        """pickle / torch.save(model): the dense values, packed again on load (__setstate__)."""
        state = super().__getstate__()
        if self.packed:
            params = dict(state["_parameters"])
            params["weight"] = nn.Parameter(self.weight.detach().to_dense(), requires_grad=False)
            state["_parameters"], state["packed_weight"] = params, True
        return state

    def __setstate__(self, state: dict) -> None:
        packed = state.pop("packed_weight", False)
        super().__setstate__(state)
        if packed:
            self.weight = nn.Parameter(pack(self.weight), requires_grad=False)

    def __deepcopy__(self, memo):
        if self.packed:
            memo[id(self.weight)] = nn.Parameter(pack(self.weight.to_dense()), requires_grad=False)
        twin = memo[id(self)] = type(self).__new__(type(self))
        twin.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return twin

    def use(self, kernels: dict[str, str], packable: bool = True) -> None:
        """kernels: {row class: kernel} (ROW_CLASSES, KERNELS; missing: "mkl"). "onednn-packed" anywhere packs
        the weight (all row counts then run it) unless packable is False (a shared weight) or the weight is not
        float32 on the CPU, where it counts as "onednn". "onednn" and "mkl-t" run only for float32 CPU inputs."""
        bad = [k for k in kernels.values() if k not in KERNELS] + [c for c in kernels if c not in ROW_CLASSES]
        if bad:
            raise ValueError(f"unknown kernel or row class {bad}; kernels: {KERNELS}, row classes: "
                             f"{tuple(ROW_CLASSES)}")
        packed = ONEDNN and packable and "onednn-packed" in kernels.values() \
            and self.weight.device.type == "cpu" and self.weight.dtype == torch.float32
        if packed != self.packed:
            values = pack(self.weight) if packed else self.weight.detach().to_dense()
            self.weight = nn.Parameter(values, requires_grad=False)
        dense = {name: "onednn" if kernel == "onednn-packed" else kernel for name, kernel in kernels.items()}
        self.row_kernels = {n: kernel for name, kernel in dense.items()
                            if not packed and kernel in DENSE and (ONEDNN or kernel != "onednn")
                            for n in range(ROW_CLASSES[name][0], ROW_CLASSES[name][1] + 1)}

    def kernels(self) -> dict[str, str]:
        """The {row class: kernel} this layer runs now."""
        if self.packed:
            return dict.fromkeys(ROW_CLASSES, "onednn-packed")
        return {name: self.row_kernels.get(first, "mkl") for name, (first, _) in ROW_CLASSES.items()}


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
