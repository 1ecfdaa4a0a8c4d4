"""The HTTP API, as one FastAPI app built by `build_app(settings)` (uvicorn and Ray Serve run the same app).

    POST /summarize  {"inputs": "text" | ["text", ...], "parameters": {...}}  ->  [{"summary_text": "..."}, ...]
                     ("strategy": "map_reduce" for texts longer than the model's window, as pipe(strategy=...))
    POST /translate  {"inputs": ..., "parameters": {"src_lang": ..., "tgt_lang": ..., ...}}
                     ->  [{"translation_text": "..."}, ...]
                     (both take the Inference API's "options" too, without effect: schema.Options; and TGI's
                     "stream": true, one text's answer as server-sent events while it is generated: streaming.py)
    GET  /health     200 {"status": "ready"}; 503 while loading or draining
    GET  /info       model, commit, dtype, device, the routes served, languages, generation defaults, limits
    GET  /metrics    Prometheus text: requests by route and status, latency, the engine's queue depth, active rows
                     and decoder rows stepped (seq2seq_engine_generated_tokens: a beam-4 request adds 4 a step)
    GET  /docs       the OpenAPI page

The model's kind decides its route: a translation model (its tokenizer is Marian's, M2M100's, NLLB's or
mBART-50's) is served on /translate as pipeline("translation", model, src_lang=..., tgt_lang=...); any other
(BART, distilbart, KoBART, Pegasus, mBART) on /summarize as pipeline("summarization", model). Settings.task
(`serve --task`) overrides that for checkpoints whose files do not say: an mBART (cc25) model fine-tuned
to translate (mbart-large-en-ro) on /translate, its language parameters optional, a single-pair model with a
BART tokenizer on /translate without them, or a model with language codes fine-tuned to summarize on
/summarize. The other route answers 404 naming the one served: a
summarization checkpoint asked to translate (or the reverse) would give fluent nonsense, not an error.

A request's path: Gate (counted and timed; API key; body read up to max_body_bytes) -> FastAPI validates the
body against schema.py's SummarizeRequest / TranslateRequest (types strict, unknown fields refused) -> the
pipeline's stages: check_texts, preprocess (truncation), one engine request per input, postprocess. So each
input's answer is what the pipeline gives for it with those parameters. Every error is JSON {"error", "field"}:
422 bad type / unknown parameter / invalid setting / unknown language code, 413 body too large or input too long
with truncation false, 404 the route of the other kind of model, 503 + Retry-After engine queue full (or loading /
draining, or still running when a drain runs out), 504 past request_timeout from arrival, tokenization included
(408 if the body itself is not in by then), 401 without the API key. A client that disconnects, or times out,
cancels its engine requests (map_reduce's too): their rows are free at the next step; /metrics counts a request
whose client left (while sending its body or waiting for its answer) as status 499. A stream's 200 goes out once
its engine request is queued: what goes wrong after that (the request timeout, a drain running out, its search
failing) is its last event, {"error", "error_type"}, as Text Generation Inference sends it.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import ipaddress
import logging
import math
import os
import secrets
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager, contextmanager
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from starlette.exceptions import HTTPException
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from .. import hub
from ..engine import EngineClosed, EngineFull
from ..family_tokenizers import MARIAN_SOURCE, TranslationTokenizer
from ..generation import GenerationConfig, rows_per_input, rows_setting, settings as resolve_settings
from ..config import dtype_name
from ..loading import is_int8, resolve_dtype
from ..long_documents import DocumentError, StageError, SummariesTooLong, check_overlap, map_reduce, map_settings
from ..summarization import InputTooLong, SummarizationPipeline, load_model_and_tokenizer, shape_records
from ..translation import TranslationPipeline, translation_task
from .schema import (PARAMETERS, TASK_RESPONSES, SummarizeParameters, SummarizeRequest, Summary, TaskParameters,
                     TranslateParameters, TranslateRequest, Translation, describe_errors, parameter_named,
                     split_parameters)
from .streaming import Pieces, TokenQueue, events, finish, sse

logger = logging.getLogger("seq2seq_kit.server")

POLL_S = 0.05             # how often a waiting request checks whether its client is still there
ANSWER_MARGIN_S = 0.5     # draining: requests still running are refused this long before uvicorn cancels them
RETRY_AFTER_S = 1         # Retry-After of a 503
TASK_ROUTES = {"summarization": "/summarize", "translation": "/translate"}   # the pipeline's task -> its route
ROUTES = (*TASK_ROUTES.values(), "/health", "/info", "/metrics", "/docs", "/openapi.json")
OPEN_ROUTES = ("/health",)   # answered without the API key (load balancers' probes)


@dataclass(frozen=True)
class Settings:
    """What a server runs, fixed at start: the model (a Hub id or local path; no request can change it) and its
    limits. api_key: the bearer token every request but /health must carry (None: no key)."""
    model: str
    device: str | int | None = None
    dtype: str | None = None
    hub_kwargs: dict = field(default_factory=dict)      # revision, cache_dir, token
    max_rows: int = 32                                  # the engine's decoder rows per step
    max_queue: int = 256                                # engine requests waiting beyond which 503
    max_encoder_tokens: int | None = None               # source tokens encoded between two steps (None: the engine's)
    max_body_bytes: int = 1_000_000
    request_timeout: float = 120.0                      # seconds from arrival to answer, else 504
    drain_timeout: float = 60.0                         # seconds to finish accepted requests on shutdown
    api_key: str | None = field(default=None, repr=False)
    task: Literal["summarization", "translation"] | None = None   # None: by the model's kind (module docstring)

    def __post_init__(self):
        if self.task not in (None, *TASK_ROUTES):
            raise ValueError(f"task must be one of {', '.join(TASK_ROUTES)} (or None: by the model's kind), "
                             f"got {self.task!r}")
        if self.dtype not in (None, "auto") and not is_int8(self.dtype):
            resolve_dtype(self.dtype, None, None)   # a bad name fails here, not once the server has started


class Refusal(Exception):
    """An answer other than 200: its status, the body field at fault and what to do about it."""

    def __init__(self, status: int, field: str | None, message: str, headers: dict | None = None):
        super().__init__(message)
        self.status, self.field, self.message, self.headers = status, field, message, headers or {}

    def response(self) -> JSONResponse:
        return JSONResponse({"error": self.message, "field": self.field}, self.status, headers=self.headers)


def busy(what: str) -> Refusal:
    return Refusal(503, None, f"{what}; retry after {RETRY_AFTER_S} s", {"Retry-After": str(RETRY_AFTER_S)})


# ---------------------------------------------------------------------------------------------- the service

class Service:
    """What the routes share: the pipeline and its engine once loaded, the status, the metrics registry. task:
    the pipeline's ("summarization" or "translation"), known once loaded."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self.status = "loading"                  # -> "ready" -> "draining"; "failed" when the load raised
        self.status_lock = threading.Lock()      # a signal may mark it draining while the load's thread runs
        self.answer_by = math.inf                # draining: when requests still running get a 503 (monotonic)
        self.draining_since = math.inf           # when draining began (monotonic): requests from before are answered
        self.pipe = self.engine = self.task = None
        self.languages: list[str] = []           # a translation model's language codes; [] for a single pair
        self.marian = False                      # a multi-target Marian model: a target code, no source code
        self.commit: str | None = None
        self.registry = CollectorRegistry()     # this app's own: two apps in one process never mix counts
        self.requests = Counter("seq2seq_http_requests", "HTTP requests by route and status", ["route", "status"],
                                registry=self.registry)
        self.in_progress = Gauge("seq2seq_http_requests_in_progress", "HTTP requests being answered", ["route"],
                                 registry=self.registry)
        self.latency = Histogram("seq2seq_http_request_latency_seconds", "POST /summarize and /translate time, "
                                 "arrival to answer", ["route"], buckets=(.05, .1, .25, .5, 1, 2.5, 5, 10, 25, 60, 120),
                                 registry=self.registry)
        self.registry.register(EngineMetrics(self))
        # map_reduce requests wait for their engine requests in threads of their own (made with the engine): in
        # asyncio's default pool (min(32, cpus + 4) threads) a few of them took every thread tokenization runs on
        self.map_reduce_threads: ThreadPoolExecutor | None = None

    def load(self) -> None:
        """Load the pipeline of the model's kind and start its engine (blocking: run it off the event loop)."""
        s = self.settings
        try:
            root = hub.resolve(s.model, purpose="all", **s.hub_kwargs)
            model, tokenizer = load_model_and_tokenizer(str(root), None, s.device, s.dtype)
            coded = isinstance(tokenizer, TranslationTokenizer)
            # mBART (cc25) checkpoints are fine-tuned to translate or to summarize, and their files do not say which
            self.task = s.task or ("translation" if coded and tokenizer.kind != "MBartTokenizer" else "summarization")
            # the checkpoint's task_specific_params["translation_XX_to_YY"], as pipeline("translation") takes it
            translation = translation_task("translation", model.config)
            if self.task == "translation" and coded:
                self.languages = tokenizer.language_codes
                self.marian = tokenizer.kind == "MarianTokenizer"
                # any target will do here: every request sets its own (check_languages, then for_languages)
                first = self.languages[0] if tokenizer.target_required else None
                pipe = TranslationPipeline(model, tokenizer, tgt_lang=first, task=translation)
            elif self.task == "translation":        # one language pair, no codes: a BART
                pipe = TranslationPipeline(model, tokenizer, task=translation)
            else:
                pipe = SummarizationPipeline(model, tokenizer)
            self.pipe, self.engine = pipe, pipe.engine(max_rows=s.max_rows, max_queue=s.max_queue,
                                                          max_encoder_tokens=s.max_encoder_tokens)
            self.map_reduce_threads = ThreadPoolExecutor(s.max_queue, thread_name_prefix="map-reduce")
        except BaseException:
            self.status = "failed"
            raise
        local = os.path.isdir(os.path.expanduser(str(s.model)))   # no commit, whatever its parent folder's name
        self.commit = root.name if not local and root.parent.name == "snapshots" else None   # a Hub snapshot
        with self.status_lock:
            stopped = self.status == "draining"
            if not stopped:
                self.status = "ready"
        if stopped:                                  # SIGTERM came during the load: serve nothing
            self.engine.close()
            return
        logger.info("serving %s (%s, POST %s) on %s (%s)", s.model, self.task, TASK_ROUTES[self.task], pipe.device,
                    computed_dtype(pipe.model))

    def stop_accepting(self, grace_s: float = 0.0) -> None:
        """From now on /health and new requests answer 503 (a load still running then closes its engine at once); the
        requests accepted are answered by the end of grace_s + drain_timeout, a 503 for those still running then
        (uvicorn would cancel them: a plain-text 500)."""
        with self.status_lock:
            self.status = "draining"
            self.draining_since = min(self.draining_since, time.monotonic())
            if self.answer_by == math.inf:
                self.answer_by = time.monotonic() + grace_s + self.settings.drain_timeout - ANSWER_MARGIN_S

    def stop_answering(self) -> None:
        """Refuse new requests, and answer those still running 503 now (in_time), which cancels them in the engine
        (a second Ctrl-C)."""
        with self.status_lock:
            self.status = "draining"
            self.answer_by = time.monotonic()
            self.draining_since = min(self.draining_since, self.answer_by)

    def drain(self) -> None:
        """Refuse new requests; finish the engine's accepted ones (blocking, up to drain_timeout)."""
        self.stop_accepting()
        if self.engine is not None:
            self.engine.close(timeout=self.settings.drain_timeout)
        if self.map_reduce_threads is not None:           # their engine requests are finished or cancelled by now
            self.map_reduce_threads.shutdown(wait=False)

    def info(self) -> dict:
        s, pipe = self.settings, self.pipe
        route = TASK_ROUTES.get(self.task)
        defaults = pipe.default_settings() \
            if pipe and pipe.model.generation_config is not None else None
        if defaults is not None and self.task == "translation":
            defaults.pop("forced_bos_token_id", None)     # each request's tgt_lang sets it
        if defaults is not None and defaults.get("watermarking_config") is not None:    # the key is the operator's
            defaults["watermarking_config"] = {**defaults["watermarking_config"], "hashing_key": "(hidden)"}
        return {
            "model": s.model, "revision": s.hub_kwargs.get("revision"), "commit": self.commit, "status": self.status,
            "task": self.task, "routes": [r for r in ROUTES if r not in TASK_ROUTES.values() or r == route],
            "dtype": computed_dtype(pipe.model) if pipe else None,
            "device": str(pipe.device) if pipe else None,
            "generation_defaults": defaults,
            "limits": {"max_input_tokens": pipe.max_input_length if pipe else None, "max_rows": s.max_rows,
                       "max_queue": s.max_queue, "max_body_bytes": s.max_body_bytes,
                       "max_encoder_tokens": self.engine.max_encoder_tokens if self.engine is not None else None,
                       "request_timeout_s": s.request_timeout},
            "parameters": list(PARAMETERS[route].model_fields) if route else None,
            **({"languages": self.languages} if self.task == "translation" else {}),
        }

    def serving(self, task: str, arrival: float):
        """The pipeline of `task` for a request that arrived at `arrival` (time.monotonic()), when this server is
        ready, or draining since after the request arrived (accepted: its body was still coming in); else Refusal
        503. Refusal 404 naming the route served for the other task: the Gate let it through while the model's kind
        was unknown (the load's thread may end between the Gate's check and this one)."""
        accepted = self.status == "draining" and arrival < self.draining_since and self.pipe is not None
        if self.status != "ready" and not accepted:
            raise busy(f"the server is {self.status}")
        if self.task != task:
            raise self.unserved(TASK_ROUTES[task])
        return self.pipe

    def unserved(self, path: str) -> Refusal | None:
        """Refusal 404 naming the route served when `path` is the other kind of model's task route."""
        path = path.rstrip("/") or path                 # /translate/ is the other route too, not a typo of this one
        if self.task is None or path not in TASK_ROUTES.values() or path == TASK_ROUTES[self.task]:
            return None
        return Refusal(404, None, f"this server's model is a {self.task} model: it answers POST "
                                  f"{TASK_ROUTES[self.task]}, not POST {path}")

    async def summarize(self, body: SummarizeRequest, http: Request) -> list:
        """The summarization pipeline's answer for body, each input on the engine; raises Refusal."""
        pipe, parameters = self.serving("summarization", http.state.arrival), body.parameters or SummarizeParameters()
        kwargs, truncation, clean_up = split_parameters(parameters)
        check_details(parameters, body.stream)
        texts = checked_texts(pipe, body.inputs)
        given = [n for n in ("map_parameters", "chunk_overlap", "return_chunks") if getattr(parameters, n)]
        if parameters.strategy != "map_reduce" and given:      # as pipe(...) refuses them (check_strategy)
            raise Refusal(422, f"parameters.{given[0]}", f"{given[0]} applies to strategy map_reduce only; send "
                                                         '"strategy": "map_reduce" or leave it out')
        if parameters.strategy == "map_reduce":
            if body.stream:
                raise Refusal(422, "stream", "map_reduce's summary is written from its chunks' summaries, once they "
                                             'are all done: it does not stream; leave "stream" out')
            records = await self.map_reduce(texts, parameters, kwargs, clean_up, http)
            return records if isinstance(body.inputs, list) else records[:1]
        rows = await rows_of(pipe, texts, truncation, http, self)
        return await self.generate(body.inputs, rows, kwargs, clean_up, http, body.stream, parameters.details)

    async def translate(self, body: TranslateRequest, http: Request) -> list:
        """The translation pipeline's answer for body (its languages this request's), each input on the engine;
        raises Refusal."""
        pipe, parameters = self.serving("translation", http.state.arrival), body.parameters or TranslateParameters()
        kwargs, truncation, clean_up = split_parameters(parameters)
        check_details(parameters, body.stream)
        texts = checked_texts(pipe, body.inputs)
        call = pipe.for_languages(*self.check_languages(parameters))          # this request's languages only
        rows = await rows_of(call, texts, truncation, http, self)
        if "forced_bos_token_id" in call.generate_defaults:        # M2M100, NLLB, mBART(-50): the target language
            kwargs["forced_bos_token_id"] = call.generate_defaults["forced_bos_token_id"]
        return await self.generate(body.inputs, rows, kwargs, clean_up, http, body.stream, parameters.details)

    def check_languages(self, p: TranslateParameters) -> tuple[str | None, str | None]:
        """(src_lang, tgt_lang) of a request; Refusal 422 naming parameters.src_lang / tgt_lang with the codes' form.
        A model with source codes needs src_lang (as pipeline("translation"): never assumed to be English); a
        Marian model has no source code (src_lang refused, as by pipeline("translation"))."""
        if not self.languages:
            sent = next((n for n in ("src_lang", "tgt_lang") if getattr(p, n) is not None), None)
            if sent is not None:
                raise Refusal(422, f"parameters.{sent}", "this model translates one language pair and has no "
                                                         "language codes: leave src_lang and tgt_lang out")
            return None, None
        if p.tgt_lang is None and self.pipe.tokenizer.target_required:
            some = ", ".join(self.languages[:8])
            raise Refusal(422, "parameters.tgt_lang", f"required: this model translates into several languages; "
                                                      f"send one of {some}, ... (GET /info lists them all)")
        marian = self.marian
        if marian and p.src_lang is not None:
            raise Refusal(422, "parameters.src_lang", f"{MARIAN_SOURCE}: leave src_lang out")
        for name in ("tgt_lang",) if marian else ("src_lang", "tgt_lang"):
            code = getattr(p, name)
            if code is not None:
                try:
                    self.pipe.tokenizer.get_lang_id(code)
                except ValueError as e:
                    raise Refusal(422, f"parameters.{name}", f"{e}; GET /info lists them all") from None
        if not marian and p.src_lang is None:
            raise Refusal(422, "parameters.src_lang", f"required: the language of the inputs, one of "
                                                      f"{', '.join(self.languages[:8])}, ... (GET /info lists them all)")
        return p.src_lang, p.tgt_lang

    async def generate(self, inputs: str | list[str], rows: list[list[int]], kwargs: dict, clean_up: bool | None,
                       http: Request, stream: bool = False, details: bool = False) -> list | StreamingResponse:
        """The pipeline's records for rows (one engine request each), shaped as pipe(inputs) shapes them; with
        stream, the one input's answer as it is generated (streaming.py; details: its last event's). They are
        submitted from a worker thread: resolving long settings (a sequence_bias of 40,000 entries: 0.4 s, a new set
        of stop_strings' tables: up to 0.2 s) on the event loop would stall every other request, /health too."""
        tokens = self.streamable(inputs, kwargs) if stream else None
        requests = await asyncio.to_thread(self.submit, rows, kwargs, tokens)
        if stream:
            described = functools.partial(finish, input_length=len(rows[0]), seed=kwargs.get("seed")) \
                if details else None
            return self.stream(requests[0], tokens, clean_up, http, described)
        ids = await outputs_of(requests, http, self, sent=kwargs)
        return shape_records(inputs, [self.records(out, clean_up) for out in ids])

    def records(self, out: torch.Tensor, clean_up: bool | None) -> list[dict]:
        """The pipeline's records of one input's output LongTensor [n, T]."""
        return self.pipe.postprocess(out[None], clean_up_tokenization_spaces=clean_up)[0]

    def resolved(self, kwargs: dict) -> GenerationConfig:
        """kwargs (a request's parameters, its seed aside) over the pipeline's task defaults, resolved as the engine
        resolves a request's (ValueError)."""
        kwargs = {k: v for k, v in kwargs.items() if k != "seed"}
        return resolve_settings(self.pipe.model, {**self.pipe.generate_defaults, **kwargs})

    def seeded(self, kwargs: dict | None) -> dict | None:
        """A stage's kwargs for the library: its seed as generate's generator, on the model's device."""
        if not kwargs or "seed" not in kwargs:
            return kwargs
        seed, kwargs = kwargs["seed"], {k: v for k, v in kwargs.items() if k != "seed"}
        return kwargs if seed is None else {**kwargs, "generator": torch.Generator(self.pipe.device).manual_seed(seed)}

    def streamable(self, inputs: str | list[str], kwargs: dict) -> TokenQueue:
        """The streamer of a request that may stream: one text, one token chosen per step (greedy or sampling),
        one answer; else Refusal 422 naming the field. A checkpoint's own num_beams > 1 gives way to 1 (kwargs gets
        it): the only search that streams, and TGI clients (huggingface_hub's text_generation) have no num_beams to
        send. A sampled stream sent without a seed gets one drawn here (kwargs gets it), which its details report
        as TGI's do: sent back, it draws the same tokens. Settings that fail otherwise are left to submit's
        refusal."""
        if not isinstance(inputs, str):
            raise Refusal(422, "inputs", 'a stream answers one text: send "inputs" as a string, or leave "stream" out '
                                         "to send a list")
        kwargs.setdefault("num_beams", 1)
        try:
            config = self.resolved(kwargs)
        except ValueError:                        # submit refuses them, naming the parameter
            return TokenQueue(asyncio.get_running_loop())
        if config.num_beams > 1:
            raise Refusal(422, "parameters.num_beams", f"beam search ({config.num_beams} beams) chooses its tokens "
                                                       'only when it ends: send "num_beams": 1 (or leave it out) to '
                                                       "stream")
        if config.num_return_sequences > 1:
            raise Refusal(422, "parameters.num_return_sequences", "a stream sends one answer: send "
                                                                  '"num_return_sequences": 1 or leave "stream" out')
        if config.do_sample and kwargs.get("seed") is None:
            kwargs["seed"] = secrets.randbits(64)           # the range a seed is sent in, [0, 2**64)
        return TokenQueue(asyncio.get_running_loop())

    def stream(self, request, tokens: TokenQueue, clean_up: bool | None, http: Request,
               described: Callable | None) -> StreamingResponse:
        """request's answer as server-sent events (streaming.py), its last event's details described(config, ids,
        prompt_len, stopped: whether it ends in a stop string) when asked for. Past the request timeout or the
        drain's end, or when its search fails on its settings, a last error event (TGI's error_type); however the
        stream ends (the client leaving included: Starlette then cancels the events' generator), the request is
        cancelled in the engine."""
        late = Refusal(504, None, f"the answer was not complete within the server's request timeout "
                                  f"({self.settings.request_timeout:g} s); send a shorter input or a lower max_length")
        special = set(self.pipe.tokenizer.all_special_ids)

        def wait(work):
            return in_time(work, self, http.state.arrival, late)

        def answer() -> tuple[str, dict | None]:
            out = request.result(0)                                         # [1, T]
            ids = out[0].tolist()
            text = self.pipe.text(ids, clean_up)
            if described is None:
                return text, None
            stops, device = request.stop_strings, self.pipe.device          # the tables its search stopped by
            stopped = stops is not None and bool(stops.ended(out.to(device), torch.tensor([[len(ids) - 1]],
                                                                                           device=device)))
            return text, described(request.config, ids, request.prompt_len, stopped)

        async def lines():
            pieces = Pieces(lambda ids: self.pipe.text(ids, clean_up))
            try:
                async for event in events(tokens, pieces, special, wait, answer):
                    yield sse(event)
            except Refusal as e:                   # the request timeout (504), the drain's end (503)
                kind = "overloaded" if e.status == 503 else "incomplete_generation"
                yield sse({"error": e.message, "error_type": kind})
            except ValueError as e:                # the search failed on the request's settings (outputs_of's 422)
                yield sse({"error": str(e), "error_type": "generation"})
            except Exception as e:                 # the 200 is sent: an error event, not the handlers' 500
                logger.exception("stream failed")
                yield sse({"error": f"internal error: {type(e).__name__}: {e}", "error_type": "generation"})
            finally:
                request.cancel()

        return StreamingResponse(lines(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})

    async def map_reduce(self, texts: list[str], parameters: SummarizeParameters, kwargs: dict,
                         clean_up: bool | None, http: Request) -> list:
        """pipe(texts, strategy="map_reduce", ...) on the engine, in a worker thread; raises Refusal. Past the
        request timeout or once the client is gone, its engine requests are cancelled (long_documents' cancel)."""
        map_kwargs = parameters.map_parameters.model_dump(exclude_unset=True) if parameters.map_parameters else None
        self.check_map_reduce(parameters, kwargs, map_kwargs)
        cancel = threading.Event()
        run = functools.partial(map_reduce, self.pipe, texts, engine=self.engine, map_kwargs=self.seeded(map_kwargs),
                                chunk_overlap=parameters.chunk_overlap, return_chunks=parameters.return_chunks,
                                clean_up_tokenization_spaces=clean_up, cancel=cancel, **self.seeded(kwargs))
        work = unlogged(asyncio.get_running_loop().run_in_executor(self.map_reduce_threads, run))
        try:
            return await answer_of(work, http, self)
        except DocumentError as e:
            raise document_refusal(e) from None
        except StageError as e:                 # a request failed as it ran: the field its stage took from the body
            refusal = self.refusal(e.error, map_settings(kwargs, map_kwargs) if e.stage == "map" else kwargs)
            name = (refusal.field or "").removeprefix("parameters.")
            if e.stage == "map" and name in (map_kwargs or {}):
                refusal.field = f"parameters.map_parameters.{name}"
            raise refusal from None
        except (EngineFull, EngineClosed, TypeError, ValueError) as e:
            raise self.refusal(e, kwargs) from None
        finally:
            cancel.set()

    def check_map_reduce(self, parameters: SummarizeParameters, kwargs: dict, map_kwargs: dict | None) -> None:
        """Refusal 422 naming the field for map-reduce settings the library would refuse: each stage's settings (the
        reduce stage's are the parameters, the map stage's those under map_parameters over them), num_return_sequences
        other than 1, a chunk_overlap no chunk can carry."""
        stages = (("parameters", kwargs, kwargs), ("parameters.map_parameters", map_kwargs or {},
                                                   map_settings(kwargs, map_kwargs)))
        for where, given, merged in stages:  # each stage checked here, so that a refusal names the stage's field
            try:
                config = self.resolved(merged)
            except ValueError as e:
                message = str(e).replace("generate() got", f"{where} has")
                raise Refusal(422, where + parameter_named(message, given).removeprefix("parameters"),
                              message) from None
            if rows_per_input(config) > self.settings.max_rows:      # the engine's refusal, named per stage
                name = rows_setting(config)
                raise Refusal(422, f"{where}.{name}", f"these settings need {rows_per_input(config)} decoder rows "
                                   f"(num_beams / num_return_sequences) but this server has --max-rows "
                                   f"{self.settings.max_rows}; send a smaller {where}.{name}")
            if config.num_return_sequences != 1:
                raise Refusal(422, f"{where}.num_return_sequences", f"num_return_sequences="
                                   f"{config.num_return_sequences}: map-reduce writes one summary per chunk and per "
                                   "document; send 1 or leave it out")
        try:
            check_overlap(self.pipe, parameters.chunk_overlap)
        except ValueError as e:
            raise Refusal(422, "parameters.chunk_overlap", str(e)) from None

    def submit(self, rows: list[list[int]], kwargs: dict, streamer: TokenQueue | None = None) -> list:
        """One engine request per row (streamer: the one row's), the settings resolved once (engine.submit_all);
        all or none. More inputs than the queue holds could never all wait at once: 413, not a 503 to retry
        forever."""
        if len(rows) > self.settings.max_queue:
            raise Refusal(413, "inputs", f"{len(rows)} inputs in one request, more than this server queues "
                                         f"(--max-queue {self.settings.max_queue}); send them in smaller requests")
        settings = self.seeded(kwargs)          # each request draws from a copy of the generator's state
        try:
            if streamer is not None:
                return [self.engine.submit(rows[0], streamer=streamer, **settings)]
            return self.engine.submit_all(rows, **settings)
        except (EngineFull, EngineClosed, TypeError, ValueError) as e:
            raise self.refusal(e, kwargs) from None

    def refusal(self, e: EngineFull | EngineClosed | TypeError | ValueError, sent: dict) -> Refusal:
        """The answer to the engine refusing a request: 503 (queue full, draining) or 422 naming the parameter
        (one of those `sent` where the message names several)."""
        if isinstance(e, EngineFull):
            return busy(f"the engine's queue is full ({self.settings.max_queue} waiting inputs)")
        if isinstance(e, EngineClosed):
            return busy("the server is draining")
        message = str(e).replace("generate() got", "parameters has")
        return Refusal(422, parameter_named(message, sent), message)


