"""Handing the CPU's OpenMP threads to the thread that decodes (torch's CPU build on GNU OpenMP, libgomp).

Every thread that runs a parallel torch operation gets its own libgomp thread pool, which stays after the operation.
libgomp counts the threads of all pools, and once they outnumber the CPUs it stops letting idle workers spin before
they sleep: every parallel region then waits for a worker to be woken. The engine's thread is the second pool on a
machine whose first pool already fills the CPUs (the thread that loaded the model: its weights' copies ran in
parallel), so each of a decode step's ~1,000 parallel operations paid that wake-up. Measured on 2 cores (torch
2.13): an index_select of 18 MB took 2.7 ms on a second thread against 0.72 ms on the first, with both of its
threads half idle; the engine's step over 32 beam rows took 127 ms against 107 ms for the same step on the loading
thread.

hand_over_pool() releases the calling thread's pool (OpenMP 5's omp_pause_resource_all, soft pause): the Engine
calls it in the thread that creates it, usually the one that loaded the model, before its own thread starts.
Should the caller run parallel torch work again, its pool comes back, and the two threads share the cores as
before. It does nothing where torch does not run on libgomp (Intel OpenMP, macOS, Windows).
"""

from __future__ import annotations

import ctypes

OMP_PAUSE_SOFT = 1                   # omp_pause_resource_t (omp.h): release the threads, keep nothing else


def libgomp() -> ctypes.CDLL | None:
    """The libgomp that this process has loaded (torch's own copy), or None."""
    try:
        with open("/proc/self/maps") as maps:
            paths = libgomp_paths(maps)
    except OSError:
        return None
    for path in paths:
        try:
            library = ctypes.CDLL(path)     # already loaded: dlopen returns that copy
        except OSError:                     # (deleted, or renamed since): not ours to hand over
            continue
        if hasattr(library, "omp_pause_resource_all"):
            return library
    return None


def libgomp_paths(maps) -> list[str]:
    """The libgomp files among /proc/self/maps' lines (address perms offset dev inode path: the path, which may hold
    spaces, is the rest of the line), sorted."""
    fields = (line.rstrip("\n").split(maxsplit=5) for line in maps)
    return sorted({f[5] for f in fields if len(f) == 6 and "libgomp" in f[5] and f[5].endswith(".so.1")})


def hand_over_pool() -> bool:
    """Release the calling thread's OpenMP worker threads (see the module docstring); True when it did."""
    library = libgomp()
    return library is not None and library.omp_pause_resource_all(OMP_PAUSE_SOFT) == 0
