"""What a request to the server may send: the bodies of POST /summarize and /translate as pydantic models (strict
types, unknown fields refused; the generate settings derived from GenerationConfig), how they become generate's
arguments (split_parameters), and how a body's faults are named for the client (describe_errors,
parameter_named): every error answer says which field is wrong and what to send instead.
"""

from __future__ import annotations

import json
import typing
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, create_model

from ..generation.config import GENERATE_KWARGS, GenerationConfig

# GenerationConfig's settings a client may not send: the token ids the checkpoint fixes (forced_bos_token_id is
# also the target language, which /translate sets from tgt_lang), the flags that change the answer's form, and
# prompt lookup's, group and constrained beam search's and contrastive search's (generate's alone: the engine serving
# every request steps one token per row, every request together), and the watermark's (a checkpoint's to set: its key
# is the operator's).
# Every other setting is a request parameter, derived from GenerationConfig (one list of settings, not two): a
# setting generation gains is served at once, so one that clients must not set belongs here.
SERVER_OWNED = ("bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id",
                "forced_eos_token_id", "output_scores", "output_logits", "output_attentions", "output_hidden_states",
                "return_dict_in_generate", "prompt_lookup_num_tokens", "max_matching_ngram_size", "num_beam_groups",
                "diversity_penalty", "force_words_ids", "constraints", "penalty_alpha", "watermarking_config")
# stop_strings one request may send: each new set builds its tables (a few MB, up to ~0.2 s at these bounds) once, in a
# worker thread (app.Service.generate)
STOP_STRINGS, STOP_STRING_CHARS = 8, 64
StopString = Annotated[str, Field(max_length=STOP_STRING_CHARS)]
# Where GenerationConfig's annotation is wider than what generate takes, the narrower type (for the OpenAPI page).
# JSON has no tuples (and strict types take no list for one): those settings' JSON forms.
NARROWER = {"early_stopping": bool | Literal["never"] | None,
            "stop_strings": StopString | Annotated[list[StopString], Field(max_length=STOP_STRINGS)] | None,
            "sequence_bias": list[list[list[int] | float]] | None,             # [[[token ids], bias], ...]
            "exponential_decay_length_penalty": list[int | float] | None}      # [start, factor]


def generate_parameters_model() -> type[BaseModel]:
    """GenerateParameters: every public GenerationConfig setting but SERVER_OWNED, with its annotation (so a
    setting generate gains is a parameter here too), plus seed. Strict types, unknown fields refused."""
    hints = typing.get_type_hints(GenerationConfig)
    fields = {name: (NARROWER.get(name, hints[name]), None) for name in GENERATE_KWARGS if name not in SERVER_OWNED}
    seed = (int | None, Field(None, ge=0, lt=2**64,     # TGI's u64, as the command line's --seed and corpus jobs'
                              description="with do_sample: seed of each input's own sampling generator"))
    return create_model(
        "GenerateParameters", __config__=ConfigDict(extra="forbid", strict=True), **fields, seed=seed,
        __doc__="The generate() settings a client may send: plain values only (no generator, no tensors, no "
                "token-id overrides); each is checked by generate's own rules. Unset ones take the checkpoint's "
                "task defaults.")


GenerateParameters = generate_parameters_model()


class TaskParameters(GenerateParameters):
    """What the Inference API's summarization and translation parameters share: generate settings (flat, or under
    generate_parameters as the newer API sends them), truncation and clean_up_tokenization_spaces."""
    truncation: bool | Literal["do_not_truncate", "longest_first", "only_first", "only_second"] | None = Field(
        None, description="true or null: cut inputs longer than the model takes; false / do_not_truncate: 413")
    clean_up_tokenization_spaces: bool | None = Field(
        None, description="true: no space before punctuation or in English contractions; null (as huggingface_hub's "
                          "typed parameters send it unset): the pipeline's default, false")
    generate_parameters: GenerateParameters | None = None
    details: bool = Field(False, description='with "stream": true, the last event\'s details (Text Generation '
                                             "Inference's): finish_reason (eos_token, stop_sequence or length), "
                                             "generated_tokens, input_length, seed")


