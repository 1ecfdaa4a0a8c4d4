"""A corpus job's input: which files (input_files), their chunks (plan_chunks), and the records of a chunk,
checked one by one (read_chunk: the errors a bad record gets). JSONL by byte range, Parquet by row group."""

from __future__ import annotations

import codecs
import itertools
import json
import os
from pathlib import Path
from typing import Iterator

from ..tokenizer import not_unicode

FOLDER_SUFFIXES = (".jsonl", ".parquet")
PARQUET_PARTS = 64      # a row group is read in at most this many parts (each decodes the group up to its end)
FIELDS_WINDOW = 32      # records check_fields reads for the text and id fields (not the chunks': a setting's size)
DEFAULT_ID = "id"       # the id field a corpus may lack: its records are numbered
BOM = codecs.BOM_UTF8   # a UTF-8 byte order mark, which Windows tools write first: no part of line 1


def id_key(doc_id) -> str:
    """A record id's key in sets of ids: ids are strings or integers, and 1 and "1" are different ids."""
    return json.dumps(doc_id)


def input_files(path: Path, outputs: list[Path]) -> list[Path]:
    """The input's files: the file itself (.parquet, else JSONL), or a folder's *.jsonl and *.parquet files (any
    case; a file reached twice, by a link or a hard link: once). outputs: the output's files (the output first,
    then the files beside it), none of which may be an input, by any path."""
    output = outputs[0]
    if path.is_dir():
        if output.resolve().parent == path.resolve():
            raise ValueError(f"the output {str(output)!r} is inside the input folder {str(path)!r}, where a re-run "
                             "would read it as input; write it to another folder")
        unique: dict[tuple[int, int], Path] = {}       # the file a path reads (device, inode) -> the first path to it
        for p in sorted(path.iterdir()):
            if p.is_file() and is_input_file(p):
                stat = p.stat()
                unique.setdefault((stat.st_dev, stat.st_ino), p)
        files = sorted(unique.values())
        if not files:
            raise ValueError(f"input folder {str(path)!r} holds no .jsonl or .parquet file")
    elif path.is_file():
        files = [path]
    elif path.exists():
        raise ValueError(f"input {str(path)!r} is not a regular file or a folder (a pipe or a device): write the "
                         "records to a file first")
    else:
        raise FileNotFoundError(f"input {str(path)!r}: no such file or folder")
    for file in files:
        _check_utf8_path(file)
        clash = next((o for o in outputs if o.exists() and os.path.samefile(o, file)), None)
        if clash is not None:
            what = "the output" if clash == output else f"the output's file {str(clash)!r}"
            raise ValueError(f"the input {str(file)!r} is {what}; write the output to another path")
    return files


def _check_utf8_path(path: Path) -> None:
    """Refuse an input file whose path is not UTF-8 (bytes a file system takes, that Python holds as lone
    surrogates): its name goes into the ids and the errors file, its folder into the meta file, all UTF-8 JSON."""
    if not_unicode(str(path.resolve())) is not None:
        raise ValueError(f"the input path {os.fsencode(path)!r} is not UTF-8; rename it (e.g. convmv -t utf-8)")


def is_input_file(path: Path) -> bool:
    return path.suffix.lower() in FOLDER_SUFFIXES


def is_parquet(path: Path) -> bool:
    return path.suffix.lower() == ".parquet"


def plan_chunks(files: list[Path], size: int, folder: bool) -> tuple[list[dict], int]:
    """Chunks of the input (JSON-able dicts) and the number of records (non-blank lines, rows) in all."""
    chunks, total = [], 0
    for path in files:
        plan = _plan_parquet(path, size) if is_parquet(path) else _plan_jsonl(path, size)
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
            count += bool((line.removeprefix(BOM) if n == 1 else line).strip())
    if count:
        chunks.append(dict(format="jsonl", start=start, stop=pos, first=first, records=count))
    return chunks


