"""Continuous batching against static batches: a stream of requests on the distilbart shape.

    python benchmarks/engine_bench.py                          # 64 requests, beam 4 (the checkpoint's settings)
    python benchmarks/engine_bench.py --mode greedy
    python benchmarks/engine_bench.py --requests 4 --offline-only --servers static8,engine   # a short check that it runs

Checkpoint: make_checkpoints.py's full-size random distilbart. Its random decoder's output depends on the position
far more than on the input, so an EOS bias ends every summary at the same step (measured: bias 2.5 and 3.0 both end
greedy summaries of four different inputs at 130 tokens); instead each request gets its own summary length, drawn
uniformly from the checkpoint's min_length..max_length (56..142), as its max_length (the checkpoint forces EOS
there). Static batches run to their longest member's length, as batches whose rows end by EOS at different steps
do, and count each row's own tokens. Requests: token windows of uniformly random length in [--min-tokens,
--max-tokens] (100-1024) cut from the benchmark's English articles (seeded).

Servers, each in its own process (peak RSS is the process's, model included):
  one      one request at a time, model.generate on each
  static8  static batches of 8, length-sorted (as corpus jobs cut them), model.generate per padded batch
  engine   seq2seq_kit.Engine(max_rows=32)
  engine-fixed   the same with fixed_capacity=True (the CUDA path's step, eager here; only when named)
Offline: every request queued at t=0, in a corpus job's order (longest first within each chunk of 32 documents,
  so static8 runs the length-sorted batches corpus jobs cut); docs/s and generated tokens/s over the whole run.
Online: Poisson arrivals at --load x the engine's offline docs/s; latency = done - arrival, p50/p95/p99.
  Online static8 waits up to --window seconds (default 1) for 8 requests before running a batch.
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT)]

SERVERS = ("one", "static8", "engine")
OPTIONAL = ("engine-fixed",)       # Engine(fixed_capacity=True): the CUDA step, run eagerly (not in the default set)
GREEDY = dict(num_beams=1)


def make_requests(model_dir: Path, n: int, lo: int, hi: int, seed: int = 0) -> list[list[int]]:
    """n token windows of random length in [lo, hi] (special tokens included) from the English articles."""
    from texts import ENGLISH

    from seq2seq_kit import Tokenizer

    tok = Tokenizer.from_pretrained(model_dir)
    stream = tok(" ".join(ENGLISH * 2), add_special_tokens=False)["input_ids"]
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        length = rng.randint(lo, hi) - 2
        start = rng.randrange(0, len(stream) - length)
        out.append([tok.bos_token_id, *stream[start:start + length], tok.eos_token_id])
    return out


def summary_lengths(n: int, lo: int = 56, hi: int = 142, seed: int = 2) -> list[int]:
    """Each request's max_length (start token included), uniform in [lo, hi]."""
    rng = random.Random(seed)
    return [rng.randint(lo, hi) for _ in range(n)]


