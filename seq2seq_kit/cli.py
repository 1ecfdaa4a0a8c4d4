"""The `seq2seq-kit` command line: summarize, translate, tokenize, inspect, demo, parity. It parses the arguments, calls the
library (pipeline, corpus, tokenizer, hub, parity) and prints what it returns; the library's log records are
shown as "seq2seq-kit: ..." lines on stderr. (The benchmark is `python benchmarks/bench.py` in a source checkout.)

Exit codes: 0 success, 2 usage error, 1 runtime error (a one-line message; --debug shows the traceback),
3 a `summarize --input` job that finished with failed records (see its OUTPUT.errors.jsonl).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from contextlib import contextmanager
from pathlib import Path

DEFAULT_TEXT = (
    "The tower is 324 metres (1,063 ft) tall, about the same height as an 81-storey building, and the "
    "tallest structure in Paris. Its base is square, measuring 125 metres (410 ft) on each side. During its "
    "construction, the Eiffel Tower surpassed the Washington Monument to become the tallest man-made structure "
    "in the world, a title it held for 41 years until the Chrysler Building in New York City was finished in 1930.")


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = None
    try:
        args = parser.parse_args(argv)
        with _library_messages():
            return args.run(args) or 0
    except SystemExit as e:  # argparse: --help (0) or a usage error (2)
        return e.code if isinstance(e.code, int) else 2
    except KeyboardInterrupt:
        print("seq2seq-kit: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        if getattr(args, "debug", False):
            raise
        print(f"seq2seq-kit: error: {_one_line(e)}", file=sys.stderr)
        return 1


@contextmanager
def _library_messages():
    """While a command runs, the library's log records (logger "seq2seq_kit", INFO and up: a corpus job's
    report, an output repaired after a crash) go to stderr, one "seq2seq-kit: ..." line each."""
    logger = logging.getLogger("seq2seq_kit")
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("seq2seq-kit: %(message)s"))
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def _one_line(e: Exception) -> str:
    text = " ".join(str(e).split()) or type(e).__name__
    return text if isinstance(e, (ValueError, OSError, TypeError, ImportError)) else f"{type(e).__name__}: {text}"


# ---------------------------------------------------------------------------------------------- arguments

def _parser() -> argparse.ArgumentParser:
    from .loading import DTYPE_CHOICES

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", action="store_true", default=argparse.SUPPRESS,
                        help="show the full traceback on errors")
    hub = argparse.ArgumentParser(add_help=False)
    hub.add_argument("--revision", help="Hub branch, tag, commit or refs/pr/N (default: main)")
    hub.add_argument("--cache-dir", help="Hub cache directory (default: $HF_HUB_CACHE or $HF_HOME/hub)")
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
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_summarize(sub, [common, model])
    _add_translate(sub, [common, model])
    _add_tokenize(sub, [common, hub])
    _add_inspect(sub, [common, hub])
    _add_demo(sub, [common])
    _add_parity(sub, [common, model])
    return parser


def _add_summarize(sub, parents: list) -> None:
    from .corpus import DEFAULT_BATCH_SIZE
    from .pipeline import DEFAULT_MODEL

    p = sub.add_parser("summarize", parents=parents, help="summarize a text, a file, stdin or a JSONL file",
                       description="Summarize TEXT, --file PATH, stdin (-), or many documents "
                                   "(--input docs.jsonl --output out.jsonl; a re-run resumes where it stopped).")
    p.add_argument("text", nargs="?", metavar="TEXT", help="the text to summarize, or - to read stdin")
    p.add_argument("--file", type=Path, help="summarize the contents of this file")
    p.add_argument("--input", type=Path, help="a corpus: a JSONL or Parquet file, or a folder of them "
                                              "(see --text-field, --id-field)")
    p.add_argument("--output", type=Path, help="where the summaries go: JSONL, or Parquet if it ends in .parquet; "
                                               "{\"id\", \"summary_text\", \"input_tokens\", \"output_tokens\"} "
                                               "per document, with OUTPUT.meta.json and OUTPUT.errors.jsonl beside it")
    p.add_argument("--text-field", default="text", help="field holding the text in --input (default: text)")
    p.add_argument("--id-field", default="id",
                   help="field holding a document id in --input (default: id; absent: the line or row number)")
    p.add_argument("--ray", nargs="?", const="", default=None, metavar="ADDRESS",
                   help="run the --input job on Ray Data: a local Ray, or the cluster at ADDRESS "
                        "(auto, ray://host:10001); needs pip install \"seq2seq-kit[ray]\"")
    p.add_argument("--actors", type=_positive, help="with --ray: model replicas (default: one per GPU, else one "
                                                    "per node)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --output (needed when it was written with another model or settings)")
    p.add_argument("--model", default=None, help=f"Hub id or local checkpoint directory (default: {DEFAULT_MODEL})")
    p.add_argument("--num-beams", type=_positive, help="beam width (default: the checkpoint's)")
    p.add_argument("--max-length", type=_positive, help="maximum summary length in tokens (default: the checkpoint's)")
    p.add_argument("--min-length", type=_non_negative, help="minimum summary length in tokens")
    p.add_argument("--batch-size", type=_positive, default=DEFAULT_BATCH_SIZE,
                   help=f"documents per generate call in --input jobs, batched by similar length "
                        f"(default: {DEFAULT_BATCH_SIZE})")
    p.add_argument("--json", action="store_true", help="print JSON instead of plain text")
    p.set_defaults(run=_summarize, parser=p)


def _add_translate(sub, parents: list) -> None:
    p = sub.add_parser("translate", parents=parents, help="translate a text or stdin (Marian, M2M100, NLLB, mBART-50)",
                       description="Translate TEXT or stdin (-) with a translation checkpoint.")
    p.add_argument("text", metavar="TEXT", help="the text to translate, or - to read stdin")
    p.add_argument("--model", required=True, help="Hub id or local checkpoint directory")
    p.add_argument("--src-lang", help="source language code as the tokenizer takes it (en, eng_Latn, en_XX)")
    p.add_argument("--tgt-lang", help="target language code (fr, fra_Latn, fr_XX; a multi-target Marian model's fra)")
    p.add_argument("--num-beams", type=_positive, help="beam width (default: the checkpoint's)")
    p.add_argument("--max-new-tokens", type=_positive, help="maximum translation length in tokens")
    p.add_argument("--json", action="store_true", help="print JSON instead of plain text")
    p.set_defaults(run=_translate, parser=p)


def _translate(args) -> int:
    from .translation import pipeline

    kwargs = {k: v for k, v in (("num_beams", args.num_beams), ("max_new_tokens", args.max_new_tokens))
              if v is not None}
    pipe = pipeline("translation", model=args.model, device=_device(args.device), dtype=args.dtype,
                    src_lang=args.src_lang, tgt_lang=args.tgt_lang, **_hub_kwargs(args))
    text = pipe(_read_text(args), **kwargs)[0]["translation_text"]
    print(json.dumps({"translation_text": text}, ensure_ascii=False) if args.json else text)
    return 0


def _add_tokenize(sub, parents: list) -> None:
    p = sub.add_parser("tokenize", parents=parents, help="show tokens, ids and the decode round trip",
                       description="Inspect TEXT as the notebook does: tokenize, convert_tokens_to_ids, encode "
                                   "(with special tokens), convert_ids_to_tokens, decode.")
    p.add_argument("text", metavar="TEXT", help="the text to tokenize, or - to read stdin")
    p.add_argument("--model", default=None,
                   help="Hub id or local directory with tokenizer files (default: the embedded BART tokenizer)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_tokenize, parser=p)


def _add_inspect(sub, parents: list) -> None:
    p = sub.add_parser("inspect", parents=parents, help="describe a checkpoint",
                       description="Print a checkpoint's config summary, parameter count, files and formats, "
                                   "dtype and generation defaults.")
    p.add_argument("model", metavar="MODEL", help="Hub id or local checkpoint directory")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_inspect, parser=p)


def _add_demo(sub, parents: list) -> None:
    p = sub.add_parser("demo", parents=parents, help="offline end-to-end run on a small random-weight BART",
                       description="text -> encode -> generate -> decode with the embedded BART tokenizer and a "
                                   "small BART with seeded random weights: no network, no transformers. "
                                   "The weights are random, so the generated text is meaningless.")
    p.add_argument("--text", default=DEFAULT_TEXT, help="input text")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights (default: 0)")
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
    p.add_argument("model", metavar="MODEL", help="Hub id or local checkpoint directory")
    p.add_argument("--text", action="append", help="input text (repeatable; default: a sample paragraph)")
    p.add_argument("--num-beams", type=_positive, help=f"beam width of the beam run (default: the checkpoint's, "
                                                       f"or {BEAM_WHEN_GREEDY} if it generates greedily)")
    p.add_argument("--max-length", type=_positive, help="maximum length (default: the checkpoint's)")
    p.add_argument("--atol", type=float, default=None,
                   help=f"logit tolerance (default: {ATOL:g} for float32, {ATOL_HALF:g} for half precision)")
    p.set_defaults(run=_parity, parser=p)


def _positive(value: str) -> int:
    n = _int(value)
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value!r}")
    return n


def _non_negative(value: str) -> int:
    n = _int(value)
    if n < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {value!r}")
    return n


def _int(value: str) -> int:
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {value!r}") from None


def _hub_kwargs(args) -> dict:
    return {k: v for k, v in (("revision", args.revision), ("cache_dir", args.cache_dir), ("token", args.token))
            if v is not None}


def _device(value: str | None):
    """--device: the strings resolve_device takes, or an integer index (-1: the CPU)."""
    if value is None:
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def _read_text(args) -> str:
    if args.text == "-":
        return sys.stdin.read()
    return args.text


# ---------------------------------------------------------------------------------------------- summarize

def _summarize(args) -> int:
    sources = [name for name, given in (("TEXT", args.text is not None), ("--file", args.file is not None),
                                        ("--input", args.input is not None)) if given]
    if len(sources) != 1:
        args.parser.error("give exactly one of TEXT, - (stdin), --file PATH or --input docs.jsonl"
                          + (f" (got {' and '.join(sources)})" if sources else ""))
    if (args.input is None) != (args.output is None):
        args.parser.error("--input and --output go together")
    if args.input is not None and args.json:
        args.parser.error("--json applies to a single text; --output is always JSONL or Parquet")
    for flag, given in (("--ray", args.ray is not None), ("--actors", args.actors is not None),
                        ("--overwrite", args.overwrite)):
        if given and args.input is None:
            args.parser.error(f"{flag} applies to --input jobs")
    if args.actors is not None and args.ray is None:
        args.parser.error("--actors applies to --ray jobs")
    kwargs = {k: v for k, v in (("num_beams", args.num_beams), ("max_length", args.max_length),
                                ("min_length", args.min_length)) if v is not None}
    if args.input is not None:
        return _summarize_corpus(args, kwargs)
    if args.file is not None:
        if not args.file.is_file():
            raise FileNotFoundError(f"--file {str(args.file)!r}: no such file")
        text = args.file.read_text(encoding="utf-8")
    else:
        text = _read_text(args)

    from .pipeline import pipeline

    pipe = pipeline("summarization", model=args.model, device=_device(args.device), dtype=args.dtype,
                    **_hub_kwargs(args))
    summary = pipe(text, **kwargs)[0]["summary_text"]
    print(json.dumps({"summary_text": summary}, ensure_ascii=False) if args.json else summary)
    return 0


def _summarize_corpus(args, kwargs: dict) -> int:
    """The --input job (seq2seq_kit.corpus): exit 0 when every document is summarized, 3 when some records
    failed (listed in OUTPUT.errors.jsonl; a re-run will not fix them), 1 when the job itself failed."""
    from .corpus import summarize_corpus

    ray = {} if args.ray is None else {"engine": "ray", "ray_address": args.ray or None, "actors": args.actors}
    result = summarize_corpus(args.input, args.output, model=args.model, batch_size=args.batch_size,
                              text_field=args.text_field, id_field=args.id_field,
                              overwrite=args.overwrite, device=_device(args.device), dtype=args.dtype,
                              **_hub_kwargs(args), **ray, **kwargs)
    return 3 if result.failed else 0


# ---------------------------------------------------------------------------------------------- tokenize

def _tokenize(args) -> int:
    """The notebook's inspection: tokenize, convert_tokens_to_ids, encode, convert_ids_to_tokens, decode."""
    from .tokenizer import Tokenizer

    tok = Tokenizer.from_default() if args.model is None else Tokenizer.from_pretrained(args.model, **_hub_kwargs(args))
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

