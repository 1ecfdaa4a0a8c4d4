"""`pipeline("translation")`, `pipeline("translation_xx_to_yy")` and `pipeline("text2text-generation")`, which
transformers 5 removed, with transformers 4.x's outputs; and `pipeline(task, ...)` for every task.

    pipe = pipeline("translation", "facebook/nllb-200-distilled-600M", src_lang="eng_Latn", tgt_lang="fra_Latn")
    pipe("The tower is 324 metres tall.")      # [{'translation_text': 'La tour mesure 324 mètres.'}]

They are the summarization pipeline's recipe (seq2seq_kit/summarization.py: the same public stages check_texts,
preprocess, generate_ids, postprocess and engine) with other record keys and, for translation, 4.x's
`_build_translation_inputs`: the source language's code goes around each text (M2M100, NLLB, mBART-50, mBART)
and the target language becomes generate's forced_bos_token_id. As in 4.x, those models need src_lang (passed to
pipeline() or to the call; or set on a tokenizer passed in, `AutoTokenizer.from_pretrained(path, src_lang=...)`):
none is a ValueError, never a silent "English". A task named translation_en_to_de gives src_lang "en" and
tgt_lang "de" unless they are passed. Languages passed to a call apply to that call only (threads may translate
with one pipeline into different languages); those given to pipeline() are its defaults. Marian models have no
language codes in 4.x; here a multi-target Marian model's tgt_lang ("fra") puts its ">>fra<<" token before each
text (src_lang is refused: Marian has no source code), and a single-pair model ignores the task name's languages,
as 4.x did.
"""

from __future__ import annotations

import copy
import re

from . import summarization
from .family_tokenizers import MARIAN_SOURCE, TranslationTokenizer, check_code
from .modeling import BartForConditionalGeneration
from .summarization import Encoded, SummarizationPipeline
from .tokenizer import Tokenizer, check_text
from .user_warnings import warn

TASKS = ("summarization", "translation", "translation_XX_to_YY", "text2text-generation")
TRANSLATION_TASK = re.compile(r"^translation_([^_]+)_to_([^_]+)$")


def pipeline(task: str = "summarization", model=None, tokenizer=None, device=None, dtype=None, *,
             src_lang: str | None = None, tgt_lang: str | None = None, **kwargs):
    """A pipeline for `task` (see TASKS); model, tokenizer, device, dtype and kwargs (generate settings, call
    options, Hub options) as seq2seq_kit.summarization.pipeline. src_lang / tgt_lang (translation): language codes as the
    checkpoint's tokenizer takes them ("en", "eng_Latn", "en_XX"; a Marian model's target "fra"); either may come
    with each call instead."""
    if task == "summarization":
        if src_lang is not None or tgt_lang is not None:
            raise ValueError("src_lang / tgt_lang apply to translation; the summarization task takes neither")
        return summarization.pipeline(task, model, tokenizer, device, dtype, **kwargs)
    generate_kwargs, call_defaults, hub_kwargs = summarization.split_kwargs(kwargs)
    named = TRANSLATION_TASK.match(task)
    if task not in ("translation", "text2text-generation") and not named:
        raise ValueError(f"unsupported task {task!r}; seq2seq_kit supports: {', '.join(map(repr, TASKS))}")
    if task == "text2text-generation":
        if src_lang is not None or tgt_lang is not None:
            raise ValueError("src_lang / tgt_lang apply to translation; use the 'translation' task")
        if model is None:   # not the summarization default: 4.x's was google-t5/t5-base
            raise ValueError("pipeline('text2text-generation') needs model= (a Hub id, path or loaded model); there "
                             "is no default text2text-generation model (transformers 4.x's, google-t5/t5-base, is a "
                             "T5, which seq2seq_kit does not run)")
        return Text2TextGenerationPipeline(*summarization.load_model_and_tokenizer(
            model, tokenizer, device, dtype, **hub_kwargs), call_defaults=call_defaults, **generate_kwargs)
    if model is None:
        raise ValueError(f"pipeline({task!r}) needs model= (a Hub id, path or loaded model); there is no default "
                         "translation model")
    model, tokenizer = summarization.load_model_and_tokenizer(model, tokenizer, device, dtype, **hub_kwargs)
    key = translation_task(task, model.config)
    if key != task:
        task = key
        warn(f'"translation" task was used, instead of "translation_XX_to_YY", defaulting to "{task}" (the '
             "checkpoint's task_specific_params), as transformers 4.x did; pass that task to silence this")
    src_lang, tgt_lang = task_languages(task, src_lang, tgt_lang)
    return TranslationPipeline(model, tokenizer, src_lang=src_lang, tgt_lang=tgt_lang, task=task,
                               call_defaults=call_defaults, **generate_kwargs)


