"""Turn a Hub id or a local path into a local checkpoint directory. Knows nothing of models.

A local directory is returned as is. A Hub id ("org/name") is resolved in the standard Hugging Face
cache (HF_HOME / HF_HUB_CACHE, or `cache_dir`), so a checkpoint that `transformers` already downloaded
is reused. Online, the repo's file list is read first and only what `purpose` needs is downloaded
(config, generation config, tokenizer files, the weights in one format: safetensors when the repo has
them, else .bin, shards by their index) with huggingface_hub's own progress bars. Offline
(HF_HUB_OFFLINE=1 or local_files_only=True) the cached snapshot for the revision is used.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import re
from pathlib import Path

from .families import FAMILIES, MODEL_TYPES
from .jsonfile import read_json

# huggingface_hub (and the HTTP client under it) is imported by the functions that talk to the Hub or its cache, on
# the first Hub id: a local directory never pays for it (measured: 8.7 MB of resident memory, 0.2 s).

PURPOSES = ("config", "tokenizer", "model", "all")
# Every tokenizer file a supported checkpoint may ship (seq2seq_kit.tokenizer, family_tokenizers) -> what it is.
TOKENIZER_FILES = {"tokenizer.json": "tokenizer (tokenizers)", "tokenizer_config.json": "tokenizer config",
                   "special_tokens_map.json": "tokenizer special tokens", "added_tokens.json": "tokenizer added tokens",
                   "vocab.json": "tokenizer vocabulary (BPE)", "merges.txt": "tokenizer merges (BPE)",
                   "source.spm": "tokenizer (sentencepiece, Marian source)",
                   "target.spm": "tokenizer (sentencepiece, Marian target)",
                   "target_vocab.json": "tokenizer target vocabulary (Marian)",
                   "sentencepiece.bpe.model": "tokenizer (sentencepiece)"}
# Weight formats by preference: safetensors first, a single file before a sharded index (as transformers).
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json",
                "pytorch_model.bin", "pytorch_model.bin.index.json")
COMMIT_HASH = re.compile(r"^[0-9a-f]{40}$")


HUB_KWARGS = ("revision", "cache_dir", "token", "local_files_only")   # what resolve takes besides the name
# what transformers users pass to from_pretrained that seq2seq_kit takes otherwise or not at all
INSTEAD = {"torch_dtype": "a tokenizer has no dtype (a model's from_pretrained takes dtype=, and torch_dtype= as "
                          "transformers 5 does)",
           "use_fast": "seq2seq_kit's tokenizers are all the `tokenizers` kind: leave it out",
           "trust_remote_code": "seq2seq_kit runs no code from a checkpoint: leave it out",
           "subfolder": "pass the subfolder's own path (a Hub checkpoint: snapshot_download it, then that path)"}


class HubError(OSError):
    """A Hub checkpoint could not be resolved; the message says why and what to do."""


def resolve(name_or_path: str | Path, *, purpose: str = "all", revision: str | None = None,
            cache_dir: str | Path | None = None, token: str | bool | None = None,
            local_files_only: bool = False, **unknown) -> Path:
    """Local directory holding the files `purpose` ("config": config.json alone; "tokenizer", "model" or "all")
    needs. Every from_pretrained hands its other keyword arguments here: an unknown one is a TypeError that names
    the ones taken."""
    check_kwargs(unknown)
    if purpose not in PURPOSES:
        raise ValueError(f"purpose must be one of {PURPOSES}, got {purpose!r}")
    check_name(name_or_path, purpose)
    if not str(name_or_path).strip():          # Path("") is ".", the current folder: never a silent choice
        raise FileNotFoundError("the model id or path is empty; pass a Hub id ('org/name') or a checkpoint "
                                "directory")
    path = _expanded(name_or_path, "the full path of a checkpoint directory")
    if os.path.isdir(path):                 # os.path: an unusable name (too long, ...) is no directory, not an OSError
        return path
    if os.path.exists(path):
        raise FileNotFoundError(f"{str(name_or_path)!r} is a file; pass the checkpoint directory that holds it")
    if isinstance(name_or_path, Path) or not _is_repo_id(name_or_path):
        raise FileNotFoundError(
            f"{str(name_or_path)!r} is neither a local directory nor a Hugging Face Hub id ('org/name'); "
            "pass the path of a checkpoint directory or a Hub model id")
    repo_id, revision = str(name_or_path), revision or "main"
    check_revision(revision)
    from huggingface_hub import constants
    from huggingface_hub.errors import (
        GatedRepoError, LocalEntryNotFoundError, RemoteEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError)
    cache = _expanded(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE,
                      "the cache folder's full path (cache_dir)")
    where = f"{repo_id!r} (revision {revision!r})"
    try:
        if local_files_only or _offline():
            return _from_cache(repo_id, revision, cache, purpose, reason=_offline_reason(local_files_only),
                               offline=True)
        return _download(repo_id, revision, cache, purpose, token)
    except GatedRepoError as e:
        raise HubError(
            f"{where} is a gated repo: accept its terms at https://huggingface.co/{repo_id}, then pass "
            "token=... (--token) or log in with `hf auth login`") from e
    except RepositoryNotFoundError as e:
        local = f"; there is no local directory {str(path)!r} either" if "/" in repo_id else ""
        raise HubError(
            f"{repo_id!r} was not found on the Hugging Face Hub{local}. Check the id; if the repo is private, "
            "pass token=... (--token) or log in with `hf auth login`") from e
    except RevisionNotFoundError as e:
        raise HubError(
            f"revision {revision!r} not found in {repo_id!r}; pass a branch, tag, commit hash or 'refs/pr/N'") from e
    except RemoteEntryNotFoundError as e:     # listed by the Hub, then not found: the repo changed meanwhile
        raise HubError(f"downloading {where} failed: a file the Hub lists was not found ({_first_line(e)}); the "
                       "repo may have changed meanwhile: run again") from e
    except (LocalEntryNotFoundError, *network_errors()) as e:  # the connection failed during the download
        raise HubError(
            f"downloading {where} failed ({type(e).__name__}: {_first_line(e)}); check the network and run again "
            "(files already downloaded are kept in the cache)") from e
    except (PermissionError, NotADirectoryError, FileExistsError, IsADirectoryError) as e:  # the cache, not the Hub
        raise HubError(
            f"downloading {where} into the Hub cache {cache} failed ({type(e).__name__}: {_first_line(e)}); make "
            "that folder writable, pass another cache_dir (--cache-dir), or use a cached copy with HF_HUB_OFFLINE=1"
        ) from e


def check_kwargs(kwargs: dict) -> None:
    """A TypeError naming the first of kwargs that is not one of the Hub's (HUB_KWARGS): what a from_pretrained (or
    pipeline()) does not take."""
    unknown = [name for name in kwargs if name not in HUB_KWARGS]
    if unknown:
        name = unknown[0]
        raise TypeError(f"unexpected keyword argument {name!r}: "
                        + INSTEAD.get(name, "besides its own arguments it takes the Hub's revision, cache_dir, token "
                                            "and local_files_only"))


def check_name(name_or_path, purpose: str) -> None:
    """A TypeError naming the fix unless name_or_path is a str or a path (what every from_pretrained takes)."""
    if not isinstance(name_or_path, (str, os.PathLike)):
        what = "a checkpoint" if purpose == "all" else f"a {purpose}"
        raise TypeError(f"{what} is loaded from a directory or Hub id (str or path), got a "
                        f"{type(name_or_path).__name__}; pass its path or Hub id ('org/name')")


def _expanded(path: str | Path, instead: str) -> Path:
    """Path(path) with a leading ~ or ~user expanded; FileNotFoundError naming it for a user with no known home."""
    try:
        return Path(path).expanduser()
    except RuntimeError:
        raise FileNotFoundError(f"{str(path)!r}: cannot expand '~' (no such user's home directory); pass "
                                f"{instead}") from None


def check_revision(revision) -> None:
    """A branch, tag, commit hash or 'refs/pr/N': a git ref name, so never a path out of the cache's refs/ and
    snapshots/ folders (no '..', no absolute path, no backslash, whitespace or control character)."""
    if not isinstance(revision, str):
        raise TypeError(f"revision must be a str (branch, tag or commit hash), got {type(revision).__name__}")
    parts = revision.split("/")
    if (not revision or revision.startswith("/") or "\\" in revision or any(p in ("", ".", "..") for p in parts)
            or any(c.isspace() or ord(c) < 32 or c in "~^:?*[" for c in revision)):
        raise ValueError(f"revision {revision!r} is not a branch, tag, commit hash or 'refs/pr/N' (a git ref "
                         "name: no '..', no leading '/', no spaces or special characters)")


def network_errors() -> tuple[type[BaseException], ...]:
    """Failures of the connection itself (no network, DNS, timeout, offline mode): the cache may still serve."""
    errors = [ConnectionError, TimeoutError]
    # the HTTP client huggingface_hub is built on: httpx2 (2.x) or httpx (1.x); both where both are installed (a
    # hub 1.x with httpx2 left behind by a downgrade raises httpx's)
    for client in ("httpx2", "httpx"):
        with contextlib.suppress(ImportError):
            errors.append(importlib.import_module(client).TransportError)
    return tuple(errors)


def _is_repo_id(name: str) -> bool:
    from huggingface_hub.utils import HFValidationError, validate_repo_id
    try:
        validate_repo_id(name)
    except HFValidationError:
        return False
    return True


def _offline() -> bool:
    """huggingface_hub's offline mode (HF_HUB_OFFLINE read when it was imported: its constants, which every 1.x and
    2.x has; is_offline_mode() came in 1.2.1), or HF_HUB_OFFLINE set since."""
    from huggingface_hub import constants
    env = os.environ.get("HF_HUB_OFFLINE", "").upper()
    return constants.HF_HUB_OFFLINE or env in ("1", "ON", "YES", "TRUE")


def _offline_reason(local_files_only: bool) -> str:
    return "local_files_only=True" if local_files_only else "offline mode is on (HF_HUB_OFFLINE=1)"


def _download(repo_id: str, revision: str, cache: Path, purpose: str, token) -> Path:
    """List the repo's files at `revision`, then fetch the small files, check the config, fetch the weights."""
    from huggingface_hub import HfApi, snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError)
    try:
        info = HfApi(token=token).model_info(repo_id, revision=revision)
    except (GatedRepoError, RepositoryNotFoundError, RevisionNotFoundError):
        raise  # not found / gated / bad revision: the cache cannot help
    except (*network_errors(), HfHubHTTPError) as e:   # rate limit (429), 403, 5xx, ...: the cache may serve (as
        # transformers does)
        reason = f"the Hub could not be reached ({type(e).__name__}: {_first_line(e)})"
        return _from_cache(repo_id, revision, cache, purpose, reason=reason)
    files = [s.rfilename for s in info.siblings or []]
    where = f"{repo_id!r} (revision {revision!r}, commit {info.sha})"
    _check_files(files, purpose, where)
    kwargs = dict(cache_dir=cache, token=token)
    folder = Path(snapshot_download(repo_id, revision=revision, allow_patterns=_small_files(files, purpose), **kwargs))
    _check_snapshot(folder, files, where, purpose=purpose)
    weights = _weight_files(files, folder) if purpose in ("model", "all") else []
    if weights:  # by commit: the same snapshot, whatever the branch did meanwhile
        folder = Path(snapshot_download(repo_id, revision=folder.name, allow_patterns=weights, **kwargs))
    return folder


