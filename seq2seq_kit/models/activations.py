"""Activation functions by their config.json `activation_function` name, as transformers' ACT2FN computes them."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def gelu_new(x: torch.Tensor) -> torch.Tensor:
    """The tanh approximation, written as transformers' NewGELUActivation writes it."""
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


ACTIVATIONS = {"gelu": F.gelu, "gelu_new": gelu_new, "relu": F.relu, "silu": F.silu, "swish": F.silu,
               "tanh": torch.tanh}