class SummarizeParameters(TaskParameters):
    """The Inference API's summarization parameters, and the long-document strategy's."""
    strategy: Literal["truncate", "map_reduce"] = Field(
        "truncate", description="map_reduce: a text longer than the model's window is summarized from the summaries "
                                "of its chunks of whole sentences (seq2seq_kit.long_documents)")
    chunk_overlap: int = Field(0, ge=0, description="map_reduce: sentences repeated from one chunk to the next")
    map_parameters: GenerateParameters | None = Field(
        None, description="map_reduce: the chunk stage's settings over the others (e.g. a smaller max_length)")
    return_chunks: bool = Field(False, description="map_reduce: add each chunk's span, text and summary_text")


class TranslateParameters(TaskParameters):
    """The Inference API's translation parameters."""
    src_lang: str | None = Field(None, description="the source language code as the model's tokenizer takes it "
                                                   "(en, eng_Latn, en_XX); required unless the model is a Marian "
                                                   "(which has none; GET /info lists the codes)")
    tgt_lang: str | None = Field(None, description="the target language code (fr, fra_Latn, fr_XX; a Marian "
                                                   "model's fra); required when the model has several (GET /info)")


class Options(BaseModel):
    """The Inference API's "options" (older huggingface_hub clients and the HF docs' examples send them): taken,
    and without effect here: the model is loaded before any request is answered (nothing to wait for), and the
    server keeps no response cache (nothing to use)."""
    model_config = ConfigDict(extra="forbid", strict=True)
    use_cache: bool = Field(True, description="accepted, without effect: the server keeps no response cache")
    wait_for_model: bool = Field(False, description="accepted, without effect: the model is always loaded")


class SummarizeRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: str | list[str] = Field(description="a text, or a list of texts summarized each on its own")
    parameters: SummarizeParameters | None = None
    options: Options | None = None
    stream: bool = Field(False, description="true: the summary of one text as it is generated, in Text Generation "
                                            "Inference's server-sent events (greedy or sampling: num_beams 1, which "
                                            "a checkpoint's own num_beams gives way to)")


class TranslateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    inputs: str | list[str] = Field(description="a text, or a list of texts translated each on its own")
    parameters: TranslateParameters | None = None
    options: Options | None = None
    stream: bool = Field(False, description="true: the translation of one text as it is generated, in Text Generation "
                                            "Inference's server-sent events (greedy or sampling: num_beams 1, which "
                                            "a checkpoint's own num_beams gives way to)")


class Summary(BaseModel):
    summary_text: str
    chunks: list[dict] | None = None


class Translation(BaseModel):
    translation_text: str


class ErrorBody(BaseModel):
    """Every error answer's body: what is wrong and the fix, the field at fault (null when it is no one field),
    and for a 422 each field's problem."""
    error: str
    field: str | None
    errors: dict[str, str] | None = None


# the task routes' error answers, for the OpenAPI page (the 422 is ours, not FastAPI's {"detail": [...]})
ERROR_RESPONSES = {status: {"model": ErrorBody, "description": what} for status, what in (
    (401, "no or a wrong Authorization: Bearer key (--api-key-env)"),
    (404, "the other task's route: this server's model answers the one /info names"),
    (408, "the body did not arrive in time"),
    (413, "a body over the size limit, more inputs than the queue holds, or (truncation false) an input over the "
          "model's length"),
    (422, "a field of the wrong type or value, or an unknown parameter: `field` names it"),
    (503, "loading, draining, or the engine's queue full (Retry-After)"),
    (504, "past the request timeout"))}
