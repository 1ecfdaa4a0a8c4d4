"""Documents longer than the model's window: map-reduce summarization on the pipeline's public stages.

    pipe(text, strategy="map_reduce")                                  # [{'summary_text': ...}]
    pipe(text, strategy="map_reduce", map_kwargs={"max_length": 60}, return_chunks=True)
    map_reduce(pipe, texts, engine=engine, **generate_kwargs)          # what pipe() calls; for servers
    map_reduce(pipe, texts, engine=engine, cancel=event)               # event.set() elsewhere stops it

1. Chunk (chunk_document). The document is tokenized once, after the pipeline's prefix, with character offsets.
   Sentences end at `.`, `!`, `?` (with closing quotes or brackets) before whitespace, at `。！？`, and at line
   breaks (SENTENCE_END); Korean `다.` ends with its period. A chunk is a run of whole sentences whose tokens, with
   the prefix and special tokens, fit the model's input (pipe.max_input_length); a sentence longer than that is
   cut at token boundaries (at a word start where one is near), and a single token whose text does not fit (the
   offsets understate it: KoBART on ZWJ emoji runs) by characters. `chunk_overlap` whole sentences of a chunk's
   end open the next, fewer when they do not fit beside its first new sentence. Neighbouring chunks whose rows
   together fit the window are then merged where their joined text fits (where offsets understate the text,
   the units map to a character or two each).
   A chunk's text is the document's own substring, `document[start:end]`, stripped of surrounding whitespace,
   and the chunks together hold every other character of it. The count from the document's tokens is checked on
   the chunk's own text, tokenized as the pipeline tokenizes it alone (a BPE merge can differ at its edges), and
   the chunk is cut shorter until that fits: no chunk is ever truncated. A document that fits is one chunk, the
   whole text as given (not stripped).
2. Map. Every chunk of a document of several chunks is summarized as `pipe(chunk_text, **map_settings)` would
   summarize it alone, map_settings being the call's settings with map_kwargs over them (a length map_kwargs gives
   in either form, max_length or max_new_tokens, min_length or min_new_tokens, replaces the call's in both): its
   row from `pipe.preprocess`, generated on a continuous-batching Engine, decoded by `pipe.postprocess`. The
   engine steps each chunk as `generate` would step it alone (requests of the same settings share one search, row
   by row), so a chunk's tokens are the ones `generate` gives it alone (bit for bit when it runs alone; beside
   other chunks up to float rounding of the batched matrix products, which leaves the tokens of decisive logits
   unchanged).
   pipe(batch_size=N)'s static batching would also pad the chunks and search them as one batch, one more source
   of rounding.
3. Reduce. The chunk summaries, joined with a space, are summarized again with the call's own settings; when the
   join is itself longer than the window it is chunked and mapped again (map settings), up to `max_depth`
   rounds of chunking in all (an error names the depth when the text is still too long). A document of one
   chunk is summarized once, with the call's settings: exactly what strategy="truncate" gives it.
All documents of a call go through each round together, so their chunks share the engine's batch; a full engine
queue makes the call wait for its own requests (generate_all). A document the call cannot summarize: DocumentError;
a request failing as it runs (sampling with nothing to draw): StageError, naming its stage.
Cancel. A `cancel` event set by another thread (a server whose client left) stops the call: its engine requests
not done are cancelled, so their rows are free at the engine's next step, and map_reduce raises CancelledError.
"""

from __future__ import annotations

import bisect
import collections
import concurrent.futures
import itertools
import re
import threading
import unicodedata
from dataclasses import dataclass, field

import torch

from .generation import rows_per_input, settings

STRATEGIES = ("truncate", "map_reduce")
MAX_DEPTH = 3               # rounds of chunking: the document's, then up to two of summaries of summaries
DEFAULT_BATCH_SIZE = 8      # chunks decoding at once when pipe(strategy="map_reduce") makes its own engine
WORD_START_WINDOW = 16      # an over-long sentence is cut up to this many tokens early, to cut before a word
EDGE_SLACK = 2              # a run counted this many tokens over the budget is still tried on its own tokens (a
                            # chunk's edges can tokenize shorter alone than inside the document)
