"""`pipeline("summarization")`, which transformers 5 removed, with the outputs transformers 4.x gave.

    pipe = pipeline("summarization", "sshleifer/distilbart-cnn-12-6", device=0)
    pipe(text)   # [{'summary_text': ' During the 1905–06 ...'}]

The 4.x recipe, reproduced: the checkpoint's `task_specific_params["summarization"]` become the generation
defaults; each text is tokenized on its own after the config's `prefix` (no padding); `model.generate`;
`decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)`. With `batch_size=N` the texts
are right-padded (the tokenizer's padding side) and generated N at a time, as 4.x's pad collate did.
Where 4.x crashed (an input longer than the position table), the input is truncated with a warning;
`pipe(text, strategy="map_reduce")` summarizes it from its chunks instead (seq2seq_kit.long_documents).

The pipeline owns that recipe, as public stages (`check_texts`, `preprocess`, `generate_ids`, `postprocess`;
see SummarizationPipeline) that every front end composes: `pipe(...)`, the corpus worker.
"""

from __future__ import annotations

import itertools
import os
import re
from collections.abc import Iterator, Sized
from dataclasses import dataclass

import torch

from . import hub
from .engine import Engine
from .engine.scheduler import check_engine_settings
from .family_tokenizers import AutoTokenizer
from .generation import GENERATE_ARGUMENTS, settings
from .generation.config import GENERATE_KWARGS, GenerationConfig, in_effect
from .loading import dtype_or_legacy, resolve_device
from .long_documents import DEFAULT_BATCH_SIZE, check_strategy, map_reduce, map_settings, stage_settings
from .modeling import BartForConditionalGeneration
from .models.checks import check_positive_int
from .tokenizer import Tokenizer, check_text, clean_up_tokenization
from .user_warnings import silenced, warn

TASKS = ("summarization",)
DEFAULT_MODEL = "sshleifer/distilbart-cnn-12-6"   # transformers 4.x's default for the task


def pipeline(task: str = "summarization", model=None, tokenizer=None, device=None, dtype=None,
             **kwargs) -> "SummarizationPipeline":
    """A summarization pipeline. `model`: Hub id, local path or loaded model (None: DEFAULT_MODEL).
    `tokenizer`: Hub id, local path or Tokenizer (None: the model's). `device`: None (CPU; a loaded model
    stays where it is), -1 or "cpu", a CUDA index, "cuda[:k]" or a torch.device.
    `dtype`: None (float32), "auto", or a torch dtype.
    `kwargs`: generate settings (max_length, num_beams, ...; generation_config, a GenerationConfig, replaces the
    checkpoint's task settings, as in 4.x) and the call's options (CALL_OPTIONS: batch_size,
    truncation, ...), the pipeline's defaults under each call's (as 4.x took them), and revision, cache_dir, token,
    local_files_only (see seq2seq_kit.hub.resolve).
    (seq2seq_kit.pipeline, the package's, also builds translation and text2text-generation pipelines.)"""
    if task not in TASKS:
        raise ValueError(f"unsupported task {task!r}; seq2seq_kit supports: {', '.join(map(repr, TASKS))}")
    generate_kwargs, call_defaults, hub_kwargs = split_kwargs(kwargs)
    return SummarizationPipeline(*load_model_and_tokenizer(model, tokenizer, device, dtype, **hub_kwargs),
                                 call_defaults=call_defaults, **generate_kwargs)


def split_kwargs(kwargs: dict) -> tuple[dict, dict, dict]:
    """pipeline()'s keyword arguments -> (generate settings, call options, the rest: the Hub's, checked there)."""
    refuse_num_workers(kwargs)
    generate = {k: v for k, v in kwargs.items() if k in GENERATE_KWARGS or k == "generation_config"}
    options = {k: v for k, v in kwargs.items() if k in CALL_OPTIONS}
    return generate, options, {k: v for k, v in kwargs.items() if k not in generate and k not in options}