# and with "stream": true, the 200's other form (streaming.py)
TASK_RESPONSES = {**ERROR_RESPONSES, 200: {
    "description": 'The answer; with "stream": true, server-sent events: one per generated token, the last with '
                   "generated_text (Text Generation Inference's form)",
    "content": {"text/event-stream": {"schema": {"type": "string"}}}}}


PARAMETERS = {"/summarize": SummarizeParameters, "/translate": TranslateParameters}   # a route -> its parameters
BODY_FIELDS = {"inputs", "parameters", "generate_parameters", "options", "stream", *Options.model_fields,
               *(n for p in PARAMETERS.values() for n in p.model_fields)}


def split_parameters(p: TaskParameters) -> tuple[dict, bool, bool | None]:
    """(generate kwargs incl. seed, truncation for preprocess, clean_up_tokenization_spaces: None is the pipeline's
    default, as pipe() takes it); only the settings the client sent (an explicit null included: it means what None
    means to generate)."""
    kwargs = p.generate_parameters.model_dump(exclude_unset=True) if p.generate_parameters else {}
    kwargs.update(p.model_dump(include=set(GenerateParameters.model_fields), exclude_unset=True))
    truncation = p.truncation if not isinstance(p.truncation, str) else p.truncation != "do_not_truncate"
    return kwargs, (True if truncation is None else truncation), p.clean_up_tokenization_spaces


def describe_errors(errors, parameter_names: tuple[str, ...]) -> dict[str, str]:
    """pydantic's errors -> {field: what is wrong and what to send instead}, e.g. {"parameters.num_beams":
    "parameters.num_beams: Input should be a valid integer (got \"4\")"}; parameter_names: the route's."""
    problems: dict[str, list[str]] = {}
    for error in errors:
        loc, kind = error["loc"], error["type"]
        path = [p for p in loc[:-1] if isinstance(p, int) or p in BODY_FIELDS] + [loc[-1]]
        if not (isinstance(loc[-1], int) or loc[-1] in BODY_FIELDS) and kind != "extra_forbidden":
            path.pop()                                # a union's variant ("str", "list[str]"), not a field
        name = ".".join(map(str, path[1:] if path[:1] == ["body"] else path)) or "body"
        if kind == "extra_forbidden":
            within = str(path[-2]) if len(path) > 1 else "the body"
            takes = {"the body": ("inputs", "parameters", "options", "stream"), "parameters": parameter_names,
                     "options": tuple(Options.model_fields)}.get(
                within, tuple(GenerateParameters.model_fields))          # generate_parameters, map_parameters
            message = f"unknown field; {within} takes: {', '.join(takes)}"
        elif kind == "missing":
            message = 'required: send {"inputs": "text" or ["text", ...], "parameters": {...}}'
        elif kind == "json_invalid":
            name, message = "body", f"not valid JSON ({error.get('ctx', {}).get('error', error['msg'])})"
        elif name == "body":
            message = 'send a JSON object {"inputs": ..., "parameters": {...}} with Content-Type: application/json'
        else:
            message = f"{error['msg']} (got {json.dumps(error.get('input'), default=repr)[:80]})"
        problems.setdefault(name, [])
        if message not in problems[name]:
            problems[name].append(message)
    # a union's best branch: the fields no other field lies within (found in linear time: comparing every pair of
    # fields took 30 s for a body of 16,000 bad items)
    within = {name.rsplit(".", k)[0] for name in problems for k in range(1, name.count(".") + 1)}
    deepest = [name for name in problems if name not in within]
    return {name: f"{name}: " + "; or ".join(problems[name]) for name in deepest}


def parameter_named(message: str, sent=()) -> str:
    """The body field a generate() error message is about: of the parameters it names, the first the client sent
    (a max_new_tokens message names max_length first), else the first; else "parameters"."""
    named = [n for _, n in sorted((message.find(n), n) for n in GenerateParameters.model_fields if n in message)]
    chosen = next((n for n in named if n in sent), named[0] if named else None)
    return "parameters" if chosen is None else f"parameters.{chosen}"
