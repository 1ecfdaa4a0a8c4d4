"""Choosing the CPU matmul kernels of the linear layers (models/kernels.py) by measurement, once per machine.

For a float32 model on the CPU, from_pretrained calls `choose`: each distinct weight shape of the linear layers is
timed at one row count per row class (1, 4, 32 and 128 rows: greedy, beams, the engine's and the corpus jobs'
batches, and those batches' beams; 512: a source through the encoder) with every kernel that some kind of layer may
run there (`timed`: no gemv beyond 64 rows), as the model runs it: a decode step's row counts (1 to 64) over a
stream of copies of the weight called in turn, as a step reads its layers' weights from memory one after another;
more rows (compute-bound) one call each, cold (the weight evicted from the caches first); the fastest of a few
rounds, about 10 s for distilbart on 2 cores. Each kind of layer and row class gets the fastest
kernel among those ELIGIBLE for it (the ones that keep token parity with transformers); whether a kind's weight is
packed for oneDNN (one layout for every row count) is decided on the row classes in models/kernels.py's DECIDING.
The timings are cached in a JSON file per CPU model, torch version, thread count, gemv build (models/gemv.py's
build()) and way of timing (METHOD) under $XDG_CACHE_HOME/seq2seq_kit/kernels/ (else ~/.cache/...), so later loads on
the same machine measure nothing; a new weight shape is measured and added.
Timings taken while the machine is busy (load average at or above its CPU count) are used but not cached: other
processes' threads stall oneDNN's parallel loops far more than MKL's one-row path, which would pin a wrong choice.

The decode step's attention is chosen the same way (choose_attention): torch's scaled_dot_product_attention
("sdpa") or seq2seq_kit's own kernel (models/attention.py, "own"), each timed on the model's heads against a
512-position source with 1 and 4 queries, over a stream of copies of the keys and values; the timings are kept in
the same file.

SEQ2SEQ_KIT_CPU_KERNELS forces a choice (reproducible runs, tests):
  measure (or unset)              the measured choice above
  default                         models/kernels.py's DEFAULT table (no measurement)
  mkl | mkl-t | onednn | onednn-packed | gemv | gemv-noprefetch   that kernel wherever ELIGIBLE allows it, mkl
                                  elsewhere; the attention: "own" with either gemv (where it can run), else "sdpa"
  fc1=onednn-packed,lm_head=onednn,...   exactly these kinds (all row classes), mkl for the rest; not checked
                                  against ELIGIBLE (outside it, token parity is not guaranteed); attention "sdpa"
"gemv" or "gemv-noprefetch" where it cannot run (not built at install, or a CPU without AVX2 and FMA) is refused,
naming why.
"""

from __future__ import annotations

import logging
import math
import os
import platform
import re
import time
from contextlib import contextmanager
from functools import partial
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from .jsonfile import read_json_object, replace_json
from .models import attention, gemv, kernels

logger = logging.getLogger(__name__)
ENV = "SEQ2SEQ_KIT_CPU_KERNELS"
PROBE_ROWS = {"1": 1, "2-8": 4, "9-64": 32, "65-256": 128, "257+": 512}   # row class -> the row count timed for it
ROUNDS = {"1": 3, "2-8": 3, "9-64": 3, "65-256": 3,     # row class -> timed calls per candidate (the fastest
          "257+": 1}                                   # counts); 512 rows: compute-bound, steady, the costliest
STREAMED = kernels.FEW_ROWS               # row classes timed over a stream of copies (stream): a decode step's
MAX_COPIES = 64                           # at most this many copies: a decode step calls fewer linear layers
METHOD = "streamed"                       # how the timings are taken, in the cache file's name: timings taken
                                          # otherwise (one cold call per candidate, before 2026-12-07) are not reused
ATTENTION_ROWS = {"1": 1, "2-8": 4}       # row class -> query rows per (input, head) timed: greedy, beams
ATTENTION_SOURCE = 512                    # keys and values per (input, head) timed: a summarization input


def choose(model) -> dict[str, dict[str, str]] | None:
    """The kernel table for a loaded model (BartNetwork), or None where the kernels do not apply (not float32 on
    the CPU, no oneDNN): measured or forced as the module docstring says. A malformed forced choice raises for
    every model (an int8 or bfloat16 one too), not only where it would apply."""
    mode, table = setting()
    if model.device.type != "cpu" or model.dtype != torch.float32 or not kernels.ONEDNN:
        return None
    if mode == "measure":
        return measured(model)
    if mode == "default":
        return kernels.DEFAULT
    if mode in kernels.KERNELS:
        return {kind: {c: mode if mode in ok else "mkl" for c, ok in kernels.ELIGIBLE[kind].items()}
                for kind in kernels.KINDS}
    return table


