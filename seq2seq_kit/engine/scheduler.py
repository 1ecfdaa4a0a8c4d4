"""Continuous batching: requests join and leave the running decoder batch at every step.

    with Engine(model, max_rows=32) as engine:
        req = engine.submit(input_ids, num_beams=4)        # returns at once; thread-safe
        ids = req.result()                                 # LongTensor [num_return_sequences, T]
        out = await engine.generate_async(input_ids)       # the same, for asyncio callers

One background thread owns the model (on the CPU the creating thread first hands it its OpenMP workers:
cpu_threads.py). Every request has its own KV cache and steps in a search (generation.start_search: greedy,
sampling or beam search, the very code `generate` runs for a batch, in its `independent` form where each input
stops as it would alone): requests whose settings differ at most in max_length / min_length share one search as
its inputs, each at its own length, joining and leaving it between steps (group_key; sampling requests too: each
input draws from its own generator, and the draws read nothing back, their check coming with the flags). A step
runs the decoder once over the rows of every running request (the
model's decode_group_unchecked: the linear layers over all rows at once, attention per request on its own cache),
then steps each group's search on its rows' logits and reads every request's flags back in one transfer. So a
request's tokens are `generate`'s for that input alone, whatever else runs beside it: bit for bit when it runs
alone, and to float rounding of the batched matrix products otherwise (fp32: tokens equal on decisive logits,
scores 1e-4). One search per group, not per request, keeps a step's search work (processors, top-k, gathers: ~50
kernels on a GPU) independent of how many requests run.

Scheduling (vLLM's, reduced to what an encoder-decoder needs): first come, first served. Before each step the
waiting requests that fit are admitted in arrival order (their encoder passes batched together where their
lengths are close enough for little padding, encoder_groups): a request fits while the running rows stay within
`max_rows`, the running source tokens within `max_source_tokens`, and the tokens encoded before this step within
`max_encoder_tokens` (vLLM's token budget per step: the first waiting request always fits it).
The first request that does not fit waits, and so does everything behind it (no overtaking, no starvation).
A finished or cancelled request leaves at once; its rows and cache are free for the next step.
A request's decoder prompt (submit(ids, decoder_input_ids=...)) is fed, its tokens but the last, to that request's
own cache when it is admitted, before it joins (generate's prefill, so a request alone is bit for bit generate's);
requests share a search only with prompts of one length (group_key), which its scores and processors count.
A request's streamer (submit(ids, streamer=...)) gets generate's calls from this thread: its first tokens as it
joins, then each step's tokens as that step's flags are read (they travel to the host with them), and end() once
the request is settled, however it ends; a streamer with put_last gets the tokens a request ends on there, not in
put (the server's stream sends each token at once and the last with the answer).

Where the running rows live is the batch strategy's (engine/batch.py): EagerBatch, a KV cache per request (the
default on the CPU), or FixedCapacity, slots of one fixed-shape store whose step replays from CUDA graphs (the
default on CUDA, `fixed_capacity`).
"""

from __future__ import annotations

import asyncio
import atexit
import collections
import copy
import logging
import os
import threading
import weakref
from collections.abc import Coroutine
from concurrent.futures import Future, InvalidStateError
from dataclasses import replace

import torch

from .. import cpu_threads
from ..generation import (GenerationConfig, check_streamer, deadline, first_tokens, prepare, prepare_more, result,
                          rows_per_input, rows_setting, settings, start_search, stop_strings_of)
from ..generation import constrained_beam_search, contrastive_search, group_beam_search, prompt_lookup
from ..generation.draws import no_valid_probabilities
from ..models.bart import BartNetwork
from ..models.checks import check_positive_int
from .batch import EagerBatch, FixedCapacity, Group, Launched, Request


logger = logging.getLogger(__name__)
PADDING_LIMIT = 1.25    # an encoder batch computes at most 1.25x its inputs' real tokens (see encoder_groups)
# generate() arguments the engine does not take (check_engine_settings), but as generate takes "not given"
NOT_TAKEN = ("logits_processor", "prefix_allowed_tokens_fn", "streamer", "tokenizer", "decoder_input_ids",
             "decoder_attention_mask", "attention_mask", "encoder_outputs", "assistant_model")
TOKENIZER_FIX = "Engine(model, tokenizer=tokenizer) (or the pipeline's pipe.engine())"   # stop strings' tokenizer


class EngineFull(RuntimeError):
    """The engine's queue holds max_queue waiting requests; retry later (HTTP servers answer 503)."""


