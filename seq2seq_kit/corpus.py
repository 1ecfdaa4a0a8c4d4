"""Summarize a corpus: one job over a JSONL/Parquet file or a folder of them, that survives crashes.

    summarize_corpus("docs.jsonl", "summaries.jsonl", model="sshleifer/distilbart-cnn-12-6", batch_size=8)
    summarize_corpus("docs/", "summaries.parquet", engine="ray", ray_address="auto")

How a job runs (both engines):
  1. The driver splits the input into chunks: `batch_size * BATCHES_PER_CHUNK` lines of a JSONL file (by byte
     range), or one Parquet row group. A chunk is the unit of work: one Ray task, one length-sorting window.
  2. A Worker (the model loaded once) reads a chunk, checks each record, skips ids already written, tokenizes,
     sorts the documents by token length (less padding), cuts batches and yields one result per batch.
     engine="local": one Worker in this process (torch's threads use every core).
     engine="ray": a pool of Ray Data actors, each with its Worker (seq2seq_kit/corpus_ray.py).
  3. The driver is the only writer: it appends each result to the output files. Both engines form the same
     batches, so they give the same summaries (with duplicate ids, the first one written wins: in the
     local engine the first in the input, on Ray the first finished).

The files of an output `out.jsonl` (or `out.parquet`):
  out.jsonl               {"id", "summary_text", "input_tokens", "output_tokens"} per document
  out.jsonl.errors.jsonl  {"id", "where", "reason", "message"} per bad record (and per truncated input)
  out.jsonl.meta.json     the model, its commit and the resolved generation settings; counts
  out.parquet.partial.jsonl  (Parquet only) the journal a run appends to; turned into out.parquet at the end

Crash safety: the summaries are an append-only JSONL journal; each batch is appended with one write and
fsync'ed before the progress bar counts it. A crash (Ctrl-C, kill -9, a lost Ray actor) can only leave a
torn last line, which the next run cuts off before resuming. One file, no merge step, and every written
line is a whole record; per-batch part files would need a merge (and leave thousands of files behind).
Exactly once: the driver is the only writer and keeps the ids it wrote; a record it already has (a Ray
task retried after its actor died re-yields its batches) is dropped, a second document with the same id
is reported as duplicate_id. A re-run skips the ids already in the output. A lock on the output stops
two jobs writing it at once.
"""

from __future__ import annotations

import json
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from . import hub
from .config import BartConfig
from .generation import GenerationConfig
from .generation.config import resolve
from .pipeline import DEFAULT_MODEL, pipeline, task_defaults

BATCHES_PER_CHUNK = 4     # JSONL chunk = this many batches of lines: the Ray work unit and the sorting window
                          # (bigger: less padding; smaller: finer load balance and retries on Ray)
DEFAULT_BATCH_SIZE = 8
ENGINES = ("local", "ray")
FOLDER_SUFFIXES = (".jsonl", ".parquet")


@dataclass
class CorpusResult:
    """What a job did. written/skipped/failed count this run's documents; truncated ones are among `written`."""
    output: Path
    written: int
    skipped: int
    failed: int
    truncated: int
    seconds: float

    @property
    def docs_per_s(self) -> float:
        return self.written / self.seconds if self.seconds > 0 else 0.0

    @property
    def errors_path(self) -> Path:
        return _sidecar(self.output, ".errors.jsonl")


