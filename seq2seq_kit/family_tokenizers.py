"""The translation families' tokenizers, as transformers 5.25 builds them, on seq2seq_kit's Tokenizer.

    tok = AutoTokenizer.from_pretrained(path_or_id, src_lang="eng_Latn", tgt_lang="fra_Latn")
    tok(text)["input_ids"];  tok.target_language_id()   # generate(..., forced_bos_token_id=that)
    tok.encode_source(texts, "deu_Latn")   # another source's ids, tok.src_lang unchanged (safe across threads)
    tok(text, text_target=target)["labels"]   # the target's ids: tgt_lang's code (Marian: target.spm), as transformers

What each checkpoint ships, and how it is read (never a hand-written segmenter):
  Marian (opus-mt)  source.spm, target.spm, vocab.json: transformers' MarianTokenizer is a Python tokenizer over
                    the `sentencepiece` library. Here: a `tokenizers` pipeline whose pre-tokenizer is that
                    SentencePiece model (pieces), its model the vocab.json lookup (WordLevel, <unk> for others),
                    `A </s>`; a leading `>>fra<<` target code stays one token; decoded with the source model.
                    With separate_vocabs (tokenizer_config.json; target.spm + target_vocab.json, for a model with
                    its own decoder vocabulary): decode reads target ids, as MarianTokenizer does (TargetVocabulary).
  M2M100            sentencepiece.bpe.model + vocab.json: the same construction (M2M100Tokenizer), language tokens
                    `__en__` after the vocabulary, `__src__ A </s>`. The language tokens are special tokens, as
                    where tokenizer_config.json lists them (additional_special_tokens, as the Hub's checkpoints do)
                    and as in transformers 4.x (5.25 without that list: its decode(skip_special_tokens=True) keeps
                    "__fr__", and a "__fr__" written in the text is split into pieces there; the only texts whose
                    ids differ from 5.25's, in 6000 random ones).
                    Then fairseq's 8 "madeup words" that pad the model's vocabulary (m2m100_418M: 128112 ids),
                    read as <unk> as transformers reads them. vocab_size leaves both out, vocab and len() the
                    language tokens tokenizer_config.json does not list and the madeup words, as transformers 5.25's.
  NLLB, mBART-50    tokenizer.json (the `tokenizers` path; its normalizer, pre-tokenizer and decoder as the class
                    builds them: tokenizer_classes), language codes `eng_Latn` / `en_XX` as tokens:
                    `src A </s>` (NLLB's legacy_behaviour: `A </s> src`), set from src_lang as transformers does.
  mBART (cc25)      tokenizer.json with MBartTokenizer's 25 codes: `A </s> src`, src_lang as above.
  mBART-50 without tokenizer.json: sentencepiece.bpe.model converted once as transformers' MBart50Tokenizer
                    converts it (a Unigram model in fairseq's id order, then the language codes and <mask>).
  Pegasus, BART ... tokenizer.json or vocab.json + merges.txt: seq2seq_kit.Tokenizer unchanged.
The target language reaches the model as transformers users pass it: forced_bos_token_id = the target language's
id (target_language_id); a multi-target Marian model takes `>>fra<<` at the start of the text instead.
Tokenizers built on a SentencePiece pre-tokenizer (Marian, M2M100) cannot be saved as tokenizer.json:
save_pretrained copies the files they were read from, as transformers' Python tokenizers save them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

from tokenizers import AddedToken, NormalizedString, decoders, models, pre_tokenizers, processors
from tokenizers import Tokenizer as Backend

from . import hub
from .jsonfile import read_json, write_json
from .tokenizer_classes import read_tokenizer_json, set_pipeline, tokenizer_class
from .tokenizer import (FILES, Tokenizer, as_ids, check_text, check_tokens, clean_up_tokenization, extra_tokens,
                        read_tokenizer_config, token_content)

SPIECE_UNDERLINE = "\u2581"
UNKNOWN_PIECE = " <unk> "   # Marian's target side: the key unknown pieces read as (no piece holds a space)
DEFAULT_SOURCE = {"M2M100Tokenizer": "en", "NllbTokenizer": "eng_Latn", "MBart50Tokenizer": "en_XX",
                  "MBartTokenizer": "en_XX"}
MARIAN_SOURCE = ("Marian models have no source language code; pass tgt_lang (a multi-target model's >>xxx<< code) "
                 "or put the >>xxx<< code at the start of the text")

# transformers' FAIRSEQ_LANGUAGE_CODES (tokenization_m2m_100.py, tokenization_mbart50.py)
M2M100_LANGUAGES = """
af am ar ast az ba be bg bn br bs ca ceb cs cy da de el en es et fa ff fi fr fy ga gd gl gu ha he hi hr ht hu hy
id ig ilo is it ja jv ka kk km kn ko lb lg ln lo lt lv mg mk ml mn mr ms my ne nl no ns oc or pa pl ps pt ro ru
sd si sk sl so sq sr ss su sv sw ta th tl tn tr uk ur uz vi wo xh yi yo zh zu
""".split()
WMT21_LANGUAGES = "en ha is ja cs ru zh de".split()
MBART50_LANGUAGES = """
ar_AR cs_CZ de_DE en_XX es_XX et_EE fi_FI fr_XX gu_IN hi_IN it_IT ja_XX kk_KZ ko_KR lt_LT lv_LV my_MM ne_NP
nl_XX ro_RO ru_RU si_LK tr_TR vi_VN zh_CN af_ZA az_AZ bn_IN fa_IR he_IL hr_HR id_ID ka_GE km_KH mk_MK ml_IN
mn_MN mr_IN pl_PL ps_AF pt_XX sv_SE sw_KE ta_IN te_IN th_TH tl_XX uk_UA ur_PK xh_ZA gl_ES sl_SI
""".split()
# transformers' NllbTokenizer default (tokenization_nllb.py's FAIRSEQ_LANGUAGE_CODES): its language codes when
# tokenizer_config.json lists no extra special tokens
NLLB_LANGUAGES = """
ace_Arab ace_Latn acm_Arab acq_Arab aeb_Arab afr_Latn ajp_Arab aka_Latn amh_Ethi apc_Arab arb_Arab ars_Arab ary_Arab
arz_Arab asm_Beng ast_Latn awa_Deva ayr_Latn azb_Arab azj_Latn bak_Cyrl bam_Latn ban_Latn bel_Cyrl bem_Latn ben_Beng
bho_Deva bjn_Arab bjn_Latn bod_Tibt bos_Latn bug_Latn bul_Cyrl cat_Latn ceb_Latn ces_Latn cjk_Latn ckb_Arab crh_Latn
cym_Latn dan_Latn deu_Latn dik_Latn dyu_Latn dzo_Tibt ell_Grek eng_Latn epo_Latn est_Latn eus_Latn ewe_Latn fao_Latn
pes_Arab fij_Latn fin_Latn fon_Latn fra_Latn fur_Latn fuv_Latn gla_Latn gle_Latn glg_Latn grn_Latn guj_Gujr hat_Latn
hau_Latn heb_Hebr hin_Deva hne_Deva hrv_Latn hun_Latn hye_Armn ibo_Latn ilo_Latn ind_Latn isl_Latn ita_Latn jav_Latn
jpn_Jpan kab_Latn kac_Latn kam_Latn kan_Knda kas_Arab kas_Deva kat_Geor knc_Arab knc_Latn kaz_Cyrl kbp_Latn kea_Latn
khm_Khmr kik_Latn kin_Latn kir_Cyrl kmb_Latn kon_Latn kor_Hang kmr_Latn lao_Laoo lvs_Latn lij_Latn lim_Latn lin_Latn
lit_Latn lmo_Latn ltg_Latn ltz_Latn lua_Latn lug_Latn luo_Latn lus_Latn mag_Deva mai_Deva mal_Mlym mar_Deva min_Latn
mkd_Cyrl plt_Latn mlt_Latn mni_Beng khk_Cyrl mos_Latn mri_Latn zsm_Latn mya_Mymr nld_Latn nno_Latn nob_Latn npi_Deva
nso_Latn nus_Latn nya_Latn oci_Latn gaz_Latn ory_Orya pag_Latn pan_Guru pap_Latn pol_Latn por_Latn prs_Arab pbt_Arab
quy_Latn ron_Latn run_Latn rus_Cyrl sag_Latn san_Deva sat_Beng scn_Latn shn_Mymr sin_Sinh slk_Latn slv_Latn smo_Latn
sna_Latn snd_Arab som_Latn sot_Latn spa_Latn als_Latn srd_Latn srp_Cyrl ssw_Latn sun_Latn swe_Latn swh_Latn szl_Latn
tam_Taml tat_Cyrl tel_Telu tgk_Cyrl tgl_Latn tha_Thai tir_Ethi taq_Latn taq_Tfng tpi_Latn tsn_Latn tso_Latn tuk_Latn
tum_Latn tur_Latn twi_Latn tzm_Tfng uig_Arab ukr_Cyrl umb_Latn urd_Arab uzn_Latn vec_Latn vie_Latn war_Latn wol_Latn
xho_Latn ydd_Hebr yor_Latn yue_Hant zho_Hans zho_Hant zul_Latn
""".split()
MBART_LANGUAGES = MBART50_LANGUAGES[:25]     # tokenization_mbart.py's FAIRSEQ_LANGUAGE_CODES (mBART-cc25)
# the extra special tokens of a tokenizer_config.json that lists none: NllbTokenizer's, MBartTokenizer's codes
DEFAULT_CODES = {"NllbTokenizer": NLLB_LANGUAGES, "MBartTokenizer": MBART_LANGUAGES}
PYTHON_KINDS = ("MarianTokenizer", "M2M100Tokenizer")   # transformers' Python (not `tokenizers`) tokenizers
# transformers 5.25's language maps, and the tokenizers that have each (NLLB none); set on those at load
# (language_maps, _marian), the others raise AttributeError as transformers' do
LANGUAGE_MAPS = {"lang_code_to_id": "mBART's, mBART-50's and M2M100's", "id_to_lang_code": "mBART-50's",
                 "lang_code_to_token": "M2M100's", "lang_token_to_id": "M2M100's", "id_to_lang_token": "M2M100's",
                 "supported_language_codes": "Marian's"}


def check_code(name: str, code, optional: bool = True) -> None:
    """TypeError naming the argument unless `code` (src_lang, tgt_lang) is a str (or None, when optional)."""
    if not isinstance(code, str) and not (optional and code is None):
        raise TypeError(f"{name} must be a language code, a str such as 'fr', 'fra_Latn' or 'fr_XX', got "
                        f"{type(code).__name__} {code!r}")


class AutoTokenizer:
    """transformers' entry point by name: the right tokenizer for any supported checkpoint."""

    def __init__(self, *args, **kwargs):
        raise TypeError("AutoTokenizer is not instantiated: use AutoTokenizer.from_pretrained(path)")

    @staticmethod
    def from_pretrained(path, src_lang: str | None = None, tgt_lang: str | None = None,
                        legacy_behaviour: bool | None = None, **hub_kwargs) -> Tokenizer:
        """A directory or Hub id -> a Tokenizer, or a TranslationTokenizer for Marian, M2M100, NLLB and mBART-50
        checkpoints, and mBART (cc25) ones (src_lang / tgt_lang as transformers' tokenizers take them: "en", "eng_Latn",
        "en_XX"; legacy_behaviour, NLLB's, over its tokenizer_config.json's)."""
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"a tokenizer is loaded from a directory or Hub id (str or path), got a "
                            f"{type(path).__module__.split('.')[0]} {type(path).__name__}; pass its path, or a "
                            "seq2seq_kit Tokenizer (seq2seq_kit.AutoTokenizer.from_pretrained(path))")
        for name, code in (("src_lang", src_lang), ("tgt_lang", tgt_lang)):
            check_code(name, code)
        try:
            root = hub.resolve(path, purpose="tokenizer", **hub_kwargs)
        except FileNotFoundError as e:
            raise FileNotFoundError(f"{e} (a tokenizer directory holds {FILES}, or a Marian / M2M100 / mBART-50 "
                                    "SentencePiece model)") from e
        config = read_tokenizer_config(root)
        kind = tokenizer_kind(root, config)
        if legacy_behaviour is not None:
            if kind != "NllbTokenizer" or not isinstance(legacy_behaviour, bool):
                raise ValueError(f"legacy_behaviour (True or False, got {legacy_behaviour!r}) is for NLLB "
                                 f"tokenizers; {root} holds a {kind or 'tokenizer without language codes'}")
            config["legacy_behaviour"] = legacy_behaviour
        if kind is None:
            if src_lang is not None or tgt_lang is not None:
                raise ValueError(f"src_lang / tgt_lang were given, but {root} holds no multilingual tokenizer "
                                 "(Marian, M2M100, NLLB, mBART, mBART-50)")
            tok = Tokenizer.from_pretrained(root)
        else:
            tok = TranslationTokenizer.load(root, config, kind, src_lang, tgt_lang)
        tok.name_or_path = str(path)      # the Hub id or path as given, as transformers keeps it
        return tok


