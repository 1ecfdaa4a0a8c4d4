"""One benchmark engine per process: bench.py starts this file as a worker and talks to it in JSON lines.

    python benchmarks/engines.py ENGINE CHECKPOINT_DIR --device cpu --dtype float32 --threads 2 [--ct2-dir DIR]
                                 [--isa avx2]

ENGINE is one of ENGINES. Each worker holds one model, so its resident memory is its own: the
peak of a request is the process's high-water mark during it (reset before each request through
/proc/self/clear_refs) minus the resident size before the model was loaded. On CUDA it is
torch.cuda.max_memory_allocated for the torch engines, and not measured for CTranslate2.

Protocol (stdin -> stdout, one JSON object per line; everything else the libraries print goes to stderr):
  worker says  {"ready": true, "load_s", "rss_load_mb", "versions"}   or {"error": "..."} and exits
  bench sends  {"op": "encode"|"generate", "input_ids": [[...]], "attention_mask": [[...]], "options": {...}}
  worker says  {"seconds", "peak_mb", "sequences": [[...]] (generate: decoder start token first)}
  bench sends  {"op": "quit"}

Options for generate: the mode's settings ({"num_beams": n}, and for the searches transformers 5 moved to the Hub
penalty_alpha / num_beam_groups / force_words_ids ...), plus "max_length"/"min_length" only when overridden.
seq2seq_kit and transformers resolve everything else from the checkpoint themselves; CTranslate2
gets the resolved settings spelled out ("ct2": {...}) because it does not read them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

# seq2seq_kit-eager: no CUDA graph (CUDA only); seq2seq_kit-int8: int8 linear layers (CPU only); transformers-4.55:
# transformers 4.55.4 in a venv of its own (venvs.py), whose generate still ran the searches transformers 5 moved to
# the Hub (contrastive, diverse and constrained beam search)
ENGINES = ("seq2seq_kit", "seq2seq_kit-eager", "seq2seq_kit-int8", "transformers", "transformers-4.55", "ct2",
           "ct2-int8")
ISAS = ("native", "avx2")


def rss_mb() -> float:
    return _status("VmRSS")


def hwm_mb() -> float:
    return _status("VmHWM")


def _status(key: str) -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    return float("nan")


def reset_hwm() -> None:
    """Reset the process's peak resident size (VmHWM) to its current size (Linux >= 4.0)."""
    try:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")
    except OSError:
        pass  # peak then covers the whole process lifetime: still an upper bound


class TorchEngine:
    """seq2seq_kit or transformers: same tensors in, same LongTensor out."""

    def __init__(self, name: str, path: str, device: str, dtype: str):
        import torch

        self.torch, self.device, self.name = torch, device, name
        self.extra = {"cuda_graph": False} if name == "seq2seq_kit-eager" else {}
        torch_dtype = getattr(torch, dtype)
        if name.startswith("seq2seq_kit"):
            from seq2seq_kit import AutoModelForSeq2SeqLM
            import seq2seq_kit

            int8 = name == "seq2seq_kit-int8"      # loaded as users load it: each layer quantized as it is read
            self.model = AutoModelForSeq2SeqLM.from_pretrained(path, dtype="int8" if int8 else torch_dtype,
                                                               device=device)
            self.encoder = self.model.encode
            self.version = seq2seq_kit.__version__
            if device == "cpu" and name != "seq2seq_kit-int8":
                from seq2seq_kit.kernel_choice import describe   # the measured matmul kernels, for the report
                self.kernels = describe(self.model.kernel_table()) + f"; attention {self.model.step_attention()}" \
                    + ("; greedy LM head screened (int8 bounds)" if self.model.screens(1) else "")
        else:
            import transformers

            # eager PyTorch with the library's default attention implementation (sdpa); 4.x names dtype torch_dtype
            dtype_name = "dtype" if int(transformers.__version__.split(".")[0]) >= 5 else "torch_dtype"
            self.model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, **{dtype_name: torch_dtype})
            self.model.to(device)
            encoder = self.model.get_encoder()
            self.encoder = lambda ids, mask: encoder(input_ids=ids, attention_mask=mask).last_hidden_state
            self.version = transformers.__version__
        self.model.eval()
        self.case = None                    # the (shape, options) of the last call (encode and generate share one)

    def run(self, op: str, input_ids, attention_mask, options: dict):
        torch = self.torch
        ids = torch.tensor(input_ids, device=self.device)
        mask = torch.tensor(attention_mask, device=self.device)
        kwargs = {k: v for k, v in options.items() if k != "ct2"}
        if self.device == "cuda" and (ids.shape, options) != self.case:
            self.case = (ids.shape, options)
            self.drop_graphs()              # a case's peak memory without the graphs earlier cases kept
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        start = time.perf_counter()
        with torch.inference_mode():
            if op == "encode":
                self.encoder(ids, mask)
                out = None
            else:
                out = self.model.generate(ids, attention_mask=mask, **kwargs, **self.extra)
        if self.device == "cuda":
            torch.cuda.synchronize()
        seconds = time.perf_counter() - start
        peak = torch.cuda.max_memory_allocated() / 2**20 if self.device == "cuda" else None
        return seconds, (out.tolist() if out is not None else None), peak

    def drop_graphs(self) -> None:
        """Free the whole-step CUDA graphs seq2seq_kit keeps for later calls (up to whole_step.KEEP per model)."""
        if self.name.startswith("seq2seq_kit"):
            from seq2seq_kit.generation import whole_step

            whole_step.KEPT.pop(self.model, None)
            self.torch.cuda.empty_cache()