class EngineClosed(RuntimeError):
    """The engine was closed; no request can be submitted."""


def group_key(config: GenerationConfig, prompt_len: int) -> str:
    """What requests must share to step in one search: every resolved setting but max_length, min_length (whether
    a minimum applies stays: it is a processor or none) and max_time (each request's own deadline), and the length
    of their decoder prompts (which a search's scores and length processors count once for all its inputs).
    Sampling requests share one too: each input draws from its own generator (SearchProgress.sample)."""
    return repr(replace(config, max_length=None, max_new_tokens=None, min_new_tokens=None, max_time=None,
                        min_length=bool(config.min_length))) + f" prompt_len={prompt_len}"


class Engine:
    """A continuous-batching generator over one model (see the module docstring).

    max_rows: decoder rows per step (a beam-4 request takes 4, greedy 1, sampling num_return_sequences).
    max_source_tokens: source tokens of the running requests together (their cross-attention caches);
        default max_rows * max_position_embeddings, i.e. no limit beyond max_rows.
    max_encoder_tokens: source tokens encoded between two steps (at least one request's, so that every request
        is admitted in turn). Default: on the CPU one full window (max_position_embeddings), where batching encoder
        passes saves nothing (an input encoded alone costs less than in a padded batch: benchmarks/RESULTS.md) and
        every request encoded before a step delays the first token of all the others and the next token of the
        running ones; on CUDA, max_source_tokens (batched encoder passes are much cheaper per token there).
    max_queue: waiting requests beyond which submit raises EngineFull.
    defaults: generation settings under each request's own (the pipeline's task defaults), checked here with
        generate's messages.
    fixed_capacity: step all max_rows rows on a SlotStore (see the module docstring); None: on for a model on a
        CUDA device, where its steps replay CUDA graphs; True on the CPU runs the same step eagerly.
    tokenizer: the model's tokenizer, which requests' stop_strings read the tokens with (pipe.engine() passes
        its own); None: stop_strings are refused.

    The engine schedules; how a step runs is its `batch`'s: EagerBatch (a cache per request) or FixedCapacity.
    """

    Full = EngineFull               # what submit raises, for callers handed an engine (as queue.Queue's queue.Full)

    def __init__(self, model, *, max_rows: int = 32, max_source_tokens: int | None = None,
                 max_encoder_tokens: int | None = None, max_queue: int = 1024, defaults: dict | None = None,
                 fixed_capacity: bool | None = None, tokenizer=None):
        check_model(model)
        check_positive_int(max_rows, "max_rows")
        limit = model.config.max_position_embeddings
        max_source_tokens = max_rows * limit if max_source_tokens is None else max_source_tokens
        check_positive_int(max_source_tokens, "max_source_tokens")
        if max_encoder_tokens is None:
            max_encoder_tokens = max_source_tokens if model.device.type == "cuda" else limit
        check_positive_int(max_encoder_tokens, "max_encoder_tokens")
        check_positive_int(max_queue, "max_queue")
        if defaults is not None and not isinstance(defaults, dict):
            raise TypeError(f"defaults must be a dict of generate settings ({{'num_beams': 4, ...}}), got a "
                            f"{type(defaults).__name__}")
        self.model, self.defaults, self.tokenizer = model, dict(defaults or {}), tokenizer
        if fixed_capacity is None:
            fixed_capacity = model.device.type == "cuda"
        if not isinstance(fixed_capacity, bool):
            raise TypeError(f"fixed_capacity must be True, False or None, got {fixed_capacity!r}")
        if fixed_capacity and model.quantized:
            raise ValueError("fixed_capacity=True with an int8 model: its layers quantize a step's rows with one input "
                             "scale, so the free slots a fixed-capacity step runs would change a request's tokens; "
                             "leave fixed_capacity out (off on the CPU, where int8 runs)")
        if self.defaults:                           # bad defaults fail here, not at every submit
            self.defaults = check_engine_settings(self.defaults)
            config = settings(model, dict(self.defaults))
            check_no_traces(config)
            check_generate_only(config)
            check_steppable(config, fixed_capacity)
            stop_strings_of(config, tokenizer, model.device, fix=TOKENIZER_FIX)
        self.max_rows, self.max_source_tokens, self.max_queue = max_rows, max_source_tokens, max_queue
        self.max_encoder_tokens = max_encoder_tokens
        self.waiting: collections.deque[Request] = collections.deque()
        self.groups: list[Group] = []
        self.pending: Launched | None = None        # fixed capacity: the last step, its flags not yet read
        self.running: list[Request] = []            # the groups' requests in step order
        self.admitting: list[Request] = []          # taken from waiting, not running yet (their encoder pass)
        self.generated_tokens = 0                   # decoder rows stepped so far, all requests (for metrics)
        self.batch = FixedCapacity(model, max_rows) if fixed_capacity else EagerBatch(model)
        self._wake = threading.Condition()
        self._closing = False
        if model.device.type == "cpu":
            cpu_threads.hand_over_pool()            # this thread's OpenMP workers would slow the engine's: see there
        self._busy: list[Engine] = []               # [self] while it has work: held by its thread (see serve)
        self._pid = os.getpid()                     # its thread runs in this process only (a fork copies no thread)
        self._stopped = threading.Event()           # set by its thread as it ends (what close waits for)
        self._thread = threading.Thread(target=serve, args=(weakref.ref(self), self._wake, self._busy, self._stopped),
                                        name="seq2seq_kit-engine", daemon=True)
        self._thread.start()
        weakref.finalize(self, wake_up, self._wake)     # an engine dropped unclosed ends its thread (see serve)
        LIVE.add(self)

    # ---- the caller's side (any thread) --------------------------------------------------------------------

    def submit(self, input_ids, *, generator: torch.Generator | None = None, cuda_graph: bool | None = None,
               decoder_input_ids=None, decoder_attention_mask=None, streamer=None, **generate_kwargs) -> Request:
        """Queue one input: 1-D token ids (list[int] or LongTensor [S]). Settings are generate()'s, resolved and
        checked here, so bad input raises at once with generate()'s message and never enters the batch.
        decoder_input_ids: this input's decoder prompt, 1-D ids (list[int] or LongTensor [P], or [1, P] as generate
        takes a batch of one), taken as generate takes it (decoder_attention_mask likewise: all ones, or unset).
        streamer: generate's (put / end: e.g. TextIteratorStreamer), given the calls generate alone would give it,
        from the engine's thread as the request steps (a slow one slows every request); its end() comes however
        the request ends (answered, failed or cancelled: result() tells which); a put that raises fails the
        request with that error. A streamer that also has put_last(ids) gets the request's last tokens there
        instead of put, in the step that ends it (end() follows), so it need not wait for end() to know them."""
        ids, config, prompt, stops = self._checked(input_ids, generator, cuda_graph, decoder_input_ids,
                                                   decoder_attention_mask, streamer, generate_kwargs)
        # the request keeps its settings and generator as they stand now, whatever the caller does with its lists,
        # dicts or generator (changes, reseeds, draws, another request) while this one waits or runs
        request = Request(ids, copy.deepcopy(config), own_generator(generator, config.do_sample, self.model.device),
                          prompt, stops, streamer=streamer)
        self._queue([request])
        return request

    def submit_all(self, rows, *, generator: torch.Generator | None = None, **generate_kwargs) -> list[Request]:
        """Several inputs with the same settings: one request each, as submit() makes it, but the settings resolved
        and checked once, not once per input (a server's or a batch's list of texts: a sequence_bias of 40,000
        entries took 0.4 s an input). rows: 1-D token ids each, as submit takes input_ids. All are queued, or none:
        the first input refused raises (naming the problem, as submit), and EngineFull where they do not all fit
        the queue. Each request starts from the generator's state now, as if each were submitted alone. No streamer
        or decoder prompt: those are one input's (submit)."""
        rows = list(rows) if isinstance(rows, (list, tuple)) else rows
        if not isinstance(rows, list) or not rows or isinstance(rows[0], int):
            one = " (one input's ids: submit(ids), or submit_all([ids]))" if rows and isinstance(rows, list) else ""
            raise TypeError(f"submit_all() takes a non-empty list of inputs (1-D token ids each), got "
                            f"{rows!r:.80}{one}")
        if len(rows) > self.max_queue:
            raise ValueError(f"submit_all() got {len(rows)} inputs, more than this engine's max_queue={self.max_queue} "
                             "can ever hold at once; submit them in smaller lists, or raise max_queue")
        ids, config, _, stops = self._checked(rows[0], generator, None, None, None, None, generate_kwargs)
        config = copy.deepcopy(config)          # one copy, shared: nothing changes a request's resolved settings
        sources = [ids] + [self._source(prepare_more(self.model, as_row(row), config)) for row in rows[1:]]
        requests = [Request(ids, config, own_generator(generator, config.do_sample, self.model.device), None, stops)
                    for ids in sources]
        self._queue(requests)
        return requests

    def _checked(self, input_ids, generator, cuda_graph, decoder_input_ids, decoder_attention_mask, streamer,
                 generate_kwargs: dict) -> tuple:
        """submit's arguments checked as generate checks them, and as this engine runs them -> (input_ids [1, S],
        the resolved settings, the decoder prompt [1, P] or None, the stop strings' tables or None)."""
        generate_kwargs = check_engine_settings(generate_kwargs)
        ids, _, config, prompt = prepare(self.model, as_row(input_ids), None, {**self.defaults, **generate_kwargs},
                                         generator, as_prompt_row(decoder_input_ids, "decoder_input_ids"),
                                         as_prompt_row(decoder_attention_mask, "decoder_attention_mask"))
        stops = stop_strings_of(config, self.tokenizer, self.model.device, fix=TOKENIZER_FIX)
        check_no_traces(config)
        check_no_prompt_lookup(config)
        check_generate_only(config)
        check_steppable(config, isinstance(self.batch, FixedCapacity))
        check_streamer(streamer, config)
        if cuda_graph is not None and not isinstance(cuda_graph, bool):
            raise TypeError(f"cuda_graph must be True, False or None, got {cuda_graph!r}")     # generate's check
        if cuda_graph:
            raise ValueError("the engine chooses how it steps its batch (Engine(fixed_capacity=...)); "
                             "cuda_graph=True is for generate()")
        ids, rows = self._source(ids), rows_per_input(config)
        if rows > self.max_rows:
            name = rows_setting(config)
            raise ValueError(f"these settings need {rows} decoder rows (`{name}` {rows}) but the "
                             f"engine has max_rows={self.max_rows}; lower `{name}` or raise max_rows")
        return ids, config, prompt, stops

    def _source(self, ids: torch.Tensor) -> torch.Tensor:
        """A checked input [1, S], refused where it is longer than this engine's max_source_tokens."""
        if ids.shape[1] > self.max_source_tokens:
            raise ValueError(f"input_ids has {ids.shape[1]} tokens, more than this engine's max_source_tokens="
                             f"{self.max_source_tokens}; truncate it or raise max_source_tokens")
        return ids

    def _queue(self, requests: list[Request]) -> None:
        """Append checked requests to the waiting queue, all or none (EngineFull, EngineClosed)."""
        self._check_process()
        with self._wake:
            if self._closing:
                raise EngineClosed("the engine is closed; create a new Engine")
            if len(self.waiting) + len(requests) > self.max_queue:   # cancelled ones behind a head that cannot
                kept = [r for r in self.waiting if not r.future.cancelled()]     # start: drop them
                for dropped in set(self.waiting) - set(kept):
                    dropped.notify_cancelled()      # cancelled by its future itself (asyncio's wrap_future)
                self.waiting.clear()
                self.waiting.extend(kept)
            if len(self.waiting) + len(requests) > self.max_queue:
                more = f"; {len(requests)} inputs at once do not fit beside the {len(self.waiting)} waiting" \
                    if len(requests) > 1 else ""
                raise EngineFull(f"the engine's queue is full ({self.max_queue} waiting requests{more}); retry later")
            for request in requests:
                request.answered_by = self._thread
            self.waiting.extend(requests)
            if not self._busy:
                self._busy.append(self)                 # the thread holds the engine until this is answered
            self._wake.notify()

    def _check_process(self) -> None:
        """EngineClosed in a process forked from the engine's: its thread was not copied, so nothing would ever
        answer a request there (result() would block forever)."""
        if os.getpid() != self._pid:
            raise EngineClosed(f"this engine was created in process {self._pid}, whose engine thread a fork does not "
                               f"copy into this one ({os.getpid()}); create a new Engine in this process")

    def generate_async(self, input_ids, *, generator: torch.Generator | None = None,
                       **generate_kwargs) -> Coroutine:
        """submit() for asyncio callers: a coroutine answering the request; cancelling the awaiting task cancels
        it. The ids, settings and generator are taken as they stand at this call, as submit takes them (the
        coroutine submits only when it runs: a loop reseeding one generator for each coroutine it makes gave
        every request the last seed's draws)."""
        if isinstance(generator, torch.Generator):
            generator = own_generator(generator)        # anything else: submit's check names it
        return self._answer(as_data(input_ids), generator, {k: as_data(v) for k, v in generate_kwargs.items()})

    async def _answer(self, input_ids, generator: torch.Generator | None, generate_kwargs: dict):
        request = self.submit(input_ids, generator=generator, **generate_kwargs)
        try:
            return await asyncio.wrap_future(request.future)
        except asyncio.CancelledError:
            request.cancel()
            raise

    @property
    def queue_depth(self) -> int:
        """Requests waiting, those cancelled meanwhile not counted (under the lock: /metrics reads it from another
        thread while submit appends). 0 in a process forked from the engine's: nothing waits there (and the lock,
        copied as the fork found it, may be held forever)."""
        if os.getpid() != self._pid:
            return 0
        with self._wake:
            return sum(not request.future.cancelled() for request in self.waiting)

    @property
    def active_rows(self) -> int:
        return sum(r.rows for r in self.running)

    def close(self, cancel_pending: bool = False, timeout: float | None = None) -> bool:
        """Stop accepting; finish every running request and, unless cancel_pending, every waiting one. Returns
        whether the engine's thread has ended: False when timeout (seconds) ran out first (it ends after the work
        above), or when called from that thread itself (a request's done-callback: it returns at once, the thread
        ends after the step). Interrupted while it waits (Ctrl-C), it cancels the waiting requests, as leaving a
        with block so does. In a process forked from the engine's it returns True at once: no engine thread runs
        there to stop (and the lock may have been copied held)."""
        if os.getpid() != self._pid:
            return True
        with self._wake:
            self._closing = True
            pending = list(self.waiting) if cancel_pending else []   # taken with _closing: none admitted between
            self._wake.notify()
        for request in pending:                 # not under the lock: their done-callbacks may call the engine
            request.cancel()
        if threading.current_thread() is self._thread:
            return False
        try:
            return self._stopped.wait(timeout)  # not Thread.join: interrupted, CPython 3.11 marks the thread
        except BaseException:                   # stopped, so close_at_exit let the interpreter stop it inside
            self._cancel_waiting()              # torch (abort)
            raise

    def _cancel_waiting(self) -> None:
        with self._wake:
            cancelled = list(self.waiting)
        for request in cancelled:               # not under the lock: their done-callbacks may call the engine
            request.cancel()

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
        self.admitting = self._take_admissible()
        return self.admitting

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
        finally:
            self.admitting = []

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
        """Pop, in arrival order, the waiting requests that fit beside the running ones and within this step's
        encoder tokens (the first always does) (lock held)."""
        rows = self.active_rows
        tokens = sum(r.source_tokens for r in self.running)
        admitted, encoding = [], 0
        while self.waiting:
            request = self.waiting[0]
            if request.future.cancelled():
                self.waiting.popleft().notify_cancelled()
                continue
            if rows + request.rows > self.max_rows or tokens + request.source_tokens > self.max_source_tokens:
                break
            if admitted and encoding + request.source_tokens > self.max_encoder_tokens:
                break
            self.waiting.popleft()
            rows, tokens = rows + request.rows, tokens + request.source_tokens
            encoding += request.source_tokens
            admitted.append(request)
        return admitted

    def _admit(self, requests: list[Request]) -> None:
        """Encode the new requests (batched where their lengths are close: _encode); each gets its cache and joins
        the search of its group. An error in their encoder pass fails them, not the requests already running."""
        for request in requests:
            request.notify_cancelled()
        requests = [r for r in requests if not r.future.cancelled()]
        if not requests:
            return
        try:
            states = self._encode([r.input_ids[0] for r in requests])
        except Exception as e:   # noqa: BLE001 - their encoder pass fails them alone: the running requests step on
            for request in requests:
                settle(request.future, exception=e)
                self._leave(request)
            return
        for request, hidden in zip(requests, states):
            if request.future.cancelled():              # during the encoder pass (close_at_exit too)
                request.notify_cancelled()
                continue
            try:
                self._start(request, hidden)
            except Exception as e:   # noqa: BLE001 - a request whose search cannot start fails alone
                settle(request.future, exception=e)
                self._leave(request)
        self.running = [r for group in self.groups for r in group.members]

    def _start(self, request: Request, hidden: torch.Tensor) -> None:
        """A new request's cache from its encoder states [1, S, D], and its search joined to its group."""
        model = self.model
        request.deadline = deadline(request.config.max_time)
        request.cache = self.batch.take(request, hidden)
        search = start_search(request.config, request.input_ids, model.config.decoder_vocab_size, model.device,
                              request.generator, independent=True, prompt=request.prompt,
                              stop_strings=request.stop_strings)
        if request.streamer is not None:
            request.stream(first_tokens(search))                      # its first tokens [R, P], as generate's
        self._join(request, search)

    def _join(self, request: Request, search) -> None:
        """Put a new request (with its one-input search) into the running group of its key, or a new group (fixed
        capacity: an idle one of its key, or a new SlotGroup)."""
        key = group_key(request.config, request.prompt_len)
        group = next((g for g in self.groups if g.key == key), None)
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
        flags = torch.cat([flags for _, flags in stepped])                                 # [inputs, 3]
        tokens = [group.search.tokens() if any(r.streamer is not None for r in group.members) else None
                  for group in self.groups]                                                 # [R] each, or None
        ready = None
        if flags.device.type == "cuda":
            flags, ready = flags.to("cpu", non_blocking=True), torch.cuda.Event()
            tokens = [t if t is None else t.to("cpu", non_blocking=True) for t in tokens]
            ready.record()
        return Launched([(group, list(group.requests), parents, rows)
                         for group, (parents, _), rows in zip(self.groups, stepped, tokens)], flags, ready)

    def _settle(self, step: Launched) -> None:
        """Read a launched step's flags (one host read): its finished requests get their outputs and leave; eager
        caches whose beams moved are reordered."""
        if step.ready is not None:
            step.ready.synchronize()
        flags = iter(step.flags.tolist())
        finished = {}                                   # request -> its output (None: cancelled meanwhile)
        failed = {}                                     # request -> the error of its failed draw
        for group, requests, parents, tokens in step.groups:
            n = group.search.rows_per_input
            for b, request in enumerate(requests):
                alive, moved, fault = next(flags)
                if request is None or request.group is not group:     # an empty slot, or it left since
                    continue
                self.generated_tokens += request.rows
                if fault:
                    failed[id(request)] = no_valid_probabilities(fault)
                    continue
                try:
                    if tokens is not None:
                        request.stream(tokens[b * n:(b + 1) * n], last=not alive)
                except Exception as e:   # noqa: BLE001 - the request's streamer failing fails that request alone
                    failed[id(request)] = e
                    continue
                if not alive:
                    finished[id(request)] = None if request.future.cancelled() \
                        else result(request.config, group.search, [b])
                elif moved:
                    self.batch.reorder_moved(request.cache, parents, b * n)
        done = [r for r in self.running if id(r) in finished or id(r) in failed]
        self._drop(lambda request: id(request) in finished or id(request) in failed)    # only now: an error above
        for request in done:                                                           # fails this step's requests
            if id(request) in failed:
                settle(request.future, exception=failed[id(request)])
            elif finished[id(request)] is not None:
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
        request.notify_cancelled()


