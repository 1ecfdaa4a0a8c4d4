"""generate(): inputs and settings validated once, the encoder run once, then greedy / sampling / beam search;
and the pieces the engine shares with it (prepare, start_search, start_slots, result).

The model is anything that fits generation/protocol.py's Seq2SeqModel; nothing here knows its network.
"""

from __future__ import annotations

import inspect
import math
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, fields, is_dataclass, replace

import torch

from ..model_output import ModelOutput
from ..user_warnings import warn
from . import constrained_beam_search, contrastive_search, decoder_prompt, draft, group_beam_search, prompt_lookup
from .beam_search import BeamSearch
from .config import GENERATE_KWARGS, GenerationConfig, check_config, resolve
from .logits_process import build_processors
from .protocol import Seq2SeqModel
from .sampling import SampleSearch
from .stop_strings import StopStrings
from .sync_free import decode
from .traces import Trace
from .whole_step import decode_graphed, graph_lock, graphed_search

# Steps between two reads of the stop flag on the whole-step CUDA graph (up to this many - 1 wasted steps at the
# end). Sampling reads every step: a wasted step would still draw from the generator. Not yet tuned on a GPU
# (benchmarks/gpu_session.sh measures k = 1, 4, 8, 16).
GRAPH_CHECK_EVERY = 8
# Greedy and beam search on the CUDA-graph path replay the whole step (generation/whole_step.py); False falls back
# to the decoder-only graph with the search eager and the flag read every step (sampling's path), e.g. to compare.
WHOLE_STEP_GRAPH = True
# Sampling replays the whole step as well (its draws on the device: generation/draws.py); off until a GPU run has
# checked its generator handling against eager draws (benchmarks/gpu_session.sh runs those CUDA tests with it on).
WHOLE_STEP_SAMPLING = False


@dataclass
class GenerateOutput(ModelOutput):
    """What generate(..., return_dict_in_generate=True) returns; read as transformers' ModelOutput is (see
    model_output.py): out.sequences, out["sequences"], out[0], keys(), ..."""
    sequences: torch.Tensor                             # [B * num_return_sequences, T] long
    sequences_scores: torch.Tensor | None = None        # [B * num_return_sequences] (beam search, output_scores)
    scores: tuple[torch.Tensor, ...] | None = None      # per step [B * rows_per_input, V] processed scores
    logits: tuple[torch.Tensor, ...] | None = None      # per step [B * rows_per_input, V] the model's, float32
    beam_indices: torch.Tensor | None = None            # [B * num_return_sequences, T - 1] int32 (beam search)
    # output_attentions / output_hidden_states (generation/traces.py has their shapes): the encoder's per layer,
    # the decoder's per step, per layer
    encoder_attentions: tuple[torch.Tensor, ...] | None = None
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None
    decoder_attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None
    cross_attentions: tuple[tuple[torch.Tensor, ...], ...] | None = None
    decoder_hidden_states: tuple[tuple[torch.Tensor, ...], ...] | None = None


