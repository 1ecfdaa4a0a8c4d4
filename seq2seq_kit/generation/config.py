"""GenerationConfig: generation settings and their defaults, resolved as transformers 5.25 resolves them.

Where a checkpoint's settings come from (transformers' `GenerationMixin.adjust_generation_fn`):
  1. `generation_config.json`, if the checkpoint has one: every key in it; config.json is then not read;
  2. otherwise the generation keys of `config.json` (`GenerationConfig.from_model_config`): e.g.
     sshleifer/distilbart-cnn-12-6 keeps num_beams 4, length_penalty 2.0, max_length 142, min_length 56,
     no_repeat_ngram_size 3, early_stopping true, forced_bos_token_id 0 there, next to its special token ids.
At generate time (`_prepare_generation_config`): explicit kwargs > the checkpoint's non-None settings >
LIBRARY_DEFAULTS. Lengths count the decoder prompt: P = 1, the start token, or generate's decoder_input_ids
(generation/decoder_prompt.py):
  max_new_tokens given       -> max_length = max_new_tokens + P
  max_length set nowhere     -> max_length = min(20 + P, max_position_embeddings)   (20 new tokens)
  otherwise                  -> max_length as given (total length, prompt included)
  min_new_tokens given       -> min_length = min_new_tokens + P
"""

from __future__ import annotations

import json
import math
import os
import sys
from dataclasses import MISSING, asdict, dataclass, field, fields, replace
from numbers import Real
from pathlib import Path

from ..jsonfile import read_json_object, write_json
from ..user_warnings import warn
from . import constraints, decoder_prompt