def tokenizer_kind(root: Path, config: dict) -> str | None:
    """transformers' tokenizer class for these families ("MarianTokenizer", ...), or None for the others."""
    name = (tokenizer_class(root, config) or "").removesuffix("Fast")
    if (root / "source.spm").is_file():
        return "MarianTokenizer"
    if name in ("NllbTokenizer", "MBartTokenizer", "MBart50Tokenizer", "M2M100Tokenizer"):
        return name
    has_spm, has_json = (root / "sentencepiece.bpe.model").is_file(), (root / "tokenizer.json").is_file()
    if has_spm and (root / "vocab.json").is_file() and not has_json:
        return "M2M100Tokenizer"
    return None


class TranslationTokenizer(Tokenizer):
    """A Tokenizer with transformers' language handling: `src_lang` (settable: the source code put around each
    text), `tgt_lang`, `get_lang_id(lang)`, `target_language_id()` (the forced_bos_token_id for generate), and
    transformers' language maps where its class has them (LANGUAGE_MAPS: `lang_code_to_id["fr_XX"]`, ...)."""

    kind: str = ""
    lang_tokens: dict[str, str] = {}    # language code -> its token ("en" -> "__en__"); codes are tokens if absent
    target_vocabulary: TargetVocabulary | None = None    # Marian with separate_vocabs: what decode reads
    target_files: tuple[Path, dict, dict] | None = None   # Marian: (root, config, named tokens) of its target side
    # Marian, M2M100: (root, tokenizer_config.json's keys, the files read there): what save_pretrained copies
    read_files: tuple[Path, dict, tuple[str, ...]] | None = None
    target_side: TranslationTokenizer | None = None    # Marian: text_target's tokenizer, built at its first use
    code_last: bool = False          # the source code after the text (mBART, NLLB's legacy_behaviour)
    aliases: dict[str, str] = {}     # tokens read as another (M2M100's madeup words as <unk>)
    # tokens with ids (read, decoded) that vocab_size leaves out, as transformers 5.25 leaves them out (M2M100's
    # language tokens and madeup words); vocab and len() leave out those of them (`unlisted`) that tokenizer_config.json
    # does not list as special tokens (transformers registers the listed ones as added tokens)
    outside_vocab: frozenset[str] = frozenset()
    unlisted: frozenset[str] = frozenset()
    pieces: _Pieces | None = None    # Marian, M2M100: the SentencePiece pre-tokenizer (tokenize shows its pieces)
    detokenizer: _Detokenizer | None = None     # and their decoder
    # src_lang chosen by the user (from_pretrained's argument, or set), not a default: tokenizer_config.json's
    # src_lang does not count, as transformers' save_pretrained writes its class default there ("eng_Latn")
    source_given: bool = False
    target_given: bool = False      # tgt_lang the same way (from_pretrained's argument, or set)
    _tgt_lang: str | None = None

    @classmethod
    def load(cls, root: Path, config: dict, kind: str, src_lang: str | None, tgt_lang: str | None):
        if kind == "MBart50Tokenizer":    # it has no bos_token of its own (transformers 5.25): only the files' one
            config = {"bos_token": None, **config}
            if (root / "tokenizer.json").is_file():
                config["extra_special_tokens"] = _with_mbart50_codes(extra_tokens(config))
        if kind in DEFAULT_CODES and "extra_special_tokens" not in config \
                and "additional_special_tokens" not in config:     # transformers' default: the class's codes
            config = {**config, "extra_special_tokens": DEFAULT_CODES[kind]}
        if kind == "MarianTokenizer":
            tok = _marian(root, config)
        elif kind == "M2M100Tokenizer":
            tok = _m2m100(root, config)
        elif (root / "tokenizer.json").is_file():
            tok = cls(read_tokenizer_json(root / "tokenizer.json", kind, config), config)
        elif kind == "MBart50Tokenizer" and (root / "sentencepiece.bpe.model").is_file():
            tok = _mbart50_from_spm(root, config)
        else:
            raise FileNotFoundError(f"{root} has no tokenizer.json for its {kind} (only mBART-50's SentencePiece file "
                                    "is read without one); write it once with transformers: "
                                    "AutoTokenizer.from_pretrained(folder).save_pretrained(folder)")
        if tok.eos_token is None:
            raise ValueError(f"{root}: the {kind}'s eos_token is null (tokenizer_config.json or special_tokens_map.json):"
                             " it ends each text; name one (\"eos_token\": \"</s>\") or leave it out")
        tok.kind = kind
        tok.code_last = kind == "MBartTokenizer" or bool(config.get("legacy_behaviour", False))
        if kind in ("MBartTokenizer", "MBart50Tokenizer"):      # their codes are their tokens
            tok.lang_tokens = {code: code for code in (MBART_LANGUAGES if kind == "MBartTokenizer"
                                                       else MBART50_LANGUAGES)}
        tok._tgt_lang = tgt_lang if tgt_lang is not None else config.get("tgt_lang")
        tok.target_given = tgt_lang is not None
        if kind != "MarianTokenizer" or src_lang is not None:       # Marian: the setter refuses it
            tok.src_lang = src_lang if src_lang is not None else config.get("src_lang") or DEFAULT_SOURCE[kind]
        tok.source_given = src_lang is not None
        for name, value in language_maps(tok).items():
            setattr(tok, name, value)
        if tok.tgt_lang is not None:
            tok.target_language_id()   # fails early on an unknown code
        return tok

    @property
    def tgt_lang(self) -> str | None:
        """The target language text_target and target_language_id read (a pipeline given this tokenizer translates
        into it, where the user chose it: target_given)."""
        return self._tgt_lang

    @tgt_lang.setter
    def tgt_lang(self, lang: str | None) -> None:
        self._tgt_lang, self.target_given = lang, lang is not None

    @property
    def src_lang(self) -> str | None:
        return getattr(self, "_src_lang", None)

    @src_lang.setter
    def src_lang(self, lang: str) -> None:
        """As transformers' set_src_lang_special_tokens: the source code before the text, </s> at the end (mBART and
        NLLB's legacy_behaviour: `A </s> code`). Marian has no source code: ValueError."""
        processor = self.source_processor(lang)
        with self.lock:                      # not while another thread encodes
            self.backend_tokenizer.post_processor = processor
            self._src_lang = lang
        self.source_given = True

    def source_processor(self, lang: str) -> processors.TemplateProcessing:
        """The post-processor that puts source language `lang`'s code around a text (ValueError for Marian, which
        has none, or an unknown code); a target language's goes around a target alike."""
        if self.kind == "MarianTokenizer":
            raise ValueError(MARIAN_SOURCE)
        check_code("src_lang", lang, optional=False)
        code = self.get_lang_token(lang)
        code_id, eos = self.get_lang_id(lang), self.eos_token
        single = ["$A", eos, code] if self.code_last else [code, "$A", eos]
        pair = ["$A", "$B", eos, code] if self.code_last else [code, "$A", "$B", eos]
        return processors.TemplateProcessing(single=single, pair=pair,
                                             special_tokens=[(code, code_id), (eos, self.eos_token_id)])

    def encode_source(self, texts: list[str], src_lang: str | None = None,
                      max_length: int | None = None) -> list[list[int]]:
        """input_ids of each text (no padding; cut to max_length when given) with source language src_lang's code
        around it (None: this tokenizer's src_lang), as `tok(texts)` after `tok.src_lang = src_lang` gives them,
        without changing src_lang: threads may each encode with their own source."""
        if src_lang is None:
            cut = dict(truncation=True, max_length=max_length) if max_length is not None else {}
            return self(texts, **cut)["input_ids"]
        processor = self.source_processor(src_lang)
        batch = [check_text(t, f"text[{i}]") for i, t in enumerate(texts)]
        _, truncation, max_length = self.strategies(False, True if max_length is not None else None, max_length)
        with self.lock:
            return [e.ids for e in self.encodings_with(processor, batch, True, None, truncation, max_length)]

    def encodings_with(self, processor, batch: list, add_special_tokens: bool, padding, truncation,
                       max_length) -> list:
        """encodings_locked with `processor` as the post-processor for this call only (`lock` held)."""
        backend = self.backend_tokenizer
        default, backend.post_processor = backend.post_processor, processor
        try:
            return self.encodings_locked(batch, add_special_tokens, padding, truncation, max_length)
        finally:
            backend.post_processor = default

    def target_encodings_locked(self, batch: list, add_special_tokens: bool, padding, truncation,
                                max_length) -> list:
        """Tokenizer.target_encodings_locked as transformers' target mode encodes: Marian with its target side
        (target_side); the others with tgt_lang's code where src_lang's goes around a source (without tgt_lang,
        mBART, mBART-50 and NLLB take the current src_lang's, leaving tgt_lang unset where transformers sets it to
        src_lang at its first target call; M2M100 raises ValueError)."""
        if self.target_files is not None:
            if self.target_side is None:
                self.target_side = _marian_target(*self.target_files, self)
            side = self.target_side
            side.padding_side, side.truncation_side = self.padding_side, self.truncation_side
            return side.encodings_locked(batch, add_special_tokens, padding, truncation, max_length)
        if self.tgt_lang is None and self.kind == "M2M100Tokenizer":
            raise ValueError("text_target needs the target language: pass tgt_lang='fr' (say) to from_pretrained, "
                             "or set tok.tgt_lang")
        processor = self.source_processor(self.src_lang if self.tgt_lang is None else self.tgt_lang)
        return self.encodings_with(processor, batch, add_special_tokens, padding, truncation, max_length)

    def special_room(self, pair: bool, add_special_tokens: bool, max_length: int) -> int:
        """Tokenizer.special_room; Marian, M2M100: ValueError for max_length=0, which transformers' Python tokenizers
        take as no limit (they cut nothing), where the `tokenizers` library would cut every token."""
        added = super().special_room(pair, add_special_tokens, max_length)
        if max_length == 0 and self.cuts_one_side_only:
            raise ValueError(f"max_length=0 would cut every token, but transformers' {self.kind} takes it as no limit "
                             "and cuts nothing: pass max_length >= 1, or truncation=False for the whole text")
        return added

    @property
    def cuts_one_side_only(self) -> bool:
        """Marian, M2M100: transformers' Python tokenizers' only_first / only_second (see Tokenizer)."""
        return self.kind in PYTHON_KINDS

    @property
    def pads_empty_text(self) -> bool:
        """Not for Marian and M2M100: transformers' Python tokenizers leave a single text without tokens empty."""
        return self.kind not in PYTHON_KINDS

    @property
    def gives_offsets(self) -> bool:
        """Not for Marian and M2M100 (their pieces, _Pieces, are made apart from the text): no offsets, and no
        BatchEncoding.encodings (its word_ids, ... raise as transformers' Python tokenizers' do)."""
        return self.pieces is None

    def tokenize(self, text: str) -> list[str]:
        """Tokenizer.tokenize; Marian, M2M100: an added token as its content, without the spaces it strips (lstrip /
        rstrip), and a piece the vocabulary lacks shown as itself, not <unk> (its id is <unk>'s), as transformers'
        Python tokenizers show them."""
        encoding = self.encodings([check_text(text, "text")], add_special_tokens=False)[0]
        if self.pieces is None:
            return encoding.tokens
        added = self.backend_tokenizer.get_added_tokens_decoder()            # {id: AddedToken}
        shown = [added[i].content if i in added else t for t, i in zip(encoding.tokens, encoding.ids)]
        if self.unk_token not in shown:
            return shown
        added = sorted({t.content for t in self.backend_tokenizer.get_added_tokens_decoder().values()}, key=len,
                       reverse=True)                  # typed in the text, kept whole (the longest first, as matched)
        tokens, start = [], 0
        for typed in re.finditer("|".join(map(re.escape, added)), text):
            tokens += [*self.pieces.pieces(text[start:typed.start()]), typed.group()]
            start = typed.end()
        tokens += self.pieces.pieces(text[start:])
        return tokens if len(tokens) == len(shown) else shown

    def token_type_ids(self, encodings: list) -> list[list[int]]:
        """Tokenizer.token_type_ids; Marian, M2M100: as transformers' Python tokenizers count them ("bert_style"):
        a pair's last tokens, as many as its second text has, are 1, the others and the padding 0."""
        if self.pieces is None:
            return super().token_type_ids(encodings)
        rows = []
        for encoding in encodings:
            second = encoding.sequence_ids.count(1)
            held = [i for i, kept in enumerate(encoding.attention_mask) if kept]
            ones = set(held[len(held) - second:]) if second else set()
            rows.append([int(i in ones) for i in range(len(encoding.ids))])
        return rows

    def encodings_locked(self, batch: list, add_special_tokens: bool, padding, truncation, max_length) -> list:
        """Tokenizer.encodings_locked; Marian and M2M100 pairs are cut as transformers' Python tokenizers cut them
        (truncate_sequences): "longest_first" takes an odd last token off the second text, where the `tokenizers`
        library takes it from the first; "only_first" / "only_second" may cut a side to nothing, where the
        library refuses to (a side with fewer tokens than must go is refused: the result would pass max_length)."""
        pairs = bool(batch) and isinstance(batch[0], tuple)       # a batch is all pairs or none
        if not truncation or self.kind not in PYTHON_KINDS or not pairs:
            return super().encodings_locked(batch, add_special_tokens, padding, truncation, max_length)
        backend = self.backend_tokenizer
        backend.no_truncation()
        backend.no_padding()
        room = max_length - self.special_room(True, add_special_tokens, max_length)
        pairs = list(zip(*(backend.encode_batch(list(side), add_special_tokens=False) for side in zip(*batch))))
        lengths = [(len(first.ids), len(second.ids)) for first, second in pairs]
        if truncation != "longest_first":
            self.check_one_side_fits(batch, add_special_tokens, truncation, max_length,
                                     sizes=[n for pair in lengths for n in pair])
        encodings = []
        for pair, (first, second) in zip(pairs, lengths):
            remove = max(first + second - room, 0)
            cuts = (_longest_first(first, second, room) if truncation == "longest_first"
                    else (remove, 0) if truncation == "only_first" else (0, remove))
            for encoding, cut in zip(pair, cuts):
                encoding.truncate(len(encoding.ids) - cut, direction=self.truncation_side)
            encodings.append(backend.post_process(*pair, add_special_tokens=add_special_tokens))
        if padding:
            width = max_length if padding == "max_length" else max(len(e.ids) for e in encodings)
            for encoding in encodings:
                encoding.pad(width, direction=self.padding_side, pad_id=self.pad_token_id, pad_token=self.pad_token)
        return encodings

    @property
    def target_required(self) -> bool:
        """Whether a translation must name its target language: not with mBART (cc25), whose checkpoints are each
        fine-tuned into one target (their decoder start names it), nor with a single-pair Marian model (no codes)."""
        return self.kind != "MBartTokenizer" and bool(self.language_codes)

    @property
    def language_codes(self) -> list[str]:
        """The codes src_lang / tgt_lang take."""
        if self.kind == "MarianTokenizer":          # its >>xx<< tokens in id order, found once per vocabulary size (a
            size = self.backend_tokenizer.get_vocab_size(with_added_tokens=True)   # sort of it: 0.13 s at 58k)
            if getattr(self, "marian_codes", (None,))[0] != size:
                vocab = self.vocab
                self.marian_codes = size, [t[2:-2] for t in sorted(vocab, key=vocab.get) if is_marian_code(t)]
            return list(self.marian_codes[1])
        if self.lang_tokens:
            return list(self.lang_tokens)
        listed = [t for t in self.all_special_tokens if t in set(self.extra_special_tokens)]
        if self.kind == "NllbTokenizer":    # and its codes in the vocabulary: transformers 5 saves a list it was told
            known = set(listed)             # to replace (add_special_tokens) with no codes, and still takes them
            listed += [c for c in NLLB_LANGUAGES
                       if c not in known and self.backend_tokenizer.token_to_id(c) is not None]
        return listed

    def get_lang_token(self, lang: str) -> str:
        check_code("lang", lang, optional=False)
        if self.kind == "MarianTokenizer":
            return f">>{lang.removeprefix('>>').removesuffix('<<')}<<"
        return self.lang_tokens.get(lang, lang)

    def get_lang_id(self, lang: str) -> int:
        """The id of a language code's token; ValueError naming the known codes for an unknown one (another token
        of the vocabulary, "<s>" or a word, is no language code)."""
        token = self.get_lang_token(lang)
        found = self.backend_tokenizer.token_to_id(token)
        code = token[2:-2] if self.kind == "MarianTokenizer" else lang
        known = self.language_codes                  # Marian's: a sort of its vocabulary, so once
        if found is None or (known and code not in known):
            raise ValueError(f"unknown language code {lang!r} for this {self.kind}; it knows "
                             f"{', '.join(known[:12])}{', ...' if len(known) > 12 else ''} ({len(known)} codes)")
        return found

    def target_language_id(self, tgt_lang: str | None = None) -> int | None:
        """generate's forced_bos_token_id for tgt_lang (default: self.tgt_lang): None for Marian (its target code
        is part of the text) or when no target is set."""
        lang = self.tgt_lang if tgt_lang is None else tgt_lang
        if lang is None:
            return None
        lang_id = self.get_lang_id(lang)
        return None if self.kind == "MarianTokenizer" else lang_id

    @property
    def vocab(self) -> dict[str, int]:
        """Tokenizer.vocab without the unlisted tokens (transformers' get_vocab)."""
        vocab = super().vocab
        return {t: i for t, i in vocab.items() if t not in self.unlisted} if self.unlisted else vocab

    @property
    def vocab_size(self) -> int:
        """Tokenizer.vocab_size without the tokens outside vocab.json (M2M100: vocab.json's size, as transformers')."""
        return super().vocab_size - len(self.outside_vocab)

    def __len__(self) -> int:
        """Tokenizer's len() without the unlisted tokens, as transformers counts (decode still reads their ids)."""
        return super().__len__() - len(self.unlisted)

    def convert_tokens_to_ids(self, tokens: str | list[str]) -> int | list[int]:
        """Tokenizer.convert_tokens_to_ids, an alias the id of the token it reads as (M2M100's madeup words:
        unk_token_id, as transformers gives it)."""
        if isinstance(tokens, str):
            return super().convert_tokens_to_ids(self.aliases.get(tokens, tokens))
        return [self.convert_tokens_to_ids(t) for t in tokens]

    def convert_ids_to_tokens(self, ids, skip_special_tokens: bool = False) -> str | list[str]:
        """Tokenizer.convert_ids_to_tokens, aliases read as their token; a Marian tokenizer with separate
        vocabularies reads target ids, as its decode does."""
        if self.target_vocabulary is None:
            tokens = super().convert_ids_to_tokens(ids, skip_special_tokens)
            if isinstance(tokens, str):
                return self.aliases.get(tokens, tokens)
            return [self.aliases.get(t, t) for t in tokens]
        ids = as_ids(ids)                  # ints only, as the shared-vocabulary path
        if isinstance(ids, int):
            return self.target_vocabulary.tokens_of([ids], skip_special_tokens=False)[0]
        return self.target_vocabulary.tokens_of(list(ids), skip_special_tokens)

    def convert_tokens_to_string(self, tokens: list[str]) -> str:
        """Tokenizer.convert_tokens_to_string; a Marian tokenizer with separate vocabularies joins the pieces with
        target.spm, as transformers' MarianTokenizer does there (it reads tokens as its model's output)."""
        if self.target_vocabulary is None:
            return super().convert_tokens_to_string(tokens)
        check_tokens(tokens)
        return self.target_vocabulary.join(list(tokens))

    def target_tokens(self) -> dict[int, str] | None:
        """Every target id -> its token as convert_ids_to_tokens reads it, with separate vocabularies (the ids the
        model writes are not get_vocab()'s); None with one vocabulary."""
        return None if self.target_vocabulary is None else self.target_vocabulary.id_tokens()

    def known_ids(self, ids: list[int]) -> list[int]:
        """Tokenizer.known_ids; target ids with separate vocabularies."""
        if self.target_vocabulary is None:
            return super().known_ids(ids)
        return self.target_vocabulary.known_ids(ids)

    def decode(self, ids, skip_special_tokens: bool = False, clean_up_tokenization_spaces: bool | None = None):
        """Tokenizer.decode; a Marian tokenizer with separate vocabularies reads target ids (its model's output).
        Marian and M2M100 skip all_special_ids, as transformers' Python tokenizers do (the `tokenizers` library
        skips the added tokens marked special: not the same set where tokenizer_config.json marks them otherwise)."""
        ids = as_ids(ids)                  # ints only
        if isinstance(ids, list) and ids and isinstance(ids[0], list):
            return self.batch_decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        if self.target_vocabulary is None:
            if skip_special_tokens and self.kind in PYTHON_KINDS:
                special = set(self.all_special_ids)
                ids = [i for i in ([ids] if isinstance(ids, int) else ids) if i not in special]
                skip_special_tokens = False
            return super().decode(ids, skip_special_tokens, clean_up_tokenization_spaces)
        text = self.target_vocabulary.decode([ids] if isinstance(ids, int) else list(ids), skip_special_tokens)
        if clean_up_tokenization_spaces is None:
            clean_up_tokenization_spaces = self.clean_up_tokenization_spaces
        return clean_up_tokenization(text) if clean_up_tokenization_spaces else text

    def save_pretrained(self, save_directory):
        """Tokenizer.save_pretrained; Marian and M2M100, whose SentencePiece models run through Python (no
        tokenizer.json holds them), as transformers saves them: the files they were read from (SentencePiece
        models, vocabularies) copied, and tokenizer_config.json, its keys under saved_config()'s."""
        if self.kind not in PYTHON_KINDS:
            return super().save_pretrained(save_directory)
        root, config, names = self.read_files
        out = Path(save_directory)
        out.mkdir(parents=True, exist_ok=True)
        for name in names:
            if not (out / name).exists() or not (out / name).samefile(root / name):
                shutil.copyfile(root / name, out / name)
        write_json(out / "tokenizer_config.json", {**config, **self.saved_config()}, indent=2, ensure_ascii=False)
        return (*(str(out / name) for name in names), str(out / "tokenizer_config.json"))

    def saved_config(self) -> dict:
        """Tokenizer.saved_config as transformers' tokenizer of this kind saves it: its class (so that both reload it
        with its language handling), src_lang, tgt_lang and NLLB's legacy_behaviour."""
        languages = {"src_lang": self.src_lang, "tgt_lang": self.tgt_lang}
        config = {**super().saved_config(), "tokenizer_class": self.kind,
                  **{k: v for k, v in languages.items() if v is not None}}
        if self.kind == "NllbTokenizer":
            config["legacy_behaviour"] = self.code_last
        return config

    def __getstate__(self) -> dict:
        """Tokenizer.__getstate__; Marian's and M2M100's backend as JSON without its Python pre-tokenizer and decoder
        (`tokenizers` cannot serialize those), which __setstate__ puts back, and with its whole WordLevel vocabulary
        (its JSON keeps one token per id, where Marian's target side reads two tokens as one id)."""
        state = super().__getstate__()
        if self.pieces is not None:
            with self.lock:
                backend = self._backend
                custom = backend.pre_tokenizer, backend.decoder
                backend.pre_tokenizer = backend.decoder = None
                try:
                    saved = json.loads(backend.to_str())
                finally:
                    backend.pre_tokenizer, backend.decoder = custom
                saved["model"]["vocab"] = backend.get_vocab(with_added_tokens=False)
            state["_backend"] = json.dumps(saved)
        return state

    def __setstate__(self, state: dict) -> None:
        super().__setstate__(state)
        if self.pieces is not None:
            self._backend = Backend.from_str(self._backend)
            self._backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(self.pieces)
            self._backend.decoder = decoders.Decoder.custom(self.detokenizer)

    def __getattr__(self, name: str):
        """Only for attributes not found: a language map (LANGUAGE_MAPS) this kind lacks, as in transformers 5.25, is
        an AttributeError naming the tokenizers that have it and what gives a code's id here."""
        if name in LANGUAGE_MAPS:
            raise AttributeError(f"{name} is {LANGUAGE_MAPS[name]} (as in transformers 5.25), not this "
                                 f"{self.kind or 'tokenizer'}'s: tok.get_lang_id(code) gives a language code's id, "
                                 "tok.language_codes the codes")
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r}")

    def get_special_tokens_mask(self, token_ids_0, token_ids_1=None,
                                already_has_special_tokens: bool = False) -> list[int]:
        """Tokenizer.get_special_tokens_mask; Marian and M2M100 as transformers' Python tokenizers. Ids without
        their special tokens get the 1s encoding would add around them: M2M100's code before, </s> after (pairs
        too); Marian's </s> after, its ids (both sequences') marked as with their special tokens. Marian never marks
        <unk>, and beside already_has_special_tokens it reads token_ids_0 alone, as there."""
        if self.kind == "MarianTokenizer":
            special = set(self.all_special_ids) - {self.unk_token_id}
            ids = list(token_ids_0) + ([] if already_has_special_tokens else list(token_ids_1 or []))
            mask = [1 if int(i) in special else 0 for i in ids]
            return mask if already_has_special_tokens else mask + [1]
        if self.kind == "M2M100Tokenizer" and not already_has_special_tokens:
            return [1] + [0] * (len(token_ids_0) + len(token_ids_1 or [])) + [1]
        return super().get_special_tokens_mask(token_ids_0, token_ids_1, already_has_special_tokens)

    def __repr__(self) -> str:
        return (f"TranslationTokenizer({self.kind}, vocab_size={self.vocab_size}, src_lang={self.src_lang!r}, "
                f"tgt_lang={self.tgt_lang!r})")