def load_model_and_tokenizer(model, tokenizer, device, dtype,
                             **hub_kwargs) -> tuple[BartForConditionalGeneration, Tokenizer]:
    """A pipeline's (model in eval mode, tokenizer), from pipeline()'s arguments (see there; torch_dtype, dtype's
    old name, taken as transformers 5 takes it)."""
    dtype = dtype_or_legacy(dtype, hub_kwargs.pop("torch_dtype", None))
    hub.check_kwargs(hub_kwargs)                 # checked even where nothing is loaded (model and tokenizer given)
    model = DEFAULT_MODEL if model is None else model
    if isinstance(model, BartForConditionalGeneration):
        if tokenizer is None:
            raise ValueError("pass tokenizer= (a Tokenizer, Hub id or path) along with a loaded model")
        if dtype is not None:
            raise ValueError("dtype= applies when the pipeline loads the model; convert a loaded model with .to(dtype)")
        model = model if device is None else model.to(resolve_device(device))   # None: stays where it is
    elif not isinstance(model, (str, os.PathLike)):
        raise TypeError(f"model= takes a Hub id, a checkpoint directory or a loaded seq2seq_kit model, got a "
                        f"{type(model).__module__.split('.')[0]} {type(model).__name__}; pass its path, or "
                        "seq2seq_kit.AutoModelForSeq2SeqLM.from_pretrained(path) with tokenizer=")
    else:
        device = resolve_device(device)
        root = hub.resolve(model, purpose="all" if tokenizer is None else "model", **hub_kwargs)
        tokenizer = root if tokenizer is None else tokenizer
        model = BartForConditionalGeneration.from_pretrained(root, dtype=dtype, device=device)
    if not isinstance(tokenizer, Tokenizer):
        tokenizer = AutoTokenizer.from_pretrained(tokenizer, **hub_kwargs)
    return model.eval(), tokenizer


def task_defaults(config, task: str = "summarization") -> tuple[str, dict]:
    """(prefix, generate defaults) a pipeline applies for `task`, from the checkpoint's config (a BartConfig)."""
    params = dict((config.extra.get("task_specific_params") or {}).get(task) or {})
    unsupported = in_effect(GenerationConfig.from_dict(params).unsupported, None)   # 4.x applied them: refused
    if unsupported:
        raise ValueError(f"the checkpoint's task_specific_params[{task!r}] sets {unsupported}, which seq2seq_kit "
                         "does not implement; remove them from config.json's task_specific_params (or from "
                         "model.config.extra['task_specific_params'] of a model passed as model=)")
    # As 4.x: the config's prefix, unless the task's settings carry their own.
    prefix = params.pop("prefix", config.extra.get("prefix")) or ""
    return prefix, {k: v for k, v in params.items() if k in GENERATE_KWARGS}  # 4.x's generation_config.update


def refuse_num_workers(kwargs: dict) -> None:
    """4.x's pipelines took num_workers for their DataLoader; a TypeError naming why this one takes none."""
    if "num_workers" in kwargs:
        raise TypeError("num_workers: 4.x's DataLoader workers read a Dataset in other processes; this pipeline "
                        "reads its inputs batch_size at a time as they are consumed, with no workers: leave it out")


def check_truncation(truncation) -> None:
    if truncation is not None and not isinstance(truncation, bool):
        raise TypeError(f"truncation must be True, False or None, got {truncation!r}")


# A call's options besides generate settings (SummarizationPipeline.__call__); pipeline() takes them as defaults.
CALL_OPTIONS = ("return_tensors", "return_text", "return_type", "clean_up_tokenization_spaces", "truncation",
                "batch_size", "stop_sequence", "strategy", "chunk_overlap", "map_kwargs", "return_chunks")
RETURN_TYPES = {0: True, 1: False}    # 4.x's ReturnType: TENSORS (0) -> return_tensors, TEXT (1) -> texts
RETURN_OPTIONS = {"return_tensors", "return_type"}


def return_tensors_of(return_tensors: bool, return_text: bool, return_type) -> bool:
    """Whether a call returns token ids, from 4.x's three ways of saying it: return_type (its ReturnType, or the
    value 0 / 1) over return_tensors; return_text=True is accepted and changes nothing, as in 4.x."""
    if return_text is not True:
        raise ValueError(f"return_text={return_text!r}: this pipeline returns texts unless return_tensors=True "
                         "(transformers 4.x ignored return_text too); leave it out")
    if return_type is None:
        return return_tensors
    value = getattr(return_type, "value", return_type)
    if isinstance(value, bool) or not isinstance(value, int) or value not in RETURN_TYPES:
        raise ValueError(f"return_type must be 0 (token ids) or 1 (texts), as 4.x's ReturnType, got {return_type!r}")
    return RETURN_TYPES[value]


