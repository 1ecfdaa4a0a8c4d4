"""A corpus job's input: which files (input_files), their chunks (plan_chunks), and the records of a chunk,
checked one by one (read_chunk: the errors a bad record gets). JSONL by byte range, Parquet by row group."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

FOLDER_SUFFIXES = (".jsonl", ".parquet")


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
    pq = parquet_module()
    meta, chunks, first = pq.ParquetFile(path).metadata, [], 1
    for i in range(meta.num_row_groups):
        rows = meta.row_group(i).num_rows
        if rows:
            chunks.append(dict(format="parquet", row_group=i, first=first, records=rows))
        first += rows
    return chunks


def parquet_module():
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
        pf = parquet_module().ParquetFile(chunk["path"])
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


def check_text_field(chunk: dict | None, text_field: str) -> None:
    """Refuse a job whose first chunk has no record with `text_field` (a wrong --text-field, not bad records)."""
    if chunk is None:
        return
    if chunk["format"] == "parquet":
        names = parquet_module().ParquetFile(chunk["path"]).schema_arrow.names
        if text_field not in names:
            raise ValueError(f"{chunk['name']} has no column {text_field!r} (its columns: {', '.join(names)}); "
                             "set --text-field (text_field=)")
        return
    docs = [(n, d) for n, d in _chunk_docs(chunk, text_field, "") if isinstance(d, dict)]
    if docs and not any(text_field in d for _, d in docs):
        n, d = docs[0]
        raise ValueError(f"{chunk['name']}:{n} has no string field {text_field!r} (set --text-field; its fields: "
                         f"{', '.join(map(str, d)) or 'none'}), nor has any record of the first {len(docs)}")
