"""A corpus job's output files, written by the driver alone: the summaries or translations (an append-only JSONL
journal; for Parquet, turned into the .parquet file at the end), the errors file and the meta file (the job's model
and settings, its counts). Also the record formats the worker shares: error records, the result's field."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Iterator

from ..generation.config import LIBRARY_DEFAULTS
from ..jsonfile import read_json, replace_json, replace_json_lines
from .reading import id_key, is_parquet, parquet_module

logger = logging.getLogger(__name__)
# a job's task -> (its records' text field, what the meta file counts them as)
RESULTS = {"summarization": ("summary_text", "summaries"), "translation": ("translation_text", "translations")}


SIDECARS = (".errors.jsonl", ".meta.json", ".partial.jsonl", ".tmp")   # the files beside an output: out.jsonl<suffix>


def _sidecar(output: Path, suffix: str) -> Path:
    """A file beside the output: out.jsonl -> out.jsonl<suffix>."""
    return output.with_name(output.name + suffix)


def _other_job(path: Path, output: Path) -> Path | None:
    """The meta file of another corpus job than `output`'s that claims `path` (as its output, or as one of the files
    beside its output), or None."""
    owners = [path] + [path.with_name(path.name.removesuffix(s)) for s in SIDECARS if path.name.endswith(s)]
    return next((meta for owner in owners if owner.resolve() != output.resolve()
                 and (meta := _sidecar(owner, ".meta.json")).exists()), None)


def errors_path(output: Path) -> Path:
    """The errors file of an output (out.jsonl -> out.jsonl.errors.jsonl)."""
    return _sidecar(output, ".errors.jsonl")


def error_record(doc_id, where: str, reason: str, message: str) -> dict:
    """A line of the errors file."""
    return {"id": doc_id, "where": where, "reason": reason, "message": message}


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
            raise BlockingIOError(f"{self.path} is being written by another job; wait for it to end, or write to "
                                  "another output") from None

    def load(self, required: tuple[str, ...]) -> Iterator[dict]:
        """The records, each checked to hold `required`; a broken line before the last is an error."""
        good, bad = 0, None
        with open(self.path, "rb") as f:
            for n, line in enumerate(f, 1):
                if bad is not None:
                    a = "an" if self.what == "error" else "a"
                    raise ValueError(f"{self.path}:{bad} is not {a} {self.what} record; fix or remove that line, "
                                     "or write to a new output")
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
            logger.warning("%s: dropped an incomplete last line (an interrupted run)%s", self.path,
                           "" if self.what == "error" else "; its document is done again")

    def append(self, records: list[dict]) -> None:
        if not records:
            return
        data = memoryview("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records).encode("utf-8"))
        try:
            while data:
                data = data[os.write(self.fd, data):]
            os.fsync(self.fd)
        except OSError as e:   # ENOSPC, EDQUOT, EIO: the file and the cause; a re-run cuts a torn line off
            raise OSError(e.errno, f"cannot write {self.path}: {e.strerror or e}") from None

    def truncate(self) -> None:
        os.ftruncate(self.fd, 0)

    def close(self) -> None:
        os.close(self.fd)


class Output:
    """A job's output files; the driver's single writer. `done` holds the keys of the ids already written.
    task: the job's (RESULTS), which names the records' text field."""

    def __init__(self, path: Path, task: str = "summarization"):
        self.path = path
        self.field, self.noun = RESULTS[task]
        self.parquet = is_parquet(path)
        self.meta_path = _sidecar(path, ".meta.json")
        self.journal_path = _sidecar(path, ".partial.jsonl") if self.parquet else path
        self.errors_path = errors_path(path)
        self.results = self.errors = None         # Journals, once open
        self.done: set[str] = set()
        self.error_keys: set[tuple] = set()       # (where, reason) in the errors file
        self.where: dict[str, str] = {}           # key -> where, of the records written by this run
        self.failed_now: set[tuple] = set()       # (where, reason) of this run's failed records
        self.truncated_now: set[str] = set()
        self.written = 0
        self.finished = False

    @property
    def files(self) -> list[Path]:
        """The output, then the files beside it (its journal when Parquet, its errors and meta files)."""
        return list(dict.fromkeys([self.path, self.journal_path, self.errors_path, self.meta_path]))

    def check(self, overwrite: bool) -> None:
        """Refuse to write over files this job's meta file does not claim: each of the output's files that exists
        (and is not empty) must come with a meta file of ours, unless `overwrite`; none may be claimed by another
        job's meta file, `overwrite` or not. Writes nothing."""
        files = self.files
        folder = next(p for p in self.path.absolute().parents if p.exists())    # the folder it is (to be) in
        if not folder.is_dir():
            raise NotADirectoryError(f"{folder} is a file, so the output {self.path} cannot be written under it; "
                                     "choose an output path in a folder")
        for path in files:
            if path.is_dir():
                raise IsADirectoryError(f"{path} is a directory; the output must be a file path (e.g. out.jsonl)")
            if path.exists() and not path.is_file():
                raise ValueError(f"{path} is not a regular file (a device or a pipe); a corpus job's output is a "
                                 "file it can reopen to resume, e.g. out.jsonl")
            if (meta := _other_job(path, self.path)) is not None:
                raise FileExistsError(f"{path} belongs to the corpus job of {meta.name} (one of its files); choose "
                                      "another output")
        if overwrite:
            return
        if self._read_meta() is None:
            existing = [p for p in files if p.exists() and (p.stat().st_size or p == self.meta_path)]
            if existing:
                raise FileExistsError(f"{existing[0]} exists and no {self.meta_path.name} says a corpus job wrote it; "
                                      "refusing to resume, repair or replace a file it did not write: choose another "
                                      "output, or pass --overwrite (overwrite=True) to replace it")

    def open(self, job: dict, revision: str | None, overwrite: bool) -> None:
        self.results = Journal(self.journal_path, self.field.removesuffix("_text"))
        self.errors = Journal(self.errors_path, "error")
        self.results.lock()
        self.errors.lock()        # a job given this job's errors file as its output waits for none of its lines
        self.check(overwrite)     # again, under the lock
        if overwrite:
            self.results.truncate()
            self.errors.truncate()
            self.meta_path.unlink(missing_ok=True)
            if self.parquet:
                self.path.unlink(missing_ok=True)
        old = self._read_meta()
        was, now = (None, None) if old is None else (job_identity(old["job"]), job_identity(job))
        if was != now:
            raise ValueError(f"{self.path} was written with {_differences(was, now)}; "
                             f"this run asks for {_differences(now, was)}. Mixing them is refused: "
                             "write to another output, or pass --overwrite (overwrite=True) to replace it")
        self.done = {id_key(r["id"]) for r in self.results.load(("id", self.field))}
        if self.parquet and self._parquet_written():
            self.done.update(id_key(i) for i in _read_parquet(self.path, columns=["id"]).column("id").to_pylist())
        self.error_keys = {(e["where"], e["reason"]) for e in self.errors.load(("where", "reason"))}
        self.meta = {"job": job, "revision": revision, "counts": (old or {}).get("counts")}
        self._write_meta()

    def write(self, result: dict) -> None:
        """Append a result's new errors, then its records, dropping any id already written."""
        records, errors = [], list(result["errors"])
        for record in result["records"]:
            key, where = id_key(record["id"]), record.pop("where")
            first = self.where.get(key)
            if first == where or (first is None and key in self.done):
                continue   # delivered again (a Ray task retried after its actor died), or written before
            if first is not None:
                errors.append(error_record(record["id"], where, "duplicate_id",
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
        self.results.append(records)
        self.done.update(id_key(r["id"]) for r in records)
        self.written += len(records)

    def finish(self, good: dict[str, str]) -> None:
        """The job is complete: the counts into the meta file; for Parquet, the journal into the .parquet file.
        good: {where: id key} of the errors file's places that now hold a good record kept for processing."""
        if self.parquet:
            self._write_parquet()
        self._drop_resolved_errors(good)
        truncated = sum(reason == "truncated" for _, reason in self.error_keys)
        self.meta["counts"] = {self.noun: len(self.done), "failed": len(self.error_keys) - truncated,
                               "truncated": truncated}
        self._write_meta()
        self.finished = True

    def _write_parquet(self) -> None:
        """Old rows + journal rows (first of each id kept) -> a temporary file -> renamed over the output."""
        import pyarrow as pa

        pq = parquet_module()
        rows = _read_parquet(self.path).to_pylist() if self._parquet_written() else []
        rows += list(self.results.load(("id", self.field)))
        seen, unique = set(), []
        for r in rows:
            if id_key(r["id"]) not in seen:
                seen.add(id_key(r["id"]))
                unique.append(r)
        kinds = {type(r["id"]) for r in unique}
        if len(kinds) > 1:   # the driver refuses an id of another type up front (reading.refuse_repeats)
            raise ValueError(f"{self.path}: the ids are of {len(kinds)} types, which a Parquet column cannot hold; "
                             "write JSONL")
        tmp = _sidecar(self.path, ".tmp")
        schema = None if unique else pa.schema([("id", pa.string()), (self.field, pa.string()),
                                                ("input_tokens", pa.int64()), ("output_tokens", pa.int64())])
        _write_file(tmp, lambda: pq.write_table(pa.Table.from_pylist(unique, schema=schema), tmp))
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, self.path)
        self.results.truncate()   # a crash before this line: the next run merges again, dropping repeats

    def _drop_resolved_errors(self, good: dict[str, str]) -> None:
        """An earlier run's failed record whose place now holds a good record whose id is written (its input fixed,
        the job resumed, by this run or by one interrupted before its end) is no error any more: the errors file is
        rewritten without it (a temporary file renamed over it, under the job's lock on its output), and the counts
        leave it out."""
        resolved = {k for k in self.error_keys if k[1] != "truncated" and k[0] in good and good[k[0]] in self.done}
        if not resolved:
            return
        kept = [e for e in self.errors.load(("where", "reason")) if (e["where"], e["reason"]) not in resolved]
        replace_json_lines(self.errors_path, kept)
        self.error_keys -= resolved

    def _parquet_written(self) -> bool:
        """Whether the .parquet output holds a table: an empty file (touch, mktemp) is none, as an empty JSONL output
        holds no records (check takes both over)."""
        return self.path.is_file() and self.path.stat().st_size > 0

    def _read_meta(self) -> dict | None:
        """The meta file of a job, None when there is none; anything else there is refused, naming it."""
        if not self.meta_path.is_file():
            return None
        try:
            meta = read_json(self.meta_path)
        except ValueError as e:         # a crash mid-write cannot leave one (replace_json): edited by hand?
            raise ValueError(f"{e}; remove it, or pass --overwrite (overwrite=True) to replace the output") from None
        if not (isinstance(meta, dict) and isinstance(meta.get("job"), dict)):
            raise ValueError(f"{self.meta_path} is not a corpus job's meta file (a JSON object with a \"job\"); "
                             "remove it, or pass --overwrite (overwrite=True) to replace the output")
        return meta

    def _write_meta(self) -> None:
        replace_json(self.meta_path, self.meta, indent=2, ensure_ascii=False)

    def close(self) -> None:
        if self.results is None:
            return
        if self.finished and self.parquet:
            self.results.path.unlink()      # the journal, now empty
        self.results.close()
        self.errors.close()


def _write_file(path: Path, write) -> None:
    """Run write(), which writes `path`; an OSError (a full disk, no permission) names the file."""
    try:
        write()
    except OSError as e:
        raise OSError(e.errno, f"cannot write {path}: {e.strerror or e}") from None


def _read_parquet(path: Path, columns=None):
    """A Parquet file's table; a file pyarrow cannot read is named."""
    import pyarrow as pa

    try:
        return parquet_module().read_table(path, columns=columns)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path} is not a readable Parquet file: {e}") from None


def job_identity(job: dict) -> dict:
    """A job as a resume compares it: its generation settings but those at the library's defaults, so that a job
    recorded by an earlier version, before generation gained a setting (output_attentions=False, ...), resumes."""
    generation = {k: v for k, v in (job.get("generation") or {}).items()
                  if k not in LIBRARY_DEFAULTS or LIBRARY_DEFAULTS[k] != v}
    return {**job, "generation": generation}


def _differences(a: dict, b: dict) -> str:
    """The settings of `a` that differ from `b`, generation settings flattened: "model='x', num_beams=4"."""
    nested = ("generation", "files")   # flattened: the setting or the file that differs is named
    flat = lambda d: {"strategy": "truncate",        # a job records its strategy only when it is not the default
                      **{k: v for k, v in d.items() if k not in nested},
                      **{k: v for n in nested for k, v in (d.get(n) or {}).items()}}
    fa, fb = flat(a), flat(b)
    return ", ".join(f"{k}={fa.get(k)!r}" for k in sorted(set(fa) | set(fb)) if fa.get(k) != fb.get(k))
