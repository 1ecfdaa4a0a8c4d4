"""The corpus job's driver: process_corpus (summarize_corpus, translate_corpus) checks the arguments, plans the
chunks, fixes the job's identity (task and languages, model, commit, dtype, resolved generation settings), runs an
engine (a local Worker, or Ray) and writes every result through the one Output, with a progress bar."""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from .. import hub
from ..config import BartConfig, dtype_name
from ..engine.scheduler import check_generate_only
from ..family_tokenizers import AutoTokenizer
from ..generation import GenerationConfig
from ..generation import config as generation_config
from ..loading import Checkpoint, is_int8, resolve_device, resolve_dtype, weight_files
from ..long_documents import check_cuts, check_strategy
from ..models.checks import check_positive_int
from ..summarization import DEFAULT_MODEL, task_defaults
from ..translation import check_languages, target_token, task_languages, task_named, translation_task
from . import ray_engine
from .output import RESULTS, Output, errors_path
from .reading import check_fields, input_files, parquet_module, plan_chunks, refuse_repeats
from .worker import Worker, unprocessed

BATCHES_PER_CHUNK = 4     # JSONL chunk = this many times batch_size lines: the Ray work unit and the window
                          # sorted longest first (bigger: rows of similar length finish together; smaller: finer
                          # load balance and retries on Ray)
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
        """The job's one-line report, logged at the end of process_corpus."""
        return (f"done {self.written}, skipped {self.skipped} (already in {self.output.name}), failed {self.failed}"
                + (f" (see {self.errors_path})" if self.failed else "")
                + (f"; {self.truncated} truncated to the model's input length" if self.truncated else "")
                + f"; {self.docs_per_s:.2f} docs/s")


def summarize_corpus(input: str | Path, output: str | Path, model: str | Path | None = None,
                     **kwargs) -> CorpusResult:
    """Summarize every document of `input` into `output`: process_corpus(task="summarization"), which see."""
    return process_corpus(input, output, model, task="summarization", **kwargs)


def translate_corpus(input: str | Path, output: str | Path, model: str | Path, *, src_lang: str | None = None,
                     tgt_lang: str | None = None, **kwargs) -> CorpusResult:
    """Translate every document of `input` into `output` (records {"id", "translation_text", "input_tokens",
    "output_tokens"}): process_corpus(task="translation"), which see. src_lang / tgt_lang as
    pipeline("translation") takes them ("en", "eng_Latn", "en_XX"; a multi-target Marian model's "fra")."""
    return process_corpus(input, output, model, task="translation", src_lang=src_lang, tgt_lang=tgt_lang, **kwargs)