@dataclass
class GenerationConfig:
    # None = not set here; a resolved config (see `resolve`) has the effective values.
    max_length: int | None = None
    max_new_tokens: int | None = None
    min_length: int | None = None
    min_new_tokens: int | None = None
    max_time: float | None = None                       # seconds of decoding, then the step running is the last
    prompt_lookup_num_tokens: int | None = None         # one row: tokens guessed and checked per pass
    max_matching_ngram_size: int | None = None          # the longest n-gram prompt lookup matches (None or 0: 2)
    # read from a draft's own generation_config when it is generate's assistant_model (generation/draft.py), as
    # transformers reads them (generate refuses them as arguments: DRAFT_SETTINGS)
    num_assistant_tokens: int | None = None             # the most tokens a guess holds
    num_assistant_tokens_schedule: str | None = None    # "constant", "heuristic" or "heuristic_transient"
    assistant_confidence_threshold: float | None = None  # a guess ends after a token drawn under this probability
    stop_strings: str | list[str] | None = None         # a row ends once its text ends in one (needs the tokenizer)
    num_beams: int | None = None
    num_beam_groups: int | None = None                  # > 1: group (diverse) beam search over num_beams
    diversity_penalty: float | None = None              # what a token chosen by an earlier group costs a group
    # words the output must contain (constrained beam search): [[ids], ...] phrases, or [[[ids], [ids]], ...] where
    # one word of each entry will do
    force_words_ids: list | None = None
    constraints: list | None = None     # constraint objects (generation/constraints.py; transformers' too), likewise
    length_penalty: float | None = None
    early_stopping: bool | str | None = None            # True, False or "never"
    num_return_sequences: int | None = None
    do_sample: bool | None = None
    temperature: float | None = None
    top_k: int | None = None
    penalty_alpha: float | None = None                  # > 0 with top_k > 1, greedy: contrastive search
    top_p: float | None = None
    min_p: float | None = None
    top_h: float | None = None
    typical_p: float | None = None
    epsilon_cutoff: float | None = None
    eta_cutoff: float | None = None
    repetition_penalty: float | None = None
    encoder_repetition_penalty: float | None = None
    no_repeat_ngram_size: int | None = None
    encoder_no_repeat_ngram_size: int | None = None
    bad_words_ids: list[list[int]] | None = None
    # {(token ids): bias} or [[[token ids], bias], ...] (the form a JSON file holds)
    sequence_bias: dict[tuple[int, ...], float] | list[tuple[list[int], float]] | None = None
    suppress_tokens: list[int] | None = None
    begin_suppress_tokens: list[int] | None = None
    exponential_decay_length_penalty: tuple[int, float] | None = None     # (start, factor); a list in JSON
    watermarking_config: dict | None = None     # green-list watermark (WATERMARK's keys; transformers' config too)
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = None
    remove_invalid_values: bool | None = None
    renormalize_logits: bool | None = None
    output_scores: bool | None = None
    output_logits: bool | None = None
    output_attentions: bool | None = None               # (with return_dict_in_generate) see generation/traces.py
    output_hidden_states: bool | None = None            # likewise
    return_dict_in_generate: bool | None = None
    bos_token_id: int | None = None
    eos_token_id: int | list[int] | None = None
    pad_token_id: int | None = None
    decoder_start_token_id: int | None = None
    # checkpoint settings transformers would apply but seq2seq_kit does not implement (generate refuses them)
    unsupported: dict = field(default_factory=dict, repr=False)

    def __init__(self, **settings) -> None:
        """Keyword settings, as transformers' GenerationConfig(**kwargs). A transformers-only setting (UNSUPPORTED)
        is kept as from_dict keeps it: in `unsupported` where it would act (generate refuses it), dropped at its
        no-op value (guidance_scale=1.0, low_memory=False). Any other key is a TypeError (transformers keeps it as
        an attribute, which nothing here would read)."""
        transformers_only = {k: settings.pop(k) for k in list(settings) if k in UNSUPPORTED}
        if unknown := sorted(set(settings) - SETTING_NAMES):
            raise TypeError(f"GenerationConfig got {', '.join(map(repr, unknown))}: not generation settings; "
                            f"settings: {', '.join(GENERATE_KWARGS + DRAFT_SETTINGS)}")
        for f in fields(self):
            default = f.default_factory() if f.default_factory is not MISSING else f.default
            setattr(self, f.name, settings.get(f.name, default))
        for name, value in transformers_only.items():
            setattr(self, name, value)

    def __setattr__(self, name: str, value) -> None:
        """Only the settings above: transformers' GenerationConfig takes any attribute, so
        `model.generation_config.suppress_tokens = [...]` would otherwise be silently ignored here. A
        transformers-only setting (UNSUPPORTED) goes where __init__ puts it."""
        if name in UNSUPPORTED:
            kept = {k: v for k, v in self.unsupported.items() if k != name}
            self.unsupported = {**kept, **in_effect({name: value}, None)}
            return
        if name not in SETTING_NAMES:
            raise AttributeError(f"GenerationConfig.{name} is not a generation setting; settings: "
                                 f"{', '.join(GENERATE_KWARGS + DRAFT_SETTINGS)}")
        if name == "watermarking_config" and not isinstance(value, (dict, type(None))) and hasattr(value, "to_dict"):
            value = value.to_dict()                 # transformers' WatermarkingConfig: kept as its settings (JSON)
        super().__setattr__(name, value)

    def __getattr__(self, name: str):
        """A transformers-only setting (UNSUPPORTED) reads as set, else its no-op value, as transformers' reads."""
        if name in UNSUPPORTED:
            return self.__dict__.get("unsupported", {}).get(name, UNSUPPORTED[name])
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    @classmethod
    def from_dict(cls, d: dict, *, return_unused_kwargs: bool = False, **kwargs):
        """Known keys are taken; transformers-only keys (UNSUPPORTED) that are set go to `unsupported` (generate
        refuses those that would act, in_effect); others ignored. kwargs: settings over d's, applied as update()
        applies them; with return_unused_kwargs=True, (config, the kwargs update() left unused), as transformers
        returns them; else an unused kwarg is a TypeError (transformers keeps any key as an attribute, which nothing
        here would read)."""
        cfg = cls(**{k: v for k, v in d.items() if (k in SETTING_NAMES and k != "unsupported") or k in UNSUPPORTED})
        return cfg._overridden(kwargs, return_unused_kwargs)

    def _overridden(self, kwargs: dict, return_unused_kwargs: bool):
        """from_dict's and from_pretrained's keyword settings applied (update())."""
        unused = self.update(**kwargs) if kwargs else {}
        if return_unused_kwargs:
            return self, unused
        if unused:
            raise TypeError(f"{sorted(unused)}: not generation settings, and GenerationConfig keeps no other keys; "
                            f"settings: {', '.join(GENERATE_KWARGS + DRAFT_SETTINGS)} (return_unused_kwargs=True "
                            "returns the others)")
        return self

    def update(self, defaults_only: bool = False, **kwargs) -> dict:
        """Set the settings kwargs name (defaults_only: only those not set) and return the other kwargs, unused, as
        transformers' update does. A transformers-only setting (UNSUPPORTED) is used as from_dict uses it: kept in
        `unsupported` (generate refuses it where it would act), or dropped from there at its no-op value. The config
        is validated (validate()) with the new values before any is set: a ValueError leaves it as it was."""
        settings = {k: v for k, v in kwargs.items() if k in SETTING_NAMES and k != "unsupported"}
        transformers_only = {k: v for k, v in kwargs.items() if k in UNSUPPORTED}
        unused = {k: v for k, v in kwargs.items() if k not in settings and k not in transformers_only}
        if defaults_only:
            settings = {k: v for k, v in settings.items() if getattr(self, k) is None}
            transformers_only = {k: v for k, v in transformers_only.items() if k not in self.unsupported}
        replace(self, **settings).validate()
        for name, value in settings.items():
            setattr(self, name, value)
        for name, value in transformers_only.items():
            setattr(self, name, value)
        return unused

    def validate(self) -> None:
        """generate's checks that need no model, on these settings over LIBRARY_DEFAULTS: types and ranges, their
        combinations (num_return_sequences and num_beams, ...), token ids >= 0 (the vocabulary is the model's); a
        ValueError naming the setting, where transformers' validate raises for its own errors (and warns for others,
        which generate here refuses, e.g. num_beams=0). Not checked: the unsupported settings (generate(...=None)
        runs without them) and what the model decides (positions, vocabulary, the special token ids it adds)."""
        cfg = replace(GenerationConfig(), **_with_defaults(self.to_dict()))
        _check_int("max_new_tokens", cfg.max_new_tokens, 1, allow_none=True)
        _check_int("max_length", cfg.max_length, -math.inf)
        _check_int("min_new_tokens", cfg.min_new_tokens, 0, allow_none=True)
        _absolute_lengths(cfg, 1, self.max_length is None)                      # 1: the decoder start token
        _check_int("max_length", cfg.max_length, 2, note=" (max_new_tokens + 1 when max_new_tokens is given: the "
                                                          "decoder start token counts as 1)")
        _check_settings(cfg, math.inf)
        _check_bounds(cfg, math.inf)

    @classmethod
    def from_model_config(cls, config) -> "GenerationConfig":
        """The generation keys of a model config: a config.json dict, or a config object with to_dict() (a model's
        config, seq2seq_kit's or transformers') (transformers' `GenerationConfig.from_model_config`)."""
        if not isinstance(config, dict):
            if not callable(getattr(config, "to_dict", None)):
                raise TypeError(f"from_model_config takes a model config (model.config) or its dict, got a "
                                f"{type(config).__name__}")
            config = config.to_dict()
        config = {k: v for k, v in config.items() if v is not None}
        cfg = cls.from_dict(config)
        if config.get("force_bos_token_to_be_generated", False):      # legacy BART key
            cfg.forced_bos_token_id = cfg.bos_token_id
        if not cfg.return_dict_in_generate and any(_file_form(k, config.get(k)) is True for k in OUTPUT_FLAGS):
            cfg.return_dict_in_generate = True
        return cfg

    @classmethod
    def from_pretrained(cls, path: str | Path, config_file_name: str | os.PathLike | None = None, *,
                        model_config=None, return_unused_kwargs: bool = False, **kwargs):
        """From a checkpoint directory: its config_file_name (a generation config's JSON, as transformers names the
        file: several may sit in one folder), else generation_config.json, else config.json (else `model_config`,
        if given); kwargs: settings over the file's, as from_dict takes them (and return_unused_kwargs)."""
        return cls._from_files(path, config_file_name, model_config)._overridden(kwargs, return_unused_kwargs)

    @classmethod
    def _from_files(cls, path: str | Path, config_file_name, model_config) -> "GenerationConfig":
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a generation config is loaded from a checkpoint directory (str or path), got a "
                            f"{type(path).__name__}; pass its path")
        path = Path(path)
        if not path.is_dir() and model_config is None:
            raise FileNotFoundError(f"{str(path)!r} is no checkpoint directory: GenerationConfig.from_pretrained reads "
                                    "one (not a Hub id: load the model, whose generation_config it is, or pass the "
                                    "folder seq2seq_kit.hub.resolve(id) gives)")
        if config_file_name is not None:
            return cls._from_named_file(path, config_file_name)
        gen_file, config_file = path / "generation_config.json", path / "config.json"
        if gen_file.is_file():
            return check_types(cls.from_dict(read_json_object(gen_file)), gen_file)
        if config_file.is_file():
            return check_types(cls.from_model_config(read_json_object(config_file)), config_file)
        if model_config is not None:
            return cls.from_model_config(model_config)
        raise FileNotFoundError(f"{path} has neither generation_config.json nor config.json")

    @classmethod
    def _from_named_file(cls, path: Path, config_file_name) -> "GenerationConfig":
        """from_pretrained's config_file_name in `path`: a model's config.json read for its generation keys, any
        other file as a generation config."""
        if not isinstance(config_file_name, (str, os.PathLike)):
            raise TypeError(f"config_file_name is a file name in the checkpoint directory (str or path), got a "
                            f"{type(config_file_name).__name__} (a model config goes to model_config=)")
        file = path / config_file_name
        if not file.is_file():
            raise FileNotFoundError(f"{path} has no {config_file_name} (config_file_name names a generation config "
                                    "file in the checkpoint directory)")
        read = cls.from_model_config if Path(config_file_name).name == "config.json" else cls.from_dict
        return check_types(read(read_json_object(file)), file)

    def over(self, base: GenerationConfig) -> GenerationConfig:
        """This config's settings, base's where this one sets none: generate(..., generation_config=this) over the
        model's (transformers: `generation_config.update(**model_config.to_dict(), defaults_only=True)`)."""
        merged = GenerationConfig(**{**base.to_dict(), **self.to_dict()})
        merged.unsupported = {**base.unsupported, **self.unsupported}
        return merged

    def __repr__(self) -> str:
        """The settings that are set, as transformers' repr shows only what differs from its defaults."""
        return f"GenerationConfig({', '.join(f'{k}={v!r}' for k, v in self.to_dict().items())})"

    def to_dict(self) -> dict:
        """The settings that are set (not None)."""
        d = asdict(self)
        d.pop("unsupported")
        return {k: v for k, v in d.items() if v is not None}

    def saved(self) -> dict:
        """What generation_config.json holds: the settings that are set, and the unsupported ones it was read with (so
        the saved checkpoint generates as the original in transformers, and is refused here as the original was).
        ValueError for what JSON cannot hold (constraints' objects)."""
        if self.constraints is not None:
            raise ValueError("GenerationConfig.constraints holds Python objects, which generation_config.json cannot: "
                             "save the words as force_words_ids instead (constraints=None)")
        settings = self.to_dict()
        if isinstance(self.sequence_bias, dict):        # JSON keys are strings: the [[token ids], bias] pairs form
            settings["sequence_bias"] = [[list(tokens), bias] for tokens, bias in self.sequence_bias.items()]
        return {**settings, **self.unsupported}

    def to_diff_dict(self) -> dict:
        """What differs from GenerationConfig(): the settings that are set, and the unsupported ones, as transformers'
        (whose GenerationConfig() sets none either; it adds its transformers_version)."""
        return {**self.to_dict(), **self.unsupported}

    def to_json_string(self) -> str:
        """generation_config.json's text (transformers' name)."""
        return json.dumps(self.saved(), indent=2) + "\n"

    def to_json_file(self, json_file_path: str | Path) -> None:
        """Write to_json_string() to json_file_path (transformers' name; save_pretrained writes a directory's)."""
        write_json(json_file_path, self.saved(), indent=2)

    def save_pretrained(self, save_directory: str | Path, config_file_name: str | os.PathLike | None = None) -> None:
        """Write generation_config.json (saved()), or config_file_name, as transformers names it."""
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        write_json(out / (config_file_name or "generation_config.json"), self.saved(), indent=2)


