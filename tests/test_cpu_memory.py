"""A CPU model keeps freed memory for the next step (seq2seq_kit/cpu_memory.py): after from_pretrained, a step's
pattern of vocabulary-wide temporaries (two 20 MB tensors made and freed, again and again) takes no page faults,
while the same process with glibc's own tuning in the environment (which keep_freed_memory leaves alone) takes one
per 4 KiB page every time (measured: 0, or ~4,900 once when the heap grows, against ~48,800)."""

import os
import platform
import subprocess
import sys

import pytest

CODE = """
import resource, sys
import torch
from seq2seq_kit import BartForConditionalGeneration
BartForConditionalGeneration.from_pretrained(sys.argv[1])

def step():
    a, b = torch.ones(5_000_000), torch.ones(5_000_000)     # 20 MB each, freed together: 40 MB free at the top
    del a, b

step()
step()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(5):
    step()
print("FAULTS", resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
"""

pytestmark = pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
                                reason="glibc's malloc only")


def faults(checkpoint, **env) -> int:
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | env
    out = subprocess.run([sys.executable, "-c", CODE, str(checkpoint)], capture_output=True, text=True, timeout=300,
                         env=environ)
    assert out.returncode == 0, out.stderr
    return int(out.stdout.split("FAULTS")[1])


def test_freed_memory_is_reused_after_loading_a_cpu_model(tiny_eos_path):
    pages = 5 * 2 * 20_000_000 // 4096                       # every page of every temporary: ~49,000
    assert faults(tiny_eos_path) < pages // 4                # 0 usually; a one-off growth of the heap is ~4,900
    assert faults(tiny_eos_path, MALLOC_TRIM_THRESHOLD_="131072") > pages // 2     # the user's tuning wins


TINY = dict(vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
            decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32)
INT8_CODE = """
import sys
from seq2seq_kit import BartForConditionalGeneration

def status_bytes(field):     # VmRSS: resident now; VmHWM: its peak (ru_maxrss would count the parent's, from fork)
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) * 1024

def load(path):
    if sys.argv[3] == "load":
        return BartForConditionalGeneration.from_pretrained(path, dtype="int8")
    return BartForConditionalGeneration.from_pretrained(path).quantize_int8()     # quantized after a float32 load

load(sys.argv[2])      # a tiny model first: torch's one-off cost of int8 (39 MB on torch 2.6, 2 on 2.13) is not ours
before = status_bytes("VmRSS")
model = load(sys.argv[1])
now = status_bytes("VmRSS")
from seq2seq_kit import cpu_memory
cpu_memory.release_freed_memory()
print("GROWTH", now - before, "PEAK", status_bytes("VmHWM") - before, "KEPT", now - status_bytes("VmRSS"))
"""


def test_int8_load_gives_back_the_float32_weights_it_replaced(tmp_path):
    """from_pretrained(dtype="int8") quantizes each linear layer as soon as its float32 weights are read, so the
    float32 model never exists whole (its peak was ~1.3x the float32 bytes when the whole model was loaded first),
    and returns the freed float32 memory to the kernel (without release_freed_memory the process kept ~all of it:
    the trim threshold above is 1 GiB); so does model.quantize_int8() on a float32 model loaded first (it kept
    ~all of it until the next generate call)."""
    import torch

    from seq2seq_kit import BartConfig, BartForConditionalGeneration

    torch.manual_seed(0)
    config = BartConfig(vocab_size=8000, d_model=512, encoder_layers=4, decoder_layers=4, encoder_attention_heads=8,
                        decoder_attention_heads=8, encoder_ffn_dim=2048, decoder_ffn_dim=2048,
                        max_position_embeddings=128, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                        decoder_start_token_id=2)
    model = BartForConditionalGeneration(config)
    float_bytes = sum(p.numel() * 4 for p in model.parameters())              # ~134 MB
    model.save_pretrained(tmp_path)
    del model
    tiny = tmp_path / "tiny"
    BartForConditionalGeneration(BartConfig(**{**config.to_dict(), **TINY})).save_pretrained(tiny)
    # one thread: a second one's malloc arena keeps what quantizing freed, +-30% of the peak from run to run
    environ = {k: v for k, v in os.environ.items() if not k.startswith("MALLOC_")} | {"OMP_NUM_THREADS": "1"}
    out = subprocess.run([sys.executable, "-c", INT8_CODE, str(tmp_path), str(tiny), "load"], capture_output=True,
                         text=True, timeout=300, env=environ)
    assert out.returncode == 0, out.stderr
    growth, peak = int(out.stdout.split()[1]), int(out.stdout.split()[3])
    assert growth < float_bytes * 0.5, (growth, float_bytes)      # int8: ~a quarter, plus a tied LM head's copy
    assert peak < float_bytes, (peak, float_bytes)      # measured 0.7x; loading the whole float32 model first: 1.4x
    # quantized after a float32 load whose kernels were measured and packed (the default: no forced kernels here)
    environ = {k: v for k, v in environ.items() if k != "SEQ2SEQ_KIT_CPU_KERNELS"} | {"XDG_CACHE_HOME": str(tmp_path)}
    out = subprocess.run([sys.executable, "-c", INT8_CODE, str(tmp_path), str(tiny), "after"], capture_output=True,
                         text=True, timeout=300, env=environ)
    assert out.returncode == 0, out.stderr
    kept = int(out.stdout.split()[5])                   # what a trim right after quantize_int8 still gave back
    assert kept < float_bytes * 0.05, (kept, float_bytes)        # 0.79x before quantize_int8 trimmed itself