class CT2Engine:
    """CTranslate2 Translator on the converted model, float32 (or the model dtype on CUDA) or int8."""

    def __init__(self, name: str, ct2_dir: str, device: str, dtype: str, threads: int):
        import ctranslate2

        if name == "ct2-int8":
            compute_type = "int8_float16" if device == "cuda" and dtype == "float16" else (
                "int8_bfloat16" if device == "cuda" and dtype == "bfloat16" else "int8_float32")
        else:
            compute_type = dtype
        self.translator = ctranslate2.Translator(ct2_dir, device=device, compute_type=compute_type,
                                                 inter_threads=1, intra_threads=threads)
        with open(os.path.join(ct2_dir, "shared_vocabulary.json")) as f:
            self.vocab = json.load(f)
        self.index = {t: i for i, t in enumerate(self.vocab)}
        self.version = f"{ctranslate2.__version__} ({compute_type})"

    def run(self, op: str, input_ids, attention_mask, options: dict):
        # source rows without padding, as token strings
        source = [[self.vocab[t] for t, m in zip(row, mrow) if m] for row, mrow in zip(input_ids, attention_mask)]
        s = options["ct2"]
        if op == "encode":  # no encoder-only call: the encoder plus one greedy step
            kwargs = dict(beam_size=1, max_decoding_length=1)
        else:
            kwargs = dict(beam_size=options["num_beams"], length_penalty=s["length_penalty"],
                          max_decoding_length=s["max_length"] - 1, min_decoding_length=max(s["min_length"] - 1, 0),
                          no_repeat_ngram_size=s["no_repeat_ngram_size"], return_end_token=True)
            if s.get("forced_bos_token") is not None:
                kwargs["target_prefix"] = [[s["forced_bos_token"]]] * len(source)
        start = time.perf_counter()
        results = self.translator.translate_batch(source, **kwargs)
        seconds = time.perf_counter() - start
        if op == "encode":
            return seconds, None, None
        start_id = s["decoder_start_token_id"]
        sequences = [[start_id] + [self.index[t] for t in r.hypotheses[0]] for r in results]
        return seconds, sequences, None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("engine", choices=ENGINES)
    ap.add_argument("checkpoint")
    ap.add_argument("--ct2-dir")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--isa", choices=ISAS, default="native", help="bench.py's --isa: avx2 caps seq2seq_kit's gemv "
                    "kernel at its AVX2 code (the libraries are capped by the environment bench.py sets)")
    args = ap.parse_args()
    if args.isa == "avx2" and args.engine.startswith("seq2seq_kit"):
        from seq2seq_kit.models import gemv

        gemv.ISA = min(gemv.ISA, 1)      # 1: its AVX2 code, as the tests run it on an AVX-512 CPU

    proto = os.fdopen(os.dup(1), "w", buffering=1)  # protocol channel; fd 1 now points at stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")

    import torch  # every engine: thread count and CUDA memory API

    torch.set_num_threads(args.threads)
    try:
        base = rss_mb()
        start = time.perf_counter()
        if args.engine.startswith("ct2"):
            engine = CT2Engine(args.engine, args.ct2_dir, args.device, args.dtype, args.threads)
        else:
            engine = TorchEngine(args.engine, args.checkpoint, args.device, args.dtype)
        say({"ready": True, "load_s": time.perf_counter() - start, "rss_load_mb": rss_mb() - base,
             "version": engine.version, "kernels": getattr(engine, "kernels", None)})
    except Exception as e:  # the harness reports why this engine is missing and goes on
        say({"error": f"{type(e).__name__}: {e}"})
        return

    for line in sys.stdin:
        req = json.loads(line)
        if req["op"] == "quit":
            break
        try:
            reset_hwm()
            seconds, sequences, peak = engine.run(req["op"], req["input_ids"], req["attention_mask"], req["options"])
            if peak is None and args.device == "cpu":
                peak = hwm_mb() - base
            say({"seconds": seconds, "sequences": sequences, "peak_mb": peak})
        except Exception as e:
            say({"error": f"{type(e).__name__}: {e}"})


if __name__ == "__main__":
    main()
