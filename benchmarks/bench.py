"""Benchmark seq2seq_kit against transformers and CTranslate2 on full-size BART shapes.

    python benchmarks/bench.py                       # CPU, both models, batch 1 and 8, greedy and beam 4
    python benchmarks/bench.py --quick               # smoke run: 1 repeat, max_length 24
    python benchmarks/bench.py --models distilbart --batch 1 --modes greedy,beam4 --repeats 5
    python benchmarks/bench.py --device cuda --dtype bfloat16          # GPU: batch 1 and 32 by default
    python benchmarks/bench.py --models distilbart --batch 1 --isa avx2  # every engine's AVX2 code (AVX-512 CPUs)
    python benchmarks/bench.py --models distilbart --batch 1 --modes contrastive,diverse8,constrained4 \
        --engines seq2seq_kit,transformers-4.55       # the searches transformers 5 moved to the Hub, against 4.55.4

Every engine runs in a worker process of its own (engines.py), all loaded side by side. Each
round visits the workers in turn (in a new seeded random order each round, so no engine always follows
the same neighbour, e.g. CTranslate2's still-spinning OpenMP threads) and each runs the encoder alone,
then the whole generation, so slow drift of the machine hits every engine alike. One warm-up round
is excluded, then the median of --repeats rounds is reported. Writes
benchmarks/results/<device>-<date>.{json,md,png}; see README.md.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import random
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT))

import convert_ct2  # noqa: E402
import make_checkpoints  # noqa: E402
import venvs  # noqa: E402
from engines import ENGINES, ISAS  # noqa: E402
from texts import documents  # noqa: E402

RESULTS = ROOT / "results"
LOGS = ROOT / ".cache" / "logs"
# each mode's generate settings over the checkpoint's; constrained4 forces the first input's 11th token (a word of
# the document) into every summary
MODES = {"greedy": dict(num_beams=1), "beam4": dict(num_beams=4),
         "contrastive": dict(num_beams=1, penalty_alpha=0.6, top_k=4),
         "diverse8": dict(num_beams=8, num_beam_groups=4, diversity_penalty=1.0),
         "constrained4": dict(num_beams=4)}
# the searches transformers 5 no longer runs itself (Hub remote code) and CTranslate2 does not have: their reference
# is transformers 4.55.4 (engine "transformers-4.55"), the last release whose generate ran them
MOVED = ("contrastive", "diverse8", "constrained4")
INPUT_TOKENS = 512
REFERENCE = "transformers"
MOVED_REFERENCE = "transformers-4.55"
DTYPE_BYTES = {"float32": 4, "float16": 2, "bfloat16": 2}
# --isa avx2: every engine runs its AVX2 code on an AVX-512 CPU, as on a CPU without AVX-512 (Zen 3 and older, many
# Intel client parts): torch's own kernels, oneDNN, MKL, fbgemm (int8) and CTranslate2 capped by their environment
# variables, seq2seq_kit's gemv by engines.py. Its kernel timings are cached apart from the native ones.
AVX2_ENV = dict(ATEN_CPU_CAPABILITY="avx2", ONEDNN_MAX_CPU_ISA="AVX2", MKL_ENABLE_INSTRUCTIONS="AVX2",
                FBGEMM_ENABLE_INSTRUCTIONS="AVX2", CT2_FORCE_CPU_ISA="AVX2",
                XDG_CACHE_HOME=str(ROOT / ".cache" / "isa-avx2"))
# transformers' defaults for the generation settings CTranslate2 must be told explicitly.
GENERATION_DEFAULTS = dict(max_length=20, min_length=0, no_repeat_ngram_size=0, length_penalty=1.0,
                           num_beams=1, early_stopping=False, forced_bos_token_id=None)


# ---------------------------------------------------------------------------------------------
# Workers


class Worker:
    """One engine in its own process (engines.py), driven by JSON lines."""

    def __init__(self, engine: str, model: str, checkpoint: Path, ct2_dir: Path | None, args):
        LOGS.mkdir(parents=True, exist_ok=True)
        self.engine, self.log = engine, LOGS / f"{model}-{engine}.log"
        python = venvs.transformers_4_55() if engine == MOVED_REFERENCE else sys.executable
        cmd = [str(python), str(ROOT / "engines.py"), engine, str(checkpoint), "--device", args.device,
               "--dtype", args.dtype, "--threads", str(args.threads)]
        if ct2_dir is not None:
            cmd += ["--ct2-dir", str(ct2_dir)]
        env = dict(os.environ, OMP_NUM_THREADS=str(args.threads), MKL_NUM_THREADS=str(args.threads),
                   TOKENIZERS_PARALLELISM="false")
        if args.isa == "avx2":
            cmd += ["--isa", "avx2"]
            env.update(AVX2_ENV)
        self.stderr = open(self.log, "w")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.stderr, text=True, env=env)
        self.ready = self._read()

    def _read(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait()
            tail = self.log.read_text()[-1500:].strip()
            return {"error": f"worker exited with code {self.proc.returncode}; log {self.log}:\n{tail}"}
        return json.loads(line)

    def request(self, op: str, batch: dict, options: dict) -> dict:
        msg = {"op": op, "input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"],
               "options": options}
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            pass  # the worker died: _read reports its exit code and log
        return self._read()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
        self.stderr.close()


def interleaved(workers: dict[str, Worker], batch: dict, options: dict, warmup: int,
                repeats: int) -> dict[str, list[dict]]:
    """Encode then generate on every worker, round after round, each round in its own seeded random order
    (rotating it, an engine mostly followed the same neighbour); drop the warm-up
    rounds. Each generate reply gets the encoder time measured just before it ("encoder_seconds"), so
    the decoder time of a round is the difference of two adjacent measurements."""
    runs: dict[str, list[dict]] = {name: [] for name in workers}
    names = list(workers)
    for r in range(warmup + repeats):
        order = random.Random(r).sample(names, len(names))
        for name in order:
            if name not in workers:  # failed earlier in this case
                continue
            enc = workers[name].request("encode", batch, options)
            reply = enc if "error" in enc else workers[name].request("generate", batch, options)
            if "error" in reply:
                runs[name] = [reply]
                workers = {k: v for k, v in workers.items() if k != name}
            elif r >= warmup:
                runs[name].append({**reply, "encoder_seconds": enc["seconds"]})
    return runs


# ---------------------------------------------------------------------------------------------
# Checkpoint facts


def generation_settings(checkpoint: Path) -> dict:
    """The checkpoint's generation defaults as transformers resolves them: generation_config.json if
    present, else the generation keys of config.json, else the library defaults."""
    config = json.loads((checkpoint / "config.json").read_text())
    gen_file = checkpoint / "generation_config.json"
    source = json.loads(gen_file.read_text()) if gen_file.exists() else config
    settings = {k: source.get(k, v) for k, v in GENERATION_DEFAULTS.items()}
    for k in ("decoder_start_token_id", "eos_token_id", "pad_token_id"):
        settings[k] = source.get(k, config.get(k))
    return settings


def step_floor_bytes(checkpoint: Path, dtype: str, batch: int, source_len: int) -> dict:
    """Bytes one decoder step must read at least: every decoder weight matrix used per step (self-attention
    q/k/v/out, cross-attention q/out, FFN, layer norms), the LM head and its bias, and the cross-attention K/V
    of the `batch` inputs. The embedding lookup reads one row; cross-attention k/v projections run once.
    int8_bytes: all of it as the int8 engines read it: int8 matrices (one byte a weight, a float32 scale per output
    row), vectors and the K/V in float32."""
    c = json.loads((checkpoint / "config.json").read_text())
    d, f, v, n = c["d_model"], c["decoder_ffn_dim"], c["vocab_size"], c["decoder_layers"]
    matrices = n * (4 * d * d + 2 * d * d + 2 * d * f) + v * d     # + the LM head
    rows = n * (4 * d + 2 * d + f + d) + v                          # their output rows
    vectors = n * (4 * d + 2 * d + f + d + 3 * 2 * d) + v + 2 * d   # biases, layer norms, final_logits_bias
    cross_kv = 2 * n * batch * source_len * d
    elem = DTYPE_BYTES[dtype]
    return {"weight_bytes": (matrices + vectors) * elem, "cross_kv_bytes": cross_kv * elem,
            "int8_bytes": matrices + 4 * (rows + vectors + cross_kv), "params_per_step": matrices + vectors}


def floor_of(case: dict, engine: str) -> float:
    """The engine's weight-streaming floor in ms/step: its int8 one for an int8 engine."""
    return case["floor_int8_ms_per_step"] if engine.endswith("-int8") else case["floor_ms_per_step"]