def choose_attention(model) -> str | None:
    """What a float32 CPU model's decode step runs its attention with: "own" (models/attention.py) or "sdpa"; None
    where the choice does not apply (another dtype or device). Measured (and cached with the matmul timings) unless
    SEQ2SEQ_KIT_CPU_KERNELS forces a choice: either gemv runs "own" too, any other forced value "sdpa"."""
    mode, _ = setting()
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return None
    heads = model.config.decoder_attention_heads
    width = model.config.d_model // heads
    if not attention.available() or width % 8:
        return "sdpa"
    if mode != "measure":
        return "own" if mode in kernels.GEMV else "sdpa"
    path, key = cache_path(), f"{heads}x{width}"
    timings = load_timings(path, "attention")
    if key not in timings:
        add_timings(path, timings, lambda: {key: time_attention(heads, width)}, "attention")
    t = timings[key]
    return "own" if sum(t[c]["own"] / t[c]["sdpa"] for c in t) < len(t) else "sdpa"


def choose_screen(model) -> bool | None:
    """Whether a float32 CPU model's greedy steps are screened (models/logit_screen.py: an int8 copy of the LM head
    bounds the logits, gemv computes the few that can win): wherever gemv runs, unless SEQ2SEQ_KIT_CPU_KERNELS forces
    the LM head onto another kernel (every logit then comes from that kernel); None where the choice does not apply
    (another dtype or device)."""
    mode, table = setting()
    if model.device.type != "cpu" or model.dtype != torch.float32:
        return None
    if not gemv.available():
        return False
    if mode in ("measure", *kernels.GEMV):
        return True
    head = set((table or {}).get("lm_head", {}).values())
    return bool(head) and head <= set(kernels.GEMV)


def setting() -> tuple[str, dict[str, dict[str, str]] | None]:
    """SEQ2SEQ_KIT_CPU_KERNELS read and checked: (its mode, the table of a KIND=KERNEL list, else None); a malformed
    value, or one naming a kernel that cannot run here, raises ValueError."""
    mode = os.environ.get(ENV, "measure").strip() or "measure"
    table = None if mode in ("measure", "default", *kernels.KERNELS) else forced(mode)
    named = {mode} | {k for by_class in (table or {}).values() for k in by_class.values()}
    if named & set(kernels.GEMV) and not gemv.available():
        raise ValueError(f"{ENV}={mode!r}: seq2seq_kit's gemv kernel cannot run here ("
                         + ("it needs an x86-64 CPU with AVX2 and FMA" if gemv.built() else
                            "it was not built at install: reinstall seq2seq-kit where a C compiler with OpenMP is "
                            "at hand") + "); choose another kernel")
    return mode, table


def gemv_status() -> str:
    """How seq2seq_kit's own gemv kernel stands on this machine, for `inspect` and the benchmark's machine line."""
    if not gemv.built():
        return "not built (no C compiler with OpenMP at install)"
    return {2: "AVX-512", 1: "AVX2"}.get(gemv.ISA, "cannot run (the CPU lacks AVX2 and FMA)")


def usable() -> tuple[str, ...]:
    """The kernels that can run here: all of KERNELS but gemv's where it cannot."""
    return tuple(k for k in kernels.KERNELS if k not in kernels.GEMV or gemv.available())


def timed(row_class: str) -> tuple[str, ...]:
    """The kernels timed at a row class: the usable ones that some kind of layer may run there (ELIGIBLE), so not
    gemv's beyond 64 rows (compute-bound there, never eligible: timing them took a third of the measuring at 128 and
    512 rows, 2.2 s of distilbart's 200 MB LM head)."""
    eligible = {k for by_class in kernels.ELIGIBLE.values() for k in by_class[row_class]}
    return tuple(k for k in usable() if k in eligible)


def forced(spec: str) -> dict[str, dict[str, str]]:
    """"kind=kernel,kind=kernel" -> a table with those kinds on that kernel for every row class."""
    table = {}
    for item in spec.split(","):
        kind, _, kernel = item.strip().partition("=")
        if kind not in kernels.KINDS or kernel not in kernels.KERNELS:
            raise ValueError(f"{ENV}={spec!r}: {item.strip()!r} is not KIND=KERNEL; use measure, default, one of "
                             f"{', '.join(kernels.KERNELS)}, or KIND=KERNEL,... with KIND in "
                             f"{', '.join(kernels.KINDS)}")
        table[kind] = dict.fromkeys(kernels.ROW_CLASSES, kernel)
    return table


