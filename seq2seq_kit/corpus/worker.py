"""The corpus worker: the model loaded once, turning a chunk of the input into one result per batch through the
summarization pipeline's public stages. The same code runs in the local engine and in each Ray actor."""

from __future__ import annotations

from typing import Iterator

from ..pipeline import pipeline
from .output import error_record, id_key
from .reading import read_chunk


class Worker:
    """The model, loaded once; `process(chunk)` yields one result per batch:
    {"records": [{"id", "summary_text", "input_tokens", "output_tokens", "where"}], "errors": [...], "skipped": n}.
    The same code runs in the local engine and in each Ray actor."""

    def __init__(self, model: str, hub_kwargs: dict, device, dtype, generate_kwargs: dict, eos_token_ids,
                 text_field: str, id_field: str, done: frozenset, batch_size: int, sort_by_length: bool):
        self.pipe = pipeline("summarization", model=model, device=device, dtype=dtype, **hub_kwargs)
        self.generate_kwargs = generate_kwargs
        self.eos = set(eos_token_ids or ())
        self.text_field, self.id_field, self.done = text_field, id_field, done
        self.batch_size, self.sort_by_length = batch_size, sort_by_length

    def process(self, chunk: dict) -> Iterator[dict]:
        todo, errors, skipped = [], [], 0
        for doc_id, where, text, error in read_chunk(chunk, self.text_field, self.id_field):
            if error is not None:
                errors.append(error_record(doc_id, where, *error))
            elif id_key(doc_id) in self.done:
                skipped += 1
            else:
                todo.append((doc_id, where, text))
        rows = self.encode(todo, errors)
        order = range(len(todo))
        if self.sort_by_length:
            order = sorted(order, key=lambda i: -len(rows[i]))
        batches = [order[i:i + self.batch_size] for i in range(0, len(order), self.batch_size)]
        if not batches:
            yield {"records": [], "errors": errors, "skipped": skipped}
        for k, batch in enumerate(batches):   # a chunk's errors and skips come with its first batch
            summaries = self.summarize([rows[i] for i in batch])
            records = [{"id": todo[i][0], "summary_text": text, "input_tokens": len(rows[i]), "output_tokens": n,
                        "where": todo[i][1]} for i, (text, n) in zip(batch, summaries)]
            yield {"records": records, "errors": errors if k == 0 else [], "skipped": skipped if k == 0 else 0}

    def encode(self, docs: list[tuple], errors: list) -> list[list[int]]:
        """Token ids of (id, where, text) docs, by the pipeline's preprocess; over-long ones are truncated (as the
        pipeline truncates them) and reported in `errors`."""
        encoded = self.pipe.preprocess([text for _, _, text in docs], truncation=True)
        limit = self.pipe.max_input_length
        for i, length in encoded.truncated.items():
            doc_id, where, _ = docs[i]
            errors.append(error_record(doc_id, where, "truncated", f"{where} is {length} tokens long; "
                                 f"summarized from its first {limit} tokens, the most the model takes"))
        return encoded.rows

    def summarize(self, rows: list[list[int]]) -> list[tuple[str, int]]:
        """(summary text, generated token count) per row: one padded generate call, as pipe(batch_size=len)."""
        ids = self.pipe.generate_ids(rows, **self.generate_kwargs)                # [b, 1, T]
        texts = [records[0]["summary_text"] for records in self.pipe.postprocess(ids)]
        return [(text, self._generated(seq[0].tolist())) for text, seq in zip(texts, ids)]

    def _generated(self, ids: list[int]) -> int:
        """Tokens generated after the decoder start token, up to and including the first EOS."""
        ids = ids[1:]
        return next((i + 1 for i, t in enumerate(ids) if t in self.eos), len(ids))