@torch.no_grad()
def generate(model: Seq2SeqModel, input_ids: torch.Tensor | None, attention_mask: torch.Tensor | None = None, *,
             generator: torch.Generator | None = None, cuda_graph: bool | None = None, logits_processor=None,
             prefix_allowed_tokens_fn=None, decoder_input_ids: torch.Tensor | None = None,
             decoder_attention_mask: torch.Tensor | None = None, streamer=None, tokenizer=None, encoder_outputs=None,
             assistant_model: Seq2SeqModel | None = None, **kwargs):
    """transformers-compatible generate for a seq2seq_kit BART model.

    input_ids [B, S], attention_mask [B, S] (1 = token, 0 = padding) or None; kwargs are transformers' generation
    settings (see GenerationConfig), over `generation_config` (a GenerationConfig) if given, over
    model.generation_config, over transformers' library defaults.
    encoder_outputs: the encoder's output [B, S, D] computed already (encoder_states: model.encode's tensor,
    transformers' BaseModelOutput, ...), decoded from in the place of running the encoder; attention_mask is then
    its mask, and input_ids (optional) only what the settings that read the source ids read (without it they are
    refused, where transformers fails). S is free (hidden states of several passages joined, as Fusion-in-Decoder
    does). With output_attentions / output_hidden_states the encoder's are those encoder_outputs holds (None where
    it holds none: a tensor), as transformers reads them off it.
    assistant_model: a draft model of the same vocabularies whose guessed tokens are checked several per pass
    (generation/draft.py; one input, as prompt_lookup_num_tokens): greedy search's tokens, or with do_sample
    transformers' speculative sampling; its settings (num_assistant_tokens, ...) are its generation_config's.
    generator: torch.Generator for sampling (None: the global RNG).
    logits_processor: processors of your own (callables (input_ids [R, cur_len], scores [R, V]) -> scores, e.g.
    transformers' LogitsProcessor objects), merged as transformers merges them (logits_process.merged): after
    seq2seq_kit's and before the sampling ones, or in the place of the one a setting builds of the same transformers
    class; prefix_allowed_tokens_fn(input index, row's tokens) -> allowed token ids (constrained decoding).
    Both run Python every step: on CUDA graphs the decoder's step replays and the search runs eagerly beside it.
    decoder_input_ids: a decoder prompt [B, P] each row starts from (generation/decoder_prompt.py: the start token
    prepended as transformers does, counted in the lengths, part of the output), fed to the cache in one pass (on
    CUDA graphs too: their positions are device-side); decoder_attention_mask only as all ones.
    max_time: the step during which max_time seconds of decoding (the encoder not counted, as transformers'
    MaxTimeCriteria) have passed is the last, for every row; on CUDA graphs the clock is read before each step (the
    flag read every step) instead of after its forward, so the step that starts once the time has passed is the
    last (the same reads of the clock, one per step).
    streamer: an object with put(token ids) and end(), as transformers' streamers (TextStreamer, ...): put gets
    the decoder's first tokens [R, P] on the CPU, then each step's new token of every row [R] (pad_token_id for a
    row that ended), and end() follows the last; greedy and sampling only (as transformers); on CUDA graphs too
    (the stop flag then read back every step, each step's tokens put once it has run).
    tokenizer: the model's tokenizer (seq2seq_kit's or transformers'), which stop_strings need to read the tokens
    as text (generation/stop_strings.py: a row ends once its text ends in one); on CUDA graphs too (their check
    is a device-side part of the search's step).
    custom_generate (with trust_remote_code, which changes nothing here): transformers 5's way of asking for the
    searches it moved to Hub repositories, which run built in (check_moved_search); no other generate function runs.
    output_attentions / output_hidden_states (with return_dict_in_generate; ignored without, as transformers):
    the encoder's and every step's attention probabilities and hidden states (generation/traces.py), computed
    beside the attention the step runs (tokens and scores as without them); decoded eagerly as well.
    cuda_graph: replay each step from a CUDA graph; None: on for a model on a CUDA device. Greedy and beam search
    replay the whole step (decoder, processors, search, cache reorder: generation/whole_step.py) and read the
    stop flag back every GRAPH_CHECK_EVERY steps; sampling replays the decoder step only (models/cuda_graph.py)
    and draws eagerly (with WHOLE_STEP_SAMPLING, the whole step too); group beam search (num_beam_groups > 1) and
    constrained beam search (force_words_ids / constraints) decode eagerly (host_search), and so does contrastive
    search (penalty_alpha with top_k > 1: generation/contrastive_search.py). Logits match the eager step's to float
    rounding, not bit for bit.
    Returns a LongTensor [B * num_return_sequences, T] that starts with the decoder start token (or the prompt),
    padded with pad_token_id after EOS; or a GenerateOutput when return_dict_in_generate=True.
    """
    given = encoder_states(encoder_outputs)                 # None: the encoder runs on input_ids
    source, padding_mask, cfg, prompt = prepare(model, input_ids, attention_mask, kwargs, generator,
                                                decoder_input_ids, decoder_attention_mask, given)
    # the source ids the settings read, or, given hidden states alone, zeros of their shape (nothing reads them)
    input_ids = source if source is not None else torch.zeros(given.shape[:2], dtype=torch.long, device=model.device)
    custom = user_processors(logits_processor, prefix_allowed_tokens_fn)
    check_streamer(streamer, cfg)
    stops = stop_strings_of(cfg, tokenizer, model.device)
    trace = Trace.of(cfg)                                   # None without output_attentions / _hidden_states
    if trace is not None and given is not None:
        trace.given_encoder(encoder_outputs)                # the encoder ran before the call
    lookup = prompt_lookup.used(cfg, input_ids.shape[0], trace is not None, cuda_graph, assistant_model is not None)
    if lookup and cfg.watermarking_config is not None:
        raise ValueError("watermarking_config beside prompt_lookup_num_tokens / assistant_model is not implemented: "
                         "leave one of them out")
    if lookup and assistant_model is not None:
        if source is None:
            raise ValueError("assistant_model encodes the source itself: pass input_ids (beside encoder_outputs, or "
                             "instead of them)")
        draft.check_draft(model, assistant_model, source.shape[1], cfg.max_length)
    contrastive_search.check(cfg, model.config.decoder_vocab_size, model.config.max_position_embeddings,
                             trace is not None, lookup)
    cuda_graph = use_cuda_graph(cuda_graph, model.device) and not (trace is not None and cuda_graph is None) \
        and not lookup and not host_search(cfg) and not contrastive_search.runs(cfg)
    if trace is not None and cuda_graph:
        raise ValueError("output_attentions / output_hidden_states are not run on CUDA graphs (they record every "
                         "layer's attention beside the step, which the graphs do not): leave cuda_graph unset "
                         "(generate then decodes eagerly) or pass False")
    traced = {} if trace is None else {"trace": trace.encoder}    # a model that traces nothing still generates
    encoder_hidden = given if given is not None else model.encode_unchecked(input_ids, padding_mask, **traced)
    # encoder_hidden [B, S, D], computed once
    if cuda_graph:
        with graph_lock(model):                     # the kept graphs' buffers hold one call's inputs and state
            return decode_on_graphs(model, encoder_hidden, padding_mask, cfg, input_ids, generator, stops, prompt,
                                    streamer, custom)
    search = start_search(cfg, input_ids, model.config.decoder_vocab_size, model.device, generator, prompt=prompt,
                          stop_strings=stops, **custom)
    if contrastive_search.runs(cfg):
        stream_first_tokens(streamer, search)
        contrastive_search.decode(model, encoder_hidden, padding_mask, search, streamer, deadline(cfg.max_time))
        if streamer is not None:
            streamer.end()
        return result(cfg, search)
    screened = trace is None and search.screenable
    step, cache = model.start_decoding(encoder_hidden, padding_mask, rows_per_input(cfg),
                                       max_length=cfg.max_length - 1, cuda_graph=False, screened=screened)
    if trace is not None:
        step = trace.stepping(model.decode_step_unchecked)                           # records every step
    stream_first_tokens(streamer, search)
    # before the prompt's forward, which transformers' first step runs after its MaxTimeCriteria starts the clock
    ends = deadline(cfg.max_time)
    if prompt is not None:
        decoder_prompt.prefill(model, cache, prompt, rows_per_input(cfg), trace)
    if lookup:
        if assistant_model is None:
            guesser = prompt_lookup.lookup(cfg, model.config, source, padding_mask, search)
        else:
            guesser = draft.Draft(assistant_model, source, padding_mask, search)
        prompt_lookup.decode(model, step, cache, search, cfg, guesser, screened, streamer, ends)
    while not search.done:                                  # (prompt lookup ends with the search done)
        logits = step(search.tokens(), cache)                                         # [R, V]
        if time.monotonic() > ends:
            search.last_step()
        parents = search.advance(logits)
        if parents is not None:
            cache.reorder(parents)
        if streamer is not None:
            streamer.put(search.tokens().cpu())                                       # [R]: this step's tokens
    if streamer is not None:
        streamer.end()
    return result(cfg, search, trace=trace)