def _plan_parquet(path: Path, size: int) -> list[dict]:
    """Row groups (Parquet is read by row group) of more than `size` rows in parts of max(size, rows /
    PARQUET_PARTS) rows: a file written in one go (pyarrow's and pandas' default) is one row group, which was one
    chunk (one Ray actor, and every text read at once). `first` is the 1-based number of its first row, `skip` the
    rows of its group before it, `rows` its rows."""
    meta, chunks, first = parquet_file(path).metadata, [], 1
    for i in range(meta.num_row_groups):
        rows = meta.row_group(i).num_rows
        part = max(size, -(-rows // PARQUET_PARTS))
        for skip in range(0, rows, part):
            n = min(part, rows - skip)
            chunks.append(dict(format="parquet", row_group=i, skip=skip, rows=n, first=first + skip, records=n))
        first += rows
    return chunks


def parquet_module():
    try:
        import pyarrow.parquet as pq
    except ImportError:
        raise ImportError('Parquet input and output need pyarrow: pip install "seq2seq-kit[parquet]" '
                          "(the ray extra brings it too), or use JSONL") from None
    return pq


# Why a record becomes a line of the errors file instead of a summary (README "Corpus jobs" lists them).
REASONS = ("invalid_json", "not_an_object", "bad_id", "missing_field", "not_a_string", "empty", "bad_text",
           "duplicate_id")
# Where a str that is not Unicode text (a lone surrogate) comes from, by input format: said after the problem.
NOT_UNICODE_HINTS = {"jsonl": " (a broken \\uXXXX escape?)", "parquet": " (bytes that are not UTF-8 in the file)"}
INT64 = (-2**63, 2**63 - 1)   # an integer id must fit a Parquet int64 column (and every JSON reader's integers)


def parquet_file(path):
    """pyarrow's ParquetFile; a file it cannot read (not Parquet, truncated) is a ValueError naming it."""
    pq = parquet_module()
    import pyarrow as pa

    try:
        return pq.ParquetFile(path)
    except (pa.ArrowException, OSError) as e:
        raise ValueError(f"{path} is not a readable Parquet file: {e}") from None


def read_chunk(chunk: dict, text_field: str, id_field: str) -> Iterator[tuple]:
    """(id, where, text, error) per record of a chunk; error is None or (reason, message), text None then.
    A record the driver refused up front (chunk["refused"], see refuse_repeats) gets that error."""
    refused = chunk.get("refused") or {}
    for n, doc_id, where, text, error in _chunk_records(chunk, text_field, id_field):
        if error is None and str(n) in refused:
            yield doc_id, where, None, tuple(refused[str(n)])
        else:
            yield doc_id, where, text, error


def _chunk_records(chunk: dict, text_field: str, id_field: str) -> Iterator[tuple]:
    """(n, id, where, text, error) per record of a chunk: each record checked on its own."""
    for n, doc in _chunk_docs(chunk, text_field, id_field):
        where = f"{chunk['name']}:{n}"
        line_id = f"{chunk['name']}:{n}" if chunk["folder"] else n
        if isinstance(doc, Exception):
            yield n, line_id, where, None, ("invalid_json", f"{where} is not valid JSON ({doc})")
            continue
        if not isinstance(doc, dict):
            yield n, line_id, where, None, ("not_an_object", f"{where} is a JSON {type(doc).__name__}, not an object")
            continue
        given = id_field in doc                   # no id field: its line numbers it; a null id is a bad one
        hint = NOT_UNICODE_HINTS[chunk["format"]]
        problem = _id_problem(doc[id_field], hint) if given else None
        if problem:
            yield n, line_id, where, None, ("bad_id", f"{where}: field {id_field!r} {problem}")
            continue
        doc_id = doc[id_field] if given else line_id
        text = doc.get(text_field)
        if text is None:
            yield n, doc_id, where, None, ("missing_field", f"{where}: field {text_field!r} is null" if text_field
                                           in doc else f"{where} has no field {text_field!r}")
        elif not isinstance(text, str):
            yield n, doc_id, where, None, ("not_a_string", f"{where}: field {text_field!r} is a "
                                                           f"{type(text).__name__}, not a string")
        elif not text.strip():
            yield n, doc_id, where, None, ("empty", f"{where}: field {text_field!r} is empty: it holds no text")
        elif (bad := _not_unicode(text, hint)) is not None:
            yield n, doc_id, where, None, ("bad_text", f"{where}: field {text_field!r} {bad}")
        else:
            yield n, doc_id, where, text, None


def _id_problem(doc_id, hint: str) -> str | None:
    """Why an id field's value cannot be an id (None: it can). Ids keep their type: a string or an int64."""
    if doc_id is None:
        return "is null; give the record an id, or leave the field out to number it by its line"
    if isinstance(doc_id, bool) or not isinstance(doc_id, (str, int)):
        return f"must be a string or an integer, got {doc_id!r}"
    if isinstance(doc_id, int) and not INT64[0] <= doc_id <= INT64[1]:
        return f"is an integer outside the 64-bit range ({doc_id}); store such an id as a string"
    return _not_unicode(doc_id, hint) if isinstance(doc_id, str) else None


def _not_unicode(text: str, hint: str) -> str | None:
    """Why a str is not Unicode text the tokenizer (and the UTF-8 output) can take (a lone surrogate, which JSON's
    \\uXXXX escapes can spell, or a Parquet string's bytes that are not UTF-8), then `hint`; None when it is fine."""
    problem = not_unicode(text)
    return None if problem is None else problem + hint


def refuse_repeats(chunks: list[dict], text_field: str, id_field: str, one_id_type: bool,
                   done: frozenset = frozenset(), watch: frozenset = frozenset()) -> tuple[int, dict[str, str]]:
    """Read every record once, in input order, and mark in each chunk (chunk["refused"]: {line: (reason,
    message)}) the good records that must not be processed: an id that a good record before it already has
    (the first in input order wins, whichever engine and finishing order), and, when `one_id_type` (a Parquet
    output: one column type), an id of another type than the first good record's. done: the keys of the ids an
    earlier run wrote (whose summary a repeat's message then names as the one kept). Returns (how many good records
    are left to process: kept and not done, the places of `watch` that hold a good kept record: {where: id key})."""
    first: dict[str, str] = {}          # id key -> where of the first good record with it
    kind = None                         # (type, id, where) of the first good record, for one_id_type
    todo, good = 0, {}
    for chunk in chunks:
        refused = {}
        for n, doc_id, where, _, error in _chunk_records(chunk, text_field, id_field):
            if error is not None:
                continue
            key = id_key(doc_id)
            if key in first:
                numbered = isinstance(doc_id, int) and not chunk["folder"]   # a record without an id takes its line
                kept = (f"only one is kept: the summary an earlier run wrote for that id, from {first[key]} unless "
                        "that record was added or fixed since" if key in done else "only the first is used")
                refused[str(n)] = ("duplicate_id", f"{where} repeats id {doc_id!r} of {first[key]}; {kept}"
                                   + (" (a record without an id has its line number as id)" if numbered else ""))
                continue
            if one_id_type and kind is None:
                kind = (type(doc_id), doc_id, where)
            if one_id_type and type(doc_id) is not kind[0]:
                refused[str(n)] = ("bad_id", f"{where}: id {doc_id!r} is a {_type_name(doc_id)}, but the job's first "
                                             f"id ({kind[1]!r}, {kind[2]}) is a {_type_name(kind[1])} and a Parquet "
                                             "output's id column holds one type; use one type for every id, or "
                                             "write JSONL")
                continue
            first[key] = where
            todo += key not in done
            if where in watch:
                good[where] = key
        if refused:
            chunk["refused"] = refused
    return todo, good


def _type_name(doc_id) -> str:
    return "string" if isinstance(doc_id, str) else "integer"


def _chunk_docs(chunk: dict, text_field: str, id_field: str) -> Iterator[tuple[int, object]]:
    """(line or row number, the parsed record or the parse error) per record of a chunk."""
    if chunk["format"] == "parquet":
        import pyarrow as pa

        pf = parquet_file(chunk["path"])
        columns = [c for c in dict.fromkeys((text_field, id_field)) if c in pf.schema_arrow.names]
        try:
            table = _row_group_part(pf, chunk, columns)
            values = {name: _column_values(column) for name, column in zip(table.column_names, table.columns)}
        except (pa.ArrowException, OSError) as e:
            raise ValueError(f"{chunk['path']}: row group {chunk['row_group']} is not readable: {e}") from None
        yield from enumerate(({k: v[i] for k, v in values.items()} for i in range(table.num_rows)), chunk["first"])
        return
    with open(chunk["path"], "rb") as f:
        f.seek(chunk["start"])
        data = f.read(chunk["stop"] - chunk["start"])
    if chunk["start"] == 0:
        data = data.removeprefix(BOM)
    for n, line in enumerate(data.split(b"\n"), chunk["first"]):
        if line.strip():
            try:
                yield n, json.loads(line.decode("utf-8"))   # bytes: json would guess UTF-16 / UTF-32 too
            except ValueError as e:   # JSONDecodeError, UnicodeDecodeError
                yield n, e


def _row_group_part(pf, chunk: dict, columns: list[str]):
    """A Parquet chunk's rows (`rows` of its row group after `skip`), as a pyarrow Table of `columns`: the group is
    decoded in batches up to the part's last row (a part far into a large group decodes the rows before it: at
    most PARQUET_PARTS parts a group bound that)."""
    import pyarrow as pa

    if chunk["skip"] == 0 and chunk["rows"] == pf.metadata.row_group(chunk["row_group"]).num_rows:
        return pf.read_row_group(chunk["row_group"], columns=columns)
    kept, start, end = [], None, 0
    batches = pf.iter_batches(batch_size=max(chunk["rows"], 4096), row_groups=[chunk["row_group"]], columns=columns)
    for batch in batches:                               # (not in batches of a short last part's few rows)
        begin, end = end, end + batch.num_rows
        if end > chunk["skip"]:
            start = begin if start is None else start
            kept.append(batch)
        if end >= chunk["skip"] + chunk["rows"]:
            break
    return pa.Table.from_batches(kept).slice(chunk["skip"] - start, chunk["rows"])


def _column_values(column) -> list:
    """A Parquet column's values. A string that is not UTF-8 (its writer did not check) keeps its bytes as lone
    surrogates (surrogateescape), which that record's checks refuse (bad_text, bad_id), as a JSONL line's."""
    import pyarrow as pa

    try:
        return column.to_pylist()
    except UnicodeDecodeError:
        return [v if v is None else v.decode("utf-8", "surrogateescape")
                for v in column.cast(pa.large_binary()).to_pylist()]


def check_fields(chunks: list[dict], text_field: str, id_field: str) -> None:
    """Refuse a job whose first FIELDS_WINDOW records (whatever the chunks' size) have no `text_field` (a wrong
    --text-field, not bad records), or no `id_field` where it is not the default "id" (a misspelt --id-field would
    number the records instead, silently); a Parquet input: its first file's columns."""
    if not chunks:
        return
    first = chunks[0]
    required = [(text_field, "text")] + ([(id_field, "id")] if id_field != DEFAULT_ID else [])   # (field, option)
    if first["format"] == "parquet":
        names = parquet_file(first["path"]).schema_arrow.names
        for field, option in required:
            if field not in names:
                raise ValueError(f"{first['name']} has no column {field!r} (its columns: {', '.join(names)}); "
                                 f"set --{option}-field ({option}_field=)")
        return
    parsed = list(itertools.islice((doc for chunk in chunks if chunk["format"] == "jsonl"
                                    for doc in _chunk_docs(chunk, text_field, "")), FIELDS_WINDOW))
    docs = [(n, d) for n, d in parsed if isinstance(d, dict)]
    if parsed and not docs:                 # a CSV, a JSON array, a compressed file: read as JSONL, nothing fits
        n = parsed[0][0]
        raise ValueError(f"{first['name']}:{n} is not a JSON object, nor is any line of the first {len(parsed)}: "
                         "the input is read as JSONL (one {\"id\": ..., \"text\": ...} object per line) unless it "
                         "is a .parquet file; convert it to one of those")
    for field, option in required:
        if docs and not any(field in d for _, d in docs):
            n, d = docs[0]
            raise ValueError(f"{first['name']}:{n} has no {'string ' if option == 'text' else ''}field {field!r} "
                             f"(set --{option}-field; its fields: {', '.join(map(str, d)) or 'none'}), nor has any "
                             f"record of the first {len(docs)}")