def serve(engine_ref: weakref.ref, wake: threading.Condition, busy: list, stopped: threading.Event) -> None:
    """The engine's thread (serve_until_done), then `stopped` set: its torch work is over."""
    try:
        serve_until_done(engine_ref, wake, busy)
    finally:
        stopped.set()


def serve_until_done(engine_ref: weakref.ref, wake: threading.Condition, busy: list) -> None:
    """Steps the engine while it has work, until it is closed and done. `busy` holds the engine from
    the submit that gives it work until this thread finds it idle; idle, the thread holds it only weakly, so an
    engine dropped without close() is collected once every request is answered, and its finalizer wakes this
    thread to end (as ThreadPoolExecutor's workers end with their executor)."""
    engine = engine_ref()
    if engine is None:                                  # dropped before this thread's first line
        return
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
        if engine._pid != os.getpid():      # a forked child's copy: no thread to stop; its lock may be held forever
            continue
        if not engine._wake.acquire(timeout=EXIT_WAIT):
            continue
        try:
            requests = [*engine.waiting, *engine.admitting, *engine.running]   # the thread moves them this way
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


def check_model(model) -> None:
    """TypeError naming the fix unless `model` is a loaded seq2seq_kit model (a pipeline, a path: not yet)."""
    if isinstance(model, BartNetwork):
        return
    if callable(getattr(model, "engine", None)) and isinstance(getattr(model, "model", None), BartNetwork):
        raise TypeError(f"Engine takes a model, got a {type(model).__name__}; call its .engine() for an engine on "
                        "its model with its generation defaults (or pass Engine(pipe.model))")
    raise TypeError(f"Engine takes a loaded model, got {type(model).__name__}; load one with "
                    "BartForConditionalGeneration.from_pretrained(path_or_hub_id)")