# generate's arguments that are not settings (what settings() resolves): its keyword-only parameters, and
# custom_generate, which prepare() takes off the settings
GENERATE_ARGUMENTS = frozenset([*(name for name, p in inspect.signature(generate).parameters.items()
                                  if p.kind is p.KEYWORD_ONLY), "custom_generate"])


def stream_first_tokens(streamer, search: SampleSearch) -> None:
    """A streamer's first put (if any): first_tokens(search)."""
    if streamer is not None:
        streamer.put(first_tokens(search))


def first_tokens(search: SampleSearch) -> torch.Tensor:
    """What a streamer gets first: the decoder's first tokens [R, P] on the CPU (the start token, or the prompt).
    Streamers take greedy and sampling searches only (check_streamer)."""
    return search.seq[:, :search.prompt_len].cpu()


def decode_on_graphs(model: Seq2SeqModel, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None,
                     cfg: GenerationConfig, input_ids: torch.Tensor, generator: torch.Generator | None,
                     stops: StopStrings | None, prompt: torch.Tensor | None, streamer=None, custom: dict | None = None):
    """generate's CUDA-graph paths (the caller holds the model's graph_lock): greedy and beam search replay the whole
    step, its output copied out of the kept graph's buffers (the next call's); sampling replays the decoder-only
    graph with the search eager, reading the device back every step (with WHOLE_STEP_SAMPLING: the whole step as
    well, drawing from the graph's own generator, started at `generator`'s state and handed back). stops: the stop
    strings' tables, whose check is a device-side part of the search's step; prompt: the decoder prompt [B, P] (or
    None), fed to the graph's cache (its positions are device-side) before the first step. streamer: its puts as
    the eager loop makes them; max_time: the clock read before each step (time_limit); with either, the flag is
    read every step. custom: the user's processors (logits_processor, prefix_allowed_tokens_fn), Python run every
    step, as watermarking_config's: the decoder-only graph with the search eager, the flag read every step (each
    processor called once per step, as eagerly)."""
    rows, custom = rows_per_input(cfg), custom or {}
    python_processors = bool(custom) or cfg.watermarking_config is not None     # Python run every step
    every = 1 if streamer is not None or cfg.max_time is not None or python_processors else GRAPH_CHECK_EVERY
    one_graph = WHOLE_STEP_GRAPH and (WHOLE_STEP_SAMPLING or not cfg.do_sample) and not python_processors
    if one_graph:                                       # decoder, processors, search, reorder: one graph
        graph = graphed_search(model, encoder_hidden, padding_mask, cfg, input_ids, rows, stops, prompt,
                               lambda own: start_search(cfg, input_ids, model.config.decoder_vocab_size, model.device,
                                                        own, prompt=prompt, stop_strings=stops))
        stream_first_tokens(streamer, graph.search)
        limit = time_limit(graph.search, deadline(cfg.max_time))          # the prompt was fed with the capture
        out = copied(result(cfg, decode_graphed(graph, every, generator, streamer, limit)))
    else:
        step, cache = model.start_decoding(encoder_hidden, padding_mask, rows, max_length=cfg.max_length - 1,
                                           cuda_graph=True)
        search = start_search(cfg, input_ids, model.config.decoder_vocab_size, model.device, generator,
                              prompt=prompt, stop_strings=stops, **custom)
        stream_first_tokens(streamer, search)
        limit = time_limit(search, deadline(cfg.max_time))                # before the prompt's forward, as eagerly
        if prompt is not None:
            decoder_prompt.prefill(model, cache, prompt, rows)
        decode(step, cache, search, 1 if cfg.do_sample else every, streamer, limit)
        out = result(cfg, search)
    if streamer is not None:
        streamer.end()
    return out


