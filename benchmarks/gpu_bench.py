"""Issue 17's GPU measurements in one bounded run: ms per decoder step beside transformers, TensorRT-LLM's BART
table in its own setting, the stop-flag interval, the engine's fixed-capacity graphs, peak memory.

    python benchmarks/gpu_bench.py --out DIR            # on a CUDA machine (benchmarks/gpu_session.sh runs it)
    python benchmarks/gpu_bench.py --smoke --out DIR    # tiny shapes on the CPU: checks that every part runs

Parts (each skipped, and said so, once the time budget is spent):
  bandwidth   device-to-device copy (bytes read + written per second): the weight-streaming floor's rate.
  steps       distilbart shape (12 + 6 layers, d_model 1024, random weights), fp16 and bf16, batch 1 and 32,
              greedy and beam 4 with the checkpoint's settings (length penalty 2, no-repeat 3-grams, forced
              BOS/EOS), 512-token inputs: ms per step of seq2seq_kit (whole-step CUDA graph, the default), of
              seq2seq_kit on the decoder-only graph (before issue 17) and eager, and of transformers; per step = (time(N2) - time(N1)) / (N2 - N1) with min = max new tokens; tokens
              vs transformers on the checkpoint's own lengths; peak memory of each.
  interval    the whole-step graph's stop-flag interval k (generate.GRAPH_CHECK_EVERY) = 1, 4, 8, 16 on beam 4,
              fp16, batch 1: end-to-end ms of a real-length call.
  trt         TensorRT-LLM's published BART table (docs/source/models/encoder-decoder.md, "Performance": 229.9 /
              252.2 / 352.3 ms per batch on one H100): bart-large-cnn shape (12 + 12 layers, d_model 1024), bf16,
              greedy (without the checkpoint's n-gram blocking, as there), batch 32 / 64 / 128, inputs of 260-440
              tokens (uniform, padded), 128 output tokens: ms per batch, ms per step, the weight-streaming floor
              per step, peak memory.
  engine      issue 13's target: 256 requests (fp16, the checkpoint's beam-4 settings, each its own max_length in
              56..142, 100-1024 source tokens), static batches of 32 (length-sorted, graph captures included) vs
              Engine(max_rows=128, fixed capacity, CUDA graphs): docs/s, the ratio, graphs captured, peak memory;
              then 64 of the requests twice more with each step's phases timed on the host (engine_phases):
              the groups' search steps replayed from CUDA graphs (the default), then eager.
  sampling    top-k 50 sampling (transformers' default warper), fp16, batch 1 and 32, 512-token inputs: ms per step
              on the whole-step graph (decoding.WHOLE_STEP_SAMPLING, off by default until this part and the CUDA
              tests have run), on the decoder-only graph with the draws eager (the default), and eager; whether the
              three draw the same tokens from one seed. Then the engine: 32 sampling requests, each with its own
              generator, in one group whose step replays from a CUDA graph (a generator per slot registered with
              it), against the same group stepped eagerly: docs/s, host ms per step phase, tokens equal.
  lookup      prompt lookup decoding (prompt_lookup_num_tokens=5; eager on CUDA: a pass is several positions)
              against greedy search on its graphs and eagerly, fp16, batch 1, the notebook's input, the output
              forced to its real summary and the random weights' own: ms per token, passes, tokens equal.
  memory      the 2026-11-25 H100 run's eager worker held 57.5 GiB of cached blocks at fp32 batch 32 beam 4 (a
              reorder tensor growing with the step; fixed 2026-12-01): that case again, eager and whole-step graph,
              max_memory_allocated, memory_reserved, the allocator's segment count and retries.
  compile     torch.compile (inductor, our CUDA graph around it) of the decoder step against the eager-traced step,
              4 and 128 beam rows, fp16: ms per replay, first-call seconds, largest logit difference.
Writes gpu_bench.json and gpu_bench.md into --out.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
import traceback
from pathlib import Path

import torch

import make_checkpoints
from seq2seq_kit import Engine
from seq2seq_kit.engine import batch as engine_batch
from seq2seq_kit.generation import decoding, whole_step
from seq2seq_kit.modeling import BartForConditionalGeneration

CHECKPOINT_SETTINGS = dict(num_beams=4, length_penalty=2.0, no_repeat_ngram_size=3, early_stopping=True,
                           min_length=56, max_length=142)
TRT_PUBLISHED_MS = {32: 229.9, 64: 252.2, 128: 352.3}          # one H100, bf16, greedy


def shapes(smoke: bool) -> dict:
    """The two benchmark shapes as make_checkpoints specs (random weights built by transformers)."""
    distil = make_checkpoints.MODELS["distilbart"]
    large = {**distil, "config": {**distil["config"], "decoder_layers": 12}, "seed": 11}   # bart-large-cnn
    if smoke:
        tiny = dict(vocab_size=1000, d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128)
        distil = {**distil, "config": {**distil["config"], **tiny}}
        large = {**large, "config": {**large["config"], **tiny}}
    return {"gpu-distilbart" + ("-smoke" if smoke else ""): distil,
            "gpu-bart-large-cnn" + ("-smoke" if smoke else ""): large}


def load(name: str, spec: dict, dtype: torch.dtype, device: str, with_transformers: bool):
    make_checkpoints.MODELS[name] = spec
    path = make_checkpoints.ensure(name)
    ours = BartForConditionalGeneration.from_pretrained(path, dtype=dtype, device=device)
    theirs = None
    if with_transformers:
        import transformers
        theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype).to(device).eval()
    return ours, theirs


def floor_bytes(name: str, dtype: torch.dtype, batch: int, source_len: int) -> int:
    """Bytes a decoder step reads at least (bench.step_floor_bytes: the per-step decoder weights, the LM head and
    the batch's cross-attention K/V at the padded source length)."""
    from bench import step_floor_bytes

    floor = step_floor_bytes(make_checkpoints.ensure(name), str(dtype).removeprefix("torch."), batch, source_len)
    return floor["weight_bytes"] + floor["cross_kv_bytes"]


def sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def timed(fn, device: str) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def memory(device: str) -> dict:
    if device != "cuda":
        return {}
    return {"max_allocated_gib": torch.cuda.max_memory_allocated() / 2 ** 30,
            "reserved_gib": torch.cuda.memory_reserved() / 2 ** 30}


def reset_memory(device: str) -> None:
    """Drop the kept whole-step graphs (their caches and pools), then start counting the peak anew."""
    whole_step.KEPT.clear()
    if device == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()


def batch_inputs(vocab: int, batch: int, lengths: list[int], device: str, seed: int):
    g = torch.Generator().manual_seed(seed)
    width = max(lengths)
    ids = torch.randint(4, vocab, (batch, width), generator=g)
    mask = torch.zeros(batch, width, dtype=torch.long)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1
        ids[i, n:] = 1                                                      # pad
    return ids.to(device), mask.to(device)


def bandwidth(device: str, smoke: bool) -> float:
    """Bytes read + written per second by a device-to-device copy."""
    n = (2 ** 20 if smoke else 2 ** 30)                                      # float32 elements
    a = torch.randn(n, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    times = [timed(lambda: b.copy_(a), device) for _ in range(10)]
    return 2 * a.numel() * a.element_size() / statistics.median(times)


def per_step(engines: dict, ids, mask, kwargs: dict, steps: tuple[int, int], repeats: int, device: str,
             others: dict) -> dict:
    """{engine: (ms per step, memory)}: time(N2) - time(N1) over N2 - N1, the median of `repeats`. others: {engine:
    GiB of the other library's model resident beside it}, left out of its peak."""
    out = {}
    for name, gen in engines.items():
        reset_memory(device)
        run = lambda n: timed(lambda: gen(ids, mask, **kwargs, max_new_tokens=n, min_new_tokens=n), device)  # noqa
        run(steps[0]), run(steps[1])                                        # warm-up and graph captures
        samples = [1000 * (run(steps[1]) - run(steps[0])) / (steps[1] - steps[0]) for _ in range(repeats)]
        used = memory(device)
        if used:
            used["max_allocated_gib"] -= others[name]
        out[name] = {"ms_per_step": statistics.median(samples), **used}
    return out


def resident_gib(model: torch.nn.Module) -> float:
    """GiB of a model's parameters and buffers (each storage once: tied weights share one)."""
    storages = {t.untyped_storage().data_ptr(): t.untyped_storage().nbytes()
                for t in [*model.parameters(), *model.buffers()]}
    return sum(storages.values()) / 2 ** 30


def generate_with(flag: str, value: bool):
    """generate(model, ids, mask, **kwargs) with decoding's `flag` set to `value` for the call: WHOLE_STEP_GRAPH
    False (the decoder-only CUDA graph, the search eager, the flag read every step: before issue 17), or
    WHOLE_STEP_SAMPLING True (sampling on the whole-step graph, off by default)."""
    def generate(model, ids, mask, **kwargs):
        saved = getattr(decoding, flag)
        setattr(decoding, flag, value)
        try:
            return model.generate(ids, mask, **kwargs)
        finally:
            setattr(decoding, flag, saved)
    return generate


def same_tokens(ours, theirs, ids, mask, kwargs) -> dict:
    """Rows whose generated tokens (up to the first EOS, as bench.py compares them) equal transformers'."""
    from bench import generated

    a = ours.generate(ids, mask, **kwargs).tolist()
    b = theirs.generate(ids, attention_mask=mask, **kwargs).tolist()
    eos = ours.config.eos_token_id
    rows = sum(generated(x, eos) == generated(y, eos) for x, y in zip(a, b))
    return {"rows_identical": rows, "rows": len(a)}


class Budget:
    def __init__(self, seconds: float):
        self.end = time.monotonic() + seconds

    def left(self) -> float:
        return self.end - time.monotonic()


def part_steps(args, spec_name, spec, budget: Budget, results: dict) -> None:
    batches = (1, 2) if args.smoke else (1, 32)
    dtypes = (torch.float32,) if args.smoke else (torch.float16, torch.bfloat16)
    steps, repeats = ((2, 6), 1) if args.smoke else ((16, 48), 3)
    source = 16 if args.smoke else 512
    for dtype in dtypes:
        ours, theirs = load(spec_name, spec, dtype, args.device, with_transformers=True)
        # both models sit on the device while each engine runs: its peak leaves the other's weights out
        others = {name: resident_gib(ours if name == "transformers" else theirs)
                  for name in ("seq2seq_kit", "seq2seq_kit_decoder_graph", "seq2seq_kit_eager", "transformers")}
        for batch in batches:
            ids, mask = batch_inputs(ours.config.vocab_size, batch, [source] * batch, args.device, seed=batch)
            for mode, kwargs in (("greedy", dict(num_beams=1)), ("beam4", CHECKPOINT_SETTINGS)):
                if budget.left() < 0:
                    results["skipped"].append(f"steps {dtype} b{batch} {mode}")
                    continue
                timing = {k: v for k, v in kwargs.items() if k not in ("min_length", "max_length")}
                engines = {"seq2seq_kit": lambda i, m, **kw: ours.generate(i, m, **kw),
                           "seq2seq_kit_decoder_graph": lambda i, m, **kw: generate_with("WHOLE_STEP_GRAPH", False)(
                               ours, i, m, **kw),
                           "seq2seq_kit_eager": lambda i, m, **kw: ours.generate(i, m, cuda_graph=False, **kw),
                           "transformers": lambda i, m, **kw: theirs.generate(i, attention_mask=m, **kw)}
                if args.device != "cuda":
                    del engines["seq2seq_kit_eager"], engines["seq2seq_kit_decoder_graph"]
                row = {"dtype": str(dtype).replace("torch.", ""), "batch": batch, "mode": mode,
                       **{f"{name}": v for name, v in per_step(engines, ids, mask, timing, steps, repeats,
                                                               args.device, others).items()}}
                real = dict(kwargs, max_length=24, min_length=8) if args.smoke else kwargs
                row["tokens_vs_transformers"] = same_tokens(ours, theirs, ids, mask, real)
                results["steps"].append(row)
                print(json.dumps(row), flush=True)
        ours = theirs = None                        # free both models before the next dtype loads
        reset_memory(args.device)


def part_interval(args, spec_name, spec, budget: Budget, results: dict) -> None:
    dtype = torch.float32 if args.smoke else torch.float16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    ids, mask = batch_inputs(ours.config.vocab_size, 1, [16 if args.smoke else 512], args.device, seed=0)
    real = dict(CHECKPOINT_SETTINGS, max_length=24, min_length=8) if args.smoke else CHECKPOINT_SETTINGS
    saved = decoding.GRAPH_CHECK_EVERY
    try:
        for k in (1, 4, 8, 16):
            if budget.left() < 0:
                results["skipped"].append(f"interval k={k}")
                continue
            decoding.GRAPH_CHECK_EVERY = k
            ours.generate(ids, mask, **real)
            ms = statistics.median(1000 * timed(lambda: ours.generate(ids, mask, **real), args.device)
                                   for _ in range(3 if args.smoke else 10))
            results["interval"].append({"k": k, "ms_per_call": ms})
            print(json.dumps(results["interval"][-1]), flush=True)
    finally:
        decoding.GRAPH_CHECK_EVERY = saved


def part_sampling(args, spec_name, spec, budget: Budget, results: dict) -> None:
    dtype = torch.float32 if args.smoke else torch.float16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    steps, repeats = ((2, 6), 1) if args.smoke else ((16, 48), 3)
    kwargs = dict(do_sample=True, top_k=50)
    engines = {"whole_step": lambda i, m, **kw: generate_with("WHOLE_STEP_SAMPLING", True)(ours, i, m, **kw),
               "decoder_graph": lambda i, m, **kw: ours.generate(i, m, **kw),
               "eager": lambda i, m, **kw: ours.generate(i, m, cuda_graph=False, **kw)}
    if args.device != "cuda":
        engines = {"eager": engines["eager"]}
    for batch in (1, 2) if args.smoke else (1, 32):
        if budget.left() < 0:
            results["skipped"].append(f"sampling b{batch}")
            continue
        ids, mask = batch_inputs(ours.config.vocab_size, batch, [16 if args.smoke else 512] * batch, args.device,
                                 seed=batch)
        row = {"dtype": str(dtype).replace("torch.", ""), "batch": batch,
               **per_step(engines, ids, mask, kwargs, steps, repeats, args.device, dict.fromkeys(engines, 0.0))}
        drawn = [gen(ids, mask, **kwargs, max_new_tokens=32, generator=torch.Generator(args.device).manual_seed(0))
                 for gen in engines.values()]
        row["same_tokens"] = all(torch.equal(d, drawn[0]) for d in drawn)
        results["sampling"].append(row)
        print(json.dumps(row), flush=True)
    if budget.left() > 0:
        engine_sampling(args, ours, results)


def engine_sampling(args, ours, results: dict) -> None:
    """The engine's sampling group (one generator per slot, registered with the group's CUDA graph: two small fills
    per generator before each replay) against its search step run eagerly: 32 requests of top-k 50, each with its
    own generator, 512-token sources, 32 new tokens; docs/s, host ms per step phase, the same tokens both ways."""
    count, new = (4, 4) if args.smoke else (32, 32)
    rng = random.Random(2)
    jobs = [[rng.randrange(4, ours.config.vocab_size) for _ in range(16 if args.smoke else 512)] for _ in range(count)]
    drawn = []
    for captured in (True, False):
        with Engine(ours, max_rows=count, fixed_capacity=True) as engine, engine_phases() as phases:
            engine.batch.capture = captured and engine.batch.graphs is not None     # before any request
            start = time.perf_counter()
            requests = [engine.submit(ids, do_sample=True, top_k=50, max_new_tokens=new, min_new_tokens=new,
                                      generator=torch.Generator(args.device).manual_seed(i))
                        for i, ids in enumerate(jobs)]
            drawn.append([r.result(timeout=120) for r in requests])
            seconds = time.perf_counter() - start
        row = {"engine": "search steps captured" if captured and args.device == "cuda" else "eager",
               "requests": count, "docs_per_s": count / seconds, **phases.summary()}
        results["sampling"].append(row)
        print(json.dumps(row), flush=True)
    results["sampling"][-1]["same_tokens"] = all(torch.equal(a, b) for a, b in zip(*drawn))


def part_lookup(args, spec_name, spec, budget: Budget, results: dict) -> None:
    """generate(..., prompt_lookup_num_tokens=5) (eager on CUDA) against greedy search, batch 1, fp16, the notebook's
    distilbart input: its output forced to the notebook's summary (prompt_lookup_bench.Force, a processor of one's
    own: greedy then replays its decoder-only graph, the search eager), and the random weights' own output (greedy
    on the whole-step graph): ms per generated token end to end, passes, tokens equal."""
    from prompt_lookup_bench import SOURCES, Force, Passes

    from seq2seq_kit import Tokenizer

    dtype = torch.float32 if args.smoke else torch.float16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    tok, vocab = Tokenizer.from_pretrained(make_checkpoints.ensure(spec_name)), ours.config.vocab_size
    source, summary = SOURCES["distilbart"]
    fit = (lambda t: t) if not args.smoke else (lambda t: t % (vocab - 5) + 5)      # smoke: a 1000-token vocabulary
    ids = torch.tensor([[fit(t) for t in tok(source)["input_ids"]]], device=args.device)
    truth = [2, 0] + [fit(t) for t in tok(summary, add_special_tokens=False)["input_ids"]] + [2]
    plain = dict(num_beams=1, do_sample=False, no_repeat_ngram_size=0, min_length=0)
    for output, kwargs in (("notebook summary (forced)",
                            dict(plain, max_new_tokens=len(truth) - 1, logits_processor=[Force(truth)])),
                           ("random weights' own", dict(plain, max_new_tokens=100))):
        if budget.left() < 0:
            results["skipped"].append(f"lookup {output}")
            continue
        row = {"output": output}
        runs = {"greedy (graphs)": {}, "greedy eager": dict(cuda_graph=False), "prompt lookup k=5": {}}
        outs = {}
        for mode, extra in runs.items():
            def call(passes=None):
                lookup = dict(prompt_lookup_num_tokens=5, streamer=passes or Passes()) if "lookup" in mode else {}
                return ours.generate(ids, **kwargs, **extra, **lookup)
            call()                                                                            # warm-up, capture
            passes = Passes()
            outs[mode] = call(passes)
            seconds = statistics.median(timed(call, args.device) for _ in range(1 if args.smoke else 5))
            row[mode] = {"ms_per_token": 1000 * seconds / (outs[mode].shape[1] - 1)}
            if "lookup" in mode:
                row[mode]["passes"] = len(passes.taken)
        row["tokens"] = outs["greedy eager"].shape[1] - 1
        row["same_tokens"] = all(o.tolist() == outs["greedy eager"].tolist() for o in outs.values())
        results["lookup"].append(row)
        print(json.dumps(row), flush=True)


def part_trt(args, spec_name, spec, budget: Budget, results: dict, rate: float) -> None:
    dtype = torch.float32 if args.smoke else torch.bfloat16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    new = 8 if args.smoke else 128
    rng = random.Random(0)
    for batch in ((2, 4) if args.smoke else (32, 64, 128)):
        if budget.left() < 0:
            results["skipped"].append(f"trt b{batch}")
            continue
        lengths = [rng.randint(8, 16) if args.smoke else rng.randint(260, 440) for _ in range(batch)]
        ids, mask = batch_inputs(ours.config.vocab_size, batch, lengths, args.device, seed=batch)
        # TensorRT-LLM's plain greedy: the checkpoint's n-gram blocking (no_repeat_ngram_size=3) switched off
        kwargs = dict(num_beams=1, do_sample=False, no_repeat_ngram_size=0, max_new_tokens=new, min_new_tokens=new)
        reset_memory(args.device)
        ours.generate(ids, mask, **kwargs)                                   # capture
        whole = [1000 * timed(lambda: ours.generate(ids, mask, **kwargs), args.device) for _ in range(3)]
        half = dict(kwargs, max_new_tokens=new // 2, min_new_tokens=new // 2)
        ours.generate(ids, mask, **half)
        halves = [1000 * timed(lambda: ours.generate(ids, mask, **half), args.device) for _ in range(3)]
        row = {"batch": batch, "ms_per_batch": statistics.median(whole),
               "ms_per_step": (statistics.median(whole) - statistics.median(halves)) / (new - new // 2),
               "floor_ms_per_step": 1000 * floor_bytes(spec_name, dtype, batch, max(lengths)) / rate,
               "trt_llm_h100_ms_per_batch": TRT_PUBLISHED_MS.get(batch), **memory(args.device)}
        results["trt"].append(row)
        print(json.dumps(row), flush=True)


def part_engine(args, spec_name, spec, budget: Budget, results: dict) -> None:
    """Issue 13's GPU target: 256 requests, fp16, the checkpoint's settings with each request's own summary length
    (max_length uniform in 56..142, as engine_bench.py), sources of 100-1024 tokens; static batches of 32 in corpus
    order (length-sorted, each padded, run to its longest member's max_length, graph captures included) against
    Engine(max_rows=128, fixed capacity: 32 requests of 4 beams). Both from a cold start of their graphs."""
    if budget.left() < 0:
        results["skipped"].append("engine")
        return
    dtype = torch.float32 if args.smoke else torch.float16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    rng = random.Random(1)
    count, batch = (16, 4) if args.smoke else (256, 32)
    vocab, pad = ours.config.vocab_size, ours.config.pad_token_id
    jobs = [([rng.randrange(4, vocab) for _ in range(rng.randint(8, 40) if args.smoke else rng.randint(100, 1024))],
             rng.randint(10, 20) if args.smoke else rng.randint(56, 142)) for _ in range(count)]
    settings = {**CHECKPOINT_SETTINGS, "min_length": 8 if args.smoke else 56}
    del settings["max_length"]
    order = sorted(range(count), key=lambda i: -len(jobs[i][0]))
    whole_step.KEPT.clear()
    reset_memory(args.device)
    start = time.perf_counter()
    for first in range(0, count, batch):
        members = [jobs[i] for i in order[first:first + batch]]
        width = max(len(ids) for ids, _ in members)
        ids = torch.full((len(members), width), pad, dtype=torch.long)
        mask = torch.zeros((len(members), width), dtype=torch.long)
        for row, (tokens, _) in enumerate(members):
            ids[row, :len(tokens)], mask[row, :len(tokens)] = torch.tensor(tokens), 1
        ours.generate(ids.to(args.device), mask.to(args.device), max_length=max(n for _, n in members), **settings)
    sync(args.device)
    static_s = time.perf_counter() - start
    results["engine"].append({"mode": f"static{batch}", "requests": count, "seconds": static_s,
                              "docs_per_s": count / static_s, **memory(args.device)})
    whole_step.KEPT.clear()
    reset_memory(args.device)
    with Engine(ours, max_rows=4 * batch, fixed_capacity=True) as engine:
        start = time.perf_counter()
        requests = [engine.submit(ids, max_length=n, **settings) for ids, n in (jobs[i] for i in order)]
        for r in requests:
            r.result(timeout=max(budget.left(), 60))
        seconds = time.perf_counter() - start
        graphs = len(engine.batch.graphs.graphs) if engine.batch.graphs is not None else 0
        search_graphs = sum(group.graph is not None for group in [*engine.groups, *engine.batch.idle.values()])
    results["engine"].append({"mode": f"engine max_rows {4 * batch}", "requests": count, "seconds": seconds,
                              "docs_per_s": count / seconds, "vs_static": static_s / seconds,
                              "graphs_captured": graphs, "search_graphs": search_graphs, **memory(args.device)})
    for captured in (True, False):             # where a step's time goes: shorter passes, their phases timed, with
        if budget.left() <= 0:                 # the groups' search steps replayed from CUDA graphs, then eager
            break
        start = time.perf_counter()
        with Engine(ours, max_rows=4 * batch, fixed_capacity=True) as engine, engine_phases() as phases:
            engine.batch.capture = captured and engine.batch.graphs is not None     # before any request
            for r in [engine.submit(ids, max_length=n, **settings) for ids, n in (jobs[i] for i in order[:count // 4])]:
                r.result(timeout=max(budget.left(), 60))
        results["engine"].append({"mode": "engine step phases, host ms per step (median), search steps "
                                  + ("captured" if captured else "eager"), "requests": count // 4,
                                  "seconds": time.perf_counter() - start, **phases.summary()})
    for row in results["engine"][-4:]:
        print(json.dumps(row), flush=True)


class engine_phases:
    """Host time of each phase of the engine's steps, by wrapping their methods (class attributes, so the engine's
    thread runs the wrappers): the decoder (the graph replayed, logits out), the groups' search steps (replays of
    their captured steps, or eager), the store's beam reorder, `settle`: the previous step's flags read back (where
    the host waits for the device to finish that step, while this one is queued) and its bookkeeping; `rest` is the
    remainder. Decoder, search and reorder launch asynchronously on CUDA, so their host time is launch time: small
    next to `settle` means the step is device-bound, large means host-bound."""

    def __init__(self):
        self.targets = [("step", Engine, "_step"), ("fixed", engine_batch.FixedCapacity, "step"),
                        ("search", engine_batch.SlotGroup, "step"), ("reorder", engine_batch.FixedCapacity, "reorder"),
                        ("settle", Engine, "_settle")]
        self.steps: list[dict] = []

    def __enter__(self):
        self.saved = [(cls, name, getattr(cls, name)) for _, cls, name in self.targets]
        for phase, cls, name in self.targets:
            setattr(cls, name, self.timed(phase, getattr(cls, name)))
        return self

    def __exit__(self, *exc):
        for cls, name, fn in self.saved:
            setattr(cls, name, fn)

    def timed(self, phase: str, fn):
        def run(*args, **kwargs):
            if phase == "step":
                self.steps.append({})
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                if self.steps:
                    now = self.steps[-1]
                    now[phase] = now.get(phase, 0.0) + 1000 * (time.perf_counter() - start)
        return run

    def summary(self) -> dict:
        steps = [s for s in self.steps if "fixed" in s]
        if not steps:
            return {"steps": 0}
        for s in steps:                     # FixedCapacity.step runs the decoder, then the groups' steps
            s["decoder"] = s["fixed"] - s.get("search", 0.0)
            s["rest"] = s["step"] - s["fixed"] - s.get("reorder", 0.0) - s.get("settle", 0.0)
        return {"steps": len(steps), **{p: statistics.median(s.get(p, 0.0) for s in steps)
                                        for p in ("step", "decoder", "search", "reorder", "settle", "rest")}}


def part_memory(args, spec_name, spec, budget: Budget, results: dict) -> None:
    if budget.left() < 0:
        results["skipped"].append("memory")
        return
    ours, _ = load(spec_name, spec, torch.float32, args.device, with_transformers=False)
    batch = 2 if args.smoke else 32
    ids, mask = batch_inputs(ours.config.vocab_size, batch, [16 if args.smoke else 512] * batch, args.device, seed=3)
    real = dict(CHECKPOINT_SETTINGS, max_length=24, min_length=8) if args.smoke else CHECKPOINT_SETTINGS
    for name, graph in (("eager", False), ("whole-step graph", None)):
        reset_memory(args.device)
        seconds = [timed(lambda: ours.generate(ids, mask, **real, cuda_graph=graph), args.device) for _ in range(2)]
        stats = torch.cuda.memory_stats() if args.device == "cuda" else {}
        row = {"dtype": "float32", "batch": batch, "mode": "beam4", "path": name, "seconds": seconds,
               **memory(args.device), "segments": stats.get("segment.all.current"),
               "alloc_retries": stats.get("num_alloc_retries"), "device_allocs": stats.get("num_device_alloc")}
        results["memory"].append(row)
        print(json.dumps(row), flush=True)


def part_compile(args, spec_name, spec, budget: Budget, results: dict) -> None:
    """Issue 17's torch.compile trial: the decoder step (model.next_token_logits on a fixed-shape cache, 512-token
    inputs, beam-4 rows: 4 and 128) as our CUDA graph captures it, traced eagerly or compiled by inductor (mode
    "default", then "max-autotune-no-cudagraphs" while the budget allows: the graph stays ours): ms per replay,
    compile seconds, the largest logit difference from the eager step. Kept only if it wins here."""
    if args.smoke:      # inductor cannot lower the CPU's oneDNN-packed layers: MKL everywhere for the smoke run
        os.environ["SEQ2SEQ_KIT_CPU_KERNELS"] = "mkl"
    dtype = torch.float32 if args.smoke else torch.float16
    ours, _ = load(spec_name, spec, dtype, args.device, with_transformers=False)
    for rows in (4,) if args.smoke else (4, 128):
        ids, _ = batch_inputs(ours.config.vocab_size, rows // 4, [512 if not args.smoke else 32] * (rows // 4),
                              args.device, seed=rows)
        cache = ours.new_cache(ours.encode(ids, None), None, rows_per_input=4, max_length=142, fixed_shape=True)
        tokens = torch.full((rows,), 2, device=args.device)
        reference = None
        for mode in ("eager", "default", "max-autotune-no-cudagraphs"):
            if budget.left() < (120 if mode.startswith("max") else 0):
                results["skipped"].append(f"compile {mode} rows {rows}")
                continue
            torch._dynamo.reset()                                   # each mode compiles anew
            fn = ours.next_token_logits if mode == "eager" else torch.compile(ours.next_token_logits, mode=mode,
                                                                              dynamic=False)
            with torch.no_grad():
                compile_s = timed(lambda: fn(tokens, cache), args.device)         # first call: compiles
                logits = fn(tokens, cache).float()
                replay = replayable(fn, tokens, cache, args.device)
                ms = 1000 * statistics.median(timed(replay, args.device) for _ in range(30))
            reference = logits if reference is None else reference
            row = {"rows": rows, "mode": mode, "ms_per_step": ms, "first_call_s": compile_s,
                   "max_abs_logit_diff": float((logits - reference).abs().max())}
            results["compile"].append(row)
            print(json.dumps(row), flush=True)


def replayable(fn, tokens, cache, device: str):
    """fn(tokens, cache) as the engine's and generate's graphs run it: captured in a CUDA graph (replay), or
    eagerly off CUDA."""
    if device != "cuda":
        return lambda: fn(tokens, cache)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        fn(tokens, cache)
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn(tokens, cache)
    return graph.replay


def markdown(results: dict) -> str:
    lines = [f"# GPU benchmark ({results['device']})", "", f"copy bandwidth: {results['bandwidth_gbs']:.0f} GB/s", "",
             "## ms per step (distilbart shape, 512-token inputs)", "",
             "| dtype | batch | mode | seq2seq_kit (whole-step graph) | decoder-only graph | eager | transformers "
             "| tokens = transformers | peak GiB (ours) |", "|---|---|---|---|---|---|---|---|---|"]
    for r in results["steps"]:
        def ms(name):
            return f"{r[name]['ms_per_step']:.2f}" if name in r else "-"
        tok = r["tokens_vs_transformers"]
        lines.append(f"| {r['dtype']} | {r['batch']} | {r['mode']} | {ms('seq2seq_kit')} | "
                     f"{ms('seq2seq_kit_decoder_graph')} | {ms('seq2seq_kit_eager')} | {ms('transformers')} | {tok['rows_identical']}/{tok['rows']} | "
                     f"{r['seq2seq_kit'].get('max_allocated_gib', float('nan')):.2f} |")
    lines += ["", "## stop-flag interval (beam 4, batch 1)", "", "| k | ms per call |", "|---|---|"]
    lines += [f"| {r['k']} | {r['ms_per_call']:.1f} |" for r in results["interval"]]
    lines += ["", "## TensorRT-LLM's setting (bart-large-cnn shape, bf16, greedy, 260-440 in, 128 out)", "",
              "| batch | ms per batch | TRT-LLM H100 | ms per step | floor ms per step | peak GiB |",
              "|---|---|---|---|---|---|"]
    lines += [f"| {r['batch']} | {r['ms_per_batch']:.1f} | {r['trt_llm_h100_ms_per_batch']} | "
              f"{r['ms_per_step']:.3f} | {r['floor_ms_per_step']:.3f} | {r.get('max_allocated_gib', float('nan')):.2f} |"
              for r in results["trt"]]
    lines += ["", "## sampling (top-k 50, fp16, 512-token inputs): ms per step", "",
              "| batch | whole-step graph | decoder-only graph (default) | eager | same tokens |",
              "|---|---|---|---|---|"]
    for r in (r for r in results["sampling"] if "batch" in r):
        cells = [f"{r[name]['ms_per_step']:.2f}" if name in r else "-"
                 for name in ("whole_step", "decoder_graph", "eager")]
        lines.append(f"| {r['batch']} | {' | '.join(cells)} | {r['same_tokens']} |")
    lines += ["", "engine, 32 sampling requests each with its own generator:", ""]
    lines += [json.dumps(r) for r in results["sampling"] if "engine" in r]
    lines += ["", "## prompt lookup (k = 5, eager) against greedy search, fp16, batch 1: ms per token", ""]
    lines += [json.dumps(r) for r in results["lookup"]]
    lines += ["", "## engine, fixed capacity", ""] + [json.dumps(r) for r in results["engine"]]
    lines += ["", "## memory, fp32 batch 32 beam 4 (the 57.5 GiB case)", ""] + [json.dumps(r) for r in results["memory"]]
    lines += ["", "## torch.compile of the decoder step (inside our CUDA graph)", ""] + \
        [json.dumps(r) for r in results["compile"]]
    if results["skipped"]:
        lines += ["", "skipped (time budget): " + ", ".join(results["skipped"])]
    if results["errors"]:
        lines += ["", "failed parts (traceback in bench.log): "] + [f"- {e}" for e in results["errors"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, to check that every part runs")
    ap.add_argument("--out", required=True)
    ap.add_argument("--budget", type=float, default=330.0, help="seconds; later parts are skipped past it")
    ap.add_argument("--parts", default="steps,engine,sampling,lookup,trt,memory,interval,compile")
    args = ap.parse_args(argv)
    args.device = "cpu" if args.smoke else "cuda"
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("no CUDA device: run with --smoke on the CPU")
    budget = Budget(args.budget if not args.smoke else 10 * args.budget)     # a loaded CPU is slow
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (distil_name, distil), (large_name, large) = shapes(args.smoke).items()
    rate = bandwidth(args.device, args.smoke)
    results = {"device": torch.cuda.get_device_name() if args.device == "cuda" else "cpu (smoke)",
               "torch": torch.__version__, "bandwidth_gbs": rate / 1e9,
               "steps": [], "interval": [], "trt": [], "engine": [], "sampling": [], "lookup": [], "memory": [],
               "compile": [],
               "skipped": [], "errors": []}
    runs = {"trt": lambda: part_trt(args, large_name, large, budget, results, rate),
            "steps": lambda: part_steps(args, distil_name, distil, budget, results),
            "interval": lambda: part_interval(args, distil_name, distil, budget, results),
            "engine": lambda: part_engine(args, distil_name, distil, budget, results),
            "sampling": lambda: part_sampling(args, distil_name, distil, budget, results),
            "lookup": lambda: part_lookup(args, distil_name, distil, budget, results),
            "memory": lambda: part_memory(args, distil_name, distil, budget, results),
            "compile": lambda: part_compile(args, distil_name, distil, budget, results)}
    for part in args.parts.split(","):       # the cheaper, headline parts first; each bounded by the budget
        try:                                 # one lease, one run: a part that fails must not cost the others
            runs[part]()
        except Exception as e:               # noqa: BLE001
            results["errors"].append(f"{part}: {type(e).__name__}: {e}")
            print(f"part {part} failed:", traceback.format_exc(), flush=True)
        (out / "gpu_bench.json").write_text(json.dumps(results, indent=2))
        (out / "gpu_bench.md").write_text(markdown(results))
    print(markdown(results))
    whole_step.KEPT.clear()
    return results


if __name__ == "__main__":
    main()
