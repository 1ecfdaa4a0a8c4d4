"""Where the engine's running rows live, and how a step runs over them: two strategies behind one interface
(take, group, step, reorder, reorder_moved, keep_idle, forget, forget_idle, give_back, read_late), chosen by
Engine(fixed_capacity=...); a submitted request (Request) and the groups of requests that step in one search
(Group, SlotGroup).

EagerBatch (the default on the CPU): each request has its own KV cache sized to its max_length, and a step runs
the decoder over the running requests' rows only.

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
its step, processors, top-k and draws included, replays from one CUDA graph captured when the group is made
(output_scores and output_logits groups step eagerly): a step is a decoder replay, a replay per group and the beam
groups' reorder (one gather-scatter of self-attention slots within the store), and its flags are read while the
next step runs (a finished request steps once more, frozen, before it leaves).
Padding adds exact zeros to the attention but rounds the longer reductions differently: fp32 tokens equal
generate alone's on decisive logits, scores within 1e-4, as for batched requests.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import math
import threading
import time
from concurrent.futures import Future
from dataclasses import dataclass, field

import torch

from .. import cuda_capture
from ..generation import GenerationConfig, rows_per_input, start_slots
from ..generation.beam_search import BeamSearch
from ..generation.decoder_prompt import prefill
from ..generation.sampling import SampleSearch
from ..generation.stop_strings import StopStrings
from ..generation.whole_step import keeping_state
from ..models.cuda_graph import BucketGraphs
from ..models.kv_cache import KVCache, SlotStore, bucket

FUTURES_LOG = logging.getLogger("concurrent.futures")   # where a done-callback's error is logged


def end_quietly(streamer) -> None:
    """streamer.end(), an error in it logged as a done-callback's is (concurrent.futures' logger)."""
    try:
        streamer.end()
    except Exception:
        FUTURES_LOG.exception("exception in the streamer's end() of a cancelled request")


@dataclass(eq=False)           # a request is itself: hashable, == is identity (as its Future)
class Request:
    """One submitted input. `result()` blocks for its output; `cancel()` frees its rows at the next step (also while
    it runs, where a concurrent.futures.Future refuses); done(), cancelled(), exception() and add_done_callback()
    are its Future's (`future`)."""
    input_ids: torch.Tensor                     # [1, S] long, on the model's device
    config: GenerationConfig                    # resolved settings
    generator: torch.Generator | None
    prompt: torch.Tensor | None = None          # [1, P] long: its decoder prompt as the decoder reads it (None:
                                                # the start token alone), on the model's device
    stop_strings: StopStrings | None = None     # config.stop_strings' tables over the engine's tokenizer
    future: Future = field(default_factory=Future, repr=False)
    group: Group | None = field(default=None, repr=False)  # set on admission: the search it steps in
    cache: KVCache | Slots | None = field(default=None, repr=False)   # set on admission: its cache, or its rows
                                                                     # in the SlotStore (fixed capacity)
    deadline: float = field(default=math.inf, repr=False)  # time.monotonic() when its max_time runs out (set on
                                                           # admission, once encoded: decoding time, as generate)
    notified: bool = field(default=False, repr=False)      # its cancellation told to wait() / as_completed()
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)      # around `notified`
    streamer: object | None = field(default=None, repr=False)    # generate's streamer protocol: put(ids), end()
                                                                 # (and put_last(ids) where it has one: stream)
    streaming: threading.Lock = field(default_factory=threading.Lock, repr=False)   # around the three below
    putting: threading.Thread | None = field(default=None, repr=False)   # the thread in the streamer's put now
    end_due: bool = field(default=False, repr=False)             # the stream ended during that put: end() after it
    answered_by: threading.Thread | None = field(default=None, repr=False)   # the engine's thread, once queued

    def __post_init__(self):
        if self.streamer is not None:           # however it ends (answered, failed, cancelled), its stream ends
            self.future.add_done_callback(lambda _: self.end_stream())

    def stream(self, tokens: torch.Tensor, last: bool = False) -> None:
        """Hand tokens to the streamer, as generate does ([R, P] the decoder's first tokens, then [R] a step's),
        unless its stream has ended. last: the request finished on these tokens; a streamer with put_last(tokens)
        gets them there instead of put (then end(), once the request is settled), so it knows them for the last
        without waiting for end() (the server's events: the last one carries the answer). Only the engine's thread
        streams. A stream ended during the put (end_stream in another thread) gets its end() here, after the put."""
        with self.streaming:
            if self.streamer is None or self.end_due:
                return
            streamer, self.putting = self.streamer, threading.current_thread()
        try:
            put_last = getattr(streamer, "put_last", None) if last else None
            (put_last or streamer.put)(tokens)
        finally:
            with self.streaming:
                self.putting = None
                ended = self.end_due
            if ended:
                self.end_stream()

    def end_stream(self) -> None:
        """The streamer's end(), once, after the request is settled (its output is set by then); no put after it.
        It never runs in a thread that cancels the request from outside the engine (a reader that cancels, then
        reads until end(), would wait on itself): a put running then gets its end() once it returns (stream), else
        end() runs in a thread of its own. In the engine's thread (answered, failed, cancelled by a streamer or a
        done-callback) it runs at once."""
        with self.streaming:
            if self.putting not in (None, threading.current_thread()):
                self.end_due = True
                return
            streamer, self.streamer, self.end_due = self.streamer, None, False
        if streamer is None:
            return
        if self.answered_by in (None, threading.current_thread()):
            streamer.end()
            return
        try:
            threading.Thread(target=end_quietly, args=(streamer,), name="seq2seq_kit stream end", daemon=True).start()
        except RuntimeError:                    # the interpreter is exiting (close_at_exit): no new thread
            end_quietly(streamer)

    def result(self, timeout: float | None = None):
        """LongTensor [num_return_sequences, T], or a GenerateOutput with return_dict_in_generate=True."""
        self.check_waitable("result")
        return self.future.result(timeout)

    def check_waitable(self, call: str) -> None:
        """RuntimeError for a wait on a request not done yet in the engine's own thread (a done-callback or a
        streamer runs there): that thread alone answers it, so the wait would stall every request for good."""
        if self.answered_by is threading.current_thread() and not self.future.done():
            raise RuntimeError(f"request.{call}() in the engine's own thread (a done-callback or a streamer runs "
                               "there) would wait forever: that thread answers it; wait in another thread, or chain "
                               "the next step with request.add_done_callback")

    def cancel(self) -> bool:
        """Cancel the request: a waiting one never runs, a running one leaves at the next step. False when it
        had already finished."""
        cancelled = self.future.cancel()
        self.notify_cancelled()
        return cancelled

    def notify_cancelled(self) -> None:
        """Once cancelled, the request counts as done for concurrent.futures.wait / as_completed: Future.cancel
        does not tell them (an executor does, set_running_or_notify_cancel, when it meets the cancelled future)."""
        with self.lock:
            if self.future.cancelled() and not self.notified:
                self.notified = True
                self.future.set_running_or_notify_cancel()

    def done(self) -> bool:
        return self.future.done()

    def cancelled(self) -> bool:
        return self.future.cancelled()

    def exception(self, timeout: float | None = None) -> BaseException | None:
        """The error the request failed with, or None once it succeeded; waits as result() (concurrent.futures)."""
        self.check_waitable("exception")
        return self.future.exception(timeout)

    def add_done_callback(self, fn) -> None:
        """fn(request) once the request is done (answered, failed or cancelled), as a Future's callback: at once
        when it is done already, else in the thread that settles it (the engine's, or the one cancelling it)."""
        self.future.add_done_callback(lambda _: fn(self))

    @property
    def rows(self) -> int:
        return rows_per_input(self.config)

    @property
    def source_tokens(self) -> int:
        return self.input_ids.shape[1]

    @property
    def prompt_len(self) -> int:
        """The decoder's tokens before its first generated one: its prompt's, or 1 (the start token)."""
        return 1 if self.prompt is None else self.prompt.shape[1]