def computed_dtype(model) -> str:
    """What the model computes in: "int8" for an int8 one (its model.dtype is its float parts'), else "float32"..."""
    return "int8" if model.quantized else dtype_name(model.dtype)


def document_refusal(e: DocumentError) -> Refusal:
    """The answer to map_reduce failing on one input: 422 naming the input, or the chunks' max_length when their
    summaries stayed too long (a server has no max_depth to raise)."""
    if isinstance(e.error, SummariesTooLong):
        return Refusal(422, "parameters.map_parameters.max_length", f"input {e.index}: {e.error.what}; send a "
                                                                     "smaller parameters.map_parameters.max_length")
    return Refusal(422, "inputs", str(e))


@contextmanager
def fields_as_sent(p: TaskParameters | None):
    """A Refusal raised inside names parameters.generate_parameters.X instead of parameters.X where the client sent X
    only under generate_parameters (the newer API's form; a flat X is the one in effect when both are sent)."""
    try:
        yield
    except Refusal as refusal:
        name = (refusal.field or "").removeprefix("parameters.")
        nested = p.generate_parameters.model_fields_set if p is not None and p.generate_parameters else set()
        if name in nested and name not in p.model_fields_set:
            refusal.field = f"parameters.generate_parameters.{name}"
        raise


def check_details(p: TaskParameters, stream: bool) -> None:
    """Refusal 422: details describe a stream's last event (TGI's), and a plain answer has no place for them."""
    if p.details and not stream:
        raise Refusal(422, "parameters.details", 'details describe a stream\'s end: send "stream": true as well, '
                                                 "or leave details out")


