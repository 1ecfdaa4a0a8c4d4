"""stop_strings: a row ends once its text ends in one of the stop strings, as transformers 5.25's
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

import bisect
import json
import weakref
from collections import OrderedDict

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

    def __init__(self, vocab: Vocabulary, stops: tuple[str | bytes, ...]):
        size, width = max(vocab.texts) + 2, max(map(len, stops))   # the vocabulary's ids and one past them
        if size * len(stops) * width > MAX_TABLE:
            raise ValueError(f"stop_strings too large: {len(stops)} strings of up to {width} characters over "
                             f"{size - 1} tokens make a table of {size * len(stops) * width:,} entries (at most "
                             f"{MAX_TABLE:,}); pass fewer or shorter stop strings")
        ends = entries([(vocab.holding_end(stop, k), s, k) for s, stop in enumerate(stops)
                        for k in range(1, len(stop) + 1)])                   # [N, 3]: (id, s, end length)
        if not len(ends):
            raise ValueError("no token of the tokenizer's vocabulary can end any of stop_strings: they hold "
                             "characters this vocabulary never writes; check the strings and the tokenizer")
        self.ends = slotted(ends, size, len(stops))
        fits = entries([(vocab.continuing(stop, m), s, m) for s, stop in enumerate(stops)
                        for m in range(1, len(stop))])                       # [M, 3]: (id, s, m)
        self.fits = torch.zeros((size, len(stops), width), dtype=torch.bool)
        self.fits[fits.unbind(dim=1)] = True
        self.length = torch.zeros(size, dtype=torch.long)
        self.length[list(vocab.texts)] = torch.tensor([len(t) for t in vocab.texts.values()])
        self.target = torch.tensor([len(s) for s in stops], dtype=torch.long)
        self.width = width

    @classmethod
    def of(cls, tokenizer, stop_strings, device: torch.device) -> StopStrings:
        """The tables for these stop strings (a str or a list of them) over `tokenizer`'s vocabulary (a
        seq2seq_kit Tokenizer or a transformers tokenizer): its Vocabulary read once per tokenizer (and size), the
        tables of its KEEP most recent stop strings kept."""
        stops = tuple([stop_strings] if isinstance(stop_strings, str) else stop_strings)
        try:
            kept = BUILT.setdefault(tokenizer, {})
        except TypeError:                                           # a tokenizer that is not weakly referable
            kept = {}
        if kept.get("size") != len(tokenizer):                      # new, or its vocabulary changed
            kept.update(size=len(tokenizer), vocabulary=Vocabulary(tokenizer), tables=OrderedDict())
        vocab, tables, key = kept["vocabulary"], kept["tables"], (stops, str(device))
        found = tables.pop(key, None) or cls(vocab, vocab.encoded(stops)).to(device)
        tables[key] = found                                         # the most recent last
        while len(tables) > KEEP:                                   # popitem: one step, safe beside other threads
            tables.popitem(last=False)
        return found

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


def entries(groups: list[tuple[torch.Tensor, int, int]]) -> torch.Tensor:
    """(ids [n], s, value) groups -> long [N, 3] rows (id, s, value)."""
    rows = [torch.stack((ids, torch.full_like(ids, s), torch.full_like(ids, v)), dim=1) for ids, s, v in groups]
    return torch.cat(rows) if rows else torch.zeros((0, 3), dtype=torch.long)


def slotted(ends: torch.Tensor, size: int, n: int) -> torch.Tensor:
    """Rows (id, s, end length) [N, 3] -> long [size, n, E]: each (id, s)'s end lengths in its first slots, zeros
    after; E the most any (id, s) has."""
    group = ends[:, 0] * n + ends[:, 1]                                          # [N]
    group, order = group.sort(stable=True)
    rank = torch.arange(len(group)) - torch.searchsorted(group, group)          # its place in its group
    table = torch.zeros((size, n, int(rank.max()) + 1), dtype=torch.long)
    table[ends[order, 0], ends[order, 1], rank] = ends[order, 2]
    return table


# tokenizer -> {"size": len(tokenizer), "vocabulary": its Vocabulary, "tables": {(stop strings, device):
# StopStrings}}: dropped with the tokenizer; the KEEP most recently used tables are kept (a server sees many)
BUILT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()
KEEP = 4
MAX_TABLE = 2 ** 28                  # entries of the fits table (bool): 256 MB


class Vocabulary:
    """A tokenizer's vocabulary as stop strings read it: `texts`, every id -> the text its token adds (bytes
    when `mode` is set: see token_texts), kept sorted forwards and backwards (each text reversed), so that the
    ids of the texts that begin (or end) with a given part are one range of a list, found by bisection."""

    def __init__(self, tokenizer):
        self.mode = matching_mode(tokenizer)
        self.texts = token_texts(tokenizer, self.mode)
        order = sorted(self.texts, key=self.texts.__getitem__)
        self.forwards = ([self.texts[i] for i in order], torch.tensor(order))
        order = sorted(self.texts, key=lambda i: self.texts[i][::-1])
        self.backwards = ([self.texts[i][::-1] for i in order], torch.tensor(order))
        self.by_text: dict[str | bytes, list[int]] = {}
        for i, t in self.texts.items():
            self.by_text.setdefault(t, []).append(i)
        self.longest = max(map(len, self.texts.values()))

    def encoded(self, stops: tuple[str, ...]) -> tuple[str | bytes, ...]:
        """The stop strings as the texts are: UTF-8 bytes when the tokens read as bytes."""
        return tuple(s.encode() for s in stops) if self.mode else stops

    def holding_end(self, stop: str | bytes, k: int) -> torch.Tensor:
        """The ids whose text holds stop's last k characters from its start (k < len(stop)), or holds all of stop
        (k = len(stop)): transformers' end lengths. long [n]"""
        if k < len(stop):
            return beginning_with(self.forwards, stop[-k:])
        return torch.tensor([i for i, t in self.texts.items() if stop in t], dtype=torch.long)

    def continuing(self, stop: str | bytes, m: int) -> torch.Tensor:
        """The ids whose text continues a match backwards after stop's last m characters (1 <= m < len(stop)): it
        spells the characters just before them, or ends with all of those (it begins before the stop string); an
        empty text does so anywhere. long [n]"""
        head = stop[:len(stop) - m]
        spelled = [i for j in range(max(0, len(head) - self.longest), len(head) + 1)     # head ends with it
                   for i in self.by_text.get(head[j:], ())]
        return torch.cat((torch.tensor(spelled, dtype=torch.long), beginning_with(self.backwards, head[::-1])))


def beginning_with(index: tuple[list, torch.Tensor], part: str | bytes) -> torch.Tensor:
    """The ids of the sorted texts `index` (texts, their ids) that begin with `part` (non-empty): one range."""
    texts, ids = index
    start, after = bisect.bisect_left(texts, part), successor(part)
    end = len(texts) if after is None else bisect.bisect_left(texts, after, lo=start)
    return ids[start:end]


def successor(part: str | bytes) -> str | bytes | None:
    """The least text above every text that begins with `part` (None: there is none): its last character that
    can be raised, raised, and what follows it dropped."""
    if isinstance(part, bytes):
        part = part.rstrip(b"\xff")
        return part[:-1] + bytes([part[-1] + 1]) if part else None
    part = part.rstrip(chr(0x10FFFF))
    return part[:-1] + chr(ord(part[-1]) + 1) if part else None


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
