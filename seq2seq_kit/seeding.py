"""set_seed: transformers' name for seeding every random generator a run draws from, so that sampling (which draws
from torch's global generator unless generate is given a `generator`) gives the same tokens run after run."""

from __future__ import annotations

import random

import numpy as np
import torch


def set_seed(seed: int, deterministic: bool = False) -> None:
    """Seed Python's, numpy's and torch's generators (every device's) with `seed`, as transformers.set_seed does;
    deterministic=True also makes torch use deterministic algorithms (torch.use_deterministic_algorithms)."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"set_seed takes an int, got {type(seed).__name__}")
    random.seed(seed)
    np.random.seed(seed % 2**32)                    # numpy takes 0 .. 2**32 - 1; torch takes any int64
    torch.manual_seed(seed)                         # every device's default generator
    if deterministic:
        torch.use_deterministic_algorithms(True)
