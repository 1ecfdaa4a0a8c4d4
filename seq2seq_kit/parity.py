"""Parity with transformers on one checkpoint: `compare` loads it with seq2seq_kit and with transformers, from the
same files, and compares tokenizer ids, generated tokens (greedy and beam, under the checkpoint's generation
settings) and logits (teacher-forced along transformers' greedy output). It returns a ParityReport; the
`seq2seq-kit parity` command prints one.

Every supported family: both sides load through AutoTokenizer / AutoModelForSeq2SeqLM (transformers' picks
MarianMTModel, M2M100ForConditionalGeneration, ...). For translation checkpoints src_lang / tgt_lang are given to
both tokenizers and the target language becomes both runs' forced_bos_token_id, as the translation pipeline does
(a multi-target Marian model's >>tgt<< token is put before each text instead).

transformers is the oracle, not a dependency: it is imported only inside `compare`
(pip install "seq2seq-kit[test]").
"""

from __future__ import annotations

import warnings
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import hub
from .family_tokenizers import AutoTokenizer, TranslationTokenizer
from .loading import resolve_device
from .modeling import AutoModelForSeq2SeqLM, BartForConditionalGeneration
from .tokenizer import Tokenizer
from .translation import check_languages, with_target_code

ATOL = 1e-3                # the default logits tolerance for float32 weights ...
ATOL_HALF = 5e-2           # ... and for float16 / bfloat16 ones
BEAM_WHEN_GREEDY = 4      # the beam run's width when the checkpoint generates greedily


@dataclass
class Check:
    """One comparison on one text. Token checks hold both id lists (and our decoded text, for generated
    tokens); the logits check holds the largest absolute difference over `positions` decoder positions."""
    text: int                       # the index of the text
    name: str                       # "tokenizer ids", "greedy tokens", "beam x4 tokens" or "logits"
    ok: bool
    ours: list[int] | None = None
    theirs: list[int] | None = None
    decoded: str | None = None
    max_diff: float | None = None
    positions: int | None = None


@dataclass
class ParityReport:
    """What `compare` found: the setup, the texts, and every check in the order it ran."""
    model: str
    path: Path
    transformers_version: str
    dtype: str
    device: str
    atol: float
    texts: list[str]
    checks: list[Check] = field(default_factory=list)

    @property
    def failures(self) -> list[str]:
        """"text I NAME" of each check that differs."""
        return [f"text {c.text} {c.name}" for c in self.checks if not c.ok]

    @property
    def ok(self) -> bool:
        return not self.failures


@dataclass
class _Sides:
    """The checkpoint loaded by both libraries."""
    tokenizer: Tokenizer
    model: BartForConditionalGeneration
    reference_tokenizer: object
    reference: object


def compare(model: str | Path, texts: list[str], *, num_beams: int | None = None, max_length: int | None = None,
            atol: float | None = None, device=None, dtype=None, src_lang: str | None = None,
            tgt_lang: str | None = None, **hub_kwargs) -> ParityReport:
    """Compare seq2seq_kit with transformers on `model` (Hub id or checkpoint directory) over `texts`.

    num_beams: the beam run's width (None: the checkpoint's, or BEAM_WHEN_GREEDY if it generates greedily).
    max_length: both runs' maximum length (None: the checkpoint's). atol: the logits tolerance (None: ATOL for
    float32 weights, ATOL_HALF for half precision). src_lang / tgt_lang: a translation checkpoint's languages, as
    AutoTokenizer takes them. device, dtype and hub_kwargs: as for `pipeline`.
    """
    transformers = _import_transformers()
    with _quiet(transformers):
        root = hub.resolve(model, purpose="all", **hub_kwargs)   # both libraries read the same files
        sides = _load(transformers, root, resolve_device(device), dtype, src_lang, tgt_lang)
        dtype = sides.model.dtype
        if atol is None:
            atol = ATOL_HALF if dtype in (torch.float16, torch.bfloat16) else ATOL
        shown = "int8 (float32 reference)" if sides.model.quantized else str(dtype)   # model.dtype: its float parts'
        report = ParityReport(str(model), root, transformers.__version__, shown, str(sides.model.device), atol,
                              list(texts))
        # the target language as the translation pipeline gives it: forced first, or a Marian model's >>tgt<< token
        forced_bos = check_languages(sides.tokenizer, None, tgt_lang, required=False)[2]
        runs = _runs(sides.model, num_beams, max_length, forced_bos)
        for i, text in enumerate(with_target_code(texts, sides.tokenizer, tgt_lang)):
            report.checks += _check_text(i, text, sides, runs, atol)
    return report


