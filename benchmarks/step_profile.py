"""Milliseconds per decoder step and cross-attention K/V memory, seq2seq_kit vs transformers, beam search on the
distilbart shape (d_model 1024, 12 encoder / 6 decoder layers, 16 heads, ffn 4096, vocab 50264, random weights).

    python benchmarks/step_profile.py                     # 2 threads, 512-token input, beam 4, batch 1
    python benchmarks/step_profile.py --threads 4 --batch 2 --input-len 256
    python benchmarks/step_profile.py --breakdown         # also: where seq2seq_kit's step time goes

Per-step time: both engines run generate() with the checkpoint's summarization settings (beam 4, length
penalty 2.0, no-repeat 3-grams, forced BOS/EOS) for exactly N new tokens (min_new_tokens = max_new_tokens = N);
time(N2) - time(N1) over N2 - N1 cancels the encoder and the setup, leaving decoder step + search bookkeeping.
Breakdown: seq2seq_kit's step split into self-attention, cross-attention, FFN, LM head, n-gram blocking, other
processors, cache reorder and the rest of the search, by timers wrapped around those functions for one generate().
Cross K/V memory: the bytes of the cross-attention keys/values each engine holds during the search (ours from
its KVCache, transformers' from the EncoderDecoderCache that generate returns).
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
import warnings
from collections import defaultdict

import torch
import transformers

from make_checkpoints import ensure
from seq2seq_kit.generation import beam_search, logits_process, screening
from seq2seq_kit.models import bart
from seq2seq_kit.models.kv_cache import KVCache
from seq2seq_kit.models.logit_screen import LogitScreen
from seq2seq_kit.modeling import BartForConditionalGeneration


def per_step_ms(engines: dict, ids, mask, beams: int, steps: tuple[int, int], repeats: int) -> dict:
    """{name: ms per step}; the engines take turns so that both see the same machine load."""
    def run(generate, n):
        start = time.perf_counter()
        generate(ids, mask, num_beams=beams, max_new_tokens=n, min_new_tokens=n)
        return time.perf_counter() - start

    for generate in engines.values():
        run(generate, steps[0])                                           # warm-up
    samples = {name: [] for name in engines}
    for _ in range(repeats):
        for name, generate in engines.items():
            t1, t2 = run(generate, steps[0]), run(generate, steps[1])
            samples[name].append(1000 * (t2 - t1) / (steps[1] - steps[0]))
    return {name: statistics.median(v) for name, v in samples.items()}


def decode_step_ms(model, ids, mask, beams: int, position: int, calls: int = 20) -> float:
    """seq2seq_kit's decode_step alone (no search), at a given decoder position."""
    cache = model.new_cache(model.encode(ids, mask), mask, rows_per_input=beams, max_length=position + calls + 1)
    tokens = torch.full((ids.shape[0] * beams,), 2)
    for _ in range(position):
        model.decode_step(tokens, cache)
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        model.decode_step(tokens, cache)
        times.append(time.perf_counter() - start)
    return 1000 * statistics.median(times)


@contextlib.contextmanager
def timed(totals: dict, parts: dict):
    """Wrap owner.attr for each name -> (owner, attr) in parts so that its calls add their seconds to totals[name].
    CPU ops run synchronously, so wall time around a call is that call's compute."""
    saved = {name: getattr(owner, attr) for name, (owner, attr) in parts.items()}

    def wrap(name, fn):
        def call(*args, **kwargs):
            start = time.perf_counter()
            out = fn(*args, **kwargs)
            totals[name] += time.perf_counter() - start
            return out
        return call

    for name, (owner, attr) in parts.items():
        setattr(owner, attr, wrap(name, saved[name]))
    try:
        yield
    finally:
        for name, (owner, attr) in parts.items():
            if isinstance(owner, type) or not isinstance(owner, torch.nn.Module):   # a class or a module
                setattr(owner, attr, saved[name])
            else:                                                                 # an instance: drop the wrapper
                delattr(owner, attr)