def language_maps(tok: TranslationTokenizer) -> dict:
    """The language code maps transformers 5.25's tokenizer of tok's kind has (LANGUAGE_MAPS), as its __init__
    builds them, name -> value: mBART's and mBART-50's lang_code_to_id (each of the class's codes -> its token's id,
    unk_token_id where the vocabulary lacks it), mBART-50's id_to_lang_code (its inverse); M2M100's lang_code_to_id,
    lang_code_to_token ("fr" -> "__fr__"), lang_token_to_id and id_to_lang_token; none for NLLB (Marian's
    supported_language_codes: _marian)."""
    if tok.kind not in ("MBartTokenizer", "MBart50Tokenizer", "M2M100Tokenizer"):
        return {}
    ids = {code: tok.convert_tokens_to_ids(token) for code, token in tok.lang_tokens.items()}
    if tok.kind == "MBartTokenizer":
        return {"lang_code_to_id": ids}
    if tok.kind == "MBart50Tokenizer":
        return {"lang_code_to_id": ids, "id_to_lang_code": {i: code for code, i in ids.items()}}
    token_ids = {tok.lang_tokens[code]: i for code, i in ids.items()}
    return {"lang_code_to_id": ids, "lang_code_to_token": dict(tok.lang_tokens), "lang_token_to_id": token_ids,
            "id_to_lang_token": {i: token for token, i in token_ids.items()}}


