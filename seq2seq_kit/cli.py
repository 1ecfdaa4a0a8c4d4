"""The `seq2seq-kit` command line: summarize, translate, tokenize, inspect, demo, parity, serve. It parses the
arguments, calls the library (pipeline, corpus, tokenizer, hub, parity, server) and prints what it returns; the
library's log records are shown as "seq2seq-kit: ..." lines on stderr. (The benchmark is
`python benchmarks/bench.py` in a source checkout.)

Exit codes: 0 success, 2 usage error, 1 runtime error (a one-line message; --debug shows the traceback),
3 a `summarize --input` or `translate --input` job that finished with failed records (see its
OUTPUT.errors.jsonl).
An empty TEXT, --file or stdin is a runtime error (1: nothing to summarize or translate); a TEXT that reads as a
path (one word ending as a document's file name does, notes.txt, or holding a "/" and naming a file or folder) is a
usage error (2: --file reads a file); an --input corpus without records finishes with a warning line (0: there was
nothing to do). Warnings are one "seq2seq-kit: warning: ..." line.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import sys
import threading
import warnings
from contextlib import contextmanager
from pathlib import Path

DEFAULT_TEXT = (
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the "
    "tallest structure in Paris. Its base is square, measuring 125 metres (410 ft) on each side. During its "
    "construction, the Eiffel Tower surpassed the Washington Monument to become the tallest man-made structure "
    "in the world, a title it held for 41 years until the Chrysler Building in New York City was finished in 1930.")


def main(argv: list[str] | None = None) -> int:
    args = None
    try:
        parser = _parser()          # imports torch (the options' choices): a Ctrl-C here is "interrupted" too
        args = parser.parse_args(_ray_address_form(sys.argv[1:] if argv is None else argv))
        with _library_messages():
            _check_stdout(args)
            return args.run(args) or 0
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print("seq2seq-kit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:             # `seq2seq-kit ... | head`: the reader is gone, as any Unix tool
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())   # no second error at exit's flush
        return 141
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        print(f"seq2seq-kit: error: {_one_line(e)}", file=sys.stderr)
        return 1


def _check_stdout(args) -> None:
    """A command that prints its result refuses to start with stdout closed (`>&-`): Python's print() drops what
    it writes there, so the result would be lost with exit code 0. Corpus jobs (--input) and serve print none."""
    if sys.stdout is None and args.command != "serve" and getattr(args, "input", None) is None:
        raise OSError(f"stdout is closed, so {args.command}'s output would be lost; redirect it instead "
                      "(e.g. > out.txt, or > /dev/null to discard it)")


@contextmanager
def _library_messages():
    """While a command runs, the library's log records (logger "seq2seq_kit", INFO and up: a corpus job's
    report, an output repaired after a crash) go to stderr, one "seq2seq-kit: ..." line each; so do warnings,
    as "seq2seq-kit: warning: ..." (the library's advice in CLI flags), not Python's two-line form, each text once
    (map-reduce's map and reduce stages resolve the same settings: one warning, not two)."""
    logger = logging.getLogger("seq2seq_kit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_LevelFormatter())
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    shown, lines = warnings.showwarning, set()

    def show(message, *_, **__):
        line = f"seq2seq-kit: warning: {_cli_terms(' '.join(str(message).split()))}"
        if line not in lines:
            lines.add(line)
            print(line, file=sys.stderr)
    warnings.showwarning = show
    try:
        yield
    finally:
        warnings.showwarning = shown
        logger.removeHandler(handler)
        logger.setLevel(level)


class _LevelFormatter(logging.Formatter):
    """A library log record as one line: "seq2seq-kit: ..." (INFO), "seq2seq-kit: warning: ..." (WARNING) or
    "seq2seq-kit: error: ..." (ERROR and up)."""

    def format(self, record: logging.LogRecord) -> str:
        level = "" if record.levelno < logging.WARNING else "warning: " if record.levelno < logging.ERROR else "error: "
        return f"seq2seq-kit: {level}{record.getMessage()}"


def _cli_terms(text: str) -> str:
    """The library's advice in the CLI's flags (truncation=True: --truncation; dtype='float32': --dtype float32;
    device='cpu': --device cpu; strategy='map_reduce': --strategy map-reduce; src_lang / tgt_lang: --src-lang /
    --tgt-lang)."""
    text = text.replace("truncation=True", "--truncation").replace("truncation=False", "--no-truncation")
    text = text.replace("strategy='truncate'", "--strategy truncate").replace("strategy='map_reduce'",
                                                                             "--strategy map-reduce")
    text = text.replace("drop src_lang / tgt_lang", "drop --src-lang / --tgt-lang")
    text = re.sub(r"\bdevice='([\w:]+)'", r"--device \1", text)
    return re.sub(r"\bpass dtype=(?= |$)", "pass --dtype", re.sub(r"\bdtype='([\w.]+)'", r"--dtype \1", text))


def _ray_address_form(argv: list) -> list[str]:
    """--ray=ADDRESS (the older form) -> --ray --ray-address ADDRESS; --ray itself takes no value, so
    `--ray "some text"` never reads the text as an address."""
    out = []
    for a in map(str, argv):
        out += ["--ray", "--ray-address", a.split("=", 1)[1]] if a.startswith("--ray=") else [a]
    return out


def _one_line(e: Exception) -> str:
    text = _cli_terms(" ".join(str(e).split())) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError, TypeError, ImportError)) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------------------------------- arguments

def _parser() -> argparse.ArgumentParser:
    from .loading import DTYPE_CHOICES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    hub = argparse.ArgumentParser(add_help=False)
    hub.add_argument("--revision", type=_non_empty, help="Hub branch, tag, commit or refs/pr/N (default: main)")
    hub.add_argument("--cache-dir", type=_non_empty,
                     help="Hub cache directory (default: $HF_HUB_CACHE or $HF_HOME/hub)")
    hub.add_argument("--token", help="Hub token for gated or private repos (default: the logged-in one)")
    model = argparse.ArgumentParser(add_help=False, parents=[hub])
    model.add_argument("--device", default=None, help="cpu, cuda, cuda:N, or an index (-1 = CPU) (default: cpu)")
    model.add_argument("--dtype", choices=DTYPE_CHOICES, default=None,
                       help="weights dtype (default: float32; int8: int8 linear layers, CPU only, outside the "
                            "token-parity guarantee)")

    parser = argparse.ArgumentParser(
        prog="seq2seq-kit", parents=[common],
        description="BART-family summarization and translation (BART, mBART, Pegasus, Marian, M2M100, NLLB) "
                    "without transformers.")
    parser.add_argument("--version", action="version", version=f"seq2seq-kit {_version()}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_summarize(sub, [common, model])
    _add_translate(sub, [common, model])
    _add_tokenize(sub, [common, hub])
    _add_inspect(sub, [common, hub])
    _add_demo(sub, [common])
    _add_parity(sub, [common, model])
    _add_serve(sub, [common, model])
    return parser


def _add_summarize(sub, parents: list) -> None:
    from .summarization import DEFAULT_MODEL

    p = sub.add_parser("summarize", parents=parents,
                       help="summarize a text, a file, stdin, or a corpus of JSONL / Parquet files",
                       description="Summarize TEXT, --file PATH, stdin (-), or many documents "
                                   "(--input docs.jsonl --output out.jsonl; a re-run resumes where it stopped).")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to summarize, or - to read stdin")
    p.add_argument("--file", type=_path, help="summarize the contents of this file")
    _add_corpus_arguments(p, "summaries", "summary_text")
    p.add_argument("--model", type=_non_empty, default=None,
                   help=f"Hub id or local checkpoint directory (default: {DEFAULT_MODEL})")
    _add_generation(p, "summary")
    p.add_argument("--strategy", choices=("truncate", "map-reduce"), default="truncate",
                   help="a text longer than the model's input: truncate it (default), or summarize its chunks of "
                        "whole sentences and then their summaries (map-reduce)")
    _add_truncation(p, "summarizes")
    _add_batch_size(p, chunks=True)
    p.add_argument("--json", action="store_true", help="print JSON instead of plain text")
    _add_stream(p, "summary")
    p.set_defaults(run=_summarize, parser=p)


GENERATION = ("num_beams", "max_length", "min_length", "max_new_tokens", "min_new_tokens", "length_penalty",
              "no_repeat_ngram_size", "repetition_penalty", "do_sample", "temperature", "top_k", "top_p")


def _add_generation(p, what: str) -> None:
    """generate's settings as options (summarize, translate): each left out takes the checkpoint's, as in
    transformers; --seed makes sampling repeatable."""
    g = p.add_argument_group("generation (default: the checkpoint's settings)")
    g.add_argument("--num-beams", type=_positive, help="beam width")
    g.add_argument("--max-length", type=_positive,
                   help=f"maximum {what} length in tokens, the decoder start token included, as transformers' "
                        "max_length")
    g.add_argument("--min-length", type=_non_negative, help=f"minimum {what} length in tokens, counted as --max-length")
    g.add_argument("--max-new-tokens", type=_positive,
                   help=f"maximum {what} length in generated tokens, the decoder start token not counted, as "
                        "transformers' max_new_tokens (takes the place of --max-length)")
    g.add_argument("--min-new-tokens", type=_non_negative,
                   help=f"minimum {what} length in generated tokens, as transformers' min_new_tokens")
    g.add_argument("--length-penalty", type=_finite,
                   help="beam search: a hypothesis' score is its log-probability / length ** this (> 0 favours "
                        "longer outputs)")
    g.add_argument("--no-repeat-ngram-size", type=_non_negative, help="no n-gram of this size occurs twice (0: off)")
    g.add_argument("--repetition-penalty", type=_positive_float,
                   help="tokens already generated are made less likely: their scores divided by this (multiplied "
                        "where negative; 1.0: off)")
    g.add_argument("--do-sample", action=argparse.BooleanOptionalAction,
                   help="sample each token instead of searching (--no-do-sample: search, for a checkpoint that "
                        "samples)")
    g.add_argument("--temperature", type=_positive_float, help="sampling: divide the scores by this")
    g.add_argument("--top-k", type=_non_negative, help="sampling: draw from the k most likely tokens (0: all)")
    g.add_argument("--top-p", type=_probability,
                   help="sampling: draw from the most likely tokens whose probabilities add up to this")
    g.add_argument("--seed", type=_seed,
                   help="sampling: draw from torch.Generator().manual_seed(SEED), so the same command gives the "
                        f"same {what}; in --input jobs each document draws from it anew, as it would alone")


def _generation_kwargs(args) -> dict:
    """generate's settings given on the command line, and --seed as corpus jobs take it (`seed`)."""
    return _given(args, *GENERATION, "seed")


def _seeded(kwargs: dict, pipe) -> dict:
    """One text's pipe() kwargs: --seed as generate's generator, on the model's device."""
    import torch

    seed = kwargs.pop("seed", None)
    return kwargs if seed is None else {**kwargs, "generator": torch.Generator(pipe.device).manual_seed(seed)}


def _add_stream(p, what: str) -> None:
    p.add_argument("--stream", action="store_true",
                   help=f"print the {what} word by word as it is generated (greedy search: --num-beams 1, which "
                        "the checkpoint's own beam width gives way to)")


def _check_stream(args, kwargs: dict) -> None:
    """--stream's rules: one text printed as plain text, one token chosen per step (kwargs' num_beams 1)."""
    if not args.stream:
        return
    for flag, present in (("--input", args.input is not None), ("--json", args.json),
                          ("--strategy map-reduce", _map_reduce(args))):
        if present:
            args.parser.error(f"--stream prints one text's output as it is generated: not with {flag}")
    if kwargs.setdefault("num_beams", 1) > 1:
        args.parser.error("--stream: beam search chooses its tokens only when it ends; leave --num-beams out or "
                          "give 1")


def _streamer(args, pipe) -> dict:
    """generate's streamer for --stream (a TextStreamer printing the output as it is made), as pipe() kwargs: it
    decodes with pipe.text, so it prints what the command prints without --stream (the pipeline's clean-up option,
    not the tokenizer's; ids past the tokenizer skipped, as NLLB-200's model may choose)."""
    from .generation.streamers import TextStreamer

    if not args.stream:
        return {}
    return {"streamer": TextStreamer(_PipelineText(pipe), skip_prompt=True)}


class _PipelineText:
    """A pipeline's output text as the tokenizer TextStreamer decodes with: decode(ids) is pipe.text(ids)."""

    def __init__(self, pipe):
        self.pipe = pipe

    def decode(self, ids: list[int]) -> str:
        return self.pipe.text(ids)


def _add_truncation(p, verb: str) -> None:
    p.add_argument("--truncation", action=argparse.BooleanOptionalAction, default=None,
                   help=f"a text longer than the model takes: --truncation {verb} its beginning silently, "
                        f"--no-truncation refuses it (default: {verb} its beginning, with a warning; --input "
                        "jobs always truncate and list such documents in OUTPUT.errors.jsonl, unless they "
                        "summarize with --strategy map-reduce)")


def _check_truncation(args) -> None:
    if args.truncation is not None and args.input is not None:
        how = "--input jobs always truncate (and list the documents cut in OUTPUT.errors.jsonl)"
        if _map_reduce(args):
            how = "an --input job with --strategy map-reduce cuts no document (each is summarized whole)"
        args.parser.error(f"--truncation/--no-truncation apply to a single text; {how}")


def _add_corpus_arguments(p, what: str, field: str) -> None:
    """The --input job's options (summarize, translate); `what` the records, `field` their text's key."""
    p.add_argument("--input", type=_path, help="a corpus: a JSONL or Parquet file, or a folder of them "
                                              "(see --text-field, --id-field)")
    p.add_argument("--output", type=_path, help=f"where the {what} go: JSONL, or Parquet if it ends in .parquet; "
                                               f"{{\"id\", \"{field}\", \"input_tokens\", \"output_tokens\"}} "
                                               "per document, with OUTPUT.meta.json and OUTPUT.errors.jsonl beside it")
    p.add_argument("--text-field", help="field holding the text in --input (default: text)")
    p.add_argument("--id-field",
                   help="field holding a document id in --input (default: id; absent: the line or row number)")
    _add_ray(p, "run the --input job on Ray Data", "ray", client=False)
    p.add_argument("--actors", type=_positive, help="with --ray: model replicas (default: one per GPU, else one "
                                                    "per node)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output (needed when it was written with another model or settings)")


def _add_batch_size(p, chunks: bool = False) -> None:
    """chunks: the command's --strategy map-reduce decodes a text's chunks this many at once too."""
    from .corpus import DEFAULT_BATCH_SIZE

    also = ", and a text's chunks with --strategy map-reduce" if chunks else ""
    p.add_argument("--batch-size", type=_positive,
                   help=f"documents decoding at once in --input jobs (the engine's rows: batch size x beams), "
                        f"each joining as another finishes{also} (default: {DEFAULT_BATCH_SIZE})")


def _map_reduce(args) -> bool:
    return getattr(args, "strategy", "truncate") != "truncate"


def _check_corpus_arguments(args, sources: list[tuple[str, bool]], one_of: str) -> None:
    """The argument rules of a command that takes a text or an --input job (summarize, translate)."""
    if args.ray and args.text is not None and args.input is not None:
        args.parser.error(f"--ray takes no value: to join the cluster at {args.text!r}, pass --ray-address "
                          f"{args.text} (or --ray={args.text})")
    given = [name for name, present in sources if present]
    if len(given) != 1:
        args.parser.error(f"give exactly one of {one_of}" + (f" (got {' and '.join(given)})" if given else ""))
    if (args.input is None) != (args.output is None):
        args.parser.error("--input and --output go together")
    if args.input is not None and args.json:
        args.parser.error("--json applies to a single text; --output is always JSONL or Parquet")
    for flag, present in (("--ray", args.ray), ("--ray-address", args.ray_address is not None),
                          ("--actors", args.actors is not None), ("--overwrite", args.overwrite),
                          ("--text-field", args.text_field is not None), ("--id-field", args.id_field is not None),
                          ("--batch-size", args.batch_size is not None and not _map_reduce(args))):
        if present and args.input is None:
            also = " (and to a text's chunks with --strategy map-reduce)" if flag == "--batch-size" \
                and hasattr(args, "strategy") else ""
            args.parser.error(f"{flag} applies to --input jobs{also}")
    for flag, present in (("--actors", args.actors is not None), ("--ray-address", args.ray_address is not None)):
        if present and not args.ray:
            args.parser.error(f"{flag} applies to --ray jobs")
    if args.text not in (None, "-") and (named := _file_name_kind(args.text)):
        command = args.parser.prog.split()[-1]                  # summarize, translate
        path = args.text.strip() if named == "is a file's name" else "PATH"
        args.parser.error(f"TEXT {args.text!r} {named}, not a text to {command}: pass --file {path} to {command} "
                          "a file's contents (--input and --output for a JSONL or Parquet corpus)")


DOCUMENT_SUFFIXES = (".txt", ".md", ".json", ".jsonl", ".parquet", ".csv", ".tsv", ".html", ".pdf")


def _file_name_kind(text: str) -> str | None:
    """What a TEXT argument that reads as a path is ("is a file's name", ...): one word ending as a document's file
    name does (notes.txt), or holding a "/" and naming a file or folder (docs/a.txt, /tmp): a path meant for --file
    or --input. None for a text: "km/h" (no such path), "data" (a word, whatever the current folder holds)."""
    word = text.strip()
    if not word or any(c.isspace() for c in word):
        return None
    path = Path(word)
    try:
        if "/" in word and path.is_dir():
            return "is a folder's name"
        if ("/" in word or path.suffix.lower() in DOCUMENT_SUFFIXES) and path.is_file():
            return "is a file's name"
    except (OSError, ValueError):             # too long for a file name, a NUL: not a path
        return None
    return "looks like a file's name" if path.suffix.lower() in DOCUMENT_SUFFIXES else None


def _corpus_kwargs(args) -> dict:
    """The --input job's arguments for seq2seq_kit.corpus (summarize_corpus, translate_corpus); the options left
    out take the job's defaults."""
    ray = {"engine": "ray", "ray_address": args.ray_address, "actors": args.actors} if args.ray else {}
    return dict(model=args.model, overwrite=args.overwrite, device=_device(args.device), dtype=args.dtype,
                **_given(args, "batch_size", "text_field", "id_field"), **_hub_kwargs(args), **ray)


def _given(args, *names: str) -> dict:
    """The options among `names` given on the command line (not None), by name: the rest take their defaults."""
    return {name: getattr(args, name) for name in names if getattr(args, name) is not None}


def _add_translate(sub, parents: list) -> None:
    p = sub.add_parser("translate", parents=parents,
                       help="translate a text, a file, stdin, or a corpus of JSONL / Parquet files (Marian, "
                            "M2M100, NLLB, mBART-50, mBART)",
                       description="Translate TEXT, --file PATH or stdin (-) with a translation checkpoint, or many "
                                   "documents (--input docs.jsonl --output out.jsonl; a re-run resumes where it "
                                   "stopped).")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to translate, or - to read stdin")
    p.add_argument("--file", type=_path, help="translate the contents of this file")
    _add_corpus_arguments(p, "translations", "translation_text")
    p.add_argument("--model", type=_non_empty, required=True, help="Hub id or local checkpoint directory")
    p.add_argument("--src-lang", help="source language code as the tokenizer takes it (en, eng_Latn, en_XX)")
    p.add_argument("--tgt-lang", help="target language code (fr, fra_Latn, fr_XX; a multi-target Marian model's fra)")
    _add_generation(p, "translation")
    _add_truncation(p, "translates")
    _add_batch_size(p)
    p.add_argument("--json", action="store_true", help="print JSON instead of plain text")
    _add_stream(p, "translation")
    p.set_defaults(run=_translate, parser=p)


def _translate(args) -> int:
    """One text (printed), or the --input job (seq2seq_kit.corpus.translate_corpus; exit codes as summarize's)."""
    _check_corpus_arguments(args, [("TEXT", args.text is not None), ("--file", args.file is not None),
                                   ("--input", args.input is not None)],
                            "TEXT, - (stdin), --file PATH or --input docs.jsonl")
    _check_truncation(args)
    kwargs = _generation_kwargs(args)
    _check_stream(args, kwargs)
    if args.input is not None:
        from .corpus import translate_corpus

        result = translate_corpus(args.input, args.output, src_lang=args.src_lang, tgt_lang=args.tgt_lang,
                                  **_corpus_kwargs(args), **kwargs)
        return 3 if result.failed else 0

    source = _one_text(args, "translate")

    from .config import BartConfig
    from .translation import pipeline, translation_task

    # the checkpoint's "translation_XX_to_YY" task, as pipeline("translation") picks it (and warns: pass the task),
    # named here since the command line takes no task
    task = translation_task("translation", BartConfig.from_pretrained(args.model, **_hub_kwargs(args)))
    pipe = pipeline(task, model=args.model, device=_device(args.device), dtype=args.dtype,
                    src_lang=args.src_lang, tgt_lang=args.tgt_lang, **_hub_kwargs(args))
    text = pipe(source, truncation=args.truncation, **_seeded(kwargs, pipe), **_streamer(args, pipe))
    text = text[0]["translation_text"]
    if not args.stream:
        print(json.dumps({"translation_text": text}, ensure_ascii=False) if args.json else text)
    return 0


def _add_tokenize(sub, parents: list) -> None:
    p = sub.add_parser("tokenize", parents=parents, help="show tokens, ids and the decode round trip",
                       description="Inspect TEXT as the notebook does: tokenize, convert_tokens_to_ids, encode "
                                   "(with special tokens), convert_ids_to_tokens, decode.")
    p.add_argument("text", metavar="TEXT", help="the text to tokenize, or - to read stdin")
    p.add_argument("--model", type=_non_empty, default=None,
                   help="Hub id or local directory with tokenizer files (default: the embedded BART tokenizer)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_tokenize, parser=p)


def _add_inspect(sub, parents: list) -> None:
    p = sub.add_parser("inspect", parents=parents, help="describe a checkpoint",
                       description="Print a checkpoint's config summary, parameter count, files and formats, "
                                   "dtype and generation defaults.")
    p.add_argument("model", type=_non_empty, metavar="MODEL", help="Hub id or local checkpoint directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_inspect, parser=p)


def _add_demo(sub, parents: list) -> None:
    p = sub.add_parser("demo", parents=parents, help="offline end-to-end run on a small random-weight BART",
                       description="text -> encode -> generate -> decode with the embedded BART tokenizer and a "
                                   "small BART with seeded random weights: no network, no transformers. "
                                   "The weights are random, so the generated text is meaningless.")
    p.add_argument("--text", default=DEFAULT_TEXT, help="input text")
    p.add_argument("--seed", type=_seed, default=0, help="seed of the random weights (default: 0)")
    p.add_argument("--num-beams", type=_positive, default=2, help="beam width (default: 2)")
    p.add_argument("--max-length", type=_positive, default=24, help="maximum output length (default: 24)")
    p.set_defaults(run=_demo, parser=p)


def _add_parity(sub, parents: list) -> None:
    from .parity import ATOL, ATOL_HALF, BEAM_WHEN_GREEDY

    p = sub.add_parser("parity", parents=parents, help="compare with transformers on a checkpoint",
                       description="Load MODEL with seq2seq_kit and with transformers; compare tokenizer ids, "
                                   "logits and generated tokens (greedy and beam, under the checkpoint's settings). "
                                   "Exit code 1 when they differ. "
                                   "Needs transformers: pip install \"seq2seq-kit[test]\".")
    p.add_argument("model", type=_non_empty, metavar="MODEL", help="Hub id or local checkpoint directory")
    p.add_argument("--text", action="append", help="input text (repeatable; default: a sample paragraph)")
    p.add_argument("--num-beams", type=_beam_width, help=f"beam width of the beam run, 2 or more (default: the "
                                                         f"checkpoint's, or {BEAM_WHEN_GREEDY} if it generates "
                                                         "greedily; a greedy run is always made)")
    p.add_argument("--max-length", type=_positive, help="maximum length (default: the checkpoint's)")
    p.add_argument("--atol", type=_tolerance, default=None,
                   help=f"logit tolerance (default: {ATOL:g} for float32, {ATOL_HALF:g} for half precision)")
    p.add_argument("--src-lang", help="a translation model's source language (en, eng_Latn, en_XX)")
    p.add_argument("--tgt-lang", help="a translation model's target language (fr, fra_Latn, fr_XX; Marian: fra)")
    p.set_defaults(run=_parity, parser=p)


def _add_serve(sub, parents: list) -> None:
    from .summarization import DEFAULT_MODEL

    p = sub.add_parser("serve", parents=parents,
                       help="serve summarization or translation over HTTP (FastAPI, or Ray Serve)",
                       description="POST /summarize, or POST /translate for a translation model (Marian, M2M100, "
                                   "NLLB, mBART-50), in the Hugging Face Inference API's shapes (\"stream\": true: "
                                   "Text Generation Inference's server-sent events); /health, /info, /metrics, /docs; "
                                   "on the continuous-batching engine. SIGTERM / Ctrl-C drain: "
                                   "every accepted request is answered. Needs pip install \"seq2seq-kit[serve]\".")
    p.add_argument("--model", type=_non_empty, default=None,
                   help=f"Hub id or local checkpoint directory, fixed for the server's life (default: {DEFAULT_MODEL})")
    p.add_argument("--host", type=_host, default="127.0.0.1",
                   help="address to listen on (default: 127.0.0.1, this machine only)")
    p.add_argument("--port", type=_port, default=8000, help="port (default: 8000)")
    p.add_argument("--task", choices=("summarization", "translation"),
                   help="what the model does, when its files do not say (default: translation for a tokenizer "
                        "with language codes or Marian's but mBART's, else summarization): e.g. --task translation for "
                        "facebook/mbart-large-en-ro, served on POST /translate")
    p.add_argument("--max-rows", type=_positive, default=32,
                   help="decoder rows per engine step: a beam-4 input takes 4 (default: 32)")
    p.add_argument("--max-queue", type=_positive, default=256,
                   help="inputs waiting in the engine beyond which requests get 503 + Retry-After (default: 256)")
    p.add_argument("--max-encoder-tokens", type=_positive, default=None,
                   help="source tokens encoded between two engine steps, the first waiting input's always (default: "
                        "the model's max_position_embeddings on the CPU, so that a burst of new requests does not "
                        "stall the running ones; no bound on CUDA)")
    p.add_argument("--max-body-bytes", type=_positive, default=1_000_000,
                   help="largest request body; larger ones get 413 (default: 1000000)")
    p.add_argument("--request-timeout", type=_seconds, default=120.0,
                   help="seconds from a request's arrival to its answer, else 504 (408 if its body is not in by "
                        "then) and it is cancelled (default: 120)")
    p.add_argument("--drain-timeout", type=_seconds, default=60.0,
                   help="seconds SIGTERM / Ctrl-C waits for accepted requests; those still running then get 503 "
                        "(default: 60)")
    p.add_argument("--api-key-env", metavar="VAR",
                   help="require 'Authorization: Bearer <key>' on every request but /health, the key being the "
                        "value of the environment variable VAR")
    _add_ray(p, "serve from a Ray Serve deployment", "ray,serve", client=True)
    p.add_argument("--replicas", type=_positive, help="with --ray: engine replicas (default: 1)")
    p.add_argument("--autoscale", metavar="MIN:MAX", help="with --ray: autoscale between MIN and MAX replicas")
    p.set_defaults(run=_serve, parser=p)


def _add_ray(p, what: str, extras: str, client: bool) -> None:
    p.add_argument("--ray", action="store_true",
                   help=f"{what} (a local Ray unless --ray-address); needs pip install \"seq2seq-kit[{extras}]\"")
    forms = ("auto, host:6379, ray://host:10001" if client
             else "auto, or the head's GCS address host:6379; not ray://, as Ray Data does not run over Ray Client")
    p.add_argument("--ray-address", metavar="ADDRESS", help=f"with --ray: the cluster to join ({forms}); "
                                                             "--ray=ADDRESS says the same")


def _seconds(value: str) -> float:
    x = _float(value)
    if not 0 < x <= threading.TIMEOUT_MAX:      # inf / nan / 1e10: JSON (/info) and thread joins refuse them
        raise argparse.ArgumentTypeError(f"must be a positive number of seconds (at most "
                                         f"{threading.TIMEOUT_MAX:.0f}), got {value!r}")
    return x


def _non_empty(value: str) -> str:
    if not value.strip():                   # "" would be the current folder (--model, --cache-dir) or main
        raise argparse.ArgumentTypeError("is empty")
    return value


def _host(value: str) -> str:
    if not value.strip():                   # "" would listen on every interface, IPv4 and IPv6
        raise argparse.ArgumentTypeError("is empty, which would listen on every interface; pass 127.0.0.1 (this "
                                         "machine only) or 0.0.0.0 (every interface)")
    return value


def _path(value: str) -> Path:
    if not value.strip():                   # Path("") would be ".", the current folder
        raise argparse.ArgumentTypeError("is empty; pass a path")
    return Path(value)


def _positive(value: str) -> int:
    n = _int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return n


def _beam_width(value: str) -> int:
    n = _int(value)
    if n < 2:
        raise argparse.ArgumentTypeError(f"must be 2 or more (the beam run's width; greedy runs beside it), got "
                                         f"{value!r}")
    return n


def _port(value: str) -> int:
    n = _int(value)
    if not 1 <= n <= 65535:
        raise argparse.ArgumentTypeError(f"must be a port number (1-65535), got {value!r}")
    return n


def _tolerance(value: str) -> float:
    x = _float(value)
    if not 0 <= x < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {value!r}")
    return x


def _positive_float(value: str) -> float:
    x = _float(value)
    if not 0 < x < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {value!r}")
    return x


def _finite(value: str) -> float:
    x = _float(value)
    if not -float("inf") < x < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {value!r}")
    return x


def _probability(value: str) -> float:
    x = _float(value)
    if not 0 < x <= 1:
        raise argparse.ArgumentTypeError(f"must be a number in (0, 1], got {value!r}")
    return x


def _seed(value: str) -> int:
    n = _int(value)
    if not 0 <= n < 2**64:
        raise argparse.ArgumentTypeError(f"must be an integer in [0, 2**64), got {value!r}")
    return n


def _non_negative(value: str) -> int:
    n = _int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value!r}")
    return n


def _float(value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {value!r}") from None


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None


def _hub_kwargs(args) -> dict:
    return _given(args, "revision", "cache_dir", "token")


def _device(value: str | None):
    """--device: the strings resolve_device takes, or an integer index (-1: the CPU)."""
    if value is None:
        return None
    return int(value) if re.fullmatch(r"-?[0-9]+", value) else value


def _read_text(args) -> str:
    """TEXT, or stdin for "-": text that is UTF-8 (as typed, or as read), else a one-line error naming it."""
    if args.text == "-":
        if sys.stdin is None:                # started with stdin closed (<&-)
            raise OSError("TEXT is '-' (read stdin), but stdin is closed: pipe the text in, or pass it as TEXT")
        stream = getattr(sys.stdin, "buffer", None)
        return _decode(stream.read(), "stdin") if stream is not None else _argument_text(sys.stdin.read(), "stdin")
    return _argument_text(args.text, "the TEXT argument")


def _read_file(path: Path) -> str:
    """--file: a file, a device or pipe such as /dev/stdin (not a folder), holding UTF-8 text."""
    if path.is_dir():
        raise IsADirectoryError(f"--file {str(path)!r} is a directory; pass a text file (a folder of JSONL or "
                                "Parquet files is --input DIR --output OUT)")
    try:
        with open(path, "rb") as f:
            data = f.read()
    except FileNotFoundError:
        raise FileNotFoundError(f"--file {str(path)!r}: no such file") from None
    except OSError as e:
        raise OSError(e.errno, f"--file {str(path)!r}: {e.strerror or e}") from None
    return _decode(data, f"--file {str(path)!r}")


def _one_text(args, verb: str) -> str:
    """The text of --file, TEXT or stdin (-); an empty one is an error: nothing to `verb`."""
    text = _read_file(args.file) if args.file is not None else _read_text(args)
    if not text.strip():
        where = f"--file {str(args.file)!r}" if args.file is not None else "stdin" if args.text == "-" else "TEXT"
        raise ValueError(f"{where} is empty: there is nothing to {verb}")
    return text


def _decode(data: bytes, name: str) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{name} is not UTF-8 text: byte {data[e.start]:#04x} at offset {e.start}; convert it "
                         "(e.g. iconv -t utf-8)") from None


def _argument_text(value: str, name: str) -> str:
    """Text Python decoded with surrogateescape (arguments; stdin in a C locale): bytes that were not UTF-8 are
    an error naming `name`."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as e:
        raw = value[e.start].encode("utf-8", "surrogateescape")
        raise ValueError(f"{name} is not UTF-8 text: byte {raw[0]:#04x} at character {e.start}; "
                         "pass UTF-8 (check the terminal's encoding)") from None
    return value


def _version() -> str:
    from . import __version__

    return __version__


# ---------------------------------------------------------------------------------------------- summarize

def _summarize(args) -> int:
    _check_corpus_arguments(args, [("TEXT", args.text is not None), ("--file", args.file is not None),
                                   ("--input", args.input is not None)],
                            "TEXT, - (stdin), --file PATH or --input docs.jsonl")
    _check_truncation(args)
    kwargs = _generation_kwargs(args)
    kwargs["strategy"] = args.strategy.replace("-", "_")
    _check_stream(args, kwargs)
    if args.input is not None:
        return _summarize_corpus(args, kwargs)
    text = _one_text(args, "summarize")

    from .long_documents import DocumentError, StageError
    from .summarization import pipeline

    pipe = pipeline("summarization", model=args.model, device=_device(args.device), dtype=args.dtype,
                    **_hub_kwargs(args))
    try:
        batch = {} if args.batch_size is None else {"batch_size": args.batch_size}   # (map-reduce: its chunks)
        summary = pipe(text, truncation=args.truncation, **batch, **_seeded(kwargs, pipe), **_streamer(args, pipe))
        summary = summary[0]["summary_text"]
    except DocumentError as e:           # map-reduce: the library's advice names map_kwargs, which has no flag
        what = getattr(e.error, "what", None)
        flag = "--max-new-tokens" if args.max_new_tokens is not None else "--max-length"
        raise ValueError(str(e.error) if what is None else f"{what}; a smaller {flag} shortens the chunks' "
                         "summaries") from None
    except StageError as e:              # its message names map_kwargs too: here the command's settings, both stages
        part = "the chunks' summaries" if e.stage == "map" else "the summary of the chunks' summaries"
        raise ValueError(f"the {e.stage} stage ({part}): {e.error}") from None
    if not args.stream:                  # (the streamer printed it, and a newline at its end)
        print(json.dumps({"summary_text": summary}, ensure_ascii=False) if args.json else summary)
    return 0


def _summarize_corpus(args, kwargs: dict) -> int:
    """The --input job (seq2seq_kit.corpus): exit 0 when every document is summarized, 3 when some records
    failed (listed in OUTPUT.errors.jsonl; a re-run will not fix them), 1 when the job itself failed."""
    from .corpus import summarize_corpus

    result = summarize_corpus(args.input, args.output, **_corpus_kwargs(args), **kwargs)
    return 3 if result.failed else 0


# ---------------------------------------------------------------------------------------------- serve

def _serve(args) -> int:
    """The HTTP server (seq2seq_kit.server) until SIGTERM / Ctrl-C; 0 once every accepted request is answered."""
    if not args.ray and (args.replicas is not None or args.autoscale is not None or args.ray_address is not None):
        args.parser.error("--ray-address, --replicas and --autoscale apply to --ray")
    if args.replicas is not None and args.autoscale is not None:
        args.parser.error("give --replicas or --autoscale, not both")
    autoscale = _min_max(args.parser, args.autoscale) if args.autoscale is not None else None
    api_key = None if args.api_key_env is None else _api_key(args.parser, args.api_key_env)

    from .summarization import DEFAULT_MODEL
    from .server import Settings, serve

    settings = Settings(model=args.model or DEFAULT_MODEL, device=_device(args.device), dtype=args.dtype,
                        hub_kwargs=_hub_kwargs(args), max_rows=args.max_rows, max_queue=args.max_queue,
                        max_encoder_tokens=args.max_encoder_tokens, max_body_bytes=args.max_body_bytes,
                        request_timeout=args.request_timeout, drain_timeout=args.drain_timeout, api_key=api_key,
                        task=args.task)
    if not args.ray:
        serve(settings, host=args.host, port=args.port)
        return 0
    from .server.ray_serve import serve_on_ray

    serve_on_ray(settings, address=args.ray_address, replicas=args.replicas, autoscale=autoscale, host=args.host,
                 port=args.port)
    return 0


def _api_key(parser, name: str) -> str:
    """The key in environment variable `name`: set, and sendable as 'Authorization: Bearer <key>' (HTTP drops a
    header value's surrounding spaces and tabs and refuses other control characters: no client could send it)."""
    key = os.environ.get(name)
    if not key:
        parser.error(f"--api-key-env {name}: that environment variable is not set or empty")
    if key != key.strip(" \t") or any(c < " " and c != "\t" or c == "\x7f" for c in key):
        parser.error(f"--api-key-env {name}: the key has surrounding whitespace or a control character (a file's "
                     "trailing newline?), which no Authorization header can carry; set it without them")
    return key


def _min_max(parser, value: str) -> tuple[int, int]:
    lo, _, hi = value.partition(":")
    if not (lo.isdigit() and hi.isdigit()) or not 0 <= int(lo) <= int(hi) or int(hi) < 1:
        parser.error(f"--autoscale takes MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {value!r}")
    return int(lo), int(hi)


# ---------------------------------------------------------------------------------------------- tokenize

def _tokenize(args) -> int:
    """The notebook's inspection: tokenize, convert_tokens_to_ids, encode, convert_ids_to_tokens, decode."""
    from .family_tokenizers import AutoTokenizer
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_default() if args.model is None else AutoTokenizer.from_pretrained(args.model,
                                                                                            **_hub_kwargs(args))
    text = _read_text(args)
    tokens = tok.tokenize(text)
    ids = tok.encode(text)
    steps = {"tokenize": tokens, "convert_tokens_to_ids": tok.convert_tokens_to_ids(tokens), "encode": ids,
             "convert_ids_to_tokens": tok.convert_ids_to_tokens(ids), "decode": tok.decode(ids),
             "decode_skip_special_tokens": tok.decode(ids, skip_special_tokens=True)}
    if args.json:
        print(json.dumps(steps, ensure_ascii=False))
        return 0
    print(f"tokenizer: {args.model or 'the embedded BART tokenizer (facebook/bart)'}")
    for name, value in steps.items():
        label = "decode(skip_special_tokens=True)" if name == "decode_skip_special_tokens" else name
        label += f" ({len(value)}):" if isinstance(value, list) else ":"
        print(f"{label:<36} {value!r}")
    same = steps["decode_skip_special_tokens"] == text
    print(f"{'round trip:':<36} {'exact' if same else 'differs from the input'}")
    return 0


# ---------------------------------------------------------------------------------------------- inspect

CONFIG_FILES = {"config.json": "model config", "generation_config.json": "generation config"}


def _file_kind(name: str) -> str:
    from .hub import TOKENIZER_FILES

    if name.endswith(".index.json"):
        return "weight shard index"
    if name.endswith(".safetensors"):
        return "weights (safetensors)"
    if name.endswith(".bin"):
        return "weights (PyTorch pickle)"
    if name.endswith(".model"):
        return "tokenizer (sentencepiece)"
    return {**CONFIG_FILES, **TOKENIZER_FILES}.get(name, "-")


def _stored_dtypes(root: Path) -> dict[str, int]:
    """{dtype: tensor count} of the weights the model loads, read without loading them."""
    from .loading import Checkpoint

    ckpt, counts = Checkpoint(root), {}
    for name in ckpt.names():
        dtype = str(ckpt.dtype(name)).replace("torch.", "")
        counts[dtype] = counts.get(dtype, 0) + 1
    return counts


def _inspect(args) -> int:
    info = _checkpoint_info(args)
    if args.json:
        print(json.dumps(info, ensure_ascii=False, indent=2, default=str))
    else:
        _print_checkpoint_info(info)
    return 0


def _checkpoint_info(args) -> dict:
    """What `inspect` shows: the checkpoint's config, files and weights, as loaded by the library."""
    from . import hub, kernel_choice
    from .config import BartConfig, dtype_name
    from .loading import weight_files
    from .modeling import BartForConditionalGeneration

    root = hub.resolve(args.model, purpose="model", **_hub_kwargs(args))
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    model = BartForConditionalGeneration.from_pretrained(root)
    c = model.config
    weights = weight_files(root)   # the files the model was loaded from
    info = {
        "model": str(args.model), "path": str(root), "model_type": c.model_type, "family": c.family.name,
        "config": {k: getattr(c, k) for k in (
            "vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
            "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings",
            "activation_function", "scale_embedding", "tie_word_embeddings")},
        "special_tokens": {k: getattr(c, k) for k in (
            "bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
            "forced_eos_token_id")},
        "parameters": model.num_parameters(),
        "files": {f: {"bytes": (root / f).stat().st_size, "kind": _file_kind(f)} for f in files},
        "weights_format": ("safetensors" if weights[0].suffix == ".safetensors" else "pytorch .bin")
                          + (f", {len(weights)} shards" if len(weights) > 1 else ""),
        "config_dtype": dtype_name(BartConfig.from_pretrained(root).dtype),   # config.json's (c.dtype: the loaded)
        "stored_dtypes": _stored_dtypes(root), "loaded_dtype": str(model.dtype),
        "generation_defaults": model.generation_config.to_dict() if model.generation_config is not None else {},
        "task_specific_params": (c.extra.get("task_specific_params") or {}).get("summarization"),
        "prefix": c.extra.get("prefix"),
        "cpu_kernels": {"cpu": kernel_choice.cpu_name(), "gemv": kernel_choice.gemv_status(),
                        "layers": model.kernel_table(), "attention": model.step_attention(),
                        "greedy_screen": model.screens(1)},
    }
    return info


def _print_checkpoint_info(info: dict) -> None:
    from .kernel_choice import describe as describe_kernels

    print(f"{info['model']}  ({info['path']})")
    print(f"model_type   {info['model_type']} ({info['family']})")
    print("config       " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    print("tokens       " + ", ".join(f"{k}={v}" for k, v in info["special_tokens"].items()))
    print(f"parameters   {info['parameters']:,} ({info['parameters'] / 1e6:.1f}M)")
    print(f"dtype        stored {', '.join(f'{d} ({n} tensors)' for d, n in info['stored_dtypes'].items())}; "
          f"config.json dtype={info['config_dtype']}; loads as {info['loaded_dtype'].replace('torch.', '')}")
    print(f"weights      {info['weights_format']}")
    kernels = info["cpu_kernels"]
    print(f"kernels      {kernels['cpu']}: {describe_kernels(kernels['layers'])}; decode-step attention "
          f"{kernels['attention']}; greedy LM head {'screened (int8 bounds)' if kernels['greedy_screen'] else 'full'}"
          f" (gemv: {kernels['gemv']})")
    print("files")
    for f, meta in info["files"].items():
        print(f"  {f:<40} {_size(meta['bytes']):>10}  {meta['kind']}")
    print("generation defaults (generate() uses these unless told otherwise)")
    for k, v in info["generation_defaults"].items():
        print(f"  {k} = {v!r}")
    if info["task_specific_params"]:
        print(f"summarization pipeline settings (task_specific_params): {info['task_specific_params']}")
    if info["prefix"]:
        print(f"prefix: {info['prefix']!r}")


def _size(n: int) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024


# ---------------------------------------------------------------------------------------------- demo

def _demo_model(seed: int = 0, vocab_size: int = 50265):
    """A small BART built by seq2seq_kit with seeded random weights (no checkpoint, no network)."""
    import torch

    from .config import BartConfig
    from .modeling import BartForConditionalGeneration

    config = BartConfig(vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_position_embeddings=128)
    torch.manual_seed(seed)
    return BartForConditionalGeneration(config).eval()     # generation_config: its start / EOS / forced tokens


def _demo(args) -> int:
    import torch

    from .tokenizer import Tokenizer

    tok = Tokenizer.from_default()
    model = _demo_model(args.seed, len(tok))
    args.text = _argument_text(args.text, "--text")
    inputs = tok(args.text, truncation=True, max_length=model.config.max_position_embeddings, return_tensors="pt")
    with torch.inference_mode():
        out = model.generate(inputs["input_ids"], inputs["attention_mask"], num_beams=args.num_beams,
                             max_length=args.max_length, no_repeat_ngram_size=2)
    ids = out[0].tolist()
    c = model.config
    print("seq2seq_kit demo: text -> encode -> generate -> decode, offline, without transformers")
    print(f"tokenizer  the embedded BART tokenizer ({len(tok)} tokens)")
    print(f"model      a small BART built here: d_model={c.d_model}, {c.encoder_layers}+{c.decoder_layers} layers, "
          f"{model.num_parameters():,} parameters, RANDOM weights (seed {args.seed})")
    print(f"input      {args.text!r}")
    print(f"input ids  {inputs['input_ids'][0].tolist()}")
    print(f"generated  {ids}  (num_beams={args.num_beams}, max_length={args.max_length}, no_repeat_ngram_size=2)")
    print(f"decoded    {tok.decode(ids, skip_special_tokens=True)!r}")
    print("The weights are random, so this text is meaningless: the demo only shows the whole flow running. "
          "For real summaries: seq2seq-kit summarize --model sshleifer/distilbart-cnn-12-6 \"your text\"")
    return 0


# ---------------------------------------------------------------------------------------------- parity

def _parity(args) -> int:
    """seq2seq_kit.parity.compare, printed; exit code 1 when anything differs."""
    from .parity import compare

    texts = [_argument_text(t, "--text") for t in args.text or [DEFAULT_TEXT]]
    report = compare(args.model, texts, num_beams=args.num_beams, max_length=args.max_length,
                     atol=args.atol, device=_device(args.device), dtype=args.dtype, src_lang=args.src_lang,
                     tgt_lang=args.tgt_lang, **_hub_kwargs(args))
    print(f"parity: {report.model} ({report.path})")
    print(f"seq2seq_kit vs transformers {report.transformers_version}: {report.dtype} on {report.device}, "
          f"logits atol {report.atol:g}")
    for i, text in enumerate(report.texts):
        print(f"\ntext {i}: {text[:70]!r}{'...' if len(text) > 70 else ''}")
        for check in report.checks:
            if check.text == i:
                _print_check(check)
    print()
    if report.failures:
        print(f"verdict: MISMATCH in {len(report.failures)} check(s): {'; '.join(report.failures)}")
        return 1
    print("verdict: PARITY: tokenizer ids, logits and generated tokens agree with transformers")
    return 0


def _print_check(check) -> None:
    status = "match" if check.ok else "DIFFER"
    if check.max_diff is not None:    # logits
        print(f"  {check.name:<18} {status:<7} max |diff| {check.max_diff:.2e} over {check.positions} decoder "
              "positions")
        return
    print(f"  {check.name:<18} {status:<7} {len(check.ours)} vs {len(check.theirs)}")
    show = _abbreviated if check.ok and check.name == "tokenizer ids" else str
    print(f"    seq2seq_kit : {show(check.ours)}")
    print(f"    transformers: {show(check.theirs)}")
    if check.decoded is not None:
        print(f"    decoded: {check.decoded!r}")


def _abbreviated(ids: list) -> str:
    return str(ids) if len(ids) <= 24 else f"[{str(ids[:16])[1:-1]}, ... {str(ids[-4:])[1:-1]}]"
