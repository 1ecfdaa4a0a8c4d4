"""Which transformers 5.25 tokenizer class a checkpoint gets, and the `tokenizers` pipeline that class reads from
its tokenizer.json.

    name = tokenizer_class(root, config)                        # "NllbTokenizer", "RobertaTokenizer", ... or None
    backend = read_tokenizer_json(root / "tokenizer.json", name, config)

AutoTokenizer takes tokenizer_config.json's `tokenizer_class`, else the class of config.json's `model_type`.
The generic class (PreTrainedTokenizerFast, TokenizersBackend) uses tokenizer.json as it is. The classes with an
`__init__` of their own (BART's = RoBERTa's, Pegasus', NLLB's, mBART's, mBART-50's) keep only the file's vocabulary
(and merges), added tokens (unless tokenizer_config.json's added_tokens_decoder replaces them), post-processor
(not BART's: RobertaProcessing, see tokenizer.py) and SentencePiece character map (the first `Precompiled`
normalizer); they build the model's options, the normalizer, the pre-tokenizer and the decoder themselves. A
tokenizer.json converted by an older transformers (e.g. a Hub checkpoint's) can hold another pipeline than its class
builds: transformers 5.25 tokenizes with the class's, and so does this module.
"""

from __future__ import annotations

import base64
import json
from pathlib import Path

from tokenizers import Regex, decoders, normalizers, pre_tokenizers
from tokenizers import Tokenizer as Backend

from .jsonfile import read_json, read_json_object

# AutoTokenizer's class for a config.json model_type when tokenizer_config.json names none (transformers 5.25's
# TOKENIZER_MAPPING_NAMES, for the families seq2seq_kit runs)
MODEL_TYPE_CLASSES = {"bart": "RobertaTokenizer", "pegasus": "PegasusTokenizer", "mbart": "MBartTokenizer",
                      "m2m_100": "M2M100Tokenizer", "marian": "MarianTokenizer", "nllb-moe": "NllbTokenizer"}
SPIECE_UNDERLINE = "\u2581"
# class -> the model type its __init__ builds (a tokenizer.json of another model type is used as it is)
CLASS_MODELS = {"BartTokenizer": "BPE", "RobertaTokenizer": "BPE", "NllbTokenizer": "BPE",
                "PegasusTokenizer": "Unigram", "MBartTokenizer": "Unigram", "MBart50Tokenizer": "Unigram"}


def config_model_type(root: Path) -> str | None:
    """config.json's model_type beside a tokenizer, or None."""
    path = root / "config.json"
    return read_json_object(path).get("model_type") if path.is_file() else None


def tokenizer_class(root: Path, config: dict) -> str | None:
    """transformers' tokenizer class name for the checkpoint at root (tokenizer_config.json read into `config`):
    its tokenizer_class, else the class of config.json's model_type, else None."""
    return config.get("tokenizer_class") or MODEL_TYPE_CLASSES.get(config_model_type(root))


def read_tokenizer_json(path: Path, class_name: str | None, config: dict) -> Backend:
    """tokenizer.json as transformers 5.25's `class_name` reads it (module doc); config: tokenizer_config.json's
    settings (add_prefix_space, unk_token). A ValueError naming the file when it holds no tokenizer."""
    saved = read_json(path)              # malformed JSON: an error that names the file
    name = (class_name or "").removesuffix("Fast")
    model = saved.get("model") if isinstance(saved, dict) else None
    if name not in CLASS_MODELS or not isinstance(model, dict) or _model_type(model) != CLASS_MODELS[name]:
        return _backend(path, lambda: Backend.from_file(str(path)))
    saved["model"] = {**model, "type": CLASS_MODELS[name], **_model_options(path, name, model, config)}
    if "added_tokens_decoder" in config:        # the class's added tokens are those (Tokenizer adds them), not the
        saved["added_tokens"] = []              # file's (only a config without them takes the file's)
    backend = _backend(path, lambda: Backend.from_str(json.dumps(saved)))
    set_pipeline(backend, name, _charsmap(saved.get("normalizer")), config)
    return backend


def _model_type(model: dict) -> str | None:
    """tokenizer.json's model type; an older `tokenizers` wrote none, and a BPE model is the one with merges, a
    Unigram model the one whose vocabulary is a list (of [piece, score])."""
    if "type" in model:
        return model["type"]
    return "BPE" if "merges" in model else "Unigram" if isinstance(model.get("vocab"), list) else None