CANCEL_POLL_S = 0.05        # how often a call given `cancel` checks it while it waits for the engine
# A sentence ends after . ! ? (and closing quotes or brackets) before whitespace or the end, after 。！？, or
# at a line break (where str.splitlines() breaks: \n, \r\n, \r, \v, \f, \x1c-\x1e, NEL, U+2028, U+2029).
LINE_BREAK = r"\r\n?|[\n\x0b\x0c\x1c-\x1e\x85\u2028\u2029]"
CLOSERS = r"[\"'”’)\]」』]*"      # closing quotes and brackets after a sentence's end
SENTENCE_END = re.compile(r"[.!?]+" + CLOSERS + r"(?=\s|$)|[。！？]+" + CLOSERS + "|" + LINE_BREAK)
LINE_BREAK_ONLY = re.compile(LINE_BREAK)
NON_SPACE = re.compile(r"\S")
JOINED = "\u200d\ufe0e\ufe0f"     # ZWJ and variation selectors: never cut before them


@dataclass
class Chunk:
    """A piece of a document: text == document[start:end], and its token ids as pipe.preprocess gives them."""
    start: int
    end: int
    text: str
    row: list[int]


@dataclass
class LongSummary:
    """One document's map-reduce result. summary_ids: the final summary's token ids (decoder start token first;
    empty when the chunk summaries were all empty). input_tokens: the document's tokens as the pipeline counts
    them (prefix and special tokens included). chunks: {"span", "text", "summary_text"} of its chunks. error: why
    this document has no summary (its text stayed longer than the window after max_depth rounds), else None."""
    summary_text: str = ""
    summary_ids: list[int] = field(default_factory=list)
    input_tokens: int = 0
    chunks: list[dict] = field(default_factory=list)
    error: Exception | None = None


class SummariesTooLong(ValueError):
    """A document's chunk summaries stayed longer than the window after max_depth rounds of chunking."""

    def __init__(self, window: int, max_depth: int):
        self.what = (f"the chunk summaries are still longer than the model's {window} positions after {max_depth} "
                     f"round(s) of chunking (max_depth={max_depth})")
        super().__init__(f"{self.what}; give the chunks a smaller max_length (map_kwargs, over HTTP "
                         "map_parameters; without one there, the call's max_length or max_new_tokens applies to the "
                         "chunks too), or a larger max_depth")


class StageError(ValueError):
    """A request of the map stage ("map": a chunk, with map_kwargs over the call's settings) or of the reduce stage
    ("reduce": the call's settings) failed on the engine as it ran: `error` is the engine's."""

    def __init__(self, stage: str, error: ValueError):
        where = "map_kwargs over the call's settings" if stage == "map" else "the call's settings"
        super().__init__(f"the {stage} stage ({where}): {error}")
        self.stage, self.error = stage, error


class DocumentError(ValueError):
    """map_reduce cannot summarize input `index`: `error` is why (the tokenizer refused its text, a character
    that does not fit the window alone, or SummariesTooLong)."""

    def __init__(self, index: int, error: Exception):
        super().__init__(f"input {index}: {error}")
        self.index, self.error = index, error


def check_strategy(strategy: str, chunk_overlap=0, map_kwargs=None, return_chunks: bool = False) -> None:
    """Refuse an unknown strategy, and map-reduce options given without strategy="map_reduce"."""
    if strategy not in STRATEGIES:
        raise ValueError(f"strategy must be one of {', '.join(map(repr, STRATEGIES))}, got {strategy!r}")
    if strategy == "truncate":
        given = [name for name, value in (("chunk_overlap", chunk_overlap), ("map_kwargs", map_kwargs),
                                          ("return_chunks", return_chunks)) if value]
        if given:
            raise ValueError(f"{' and '.join(given)} {'apply' if len(given) > 1 else 'applies'} to "
                             "strategy='map_reduce' only; pass strategy='map_reduce' or leave them out")
        return
    if isinstance(chunk_overlap, bool) or not isinstance(chunk_overlap, int) or chunk_overlap < 0:
        raise ValueError(f"chunk_overlap must be a number of sentences (an integer >= 0), got {chunk_overlap!r}")
    if map_kwargs is not None and not isinstance(map_kwargs, dict):
        raise TypeError(f"map_kwargs must be a dict of generate settings, got {type(map_kwargs).__name__}")
    if not isinstance(return_chunks, bool):
        raise TypeError(f"return_chunks must be True or False, got {return_chunks!r}")


