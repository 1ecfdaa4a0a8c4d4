"""The whole decode step as one function of fixed shapes, and the CUDA graph that replays it (issue 17).

`step_once(step, cache, search)`: the decoder step on a fixed-shape cache, the logits processors at the *device*
cur_len, log-softmax, the search's step (beam top-k, the finished-hypotheses merge, the stop flag; or greedy
argmax) and the cache reorder, with no host read and no shape that changes from one step to the next. The
search's state tensors are written back in place, so every call reads and writes the same memory: a CUDA graph
captures one call and replays it (`WholeStepGraph`), and on any machine the very same function runs eagerly
(tests/test_whole_step.py checks it against generate and transformers on the CPU).

The host reads the stop flag only every few steps (sync_free.run_until_stopped); steps after the stop change
nothing, so the result does not depend on how often it reads.

Decisions:
  * Sampling (do_sample, one row per input or beams) draws as torch.multinomial does, from ops a graph can hold
    (draws.draw_on_device): its check of the probabilities becomes a device-side fault code read with the stop flag
    (SearchProgress.defer_draw_checks). The graph draws from a generator of its own, registered with it
    (CUDAGraph.register_generator_state: each replay draws at the generator's state then and advances it as the
    eager draws do), so a kept graph serves any caller's generator: decode_graphed starts it at the caller's state
    (None: the device's default generator, torch.multinomial's) and leaves the caller's where eager sampling would,
    the draws of steps replayed after the stop not counted. generate takes this path only with
    decoding.WHOLE_STEP_SAMPLING (off until a GPU run has checked it; else the decoder-only graph, drawing eagerly).
  * Up to KEEP graphs are kept per model (`KEPT`, weakly keyed by the model; the least recently used goes
    first) and reused by a later generate call with the same `whole_step_key` (shapes, settings, weights, stop
    strings' tables): that call's cross-attention keys/values, search state and input-dependent processor tensors
    are copied into the captured ones, and its decoder prompt (decoder_input_ids) fed to the cache. Other keys
    capture anew (a warm-up of two eager steps, then the capture). A kept graph's buffers hold one call's inputs
    and state, so generate uses a model's graphs (these and the model's decoder-only one) under its `graph_lock`,
    one call at a time, and copies its result out of them.
"""

from __future__ import annotations

import threading
import weakref
from typing import Callable, TypeVar

import torch

from .. import cuda_capture
from . import decoder_prompt
from .config import GenerationConfig
from .draws import default_generator
from .protocol import Cache, Seq2SeqModel, Step
from .search import SearchProgress
from .stop_strings import StopStrings
from .sync_free import run_until_stopped

T = TypeVar("T")
KEEP = 4                                                          # graphs kept per model
KEPT: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()     # model -> {key: WholeStepGraph}, oldest first
LOCKS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()    # model -> its graph_lock
MAKING_LOCKS = threading.Lock()


def graph_lock(model: Seq2SeqModel) -> threading.Lock:
    """The lock under which one generate call at a time uses the model's kept CUDA graphs."""
    with MAKING_LOCKS:
        return LOCKS.setdefault(model, threading.Lock())


def step_once(step: Step, cache: Cache, search: SearchProgress) -> None:
    """One whole step with no host read: the model's step on `cache` (a fixed-shape cache for a graph; any cache
    eagerly), the search's device-side step with the processors at the device cur_len, the cache reorder (beam
    search: every row, moved or not). The search's state tensors keep their memory (keeping_state)."""
    def one() -> None:
        parents = search.advance_on_device(step(search.tokens(), cache), device_length=True)   # logits [R, V]
        if parents is not None:
            cache.reorder(parents)

    keeping_state(search, one)


def keeping_state(search: SearchProgress, step: Callable[[], T]) -> T:
    """step() (a step of `search`) with the search's state tensors keeping their memory: the values a step puts in
    new tensors are copied into the old ones, so that every call reads and writes the same memory (what a CUDA
    graph's replays need). Returns step()'s result."""
    before = search.state()
    out = step()
    for old, new in zip(before, search.state()):
        if new is not old:
            old.copy_(new)
    search.load_state(before)
    return out