def check_no_traces(config: GenerationConfig) -> None:
    """output_attentions / output_hidden_states (returned with return_dict_in_generate, ignored without, as by
    generate) are refused by name: the engine's steps run its requests together, not one call's traced steps."""
    asked = [name for name in ("output_attentions", "output_hidden_states") if getattr(config, name)]
    if asked:
        off = ", ".join(f"{name}=False" for name in asked)
        raise ValueError(f"{' and '.join(asked)}: the engine does not return attentions or hidden states (it steps "
                         f"its requests together); pass {off} (the model's generation_config may set them), or "
                         "use generate(..., return_dict_in_generate=True), which returns them")


def check_no_prompt_lookup(config: GenerationConfig) -> None:
    """prompt_lookup_num_tokens (where it acts: one row per request) is refused by name: the engine's step feeds
    one token per row to every request together; a pass checking one request's guesses is generate's. Beside beam
    search, which ignores it, generate's warning."""
    prompt_lookup.warn_if_ignored(config)
    if prompt_lookup.runs(config):
        raise ValueError("prompt_lookup_num_tokens: the engine steps one token per row, every request together (its "
                         "rows batch instead); leave it out (the model's generation_config may set it: pass "
                         "prompt_lookup_num_tokens=None), or use generate, which checks one input's guesses per pass")


