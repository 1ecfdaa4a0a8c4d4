"""stop_strings: a row ends once its text ends in one of the stop strings, as transformers 5.24's
StopStringCriteria decides it (generate(..., stop_strings=[...], tokenizer=tok)).

A stop string counts when it ends inside the row's last token and the tokens before that one spell the rest of
it backwards (the earliest of them may begin before the stop string does): "stop" is caught in ["st", "op"],
["sto", "pper"] and ["las", "topper"], not in ["stop", "at"]. So it is caught at the step that completes it and
never later. Only the row's last W tokens are read, W = the longest stop string's length (one token per character
at the least), its decoder prompt included.

Each token reads as the text it adds (`token_texts`, transformers' `clean_tokenizer_vocab`): for a byte-level BPE
vocabulary (BART's) the bytes it stands for, so that a stop string can end inside a character of several bytes;
otherwise the tokenizer's convert_tokens_to_string of it after a fixed prefix, less that prefix. The tables are
built once per tokenizer and stop strings (`StopStrings.of`); the check (`StopStrings.ended`) runs on the device
at fixed shapes, with no host read, for all rows at once.
"""

from __future__ import annotations

import json
import weakref

import torch

PREFIX = "abcdef"                    # what transformers decodes each token after, then cuts off
NOT_READ = ("stop_strings cannot read the tokenizer's vocabulary as text: token {token!r} after "
            f"{PREFIX!r} reads {{text!r}}, without {PREFIX!r} (transformers' Marian tokenizer of a model "
            "with separate vocabularies does so: its vocabulary is the source's); pass seq2seq_kit's "
            "AutoTokenizer.from_pretrained(the model's folder)")


class StopStrings:
    """The stop strings' tables over a vocabulary of V ids, on one device (the last row, V, stands for any id
    outside the vocabulary and for the places before a row's first token: it ends and continues nothing):
      ends   long [V + 1, n, E]: for each token and stop string, how many of the stop string's last characters
             the token's text holds from its start (the stop string's length where the token holds it all), 0
             padded;
      fits   bool [V + 1, n, L]: fits[t, s, m]: token t's text spells the characters of stop string s just before
             its last m (m >= 1), or ends with all of them (it begins before the stop string);
      length long [V + 1]: each token's text length;
      target long [n]: each stop string's length; L = W = the longest."""

    def __init__(self, texts: dict[int, str | bytes], stops: tuple[str | bytes, ...]):
        size, width = max(texts) + 2, max(map(len, stops))         # the vocabulary's ids and one past them
        ends, fits = {}, []                                         # (i, s) -> end lengths; (i, s, m) that fit
        for s, stop in enumerate(stops):
            for i, t in relevant(texts, stop):
                if e := end_overlaps(t, stop):
                    ends[i, s] = e
                fits += [(i, s, m) for m in fit_positions(t, stop)]
        if not ends:
            raise ValueError("no token of the tokenizer's vocabulary can end any of stop_strings: they hold "
                             "characters this vocabulary never writes; check the strings and the tokenizer")
        self.ends = torch.zeros((size, len(stops), max(map(len, ends.values()))), dtype=torch.long)
        for (i, s), e in ends.items():
            self.ends[i, s, :len(e)] = torch.tensor(e)
        self.fits = torch.zeros((size, len(stops), width), dtype=torch.bool)
        if fits:
            self.fits[tuple(torch.tensor(fits).T)] = True
        self.length = torch.zeros(size, dtype=torch.long)
        self.length[list(texts)] = torch.tensor([len(t) for t in texts.values()])
        self.target = torch.tensor([len(s) for s in stops], dtype=torch.long)
        self.width = width

    @classmethod
    def of(cls, tokenizer, stop_strings, device: torch.device) -> StopStrings:
        """The tables for these stop strings (a str or a list of them) over `tokenizer`'s vocabulary (a
        seq2seq_kit Tokenizer or a transformers tokenizer), built once per tokenizer, strings and device."""
        stops = tuple([stop_strings] if isinstance(stop_strings, str) else stop_strings)
        try:
            kept = BUILT.setdefault(tokenizer, {})
        except TypeError:                                           # a tokenizer that is not weakly referable
            kept = {}
        key = (stops, len(tokenizer), str(device))
        if key not in kept:
            mode = matching_mode(tokenizer)
            texts = token_texts(tokenizer, mode)
            kept[key] = cls(texts, tuple(s.encode() for s in stops) if mode else stops).to(device)
        return kept[key]

    def to(self, device: torch.device) -> StopStrings:
        self.ends, self.fits, self.length, self.target = (
            t.to(device) for t in (self.ends, self.fits, self.length, self.target))
        return self

    def ended(self, seq: torch.Tensor, last: torch.Tensor) -> torch.Tensor:
        """Which rows of seq [N, T] end in a stop string at their token `last` [N, 1] (its index): bool [N]."""
        beyond = len(self.length) - 1
        back = last - torch.arange(self.width, device=seq.device)                     # [N, W] last token first
        ids = seq.gather(1, back.clamp(min=0))
        ids = torch.where((back >= 0) & (ids >= 0) & (ids < beyond), ids, beyond)    # [N, W]
        first = self.ends[ids[:, 0]]                                                 # [N, n, E]: 0 = no start
        lengths = self.length[ids]                                                   # [N, W]
        # the characters matched after each token, were every token before it to fit: [N, W, n, E]
        matched = first[:, None] + (lengths.cumsum(dim=1) - lengths[:, :1])[:, :, None, None]
        at = matched[:, :-1].clamp(max=self.fits.shape[-1] - 1)                      # [N, W-1, n, E]
        fit = self.fits[ids[:, 1:]].gather(3, at) & (matched[:, :-1] < self.target[:, None])
        ok = torch.cat(((first > 0)[:, None], fit), dim=1).cumprod(dim=1).bool()     # [N, W, n, E]: all fit so far
        return ((matched * ok).amax(dim=(1, 3)) >= self.target).any(dim=1)