def _longest_first(first: int, second: int, room: int) -> tuple[int, int]:
    """Tokens to cut from each of a pair of `first` and `second` tokens so that they fit `room`, as transformers'
    truncate_sequences("longest_first") cuts them: the longer down to the shorter, then both alike, the second
    losing the odd one."""
    remove = max(first + second - room, 0)
    uneven = min(abs(first - second), remove)
    even = remove - uneven
    if first > second:
        return uneven + even // 2, even - even // 2
    return even // 2, uneven + even - even // 2


# ---- SentencePiece through the `tokenizers` pipeline --------------------------------------------------------

def _sentencepiece(path: Path):
    try:
        import sentencepiece
    except ImportError:
        raise ImportError(f"{path.name} is a SentencePiece model: install the sentencepiece package "
                          "(pip install 'seq2seq-kit[sentencepiece]')") from None
    processor = sentencepiece.SentencePieceProcessor()
    try:
        processor.Load(str(path))
    except (OSError, RuntimeError) as e:
        raise ValueError(f"{path} is not a readable SentencePiece model: {e}") from None
    return processor


class _Pieces:
    """A custom pre-tokenizer: each text between special tokens becomes its SentencePiece pieces (the Python
    tokenizers' `_tokenize`); with marian=True a leading >>xxx<< code is kept whole first."""

    def __init__(self, processor, marian: bool):
        self.processor, self.marian = processor, marian

    def pieces(self, text: str) -> list[str]:
        """The pieces of a text without added tokens."""
        code = []
        if self.marian and text.startswith(">>") and (end := text.find("<<")) != -1:
            code, text = [text[:end + 2]], text[end + 2:]
        return code + self.processor.encode(text, out_type=str)

    def split(self, _, text: NormalizedString) -> list[NormalizedString]:
        return [NormalizedString(p) for p in self.pieces(str(text))]

    def pre_tokenize(self, pretok) -> None:
        pretok.split(self.split)


