"""The one reader and writer of the JSON files seq2seq_kit opens (config.json, generation_config.json, tokenizer
files, shard indexes, a corpus job's meta file): a malformed file is a ValueError that names it, a failed write (a
full disk, a read-only folder) an OSError that names it (`writing`, for the other files a checkpoint holds)."""

from __future__ import annotations

import json
import os
import secrets
from contextlib import contextmanager, suppress
from pathlib import Path


def read_json(path: str | Path):
    """The value of a JSON file; a ValueError naming the file when it is not valid JSON (or not UTF-8)."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except ValueError as e:   # json.JSONDecodeError, UnicodeDecodeError
        raise ValueError(f"{path} is not valid JSON: {e}") from None


def read_json_object(path: str | Path) -> dict:
    """read_json for a file that must hold a JSON object."""
    d = read_json(path)
    if not isinstance(d, dict):
        raise ValueError(f"{path} must hold a JSON object, got {type(d).__name__}")
    return d


def write_json(path: str | Path, value, **dumps_kwargs) -> None:
    """Write value as JSON (json.dumps(value, **dumps_kwargs) and a newline, UTF-8) to path."""
    text = json.dumps(value, **dumps_kwargs) + "\n"
    with writing(path):
        Path(path).write_text(text, encoding="utf-8")


def replace_json(path: str | Path, value, **dumps_kwargs) -> None:
    """write_json to a temporary file beside path, then renamed over path: a crash leaves the old file or the new
    one, never a part of one (writers racing on one path: the last rename wins, whole)."""
    _replace(path, json.dumps(value, **dumps_kwargs) + "\n")


def replace_json_lines(path: str | Path, records: list) -> None:
    """records as JSON lines (one per line, UTF-8, as a corpus job's journals hold them), replacing path as
    replace_json does."""
    _replace(path, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))


def _replace(path: str | Path, text: str) -> None:
    """text into a temporary file beside path (PATH.<random>.tmp, this call's own), on disk before the rename makes
    it the file; removed when the write or the rename fails."""
    path = Path(path)
    tmp = path.with_name(f"{path.name}.{secrets.token_hex(6)}.tmp")
    try:
        with writing(tmp), open(tmp, "x", encoding="utf-8") as f:   # "x": created by this call (mode as umask says)
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise


@contextmanager
def writing(path: str | Path):
    """Whatever fails while the body writes path (safetensors and tokenizers raise plain Exceptions) is re-raised
    as an OSError naming the path: "cannot write PATH: No space left on device"."""
    try:
        yield
    except Exception as e:   # noqa: BLE001 - the writers' own types vary; the cause is chained
        raise OSError(f"cannot write {path}: {getattr(e, 'strerror', None) or e}") from e