class WholeStepGraph:
    """step_once on (cache, search) captured in one CUDA graph; `replay()` runs one step. The graph owns the
    cache (a FixedShapeKVCache) and the search's tensors; `load` points it at a new generate call's inputs."""

    def __init__(self, step: Step, cache, search: SearchProgress, key: tuple, start: Callable[[], None]):
        """start(): empty the cache and feed it the call's decoder prompt, if any (decoder_prompt.prefill), before
        the capture's warm-up and again after it. A sampling search's generator is registered with the graph."""
        self.key, self.cache, self.search = key, cache, search
        saved = [t.clone() for t in search.state()]
        start()
        generators = () if search.generator is None else (search.generator,)
        self.step = cuda_capture.CapturedStep(lambda: step_once(step, cache, search), search.cur_len.device,
                                              generators=generators)
        self.outputs = {name: steps[-1] for name, steps in search.recorded.items()}   # the graph's [R, V] each
        for t, s in zip(search.state(), saved):         # undo the warm-up: the search starts at its first step
            t.copy_(s)
        search.restart()
        start()

    def replay(self) -> None:
        """One step (no host read); records the step's scores and logits when the search records them."""
        self.step()
        self.search.steps += 1
        for name, values in self.outputs.items():
            self.search.recorded[name].append(values.clone())        # the next replay overwrites the buffer

    def load(self, model: Seq2SeqModel, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
             search: SearchProgress, start: Callable[[], None]) -> None:
        """Start over on another call's inputs of the same key: its cross-attention keys/values, its decoder prompt
        (start(), as in __init__), and the fresh `search`'s state and processor tensors (the encoder n-gram windows
        depend on the input) copied into the captured ones."""
        model.project_cross_kv(self.cache, encoder_hidden, padding_mask)
        start()
        for old, new in zip(self.search.state(), search.state()):
            old.copy_(new)
        for old, new in zip(self.search.processors, search.processors):
            for name, value in vars(old).items():
                if isinstance(value, torch.Tensor):
                    value.copy_(getattr(new, name))
        self.search.restart()


def whole_step_key(model: Seq2SeqModel, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
                   cfg: GenerationConfig, input_shape: torch.Size, stops: StopStrings | None,
                   prompt: torch.Tensor | None) -> tuple:
    """What a captured whole step depends on: every shape (the decoder prompt's too), padding or none, dtype,
    device, the settings, the weights' addresses and the stop strings' tables (the object: other strings, or another
    tokenizer, capture anew; a kept graph's search holds its tables, so no other object takes their id while it is
    kept)."""
    return (tuple(encoder_hidden.shape), tuple(input_shape), padding_mask is None, encoder_hidden.dtype,
            str(encoder_hidden.device), repr(cfg), cuda_capture.weights_key(model), id(stops),
            None if prompt is None else tuple(prompt.shape))


def graphed_search(model: Seq2SeqModel, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
                   cfg: GenerationConfig, input_ids: torch.Tensor, rows_per_input: int, stops: StopStrings | None,
                   prompt: torch.Tensor | None,
                   new_search: Callable[[torch.Generator | None], SearchProgress]) -> WholeStepGraph:
    """The model's kept WholeStepGraph loaded with this call's inputs, or a new one captured for them.
    new_search(generator) builds this call's search (BeamSearch / SampleSearch) drawing from `generator` (a
    sampling graph's own, see the module's decisions), with `stops`' tables and `prompt` (decoder_prompt's [B, P],
    or None), which the graph's cache is fed."""
    key = whole_step_key(model, encoder_hidden, padding_mask, cfg, input_ids.shape, stops, prompt)
    kept = KEPT.setdefault(model, {})
    graph = kept.pop(key, None)
    def start(cache) -> None:                   # the graph's cache emptied, then fed the prompt but its last token
        cache.reset()
        if prompt is not None:
            decoder_prompt.prefill(model, cache, prompt, rows_per_input)

    def search(generator: torch.Generator | None = None) -> SearchProgress:
        made = new_search(generator)
        if cfg.do_sample:                       # no host read in a draw: its check read with the stop flag
            made.defer_draw_checks()
        return made

    if graph is not None:
        graph.load(model, encoder_hidden, padding_mask, search(), lambda: start(graph.cache))
    else:
        if len(kept) >= KEEP:                   # free the oldest graph and its cache before capturing a new one
            del kept[next(iter(kept))]
        cache = model.new_cache(encoder_hidden, padding_mask, rows_per_input, cfg.max_length - 1, fixed_shape=True)
        own = torch.Generator(encoder_hidden.device) if cfg.do_sample else None
        graph = WholeStepGraph(model.decode_step_unchecked, cache, search(own), key, lambda: start(cache))
    kept[key] = graph                           # the most recently used last
    return graph


def decode_graphed(graph: WholeStepGraph, check_every: int, generator: torch.Generator | None = None,
                   streamer=None, before_step: Callable[[], None] | None = None) -> SearchProgress:
    """Run the graph's search to its end, reading the stop flag every `check_every` replays; returns it. Sampling:
    the graph's own generator starts at `generator`'s state (None: the device's default generator), and that one
    is left where eager sampling leaves it, advanced by the steps before the stop only (a failed draw: as it was).
    streamer, before_step: sync_free.run_until_stopped's (check_every 1)."""
    search, own = graph.search, graph.search.generator
    if own is None:
        run_until_stopped(graph.replay, search, check_every, streamer, before_step)
        return search
    caller = generator if generator is not None else default_generator(own.device)
    own.set_state(caller.get_state())
    states = [own.get_state()]                  # after each replay (the host's copy: no device read)
    def replay() -> None:
        graph.replay()
        states.append(own.get_state())

    run_until_stopped(replay, search, check_every, streamer, before_step)
    caller.set_state(states[int(search.cur_len.max()) - search.prompt_len])
    return search