def arrivals(n: int, rate: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


# ---- one server, in its own process ------------------------------------------------------------------------------

def serve(server: str, model_dir: Path, requests: list[list[int]], lengths: list[int], at: list[float],
          kwargs: dict, window: float) -> dict:
    """Run `requests` arriving at times `at` (seconds from start) through `server`; per-request results."""
    from seq2seq_kit import BartForConditionalGeneration, Engine

    model = BartForConditionalGeneration.from_pretrained(model_dir)
    done = [None] * len(requests)                     # (finish time, generated tokens)
    start = time.perf_counter()

    def wait_until(t: float) -> None:
        time.sleep(max(0.0, start + t - time.perf_counter()))

    if server.startswith("engine"):
        with Engine(model, max_rows=32, fixed_capacity=server == "engine-fixed") as engine:
            futures = []
            for i, ids in enumerate(requests):
                wait_until(at[i])
                req = engine.submit(ids, max_length=lengths[i], **kwargs)
                req.future.add_done_callback(
                    lambda f, i=i: done.__setitem__(i, (time.perf_counter() - start, f.result().shape[1] - 1)))
                futures.append(req)
            for req in futures:
                req.result()
    else:
        size = 1 if server == "one" else 8
        pending = list(range(len(requests)))
        while pending:
            wait_until(at[pending[0]])                          # the oldest request has arrived
            if size > 1:                                        # static batching: fill the batch or the window
                deadline = at[pending[0]] + window
                while True:
                    now = time.perf_counter() - start
                    arrived = sum(at[i] <= now for i in pending)
                    if arrived >= size or arrived == len(pending) or now >= deadline:
                        break
                    time.sleep(0.005)
            now = time.perf_counter() - start
            ready = [i for i in pending if at[i] <= now][:size]
            ready.sort(key=lambda i: -len(requests[i]))         # length-sorted within what has arrived
            ids, mask = padded([requests[i] for i in ready], model.config.pad_token_id)
            model.generate(ids, mask, max_length=max(lengths[i] for i in ready), **kwargs)
            t = time.perf_counter() - start
            for i in ready:
                done[i] = (t, lengths[i] - 1)
            pending = [i for i in pending if i not in ready]
    from engines import hwm_mb           # VmHWM: ru_maxrss would count the parent's peak (Linux keeps it across exec)

    wall = max(t for t, _ in done)
    return {"server": server, "wall_s": wall, "finish": [t for t, _ in done], "tokens": [n for _, n in done],
            "peak_rss_mb": hwm_mb()}


def padded(rows: list[list[int]], pad: int):
    """Token id lists -> right-padded ids [B, S_max] and attention mask [B, S_max] (LongTensors)."""
    import torch

    ids = torch.full((len(rows), max(map(len, rows))), pad, dtype=torch.long)
    mask = torch.zeros_like(ids)
    for row, r in enumerate(rows):
        ids[row, :len(r)], mask[row, :len(r)] = torch.tensor(r), 1
    return ids, mask


def corpus_order(requests: list[list[int]]) -> list[int]:
    """The order a corpus job submits documents in: longest first within each chunk of BATCHES_PER_CHUNK
    batches of 8 (corpus/driver.py), so its static batches of 8 are length-sorted as they are today."""
    from seq2seq_kit.corpus.driver import BATCHES_PER_CHUNK

    chunk = BATCHES_PER_CHUNK * 8
    return [i for c in range(0, len(requests), chunk)
            for i in sorted(range(c, min(c + chunk, len(requests))), key=lambda i: -len(requests[i]))]


def static_bound(model_dir: Path, requests: list[list[int]], lengths: list[int], static_wall: float) -> dict:
    """What continuous batching can gain over static batches of 8 here, by Amdahl: only the decoder steps a static
    batch spends on inputs already finished can be saved, and the padding of its encoder passes. Times static8's
    encoder passes (the same padded batches, in a fresh model) and each input's encoder pass alone (no padding, as
    an engine may run it), counts static8's input-steps against the inputs' own, and returns the engine's best docs/s
    ratio over static8 at static8's cost per input-step, with static8's encoder passes and with the cheaper of the
    two."""
    from seq2seq_kit import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(model_dir)
    model.encode(*padded(requests[:8], model.config.pad_token_id))        # warm-up: its first call is not timed
    encoder_s, alone_s, batch_steps, own_steps = 0.0, 0.0, 0, 0
    for b in range(0, len(requests), 8):
        batch = sorted(range(b, min(b + 8, len(requests))), key=lambda i: -len(requests[i]))
        ids, mask = padded([requests[i] for i in batch], model.config.pad_token_id)
        encoder_s += timed(lambda: model.encode(ids, mask))
        alone_s += sum(timed(lambda: model.encode(ids[row:row + 1, :len(requests[i])]))
                       for row, i in enumerate(batch))
        batch_steps += len(batch) * (max(lengths[i] for i in batch) - 1)    # decoder steps: max_length - 1
        own_steps += sum(lengths[i] - 1 for i in batch)
    decode_s = static_wall - encoder_s
    decode_best = decode_s * own_steps / batch_steps
    return {"static8_encoder_s": round(encoder_s, 1), "static8_decode_s": round(decode_s, 1),
            "inputs_alone_encoder_s": round(alone_s, 1),
            "static8_input_steps": batch_steps, "inputs_own_steps": own_steps,
            "engine_best_vs_static8": round(static_wall / (encoder_s + decode_best), 3),
            "engine_best_unpadded_vs_static8": round(static_wall / (min(encoder_s, alone_s) + decode_best), 3)}


def timed(fn) -> float:
    """Seconds fn() takes."""
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def run_child(args, server: str, requests, lengths, at, kwargs) -> dict:
    """serve() in a fresh process, so each server's peak memory is its own."""
    job = {"server": server, "model": str(args.model_dir), "requests": requests, "lengths": lengths, "at": at,
           "kwargs": kwargs, "window": args.window}
    proc = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(job), stdout=subprocess.PIPE,
                          text=True)                                # its stderr (warnings, a traceback) shows here
    if proc.returncode != 0:
        raise SystemExit(f"engine_bench: the {server} server's process failed (exit {proc.returncode}): "
                         "its error is printed above")
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ---- the report -------------------------------------------------------------------------------------------------