def _from_cache(repo_id: str, revision: str, cache: Path, purpose: str, *, reason: str, offline: bool = False) -> Path:
    """The cached snapshot of `repo_id` at `revision` (a commit hash, or a ref the cache recorded). offline: no
    download was tried (HF_HUB_OFFLINE, local_files_only), else the Hub failed (`reason`)."""
    from huggingface_hub.file_download import repo_folder_name
    storage = cache / repo_folder_name(repo_id=repo_id, repo_type="model")
    ref = storage / "refs" / revision
    commit = revision if COMMIT_HASH.match(revision) else (ref.read_text().strip() if ref.is_file() else None)
    if commit is not None and not COMMIT_HASH.match(commit):
        raise HubError(f"{ref} should hold a commit hash (40 hex digits), not {commit[:60]!r}: the Hub cache is "
                       "damaged; remove that file, or the repo's folder in the cache, and download again")
    folder = storage / "snapshots" / commit if commit else None
    where = f"{repo_id!r} (revision {revision!r})"
    if folder is None or not folder.is_dir():
        download = ("run once with the network, without HF_HUB_OFFLINE=1 / local_files_only, to download it" if offline
                    else "connect to the network and run again to download it once")
        raise HubError(
            f"{where} is not in the local Hub cache ({cache}) and {reason}. {download[0].upper()}{download[1:]}, "
            "point HF_HOME or --cache-dir at a cache that holds it (with HF_HUB_OFFLINE=1 no network is tried), "
            "or pass a local checkpoint directory")
    files = sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file())
    where, hint = f"the cached copy of {where} in {folder}", f"; {reason}"
    _check_files(files, purpose, where, hint)
    _check_snapshot(folder, files, where, hint, purpose=purpose)
    return folder