INT_SETTINGS = ("max_length", "max_new_tokens", "min_length", "min_new_tokens", "num_beams", "num_beam_groups",
                "num_return_sequences", "num_assistant_tokens", "top_k", "no_repeat_ngram_size",
                "encoder_no_repeat_ngram_size", "bos_token_id", "pad_token_id", "decoder_start_token_id",
                "forced_bos_token_id")
BOOL_SETTINGS = ("do_sample", "remove_invalid_values", "renormalize_logits", "output_scores", "output_logits",
                 "output_attentions", "output_hidden_states", "return_dict_in_generate")
# the flags transformers' generate reads by truth value (`if do_sample:`), where 0 and 1 act as False and True and are
# taken as them (it reads remove_invalid_values, renormalize_logits and early_stopping with `is True`: 1 is off there,
# so an int stays refused for those)
TRUTH_FLAGS = ("do_sample", "output_scores", "output_logits", "output_attentions", "output_hidden_states",
               "return_dict_in_generate")


# INT_SETTINGS that transformers' generate runs with as a whole-number float from a checkpoint's file (max_length
# 20.0); it fails on the others' (num_beams 4.0 in repeat_interleave, min_length, top_k and the n-gram sizes in its
# processors' checks, forced_bos_token_id as an index), which a file keeps refused for
WHOLE_FLOAT_SETTINGS = ("max_length", "max_new_tokens", "num_assistant_tokens", "bos_token_id", "pad_token_id",
                        "decoder_start_token_id")


def _file_form(name: str, value):
    """A file's value as generate takes it: a truth flag's 0 / 1 as False / True, a whole-number float of
    WHOLE_FLOAT_SETTINGS as its int (transformers loads both and generates with them); any other value as it is."""
    if name in TRUTH_FLAGS and _is_int(value) and value in (0, 1):
        return bool(value)
    if name in WHOLE_FLOAT_SETTINGS and type(value) is float and value.is_integer():
        return int(value)
    return value


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _is_number(v) -> bool:
    return type(v) in (float, int) or isinstance(v, Real) and not isinstance(v, bool)    # (Real's check is slow)


def _is_stop_strings(v) -> bool:
    return isinstance(v, str) or (isinstance(v, (list, tuple)) and all(isinstance(s, str) for s in v))


def check_types(cfg: GenerationConfig, source) -> GenerationConfig:
    """A ValueError naming `source` (the file) and the key whose value has the wrong type; ranges are checked
    when generate resolves the settings. Values of the forms transformers also runs are taken as generate's
    (_file_form: do_sample 0, max_length 20.0)."""
    def bad(name, what):
        raise ValueError(f"{source}: {name!r} must be {what}, got {getattr(cfg, name)!r}")

    for name in (*TRUTH_FLAGS, *WHOLE_FLOAT_SETTINGS):
        setattr(cfg, name, _file_form(name, getattr(cfg, name)))

    for name in INT_SETTINGS:
        if getattr(cfg, name) is not None and not _is_int(getattr(cfg, name)):
            bad(name, "an integer")
    for name in ("eos_token_id", "forced_eos_token_id"):
        v = getattr(cfg, name)
        if v is not None and not (_is_int(v) or (isinstance(v, list) and all(map(_is_int, v)))):
            bad(name, "an integer or a list of integers")
    for name in ("max_time", "assistant_confidence_threshold", *FLOAT_SETTINGS):
        v = getattr(cfg, name)
        if v is not None and not _is_number(v):
            bad(name, "a number")
    if cfg.num_assistant_tokens_schedule is not None and not isinstance(cfg.num_assistant_tokens_schedule, str):
        bad("num_assistant_tokens_schedule", 'a string ("constant", "heuristic" or "heuristic_transient")')
    if cfg.stop_strings is not None and not _is_stop_strings(cfg.stop_strings):
        bad("stop_strings", "a string or a list of strings")
    for name in BOOL_SETTINGS:
        if getattr(cfg, name) is not None and not isinstance(getattr(cfg, name), bool):
            bad(name, "true or false")
    if cfg.early_stopping not in (None, True, False, "never"):
        bad("early_stopping", 'true, false or "never"')
    if cfg.bad_words_ids is not None and not (isinstance(cfg.bad_words_ids, list) and all(
            isinstance(w, list) and all(map(_is_int, w)) for w in cfg.bad_words_ids)):
        bad("bad_words_ids", "a list of lists of token ids")
    for name in ("suppress_tokens", "begin_suppress_tokens"):
        v = getattr(cfg, name)
        if v is not None and not (isinstance(v, list) and all(map(_is_int, v))):
            bad(name, "a list of token ids")
    if cfg.sequence_bias is not None and not (isinstance(cfg.sequence_bias, list) and all(
            isinstance(p, list) and len(p) == 2 and isinstance(p[0], list) and all(map(_is_int, p[0]))
            and _is_number(p[1]) for p in cfg.sequence_bias)):
        bad("sequence_bias", "a list of [[token ids], bias] pairs")
    v = cfg.exponential_decay_length_penalty
    if v is not None and not (isinstance(v, list) and len(v) == 2 and _is_int(v[0]) and _is_number(v[1])):
        bad("exponential_decay_length_penalty", "[start, factor] (an integer and a number)")
    if cfg.watermarking_config is not None and not isinstance(cfg.watermarking_config, dict):
        bad("watermarking_config", "an object of watermark settings (" + ", ".join(WATERMARK) + ")")
    if cfg.force_words_ids is not None and not isinstance(cfg.force_words_ids, list):
        bad("force_words_ids", "a list of words (lists of token ids, or lists of such lists)")
    if cfg.constraints is not None:
        bad("constraints", "absent (constraint objects are passed to generate; a file holds force_words_ids)")
    return cfg