# tokenizer -> {(stop strings, vocabulary size, device): StopStrings}: built once, dropped with the tokenizer
BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def relevant(texts: dict[int, str | bytes], stop: str | bytes):
    """The (id, text) pairs that may end or continue a match of `stop`: those beginning or ending with one of its
    characters, holding it whole, or empty (an empty text continues a match anywhere)."""
    chars = set(stop)
    return [(i, t) for i, t in texts.items() if not t or t[0] in chars or t[-1] in chars or stop in t]


def end_overlaps(token: str | bytes, stop: str | bytes) -> list[int]:
    """How many of stop's last characters `token` holds from its start: each k < len(stop) where the token begins
    with stop's last k, and len(stop) where the token holds it all (transformers' end lengths, each once)."""
    starts = [k for k in range(1, min(len(token), len(stop) - 1) + 1) if stop[-k] == token[0]]   # a quick test
    return [k for k in starts if token[:k] == stop[-k:]] + [len(stop)] * (stop in token)


def fit_positions(token: str | bytes, stop: str | bytes) -> list[int]:
    """The m (1 <= m < len(stop)) after which `token` continues a match backwards: it spells stop's characters just
    before its last m, or ends with all of them (it begins before the stop string)."""
    n = len(stop)
    ends = range(1, n) if not token else [m for m in range(1, n) if stop[n - 1 - m] == token[-1]]   # a quick test
    return [m for m in ends if stop[:n - m].endswith(token) or token.endswith(stop[:n - m])]


def matching_mode(tokenizer) -> str | None:
    """"byte_level" for a byte-level BPE decoder (tokens read as bytes), "byte_fallback" for <0xNN> tokens, else
    None (tokens read as text), as transformers reads the tokenizer's `tokenizers` decoder."""
    decoder = getattr(getattr(tokenizer, "backend_tokenizer", None), "decoder", None)
    if decoder is None:
        return None
    if type(decoder).__name__ == "ByteLevel":
        return "byte_level"
    try:
        state = json.loads(decoder.__getstate__())
    except Exception:   # noqa: BLE001 - a custom (Python) decoder's state cannot be serialized: neither kind
        return None
    for mode, kind in (("byte_fallback", "ByteFallback"), ("byte_level", "ByteLevel")):
        if has_type(state, kind):
            return mode
    return None


def has_type(state, kind: str) -> bool:
    """Whether a decoder's JSON state, or one it holds (a Sequence's), is of this type."""
    if isinstance(state, dict):
        return state.get("type") == kind or any(has_type(v, kind) for v in state.values())
    return isinstance(state, list) and any(has_type(v, kind) for v in state)


def token_texts(tokenizer, mode: str | None) -> dict[int, str | bytes]:
    """Every vocabulary id -> the text its token adds (bytes when mode is set), as transformers'
    StopStringCriteria.clean_tokenizer_vocab reads it."""
    vocab, base = written_vocabulary(tokenizer)
    byte_of = byte_decoder() if mode == "byte_level" else {}
    out = {}
    for i, token in vocab.items():
        text = token_bytes(token, mode, byte_of)
        if text is None:
            text = tokenizer.convert_tokens_to_string(base + [token])
            if PREFIX not in text:
                raise ValueError(NOT_READ.format(token=token, text=text))
            text = text[text.index(PREFIX) + len(PREFIX):]
            text = text.encode() if mode else text
        out[i] = text
    return out


def written_vocabulary(tokenizer) -> tuple[dict[int, str], list[str]]:
    """Every id the model writes -> its token, and the tokens of PREFIX that each is decoded after (transformers':
    get_vocab(), and PREFIX's ids read back). A Marian tokenizer with separate vocabularies (seq2seq_kit's
    target_tokens()) reads the model's ids in its target vocabulary: those, after PREFIX's source tokens."""
    target = getattr(tokenizer, "target_tokens", None)
    target = target() if callable(target) else None
    if target is not None:
        return target, tokenizer.tokenize(PREFIX)
    base = tokenizer.convert_ids_to_tokens(tokenizer(PREFIX, add_special_tokens=False)["input_ids"])
    return {i: token for token, i in tokenizer.get_vocab().items()}, base


def token_bytes(token: str, mode: str | None, byte_of: dict[str, int]) -> bytes | None:
    """The bytes a byte-level token stands for, or a <0xNN> byte-fallback token's byte; None otherwise."""
    if mode == "byte_level" and all(c in byte_of for c in token):
        return bytes(byte_of[c] for c in token)
    hexdigits = "0123456789abcdefABCDEF"
    if mode == "byte_fallback" and len(token) == 6 and token[:3] == "<0x" and token[5] == ">" \
            and all(c in hexdigits for c in token[3:5]):
        return bytes([int(token[3:5], 16)])
    return None


def byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: the character that stands for each byte -> the byte."""
    printable = {*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)}
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[chr(b)] = b
        else:
            chars[chr(256 + extra)] = b
            extra += 1
    return chars