def check_generate_only(config: GenerationConfig) -> None:
    """What generate runs and the engine's shared steps do not, refused by name: group (diverse) beam search (its
    groups step one after another, on the host: generation/group_beam_search.py), constrained beam search (its
    beams chosen on the host: generation/constrained_beam_search.py) and contrastive search (a step of its own:
    generation/contrastive_search.py). Corpus jobs, which run on the engine, refuse them up front with this."""
    if group_beam_search.runs(config):
        raise ValueError("num_beam_groups: group (diverse) beam search runs in generate() only (its groups step one "
                         "after another, on the host); use generate or the pipeline, or leave num_beam_groups out "
                         "(the model's generation_config may set it: pass num_beam_groups=1)")
    if constrained_beam_search.runs(config):
        raise ValueError("force_words_ids / constraints: constrained beam search runs in generate() only (it "
                         "chooses each step's beams on the host); use generate or the pipeline, or leave them out "
                         "(the model's generation_config may set force_words_ids: pass force_words_ids=None)")
    if contrastive_search.runs(config):
        raise ValueError("penalty_alpha: contrastive search runs in generate() only (each step decodes top_k "
                         "candidates per input and compares their hidden states); use generate or the pipeline, or "
                         "leave it out (the model's generation_config may set it: pass penalty_alpha=None)")