def test_int8_loading_maps_large_blocks_unless_the_user_tuned_malloc(monkeypatch):
    """map_weights_while_loading (before an int8 load) sets glibc's mmap threshold, so the float32 weights freed as
    each layer is quantized are unmapped, not left as holes in the heap the int8 weights then pin; the user's own
    tuning wins, as for keep_freed_memory."""
    from seq2seq_kit import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    assert cpu_memory.map_weights_while_loading() and calls == [(cpu_memory.M_MMAP_THRESHOLD, 256 << 10)]
    monkeypatch.setenv("MALLOC_TOP_PAD_", "131072")
    assert not cpu_memory.map_weights_while_loading() and len(calls) == 1


def test_own_mappings_then_the_kept_threshold_unless_the_user_tuned_malloc(monkeypatch):
    """own_mappings (a new KV cache on the CPU) maps blocks of 256 KiB or more inside, then sets keep_freed_memory's
    32 MiB threshold again, also when the body raises; with the user's own tuning it calls nothing."""
    from seq2seq_kit import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu_memory, "tuned", True)          # from_pretrained's keep_freed_memory ran
    with cpu_memory.own_mappings():
        assert calls == [(cpu_memory.M_MMAP_THRESHOLD, 256 << 10)]
    with pytest.raises(KeyError), cpu_memory.own_mappings():
        raise KeyError
    assert calls == [(cpu_memory.M_MMAP_THRESHOLD, 256 << 10), (cpu_memory.M_MMAP_THRESHOLD, 32 << 20)] * 2
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "131072")
    with cpu_memory.own_mappings():
        pass
    assert len(calls) == 4


def test_a_new_cpu_cache_takes_the_pages_the_encoder_gave_back(tiny_eos_path, monkeypatch):
    """Between a call's encoder and its decoder (start_decoding on the CPU): the freed pages go back first
    (release_freed_memory), then the cache is allocated under own_mappings; every cache tensor made inside it."""
    import contextlib

    import torch

    from seq2seq_kit import BartForConditionalGeneration, cpu_memory
    from seq2seq_kit.models import kv_cache

    model = BartForConditionalGeneration.from_pretrained(tiny_eos_path)
    hidden = model.encode(torch.tensor([[5, 6, 7, 8]]))
    events, made = [], []

    @contextlib.contextmanager
    def own_mappings():
        events.append("mapped")
        yield
        events.append("heap")

    monkeypatch.setattr(cpu_memory, "release_freed_memory", lambda: events.append("released") or True)
    monkeypatch.setattr(cpu_memory, "own_mappings", own_mappings)
    real_zeros, real_empty = torch.zeros, torch.empty         # kv_cache.torch is torch: patched while this runs
    monkeypatch.setattr(kv_cache.torch, "zeros", lambda *a, **k: made.append(events[-1:]) or real_zeros(*a, **k))
    monkeypatch.setattr(kv_cache.torch, "empty", lambda *a, **k: made.append(events[-1:]) or real_empty(*a, **k))
    _, cache = model.start_decoding(hidden, None, rows_per_input=2, max_length=9)
    monkeypatch.undo()
    assert events == ["released", "mapped", "heap"]
    assert made[:1 + 2 * model.config.decoder_layers] == [["mapped"]] * (1 + 2 * model.config.decoder_layers)
    assert cache.self_kv.shape[2] == 2 and cache.max_length == 9