def translation_task(task: str, config) -> str:
    """The task whose settings a translation pipeline takes: as 4.x, plain "translation" becomes the first
    "translation_XX_to_YY" key of the checkpoint's task_specific_params (a BartConfig's), and so its settings and
    languages apply; any other task stays."""
    keys = (config.extra.get("task_specific_params") or {}).keys() if task == "translation" else ()
    return next((k for k in keys if TRANSLATION_TASK.match(k)), task)


def task_languages(task: str, src_lang: str | None, tgt_lang: str | None) -> tuple[str | None, str | None]:
    """(src_lang, tgt_lang) a translation under `task` takes: a "translation_XX_to_YY" task's languages where none
    are given, as 4.x; the given ones for any other task."""
    named = TRANSLATION_TASK.match(task)
    if not named:
        return src_lang, tgt_lang
    return (named.group(1) if src_lang is None else src_lang, named.group(2) if tgt_lang is None else tgt_lang)


def task_named(task: str, src_lang: str | None, tgt_lang: str | None) -> tuple[bool, bool]:
    """Whether src_lang and tgt_lang are the "translation_XX_to_YY" task name's own languages, each: check_languages'
    single_pair_ok (such a language may be no code of the tokenizer, as 4.x took it; one given otherwise must be)."""
    named = TRANSLATION_TASK.match(task)
    return bool(named) and src_lang == named.group(1), bool(named) and tgt_lang == named.group(2)


def check_languages(tokenizer: Tokenizer, src_lang: str | None, tgt_lang: str | None,
                    single_pair_ok: bool | tuple[bool, bool] = False, required: bool = True) -> tuple[str | None,
                                                                                                     str | None,
                                                                                                     int | None]:
    """(src_lang, tgt_lang, forced_bos_token_id) that a translation with `tokenizer` uses for the given languages:
    each defaults to the tokenizer's when the user set it there (tok.source_given, tok.target_given: a multi-target
    Marian tokenizer's tgt_lang too, which was kept and never applied); with `required`, a missing
    source or (tok.target_required) target is a ValueError naming it, else it is left None (a pipeline's defaults,
    completed by each call). A multi-target Marian model takes tgt_lang as its >>tgt<< token (no forced token;
    none: the texts carry their own, as in 4.x) and refuses src_lang; a tokenizer without codes takes none ((None,
    None, None); given ones are refused unless single_pair_ok); mBART (cc25) may leave the target out (no forced
    token: the checkpoint's own). With single_pair_ok (a task name's languages), Marian and mBART ignore languages
    that are not their codes ("translation_en_to_fr", "translation_en_to_ro"), as 4.x did; a pair of flags
    (source, target) says it of each language alone. Raises ValueError naming the codes the tokenizer knows,
    TypeError for a code that is not a str. Changes nothing."""
    tok = tokenizer
    check_code("src_lang", src_lang)
    check_code("tgt_lang", tgt_lang)
    src_ok, tgt_ok = (single_pair_ok, single_pair_ok) if isinstance(single_pair_ok, bool) else single_pair_ok
    if tgt_lang is None and isinstance(tok, TranslationTokenizer) and tok.target_given:
        tgt_lang = tok.tgt_lang
    if not isinstance(tok, TranslationTokenizer) or (tok.kind == "MarianTokenizer" and not tok.language_codes):
        if src_lang is not None and not src_ok or tgt_lang is not None and not tgt_ok:
            raise ValueError("this model's tokenizer has no language codes (a single language pair): "
                             "drop src_lang / tgt_lang")
        return None, None, None
    if tok.kind == "MarianTokenizer":
        if src_lang is not None and not src_ok:
            raise ValueError(f"src_lang={src_lang!r}: {MARIAN_SOURCE}")
        if tgt_lang is None or tgt_ok and tgt_lang not in tok.language_codes:
            return None, None, None                                 # the texts start with their >>tgt<< codes
        tok.get_lang_id(tgt_lang)                                   # unknown code: ValueError naming the known
        return None, tgt_lang, None
    codes = tok.language_codes
    if tok.kind == "MBartTokenizer" and (src_ok and src_lang not in (None, *codes) or
                                         tgt_ok and tgt_lang not in (None, *codes)):
        # a task name's "en" is no code: the checkpoint's own source, no forced target
        src_lang = src_lang if src_lang in codes or not src_ok else tok.src_lang
        tgt_lang = tgt_lang if tgt_lang in codes or not tgt_ok else None
        if src_lang is not None:
            tok.get_lang_id(src_lang)
        return src_lang, tgt_lang, None if tgt_lang is None else tok.target_language_id(tgt_lang)
    if tgt_lang is None and tok.target_required and required:
        raise ValueError(f"translation with this {tok.kind} needs tgt_lang (e.g. one of "
                         f"{', '.join(tok.language_codes[:8])}, ...)")
    if src_lang is not None:
        tok.get_lang_id(src_lang)
    src_lang = src_lang or (tok.src_lang if tok.source_given else None)
    if src_lang is None and required:
        raise ValueError(missing_source(tok))
    return src_lang, tgt_lang, None if tgt_lang is None else tok.target_language_id(tgt_lang)