# transformers' `GenerationConfig._get_default_generation_params` (the keys seq2seq_kit implements; renormalize_logits:
# its GenerationConfig's own default)
LIBRARY_DEFAULTS = dict(
    max_length=20, min_length=0, num_beams=1, num_beam_groups=1, diversity_penalty=0.0, length_penalty=1.0,
    early_stopping=False, num_return_sequences=1,
    do_sample=False, temperature=1.0, top_k=50, top_p=1.0, repetition_penalty=1.0, no_repeat_ngram_size=0,
    encoder_no_repeat_ngram_size=0, typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0, encoder_repetition_penalty=1.0,
    remove_invalid_values=False, renormalize_logits=False, output_scores=False,
    output_logits=False, output_attentions=False, output_hidden_states=False, return_dict_in_generate=False,
)
# An explicit None for these means "not given" (transformers would fail on None); for every other key an
# explicit None switches the setting off, as in transformers (e.g. forced_bos_token_id=None, top_k=None): for
# these, by their off value (transformers tests `do_sample is True`, `min_length is not None and ...`).
NONE_MEANS_UNSET = ("max_length", "num_beams", "length_penalty", "num_return_sequences")
NONE_MEANS_OFF = dict(min_length=0, num_beam_groups=1, diversity_penalty=0.0, no_repeat_ngram_size=0,
                      encoder_no_repeat_ngram_size=0, early_stopping=False,
                      do_sample=False, remove_invalid_values=False, renormalize_logits=False, output_scores=False,
                      output_logits=False, output_attentions=False, output_hidden_states=False,
                      return_dict_in_generate=False)
OUTPUT_FLAGS = ("output_attentions", "output_hidden_states", "output_scores", "output_logits")
# transformers generation settings seq2seq_kit does not implement, with the value that makes them a no-op
UNSUPPORTED = dict(
    guidance_scale=1.0, dola_layers=None, token_healing=False, low_memory=False,
    assistant_early_exit=None, use_mtp=False,
)
# Whether a set (not None) UNSUPPORTED setting acts, given the resolved settings c: as transformers 5.25's
# GenerationConfig.get_generation_mode and generate read them (num_beams 1: greedy or sampling)
ACTS = dict(
    guidance_scale=lambda v, c: v != 1,                                      # classifier-free guidance
    dola_layers=lambda v, c: c.num_beams == 1,
    token_healing=lambda v, c: bool(v),
    low_memory=lambda v, c: bool(v) and c.num_beams > 1,                    # transformers' beam search refuses it
    assistant_early_exit=lambda v, c: c.num_beams == 1,
    use_mtp=lambda v, c: bool(v) and c.num_beams == 1,
)
# transformers generate() arguments and settings that change no token here, taken at these values and dropped
# (trust_remote_code: seq2seq_kit runs no remote code; the searches transformers 5 loads from the Hub with it run
# built in, decoding.check_moved_search)
INERT = dict(stopping_criteria=(None, []), synced_gpus=(None, False), assistant_model=(None,),
             assistant_tokenizer=(None,), negative_prompt_ids=(None,), negative_prompt_attention_mask=(None,),
             custom_generate=(None,), cache_implementation=(None, "dynamic", "static"),
             disable_compile=(None, False, True), compile_config=(None,), trust_remote_code=(None, False, True))
# a draft model's settings (its generation_config's, when it is an assistant_model), not a call's
DRAFT_SETTINGS = ("num_assistant_tokens", "num_assistant_tokens_schedule", "assistant_confidence_threshold")
GENERATE_KWARGS = tuple(f.name for f in fields(GenerationConfig) if f.name not in ("unsupported", *DRAFT_SETTINGS))
SETTING_NAMES = frozenset(f.name for f in fields(GenerationConfig))


def resolve(base: GenerationConfig | None, kwargs: dict, *, vocab_size: int, max_position_embeddings: int,
            prompt=None) -> GenerationConfig:
    """kwargs over the checkpoint's settings over LIBRARY_DEFAULTS, lengths made absolute, then validated.
    prompt: generate's decoder_input_ids [B, P] (decoder_prompt.check's), whose length the lengths count.

    The result has eos_token_id as a list (or None; []: no EOS as well), pad_token_id defaulted to the first EOS id,
    and decoder_start_token_id defaulted to bos_token_id, as transformers' `_prepare_special_tokens` does.
    """
    kwargs = _without_no_ops({k: _plain(v) for k, v in kwargs.items()})
    called = {k: kwargs.pop(k) for k in list(kwargs) if k in UNSUPPORTED}
    _refuse_draft_settings(kwargs)
    unknown = sorted(set(kwargs) - set(GENERATE_KWARGS))
    if {"decoder_input_ids", "decoder_attention_mask"} & set(unknown):
        raise ValueError("a decoder prompt (decoder_input_ids / decoder_attention_mask) is taken by generate() only: "
                         "here every sequence starts from decoder_start_token_id (forced_bos_token_id forces a "
                         "first token)")
    inert = {k: kwargs[k] for k in unknown if k in INERT}
    if inert:
        raise ValueError(f"{inert}: transformers' generate takes {'it' if len(inert) == 1 else 'them'}, "
                         "seq2seq_kit only where it changes nothing ("
                         + "; ".join(f"{k}: {' or '.join(map(repr, INERT[k]))}" for k in inert) + "); leave "
                         + ("it" if len(inert) == 1 else "them") + " out (stop conditions: max_length, max_time, "
                         "stop_strings, eos_token_id)" * ("stopping_criteria" in inert))
    if unknown:
        raise ValueError(f"generate() got unknown argument(s) {unknown}; supported: {', '.join(GENERATE_KWARGS)}")
    base = check_config(base or GenerationConfig(), "model.generation_config")
    given = kwargs                      # the call's as given: an explicit None unsets a length (_warn_both_lengths)
    kwargs = {k: NONE_MEANS_OFF.get(k, v) if v is None else v for k, v in kwargs.items()
              if not (v is None and k in NONE_MEANS_UNSET)}
    merged = _with_defaults({**base.to_dict(), **kwargs})
    _refuse_decay_without_eos(merged)
    has_default_max_length = kwargs.get("max_length") is None and base.max_length is None
    cfg = replace(GenerationConfig(), **merged)

    if isinstance(cfg.eos_token_id, int):
        cfg.eos_token_id = [cfg.eos_token_id]
    # [] stays []: no EOS, as transformers runs it, but beam sampling keeps len([]) + 1 tokens where None keeps 2
    if cfg.pad_token_id is None and isinstance(cfg.eos_token_id, list) and cfg.eos_token_id:
        cfg.pad_token_id = cfg.eos_token_id[0]
    _check_pad_without_eos_ids(cfg)
    if cfg.decoder_start_token_id is None:
        cfg.decoder_start_token_id = cfg.bos_token_id
    P = decoder_prompt.length(prompt, cfg.decoder_start_token_id)          # the start token, or the prompt
    held = "one of them the decoder start token's" if prompt is None else f"{P} of them the decoder prompt's"
    _check_prompt_fits(P, max_position_embeddings)
    # checked against the positions here, not only as the max_length it becomes: a max_length sent beside it is
    # not the setting at fault (max_new_tokens wins over it, as in transformers)
    _check_int("max_new_tokens", cfg.max_new_tokens, 1, max_position_embeddings + 1 - P, allow_none=True,
               note=f" (the model has {max_position_embeddings} positions, {held}: max_length = max_new_tokens + {P})")
    _check_int("max_length", cfg.max_length, -math.inf)
    _check_int("min_new_tokens", cfg.min_new_tokens, 0, allow_none=True)
    _absolute_lengths(cfg, P, has_default_max_length, max_position_embeddings)
    _refuse_unsupported(base.unsupported, called, cfg)      # num_beams, do_sample, top_k merged; before _validate
    # max_length, an int by now (checked above), came from the checkpoint: say so
    if "max_length" not in kwargs and cfg.max_new_tokens is None and cfg.max_length > max_position_embeddings + 1:
        raise ValueError(f"the checkpoint's generation config sets max_length={cfg.max_length}, past this model's "
                         f"{max_position_embeddings} positions (max_length <= {max_position_embeddings + 1}: the "
                         "decoder start token counts as 1); pass max_new_tokens or max_length to generate")
    _validate(cfg, vocab_size, max_position_embeddings)
    if P >= cfg.max_length:                                                 # transformers: the same ValueError
        raise ValueError(f"decoder_input_ids holds {P} tokens (the decoder start token included), but max_length is "
                         f"{cfg.max_length}: nothing is left to generate; set max_new_tokens (the tokens generated "
                         "after the prompt) or a larger max_length")
    _check_bounds(cfg, vocab_size)
    _warn_both_lengths(given, base, cfg)
    _warn_unfeasible_min_length(cfg, has_default_max_length, P)
    return cfg


