"""Convert a benchmark checkpoint to CTranslate2, in a venv of its own.

CTranslate2's converter fails under transformers 5 ('BartConfig' object has no attribute
'normalize_before'), so conversion runs in benchmarks/.cache/ct2-venv with transformers<5:

    python benchmarks/convert_ct2.py CHECKPOINT_DIR OUTPUT_DIR     # from any Python: sets up the
                                                                   # venv on first use, then converts

The model is converted once in float32; the benchmark loads it with compute_type "float32" or
"int8" (CTranslate2 quantizes at load time). Only the conversion needs the venv: the benchmark
itself imports `ctranslate2` from the main environment.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = ROOT / ".cache" / "ct2-venv"
VENV_PYTHON = VENV / "bin" / "python"
REQUIREMENTS = ["ctranslate2", "transformers<5", "torch==2.13.0"]


def ensure_venv() -> Path:
    """Create benchmarks/.cache/ct2-venv with the converter's requirements; return its python."""
    if VENV_PYTHON.exists():
        probe = subprocess.run([str(VENV_PYTHON), "-c", "import ctranslate2, transformers, torch"],
                               capture_output=True, text=True)
        if probe.returncode == 0:
            return VENV_PYTHON
    print(f"setting up {VENV} ({' '.join(REQUIREMENTS)}) ...", flush=True)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)
    pip = subprocess.run([str(VENV_PYTHON), "-m", "pip", "install", "-q", *REQUIREMENTS],
                         capture_output=True, text=True)
    if pip.returncode != 0:
        raise RuntimeError(f"pip install {' '.join(REQUIREMENTS)} into {VENV} failed:\n{pip.stderr[-2000:]}")
    return VENV_PYTHON


def ensure_converted(checkpoint: Path, output: Path) -> Path:
    """The CTranslate2 model directory for `checkpoint`, converted on first use (raises on failure)."""
    if (output / "model.bin").exists():
        return output
    python = ensure_venv()
    done = subprocess.run([str(python), str(Path(__file__).resolve()), "--convert", str(checkpoint), str(output)],
                          capture_output=True, text=True)
    if done.returncode != 0 or not (output / "model.bin").exists():
        lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
        raise RuntimeError(f"CTranslate2 conversion of {checkpoint} failed: {(lines or ['no output'])[-1][:500]}")
    return output


def _convert(checkpoint: str, output: str) -> None:
    """Runs inside the ct2 venv: transformers<5 loads the checkpoint, CTranslate2 writes model.bin."""
    import ctranslate2

    tmp = Path(output + ".tmp")
    converter = ctranslate2.converters.TransformersConverter(checkpoint)
    converter.convert(str(tmp), force=True)
    tmp.rename(output)
    print(f"converted {checkpoint} -> {output} (ctranslate2 {ctranslate2.__version__})")


if __name__ == "__main__":
    if len(sys.argv) == 4 and sys.argv[1] == "--convert":
        _convert(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 3:
        print(ensure_converted(Path(sys.argv[1]).resolve(), Path(sys.argv[2]).resolve()))
    else:
        sys.exit(__doc__)