def summarize_corpus(input: str | Path, output: str | Path, model: str | Path | None = None, *,
                     engine: str = "local", ray_address: str | None = None, actors: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, text_field: str = "text", id_field: str = "id",
                     overwrite: bool = False, device=None, dtype=None, revision: str | None = None,
                     cache_dir: str | Path | None = None, token: str | bool | None = None,
                     local_files_only: bool = False, sort_by_length: bool = True, progress: bool = True,
                     **generate_kwargs) -> CorpusResult:
    """Summarize every document of `input` (a .jsonl or .parquet file, or a folder of them) into `output`
    (JSONL, or Parquet when it ends in .parquet); a re-run finishes a job that stopped. See the module doc.

    model: Hub id or local checkpoint directory (None: the pipeline's default, distilbart-cnn-12-6).
    engine: "local" (this process) or "ray" (Ray Data actors; `pip install "seq2seq-kit[ray]"`).
    ray_address: None starts a local Ray (or uses the one already initialized), "auto" or "ray://host:port"
        joins a cluster. actors: size of the actor pool (default: one per GPU, else one per node).
    text_field / id_field: the fields holding the text and the id; a record without an id gets its 1-based
        line (row) number, prefixed by the file name when the input is a folder.
    overwrite: replace an existing output (needed when it was written with another model or settings).
    device / dtype / revision / cache_dir / token / local_files_only: as for `pipeline`. With engine="ray",
        device None uses the cluster's GPUs when it has some, "cpu" forces CPU actors.
    sort_by_length: batch documents of similar token length together (False: input order; for measuring).
    generate_kwargs: num_beams, max_length, min_length, ... over the checkpoint's summarization settings.
    Returns the counts; prints a progress bar (progress=True) and a final line to stderr.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "local" and (ray_address is not None or actors is not None):
        raise ValueError("ray_address and actors apply to engine='ray'")
    for name, value in (("batch_size", batch_size), ("actors", 1 if actors is None else actors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if engine == "ray":
        from .corpus_ray import require_ray

        require_ray()                                                     # before any work: is Ray there?
    input, output = Path(input).expanduser(), Path(output).expanduser()
    files = input_files(input, output)
    chunks, total = plan_chunks(files, batch_size * BATCHES_PER_CHUNK, folder=input.is_dir())
    _check_text_field(chunks[0] if chunks else None, text_field)        # a wrong --text-field fails here

    hub_kwargs = {k: v for k, v in (("revision", revision), ("cache_dir", cache_dir), ("token", token),
                                    ("local_files_only", local_files_only)) if v}
    job, hub_kwargs = _job(DEFAULT_MODEL if model is None else model, hub_kwargs, dtype, generate_kwargs)
    job.update(text_field=text_field, id_field=id_field)

    out = Output(output)
    try:
        out.open(job, revision=revision, overwrite=overwrite)
        worker_kwargs = dict(
            model=job["model"], hub_kwargs=hub_kwargs, device=device, dtype=dtype, generate_kwargs=generate_kwargs,
            eos_token_ids=job["generation"]["eos_token_id"], text_field=text_field, id_field=id_field,
            done=frozenset(out.done), batch_size=batch_size, sort_by_length=sort_by_length)
        start = time.perf_counter()
        if engine == "local":
            results = _local_results(chunks, worker_kwargs)
        else:
            from . import corpus_ray

            results = corpus_ray.results(chunks, worker_kwargs, address=ray_address, actors=actors, device=device)
        try:
            _run(results, out, total, progress)
        finally:
            results.close()   # Ray: shut down the instance the job started
        seconds = time.perf_counter() - start
        out.finish()
    finally:
        out.close()
    result = CorpusResult(output, out.written, total - out.written - len(out.failed_now), len(out.failed_now),
                          len(out.truncated_now), seconds)
    print(f"seq2seq-kit: done {result.written}, skipped {result.skipped} (already in {output.name}), "
          f"failed {result.failed}" + (f" (see {result.errors_path})" if result.failed else "")
          + (f"; {result.truncated} truncated to the model's input length" if result.truncated else "")
          + f"; {result.docs_per_s:.2f} docs/s", file=sys.stderr)
    return result


def _job(model, hub_kwargs: dict, dtype, generate_kwargs: dict) -> tuple[dict, dict]:
    """What identifies the job's summaries (the meta file's "job": model, commit, dtype, resolved generation
    settings) and the hub kwargs that load that same model everywhere (a Hub id pinned to its commit)."""
    root = hub.resolve(model, purpose="all", **hub_kwargs)
    local = Path(model).expanduser().is_dir()
    commit = root.name if not local and root.parent.name == "snapshots" else None
    config = BartConfig.from_pretrained(root)
    job = {"model": str(Path(model).expanduser().resolve()) if local else str(model), "commit": commit,
           "dtype": _dtype_name(dtype), "generation": _settings(root, config, generate_kwargs)}
    return job, {**hub_kwargs, **({"revision": commit} if commit else {})}


def _local_results(chunks: list[dict], worker_kwargs: dict) -> Iterator[dict]:
    worker = Worker(**worker_kwargs)   # in this process: torch's intra-op threads use every core
    for chunk in chunks:
        yield from worker.process(chunk)


def _run(results: Iterator[dict], out: "Output", total: int, progress: bool) -> None:
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="doc", desc="summarizing", disable=not progress, file=sys.stderr) as bar:
        for result in results:
            out.write(result)
            bar.update(len(result["records"]) + result["skipped"]
                       + sum(e["reason"] != "truncated" for e in result["errors"]))


def _settings(root: Path, config, generate_kwargs: dict) -> dict:
    """The generation settings every batch uses, resolved as generate() resolves them (validates them too)."""
    _, defaults = task_defaults(config)
    resolved = resolve(GenerationConfig.from_pretrained(root, config), {**defaults, **generate_kwargs},
                       vocab_size=config.vocab_size, max_position_embeddings=config.max_position_embeddings)
    if resolved.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences={resolved.num_return_sequences}: a corpus job writes one summary "
                         "per document; use num_return_sequences=1")
    return resolved.to_dict()


def _dtype_name(dtype) -> str:
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")


def _key(doc_id) -> str:
    """Ids are strings or integers; 1 and "1" are different ids."""
    return json.dumps(doc_id)


def _sidecar(output: Path, suffix: str) -> Path:
    return output.with_name(output.name + suffix)


# ---------------------------------------------------------------------------------------------- input

def input_files(path: Path, output: Path) -> list[Path]:
    """The input's files: the file itself (.parquet, else JSONL), or a folder's *.jsonl and *.parquet files."""
    if path.is_dir():
        files = sorted(p for p in path.iterdir() if p.is_file() and p.suffix in FOLDER_SUFFIXES)
        if not files:
            raise ValueError(f"input folder {str(path)!r} holds no .jsonl or .parquet file")
        if output.resolve().parent == path.resolve():
            raise ValueError(f"the output {str(output)!r} is inside the input folder {str(path)!r}, where a re-run "
                             "would read it as input; write it to another folder")
        return files
    if not path.is_file():
        raise FileNotFoundError(f"input {str(path)!r}: no such file or folder")
    if output.resolve() == path.resolve():
        raise ValueError(f"the output {str(output)!r} is the input file; write it to another path")
    return [path]


def plan_chunks(files: list[Path], size: int, folder: bool) -> tuple[list[dict], int]:
    """Chunks of the input (JSON-able dicts) and the number of records (non-blank lines, rows) in all."""
    chunks, total = [], 0
    for path in files:
        plan = _plan_parquet(path) if path.suffix == ".parquet" else _plan_jsonl(path, size)
        for chunk in plan:
            chunk.update(path=str(path.resolve()), name=path.name, folder=folder)
            total += chunk.pop("records")
            chunks.append(chunk)
    return chunks, total


def _plan_jsonl(path: Path, size: int) -> list[dict]:
    """Byte ranges holding `size` non-blank lines each (the last may hold fewer); `first` is a 1-based line."""
    chunks, start, first, count, pos = [], 0, 1, 0, 0
    with path.open("rb") as f:
        for n, line in enumerate(f, 1):
            if count == size:
                chunks.append(dict(format="jsonl", start=start, stop=pos, first=first, records=count))
                start, first, count = pos, n, 0
            pos += len(line)
            count += bool(line.strip())
    if count:
        chunks.append(dict(format="jsonl", start=start, stop=pos, first=first, records=count))
    return chunks


def _plan_parquet(path: Path) -> list[dict]:
    """One chunk per row group (Parquet is read by row group); `first` is the 1-based number of its first row."""
    pq = _parquet()
    meta, chunks, first = pq.ParquetFile(path).metadata, [], 1
    for i in range(meta.num_row_groups):
        rows = meta.row_group(i).num_rows
        if rows:
            chunks.append(dict(format="parquet", row_group=i, first=first, records=rows))
        first += rows
    return chunks


def _parquet():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError('Parquet input and output need pyarrow: pip install "seq2seq-kit[parquet]" '
                          "(the ray extra brings it too), or use JSONL") from None
    return pq


def read_chunk(chunk: dict, text_field: str, id_field: str) -> Iterator[tuple]:
    """(id, where, text, error) per record of a chunk; error is None or (reason, message), text None then."""
    for n, doc in _chunk_docs(chunk, text_field, id_field):
        where = f"{chunk['name']}:{n}"
        line_id = f"{chunk['name']}:{n}" if chunk["folder"] else n
        if isinstance(doc, Exception):
            yield line_id, where, None, ("invalid_json", f"{where} is not valid JSON ({doc})")
            continue
        if not isinstance(doc, dict):
            yield line_id, where, None, ("not_an_object", f"{where} is a JSON {type(doc).__name__}, not an object")
            continue
        doc_id = doc.get(id_field)
        if doc_id is None:
            doc_id = line_id
        elif isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
            yield line_id, where, None, ("bad_id", f"{where}: field {id_field!r} must be a string or an integer, "
                                                   f"got {doc_id!r}")
            continue
        text = doc.get(text_field)
        if text is None:
            yield doc_id, where, None, ("missing_field", f"{where} has no field {text_field!r}")
        elif not isinstance(text, str):
            yield doc_id, where, None, ("not_a_string", f"{where}: field {text_field!r} is a "
                                                        f"{type(text).__name__}, not a string")
        elif not text.strip():
            yield doc_id, where, None, ("empty", f"{where}: field {text_field!r} is empty; nothing to summarize")
        else:
            yield doc_id, where, text, None


def _chunk_docs(chunk: dict, text_field: str, id_field: str) -> Iterator[tuple[int, object]]:
    """(line or row number, the parsed record or the parse error) per record of a chunk."""
    if chunk["format"] == "parquet":
        pf = _parquet().ParquetFile(chunk["path"])
        columns = [c for c in dict.fromkeys((text_field, id_field)) if c in pf.schema_arrow.names]
        rows = pf.read_row_group(chunk["row_group"], columns=columns).to_pylist()
        yield from enumerate(rows, chunk["first"])
        return
    with open(chunk["path"], "rb") as f:
        f.seek(chunk["start"])
        data = f.read(chunk["stop"] - chunk["start"])
    for n, line in enumerate(data.split(b"\n"), chunk["first"]):
        if line.strip():
            try:
                yield n, json.loads(line)
            except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
                yield n, e


def _check_text_field(chunk: dict | None, text_field: str) -> None:
    """Refuse a job whose first chunk has no record with `text_field` (a wrong --text-field, not bad records)."""
    if chunk is None:
        return
    if chunk["format"] == "parquet":
        names = _parquet().ParquetFile(chunk["path"]).schema_arrow.names
        if text_field not in names:
            raise ValueError(f"{chunk['name']} has no column {text_field!r} (its columns: {', '.join(names)}); "
                             "set --text-field (text_field=)")
        return
    docs = [(n, d) for n, d in _chunk_docs(chunk, text_field, "") if isinstance(d, dict)]
    if docs and not any(text_field in d for _, d in docs):
        n, d = docs[0]
        raise ValueError(f"{chunk['name']}:{n} has no string field {text_field!r} (set --text-field; its fields: "
                         f"{', '.join(map(str, d)) or 'none'}), nor has any record of the first {len(docs)}")


# ---------------------------------------------------------------------------------------------- worker

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
                errors.append(_error(doc_id, where, *error))
            elif _key(doc_id) in self.done:
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
            errors.append(_error(doc_id, where, "truncated", f"{where} is {length} tokens long; "
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


def _error(doc_id, where: str, reason: str, message: str) -> dict:
    return {"id": doc_id, "where": where, "reason": reason, "message": message}


# ---------------------------------------------------------------------------------------------- output

class Journal:
    """An append-only JSONL file holding whole lines only. `load` cuts a torn last line (a crash mid-append)
    off; `append` writes its records with one write and fsyncs, so what it returned for survives a crash."""

    def __init__(self, path: Path, what: str):
        self.path, self.what = path, what
        path.parent.mkdir(parents=True, exist_ok=True)
        self.fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        folder = os.open(path.parent, os.O_RDONLY)   # the file's directory entry on disk too
        try:
            os.fsync(folder)
        finally:
            os.close(folder)

    def lock(self) -> None:
        try:
            import fcntl
        except ImportError:  # pragma: no cover - not POSIX: no lock
            return
        try:
            fcntl.flock(self.fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise RuntimeError(f"{self.path} is being written by another job; wait for it to end, or write to "
                               "another output") from None

    def load(self, required: tuple[str, ...]) -> Iterator[dict]:
        """The records, each checked to hold `required`; a broken line before the last is an error."""
        good, bad = 0, None
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, 1):
                if bad is not None:
                    raise ValueError(f"{self.path}:{bad} is not a {self.what} record; fix or remove that line, or "
                                     "write to a new output")
                try:
                    record = json.loads(line)
                    ok = line.endswith(b"\n") and isinstance(record, dict) and all(k in record for k in required)
                except ValueError:
                    ok = False
                if not ok:
                    bad = n
                    continue
                good += len(line)
                yield record
        if bad is not None:   # the last line is torn: an interrupted append
            os.ftruncate(self.fd, good)
            print(f"seq2seq-kit: {self.path}: dropped an incomplete last line (an interrupted run); "
                  "its document is done again", file=sys.stderr)

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        while data:
            data = data[os.write(self.fd, data):]
        os.fsync(self.fd)

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)

    def close(self) -> None:
        os.close(self.fd)


class Output:
    """A job's output files; the driver's single writer. `done` holds the keys of the ids already written."""

    def __init__(self, path: Path):
        self.path = path
        self.parquet = path.suffix == ".parquet"
        self.meta_path = _sidecar(path, ".meta.json")
        self.summaries = Journal(_sidecar(path, ".partial.jsonl") if self.parquet else path, "summary")
        self.errors = Journal(_sidecar(path, ".errors.jsonl"), "error")
        self.done: set[str] = set()
        self.error_keys: set[tuple] = set()       # (where, reason) in the errors file
        self.where: dict[str, str] = {}           # key -> where, of the records written by this run
        self.failed_now: set[tuple] = set()       # (where, reason) of this run's failed records
        self.truncated_now: set[str] = set()
        self.written = 0
        self.finished = False

    def open(self, job: dict, revision: str | None, overwrite: bool) -> None:
        self.summaries.lock()
        if overwrite:
            self.summaries.truncate()
            self.errors.truncate()
            self.meta_path.unlink(missing_ok=True)
            if self.parquet:
                self.path.unlink(missing_ok=True)
        old = json.loads(self.meta_path.read_text(encoding="utf-8")) if self.meta_path.is_file() else None
        if old is not None and old.get("job") != job:
            raise ValueError(f"{self.path} was written with {_differences(old.get('job') or {}, job)}; "
                             f"this run asks for {_differences(job, old.get('job') or {})}. Mixing them is refused: "
                             "write to another output, or pass --overwrite (overwrite=True) to replace it")
        self.done = {_key(r["id"]) for r in self.summaries.load(("id", "summary_text"))}
        if self.parquet and self.path.exists():
            for i in _parquet().read_table(self.path, columns=["id"]).column("id").to_pylist():
                self.done.add(_key(i))
                if isinstance(i, str) and i.lstrip("-").isdigit():   # an integer id stored among strings
                    self.done.add(_key(int(i)))
        if old is None and self.done:
            raise ValueError(f"{self.path} holds summaries but has no {self.meta_path.name}, so the model and settings "
                             "that wrote them are unknown; write to another output, or pass --overwrite to replace it")
        self.error_keys = {(e["where"], e["reason"]) for e in self.errors.load(("where", "reason"))}
        self.meta = {"job": job, "revision": revision, "counts": (old or {}).get("counts")}
        self._write_meta()

    def write(self, result: dict) -> None:
        """Append a result's new errors, then its records, dropping any id already written."""
        records, errors = [], list(result["errors"])
        for record in result["records"]:
            key, where = _key(record["id"]), record.pop("where")
            first = self.where.get(key)
            if first == where or (first is None and key in self.done):
                continue   # delivered again (a Ray task retried after its actor died), or written before
            if first is not None:
                errors.append(_error(record["id"], where, "duplicate_id",
                                     f"{where} repeats id {record['id']!r} of {first}; only the first is kept"))
                continue
            self.where[key] = where
            records.append(record)
        new = []
        for e in errors:
            k = (e["where"], e["reason"])
            if e["reason"] == "truncated":
                self.truncated_now.add(e["where"])
            else:
                self.failed_now.add(k)
            if k not in self.error_keys:
                self.error_keys.add(k)
                new.append(e)
        self.errors.append(new)          # first: a truncation notice is never lost behind its written summary
        self.summaries.append(records)
        self.done.update(_key(r["id"]) for r in records)
        self.written += len(records)

    def finish(self) -> None:
        """The job is complete: the counts into the meta file; for Parquet, the journal into the .parquet file."""
        if self.parquet:
            self._write_parquet()
        truncated = sum(reason == "truncated" for _, reason in self.error_keys)
        self.meta["counts"] = {"summaries": len(self.done), "failed": len(self.error_keys) - truncated,
                               "truncated": truncated}
        self._write_meta()
        self.finished = True

    def _write_parquet(self) -> None:
        """Old rows + journal rows (first of each id kept) -> a temporary file -> renamed over the output."""
        import pyarrow as pa

        pq = _parquet()
        rows = pq.read_table(self.path).to_pylist() if self.path.exists() else []
        rows += list(self.summaries.load(("id", "summary_text")))
        seen, unique = set(), []
        for r in rows:
            if _key(r["id"]) not in seen:
                seen.add(_key(r["id"]))
                unique.append(r)
        if len({type(r["id"]) for r in unique}) > 1:   # Arrow columns hold one type: mixed ids become strings
            unique = [{**r, "id": str(r["id"])} for r in unique]
        tmp = _sidecar(self.path, ".tmp")
        schema = None if unique else pa.schema([("id", pa.string()), ("summary_text", pa.string()),
                                                ("input_tokens", pa.int64()), ("output_tokens", pa.int64())])
        pq.write_table(pa.Table.from_pylist(unique, schema=schema), tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.summaries.truncate()   # a crash before this line: the next run merges again, dropping repeats

    def _write_meta(self) -> None:
        tmp = _sidecar(self.meta_path, ".tmp")
        tmp.write_text(json.dumps(self.meta, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
        os.replace(tmp, self.meta_path)

    def close(self) -> None:
        if self.finished and self.parquet:
            self.summaries.path.unlink()      # the journal, now empty
        self.summaries.close()
        self.errors.close()


def _differences(a: dict, b: dict) -> str:
    """The settings of `a` that differ from `b`, generation settings flattened: "model='x', num_beams=4"."""
    flat = lambda d: {**{k: v for k, v in d.items() if k != "generation"}, **(d.get("generation") or {})}
    fa, fb = flat(a), flat(b)
    return ", ".join(f"{k}={fa.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k))