def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def summarize(result: dict, at: list[float]) -> dict:
    latency = [f - a for f, a in zip(result["finish"], at)]
    return {"server": result["server"], "wall_s": round(result["wall_s"], 2),
            "docs_per_s": round(len(at) / result["wall_s"], 3),
            "tokens_per_s": round(sum(result["tokens"]) / result["wall_s"], 1),
            "p50_s": round(percentile(latency, 50), 2), "p95_s": round(percentile(latency, 95), 2),
            "p99_s": round(percentile(latency, 99), 2), "peak_rss_mb": round(result["peak_rss_mb"])}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("beam", "greedy"), default="beam", help="beam: the checkpoint's settings")
    ap.add_argument("--requests", type=int, default=64)
    ap.add_argument("--min-tokens", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--load", type=float, default=0.7, help="online arrival rate, x the engine's offline docs/s")
    ap.add_argument("--window", type=float, default=1.0, help="online static batching window (s)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--offline-only", action="store_true")
    ap.add_argument("--bound", action="store_true",
                    help="also: the engine's best possible docs/s over static8 here (static_bound)")
    ap.add_argument("--tag", default="", help="suffix for the result files' names, e.g. intel")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.date = date.today()                # the day the run started: its files' name and report
    unknown = set(args.servers.split(",")) - set(SERVERS + OPTIONAL)
    if unknown:
        ap.error(f"unknown --servers {sorted(unknown)}; choose from {', '.join(SERVERS + OPTIONAL)}")
    if args.bound and "static8" not in args.servers.split(","):
        ap.error("--bound compares with static8's run: include static8 in --servers")
    if not args.offline_only and "engine" not in args.servers.split(","):
        ap.error("the online arrivals come at --load x the engine's offline docs/s: include engine in --servers, "
                 "or pass --offline-only")
    if args.requests < 1 or not 1 <= args.min_tokens <= args.max_tokens:
        ap.error(f"--requests must be 1 or more and 1 <= --min-tokens <= --max-tokens, got {args.requests}, "
                 f"{args.min_tokens} and {args.max_tokens}")
    if args.load <= 0 or args.window < 0:
        ap.error(f"--load must be above 0 and --window 0 or more, got {args.load} and {args.window}")
    if args.child:
        job = json.loads(sys.stdin.read())
        print(json.dumps(serve(job["server"], Path(job["model"]), job["requests"], job["lengths"], job["at"],
                               job["kwargs"], job["window"])))
        return 0

    from make_checkpoints import ensure

    args.model_dir = ensure("distilbart")
    requests = make_requests(args.model_dir, args.requests, args.min_tokens, args.max_tokens)
    summaries = summary_lengths(len(requests))
    order = corpus_order(requests)
    kwargs = {} if args.mode == "beam" else GREEDY
    servers = args.servers.split(",")
    rows = {"offline": [], "online": []}
    offline_at = [0.0] * len(requests)
    lengths = None
    for server in servers:
        result = run_child(args, server, [requests[i] for i in order], [summaries[i] for i in order], offline_at,
                           kwargs)
        lengths = lengths or result["tokens"]
        rows["offline"].append(summarize(result, offline_at))
        print("offline", rows["offline"][-1], flush=True)
    bound = None
    if args.bound:
        static = next(r for r in rows["offline"] if r["server"] == "static8")
        bound = static_bound(args.model_dir, [requests[i] for i in order], [summaries[i] for i in order],
                             static["wall_s"])
        print("bound", bound, flush=True)
    engine_rate = next((r["docs_per_s"] for r in rows["offline"] if r["server"] == "engine"), None)
    if not args.offline_only:
        at = arrivals(len(requests), args.load * engine_rate)
        for server in servers:
            rows["online"].append(summarize(run_child(args, server, requests, summaries, at, kwargs), at))
            print("online", rows["online"][-1], flush=True)
    report(args, requests, lengths, rows, engine_rate, bound)
    return 0


def report(args, requests, lengths, rows, engine_rate, bound) -> None:
    from machine import machine_line

    name = f"engine-cpu-{args.mode}-{args.date}" + (f"-{args.tag}" if args.tag else "")
    src = [len(r) for r in requests]
    info = {"machine": machine_line(), "date": str(args.date), "mode": args.mode,
            "requests": len(requests), "source_tokens": [min(src), sum(src) / len(src), max(src)],
            "generated_tokens": sorted(lengths), "load": args.load,
            "online_rate_docs_s": None if engine_rate is None else args.load * engine_rate, "rows": rows,
            "bound": bound}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(info, indent=1))
    lines = [f"# Engine vs static batching, {info['machine']}, fp32, {args.mode}, {args.date}", "",
             f"{len(requests)} requests, source {min(src)}-{max(src)} tokens (mean {sum(src) / len(src):.0f}); "
             f"generated tokens min {min(lengths)} / median {sorted(lengths)[len(lengths) // 2]} / max "
             f"{max(lengths)} (each request's max_length, uniform in 56..142).", "",
             "| arrivals | server | wall s | docs/s | tokens/s | p50 s | p95 s | p99 s | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, table in rows.items():
        for r in table:
            lines.append(f"| {kind} | {r['server']} | {r['wall_s']} | {r['docs_per_s']} | {r['tokens_per_s']} | "
                         f"{r['p50_s']} | {r['p95_s']} | {r['p99_s']} | {r['peak_rss_mb']} |")
    if rows["online"]:
        lines += ["", f"Online: Poisson arrivals at {info['online_rate_docs_s']:.3f} docs/s ({args.load:g} x the "
                      f"engine's offline rate); static8 batches wait up to {args.window:g} s for 8 requests."]
    if bound:
        lines += ["", f"Bound (--bound): static8's encoder passes take {bound['static8_encoder_s']} s of its "
                      f"{bound['static8_encoder_s'] + bound['static8_decode_s']:.1f} s; its batches run "
                      f"{bound['static8_input_steps']} input-steps (inputs x decoder steps) where the inputs need "
                      f"{bound['inputs_own_steps']}, so an engine at static8's cost per input-step reaches at "
                      f"best {bound['engine_best_vs_static8']}x static8's docs/s; encoding each input alone (no "
                      f"padding) takes {bound['inputs_alone_encoder_s']} s, and charged the cheaper encoder, "
                      f"{bound['engine_best_unpadded_vs_static8']}x."]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