def inputs(model: str, checkpoint: Path, batch: int) -> dict:
    """`batch` different documents (cycled past eight) through seq2seq_kit's tokenizer (the checkpoint's family's:
    BART's, or opus-mt's SentencePiece one), truncated to 512 tokens."""
    from seq2seq_kit import AutoTokenizer

    docs = documents(model)
    texts = [docs[i % len(docs)] for i in range(batch)]
    enc = AutoTokenizer.from_pretrained(checkpoint)(texts, padding=True, truncation=True, max_length=INPUT_TOKENS)
    return {"input_ids": [list(r) for r in enc["input_ids"]], "attention_mask": [list(r) for r in enc["attention_mask"]]}


# ---------------------------------------------------------------------------------------------
# Machine


def memory_bandwidth(device: str, threads: int, mib: int = 512, rounds: int = 20) -> float:
    """Copy bandwidth in GB/s (bytes read + bytes written per second) of a large tensor copy."""
    import torch

    torch.set_num_threads(threads)
    n = mib * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(rounds):
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        dst.copy_(src)
        if device == "cuda":
            torch.cuda.synchronize()
        best = min(best, time.perf_counter() - start)
    return 2 * n * 4 / best / 1e9


def machine(args) -> dict:
    import torch

    info = {"device": args.device, "threads": args.threads, "cpu_count": len(os.sched_getaffinity(0)),
            "platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__}
    from seq2seq_kit.kernel_choice import cpu_name, gemv_status

    info["cpu"] = cpu_name()                 # model name, family/model/stepping and ISA: "AMD EPYC (family 25 ...)"
    info["gemv"] = gemv_status()             # seq2seq_kit's own kernel: "AVX-512", "AVX2" or why it cannot run
    if args.isa == "avx2":
        info["isa"] = "AVX2 forced (" + ", ".join(f"{k}={v}" for k, v in AVX2_ENV.items() if k != "XDG_CACHE_HOME") \
            + "; seq2seq_kit's gemv at its AVX2 code)"
        info["gemv"] = "AVX2 (forced)"
    if args.device == "cuda":
        info["gpu"] = torch.cuda.get_device_name(0)
    try:
        info["seq2seq_kit_commit"] = subprocess.run(["git", "describe", "--always", "--dirty"], cwd=ROOT,
                                                    capture_output=True, text=True).stdout.strip()
    except OSError:
        pass
    return info


def device_name(info: dict, dtype: str) -> str:
    if info["device"] == "cuda":
        name = re.sub(r"[^a-z0-9]+", "-", info["gpu"].lower()).strip("-")
    else:
        name = f"cpu-{info['cpu_count']}cores"
    return name if dtype == "float32" else f"{name}-{dtype}"


# ---------------------------------------------------------------------------------------------
# Figures


def generated(seq: list[int], eos_id: int) -> list[int]:
    """The generated tokens of one output row: no decoder start token, up to and including the first eos."""
    out = []
    for t in seq[1:]:
        out.append(t)
        if t == eos_id:
            break
    return out


def identity(rows: list[list[int]], ref: list[list[int]], max_new: int) -> dict:
    """Per row: identical to the reference, or the index (in generated tokens) of the first difference.
    `only_forced_eos`: every difference is the reference's last token at max_length, the eos that
    transformers forces there (forced_eos_token_id) and CTranslate2 has no option for."""
    firsts = []
    for a, b in zip(rows, ref):
        i = next((k for k, (x, y) in enumerate(zip(a, b)) if x != y), None)
        if i is None and len(a) != len(b):
            i = min(len(a), len(b))
        firsts.append(i)
    forced = all(i is None or (i == len(b) - 1 == len(a) - 1 == max_new - 1) for i, a, b in zip(firsts, rows, ref))
    return {"identical_rows": sum(i is None for i in firsts), "rows": len(firsts), "first_divergence": firsts,
            "only_forced_eos": forced and any(i is not None for i in firsts)}


def summarize(runs: list[dict], settings: dict) -> dict:
    """Median timings and the derived figures of one engine on one case."""
    if not runs or "error" in runs[0]:
        return {"error": runs[0]["error"] if runs else "no run"}
    e2e = [r["seconds"] for r in runs]
    rows = [generated(s, settings["eos_token_id"]) for s in runs[0]["sequences"]]
    stable = all(r["sequences"] == runs[0]["sequences"] for r in runs)
    median = statistics.median(e2e)
    steps = max(len(r) for r in rows)
    tokens = sum(len(r) for r in rows)
    peaks = [r["peak_mb"] for r in runs if r.get("peak_mb") is not None]
    enc = [r["encoder_seconds"] for r in runs]
    decoder = [(r["seconds"] - r["encoder_seconds"]) / steps * 1e3 for r in runs] if steps else []
    ms_per_step = statistics.median(decoder) if decoder else None
    if ms_per_step is not None and ms_per_step <= 0:     # the encoder timed apart ran slower than the whole call:
        ms_per_step = None                               # noise (a busy machine, one round), shown as "-"
    out = {"e2e_s": median, "e2e_samples_s": e2e, "encoder_s": statistics.median(enc), "encoder_samples_s": enc,
           "ms_per_step": ms_per_step, "steps": steps,
           "generated_lengths": [len(r) for r in rows], "tokens_per_s": tokens / median,
           "peak_mb": max(peaks) if peaks else None, "deterministic": stable, "tokens": rows}
    return out


def compare(case: dict, max_new: int) -> None:
    """Ratios and token identity of each engine against the case's reference (transformers; for the moved searches
    transformers 4.55), in place."""
    ref = case["engines"].get(case["reference"])
    if not ref or "error" in ref:
        return
    for name, r in case["engines"].items():
        if "error" in r:
            continue
        r["speedup_vs_transformers"] = ref["e2e_s"] / r["e2e_s"]
        r["tokens_per_s_vs_transformers"] = r["tokens_per_s"] / ref["tokens_per_s"]
        if r["peak_mb"] and ref["peak_mb"]:
            r["memory_vs_transformers"] = r["peak_mb"] / ref["peak_mb"]
        r["identity_vs_transformers"] = identity(r["tokens"], ref["tokens"], max_new)


# ---------------------------------------------------------------------------------------------
# Run


def run_model(model: str, args, bandwidth: float) -> dict:
    checkpoint = make_checkpoints.ensure(model)
    settings = generation_settings(checkpoint)
    overrides = {}
    if args.quick:
        overrides = {"max_length": 24, "min_length": 8}
    effective = {**settings, **overrides}
    report = {"checkpoint": str(checkpoint), "generation_settings": settings, "overrides": overrides,
              "missing": {}, "load": {}, "cases": []}

    ct2_dir = None
    if any(e.startswith("ct2") for e in args.engines):
        try:
            ct2_dir = convert_ct2.ensure_converted(checkpoint, ROOT / ".cache" / f"{model}-ct2")
        except Exception as e:  # noqa: BLE001 - reported, the other engines still run
            for e_name in [e for e in args.engines if e.startswith("ct2")]:
                report["missing"][e_name] = f"conversion failed: {e}"

    workers: dict[str, Worker] = {}
    for engine in args.engines:
        if engine in report["missing"]:
            continue
        print(f"[{model}] loading {engine} ...", flush=True)
        try:
            w = Worker(engine, model, checkpoint, ct2_dir, args)
        except Exception as e:  # noqa: BLE001 - its venv could not be built (offline?): reported, the others run
            report["missing"][engine] = f"could not start: {e}"
            print(f"[{model}] {engine} unavailable: {e}", flush=True)
            continue
        if "error" in w.ready:
            report["missing"][engine] = w.ready["error"]
            print(f"[{model}] {engine} unavailable: {w.ready['error']}", flush=True)
            w.close()
        else:
            workers[engine] = w
            report["load"][engine] = w.ready
    try:
        ct2_settings = dict(effective)
        if effective.get("forced_bos_token_id") is not None and ct2_dir is not None:
            vocab = json.loads((ct2_dir / "shared_vocabulary.json").read_text())
            ct2_settings["forced_bos_token"] = vocab[effective["forced_bos_token_id"]]
        for batch_size in args.batch:
            batch = inputs(model, checkpoint, batch_size)
            lengths = [sum(m) for m in batch["attention_mask"]]
            print(f"[{model}] batch {batch_size}: input lengths {sorted(set(lengths))}", flush=True)
            floor = step_floor_bytes(checkpoint, args.dtype, batch_size, max(lengths))
            floor_bytes = floor["weight_bytes"] + floor["cross_kv_bytes"]
            for mode in args.modes:
                options = {**mode_settings(mode, batch), **overrides, "ct2": ct2_settings}
                print(f"[{model}] batch {batch_size} {mode} ...", flush=True)
                t0 = time.perf_counter()
                runners = {n: w for n, w in workers.items() if mode not in MOVED or n not in NO_MOVED_SEARCHES}
                runs = interleaved(runners, batch, options, args.warmup, args.repeats)
                case = {"batch": batch_size, "mode": mode, "input_lengths": lengths,
                        "reference": MOVED_REFERENCE if mode in MOVED else REFERENCE,
                        "settings": {k: v for k, v in options.items() if k != "ct2"},
                        "floor_ms_per_step": floor_bytes / (bandwidth * 1e9) * 1e3,
                        "floor_int8_ms_per_step": floor["int8_bytes"] / (bandwidth * 1e9) * 1e3, **floor,
                        "engines": {n: summarize(r, effective) for n, r in runs.items()}}
                compare(case, effective["max_length"] - 1)
                report["cases"].append(case)
                print(f"[{model}] batch {batch_size} {mode} done in {time.perf_counter() - t0:.0f}s", flush=True)
                print(case_lines(case), flush=True)
    finally:
        for w in workers.values():
            w.close()
    return report


# the engines that do not run the moved searches: transformers 5 (remote code from the Hub) and CTranslate2
NO_MOVED_SEARCHES = ("transformers", "ct2", "ct2-int8")


def mode_settings(mode: str, batch: dict) -> dict:
    """A mode's generate settings for this batch (constrained4: the first input's 11th token forced)."""
    if mode == "constrained4":
        return {**MODES[mode], "force_words_ids": [[batch["input_ids"][0][10]]]}
    return dict(MODES[mode])


def case_lines(case: dict) -> str:
    lines = []
    for name, r in case["engines"].items():
        if "error" in r:
            lines.append(f"    {name:13s} ERROR {r['error'][:300]}")
            continue
        ident = r.get("identity_vs_transformers")
        lines.append(
            f"    {name:13s} e2e {r['e2e_s']:7.2f}s  enc {fmt(r['encoder_s'], 1e3, '.0f')}ms  "
            f"step {fmt(r['ms_per_step'], 1, '.1f')}ms (floor {floor_of(case, name):.1f})  "
            f"{r['tokens_per_s']:6.1f} tok/s  peak {fmt(r['peak_mb'], 1, '.0f')}MB  "
            f"x{r.get('speedup_vs_transformers', float('nan')):.2f}  {identity_text(ident)}  "
            f"lengths {r['generated_lengths']}")
    return "\n".join(lines)


def fmt(x, scale: float, spec: str) -> str:
    return "-" if x is None else format(x * scale, spec)


def ratio(x) -> str:
    """A ratio to transformers' figure: "-" where transformers did not run."""
    return "-" if x is None else f"{x:.2f}x"


def identity_text(ident: dict | None) -> str:
    if ident is None:
        return "n/a"
    if ident["identical_rows"] == ident["rows"]:
        return "identical"
    firsts = [i for i in ident["first_divergence"] if i is not None]
    text = f"{ident['identical_rows']}/{ident['rows']} rows identical, first divergence at {min(firsts)}"
    return text + (" (only the forced eos at max_length)" if ident["only_forced_eos"] else "")


def varied(case: dict, r: dict) -> str:
    """A note where this engine's tokens, or the reference's, changed between rounds (GPU fp16/bf16 kernels need not
    be deterministic): the identity column compares the first round's."""
    ref = case["engines"].get(case.get("reference", REFERENCE)) or {}
    stable = r["deterministic"] and ref.get("deterministic", True)
    return "" if stable else " (tokens varied between rounds; round 1 compared)"


# ---------------------------------------------------------------------------------------------
# Output


def markdown(result: dict) -> str:
    m = result["machine"]
    where = m.get("gpu") or m["cpu"] + (f"; {m['isa']}" if "isa" in m else "")
    out = [f"# Benchmark {result['name']}", "",
           f"- machine: {where}; {m['cpu_count']} CPU cores, {m['threads']} torch/CTranslate2 threads; "
           f"dtype {result['dtype']}; torch {m['torch']}, Python {m['python']}; seq2seq_kit {m.get('seq2seq_kit_commit', '?')}",
           "- engines: " + ", ".join(f"{n} {v}" for n, v in result["versions"].items()),
           *[f"- seq2seq_kit CPU matmul kernels ({model}, measured at load; gemv: {m.get('gemv', '?')}): {kernels}"
             for model, rep in result["models"].items()
             if (kernels := rep["load"].get("seq2seq_kit", {}).get("kernels"))],
           f"- memory bandwidth (large copy, read + write): {result['bandwidth_gbs']:.1f} GB/s",
           *([f"- the searches transformers 5 moved to the Hub ({', '.join(MOVED)}: "
              + "; ".join(f"{k} {v}" for k, v in MODES.items() if k in MOVED)
              + "; constrained4 forces the first input's 11th token) are compared with transformers 4.55.4, the last "
              "release that ran them itself: the \"vs transformers\" columns read \"vs transformers 4.55\" there"]
             if any(c["mode"] in MOVED for rep in result["models"].values() for c in rep["cases"]) else []),
           f"- {result['warmup']} warm-up round excluded, median of {result['repeats']} rounds; engines interleaved"
           + (" — QUICK smoke run (max_length 24): not a result" if result["quick"] else ""),
           "- ms/step = median over rounds of (end-to-end - the encoder time measured just before) / longest "
           "generated row (a beam search whose returned rows end before its last step is overstated); floor = bytes of decoder weights + LM head + cross-attention K/V read per step / "
           "measured bandwidth (int8 engines: one byte a weight); peak = "
           + ("torch.cuda.max_memory_allocated" if m["device"] == "cuda" else
              "peak RSS of the engine's own process during the call, minus its RSS before loading the model"),
           ""]
    for model, rep in result["models"].items():
        s = rep["generation_settings"]
        out += [f"## {model}", "",
                f"checkpoint settings: num_beams {s['num_beams']}, max_length {s['max_length']}, min_length "
                f"{s['min_length']}, no_repeat_ngram_size {s['no_repeat_ngram_size']}, length_penalty "
                f"{s['length_penalty']}, early_stopping {s['early_stopping']}"
                + (f"; overridden: {rep['overrides']}" if rep["overrides"] else ""), ""]
        for name, why in rep["missing"].items():
            out.append(f"- **{name} not run**: {' '.join(why.split())[:400]}")
        if rep["missing"]:
            out.append("")
        out += ["| batch | mode | engine | encoder ms | end-to-end s | ms/step | floor ms/step | tokens/s | "
                "peak MB | speed vs transformers | tokens/s vs tf | memory vs tf | tokens vs transformers | lengths |",
                "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---|"]
        for case in rep["cases"]:
            for name, r in case["engines"].items():
                if "error" in r:
                    out.append(f"| {case['batch']} | {case['mode']} | {name} | error: {r['error'][:120]} |"
                               + " |" * 10)
                    continue
                lens = r["generated_lengths"]
                lens_text = str(lens[0]) if len(set(lens)) == 1 else f"{min(lens)}-{max(lens)}"
                out.append(
                    f"| {case['batch']} | {case['mode']} | {name} | {fmt(r['encoder_s'], 1e3, '.0f')} | "
                    f"{r['e2e_s']:.2f} | {fmt(r['ms_per_step'], 1, '.1f')} | {floor_of(case, name):.1f} | "
                    f"{r['tokens_per_s']:.1f} | {fmt(r['peak_mb'], 1, '.0f')} | "
                    f"{ratio(r.get('speedup_vs_transformers'))} | "
                    f"{ratio(r.get('tokens_per_s_vs_transformers'))} | "
                    f"{ratio(r.get('memory_vs_transformers'))} | "
                    f"{identity_text(r.get('identity_vs_transformers'))}{varied(case, r)} | {lens_text} |")
        out.append("")
    return "\n".join(out)


def chart(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(result["models"])
    fig, axes = plt.subplots(2, len(models), figsize=(6.5 * len(models), 8), squeeze=False)
    for col, model in enumerate(models):
        cases = result["models"][model]["cases"]
        engines = [e for e in result["engines"] if any(e in c["engines"] and "error" not in c["engines"][e]
                                                       for c in cases)]
        labels = [f"b{c['batch']} {c['mode']}" for c in cases]
        width = 0.8 / max(len(engines), 1)
        for i, engine in enumerate(engines):
            xs = [k + (i - (len(engines) - 1) / 2) * width for k in range(len(cases))]
            e2e = [c["engines"].get(engine, {}).get("e2e_s", 0) or 0 for c in cases]
            step = [c["engines"].get(engine, {}).get("ms_per_step", 0) or 0 for c in cases]
            axes[0][col].bar(xs, e2e, width, label=engine)
            axes[1][col].bar(xs, step, width, label=engine)
        for k, c in enumerate(cases):
            axes[1][col].hlines(c["floor_ms_per_step"], k - 0.45, k + 0.45, colors="black", linestyles="dashed",
                                label="weight-streaming floor" if k == 0 else None)
            if any(e.endswith("-int8") for e in engines):
                axes[1][col].hlines(c["floor_int8_ms_per_step"], k - 0.45, k + 0.45, colors="gray",
                                    linestyles="dotted", label="int8 floor" if k == 0 else None)
        for row, ylabel in enumerate(("end-to-end s (lower is better)", "ms per decoder step")):
            ax = axes[row][col]
            ax.set_xticks(range(len(cases)), labels)
            ax.set_ylabel(ylabel)
            ax.set_title(f"{model}, {result['name']}")
            ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def parse_args(argv):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter, epilog=__doc__)
    ap.add_argument("--quick", action="store_true", help="smoke run: 1 repeat, max_length 24, min_length 8")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    ap.add_argument("--dtype", choices=tuple(DTYPE_BYTES), default="float32")
    ap.add_argument("--engines", default=None, help=f"comma-separated, from {','.join(ENGINES)} (default: all "
                    "that apply: seq2seq_kit-eager, without the CUDA graph, on cuda; seq2seq_kit-int8 on cpu)")
    ap.add_argument("--models", default="distilbart,kobart")
    ap.add_argument("--batch", default=None, help="comma-separated batch sizes (default 1,8; 1,32 on cuda)")
    ap.add_argument("--modes", default="greedy,beam4")
    ap.add_argument("--threads", type=int, default=2, help="torch and CTranslate2 threads (default 2)")
    ap.add_argument("--repeats", type=int, default=None, help="timed rounds (default 3; 1 with --quick)")
    ap.add_argument("--warmup", type=int, default=1, help="untimed rounds first (default 1)")
    ap.add_argument("--out", default=str(RESULTS), help="results directory")
    ap.add_argument("--tag", default="", help="suffix for the result files' names, e.g. batch32")
    ap.add_argument("--isa", choices=ISAS, default="native", help="avx2: every engine runs its AVX2 code (on an "
                    "AVX-512 CPU: what a CPU without AVX-512 runs, on this machine's memory and cores)")
    args = ap.parse_args(argv)
    only = {"seq2seq_kit-eager": "cuda", "seq2seq_kit-int8": "cpu"}
    default_engines = [e for e in ENGINES if only.get(e, args.device) == args.device and e != MOVED_REFERENCE]
    args.engines = args.engines.split(",") if args.engines else default_engines
    args.models = args.models.split(",")
    args.modes = args.modes.split(",")
    batch = (args.batch or ("1,32" if args.device == "cuda" else "1,8")).split(",")
    if not all(b.strip().isdigit() and int(b) > 0 for b in batch):
        ap.error(f"--batch takes comma-separated positive integers, got {args.batch!r}")
    args.batch = [int(b) for b in batch]
    args.repeats = (1 if args.quick else 3) if args.repeats is None else args.repeats
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1:
        ap.error(f"--repeats and --threads must be 1 or more and --warmup 0 or more, got {args.repeats}, "
                 f"{args.threads} and {args.warmup}")
    for name, given, known in (("engine", args.engines, ENGINES), ("model", args.models, make_checkpoints.MODELS),
                               ("mode", args.modes, MODES)):
        bad = [g for g in given if g not in known]
        if bad:
            ap.error(f"unknown {name} {', '.join(bad)}; choose from {', '.join(known)}")
    if args.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            ap.error("--device cuda but torch sees no CUDA GPU")
    if args.isa != "native" and args.device != "cpu":
        ap.error("--isa is for the CPU; leave it out with --device cuda")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    info = machine(args)
    bandwidth = memory_bandwidth(args.device, args.threads)
    name = device_name(info, args.dtype)
    print(f"{name}: {info.get('gpu') or info['cpu']}, {args.threads} threads, copy bandwidth {bandwidth:.1f} GB/s",
          flush=True)
    started = datetime.datetime.now()           # the results' date and their files' name alike
    result = {"name": name, "date": started.isoformat(timespec="seconds"), "machine": info,
              "dtype": args.dtype, "bandwidth_gbs": bandwidth, "engines": args.engines, "quick": args.quick,
              "repeats": args.repeats, "warmup": args.warmup, "versions": {}, "models": {}}
    for model in args.models:
        rep = run_model(model, args, bandwidth)
        result["models"][model] = rep
        result["versions"].update({e: r["version"] for e, r in rep["load"].items()})

    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = f"{name}-{started.date().isoformat()}" + (f"-{args.tag}" if args.tag else "") \
        + ("-quick" if args.quick else "")
    (out_dir / f"{stem}.json").write_text(json.dumps(result, indent=1))
    (out_dir / f"{stem}.md").write_text(markdown(result))
    chart(result, out_dir / f"{stem}.png")
    print(f"\nwrote {out_dir / stem}.json, .md, .png\n")
    print(markdown(result))
    return result


if __name__ == "__main__":
    main()
