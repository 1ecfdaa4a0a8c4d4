"""The corpus worker: the model loaded once behind a continuous-batching engine (seq2seq_kit.Engine), turning
chunks of the input into results through the job's pipeline's public stages (summarization, or translation with
its languages). The same code runs in the local engine and in each Ray actor."""

from __future__ import annotations

from concurrent.futures import FIRST_COMPLETED, wait
from typing import Iterable, Iterator

import torch

from ..generation import rows_per_input, settings
from ..long_documents import SummariesTooLong, summarize_documents
from ..summarization import Encoded
from ..translation import pipeline
from .output import RESULTS, error_record
from .reading import id_key, read_chunk

IN_FLIGHT = 2   # documents kept submitted to the engine, x the batch size: enough that its rows never run dry


class Worker:
    """The model, loaded once, behind an engine of batch_size documents' rows; `process(chunk)` and
    `process_stream(chunks)` yield results {"records": [{"id", "summary_text", "input_tokens", "output_tokens",
    "where"}], "errors": [...], "skipped": n}, records in the order the engine finishes them. task "translation"
    (with src_lang / tgt_lang): the translation pipeline, records holding "translation_text"; pipeline_task: the
    task that pipeline runs when not `task` (the checkpoint's "translation_XX_to_YY"); seed: every document's
    draws from torch.Generator().manual_seed(seed), as it would draw alone."""

    def __init__(self, model: str, hub_kwargs: dict, device, dtype, generate_kwargs: dict, eos_token_ids,
                 text_field: str, id_field: str, done: frozenset, batch_size: int, sort_by_length: bool,
                 strategy: str = "truncate", task: str = "summarization", pipeline_task: str | None = None,
                 languages: dict | None = None, seed: int | None = None):
        self.pipe = pipeline(pipeline_task or task, model=model, device=device, dtype=dtype, **(languages or {}),
                             **hub_kwargs)
        self.field = RESULTS[task][0]
        self.done_as = "translated" if task == "translation" else "summarized"     # for messages
        # a seed: one generator, as each request draws from a copy of its state at submit (all from the seed's)
        self.generate_kwargs = generate_kwargs if seed is None else \
            {**generate_kwargs, "generator": torch.Generator(self.pipe.device).manual_seed(seed)}
        self.eos = set(eos_token_ids or ())
        self.text_field, self.id_field, self.done = text_field, id_field, done
        self.batch_size, self.sort_by_length, self.strategy = batch_size, sort_by_length, strategy
        rows = rows_per_input(settings(self.pipe.model, {**self.pipe.generate_defaults, **generate_kwargs}))
        # batch_size documents decode at once; up to IN_FLIGHT x batch_size are submitted, so the queue must hold
        # the rest (EngineFull otherwise, past the default max_queue when batch_size > 1024)
        self.engine = self.pipe.engine(max_rows=batch_size * rows, max_queue=max(1024, IN_FLIGHT * batch_size))

    def process(self, chunk: dict) -> Iterator[dict]:
        """The results of one chunk (the Ray engine's unit of work)."""
        return self.process_stream([chunk])

    def process_stream(self, chunks: Iterable[dict]) -> Iterator[dict]:
        """Results of every chunk in turn: first each chunk's bad records and skips, then its records as the
        engine finishes them (documents of the next chunk join the running batch while this one's finish)."""
        in_flight: dict = {}                                        # request future -> (doc_id, where, row)
        try:
            for chunk in chunks:
                yield from self._submit_chunk(chunk, in_flight)
            while in_flight:
                yield self.finished(in_flight)
        finally:            # stopped early (Ctrl-C, the driver's error): nobody will write those; free their rows
            for future in in_flight:
                future.cancel()

    def _submit_chunk(self, chunk: dict, in_flight: dict) -> Iterator[dict]:
        """Submit a chunk's documents to the engine (into in_flight), yielding its bad records and skips first, and
        results of those in flight whenever IN_FLIGHT x batch_size are submitted."""
        todo, errors, skipped = read(chunk, self.text_field, self.id_field, self.done)
        if self.strategy == "map_reduce":
            yield self.map_reduce(todo, errors, skipped)
            return
        todo, rows = self.encode(todo, errors)
        if errors or skipped or not todo:
            yield {"records": [], "errors": errors, "skipped": skipped}
        order = sorted(range(len(todo)), key=lambda i: -len(rows[i])) if self.sort_by_length else range(len(todo))
        for i in order:
            while len(in_flight) >= IN_FLIGHT * self.batch_size:
                yield self.finished(in_flight)
            request = self.engine.submit(rows[i], **self.generate_kwargs)
            in_flight[request.future] = (todo[i][0], todo[i][1], rows[i])

    def finished(self, in_flight: dict) -> dict:
        """Wait for at least one submitted document; its result, with every other one done by then."""
        done, _ = wait(list(in_flight), return_when=FIRST_COMPLETED)
        records = []
        for future in [f for f in in_flight if f in done]:          # those done together: in submission order
            doc_id, where, row = in_flight.pop(future)
            out = future.result()                                   # [1, T], or a GenerateOutput (return_dict)
            ids = (out.sequences if hasattr(out, "sequences") else out)[None].cpu()   # [1, 1, T]
            text = self.pipe.postprocess(ids)[0][0][self.field]
            records.append({"id": doc_id, self.field: text, "input_tokens": len(row),
                            "output_tokens": self.generated(ids[0, 0].tolist()), "where": where})
        return {"records": records, "errors": [], "skipped": 0}

    def map_reduce(self, docs: list[tuple], errors: list, skipped: int) -> dict:
        """The result of a chunk's (id, where, text) docs, each summarized from its chunks on the engine
        (seq2seq_kit.long_documents), all of them together; records gain "chunks": N."""
        records = []
        done = summarize_documents(self.pipe, [text for _, _, text in docs], self.engine, **self.generate_kwargs)
        limit = "max_new_tokens (--max-new-tokens)" if "max_new_tokens" in self.generate_kwargs \
            else "max_length (--max-length)"                  # the one that sets the length (max_new_tokens wins)
        for (doc_id, where, _), r in zip(docs, done):
            if isinstance(r.error, SummariesTooLong):
                errors.append(error_record(doc_id, where, "too_long", f"{where}: {r.error.what}; a smaller "
                                           f"{limit} shortens the chunks' summaries"))
                continue
            if r.error is not None:      # a text the chunker cannot take
                errors.append(error_record(doc_id, where, "bad_text", f"{where}: {r.error}"))
                continue
            records.append({"id": doc_id, "summary_text": r.summary_text, "input_tokens": r.input_tokens,
                            "output_tokens": self.generated(r.summary_ids), "chunks": len(r.chunks), "where": where})
        return {"records": records, "errors": errors, "skipped": skipped}

    def encode(self, docs: list[tuple], errors: list) -> tuple[list[tuple], list[list[int]]]:
        """(the docs the tokenizer took, their token ids) of (id, where, text) docs, by the pipeline's preprocess;
        over-long ones are truncated (as the pipeline truncates them) and reported in `errors`."""
        docs, encoded = self._preprocess(docs, errors)
        limit = self.pipe.max_input_length
        for i, length in encoded.truncated.items():
            doc_id, where, _ = docs[i]
            errors.append(error_record(doc_id, where, "truncated", f"{where} is {length} tokens long; "
                                 f"{self.done_as} from its first {limit} tokens, the most the model takes"))
        return docs, encoded.rows

    def _preprocess(self, docs: list[tuple], errors: list) -> tuple[list[tuple], Encoded]:
        """(the docs kept, the pipeline's preprocess of their texts). A text the tokenizer refuses fails alone: it
        is left out and reported in `errors` (reason "bad_text", the tokenizer's message), and the rest encoded."""
        try:
            return docs, self.pipe.preprocess([text for _, _, text in docs], truncation=True)
        except Exception:   # noqa: BLE001 - which text? try each alone
            pass
        good = []
        for doc in docs:
            try:
                self.pipe.preprocess([doc[2]], truncation=True)
                good.append(doc)
            except Exception as e:   # noqa: BLE001 - any refusal of the tokenizer is this record's error
                errors.append(error_record(doc[0], doc[1], "bad_text", f"{doc[1]}: the tokenizer cannot take "
                                           f"field {self.text_field!r} ({type(e).__name__}: {e})"))
        return good, self.pipe.preprocess([text for _, _, text in good], truncation=True)

    def generated(self, ids: list[int]) -> int:
        """Tokens generated after the decoder start token, up to and including the first EOS."""
        ids = ids[1:]
        return next((i + 1 for i, t in enumerate(ids) if t in self.eos), len(ids))


def read(chunk: dict, text_field: str, id_field: str, done: frozenset) -> tuple[list[tuple], list[dict], int]:
    """A chunk's (documents to process as (id, where, text), bad records, count of ids already written)."""
    todo, errors, skipped = [], [], 0
    for doc_id, where, text, error in read_chunk(chunk, text_field, id_field):
        if error is not None:
            errors.append(error_record(doc_id, where, *error))
        elif id_key(doc_id) in done:
            skipped += 1
        else:
            todo.append((doc_id, where, text))
    return todo, errors, skipped


def unprocessed(chunks: Iterable[dict], text_field: str, id_field: str, done: frozenset) -> Iterator[dict]:
    """The results of chunks holding no document to process (each bad, refused or written before): their errors and
    skips, read without a model."""
    for chunk in chunks:
        _, errors, skipped = read(chunk, text_field, id_field, done)
        yield {"records": [], "errors": errors, "skipped": skipped}