def with_target_code(texts: list[str], tokenizer: Tokenizer, tgt_lang: str | None) -> list[str]:
    """texts with a multi-target Marian model's >>tgt<< token before each (the target language as that model takes
    it); unchanged for other models, or without tgt_lang. Each text is checked first (check_text), so that an error
    names the character where the text itself has it, not where it is behind the code."""
    if tgt_lang is None or not isinstance(tokenizer, TranslationTokenizer) or tokenizer.kind != "MarianTokenizer":
        return texts
    code = tokenizer.get_lang_token(tgt_lang)
    return [f"{code} {check_text(t, f'text[{i}]')}" for i, t in enumerate(texts)]


def target_token(forced_bos_token_id: int | None) -> dict:
    """The generate setting that makes a translation's target language (check_languages' third value): none for
    a model without target codes."""
    return {} if forced_bos_token_id is None else {"forced_bos_token_id": forced_bos_token_id}


def missing_source(tok: TranslationTokenizer) -> str:
    """The error of a translation that names no source language."""
    return (f"translation with this {tok.kind} needs src_lang, the language of the input texts (e.g. one of "
            f"{', '.join(tok.language_codes[:8])}, ...): pass src_lang= to pipeline() or to the call (--src-lang on "
            "the command line), as transformers 4.x required (it is not assumed to be English)")


class Text2TextGenerationPipeline(SummarizationPipeline):
    """`pipe(text_or_texts, **generate_kwargs)` -> [{'generated_text': ...}, ...]: the summarization recipe
    with the checkpoint's task_specific_params["text2text-generation"] (4.x's Text2TextGenerationPipeline)."""

    task = "text2text-generation"
    output = "generated"
    verb = "generate from"


