"""Summarize or translate a corpus: one job over a JSONL/Parquet file or a folder of them, that survives crashes.

    summarize_corpus("docs.jsonl", "summaries.jsonl", model="sshleifer/distilbart-cnn-12-6", batch_size=8)
    summarize_corpus("docs/", "summaries.parquet", engine="ray", ray_address="auto")
    translate_corpus("docs.jsonl", "de.jsonl", model="Helsinki-NLP/opus-mt-en-de")
    translate_corpus("docs.jsonl", "fr.jsonl", model="facebook/nllb-200-distilled-600M", src_lang="eng_Latn",
                     tgt_lang="fra_Latn")

Both are process_corpus with a task: the task's pipeline (summarization, or translation with its languages) and
its records' field ("summary_text" / "translation_text"); everything below holds for both.

How a job runs (both engines):
  1. The driver splits the input into chunks: `batch_size * BATCHES_PER_CHUNK` lines of a JSONL file (by byte
     range), or one Parquet row group. A chunk is the unit of work: one Ray task, one length-sorting window.
  2. A Worker (the model loaded once behind a continuous-batching Engine with rows for batch_size documents)
     reads a chunk, checks each record, skips ids already written, tokenizes, and submits the documents one by
     one (longest first); it yields a chunk's bad records and skips, then a result per group of documents that
     finished together (the next chunk's documents join the running batch as rows free up).
     engine="local": one Worker in this process (torch's threads use every core).
     engine="ray": a pool of Ray Data actors, each with its Worker (ray_engine.py).
  3. The driver is the only writer: it appends each result to the output files. The engine searches each
     document as generate would search it alone, so both engines give the same texts (up to float rounding
     of the batched matrix products).
Before any work the driver reads every record once (reading.refuse_repeats): a good record whose id a good
record before it in the input already has is a duplicate_id error, whichever engine and finishing order; for a
Parquet output, an id of another type than the first record's is a bad_id (a column holds one type).

The files of an output `out.jsonl` (or `out.parquet`):
  out.jsonl               {"id", "summary_text", "input_tokens", "output_tokens"} per document
  out.jsonl.errors.jsonl  {"id", "where", "reason", "message"} per bad record (and per truncated input)
  out.jsonl.meta.json     the job: model, commit (Hub) or file digests (local directory), dtype, input path,
                          fields, resolved generation settings (a translation job: its task and languages, the
                          target language forced first), the seed if given; counts. Only an output whose meta
                          file says a job wrote it is resumed or repaired; any other existing file is refused
                          (overwrite)
  out.parquet.partial.jsonl  (Parquet only) the journal a run appends to; turned into out.parquet at the end

Crash safety: the results are an append-only JSONL journal; each result is appended with one write and
fsync'ed before the progress bar counts it. A crash (Ctrl-C, kill -9, a lost Ray actor) can only leave a
torn last line, which the next run cuts off before resuming. One file, no merge step, and every written
line is a whole record; per-result part files would need a merge (and leave thousands of files behind).
Exactly once: the driver is the only writer and keeps the ids it wrote; a record it already has (a Ray
task retried after its actor died re-yields its results) is dropped, a second document with the same id
is reported as duplicate_id. A re-run skips the ids already in the output. A lock on the output stops
two jobs writing it at once.

Modules, each importing only those after it: driver (process_corpus, CorpusResult) -> ray_engine ->
worker -> output (the files written) -> reading (the files read).
"""

from .driver import DEFAULT_BATCH_SIZE, CorpusResult, process_corpus, summarize_corpus, translate_corpus

__all__ = ["DEFAULT_BATCH_SIZE", "CorpusResult", "process_corpus", "summarize_corpus", "translate_corpus"]
