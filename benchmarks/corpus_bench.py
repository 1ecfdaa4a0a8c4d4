"""Corpus job throughput: docs/s of summarize_corpus, local engine and Ray with 1 and 2 actors, with and
without length-sorted batching.

    python benchmarks/corpus_bench.py                                 # distilbart shape, 300 docs of ~400 tokens
    python benchmarks/corpus_bench.py --shape tiny --docs 40          # a quick check that everything runs

Model: `--shape distilbart` is the full-size random-weight distilbart-cnn-12-6 of make_checkpoints.py (its
generation settings: beam 4, max_length 142, min_length 56, ...; random weights never emit eos, so every
summary runs to max_length and the work per document is fixed); `--shape tiny` is the test suite's tiny
BART. Documents: English news-style text from texts.py, cut to token lengths drawn uniformly from
[0.5, 1.5] x `--tokens` (seeded), so that sorting by length has padding to remove.

Each configuration writes a fresh output. docs/s is documents / wall time of the whole summarize_corpus
call: model loading and Ray actor start-up included (one model load is timed apart and printed, to
subtract when comparing); Ray itself is started once, before the runs. On Ray, a chunk's summaries
reach the driver when the chunk is done, so there is no finer per-batch rate to report. Every
configuration must write the same summaries as the first one (the "same" column).
Ray runs need `pip install -e ".[ray]"`; without Ray they are skipped with a note.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent / "tests")]

CONFIGS = {  # name: (engine, actors)
    "local": ("local", None),
    "ray1": ("ray", 1),
    "ray2": ("ray", 2),
}


def checkpoint(shape: str) -> Path:
    if shape == "distilbart":
        from make_checkpoints import ensure

        return ensure("distilbart")
    from checkpoints import SPECS, build

    out = ROOT / ".cache" / "tiny"
    return out if (out / "config.json").exists() else build(SPECS["tiny"], out)


def make_corpus(path: Path, model: Path, n: int, tokens: int, seed: int = 0) -> list[int]:
    """n JSONL documents cut from the benchmark's English articles; returns their token lengths."""
    from texts import ENGLISH

    from seq2seq_kit import Tokenizer

    tok = Tokenizer.from_pretrained(model)
    words = " ".join(ENGLISH).split()
    rng = random.Random(seed)
    lengths = []
    with path.open("w", encoding="utf-8") as f:
        for i in range(n):
            target = rng.randint(tokens // 2, tokens * 3 // 2)
            start = rng.randrange(len(words))
            text = " ".join((words[start:] + words)[:target])        # >= 1 token per word: at least target tokens
            ids = tok(text, truncation=True, max_length=target)["input_ids"]
            text = tok.decode(ids, skip_special_tokens=True).strip()
            lengths.append(len(tok(text)["input_ids"]))
            f.write(json.dumps({"id": i, "text": text}) + "\n")
    return lengths


def timed_run(corpus: Path, out: Path, model: Path, engine: str, actors, sort: bool, args) -> dict:
    from seq2seq_kit import summarize_corpus

    gen = {k: v for k, v in (("num_beams", args.num_beams), ("max_length", args.max_length)) if v}
    start = time.perf_counter()
    result = summarize_corpus(corpus, out, model=model, engine=engine, actors=actors, batch_size=args.batch_size,
                              sort_by_length=sort, progress=False, **gen)
    wall = time.perf_counter() - start
    return {"written": result.written, "wall_s": wall, "docs_per_s": result.written / wall}


def load_seconds(model: Path) -> float:
    """One model load (what every job and every Ray actor pays once), measured in this process."""
    from seq2seq_kit import pipeline

    start = time.perf_counter()
    pipeline("summarization", model=str(model))
    return time.perf_counter() - start


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("distilbart", "tiny"), default="distilbart")
    ap.add_argument("--docs", type=int, default=300, help="number of documents (default: 300)")
    ap.add_argument("--tokens", type=int, default=None,
                    help="mean document length in tokens (default: 400; 120 for tiny, whose positions end at 256)")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--engines", default="local,ray1,ray2", help=f"of {','.join(CONFIGS)}")
    ap.add_argument("--sort", choices=("both", "on", "off"), default="both", help="length-sorted batching")
    ap.add_argument("--num-beams", type=int, help="default: the checkpoint's (distilbart: 4)")
    ap.add_argument("--max-length", type=int, help="default: the checkpoint's (distilbart: 142)")
    ap.add_argument("--tag", default="", help="suffix for the result files' names, e.g. intel")
    ap.add_argument("--out", type=Path, default=ROOT / "results", help="folder for the .md and .json report")
    args = ap.parse_args(argv)
    args.date = date.today()                # the day the run started: its files' name and report
    tokens = args.tokens or (400 if args.shape == "distilbart" else 120)

    from machine import machine_line

    model = checkpoint(args.shape)
    work = Path(tempfile.mkdtemp(prefix="corpus-bench-"))
    corpus = work / "docs.jsonl"
    lengths = make_corpus(corpus, model, args.docs, tokens)
    engines = args.engines.split(",")
    sorts = {"both": (True, False), "on": (True,), "off": (False,)}[args.sort]
    cores = len(os.sched_getaffinity(0))     # the CPUs this process may run on
    notes = [f"{args.docs} documents of {min(lengths)}-{max(lengths)} tokens (mean {sum(lengths) / len(lengths):.0f}), "
             f"batch size {args.batch_size}, {args.shape} shape, generation "
             + (", ".join(f"{k}={v}" for k, v in (("num_beams", args.num_beams), ("max_length", args.max_length)) if v)
                or "as the checkpoint sets it"),
             f"{machine_line()} (local engine), {cores} cores",
             f"one model load: {load_seconds(model):.1f} s (included in every run, once per Ray actor)"]
    if any(CONFIGS[e][0] == "ray" for e in engines):
        try:
            import ray
        except ImportError:
            notes.append('Ray runs skipped: Ray is not installed (pip install -e ".[ray]")')
            engines = [e for e in engines if CONFIGS[e][0] != "ray"]
        else:
            ray.init(num_cpus=cores, include_dashboard=False)
            notes.append(f"Ray {ray.__version__}, a local instance with {cores} CPUs; CPU actors share them "
                         "equally (torch threads = CPUs per actor)")

    rows, reference = [], None
    for name in engines:
        engine, actors = CONFIGS[name]
        for sort in sorts:
            out = work / f"{name}-{'sorted' if sort else 'unsorted'}.jsonl"
            print(f"running {name}, {'length-sorted' if sort else 'input-order'} batches ...", file=sys.stderr)
            row = {"engine": name, "sorted": sort, **timed_run(corpus, out, model, engine, actors, sort, args)}
            summaries = {json.loads(line)["id"]: json.loads(line)["summary_text"] for line in out.open()}
            reference = reference or summaries
            row["same"] = sum(summaries.get(i) == text for i, text in reference.items())   # of len(reference)
            rows.append(row)
            print(f"  {row}", file=sys.stderr)

    n = len(reference or ())
    table = ["| engine | batches | docs/s | wall s | same summaries as the first |", "|---|---|---|---|---|"]
    for r in rows:
        table.append(f"| {r['engine']} | {'length-sorted' if r['sorted'] else 'input order'} | "
                     f"{r['docs_per_s']:.2f} | {r['wall_s']:.1f} | {r['same']}/{n} |")
    report = "\n".join([f"# Corpus benchmark ({args.date})", "", *[f"- {n}" for n in notes], "", *table, ""])
    print(report)
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"corpus-cpu-{cores}cores-{args.shape}-{args.date}" + (f"-{args.tag}" if args.tag else ""))
    stem.with_suffix(".md").write_text(report, encoding="utf-8")
    stem.with_suffix(".json").write_text(json.dumps({"notes": notes, "rows": rows, "lengths": lengths}, indent=2))
    print(f"wrote {stem}.md and .json", file=sys.stderr)
    return 0 if all(r["same"] == n for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