BUSY = "these timings serve this load only and are not kept: the next load on a quiet machine times them again"


def measured(model) -> dict[str, dict[str, str]]:
    """Time the shapes the cache lacks, save them, and select among the eligible kernels."""
    layers = model.kernel_linears()
    path = cache_path()
    timings = load_timings(path)
    missing = {shape_key(ms[0]): ms[0] for ms in layers.values() if ms and shape_key(ms[0]) not in timings}
    if missing:
        keeping = path is not None and is_quiet()
        logger.info("timing the CPU matmul kernels on %d weight shape%s of this model, once per machine (%s)",
                    len(missing), "s" * (len(missing) != 1), f"kept in {path}" if keeping else
                    "no cache folder: at each load" if path is None else f"the machine is busy, so {BUSY}")
        kept = add_timings(path, timings, lambda: {key: time_layer(layer) for key, layer in missing.items()})
        if keeping and kept == "busy":
            logger.info("the machine became busy while the kernels were timed, so %s", BUSY)
        elif kept == "unwritable":
            logger.info("%s cannot be written, so these timings serve this process only: a new process times "
                        "them again", path)
    tied = model.lm_head.weight is model.decoder_embeddings.weight
    return {kind: select(timings[shape_key(ms[0])], kernels.ELIGIBLE[kind],
                         packable=not (kind == "lm_head" and tied), deciding=kernels.DECIDING[kind])
            for kind, ms in layers.items() if ms}


def select(timing: dict[str, dict[str, float]], eligible: dict[str, tuple[str, ...]],
           packable: bool = True, deciding: tuple[str, ...] = tuple(kernels.ROW_CLASSES)) -> dict[str, str]:
    """timing {row class: {kernel: ms}}, eligible {row class: kernels} -> {row class: kernel}. A packed weight
    serves every row class, so it is taken only where every class allows it and its time, summed over the `deciding`
    classes each relative to that class's fastest, beats the best dense kernel's per class."""
    best_dense = {c: min((k for k in eligible[c] if k != "onednn-packed" and k in t), key=lambda k: t[k])
                  for c, t in timing.items()}
    if packable and all("onednn-packed" in eligible[c] for c in timing):
        fastest = {c: min(timing[c].values()) for c in deciding}
        packed_score = sum(timing[c]["onednn-packed"] / fastest[c] for c in deciding)
        dense_score = sum(timing[c][best_dense[c]] / fastest[c] for c in deciding)
        if packed_score < dense_score:
            return dict.fromkeys(timing, "onednn-packed")
    return best_dense