def _with_defaults(settings: dict) -> dict:
    """settings over LIBRARY_DEFAULTS, in the forms generate runs them: a truth flag's 0 / 1 as False / True, a tuple
    of EOS ids as a list (transformers takes both)."""
    merged = {**LIBRARY_DEFAULTS, **settings}
    merged.update({k: bool(merged[k]) for k in TRUTH_FLAGS if _is_int(merged[k]) and merged[k] in (0, 1)})
    for name in ("eos_token_id", "forced_eos_token_id"):
        if isinstance(merged.get(name), tuple):
            merged[name] = list(merged[name])
    return merged


def _absolute_lengths(cfg: GenerationConfig, P: int, has_default_max_length: bool,
                      max_position_embeddings: float = math.inf) -> None:
    """max_length / min_length counting the decoder prompt's P tokens, from max_new_tokens / min_new_tokens where
    they are set (they win, as in transformers); a default max_length is 20 new tokens, within the positions."""
    if cfg.max_new_tokens is not None:
        cfg.max_length = cfg.max_new_tokens + P
    elif has_default_max_length:
        cfg.max_length = min(cfg.max_length + P, max_position_embeddings)
    if cfg.min_new_tokens is not None:
        cfg.min_length = cfg.min_new_tokens + P


def _warn_both_lengths(given: dict, base: GenerationConfig, cfg: GenerationConfig) -> None:
    """transformers' `_prepare_generated_length` warnings: max_new_tokens (the call's or the generation config's)
    beside a max_length (the call's, else the generation config's) wins over it, and says so; likewise min_new_tokens
    over min_length. A length the call passes as None is unset, so it does not warn (long_documents.map_settings
    unsets the other form so); transformers warns for `min_length=None` beside a checkpoint's min_length (naming
    `min_length`(=None)), and not for `max_length=None`."""
    for new, total in (("max_new_tokens", "max_length"), ("min_new_tokens", "min_length")):
        other = given[total] if total in given else getattr(base, total)
        if getattr(cfg, new) is not None and other is not None:
            warn(f"Both `{new}` (={getattr(cfg, new)}) and `{total}`(={other}) seem to have been set. `{new}` will "
                 "take precedence. Please refer to the documentation for more information. "
                 "(https://huggingface.co/docs/transformers/main/en/main_classes/text_generation)")


def _refuse_draft_settings(kwargs: dict) -> None:
    """num_assistant_tokens and its kin given to generate: transformers ignores them there (its assistant reads its
    own generation_config), so they would do nothing; say where they go."""
    given = [k for k in DRAFT_SETTINGS if k in kwargs]
    if given:
        k = given[0]
        raise ValueError(f"{k} is the draft model's setting: transformers reads it from the assistant's generation "
                         f"config (and ignores it as a generate() argument); set it there, e.g. "
                         f"assistant_model.generation_config.{k} = {kwargs[k]!r}")


def _check_prompt_fits(P: int, max_position_embeddings: int) -> None:
    """The decoder reads the prompt's P tokens at positions 0 .. P - 1 (the first generated token is not read):
    past the model's positions no length setting can help."""
    if P > max_position_embeddings:
        raise ValueError(f"decoder_input_ids holds {P} tokens (the decoder start token included), more than the "
                         f"model's {max_position_embeddings} positions: shorten every prompt to at most "
                         f"{max_position_embeddings} tokens")


def _plain(value):
    """numpy and torch numbers and arrays (np.int64(2), torch.tensor(2), torch.tensor([5, 2])) as the Python
    numbers and lists they hold, in lists, tuples and dicts too: transformers takes them as settings."""
    if type(value) in (int, float, str, bool):          # most values: a 40,000-entry list's, at once
        return value
    if hasattr(value, "tolist"):
        return value.tolist()
    if isinstance(value, (list, tuple)):
        return type(value)(map(_plain, value))
    if isinstance(value, dict):
        return {_plain(k): _plain(v) for k, v in value.items()}
    return value


def _without_no_ops(kwargs: dict) -> dict:
    """generate() arguments transformers takes that change nothing here, left out: use_cache (True or False;
    seq2seq_kit always decodes from its KV cache, whose tokens are those of a run without one), and INERT's at the
    values that change no token."""
    if "use_cache" in kwargs and not isinstance(kwargs["use_cache"], bool):
        raise ValueError(f"use_cache must be True or False, got {kwargs['use_cache']!r}")
    traced = [name for name in ("output_attentions", "output_hidden_states") if kwargs.get(name)]
    if kwargs.get("use_cache") is False and traced:
        raise ValueError(f"use_cache=False with {' and '.join(traced)}: transformers then runs the whole prefix at "
                         "every step and reports every position's attentions / hidden states; seq2seq_kit decodes "
                         "from its KV cache (the same tokens) and reports the new position's: leave use_cache out")
    return {k: v for k, v in kwargs.items()
            if k != "use_cache" and not (k in INERT and any(v == x and type(v) is type(x) for x in INERT[k]))}


def in_effect(unsupported: dict, cfg: GenerationConfig | None) -> dict:
    """The transformers-only settings of `unsupported` that would act, given the resolved settings `cfg` (ACTS);
    None (no context): those not at their no-op value. None never acts; a value ACTS cannot compare acts."""
    def acts(name, value) -> bool:
        if value is None:
            return False
        neutral = UNSUPPORTED[name]
        if value == neutral and isinstance(value, bool) == isinstance(neutral, bool):
            return False
        try:
            return cfg is None or bool(ACTS[name](value, cfg))
        except TypeError:
            return True
    return {k: v for k, v in unsupported.items() if acts(k, v)}


def _check_pad_without_eos_ids(cfg: GenerationConfig) -> None:
    """eos_token_id=[] (no EOS id) pads what follows a row's end (a stop string) with pad_token_id, which it cannot
    default; a beam search's fill is `pad_token_id or eos_token_id[0]`, so a pad id 0 needs an EOS id there
    (transformers fails on an empty index in both cases)."""
    if not isinstance(cfg.eos_token_id, list) or cfg.eos_token_id:
        return
    if cfg.pad_token_id is None:
        raise ValueError("eos_token_id=[] (no EOS id) leaves pad_token_id without its default (the first EOS id), "
                         "and rows that end (stop_strings) are padded with it: pass pad_token_id, or eos_token_id")
    if cfg.pad_token_id == 0 and cfg.num_beams > 1:
        raise ValueError("beam search fills the positions after a hypothesis' end with pad_token_id, or the first "
                         "EOS id where pad_token_id is 0 (as transformers), and eos_token_id=[] has none: pass "
                         "a pad_token_id other than 0, or eos_token_id")


