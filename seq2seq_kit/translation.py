"""`pipeline("translation")`, `pipeline("translation_xx_to_yy")` and `pipeline("text2text-generation")`, which
transformers 5 removed, with transformers 4.x's outputs; and `pipeline(task, ...)` for every task.

    pipe = pipeline("translation", "facebook/nllb-200-distilled-600M", src_lang="eng_Latn", tgt_lang="fra_Latn")
    pipe("The tower is 324 metres tall.")      # [{'translation_text': 'La tour mesure 324 mètres.'}]

They are the summarization pipeline's recipe (seq2seq_kit/pipeline.py: the same public stages check_texts,
preprocess, generate_ids, postprocess and engine) with other record keys and, for translation, 4.x's
`_build_translation_inputs`: the tokenizer's src_lang puts the source code around each text (M2M100, NLLB,
mBART-50) and the target language becomes generate's forced_bos_token_id. A task named translation_en_to_de gives
src_lang "en" and tgt_lang "de" unless they are passed. Marian models have no language codes in 4.x; here a
multi-target Marian model's tgt_lang ("fra") puts its ">>fra<<" token before each text, and a single-pair model
ignores the task name's languages, as 4.x did.
"""

from __future__ import annotations

import re

from . import pipeline as summarization
from .family_tokenizers import TranslationTokenizer
from .modeling import BartForConditionalGeneration
from .pipeline import Encoded, SummarizationPipeline
from .tokenizer import Tokenizer

TASKS = ("summarization", "translation", "translation_XX_to_YY", "text2text-generation")
TRANSLATION_TASK = re.compile(r"^translation_([^_]+)_to_([^_]+)$")


def pipeline(task: str = "summarization", model=None, tokenizer=None, device=None, dtype=None, *,
             src_lang: str | None = None, tgt_lang: str | None = None, **hub_kwargs):
    """A pipeline for `task` (see TASKS); model, tokenizer, device, dtype and hub_kwargs as
    seq2seq_kit.pipeline.pipeline. src_lang / tgt_lang (translation): language codes as the checkpoint's tokenizer
    takes them ("en", "eng_Latn", "en_XX"; a Marian model's target "fra")."""
    if task == "summarization":
        if src_lang is not None or tgt_lang is not None:
            raise ValueError("src_lang / tgt_lang apply to translation; the summarization task takes neither")
        return summarization.pipeline(task, model, tokenizer, device, dtype, **hub_kwargs)
    named = TRANSLATION_TASK.match(task)
    if task not in ("translation", "text2text-generation") and not named:
        raise ValueError(f"unsupported task {task!r}; seq2seq_kit supports: {', '.join(map(repr, TASKS))}")
    if task == "text2text-generation":
        if src_lang is not None or tgt_lang is not None:
            raise ValueError("src_lang / tgt_lang apply to translation; use the 'translation' task")
        return Text2TextGenerationPipeline(*summarization.load_model_and_tokenizer(
            model, tokenizer, device, dtype, **hub_kwargs))
    if model is None:
        raise ValueError(f"pipeline({task!r}) needs model= (a Hub id, path or loaded model); there is no default "
                         "translation model")
    if named:   # 4.x: the task's languages unless given
        src_lang = named.group(1) if src_lang is None else src_lang
        tgt_lang = named.group(2) if tgt_lang is None else tgt_lang
    model, tokenizer = summarization.load_model_and_tokenizer(model, tokenizer, device, dtype, **hub_kwargs)
    return TranslationPipeline(model, tokenizer, src_lang=src_lang, tgt_lang=tgt_lang, task=task)