def check_overlap(pipe, chunk_overlap: int) -> None:
    """Refuse a chunk_overlap no chunk could ever carry: each sentence is at least one token, and a chunk holds
    fewer than pipe.max_input_length tokens of text beside a new sentence."""
    if chunk_overlap >= pipe.max_input_length:
        raise ValueError(f"chunk_overlap={chunk_overlap} sentences can never be carried: a chunk holds fewer than "
                         f"the model's {pipe.max_input_length} tokens; pass a few sentences (e.g. 1 to 3)")


def check_call(engine, cancel) -> None:
    """Refuse an engine that is not an Engine (seq2seq_kit.engine), and a cancel without is_set() (a
    threading.Event)."""
    if engine is not None and not (callable(getattr(engine, "submit", None)) and hasattr(engine, "Full")):
        raise TypeError(f"engine must be an Engine on the pipeline's model (pipe.engine()) or None, got "
                        f"{type(engine).__name__}")
    if cancel is not None and not callable(getattr(cancel, "is_set", None)):
        raise TypeError(f"cancel must be a threading.Event (set it to stop the call) or None, got "
                        f"{type(cancel).__name__}")


def map_reduce(pipe, texts: list[str], *, engine=None, batch_size: int = DEFAULT_BATCH_SIZE, chunk_overlap: int = 0,
               map_kwargs: dict | None = None, return_chunks: bool = False,
               clean_up_tokenization_spaces: bool = False, max_depth: int = MAX_DEPTH,
               cancel: threading.Event | None = None, **generate_kwargs) -> list[dict]:
    """One record per text (checked by pipe.check_texts): {'summary_text'}, plus 'chunks' with return_chunks.
    engine: an Engine on pipe's model with pipe's defaults (pipe.engine()); None: one made for this call, with
    batch_size requests' rows. generate_kwargs: the reduce stage's settings, and under map_kwargs the map stage's.
    cancel: an Event another thread may set to stop the call (the module doc): concurrent.futures.CancelledError.
    Raises the first document's error as DocumentError (see summarize_documents)."""
    texts = pipe.check_texts(texts)
    check_strategy("map_reduce", chunk_overlap, map_kwargs, return_chunks)
    check_call(engine, cancel)
    own = engine is None
    if own:
        rows = max(rows_per_input(stage_settings(pipe, kw))
                   for kw in (generate_kwargs, map_settings(generate_kwargs, map_kwargs)))
        engine = pipe.engine(max_rows=batch_size * rows)
    try:
        results = summarize_documents(pipe, texts, engine, chunk_overlap=chunk_overlap, map_kwargs=map_kwargs,
                                      clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                                      max_depth=max_depth, cancel=cancel, **generate_kwargs)
    finally:
        if own:
            engine.close(cancel_pending=True)
    for i, r in enumerate(results):
        if r.error is not None:
            raise DocumentError(i, r.error) from r.error
    return [{"summary_text": r.summary_text, **({"chunks": r.chunks} if return_chunks else {})} for r in results]


def check_cuts(tokenizer) -> None:
    """map-reduce cuts a document at its tokens' character offsets: a tokenizer that gives none (Marian's, M2M100's)
    is refused."""
    if not tokenizer.gives_offsets:
        raise ValueError(f"map-reduce cuts a document at its tokens' character offsets, which this tokenizer "
                         f"({tokenizer.kind}) does not give; summarize it with strategy='truncate'")