def checked_texts(pipe, inputs: str | list[str]) -> list[str]:
    """pipe.check_texts(inputs) (the types are checked already: this finds empty texts); Refusal 422."""
    try:
        return pipe.check_texts(inputs)
    except ValueError as e:
        raise Refusal(422, "inputs", str(e)) from None


async def rows_of(pipe, texts: list[str], truncation: bool, http: Request, service: Service) -> list[list[int]]:
    """pipe.preprocess(texts, truncation).rows, in a worker thread (a body's megabyte of text takes seconds to
    tokenize: the server answers others meanwhile), within the request's time (answer_of: 504 past the request
    timeout from arrival, 499 once the client is gone; the thread's rows then come to nothing, and no engine
    request is made); Refusal 413 for a text over the window without truncation, 422 for a text the tokenizer
    refuses (a lone surrogate)."""
    work = unlogged(asyncio.ensure_future(asyncio.to_thread(pipe.preprocess, texts, truncation)))
    try:
        return (await answer_of(work, http, service)).rows
    except InputTooLong as e:
        raise Refusal(413, "inputs", str(e).replace("pass truncation=True",
                                                     'send "parameters": {"truncation": true}')) from None
    except ValueError as e:
        raise Refusal(422, "inputs", str(e)) from None


async def outputs_of(requests: list, http: Request, service: Service, sent=()) -> list:
    """The requests' outputs, each LongTensor [n, T] (answer_of their futures); whatever ends the wait (the
    answer, a refusal, an error, a cancellation) cancels the requests not done in the engine. A ValueError from
    the engine is the request's own settings failing its search (a temperature that overflows every probability,
    as generate fails on it): 422 naming the parameter, of those it names the first the client `sent`."""
    together = unlogged(asyncio.gather(*(asyncio.wrap_future(r.future) for r in requests)))
    try:
        return await answer_of(together, http, service)
    except ValueError as e:
        raise Refusal(422, parameter_named(str(e), sent), str(e)) from None
    finally:                                            # (answer_of cancels `together` itself)
        for r in requests:
            r.cancel()


