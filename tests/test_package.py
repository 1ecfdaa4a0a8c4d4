"""The package runs without its test oracle, benchmark peers or scale-out extra: importing every module (parity
and the Ray engine included) loads none of them."""

import subprocess
import sys

CODE = """
import sys
import seq2seq_kit
from seq2seq_kit import cli, corpus, hub, loading, parity, pipeline, tokenizer
from seq2seq_kit.corpus import ray_engine
from seq2seq_kit.generation import generate
assert cli.main(["demo", "--max-length", "8"]) == 0
loaded = sorted(m for m in ("transformers", "ctranslate2", "ray", "pyarrow") if m in sys.modules)
print("LOADED", loaded)
"""


def test_the_whole_flow_imports_no_oracle_peer_or_extra():
    out = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "LOADED []" in out.stdout, out.stdout
