"""Peak resident memory of `BartForConditionalGeneration.from_pretrained` against the checkpoint's size.

    python benchmarks/load_memory.py                    # fp32 checkpoint loaded as float32
    python benchmarks/load_memory.py --dtype float16    # ... loaded as float16
    python benchmarks/load_memory.py --dtype int8       # ... loaded as float32, then int8 (RSS after load: int8 only;
                                                        #     "loaded weights" counts no fbgemm-packed weight)

Builds once, under benchmarks/.cache/load-memory-distilbart/, a random-weight checkpoint of
sshleifer/distilbart-cnn-12-6's shape (d_model 1024, 12 encoder / 6 decoder layers, 16 heads, ffn 4096,
vocab 50264) with seq2seq_kit's own save_pretrained (no transformers needed). Then, in a fresh Python
process, it imports torch and seq2seq_kit, notes the resident set size (RSS), loads the checkpoint, and
prints the peak RSS (VmHWM: getrusage's ru_maxrss would count this parent's, from the fork) beside the size
of model.safetensors and of the loaded weights.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

CACHE = Path(__file__).resolve().parent / ".cache" / "load-memory-distilbart"
SHAPE = dict(vocab_size=50264, d_model=1024, encoder_layers=12, decoder_layers=6, encoder_attention_heads=16,
             decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
             bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2, forced_bos_token_id=0,
             forced_eos_token_id=2)

CHILD = r"""
import json, sys, time
import torch
from seq2seq_kit import BartForConditionalGeneration

def rss_mib(field="VmRSS"):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

before = rss_mib()
start = time.perf_counter()
model = BartForConditionalGeneration.from_pretrained(sys.argv[1], dtype=sys.argv[2])
seconds = time.perf_counter() - start
weights = sum(t.numel() * t.element_size() for t in [*model.parameters(), *model.buffers()])
print(json.dumps(dict(rss_before_mib=before, peak_rss_mib=rss_mib("VmHWM"),
                      rss_after_mib=rss_mib(), weights_mib=weights / 2**20, load_seconds=seconds)))
"""


def build(path: Path) -> None:
    import torch

    from seq2seq_kit import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    BartForConditionalGeneration(BartConfig(**SHAPE)).save_pretrained(path)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dtype", default="float32", choices=["float32", "float16", "bfloat16", "int8"])
    args = parser.parse_args()
    if not (CACHE / "model.safetensors").is_file():
        print(f"building {CACHE} ...", flush=True)
        build(CACHE)
    file_mib = (CACHE / "model.safetensors").stat().st_size / 2**20
    out = subprocess.run([sys.executable, "-c", CHILD, str(CACHE), args.dtype], check=True, capture_output=True,
                         text=True)
    r = json.loads(out.stdout.strip().splitlines()[-1])
    print(f"checkpoint      model.safetensors (float32), {file_mib:8.1f} MiB")
    print(f"loaded weights  {args.dtype:<9}                 {r['weights_mib']:8.1f} MiB   in {r['load_seconds']:.2f} s")
    print(f"RSS before load (python + torch + seq2seq_kit) {r['rss_before_mib']:8.1f} MiB")
    print(f"peak RSS        (VmHWM)                        {r['peak_rss_mib']:8.1f} MiB")
    print(f"RSS after load                                 {r['rss_after_mib']:8.1f} MiB")
    print(f"peak - before = {r['peak_rss_mib'] - r['rss_before_mib']:.1f} MiB "
          f"= {(r['peak_rss_mib'] - r['rss_before_mib']) / file_mib:.2f} x the file size")


if __name__ == "__main__":
    main()
