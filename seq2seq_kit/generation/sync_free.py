"""Decoding that reads the device back only every few steps.

Both searches keep their whole state on the device at fixed shapes, their length included (`advance_on_device`);
once a search has stopped, further steps change nothing. So a loop may run several steps between two reads of the
stop flag: on a GPU the host then queues steps ahead of the device instead of waiting for each one (and the whole
step, decoder and search together, can be replayed from one CUDA graph: generation/whole_step.py). The price is up to `check_every - 1`
wasted steps at the end, so the eager CPU loop (generate.py) keeps checking every step.
"""

from __future__ import annotations

from typing import Callable

import torch

from .config import GenerationConfig
from .protocol import Cache, Step


class SearchProgress:
    """How far a search (BeamSearch, SampleSearch) has come, kept on both sides: `cur_len` (tokens so far, the
    decoder start token included) and `going` on the device, which a step reads and writes without a host read;
    `steps` taken and `done` on the host; and each step's processed scores when cfg.output_scores. A search class
    adds `tokens()`, `advance_on_device(logits)` (the step without a host read: the cache reorder or None) and
    `output()`; `advance` is that step plus the one host read, split into flags() and settle() for callers that
    read several searches' flags at once (seq2seq_kit.Engine)."""

    def __init__(self, cfg: GenerationConfig, device: torch.device):
        self.cfg = cfg
        self.cur_len = torch.ones((), dtype=torch.long, device=device)                # []
        self.going = torch.ones((), dtype=torch.bool, device=device)                  # [] not stopped yet
        self.steps = 0                  # host count of steps: cur_len - 1 until the search stops
        self.done = False
        self.step_scores = [] if cfg.output_scores else None

    def advance(self, logits: torch.Tensor) -> torch.Tensor | None:
        """One step from logits [R, V] with one host read: the cache reorder (every row's parent row, LongTensor
        [R]) or None when no row changed parent (always None for greedy and sampling: rows never move)."""
        parents = self.advance_on_device(logits)
        return self.settle(self.flags(parents).tolist(), parents)

    def flags(self, parents: torch.Tensor | None) -> torch.Tensor:
        """What the host must read back after advance_on_device returned `parents`: bool [2], (still going, some
        row changed parent). A caller running several searches reads all their flags in one transfer. A search
        that returns parents (BeamSearch) keeps `identity`, its rows' own indices [R], to compare them with."""
        moved = (parents != self.identity).any() if parents is not None else torch.zeros_like(self.going)
        return torch.stack((self.going, moved))

    def settle(self, flags: list[bool], parents: torch.Tensor | None) -> torch.Tensor | None:
        """The host side of a step whose flags() were read back: `done`, and the reorder to apply or None."""
        going, moved = flags
        self.done = not going
        return parents if going and moved else None

    def processor_length(self, on_device: bool):
        """The cur_len the processors see: the device tensor (a step that a CUDA graph captures, where the host
        cannot count) or host_length(). Both give the same scores until the search stops."""
        return self.cur_len if on_device else self.host_length()

    def state(self) -> list[torch.Tensor]:
        """The device tensors a step reads and replaces (subclasses add theirs after these), in a fixed order:
        what generation/whole_step.py copies back in place so that every step reads and writes the same memory."""
        return [self.cur_len, self.going]

    def load_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Point the state at `tensors` (state()'s order); returns those past this class's (for subclasses)."""
        self.cur_len, self.going = tensors[:2]
        return tensors[2:]

    def restart(self) -> None:
        """The host side of a search that starts over (its device state reloaded by the caller)."""
        self.steps, self.done = 0, False
        if self.step_scores is not None:
            self.step_scores = []

    def host_length(self) -> int:
        """The length processors see: counted on the host, so those idle at this length skip their work (exact
        until the search stops; steps after that change nothing, whatever they compute)."""
        return min(self.steps + 1, self.cfg.max_length)

    def recorded_scores(self) -> tuple[torch.Tensor, ...] | None:
        """The per-step scores of the steps taken (not of those run after the stop), or None."""
        if self.step_scores is None:
            return None
        return tuple(self.step_scores[:int(self.cur_len) - 1])


def decode(step: Step, cache: Cache, search: SearchProgress, check_every: int) -> None:
    """Run `search` (BeamSearch / SampleSearch) to its end on step/cache, reading its stop flag every
    `check_every` steps. The cache must accept steps past its last slot (models' FixedShapeKVCache does: they
    write its last slot again), and beam search reorders it every step, moved rows or not."""
    def one_step() -> None:
        parents = search.advance_on_device(step(search.tokens(), cache))        # logits [R, V]
        if parents is not None:
            cache.reorder(parents)

    run_until_stopped(one_step, search, check_every)


def run_until_stopped(one_step: Callable[[], None], search: SearchProgress, check_every: int) -> None:
    """Call one_step (which advances `search` without a host read) until the search stops, reading its stop flag
    every `check_every` calls; then search.done."""
    while True:
        for _ in range(check_every):
            one_step()
        if not search.going.item():                                             # the one host read
            search.done = True
            return