def time_limit(search: SampleSearch | BeamSearch, ends: float):
    """max_time on the CUDA graphs: a check before each step (None without a limit) that makes the step the last
    once time.monotonic() has passed `ends` (eagerly the clock is read after the step's forward)."""
    if ends == math.inf:
        return None
    return lambda: search.last_step() if time.monotonic() > ends else None


def copied(out):
    """generate's output with tensors of its own (a kept graph's search state is reused by the next call)."""
    if isinstance(out, torch.Tensor):
        return out.clone()
    clone = lambda t: None if t is None else t.clone()
    return replace(out, sequences=out.sequences.clone(), sequences_scores=clone(out.sequences_scores),
                   beam_indices=clone(out.beam_indices))


def prepare(model: Seq2SeqModel, input_ids, attention_mask, kwargs: dict, generator, decoder_input_ids=None,
            decoder_attention_mask=None, encoder_hidden: torch.Tensor | None = None):
    """generate's checks, in its order, before any compute (the engine's submit runs the same for its one input):
    inputs moved to the model's device and checked once, settings resolved over the model's, the generator
    checked. Returns (input_ids [B, S] long, padding mask bool [B, S] or None, resolved GenerationConfig, the
    decoder prompt [B, P] long as the decoder reads it (decoder_prompt.py) or None).
    encoder_hidden: generate's encoder_outputs [B, S, D] (check_given_encoder), input_ids then optional (None
    returned for None)."""
    if isinstance(attention_mask, GenerationConfig):                       # transformers' second argument
        raise TypeError("generate()'s second argument is attention_mask; pass a GenerationConfig as "
                        "generation_config=...")
    if isinstance(input_ids, torch.Tensor) and not input_ids.is_meta:      # inputs may come from the CPU (meta
        input_ids = input_ids.to(model.device)                             # ones: no values, refused by the check)
    if isinstance(attention_mask, torch.Tensor) and not attention_mask.is_meta:
        attention_mask = attention_mask.to(model.device)
    if encoder_hidden is None:
        padding_mask = model.check_inputs(input_ids, attention_mask)        # the one check
    else:
        padding_mask = check_given_encoder(model, encoder_hidden, input_ids, attention_mask)
    batch, inputs = (encoder_hidden.shape[0], "encoder_outputs") if input_ids is None else (input_ids.shape[0],
                                                                                           "input_ids")
    prompt = decoder_prompt.check(decoder_input_ids, decoder_attention_mask, batch, model.config.decoder_vocab_size,
                                  model.device, inputs)
    kwargs = dict(kwargs)
    moved = kwargs.pop("custom_generate", None)
    cfg = settings(model, kwargs, prompt)
    check_moved_search(moved, cfg)
    warn_default_max_length(model, kwargs, cfg)
    check_encoder_ids(cfg, input_ids, model.config.decoder_vocab_size)
    check_generator(generator, model.device)
    if prompt is not None:
        prompt = decoder_prompt.complete(prompt, cfg.decoder_start_token_id, model.config.pad_token_id,
                                         model.config.positions_skip_pads)
    return None if input_ids is None else input_ids.long(), padding_mask, cfg, prompt


