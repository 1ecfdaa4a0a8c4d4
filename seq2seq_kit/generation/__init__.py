"""Generation: logits processors, greedy/beam/sampling search, KV cache."""