def summarize_documents(pipe, texts: list[str], engine, *, chunk_overlap: int = 0, map_kwargs: dict | None = None,
                        clean_up_tokenization_spaces: bool = False, max_depth: int = MAX_DEPTH,
                        cancel: threading.Event | None = None, **generate_kwargs) -> list[LongSummary]:
    """Map-reduce every text (none blank) on `engine` (the module doc). A document the call cannot summarize gets
    its `error`, the others their summaries: its text stays longer than the window after max_depth rounds
    (SummariesTooLong), or the chunker cannot take it (ValueError: the tokenizer refuses it, or a character does
    not fit the window alone). Bad settings raise before any work. cancel: as map_reduce."""
    if isinstance(max_depth, bool) or not isinstance(max_depth, int) or max_depth < 1:
        raise ValueError(f"max_depth must be a positive integer, got {max_depth!r}")
    check_overlap(pipe, chunk_overlap)
    check_cuts(pipe.tokenizer)
    stage = {"reduce": dict(generate_kwargs), "map": map_settings(generate_kwargs, map_kwargs)}
    for name, kwargs in stage.items():
        n = stage_settings(pipe, kwargs).num_return_sequences
        if n != 1:
            raise ValueError(f"num_return_sequences={n} in the {name} stage: map-reduce writes one summary per "
                             "chunk and per document; use num_return_sequences=1")
    results = [LongSummary() for _ in texts]
    current = dict(enumerate(texts))                 # document -> the text it summarizes this round
    for depth in range(max_depth + 1):
        plans = {}
        for i, text in current.items():
            try:
                length, plans[i] = chunk_document(pipe, text, chunk_overlap)
            except ValueError as e:                 # a text the chunker cannot take: this document's error
                results[i].error = e
                continue
            if depth == 0:
                results[i].input_tokens = length
        for i in [i for i, plan in plans.items() if len(plan) > 1 and depth == max_depth]:
            results[i].error = SummariesTooLong(pipe.max_input_length, max_depth)
            del plans[i]
        names = ["reduce" if len(plan) == 1 else "map" for plan in plans.values() for _ in plan]
        rows = [chunk.row for plan in plans.values() for chunk in plan]
        outputs = iter(generate_all(engine, [(row, stage[name]) for row, name in zip(rows, names)], cancel, names))
        current = {}
        for i, plan in plans.items():
            ids = [next(outputs) for _ in plan]                                          # [T] each
            summaries = [pipe.postprocess(t[None, None], False, clean_up_tokenization_spaces)[0][0]["summary_text"]
                         for t in ids]
            if depth == 0:
                results[i].chunks = [{"span": [c.start, c.end], "text": c.text, "summary_text": s}
                                     for c, s in zip(plan, summaries)]
            joined = " ".join(summaries)
            if len(plan) == 1:
                results[i].summary_text, results[i].summary_ids = summaries[0], ids[0].tolist()
            elif joined.strip():
                current[i] = joined
            # else: every chunk summary is empty, and so is the document's
        if not current:
            break
    return results


def stage_settings(pipe, kwargs: dict):
    """The GenerationConfig a stage's generate kwargs resolve to over the pipeline's defaults. A `generator` is no
    setting: each chunk's engine request samples from its own copy of its state (Engine.submit)."""
    return settings(pipe.model, {**pipe.generate_defaults, **{k: v for k, v in kwargs.items() if k != "generator"}})


LENGTHS = (("max_length", "max_new_tokens"), ("min_length", "min_new_tokens"))   # one length, two forms


def map_settings(generate_kwargs: dict, map_kwargs: dict | None) -> dict:
    """The map stage's settings: the call's with map_kwargs over them, a length map_kwargs gives in either form
    replacing the call's in both: its other form is None, over the call's, pipeline()'s and a generation_config's
    (else their max_new_tokens would win over a map max_length, as generate ranks them)."""
    map_kwargs = map_kwargs or {}
    unset = {name: None for pair in LENGTHS if any(n in map_kwargs for n in pair) for name in pair}
    return {**generate_kwargs, **unset, **map_kwargs}


def generate_all(engine, jobs: list[tuple[list[int], dict]], cancel: threading.Event | None = None,
                 stages: list[str] | None = None) -> list[torch.Tensor]:
    """Generate every (row, generate kwargs) job on the engine, at most 2 x max_rows requests of this call
    outstanding at a time (the engine's queue stays short); the first sequence of each, [T] on the CPU, in job
    order. A full queue is backpressure (submit_waiting). Once `cancel` is set: CancelledError. Whatever ends the
    call early cancels its requests not done. stages: each job's stage, named by the StageError raised when
    requests of one stage fail as they run (a ValueError)."""
    window = 2 * engine.max_rows
    requests, waiting = [], collections.deque()
    try:
        for row, kwargs in jobs:
            while len(waiting) >= window:
                output_of(waiting.popleft(), cancel)
            if cancel is not None and cancel.is_set():
                raise concurrent.futures.CancelledError("map_reduce was cancelled")
            requests.append(submit_waiting(engine, row, kwargs, waiting, cancel))
            waiting.append(requests[-1])
        outputs = [output_of(r, cancel) for r in requests]
    except BaseException as e:
        for r in requests:
            r.cancel()
        failed = {stages[i] for i, r in enumerate(requests) if r.done() and not r.cancelled()
                  and r.exception() is e} if stages is not None and isinstance(e, ValueError) else set()
        if len(failed) == 1:                    # (a step that failed requests of both stages names neither)
            raise StageError(failed.pop(), e) from e
        raise
    return [(out.sequences if hasattr(out, "sequences") else out)[0].cpu() for out in outputs]


