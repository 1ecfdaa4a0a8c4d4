"""Decoding that reads the device back only every few steps.

Both searches keep their whole state on the device at fixed shapes, their length included (`advance_on_device`);
once a search has stopped, further steps change nothing. So a loop may run several steps between two reads of the
stop flag: on a GPU the host then queues steps ahead of the device instead of waiting for each one (and the whole
step, decoder and search together, can be replayed from one CUDA graph: generation/whole_step.py). The price is up
to `check_every - 1` wasted steps at the end, so the eager CPU loop (decoding.py) keeps checking every step.
"""

from __future__ import annotations

from typing import Callable

from .protocol import Cache, Step
from .search import SearchProgress


def decode(step: Step, cache: Cache, search: SearchProgress, check_every: int, streamer=None,
           before_step: Callable[[], None] | None = None) -> None:
    """Run `search` (BeamSearch / SampleSearch) to its end on step/cache, reading its stop flag every
    `check_every` steps (streamer, before_step: see run_until_stopped). The cache must accept steps past its last
    slot (models' FixedShapeKVCache does: they write its last slot again), and beam search reorders it every step,
    moved rows or not."""
    def one_step() -> None:
        parents = search.advance_on_device(step(search.tokens(), cache))        # logits [R, V]
        if parents is not None:
            cache.reorder(parents)

    run_until_stopped(one_step, search, check_every, streamer, before_step)


def run_until_stopped(one_step: Callable[[], None], search: SearchProgress, check_every: int,
                      streamer=None, before_step: Callable[[], None] | None = None) -> None:
    """Call one_step (which advances `search` without a host read) until the search stops, reading its stop flag
    every `check_every` calls; then search.done. streamer (generate's; check_every 1): each step's tokens [R] put
    once the read after it has passed (a failed draw raises before its tokens are put). before_step: called
    before each step (generate's max_time check, which may make it the last: check_every 1)."""
    while True:
        for _ in range(check_every):
            if before_step is not None:
                before_step()
            one_step()
        stopped = search.stopped()                                              # the one host read
        if streamer is not None:
            streamer.put(search.tokens().cpu())
        if stopped:
            search.done = True
            return