def check_steppable(config: GenerationConfig, fixed_capacity: bool) -> None:
    """watermarking_config runs Python per row at every step, reading each row's length on the host: the eager
    batch runs it, the fixed-capacity step (replayed from CUDA graphs) cannot."""
    if fixed_capacity and config.watermarking_config is not None:
        raise ValueError("watermarking_config: the watermark runs Python per row at every step, which this engine's "
                         "fixed-capacity step (replayed from CUDA graphs, the default on CUDA) cannot: "
                         "Engine(..., fixed_capacity=False) runs it, or generate; or leave it out (the model's "
                         "generation_config may set it: pass watermarking_config=None)")


def check_engine_settings(generate_kwargs: dict) -> dict:
    """Refuse the generate() arguments the engine cannot take (a request's or the engine's defaults), naming why;
    -> the settings without those given as generate takes "not given" (None; an empty logits_processor list)."""
    generate_kwargs = {k: v for k, v in generate_kwargs.items()
                       if not (k in NOT_TAKEN and (v is None or (isinstance(v, list) and not v)))}
    own = sorted({"logits_processor", "prefix_allowed_tokens_fn"} & set(generate_kwargs))
    if own:
        raise ValueError(f"{', '.join(own)}: Python run on every step of one request is for generate(); the "
                         "engine steps its requests together on the device")
    if "streamer" in generate_kwargs:                   # submit takes it by name: only the defaults get here
        raise ValueError("streamer: a streamer is one request's, not a default of the engine; pass it to "
                         "submit(input_ids, streamer=...) for each request that streams")
    if "tokenizer" in generate_kwargs:
        raise ValueError("tokenizer: the engine's is given once, as Engine(model, tokenizer=tokenizer) (the "
                         "pipeline's pipe.engine() passes its own); stop_strings read the tokens with it")
    prompt = sorted({"decoder_input_ids", "decoder_attention_mask"} & set(generate_kwargs))
    if prompt:                                          # submit takes them by name: only the defaults get here
        raise ValueError(f"{', '.join(prompt)}: a decoder prompt is one request's, not a default of the engine; "
                         "pass it to submit(input_ids, decoder_input_ids=...) for each request that has one")
    if "attention_mask" in generate_kwargs:
        raise ValueError("submit() takes one input's token ids, unpadded: leave attention_mask out (a padded "
                         "batch's rows are submitted one by one, each without its padding)")
    if "assistant_model" in generate_kwargs:
        raise ValueError("assistant_model: the engine steps one token per row, every request together (its rows "
                         "batch instead); use generate, which checks one input's draft tokens per pass")
    if "encoder_outputs" in generate_kwargs:
        raise ValueError("encoder_outputs: the engine encodes the requests it admits itself, several in one pass; "
                         "submit the input ids (generate takes encoder_outputs)")
    return generate_kwargs


