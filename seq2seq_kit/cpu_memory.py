"""Keeping freed memory for reuse on the CPU (Linux with glibc).

A decode step allocates a few tensors as wide as the vocabulary ([rows, V] float32: 30 MB at 128 rows of a 58k
vocabulary) and frees them before the next step. glibc's malloc gives such memory back to the kernel once the free
space at the top of its heap passes M_TRIM_THRESHOLD (by default twice the largest block it has handed out), so the
next step takes it back page by page: one page fault per 4 KiB, measured at ~17,000 faults and ~60 ms of a 260 ms
step (OPUS-MT, batch 32, beam 4, 2 cores). Raising the trim threshold and fixing the mmap threshold at its maximum
keeps that memory in the heap for the next step, as jemalloc or tcmalloc would. The cost: the process keeps up to
TRIM_THRESHOLD of freed memory instead of returning it (blocks over 32 MiB are still mapped and unmapped each time).

from_pretrained calls keep_freed_memory() for a model on the CPU. It changes nothing when the C library is not glibc
or when the environment sets glibc's own tuning (any of its MALLOC_ variables, USER_TUNING, or a glibc.malloc tunable
in GLIBC_TUNABLES): the user's choice wins, e.g. MALLOC_TRIM_THRESHOLD_=131072 keeps glibc's
default behaviour. Nothing else here tunes a process keep_freed_memory has not tuned.

The other side of that choice: memory freed once for good (the float32 weights that int8 quantization replaces) would
stay in the heap too, so from_pretrained(dtype="int8") calls release_freed_memory() after quantizing. Before loading
it calls map_weights_while_loading(): every block of OWN_MAPPING or more gets a mapping of its own while the
model loads (then keep_freed_memory's threshold, whether the load failed or not), so a float32 weight freed as its
layer is quantized goes straight back to the kernel and the int8 weights kept are not strewn through a heap the
float32 model grew (measured, distilbart int8: the heap 812 MB after loading, its freed holes filled page by page
by the calls that follow, against 92 MB; a call's peak RSS 20-25 MB lower).

Between a call's encoder and its decoder (models/bart.py, a new KV cache): the encoder's temporaries are freed for
good, so their pages go back (release_freed_memory), and the cache is allocated under own_mappings(): its blocks
that the heap's free space cannot hold get mappings of their own, unmapped when the call ends, instead of growing a
heap that would keep them. Measured, distilbart int8 greedy, a 512-token input: a call's peak RSS above the loaded
model 72-75 MB before, 50-53 MB after (with the int8 cross-attention projection in blocks: bart.py's
project_kv_into); beam 4: 97 MB, 80-85 MB.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform

M_TRIM_THRESHOLD, M_MMAP_THRESHOLD = -1, -3          # mallopt's parameters (malloc.h)
OWN_MAPPING = 256 << 10                              # while an int8 model loads, and under own_mappings(): blocks of
                                                     # 256 KiB or more get mappings of their own
TRIM_THRESHOLD = 1 << 30                             # free heap kept before returning any: above a step's temporaries
MMAP_THRESHOLD = 32 << 20                            # glibc's largest allowed: blocks up to 32 MiB come from the heap
# glibc's malloc variables (mallopt(3), "ENVIRONMENT"), as GLIBC_TUNABLES' glibc.malloc.* tunables count too
USER_TUNING = ("MALLOC_TRIM_THRESHOLD_", "MALLOC_MMAP_THRESHOLD_", "MALLOC_TOP_PAD_", "MALLOC_MMAP_MAX_",
               "MALLOC_ARENA_MAX", "MALLOC_ARENA_TEST", "MALLOC_PERTURB_", "MALLOC_CHECK_")
tuned = False                                        # keep_freed_memory tuned this process (own_mappings acts then)


def glibc() -> ctypes.CDLL | None:
    """The process's own C library when it is glibc on Linux, else None."""
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    return ctypes.CDLL(None)


def ours_to_tune() -> ctypes.CDLL | None:
    """glibc, where its malloc is ours to tune: None where it is not glibc or the environment holds the user's own
    tuning (USER_TUNING), which wins."""
    libc = glibc()
    users = any(name in os.environ for name in USER_TUNING) or "glibc.malloc." in os.environ.get("GLIBC_TUNABLES", "")
    return None if libc is None or users else libc


def keep_freed_memory() -> bool:
    """Tune glibc's malloc as the module docstring says; True when it did (or had already)."""
    global tuned
    libc = ours_to_tune()
    if libc is None:
        return False
    tuned = bool(libc.mallopt(M_TRIM_THRESHOLD, TRIM_THRESHOLD)) & bool(libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD))
    return tuned


def map_weights_while_loading() -> bool:
    """Map every block of OWN_MAPPING or more on its own (see the module docstring) until keep_freed_memory()
    sets the running threshold; True when it did. Changes nothing where keep_freed_memory would not."""
    libc = ours_to_tune()
    if libc is None:
        return False
    return bool(libc.mallopt(M_MMAP_THRESHOLD, OWN_MAPPING))


@contextlib.contextmanager
def own_mappings():
    """Inside: a block of OWN_MAPPING or more that the heap's free space cannot hold gets a mapping of its own (glibc
    serves what its free space holds first); after: keep_freed_memory's threshold, as from_pretrained sets it.
    Changes nothing where keep_freed_memory has not tuned malloc (a model not from from_pretrained, not glibc, or
    the user's own tuning)."""
    libc = ours_to_tune() if tuned else None
    if libc is None:
        yield
        return
    libc.mallopt(M_MMAP_THRESHOLD, OWN_MAPPING)
    try:
        yield
    finally:
        libc.mallopt(M_MMAP_THRESHOLD, MMAP_THRESHOLD)


def release_freed_memory() -> bool:
    """Give every free page of glibc's heap back to the kernel now (malloc_trim(0)); True when it did."""
    libc = glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True
