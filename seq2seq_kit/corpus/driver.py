"""The corpus job's driver: summarize_corpus checks the arguments, plans the chunks, fixes the job's identity
(model, commit, dtype, resolved generation settings), runs an engine (a local Worker, or Ray) and writes every
result through the one Output, with a progress bar."""

from __future__ import annotations

import hashlib
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import hub
from ..config import BartConfig
from ..generation import GenerationConfig
from ..generation import config as generation_config
from ..loading import Checkpoint, resolve_dtype, weight_files
from ..long_documents import check_strategy
from ..pipeline import DEFAULT_MODEL, task_defaults
from . import ray_engine
from .output import Output, errors_path
from .reading import check_text_field, input_files, parquet_module, plan_chunks, refuse_repeats
from .worker import Worker

BATCHES_PER_CHUNK = 4     # JSONL chunk = this many batches of lines: the Ray work unit and the sorting window
                          # (bigger: less padding; smaller: finer load balance and retries on Ray)
DEFAULT_BATCH_SIZE = 8
ENGINES = ("local", "ray")

logger = logging.getLogger(__name__)


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
        return errors_path(self.output)

    def summary(self) -> str:
        """The job's one-line report, logged at the end of summarize_corpus."""
        return (f"done {self.written}, skipped {self.skipped} (already in {self.output.name}), failed {self.failed}"
                + (f" (see {self.errors_path})" if self.failed else "")
                + (f"; {self.truncated} truncated to the model's input length" if self.truncated else "")
                + f"; {self.docs_per_s:.2f} docs/s")


def summarize_corpus(input: str | Path, output: str | Path, model: str | Path | None = None, *,
                     engine: str = "local", ray_address: str | None = None, actors: int | None = None,
                     batch_size: int = DEFAULT_BATCH_SIZE, text_field: str = "text", id_field: str = "id",
                     overwrite: bool = False, device=None, dtype=None, revision: str | None = None,
                     cache_dir: str | Path | None = None, token: str | bool | None = None,
                     local_files_only: bool = False, sort_by_length: bool = True, progress: bool = True,
                     strategy: str = "truncate", **generate_kwargs) -> CorpusResult:
    """Summarize every document of `input` (a .jsonl or .parquet file, or a folder of them) into `output`
    (JSONL, or Parquet when it ends in .parquet); a re-run finishes a job that stopped. See the package doc.

    model: Hub id or local checkpoint directory (None: the pipeline's default, distilbart-cnn-12-6).
    engine: "local" (this process) or "ray" (Ray Data actors; `pip install "seq2seq-kit[ray]"`).
    ray_address: None starts a local Ray (or uses the one already initialized), "auto" or "ray://host:port"
        joins a cluster. actors: size of the actor pool (default: one per GPU, else one per node).
    text_field / id_field: the fields holding the text and the id; a record without an id gets its 1-based
        line (row) number, prefixed by the file name when the input is a folder.
    overwrite: replace an existing output (needed when it was written with another model or settings).
    device / dtype / revision / cache_dir / token / local_files_only: as for `pipeline`. With engine="ray",
        device None uses the cluster's GPUs when it has some, "cpu" forces CPU actors, and a CUDA device asks
        for GPU actors (it is resolved on the driver too, so leave it None from a driver without CUDA).
    sort_by_length: submit a chunk's documents longest first (False: input order; for measuring).
    strategy: "truncate" (a document longer than the model's window is summarized from its start, and reported),
        or "map_reduce" (summarized from its chunks: seq2seq_kit.long_documents; records gain "chunks": N).
    generate_kwargs: num_beams, max_length, min_length, ... over the checkpoint's summarization settings.
    Returns the counts; shows a progress bar on stderr (progress=True). Messages go to the "seq2seq_kit.corpus"
    loggers: the result's summary() line (INFO), an output repaired after a crash (WARNING).
    """
    _check_engine(engine, ray_address, actors, batch_size)
    check_strategy(strategy)
    input, output = Path(input).expanduser(), Path(output).expanduser()
    if output.suffix == ".parquet":
        parquet_module()                                           # before any work: is pyarrow there?
    files = input_files(input, output)
    chunks, total = plan_chunks(files, batch_size * BATCHES_PER_CHUNK, folder=input.is_dir())
    check_text_field(chunks[0] if chunks else None, text_field)        # a wrong --text-field fails here
    if not total:
        logger.warning("%s holds no records (no non-blank line or row): nothing to summarize", input)
    out = Output(output)
    out.check(overwrite)                                           # a file no job of ours wrote is refused here

    hub_kwargs = {k: v for k, v in (("revision", revision), ("cache_dir", cache_dir), ("token", token),
                                    ("local_files_only", local_files_only)) if v}
    job, hub_kwargs = _job(DEFAULT_MODEL if model is None else model, hub_kwargs, dtype, generate_kwargs)
    job.update(input=str(input.resolve()), text_field=text_field, id_field=id_field,
               **({"strategy": strategy} if strategy != "truncate" else {}))
    refuse_repeats(chunks, text_field, id_field, one_id_type=out.parquet)
    try:
        out.open(job, revision=revision, overwrite=overwrite)
        worker_kwargs = dict(
            model=job["model"], hub_kwargs=hub_kwargs, device=device, dtype=dtype, generate_kwargs=generate_kwargs,
            eos_token_ids=job["generation"]["eos_token_id"], text_field=text_field, id_field=id_field,
            done=frozenset(out.done), batch_size=batch_size, sort_by_length=sort_by_length, strategy=strategy)
        start = time.perf_counter()
        if engine == "local":
            results = _local_results(chunks, worker_kwargs)
        else:
            results = ray_engine.results(chunks, worker_kwargs, address=ray_address, actors=actors, device=device)
        try:
            _write_results(results, out, total, progress)
        finally:
            results.close()   # Ray: shut down the instance the job started
        seconds = time.perf_counter() - start
        out.finish()
    finally:
        out.close()
    result = CorpusResult(output, out.written, total - out.written - len(out.failed_now), len(out.failed_now),
                          len(out.truncated_now), seconds)
    logger.info(result.summary())
    return result


