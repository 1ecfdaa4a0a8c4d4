"""int8 weights for a float32 CPU model: every nn.Linear becomes an Int8Linear.

Int8Linear holds its weight as int8 with one scale per output row (symmetric, max-abs / 127) and quantizes its
input per call (PyTorch's quantized::linear_dynamic: fbgemm on x86, qnnpack on ARM, int32 accumulation).
A decoder step reads a quarter of the float32 bytes. The embeddings stay float32; a tied LM head gets its own
int8 copy. This is outside the exact-parity guarantee: logits move by about 1% of their range, so greedy and beam
tokens leave transformers' after a while (benchmarks/ report the identity rate beside the speed).
"""

from __future__ import annotations

import warnings

import torch
from torch import nn


class Int8Linear(nn.Module):
    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        w = linear.weight.detach().float()                                   # [out, in]
        scale = (w.abs().amax(dim=1) / 127).clamp(min=1e-12).double()        # [out]
        zero_point = torch.zeros(w.shape[0], dtype=torch.long)
        with warnings.catch_warnings():   # torch flags its quantized-tensor constructors as deprecated
            warnings.filterwarnings("ignore", message=".*quantized tensor creation functions.*")
            qweight = torch.quantize_per_channel(w, scale, zero_point, 0, torch.qint8)
        bias = linear.bias.detach().float() if linear.bias is not None else None
        self.packed = torch.ops.quantized.linear_prepack(qweight, bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:                      # x [..., in] -> [..., out]
        return torch.ops.quantized.linear_dynamic(x, self.packed, True)     # reduce_range: safe on any x86 CPU

    few_rows = forward                                                       # the decode step's entry point

    def extra_repr(self) -> str:
        return f"in_features={self.in_features}, out_features={self.out_features}, int8 weights"


def quantize_int8(model: nn.Module) -> None:
    """Replace every nn.Linear of a float32 CPU model with an Int8Linear, in place."""
    weight = next(model.parameters())
    if weight.device.type != "cpu" or weight.dtype != torch.float32:
        raise ValueError(f"int8 quantization needs a float32 model on the CPU; this one is {weight.dtype} on "
                         f"{weight.device} (load it with dtype=None, device='cpu')")
    if not torch.backends.quantized.supported_engines or not hasattr(torch.ops.quantized, "linear_dynamic"):
        raise RuntimeError("this PyTorch build has no quantized CPU kernels (quantized::linear_dynamic)")
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, nn.Linear):
                setattr(module, name, Int8Linear(child))