def test_own_mappings_leaves_a_process_keep_freed_memory_has_not_tuned(monkeypatch):
    """A model not loaded by from_pretrained (built from its config) leaves malloc as it is: own_mappings fixed the
    mmap threshold at 32 MiB at every generate, whatever the program had set."""
    from seq2seq_kit import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(cpu_memory, "tuned", False)
    with cpu_memory.own_mappings():
        pass
    assert calls == []
    assert cpu_memory.keep_freed_memory() and cpu_memory.tuned
    with cpu_memory.own_mappings():
        pass
    assert calls[2:] == [(cpu_memory.M_MMAP_THRESHOLD, 256 << 10), (cpu_memory.M_MMAP_THRESHOLD, 32 << 20)]


@pytest.mark.parametrize("tunables, ours", [("glibc.malloc.mmap_threshold=262144", False),
                                            ("glibc.cpu.hwcaps=-AVX2:glibc.malloc.trim_threshold=0", False),
                                            ("glibc.cpu.hwcaps=-AVX2", True)])
def test_glibc_tunables_of_malloc_are_the_users_tuning(monkeypatch, tunables, ours):
    """GLIBC_TUNABLES is glibc's current interface to the tuning the MALLOC_*_ variables set: its malloc tunables
    win over keep_freed_memory as those variables do (they were overridden)."""
    from seq2seq_kit import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GLIBC_TUNABLES", tunables)
    monkeypatch.setattr(cpu_memory, "tuned", False)
    assert cpu_memory.keep_freed_memory() is ours and cpu_memory.map_weights_while_loading() is ours
    assert bool(calls) is ours


@pytest.mark.parametrize("name", ["MALLOC_MMAP_MAX_", "MALLOC_ARENA_MAX", "MALLOC_PERTURB_", "MALLOC_TOP_PAD_"])
def test_every_glibc_malloc_variable_is_the_users_tuning(monkeypatch, name):
    """Any of glibc's MALLOC_ variables leaves malloc to the user, as any glibc.malloc tunable in GLIBC_TUNABLES
    does (README: "any of its MALLOC_ variables"); MALLOC_MMAP_MAX_=0 and MALLOC_PERTURB_ were tuned over."""
    from seq2seq_kit import cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for other in cpu_memory.USER_TUNING:
        monkeypatch.delenv(other, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    monkeypatch.setattr(cpu_memory, "tuned", False)
    assert cpu_memory.keep_freed_memory() and calls                 # no user tuning: ours
    calls.clear()
    monkeypatch.setenv(name, "0" if name == "MALLOC_MMAP_MAX_" else "2")
    assert not cpu_memory.keep_freed_memory() and not cpu_memory.map_weights_while_loading() and not calls


def test_a_failed_int8_load_leaves_the_threshold_a_loaded_model_has(monkeypatch, tmp_path, tiny_eos_path):
    """A failed from_pretrained(dtype="int8") left the 256 KiB mmap threshold of loading for the rest of the process
    (every block of 256 KiB or more mapped and unmapped: measured 15x slower allocations): it ends with
    keep_freed_memory's tuning, as a load that succeeds."""
    import shutil

    from seq2seq_kit import BartForConditionalGeneration, cpu_memory

    calls = []
    monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: calls.append(a) or 1}))
    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    broken = shutil.copytree(tiny_eos_path, tmp_path / "broken")
    weights = broken / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ValueError):
        BartForConditionalGeneration.from_pretrained(broken, dtype="int8")
    assert calls == [(cpu_memory.M_MMAP_THRESHOLD, 256 << 10), (cpu_memory.M_TRIM_THRESHOLD, 1 << 30),
                     (cpu_memory.M_MMAP_THRESHOLD, 32 << 20)]


def test_keep_freed_memory_is_tuned_only_when_both_thresholds_were_set(monkeypatch):
    from seq2seq_kit import cpu_memory

    for name in cpu_memory.USER_TUNING:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.delenv("GLIBC_TUNABLES", raising=False)
    for results, want in (((1, 1), True), ((1, 0), False), ((0, 1), False)):
        answers = iter(results)
        monkeypatch.setattr(cpu_memory, "glibc", lambda: type("libc", (), {"mallopt": lambda *a: next(answers)}))
        monkeypatch.setattr(cpu_memory, "tuned", False)
        assert cpu_memory.keep_freed_memory() is want and cpu_memory.tuned is want