def process_corpus(input: str | Path, output: str | Path, model: str | Path | None = None, *,
                   task: str = "summarization", src_lang: str | None = None, tgt_lang: str | None = None,
                   engine: str = "local", ray_address: str | None = None, actors: int | None = None,
                   batch_size: int = DEFAULT_BATCH_SIZE, text_field: str = "text", id_field: str = "id",
                   overwrite: bool = False, device=None, dtype=None, revision: str | None = None,
                   cache_dir: str | Path | None = None, token: str | bool | None = None,
                   local_files_only: bool = False, sort_by_length: bool = True, progress: bool = True,
                   strategy: str = "truncate", seed: int | None = None, **generate_kwargs) -> CorpusResult:
    """Summarize (task "summarization") or translate (task "translation", with src_lang / tgt_lang) every
    document of `input` (a .jsonl or .parquet file, or a folder of them) into `output` (JSONL, or Parquet when it
    ends in .parquet); a re-run finishes a job that stopped. See the package doc.

    model: Hub id or local checkpoint directory (None: the summarization pipeline's default, distilbart-cnn-12-6).
    engine: "local" (this process) or "ray" (Ray Data actors; `pip install "seq2seq-kit[ray]"`).
    ray_address: None starts a local Ray (or uses the one this process already initialized), "auto" or the head's
        GCS address "host:6379" joins a cluster (not a Ray Client "ray://" address: Ray Data does not run over Ray
        Client; with Ray already initialized, only that Ray's address). actors: size of the actor pool (default: one
        per GPU, else one per node). Ray is joined and the pool checked before overwrite=True empties the output.
    text_field / id_field: the fields holding the text and the id; a record without an id gets its 1-based
        line (row) number, prefixed by the file name when the input is a folder.
    overwrite: replace an existing output (needed when it was written with another model or settings).
    device / dtype / revision / cache_dir / token / local_files_only: as for `pipeline`. With engine="ray",
        device None uses the cluster's GPUs when it has some, "cpu" forces CPU actors, and a CUDA device asks
        for GPU actors (it is resolved on the driver too, so leave it None from a driver without CUDA).
    sort_by_length: submit a chunk's documents longest first (False: input order; for measuring).
    strategy: "truncate" (a document longer than the model's window is summarized from its start, and reported),
        or "map_reduce" (summarization: summarized from its chunks, seq2seq_kit.long_documents; records gain
        "chunks": N).
    generate_kwargs: num_beams, max_length, min_length, ... over the checkpoint's settings for the task (and a
        translation's forced target language).
    seed: with sampling (do_sample, here or the checkpoint's), every document draws from
        torch.Generator(device).manual_seed(seed) anew, as pipe(text, generator=...) would alone: its text depends
        on none of the others, their order, the engine or a resumed run (recorded in the meta file's job).
        None: draws seeded from torch's global RNG.
    Returns the counts; shows a progress bar on stderr (progress=True). Messages go to the "seq2seq_kit.corpus"
    loggers: the result's summary() line (INFO), an output repaired after a crash (WARNING).
    """
    _check_engine(engine, ray_address, actors, batch_size)
    _check_seed(seed)
    _check_no_call_options(generate_kwargs)
    check_strategy(strategy)
    _check_task(task, model, strategy, src_lang, tgt_lang)
    for name, path in (("input", input), ("output", output)):
        if not str(path).strip():                   # Path("") is ".", the current folder
            raise ValueError(f"the {name} path is empty; pass a file or folder path")
    input, output = Path(input).expanduser(), Path(output).expanduser()
    out = Output(output, task)
    if out.parquet:
        parquet_module()                                           # before any work: is pyarrow there?
    files = input_files(input, out.files)
    chunks, total = plan_chunks(files, batch_size * BATCHES_PER_CHUNK, folder=input.is_dir())
    check_fields(chunks, text_field, id_field)                     # a wrong --text-field / --id-field fails here
    if not total:
        logger.warning("%s holds no records (no non-blank line or row): nothing to %s", input,
                       "translate" if task == "translation" else "summarize")
    out.check(overwrite)                                           # a file no job of ours wrote is refused here

    hub_kwargs = {k: v for k, v in (("revision", revision), ("cache_dir", cache_dir), ("token", token))
                  if v is not None}                          # token=False (use no token) is kept, as the Hub reads it
    if local_files_only:
        hub_kwargs["local_files_only"] = True
    job, hub_kwargs, pipeline_task = _job(DEFAULT_MODEL if model is None else model, hub_kwargs, dtype,
                                          generate_kwargs, task, src_lang, tgt_lang, strategy)
    resolve_device(device)          # a device this machine lacks fails here, before --overwrite empties OUTPUT
    job.update(input=str(input.resolve()), text_field=text_field, id_field=id_field,
               **({"strategy": strategy} if strategy != "truncate" else {}),
               **({"seed": seed} if seed is not None else {}))
    cluster = ray_engine.Cluster(ray_address, actors, device) if engine == "ray" else None
    try:
        if cluster is not None and overwrite and total:
            cluster.start(len(chunks))  # Ray joined, its pool checked, before --overwrite empties OUTPUT: a job
        out.open(job, revision=revision, overwrite=overwrite)   # that cannot start leaves the old output whole
        done = frozenset(out.done)                                 # the ids written before this run
        todo, good = refuse_repeats(chunks, text_field, id_field, one_id_type=out.parquet, done=done,
                                    watch=frozenset(where for where, _ in out.error_keys))
        worker_kwargs = dict(
            model=job["model"], hub_kwargs=hub_kwargs, device=device, dtype=dtype, generate_kwargs=generate_kwargs,
            eos_token_ids=job["generation"]["eos_token_id"], text_field=text_field, id_field=id_field,
            done=done, batch_size=batch_size, sort_by_length=sort_by_length, strategy=strategy, seed=seed,
            task=task, pipeline_task=pipeline_task, languages=job.get("languages"))
        start = time.perf_counter()
        if not todo:            # every record bad, refused or written before: no model loaded, no Ray joined
            results = unprocessed(chunks, text_field, id_field, done)
        elif engine == "local":
            results = _local_results(chunks, worker_kwargs)
        else:
            results = ray_engine.results(cluster, chunks, worker_kwargs)
        try:
            _write_results(results, out, total, progress, "translating" if task == "translation" else "summarizing")
        finally:
            results.close()   # Ray: shut down the instance the job started
        seconds = time.perf_counter() - start
        out.finish(good)
    finally:
        try:
            out.close()
        finally:
            if cluster is not None:
                cluster.close()         # a Ray started here that no results generator ran to close
    result = CorpusResult(output, out.written, total - out.written - len(out.failed_now), len(out.failed_now),
                          len(out.truncated_now), seconds)
    logger.info(result.summary())
    return result


