"""The HTTP server under load: closed-loop clients against three servers of the same API.

    python benchmarks/server_bench.py                                   # 1, 4, 8, 16 clients, beam 4
    python benchmarks/server_bench.py --clients 1,2 --requests 4 --model tiny-dir --summary-lengths 8:16   # smoke
    python benchmarks/server_bench.py --mode stream                     # greedy, "stream": true: time to first token

Servers (each its own process on 127.0.0.1, POST /summarize {"inputs": text, "parameters": {"max_length": L}}):
  engine        seq2seq-kit serve --max-rows 32: the continuous-batching engine
  one           seq2seq-kit serve --max-rows <one request's rows> (num_beams): the same server answering one
                request at a time (the engine admits the next request only when the running one is done)
  transformers  transformers' generate behind a FastAPI app of this file (one generate at a time, under a lock)
Load: N clients (closed loop: each sends its next document as soon as the last is answered) share --requests
documents per level; requests/s = answered / wall time, latency = send -> answer, p50/p95/p99. --mode stream
sends greedy requests with "stream": true and also measures the time to the first token's event (ttft); the
transformers server then streams each token from its generate's streamer (put / end, as the engine's).
Documents and summary lengths as in engine_bench.py: token windows of random length in [--min-tokens,
--max-tokens] from the English articles (decoded to text here), each with its own max_length drawn from
--summary-lengths (the checkpoint forces EOS there). Checkpoint: make_checkpoints.py's distilbart (random weights,
distilbart-cnn-12-6's shape and settings), or --model DIR.
Writes benchmarks/results/server-<mode>-<date>.{json,md,png}.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import itertools
import json
import os
import random
import re
import socket
import subprocess
import sys
import tempfile
import threading
import time
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path[:0] = [str(ROOT)]

SERVERS = ("engine", "one", "transformers")


def documents(model_dir: Path, n: int, lo: int, hi: int, lengths: tuple[int, int]) -> list[dict]:
    """n request bodies: engine_bench's token windows decoded to text, each with its own max_length."""
    from engine_bench import make_requests

    from seq2seq_kit import Tokenizer

    tok = Tokenizer.from_pretrained(model_dir)
    rng = random.Random(2)
    return [{"inputs": tok.decode(ids, skip_special_tokens=True),
             "parameters": {"max_length": rng.randint(*lengths)}} for ids in make_requests(model_dir, n, lo, hi)]


def checkpoint_beams(model_dir: Path) -> int:
    """The beam width the pipeline generates with by default (its summarization settings, else the checkpoint's)."""
    config = json.loads((model_dir / "config.json").read_text())
    generation = model_dir / "generation_config.json"
    settings = json.loads(generation.read_text()) if generation.exists() else config
    task = (config.get("task_specific_params") or {}).get("summarization") or {}
    return task.get("num_beams") or settings.get("num_beams") or 1


# ---- the servers --------------------------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(server: str, model_dir: Path, port: int, num_beams: int, log) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT.parent), os.environ.get("PYTHONPATH")]))}
    if server == "transformers":
        argv = [sys.executable, __file__, "--transformers-server", str(model_dir), "--port", str(port)]
    else:
        rows = 32 if server == "engine" else num_beams
        argv = [sys.executable, "-m", "seq2seq_kit", "serve", "--model", str(model_dir), "--port", str(port),
                "--max-rows", str(rows), "--request-timeout", "3600"]
    return subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)


def wait_ready(url: str, proc: subprocess.Popen, timeout: float = 600) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            if httpx.get(url + "/health", timeout=5).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready within {timeout} s")


def transformers_app(model_dir: str):
    """transformers' generate behind FastAPI: the same /summarize and /health, one generate at a time, every torch
    call (the load included) on one worker thread. (On FastAPI's thread pool each generate would run on whichever
    thread took the request, each with its own OpenMP pool, which on 2 cores makes every parallel operation wait
    for a sleeping worker: seq2seq_kit/cpu_threads.py. That run measured 0.142 requests/s at 1 client and 0.115 at
    4 and more.)"""
    import torch
    import transformers
    from fastapi import Body, FastAPI
    from fastapi.responses import StreamingResponse

    worker = concurrent.futures.ThreadPoolExecutor(max_workers=1)
    tok = transformers.AutoTokenizer.from_pretrained(model_dir)
    model = worker.submit(lambda: transformers.AutoModelForSeq2SeqLM.from_pretrained(model_dir).eval()).result()
    app = FastAPI()

    @app.get("/health")
    def health():
        return {"status": "ready"}

    def generate(body: dict, streamer=None) -> list:
        enc = tok(body["inputs"], truncation=True, max_length=model.config.max_position_embeddings,
                  return_tensors="pt")
        with torch.inference_mode():
            out = model.generate(**enc, **body.get("parameters", {}), streamer=streamer)
        return [{"summary_text": tok.decode(out[0], skip_special_tokens=True, clean_up_tokenization_spaces=False)}]

    @app.post("/summarize")
    async def summarize(body: dict = Body()):   # the one worker serializes generate
        if not body.get("stream"):
            return await asyncio.wrap_future(worker.submit(generate, body))
        tokens = TokenStream()
        done = worker.submit(generate, body, tokens)

        async def events():
            while (token := await asyncio.to_thread(tokens.items.get)) is not None:
                yield f"data: {json.dumps({'token': {'id': token}})}\n\n"
            done.result()

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