# generate settings the pipeline ignores (see generate_ids)
NOT_TRACED = {"output_attentions": False, "output_hidden_states": False}
# what pipe.engine() passes to Engine (its defaults and tokenizer are the pipeline's)
ENGINE_OPTIONS = ("max_rows", "max_source_tokens", "max_encoder_tokens", "max_queue", "fixed_capacity")


class InputTooLong(ValueError):
    """preprocess(truncation=False) refusing a text longer than the model takes."""


@dataclass
class Encoded:
    """`preprocess`'s result: the token ids of each text (prefix and special tokens included, at most
    max_input_length of them), and {index: token count before the cut} of the texts that were truncated."""
    rows: list[list[int]]
    truncated: dict[int, int]


class SummarizationPipeline:
    """Callable: `pipe(text_or_texts, **generate_kwargs)` -> [{'summary_text': ...}, ...].

    `__call__` composes the public stages, which other front ends (the corpus worker) use directly:
        texts = pipe.check_texts(inputs)                     # a string or a list of strings, none blank
        encoded = pipe.preprocess(texts, truncation)         # Encoded: rows of token ids, which were cut
        ids = pipe.generate_ids(encoded.rows, **kwargs)      # LongTensor [b, n, T], one padded generate call
        records = pipe.postprocess(ids)                      # [[{'summary_text': ...}] * n] * b
    and exposes what a caller needs to know: `prefix`, `generate_defaults`, `max_input_length`, `tokenizer`.
    """

    task = "summarization"
    output = "summary"          # records' keys: f"{output}_text", f"{output}_token_ids"
    verb = "summarize"          # what an empty input's error says there is nothing to do

    def __init__(self, model: BartForConditionalGeneration, tokenizer: Tokenizer, *, call_defaults: dict | None = None,
                 **generate_kwargs):
        """generate_kwargs: this pipeline's generate settings, over the checkpoint's task settings; call_defaults:
        its defaults for the call's options (CALL_OPTIONS). Both checked here."""
        self.model, self.tokenizer = model, tokenizer
        self.prefix = task_defaults(model.config, self.task)[0]
        self.generate_kwargs = generate_kwargs                     # this pipeline's own, over the task's
        self.generate_defaults = self.defaults_with()
        if generate_kwargs:
            settings(model, dict(self.generate_defaults))          # bad settings fail here, not at the first call
        self.max_input_length = min(tokenizer.model_max_length, model.config.max_position_embeddings)
        self.call_defaults = dict(call_defaults or {})
        unknown = set(self.call_defaults) - set(CALL_OPTIONS)
        if unknown:
            raise TypeError(f"unknown call option(s) {sorted(unknown)}; the options are {', '.join(CALL_OPTIONS)}")
        self.default_options = self._options(**self.call_defaults)  # bad defaults fail here too
        stop = self.call_defaults.get("stop_sequence")
        self.stop_eos = {} if stop is None else {"eos_token_id": self.stop_token(stop)}   # generate_ids', engine()'s

    @property
    def device(self) -> torch.device:
        return self.model.device

    def defaults_with(self, **overrides) -> dict:
        """generate's defaults, under a call's settings: the checkpoint's task settings as a generation_config (as
        4.x made them its pipeline's generation config, over the model's), which a generation_config given to
        pipeline() or to a call replaces; this pipeline's generate_kwargs; then `overrides` (a translation's target
        token). Plain dict merges keep that order everywhere: generate_ids, engine(), corpus jobs, map-reduce."""
        task = task_defaults(self.model.config, self.task)[1]
        base = {"generation_config": GenerationConfig.from_dict(task)} if task else {}
        return {**base, **self.generate_kwargs, **overrides}

    def default_settings(self) -> dict:
        """The settings of a call that gives none of its own, as one dict of those set (what a server's /info shows):
        the model's generation config, under generate_defaults' generation_config, under its other settings."""
        defaults = dict(self.generate_defaults)
        config = defaults.pop("generation_config", None) or GenerationConfig()
        return {**config.over(self.model.generation_config).to_dict(), **defaults}

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.repr_fields()})"

    def repr_fields(self) -> str:
        """What repr shows inside the parentheses."""
        return (f"model={type(self.model).__name__}, device={self.device}, max_input_length={self.max_input_length}, "
                f"generate_defaults={self.generate_defaults}")

    def __call__(self, inputs, **kwargs):
        """pipe(inputs, **options_and_generate_kwargs): one list of records per input, {'summary_text': str}, or
        {'summary_token_ids': LongTensor [T]} with return_tensors=True; when every input has one record, the lists
        are flattened, as 4.x did. Options (CALL_OPTIONS; those given to pipeline() are the defaults):
        return_tensors: token ids instead of texts; return_type: 4.x's ReturnType (0 ids, 1 texts) over it;
        return_text: True, as 4.x accepted it (no effect). clean_up_tokenization_spaces: as the tokenizer's.
        truncation: True truncates over-long inputs silently, False raises, None (default) takes pipeline()'s
        truncation, and without one truncates with a warning.
        batch_size: texts per generate call (default 1).
        stop_sequence: a text whose first token ends the output (4.x: generate's eos_token_id; warns when the text
        is more than one token).
        strategy="map_reduce" summarizes a text longer than the model's window from its chunks of whole sentences
        instead (seq2seq_kit.long_documents): one record per input, {'summary_text'}, plus 'chunks' ([{'span':
        [start, end], 'text', 'summary_text'}]) with return_chunks=True; chunk_overlap: sentences repeated between
        chunks; map_kwargs: the chunks' generate settings over generate_kwargs (a length there, max_length or
        max_new_tokens, replaces the call's in both forms); batch_size: chunks decoding at once (default 8).
        Nothing is truncated, so `truncation` has nothing to do.
        Every other keyword is a generate setting, over the pipeline's generate_defaults.
        inputs may also be a generator (any iterator) or a torch Dataset (transformers' KeyDataset): then, as 4.x,
        an iterator over each input's list of records, read and computed batch_size inputs at a time as it is
        consumed (the options and generate settings are checked at the call, each text when its batch is read)."""
        refuse_num_workers(kwargs)
        given = {**self.call_options(kwargs), **kwargs}
        options = self._options(**{k: v for k, v in given.items() if k in CALL_OPTIONS})
        generate_kwargs = {k: v for k, v in given.items() if k not in CALL_OPTIONS}
        if isinstance(inputs, (Iterator, torch.utils.data.Dataset)):
            self._check_settings(generate_kwargs, options)
            return self._stream(inputs, generate_kwargs, options)
        return self._run(inputs, generate_kwargs, **options)

    def _check_settings(self, generate_kwargs: dict, options: dict) -> None:
        """A call's generate settings resolved as its generate calls resolve them, before any input is read (a
        stream reads its first batch at its first next()): a misspelt or bad setting raises at the call.
        generate's other arguments (generator, streamer, logits_processor, ...) are checked where they are used."""
        with silenced():                         # the same settings warn once, where they run
            if options["strategy"] == "map_reduce":          # as map_reduce resolves its two stages' settings
                generate_kwargs = on_engine(generate_kwargs)
                for stage in (generate_kwargs, map_settings(generate_kwargs, on_engine(options["map_kwargs"]))):
                    stage_settings(self, stage)
                return
            given = {**self.generate_defaults, **self.stop_eos, **generate_kwargs}
            settings(self.model, {k: v for k, v in given.items() if k not in GENERATE_ARGUMENTS})

    def _stream(self, inputs, generate_kwargs: dict, options: dict) -> Iterator[list[dict]]:
        """pipe(generator or Dataset): each input's records, batch_size inputs read and run at a time. A map-style
        Dataset (sized, not iterable: __getitem__ and __len__) is indexed, anything else iterated. An error that
        names an input by its place in the batch (input N, text[N]) says where the batch starts in the stream."""
        indexed = isinstance(inputs, Sized) and not isinstance(inputs, (Iterator, torch.utils.data.IterableDataset))
        items = (inputs[i] for i in range(len(inputs))) if indexed else iter(inputs)
        start = 0
        while batch := list(itertools.islice(items, options["batch_size"])):
            bad = next(((n, t) for n, t in enumerate(batch, start) if not isinstance(t, str)), None)
            if bad is not None:
                raise TypeError(f"pipe() takes a stream of strings; its item {bad[0]} is a {type(bad[1]).__name__}")
            try:
                results = self._run(batch, generate_kwargs, **options)
            except (ValueError, TypeError) as e:
                if start and re.search(r"\b(input \d+|text\[\d+\])", str(e)):
                    e.args = (f"{e} (streamed: input 0 here is the stream's item {start})", *e.args[1:])
                raise
            start += len(batch)
            for result in results:
                yield result if isinstance(result, list) else [result]

    def call_options(self, kwargs: dict) -> dict:
        """pipeline()'s call options a call with `kwargs` takes, as 4.x's call parameters sit over the pipeline's:
        not its return_tensors / return_type where the call says which it returns, and not its stop_sequence (the
        eos_token_id of generate_ids' defaults, under the call's own)."""
        said = RETURN_OPTIONS & set(kwargs)
        return {k: v for k, v in self.call_defaults.items() if k != "stop_sequence" and not (said and k in
                                                                                             RETURN_OPTIONS)}

    def _options(self, *, return_tensors: bool = False, return_text: bool = True, return_type=None,
                 clean_up_tokenization_spaces: bool = False, truncation: bool | None = None,
                 batch_size: int | None = None, stop_sequence: str | None = None, strategy: str = "truncate",
                 chunk_overlap: int = 0, map_kwargs: dict | None = None, return_chunks: bool = False) -> dict:
        """A call's options (see __call__) checked, with their defaults, as _run takes them."""
        return_tensors = return_tensors_of(return_tensors, return_text, return_type)
        check_truncation(truncation)                    # map-reduce has no use for it, but a mistake is named
        check_strategy(strategy, chunk_overlap, map_kwargs, return_chunks)
        if strategy == "map_reduce":
            self._check_map_reduce(return_tensors)
        batch_size = (1 if strategy == "truncate" else DEFAULT_BATCH_SIZE) if batch_size is None else batch_size
        check_positive_int(batch_size, "batch_size")
        if stop_sequence is not None and (not isinstance(stop_sequence, str) or not stop_sequence):
            raise ValueError(f"stop_sequence must be a non-empty text, got {stop_sequence!r}")
        return dict(return_tensors=return_tensors, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                    truncation=truncation, batch_size=batch_size, stop_sequence=stop_sequence, strategy=strategy,
                    chunk_overlap=chunk_overlap, map_kwargs=map_kwargs, return_chunks=return_chunks)

    def _check_map_reduce(self, return_tensors: bool) -> None:
        """ValueError unless strategy='map_reduce' applies: to summaries, as texts."""
        if self.output != "summary":
            raise ValueError(f"strategy='map_reduce' summarizes a long document from its chunks' summaries: it "
                             f"applies to the summarization pipeline, not to {type(self).__name__}, which "
                             "truncates (pass a long text's sentences or paragraphs as a list instead)")
        if return_tensors:
            raise ValueError("return_tensors=True applies to strategy='truncate': map-reduce summaries are "
                             "texts made from texts")

    def _run(self, inputs, generate_kwargs: dict, *, return_tensors, clean_up_tokenization_spaces, truncation,
             batch_size, stop_sequence, strategy, chunk_overlap, map_kwargs, return_chunks):
        texts = self.check_texts(inputs)
        if stop_sequence is not None:
            generate_kwargs = {**generate_kwargs, "eos_token_id": self.stop_token(stop_sequence)}
        if strategy == "map_reduce":
            generate_kwargs, map_kwargs = (on_engine(kwargs) for kwargs in (generate_kwargs, map_kwargs))
            return map_reduce(self, texts, batch_size=batch_size, chunk_overlap=chunk_overlap, map_kwargs=map_kwargs,
                              return_chunks=return_chunks, clean_up_tokenization_spaces=clean_up_tokenization_spaces,
                              **generate_kwargs)
        rows = self.preprocess(texts, truncation).rows
        records = []
        for start in range(0, len(rows), batch_size):
            ids = self.generate_ids(rows[start:start + batch_size], **generate_kwargs)
            records += self.postprocess(ids, return_tensors, clean_up_tokenization_spaces)
        return shape_records(inputs, records)

    def stop_token(self, stop_sequence: str) -> int:
        """The token that ends the output for stop_sequence: its first (4.x), with a warning when it has more."""
        ids = self.tokenizer(stop_sequence, add_special_tokens=False)["input_ids"]
        if not ids:
            raise ValueError(f"stop_sequence={stop_sequence!r} is no token for this tokenizer; pass a word")
        if len(ids) > 1:
            warn(f"stop_sequence={stop_sequence!r} is {len(ids)} tokens; generation stops at its first, {ids[0]} (as "
                 "transformers 4.x did)")
        return ids[0]

    def check_texts(self, inputs) -> list[str]:
        """The texts of `inputs` (a string or a list of strings); TypeError / ValueError unless each has some text."""
        texts = [inputs] if isinstance(inputs, str) else inputs
        if not isinstance(texts, (list, tuple)) or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"pipe() takes a string, a list of strings, or a generator or Dataset of strings, got "
                            f"{_type_name(inputs)}")
        for i, text in enumerate(texts):
            if not text.strip():
                raise ValueError(f"input {i} is empty: there is nothing to {self.verb}")
        return list(texts)

    def preprocess(self, texts: list[str], truncation: bool | None = None) -> Encoded:
        """Each text tokenized on its own after the prefix (no padding), as 4.x did. A text longer than
        max_input_length is cut to it: silently (truncation=True), or refused (False); None takes the truncation
        given to pipeline(), as pipe() does (4.x: None is not given), and without one cuts with a warning."""
        check_truncation(truncation)
        truncation = self.call_defaults.get("truncation") if truncation is None else truncation
        rows = self.encode_texts(texts)
        limit = self.max_input_length
        long = {i: len(r) for i, r in enumerate(rows) if len(r) > limit}
        if long and truncation is False:
            i = next(iter(long))
            raise InputTooLong(
                f"input {i} is {long[i]} tokens long, more than the model takes ({limit} = min(tokenizer "
                f"model_max_length {self.tokenizer.model_max_length}, max_position_embeddings "
                f"{self.model.config.max_position_embeddings})); shorten it or pass truncation=True")
        if long and truncation is None:
            i = next(iter(long))
            warn(f"{len(long)} input(s) longer than the model's {limit} positions (e.g. input {i}: {long[i]} tokens) "
                 f"were truncated to {limit} tokens; pass truncation=True to silence this or truncation=False to "
                 "raise instead")
        for i, row in zip(long, self.encode_texts([texts[i] for i in long], max_length=limit)):
            rows[i] = row
        return Encoded(rows, long)

    def generate_ids(self, rows: list[list[int]], **generate_kwargs) -> torch.Tensor:
        """One generate call over `rows`, padded with the tokenizer's pad id on its padding side (as 4.x's pad
        collate), generate_kwargs over generate_defaults -> LongTensor [len(rows), n, T] on the CPU, where n is
        num_return_sequences and each sequence starts with the decoder start token. A stop_sequence given to
        pipeline() is generate's eos_token_id under generate_kwargs', as pipe()'s; stop_strings read the tokens
        with this pipeline's tokenizer. output_attentions / output_hidden_states are ignored, as 4.x's pipeline
        ignores them (it returns text; its generate returned only ids), and not computed."""
        ids, mask = self._pad(rows)
        with torch.inference_mode():
            out = self.model.generate(ids.to(self.device), mask.to(self.device), **{
                "tokenizer": self.tokenizer, **self.generate_defaults, **self.stop_eos, **generate_kwargs,
                **NOT_TRACED})
        out = out.sequences if hasattr(out, "sequences") else out
        return out.reshape(len(rows), -1, out.shape[-1]).cpu()

    def engine(self, **engine_kwargs) -> Engine:
        """A continuous-batching Engine on this pipeline's model with its generation defaults (seq2seq_kit.engine):
        submit `preprocess(texts).rows[i]`, then `postprocess(request.result()[None])`. Its requests answer token
        ids [n, T], as postprocess takes them, even where the checkpoint sets return_dict_in_generate (a request
        may still ask for it), and end where pipe() ends them (a stop_sequence given to pipeline() is their
        eos_token_id, as it is pipe()'s); stop_strings read the tokens with its tokenizer. engine_kwargs: max_rows,
        max_source_tokens, max_encoder_tokens, max_queue, fixed_capacity (unset: the engine's default, but eager
        where the model's generation_config watermarks its outputs: the watermark runs Python per row at every step,
        which the fixed-capacity step's CUDA graphs cannot)."""
        others = sorted(set(engine_kwargs) - set(ENGINE_OPTIONS))
        if others:                          # (Engine's own message would not say where settings go)
            raise TypeError(f"pipe.engine() takes {', '.join(ENGINE_OPTIONS)}, not {', '.join(others)}: generation "
                            "settings go with each request, engine.submit(ids, num_beams=1, ...), over the pipeline's")
        defaults = {**self.generate_defaults, **self.stop_eos, "return_dict_in_generate": False}
        if getattr(self.model.generation_config, "watermarking_config", None) is not None:
            engine_kwargs.setdefault("fixed_capacity", False)
        return Engine(self.model, defaults=defaults, tokenizer=self.tokenizer, **engine_kwargs)

    def postprocess(self, ids: torch.Tensor, return_tensors: bool | None = None,
                    clean_up_tokenization_spaces: bool | None = None) -> list[list[dict]]:
        """Records of generate_ids' [b, n, T] output, n per input: {'summary_text'} decoded without special
        tokens, or {'summary_token_ids': LongTensor [T]} with return_tensors=True (as 4.x). None: the option
        given to pipeline() (return_tensors or return_type; clean_up_tokenization_spaces), as pipe() takes it."""
        if return_tensors is None:
            return_tensors = self.default_options["return_tensors"]
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.default_options["clean_up_tokenization_spaces"]
        return [[self._record(seq, return_tensors, clean_up_tokenization_spaces) for seq in sequences]
                for sequences in ids]

    def encode_texts(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """input_ids of each text behind the task prefix (no padding; cut to max_length when given): preprocess's
        tokenizer call, which the translation pipeline makes with its source language."""
        if not texts:
            return []
        cut = dict(truncation=True, max_length=max_length) if max_length is not None else {}
        if self.prefix:          # each text checked first: an error names a character where the text has it
            texts = [self.prefix + check_text(t, f"text[{i}]") for i, t in enumerate(texts)]
        return self.tokenizer(texts, **cut)["input_ids"]

    def _pad(self, rows: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """(input_ids, attention_mask) [b, longest row]."""
        width = max(map(len, rows))
        pad, left = self.tokenizer.pad_token_id, self.tokenizer.padding_side == "left"
        if pad is None and len(rows) > 1:
            raise ValueError("this tokenizer has no pad token, so texts cannot be batched; use batch_size=1")
        ids = torch.full((len(rows), width), pad if pad is not None else 0, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            cols = slice(width - len(r), width) if left else slice(0, len(r))
            ids[i, cols] = torch.tensor(r)
            mask[i, cols] = 1
        return ids, mask

    def text(self, ids: list[int], clean_up_tokenization_spaces: bool | None = None) -> str:
        """One output's text, as postprocess writes it: decoded without special tokens (ids past the tokenizer
        skipped, as transformers), cleaned up with clean_up_tokenization_spaces (4.x: any tokenizer; None: the
        option given to pipeline())."""
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.default_options["clean_up_tokenization_spaces"]
        known = self.tokenizer.known_ids(ids)
        text = self.tokenizer.decode(known, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def _record(self, ids: torch.Tensor, return_tensors: bool, clean_up: bool) -> dict:
        if return_tensors:  # 4.x: the ids instead of the text
            return {f"{self.output}_token_ids": ids}
        return {f"{self.output}_text": self.text(ids.tolist(), clean_up)}


def shape_records(inputs, records: list[list[dict]]):
    """pipe(inputs)'s answer from its records, one list per input: the list of a single string; else the lists,
    flattened to one record per input when each holds one, as 4.x did."""
    if isinstance(inputs, str):
        return records[0]
    return [r[0] for r in records] if all(len(r) == 1 for r in records) else records


def _type_name(x) -> str:
    if isinstance(x, (list, tuple)):
        bad = next(t for t in x if not isinstance(t, str))
        return f"a {type(x).__name__} holding a {type(bad).__name__}"
    return type(x).__name__


def on_engine(kwargs: dict | None) -> dict | None:
    """A stage's generate kwargs as the engine takes them (check_engine_settings); what it refuses is named with the
    fix for map_reduce."""
    if kwargs is None:
        return None
    try:
        return check_engine_settings(kwargs)
    except ValueError as e:
        raise ValueError(f"{e}: map_reduce summarizes the chunks on an engine; leave it out, or use "
                         "strategy='truncate'") from None
