"""Continuous batching against static batches: a stream of requests on the distilbart shape.

    python benchmarks/engine_bench.py                          # 64 requests, beam 4 (the checkpoint's settings)
    python benchmarks/engine_bench.py --mode greedy
    python benchmarks/engine_bench.py --requests 8 --quick     # a short check that everything runs

Checkpoint: make_checkpoints.py's full-size random distilbart with `--eos-bias` added to final_logits_bias[eos],
so that generated lengths spread over the checkpoint's min_length..max_length the way real summaries do (random
weights alone never emit EOS); the report gives the length distribution. Requests: token windows of uniformly
random length in [--min-tokens, --max-tokens] (100-1024) cut from the benchmark's English articles (seeded).

Servers, each in its own process (peak RSS is the process's, model included):
  one      one request at a time, model.generate on each
  static8  static batches of 8, length-sorted (as corpus jobs cut them), model.generate per padded batch
  engine   seq2seq_kit.Engine(max_rows=32)
Offline: every request queued at t=0; docs/s and generated tokens/s over the whole run.
Online: Poisson arrivals at --load x the engine's offline docs/s; latency = done - arrival, p50/p95/p99.
  Online static8 waits up to --window seconds (default 1) for 8 requests before running a batch.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import resource
import shutil
import subprocess
import sys
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT)]

SERVERS = ("one", "static8", "engine")
GREEDY = dict(num_beams=1)


def checkpoint(eos_bias: float) -> Path:
    """distilbart with eos_bias added to final_logits_bias[eos], built once under benchmarks/.cache/."""
    from make_checkpoints import ensure
    from safetensors.torch import load_file, save_file

    out = ROOT / ".cache" / f"distilbart-eos{eos_bias:g}"
    if (out / "config.json").exists():
        return out
    base = ensure("distilbart")
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.copytree(base, tmp)
    state = load_file(tmp / "model.safetensors")
    eos = json.loads((tmp / "config.json").read_text())["eos_token_id"]
    state["final_logits_bias"][0, eos] += eos_bias
    save_file(state, tmp / "model.safetensors", metadata={"format": "pt"})
    tmp.rename(out)
    return out


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


def arrivals(n: int, rate: float, seed: int = 1) -> list[float]:
    rng = random.Random(seed)
    t, out = 0.0, []
    for _ in range(n):
        out.append(t)
        t += rng.expovariate(rate)
    return out


# ---- one server, in its own process ------------------------------------------------------------------------------

def serve(server: str, model_dir: Path, requests: list[list[int]], at: list[float], kwargs: dict,
          window: float) -> dict:
    """Run `requests` arriving at times `at` (seconds from start) through `server`; per-request results."""
    import torch

    from seq2seq_kit import BartForConditionalGeneration, Engine

    model = BartForConditionalGeneration.from_pretrained(model_dir)
    done = [None] * len(requests)                     # (finish time, generated tokens)
    start = time.perf_counter()

    def wait_until(t: float) -> None:
        time.sleep(max(0.0, start + t - time.perf_counter()))

    def generated(row: torch.Tensor) -> int:
        ids = row.tolist()[1:]
        return next((i + 1 for i, t in enumerate(ids) if t == model.config.eos_token_id), len(ids))

    if server == "engine":
        with Engine(model, max_rows=32) as engine:
            futures = []
            for i, ids in enumerate(requests):
                wait_until(at[i])
                req = engine.submit(ids, **kwargs)
                req.future.add_done_callback(
                    lambda f, i=i: done.__setitem__(i, (time.perf_counter() - start, generated(f.result()[0]))))
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
            width = max(len(requests[i]) for i in ready)
            ids = torch.full((len(ready), width), model.config.pad_token_id, dtype=torch.long)
            mask = torch.zeros_like(ids)
            for row, i in enumerate(ready):
                ids[row, :len(requests[i])] = torch.tensor(requests[i])
                mask[row, :len(requests[i])] = 1
            out = model.generate(ids, mask, **kwargs)
            t = time.perf_counter() - start
            for row, i in enumerate(ready):
                done[i] = (t, generated(out[row]))
            pending = [i for i in pending if i not in ready]
    wall = max(t for t, _ in done)
    return {"server": server, "wall_s": wall, "finish": [t for t, _ in done], "tokens": [n for _, n in done],
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def run_child(args, server: str, requests, at, kwargs) -> dict:
    """serve() in a fresh process, so each server's peak memory is its own."""
    job = {"server": server, "model": str(args.model_dir), "requests": requests, "at": at, "kwargs": kwargs,
           "window": args.window}
    proc = subprocess.run([sys.executable, __file__, "--child"], input=json.dumps(job), capture_output=True,
                          text=True, check=True)
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
    ap.add_argument("--eos-bias", type=float, default=6.0)
    ap.add_argument("--load", type=float, default=0.7, help="online arrival rate, x the engine's offline docs/s")
    ap.add_argument("--window", type=float, default=1.0, help="online static batching window (s)")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--offline-only", action="store_true")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.child:
        job = json.loads(sys.stdin.read())
        print(json.dumps(serve(job["server"], Path(job["model"]), job["requests"], job["at"], job["kwargs"],
                               job["window"])))
        return 0

    args.model_dir = checkpoint(args.eos_bias)
    requests = make_requests(args.model_dir, args.requests, args.min_tokens, args.max_tokens)
    kwargs = {} if args.mode == "beam" else GREEDY
    servers = args.servers.split(",")
    rows = {"offline": [], "online": []}
    offline_at = [0.0] * len(requests)
    lengths = None
    for server in servers:
        result = run_child(args, server, requests, offline_at, kwargs)
        lengths = lengths or result["tokens"]
        rows["offline"].append(summarize(result, offline_at))
        print("offline", rows["offline"][-1], flush=True)
    engine_rate = next((r["docs_per_s"] for r in rows["offline"] if r["server"] == "engine"), None)
    if not args.offline_only and engine_rate:
        at = arrivals(len(requests), args.load * engine_rate)
        for server in servers:
            rows["online"].append(summarize(run_child(args, server, requests, at, kwargs), at))
            print("online", rows["online"][-1], flush=True)
    report(args, requests, lengths, rows, engine_rate)
    return 0