class _Detokenizer:
    """A custom decoder, transformers' convert_tokens_to_string: pieces decoded by SentencePiece between special
    tokens, kept as they are (Marian: followed by a space, then "▁" -> " "), the whole stripped; aliases read as
    their token first."""

    def __init__(self, processor, special: set[str], marian: bool, aliases: dict[str, str] | None = None):
        self.processor, self.special, self.marian, self.aliases = processor, special, marian, aliases or {}

    def decode_chain(self, tokens: list[str]) -> list[str]:
        out, pieces = "", []
        for token in tokens:
            token = self.aliases.get(token, token)
            if token in self.special:
                out += self.processor.decode_pieces(pieces) + token + (" " if self.marian else "")
                pieces = []
            else:
                pieces.append(token)
        out += self.processor.decode_pieces(pieces)
        if self.marian:
            out = out.replace(SPIECE_UNDERLINE, " ")
        return [out.strip()]


def _sentencepiece_tokenizer(root: Path, config: dict, spm: str, vocab: dict, named: dict, marian: bool,
                             extra: list[str], aliases: dict[str, str] | None = None,
                             unknown: str | None = None) -> TranslationTokenizer:
    """`spm`'s pieces looked up in `vocab`, a piece it lacks read as its `unknown` key (default: the unk_token)."""
    processor = _sentencepiece(root / spm)
    unk = named["unk_token"]
    if unk not in vocab:
        raise ValueError(f"{root / 'vocab.json'} has no {unk!r} token")
    backend = Backend(models.WordLevel(vocab, unk_token=unknown or unk))
    pieces = _Pieces(processor, marian)
    backend.pre_tokenizer = pre_tokenizers.PreTokenizer.custom(pieces)
    settings = {**({"model_max_length": 512} if marian else {}), **config, **named}   # MarianTokenizer's default
    listed: dict = {}                                   # content -> the token (a string or AddedToken fields)
    for token in [*extra, *extra_tokens(config)]:
        listed.setdefault(token_content(token), token)
    settings["additional_special_tokens"] = list(listed.values())
    settings.pop("extra_special_tokens", None)
    tok = TranslationTokenizer(backend, settings)
    if marian:
        eos = tok.eos_token
        backend.post_processor = processors.TemplateProcessing(single=["$A", eos], pair=["$A", "$B", eos],
                                                               special_tokens=[(eos, tok.eos_token_id)])
    tok.detokenizer = _Detokenizer(processor, set(tok.all_special_tokens), marian, aliases)
    backend.decoder = decoders.Decoder.custom(tok.detokenizer)
    tok.aliases, tok.pieces = aliases or {}, pieces
    return tok