class TokenStream:
    """generate's streamer (put / end) as a queue of token ids, None at the end; the decoder's first tokens skipped."""

    def __init__(self):
        import queue

        self.items, self.prompted = queue.Queue(), False

    def put(self, tokens) -> None:
        if self.prompted:
            for token in tokens.reshape(-1).tolist():
                self.items.put(token)
        self.prompted = True

    def end(self) -> None:
        self.items.put(None)


# ---- the load -----------------------------------------------------------------------------------------------------

def closed_loop(url: str, bodies: list[dict], clients: int) -> dict:
    """`clients` threads, each sending the next body as soon as its last one is answered, until all are sent."""
    import httpx

    queue = iter(bodies)
    take = threading.Lock()
    latencies: list[float] = []
    firsts: list[float] = []                # streams: send -> the first token's event

    def client():
        with httpx.Client(timeout=3600) as http:
            while True:
                with take:
                    body = next(queue, None)
                if body is None:
                    return
                t = time.perf_counter()
                if body.get("stream"):
                    firsts.append(streamed(http, url, body) - t)
                else:
                    http.post(url + "/summarize", json=body).raise_for_status()
                latencies.append(time.perf_counter() - t)

    start_t = time.perf_counter()
    with concurrent.futures.ThreadPoolExecutor(clients) as pool:
        for f in [pool.submit(client) for _ in range(clients)]:
            f.result()
    wall = time.perf_counter() - start_t
    ttft = {f"ttft_{q}_s": round(percentile(firsts, q), 2) for q in (50, 95)} if firsts else {}
    return {"clients": clients, "requests": len(latencies), "wall_s": round(wall, 2),
            "requests_per_s": round(len(latencies) / wall, 3), "p50_s": round(percentile(latencies, 50), 2),
            "p95_s": round(percentile(latencies, 95), 2), "p99_s": round(percentile(latencies, 99), 2), **ttft}


def streamed(http, url: str, body: dict) -> float:
    """POST a stream and read it to its end; when its first event came (time.perf_counter())."""
    first = None
    with http.stream("POST", url + "/summarize", json=body) as answer:
        answer.raise_for_status()
        for line in answer.iter_lines():
            if line.startswith("data:"):
                assert "error" not in json.loads(line[5:]), line
                first = first or time.perf_counter()
    return first


def percentile(values: list[float], q: float) -> float:
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q / 100 * (len(values) - 1))))]


def measure(server: str, args, bodies: list[dict], num_beams: int) -> list[dict]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.NamedTemporaryFile(prefix=f"server-bench-{server}-", suffix=".log", delete=False) as log:
        print(f"{server}: log in {log.name}", flush=True)
        proc = start(server, args.model_dir, port, num_beams, log)
        try:
            wait_ready(url, proc)
            closed_loop(url, bodies[:1], 1)                           # warm-up
            rows = []
            for clients in args.clients:
                count = max(args.requests, clients)
                rows.append({"server": server, **closed_loop(url, list(itertools.islice(
                    itertools.cycle(bodies), count)), clients)})
                print(rows[-1], flush=True)
            return rows
        finally:
            proc.terminate()
            proc.wait(120)


# ---- the report ---------------------------------------------------------------------------------------------------