def _check_engine(engine: str, ray_address, actors, batch_size) -> None:
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    if engine == "local" and (ray_address is not None or actors is not None):
        raise ValueError("ray_address and actors apply to engine='ray'")
    if isinstance(ray_address, str) and not ray_address.strip():
        raise ValueError("ray_address is empty: pass 'auto' or a head's HOST:PORT, or leave it out for a local Ray")
    for name, value in (("batch_size", batch_size), ("actors", 1 if actors is None else actors)):
        check_positive_int(value, name)
    if engine == "ray":
        ray_engine.require_ray()                                   # before any work: is Ray there?
        ray_engine.check_address(ray_address)       # not a Ray Client address; Ray's own, if already initialized


def _check_no_call_options(generate_kwargs: dict) -> None:
    """TypeError naming the pipeline call's map-reduce options, which a job does not take (they were "unknown
    generate arguments"): its chunks are summarized with the job's own settings."""
    given = [name for name in ("map_kwargs", "chunk_overlap", "return_chunks") if name in generate_kwargs]
    if given:
        raise TypeError(f"{', '.join(given)}: options of a pipeline call, not of a corpus job; with "
                        "strategy='map_reduce' a job summarizes each document's chunks (no overlap) and their "
                        "summaries with the job's own settings, and its records count the chunks ('chunks')")


def _check_seed(seed) -> None:
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**64):
        raise ValueError(f"seed must be an integer in [0, 2**64) (torch.Generator's), or None, got {seed!r}")


def _check_task(task: str, model, strategy: str, src_lang, tgt_lang) -> None:
    if task not in RESULTS:
        raise ValueError(f"task must be one of {', '.join(map(repr, RESULTS))}, got {task!r}")
    if task == "translation" and model is None:
        raise ValueError("a translation job needs model= (a Hub id or path); there is no default translation model")
    if task == "translation" and strategy != "truncate":
        raise ValueError(f"strategy={strategy!r} applies to summarization; a translation job truncates")
    if task != "translation" and (src_lang is not None or tgt_lang is not None):
        raise ValueError("src_lang / tgt_lang apply to translation jobs")


def _job(model, hub_kwargs: dict, dtype, generate_kwargs: dict, task: str, src_lang: str | None,
         tgt_lang: str | None, strategy: str) -> tuple[dict, dict, str]:
    """What identifies the job's results (the meta file's "job": model, commit, dtype, resolved generation
    settings; a translation job's task and languages too), the hub kwargs that load that same model everywhere
    (a Hub id pinned to its commit), and the task its pipeline runs (a translation checkpoint's
    "translation_XX_to_YY", as pipeline("translation") picks it, whose languages apply where none are given).
    What the checkpoint cannot do (a strategy, languages) is refused here, before the output is opened."""
    root = hub.resolve(model, purpose="all", **hub_kwargs)
    local = Path(model).expanduser().is_dir()
    commit = root.name if not local and root.parent.name == "snapshots" else None
    config = BartConfig.from_pretrained(root)
    pipeline_task = translation_task(task, config)
    defaults = task_defaults(config, pipeline_task)[1]                        # the settings its pipeline takes
    job = {"model": str(Path(model).expanduser().resolve()) if local else str(model), "commit": commit,
           "dtype": _dtype_name(dtype, root, config)}
    if task == "translation":   # the languages as the pipeline resolves them (unknown ones refused here)
        src, tgt = task_languages(pipeline_task, src_lang, tgt_lang)
        src, tgt, forced_bos = check_languages(AutoTokenizer.from_pretrained(root), src, tgt,
                                               single_pair_ok=task_named(pipeline_task, src, tgt))
        job.update(task=task, languages={k: v for k, v in (("src_lang", src), ("tgt_lang", tgt)) if v})
        defaults = {**defaults, **target_token(forced_bos)}
    if strategy == "map_reduce":
        check_cuts(AutoTokenizer.from_pretrained(root))
    job["generation"] = _settings(root, config, defaults, generate_kwargs)
    if local:   # a Hub commit pins its files; a directory's files can change under the same name
        job["files"] = checkpoint_digests(root)
    return job, {**hub_kwargs, **({"revision": commit} if commit else {})}, pipeline_task