def breakdown(model, ids, mask, beams: int, steps: int) -> dict:
    """ms per step of each part of a search step, from one generate() of `steps` new tokens (encoder excluded).
    The nested parts (attention, FFN, LM head inside the decode step) are subtracted from their parents. Greedy
    steps run decode_step_screened, whose LM head is the logit screen (models/logit_screen.py), and pick their
    tokens in screening.pick (the processors, n-gram blocking among them, and the exact logits it asks for)."""
    totals = defaultdict(float)
    parts = {"self-attention": (bart.SelfAttention, "step"), "cross-attention": (bart.CrossAttention, "step"),
             "FFN": (bart.DecoderLayer, "ffn"), "LM head": (model.lm_head, "forward"),
             "LM head screen": (LogitScreen, "screen"),
             "decode_step": (bart.BartNetwork, "decode_step_unchecked"),
             "decode_step_screened": (bart.BartNetwork, "decode_step_screened"),
             "n-gram blocking": (logits_process.NoRepeatNGram, "__call__"),
             "processors": (beam_search, "apply"), "greedy pick": (screening, "pick"),
             "cache reorder": (KVCache, "reorder"),
             "encoder": (bart.BartNetwork, "encode_unchecked"), "new_cache": (bart.BartNetwork, "start_decoding")}
    model.generate(ids, mask, num_beams=beams, max_new_tokens=steps, min_new_tokens=steps)     # warm-up
    with timed(totals, parts):
        start = time.perf_counter()
        model.generate(ids, mask, num_beams=beams, max_new_tokens=steps, min_new_tokens=steps)
        total = time.perf_counter() - start
    ms = defaultdict(float, {name: 1000 * t / steps for name, t in totals.items()})    # a part never run: 0
    search = 1000 * (total - totals["encoder"] - totals["new_cache"]) / steps
    decode = ms["decode_step"] + ms["decode_step_screened"]
    head = ms["LM head"] + ms["LM head screen"]
    processors = ms["processors"] + ms["greedy pick"]   # greedy: its pick (n-gram blocking and exact logits in it)
    return {
        "self-attention (projections + SDPA over the cache)": ms["self-attention"],
        "cross-attention (q/out projections + SDPA)": ms["cross-attention"],
        "FFN": ms["FFN"],
        "LM head (beams: full logits; greedy: the int8 screen's bounds)": head,
        "rest of decode_step (embeddings, layer norms, Python)":
            decode - ms["self-attention"] - ms["cross-attention"] - ms["FFN"] - head,
        "n-gram blocking": ms["n-gram blocking"],
        "other processors (greedy: the pick, its exact logits)": processors - ms["n-gram blocking"],
        "cache reorder": ms["cache reorder"],
        "log-softmax, top-k, beam bookkeeping, Python": search - decode - processors - ms["cache reorder"],
        "total per step": search,
    }


def nbytes(tensors) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=1)
    ap.add_argument("--input-len", type=int, default=512)
    ap.add_argument("--beams", type=int, default=4)
    ap.add_argument("--steps", type=int, nargs=2, default=(8, 40), metavar=("N1", "N2"))
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--breakdown", action="store_true", help="also time the parts of seq2seq_kit's step")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    transformers.logging.set_verbosity_error()
    warnings.filterwarnings("ignore", category=UserWarning)          # transformers' min_length > max_length notes

    path = ensure("distilbart")
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    ours = BartForConditionalGeneration.from_pretrained(path)
    ids = torch.randint(4, 50000, (args.batch, args.input_len), generator=torch.Generator().manual_seed(0))
    mask = torch.ones_like(ids)
    print(f"distilbart shape, batch {args.batch} x {args.input_len} tokens, beam {args.beams}, "
          f"{args.threads} threads, steps {args.steps[0]}..{args.steps[1]}")

    with torch.no_grad():
        ms = per_step_ms({"transformers": lambda i, m, **kw: hf.generate(i, attention_mask=m, **kw),
                          "seq2seq_kit": ours.generate}, ids, mask, args.beams, args.steps, args.repeats)
        ms_model = decode_step_ms(ours, ids, mask, args.beams, position=sum(args.steps) // 2)
        out = hf.generate(ids, attention_mask=mask, num_beams=args.beams, max_new_tokens=2,
                          return_dict_in_generate=True)
        hf_cross = nbytes(t for layer in out.cache.cross_attention_cache.layers for t in (layer.keys, layer.values))
        cache = ours.new_cache(ours.encode(ids, mask), mask, rows_per_input=args.beams, max_length=142)
        our_cross = nbytes([*cache.cross_k, *cache.cross_v])

    if min(ms.values()) <= 0:           # t(N2) - t(N1) at or below 0: the machine's load swung within a round
        print(f"ms per decoder step   not measured: a difference of run times came out at or below 0 ({ms}); the "
              "machine is too busy, or --steps too close: rerun on a quiet machine or with more --repeats")
    else:
        print(f"ms per decoder step   transformers {ms['transformers']:7.1f}   seq2seq_kit {ms['seq2seq_kit']:7.1f}   "
              f"({ms['transformers'] / ms['seq2seq_kit']:.2f}x; of which seq2seq_kit's decode_step alone "
              f"{ms_model:.1f})")
    print(f"cross-attention K/V   transformers {hf_cross / 2**20:7.1f} MiB (batch x beams x enc_len)   "
          f"seq2seq_kit {our_cross / 2**20:7.1f} MiB (batch x enc_len)   "
          f"saved {(hf_cross - our_cross) / 2**20:.1f} MiB")
    if args.breakdown:
        with torch.no_grad():
            parts = breakdown(ours, ids, mask, args.beams, args.steps[1])
        print(f"seq2seq_kit per-step breakdown over {args.steps[1]} steps (ms):")
        for name, ms in parts.items():
            print(f"  {name:62s} {ms:6.2f}")


if __name__ == "__main__":
    main()