def _small_files(files: list[str], purpose: str) -> list[str]:
    """Config files, tokenizer files and the weight index that `purpose` needs, among the repo's `files`."""
    wanted = ["config.json"]
    if purpose in ("model", "all"):
        wanted += ["generation_config.json"]
        weights = _weight_format(files)
        wanted += [weights] if weights and weights.endswith(".index.json") else []
    if purpose in ("tokenizer", "all"):
        wanted += [f for f in files if f in TOKENIZER_FILES or ("/" not in f and f.endswith((".model", ".spm")))]
    return [f for f in dict.fromkeys(wanted) if f in files]


def _weight_format(files: list[str]) -> str | None:
    return next((w for w in WEIGHT_FILES if w in files), None)


def _weight_files(files: list[str], folder: Path) -> list[str]:
    """The weight file, or the shards a (downloaded) index names."""
    weights = _weight_format(files)
    if weights is None or not weights.endswith(".index.json"):
        return [weights] if weights else []
    index = read_json(folder / weights)
    weight_map = index.get("weight_map") if isinstance(index, dict) else None
    if not isinstance(weight_map, dict) or not all(isinstance(v, str) and v for v in weight_map.values()):
        raise ValueError(f"{folder / weights} is not a valid shard index: it needs a 'weight_map' object of file "
                         "names")
    return sorted(set(weight_map.values()))