def report(args, requests, lengths, rows, engine_rate) -> None:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in open("/proc/cpuinfo") if line.startswith("model name")),
               platform.machine())
    name = f"engine-cpu-{args.mode}-{date.today()}"
    src = [len(r) for r in requests]
    info = {"machine": f"{cpu}, {torch.get_num_threads()} threads", "date": str(date.today()), "mode": args.mode,
            "requests": len(requests), "source_tokens": [min(src), sum(src) / len(src), max(src)],
            "generated_tokens": sorted(lengths), "eos_bias": args.eos_bias, "load": args.load,
            "online_rate_docs_s": None if engine_rate is None else args.load * engine_rate, "rows": rows}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / f"{name}.json").write_text(json.dumps(info, indent=1))
    lines = [f"# Engine vs static batching, {info['machine']}, fp32, {args.mode}, {date.today()}", "",
             f"{len(requests)} requests, source {min(src)}-{max(src)} tokens (mean {sum(src) / len(src):.0f}); "
             f"generated tokens min {min(lengths)} / median {sorted(lengths)[len(lengths) // 2]} / max "
             f"{max(lengths)} (EOS bias {args.eos_bias:g}).", "",
             "| arrivals | server | wall s | docs/s | tokens/s | p50 s | p95 s | p99 s | peak RSS MB |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for kind, table in rows.items():
        for r in table:
            lines.append(f"| {kind} | {r['server']} | {r['wall_s']} | {r['docs_per_s']} | {r['tokens_per_s']} | "
                         f"{r['p50_s']} | {r['p95_s']} | {r['p99_s']} | {r['peak_rss_mb']} |")
    if rows["online"]:
        lines += ["", f"Online: Poisson arrivals at {info['online_rate_docs_s']:.3f} docs/s ({args.load:g} x the "
                      f"engine's offline rate); static8 batches wait up to {args.window:g} s for 8 requests."]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    sys.exit(main())