def _check_engine(engine: str, ray_address, actors, batch_size) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "local" and (ray_address is not None or actors is not None):
        raise ValueError("ray_address and actors apply to engine='ray'")
    for name, value in (("batch_size", batch_size), ("actors", 1 if actors is None else actors)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if engine == "ray":
        ray_engine.require_ray()                                   # before any work: is Ray there?


def _job(model, hub_kwargs: dict, dtype, generate_kwargs: dict) -> tuple[dict, dict]:
    """What identifies the job's summaries (the meta file's "job": model, commit, dtype, resolved generation
    settings) and the hub kwargs that load that same model everywhere (a Hub id pinned to its commit)."""
    root = hub.resolve(model, purpose="all", **hub_kwargs)
    local = Path(model).expanduser().is_dir()
    commit = root.name if not local and root.parent.name == "snapshots" else None
    config = BartConfig.from_pretrained(root)
    job = {"model": str(Path(model).expanduser().resolve()) if local else str(model), "commit": commit,
           "dtype": _dtype_name(dtype, root, config), "generation": _settings(root, config, generate_kwargs)}
    if local:   # a Hub commit pins its files; a directory's files can change under the same name
        job["files"] = checkpoint_digests(root)
    return job, {**hub_kwargs, **({"revision": commit} if commit else {})}


DIGESTED = ("config.json", "tokenizer.json", "vocab.json", "merges.txt", "tokenizer_config.json",
            "special_tokens_map.json")


def checkpoint_digests(root: Path) -> dict[str, str]:
    """{file name: "<size>:<blake2b>"} of what decides a local checkpoint's summaries besides the generation
    settings: its weight files, config.json and tokenizer files. Each is read once, streamed (about 1 s a GB);
    a file replaced by another of the same size and time stamp is still told apart."""
    files = [root / n for n in DIGESTED if (root / n).is_file()] + weight_files(root)
    digests = {}
    for path in files:
        with open(path, "rb") as f:
            digests[path.name] = f"{path.stat().st_size}:{hashlib.file_digest(f, 'blake2b').hexdigest()[:32]}"
    return digests


def _local_results(chunks: list[dict], worker_kwargs: dict) -> Iterator[dict]:
    worker = Worker(**worker_kwargs)   # in this process: torch's intra-op threads use every core
    try:
        yield from worker.process_stream(chunks)
    finally:
        worker.engine.close(cancel_pending=True)


def _write_results(results: Iterator[dict], out: Output, total: int, progress: bool) -> None:
    """Every result into `out`, as it comes; the bar counts documents done (written, skipped or failed)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="doc", desc="summarizing", disable=not progress, file=sys.stderr) as bar:
        for result in results:
            out.write(result)
            bar.update(len(result["records"]) + result["skipped"]
                       + sum(e["reason"] != "truncated" for e in result["errors"]))


def _settings(root: Path, config, generate_kwargs: dict) -> dict:
    """The generation settings every batch uses, resolved as generate() resolves them (validates them too)."""
    _, defaults = task_defaults(config)
    resolved = generation_config.resolve(
        GenerationConfig.from_pretrained(root, config), {**defaults, **generate_kwargs},
        vocab_size=config.decoder_vocab_size, max_position_embeddings=config.max_position_embeddings)
    if resolved.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences={resolved.num_return_sequences}: a corpus job writes one summary "
                         "per document; use num_return_sequences=1")
    return resolved.to_dict()


def _dtype_name(dtype, root: Path, config) -> str:
    """The dtype the model loads with, by name: "auto" resolved from the checkpoint (so a job run with the
    dtype "auto" picks and one naming it are the same job)."""
    if isinstance(dtype, str) and dtype == "auto":
        dtype = resolve_dtype(dtype, config.dtype, Checkpoint(root))
    return "float32" if dtype is None else str(dtype).removeprefix("torch.")