def unlogged(future: asyncio.Future) -> asyncio.Future:
    """future, whose end asyncio does not log as "exception was never retrieved" when answer_of stops waiting for
    it (a refusal, a timeout, a client gone): the route answers for it."""
    future.add_done_callback(lambda f: f.cancelled() or f.exception())
    return future


async def answer_of(work: asyncio.Future, http: Request, service: Service):
    """work's result. Refusal 504 once the request timeout has passed since the request arrived, 503 once a drain
    runs out, 499 once the client is gone (the caller then cancels the work)."""
    timeout = service.settings.request_timeout
    late = Refusal(504, None, f"no answer within the server's request timeout ({timeout:g} s); send fewer or "
                              "shorter inputs, or lower max_length / num_beams")
    return await in_time(work, service, http.state.arrival, late, http)


async def in_time(work, service: Service, arrival: float, late: Refusal, http: Request | None = None):
    """work's result (an awaitable), waited for until `arrival` (time.monotonic()) + the request timeout, else
    Refusal `late`; until the drain's end (Service.answer_by), else 503; while http's client is there, else 499.
    The wait ending early cancels work."""
    work, deadline = asyncio.ensure_future(work), arrival + service.settings.request_timeout
    try:
        while True:
            now = time.monotonic()
            if now >= service.answer_by:
                raise busy("the server shut down (its drain timeout ran out, or a second Ctrl-C stopped it) before "
                           "this request was answered")
            if now >= deadline:
                raise late
            done, _ = await asyncio.wait([work], timeout=min(POLL_S, deadline - now, service.answer_by - now))
            if done:
                return work.result()
            if http is not None and await http.is_disconnected():
                raise Refusal(499, None, "the client disconnected")
    finally:
        work.cancel()