class TranslationPipeline(Text2TextGenerationPipeline):
    """`pipe(text_or_texts, src_lang=None, tgt_lang=None, **generate_kwargs)` -> [{'translation_text': ...}, ...].
    src_lang / tgt_lang: this pipeline's languages (given at construction, or set_languages); a call's apply to that
    call only (for_languages: a copy of the pipeline with them). preprocess puts the pipeline's source code around
    each text without changing the tokenizer's src_lang; the target's forced_bos_token_id joins generate_defaults
    (so `engine()` applies it too). A pipeline may be built without a source (M2M100, NLLB, mBART): then it
    translates nothing until given one (ValueError naming src_lang). The config's prefix goes before the texts of
    a model without source codes, or Marian's, as in 4.x, and not before those that get a source code."""

    output = "translation"
    verb = "translate"

    def __init__(self, model: BartForConditionalGeneration, tokenizer: Tokenizer, *, src_lang: str | None = None,
                 tgt_lang: str | None = None, task: str = "translation", **generate_kwargs):
        self.task = task                    # task_specific_params[task], as 4.x looked it up
        super().__init__(model, tokenizer, **generate_kwargs)
        if isinstance(tokenizer, TranslationTokenizer) and tokenizer.kind != "MarianTokenizer":
            self.prefix = ""    # 4.x: these tokenizers build the inputs (_build_translation_inputs), with no prefix
        self.src_lang = self.tgt_lang = None
        # the task name's languages, given again or not, may be no codes (4.x)
        self.set_languages(src_lang, tgt_lang, single_pair_ok=task_named(task, src_lang, tgt_lang))

    def repr_fields(self) -> str:
        return f"src_lang={self.src_lang!r}, tgt_lang={self.tgt_lang!r}, {super().repr_fields()}"

    def set_languages(self, src_lang: str | None, tgt_lang: str | None,
                      single_pair_ok: bool | tuple[bool, bool] = False) -> None:
        """Check and set this pipeline's source / target languages (check_languages, neither required here: a call
        may bring them); raises ValueError naming the codes the tokenizer knows. single_pair_ok (of both, or
        (source, target)): a task name's languages, ignored where they are no codes. The tokenizer is not
        changed."""
        src, tgt, forced_bos = check_languages(self.tokenizer, src_lang, tgt_lang, single_pair_ok, required=False)
        self.src_lang, self.tgt_lang = src, tgt
        self.generate_defaults = self.defaults_with(**target_token(forced_bos))     # no earlier target's token

    def for_languages(self, src_lang: str | None = None, tgt_lang: str | None = None) -> TranslationPipeline:
        """A shallow copy translating from src_lang into tgt_lang (None: this pipeline's), sharing the model and
        tokenizer: one call's or request's languages, this pipeline unchanged. Raises as set_languages."""
        call = copy.copy(self)
        call.set_languages(self.src_lang if src_lang is None else src_lang,
                           self.tgt_lang if tgt_lang is None else tgt_lang)      # "" is a code, and refused
        return call

    def require_source(self) -> None:
        """ValueError naming src_lang when this pipeline's tokenizer puts a source code around texts and none is
        set (transformers 4.x's "Translation requires a `src_lang`")."""
        tok = self.tokenizer
        if self.src_lang is None and isinstance(tok, TranslationTokenizer) and tok.kind != "MarianTokenizer":
            raise ValueError(missing_source(tok))

    def __call__(self, inputs, *, src_lang: str | None = None, tgt_lang: str | None = None, **kwargs):
        """As SummarizationPipeline.__call__; src_lang / tgt_lang (4.x's call arguments) for this call only."""
        call = self if src_lang is None and tgt_lang is None else self.for_languages(src_lang, tgt_lang)
        check_languages(self.tokenizer, call.src_lang, call.tgt_lang)      # both given by now, where needed
        return super(TranslationPipeline, call).__call__(inputs, **kwargs)

    def preprocess(self, texts: list[str], truncation: bool | None = None) -> Encoded:
        """As SummarizationPipeline.preprocess, with this pipeline's source code around each text (M2M100, NLLB,
        mBART; ValueError when none is set), or a multi-target Marian model's >>tgt<< token first."""
        self.require_source()
        return super().preprocess(texts, truncation)

    def encode_texts(self, texts: list[str], max_length: int | None = None) -> list[list[int]]:
        """SummarizationPipeline.encode_texts with the source language; a multi-target Marian model's >>tgt<<
        token goes before the config's prefix (behind it, the token would be read as plain pieces)."""
        if not texts or not isinstance(self.tokenizer, TranslationTokenizer):
            return super().encode_texts(texts, max_length)
        texts = [self.prefix + check_text(t, f"text[{i}]") for i, t in enumerate(texts)]   # errors: the text's place
        texts = with_target_code(texts, self.tokenizer, self.tgt_lang)
        return self.tokenizer.encode_source(texts, self.src_lang, max_length)


__all__ = ["TASKS", "Text2TextGenerationPipeline", "TranslationPipeline", "check_languages", "pipeline",
           "task_languages"]