def _refuse_decay_without_eos(settings: dict) -> None:
    """exponential_decay_length_penalty raises EOS's score: without eos_token_id (None; [] runs, nothing to raise)
    transformers fails inside torch.tensor(None), and the penalty would silently do nothing."""
    decay = settings.get("exponential_decay_length_penalty")
    if decay is not None and settings.get("eos_token_id") is None:
        raise ValueError(f"`exponential_decay_length_penalty` ({decay!r}) raises the score of EOS, but no "
                         "`eos_token_id` is set (neither by this call nor by the checkpoint): pass eos_token_id, or "
                         "drop the penalty")


def check_config(config, name: str) -> GenerationConfig:
    if not isinstance(config, GenerationConfig):
        raise TypeError(f"{name} must be seq2seq_kit's GenerationConfig (or None), got {type(config).__module__}."
                        f"{type(config).__qualname__}; convert one from transformers with "
                        "GenerationConfig.from_dict(its.to_dict())")
    return config


def _refuse_unsupported(configured: dict, called: dict, cfg: GenerationConfig) -> None:
    """The transformers-only settings that would act here (in_effect), from the call or, where the call does not set
    them, from the generation config (the checkpoint's, or generation_config=): refused, naming the way out."""
    from_call = in_effect(called, cfg)
    if from_call:
        n = len(from_call)
        raise ValueError(f"{from_call} {'is a setting' if n == 1 else 'are settings'} of transformers' generate that "
                         f"seq2seq_kit does not implement (taken only where it does nothing: "
                         f"{', '.join(f'{k}={UNSUPPORTED[k]!r}' for k in from_call)}); leave "
                         f"{'it' if n == 1 else 'them'} out")
    configured = in_effect({k: v for k, v in configured.items() if k not in called}, cfg)
    if configured:
        raise ValueError(f"the generation config (the checkpoint's, or generation_config=) sets {configured}, which "
                         "seq2seq_kit does not implement; pass " + ", ".join(f"{k}=None" for k in configured)
                         + " to generate() to run without, or set model.generation_config.unsupported = {}")


FLOAT_SETTINGS = ("length_penalty", "diversity_penalty", "penalty_alpha", "temperature", "top_p", "min_p", "top_h",
                  "typical_p", "epsilon_cutoff", "eta_cutoff", "repetition_penalty", "encoder_repetition_penalty")
FLOAT32_MAX = 3.4028234663852886e38


def _check_bounds(cfg: GenerationConfig, vocab_size: int) -> None:
    """Settings no search can honour: a non-finite float (inf, nan: torch would fail deep inside, or silently
    rank every hypothesis alike), or a length penalty whose divisor overflows. (More beams than the vocabulary has
    tokens are fine, as in transformers: only the first step is limited to vocab_size different hypotheses.)"""
    for name in FLOAT_SETTINGS:
        value = getattr(cfg, name)
        if isinstance(value, Real) and not (math.isfinite(value) and abs(value) <= FLOAT32_MAX):
            raise ValueError(f"`{name}` must be a finite number (within float32's range: scores are float32), "
                             f"got {value!r}")
    longest = max(cfg.max_length, 1)          # a beam's score is divided by its length ** length_penalty, in double
    if cfg.num_beams > 1 and cfg.length_penalty * math.log(longest) > math.log(sys.float_info.max):
        raise ValueError(f"`length_penalty` ({cfg.length_penalty}) is too large: beam scores are divided by "
                         f"length ** length_penalty, which overflows at max_length={cfg.max_length} (transformers "
                         f"raises OverflowError); use length_penalty <= "
                         f"{math.log(sys.float_info.max) / math.log(longest):.1f}")


def _warn_unfeasible_min_length(cfg: GenerationConfig, has_default_max_length: bool, prompt_length: int) -> None:
    """transformers' `_validate_generated_length` warnings: a minimum length above max_length is not an error,
    generation stops at max_length. min_length (min_new_tokens + prompt_length when min_new_tokens is set) warns,
    then min_new_tokens does too: transformers gives both."""
    suffix = (" Generation will stop at the defined maximum length. You should decrease the minimum length and/or "
              "increase the maximum length.")
    if has_default_max_length:
        suffix += f" Note that `max_length` is set to {cfg.max_length}, its default value."
    if cfg.min_length > cfg.max_length:
        warn(f"Unfeasible length constraints: `min_length` ({cfg.min_length}) is larger than the maximum possible "
             f"length ({cfg.max_length})." + suffix)
    if cfg.min_new_tokens is not None and cfg.min_new_tokens + prompt_length > cfg.max_length:
        warn(f"Unfeasible length constraints: `min_new_tokens` ({cfg.min_new_tokens}), when added to the prompt "
             f"length ({prompt_length}), is larger than the maximum possible length ({cfg.max_length})." + suffix)


def _check_int(name: str, value, low, high=math.inf, *, allow_none: bool = False, note: str = "") -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        bounds = " and ".join([f">= {low}"] * (low > -math.inf) + [f"<= {high}"] * (high < math.inf))
        raise ValueError(f"`{name}` must be an integer{' ' + bounds if bounds else ''}{note}, got {value!r}")


def _check_token(name: str, value, vocab_size: float, *, allow_list: bool = False) -> None:
    values = value if allow_list and isinstance(value, list) and value else [value]
    for v in values:
        if isinstance(v, bool) or not isinstance(v, int) or not 0 <= v < vocab_size:
            what = "a token id " + (f"in [0, {vocab_size})" if vocab_size < math.inf else ">= 0") \
                + (" or a list of them" if allow_list else "")
            raise ValueError(f"`{name}` must be {what}, got {value!r}")


def _check_stop_strings(value) -> None:
    """A string or a list of strings, none empty (an empty one would end every row at its first token)."""
    if value is None:
        return
    if not _is_stop_strings(value):
        raise ValueError(f"`stop_strings` must be a string or a list of strings, got {value!r}")
    if "" in ([value] if isinstance(value, str) else value):
        raise ValueError(f"`stop_strings` holds an empty string, which every text ends in: drop it, got {value!r}")


def _check_flag(name: str, value) -> None:
    if not isinstance(value, bool):
        raise ValueError(f"`{name}` must be True or False, got {value!r}")


def _validate(cfg: GenerationConfig, vocab_size: int, max_position_embeddings: int) -> None:
    """ValueError naming the setting and its allowed range; nothing is computed before this passes."""
    if cfg.decoder_start_token_id is None:
        raise ValueError("`decoder_start_token_id` (or `bos_token_id`) must be set for encoder-decoder generation")
    # the decoder start token counts in max_length; positions 0 .. max_length - 2 are fed to the decoder
    _check_int("max_length", cfg.max_length, 2, max_position_embeddings + 1,
               note=f" (max_new_tokens + 1 when max_new_tokens is given; the decoder start token counts as 1 and the "
                    f"model has {max_position_embeddings} positions)")
    _check_settings(cfg, vocab_size)


