"""Text <-> token ids for BART-family checkpoints: transformers 5.25's tokenizers, without transformers.

`Tokenizer.from_pretrained(dir)` loads either on-disk form a checkpoint ships:
  1. tokenizer.json (e.g. KoBART): the saved `tokenizers` pipeline, used as is where transformers' class is the
     generic `TokenizersBackend` ("PreTrainedTokenizerFast"), with its class's own normalizer, pre-tokenizer and
     decoder where that class builds them (BART's, Pegasus': tokenizer_classes);
  2. vocab.json + merges.txt (facebook/bart-*, distilbart): rebuilt as transformers' `BartTokenizer`
     (= `RobertaTokenizer`) builds it: byte-level BPE, RoBERTa post-processing `<s> A </s>` / `<s> A </s></s> B </s>`.
BPE itself, added-token matching, truncation and padding run in the `tokenizers` library, called the way
transformers calls it; this module reproduces the Python rules around those calls (tokenizer_config.json,
special tokens, padding/truncation strategies, decoding).
"""

from __future__ import annotations

import math
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from tokenizers import AddedToken, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from . import hub
from .jsonfile import read_json, read_json_object, write_json, writing
from .tokenizer_classes import MODEL_TYPE_CLASSES, config_model_type, read_tokenizer_json
from .user_warnings import warn

DEFAULT_DIR = Path(__file__).parent / "assets" / "bart-tokenizer"   # the embedded facebook/bart files
FILES = "tokenizer.json, or vocab.json + merges.txt (tokenizer_config.json optional)"
# transformers' named special tokens, in its order (all_special_tokens), and BartTokenizer's defaults for them.
BART_TOKENS = dict(bos_token="<s>", eos_token="</s>", unk_token="<unk>", sep_token="</s>",
                   pad_token="<pad>", cls_token="<s>", mask_token="<mask>")
CLEAN_UP_BPE = "clean_up_tokenization_spaces_for_bpe_even_though_it_will_corrupt_output"
SWITCHES = ("add_prefix_space", "trim_offsets", "clean_up_tokenization_spaces", CLEAN_UP_BPE, "separate_vocabs",
            "legacy_behaviour")   # the true/false settings read from the tokenizer files
VERY_LARGE_INTEGER = int(1e30)  # transformers' model_max_length when none is configured
LARGE_INTEGER = int(1e20)       # a model_max_length above this means "no limit" to transformers
PADDING = {False: None, "do_not_pad": None, True: "longest", "longest": "longest", "max_length": "max_length"}
TRUNCATION = {None: None, False: None, "do_not_truncate": None, True: "longest_first",
              "longest_first": "longest_first", "only_first": "only_first", "only_second": "only_second"}