def prepare_more(model: Seq2SeqModel, input_ids, cfg: GenerationConfig) -> torch.Tensor:
    """Another source [B, S] for settings prepare resolved already (cfg): moved to the model's device and checked
    as prepare checks its input_ids (no mask, no decoder prompt) -> input_ids long. The engine's submit_all checks
    each of its inputs so, resolving their settings once."""
    if isinstance(input_ids, torch.Tensor) and not input_ids.is_meta:
        input_ids = input_ids.to(model.device)
    model.check_inputs(input_ids, None)
    check_encoder_ids(cfg, input_ids, model.config.decoder_vocab_size)
    return input_ids.long()


# The searches transformers 5 moved out of its generate into Hub repositories of remote code (custom_generate=...,
# trust_remote_code=True), which seq2seq_kit runs built in: what selects each here, and how to ask for it.
MOVED_SEARCHES = {
    "transformers-community/contrastive-search":
        (contrastive_search.runs, "penalty_alpha > 0 and top_k > 1, with num_beams=1 and do_sample=False"),
    "transformers-community/group-beam-search":
        (group_beam_search.runs, "num_beams > 1 and num_beam_groups > 1, with a diversity_penalty"),
    "transformers-community/constrained-beam-search":
        (constrained_beam_search.runs, "force_words_ids or constraints, with num_beams > 1"),
}


def check_moved_search(custom_generate, cfg: GenerationConfig) -> None:
    """generate's custom_generate (transformers 5: a Hub repository whose generate function runs instead): None, or
    one of MOVED_SEARCHES' repositories whose search the resolved settings select (it then runs built in)."""
    if custom_generate is None:
        return
    if not isinstance(custom_generate, str) or custom_generate not in MOVED_SEARCHES:
        raise ValueError(f"custom_generate={custom_generate!r}: seq2seq_kit runs no generate function of a Hub "
                         "repository or of yours; the searches transformers 5 moved to the Hub run built in, chosen "
                         f"by their settings ({', '.join(MOVED_SEARCHES)}): leave custom_generate out")
    runs, settings_needed = MOVED_SEARCHES[custom_generate]
    if not runs(cfg):
        raise ValueError(f"custom_generate={custom_generate!r} asks for the search these settings select with "
                         f"{settings_needed}, and they do not: set them, or leave custom_generate out")


def encoder_states(encoder_outputs) -> torch.Tensor | None:
    """generate's encoder_outputs -> the encoder's hidden states [B, S, D] (the model checks them: prepare), or
    None: a tensor (model.encode's), transformers' BaseModelOutput or anything with last_hidden_state (model.
    get_encoder()'s), a mapping with that key, or a tuple / list whose first item they are (return_dict=False)."""
    if encoder_outputs is None or isinstance(encoder_outputs, torch.Tensor):
        return encoder_outputs
    if hasattr(encoder_outputs, "last_hidden_state"):
        return encoder_outputs.last_hidden_state
    if isinstance(encoder_outputs, Mapping) and "last_hidden_state" in encoder_outputs:
        return encoder_outputs["last_hidden_state"]
    if isinstance(encoder_outputs, (tuple, list)) and encoder_outputs:
        return encoder_outputs[0]
    raise TypeError(f"encoder_outputs must be the encoder's output (model.encode's tensor, or an output with "
                    f"last_hidden_state, as model.get_encoder()(...) returns), got a {type(encoder_outputs).__name__}")


def check_given_encoder(model: Seq2SeqModel, encoder_hidden: torch.Tensor, input_ids,
                        attention_mask: torch.Tensor | None) -> torch.Tensor | None:
    """The checks of encoder hidden states [B, S, D] given to generate (the model's) and of input_ids beside them
    (None, or the source ids those states came from: checked as without them, of the states' [B, S]) -> the
    padding mask, as check_inputs'."""
    padding_mask = model.check_encoder_outputs(encoder_hidden, attention_mask)
    if input_ids is not None:
        model.check_inputs(input_ids, attention_mask)
        if input_ids.shape != encoder_hidden.shape[:2]:
            raise ValueError(f"input_ids has shape {list(input_ids.shape)} but encoder_outputs holds "
                             f"{encoder_hidden.shape[0]} inputs of {encoder_hidden.shape[1]} positions; pass the ids "
                             "the encoder read, or leave input_ids out")
    return padding_mask