DIGESTED = ("config.json", *hub.TOKENIZER_FILES)


def checkpoint_digests(root: Path) -> dict[str, str]:
    """{file name: "<size>:<blake2b>"} of what decides a local checkpoint's summaries besides the generation
    settings: its weight files, config.json and tokenizer files. Each is read once, streamed (about 1 s a GB);
    a file replaced by another of the same size and time stamp is still told apart."""
    files = [root / n for n in DIGESTED if (root / n).is_file()] + weight_files(root)
    digests = {}
    for path in files:
        digest = hashlib.blake2b()               # (hashlib.file_digest is Python 3.11's; the package takes 3.10)
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
        digests[path.name] = f"{path.stat().st_size}:{digest.hexdigest()[:32]}"
    return digests


def _local_results(chunks: list[dict], worker_kwargs: dict) -> Iterator[dict]:
    worker = Worker(**worker_kwargs)   # in this process: torch's intra-op threads use every core
    try:
        yield from worker.process_stream(chunks)
    finally:
        worker.engine.close(cancel_pending=True)


def _write_results(results: Iterator[dict], out: Output, total: int, progress: bool, desc: str) -> None:
    """Every result into `out`, as it comes; the bar counts documents done (written, skipped or failed)."""
    from tqdm.auto import tqdm

    with tqdm(total=total, unit="doc", desc=desc, disable=not progress, file=sys.stderr) as bar:
        for result in results:
            out.write(result)
            bar.update(len(result["records"]) + result["skipped"]
                       + sum(e["reason"] != "truncated" for e in result["errors"]))


def _settings(root: Path, config, defaults: dict, generate_kwargs: dict) -> dict:
    """The generation settings every document uses, resolved as generate() resolves them over the pipeline's
    defaults (validates them too)."""
    resolved = generation_config.resolve(
        GenerationConfig.from_pretrained(root, model_config=config), {**defaults, **generate_kwargs},
        vocab_size=config.decoder_vocab_size, max_position_embeddings=config.max_position_embeddings)
    if resolved.num_return_sequences != 1:
        raise ValueError(f"num_return_sequences={resolved.num_return_sequences}: a corpus job writes one summary "
                         "per document; use num_return_sequences=1")
    check_generate_only(resolved)             # its documents run on the engine
    if resolved.watermarking_config is not None:
        raise ValueError("watermarking_config: a corpus job records its settings in OUTPUT's meta file, which would "
                         "hold the watermark's key; watermark with generate, the pipeline or the server, or leave it "
                         "out (the model's generation_config may set it: pass watermarking_config=None)")
    settings = resolved.to_dict()
    if isinstance(settings.get("sequence_bias"), dict):     # JSON keys are strings: the [[token ids], bias] pairs form
        settings["sequence_bias"] = [[list(tokens), bias] for tokens, bias in settings["sequence_bias"].items()]
    return json.loads(json.dumps(settings))   # as the meta file holds them (a tuple as a list): a re-run compares equal


def _dtype_name(dtype, root: Path, config) -> str:
    """The dtype the model loads with, by name: "auto" resolved from the checkpoint (so a job run with the
    dtype "auto" picks and one naming it are the same job). A dtype from_pretrained refuses is refused here,
    before the meta file records it (a re-run with the dtype meant would be refused as another job)."""
    if is_int8(dtype):
        return "int8"
    ckpt = Checkpoint(root) if isinstance(dtype, str) and dtype == "auto" else None
    return dtype_name(resolve_dtype(dtype, config.dtype, ckpt))