def _check_files(files: list[str], purpose: str, where: str, hint: str = "") -> None:
    """Raise unless `files` (of a repo or a cached snapshot) hold what `purpose` needs."""
    if purpose in ("config", "model", "all"):
        if "config.json" not in files:
            raise HubError(f"{where} has no config.json, so it is not a model checkpoint{hint}")
    if purpose in ("model", "all"):
        if _weight_format(files) is None:
            raise HubError(f"{where} has no PyTorch weights ({' or '.join(WEIGHT_FILES[::2])}){hint}; "
                           f"its files: {', '.join(files)}")
    if purpose in ("tokenizer", "all") and not _has_tokenizer(files):
        raise HubError(f"{where} has no tokenizer files (tokenizer.json, vocab.json + merges.txt, or a "
                       f"sentencepiece .model){hint}; load the tokenizer from another repo or directory")


def _check_snapshot(folder: Path, files: list[str], where: str, hint: str = "", *, purpose: str = "all") -> None:
    """Raise if config.json is not BART-family (a model load: a tokenizer is checked by its own files, as from a
    local directory), or if the weight index names shards missing from `files`."""
    if purpose != "tokenizer" and (folder / "config.json").is_file():
        _check_bart(read_json(folder / "config.json"), where)
    weights = _weight_format(files)
    if weights and weights.endswith(".index.json") and (folder / weights).is_file():
        missing = [f for f in _weight_files(files, folder) if f not in files]
        if missing:
            raise HubError(f"{where} lacks the weight shards {', '.join(missing)}{hint}")


def _has_tokenizer(files: list[str]) -> bool:
    return ("tokenizer.json" in files or {"vocab.json", "merges.txt"} <= set(files)
            or any("/" not in f and f.endswith((".model", ".spm")) for f in files))


def _check_bart(config, where: str) -> None:
    model_type = config.get("model_type") if isinstance(config, dict) else None
    if model_type not in MODEL_TYPES:
        raise ValueError(
            f"{where} is not a BART-family checkpoint: config.json has model_type {model_type!r}; "
            f"seq2seq_kit runs model_type {', '.join(map(repr, MODEL_TYPES))} "
            f"({', '.join(f.name for f in FAMILIES.values())})")


def _first_line(e: Exception) -> str:
    return (str(e).strip().splitlines() or [""])[0]