FILE_KINDS = {"config.json": "model config", "generation_config.json": "generation config",
              "tokenizer.json": "tokenizer (tokenizers)", "tokenizer_config.json": "tokenizer config",
              "special_tokens_map.json": "tokenizer special tokens", "added_tokens.json": "tokenizer added tokens",
              "vocab.json": "tokenizer vocabulary (BPE)", "merges.txt": "tokenizer merges (BPE)"}


def _file_kind(name: str) -> str:
    if name.endswith(".index.json"):
        return "weight shard index"
    if name.endswith(".safetensors"):
        return "weights (safetensors)"
    if name.endswith(".bin"):
        return "weights (PyTorch pickle)"
    if name.endswith(".model"):
        return "tokenizer (sentencepiece)"
    return FILE_KINDS.get(name, "-")


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
    from . import hub
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
        "config_dtype": c.dtype, "stored_dtypes": _stored_dtypes(root), "loaded_dtype": str(model.dtype),
        "generation_defaults": model.generation_config.to_dict() if model.generation_config is not None else {},
        "task_specific_params": (c.extra.get("task_specific_params") or {}).get("summarization"),
        "prefix": c.extra.get("prefix"),
    }
    return info


def _print_checkpoint_info(info: dict) -> None:
    print(f"{info['model']}  ({info['path']})")
    print(f"model_type   {info['model_type']} ({info['family']})")
    print("config       " + ", ".join(f"{k}={v}" for k, v in info["config"].items()))
    print("tokens       " + ", ".join(f"{k}={v}" for k, v in info["special_tokens"].items()))
    print(f"parameters   {info['parameters']:,} ({info['parameters'] / 1e6:.1f}M)")
    print(f"dtype        stored {', '.join(f'{d} ({n} tensors)' for d, n in info['stored_dtypes'].items())}; "
          f"config.json dtype={info['config_dtype']}; loads as {info['loaded_dtype'].replace('torch.', '')}")
    print(f"weights      {info['weights_format']}")
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

def demo_model(seed: int = 0, vocab_size: int = 50265):
    """A small BART built by seq2seq_kit with seeded random weights (no checkpoint, no network)."""
    import torch

    from .config import BartConfig
    from .generation import GenerationConfig
    from .modeling import BartForConditionalGeneration

    config = BartConfig(vocab_size=vocab_size, d_model=64, encoder_layers=2, decoder_layers=2,
                        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=128,
                        decoder_ffn_dim=128, max_position_embeddings=128)
    torch.manual_seed(seed)
    model = BartForConditionalGeneration(config).eval()
    model.generation_config = GenerationConfig.from_model_config(config.to_dict())   # start/eos/forced tokens
    return model


def _demo(args) -> int:
    import torch

    from .tokenizer import Tokenizer

    tok = Tokenizer.from_default()
    model = demo_model(args.seed, len(tok))
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

    report = compare(args.model, args.text or [DEFAULT_TEXT], num_beams=args.num_beams, max_length=args.max_length,
                     atol=args.atol, device=_device(args.device), dtype=args.dtype, **_hub_kwargs(args))
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
