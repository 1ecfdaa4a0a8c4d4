"""Continuous batching: requests join and leave the running decoder batch at every step.

    with Engine(model, max_rows=32) as engine:
        req = engine.submit(input_ids, num_beams=4)        # returns at once; thread-safe
        ids = req.result()                                 # LongTensor [num_return_sequences, T]
        out = await engine.generate_async(input_ids)       # the same, for asyncio callers

One background thread owns the model (on the CPU the creating thread first hands it its OpenMP workers:
cpu_threads.py). Every request has its own KV cache and steps in a search (generation.start_search: greedy,
sampling or beam search, the very code `generate` runs for a batch, in its `independent` form where each input
stops as it would alone): requests whose settings differ at most in max_length / min_length share one search as
its inputs, each at its own length, joining and leaving it between steps (group_key; sampling requests, and any request
given a generator, run one search each). A step runs the decoder once over the rows of every running request (the
model's decode_group_unchecked: the linear layers over all rows at once, attention per request on its own cache),
then steps each group's search on its rows' logits and reads every request's flags back in one transfer. So a
request's tokens are `generate`'s for that input alone, whatever else runs beside it: bit for bit when it runs
alone, and to float rounding of the batched matrix products otherwise (fp32: tokens equal on decisive logits,
scores 1e-4). One search per group, not per request, keeps a step's search work (processors, top-k, gathers: ~50
kernels on a GPU) independent of how many requests run.

Scheduling (vLLM's, reduced to what an encoder-decoder needs): first come, first served. Before each step the
waiting requests that fit are admitted in arrival order (their encoder passes batched together where their
lengths are close enough for little padding, encoder_groups): a request fits while the running rows stay within
`max_rows` and the running source tokens within `max_source_tokens`.
The first request that does not fit waits, and so does everything behind it (no overtaking, no starvation).
A finished or cancelled request leaves at once; its rows and cache are free for the next step.

Fixed capacity (`fixed_capacity`, on by default on CUDA): instead of a cache per request, every request's rows
live in row slots of one SlotStore (models/kv_cache.py) of max_rows rows, and its input's cross-attention
keys/values in one input slot that its rows share (read once per step, not once per beam). Each step runs the
decoder over all max_rows rows (free ones ignored) at the device positions of a view padded to a source-length and
a decoder-length bucket (powers of two from 16) and bucketed by the input slots in use (lowest first) and the rows
per input (powers of two). On CUDA each view's step is one CUDA graph (models/cuda_graph.py BucketGraphs), so a
stream of requests of any lengths captures a handful of graphs; on the CPU the same step runs eagerly (the tests'
way of checking it). Each group's search has fixed input slots too (SlotGroup, generation.start_slots: made at
max_rows // rows_per_input inputs and the widest lengths, requests written into a slot and vacating it in place),
reads its rows' logits from the decoder's and writes their next tokens into the store's token buffer, so on CUDA
its step, processors and top-k included, replays from one CUDA graph captured when the group is made (sampling,
output_scores and output_logits groups step eagerly): a step is a decoder replay, a replay per group and the beam
groups' reorder (one gather-scatter of self-attention slots within the store), and its flags are read while the
next step runs (a finished request steps once more, frozen, before it leaves).
Padding adds exact zeros to the attention but rounds the longer reductions differently: fp32 tokens equal
generate alone's on decisive logits, scores within 1e-4, as for batched requests.
"""

from __future__ import annotations

import asyncio
import atexit
import bisect
import collections
import itertools
import threading
import weakref
from concurrent.futures import Future, InvalidStateError
from dataclasses import dataclass, field, replace

import torch

from . import cpu_threads, cuda_capture
from .generation import GenerationConfig, prepare, result, rows_per_input, start_search, start_slots
from .generation.beam_search import BeamSearch
from .generation.sampling import SampleSearch
from .generation.whole_step import keeping_state
from .models.cuda_graph import BucketGraphs
from .models.kv_cache import KVCache, SlotStore, bucket


PADDING_LIMIT = 1.25    # an encoder batch computes at most 1.25x its inputs' real tokens (see encoder_groups)


class EngineFull(RuntimeError):
    """The engine's queue holds max_queue waiting requests; retry later (HTTP servers answer 503)."""


class EngineClosed(RuntimeError):
    """The engine was closed; no request can be submitted."""


