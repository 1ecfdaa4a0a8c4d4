"""The one reader of the JSON files seq2seq_kit opens (config.json, generation_config.json, tokenizer files, shard
indexes, a corpus job's meta file): a malformed file is a ValueError that names it."""

from __future__ import annotations

import json
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