def _marian(root: Path, config: dict) -> TranslationTokenizer:
    """MarianTokenizer: source.spm pieces looked up in vocab.json, `A </s>`."""
    vocab = _vocab(root / "vocab.json")
    named = dict(bos_token=None, sep_token=None, cls_token=None, mask_token=None, eos_token="</s>",
                 unk_token="<unk>", pad_token="<pad>")
    named.update({k: token_content(config[k]) for k in named if config.get(k)})      # the config's, as transformers
    tok = _sentencepiece_tokenizer(root, config, "source.spm", vocab, named, marian=True, extra=[])
    separate = bool(config.get("separate_vocabs"))
    if separate:
        for name in ("target.spm", "target_vocab.json"):
            if not (root / name).is_file():
                raise FileNotFoundError(f"{root}: tokenizer_config.json has separate_vocabs true, but there is no "
                                        f"{name} (the target side's vocabulary)")
        tok.target_vocabulary = TargetVocabulary(tok, _vocab(root / "target_vocab.json"),
                                                 _sentencepiece(root / "target.spm"))
    tok.target_files = root, config, named
    target_vocab = ("target_vocab.json",) if separate else ()
    tok.read_files = root, config, ("source.spm", "target.spm", "vocab.json", *target_vocab)
    # transformers' list: vocab.json's >>xx<< tokens in the file's order (its codes: language_codes), none with
    # separate vocabularies
    tok.supported_language_codes = [] if separate else [t for t in vocab if is_marian_code(t)]
    return tok


