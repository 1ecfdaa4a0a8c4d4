"""Generation: logits processors, greedy/beam/sampling search, KV cache."""

from .config import GenerationConfig
from .generate import GenerateOutput, generate

__all__ = ["GenerationConfig", "GenerateOutput", "generate"]