def _check_settings(cfg: GenerationConfig, vocab_size: float) -> None:
    """_validate's checks that need no model but its vocabulary's size (math.inf: token ids are only checked >= 0)."""
    _check_int("min_length", cfg.min_length, 0)
    if cfg.max_time is not None and not (_is_number(cfg.max_time) and cfg.max_time >= 0):
        raise ValueError(f"`max_time` must be a number of seconds >= 0 (None: no limit), got {cfg.max_time!r}")
    _check_stop_strings(cfg.stop_strings)
    _check_int("num_beams", cfg.num_beams, 1)
    _check_int("num_return_sequences", cfg.num_return_sequences, 1)
    for flag in BOOL_SETTINGS:
        _check_flag(flag, getattr(cfg, flag))
    if cfg.num_beams > 1 and cfg.num_return_sequences > cfg.num_beams:
        raise ValueError(f"`num_return_sequences` ({cfg.num_return_sequences}) must be between 1 and `num_beams` "
                         f"({cfg.num_beams}) for beam search")
    if cfg.num_beams == 1 and not cfg.do_sample and cfg.num_return_sequences > 1:
        raise ValueError(f"greedy search returns 1 sequence per input, got `num_return_sequences` "
                         f"{cfg.num_return_sequences}: use num_beams >= {cfg.num_return_sequences} or do_sample=True")
    if cfg.early_stopping not in (True, False, "never"):
        raise ValueError(f"`early_stopping` must be True, False or 'never', got {cfg.early_stopping!r}")
    _check_prompt_lookup(cfg)
    _check_groups(cfg)
    _check_constraints(cfg, vocab_size)
    if cfg.penalty_alpha is not None:              # contrastive search's, whose candidates top_k counts
        if not _is_number(cfg.penalty_alpha):
            raise ValueError(f"`penalty_alpha` must be a number, got {cfg.penalty_alpha!r}")
        _check_int("top_k", cfg.top_k, 0, allow_none=True)
    if not isinstance(cfg.length_penalty, Real):
        raise ValueError(f"`length_penalty` must be a number, got {cfg.length_penalty!r}")
    # <= 0 is off, as transformers builds the processors only above 0
    _check_int("no_repeat_ngram_size", cfg.no_repeat_ngram_size, -math.inf, allow_none=True)
    _check_int("encoder_no_repeat_ngram_size", cfg.encoder_no_repeat_ngram_size, -math.inf, allow_none=True)
    if cfg.repetition_penalty is not None and not (isinstance(cfg.repetition_penalty, Real)
                                                   and cfg.repetition_penalty > 0):
        raise ValueError(f"`repetition_penalty` must be a number > 0, got {cfg.repetition_penalty!r}")
    if cfg.bad_words_ids is not None:
        if not (isinstance(cfg.bad_words_ids, list) and cfg.bad_words_ids
                and all(isinstance(w, list) for w in cfg.bad_words_ids)):      # an empty word bans nothing, as there
            raise ValueError(f"`bad_words_ids` must be a non-empty list of lists of token ids, "
                             f"got {cfg.bad_words_ids!r}")
        for w in filter(None, cfg.bad_words_ids):
            _check_token("bad_words_ids", w, vocab_size, allow_list=True)
    for name in ("eos_token_id", "forced_eos_token_id"):
        no_eos = name == "eos_token_id" and isinstance(cfg.eos_token_id, list) and not cfg.eos_token_id
        if getattr(cfg, name) is not None and not no_eos:
            _check_token(name, getattr(cfg, name), vocab_size, allow_list=True)
    if isinstance(cfg.decoder_start_token_id, list):     # transformers: a start token per row
        raise ValueError(f"`decoder_start_token_id` must be one token id, got {cfg.decoder_start_token_id!r}; to start "
                         "each row with its own token, pass decoder_input_ids=[[id], ...] (one row per input) to "
                         "generate")
    for name in ("bos_token_id", "pad_token_id", "decoder_start_token_id", "forced_bos_token_id"):
        if getattr(cfg, name) is not None:
            _check_token(name, getattr(cfg, name), vocab_size)
    _validate_processors(cfg, vocab_size)
    if cfg.top_p is not None and not _is_number(cfg.top_p):
        raise ValueError(f"`top_p` must be a number, got {cfg.top_p!r}")
    if cfg.do_sample:       # the cut-offs apply when sampling (transformers only warns about them otherwise)
        _check_int("top_k", cfg.top_k, 0, allow_none=True)
        if cfg.top_p is not None and cfg.top_p < 0:       # >= 1 keeps every token: off, as in transformers
            raise ValueError(f"`top_p` must be >= 0 (1 or more: off), got {cfg.top_p!r}")
    if cfg.do_sample and cfg.temperature is not None and not (isinstance(cfg.temperature, Real)
                                                              and cfg.temperature > 0):
        raise ValueError(f"`temperature` must be > 0 when do_sample=True, got {cfg.temperature!r} "
                         "(for greedy decoding use do_sample=False)")


def _check_groups(cfg: GenerationConfig) -> None:
    """Group beam search's settings, as transformers 4.55 checked them (GenerationConfig.validate); with num_beams 1
    (greedy or sampling) or num_beam_groups 1 (a diversity penalty alone: plain beam search) they do nothing, as
    in transformers 5 (4.55 refused a diversity penalty without groups)."""
    _check_int("num_beam_groups", cfg.num_beam_groups, 1)
    if not _is_number(cfg.diversity_penalty):
        raise ValueError(f"`diversity_penalty` must be a number, got {cfg.diversity_penalty!r}")
    if cfg.num_beams == 1 or cfg.num_beam_groups == 1:
        return
    if cfg.do_sample:
        raise ValueError("group beam search (num_beam_groups > 1) does not sample: set do_sample=False, or "
                         "num_beam_groups=1 for beam sampling")
    if cfg.num_beams % cfg.num_beam_groups:
        raise ValueError(f"`num_beams` ({cfg.num_beams}) must be divisible by `num_beam_groups` "
                         f"({cfg.num_beam_groups}): each group holds num_beams / num_beam_groups beams")
    if cfg.diversity_penalty == 0.0:
        raise ValueError("group beam search (num_beam_groups > 1) needs `diversity_penalty` other than 0.0, "
                         "otherwise every group finds the same beams: e.g. diversity_penalty=1.0")
    if cfg.stop_strings:
        raise ValueError("stop_strings do not end a group beam search's hypotheses (transformers 4.x only stopped "
                         "the whole search once every row ended in one): leave stop_strings out, or "
                         "num_beam_groups=1")


def _check_constraints(cfg: GenerationConfig, vocab_size: int) -> None:
    """Constrained beam search's settings (force_words_ids / constraints): well formed (constraints.check), a beam
    search, and not with what transformers 4.55 refused beside them (sampling, groups)."""
    if cfg.constraints is None and cfg.force_words_ids is None:
        return
    constraints.check(cfg.constraints, cfg.force_words_ids, vocab_size)
    if cfg.num_beams == 1:
        raise ValueError("force_words_ids / constraints run constrained beam search, which needs num_beams > 1 "
                         "(e.g. num_beams=4)")
    for name, on in (("do_sample", cfg.do_sample), ("num_beam_groups", cfg.num_beam_groups > 1),
                     ("stop_strings", bool(cfg.stop_strings))):
        if on:
            raise ValueError(f"force_words_ids / constraints (constrained beam search) and `{name}` do not go "
                             f"together: leave {name} out, or the constraints")


def _check_prompt_lookup(cfg: GenerationConfig) -> None:
    """prompt_lookup_num_tokens >= 1 (transformers: "Invalid ... num_output_tokens" at 0), max_matching_ngram_size
    >= 0 (0: the default, 2, as transformers reads `or 2`)."""
    _check_int("prompt_lookup_num_tokens", cfg.prompt_lookup_num_tokens, 1, allow_none=True)
    _check_int("max_matching_ngram_size", cfg.max_matching_ngram_size, 0, allow_none=True)