def warn_default_max_length(model: Seq2SeqModel, kwargs: dict, cfg: GenerationConfig) -> None:
    """transformers' warning where no length is set anywhere (the call, generation_config=, the checkpoint's
    generation config) and no max_new_tokens: every output is cut at 20 new tokens, the library default (a
    checkpoint that leaves generation at the defaults, as EbanLee/kobart-summary-v3 does)."""
    given = (kwargs.get("max_length"), getattr(kwargs.get("generation_config"), "max_length", None),
             model.generation_config.max_length)
    if cfg.max_new_tokens is None and all(length is None for length in given):
        warn(f"Using the model-agnostic default `max_length` (={cfg.max_length}) to control the generation length. "
             "We recommend setting `max_new_tokens` to control the maximum length of the generation.")


def check_encoder_ids(cfg: GenerationConfig, input_ids: torch.Tensor | None, vocab_size: int) -> None:
    """The encoder repetition penalty and n-gram ban index the decoder's scores [R, V] with source ids: a source id
    past a decoder vocabulary of its own (Marian with separate vocabularies) is refused here, where transformers
    fails inside its processor (one host read, only with these settings); so are these settings without source ids
    (input_ids None: encoder_outputs alone), where transformers indexes with -100."""
    used = [name for name, on in (("encoder_repetition_penalty", cfg.encoder_repetition_penalty not in (None, 1.0)),
                                  ("encoder_no_repeat_ngram_size", cfg.encoder_no_repeat_ngram_size > 0)) if on]
    if used and input_ids is None:
        raise ValueError(f"{' and '.join(used)} read{'' if len(used) > 1 else 's'} the source's ids, which "
                         "encoder_outputs alone does not hold: pass input_ids (the ids the encoder read) beside it, "
                         f"or leave {'them' if len(used) > 1 else 'it'} unset")
    if used and input_ids.numel() and int(input_ids.max()) >= vocab_size:
        raise ValueError(f"{' and '.join(used)} look the source's ids up in the decoder's vocabulary, but input_ids "
                         f"holds id {int(input_ids.max())} and this model's decoder has a vocabulary of its own "
                         f"({vocab_size} tokens); leave {'them' if len(used) > 1 else 'it'} unset for this model")


def rows_per_input(cfg: GenerationConfig) -> int:
    """Decoder rows per input: its beams, or its return sequences when not beam searching (rows_setting names it)."""
    return cfg.num_beams if cfg.num_beams > 1 else cfg.num_return_sequences


def host_search(cfg: GenerationConfig) -> bool:
    """Whether the settings run a beam search that steps on the host, generate's alone and eager, as transformers
    4.55 ran it: group beam search (num_beam_groups > 1) or constrained beam search (force_words_ids / constraints)."""
    return group_beam_search.runs(cfg) or constrained_beam_search.runs(cfg)


def rows_setting(cfg: GenerationConfig) -> str:
    """The setting rows_per_input counts: "num_beams" when beam searching, else "num_return_sequences"."""
    return "num_beams" if cfg.num_beams > 1 else "num_return_sequences"


def start_search(cfg: GenerationConfig, input_ids: torch.Tensor, vocab_size: int, device: torch.device,
                 generator: torch.Generator | None = None, independent: bool = False,
                 prompt: torch.Tensor | None = None, stop_strings: StopStrings | None = None,
                 **user_processors) -> BeamSearch | SampleSearch | group_beam_search.GroupBeamSearch:
    """The search for resolved settings over input_ids [B, S] (the encoder input, which the encoder n-gram
    processor reads): BeamSearch when num_beams > 1 (GroupBeamSearch with num_beam_groups > 1, ConstrainedBeamSearch
    with constraints: host_search), else SampleSearch (greedy or sampling). independent: each
    input stops as it would alone (seq2seq_kit.Engine's searches, see generation/search.py). prompt: prepare's
    decoder prompt [B, P] (None: the start token); the caller has fed its tokens but the last to the cache.
    stop_strings: cfg.stop_strings' tables (stop_strings_of), or None."""
    rows = rows_per_input(cfg)
    if prompt is None:
        prompt = torch.full((input_ids.shape[0], 1), cfg.decoder_start_token_id, dtype=torch.long, device=device)
    if host_search(cfg):                            # processors run on one group's rows at a time
        processors = build_processors(cfg, input_ids, rows // cfg.num_beam_groups, vocab_size, prompt.shape[1],
                                      **user_processors)
        search = (constrained_beam_search.ConstrainedBeamSearch if constrained_beam_search.runs(cfg)
                  else group_beam_search.GroupBeamSearch)
        return search(cfg, processors, prompt, device)
    processors = build_processors(cfg, input_ids, rows, vocab_size, prompt.shape[1], **user_processors)
    search = BeamSearch if cfg.num_beams > 1 else SampleSearch
    return search(cfg, processors, prompt, device, generator, independent, stop_strings)