def submit_waiting(engine, row: list[int], kwargs: dict, waiting: collections.deque,
                   cancel: threading.Event | None):
    """engine.submit(row, **kwargs); while the engine's queue is full (EngineFull), wait for this call's oldest
    request in `waiting` (taken from it) and try again. EngineFull only when none of this call's requests is
    outstanding any more: the queue is full of other callers' work (a server answers 503, retry later)."""
    while True:
        try:
            return engine.submit(row, **kwargs)
        except engine.Full:                        # EngineFull
            if not waiting:
                raise
            output_of(waiting.popleft(), cancel)


def output_of(request, cancel: threading.Event | None):
    """request.result(); with `cancel`, waited for CANCEL_POLL_S at a time, and CancelledError once it is set."""
    if cancel is None:
        return request.result()
    while not cancel.is_set():
        try:
            return request.result(CANCEL_POLL_S)
        except concurrent.futures.TimeoutError:
            pass
    raise concurrent.futures.CancelledError("map_reduce was cancelled")


# ---------------------------------------------------------------------------------------------- chunking

def document_tokens(pipe, text: str) -> tuple[int, list[tuple[int, int]]]:
    """(the text's input length as pipe.preprocess counts it, prefix and special tokens included; the (start, end)
    character offsets in `text` of its own tokens), from one tokenization of prefix + text."""
    tokenizer, shift = pipe.tokenizer, len(pipe.prefix)
    if pipe.prefix:           # the text alone first: an error names a character where the text has it, not behind it
        tokenizer.tokenize(text)
    enc = tokenizer(pipe.prefix + text, add_special_tokens=False, return_offsets_mapping=True)
    specials = len(tokenizer("")["input_ids"]) - len(tokenizer("", add_special_tokens=False)["input_ids"])
    offsets = [(max(s - shift, 0), e - shift) for s, e in enc["offset_mapping"] if e > shift]
    return specials + len(enc["input_ids"]), offsets


def chunk_document(pipe, text: str, overlap: int = 0) -> tuple[int, list[Chunk]]:
    """(the text's input length, as document_tokens counts it; its chunks (the module doc): runs of whole
    sentences, each fitting pipe.max_input_length as pipe.preprocess tokenizes it alone, `overlap` sentences of
    each chunk's end repeated at the next one's start)."""
    length, offsets = document_tokens(pipe, text)
    limit = pipe.max_input_length
    if length <= limit:
        encoded = pipe.preprocess([text], truncation=True)
        if not encoded.truncated:
            return length, [Chunk(0, len(text), text, encoded.rows[0])]
    budget = limit - len(pipe.preprocess([""]).rows[0])          # tokens left beside the prefix and special tokens
    if budget < 1:
        raise ValueError(f"the prefix {pipe.prefix!r} and special tokens fill the model's {limit} positions; "
                         "no text fits beside them")
    return length, _Chunker(pipe, text, offsets, budget, overlap).chunks()


