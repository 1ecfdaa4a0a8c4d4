"""The Ray Data engine of `process_corpus` (engine="ray"). Ray is an extra: it is imported only when a job
uses this engine.

    chunks (the driver's plan) -> ray.data.from_items, one block per chunk
      -> map_batches(_RayWorker): an actor pool, the model loaded once per actor; each actor reads its chunk
         from the input files and yields its results as its engine finishes documents (worker.Worker, as the
         local engine)
      -> iter_rows on the driver, which writes them through the same Output as the local engine.

Exactly once: Ray Data restarts an actor that dies and retries its task on the new one (its actor pools
default to max_restarts=-1 and max_task_retries=-1: an actor killed mid-chunk, e.g. a lost node, is
replaced and the chunk is done again); the retried chunk yields its results again and the driver's
Output drops the ids it already wrote.
The input paths must be readable at the same path on every node (a shared filesystem), as for ray.data.read_*.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from .. import ray_cluster
from ..loading import resolve_device
from .worker import Worker

RETRIES = 3    # an actor restarted, and its chunk done again, this many times (a lost node); then the job fails
ANSI = re.compile(r"\x1b\[[0-9;]*m")   # terminal colour codes in Ray's messages
# The ERROR line Ray's core (C++, straight to stderr) prints on every run: Ray Data's actors get their arguments
# from the object store and may restart (ray#53727). A restarted actor here rebuilds its Worker from them.
RESTART_NOTICE = b"has constructor arguments in the object store and max_restarts > 0"


def require_ray():
    try:
        import ray
        import ray.data
    except ImportError:
        raise ImportError('engine="ray" (--ray) needs Ray Data: pip install "seq2seq-kit[ray]"') from None
    return ray


def results(chunks: list[dict], worker_kwargs: dict, *, address: str | None, actors: int | None,
            device) -> Iterator[dict]:
    """The Worker results of every chunk, computed on a Ray actor pool, as they come."""
    ray = require_ray()
    if not chunks:              # nothing left to do: no cluster started or joined
        return
    started = not ray.is_initialized()
    if started:  # None: a local Ray instance; "auto" / "ray://...": join that cluster
        ray_cluster.join(ray, address)
    try:
        actors, resources = _pool(ray, actors, device, len(chunks))
        ctx = ray.data.DataContext.get_current()
        saved = ctx.enable_progress_bars, ctx.print_on_execution_start
        ctx.enable_progress_bars = ctx.print_on_execution_start = False   # the driver's own bar counts documents
        kwargs = dict(worker_kwargs, device="cuda" if resources.get("num_gpus") else "cpu",
                      threads=int(resources.get("num_cpus", 0)))
        ds = ray.data.from_items([{"chunk": json.dumps(c)} for c in chunks], override_num_blocks=len(chunks))
        ds = ds.map_batches(
            _RayWorker, batch_size=1, batch_format="numpy", fn_constructor_kwargs=kwargs,
            compute=ray.data.ActorPoolStrategy(size=actors, max_tasks_in_flight_per_actor=1),
            max_restarts=RETRIES, max_task_retries=RETRIES, **resources)
        ray_data_log = logging.getLogger("ray.data")
        level = ray_data_log.level
        ray_data_log.setLevel(logging.CRITICAL)      # its ERROR lines repeat the error we raise, at length
        try:
            with _stderr_without(RESTART_NOTICE):
                for row in ds.iter_rows():
                    yield json.loads(row["result"])
        except ray.exceptions.RayError as e:
            raise one_line_error(ray, e) from None
        finally:
            ctx.enable_progress_bars, ctx.print_on_execution_start = saved
            ray_data_log.setLevel(level)
    finally:
        if started:
            ray.shutdown()


@contextmanager
def _stderr_without(marker: bytes):
    """Within the block, stderr (fd 2) passes through a pipe that drops the lines holding `marker`; everything
    else (the progress bar too) is copied as it comes."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:   # pragma: no cover - no stderr to filter
        yield
        return
    read, write = os.pipe()
    os.dup2(write, 2)
    os.close(write)

    def pump():
        pending = b""
        while data := os.read(read, 1 << 16):
            pending += data
            *lines, pending = pending.split(b"\n")
            out = b"".join(line + b"\n" for line in lines if marker not in line)
            if pending and not pending.startswith(b"["):   # not a log line in the making: show it now
                out, pending = out + pending, b""
            if out:
                os.write(saved, out)
        if pending:
            os.write(saved, pending)

    thread = threading.Thread(target=pump, daemon=True)
    thread.start()
    try:
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)       # the pipe's last writer closed: the pump reads to its end
        thread.join()
        os.close(read)
        os.close(saved)


