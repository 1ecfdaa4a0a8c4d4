"""Convert a benchmark checkpoint to CTranslate2, in a venv of its own.

Conversion runs first with the current Python (CTranslate2's Marian loader works under transformers 5: it
sets the legacy keys itself; ctranslate2 4.8.5 converts BART under transformers 5 too). Where that fails, as BART's
did with earlier ctranslate2 releases under transformers 5 ('BartConfig' object has no attribute
'normalize_before'), it runs in benchmarks/.cache/ct2-venv with transformers<5:

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
sys.path.insert(0, str(ROOT))
import venvs  # noqa: E402

REQUIREMENTS = ["ctranslate2", "transformers<5", "torch==2.13.0"]


def ensure_venv() -> Path:
    """benchmarks/.cache/ct2-venv with the converter's requirements; returns its python."""
    return venvs.ensure("ct2-venv", REQUIREMENTS, "import ctranslate2, transformers, torch")


def ensure_converted(checkpoint: Path, output: Path) -> Path:
    """The CTranslate2 model directory for `checkpoint`, converted on first use and again once the checkpoint's
    weights are newer (make_checkpoints.py --force), raising on failure: with this Python if it can, else in the
    transformers<5 venv."""
    converted = output / "model.bin"
    if converted.exists() and converted.stat().st_mtime >= (checkpoint / "model.safetensors").stat().st_mtime:
        return output
    failure = _run_converter(Path(sys.executable), checkpoint, output)
    if failure is not None:
        print(f"converting {checkpoint.name} with this Python failed ({failure}); trying the ct2 venv", flush=True)
        failure = _run_converter(ensure_venv(), checkpoint, output)
    if failure is not None:
        raise RuntimeError(f"CTranslate2 conversion of {checkpoint} failed: {failure}")
    return output


def _run_converter(python: Path, checkpoint: Path, output: Path) -> str | None:
    """Convert with `python` in a subprocess: None when done, else its last line of output."""
    done = subprocess.run([str(python), str(Path(__file__).resolve()), "--convert", str(checkpoint), str(output)],
                          capture_output=True, text=True)
    if done.returncode == 0 and (output / "model.bin").exists():
        return None
    lines = [line for line in (done.stdout + done.stderr).splitlines() if line.strip()]
    return (lines or ["no output"])[-1][:500]


def _convert(checkpoint: str, output: str) -> None:
    """Runs in a subprocess (this Python, or the ct2 venv's): transformers loads the checkpoint, CTranslate2
    writes model.bin."""
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
