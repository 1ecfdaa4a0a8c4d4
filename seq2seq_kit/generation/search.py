"""SearchProgress: what both searches (BeamSearch, SampleSearch) keep of how far they have come, on the device
and on the host, and the bookkeeping of an independent search's inputs (seq2seq_kit.Engine's: inputs that join,
leave, or sit in fixed slots).
"""

from __future__ import annotations

import torch

from .config import GenerationConfig
from .draws import draw, draw_on_device, no_valid_probabilities
from .logits_process import join_processors, put_processors, select_processors, settings_per_row
from .stop_strings import StopStrings


class SearchProgress:
    """How far a search (BeamSearch, SampleSearch) over B inputs has come, kept on both sides: on the device
    `cur_len` (tokens so far, the decoder start token included: long [B, 1], one per input), `max_len` (each
    input's max_length, long [B, 1]) and `going` (bool []: not stopped), which a step reads and writes without a
    host read; on the host `steps` taken and `done`, and the per-step tensors the caller asked for (`recorded`).
    Every input starts from a decoder prompt of `prompt_len` tokens (1: the start token; see decoder_prompt.py),
    already in the cache but for its last token, which the first step feeds.
    A search class adds `tokens()`, `advance_on_device(logits)` (the step without a host read: the cache reorder
    or None) and `output()`; `advance` is that step plus the one host read (an independent search's caller
    reads `input_flags` instead).

    generate's searches stop as transformers' batch does (every input steps until the batch stops; all inputs
    share cur_len). An `independent` search (seq2seq_kit.Engine's) stops each input as if it ran alone: `alive`
    (bool [B, 1]) holds which inputs still step, the inputs may stand at different lengths and have different
    max_length / min_length, inputs join (`join`) and leave (`keep`) between steps, and `input_flags` /
    `output(inputs)` serve them one by one. A fixed-capacity independent search (decoding.start_slots) keeps its
    inputs in slots instead: made `empty()` at the widest shapes, an input enters a slot with `put` and leaves it
    with `vacate`, in place, so no shape or address ever changes (what a CUDA graph of its step needs)."""

    def __init__(self, cfg: GenerationConfig, processors: list, batch: int, rows_per_input: int, device: torch.device,
                 generator: torch.Generator | None = None, independent: bool = False, prompt_len: int = 1,
                 stop_strings: StopStrings | None = None):
        self.cfg, self.batch, self.rows_per_input, self.independent = cfg, batch, rows_per_input, independent
        self.processors = processors                # logits_process.build_processors' list
        # what draws use: generate's batch draws from one generator (None: the device's default), as transformers';
        # an independent search's inputs each draw alone from their own (a list, one per input: draws.draw)
        self.generator = [generator] * batch if independent else generator
        self.stop_strings = stop_strings            # cfg.stop_strings' tables (a row ends in one: it finished)
        self.prompt_len = prompt_len
        self.cur_len = torch.full((batch, 1), prompt_len, dtype=torch.long, device=device)   # [B, 1]
        self.max_len = torch.full((batch, 1), cfg.max_length, dtype=torch.long, device=device)   # [B, 1]
        self.going = torch.ones((), dtype=torch.bool, device=device)                  # [] not stopped yet
        self.alive = torch.ones((batch, 1), dtype=torch.bool, device=device)          # [B, 1] (independent)
        self.steps = 0                  # host count of steps: cur_len - prompt_len until the search stops
        self.lengths = [prompt_len] * batch      # independent: each input's cur_len on the host
        self.done = False
        self.fault = None               # once defer_draw_checks(): 0, or the first failed draw's fault code (long
                                        # [], or [B, 1] per input when independent)
        # name -> each step's [R, V] (independent: per input, its rows' [n, V]): "scores", the processed scores
        # (cfg.output_scores), "logits", the model's (cfg.output_logits)
        self.recorded = {name: self.no_steps() for name, on in (("scores", cfg.output_scores),
                                                                ("logits", cfg.output_logits)) if on}
        if independent and cfg.do_sample:       # an engine's: its step never reads the device (its flags tell)
            self.defer_draw_checks()

    # Whether a step may hand advance ScreenedLogits (protocol.py) instead of logits: only a greedy SampleSearch's.
    screenable = False

    @property
    def rows(self) -> int:
        return self.batch * self.rows_per_input

    def active(self) -> torch.Tensor:
        """Which inputs this step advances: the batch's `going` [] or, independent, each input's `alive` [B, 1]."""
        return self.alive if self.independent else self.going

    def stop(self, going: torch.Tensor) -> None:
        """The end of a step: going is, for an independent search, which inputs would go on alone (bool [B, 1]),
        else whether transformers' batch goes on (bool [])."""
        active = self.active()
        if self.independent:
            self.alive = active & going
            self.going = self.alive.any()
        else:
            self.going = active & going
        self.cur_len.add_(active)                        # in place: the state keeps its memory
        self.steps += 1
        self.lengths = [n + 1 for n in self.lengths]     # exact for the inputs still alive (the others do not count)

    def end(self) -> None:
        """Stop after the steps taken (generate's prompt lookup, whose pass during which max_time ran out is the
        last; its steps each took one of the pass's tokens)."""
        self.going.zero_()
        self.done = True

    def last_step(self, inputs: list[int] | None = None) -> None:
        """The step about to be taken is the last of these inputs (None: all), as if it reached max_length: their
        max_time ran out (transformers' MaxTimeCriteria, which every row hits once the time has passed)."""
        if inputs is None:
            torch.minimum(self.max_len, self.cur_len + 1, out=self.max_len)        # in place: a graph reads it
            return
        index = self.input_index(inputs)                                                     # [n]
        self.max_len.index_copy_(0, index, torch.minimum(self.max_len, self.cur_len + 1).index_select(0, index))

    def advance(self, logits: torch.Tensor) -> torch.Tensor | None:
        """One step from logits [R, V] with one host read (still going, some row changed parent): the cache
        reorder (every row's parent row, LongTensor [R]) or None when no row changed parent (always None for
        greedy and sampling: rows never move). A search that returns parents (BeamSearch) keeps `identity`, its
        rows' own indices [R], to compare them with."""
        parents = self.advance_on_device(logits)
        moved = (parents != self.identity).any() if parents is not None else torch.zeros_like(self.going)
        going, moved = torch.stack((self.going, moved)).tolist()
        self.done = not going
        return parents if going and moved else None

    def defer_draw_checks(self) -> None:
        """Sampling without host reads (a step a CUDA graph captures): each draw's check of its probabilities becomes a
        device-side fault code (draws.draw_on_device), the first one of a step before the stop kept in `fault`, which
        `stopped()` reads with the stop flag and raises; eagerly, torch.multinomial's check reads the host at each
        draw and raises there. An independent search keeps one per input, which input_flags hands on."""
        self.fault = torch.zeros(self.alive.shape if self.independent else (), dtype=torch.long,
                                 device=self.cur_len.device)

    def sample(self, scores: torch.Tensor, n: int) -> torch.Tensor:
        """n tokens drawn without replacement from softmax(scores [R, N]) with `generator`, as transformers draws
        them -> indices [R, n] (draws.py; its ValueError eagerly, its fault code once defer_draw_checks()). An
        independent search's rows are its inputs' blocks, each drawn from its input's generator."""
        if self.fault is None:
            return draw(scores, n, self.generator)
        idx, fault = draw_on_device(scores, n, self.generator)                 # fault [] or [B]
        fault = fault.view(self.fault.shape)
        # only a step that counts may fail: not one after the stop (a sync-free loop), nor an input's that ended
        self.fault = torch.where((self.fault == 0) & self.active(), fault, self.fault)
        return idx

    def stopped(self) -> bool:
        """The one host read of a sync-free loop (sync_free.run_until_stopped): whether the search has stopped; a
        failed draw found by a deferred check (defer_draw_checks) raises its ValueError here."""
        if self.fault is None:
            return not self.going.item()
        going, fault = torch.stack((self.going.long(), self.fault)).tolist()
        if fault:
            raise no_valid_probabilities(fault)
        return not going

    def input_flags(self, parents: torch.Tensor | None) -> torch.Tensor:
        """An independent search's flags per input after advance_on_device returned `parents`: long [B, 3], (the
        input still steps, some row of it changed parent, a failed draw's fault code or 0: with defer_draw_checks,
        the search's, for each input; draws.no_valid_probabilities names it)."""
        if parents is None:
            moved = torch.zeros_like(self.alive)
        else:
            moved = (parents != self.identity).view(self.batch, self.rows_per_input).any(dim=1, keepdim=True)
        fault = torch.zeros_like(self.cur_len) if self.fault is None else self.fault
        return torch.cat((self.alive.long(), moved.long(), fault), dim=1)

    def processor_length(self, device_length: bool):
        """The cur_len the processors see: an int while every input stands at the same length and the host counts
        it (processors idle at that length then skip their work), else the device lengths: one tensor [] for
        generate's inputs (which share it; a step a CUDA graph captures, where the host cannot count) or one per
        row [R, 1] (independent inputs at different lengths). All give the same scores until an input stops."""
        if self.independent:
            lengths = set(self.lengths)
            if len(lengths) == 1 and not device_length:
                return lengths.pop()
            return self.per_row(self.cur_len)                                              # [R, 1]
        return self.cur_len.view(-1)[0] if device_length else self.host_length()

    def state(self) -> list[torch.Tensor]:
        """The device tensors a step reads and replaces (subclasses add theirs after these), in a fixed order:
        what generation/whole_step.py copies back in place so that every step reads and writes the same memory."""
        return [self.cur_len, self.going, self.alive] + ([] if self.fault is None else [self.fault])

    def load_state(self, tensors: list[torch.Tensor]) -> list[torch.Tensor]:
        """Point the state at `tensors` (state()'s order); returns those past this class's (for subclasses)."""
        self.cur_len, self.going, self.alive = tensors[:3]
        if self.fault is None:
            return tensors[3:]
        self.fault = tensors[3]
        return tensors[4:]

    def restart(self) -> None:
        """The host side of a search that starts over (its device state reloaded by the caller)."""
        self.steps, self.done, self.lengths = 0, False, [self.prompt_len] * self.batch
        self.recorded = {name: self.no_steps() for name in self.recorded}

    def no_steps(self) -> list:
        """A recording of no steps yet: one list, or one per input (independent)."""
        return [[] for _ in range(self.batch)] if self.independent else []

    def host_length(self) -> int:
        """The length processors see: counted on the host, so those idle at this length skip their work (exact
        until the search stops; steps after that change nothing, whatever they compute)."""
        return min(self.steps + self.prompt_len, self.cfg.max_length)

    def join(self, other: SearchProgress) -> None:
        """Append the inputs of `other`, an independent search of the same class and settings but for max_length
        and min_length, started or not (its rows after this search's)."""
        self.processors = join_processors(self.processors, other.processors, self.rows, other.rows)
        self.cur_len, self.max_len, self.alive = (torch.cat(pair) for pair in zip(
            (self.cur_len, self.max_len, self.alive), (other.cur_len, other.max_len, other.alive)))
        self.going = self.alive.any()
        self.generator = self.generator + other.generator
        if self.fault is not None:
            self.fault = torch.cat((self.fault, other.fault))
        self.lengths = self.lengths + other.lengths
        self.recorded = {name: steps + other.recorded[name] for name, steps in self.recorded.items()}
        self.batch += other.batch

    def keep(self, inputs: list[int]) -> torch.Tensor:
        """Keep only these inputs (indices in order; at least one), dropping the others' state. Returns their
        indices as long [B'] (for a subclass's own state)."""
        index = self.input_index(inputs)                                                         # [B']
        self.cur_len, self.max_len, self.alive = (t.index_select(0, index)
                                                  for t in (self.cur_len, self.max_len, self.alive))
        self.going = self.alive.any()
        self.generator = [self.generator[i] for i in inputs]
        if self.fault is not None:
            self.fault = self.fault.index_select(0, index)
        self.lengths = [self.lengths[i] for i in inputs]
        self.recorded = {name: [steps[i] for i in inputs] for name, steps in self.recorded.items()}
        self.processors = select_processors(self.processors, self.input_rows(index))
        self.batch = len(inputs)
        return index

    def empty(self) -> None:
        """Fixed capacity (generation.start_slots): every input slot empty, none alive, and every per-row setting of
        the processors a tensor [R, 1], so that put() can write an input's rows; sampling: a generator per slot,
        which put() sets to its input's state (a captured step draws from these)."""
        self.alive.zero_()
        self.going.zero_()
        if self.cfg.do_sample:
            self.generator = [torch.Generator(self.cur_len.device) for _ in range(self.batch)]
        self.recorded = {name: [None] * self.batch for name in self.recorded}
        settings_per_row(self.processors, self.rows)

    def put(self, slot: int, other: SearchProgress) -> None:
        """Fixed capacity: write `other`, an independent one-input search not yet stepped (the same class and
        settings but for max_length / min_length, no wider than this one), into the empty input slot `slot`. In
        place: every state tensor keeps its shape and memory, so a step captured before goes on reading them."""
        self.cur_len[slot], self.max_len[slot], self.alive[slot] = other.cur_len[0], other.max_len[0], other.alive[0]
        self.going.copy_(self.alive.any())
        if self.cfg.do_sample:                  # the input's generator as it stands (the engine gives each its own)
            self.generator[slot].set_state(other.generator[0].get_state())
            self.fault[slot] = 0
        self.lengths[slot] = other.lengths[0]
        for steps in self.recorded.values():
            steps[slot] = []
        put_processors(self.processors, other.processors, self.slot_rows(slot))

    def vacate(self, slot: int) -> None:
        """Fixed capacity: input slot `slot` stops stepping (its state stays, frozen, until the next put)."""
        self.alive[slot] = False
        self.going.copy_(self.alive.any())
        for steps in self.recorded.values():
            steps[slot] = None

    def slot_rows(self, slot: int) -> slice:
        """The rows of input `slot`."""
        return slice(slot * self.rows_per_input, (slot + 1) * self.rows_per_input)

    def input_index(self, inputs: list[int]) -> torch.Tensor:
        """Input indices (host ints) -> long [B'] on the search's device."""
        return torch.tensor(inputs, dtype=torch.long, device=self.cur_len.device)

    def per_row(self, values: torch.Tensor) -> torch.Tensor:
        """One value per input [B, 1] -> one per row [R, 1] (each input's rows_per_input rows; expand and copy,
        never a host read, so a CUDA graph can capture it)."""
        return values.expand(self.batch, self.rows_per_input).reshape(self.rows, 1)

    def input_rows(self, inputs: torch.Tensor) -> torch.Tensor:
        """The rows of these inputs (long [B']) -> long [B' * rows_per_input], in order."""
        n = self.rows_per_input
        return (inputs[:, None] * n + torch.arange(n, device=inputs.device)).view(-1)

    def record(self, name: str, values: torch.Tensor) -> None:
        """Keep this step's values [R, V] under `name` ("scores", "logits") when they are recorded; the caller
        passes values no later step writes."""
        steps = self.recorded.get(name)
        if steps is None:
            return
        if not self.independent:
            steps.append(values)
            return
        for b, kept in enumerate(steps):                # copies: a view would keep every row's [R, V] alive
            if kept is not None:                        # (None: an empty slot of a fixed-capacity search)
                kept.append(values[self.slot_rows(b)].clone())

    def record_logits(self, logits: torch.Tensor) -> None:
        """Keep a float32 copy of the model's logits [R, V] when cfg.output_logits (before any processor writes)."""
        if "logits" in self.recorded:
            self.record("logits", logits.to(torch.float32, copy=True))

    def steps_recorded(self, name: str, inputs: list[int] | None = None) -> tuple[torch.Tensor, ...] | None:
        """The values recorded under `name` for the steps taken (not for those run after the stop), per step
        [R, V], or None when not recorded; inputs: these inputs' rows only (independent searches)."""
        steps = self.recorded.get(name)
        if steps is None:
            return None
        if not self.independent:
            return tuple(steps[:int(self.cur_len.max()) - self.prompt_len])
        inputs = range(self.batch) if inputs is None else inputs
        kept = [steps[b][:int(self.cur_len[b]) - self.prompt_len] for b in inputs]
        return tuple(torch.cat(step) for step in zip(*kept))


def widen(t: torch.Tensor, width: int, fill: int) -> torch.Tensor:
    """Sequences t [..., L] padded with `fill` to [..., width] (a search joined by inputs of a longer max_length)."""
    if t.shape[-1] == width:
        return t
    return torch.cat((t, t.new_full((*t.shape[:-1], width - t.shape[-1]), fill)), dim=-1)