class _Chunker:
    """Greedy chunking over sentence units (token ranges [a, b) of the document's tokens)."""

    def __init__(self, pipe, text: str, offsets: list[tuple[int, int]], budget: int, overlap: int):
        self.pipe, self.text, self.budget, self.overlap = pipe, text, budget, overlap
        self.starts = list(itertools.accumulate((s for s, _ in offsets), max))   # non-decreasing: cuts are in order
        self.ends = [e for _, e in offsets]
        self.blank = [not text[s:e].strip() for s, e in offsets]     # whitespace tokens (some have empty offsets)
        sentences = sentence_units(text, offsets)
        self.sentence_starts = {a for a, _ in sentences}             # token indices where a sentence starts
        self.units = [piece for unit in sentences for piece in self.split(*unit, budget)]

    def chunks(self) -> list[Chunk]:
        """Each chunk: from `first` (at most `overlap` units back), as many units as fit, at least the next new one."""
        out, first, need = [], 0, 0          # need: the first unit no chunk holds yet
        while need < len(self.units):
            for start in range(first, need + 1):
                found = self.fit(start, need)
                if found is not None:
                    break
            last, chunks = found
            out += chunks
            need = last + 1
            first = max(start + 1, need - self.overlap)
        return self.coalesce(out)

    def coalesce(self, chunks: list[Chunk]) -> list[Chunk]:
        """Neighbours merged while their text together fits in its own tokenization. Only pieces far below the
        window qualify (their rows together fit): where a document's offsets understate its text (KoBART on ZWJ
        emoji runs), the token units map to a character or two, and each would be a map request of its own."""
        specials = self.pipe.max_input_length - self.budget        # the prefix and special tokens of every row
        out = []
        for chunk in chunks:
            if out and len(out[-1].row) + len(chunk.row) - specials <= self.pipe.max_input_length:
                merged = self.chunk_of(out[-1].start, chunk.end)
                encoded = self.pipe.preprocess([merged.text], truncation=True)
                if not encoded.truncated:
                    merged.row, out[-1] = encoded.rows[0], merged
                    continue
            out.append(chunk)
        return out

    def fit(self, i: int, need: int) -> tuple[int, list[Chunk]] | None:
        """(last unit, chunks) of the longest run of units i..last (last >= need) that fits, checked on the chunk's
        own tokens; None when units i..need do not fit (i < need). A single unit that does not fit is cut shorter,
        down to one token, whose text is then cut by characters (by_characters). The chunks: none when the text is
        only whitespace, else one (several only for a one-token unit cut by characters)."""
        units = self.units
        if self.tokens(i, need) > self.budget + EDGE_SLACK:
            return None
        j = need
        while j + 1 < len(units) and self.tokens(i, j + 1) <= self.budget + EDGE_SLACK:
            j += 1
        while True:
            chunk = self.chunk(units[i][0], units[j][1])
            if chunk is None:
                return j, []
            encoded = self.pipe.preprocess([chunk.text], truncation=True)
            if not encoded.truncated:
                chunk.row = encoded.rows[0]
                return j, [chunk]
            if j > need:
                j -= 1
            elif i < need:
                return None
            elif units[i][1] - units[i][0] == 1:    # its offsets understate its text (KoBART on ZWJ emoji runs)
                return i, self.by_characters(chunk.start, chunk.end)
            else:                              # one unit, over by `excess` tokens in its own tokenization
                excess = encoded.truncated[0] - self.pipe.max_input_length
                self.shorten(i, excess)

    def shorten(self, i: int, excess: int) -> None:
        """Cut unit i `excess` tokens shorter; the tokens cut off open the rest of its sentence, which is split again
        (a piece of their own would be a chunk of a word or two: KoBART's "▁" before a chunk's first token)."""
        units = self.units
        a, b = units[i]
        k = next((k for k in range(i + 1, len(units)) if units[k][0] in self.sentence_starts), len(units))
        first = self.split(a, b, max(1, min(b - a - 1, b - a - excess)))[0]
        units[i:k] = [first] + self.split(first[1], units[k - 1][1], self.budget)

    def tokens(self, i: int, j: int) -> int:
        """The document's tokens of units i..j, the whitespace-only ones at the end not counted (the chunk's text
        is stripped of them)."""
        a, b = self.units[i][0], self.units[j][1]
        while b > a + 1 and self.blank[b - 1]:
            b -= 1
        return b - a

    def by_characters(self, start: int, end: int) -> list[Chunk]:
        """text[start:end] as chunks that each fit in their own tokenization and together hold all of it: each the
        longest piece that fits (text_cut)."""
        out = []
        while start < end:
            cut = self.text_cut(start, end)
            piece = self.chunk_of(start, cut)
            if piece is not None:
                piece.row = self.pipe.preprocess([piece.text], truncation=True).rows[0]
                out.append(piece)
            start = cut
        return out

    def text_cut(self, start: int, end: int) -> int:
        """The end of the longest piece of text[start:end] that fits (lengths doubled, then a binary search: the
        texts tokenized stay near the piece's length), moved back to a whitespace or, failing that, a character
        boundary outside a grapheme (not inside a ZWJ sequence or before a combining mark) when one is in the
        piece's second half and that shorter piece fits."""
        lo, size = start, 16                                 # text[start:lo] fits
        while self.fits(start, hi := min(start + size, end)):
            if hi == end:
                return end
            lo, size = hi, 2 * size
        while hi - lo > 1:                                   # text[start:hi] does not fit
            mid = (lo + hi) // 2
            lo, hi = (mid, hi) if self.fits(start, mid) else (lo, mid)
        if lo == start:
            raise ValueError(f"the character {self.text[start]!r} at {start} does not fit the model's input on "
                             "its own")
        half = range(lo, start + (lo - start) // 2, -1)
        for good in (lambda k: self.text[k].isspace(), self.grapheme_boundary):
            k = next((k for k in half if good(k)), None)
            if k is not None and self.fits(start, k):
                return k
        return lo

    def grapheme_boundary(self, k: int) -> bool:
        """A cut before character k keeps emoji ZWJ sequences, variation selectors, skin tones and combining marks
        with the character they modify."""
        after, before = self.text[k], self.text[k - 1]
        return not (after in JOINED or before == "\u200d" or unicodedata.combining(after)
                    or "\U0001F3FB" <= after <= "\U0001F3FF")

    def fits(self, start: int, end: int) -> bool:
        """text[start:end], stripped, is blank or fits the window in its own tokenization."""
        piece = self.chunk_of(start, end)
        return piece is None or not self.pipe.preprocess([piece.text], truncation=True).truncated

    def chunk(self, a: int, b: int) -> Chunk | None:
        """The chunk of tokens [a, b): the text from the cut before token a to the cut before token b, stripped."""
        return self.chunk_of(self.cut(a), self.cut(b))

    def chunk_of(self, start: int, end: int) -> Chunk | None:
        """The chunk of text[start:end], stripped of surrounding whitespace; None when nothing is left."""
        while start < end and self.text[start].isspace():
            start += 1
        while end > start and self.text[end - 1].isspace():
            end -= 1
        return Chunk(start, end, self.text[start:end], []) if end > start else None

    def cut(self, k: int) -> int:
        """The character position of the cut before token k: consecutive chunks' texts abut there, so together
        they hold every character."""
        return 0 if k == 0 else len(self.text) if k == len(self.starts) else self.starts[k]

    def split(self, a: int, b: int, size: int) -> list[tuple[int, int]]:
        """Token range [a, b) in pieces of at most `size` tokens, each cut before a word start when one is within
        WORD_START_WINDOW tokens of the limit, never inside a character."""
        pieces = []
        while b - a > size:
            k = a + size
            choices = [c for c in range(k, max(a + 1, k - WORD_START_WINDOW) - 1, -1) if self.between_chars(c)]
            words = [c for c in choices if self.word_start(c)]
            k = (words or choices or [a + size])[0]
            pieces.append((a, k))
            a = k
        return pieces + [(a, b)]

    def between_chars(self, k: int) -> bool:
        return self.ends[k - 1] <= self.starts[k]

    def word_start(self, k: int) -> bool:
        """Token k starts a word: whitespace before it, or as its own first character (a "▁word" piece)."""
        s = self.starts[k]
        return (s > 0 and self.text[s - 1].isspace()) or (s < len(self.text) and self.text[s].isspace())


def sentence_units(text: str, offsets: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """The sentences of `text` as token ranges [a, b) covering all its tokens. A sentence ending at character p
    is cut before the first token ending past the next non-whitespace character (the whitespace stays with the
    sentence it follows), unless that token starts before p with more than whitespace before p (it holds the
    sentence end: no cut there; KoBART's '\n오늘' holds only the line break, which a chunk's strip drops). A line
    break is cut before the first token starting in it or after it (its own tokens open the next sentence; a
    tokenizer that drops the break, KoBART's U+2028 and U+2029, gives the next word's tokens the break's offsets),
    and a unit of whitespace alone joins the sentence before it."""
    starts, ends = [s for s, _ in offsets], [e for _, e in offsets]
    cuts = set()
    for match in SENTENCE_END.finditer(text):
        p = match.end()
        if LINE_BREAK_ONLY.fullmatch(match.group()):
            k = bisect.bisect_left(starts, match.start())
        else:
            q = next_word.start() if (next_word := NON_SPACE.search(text, p)) else len(text)   # next non-space char
            k = bisect.bisect_right(ends, q)
        if 0 < k < len(offsets) and (starts[k] >= p or text[starts[k]:p].isspace()):
            cuts.add(k)
    bounds = [0, *sorted(cuts), len(offsets)]
    # a unit of whitespace alone (a blank line's second break) stays with the sentence before it
    bounds = [0, *(a for a, b in zip(bounds[1:-1], bounds[2:]) if not text[starts[a]:ends[b - 1]].isspace()),
              len(offsets)]
    return [(a, b) for a, b in zip(bounds, bounds[1:]) if b > a]