def check_languages(tokenizer: Tokenizer, src_lang: str | None, tgt_lang: str | None,
                    single_pair_ok: bool = False) -> tuple[str | None, str | None, int | None]:
    """(src_lang, tgt_lang, forced_bos_token_id) that a translation with `tokenizer` uses for the given languages:
    the source defaults to the tokenizer's; a multi-target Marian model takes tgt_lang as its >>tgt<< token (no
    forced token); a tokenizer without codes takes none ((None, None, None); given ones are refused unless
    single_pair_ok); mBART (cc25) may leave the target out (no forced token: the checkpoint's own), and with
    single_pair_ok ignores languages that are not its codes ("translation_en_to_ro": the checkpoint's pair). Raises
    ValueError naming the codes the tokenizer knows. Changes nothing."""
    tok = tokenizer
    if not isinstance(tok, TranslationTokenizer) or (tok.kind == "MarianTokenizer" and not tok.language_codes):
        if (src_lang or tgt_lang) and not single_pair_ok:
            raise ValueError("this model's tokenizer has no language codes (a single language pair): "
                             "drop src_lang / tgt_lang")
        return None, None, None
    if tok.kind == "MarianTokenizer":
        if tgt_lang is None:
            raise ValueError(f"this Marian model translates into several languages: pass tgt_lang, one of "
                             f"{', '.join(tok.language_codes)}")
        tok.get_lang_id(tgt_lang)                                   # unknown code: ValueError naming the known
        return None, tgt_lang, None
    if tok.kind == "MBartTokenizer" and single_pair_ok and {src_lang, tgt_lang} - {None, *tok.language_codes}:
        return tok.src_lang, None, None
    if tgt_lang is None and tok.target_required:
        raise ValueError(f"translation with this {tok.kind} needs tgt_lang (e.g. one of "
                         f"{', '.join(tok.language_codes[:8])}, ...)")
    if src_lang is not None:
        tok.get_lang_id(src_lang)
    return src_lang or tok.src_lang, tgt_lang, None if tgt_lang is None else tok.target_language_id(tgt_lang)


class Text2TextGenerationPipeline(SummarizationPipeline):
    """`pipe(text_or_texts, **generate_kwargs)` -> [{'generated_text': ...}, ...]: the summarization recipe
    with the checkpoint's task_specific_params["text2text-generation"] (4.x's Text2TextGenerationPipeline)."""

    task = "text2text-generation"
    output = "generated"
    verb = "generate from"


class TranslationPipeline(Text2TextGenerationPipeline):
    """`pipe(text_or_texts, src_lang=None, tgt_lang=None, **generate_kwargs)` -> [{'translation_text': ...}, ...].
    The target language's forced_bos_token_id joins the task's generate_defaults (so `engine()` applies it too)."""

    output = "translation"
    verb = "translate"

    def __init__(self, model: BartForConditionalGeneration, tokenizer: Tokenizer, *, src_lang: str | None = None,
                 tgt_lang: str | None = None, task: str = "translation"):
        self.task = task                    # task_specific_params[task], as 4.x looked it up
        super().__init__(model, tokenizer)
        self.src_lang = self.tgt_lang = None
        self.set_languages(src_lang, tgt_lang, single_pair_ok=bool(TRANSLATION_TASK.match(task)))

    def __repr__(self) -> str:
        return super().__repr__().replace("SummarizationPipeline(", f"TranslationPipeline(src_lang={self.src_lang!r}, "
                                          f"tgt_lang={self.tgt_lang!r}, ", 1)

    def set_languages(self, src_lang: str | None, tgt_lang: str | None, single_pair_ok: bool = False) -> None:
        """Check and set the source / target languages (check_languages); raises ValueError naming the codes the
        tokenizer knows. single_pair_ok: languages given to a tokenizer without codes are ignored instead."""
        src, tgt, forced_bos = check_languages(self.tokenizer, src_lang, tgt_lang, single_pair_ok)
        if src is not None and src != self.tokenizer.src_lang:
            self.tokenizer.src_lang = src
        self.src_lang, self.tgt_lang = src, tgt
        _, defaults = summarization.task_defaults(self.model.config, self.task)     # no earlier target's token
        self.generate_defaults = {**defaults, **({} if forced_bos is None else {"forced_bos_token_id": forced_bos})}

    def __call__(self, inputs, *, src_lang: str | None = None, tgt_lang: str | None = None, **kwargs):
        """As SummarizationPipeline.__call__; src_lang / tgt_lang switch this pipeline's languages (4.x's call
        arguments)."""
        if src_lang is not None or tgt_lang is not None:
            self.set_languages(src_lang or self.src_lang, tgt_lang or self.tgt_lang)
        return super().__call__(inputs, **kwargs)

    def preprocess(self, texts: list[str], truncation: bool | None = None) -> Encoded:
        """As SummarizationPipeline.preprocess, a multi-target Marian model's >>tgt<< token put first."""
        if self.tgt_lang is not None and self.tokenizer.kind == "MarianTokenizer":
            code = self.tokenizer.get_lang_token(self.tgt_lang)
            texts = [f"{code} {t}" for t in texts]
        return super().preprocess(texts, truncation)


__all__ = ["TASKS", "Text2TextGenerationPipeline", "TranslationPipeline", "check_languages", "pipeline"]
