"""Turn a Hub id or a local path into a local checkpoint directory. Knows nothing of models.

STUB (issue 6 fills in the Hub side): today only local directories resolve.
"""

from __future__ import annotations

from pathlib import Path


def resolve(name_or_path: str | Path, *, purpose: str = "all", revision: str | None = None,
            cache_dir: str | Path | None = None, token: str | bool | None = None,
            local_files_only: bool = False) -> Path:
    """Local directory holding the files `purpose` ("tokenizer", "model" or "all") needs."""
    path = Path(name_or_path).expanduser()
    if path.is_dir():
        return path
    raise FileNotFoundError(
        f"{str(name_or_path)!r} is not a local directory (Hub ids are not supported yet); "
        "pass the path of a checkpoint directory")