def start_slots(cfg: GenerationConfig, inputs: int, max_source: int, max_length: int, vocab_size: int,
                device: torch.device, generator: torch.Generator | None = None, prompt_len: int = 1,
                stop_strings: StopStrings | None = None) -> BeamSearch | SampleSearch:
    """A fixed-capacity independent search for these settings (any max_length / min_length): `inputs` empty input
    slots at the widest shapes a request can need (sequences of max_length, encoder n-gram windows of max_source
    tokens). Requests enter with put(slot, their one-input start_search) and leave with vacate(slot); no shape
    ever changes, so its step can be captured in a CUDA graph (seq2seq_kit.Engine's fixed capacity). prompt_len:
    the decoder prompt's length of every request it takes (1: the start token alone), which its lengths count;
    stop_strings: the tables of cfg.stop_strings, which every request it takes shares."""
    ids = torch.full((inputs, max_source), -1, dtype=torch.long, device=device)   # windows of -1: never match
    prompt = torch.full((inputs, prompt_len), cfg.decoder_start_token_id, dtype=torch.long, device=device)  # [B, P]
    search = start_search(replace(cfg, max_length=max_length), ids, vocab_size, device, generator, independent=True,
                          prompt=prompt, stop_strings=stop_strings)
    search.empty()
    return search


def result(cfg: GenerationConfig, search: BeamSearch | SampleSearch, inputs: list[int] | None = None,
           trace: Trace | None = None):
    """What generate returns for a finished search: sequences [B * num_return_sequences, T], or a GenerateOutput
    when cfg.return_dict_in_generate; inputs: only these inputs' (an independent search's, finished); trace: the
    attentions / hidden states generate recorded (None: not asked for)."""
    sequences, sequences_scores, beam_indices = search.output(inputs)
    if not cfg.return_dict_in_generate:
        return sequences
    scores, logits = (search.steps_recorded(name, inputs) for name in ("scores", "logits"))
    traced = {} if trace is None else trace.outputs(search.prompt_len)
    return GenerateOutput(sequences, sequences_scores if cfg.output_scores else None, scores, logits, beam_indices,
                          **traced)


def user_processors(logits_processor, prefix_allowed_tokens_fn) -> dict:
    """generate's logits_processor and prefix_allowed_tokens_fn, checked, as build_processors takes them ({} when
    neither is given)."""
    custom = {}
    if logits_processor is not None:
        if not isinstance(logits_processor, (list, tuple)) or not all(map(callable, logits_processor)):
            raise TypeError("logits_processor must be a list of callables (input_ids, scores) -> scores, e.g. "
                            "transformers' LogitsProcessorList")
        if logits_processor:
            custom["logits_processor"] = list(logits_processor)
    if prefix_allowed_tokens_fn is not None:
        if not callable(prefix_allowed_tokens_fn):
            raise TypeError("prefix_allowed_tokens_fn must be a callable (input index, tokens) -> allowed token ids")
        custom["prefix_allowed_tokens_fn"] = prefix_allowed_tokens_fn
    return custom


def deadline(max_time: float | None) -> float:
    """time.monotonic() once max_time seconds from now have passed (inf: None, or a limit no float clock reaches,
    e.g. 10**400, which transformers' MaxTimeCriteria takes as no limit; the sum would overflow)."""
    if max_time is None or max_time >= sys.float_info.max:
        return math.inf
    return time.monotonic() + max_time


def stop_strings_of(cfg: GenerationConfig, tokenizer, device: torch.device,
                    fix: str = "generate(..., stop_strings=..., tokenizer=tokenizer)") -> StopStrings | None:
    """cfg.stop_strings' tables over the tokenizer's vocabulary (None without stop strings; [] is none). Without a
    tokenizer, a ValueError as transformers raises one, in its own words: it names `fix`, where the caller takes
    one."""
    if not cfg.stop_strings:
        return None
    if tokenizer is None:
        raise ValueError(f"stop_strings needs the model's tokenizer to read the tokens as text: pass it as {fix} "
                         "(a pipeline passes its own)")
    needed = ("get_vocab", "convert_ids_to_tokens", "convert_tokens_to_string")
    if not all(callable(getattr(tokenizer, name, None)) for name in needed) or not callable(tokenizer):
        raise TypeError(f"tokenizer must be a tokenizer (seq2seq_kit's AutoTokenizer or transformers'), with "
                        f"{', '.join(needed)}; got {type(tokenizer).__name__}")
    return StopStrings.of(tokenizer, cfg.stop_strings, device)


def check_streamer(streamer, cfg: GenerationConfig) -> None:
    """generate's streamer: None, or an object with put and end (transformers' BaseStreamer), not with beams."""
    if streamer is None:
        return
    if not (callable(getattr(streamer, "put", None)) and callable(getattr(streamer, "end", None))):
        raise TypeError(f"streamer must have put(token_ids) and end() methods (as transformers' TextStreamer), got "
                        f"{type(streamer).__name__}")
    if cfg.num_beams > 1:
        raise ValueError("`streamer` cannot be used with beam search (as in transformers): set num_beams=1")


