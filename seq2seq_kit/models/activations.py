"""Activation functions by their config.json `activation_function` name, as transformers' ACT2FN computes them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation, written as transformers' NewGELUActivation writes it."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_python_tanh(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation in GELUTanh's own order of operations."""
    return x * 0.5 * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def gelu_python(x: torch.Tensor) -> torch.Tensor:
    return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


def gelu_fast(x: torch.Tensor) -> torch.Tensor:
    return 0.5 * x * (1.0 + torch.tanh(x * 0.7978845608 * (1.0 + 0.044715 * x * x)))


def quick_gelu(x: torch.Tensor) -> torch.Tensor:
    return x * torch.sigmoid(1.702 * x)


def gelu_pytorch_tanh(x: torch.Tensor) -> torch.Tensor:
    return F.gelu(x, approximate="tanh")


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "gelu_python": gelu_python, "gelu_fast": gelu_fast,
               "gelu_pytorch_tanh": gelu_pytorch_tanh, "gelu_python_tanh": gelu_python_tanh,
               "quick_gelu": quick_gelu, "relu": F.relu, "silu": F.silu, "swish": F.silu, "tanh": torch.tanh}