def is_marian_code(token: str) -> bool:
    """Whether a Marian vocabulary's token is a target language's code, `>>fra<<`."""
    return token.startswith(">>") and token.endswith("<<")


def _marian_target(root: Path, config: dict, named: dict, source: TranslationTokenizer) -> TranslationTokenizer:
    """What MarianTokenizer encodes text_target with (its target mode): target.spm's pieces looked up in
    target_vocab.json (separate_vocabs) or vocab.json, a piece missing there as that file's <unk>; tokens typed in
    the text, the </s> added and padding keep the source's ids, as its added-token table gives them."""
    path = root / ("target_vocab.json" if config.get("separate_vocabs") else "vocab.json")
    vocab, unk = _vocab(path), named["unk_token"]
    if unk not in vocab:
        raise ValueError(f"{path} has no {unk!r} token, which text_target's unknown pieces read as")
    added = {token.content: i for i, token in source.backend_tokenizer.get_added_tokens_decoder().items()}
    vocab = {**vocab, UNKNOWN_PIECE: vocab[unk], **added}
    tok = _sentencepiece_tokenizer(root, config, "target.spm", vocab, named, marian=True, extra=[],
                                   unknown=UNKNOWN_PIECE)
    tok.kind = "MarianTokenizer"
    return tok


class TargetVocabulary:
    """A Marian tokenizer's target side (separate_vocabs): target ids -> text as transformers' MarianTokenizer
    decodes them. An id among the source's added tokens reads as that token (so skip_special_tokens drops the
    source's special ids, whatever the target vocabulary has there); others as target_vocab.json's token (else
    target.spm's piece); pieces joined by target.spm, special tokens kept as they are."""

    def __init__(self, source: Tokenizer, vocab: dict[str, int], processor):
        self.source, self.processor = source, processor
        self.tokens = {i: t for t, i in vocab.items()}
        self.detokenizer = _Detokenizer(processor, set(source.all_special_tokens), marian=True)

    def decode(self, ids: list[int], skip_special_tokens: bool) -> str:
        return self.join(self.tokens_of(ids, skip_special_tokens))

    def join(self, tokens: list[str]) -> str:
        """The text of these tokens, pieces joined by target.spm, special tokens kept as they are."""
        return self.detokenizer.decode_chain(tokens)[0]

    def tokens_of(self, ids: list[int], skip_special_tokens: bool) -> list[str]:
        added = {i: t.content for i, t in self.source.backend_tokenizer.get_added_tokens_decoder().items()}
        skip = set(self.source.all_special_ids) if skip_special_tokens else set()
        return [self.token(i, added) for i in ids if i not in skip]

    def id_tokens(self) -> dict[int, str]:
        """Every id of target_vocab.json and of the source's added tokens -> its token, as tokens_of reads it."""
        added = {i: t.content for i, t in self.source.backend_tokenizer.get_added_tokens_decoder().items()}
        return {i: self.token(i, added) for i in sorted({*self.tokens, *added})}

    def known_ids(self, ids: list[int]) -> list[int]:
        """The ids `token` reads (the others it refuses)."""
        added, pieces = self.source.backend_tokenizer.get_added_tokens_decoder(), self.processor.get_piece_size()
        return [i for i in ids if i in added or i in self.tokens or 0 <= i < pieces]

    def token(self, i: int, added: dict[int, str]) -> str:
        if i in added:
            return added[i]
        if i in self.tokens:
            return self.tokens[i]
        if isinstance(i, int) and 0 <= i < self.processor.get_piece_size():
            return self.processor.id_to_piece(i)
        raise ValueError(f"token id {i!r} is out of range: this tokenizer's target ids are 0..{len(self.tokens) - 1}")