@dataclass
class Group:
    """Running requests that step in one search (generation's independent BeamSearch / SampleSearch): requests[i]
    is the search's input i, its rows the search's rows i * rows_per_input onwards. Requests whose settings differ
    at most in their lengths share a group (`key`: scheduler.group_key; sampling requests too, each input drawing
    from its own generator). Inputs join the search (`add`) and leave it (`remove`) between steps; fixed capacity
    uses SlotGroup instead."""
    key: str
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
        each input's flags long [B, 3]: SearchProgress.input_flags), no host read."""
        self.end_late()
        parents = self.search.advance_on_device(logits)
        return parents, self.search.input_flags(parents)

    def end_late(self) -> None:
        """The requests whose max_time has run out take this step as their last (generate's rule)."""
        now = time.monotonic()
        late = [b for b, r in enumerate(self.requests) if r is not None and now > r.deadline]
        if late:
            self.search.last_step(late)


@dataclass
class Launched:
    """A step whose flags the host has not read yet: each group with its requests as they stepped (input b:
    requests[b]), its rows' parent rows (or None) and its rows' tokens [R] (where a request streams; else None),
    and every input's flags (long [inputs, 3]: still stepping, some row moved, a failed draw's fault code:
    SearchProgress.input_flags), on the host once `ready` (a CUDA event, or None) has passed."""
    groups: list[tuple[Group, list[Request | None], torch.Tensor | None, torch.Tensor | None]]
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
        """A new request's cache, from its encoder states [1, S, D], holding its decoder prompt's tokens but the
        last (fed to this request alone in one pass, as generate feeds them: decoder_prompt.prefill)."""
        _, cache = self.model.start_decoding(hidden, None, request.rows, request.config.max_length - 1,
                                             cuda_graph=False)
        if request.prompt is not None:
            prefill(self.model, cache, request.prompt, request.rows)
        return cache

    def group(self, key: str, request: Request, search) -> Group:
        """A new group whose search is the request's own (Group.add makes it its first input)."""
        return Group(key, search, [])

    def step(self, groups: list[Group], requests: list[Request]) -> list:
        """One decoder step over the running rows (the groups' rows in order) -> each group's step on its rows'
        logits (each_group)."""
        tokens = torch.cat([group.search.tokens() for group in groups])                    # [R], running order
        greedy = all(group.search.screenable for group in groups)
        logits = self.model.decode_group_unchecked(tokens, [r.cache for r in requests], screened=greedy)   # [R, V]
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
    from one CUDA graph captured when the group is made (CapturedStep; a sampling group's slots draw from
    generators of its own registered with the graph, set to each request's at put; output_scores / output_logits,
    which the host records, step eagerly)."""

    def __init__(self, key: str, search, tokens: torch.Tensor, logits: torch.Tensor, captured: bool):
        super().__init__(key, search, [None] * search.batch)
        self.tokens, self.spare = tokens, len(tokens) - 1          # [N + 1]: the store's rows' tokens, then a spare
        rows, device = search.rows, tokens.device
        self.read_rows = torch.zeros(rows, dtype=torch.long, device=device)      # [R] store row (empty: 0, ignored)
        self.write_rows = torch.full((rows,), self.spare, dtype=torch.long, device=device)   # [R] (empty: spare)
        self.occupied = self.write_rows[:0]                                      # [k] search rows of its requests
        generators = tuple(search.generator) if search.cfg.do_sample else ()     # sampling: one per slot
        self.graph = cuda_capture.CapturedStep(lambda: self.step_eagerly(logits), tokens.device,
                                               generators=generators) if captured else None

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
        self.end_late()                                  # before the replay: the captured step reads max_len
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

    def group(self, key: str, request: Request, search) -> SlotGroup:
        """The idle group of this key, or a new one whose search has max_rows // rows input slots; the request's own
        `search` is not its search: SlotGroup.add puts it into a slot."""
        if key in self.idle:
            return self.idle.pop(key)
        cfg, config = request.config, self.model.config
        widest = config.max_position_embeddings + 1            # the longest max_length generate accepts
        slots_search = start_slots(cfg, self.store.num_rows // request.rows,
                                   config.max_position_embeddings, widest, config.decoder_vocab_size,
                                   self.model.device, request.generator, request.prompt_len, request.stop_strings)
        captured = self.capture and not (cfg.output_scores or cfg.output_logits)
        return SlotGroup(key, slots_search, self.tokens, self.logits, captured)

    def keep_idle(self, groups: list[SlotGroup]) -> None:
        """Groups whose requests all left: kept for their key's next requests (the oldest beyond KEEP_IDLE go)."""
        for group in groups:
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
        computed once from its encoder states [1, S, D] and shared by its rows; its decoder prompt's tokens but the
        last are fed once (one pass: decoder_prompt.prefill), to a cache of one row of its own, and copied into each
        of its rows."""
        _, cache = self.model.start_decoding(hidden, None, 1, request.prompt_len, cuda_graph=False)
        if request.prompt is not None:
            prefill(self.model, cache, request.prompt, 1)
        rows = request.rows
        slots = Slots(list(reversed(self.free[-rows:])), self.free_inputs[0], cache.cross_k[0].shape[2],
                      self.store.positions.device)
        self.store.fill(slots.index, slots.input_slot, cache)
        slots.steps = cache.length
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