def _model_options(path: Path, name: str, model: dict, config: dict) -> dict:
    """The BPE / Unigram options `name`'s __init__ gives its model (vocabulary and merges are the file's)."""
    unk = config.get("unk_token", "<unk>")
    unk = unk.get("content") if isinstance(unk, dict) else unk
    if name in ("BartTokenizer", "RobertaTokenizer"):
        return dict(dropout=None, unk_token=None, continuing_subword_prefix="", end_of_word_suffix="",
                    fuse_unk=False, byte_fallback=False, ignore_merges=False)
    if name == "NllbTokenizer":
        return dict(dropout=None, unk_token=str(unk), continuing_subword_prefix=None, end_of_word_suffix=None,
                    fuse_unk=True, byte_fallback=False, ignore_merges=False)
    if name == "PegasusTokenizer":     # vocab.index((unk, 0.0), 1): its unk_token scored 0.0, after the first entry
        pieces = [tuple(p) if isinstance(p, list) else p for p in model.get("vocab") or []]
        try:
            return dict(unk_id=pieces.index((str(unk), 0.0), 1), byte_fallback=False)
        except ValueError:
            raise ValueError(f"{path}: PegasusTokenizer reads its unk_token {unk!r} as a vocabulary entry scored 0.0 "
                             "after the first, and this vocabulary has none (transformers cannot load it either); "
                             "name the unknown token in tokenizer_config.json (unk_token)") from None
    return dict(unk_id=3, byte_fallback=False)    # MBartTokenizer, MBart50Tokenizer: fairseq's <unk> is id 3


def _charsmap(normalizer) -> bytes | None:
    """The SentencePiece character map of tokenizer.json's normalizer (itself, or one of a Sequence's), if any."""
    if not isinstance(normalizer, dict):
        return None
    steps = normalizer.get("normalizers") if normalizer.get("type") == "Sequence" else [normalizer]
    for step in steps if isinstance(steps, list) else []:
        if isinstance(step, dict) and step.get("type") == "Precompiled" and step.get("precompiled_charsmap"):
            return base64.b64decode(step["precompiled_charsmap"])
    return None


def set_pipeline(backend: Backend, name: str, charsmap: bytes | None, config: dict) -> None:
    """Normalizer, pre-tokenizer and decoder as `name`'s __init__ sets them (transformers 5.25); charsmap: the
    SentencePiece model's precompiled character map, or None."""
    metaspace = dict(replacement=SPIECE_UNDERLINE, prepend_scheme="always", split=True)
    spaces = normalizers.Replace(Regex(r" {2,}"), " ")
    precompiled = [normalizers.Precompiled(charsmap)] if charsmap is not None else []
    if name in ("BartTokenizer", "RobertaTokenizer"):
        backend.normalizer = None
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=bool(config.get("add_prefix_space", False)))
        backend.decoder = decoders.ByteLevel()
        return
    if name == "MBartTokenizer":
        strip = [normalizers.Strip(left=False, right=True), normalizers.Replace(Regex(r" {2,}"), SPIECE_UNDERLINE)]
        backend.normalizer = normalizers.Sequence(precompiled + strip)
        backend.pre_tokenizer = pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                         pre_tokenizers.Metaspace(**metaspace)])
    else:
        if name == "PegasusTokenizer":
            steps = precompiled + [spaces] if precompiled else [normalizers.Replace(Regex(r"\n"), " "), spaces]
        elif name == "NllbTokenizer":
            steps = precompiled + [spaces] if precompiled else None
        else:                                                                          # MBart50Tokenizer
            steps = precompiled + [normalizers.Strip(left=False, right=True), spaces]
        backend.normalizer = None if steps is None else normalizers.Sequence(steps)
        backend.pre_tokenizer = pre_tokenizers.Metaspace(**metaspace)
    backend.decoder = decoders.Metaspace(**metaspace)


def _backend(path: Path, make) -> Backend:
    try:
        return make()
    except Exception as e:   # noqa: BLE001 - tokenizers raises plain Exception for a malformed file
        raise ValueError(f"{path} is malformed: {type(e).__name__}: {e}") from None
