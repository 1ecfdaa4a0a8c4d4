"""Virtual environments of their own for what the benchmark's main environment cannot hold: the CTranslate2
converter under transformers<5 (convert_ct2.py), and transformers 4.55.4, the last release whose generate ran the
searches transformers 5 moved to the Hub (bench.py's engine "transformers-4.55"). Each is made on first use in
benchmarks/.cache/ with the main environment's torch version."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache"


def ensure(name: str, requirements: list[str], probe: str) -> Path:
    """benchmarks/.cache/<name> with these pip requirements, made once (again when `probe`, Python code, fails in
    it); returns its python."""
    venv = CACHE / name
    python = venv / "bin" / "python"
    if python.exists() and subprocess.run([str(python), "-c", probe], capture_output=True).returncode == 0:
        return python
    print(f"setting up {venv} ({' '.join(requirements)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    pip = subprocess.run([str(python), "-m", "pip", "install", "-q", *requirements], capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(requirements)} into {venv} failed:\n{pip.stderr[-2000:]}")
    return python


def torch_requirement() -> str:
    """The main environment's torch, pinned (the CPU wheel's version without its local tag)."""
    import torch

    return f"torch=={torch.__version__.split('+')[0]}"


def transformers_4_55() -> Path:
    """The python of a venv with transformers 4.55.4 (bench.py's "transformers-4.55" worker)."""
    return ensure("transformers-4.55-venv", [torch_requirement(), "transformers==4.55.4"],
                  "import transformers, torch; assert transformers.__version__ == '4.55.4'")
