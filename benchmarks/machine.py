"""The machine line a result file names its run by (bench.py writes its own, fuller one): the CPU's name, family and
model, torch's threads and version, and the commit measured."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def machine_line() -> str:
    import torch

    from seq2seq_kit.kernel_choice import cpu_name

    return (f"{cpu_name()}, {torch.get_num_threads()} threads, torch {torch.__version__}, "   # cpu_name: "AMD EPYC
            f"seq2seq_kit {commit()}")                                                        # (family 25 model 17..."


def commit() -> str:
    """`git describe --always --dirty` of the checkout measured, "?" outside one."""
    try:
        described = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT, capture_output=True,
                                   text=True).stdout.strip()
    except OSError:
        described = ""
    return described or "?"
