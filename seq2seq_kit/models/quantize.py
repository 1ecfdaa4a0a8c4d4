"""int8 weights for a float32 CPU model: every nn.Linear becomes an Int8Linear, the token embedding an
Int8Embedding, and the float32 weights are freed (only int8 weights remain, besides the small float ones: biases,
layer norms, positions).

Int8Linear holds its weight as int8 with one scale per output row (symmetric, max-abs / 127) and quantizes its
input per call, ROWS_PER_CALL rows at a time (PyTorch's quantized::linear_dynamic: fbgemm on x86, qnnpack on ARM,
int32 accumulation).
A decoder step reads a quarter of the float32 bytes. Int8Embedding holds int8 rows with one scale each and
dequantizes the rows it looks up. A tied LM head (Int8TiedLinear) multiplies by the embedding's own int8 rows and
scales with seq2seq_kit's kernel (models/gemv.c: float32 inputs, int8 weights converted in registers), so the table is
held once; where that kernel is not built or cannot run, the head (Int8TiedCopy) gets its own copy of those int8 rows
in fbgemm's packed layout, saved as the table alone either way (the embedding's rows cannot be read back from the
packed copy; torch's weight-only int8 matmul, torch._weight_int8pack_mm, that
could share them is 17x slower than either here at one row, 80x at four). Measured on an AMD EPYC Zen 4, 2 cores,
distilbart's LM head (50264 x 1024): one row 1.5 ms against fbgemm's 1.5, four rows 3.0 against 1.7 (fbgemm's int8
dot products do 4x the work per instruction); 51 MB less held.
This is outside the exact-parity guarantee: logits move by about 1% of their range, so greedy and beam
tokens leave transformers' after a while (benchmarks/ report the identity rate beside the speed). The input's one
scale per block of rows also makes a row's result depend on the other rows of the call (a batch, the engine's step).
Decided: kept. A scale per row (an int8 matmul on rows quantized each with its own scale: torch._int_mm) measured
2-4x slower than linear_dynamic here, and rows normalised to one range before it 1.5x slower at one row.
"""

from __future__ import annotations

import threading
import warnings

import torch
import torch.nn.functional as F
from torch import nn

from . import gemv


# linear_dynamic cannot choose a scale for NaN/inf input; they come from float weights that are not finite.
NOT_FINITE = ("an int8 linear layer got NaN or infinite activations: the model's float weights (biases, layer norms, "
              "embeddings) are not finite; after model.to_empty(...) they are uninitialized: fill them with "
              "model.load_state_dict(state) before running the model")


# An Int8Linear quantizes and multiplies at most this many rows per kernel call: linear_dynamic allocates an int32
# result and a quantized copy of its input as large as what it is given, so a source's 512 rows cost 16 MB beside
# fc1's 8 MB output; in blocks they are a block's. Each block gets its own input scale.
ROWS_PER_CALL = 128
QUANTIZE_WARNINGS = threading.Lock()      # per_row_qint8's