@dataclass
class Request:
    """One submitted input. `result()` blocks for its output; `cancel()` frees its rows at the next step."""
    input_ids: torch.Tensor                     # [1, S] long, on the model's device
    config: GenerationConfig                    # resolved settings
    generator: torch.Generator | None
    future: Future = field(default_factory=Future, repr=False)
    group: Group | None = field(default=None, repr=False)  # set on admission: the search it steps in
    cache: KVCache | Slots | None = field(default=None, repr=False)   # set on admission: its cache, or its rows
                                                                     # in the SlotStore (fixed capacity)

    def result(self, timeout: float | None = None):
        """LongTensor [num_return_sequences, T], or a GenerateOutput with return_dict_in_generate=True."""
        return self.future.result(timeout)

    def cancel(self) -> bool:
        """Cancel the request: a waiting one never runs, a running one leaves at the next step. False when it
        had already finished."""
        return self.future.cancel()

    def done(self) -> bool:
        return self.future.done()

    @property
    def rows(self) -> int:
        return rows_per_input(self.config)

    @property
    def source_tokens(self) -> int:
        return self.input_ids.shape[1]


@dataclass
class Group:
    """Running requests that step in one search (generation's independent BeamSearch / SampleSearch): requests[i]
    is the search's input i, its rows the search's rows i * rows_per_input onwards. Requests whose settings differ
    at most in their lengths share a group (`key`); the others run in a group of their own (key None). Inputs join
    the search (`add`) and leave it (`remove`) between steps; fixed capacity uses SlotGroup instead."""
    key: str | None
    search: BeamSearch | SampleSearch
    requests: list[Request | None]

    @property
    def members(self) -> list[Request]:
        """Its requests in the search's order (a SlotGroup's requests hold None for its empty slots)."""
        return [r for r in self.requests if r is not None]

    def add(self, request: Request, search) -> None:
        """A new request, with its one-input search, becomes the search's last input."""
        if self.requests:
            self.search.join(search)
        self.requests.append(request)

    def remove(self, leaving: list[bool]) -> None:
        """The inputs b for which leaving[b] holds leave the search."""
        kept = [b for b, leave in enumerate(leaving) if not leave]
        if kept:
            self.search.keep(kept)
        self.requests = [self.requests[b] for b in kept]

    def step(self, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The search's step on its rows' logits [R, V] -> (each row's parent row [R], or None: rows never move;
        each input's flags bool [B, 2]: still stepping, some row of it moved), no host read."""
        parents = self.search.advance_on_device(logits)
        return parents, self.search.input_flags(parents)


def group_key(config: GenerationConfig, generator: torch.Generator | None) -> str | None:
    """What requests must share to step in one search: every resolved setting but max_length and min_length
    (whether a minimum applies stays: it is a processor or none). Sampling, and any request given a generator,
    runs alone (None): each request draws from its own generator, or from the global RNG in its own order, as
    generate alone would."""
    if config.do_sample or generator is not None:
        return None
    return repr(replace(config, max_length=None, max_new_tokens=None, min_new_tokens=None,
                        min_length=bool(config.min_length)))


class Engine:
    """A continuous-batching generator over one model (see the module docstring).

    max_rows: decoder rows per step (a beam-4 request takes 4, greedy 1, sampling num_return_sequences).
    max_source_tokens: source tokens of the running requests together (their cross-attention caches);
        default max_rows * max_position_embeddings, i.e. no limit beyond max_rows.
    max_queue: waiting requests beyond which submit raises EngineFull.
    defaults: generation settings under each request's own (the pipeline's task defaults).
    fixed_capacity: step all max_rows rows on a SlotStore (see the module docstring); None: on for a model on a
        CUDA device, where its steps replay CUDA graphs; True on the CPU runs the same step eagerly.

    The engine schedules; how a step runs is its `batch`'s: EagerBatch (a cache per request) or FixedCapacity.
    """

    Full = EngineFull               # what submit raises, for callers handed an engine (as queue.Queue's queue.Full)

    def __init__(self, model, *, max_rows: int = 32, max_source_tokens: int | None = None,
                 max_queue: int = 1024, defaults: dict | None = None, fixed_capacity: bool | None = None):
        limit = model.config.max_position_embeddings
        max_source_tokens = max_rows * limit if max_source_tokens is None else max_source_tokens
        for name, value in (("max_rows", max_rows), ("max_source_tokens", max_source_tokens),
                            ("max_queue", max_queue)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        self.model, self.defaults = model, dict(defaults or {})
        self.max_rows, self.max_source_tokens, self.max_queue = max_rows, max_source_tokens, max_queue
        self.waiting: collections.deque[Request] = collections.deque()
        self.groups: list[Group] = []
        self.pending: Launched | None = None        # fixed capacity: the last step, its flags not yet read
        self.running: list[Request] = []            # the groups' requests in step order
        self.generated_tokens = 0                   # decoder rows stepped so far, all requests (for metrics)
        if fixed_capacity is None:
            fixed_capacity = model.device.type == "cuda"
        if not isinstance(fixed_capacity, bool):
            raise TypeError(f"fixed_capacity must be True, False or None, got {fixed_capacity!r}")
        self.batch = FixedCapacity(model, max_rows) if fixed_capacity else EagerBatch(model)
        self._wake = threading.Condition()
        self._closing = False
        if model.device.type == "cpu":
            cpu_threads.hand_over_pool()            # this thread's OpenMP workers would slow the engine's: see there
        self._busy: list[Engine] = []               # [self] while it has work: held by its thread (see serve)
        self._thread = threading.Thread(target=serve, args=(weakref.ref(self), self._wake, self._busy),
                                        name="seq2seq_kit-engine", daemon=True)
        self._thread.start()
        weakref.finalize(self, wake_up, self._wake)     # an engine dropped unclosed ends its thread (see serve)
        LIVE.add(self)

    # ---- the caller's side (any thread) --------------------------------------------------------------------

    def submit(self, input_ids, *, generator: torch.Generator | None = None, cuda_graph: bool | None = None,
               **generate_kwargs) -> Request:
        """Queue one input: 1-D token ids (list[int] or LongTensor [S]). Settings are generate()'s, resolved and
        checked here, so bad input raises at once with generate()'s message and never enters the batch."""
        own = sorted({"logits_processor", "prefix_allowed_tokens_fn"} & set(generate_kwargs))
        if own:
            raise ValueError(f"{', '.join(own)}: Python run on every step of one request is for generate(); the "
                             "engine steps its requests together on the device")
        ids, _, config = prepare(self.model, as_row(input_ids), None, {**self.defaults, **generate_kwargs}, generator)
        if cuda_graph:
            raise ValueError("the engine chooses how it steps its batch (Engine(fixed_capacity=...)); "
                             "cuda_graph=True is for generate()")
        request = Request(ids, config, generator)
        if ids.shape[1] > self.max_source_tokens:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens, more than this engine's max_source_tokens="
                             f"{self.max_source_tokens}; truncate it or raise max_source_tokens")
        if request.rows > self.max_rows:
            raise ValueError(f"these settings need {request.rows} decoder rows (num_beams / num_return_sequences) "
                             f"but the engine has max_rows={self.max_rows}; lower them or raise max_rows")
        with self._wake:
            if self._closing:
                raise EngineClosed("the engine is closed; create a new Engine")
            if self.queue_depth >= self.max_queue:
                raise EngineFull(f"the engine's queue is full ({self.max_queue} waiting requests); retry later")
            self.waiting.append(request)
            if not self._busy:
                self._busy.append(self)                 # the thread holds the engine until this is answered
            self._wake.notify()
        return request

    async def generate_async(self, input_ids, **generate_kwargs):
        """submit() for asyncio callers; cancelling the awaiting task cancels the request."""
        request = self.submit(input_ids, **generate_kwargs)
        try:
            return await asyncio.wrap_future(request.future)
        except asyncio.CancelledError:
            request.cancel()
            raise

    @property
    def queue_depth(self) -> int:
        """Requests waiting, those cancelled meanwhile not counted (under the lock: /metrics reads it from another
        thread while submit appends)."""
        with self._wake:
            return sum(not request.future.cancelled() for request in self.waiting)

    @property
    def active_rows(self) -> int:
        return sum(r.rows for r in self.running)

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> None:
        """Stop accepting; finish every running request and, unless cancel_pending, every waiting one. Called from
        the engine's own thread (a request's done-callback), it returns at once: the thread ends after the step."""
        with self._wake:
            self._closing = True
            cancelled = list(self.waiting) if cancel_pending else []
            self._wake.notify()
        for request in cancelled:               # not under the lock: their done-callbacks may call the engine
            request.cancel()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def __enter__(self) -> Engine:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        """Leaving the block by an exception (Ctrl-C included) cancels the waiting requests; the running ones
        finish."""
        self.close(cancel_pending=exc_type is not None)

    # ---- the engine's thread (serve) --------------------------------------------------------------------------

    def _idle(self) -> bool:
        return not self.waiting and not self.running and not self._closing

    def _next(self) -> list[Request] | None:
        """The requests to admit before the next step, or None when the engine is closed and done (lock held)."""
        if self._closing and not self.waiting and not self.running:
            return None
        return self._take_admissible()

    @torch.no_grad()
    def _run(self, admitted: list[Request]) -> None:
        """Admit, then one step of every running request."""
        try:
            self._admit(admitted)
            if self.running:
                self._step()
        except Exception as e:   # noqa: BLE001 - a failed step fails its requests, never the engine
            self._fail(admitted + self.running, e)
        except BaseException as e:   # noqa: BLE001 - SystemExit & co. from user code: callers get an Exception
            error = RuntimeError(f"the engine's step raised {e!r}")   # (asyncio would stop its loop on e)
            error.__cause__ = e
            self._fail(admitted + self.running, error)

    def _fail(self, requests: list[Request], error: BaseException) -> None:
        """A step failed: its requests get the error, but those that had finished at the step before (fixed
        capacity) get their outputs. Nothing here may stop the engine's thread: a second failure (a device that
        stays broken) still settles every request, whose rows are then lost to the engine."""
        try:
            self._settle_pending()
        except BaseException:   # noqa: BLE001 - then they fail with the step's error, as the others
            pass
        for request in requests:                        # those settled above are done: settle skips them
            settle(request.future, exception=error)
            try:
                self._leave(request)
            except BaseException:   # noqa: BLE001 - see above
                request.cache = request.group = None
        self.groups, self.running, self.pending = [], [], None
        self.batch.forget_idle()                        # their state may be half-way through the failed step

    def _take_admissible(self) -> list[Request]:
        """Pop, in arrival order, the waiting requests that fit beside the running ones (lock held)."""
        rows = self.active_rows
        tokens = sum(r.source_tokens for r in self.running)
        admitted = []
        while self.waiting:
            request = self.waiting[0]
            if request.future.cancelled():
                self.waiting.popleft()
                continue
            if rows + request.rows > self.max_rows or tokens + request.source_tokens > self.max_source_tokens:
                break
            self.waiting.popleft()
            rows, tokens = rows + request.rows, tokens + request.source_tokens
            admitted.append(request)
        return admitted

    def _admit(self, requests: list[Request]) -> None:
        """Encode the new requests (batched where their lengths are close: _encode); each gets its cache and joins
        the search of its group."""
        requests = [r for r in requests if not r.future.cancelled()]
        if not requests:
            return
        model = self.model
        for request, hidden in zip(requests, self._encode([r.input_ids[0] for r in requests])):
            request.cache = self.batch.take(request, hidden)
            self._join(request, start_search(request.config, request.input_ids, model.config.decoder_vocab_size,
                                             model.device, request.generator, independent=True))
        self.running = [r for group in self.groups for r in group.members]

    def _join(self, request: Request, search) -> None:
        """Put a new request (with its one-input search) into the running group of its key, or a new group (fixed
        capacity: an idle one of its key, or a new SlotGroup)."""
        key = group_key(request.config, request.generator)
        group = next((g for g in self.groups if key is not None and g.key == key), None)
        if group is None:
            group = self.batch.group(key, request, search)
            self.groups.append(group)
        group.add(request, search)
        request.group = group

    def _encode(self, rows: list[torch.Tensor]) -> list[torch.Tensor]:
        """Token ids [S_i] each -> encoder states [1, S_i, D] each, in order: one encoder pass per group of
        encoder_groups (a group of one: no padding, exactly generate's encoder pass)."""
        hidden = [None] * len(rows)
        for group in encoder_groups([len(r) for r in rows]):
            width = len(rows[group[0]])
            pad = self.model.config.pad_token_id
            ids = torch.full((len(group), width), 0 if pad is None else pad, dtype=torch.long,   # masked anyway
                             device=self.model.device)
            mask = torch.zeros((len(group), width), dtype=torch.bool, device=self.model.device)
            for i, j in enumerate(group):
                ids[i, :len(rows[j])], mask[i, :len(rows[j])] = rows[j], True
            states = self.model.encode_unchecked(ids, None if bool(mask.all()) else mask)   # [G, width, D]
            for i, j in enumerate(group):
                hidden[j] = states[i:i + 1, :len(rows[j])]
        return hidden

    def _step(self) -> None:
        """One decoder step for every running request and each group's search on its rows' logits, their flags read
        back in one transfer (on a GPU one wait per step, not one per request); finished and cancelled requests
        leave. Fixed capacity (read_late) reads a step's flags only once the next step is launched (`pending`): on a
        GPU the host's bookkeeping then overlaps the device's next step instead of leaving the device idle; a
        request that finished steps once more, frozen (its search no longer moves it), and its rows are freed a step
        later."""
        self._drop(lambda request: request.future.cancelled())
        if not self.running:
            return
        stepped = self._without_failed(self.batch.step(self.groups, self.running))
        self.batch.reorder(self.groups, stepped)
        launched = self._launched(stepped)
        if not self.batch.read_late:
            self._settle(launched)
            return
        previous, self.pending = self.pending, launched
        if previous is not None:
            self._settle(previous)

    def _without_failed(self, stepped: list) -> list:
        """The groups' step results without those of groups whose step raised (each_group): their requests fail
        with that error and leave, the group with them (never kept idle: its state stopped half-way); the other
        groups' requests go on. A request's settings that fail its search (a temperature so small that every
        probability overflows) so fail that request alone."""
        steps = list(zip(self.groups, stepped))
        failed = [(group, out) for group, out in steps if isinstance(out, Exception)]
        if failed:
            self._settle_pending()                      # those that finished a step before get their outputs
            self.batch.forget([group for group, _ in failed])   # a failed group emptied by it is not kept idle
        for group, error in failed:
            for request in group.members:
                settle(request.future, exception=error)
                self._leave(request)
        kept = {id(group) for group in self.groups}     # the groups _settle_pending left
        steps = [(group, out) for group, out in steps if not isinstance(out, Exception) and id(group) in kept]
        self.groups = [group for group, _ in steps]
        self.running = [r for group in self.groups for r in group.members]
        return [out for _, out in steps]

    def _settle_pending(self) -> None:
        """Fixed capacity, a step failing: the step before it is settled first, so a request that had finished
        there (and stepped on frozen) gets its output, not the error."""
        if self.pending is not None:
            previous, self.pending = self.pending, None
            self._settle(previous)

    def _launched(self, stepped: list) -> Launched:
        """The step just launched, [(parents, flags)] per group: its flags start their way to the host."""
        flags = torch.cat([flags for _, flags in stepped])                                 # [inputs, 2]
        ready = None
        if flags.device.type == "cuda":
            flags, ready = flags.to("cpu", non_blocking=True), torch.cuda.Event()
            ready.record()
        return Launched([(group, list(group.requests), parents) for group, (parents, _) in zip(self.groups, stepped)],
                        flags, ready)

    def _settle(self, step: Launched) -> None:
        """Read a launched step's flags (one host read): its finished requests get their outputs and leave; eager
        caches whose beams moved are reordered."""
        if step.ready is not None:
            step.ready.synchronize()
        flags = iter(step.flags.tolist())
        finished = {}                                   # request -> its output (None: cancelled meanwhile)
        for group, requests, parents in step.groups:
            n = group.search.rows_per_input
            for b, request in enumerate(requests):
                alive, moved = next(flags)
                if request is None or request.group is not group:     # an empty slot, or it left since
                    continue
                self.generated_tokens += request.rows
                if not alive:
                    finished[id(request)] = None if request.future.cancelled() \
                        else result(request.config, group.search, [b])
                elif moved:
                    self.batch.reorder_moved(request.cache, parents, b * n)
        done = [r for r in self.running if id(r) in finished]
        self._drop(lambda request: id(request) in finished)    # only now: an error above fails this step's requests
        for request in done:
            if finished[id(request)] is not None:
                settle(request.future, finished[id(request)])

    def _drop(self, leaving) -> None:
        """The running requests for which leaving(request) holds leave their groups (and the engine)."""
        for group in self.groups:
            leaves = [r is not None and leaving(r) for r in group.requests]   # once: a cancel may land meanwhile
            if not any(leaves):
                continue
            for request, leave in zip(group.requests, leaves):
                if leave:
                    self._leave(request)
            group.remove(leaves)
        self.batch.keep_idle([group for group in self.groups if not group.members])
        self.groups = [group for group in self.groups if group.members]
        self.running = [r for group in self.groups for r in group.members]

    def _leave(self, request: Request) -> None:
        """A request's rows are free (fixed capacity: its slots go back to the store), and its cache and group
        are dropped: a caller holding the Request (its future) does not hold their memory."""
        if request.cache is not None:
            self.batch.give_back(request.cache)
        request.cache = request.group = None


@dataclass
class Launched:
    """A step whose flags the host has not read yet: each group with its requests as they stepped (input b:
    requests[b]) and its rows' parent rows (or None), and every input's flags (bool [inputs, 2]: still stepping,
    some row moved), on the host once `ready` (a CUDA event, or None) has passed."""
    groups: list[tuple[Group, list[Request | None], torch.Tensor | None]]
    flags: torch.Tensor
    ready: torch.cuda.Event | None


class EagerBatch:
    """The eager step (the default on the CPU): each request has its own KV cache of its rows, sized to its
    max_length; a step runs the decoder over the running requests' rows only (the model's decode_group_unchecked)
    and each group's search on its part of the logits. A step's flags are read right after it, and a request's
    cache is reordered only when its flags say a beam moved (on the CPU a reorder copies the cache)."""

    read_late = False

    def __init__(self, model):
        self.model = model

    def take(self, request: Request, hidden: torch.Tensor) -> KVCache:
        """A new request's cache, from its encoder states [1, S, D]."""
        _, cache = self.model.start_decoding(hidden, None, request.rows, request.config.max_length - 1,
                                             cuda_graph=False)
        return cache

    def group(self, key: str | None, request: Request, search) -> Group:
        """A new group whose search is the request's own (Group.add makes it its first input)."""
        return Group(key, search, [])

    def step(self, groups: list[Group], requests: list[Request]) -> list:
        """One decoder step over the running rows (the groups' rows in order) -> each group's step on its rows'
        logits (each_group)."""
        tokens = torch.cat([group.search.tokens() for group in groups])                    # [R], running order
        logits = self.model.decode_group_unchecked(tokens, [r.cache for r in requests])     # [R, V]
        starts = itertools.accumulate([0] + [group.search.rows for group in groups])
        parts = {id(group): logits[a:a + group.search.rows] for a, group in zip(starts, groups)}
        return each_group(groups, lambda group: group.step(parts[id(group)]))

    def reorder(self, groups: list[Group], stepped: list) -> None:
        """Nothing right after a step: each cache follows its beams once its flags are read (reorder_moved)."""

    def reorder_moved(self, cache: KVCache, parents: torch.Tensor, first: int) -> None:
        """A request some of whose beams moved: its cache's rows follow their parents (its group's parents [R],
        its rows from `first` on)."""
        cache.reorder(parents[first:first + cache.num_rows] - first)

    def keep_idle(self, groups: list[Group]) -> None:
        """Groups whose requests all left are not kept: the next request of their key starts a new search."""

    def forget(self, groups: list[Group]) -> None:
        """No group is kept idle."""

    def forget_idle(self) -> None:
        """No group is kept idle."""

    def give_back(self, cache: KVCache) -> None:
        """A request's cache is simply dropped."""


class Slots:
    """A request's rows in the SlotStore (its cache): their indices and the tokens fed so far."""

    def __init__(self, rows: list[int], input_slot: int, source_length: int, device: torch.device):
        self.rows, self.input_slot, self.source_length = rows, input_slot, source_length
        self.index = torch.tensor(rows, dtype=torch.long, device=device)                         # [k]
        self.steps = 0                              # tokens fed so far: the next step writes slot `steps`


class SlotGroup(Group):
    """Fixed capacity: a group whose search has input slots that keep their place (generation.start_slots:
    requests enter with put and leave with vacate; requests[b] is None while slot b is empty), each search row
    mapped to its store row. Its step reads its rows' logits from the decoder's logits for every store row and
    writes its rows' next tokens into the store's token buffer, at shapes that never change, so on CUDA it replays
    from one CUDA graph captured when the group is made (CapturedStep; sampling, whose draws a graph cannot hold,
    and output_scores / output_logits, which the host records, step eagerly)."""

    def __init__(self, key: str | None, search, tokens: torch.Tensor, logits: torch.Tensor, captured: bool):
        super().__init__(key, search, [None] * search.batch)
        self.tokens, self.spare = tokens, len(tokens) - 1          # [N + 1]: the store's rows' tokens, then a spare
        rows, device = search.rows, tokens.device
        self.read_rows = torch.zeros(rows, dtype=torch.long, device=device)      # [R] store row (empty: 0, ignored)
        self.write_rows = torch.full((rows,), self.spare, dtype=torch.long, device=device)   # [R] (empty: spare)
        self.occupied = self.write_rows[:0]                                      # [k] search rows of its requests
        self.graph = cuda_capture.CapturedStep(lambda: self.step_eagerly(logits), tokens.device) \
            if captured else None

    def add(self, request: Request, search) -> None:
        """A new request (its store rows in request.cache, its one-input search) takes the first empty slot; its
        first tokens go into the token buffer."""
        slot = self.requests.index(None)
        self.search.put(slot, search)
        self.requests[slot] = request
        self.map_rows(slot, request.cache.index, request.cache.index)
        self.tokens.index_copy_(0, request.cache.index, search.tokens())

    def remove(self, leaving: list[bool]) -> None:
        for slot, leave in enumerate(leaving):
            if leave:
                self.search.vacate(slot)
                self.requests[slot] = None
                self.map_rows(slot, 0, self.spare)

    def map_rows(self, slot: int, read, write) -> None:
        rows = self.search.slot_rows(slot)
        self.read_rows[rows], self.write_rows[rows] = read, write
        n = self.search.rows_per_input
        self.occupied = torch.tensor([b * n + i for b, r in enumerate(self.requests) if r is not None for i in range(n)],
                                     dtype=torch.long, device=self.tokens.device)

    def step(self, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """Group.step on the logits of every store row [N, V] (FixedCapacity.logits, the buffer a captured step
        reads)."""
        return self.graph() if self.graph is not None else self.step_eagerly(logits)

    def step_eagerly(self, logits: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        def one():
            parents = self.search.advance_on_device(logits.index_select(0, self.read_rows), device_length=True)
            self.tokens.index_copy_(0, self.write_rows, self.search.tokens())       # empty slots: the spare
            return parents, self.search.input_flags(parents)
        return keeping_state(self.search, one)


class FixedCapacity:
    """The fixed-capacity step (see the module docstring): a SlotStore of max_rows rows and as many input slots,
    the free ones of each (input slots handed out lowest first, so the inputs a step reads stay few), the decoder
    step over all rows (replayed from a CUDA graph per bucket set on CUDA, eager elsewhere) and the groups' steps
    on its logits (SlotGroup). Up to KEEP_IDLE groups whose requests have all left are kept for the next requests
    of their key (on CUDA: their captured steps)."""

    KEEP_IDLE = 4
    read_late = True            # a step's flags are read once the next step is launched (Engine._step)

    def __init__(self, model, max_rows: int):
        config = model.config
        heads = config.decoder_attention_heads
        self.model = model
        self.store = SlotStore(layers=config.decoder_layers, rows=max_rows, heads=heads,
                               head_dim=config.d_model // heads, max_length=config.max_position_embeddings,
                               max_source=config.max_position_embeddings, dtype=model.dtype, device=model.device)
        self.free = list(range(max_rows))
        self.free_inputs = list(range(max_rows))                    # kept sorted: take the lowest
        self.tokens = torch.zeros(max_rows + 1, dtype=torch.long, device=model.device)       # [N + 1]: a spare
        self.logits = torch.zeros(max_rows, config.decoder_vocab_size, device=model.device)   # [N, V] every step's
        self.graphs = BucketGraphs(model.next_token_logits, self.tokens[:max_rows], self.logits) \
            if model.device.type == "cuda" else None
        self.idle: dict[str, SlotGroup] = {}                        # key -> group, least recently idle first
        # on CUDA, each group's search step replays from a CUDA graph (SlotGroup); False on an idle engine steps
        # them eagerly, e.g. to compare (benchmarks/gpu_bench.py times both)
        self.capture = self.graphs is not None

    def group(self, key: str | None, request: Request, search) -> SlotGroup:
        """The idle group of this key, or a new one whose search has max_rows // rows input slots (one for a
        request that steps alone: group_key None); the request's own `search` is not its search: SlotGroup.add puts it
        into a slot."""
        if key in self.idle:
            return self.idle.pop(key)
        cfg, config = request.config, self.model.config
        widest = config.max_position_embeddings + 1            # the longest max_length generate accepts
        slots_search = start_slots(cfg, 1 if key is None else self.store.num_rows // request.rows,
                                   config.max_position_embeddings, widest, config.decoder_vocab_size,
                                   self.model.device, request.generator)
        captured = self.capture and key is not None and not (cfg.output_scores or cfg.output_logits)
        return SlotGroup(key, slots_search, self.tokens, self.logits, captured)

    def keep_idle(self, groups: list[SlotGroup]) -> None:
        """Groups whose requests all left: kept for their key's next requests (the oldest beyond KEEP_IDLE go)."""
        for group in groups:
            if group.key is not None:
                self.idle.pop(group.key, None)
                self.idle[group.key] = group
        while len(self.idle) > self.KEEP_IDLE:
            del self.idle[next(iter(self.idle))]

    def forget(self, groups: list[SlotGroup]) -> None:
        """These groups are not kept idle (their state stopped half-way through a failed step)."""
        self.idle = {key: group for key, group in self.idle.items() if all(group is not g for g in groups)}

    def forget_idle(self) -> None:
        """No idle group is kept (a step failed: their state may be half-way through it)."""
        self.idle.clear()

    def take(self, request: Request, hidden: torch.Tensor) -> Slots:
        """request.rows free rows for a new request and an input slot holding its cross-attention keys/values,
        computed once from its encoder states [1, S, D] and shared by its rows."""
        _, cross = self.model.start_decoding(hidden, None, 1, 1, cuda_graph=False)
        rows = request.rows
        slots = Slots(list(reversed(self.free[-rows:])), self.free_inputs[0], cross.cross_k[0].shape[2],
                      self.store.positions.device)
        self.store.fill(slots.index, slots.input_slot, cross)
        del self.free[-rows:], self.free_inputs[0]             # only now: a fill that fails takes nothing
        return slots

    def reorder(self, groups: list[SlotGroup], stepped: list) -> None:
        """Right after a step, the beam groups' reorders at once (stepped: each group's (parents long [R_g] or
        None, flags)): one gather-scatter in the store for all their requests' rows (unmoved rows copy
        themselves), every step, with no flag read first."""
        moved = [(group, parents) for group, (parents, _) in zip(groups, stepped) if parents is not None]
        if not moved:
            return
        rows = torch.cat([group.write_rows[group.occupied] for group, _ in moved])
        parents = torch.cat([group.write_rows[parents[group.occupied]] for group, parents in moved])
        self.store.reorder(rows, parents, max(r.cache.steps for group, _ in moved for r in group.members))

    def reorder_moved(self, cache: Slots, parents: torch.Tensor, first: int) -> None:
        """Nothing once flags are read: the store was reordered right after the step (reorder)."""

    def give_back(self, slots: Slots) -> None:
        self.store.free(slots.index, slots.input_slot)
        self.free.extend(slots.rows)
        bisect.insort(self.free_inputs, slots.input_slot)

    def step(self, groups: list[SlotGroup], requests: list[Request]) -> list:
        """One decoder step over every row (the tokens the groups wrote; its logits in self.logits, which captured
        group steps read) and each group's step on them -> each group's (parents, flags) (Group.step); positions
        advanced."""
        cache = self.store.view(bucket(max(r.cache.source_length for r in requests), self.store.max_source),
                                bucket(max(r.cache.steps for r in requests) + 1, self.store.max_length),
                                bucket(max(r.cache.input_slot for r in requests) + 1, self.store.num_rows, least=1),
                                bucket(max(len(r.cache.rows) for r in requests), self.store.num_rows, least=1))
        if self.graphs is None:
            self.logits.copy_(self.model.next_token_logits(self.tokens[:-1], cache))     # [N, V]
        else:
            self.graphs(cache)                                                            # writes self.logits
        self.store.advance()
        for r in requests:
            r.cache.steps += 1
        return each_group(groups, lambda group: group.step(self.logits))


def serve(engine_ref: weakref.ref, wake: threading.Condition, busy: list) -> None:
    """The engine's thread: steps it while it has work, until it is closed and done. `busy` holds the engine from
    the submit that gives it work until this thread finds it idle; idle, the thread holds it only weakly, so an
    engine dropped without close() is collected once every request is answered, and its finalizer wakes this
    thread to end (as ThreadPoolExecutor's workers end with their executor)."""
    engine = engine_ref()
    while True:
        with wake:
            while engine._idle():
                busy.clear()
                engine = None                           # wait without holding it
                if engine_ref() is None:                # collected just now (its wake_up found nobody waiting)
                    return
                wake.wait()
                engine = engine_ref()
                if engine is None:
                    return
            admitted = engine._next()
        if admitted is None:
            return
        engine._run(admitted)


LIVE: weakref.WeakSet = weakref.WeakSet()      # the engines not collected yet (close_at_exit)
EXIT_WAIT = 30.0                               # seconds close_at_exit waits for an engine (a step, normally)


@atexit.register
def close_at_exit() -> None:
    """At interpreter exit, stop every engine before its daemon thread is frozen inside torch (the process would
    abort): its requests are cancelled (nobody can read them now) and its thread ends after the step it is in.
    An engine stuck for EXIT_WAIT seconds is left as it is, rather than the exit hanging."""
    for engine in list(LIVE):
        if not engine._wake.acquire(timeout=EXIT_WAIT):
            continue
        try:
            requests = [*engine.waiting, *engine.running]
        finally:
            engine._wake.release()
        for request in requests:
            request.cancel()
        engine.close(timeout=EXIT_WAIT)


def wake_up(wake: threading.Condition) -> None:
    with wake:
        wake.notify_all()


def encoder_groups(lengths: list[int]) -> list[list[int]]:
    """Indices of inputs of these lengths, cut into encoder batches, each longest first: longest first overall,
    an input joins the batch before it while the batch stays within PADDING_LIMIT x its real tokens. Padding
    is work thrown away (on the CPU a batch costs its padded size), while inputs of similar length still share
    one pass (short translation sentences gain most)."""
    groups: list[list[int]] = []
    real = 0
    for i in sorted(range(len(lengths)), key=lambda i: -lengths[i]):
        if groups and (len(groups[-1]) + 1) * lengths[groups[-1][0]] <= PADDING_LIMIT * (real + lengths[i]):
            groups[-1].append(i)
            real += lengths[i]
        else:
            groups.append([i])
            real = lengths[i]
    return groups


def each_group(groups: list[Group], step) -> list:
    """step(group) for each group: its (parents, flags), or the exception its step raised (Engine._without_failed
    fails that group's requests alone)."""
    out = []
    for group in groups:
        try:
            out.append(step(group))
        except Exception as e:   # noqa: BLE001 - a request's search failing fails its requests, not the step
            out.append(e)
    return out


def settle(future: Future, value=None, exception: BaseException | None = None) -> None:
    """Give a request's future its result or exception, unless its caller cancelled it meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)
    except InvalidStateError:   # already cancelled (or settled)
        pass


def as_row(input_ids) -> torch.Tensor:
    """1-D ids (list[int] or LongTensor [S]) -> a tensor [1, S] (generate's input for one request); anything else
    is refused."""
    if isinstance(input_ids, torch.Tensor):
        if input_ids.dim() != 1:
            raise ValueError(f"submit() takes one input: 1-D token ids, got shape {list(input_ids.shape)}; "
                             "submit each row of a batch on its own")
        ids = input_ids.clone()                         # the caller may reuse its tensor while this waits
    elif isinstance(input_ids, (list, tuple)) and all(isinstance(t, int) and not isinstance(t, bool)
                                                      for t in input_ids):
        ids = torch.tensor(input_ids, dtype=torch.long)
    else:
        raise TypeError("submit() takes 1-D token ids: a list of ints or a LongTensor [S], got "
                        f"{type(input_ids).__name__}")
    return ids[None]
