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
Output drops the ids it already wrote. A chunk that kills every actor doing it would be retried forever: a
counter actor (_Tries) counts each chunk's tries, and its 1 + RETRIES'th restart fails the job. (Ray Data's
max_restarts / max_task_retries go through map_batches' **ray_remote_args, deprecated since Ray 2.60.)
The input paths must be readable at the same path on every node (a shared filesystem), as for ray.data.read_*.
"""

from __future__ import annotations

import json
import logging
import os
import re
import socket
import sys
import threading
from contextlib import contextmanager
from typing import Iterator

from .. import ray_cluster
from ..loading import resolve_device
from .worker import Worker

RETRIES = 3    # a chunk done again on a restarted actor this many times (a lost node); then the job fails
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


def check_address(address: str | None) -> None:
    """Before any work: a Ray Client address (ray://HOST:PORT) is refused, as Ray Data does not run over Ray Client
    (ray-project/ray#48682: the job failed after its output files were created); so is an address other than the
    Ray this process already joined (the job would run there, the address ignored)."""
    if isinstance(address, str) and address.strip().startswith("ray://"):
        raise ValueError(f"ray_address {address!r} is a Ray Client address, and Ray Data (the corpus engine) does "
                         "not run over Ray Client; pass the cluster's GCS address HOST:6379 instead (e.g. head:6379), "
                         "or run the job on the cluster (on the head, or with `ray job submit`)")
    ray = require_ray()
    if ray.is_initialized():
        _check_same_cluster(ray, address)


class Cluster:
    """The Ray a job runs on, joined (or a local instance started) and its actor pool sized by start(): the driver
    calls it before --overwrite empties the output, so a job that cannot start leaves the old output as it was."""

    def __init__(self, address: str | None, actors: int | None, device):
        self.address, self.actors, self.device = address, actors, device
        self.ray = self.resources = None
        self.started = False

    def start(self, chunks: int) -> None:
        """Join Ray (None: a local instance; "auto" / HOST:PORT: that cluster) unless this process already has (the
        same cluster: check_address), and size the pool for `chunks` chunks; the Ray it started is shut down when
        that fails. Idempotent."""
        if self.ray is not None:
            return
        ray = require_ray()
        self.started = not ray.is_initialized()
        if self.started:
            ray_cluster.join(ray, self.address)
        try:
            self.actors, self.resources = _pool(ray, self.actors, self.device, chunks)
        except BaseException:
            self.close()
            raise
        self.ray = ray

    def close(self) -> None:
        """Shut down the Ray this job started (none that this process had joined before it)."""
        if self.started:
            self.started = False
            require_ray().shutdown()


def _check_same_cluster(ray, address: str | None) -> None:
    """An explicit address while this process is already in a Ray (ray.init before the job) must name that Ray's
    GCS: the job would silently run on the Ray already joined. None and "auto" take the one there."""
    if address is None or address == "auto":
        return
    host, _, port = address.strip().rpartition(":")
    current = ray.get_runtime_context().gcs_address
    here_host, _, here_port = current.rpartition(":")
    try:
        same = port == here_port and socket.gethostbyname(host.strip("[]")) == socket.gethostbyname(here_host)
    except OSError:
        same = False
    if not same:
        raise ValueError(f"ray_address={address!r}, but this process is already in the Ray at {current} (ray.init "
                         "ran before the job); leave ray_address out to run there, or call ray.shutdown() first")


def results(cluster: Cluster, chunks: list[dict], worker_kwargs: dict) -> Iterator[dict]:
    """The Worker results of every chunk, computed on the cluster's actor pool (started here unless the driver
    has), as they come; the Ray the cluster started is shut down at the end."""
    if not chunks:              # nothing left to do: no cluster started or joined
        return
    try:
        cluster.start(len(chunks))
        ray, resources = cluster.ray, cluster.resources
        ctx = ray.data.DataContext.get_current()
        saved = ctx.enable_progress_bars, ctx.print_on_execution_start
        ctx.enable_progress_bars = ctx.print_on_execution_start = False   # the driver's own bar counts documents
        kwargs = dict(worker_kwargs, device="cuda" if resources.get("num_gpus") else "cpu",
                      threads=int(resources.get("num_cpus", 0)))
        ds = ray.data.from_items([{"chunk": json.dumps(c)} for c in chunks], override_num_blocks=len(chunks))
        kwargs["tries"] = ray.remote(num_cpus=0)(_Tries).remote()
        ds = ds.map_batches(
            _RayWorker, batch_size=1, batch_format="numpy", fn_constructor_kwargs=kwargs,
            compute=ray.data.ActorPoolStrategy(size=cluster.actors, max_tasks_in_flight_per_actor=1), **resources)
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
        cluster.close()


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
        return RuntimeError(f"Ray: {type(error).__name__}: {line}")
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


class ChunkKilledError(RuntimeError):
    """A chunk whose actor was killed each time it was tried (out of memory on one document, a native crash)."""


class _Tries:
    """A Ray actor (no CPU) counting the tries of each chunk over the actors that do it: Ray Data restarts a dead
    actor and retries its chunk forever."""

    def __init__(self):
        self.counts: dict[str, int] = {}

    def next(self, chunk: str) -> int:
        self.counts[chunk] = self.counts.get(chunk, 0) + 1
        return self.counts[chunk]


class _RayWorker:
    """map_batches callable: a Worker per actor; each input row is a chunk, each output row one Worker result.
    tries: the job's _Tries actor; a chunk's try past 1 + RETRIES fails it, one line."""

    def __init__(self, threads: int, tries, **worker_kwargs):
        import torch

        if threads:
            torch.set_num_threads(threads)
        self.tries = tries
        self.worker, self.error = None, None
        try:
            self.worker = Worker(**worker_kwargs)
        except Exception as e:  # noqa: BLE001 - raised by __call__: a task's error reaches the driver as it was
            self.error = e      # (one line there); the constructor's would be an ActorDiedError, its traceback logged

    def __call__(self, batch: dict) -> Iterator[dict]:
        import numpy as np

        if self.error is not None:
            raise self.error

        for text in batch["chunk"]:
            chunk = json.loads(text)
            if require_ray().get(self.tries.next.remote(text)) > RETRIES + 1:    # the JSON names the chunk
                raise ChunkKilledError(f"Ray: the chunk at {chunk['name']}:{chunk['first']} was tried {RETRIES + 1} "
                                       "times, its actor killed each time (out of memory? a crash in a native "
                                       "library?)")
            for result in self.worker.process(chunk):
                yield {"result": np.array([json.dumps(result, ensure_ascii=False)], dtype=object)}
