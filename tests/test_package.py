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


def test_transformers_family_class_names_are_the_classes_that_run_every_family():
    """Model cards name per-family classes (MarianMTModel, MBart50TokenizerFast, PreTrainedTokenizerFast for
    KoBART): `from seq2seq_kit import MarianMTModel` was an ImportError. Each is the class that reads the family
    from the checkpoint: BartForConditionalGeneration, AutoTokenizer (test_families_pipeline runs them)."""
    import seq2seq_kit
    from seq2seq_kit import AutoTokenizer, BartForConditionalGeneration, MarianMTModel, MBart50TokenizerFast

    assert MarianMTModel is BartForConditionalGeneration and MBart50TokenizerFast is AutoTokenizer
    for name in ("M2M100ForConditionalGeneration", "PegasusForConditionalGeneration", "MBartForConditionalGeneration"):
        assert getattr(seq2seq_kit, name) is BartForConditionalGeneration and name in dir(seq2seq_kit)
    for name in ("BartTokenizer", "PreTrainedTokenizerFast", "MarianTokenizer", "NllbTokenizer", "PegasusTokenizer",
                 "M2M100Tokenizer", "MBartTokenizer"):
        assert getattr(seq2seq_kit, name) is AutoTokenizer and name in seq2seq_kit.__all__