def per_row_qint8(w: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """w float32 [out, in] as a quantized qint8 tensor with one scale per row (scale float64 [out]), zero point 0."""
    # torch flags its quantized-tensor constructors as deprecated; the lock keeps two loading threads from leaving
    # each other's filter in place (catch_warnings saves and restores the process's filters)
    with QUANTIZE_WARNINGS, warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
        return torch.quantize_per_channel(w, scale, torch.zeros(w.shape[0], dtype=torch.long), 0, torch.qint8)


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach()
        w = (w.to_dense() if w.is_mkldnn else w).float()                     # [out, in] (dense if packed)
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()        # [out]
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.has_bias = bias is not None
        self.packed = torch.ops.quantized.linear_prepack(per_row_qint8(w, scale), bias)

    @property
    def num_weights(self) -> int:
        """The layer's weights and bias as nn.Linear counts them (parameters() cannot see the packed matrix)."""
        return self.in_features * self.out_features + (self.out_features if self.has_bias else 0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # x [..., in] -> [..., out]
        if x.dtype != torch.float32:       # autocast's bfloat16/float16 activations: the kernel takes float32 only
            x = x.float()
        rows = x.reshape(-1, self.in_features)                                # [N, in]
        if rows.shape[0] <= ROWS_PER_CALL:
            return self.run(x)
        out = torch.empty(rows.shape[0], self.out_features, dtype=torch.float32, device=x.device)   # [N, out]
        for start in range(0, rows.shape[0], ROWS_PER_CALL):
            out[start:start + ROWS_PER_CALL] = self.run(rows[start:start + ROWS_PER_CALL])
        return out.view(*x.shape[:-1], self.out_features)

    def run(self, x: torch.Tensor) -> torch.Tensor:
        try:
            return torch.ops.quantized.linear_dynamic(x, self.packed, True)     # reduce_range: safe on any x86 CPU
        except RuntimeError:
            if torch.isfinite(x).all():
                raise
            raise ValueError(NOT_FINITE) from None

    # The packed weight is an opaque torch object, no parameter or buffer: the state dict holds its int8 rows
    # ("weight" int8 [out, in]), their scales ("weight_scale" float64 [out]) and the bias, and loading packs them.

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        super()._save_to_state_dict(destination, prefix, keep_vars)
        qweight, bias = torch.ops.quantized.linear_unpack(self.packed)
        destination[prefix + "weight"] = qweight.int_repr()
        destination[prefix + "weight_scale"] = qweight.q_per_channel_scales()
        if bias is not None:
            destination[prefix + "bias"] = bias

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        names = ["weight", "weight_scale"] + (["bias"] if self.has_bias else [])
        missing = [prefix + n for n in names if prefix + n not in state_dict]
        if missing:
            missing_keys.extend(missing)
            return
        q, scale = state_dict[prefix + "weight"], state_dict[prefix + "weight_scale"]
        if q.dtype != torch.int8 or tuple(q.shape) != (self.out_features, self.in_features) \
                or tuple(scale.shape) != (self.out_features,):
            error_msgs.append(f"{prefix}weight: expected int8 [{self.out_features}, {self.in_features}] with "
                              f"scales [{self.out_features}], got {q.dtype} {list(q.shape)} / {list(scale.shape)}")
            return
        scale = scale.detach().double().cpu()                                # [out]
        w = (q.detach().cpu().double() * scale[:, None]).float()             # quantizes back to exactly q
        bias = state_dict[prefix + "bias"].detach().float().cpu() if self.has_bias else None
        self.packed = torch.ops.quantized.linear_prepack(per_row_qint8(w, scale), bias)

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


class Int8Embedding(nn.Module):
    """An nn.Embedding's table as int8 rows [V, D] with one float32 scale per row (max-abs / 127); looking up ids
    [...] gathers their int8 rows and dequantizes them -> float32 [..., D]."""

    def __init__(self, embedding: nn.Embedding, chunk: int = 4096):
        super().__init__()
        self.num_embeddings, self.embedding_dim = embedding.num_embeddings, embedding.embedding_dim
        w = embedding.weight.detach()                                        # [V, D] float32
        self.register_buffer("scale", (w.abs().amax(dim=1) / 127).clamp(min=1e-12))   # [V]
        self.register_buffer("qweight", torch.empty(w.shape, dtype=torch.int8, device=w.device))
        for start in range(0, w.shape[0], chunk):      # a chunk at a time: no float32 temporary of the whole table
            rows = slice(start, start + chunk)
            self.qweight[rows] = torch.round(w[rows] / self.scale[rows, None])

    def forward(self, ids: torch.Tensor) -> torch.Tensor:                  # ids [...] -> [..., D]
        # F.embedding, not indexing: an id outside [0, V) is nn.Embedding's IndexError, not a row counted from the end
        return F.embedding(ids, self.qweight).float() * F.embedding(ids, self.scale[:, None])

    def extra_repr(self) -> str:
        return f"{self.num_embeddings}, {self.embedding_dim}, int8 weights"


class Int8TiedLinear(nn.Module):
    """A bias-free linear layer whose weight is an Int8Embedding's table (a tied LM head): x [..., D] -> [..., V] with
    the table's int8 rows and scales, x float32 (not quantized). Holds no tensor of its own: the table is saved and
    loaded under the embedding's name, once."""

    def __init__(self, embedding: Int8Embedding):
        super().__init__()
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings
        self.table = (embedding,)           # a tuple: not a child module, so state_dict() lists the table once

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # x [..., D] -> [..., V]
        embedding = self.table[0]
        return gemv.linear_int8(x.float(), embedding.qweight, embedding.scale, None)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs):
        """Nothing to load (a state dict's own copy of the head, Int8Linear's weight and scales, is the table's
        rows again: left unread)."""

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights tied to the embedding"


class Int8TiedCopy(Int8Linear):
    """A tied LM head where gemv's kernel cannot run: fbgemm's packed copy of an Int8Embedding's int8 rows (it
    cannot read them in place). Its state dict is Int8TiedLinear's, nothing of its own (the table is saved and
    loaded under the embedding's name), so an int8 state dict loads on a machine with or without gemv; it is packed
    again from the table after a load (repack_tied_copies)."""

    def __init__(self, embedding: Int8Embedding):
        nn.Module.__init__(self)
        self.in_features, self.out_features = embedding.embedding_dim, embedding.num_embeddings
        self.has_bias = False
        self.table = (embedding,)           # a tuple: not a child module, as Int8TiedLinear's
        self.pack_table()

    def pack_table(self) -> None:
        """The table's int8 rows and scales, packed (they quantize back to exactly those rows)."""
        embedding = self.table[0]
        scale = embedding.scale.double()                                     # [V]
        w = (embedding.qweight.double() * scale[:, None]).float()            # [V, D]
        self.packed = torch.ops.quantized.linear_prepack(per_row_qint8(w, scale), None)

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        """Nothing: the table is the embedding's."""

    _load_from_state_dict = Int8TiedLinear._load_from_state_dict

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, int8 weights copied from the "
                "embedding")