def report(args, bodies: list[dict], rows: list[dict]) -> None:
    from machine import machine_line

    name = f"server-{args.mode}-{args.date}" + (f"-{args.tag}" if args.tag else "")
    stream = args.mode == "stream"
    lengths = [b["parameters"]["max_length"] for b in bodies]
    info = {"machine": machine_line(), "date": str(args.date), "mode": args.mode,
            "model": str(args.model_dir), "documents": len(bodies), "summary_max_lengths": sorted(lengths),
            "rows": rows}
    (args.out / f"{name}.json").write_text(json.dumps(info, indent=1))
    lines = [f"# HTTP server under closed-loop load, {info['machine']}, fp32, {args.mode}, {args.date}", "",
             f"{len(bodies)} documents of {args.min_tokens}-{args.max_tokens} tokens, max_length "
             f"{min(lengths)}-{max(lengths)}; {args.requests} requests per level (at least one per client).", "",
             "| server | clients | requests/s | p50 s | p95 s | p99 s |" + (" first token p50 s | p95 s |" if stream
                                                                          else ""),
             "|---|---:|---:|---:|---:|---:|" + ("---:|---:|" if stream else "")]
    lines += [f"| {r['server']} | {r['clients']} | {r['requests_per_s']} | {r['p50_s']} | {r['p95_s']} | "
              f"{r['p99_s']} |" + (f" {r['ttft_50_s']} | {r['ttft_95_s']} |" if stream else "") for r in rows]
    (args.out / f"{name}.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / f"{name}.png", info["machine"])
    print("\n".join(lines))


def plot(rows: list[dict], path: Path, machine: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (lat, thr) = plt.subplots(1, 2, figsize=(11, 4))
    for server in dict.fromkeys(r["server"] for r in rows):
        mine = [r for r in rows if r["server"] == server]
        x = [r["clients"] for r in mine]
        line, = lat.plot(x, [r["p50_s"] for r in mine], marker="o", label=f"{server} p50")
        lat.plot(x, [r["p95_s"] for r in mine], marker="^", linestyle="--", color=line.get_color(),
                 label=f"{server} p95")
        if "ttft_50_s" in mine[0]:
            lat.plot(x, [r["ttft_50_s"] for r in mine], marker="s", linestyle=":", color=line.get_color(),
                     label=f"{server} first token p50")
        thr.plot(x, [r["requests_per_s"] for r in mine], marker="o", label=server)
    lat.set(xlabel="concurrent clients", ylabel="latency (s)", title="latency vs load")
    thr.set(xlabel="concurrent clients", ylabel="requests/s", title="throughput vs load")
    for ax in (lat, thr):
        ax.set_xticks(sorted({r["clients"] for r in rows}))
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(machine, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=("beam", "greedy", "stream"), default="beam",
                    help="beam: the checkpoint's settings; stream: greedy, \"stream\": true")
    ap.add_argument("--clients", default="1,4,8,16", help="comma-separated client counts")
    ap.add_argument("--requests", type=int, default=32, help="requests per client count (at least one per client)")
    ap.add_argument("--min-tokens", type=int, default=100)
    ap.add_argument("--max-tokens", type=int, default=1024)
    ap.add_argument("--summary-lengths", default="56:142", help="LO:HI range of each request's max_length")
    ap.add_argument("--servers", default=",".join(SERVERS))
    ap.add_argument("--model", type=Path, help="checkpoint directory (default: make_checkpoints.py's distilbart)")
    ap.add_argument("--out", type=Path, default=ROOT / "results")
    ap.add_argument("--tag", default="", help="suffix for the result files' names, e.g. intel")
    ap.add_argument("--transformers-server", metavar="MODEL_DIR", help=argparse.SUPPRESS)
    ap.add_argument("--port", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    args.date = date.today()                # the day the run started: its files' name and report
    unknown = sorted(set(args.servers.split(",")) - set(SERVERS))
    if unknown:
        ap.error(f"unknown --servers {unknown}; choose from {', '.join(SERVERS)}")
    if args.transformers_server:
        import uvicorn

        uvicorn.run(transformers_app(args.transformers_server), host="127.0.0.1", port=args.port,
                    log_level="warning")
        return 0

    if args.model is not None and not args.model.is_dir():
        ap.error(f"--model {args.model}: no such checkpoint directory")
    if not re.fullmatch(r"\d+(,\d+)*", args.clients) or 0 in map(int, args.clients.split(",")):
        ap.error(f"--clients takes comma-separated positive integers, got {args.clients!r}")
    if not re.fullmatch(r"\d+:\d+", args.summary_lengths) or not 0 < int(args.summary_lengths.split(":")[0]) \
            <= int(args.summary_lengths.split(":")[1]):
        ap.error(f"--summary-lengths takes LO:HI with 0 < LO <= HI, got {args.summary_lengths!r}")
    if args.requests < 1 or not 1 <= args.min_tokens <= args.max_tokens:
        ap.error(f"--requests must be 1 or more and 1 <= --min-tokens <= --max-tokens, got {args.requests}, "
                 f"{args.min_tokens} and {args.max_tokens}")
    from make_checkpoints import ensure

    args.model_dir = args.model or ensure("distilbart")
    args.clients = [int(c) for c in args.clients.split(",")]
    lo, hi = map(int, args.summary_lengths.split(":"))
    bodies = documents(args.model_dir, max(args.requests, max(args.clients)), args.min_tokens, args.max_tokens,
                       (lo, hi))
    if args.mode in ("greedy", "stream"):
        for body in bodies:
            body["parameters"]["num_beams"] = 1
            if args.mode == "stream":
                body["stream"] = True
    num_beams = 1 if args.mode in ("greedy", "stream") else checkpoint_beams(args.model_dir)
    rows = []
    args.out.mkdir(parents=True, exist_ok=True)
    for server in args.servers.split(","):
        rows += measure(server, args, bodies, num_beams)
    report(args, bodies, rows)
    return 0


if __name__ == "__main__":
    sys.exit(main())
