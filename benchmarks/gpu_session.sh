#!/usr/bin/env bash
# Issue 17 / 13's GPU checks and measurements in one bounded call (under 8 minutes, so a broken run can be rerun
# once inside a 15-minute lease). From the repository root:
#
#   bash benchmarks/gpu_session.sh            # on the device machine: results into $OUT (default /tmp/gpu_out)
#   bash benchmarks/gpu_session.sh --smoke    # on any machine: tiny shapes on the CPU, no CUDA tests
#
# The device machine's image has Python 3.12 with torch (CUDA), transformers (5.17 when last seen; the tests'
# oracle is pinned to 5.25), safetensors, tokenizers, huggingface_hub, numpy, pytest, hypothesis and httpx, and
# nothing can be downloaded there, so the package is used from the checkout (PYTHONPATH) instead of
# `pip install -e ".[test,bench]"`, and CUDA's torch is the image's. To run the parity tests against the pinned
# transformers, fetch its wheel here first and carry it (README of the device tool, Notes):
#   echo /.whl/ >> .git/info/exclude
#   python3 -m pip download --no-deps --only-binary=:all: --python-version 3.12 -d .whl transformers==5.25.0 \
#       kernels==0.19.1 tomlkit huggingface_hub==2.4.0 httpx2 httpcore2 truststore
#   (5.25 imports `kernels` and needs huggingface_hub >= 2.4, which talks through httpx2; the image had
#   huggingface_hub 1.33 on httpx when last seen, and tests/hub_cache.py imports httpx2)
# then call the tool with carry [".whl"]; this script installs .whl/*.whl into /tmp/site when present.
#
# Steps: environment -> `pytest -m cuda -q` (no -x: every failure shown) on the files that hold cuda tests
# (bounded) -> benchmarks/gpu_bench.py (bounded by its own time budget; each finished part is written at once).
# Files in $OUT: env.txt, pytest_cuda.log, bench.log, gpu_bench.json, gpu_bench.md (at most 8 files, as the tool
# returns).
set -uo pipefail
cd "$(dirname "$0")/.."
SMOKE=""
[ "${1:-}" = "--smoke" ] && SMOKE="--smoke"
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
PY=${PYTHON:-python3}
if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
        && export PYTHONPATH=/tmp/site:$PWD
fi

{
    date -u
    $PY -c "import sys, torch, transformers; print(sys.version.split()[0], 'torch', torch.__version__, 'cuda',
torch.version.cuda, 'transformers', transformers.__version__);
print(torch.cuda.get_device_name() if torch.cuda.is_available() else 'no CUDA device')"
    command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.sm,clocks.mem \
        --format=csv
} 2>&1 | tee "$OUT/env.txt"

if [ -z "$SMOKE" ]; then
    # every file that holds `cuda` tests (collecting the whole suite would import server extras absent there);
    # no -x: one failure must not hide the others' results in a one-call lease; each test bounded
    files=$(grep -l "mark.cuda" tests/test_*.py)
    per_test=$($PY -c "import pytest_timeout" 2>/dev/null && echo "--timeout 90")
    timeout 170 $PY -m pytest -m cuda -q -p no:cacheprovider -o addopts="" $per_test -rfE \
        --continue-on-collection-errors $files 2>&1 \
        | tee "$OUT/pytest_cuda.log"
    echo "pytest -m cuda exit: ${PIPESTATUS[0]}" | tee -a "$OUT/pytest_cuda.log"
fi

cd benchmarks
timeout 330 $PY gpu_bench.py $SMOKE --out "$OUT" --budget 250 2>&1 | grep -v "Writing model shards" \
    | tee "$OUT/bench.log"
echo "gpu_bench exit: ${PIPESTATUS[0]}" | tee -a "$OUT/bench.log"