class EngineMetrics:
    """A prometheus_client collector: the engine's gauges, read at scrape time."""

    def __init__(self, service: Service):
        self.service = service

    def collect(self):
        engine = self.service.engine
        yield GaugeMetricFamily("seq2seq_engine_queue_depth", "inputs waiting for decoder rows",
                                value=engine.queue_depth if engine else 0)
        yield GaugeMetricFamily("seq2seq_engine_active_rows", "decoder rows of the running inputs",
                                value=engine.active_rows if engine else 0)
        yield CounterMetricFamily("seq2seq_engine_generated_tokens", "decoder rows stepped, all inputs",
                                  value=engine.generated_tokens if engine else 0)


# ---------------------------------------------------------------------------------------------- the gate

class Gate:
    """ASGI middleware every HTTP request passes: counted and timed for /metrics, its API key checked (401), its
    body read up to max_body_bytes (413 by Content-Length or by the bytes actually sent) and replayed to the app;
    the app's later receive() calls reach the client's connection (so a disconnect is seen)."""

    def __init__(self, app, service: Service):
        self.app, self.service = app, service
        key = service.settings.api_key
        # the key's bytes as the environment held them (os.fsencode): a byte that is not UTF-8 is a surrogate
        self.expected = None if key is None else key.encode("utf-8", "surrogateescape")

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        route = scope["path"] if scope["path"] in ROUTES else "other"
        status, start = ["500"], time.perf_counter()

        async def send_counted(message):
            if message["type"] == "http.response.start":
                status[0] = str(message["status"])
            await send(message)

        try:
            with self.service.in_progress.labels(route).track_inprogress():
                await self.guarded(scope, receive, send_counted)
        finally:
            self.service.requests.labels(route, status[0]).inc()
            if route in TASK_ROUTES.values():
                self.service.latency.labels(route).observe(time.perf_counter() - start)

    async def guarded(self, scope, receive, send):
        if self.expected is not None and scope["path"] not in OPEN_ROUTES and not self.authorized(scope):
            refusal = Refusal(401, "Authorization", "send the API key as the header 'Authorization: Bearer <key>'",
                              {"WWW-Authenticate": "Bearer"})
            return await refusal.response()(scope, receive, send)
        if (refusal := self.service.unserved(scope["path"])) is not None:    # before the body is read or checked
            return await refusal.response()(scope, receive, send)
        limit, arrival = self.service.settings.max_body_bytes, time.monotonic()
        scope.setdefault("state", {})["arrival"] = arrival        # request.state.arrival: answer_of's clock
        try:
            body = await read_body(scope, receive, limit, self.service, arrival)
        except Refusal as refusal:
            return await refusal.response()(scope, receive, send)
        if body is None:   # the client left while sending: counted as one that left while waiting (499)
            return await Refusal(499, None, "the client disconnected").response()(scope, receive, send)
        # the model's kind became known while the body came in (the load ended): the other route's 404, not a 422
        if (refusal := self.service.unserved(scope["path"])) is not None:
            return await refusal.response()(scope, receive, send)
        replayed = False

        async def replay():
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(head_as_get(scope), replay, send)

    def authorized(self, scope) -> bool:
        """'Authorization: Bearer <key>', the scheme's case free (RFC 9110), the key compared in constant time."""
        scheme, _, given = dict(scope["headers"]).get(b"authorization", b"").partition(b" ")
        return scheme.lower() == b"bearer" and hmac.compare_digest(given, self.expected)


