"""A function captured in one CUDA graph: the one capture routine behind every graph of the package, the model's
decoder steps (models/cuda_graph.py: GraphedStep for generate, BucketGraphs for the engine) and the search steps
(generation/whole_step.py: generate's whole step; engine/batch.py's SlotGroup: the engine's group steps). A leaf
that imports nothing of the package, so models/ and generation/, which must not import each other, share it; the
tests put tests/graph_emulation.py's EmulatedGraph in its place to run those paths' code on the CPU.
"""

from __future__ import annotations

from typing import Callable, Generic, TypeVar

import torch

T = TypeVar("T")


def weights_key(model) -> tuple:
    """The addresses of the model's parameters and buffers, which a captured graph reads: part of every graph's key
    (weights moved or converted would leave a graph reading freed memory)."""
    return tuple(t.data_ptr() for t in (*model.parameters(), *model.buffers()))


class CapturedStep(Generic[T]):
    """fn() captured in one CUDA graph; calling the CapturedStep replays it and returns fn's outputs as captured
    (buffers the next replay overwrites). fn reads no host value, keeps every shape and writes its state in place;
    it runs twice for real first (the warm-up on a side stream that torch.cuda.graph asks for), so it is captured
    where those runs change nothing that matters. Host-side counters fn updates are not kept by the replays.
    Graphs given the same `pool` (another CapturedStep's) share their memory: they must never run at once.
    `generators` (torch.Generators fn draws from; the device's default one needs none) are registered with the graph:
    each replay draws from a generator's state as it stands then and advances it as fn's draws do eagerly."""

    def __init__(self, fn: Callable[[], T], device: torch.device, pool: tuple | None = None,
                 generators: tuple[torch.Generator, ...] = ()):
        side = torch.cuda.Stream(device)
        side.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(side):
            for _ in range(2):
                fn()
        torch.cuda.current_stream(device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        for generator in generators:
            self.graph.register_generator_state(generator)
        with torch.cuda.graph(self.graph, pool=pool, capture_error_mode="thread_local"):   # callers' own threads
            self.outputs = fn()
        self.pool = self.graph.pool()

    def __call__(self) -> T:
        self.graph.replay()
        return self.outputs