def settle(future: Future, value=None, exception: BaseException | None = None) -> None:
    """Give a request's future its result or exception, unless its caller cancelled it meanwhile."""
    try:
        if exception is not None:
            future.set_exception(exception)
        else:
            future.set_result(value)
    except InvalidStateError:   # already cancelled (or settled)
        pass
    except BaseException as e:   # noqa: BLE001 - a done-callback's SystemExit & co. (its Exceptions the future
        # logs itself): the future is settled already; escaping here would leave the step's other requests
        # unsettled, or (from _fail) end the engine's thread with every later request hanging
        logger.error("a done-callback of an engine request raised %r; ignored", e)


def as_data(value):
    """A copy of an argument that is data (ids, lists, dicts, tensors, a GenerationConfig) the caller may change
    later; anything else (refused by submit) as it is."""
    return copy.deepcopy(value) if isinstance(value, (list, tuple, dict, torch.Tensor, GenerationConfig)) else value


def own_generator(generator: torch.Generator | None, sampling: bool = False,
                  device: torch.device | None = None) -> torch.Generator | None:
    """A generator of the request's own at the state the caller's has now: it draws what generate would draw from
    the caller's generator at submit (the caller's does not advance). Given none, a sampling request gets one on
    `device` seeded from torch's global RNG now (torch.manual_seed before the submits reproduces them; a request
    does not draw from the global RNG while it runs beside others); None otherwise."""
    if generator is None:
        if not sampling:
            return None
        return torch.Generator(device=device).manual_seed(int(torch.randint(2 ** 62, ())))
    own = torch.Generator(device=generator.device)
    own.set_state(generator.get_state())
    return own