def _m2m100(root: Path, config: dict) -> TranslationTokenizer:
    """M2M100Tokenizer: sentencepiece.bpe.model pieces looked up in vocab.json, then `__xx__` language tokens."""
    vocab = _vocab(root / "vocab.json")
    codes = WMT21_LANGUAGES if config.get("language_codes") == "wmt21" else M2M100_LANGUAGES
    lang_tokens = {code: f"__{code}__" for code in codes}
    size = len(vocab)
    count = config.get("num_madeup_words", 8)
    if not isinstance(count, int) or isinstance(count, bool) or not 0 <= count <= size:
        raise ValueError(f"{root / 'tokenizer_config.json'}: num_madeup_words must be a whole number from 0 to the "
                         f"vocabulary's size ({size}; fairseq's checkpoints have 8), got {count!r}")
    madeup = [f"madeupword{i:04d}" for i in range(count)]                 # fairseq's names
    vocab = {**vocab, **{token: size + i for i, token in enumerate([*lang_tokens.values(), *madeup])}}
    named = dict(cls_token=None, mask_token=None, bos_token="<s>", eos_token="</s>", sep_token="</s>",
                 unk_token="<unk>", pad_token="<pad>")
    named.update({k: token_content(config[k]) for k in named if config.get(k)})
    tok = _sentencepiece_tokenizer(root, config, "sentencepiece.bpe.model", vocab, named, marian=False,
                                   extra=list(lang_tokens.values()), aliases=dict.fromkeys(madeup, named["unk_token"]))
    listed = set(map(token_content, extra_tokens(config)))
    tok.lang_tokens, tok.outside_vocab = lang_tokens, frozenset([*lang_tokens.values(), *madeup])
    tok.read_files = root, config, ("vocab.json", "sentencepiece.bpe.model")
    tok.unlisted = frozenset(t for t in tok.outside_vocab if t not in listed)
    return tok


def _mbart50_from_spm(root: Path, config: dict) -> TranslationTokenizer:
    """MBart50Tokenizer from sentencepiece.bpe.model alone, converted as transformers converts it: the pieces and
    scores in fairseq's order (<s> <pad> </s> <unk>, the pieces after SentencePiece's first three, the language
    codes, <mask>), a Unigram model, SentencePiece's normalizer, Metaspace."""
    from sentencepiece import sentencepiece_model_pb2

    proto = sentencepiece_model_pb2.ModelProto()
    try:
        proto.ParseFromString((root / "sentencepiece.bpe.model").read_bytes())
    except Exception as e:   # noqa: BLE001 - protobuf's DecodeError
        raise ValueError(f"{root / 'sentencepiece.bpe.model'} is not a readable SentencePiece model: "
                         f"{type(e).__name__}: {e}") from None
    pieces = [(p.piece, p.score) for p in proto.pieces]
    scores = [("<s>", 0.0), ("<pad>", 0.0), ("</s>", 0.0), ("<unk>", 0.0), *pieces[3:],
              *((code, 0.0) for code in MBART50_LANGUAGES), ("<mask>", 0.0)]
    backend = Backend(models.Unigram(scores, unk_id=3, byte_fallback=False))
    set_pipeline(backend, "MBart50Tokenizer", proto.normalizer_spec.precompiled_charsmap or None, config)
    backend.add_special_tokens([AddedToken("<mask>", lstrip=True, rstrip=False, special=True)])
    if "extra_special_tokens" not in config:
        # transformers: the model's control pieces (a Unigram model's user-defined ones stay its pieces), the codes
        pieces = [{"content": p.piece, "special": True, "normalized": False} for p in proto.pieces
                  if p.type == p.CONTROL]
        config = {**config, "extra_special_tokens": _with_mbart50_codes(pieces)}
    return TranslationTokenizer(backend, config)


def _with_mbart50_codes(listed: list) -> list:
    """MBart50Tokenizer's extra special tokens: those listed, then the language codes they lack (transformers
    appends them to a tokenizer_config.json's own list)."""
    known = set(map(token_content, listed))
    return [*listed, *(code for code in MBART50_LANGUAGES if code not in known)]


def _vocab(path: Path) -> dict[str, int]:
    if not path.is_file():
        needs = {"vocab.json": "its SentencePiece model's token -> id map", "target_vocab.json": "the target side's"}
        raise FileNotFoundError(f"{path.parent} has no {path.name} ({needs.get(path.name, 'a vocabulary')}): a Marian "
                                "checkpoint holds source.spm, target.spm and vocab.json; an M2M100 one "
                                "sentencepiece.bpe.model and vocab.json")
    vocab = read_json(path)
    if not isinstance(vocab, dict) or not all(isinstance(i, int) for i in vocab.values()):
        raise ValueError(f"{path} must be a JSON object of token -> id")
    return vocab


__all__ = ["AutoTokenizer", "TranslationTokenizer", "tokenizer_kind"]