def repack_tied_copies(model: nn.Module, incompatible_keys) -> None:
    """load_state_dict's post-hook on a quantized model: each Int8TiedCopy packs its table's rows as loaded."""
    for module in model.modules():
        if isinstance(module, Int8TiedCopy):
            module.pack_table()


def check_quantizable(dtype: torch.dtype, device: torch.device) -> None:
    """Raise unless float32 weights on `device` can be made int8 here (the CPU, a torch with quantized kernels)."""
    if device.type != "cpu" or dtype != torch.float32:
        raise ValueError(f"int8 quantization needs a float32 model on the CPU; this one is {dtype} on "
                         f"{device} (load it with dtype=None, device='cpu')")
    check_int8_device(device)


def check_int8_device(device: torch.device) -> None:
    """Raise unless an int8 model can run on `device` (the CPU, a torch with quantized kernels): what
    from_pretrained(dtype="int8") checks before it reads a weight."""
    if device.type != "cpu":
        raise ValueError(f"dtype='int8' runs on the CPU only (PyTorch's quantized int8 kernels), not on {device}: "
                         "pass device='cpu', or a float dtype on the GPU (dtype='float16' or dtype='bfloat16')")
    if not torch.backends.quantized.supported_engines or not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise RuntimeError("this PyTorch build has no quantized CPU kernels (quantized::linear_dynamic)")


def quantize_int8(model: nn.Module, embeddings: tuple[str, ...] = ()) -> None:
    """Replace the nn.Embedding children of a float32 CPU model named in embeddings (dotted module names, e.g.
    "shared" or "decoder.embed_tokens") with Int8Embedding, and every nn.Linear with an Int8Linear, or, where it
    shares an embedding's weight, with an Int8TiedLinear on that embedding where gemv's int8 kernel runs (else an
    Int8TiedCopy of its rows), in place. The float32 weights are dropped with the modules that held them."""
    weight = next(model.parameters())
    check_quantizable(weight.dtype, weight.device)
    tables = []                                                  # (float32 weight, its Int8Embedding)
    for name in embeddings:
        parent, _, attr = name.rpartition(".")
        holder = model.get_submodule(parent)
        table = getattr(holder, attr)
        tables.append((table.weight, Int8Embedding(table)))
        setattr(holder, attr, tables[-1][1])
    tied_head = Int8TiedLinear if gemv.available() else Int8TiedCopy
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                tied = next((q for w, q in tables if child.weight is w), None)
                setattr(module, name, tied_head(tied) if tied is not None else Int8Linear(child))
    if tied_head is Int8TiedCopy and any(isinstance(m, Int8TiedCopy) for m in model.modules()):
        model.register_load_state_dict_post_hook(repack_tied_copies)