def check_generator(generator, device: torch.device) -> None:
    """generator: None, or a torch.Generator on the model's kind of device (sampling draws there)."""
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(f"generator must be a torch.Generator or None, got {type(generator).__name__}")
    if generator is not None and generator.device.type != device.type:
        raise ValueError(f"generator is a {generator.device.type} generator and the model is on {device}: sampling "
                         f"draws on the model's device; pass torch.Generator(device={str(device)!r}).manual_seed(...)")


def settings(model: Seq2SeqModel, kwargs: dict, prompt: torch.Tensor | None = None) -> GenerationConfig:
    """kwargs over kwargs["generation_config"] (a GenerationConfig, as transformers' generate takes one) over
    model.generation_config -> resolved; prompt: a checked decoder prompt [B, P] the lengths count (see
    config.resolve)."""
    config = model.config
    if kwargs.get("generation_config") is None:
        check_model_config(config)
    base = model.generation_config
    if base is None:
        raise ValueError("model.generation_config is None, and generate starts from it: give the model one, e.g. "
                         "model.generation_config = GenerationConfig(decoder_start_token_id=2, eos_token_id=2, "
                         "pad_token_id=1) (a model built from a config has its special token ids there)")
    if kwargs.get("generation_config") is not None:
        base = check_config(kwargs["generation_config"], "generation_config").over(check_config(
            base, "model.generation_config"))
    kwargs = {k: v for k, v in kwargs.items() if k != "generation_config"}
    cfg = resolve(base, kwargs, vocab_size=config.decoder_vocab_size,
                  max_position_embeddings=config.max_position_embeddings, prompt=prompt)
    cfg.watermarking_config = watermark_vocabulary(cfg.watermarking_config, config)
    cfg.output_scores = cfg.output_scores and cfg.return_dict_in_generate     # scores are only returned in a dict
    cfg.output_logits = cfg.output_logits and cfg.return_dict_in_generate     # likewise
    cfg.output_attentions = cfg.output_attentions and cfg.return_dict_in_generate          # likewise
    cfg.output_hidden_states = cfg.output_hidden_states and cfg.return_dict_in_generate    # likewise
    return cfg


def watermark_vocabulary(watermark: dict | None, config) -> dict | None:
    """The watermark's settings and the vocabulary its green lists are drawn from (vocab_size): config.vocab_size,
    as transformers' (the source's: ids of a Marian decoder's larger vocabulary of its own are never green);
    refused where it is the larger, as transformers' green ids would index past the logits."""
    if watermark is None:
        return None
    if config.vocab_size > config.decoder_vocab_size:
        raise ValueError(f"watermarking_config: the green lists are drawn from the model's vocab_size "
                         f"({config.vocab_size}, as transformers draws them), more ids than its decoder's "
                         f"vocabulary has ({config.decoder_vocab_size}); this model cannot be watermarked")
    return {**watermark, "vocab_size": config.vocab_size}


# settings of the forward as well as generate's, which a model config may hold (transformers' config has them)
FORWARD_FLAGS = ("output_attentions", "output_hidden_states")


def check_model_config(config) -> None:
    """Generation settings assigned to model.config (the legacy way, e.g. model.config.num_beams = 4, or
    forced_bos_token_id: ModelConfig.generation_settings_assigned) are refused, as transformers 5 refuses them:
    generate reads model.generation_config, so they would be silently ignored. The forward's output flags
    (output_attentions, output_hidden_states) are the config's own, as in transformers."""
    declared = {f.name for f in fields(config)} if is_dataclass(config) else set()
    legacy = {k: v for k, v in vars(config).items()
              if k in GENERATE_KWARGS and k not in declared and k not in FORWARD_FLAGS and v is not None}
    legacy.update(config.generation_settings_assigned())
    if legacy:
        raise ValueError(f"model.config has generation settings {legacy}, which generate does not read; set them on "
                         "model.generation_config (or pass them to generate) and delete them from model.config")


def use_cuda_graph(cuda_graph: bool | None, device: torch.device) -> bool:
    """generate's cuda_graph argument, checked: None means on for a CUDA device."""
    if cuda_graph is None:
        return device.type == "cuda"
    if cuda_graph is True and device.type != "cuda":
        raise ValueError(f"cuda_graph=True needs a model on a CUDA device; this one is on {device}")
    if not isinstance(cuda_graph, bool):
        raise TypeError(f"cuda_graph must be True, False or None, got {cuda_graph!r}")
    return cuda_graph

