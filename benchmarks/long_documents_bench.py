"""Map-reduce summarization of one long document: chunks batched on the engine against chunks one at a time.

    python benchmarks/long_documents_bench.py                          # distilbart shape, a 10,000-token document
    python benchmarks/long_documents_bench.py --shape tiny --tokens 1500 --max-length 12   # a quick check

Model: `--shape distilbart` is make_checkpoints.py's full-size random-weight distilbart-cnn-12-6 with its
generation settings (beam 4, max_length 142, min_length 56, no_repeat_ngram_size 3); random weights never emit
EOS, so every summary runs to max_length and the work per chunk is fixed. `--shape tiny` is the test suite's tiny
BART (a 256-token window). Document: the benchmark's English articles (texts.py) run together, cut at the first
sentence end past `--tokens` tokens. CPU, fp32, torch's default threads.

Runs, in one process, each timed once over the whole call (tokenizing and chunking included):
  truncate      pipe(doc, truncation=True): the first window only, one generate call
  one at a time pipe(doc, strategy="map_reduce", batch_size=1): the engine holds one request at a time, so each
                chunk (and each summary join) is generated exactly as generate() alone does it, one after another
  map_reduce    pipe(doc, strategy="map_reduce", batch_size=--batch-size): the chunks decode together
The two map-reduce runs must give the same chunk summaries and the same summary (the "same" column); the exit
status is 1 where they do not.
Writes benchmarks/results/long-documents-cpu-<shape>-<date>[-<tag>].json and .md.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT), str(ROOT.parent / "tests")]


def checkpoint(shape: str) -> Path:
    if shape == "distilbart":
        from make_checkpoints import ensure

        return ensure("distilbart")
    from checkpoints import SPECS, build

    out = ROOT / ".cache" / "tiny"
    return out if (out / "config.json").exists() else build(SPECS["tiny"], out)


def make_document(pipe, tokens: int) -> str:
    """The English articles, repeated as needed, cut at the first sentence end past `tokens` tokens."""
    from texts import ENGLISH

    text = "\n\n".join(ENGLISH)
    while len(pipe.tokenizer(text)["input_ids"]) < tokens + 100:
        text += "\n\n" + "\n\n".join(ENGLISH)
    offsets = pipe.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
    cut = offsets[tokens - 1][1]
    end = re.compile(r"[.!?][\"')\]]*(?=\s|$)").search(text, cut)
    return text[:end.end() if end else len(text)]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return out, round(time.perf_counter() - start, 2)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", choices=("distilbart", "tiny"), default="distilbart")
    ap.add_argument("--tokens", type=int, default=10_000, help="document length in tokens (default: 10,000)")
    ap.add_argument("--batch-size", type=int, default=8, help="chunks decoding at once (default: 8)")
    ap.add_argument("--max-length", type=int, default=None, help="summary max_length, every stage (default: the "
                                                                  "checkpoint's)")
    ap.add_argument("--tag", default="", help="suffix for the result files' names, e.g. intel")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    args = ap.parse_args(argv)
    args.date = date.today()                # the day the run started: its files' name and report

    from seq2seq_kit import pipeline
    from seq2seq_kit.long_documents import chunk_document

    pipe = pipeline("summarization", model=str(checkpoint(args.shape)))
    kwargs = {} if args.max_length is None else {"max_length": args.max_length}
    if args.max_length is not None:
        kwargs["min_length"] = min(args.max_length, pipe.default_settings().get("min_length", 0))
    doc = make_document(pipe, args.tokens)
    length, chunks = chunk_document(pipe, doc)
    print(f"document: {len(doc)} characters, {length} tokens, {len(chunks)} chunks of "
          f"{min(len(c.row) for c in chunks)}-{max(len(c.row) for c in chunks)} tokens", flush=True)

    rows, outputs = [], {}
    runs = {"truncate": lambda: pipe(doc, truncation=True, **kwargs),
            "one at a time": lambda: pipe(doc, strategy="map_reduce", batch_size=1, return_chunks=True, **kwargs),
            "map_reduce": lambda: pipe(doc, strategy="map_reduce", batch_size=args.batch_size, return_chunks=True,
                                       **kwargs)}
    for name, run in runs.items():
        outputs[name], seconds = timed(run)
        rows.append({"run": name, "batch_size": {"truncate": 1, "one at a time": 1}.get(name, args.batch_size),
                     "wall_s": seconds})
        print(rows[-1], flush=True)
    one, batched = outputs["one at a time"][0], outputs["map_reduce"][0]
    same_chunks = sum(a["summary_text"] == b["summary_text"] for a, b in zip(one["chunks"], batched["chunks"]))
    same = f"{same_chunks}/{len(one['chunks'])} chunks, summary "
    same += "equal" if one["summary_text"] == batched["summary_text"] else "DIFFERS"
    for row in rows:
        row["same"] = same if row["run"] == "map_reduce" else ""
    speedup = rows[1]["wall_s"] / rows[2]["wall_s"] if rows[2]["wall_s"] else float("nan")

    from machine import machine_line

    info = {"machine": machine_line(), "date": str(args.date), "shape": args.shape,
            "document_tokens": length, "chunks": [len(c.row) for c in chunks],
            "settings": {**pipe.default_settings(), **kwargs}, "rows": rows, "speedup": round(speedup, 2)}
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / (f"long-documents-cpu-{args.shape}-{args.date}" + (f"-{args.tag}" if args.tag else ""))
    stem.with_suffix(".json").write_text(json.dumps(info, indent=1) + "\n")
    lines = [f"# Map-reduce of one long document, {info['machine']}, fp32, {args.date}", "",
             f"{args.shape} shape, a {length}-token document in {len(chunks)} chunks; generation settings "
             f"{info['settings']}.", "",
             "| run | chunks at once | wall s | same as one at a time |", "|---|---:|---:|---|"]
    lines += [f"| {r['run']} | {r['batch_size']} | {r['wall_s']} | {r['same']} |" for r in rows]
    lines += ["", f"Batching the chunks: {speedup:.2f}x faster than one at a time. truncate summarizes only the "
                  f"first {pipe.max_input_length} tokens."]
    stem.with_suffix(".md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0 if one == batched else 1           # the batched chunks must summarize as one at a time does


if __name__ == "__main__":
    sys.exit(main())
