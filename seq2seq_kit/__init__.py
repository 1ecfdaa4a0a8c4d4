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
            "DisjunctiveConstraint": ".generation", "set_seed": ".seeding"}
# transformers' per-family class names, which model cards use (MarianMTModel.from_pretrained(...)) -> the class that
# runs every family, reading which from the checkpoint's files (config.json; tokenizer_config.json's class)
_ALIASES = {**dict.fromkeys(("MarianMTModel", "MBartForConditionalGeneration", "PegasusForConditionalGeneration",
                             "M2M100ForConditionalGeneration"), "BartForConditionalGeneration"),
            **dict.fromkeys(("BartTokenizer", "BartTokenizerFast", "PreTrainedTokenizerFast", "MarianTokenizer",
                             "M2M100Tokenizer", "NllbTokenizer", "NllbTokenizerFast", "MBartTokenizer",
                             "MBartTokenizerFast", "MBart50Tokenizer", "MBart50TokenizerFast", "PegasusTokenizer",
                             "PegasusTokenizerFast"), "AutoTokenizer")}
__all__ = sorted([*_EXPORTS, *_ALIASES])


def __getattr__(name: str):
    target = _ALIASES.get(name, name)
    if target not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[target], __name__), target)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS) | set(_ALIASES))


__version__ = "0.1.0"