def _import_transformers():
    try:
        import transformers
    except ImportError:
        raise ImportError('parity compares against transformers, which is not installed: '
                          'pip install "seq2seq-kit[test]"') from None
    return transformers


@contextmanager
def _quiet(transformers):
    """transformers' load reports, generation advice, progress bars and warnings are not ours to show. Its
    progress-bar switch turns huggingface_hub's too: both are put back as they were."""
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars

    verbosity, bars = transformers.logging.get_verbosity(), transformers.logging.is_progress_bar_enabled()
    hub_bars = not are_progress_bars_disabled()
    transformers.logging.set_verbosity_error()
    transformers.logging.disable_progress_bar()
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", module="transformers")
            yield
    finally:
        transformers.logging.set_verbosity(verbosity)
        if bars:
            transformers.logging.enable_progress_bar()
        if not hub_bars:
            disable_progress_bars()


def _load(transformers, root: Path, device: torch.device, dtype, src_lang: str | None, tgt_lang: str | None) -> _Sides:
    model = AutoModelForSeq2SeqLM.from_pretrained(root, dtype=dtype, device=device).eval()
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(root, dtype=model.dtype).to(device).eval()
    tokenizer = AutoTokenizer.from_pretrained(root, src_lang=src_lang, tgt_lang=tgt_lang)
    marian = isinstance(tokenizer, TranslationTokenizer) and tokenizer.kind == "MarianTokenizer"
    languages = {k: v for k, v in (("src_lang", src_lang), ("tgt_lang", tgt_lang)) if v is not None and not marian}
    return _Sides(tokenizer, model, transformers.AutoTokenizer.from_pretrained(root, **languages), reference)


def _runs(model: BartForConditionalGeneration, num_beams: int | None, max_length: int | None,
          forced_bos_token_id: int | None = None) -> dict[str, dict]:
    """{run name: generate kwargs}: the checkpoint's generation settings apply to both runs; greedy only
    overrides the beam width; a target language is forced first."""
    beams = num_beams or getattr(model.generation_config, "num_beams", None) or 1
    beams = beams if beams > 1 else BEAM_WHEN_GREEDY
    common = {"do_sample": False, **({"max_length": max_length} if max_length else {}),
              **({"forced_bos_token_id": forced_bos_token_id} if forced_bos_token_id is not None else {})}
    return {"greedy": {"num_beams": 1, **common}, f"beam x{beams}": {"num_beams": beams, **common}}


def _check_text(i: int, text: str, sides: _Sides, runs: dict[str, dict], atol: float) -> list[Check]:
    limit = {"truncation": True,
             "max_length": min(sides.tokenizer.model_max_length, sides.model.config.max_position_embeddings)}
    ids, ref = sides.tokenizer(text, **limit)["input_ids"], sides.reference_tokenizer(text, **limit)["input_ids"]
    checks = [Check(i, "tokenizer ids", ids == ref, ids, ref)]
    x = torch.tensor([ids], device=sides.model.device)
    mask = torch.ones_like(x)
    with torch.inference_mode():
        for name, kwargs in runs.items():
            out = sides.model.generate(x, mask, tokenizer=sides.tokenizer, **kwargs)[0].tolist()
            ref = sides.reference.generate(input_ids=x, attention_mask=mask, tokenizer=sides.reference_tokenizer,
                                           **kwargs)[0].tolist()   # (tokenizers: the checkpoint's stop_strings)
            decoded = sides.tokenizer.decode(out, skip_special_tokens=True)
            checks.append(Check(i, f"{name} tokens", out == ref, out, ref, decoded=decoded))
            if name == "greedy":
                checks.append(_check_logits(i, x, mask, ref, sides, atol))
    return checks


def _check_logits(i: int, x: torch.Tensor, mask: torch.Tensor, reference_ids: list[int], sides: _Sides,
                  atol: float) -> Check:
    """Both models' logits, teacher-forced along transformers' greedy output."""
    dec = torch.tensor([reference_ids[:-1] if len(reference_ids) > 1 else reference_ids], device=x.device)
    ours = sides.model(x, mask, decoder_input_ids=dec).logits.float()
    theirs = sides.reference(input_ids=x, attention_mask=mask, decoder_input_ids=dec).logits.float()
    diff = (ours - theirs).abs().max().item()
    return Check(i, "logits", diff <= atol, max_diff=diff, positions=dec.shape[1])