def head_as_get(scope) -> dict:
    """The scope the app sees: HEAD on any route but a task route's as GET (FastAPI's routes take GET alone, so a
    monitor's HEAD /health got 405; RFC 9110 9.1: a server supports HEAD wherever GET). uvicorn, reading its own
    scope's HEAD, sends the headers only."""
    if scope["method"] != "HEAD" or scope["path"] in TASK_ROUTES.values():
        return scope
    return {**scope, "method": "GET"}


async def read_body(scope, receive, limit: int, service: Service, arrival: float) -> bytes | None:
    """The request body, at most `limit` bytes (else Refusal 413), within the request timeout (else 408); None
    when the client disconnected."""
    length = dict(scope["headers"]).get(b"content-length")
    too_large = Refusal(413, "body", f"the body is over the server's limit of {limit} bytes; send fewer or shorter "
                                     "inputs, or start the server with a larger --max-body-bytes")
    if length is not None and length.isdigit() and int(length) > limit:
        raise too_large
    slow = Refusal(408, "body", f"the body did not arrive within the server's request timeout "
                                f"({service.settings.request_timeout:g} s)")
    chunks, size = [], 0
    while True:
        message = await in_time(receive(), service, arrival, slow)
        if message["type"] == "http.disconnect":
            return None
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise too_large
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