# transformers' `clean_up_tokenization`, which 5.25 applies only to non-BPE models.
CLEAN_UP = [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"), (" n't", "n't"), (" 'm", "'m"),
            (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]
CLEAN_UP_REACH = max(len(before) for before, _ in CLEAN_UP) - 1     # how far after its space a pattern reaches


def check_flag(value, name: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")


def clean_up_tokenization(text: str) -> str:
    """transformers' `clean_up_tokenization`: no space before punctuation and English contractions."""
    for before, after in CLEAN_UP:
        text = text.replace(before, after)
    return text


def clean_up_pending(text: str) -> int:
    """How many of text's last characters clean_up_tokenization may still rewrite once more text follows (text: its
    output so far): the longest end of text that begins one of its patterns (" " of " .", " n'" of " n't"), or
    that one ending in a space became (" ' " -> "'": " ." takes that space first where "." follows), and back from
    there to each space close enough to start a pattern reaching into it (" n" + " ' " -> " n'" + "t" -> "n't").
    0: none."""
    begun = (k for before, _ in CLEAN_UP for k in range(1, len(before)) if text.endswith(before[:k]))
    replaced = (len(after) for before, after in CLEAN_UP if before.endswith(" ") and text.endswith(after))
    pending = max([*begun, *replaced], default=0)
    start = len(text) - pending
    while pending and (space := text.rfind(" ", max(0, start - CLEAN_UP_REACH), start)) >= 0:
        start = space
    return len(text) - start


class CharSpan(NamedTuple):
    """Characters text[start:end] of a token or word (transformers' CharSpan)."""

    start: int
    end: int


class TokenSpan(NamedTuple):
    """Tokens [start:end] of a word in an encoded row (transformers' TokenSpan)."""

    start: int
    end: int


class BatchEncoding(dict):
    """`input_ids` and `attention_mask`; like transformers' BatchEncoding, also readable as attributes, and with the
    `tokenizers.Encoding` of each row (`encodings`; None where the tokenizer's pieces are not cut from the text:
    Marian, M2M100, transformers' Python tokenizers) for its maps between tokens, words and characters. Those
    taking `batch_or_token_index` (word, char) read `(i)` as row 0's index i and `(b, i)` as row b's."""

    def __init__(self, data: dict | None = None, encoding: list | None = None):   # transformers' argument names
        super().__init__(data or {})
        self.encodings = encoding      # an attribute: dict(enc), keys() and the tensors stay as they are

    def __getattr__(self, name):
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None

    def __getitem__(self, key):
        """As transformers' BatchEncoding: a field by name (enc["input_ids"]); else, where the rows' Encodings are
        kept, those (enc[0]: row 0's tokenizers.Encoding, enc[:2]: a list); where not, a slice of every field's
        rows as a dict, and a KeyError for an index."""
        if isinstance(key, str):
            return super().__getitem__(key)
        if self.encodings is not None:
            return self.encodings[key]
        if isinstance(key, slice):
            return {name: value[key] for name, value in self.items()}
        raise KeyError(f"enc[{key!r}]: a row's Encoding is kept by the `tokenizers` library's tokenizers only, which "
                       "this one (Marian, M2M100) is not; read a field by name, enc['input_ids'][i]")

    @property
    def data(self) -> dict:
        """The fields as a dict (transformers' BatchEncoding.data): this object itself, a dict."""
        return self

    @property
    def is_fast(self) -> bool:
        """Whether the rows' Encodings are kept (transformers: made by a fast tokenizer)."""
        return self.encodings is not None

    @property
    def n_sequences(self) -> int | None:
        """1 for single texts, 2 for pairs; None without encodings."""
        return self.encodings[0].n_sequences if self.encodings else None

    def tokens(self, batch_index: int = 0) -> list[str]:
        """Row batch_index's tokens, special and padding ones included."""
        return self._row("tokens", batch_index).tokens

    def sequence_ids(self, batch_index: int = 0) -> list[int | None]:
        """Each token's text: 0 (the first of a pair), 1 (the second), None (special and padding tokens)."""
        return self._row("sequence_ids", batch_index).sequence_ids

    def word_ids(self, batch_index: int = 0) -> list[int | None]:
        """Each token's word in its text (None for special and padding tokens)."""
        return self._row("word_ids", batch_index).word_ids

    def token_to_sequence(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, index = self._at("token_to_sequence", batch_or_token_index, token_index)
        return encoding.token_to_sequence(index)

    def token_to_word(self, batch_or_token_index: int, token_index: int | None = None) -> int | None:
        encoding, index = self._at("token_to_word", batch_or_token_index, token_index)
        return encoding.token_to_word(index)

    def word_to_tokens(self, batch_or_word_index: int, word_index: int | None = None,
                       sequence_index: int = 0) -> TokenSpan | None:
        """The tokens of a word of text sequence_index (None when it has none)."""
        encoding, index = self._at("word_to_tokens", batch_or_word_index, word_index)
        span = encoding.word_to_tokens(index, sequence_index)
        return None if span is None else TokenSpan(*span)

    def token_to_chars(self, batch_or_token_index: int, token_index: int | None = None) -> CharSpan | None:
        """A token's characters in its text (None for special and padding tokens)."""
        encoding, index = self._at("token_to_chars", batch_or_token_index, token_index)
        span = encoding.token_to_chars(index)
        return None if span is None else CharSpan(*span)

    def char_to_token(self, batch_or_char_index: int, char_index: int | None = None,
                      sequence_index: int = 0) -> int | None:
        encoding, index = self._at("char_to_token", batch_or_char_index, char_index)
        return encoding.char_to_token(index, sequence_index)

    def word_to_chars(self, batch_or_word_index: int, word_index: int | None = None,
                      sequence_index: int = 0) -> CharSpan:
        encoding, index = self._at("word_to_chars", batch_or_word_index, word_index)
        return CharSpan(*encoding.word_to_chars(index, sequence_index))   # TypeError for no word, as transformers

    def char_to_word(self, batch_or_char_index: int, char_index: int | None = None,
                     sequence_index: int = 0) -> int | None:
        encoding, index = self._at("char_to_word", batch_or_char_index, char_index)
        return encoding.char_to_word(index, sequence_index)

    def _row(self, method: str, batch_index: int):
        """Row batch_index's Encoding; ValueError without encodings, as transformers' (IndexError past the rows)."""
        if not self.encodings:
            raise ValueError(f"{method}() is not available when using Python based tokenizers")
        return self.encodings[batch_index]

    def _at(self, method: str, batch_or_index: int, index: int | None):
        """(Encoding, index) of a call: `(i)` is row 0's index i, `(b, i)` row b's."""
        batch, index = (0, batch_or_index) if index is None else (batch_or_index, index)
        return self._row(method, batch), index

    def to(self, device, *, non_blocking: bool = False) -> "BatchEncoding":
        """The tensors on `device` (a str, torch.device or index), as transformers' BatchEncoding.to. Anything else
        (a dtype: `inputs.to(model.dtype)`) changes nothing, with a warning, as there: cast, the ids would become
        other tokens."""
        if not isinstance(device, (str, torch.device, int)) or isinstance(device, bool):
            warn(f"BatchEncoding.to({device!r}) ignored: it moves token ids to a device; casting them would change "
                 "the tokens (convert the model instead)")
            return self
        if not all(isinstance(v, torch.Tensor) for v in self.values()):
            raise ValueError("only tensors can be moved: call the tokenizer with return_tensors='pt'")
        moved = {k: v.to(device, non_blocking=non_blocking) for k, v in self.items()}
        return BatchEncoding(moved, self.encodings)


# transformers' PegasusTokenizer defaults: its named tokens (no bos, sep or cls), and when tokenizer_config.json lists
# no extra special tokens, mask_token_sent's then <unk_2> .. <unk_{offset - 1}> (the original's pretraining tokens)
PEGASUS_CLASSES = ("PegasusTokenizer", "PegasusTokenizerFast")
PEGASUS_TOKENS = dict(bos_token=None, eos_token="</s>", unk_token="<unk>", sep_token=None, pad_token="<pad>",
                      cls_token=None, mask_token="<mask_2>")
PEGASUS_SENTENCE_MASK, PEGASUS_OFFSET = "<mask_1>", 103

# transformers' tokenizer classes without a pad_token default of their own (AutoTokenizer's choice for a
# tokenizer_config.json naming no class, beside no config.json model_type)
GENERIC_CLASSES = ("PreTrainedTokenizerFast", "TokenizersBackend")


class Tokenizer:
    """A `tokenizers.Tokenizer` plus the special tokens and settings of tokenizer_config.json.

    Each encoding call sets the backend's truncation and padding (as transformers does) and encodes under one
    lock, so an instance may be shared by threads (the engine's, a server's); encodings run one at a time.

    Subclasses (family_tokenizers) build on these hooks: `lock` (held while the backend's state is set and
    used), `strategies` (the checked padding / truncation arguments), `encodings` (checked arguments, then
    `encodings_locked` under the lock), `encodings_locked` (the backend calls), `target_encodings_locked` (the
    same for text_target), `special_room`, `check_one_side_fits` and `saved_config` (the tokenizer_config.json
    save_pretrained writes).
    """

    # the tokens' words and character offsets are the text's: return_offsets_mapping, and BatchEncoding's encodings
    gives_offsets = True
    # only_first / only_second never cut the other side (transformers' Python tokenizers: Marian, M2M100), where
    # the `tokenizers` library cuts everything once max_length leaves no room beside the special tokens
    cuts_one_side_only = False
    # a single text without tokens ("", add_special_tokens=False) is padded like any other; transformers' Python
    # tokenizers (Marian, M2M100) return it empty, unpadded
    pads_empty_text = True

    # what the encodings hold, as transformers' tokenizers name it
    model_input_names = property(lambda self: ["input_ids", "attention_mask"])

    @property
    def is_fast(self) -> bool:
        """transformers' flag: a tokenizer of the `tokenizers` library, whose encodings map tokens to words and
        characters (gives_offsets); False for Marian and M2M100, Python tokenizers there."""
        return self.gives_offsets

    def __init__(self, backend: Backend, config: dict):
        generic = config.get("tokenizer_class") in GENERIC_CLASSES
        config = {**_saved_settings(backend, generic), **config}
        self._backend = backend
        self.lock = threading.Lock()   # the backend's truncation/padding state is per instance, set per call
        # Named tokens: tokenizer_config.json's, else a default (_named_default).
        named = {k: config.get(k, _named_default(backend, k, v, generic)) for k, v in BART_TOKENS.items()}
        extra = extra_tokens(config)
        listed = config.get("added_tokens_decoder") or {}
        _add_special_tokens(backend, [listed[i] for i in sorted(listed, key=int)],
                            [t for t in named.values() if t is not None], extra)
        self._named = {k: token_content(v) for k, v in named.items()}
        self.extra_special_tokens: list[str] = [token_content(t) for t in extra]
        self._special_ids: tuple[tuple, list[int]] = ((), [])    # all_special_ids' last answer, by what it read
        # what from_pretrained was given (a Hub id or path, as a str), as transformers keeps it; "" when built directly
        self.name_or_path: str = ""
        self.model_max_length: int = _max_length(config.get("model_max_length"))
        self.clean_up_tokenization_spaces: bool = config.get("clean_up_tokenization_spaces", False)
        # transformers 5.25 cleans up a BPE model's text only when this is set too (the cleanup corrupts BPE text)
        self.clean_up_bpe: bool = config.get(CLEAN_UP_BPE, False)
        self.padding_side: str = config.get("padding_side", "right")
        self.truncation_side: str = config.get("truncation_side", "right")
        for name in ("padding_side", "truncation_side"):
            if getattr(self, name) not in ("right", "left"):
                raise ValueError(f"tokenizer_config.json has {name}={getattr(self, name)!r}: "
                                 "it must be 'right' or 'left'")

    def __getstate__(self) -> dict:
        """pickle / copy.deepcopy (datasets.map(num_proc=...), spawned workers, Ray): the state but the lock."""
        return {k: v for k, v in self.__dict__.items() if k != "lock"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self.lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path, **hub_kwargs) -> "Tokenizer":
        """Load a checkpoint directory (or Hub id, via hub.resolve) holding one of the two forms in the module doc;
        name_or_path keeps `path` as given (str), as transformers'."""
        try:
            root = hub.resolve(path, purpose="tokenizer", **hub_kwargs)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (a tokenizer directory holds {FILES})") from e
        tok = cls._from_folder(root)
        tok.name_or_path = str(path)
        return tok

    @classmethod
    def _from_folder(cls, root: Path) -> "Tokenizer":
        """from_pretrained's tokenizer of a local directory `root` (name_or_path left to the caller)."""
        config = read_tokenizer_config(root)
        if (root / "tokenizer.json").is_file():
            model_type = None if config.get("tokenizer_class") else config_model_type(root)  # when no class is named
            class_name = (config.get("tokenizer_class") or MODEL_TYPE_CLASSES.get(model_type, "")).removesuffix("Fast")
            backend = read_tokenizer_json(root / "tokenizer.json", class_name, config)
            if not config.get("tokenizer_class") and not model_type:           # transformers' class: no defaults
                config = {**config, "tokenizer_class": "TokenizersBackend"}    # of its own (GENERIC_CLASSES)
            pegasus = config["tokenizer_class"] in PEGASUS_CLASSES if config.get("tokenizer_class") \
                else model_type == "pegasus"
            if pegasus:
                config = _file_error(root / "tokenizer_config.json", lambda: _pegasus_defaults(config))
            tok = _file_error(root / "tokenizer_config.json", lambda: cls(backend, config))
            if pegasus:
                _pegasus_post_processor(tok, root)
            if class_name in ("BartTokenizer", "RobertaTokenizer"):    # their __init__ replaces the file's
                _roberta_post_processor(tok, root / "tokenizer.json", config)
            return tok
        if not ((root / "vocab.json").is_file() and (root / "merges.txt").is_file()):
            found = sorted(p.name for p in root.iterdir())
            raise FileNotFoundError(f"no tokenizer in {root}: looked for {FILES}; found {found or 'no files'}"
                                    f"{_conversion_hint(found)}")
        # RobertaTokenizer.__init__: BPE without unk/prefix/suffix, byte-level pre-tokenizer and decoder ...
        read_json(root / "vocab.json")       # malformed JSON: an error that names the file
        vocab, merges = _file_error(root / "vocab.json, merges.txt", lambda: models.BPE.read_file(
            str(root / "vocab.json"), str(root / "merges.txt")))
        backend = Backend(models.BPE(vocab, merges, dropout=None, continuing_subword_prefix="",
                                     end_of_word_suffix="", fuse_unk=False))
        add_prefix_space = config.get("add_prefix_space", False)
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=add_prefix_space)
        backend.decoder = decoders.ByteLevel()
        # (as BartTokenizer whatever class the config names: transformers' generic class cannot read these files)
        bart = {**config, "tokenizer_class": "BartTokenizer"}
        tok = _file_error(root / "tokenizer_config.json", lambda: cls(backend, bart))
        _roberta_post_processor(tok, root / "vocab.json", config)     # ... and its post-processor
        return tok

    @classmethod
    def from_default(cls) -> "Tokenizer":
        """The facebook/bart byte-level BPE files embedded in the package (works offline)."""
        return cls.from_pretrained(DEFAULT_DIR)

    def save_pretrained(self, save_directory) -> tuple[str, str]:
        """Write tokenizer.json + tokenizer_config.json (saved_config); this class and transformers.AutoTokenizer both
        reload them (as its tokenizer_class: "PreTrainedTokenizerFast" here) to the same tokenizer, whichever form
        it was loaded from."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        with self.lock:
            self._backend.no_truncation()  # don't save the last call's settings
            self._backend.no_padding()
            with writing(out / "tokenizer.json"):
                self._backend.save(str(out / "tokenizer.json"))
        write_json(out / "tokenizer_config.json", self.saved_config(), indent=2, ensure_ascii=False)
        return str(out / "tokenizer.json"), str(out / "tokenizer_config.json")

    def saved_config(self) -> dict:
        """The tokenizer_config.json save_pretrained writes: the special tokens (an unset one as null, as transformers
        writes it, so that neither reload fills in a default such as <pad>) and settings."""
        config = {"tokenizer_class": "PreTrainedTokenizerFast", **self._named,
                  "model_max_length": self.model_max_length, "padding_side": self.padding_side,
                  "truncation_side": self.truncation_side,
                  "clean_up_tokenization_spaces": self.clean_up_tokenization_spaces}
        if self.clean_up_bpe:
            config[CLEAN_UP_BPE] = True
        if self.extra_special_tokens:
            config["extra_special_tokens"] = self.extra_special_tokens
        return config

    @property
    def backend_tokenizer(self) -> Backend:
        """The `tokenizers.Tokenizer` underneath (transformers' name for it)."""
        return self._backend

    # ---- vocabulary and special tokens ----
    @property
    def vocab(self) -> dict[str, int]:
        """token -> id, added tokens included (a new dict, in the backend's hash order, as transformers')."""
        return self._backend.get_vocab(with_added_tokens=True)

    def get_vocab(self) -> dict[str, int]:
        """transformers' name for `vocab`."""
        return self.vocab

    @property
    def vocab_size(self) -> int:
        """The base vocabulary, without added tokens (transformers' vocab_size)."""
        return self._backend.get_vocab_size(with_added_tokens=False)

    def __len__(self) -> int:
        return self._id_count()

    def known_ids(self, ids: list[int]) -> list[int]:
        """ids without those this tokenizer has no token for. A model's vocabulary may be larger than its
        tokenizer's (NLLB-200: 256206 ids, 256204 tokens); transformers' tokenizers skip such ids when decoding a
        generated sequence, where decode refuses them (a direct call with them is a mistake)."""
        n = self._id_count()
        if not ids or (min(ids) >= 0 and max(ids) < n):        # the common case, at C speed
            return list(ids)
        return [i for i in ids if 0 <= i < n]

    def _id_count(self) -> int:
        """The ids decode reads are 0..this-1: the backend's tokens, added ones included (len() may count fewer,
        as transformers does: M2M100's language tokens)."""
        return self._backend.get_vocab_size(with_added_tokens=True)

    bos_token = property(lambda self: self._named["bos_token"])
    eos_token = property(lambda self: self._named["eos_token"])
    unk_token = property(lambda self: self._named["unk_token"])
    pad_token = property(lambda self: self._named["pad_token"])
    mask_token = property(lambda self: self._named["mask_token"])
    sep_token = property(lambda self: self._named["sep_token"])
    cls_token = property(lambda self: self._named["cls_token"])
    bos_token_id = property(lambda self: self._id(self.bos_token))
    eos_token_id = property(lambda self: self._id(self.eos_token))
    unk_token_id = property(lambda self: self._id(self.unk_token))
    pad_token_id = property(lambda self: self._id(self.pad_token))
    mask_token_id = property(lambda self: self._id(self.mask_token))
    sep_token_id = property(lambda self: self._id(self.sep_token))
    cls_token_id = property(lambda self: self._id(self.cls_token))

    @property
    def special_tokens_map(self) -> dict[str, str]:
        """The named tokens that are set, name -> token (transformers' special_tokens_map; extra ones apart)."""
        return {k: v for k, v in self._named.items() if v is not None}

    @property
    def all_special_tokens(self) -> list[str]:
        """Named tokens (bos, eos, unk, sep, pad, cls, mask), then extra ones, without repeats (transformers' order)."""
        return list(dict.fromkeys(t for t in [*self._named.values(), *self.extra_special_tokens] if t is not None))

    @property
    def all_special_ids(self) -> list[int]:
        """all_special_tokens' ids. Kept while the tokens and the backend's size stay the same (a token's id changes
        only when the backend gains it): M2M100's 100-odd language tokens took longer to look up than a decode."""
        tokens = self.all_special_tokens
        key = (tuple(tokens), self._backend.get_vocab_size(with_added_tokens=True))
        if self._special_ids[0] != key:
            self._special_ids = (key, self.convert_tokens_to_ids(tokens))
        return list(self._special_ids[1])

    def num_special_tokens_to_add(self, pair: bool = False) -> int:
        """How many special tokens encoding adds to a text (to a pair of texts when `pair`), as transformers' (code
        that cuts long documents into chunks takes them off model_max_length)."""
        with self.lock:                    # encode_source swaps the post-processor for a call under it
            return self._backend.num_special_tokens_to_add(pair)

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """1 for each id of token_ids_0 among all_special_ids, 0 for the others, where those ids already have
        their special tokens (already_has_special_tokens=True: tok(text)["input_ids"], as data collators pass
        them), as transformers' fast tokenizers; a second sequence is a ValueError there (encoded ids are one
        input, a pair's included). Ids without special tokens (the default) raise NotImplementedError as there:
        those tokenizers have no rule for where the special tokens would go."""
        if not already_has_special_tokens:
            raise NotImplementedError("get_special_tokens_mask of ids without their special tokens is not available "
                                      "for this tokenizer (nor for transformers 5.25's fast tokenizers): pass ids "
                                      "encoded with them, tok(text)['input_ids'], and already_has_special_tokens=True")
        if token_ids_1 is not None:
            raise ValueError("token_ids_1 was given beside already_has_special_tokens=True: ids that have their "
                             "special tokens are one encoded input (a pair's too); pass them as token_ids_0 alone")
        special = set(self.all_special_ids)
        return [1 if int(i) in special else 0 for i in token_ids_0]

    def _id(self, token: str | None) -> int | None:
        return None if token is None else self.convert_tokens_to_ids(token)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """A token's id, `unk_token_id` for tokens not in the vocabulary."""
        if isinstance(tokens, str):
            found = self._backend.token_to_id(tokens)
            return self._id(self.unk_token) if found is None else found
        if not isinstance(tokens, (list, tuple)) or not all(isinstance(t, str) for t in tokens):
            raise TypeError(f"convert_tokens_to_ids takes a token (str) or a list of them, got {tokens!r:.80}")
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Tokens of ids (int, list, tensor or array); skip_special_tokens drops all_special_ids, as transformers."""
        ids = self._check_ids(as_ids(ids))
        if isinstance(ids, int):
            return self._backend.id_to_token(ids)
        skip = set(self.all_special_ids) if skip_special_tokens else set()
        return [self._backend.id_to_token(i) for i in ids if i not in skip]

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """The text of these tokens as the decoder joins them: no special token dropped, no clean-up (transformers'
        convert_tokens_to_string)."""
        check_tokens(tokens)
        decoder = self._backend.decoder
        if decoder is None:
            return " ".join(tokens)
        with self.lock:                         # a Python decoder (SentencePiece's) runs under it, as decode does
            return decoder.decode(list(tokens))

    # ---- encoding ----
    def tokenize(self, text: str) -> list[str]:
        """Tokens of `text`, without special tokens."""
        return self.encodings([check_text(text, "text")], add_special_tokens=False)[0].tokens

    def encode(self, text: str, text_pair: str | None = None, add_special_tokens: bool = True,
               padding: bool | str = False, truncation: bool | str | None = None, max_length: int | None = None,
               return_tensors: str | None = None, pad_to_multiple_of: int | None = None):
        """Ids of one text (or pair), the call's input_ids: list[int], or with return_tensors ("pt" / "np") a batch
        of one [1, length], as transformers' `tok.encode(text, return_tensors="pt", truncation=True)`. A max_length
        alone turns truncation on, as in transformers; padding pads the one row ("max_length", pad_to_multiple_of).
        """
        check_text(text, "text", hint=" (to encode a batch, call the tokenizer: tok([...]))")
        if text_pair is not None:
            check_text(text_pair, "text_pair")
        return self(text, text_pair or None, add_special_tokens=add_special_tokens, padding=padding,  # "": no pair,
                    truncation=truncation, max_length=max_length, return_tensors=return_tensors,   # as transformers
                    pad_to_multiple_of=pad_to_multiple_of, return_attention_mask=False)["input_ids"]

    def __call__(self, text=None, text_pair=None, text_target=None, text_pair_target=None,
                 add_special_tokens: bool = True, padding: bool | str = False, truncation: bool | str | None = None,
                 max_length: int | None = None, return_tensors: str | None = None,
                 return_offsets_mapping: bool = False, pad_to_multiple_of: int | None = None,
                 return_attention_mask: bool | None = None,
                 return_token_type_ids: bool | None = None) -> BatchEncoding:
        """input_ids and attention_mask of a text (lists) or a list of texts (lists of lists); with return_tensors
        ("pt" or "np") always [batch, length] int64. Pairs, padding and truncation follow transformers.
        return_offsets_mapping adds "offset_mapping": each token's (start, end) character offsets in its text,
        (0, 0) for special and padding tokens, as transformers' fast tokenizers give them.
        text_target (and text_pair_target) are encoded as the model's targets, as transformers' target mode encodes
        them (target_encodings_locked): alone they give the input_ids and attention_mask; beside text, their
        input_ids are added as "labels". Padding, truncation, max_length and return_tensors apply to each side.
        return_attention_mask=False leaves the attention_mask out (None, the default, and True keep it).
        return_token_type_ids=True adds "token_type_ids" (token_type_ids(); these models read none: None and False
        leave them out, as transformers does for these tokenizers).
        The result keeps each row's `tokenizers.Encoding` (text's; text_target's alone), as transformers' fast
        tokenizers keep them: enc.word_ids(i), enc.tokens(i), enc.char_to_token(i, c) ... (BatchEncoding)."""
        for name, flag in (("return_attention_mask", return_attention_mask),
                           ("return_token_type_ids", return_token_type_ids)):
            if flag not in (None, True, False):
                raise ValueError(f"{name} must be True, False or None, got {flag!r}")
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported: pass None (lists), 'pt' (torch) "
                             "or 'np' (numpy)")
        if text is None and text_target is None:
            raise ValueError("pass text (the source), text_target (the target) or both")
        if return_offsets_mapping and not self.gives_offsets:
            raise ValueError(f"return_offsets_mapping is not available for this tokenizer ({self.kind}): its pieces "
                             "are made apart from the text, so their offsets are not the text's (transformers' "
                             "Python tokenizer gives none either)")
        sources, targets = self._source_and_target(
            _batch(text, text_pair, "text", "text_pair"),
            _batch(text_target, text_pair_target, "text_target", "text_pair_target"),
            add_special_tokens, padding, truncation, max_length, pad_to_multiple_of)
        if not self.pads_empty_text:
            sources, targets = (_unpadded_if_empty(e, t) for e, t in ((sources, text), (targets, text_target)))
        source, target = (None if e is None else _batch_encoding(e, isinstance(t, (list, tuple)), return_tensors,
                                                                 return_offsets_mapping, return_attention_mask,
                                                                 self.gives_offsets,
                                                                 self.token_type_ids(e) if return_token_type_ids
                                                                 else None)
                          for e, t in ((sources, text), (targets, text_target)))
        if source is None or target is None:
            return target if source is None else source
        source["labels"] = target["input_ids"]
        return source

    def token_type_ids(self, encodings: list) -> list[list[int]]:
        """return_token_type_ids' rows: the backend's type ids (0s, for these models' templates), as transformers'
        fast tokenizers give them."""
        return [e.type_ids for e in encodings]

    def _source_and_target(self, batch: list | None, target_batch: list | None, add_special_tokens: bool, padding,
                           truncation, max_length, pad_to_multiple_of=None) -> tuple[list | None, list | None]:
        """The Encodings of `batch` (encodings_locked) and of `target_batch` (target_encodings_locked), None for
        a side without texts: the arguments checked once for both, as transformers checks them, under one lock.
        pad_to_multiple_of: padded rows' length rounded up to a multiple of it (as the `tokenizers` library's
        padding rounds it; nothing without padding)."""
        check_flag(add_special_tokens, "add_special_tokens")
        if pad_to_multiple_of is not None and (type(pad_to_multiple_of) is not int or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} is not a length: pass an int >= 1, or None")
        settings = self.strategies(padding, truncation, max_length)
        if pad_to_multiple_of and settings[0] and settings[1] and settings[2] % pad_to_multiple_of:
            raise ValueError(f"truncation and padding are both on but max_length={settings[2]} is not a multiple of "
                             f"pad_to_multiple_of={pad_to_multiple_of} (as transformers refuses it)")
        with self.lock:
            sides = (None if batch is None else self.encodings_locked(batch, add_special_tokens, *settings),
                     None if target_batch is None else self.target_encodings_locked(target_batch, add_special_tokens,
                                                                                    *settings))
            padding, _, max_length = settings
            if padding and pad_to_multiple_of:
                for side in sides:
                    if not side:
                        continue
                    width = max_length if padding == "max_length" else max(len(e.ids) for e in side)
                    width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
                    for encoding in side:
                        encoding.pad(width, direction=self.padding_side, pad_id=self.pad_token_id,
                                     pad_token=self.pad_token)
            return sides

    def strategies(self, padding, truncation, max_length) -> tuple[str | None, str | None, int | None]:
        """(padding, truncation, max_length) as the backend takes them (PADDING's and TRUNCATION's values):
        transformers' `_get_padding_truncation_strategies`, raising where it would fail later or do nothing."""
        if max_length is not None and padding is False and truncation is None:
            truncation = "longest_first"  # transformers: a max_length alone turns truncation on
        if not isinstance(padding, (bool, str)) or padding not in PADDING:
            raise ValueError(f"padding={padding!r} is not supported: pass False, True (= 'longest') or 'max_length'")
        if not isinstance(truncation, (bool, str, type(None))) or truncation not in TRUNCATION:
            raise ValueError(f"truncation={truncation!r} is not supported: pass False, True (= 'longest_first'), "
                             "'only_first' or 'only_second'")
        padding, truncation = PADDING[padding], TRUNCATION[truncation]
        if padding == "longest" and max_length is not None and not truncation:
            warn("max_length is ignored when padding=True and truncation is off; to pad to max_length, pass "
                 "padding='max_length'")
        if max_length is not None and (type(max_length) is not int or max_length < 0):
            raise ValueError(f"max_length={max_length!r} is not a length: pass an int >= 0, or None")
        limit = self.model_max_length if self.model_max_length <= LARGE_INTEGER else None
        if max_length is None and padding == "max_length":
            if limit is None:
                raise ValueError("padding='max_length' needs max_length=N (this tokenizer has no model_max_length); "
                                 "or pass padding=True to pad to the longest text")
            max_length = limit
        if max_length is None and truncation:
            truncation, max_length = (truncation, limit) if limit is not None else (None, None)
        if padding and self.pad_token is None:
            raise ValueError("this tokenizer has no pad_token, so it cannot pad: pass padding=False")
        return padding, truncation, max_length

    def encodings(self, batch: list, add_special_tokens: bool, padding=False, truncation=None,
                  max_length=None) -> list:
        """The backend's Encodings of a list of texts or (text, pair) tuples, the backend set up as transformers'
        `set_truncation_and_padding` sets it up."""
        check_flag(add_special_tokens, "add_special_tokens")
        padding, truncation, max_length = self.strategies(padding, truncation, max_length)
        with self.lock:
            return self.encodings_locked(batch, add_special_tokens, padding, truncation, max_length)

    def encodings_locked(self, batch: list, add_special_tokens: bool, padding, truncation, max_length) -> list:
        """encodings' backend calls, with `lock` held and strategies' arguments: set truncation and padding,
        encode."""
        backend = self._backend
        backend.no_truncation()
        backend.no_padding()
        if truncation:
            self.special_room(any(isinstance(b, tuple) for b in batch), add_special_tokens, max_length)
            if truncation in ("only_first", "only_second"):
                self.check_one_side_fits(batch, add_special_tokens, truncation, max_length)
            backend.enable_truncation(max_length, strategy=truncation, direction=self.truncation_side)
        if padding:
            backend.enable_padding(direction=self.padding_side, pad_id=self.pad_token_id, pad_token=self.pad_token,
                                   length=max_length if padding == "max_length" else None)
        return backend.encode_batch(batch, add_special_tokens=add_special_tokens)

    def target_encodings_locked(self, batch: list, add_special_tokens: bool, padding, truncation, max_length) -> list:
        """encodings_locked for text_target: the same here, as BART's and Pegasus' tokenizers (no target mode in
        transformers) encode a target as a source."""
        return self.encodings_locked(batch, add_special_tokens, padding, truncation, max_length)

    def special_room(self, pair: bool, add_special_tokens: bool, max_length: int) -> int:
        """The special tokens each sequence (a pair when `pair`) gets; ValueError when max_length leaves no room
        for them, where the backend would silently not truncate at all."""
        added = self._backend.num_special_tokens_to_add(pair) if add_special_tokens else 0
        if max_length < added:
            raise ValueError(f"max_length={max_length} leaves no room for the {added} special tokens each "
                             f"sequence gets: pass max_length >= {added}")
        return added

    def check_one_side_fits(self, batch: list, add_special_tokens: bool, strategy: str, max_length: int,
                            sizes: list[int] | None = None) -> None:
        """only_first / only_second cut one side of an input: raise where the backend would fail (its rule in
        `truncate_encodings`): that side is absent, or not longer than the tokens to remove (cuts_one_side_only:
        shorter than them; such a tokenizer cuts a side to nothing itself). sizes: each text's tokens without
        special tokens, in the batch's order, where the caller has encoded them (else encoded here, with the
        backend's truncation and padding off)."""
        side = 0 if strategy == "only_first" else 1
        inputs = [b if isinstance(b, tuple) else (b,) for b in batch]
        if sizes is None:
            sizes = [len(e.ids) for e in self._backend.encode_batch([t for texts in inputs for t in texts],
                                                                    add_special_tokens=False)]
        sizes = iter(sizes)
        for i, texts in enumerate(inputs):
            lengths = [next(sizes) for _ in texts]
            added = self._backend.num_special_tokens_to_add(len(texts) == 2) if add_special_tokens else 0
            room = max_length - added
            excess = sum(lengths) - room
            if excess <= 0:   # nothing to cut
                continue
            if room == 0 and (not self.cuts_one_side_only or len(lengths) == side + 1 == 1):
                continue      # the backend cuts everything (a lone first text: all of it is the side to cut)
            if side == len(lengths):
                problem = "has no second sequence to cut"
            elif lengths[side] < excess or (lengths[side] == excess and not self.cuts_one_side_only):
                problem = (f"would have to lose {excess} tokens of its {'first' if side == 0 else 'second'} "
                           f"sequence, which has {lengths[side]}")
            else:
                continue
            where = "the input" if len(inputs) == 1 else f"input {i}"
            raise ValueError(f"truncation={strategy!r} cannot fit max_length={max_length}: {where} {problem}; "
                             "pass truncation='longest_first' or a larger max_length")

    # ---- padding pre-tokenized inputs ----
    def pad(self, encoded_inputs, padding: bool | str = True, max_length: int | None = None,
            pad_to_multiple_of: int | None = None, padding_side: str | None = None,
            return_attention_mask: bool | None = None, return_tensors: str | None = None,
            verbose: bool = True) -> BatchEncoding:
        """Pads inputs tokenized earlier (unpadded, e.g. by datasets.map), as transformers' `tokenizer.pad` (what
        DataCollatorWithPadding calls): a dict of rows (a BatchEncoding; lists, tensors or arrays), a list of
        examples' dicts, or one example's dict of flat lists. padding: True / 'longest' pads to the longest row,
        'max_length' to max_length (default model_max_length), False not at all; pad_to_multiple_of rounds that
        length up; longer rows stay as they are (pad does not truncate). On padding_side (default the tokenizer's),
        input_ids get pad_token_id, attention_mask 0 (made of 1s where absent, unless return_attention_mask=False),
        token_type_ids 0 and special_tokens_mask 1; other keys ("labels", "label") are returned as given.
        return_tensors "pt" / "np" (default: "pt" or "np" where the input_ids are tensors or arrays) makes every key
        a tensor: [batch, length] int64 rows, [length] for one example. The result has no `encodings`, as in
        transformers. Unlike transformers', it never changes encoded_inputs, and it pads an attention_mask given
        with return_attention_mask=False (transformers leaves it unpadded, out of step with input_ids)."""
        encoded_inputs = _rows_by_key(encoded_inputs)
        ids = encoded_inputs["input_ids"]
        if ids is None or len(ids) == 0:       # nothing to pad: returned as given, as transformers returns it
            return BatchEncoding({**encoded_inputs, **({"attention_mask": []} if return_attention_mask else {})})
        for kind, tensor in (("pt", torch.Tensor), ("np", np.ndarray)):
            if return_tensors is None and (isinstance(ids, tensor) or isinstance(ids[0], tensor)):
                return_tensors = kind
        if return_tensors not in (None, "pt", "np"):
            raise ValueError(f"return_tensors={return_tensors!r} is not supported: pass None (lists), 'pt' (torch) "
                             "or 'np' (numpy)")
        side = self.padding_side if padding_side is None else padding_side
        if side not in ("right", "left"):
            raise ValueError(f"padding_side={side!r} is not supported: pass 'right' or 'left'")
        if pad_to_multiple_of is not None and (type(pad_to_multiple_of) is not int or pad_to_multiple_of < 1):
            raise ValueError(f"pad_to_multiple_of={pad_to_multiple_of!r} is not a length: pass an int >= 1, or None")
        if padding == "longest" or (padding is True and not verbose):
            max_length = None   # unused; transformers warns that it is ignored beside padding=True where verbose
        padding, _, max_length = self.strategies(padding, None, max_length)

        columns, batched = _columns(encoded_inputs)                   # key -> one list (or value) per row
        rows = columns["input_ids"]
        if return_attention_mask is not False and "attention_mask" not in columns:
            columns["attention_mask"] = [[1] * len(row) for row in rows]
        width = max(map(len, rows)) if padding == "longest" else max_length if padding == "max_length" else None
        if width is not None and pad_to_multiple_of:
            width = -(-width // pad_to_multiple_of) * pad_to_multiple_of
        gaps = [0 if width is None else max(width - len(row), 0) for row in rows]
        fills = {"input_ids": self.pad_token_id, **PAD_FILLS}
        for key in [k for k in columns if k in fills]:
            columns[key] = [[fills[key]] * gap + values if side == "left" else values + [fills[key]] * gap
                            for values, gap in zip(columns[key], gaps)]
        if not batched:
            columns = {k: v[0] for k, v in columns.items()}
        if return_tensors is not None:
            columns = {k: _tensor(v, return_tensors, k) for k, v in columns.items()}
        return BatchEncoding(columns)

    # ---- decoding ----
    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None):
        """Text of ids (int, list, tensor or array; a 2-D input gives a list of texts, as in transformers).
        clean_up_tokenization_spaces (default: tokenizer_config.json's, else False) is ignored for BPE models,
        as transformers 5.25 ignores it there (unless tokenizer_config.json sets CLEAN_UP_BPE)."""
        ids = self._check_ids(as_ids(ids))
        if isinstance(ids, list) and ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        # under the lock: a Python decoder (SentencePiece) waits for the GIL inside the backend, and a thread setting
        # the backend's padding meanwhile would hold the GIL waiting for the backend (a deadlock)
        with self.lock:
            text = self._backend.decode([ids] if isinstance(ids, int) else ids, skip_special_tokens=skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        if clean_up_tokenization_spaces and (self.clean_up_bpe or not isinstance(self._backend.model, models.BPE)):
            text = clean_up_tokenization(text)
        return text

    def batch_decode(self, sequences, skip_special_tokens: bool = False,
                     clean_up_tokenization_spaces: bool | None = None) -> list[str]:
        """Texts of a batch of id sequences (list of lists, or a 2-D tensor or array)."""
        rows = as_ids(sequences)
        if not isinstance(rows, list) or not all(isinstance(r, list) for r in rows):
            raise ValueError("batch_decode takes a batch (a list of id lists, or a 2-D tensor): "
                             "use decode for a single sequence")
        if any(isinstance(i, list) for r in rows for i in r):     # [b, n, T] (num_return_sequences kept apart)
            raise ValueError("batch_decode takes a batch of id sequences [batch, T], got one more dimension: "
                             "flatten it first (e.g. ids.reshape(-1, ids.shape[-1]))")
        return [self.decode(r, skip_special_tokens, clean_up_tokenization_spaces) for r in rows]

    def _check_ids(self, ids):
        flat = [ids] if isinstance(ids, int) else ids if all(type(i) is int for i in ids) \
            else [j for i in ids for j in (i if isinstance(i, list) else [i])]
        n = self._id_count()
        if flat and not (min(flat) >= 0 and max(flat) < n):
            bad = next(i for i in flat if not 0 <= i < n)
            raise ValueError(f"token id {bad} is out of range: this tokenizer's ids are 0..{n - 1}")
        return ids

    def __repr__(self) -> str:
        return (f"Tokenizer(vocab_size={self.vocab_size}, len={len(self)}, model_max_length={self.model_max_length}, "
                f"special_tokens={self.all_special_tokens})")


def _saved_settings(backend: Backend, generic: bool) -> dict:
    """What a tokenizer.json saved with padding or truncation on sets, as transformers' TokenizersBackend.__init__
    reads it (under tokenizer_config.json's settings): padding_side, truncation_side, and pad_token when the
    tokenizer's transformers class is `generic` (GENERIC_CLASSES): BART's, Pegasus', mBART's, NLLB's pass their
    own default "<pad>", which the saved one does not replace."""
    padding, truncation = backend.padding, backend.truncation
    settings = {} if truncation is None else {"truncation_side": truncation["direction"]}
    if padding is not None:
        settings.update(padding_side=padding["direction"], **{"pad_token": padding["pad_token"]} if generic else {})
    return settings


def _named_default(backend: Backend, name: str, token: str, generic: bool) -> str | None:
    """BartTokenizer's default `token` for the named token `name` when the vocabulary has it; none for sep and cls
    under transformers' `generic` class (GENERIC_CLASSES), which has no defaults (seq2seq_kit keeps the others so
    that a tokenizer_config.json naming only that class still pads)."""
    if generic and name in ("sep_token", "cls_token") or backend.token_to_id(token) is None:
        return None
    return token


def _pegasus_defaults(config: dict) -> dict:
    """read_tokenizer_config's settings with transformers' PegasusTokenizer defaults under them (PEGASUS_TOKENS):
    named tokens the files leave out, and, where they list no extra special tokens, mask_token_sent (default
    <mask_1>; none when null) then <unk_2> .. <unk_{offset - 1}> (offset default 103)."""
    config = {**PEGASUS_TOKENS, **config}
    if "extra_special_tokens" in config or "additional_special_tokens" in config:
        return config
    sentence_mask, offset = config.get("mask_token_sent", PEGASUS_SENTENCE_MASK), config.get("offset", PEGASUS_OFFSET)
    if type(offset) is not int or offset < 0:
        raise ValueError(f"offset={offset!r} must be an int >= 0 (the count of Pegasus' reserved tokens)")
    if sentence_mask is not None and not isinstance(token_content(sentence_mask), str):
        raise ValueError(f"mask_token_sent={sentence_mask!r} must be a token (a string) or null")
    unknowns = [f"<unk_{i}>" for i in range(2, offset)]
    return {**config, "extra_special_tokens": ([] if sentence_mask is None else [sentence_mask]) + unknowns}


def _roberta_post_processor(tok: Tokenizer, vocabulary: Path, config: dict) -> None:
    """RobertaTokenizer.__init__'s post-processor, once the special tokens are added: `<s> A </s>` /
    `<s> A </s></s> B </s>` with cls/sep, trim_offsets and add_prefix_space from tokenizer_config.json."""
    ends = []                                                          # (sep, its id), (cls, its id)
    for name in ("sep_token", "cls_token"):
        token = tok._named[name]
        token_id = None if token is None else tok.backend_tokenizer.token_to_id(token)
        if token_id is None:
            raise ValueError(f"{vocabulary.parent}: the tokenizer's {name} is {token!r} (tokenizer_config.json or "
                             f"special_tokens_map.json), which is no token of {vocabulary.name}: a BART tokenizer "
                             f"puts its {name} around each text; name one of its tokens or leave {name} out")
        ends.append((token, token_id))
    tok.backend_tokenizer.post_processor = processors.RobertaProcessing(
        *ends, trim_offsets=config.get("trim_offsets", True), add_prefix_space=config.get("add_prefix_space", False))


def _pegasus_post_processor(tok: Tokenizer, root: Path) -> None:
    """`A eos` / `A B eos` with the tokenizer's eos_token (tokenizer_config.json's, which may name another token than
    </s>), as PegasusTokenizer sets it over tokenizer.json's; ValueError naming the fix when eos_token is null."""
    eos = tok.eos_token
    if eos is None:
        raise ValueError(f"{root / 'tokenizer_config.json'} sets eos_token to null, but a Pegasus tokenizer ends "
                         "each text with its eos_token: name one (\"eos_token\": \"</s>\") or leave it out")
    tok.backend_tokenizer.post_processor = processors.TemplateProcessing(
        single=["$A", eos], pair=["$A", "$B", eos], special_tokens=[(eos, tok.eos_token_id)])


def _max_length(value) -> int:
    """tokenizer_config.json's model_max_length (an int; JSON may spell transformers' 1e30 as a float)."""
    if not value:
        return VERY_LARGE_INTEGER
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise ValueError(f"tokenizer_config.json has model_max_length={value!r}: it must be an integer >= 0")
    return value


def _conversion_hint(found: list[str]) -> str:
    """What to do with a folder whose tokenizer is only a SentencePiece model (Pegasus' spiece.model, as
    transformers 4.x's slow tokenizers saved it): "" when it has none."""
    model = next((name for name in found if name.endswith(".model")), None)
    if model is None:
        return ""
    return (f" ({model} is a SentencePiece model, read here only as tokenizer.json); write that once with "
            "transformers: AutoTokenizer.from_pretrained(folder).save_pretrained(folder)")


def _file_error(path: Path, make):
    """make(); any error reading what `path` holds is a ValueError naming the file and the problem."""
    try:
        return make()
    except Exception as e:   # noqa: BLE001 - tokenizers raises plain Exception for a malformed file
        if isinstance(e, ValueError) and str(path.name) in str(e):
            raise   # already names it
        raise ValueError(f"{path} is malformed: {type(e).__name__}: {e}") from None


def read_tokenizer_config(root: Path) -> dict:
    """A checkpoint's tokenizer settings as transformers 5 reads them (_from_pretrained): tokenizer_config.json,
    its additional_special_tokens renamed extra_special_tokens where it has none; when it has no
    added_tokens_decoder (the legacy form), special_tokens_map.json's keys over it, except that the map's
    extra_special_tokens (a list, or a dict of model-specific names) are added to the config's. Each file is
    optional and must hold a JSON object whose token settings are tokens (ValueError naming the file). In the
    legacy form, added_tokens.json's tokens (transformers 4.x's slow tokenizers saved added tokens there) become
    the added_tokens_decoder, as transformers reads them."""
    config = _read_config(root / "tokenizer_config.json")
    if "additional_special_tokens" in config and not config.get("extra_special_tokens"):
        config["extra_special_tokens"] = config.pop("additional_special_tokens")
    if "added_tokens_decoder" not in config:
        for key, value in _read_config(root / "special_tokens_map.json").items():
            if key == "extra_special_tokens" and isinstance(value, (list, dict)):
                have = _token_list(config.get(key))
                known = set(map(token_content, have))
                value = have + [t for t in _token_list(value) if token_content(t) not in known]
            config[key] = value
        if (root / "added_tokens.json").is_file():
            config["added_tokens_decoder"] = _legacy_added_tokens(root / "added_tokens.json", config)
    return config


def _legacy_added_tokens(path: Path, config: dict) -> dict:
    """added_tokens.json ({token: id}) as transformers 5 reads it into added_tokens_decoder ({id: fields}): a token
    among the named and extra special tokens is special and not normalized, any other one normalized."""
    tokens = read_json_object(path)
    if not all(type(i) is int and i >= 0 for i in tokens.values()):
        raise ValueError(f"{path} must map each token to its id (an int >= 0), got {tokens!r}")
    extra = config.get("extra_special_tokens")
    special = {token_content(config[k]) for k in BART_TOKENS if config.get(k)}
    special |= {token_content(t) for t in (extra if isinstance(extra, list) else [])}
    return {str(i): {"content": t, "special": t in special, "normalized": t not in special, "lstrip": False,
                     "rstrip": False, "single_word": False} for t, i in tokens.items()}


def extra_tokens(config: dict) -> list:
    """The extra special tokens of read_tokenizer_config's settings (transformers: additional_special_tokens only
    where there is no extra_special_tokens key)."""
    return _token_list(config["extra_special_tokens"] if "extra_special_tokens" in config else
                       config.get("additional_special_tokens"))


def _token_list(tokens) -> list:
    """A list of special tokens as the files hold it: a list, a dict of model-specific names (its values), or
    None (none)."""
    return list(tokens.values()) if isinstance(tokens, dict) else list(tokens or [])


def _read_config(path: Path) -> dict:
    """tokenizer_config.json or special_tokens_map.json: a JSON object, {} when the file is absent; the settings
    read from it checked (a number where a token belongs would fail deep in the tokenizer, a string where a list
    belongs would make every character a special token, a string where true/false belongs fails inside
    `tokenizers`). A switch set to null counts as left out (its default)."""
    config = read_json_object(path) if path.is_file() else {}
    is_token = lambda t: isinstance(t, str) or isinstance(t, dict) and isinstance(t.get("content"), str)
    for key in (*BART_TOKENS, "extra_special_tokens", "additional_special_tokens"):
        value = config.get(key)
        if value is None:
            continue
        listed = key.endswith("special_tokens")
        if listed and not (isinstance(value, (list, dict)) and all(map(is_token, _token_list(value)))):
            raise ValueError(f"{path}: {key!r} must be a list of tokens (strings), got {value!r}")
        if not listed and not is_token(value):
            raise ValueError(f"{path}: {key!r} must be a token (a string), got {value!r}")
    for key in SWITCHES:
        if key in config and config[key] is None:
            del config[key]
        elif key in config and not isinstance(config[key], bool):
            raise ValueError(f"{path}: {key!r} must be true or false, got {config[key]!r}")
    for key in ("tokenizer_class", "src_lang", "tgt_lang", "language_codes"):
        if config.get(key) is not None and not isinstance(config[key], str):
            raise ValueError(f"{path}: {key!r} must be a string, got {config[key]!r}")
    listed = config.get("added_tokens_decoder")
    if listed is not None and not (isinstance(listed, dict) and all(
            isinstance(i, str) and i.isdecimal() and is_token(t) for i, t in listed.items())):
        raise ValueError(f"{path}: 'added_tokens_decoder' must map token ids to tokens ({{\"50265\": {{\"content\": "
                         f"\"<x>\", ...}}}}), got {listed!r}")
    return config


def token_content(token) -> str | None:
    return token["content"] if isinstance(token, dict) else token


def _added_token(token: str | dict) -> AddedToken:
    """A special token of tokenizer_config.json / special_tokens_map.json (a string, or an AddedToken's fields)."""
    if isinstance(token, str):
        return AddedToken(token, special=True, normalized=False)
    flags = {k: token[k] for k in ("single_word", "lstrip", "rstrip", "normalized") if k in token}
    return AddedToken(token["content"], special=token.get("special", True), **flags)


def _add_special_tokens(backend: Backend, listed: list, named: list, extra: list) -> None:
    """As TokenizersBackend.__init__ adds tokens (transformers 5.25): added_tokens_decoder's (`listed`, in id order)
    unless the backend has that token with those flags (lstrip, rstrip, ...); then the named and extra special
    tokens whose text neither had, each once, the last of one text setting its flags. Each becomes an added token:
    matched whole in text, skipped by decode(skip_special_tokens=True); a named token's text is special."""
    there = list(backend.get_added_tokens_decoder().values())
    as_there = {repr(t) for t in there}                                  # a token's repr: its text and flags
    tokens = [token for token in map(_added_token, listed) if repr(token) not in as_there]
    known = {t.content for t in [*there, *tokens]}
    given = []
    for spec in named + extra:
        value = spec if isinstance(spec, str) else _added_token(spec)        # a string equals only a string
        if token_content(spec) not in known and value not in given:
            given.append(value)
    names = set(map(token_content, named))
    for token in tokens + [_added_token(v) if isinstance(v, str) else v for v in given]:
        if token.content in names:
            token.special = True
        backend.add_tokens([token])


def check_tokens(tokens) -> None:
    """TypeError unless `tokens` is a list (or tuple) of tokens, as convert_tokens_to_string takes them."""
    if isinstance(tokens, str) or not all(isinstance(t, str) for t in tokens):
        raise TypeError("convert_tokens_to_string takes a list of tokens (str), e.g. tok.tokenize(text)")


def check_text(text, name: str, hint: str = "") -> str:
    if not isinstance(text, str):
        raise TypeError(f"{name} must be a str, got {type(text).__name__}{hint}")
    problem = not_unicode(text)
    if problem is not None:   # the backend would raise "TextEncodeInput must be Union[...]"
        raise ValueError(f"{name} {problem} (decode bytes with errors='replace', or fix the \\uXXXX escape)")
    return text


def not_unicode(text: str) -> str | None:
    """Why a str is not Unicode text (it holds a lone surrogate, which UTF-8 cannot encode); None when it is."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        return f"holds a lone surrogate {text[e.start]!r} at character {e.start}, which is not Unicode text"
    return None


def as_ids(ids):
    """An int, or a (nested) list of ints, from ints, lists, tuples, torch tensors or numpy arrays."""
    if isinstance(ids, (torch.Tensor, np.ndarray)):
        ids = ids.tolist()
    if isinstance(ids, (int, np.integer)) and not isinstance(ids, bool):
        return int(ids)
    if type(ids) is list and all(type(i) is int for i in ids):     # the common case, at C speed (no bools)
        return ids
    if isinstance(ids, (list, tuple)):
        return [as_ids(i) for i in ids]
    raise TypeError(f"token ids must be ints (or a list, tuple, tensor or array of them), got {type(ids).__name__}")


def _batch(text, pair, name: str, pair_name: str) -> list | None:
    """The texts of one side of a call (text and text_pair, or text_target and text_pair_target): a list of texts
    or of (text, pair) tuples, each checked; None without texts (ValueError for a pair without its first text)."""
    if text is None:
        if pair is not None:
            raise ValueError(f"{pair_name} is the second text of a pair: pass {name} too")
        return None
    if not isinstance(text, (list, tuple)):
        check_text(text, name, hint=" (or a list of str for a batch)")
        if pair is not None:
            check_text(pair, pair_name)
        return [(text, pair)] if pair else [text]  # "" is no pair, as in transformers
    batch = [check_text(t, f"{name}[{i}]") for i, t in enumerate(text)]
    if pair is None:
        return batch
    if not isinstance(pair, (list, tuple)):
        raise TypeError(f"{name} is a batch, so {pair_name} must be a list of str too, got {type(pair).__name__}")
    if len(pair) != len(batch):
        raise ValueError(f"{name} has {len(batch)} texts but {pair_name} {len(pair)}: pass one pair each")
    return list(zip(batch, [check_text(t, f"{pair_name}[{i}]") for i, t in enumerate(pair)]))


def _unpadded_if_empty(encodings: list | None, texts) -> list | None:
    """The Encodings of one side of a call, a single text's (texts not a list) emptied when it has no token but
    padding, as transformers' `pad` returns an input without ids."""
    if encodings is None or isinstance(texts, (list, tuple)) or any(encodings[0].attention_mask):
        return encodings
    encodings[0].truncate(0)    # [] ids and attention_mask
    return encodings


def _batch_encoding(encodings: list, batched: bool, return_tensors: str | None, offsets: bool,
                    attention_mask: bool | None, keep: bool, token_type_ids: list | None) -> BatchEncoding:
    """input_ids, attention_mask (unless attention_mask is False; and offset_mapping, and token_type_ids' rows where
    given) of a call's Encodings, in transformers' order: lists, one row unless `batched`, or return_tensors'
    [batch, length] tensors; the Encodings kept when `keep`."""
    out = {"input_ids": [e.ids for e in encodings]}
    if token_type_ids is not None:
        out["token_type_ids"] = token_type_ids
    if attention_mask is not False:
        out["attention_mask"] = [e.attention_mask for e in encodings]
    if offsets:
        out["offset_mapping"] = [e.offsets for e in encodings]
    if return_tensors is not None:
        out = {k: _stack(v, return_tensors) for k, v in out.items()}
    elif not batched:
        out = {k: v[0] for k, v in out.items()}
    return BatchEncoding(out, encodings if keep else None)


def _stack(rows: list[list[int]], kind: str):
    """[batch, length] int64 tensor ("pt") or array ("np") of equal-length rows."""
    lengths = sorted({len(r) for r in rows})
    if len(lengths) > 1:
        raise ValueError(f"cannot stack sequences of {lengths[0]} to {lengths[-1]} tokens into one tensor: pass "
                         "padding=True (and truncation=True for texts longer than max_length)")
    return torch.tensor(rows, dtype=torch.long) if kind == "pt" else np.array(rows, dtype=np.int64)


def _rows_by_key(encoded_inputs) -> Mapping:
    """pad's input as one mapping with input_ids: a dict (or BatchEncoding) as it is, a list of examples' dicts
    as {key: [one value per example]}."""
    if isinstance(encoded_inputs, (list, tuple)) and encoded_inputs and \
            all(isinstance(e, Mapping) for e in encoded_inputs):          # one dict per example
        for i, example in enumerate(encoded_inputs):
            missing = [k for k in encoded_inputs[0] if k not in example]
            if missing:
                raise KeyError(f"example {i} has no {missing[0]!r}, which example 0 has: give every example the "
                               "same keys")
        encoded_inputs = {k: [e[k] for e in encoded_inputs] for k in encoded_inputs[0]}
    if not isinstance(encoded_inputs, Mapping):
        found = (f"a {type(encoded_inputs).__name__}" if not isinstance(encoded_inputs, (list, tuple)) else
                 f"a list of {type(encoded_inputs[0]).__name__}" if encoded_inputs else "an empty list")
        raise ValueError(f"pad takes the tokenizer's output: a dict (or BatchEncoding) with input_ids, or a "
                         f"non-empty list of such dicts, one per example; got {found}")
    if "input_ids" not in encoded_inputs:
        raise ValueError(f"nothing to pad: encoded_inputs has no input_ids (its keys: {list(encoded_inputs)}); "
                         "pass the tokenizer's output, or dicts with input_ids")
    return encoded_inputs


# what pad pads besides input_ids (with the pad token id), one value per token, and with what
PAD_FILLS = {"attention_mask": 0, "token_type_ids": 0, "special_tokens_mask": 1}


def _columns(encoded_inputs: Mapping) -> tuple[dict, bool]:
    """pad's rows as new lists: ({key: [one value per row]}, whether the input held rows rather than one
    example's flat lists); tensors and arrays as lists; rows checked against input_ids."""
    listed = {}
    for key, value in encoded_inputs.items():         # tensors and arrays as lists, whole or row by row
        value = value.tolist() if isinstance(value, (torch.Tensor, np.ndarray)) else value
        listed[key] = ([r.tolist() if isinstance(r, (torch.Tensor, np.ndarray)) else r for r in value]
                       if isinstance(value, (list, tuple)) else value)
    batched = isinstance(listed["input_ids"][0], (list, tuple))
    columns = listed if batched else {k: [v] for k, v in listed.items()}
    rows = columns["input_ids"]
    for key, values in columns.items():
        if len(values) != len(rows):
            raise ValueError(f"input_ids has {len(rows)} rows but {key} {len(values)}: pass one per example")
    for row in rows:
        if not all(isinstance(i, int) for i in row):
            raise ValueError(f"input_ids must be token ids (int), got a row {row!r:.80}")
    for key in [k for k in columns if k == "input_ids" or k in PAD_FILLS]:
        for i, (values, row) in enumerate(zip(columns[key], rows)):
            if len(values) != len(row):
                raise ValueError(f"row {i} has {len(row)} input_ids but {len(values)} {key}: pass one per token")
        columns[key] = [list(values) for values in columns[key]]
    return columns, batched


def _tensor(value, kind: str, key: str):
    """A value of pad's result (an example's list or scalar, or one per row) as a torch tensor ("pt") or numpy
    array ("np") of the dtype torch / numpy infer (int64 for ids; int64 where empty, as transformers)."""
    lengths = sorted({len(v) for v in value if isinstance(v, (list, tuple))}) if isinstance(value, list) else []
    if len(lengths) > 1:
        raise ValueError(f"cannot make one tensor of {key!r}: its rows have {lengths[0]} to {lengths[-1]} values. "
                         "pad pads input_ids, attention_mask, token_type_ids and special_tokens_mask (padding=True: "
                         "to the longest row) and returns other keys as given: pad those beforehand "
                         "(DataCollatorForSeq2Seq pads labels with -100) or leave them out")
    empty = isinstance(value, list) and all(v == [] for v in value)
    if kind == "pt":
        return torch.tensor(value, dtype=torch.int64 if empty else None)
    return np.asarray(value, dtype=np.int64 if empty else None)