def one_line_error(ray, error: Exception) -> Exception:
    """The error an actor raised, as the local engine raises it: its type and the first line of its message
    (Ray wraps it in a RayTaskError holding the remote traceback, colour codes and retry advice)."""
    cause = error
    while isinstance(cause, ray.exceptions.RayTaskError) and isinstance(cause.cause, Exception):
        cause = cause.cause
    line = ANSI.sub("", str(cause)).strip().split("\n")[0]
    if cause is error:      # Ray's own (an actor that could not start or died): its type names it
        tried = (f" (a chunk was tried {RETRIES + 1} times, its actor killed each time: out of memory? a crash in a "
                 "native library?)") if isinstance(error, ray.exceptions.ActorDiedError) else ""
        return RuntimeError(f"Ray: {type(error).__name__}: {line}{tried}")
    try:
        return type(cause)(line)
    except Exception:   # noqa: BLE001 - an exception type that takes other arguments
        return RuntimeError(f"{type(cause).__name__}: {line}")


def _pool(ray, actors: int | None, device, chunks: int) -> tuple[int, dict]:
    """(pool size, resources per actor): one GPU each where the cluster has GPUs (unless device is the CPU),
    else an equal share of the CPUs. The default size is one actor per GPU, else one per node. A device other
    than None is resolved here, on the driver, as everywhere (loading.resolve_device)."""
    total = ray.cluster_resources()
    gpus = int(total.get("GPU", 0))
    cpu_only = device is not None and resolve_device(device).type == "cpu"
    if device is not None and not cpu_only and not gpus:
        raise ValueError(f"device={device!r} asks for GPUs, but the Ray cluster has none; leave device unset or "
                         "use 'cpu'")
    if gpus and not cpu_only:
        actors = actors or gpus
        if actors > gpus:
            raise ValueError(f"actors={actors}: the Ray cluster has {gpus} GPU(s), one per actor; use actors<={gpus} "
                             "or device='cpu'")
        return min(actors, chunks), {"num_gpus": 1}
    cpus = int(total.get("CPU", 0))
    if not cpus:
        raise ValueError("the Ray cluster has no CPUs to run actors on; add a node with CPUs (ray start --num-cpus N)")
    if actors is not None and actors > cpus:        # Ray Data would wait for CPUs that never come, or run fewer
        raise ValueError(f"actors={actors}: the Ray cluster has {cpus} CPU(s), at least one per actor; use "
                         f"actors<={cpus}")
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    actors = min(actors or len(nodes), chunks)
    biggest = max(int(n["Resources"].get("CPU", 0)) for n in nodes)
    return actors, {"num_cpus": max(1, min(cpus // actors, biggest))}


class _RayWorker:
    """map_batches callable: a Worker per actor; each input row is a chunk, each output row one Worker result."""

    def __init__(self, threads: int, **worker_kwargs):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.worker, self.error = None, None
        try:
            self.worker = Worker(**worker_kwargs)
        except Exception as e:  # noqa: BLE001 - raised by __call__: a task's error reaches the driver as it was
            self.error = e      # (one line there); the constructor's would be an ActorDiedError, its traceback logged

    def __call__(self, batch: dict) -> Iterator[dict]:
        import numpy as np

        if self.error is not None:
            raise self.error

        for chunk in batch["chunk"]:
            for result in self.worker.process(json.loads(chunk)):
                yield {"result": np.array([json.dumps(result, ensure_ascii=False)], dtype=object)}