# ---------------------------------------------------------------------------------------------- the app

def warn_if_exposed(settings: Settings, host: str) -> None:
    """A warning when the server listens where other machines reach it (host not a loopback address) with no API
    key (both the single-process server and the Ray Serve proxy)."""
    if settings.api_key is None and not loopback(host):
        logger.warning("listening on %s without an API key: anyone who can reach it can use it "
                       "(see --api-key-env)", host)


def loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def build_app(settings: Settings, *, load_in_background: bool = True) -> FastAPI:
    """The server's FastAPI app. Its lifespan loads the model (in the background by default, so /health answers
    503 meanwhile; load_in_background=False: before the app takes requests, as a Ray Serve replica must) and,
    at shutdown, drains the engine."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        loading = asyncio.create_task(asyncio.to_thread(service.load))
        app.state.loading = loading
        if not load_in_background:
            await loading
        yield
        if not loading.done():
            loading.cancel()
        await asyncio.to_thread(service.drain)

    # redirect_slashes=False: POST /summarize/ is a JSON 404 naming /summarize (routing), not Starlette's bare 307
    app = FastAPI(title="seq2seq-kit", lifespan=lifespan, redirect_slashes=False,
                  description="Summarization or translation over HTTP (the Hugging Face Inference API's shapes) on "
                              "seq2seq_kit's continuous-batching engine. A server answers one of POST /summarize "
                              "and POST /translate, by its model's kind (GET /info says which).")
    app.state.service = service
    app.openapi = lambda: served_schema(FastAPI.openapi(app), service.task)
    _add_routes(app, service)
    _add_error_handlers(app)
    app.add_middleware(Gate, service=service)
    return app


def served_schema(schema: dict, task: str | None) -> dict:
    """The OpenAPI schema without the other kind of model's task route, once the model's kind is known."""
    if task is None:
        return schema
    unserved = [route for route in TASK_ROUTES.values() if route != TASK_ROUTES[task]]
    return {**schema, "paths": {path: v for path, v in schema["paths"].items() if path not in unserved}}


def _add_routes(app: FastAPI, service: Service) -> None:
    @app.post("/summarize", response_model=list[Summary] | list[list[Summary]], responses=TASK_RESPONSES,
              summary="Summarize a text or a list of texts")
    async def summarize(body: SummarizeRequest, request: Request):
        with fields_as_sent(body.parameters):
            return answered(await service.summarize(body, request))

    @app.post("/translate", response_model=list[Translation] | list[list[Translation]], responses=TASK_RESPONSES,
              summary="Translate a text or a list of texts (a translation model's server)")
    async def translate(body: TranslateRequest, request: Request):
        with fields_as_sent(body.parameters):
            return answered(await service.translate(body, request))

    @app.get("/health", summary="200 when the model is loaded and the engine runs; 503 while loading or draining")
    async def health():
        code = 200 if service.status == "ready" else 503
        return JSONResponse({"status": service.status}, code, headers={} if code == 200 else
                            {"Retry-After": str(RETRY_AFTER_S)})

    @app.get("/info", summary="The model, its commit, dtype, device, routes, languages, generation defaults and "
                              "the server's limits")
    async def info():
        return service.info()

    @app.get("/metrics", summary="Prometheus metrics")
    async def metrics():
        return Response(generate_latest(service.registry), media_type=CONTENT_TYPE_LATEST)


def answered(answer: list | StreamingResponse) -> Response:
    return answer if isinstance(answer, StreamingResponse) else JSONResponse(answer)


def slash_hint(request: Request) -> str:
    """For a route sent with a trailing slash (/summarize/): the route as it is served (one path per route), with
    the method it takes (GET /summarize/ is told to send POST /summarize, which answers, not GET, a 405)."""
    path = request.url.path
    route = path.rstrip("/")
    if path == route or route not in ROUTES:
        return ""
    method = "POST" if route in TASK_ROUTES.values() else "GET"
    return f" (this server's routes end without a slash: send {method} {route})"


def _add_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(Refusal)
    async def refused(request: Request, e: Refusal):
        return e.response()

    @app.exception_handler(HTTPException)
    async def routing(request: Request, e: HTTPException):        # 404 no such route, 405 wrong method
        if e.status_code == 400 and e.__cause__ is not None:
            # FastAPI's answer to a body json.loads failed on other than by its syntax: digits past Python's limit,
            # nesting too deep, bytes that are not UTF-8
            why = f"{type(e.__cause__).__name__}: {str(e.__cause__)[:120]}"
            return JSONResponse({"error": f"body: not valid JSON ({why})", "field": "body"}, 422)
        return JSONResponse({"error": f"{e.detail}: {request.method} {request.url.path}{slash_hint(request)}",
                             "field": None}, e.status_code, headers=e.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(request: Request, e: RequestValidationError):
        parameters = PARAMETERS.get(request.url.path, SummarizeParameters)
        problems = describe_errors(e.errors(), tuple(parameters.model_fields))
        first = next(iter(problems))
        return JSONResponse({"error": problems[first], "field": first, "errors": problems}, 422)

    @app.exception_handler(Exception)
    async def failed(request: Request, e: Exception):
        logger.exception("request failed")
        return JSONResponse({"error": f"internal error: {type(e).__name__}: {e}", "field": None}, 500)