def _validate_processors(cfg: GenerationConfig, vocab_size: int) -> None:
    """The settings of the less common processors (sequence bias, suppressed tokens, the length penalty on EOS,
    the sampling cut-offs), with transformers' ranges; a cut-off outside the range where it applies is off, as
    there (typical_p >= 1, epsilon_cutoff / eta_cutoff outside (0, 1))."""
    for name in ("min_p", "top_h", "typical_p", "epsilon_cutoff", "eta_cutoff", "encoder_repetition_penalty"):
        value = getattr(cfg, name)
        if value is not None and not _is_number(value):
            raise ValueError(f"`{name}` must be a number, got {value!r}")
    if cfg.do_sample and cfg.min_p is not None and not 0 <= cfg.min_p <= 1:
        raise ValueError(f"`min_p` must be in [0, 1], got {cfg.min_p!r}")
    if cfg.do_sample and cfg.top_h is not None and not 0 < cfg.top_h <= 1:
        raise ValueError(f"`top_h` must be in (0, 1], got {cfg.top_h!r}")
    if cfg.do_sample and cfg.typical_p is not None and cfg.typical_p <= 0:
        raise ValueError(f"`typical_p` must be > 0 (1 or more: off), got {cfg.typical_p!r}")
    if cfg.encoder_repetition_penalty is not None and cfg.encoder_repetition_penalty <= 0:
        raise ValueError(f"`encoder_repetition_penalty` must be a number > 0, got {cfg.encoder_repetition_penalty!r}")
    for name in ("suppress_tokens", "begin_suppress_tokens"):     # ids outside the vocabulary: none to suppress
        value = getattr(cfg, name)
        if value is not None and not (isinstance(value, (list, tuple)) and all(map(_is_int, value))):
            raise ValueError(f"`{name}` must be a list of integer token ids, got {value!r}")
    _check_forced_not_suppressed(cfg)
    cfg.watermarking_config = watermark_settings(cfg.watermarking_config)
    sequence_biases(cfg.sequence_bias, vocab_size)
    decay = cfg.exponential_decay_length_penalty
    if decay is not None and not (isinstance(decay, (list, tuple)) and len(decay) == 2 and _is_int(decay[0])
                                  and _is_number(decay[1]) and math.isfinite(decay[1])):
        raise ValueError("`exponential_decay_length_penalty` must be (start, factor): an integer (new tokens "
                         f"before the penalty starts) and a finite number, got {decay!r}")


# watermarking_config's settings (transformers' WatermarkingConfig), with its defaults
WATERMARK = dict(greenlist_ratio=0.25, bias=2.0, hashing_key=15485863, seeding_scheme="lefthash", context_width=1)


def watermark_settings(value) -> dict | None:
    """watermarking_config (a dict of WATERMARK's keys, or transformers' WatermarkingConfig) as the watermark
    processor's settings, transformers' defaults filled in; a ValueError naming what is wrong (with transformers'
    ranges: the processor's greenlist_ratio in (0, 1))."""
    if value is None:
        return None
    if type(value).__name__ == "SynthIDTextWatermarkingConfig" or (isinstance(value, dict) and "ngram_len" in value):
        raise ValueError("SynthID text watermarking is not implemented: watermarking_config takes the green-list "
                         f"watermark's settings ({', '.join(WATERMARK)}; transformers' WatermarkingConfig)")
    if not isinstance(value, dict) and callable(getattr(value, "to_dict", None)):
        value = value.to_dict()                                     # transformers' WatermarkingConfig
    if not isinstance(value, dict):
        raise ValueError(f"`watermarking_config` must be a dict of {', '.join(WATERMARK)} (or transformers' "
                         f"WatermarkingConfig), got {value!r}")
    unknown = sorted(set(value) - set(WATERMARK))
    if unknown:
        raise ValueError(f"`watermarking_config` has unknown key(s) {unknown}; its keys: {', '.join(WATERMARK)}")
    settings = {**WATERMARK, **value}
    ratio, bias = settings["greenlist_ratio"], settings["bias"]
    if not (_is_number(ratio) and 0.0 < ratio < 1.0):
        raise ValueError(f"`watermarking_config`'s greenlist_ratio must be between 0 and 1 (exclusive), got {ratio!r}")
    if not (_is_number(bias) and math.isfinite(bias)):
        raise ValueError(f"`watermarking_config`'s bias must be a finite number, got {bias!r}")
    _check_int("watermarking_config's hashing_key", settings["hashing_key"], -math.inf)
    _check_int("watermarking_config's context_width", settings["context_width"], 1)
    if settings["seeding_scheme"] not in ("lefthash", "selfhash"):
        raise ValueError(f"`watermarking_config`'s seeding_scheme must be 'lefthash' or 'selfhash', got "
                         f"{settings['seeding_scheme']!r}")
    return settings


def _check_forced_not_suppressed(cfg: GenerationConfig) -> None:
    """transformers' GenerationConfig.validate: forcing only tokens that are suppressed leaves no token."""
    if cfg.suppress_tokens is None:
        return
    for name in ("forced_bos_token_id", "forced_eos_token_id"):
        forced = getattr(cfg, name)
        forced = {forced} if isinstance(forced, int) else set(forced or [])
        if forced and forced <= set(cfg.suppress_tokens):
            raise ValueError(f"every token of `{name}` ({sorted(forced)}) is in `suppress_tokens`: no token would be "
                             f"left at the forced step; remove it from one of them (to keep EOS away early, use "
                             f"`min_new_tokens`)")


def sequence_biases(sequence_bias, vocab_size: int) -> dict[tuple[int, ...], float] | None:
    """`sequence_bias` as {(token ids): bias}, from that dict or from [[token ids], bias] pairs (a later pair of
    the same tokens wins, as in transformers); a ValueError naming what is wrong."""
    if sequence_bias is None:
        return None
    form = "{(token ids): bias} or [[[token ids], bias], ...], non-empty"
    if isinstance(sequence_bias, dict):
        pairs = list(sequence_bias.items())
    elif isinstance(sequence_bias, (list, tuple)) and all(isinstance(p, (list, tuple)) and len(p) == 2
                                                          for p in sequence_bias):
        pairs = [(p[0], p[1]) for p in sequence_bias]
    else:
        raise ValueError(f"`sequence_bias` must be {form}, got {sequence_bias!r}")
    if not pairs:
        raise ValueError(f"`sequence_bias` must be {form}, got {sequence_bias!r}")
    biases = {}
    for tokens, bias in pairs:
        if not (isinstance(tokens, (list, tuple)) and tokens) or not _is_number(bias):
            raise ValueError(f"`sequence_bias` must be {form}; {tokens!r}: {bias!r} is not")
        for token in tokens:
            _check_token("sequence_bias", token, vocab_size)
        if math.isnan(bias):
            raise ValueError(f"`sequence_bias`: the bias of {tokens!r} is nan")
        if math.isfinite(bias) and abs(bias) > FLOAT32_MAX:      # -inf (a ban) is fine; 1e39 overflows float32
            raise ValueError(f"`sequence_bias`: the bias of {tokens!r} must be within float32's range (scores are "
                             f"float32), or -inf to ban the tokens, got {bias!r}")
        biases[tuple(tokens)] = float(bias)
    return biases