def time_layer(layer) -> dict[str, dict[str, float]]:
    """{row class: {kernel: ms per call}} for one layer's weight (float32): every kernel of models/kernels.py that
    can run here (the packed one on copies made for the timing only). A decode step's row classes (STREAMED) are
    timed over a stream: the weight and copies of it, called in turn, as a step reads one layer's weight after
    another from memory; the hardware prefetcher then runs as it does in a step. A single cold call misjudges that:
    on an AMD EPYC Zen 4 one cold call of a 4 MB weight ran 23% faster without gemv's software prefetch, a stream
    of them 14-19% slower, and a decode step's 36 weights in turn 15% slower. More rows (compute-bound) are timed
    one cold call each, the weight evicted from the caches first. The candidates take turns, ROUNDS[row class]
    times, and each keeps its fastest round: on a shared machine other work only ever adds time."""
    weight = layer.dense_weight().detach()
    bias = None if layer.bias is None else layer.bias.detach()
    dense = copies(weight)
    packed = [kernels.pack(w) for w in dense]
    runs = {"mkl": F.linear, "onednn-packed": kernels.onednn_linear, **kernels.DENSE}   # name -> fn(x, weight, bias)
    g = torch.Generator().manual_seed(0)
    scratch = torch.ones(last_level_cache_bytes() // 2, dtype=torch.float32)     # twice the cache's bytes
    timings = {}
    for row_class, rows in PROBE_ROWS.items():
        n = len(dense) if row_class in STREAMED else 1
        operands = {name: [(w, bias) for w in (packed if name == "onednn-packed" else dense)[:n]] for name in runs}
        candidates = {name: in_turn(runs[name], operands[name]) for name in timed(row_class)}
        timings[row_class] = fastest(candidates, torch.randn(rows, weight.shape[1], generator=g), ROUNDS[row_class],
                                     scratch, calls=n)
    return timings


def time_attention(heads: int, width: int) -> dict[str, dict[str, float]]:
    """{row class: {"sdpa": ms, "own": ms}}: one input's decode-step attention over ATTENTION_SOURCE keys and values
    per head, ATTENTION_ROWS[row class] queries, over a stream of copies of the keys and values (as a step reads
    each layer's cross-attention keys and values from memory, between its weights), the fastest of a few rounds."""
    g = torch.Generator().manual_seed(0)
    kv = torch.randn(2, 1, heads, ATTENTION_SOURCE, width, generator=g)      # keys, values
    stream = [tuple(c) for c in copies(kv)]                                     # (keys, values) copies
    scale = width ** -0.5
    candidates = {"sdpa": in_turn(partial(F.scaled_dot_product_attention, scale=scale), stream),
                  "own": in_turn(partial(attention.attend, scale=scale), stream)}
    scratch = torch.ones(last_level_cache_bytes() // 2, dtype=torch.float32)
    return {row_class: fastest(candidates, torch.randn(1, heads, rows, width, generator=g), 3, scratch,
                               calls=len(stream))
            for row_class, rows in ATTENTION_ROWS.items()}


def copies(t: torch.Tensor) -> list[torch.Tensor]:
    """t and clones of it, twice the last-level cache's bytes together (at most MAX_COPIES): called in turn, each
    call finds its tensor in memory, not in the caches. Tensors so small that MAX_COPIES of them fit in the caches
    stay there, as a small model's weights do in its decode step."""
    n = min(MAX_COPIES, max(1, math.ceil(2 * last_level_cache_bytes() / (t.numel() * t.element_size()))))
    return [t] + [t.clone() for _ in range(n - 1)]


def in_turn(fn: Callable, operands: list[tuple]) -> Callable:
    """x -> fn(x, *each) for each of the operands in turn, (weight, bias) or (keys, values) (the outputs dropped as
    they come)."""
    def run(x: torch.Tensor) -> None:
        for each in operands:
            fn(x, *each)
    return run


def fastest(candidates: dict, x: torch.Tensor, rounds: int, scratch: torch.Tensor, calls: int = 1) -> dict[str, float]:
    """{name: ms per call}: each candidate (making `calls` calls) run on x `rounds` times after a warm-up round, the
    candidates taking turns; a single call runs after `evict(scratch)`, a stream of calls on copies does not (twice
    the caches' size, it leaves its first copies out of them on its own); each keeps its fastest run (on a shared
    machine other work only ever adds time)."""
    best = dict.fromkeys(candidates, float("inf"))
    with torch.inference_mode():
        for _ in range(rounds + 1):                                     # the first round warms up
            for name, fn in candidates.items():
                if calls == 1:
                    evict(scratch)
                start = time.perf_counter()
                fn(x)
                best[name] = min(best[name], time.perf_counter() - start)
    return {name: round(1000 * s / calls, 4) for name, s in best.items()}


def evict(scratch: torch.Tensor) -> None:
    """Read a buffer twice the last-level cache's size, so the next call finds no weight in the caches."""
    scratch.sum()


def last_level_cache_bytes() -> int:
    """The largest CPU cache's size as Linux reports it (sysfs), 32 MiB where it does not."""
    sizes = []
    for path in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        try:
            m = re.fullmatch(r"(\d+)([KMG]?)", path.read_text().strip())
        except OSError:
            m = None
        if m:
            sizes.append(int(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])
    return min(max(sizes, default=32 << 20), 1 << 30)


def shape_key(layer) -> str:
    return f"{layer.out_features}x{layer.in_features}" + ("" if layer.bias is not None else "-nobias")


# ---- the cache --------------------------------------------------------------------------------------------------

def cpu_name() -> str:
    """The CPU model as /proc/cpuinfo names it, with its family/model/stepping and the ISA torch uses, e.g.
    "AMD EPYC (family 25 model 1 stepping 1, AVX2)"."""
    try:
        info = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        info = ""
    field = {k: re.search(rf"^{k}\s*:\s*(.*)$", info, re.M) for k in ("model name", "cpu family", "model",
                                                                       "stepping")}
    name = field["model name"].group(1).strip() if field["model name"] else (platform.processor() or "unknown CPU")
    ids = " ".join(f"{k.split()[-1]} {m.group(1).strip()}" for k, m in field.items() if k != "model name" and m)
    return f"{name} ({ids + ', ' if ids else ''}{torch.backends.cpu.get_cpu_capability()})"


def cache_path() -> Path | None:
    """The timings file for this CPU, torch version, thread count, build of seq2seq_kit's own kernel and the code of
    it that runs (gemv.ISA: tests and benchmarks run the AVX2 code on an AVX-512 CPU), and the way they were taken
    (METHOD); None where there is no cache folder (no XDG_CACHE_HOME, no HOME, a user without a home: measured at
    each load)."""
    try:
        root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "seq2seq_kit" / "kernels"
    except RuntimeError:                    # Path.home(): "Could not determine home directory."
        return None
    key = f"{cpu_name()} torch {torch.__version__} {torch.get_num_threads()} threads gemv {gemv.build()} " \
          f"isa {gemv.ISA} {METHOD}"
    return root / (re.sub(r"[^A-Za-z0-9.]+", "-", key).strip("-") + ".json")


def load_timings(path: Path | None, section: str = "timings") -> dict:
    """The cached {shape: {row class: {kernel: ms}}} of the linear layers ("timings"), or of the attention
    ("attention": {heads x width: ...}); {} when there is none, or it is unreadable or malformed."""
    if path is None:
        return {}
    try:
        timings = read_json_object(path).get(section, {})
    except (OSError, ValueError):
        timings = {}
    expected = {c: set(timed(c)) for c in PROBE_ROWS} if section == "timings" else \
        {c: set(attention.KERNELS) for c in ATTENTION_ROWS}
    return {**(timings if well_formed(timings, expected) else {}), **UNWRITTEN.get((path, section), {})}


def well_formed(timings, expected: dict[str, set[str]]) -> bool:
    """Whether timings is {shape: {row class: {kernel: ms}}} with exactly the expected row classes and each one's
    kernels ({row class: kernels}), each time a positive finite number: what select() or choose_attention() chooses
    from."""
    if not isinstance(timings, dict):
        return False
    for by_class in timings.values():
        if not isinstance(by_class, dict) or set(by_class) != set(expected):
            return False
        for row_class, by_kernel in by_class.items():
            if not isinstance(by_kernel, dict) or set(by_kernel) != expected[row_class]:
                return False
            if not all(type(ms) in (int, float) and 0 < ms < math.inf for ms in by_kernel.values()):
                return False
    return True


def busy() -> float:
    """The machine's 1-minute load average (runnable threads), 0 where the OS does not say."""
    try:
        return os.getloadavg()[0]
    except (OSError, AttributeError):
        return 0.0


def is_quiet() -> bool:
    """Fewer runnable threads than CPUs: timings taken now may be kept (os.cpu_count() is None where the OS does
    not say: one CPU then)."""
    return busy() < (os.cpu_count() or 1)


def add_timings(path: Path | None, timings: dict, measure: Callable[[], dict], section: str = "timings") -> str:
    """timings updated with measure()'s, taken now; saved (save_timings) only when the machine was quiet before and
    after the measuring: timings taken on a busy machine serve this load only. Returns "kept", "busy" (not kept),
    "unwritable" (kept for this process: UNWRITTEN) or "no cache"."""
    quiet = is_quiet()
    timings.update(measure())
    if path is None:
        return "no cache"
    if not (quiet and is_quiet()):
        return "busy"
    if save_timings(path, timings, section):
        return "kept"
    UNWRITTEN.setdefault((path, section), {}).update(timings)
    return "unwritable"


# Timings this process took on a quiet machine but could not write (a read-only cache folder), by (path, section):
# load_timings serves them, so one process does not time the same shapes at every load
UNWRITTEN: dict[tuple[Path, str], dict] = {}


def save_timings(path: Path | None, timings: dict, section: str = "timings") -> bool:
    """Add timings to one section of the file, keeping what is there (what other processes measured meanwhile,
    merged under a lock on the cache folder) and the other section; whether it was written. Best effort: a cache
    that cannot be written (read-only home, none at all) only means measuring again in the next process."""
    if path is None:
        return False
    other = "attention" if section == "timings" else "timings"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with _locked(path.parent):
            replace_json(path, {"cpu": cpu_name(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                                other: load_timings(path, other),
                                section: {**load_timings(path, section), **timings}}, indent=1)
    except OSError:
        return False
    return True


@contextmanager
def _locked(folder: Path):
    """An exclusive lock on a folder while the body runs (none where the OS has no flock)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        try:
            import fcntl
            fcntl.flock(fd, fcntl.LOCK_EX)
        except ImportError:  # pragma: no cover - not POSIX
            pass
        yield
    finally:
        os.close(fd)          # releases the lock


def describe(table: dict[str, dict[str, str]]) -> str:
    """One line: "self_qkv mkl; fc1 onednn-packed; lm_head 1:onednn 2-8:onednn 9-64:mkl; ..."."""
    parts = []
    for kind, by_class in table.items():
        kinds = set(by_class.values())
        parts.append(f"{kind} {kinds.pop()}" if len(kinds) == 1 else
                     f"{kind} " + " ".join(f"{c}:{k}" for c, k in by_class.items()))
    return "; ".join(parts)
