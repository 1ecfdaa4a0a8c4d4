"""seq2seq_kit: BART-family summarization and translation (BART, mBART, Pegasus, Marian, M2M100, NLLB) from Hugging
Face checkpoints, without transformers."""

from __future__ import annotations

import importlib

# name -> the module that defines it, imported on first use (PEP 562): `import seq2seq_kit` and the command line's
# --help do not import torch, and a Ctrl-C while a command starts is the CLI's one-line "interrupted".
_EXPORTS = {"BartConfig": ".config", "AutoConfig": ".config", "AutoModelForSeq2SeqLM": ".modeling",
            "BartForConditionalGeneration": ".modeling",
            "GenerationConfig": ".generation", "Engine": ".engine", "EngineClosed": ".engine", "EngineFull": ".engine",
            "Tokenizer": ".tokenizer", "AutoTokenizer": ".family_tokenizers", "pipeline": ".translation",
            "summarize_corpus": ".corpus", "translate_corpus": ".corpus", "TextStreamer": ".generation",
            "TextIteratorStreamer": ".generation", "AsyncTextIteratorStreamer": ".generation",
            "WatermarkDetector": ".generation", "PhrasalConstraint": ".generation",
            "DisjunctiveConstraint": ".generation"}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


__version__ = "0.1.0"