def as_prompt_row(value, name: str):
    """submit's decoder_input_ids / decoder_attention_mask (1-D: a list of ints or a tensor [P]) -> [1, P] as
    generate takes them (a [1, P] tensor, or anything else, as it is: decoder_prompt.check names what is wrong)."""
    if isinstance(value, (list, tuple)):
        if not all(isinstance(t, int) and not isinstance(t, bool) for t in value):
            raise TypeError(f"{name} must be 1-D: a list of Python ints or a LongTensor [P], got a list holding "
                            + ", ".join(sorted({type(t).__name__ for t in value})))
        return long_row(value, name)[None]                                                   # [1, P]
    if isinstance(value, torch.Tensor) and value.layout == torch.strided and not value.is_nested:
        return value.clone()[None] if value.dim() == 1 else value.clone()    # the caller may reuse its tensor
    return value


INT64 = (-2**63, 2**63 - 1)     # what a LongTensor holds


def long_row(values, name: str) -> torch.Tensor:
    """Python ints -> long [P]; an int beyond int64 (which no tensor holds, nor any token id is) is named, not left
    to torch's "Overflow when unpacking long long"."""
    bad = next((t for t in values if not INT64[0] <= t <= INT64[1]), None)
    if bad is not None:
        raise ValueError(f"{name} holds {bad}, outside int64's range [-2**63, 2**63), where no token id (nor mask "
                         "value) lies; pass the tokenizer's ids")
    return torch.tensor(values, dtype=torch.long)                                             # [P]


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
        ids = long_row(input_ids, "input_ids")
    elif isinstance(input_ids, (list, tuple)):
        bad = next(t for t in input_ids if not isinstance(t, int) or isinstance(t, bool))
        if isinstance(bad, (list, tuple, torch.Tensor)):
            raise ValueError("submit() takes one input: 1-D token ids, got a list of rows; submit each row of a "
                             "batch on its own")
        raise TypeError(f"submit() takes 1-D token ids: a list of Python ints, but it holds {bad!r} "
                        f"({type(bad).__name__}); convert with int() or pass a LongTensor [S]")
    else:
        raise TypeError("submit() takes 1-D token ids: a list of ints or a LongTensor [S], got "
                        f"{type(input_ids).__name__}")
    return ids[None]
