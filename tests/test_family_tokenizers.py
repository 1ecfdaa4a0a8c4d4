"""The translation families' tokenizers (seq2seq_kit/family_tokenizers.py) against transformers 5.25's: Marian,
M2M100, NLLB, mBART and mBART-50, ids and decoded text on a small multilingual corpus.

No real SentencePiece model can be downloaded here, so each test trains one on the spot (tiny vocabulary, well
under a second) and builds transformers' tokenizer from the same files: MarianTokenizer and M2M100Tokenizer read
them directly; NllbTokenizer, MBartTokenizer and MBart50Tokenizer convert them and are saved as tokenizer.json, the
form those checkpoints ship (mBART-50 is also compared from sentencepiece.bpe.model alone).
"""

from __future__ import annotations

import io
import itertools
import json
import shutil
import warnings
from pathlib import Path

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from tokenizers import Tokenizer as Backend

from seq2seq_kit import AutoTokenizer
from seq2seq_kit.family_tokenizers import LANGUAGE_MAPS, M2M100_LANGUAGES, MBART50_LANGUAGES, TranslationTokenizer

spm = pytest.importorskip("sentencepiece")

CORPUS = [
    "The tower is 324 metres tall, about the same height as an 81-storey building.",
    "Der Turm ist 324 Meter hoch und damit etwa so hoch wie ein 81-stöckiges Gebäude.",
    "La tour mesure 324 mètres de haut, soit à peu près la hauteur d'un immeuble de 81 étages.",
    "Башня высотой 324 метра, примерно как 81-этажное здание.",
    "这座塔高324米，大约相当于一座81层的建筑。",
    "탑의 높이는 324미터로 81층 건물과 비슷합니다.",
    "During its construction, the Eiffel Tower surpassed the Washington Monument!",
    "  Spaces   and\ttabs, «quotes» — dashes… and ünïcödé.",
    "UN Chief Says There Is No Military Solution in Syria",
]
EDGE = ["a</s>b <unk> c", " leading space", "x<pad>y", "Hello"]


def train(path: Path, model_type: str, vocab_size: int = 220, **ids) -> Path:
    """A SentencePiece model of CORPUS; ids: its special pieces' ids (pad_id=0, ...), where not SentencePiece's."""
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=vocab_size,
                                   model_type=model_type, character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2, **ids)
    path.write_bytes(buf.getvalue())
    return path


def fairseq_vocab(model: Path, first: dict) -> dict:
    """vocab.json as fairseq-converted checkpoints have it: the special tokens, then the pieces."""
    processor = spm.SentencePieceProcessor(model_file=str(model))
    vocab = dict(first)
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    return vocab


def assert_same(theirs, ours, texts, decode_from: int = 0, **call):
    for text in texts:
        ids = theirs(text, **call)["input_ids"]
        assert ours(text, **call)["input_ids"] == ids, text
        ids = ids[decode_from:]
        for skip in (True, False):
            assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip), text
    kwargs = dict(padding=True, truncation=True, max_length=12)
    assert dict(ours(texts, **kwargs)) == {k: theirs(texts, **kwargs)[k] for k in ("input_ids", "attention_mask")}


@pytest.fixture(scope="module")
def marian_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("marian")
    train(root / "source.spm", "unigram")
    train(root / "target.spm", "unigram", 200)
    vocab = fairseq_vocab(root / "source.spm", {"</s>": 0, "<unk>": 1})
    vocab.update({">>fra<<": len(vocab), ">>deu<<": len(vocab) + 1})
    vocab["<pad>"] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    return root


@pytest.fixture(scope="module")
def m2m100_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2m100")
    train(root / "sentencepiece.bpe.model", "bpe")
    vocab = fairseq_vocab(root / "sentencepiece.bpe.model", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (root / "vocab.json").write_text(json.dumps(vocab))
    return root


def test_marian_ids_and_text_equal_transformers(marian_dir):
    from transformers import MarianTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
        theirs = MarianTokenizer(str(marian_dir / "source.spm"), str(marian_dir / "target.spm"),
                                 str(marian_dir / "vocab.json"))
    ours = AutoTokenizer.from_pretrained(marian_dir)
    assert isinstance(ours, TranslationTokenizer) and ours.kind == "MarianTokenizer"
    assert_same(theirs, ours, CORPUS + EDGE + [">>fra<< Hello world", ">>deu<<Turm"])
    assert ours.language_codes == ["fra", "deu"] and ours.target_language_id("fra") is None


@pytest.fixture(scope="module")
def marian_separate_dir(tmp_path_factory):
    """separate_vocabs: target.spm and target_vocab.json of their own, smaller than the source's, so the target's
    <pad> id differs from the source's (the model's pad and decoder start)."""
    root = tmp_path_factory.mktemp("marian-separate")
    train(root / "source.spm", "unigram")
    train(root / "target.spm", "unigram", 120)
    for spm_file, vocab_file in (("source.spm", "vocab.json"), ("target.spm", "target_vocab.json")):
        vocab = fairseq_vocab(root / spm_file, {"</s>": 0, "<unk>": 1})
        vocab["<pad>"] = len(vocab)
        (root / vocab_file).write_text(json.dumps(vocab))
    (root / "tokenizer_config.json").write_text(json.dumps({"separate_vocabs": True, "tokenizer_class":
                                                            "MarianTokenizer"}))
    return root


def test_marian_separate_vocabularies_equal_transformers(marian_separate_dir):
    """Source ids from source.spm + vocab.json; decode reads target ids (target_vocab.json, target.spm), the
    source's special ids skipped as transformers skips them; convert_tokens_to_string joins with target.spm (it
    joined with source.spm: '<unk> d' for transformers' '<unk>  d')."""
    from transformers import MarianTokenizer

    root = marian_separate_dir
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MarianTokenizer(str(root / "source.spm"), str(root / "target.spm"), str(root / "vocab.json"),
                                 target_vocab_file=str(root / "target_vocab.json"), separate_vocabs=True)
    ours = AutoTokenizer.from_pretrained(root)
    source_pad, target_pad = theirs.pad_token_id, json.loads((root / "target_vocab.json").read_text())["<pad>"]
    assert source_pad != target_pad
    for text in CORPUS + EDGE + ["<unk> d", "<pad> tour", "a <unk> d'un"]:
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text
        target_ids = theirs(text_target=text)["input_ids"]
        for tokens in (theirs.tokenize(text), theirs.convert_ids_to_tokens(target_ids)):     # joined by target.spm
            assert ours.convert_tokens_to_string(tokens) == theirs.convert_tokens_to_string(tokens), tokens
        for ids in (target_ids, [source_pad, *target_ids], [target_pad, source_pad, *target_ids, target_pad]):
            for skip in (True, False):
                assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
                assert ours.convert_ids_to_tokens(ids, skip) == theirs.convert_ids_to_tokens(ids, skip), text
    assert ours.convert_ids_to_tokens(target_ids[0]) == theirs.convert_ids_to_tokens(target_ids[0])
    with pytest.raises(TypeError, match=r"^convert_tokens_to_string takes a list of tokens \(str\)"):
        ours.convert_tokens_to_string("▁d")                  # target.spm's join checks its argument as the source's
    batch = [theirs(text_target=t)["input_ids"] for t in CORPUS[:3]]
    assert ours.batch_decode(batch, skip_special_tokens=True) == theirs.batch_decode(batch, skip_special_tokens=True)
    (root / "target_vocab.json").rename(root / "moved.json")
    try:
        with pytest.raises(FileNotFoundError, match="separate_vocabs true, but there is no target_vocab.json"):
            AutoTokenizer.from_pretrained(root)
    finally:
        (root / "moved.json").rename(root / "target_vocab.json")


@pytest.mark.parametrize("src_lang, tgt_lang", [("en", "fr"), ("ru", "zh")])
def test_m2m100_ids_text_and_languages_equal_transformers(m2m100_dir, src_lang, tgt_lang):
    from transformers import M2M100Tokenizer

    theirs = M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"),
                             src_lang=src_lang, tgt_lang=tgt_lang)
    ours = AutoTokenizer.from_pretrained(m2m100_dir, src_lang=src_lang, tgt_lang=tgt_lang)
    assert ours.kind == "M2M100Tokenizer"
    # transformers 5.25 no longer registers M2M100's __xx__ tokens as special (4.x did): its decode keeps them
    # even with skip_special_tokens. seq2seq_kit keeps 4.x's behaviour (a translation's text has no "__fr__"), so
    # decoding is compared without the language token, and the decode of one is checked against 4.x's result.
    assert_same(theirs, ours, CORPUS + EDGE, decode_from=1)
    lang = ours.get_lang_id(tgt_lang)
    assert ours.decode([2, lang] + theirs(CORPUS[0])["input_ids"][1:], skip_special_tokens=True) == CORPUS[0]
    assert ours.target_language_id() == theirs.get_lang_id(tgt_lang) == ours.get_lang_id(tgt_lang)
    ours.src_lang = theirs.src_lang = "de"
    assert ours(CORPUS[1])["input_ids"] == theirs(CORPUS[1])["input_ids"]
    madeup = len(theirs.encoder) + 100      # fairseq's madeup words, in the model's vocabulary: read as <unk>
    ids = [2, madeup, *theirs(CORPUS[0])["input_ids"][1:], madeup + 7]
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    assert ours.convert_ids_to_tokens(madeup) == theirs.convert_ids_to_tokens(madeup) == "<unk>"


def test_m2m100_language_token_written_in_the_text_is_the_token_as_in_transformers_4(m2m100_dir):
    """A "__fr__" in the text reads as the language token (transformers 4.x's M2M100Tokenizer listed the language
    tokens as special; 5.25 splits the text into pieces there): the one way ids differ from 5.25's."""
    from transformers import M2M100Tokenizer

    theirs = M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"),
                             src_lang="en", tgt_lang="fr")
    ours = AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en", tgt_lang="fr")
    fr = ours.get_lang_id("fr")
    ids = ours("The tower __fr__ is tall")["input_ids"]
    assert ids[0] == ours.get_lang_id("en") and ids[-1] == 2 and ids.count(fr) == 1
    assert ids[:ids.index(fr)] == theirs("The tower")["input_ids"][:-1]
    assert fr not in theirs("The tower __fr__ is tall")["input_ids"]
    assert ours.decode(ids, skip_special_tokens=True) == "The tower is tall"


@pytest.fixture(scope="module")
def nllb_dir(tmp_path_factory):
    from transformers import NllbTokenizer
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    spm_dir = tmp_path_factory.mktemp("nllb-spm")
    train(spm_dir / "sentencepiece.bpe.model", "bpe")
    root = tmp_path_factory.mktemp("nllb")
    # as facebook/nllb-200-* ship it: the language codes are added tokens of tokenizer.json
    NllbTokenizer.from_pretrained(spm_dir, additional_special_tokens=FAIRSEQ_LANGUAGE_CODES).save_pretrained(root)
    return root


@pytest.mark.parametrize("legacy", [False, True])
def test_nllb_ids_text_and_languages_equal_transformers(nllb_dir, legacy):
    from transformers import NllbTokenizer

    theirs = NllbTokenizer.from_pretrained(nllb_dir, src_lang="fra_Latn", tgt_lang="deu_Latn",
                                           legacy_behaviour=legacy)
    config = json.loads((nllb_dir / "tokenizer_config.json").read_text())
    (nllb_dir / "tokenizer_config.json").write_text(json.dumps({**config, "legacy_behaviour": legacy}))
    ours = AutoTokenizer.from_pretrained(nllb_dir, src_lang="fra_Latn", tgt_lang="deu_Latn")
    assert ours.kind == "NllbTokenizer"
    assert_same(theirs, ours, CORPUS + EDGE)
    assert ours.target_language_id() == theirs.convert_tokens_to_ids("deu_Latn")
    with pytest.raises(ValueError, match="unknown language code 'xx_Yyyy'.*ace_Arab.*202 codes"):
        ours.get_lang_id("xx_Yyyy")
    other = dict(src_lang="fra_Latn", legacy_behaviour=not legacy)          # the argument over the file
    assert_same(NllbTokenizer.from_pretrained(nllb_dir, **other), AutoTokenizer.from_pretrained(nllb_dir, **other),
                CORPUS[:2])
    with pytest.raises(ValueError, match="legacy_behaviour .* is for NLLB tokenizers"):
        AutoTokenizer.from_pretrained(Path(__file__).parent / "fixtures" / "bart-tokenizer", legacy_behaviour=True)


def test_nllb_without_listed_codes_takes_transformers_default_codes(nllb_dir, tmp_path):
    """A tokenizer_config.json listing no extra special tokens (written by hand): transformers' NllbTokenizer takes
    its 202 FAIRSEQ_LANGUAGE_CODES, so "</s>" is no target language and a translation needs tgt_lang."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    from seq2seq_kit.translation import check_languages

    root = Path(shutil.copytree(nllb_dir, tmp_path / "nllb"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "NllbTokenizer"}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="fra_Latn", tgt_lang="deu_Latn")
    ours = AutoTokenizer.from_pretrained(root, src_lang="fra_Latn", tgt_lang="deu_Latn")
    assert ours.language_codes == list(theirs.extra_special_tokens) and len(ours.language_codes) == 202
    assert ours.all_special_tokens == theirs.all_special_tokens
    assert_same(theirs, ours, CORPUS[:3] + EDGE)
    with pytest.raises(ValueError, match="unknown language code '</s>'"):
        check_languages(ours, "fra_Latn", "</s>")
    assert check_languages(ours, "fra_Latn", None)[1] == "deu_Latn"       # the target the tokenizer was given
    with pytest.raises(ValueError, match="needs tgt_lang"):
        check_languages(AutoTokenizer.from_pretrained(root, src_lang="fra_Latn"), "fra_Latn", None)



def test_nllb_saved_with_a_replaced_extra_special_tokens_list_keeps_its_codes(nllb_dir, tmp_path):
    """transformers 5 saves add_special_tokens({"extra_special_tokens": [...]}) as a list without the language
    codes, which stay tokens of tokenizer.json and which it still takes: src_lang / tgt_lang are still known."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    theirs = TheirAutoTokenizer.from_pretrained(str(nllb_dir))
    theirs.add_special_tokens({"extra_special_tokens": ["<SP1>"]})
    theirs.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "tokenizer_config.json").read_text())["extra_special_tokens"] == ["<SP1>"]
    theirs = TheirAutoTokenizer.from_pretrained(str(tmp_path), src_lang="fra_Latn", tgt_lang="deu_Latn")
    ours = AutoTokenizer.from_pretrained(tmp_path, src_lang="fra_Latn", tgt_lang="deu_Latn")
    assert ours.extra_special_tokens == theirs.extra_special_tokens == ["<SP1>"]
    assert "eng_Latn" in ours.language_codes and len(ours.language_codes) == 203
    assert_same(theirs, ours, CORPUS[:3] + ["a <SP1> b"])
    assert ours("Hallo", text_target="Hallo")["labels"] == theirs("Hallo", text_target="Hallo")["labels"]
    assert AutoTokenizer.from_pretrained(tmp_path).src_lang == "eng_Latn"      # the default code, found

@pytest.mark.parametrize("form", ["tokenizer.json", "sentencepiece.bpe.model"])
def test_mbart50_ids_text_and_languages_equal_transformers(tmp_path, form):
    from transformers import MBart50Tokenizer

    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    train(spm_dir / "sentencepiece.bpe.model", "unigram")
    (spm_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    theirs = MBart50Tokenizer.from_pretrained(spm_dir, src_lang="de_DE", tgt_lang="ru_RU")
    root = spm_dir
    if form == "tokenizer.json":
        root = tmp_path / "saved"
        theirs.save_pretrained(root)
    ours = AutoTokenizer.from_pretrained(root, src_lang="de_DE", tgt_lang="ru_RU")
    assert ours.kind == "MBart50Tokenizer"
    assert_same(theirs, ours, CORPUS + EDGE)
    assert ours.target_language_id() == theirs.convert_tokens_to_ids("ru_RU")


@pytest.mark.parametrize("kind", ["NllbTokenizer", "MBartTokenizer"])
def test_sentencepiece_file_alone_names_the_conversion(tmp_path, kind):
    """NLLB / mBART-cc25 folders as transformers 4.x's slow tokenizers saved them (no tokenizer.json): the error
    says how to write one."""
    train(tmp_path / "sentencepiece.bpe.model", "unigram")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": kind}))
    with pytest.raises(FileNotFoundError, match=rf"no tokenizer.json for its {kind} .*save_pretrained\(folder\)"):
        AutoTokenizer.from_pretrained(tmp_path, src_lang="fr_XX" if kind == "MBartTokenizer" else "fra_Latn")


def test_pegasus_spiece_model_alone_names_the_conversion(tmp_path):
    """A Pegasus folder as transformers 4.x's slow PegasusTokenizer saved it (spiece.model, no tokenizer.json): the
    error says how to write one, as for NLLB / mBART-cc25, and what it says gives transformers' tokenizer."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    train(tmp_path / "spiece.model", "unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PegasusTokenizer"}))
    with pytest.raises(FileNotFoundError, match=r"spiece.model is a SentencePiece model.*save_pretrained\(folder\)"):
        AutoTokenizer.from_pretrained(tmp_path)
    TheirAutoTokenizer.from_pretrained(str(tmp_path)).save_pretrained(str(tmp_path))
    theirs = TheirAutoTokenizer.from_pretrained(str(tmp_path))
    assert_same(theirs, AutoTokenizer.from_pretrained(tmp_path), CORPUS + EDGE)


@pytest.fixture(scope="module")
def pegasus_dir(tmp_path_factory):
    """A Pegasus tokenizer as transformers saves it (tokenizer.json, tokenizer_config.json naming its tokens)."""
    from transformers import PegasusTokenizer

    spm_dir, root = tmp_path_factory.mktemp("pegasus-spm"), tmp_path_factory.mktemp("pegasus")
    train(spm_dir / "spiece.model", "unigram", 300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
    PegasusTokenizer.from_pretrained(spm_dir).save_pretrained(root)
    return root


RESERVED = ["<mask_1>", *(f"<unk_{i}>" for i in range(2, 103))]     # PegasusTokenizer's default extra tokens


@pytest.mark.parametrize("config, listed", [
    ({"tokenizer_class": "PegasusTokenizer"}, True), ({"tokenizer_class": "PegasusTokenizerFast"}, False),
    (None, True), ({"tokenizer_class": "PegasusTokenizer", "offset": 10, "mask_token_sent": None}, False),
    ({"tokenizer_class": "PegasusTokenizer", "mask_token_sent": "<unk_7>", "mask_token": None}, True),
    ({"tokenizer_class": "PegasusTokenizer", "additional_special_tokens": ["<unk_5>"]}, False)])
def test_pegasus_class_defaults_fill_in_special_tokens_as_transformers(pegasus_dir, tmp_path, config, listed):
    """A Pegasus folder whose tokenizer_config.json names only the class (or is absent, config.json saying
    model_type "pegasus") gets PegasusTokenizer's defaults, as transformers gives them: mask_token <mask_2>, extra
    special tokens mask_token_sent (<mask_1>) and <unk_2> .. <unk_{offset - 1}> unless the config lists its own;
    decode(skip_special_tokens=True) drops them, also where tokenizer.json (`listed` False) does not mark them."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    (root / "tokenizer_config.json").unlink()
    if config is None:
        (root / "config.json").write_text(json.dumps({"model_type": "pegasus"}))
    else:
        (root / "tokenizer_config.json").write_text(json.dumps(config))
    if not listed:
        saved = json.loads((root / "tokenizer.json").read_text())
        saved["added_tokens"] = [t for t in saved["added_tokens"] if t["content"] in ("<pad>", "</s>", "<unk>")]
        (root / "tokenizer.json").write_text(json.dumps(saved))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "mask_token_id",
                 "extra_special_tokens", "all_special_tokens", "all_special_ids"):
        assert getattr(ours, name) == getattr(theirs, name), name
    every = list(range(len(theirs)))
    for skip in (True, False):
        assert ours.decode(every, skip_special_tokens=skip) == theirs.decode(every, skip_special_tokens=skip)
        assert ours.convert_ids_to_tokens(every, skip) == theirs.convert_ids_to_tokens(every, skip)
    assert_same(theirs, ours, CORPUS[:3] + EDGE + ["a <mask_1> b<mask_2> <unk_5>c <unk_102>"])
    if config in (None, {"tokenizer_class": "PegasusTokenizer"}):
        assert (ours.mask_token, ours.extra_special_tokens) == ("<mask_2>", RESERVED)
        ids = theirs("a <mask_1> b<mask_2> <unk_5>")["input_ids"]
        assert ours.decode(ids, skip_special_tokens=True) == theirs.decode(ids, skip_special_tokens=True) == "a  b "


def test_pegasus_offset_must_be_a_count(pegasus_dir, tmp_path):
    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PegasusTokenizer", "offset": "103"}))
    with pytest.raises(ValueError, match=r"tokenizer_config.json is malformed: ValueError: offset='103' must be an "
                                         r"int >= 0 \(the count of Pegasus' reserved tokens\)"):
        AutoTokenizer.from_pretrained(root)


@pytest.mark.parametrize("bos_in", [None, "tokenizer_config.json", "special_tokens_map.json"])
def test_mbart50_bos_token_only_from_the_files_as_in_transformers(tmp_path, bos_in):
    """transformers 5.25's MBart50Tokenizer has no bos_token of its own: None unless tokenizer_config.json or
    special_tokens_map.json names one (facebook/mbart-large-50's name "<s>"), which all_special_tokens' order
    follows; the ids do not change."""
    from transformers import AutoTokenizer as TheirAutoTokenizer
    from transformers import MBart50Tokenizer

    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    train(spm_dir / "sentencepiece.bpe.model", "unigram")
    (spm_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    roots = [spm_dir, tmp_path / "saved"]
    MBart50Tokenizer.from_pretrained(spm_dir).save_pretrained(roots[1])
    for root in roots:
        if bos_in is not None:
            config = json.loads((root / "tokenizer_config.json").read_text())
            config.pop("added_tokens_decoder", None)     # the Hub's legacy form, where the map counts
            (root / "tokenizer_config.json").write_text(json.dumps(
                {**config, "bos_token": "<s>"} if bos_in == "tokenizer_config.json" else config))
            if bos_in == "special_tokens_map.json":
                (root / bos_in).write_text(json.dumps({"bos_token": "<s>", "cls_token": "<s>"}))
        theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="de_DE", tgt_lang="ru_RU")
        ours = AutoTokenizer.from_pretrained(root, src_lang="de_DE", tgt_lang="ru_RU")
        assert (ours.bos_token, ours.bos_token_id) == (theirs.bos_token, theirs.bos_token_id) == \
            ((None, None) if bos_in is None else ("<s>", 0)), root
        assert ours.all_special_tokens == theirs.all_special_tokens, root
        assert ours.all_special_ids == theirs.all_special_ids, root
        assert_same(theirs, ours, CORPUS[:3] + EDGE)


def assert_same_special_tokens(theirs, ours, texts=()):
    """Special-token lists, and every id converted and decoded with and without them, equal transformers'."""
    for name in ("bos_token", "eos_token", "unk_token", "pad_token", "mask_token", "extra_special_tokens",
                 "all_special_tokens", "all_special_ids"):
        assert getattr(ours, name) == getattr(theirs, name), name
    every = list(range(len(theirs)))
    for skip in (True, False):
        assert ours.convert_ids_to_tokens(every, skip) == theirs.convert_ids_to_tokens(every, skip)
        assert ours.decode(every, skip_special_tokens=skip) == theirs.decode(every, skip_special_tokens=skip)
    assert_same(theirs, ours, [*texts, " ".join(theirs.all_special_tokens[:12]) + " a"])


@pytest.mark.parametrize("form, listed", [("tokenizer.json", None), ("tokenizer.json", "extra_special_tokens"),
                                          ("tokenizer.json", "additional_special_tokens"),
                                          ("sentencepiece.bpe.model", None), ("user-defined pieces", None)])
def test_mbart50_special_tokens_equal_transformers(tmp_path, form, listed):
    """MBart50Tokenizer's extra special tokens: those tokenizer_config.json lists, then the 52 language codes it
    lacks; a lone sentencepiece.bpe.model without a listing puts its control pieces (<s>, </s>) first, as
    transformers reads them (its user-defined pieces are the Unigram model's own, not added tokens)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer
    from transformers import MBart50Tokenizer

    root = tmp_path / "spm"
    root.mkdir()
    user = ["<sep>", "<cls2>"] if form == "user-defined pieces" else []
    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(CORPUS * 20), model_writer=buf, vocab_size=220,
                                   model_type="unigram", character_coverage=1.0, hard_vocab_limit=False,
                                   minloglevel=2, user_defined_symbols=user)
    (root / "sentencepiece.bpe.model").write_bytes(buf.getvalue())
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    if form == "tokenizer.json":
        MBart50Tokenizer.from_pretrained(root).save_pretrained(tmp_path / "saved")
        root = tmp_path / "saved"
        config = {k: v for k, v in json.loads((root / "tokenizer_config.json").read_text()).items()
                  if k != "extra_special_tokens"}
        (root / "tokenizer_config.json").write_text(json.dumps(
            config if listed is None else {**config, listed: ["<mask>", "de_DE", "zz_ZZ"]}))
    languages = dict(src_lang="de_DE", tgt_lang="ru_RU")
    theirs = TheirAutoTokenizer.from_pretrained(str(root), **languages)
    ours = AutoTokenizer.from_pretrained(root, **languages)
    assert_same_special_tokens(theirs, ours, CORPUS[:2] + EDGE + ["a <sep> b<cls2>c de_DE fr_XX<s>"])
    first = [] if listed is None else ["<mask>", "de_DE", "zz_ZZ"]
    if form != "tokenizer.json":
        first = ["<s>", "</s>"]
    assert ours.extra_special_tokens == first + [c for c in MBART50_LANGUAGES if c not in first]


def test_mbart_ids_text_and_languages_equal_transformers(tmp_path):
    """mBART (cc25): `A </s> src_lang`, the code from src_lang at load, from tokenizer_config.json, or set after
    (transformers' MBartTokenizer overrides the code saved in tokenizer.json with either)."""
    from transformers import MBartTokenizer

    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    train(spm_dir / "sentencepiece.bpe.model", "bpe")
    root = tmp_path / "saved"
    MBartTokenizer.from_pretrained(spm_dir, src_lang="en_XX").save_pretrained(root)
    ours, theirs = AutoTokenizer.from_pretrained(root), MBartTokenizer.from_pretrained(root)
    assert ours.kind == "MBartTokenizer" and len(ours.language_codes) == 25
    assert_same(theirs, ours, CORPUS + EDGE)
    ours.src_lang = theirs.src_lang = "ro_RO"
    assert_same(theirs, ours, CORPUS + EDGE)
    ours = AutoTokenizer.from_pretrained(root, src_lang="de_DE", tgt_lang="fr_XX")
    assert_same(MBartTokenizer.from_pretrained(root, src_lang="de_DE"), ours, CORPUS)
    assert ours.target_language_id() == theirs.convert_tokens_to_ids("fr_XX")
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "src_lang": "ja_XX"}))
    assert AutoTokenizer.from_pretrained(root)(CORPUS[0])["input_ids"] == \
        MBartTokenizer.from_pretrained(root)(CORPUS[0])["input_ids"]
    with pytest.raises(ValueError, match="unknown language code 'en'.*ar_AR.*25 codes"):
        ours.src_lang = "en"


# texts where the normalizer, pre-tokenizer or unknown-token handling of a tokenizer.json shows
PIPELINE_TEXTS = ["Summary of the article.\n", "end  ", "word\t", "a  b", "  lead", "\ufb01ne Ａｂｃ ½ Ⅻ",
                  "e\u0301t\u00e9", "x\u00a0y", "\U0001f642\U0001f642 \u2603x"]
METASPACE_4X = {"type": "Metaspace", "replacement": "\u2581", "add_prefix_space": True}    # 4.x conversions' form


def older_conversion(saved: dict) -> dict:
    """A tokenizer.json as an older transformers converted it (as Hub checkpoints ship it): its normalizer the bare
    SentencePiece character map (or none), a whitespace-splitting pre-tokenizer, other model options. transformers
    5.25's classes rebuild all of these (tokenizer_classes); only the vocabulary and the character map stay."""
    normalizer = saved["normalizer"]
    steps = normalizer["normalizers"] if normalizer and normalizer["type"] == "Sequence" else [normalizer]
    charsmap = [step for step in steps if step and step["type"] == "Precompiled"]
    model = {**saved["model"], **({"fuse_unk": False, "unk_token": None} if saved["model"]["type"] == "BPE" else
                                  {"unk_id": 0})}
    return {**saved, "normalizer": charsmap[0] if charsmap else {"type": "Lowercase"}, "model": model,
            "pre_tokenizer": {"type": "Sequence", "pretokenizers": [{"type": "WhitespaceSplit"}, METASPACE_4X]},
            "decoder": METASPACE_4X}


@pytest.mark.parametrize("kind", ["PegasusTokenizer", "NllbTokenizer", "MBartTokenizer", "MBart50Tokenizer"])
def test_an_older_tokenizer_json_reads_as_its_class_builds_it(request, tmp_path, kind):
    """transformers 5.25's Pegasus, NLLB, mBART and mBART-50 classes keep a tokenizer.json's vocabulary and
    SentencePiece character map and build the rest themselves, so a file converted otherwise (google/pegasus-xsum's
    splits on whitespace: "end  " has no trailing "\u2581" there) tokenizes as the class builds it, here too."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    languages = {"NllbTokenizer": {"src_lang": "fra_Latn"}, "PegasusTokenizer": {}}.get(kind, {"src_lang": "de_DE"})
    if kind in ("PegasusTokenizer", "NllbTokenizer"):
        root = Path(shutil.copytree(request.getfixturevalue("pegasus_dir" if kind == "PegasusTokenizer"
                                                            else "nllb_dir"), tmp_path / "saved"))
    else:
        train(tmp_path / "sentencepiece.bpe.model", "unigram")
        (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": kind}))
        root = tmp_path / "saved"
        TheirAutoTokenizer.from_pretrained(str(tmp_path)).save_pretrained(root)
    saved = json.loads((root / "tokenizer.json").read_text())
    (root / "tokenizer.json").write_text(json.dumps(older_conversion(saved)))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), **languages)
    ours = AutoTokenizer.from_pretrained(root, **languages)
    assert_same(theirs, ours, CORPUS + EDGE + PIPELINE_TEXTS)
    file_as_is = Backend.from_str(json.dumps(older_conversion(saved)))      # what the file alone would give
    assert any(file_as_is.encode(text, add_special_tokens=False).ids != ours(text, add_special_tokens=False)["input_ids"]
               for text in PIPELINE_TEXTS)


def test_mbart_class_from_config_json_model_type_as_transformers(tmp_path):
    """A tokenizer_config.json naming no class beside config.json's model_type "mbart": transformers' AutoTokenizer
    picks MBartTokenizer (language codes, `A </s> src_lang`), and so does seq2seq_kit's."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    train(tmp_path / "sentencepiece.bpe.model", "unigram")
    (tmp_path / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBartTokenizer"}))
    root = tmp_path / "saved"
    TheirAutoTokenizer.from_pretrained(str(tmp_path)).save_pretrained(root)
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items() if k != "tokenizer_class"}))
    (root / "config.json").write_text(json.dumps({"model_type": "mbart"}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="ro_RO")
    ours = AutoTokenizer.from_pretrained(root, src_lang="ro_RO")
    assert type(theirs).__name__ == ours.kind == "MBartTokenizer"
    assert_same(theirs, ours, CORPUS + EDGE)


def test_pegasus_unknown_token_scored_as_the_class_reads_it(pegasus_dir, tmp_path):
    """PegasusTokenizer finds its unk_token as a vocabulary entry scored 0.0 (after the first entry); a
    tokenizer.json without one cannot be read by transformers, and seq2seq_kit names the file and the fix."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    saved = json.loads((root / "tokenizer.json").read_text())
    saved["model"]["vocab"] = [[piece, -1.0 if piece == "<unk>" else score] for piece, score in saved["model"]["vocab"]]
    (root / "tokenizer.json").write_text(json.dumps(saved))
    with pytest.raises(ValueError):
        TheirAutoTokenizer.from_pretrained(str(root))
    with pytest.raises(ValueError, match=r"tokenizer.json: PegasusTokenizer reads its unk_token '<unk>' .*unk_token"):
        AutoTokenizer.from_pretrained(root)


@pytest.mark.parametrize("listed", [None, [], ["de_DE"]])
def test_mbart_without_listed_codes_takes_transformers_default_codes(tmp_path, listed):
    """mBART (cc25) whose tokenizer_config.json lists no extra special tokens: transformers' MBartTokenizer takes its
    25 codes as its extra special tokens (a list, even empty, is kept as it is)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer
    from transformers import MBartTokenizer

    spm_dir, root = tmp_path / "spm", tmp_path / "saved"
    spm_dir.mkdir()
    train(spm_dir / "sentencepiece.bpe.model", "bpe")
    MBartTokenizer.from_pretrained(spm_dir, src_lang="en_XX").save_pretrained(root)
    config = {k: v for k, v in json.loads((root / "tokenizer_config.json").read_text()).items()
              if k != "extra_special_tokens"}
    (root / "tokenizer_config.json").write_text(json.dumps(
        config if listed is None else {**config, "additional_special_tokens": listed}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="de_DE")
    ours = AutoTokenizer.from_pretrained(root, src_lang="de_DE")
    assert_same_special_tokens(theirs, ours, CORPUS[:2] + EDGE)
    assert ours.extra_special_tokens == (MBART50_LANGUAGES[:25] if listed is None else listed)


def test_m2m100_codes_listed_as_the_hubs_configs_list_them_equal_transformers(m2m100_dir, tmp_path):
    """A tokenizer_config.json listing the language tokens as additional_special_tokens (as facebook/m2m100_418M's
    does): transformers 5.25 registers them as added tokens, so len() and get_vocab() count them (vocab_size does
    not), and reads a "__fr__" written in the text as the token; ids and text as transformers'."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(m2m100_dir, tmp_path / "m2m100"))
    (root / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "M2M100Tokenizer", "num_madeup_words": 8,
        "additional_special_tokens": [f"__{code}__" for code in M2M100_LANGUAGES]}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="en", tgt_lang="fr")
    ours = AutoTokenizer.from_pretrained(root, src_lang="en", tgt_lang="fr")
    assert (ours.vocab_size, len(ours)) == (theirs.vocab_size, len(theirs)) == \
        (len(theirs.encoder), len(theirs.encoder) + len(M2M100_LANGUAGES))
    assert ours.vocab == theirs.get_vocab()
    assert ours.all_special_ids == theirs.all_special_ids
    assert_same(theirs, ours, CORPUS[:3] + EDGE + ["The tower __fr__ is tall"])
    ids = theirs("The tower __fr__ is tall")["input_ids"]             # the codes special in both: marked in both
    mask = theirs.get_special_tokens_mask(ids, already_has_special_tokens=True)
    assert ours.get_special_tokens_mask(ids, already_has_special_tokens=True) == mask and sum(mask) == 3
    assert ours.lang_code_to_id == theirs.lang_code_to_id and ours.lang_token_to_id == theirs.lang_token_to_id


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_python_tokenizers_skip_their_special_ids_as_transformers(request, tmp_path, fixture):
    """Marian and M2M100 are Python tokenizers in transformers 5.25: decode(skip_special_tokens=True) drops
    all_special_ids (named and extra special tokens), whatever tokenizer_config.json's added_tokens_decoder marks
    special: a named <pad> marked "special": false is dropped, an unnamed token marked special is kept."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "tok"))
    kind = "MarianTokenizer" if fixture == "marian_dir" else "M2M100Tokenizer"
    pad, new = 1, len(json.loads((root / "vocab.json").read_text())) + (0 if kind == "MarianTokenizer" else 108)
    if kind == "MarianTokenizer":
        pad = json.loads((root / "vocab.json").read_text())["<pad>"]
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": kind, "added_tokens_decoder": {
        str(pad): {"content": "<pad>", "special": False}, str(new): {"content": "<new>", "special": True}}}))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    ids = theirs("hi <new> tall")["input_ids"] + [theirs.pad_token_id] * 2
    ids = ids[kind == "M2M100Tokenizer":]    # M2M100's language token: special here, not in 5.25 (module doc)
    assert new in ids
    for skip in (True, False):
        assert ours.decode(ids, skip_special_tokens=skip) == theirs.decode(ids, skip_special_tokens=skip)
    assert "<new>" in ours.decode(ids, skip_special_tokens=True) and "<pad>" not in ours.decode(ids, True)
    assert ours.batch_decode([ids, ids[:3]], True) == theirs.batch_decode([ids, ids[:3]], skip_special_tokens=True)


def test_marian_codes_are_found_once_per_vocabulary(marian_dir, monkeypatch):
    """Marian's codes are its >>xx<< tokens, found by sorting the vocabulary: 0.13 s at opus-mt's 58k tokens, done
    by every translation call (check_languages; a 1-token call took 439 ms, 89 after). Found once per vocabulary
    size now: a token added to the backend is seen."""
    from seq2seq_kit.family_tokenizers import TranslationTokenizer

    ours = AutoTokenizer.from_pretrained(marian_dir)
    reads = []
    vocab = TranslationTokenizer.vocab
    monkeypatch.setattr(TranslationTokenizer, "vocab", property(lambda self: reads.append(1) or vocab.fget(self)))
    assert ours.language_codes == ["fra", "deu"] and ours.language_codes == ["fra", "deu"] and len(reads) <= 1
    ours.backend_tokenizer.add_tokens([">>ita<<"])
    assert ours.language_codes == ["fra", "deu", "ita"]


def test_marian_has_no_source_language(marian_dir):
    with pytest.raises(ValueError, match="Marian models have no source language code"):
        AutoTokenizer.from_pretrained(marian_dir, src_lang="fra")
    ours = AutoTokenizer.from_pretrained(marian_dir)
    with pytest.raises(ValueError, match="Marian models have no source language code"):
        ours.src_lang = "fra"
    with pytest.raises(ValueError, match="Marian models have no source language code"):
        ours.encode_source(CORPUS, "fra")                    # was encoded as if no language had been given
    assert ours(CORPUS[0])["input_ids"][-1] == ours.eos_token_id and ">>fra<<" not in ours.tokenize(CORPUS[0])
    assert ours.encode_source(CORPUS) == ours(CORPUS)["input_ids"]


def test_m2m100_madeup_words_count_is_checked(m2m100_dir, tmp_path):
    root = tmp_path / "m2m100"
    shutil.copytree(m2m100_dir, root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "num_madeup_words": "8"}))
    with pytest.raises(ValueError, match="num_madeup_words must be a whole number from 0 to the vocabulary's size "
                                         r"\(\d+; fairseq's checkpoints have 8\), got '8'"):
        AutoTokenizer.from_pretrained(root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "num_madeup_words": 10**40}))
    with pytest.raises(ValueError, match=r"num_madeup_words .*, got 1{}".format("0" * 40)):   # not a list of 10**40
        AutoTokenizer.from_pretrained(root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "num_madeup_words": True}))
    with pytest.raises(ValueError, match=r"num_madeup_words .*, got True"):                   # a bool is no count
        AutoTokenizer.from_pretrained(root)
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "num_madeup_words": 0}))
    ours = AutoTokenizer.from_pretrained(root)
    with pytest.raises(ValueError, match="out of range"):       # no madeup words: past the language tokens
        ours.decode([ours.vocab_size + len(ours.language_codes)])


def test_m2m100_vocabulary_and_madeup_words_equal_transformers(m2m100_dir):
    """transformers 5.25's M2M100Tokenizer: vocab_size, len() and get_vocab() are vocab.json's (no language
    tokens, no madeup words); a madeup word converts to unk_token_id and its id to "<unk>", a language token to its
    id, which decode reads."""
    from transformers import M2M100Tokenizer

    theirs = M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"),
                             src_lang="en", tgt_lang="fr")
    ours = AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en", tgt_lang="fr")
    assert (ours.vocab_size, len(ours)) == (theirs.vocab_size, len(theirs)) == (len(theirs.encoder),) * 2
    assert ours.vocab == theirs.get_vocab()
    tokens = ["madeupword0000", "madeupword0003", "madeupword0007", "madeupword0008", "__fr__", "__zu__", "<unk>",
              "<s>", "</s>", "<pad>", "nope", *list(theirs.get_vocab())[:20]]
    assert ours.convert_tokens_to_ids(tokens) == theirs.convert_tokens_to_ids(tokens)
    assert [ours.convert_tokens_to_ids(t) for t in tokens] == [theirs.convert_tokens_to_ids(t) for t in tokens]
    ids = list(range(theirs.vocab_size - 3, theirs.vocab_size + 108))   # the last pieces, 100 languages, 8 madeup
    assert ours.convert_ids_to_tokens(ids) == theirs.convert_ids_to_tokens(ids)
    madeup = ids[-8:]
    text = theirs(CORPUS[0])["input_ids"][1:]
    for sequence in (madeup, [*madeup[:3], *text, *madeup[3:]]):
        for skip in (True, False):
            assert ours.decode(sequence, skip_special_tokens=skip) == theirs.decode(sequence, skip_special_tokens=skip)


@pytest.mark.parametrize("fixture", ["m2m100_dir", "nllb_dir", "marian_dir"])
def test_other_tokens_are_no_language_codes(request, fixture):
    """A token of the vocabulary that is not a language code ("<s>", "</s>", a piece) is refused as one, as an
    unknown code is (it would otherwise be forced as the target's first token)."""
    kwargs = {} if fixture == "marian_dir" else {"src_lang": "en" if fixture == "m2m100_dir" else "eng_Latn"}
    ours = AutoTokenizer.from_pretrained(request.getfixturevalue(fixture), **kwargs)
    piece = next(t for t in ours.vocab if t.startswith("▁") and len(t) > 2 and t[1:] not in ours.language_codes)
    for token in ("<s>", "</s>", "<unk>", piece, piece[1:]):
        with pytest.raises(ValueError, match="unknown language code"):
            ours.get_lang_id(token)
    assert ours.get_lang_id(ours.language_codes[0]) == ours.convert_tokens_to_ids(
        ours.get_lang_token(ours.language_codes[0]))


def test_language_codes_on_a_tokenizer_without_languages_are_refused():
    with pytest.raises(ValueError, match="no multilingual tokenizer"):
        AutoTokenizer.from_pretrained(Path(__file__).parent / "fixtures" / "bart-tokenizer", src_lang="en")


def python_tokenizer(request, fixture: str):
    """(transformers' Python tokenizer, ours) of the marian_dir / m2m100_dir fixture."""
    from transformers import M2M100Tokenizer, MarianTokenizer

    root = request.getfixturevalue(fixture)
    if fixture == "marian_dir":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            theirs = MarianTokenizer(*(str(root / f) for f in ("source.spm", "target.spm", "vocab.json")))
        return theirs, AutoTokenizer.from_pretrained(root)
    theirs = M2M100Tokenizer(str(root / "vocab.json"), str(root / "sentencepiece.bpe.model"), src_lang="de")
    return theirs, AutoTokenizer.from_pretrained(root, src_lang="de")


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_pairs_cut_longest_first_as_transformers(request, fixture):
    """transformers' Python tokenizers take an odd token to remove from the second text (truncate_sequences), the
    `tokenizers` library from the first: Marian and M2M100 cut as the former, either side, padded or not."""
    theirs, ours = python_tokenizer(request, fixture)
    firsts, seconds = [CORPUS[0], CORPUS[1], "x y"], [CORPUS[0], CORPUS[6], CORPUS[2]]
    for side in ("right", "left"):
        theirs.truncation_side = ours.truncation_side = side
        for max_length in range(3, 40, 3):
            for padding in (False, True, "max_length"):
                kwargs = dict(truncation=True, max_length=max_length, padding=padding)
                expected = theirs(firsts, seconds, **kwargs)
                assert dict(ours(firsts, seconds, **kwargs)) == {k: expected[k] for k in ("input_ids",
                                                                                          "attention_mask")}
            assert ours.encode(CORPUS[0], CORPUS[2], max_length=max_length) == \
                theirs.encode(CORPUS[0], CORPUS[2], max_length=max_length, truncation=True)
    with pytest.raises(ValueError, match="max_length=0 leaves no room"):
        ours(CORPUS[0], CORPUS[1], truncation=True, max_length=0)


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_pairs_cut_one_side_as_transformers(request, fixture):
    """only_first / only_second on pairs, as transformers' Python tokenizers cut them (truncate_sequences): the side
    may be cut to nothing where the other text and the special tokens fill max_length exactly (the `tokenizers`
    library refuses that cut; it was refused here too); where the side is shorter than what must go, transformers
    returns more than max_length tokens and this is refused, naming the fix."""
    theirs, ours = python_tokenizer(request, fixture)
    exact = 0
    for strategy in ("only_first", "only_second"):
        for side in ("right", "left"):
            theirs.truncation_side = ours.truncation_side = side
            for first, second in ((CORPUS[0], "x y"), ("x y", CORPUS[1]), ("a b c", "x")):
                for max_length in range(2, 30):
                    kwargs = dict(truncation=strategy, max_length=max_length)
                    with warnings.catch_warnings():
                        warnings.simplefilter("ignore")
                        expected = theirs(first, second, **kwargs)["input_ids"]
                    if len(expected) > max_length:
                        with pytest.raises(ValueError, match=f"truncation='{strategy}' cannot fit"):
                            ours(first, second, **kwargs)
                        continue
                    assert ours(first, second, **kwargs)["input_ids"] == expected, (strategy, first, max_length)
                    cut = theirs.tokenize(first if strategy == "only_first" else second)
                    exact += len(expected) == len(theirs(first, second)["input_ids"]) - len(cut)
                padded = dict(truncation=strategy, max_length=12, padding="max_length")
                want = theirs([first, second], [second, first], **padded)
                if all(len(ids) <= 12 for ids in want["input_ids"]):
                    got = ours([first, second], [second, first], **padded)
                    assert dict(got) == {k: want[k] for k in ("input_ids", "attention_mask")}
    assert exact >= 4                                  # the side cut to nothing, which was refused


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_tokenize_shows_pieces_outside_the_vocabulary(request, fixture):
    """A SentencePiece piece that vocab.json lacks (its id is <unk>'s) is shown as the piece, as transformers shows
    it; special tokens typed in the text stay whole."""
    theirs, ours = python_tokenizer(request, fixture)
    for text in ["Ω 🇫🇷 tower", "x</s>Ω  <unk> b", "Ω<unk>Ω", "<unk>", "", CORPUS[4], "<unk><s><s>👍", "a Ω<unk>"]:
        assert ours.tokenize(text) == theirs.tokenize(text), text
    assert "<unk>" in ours.convert_ids_to_tokens(ours("Ω 🇫🇷")["input_ids"])       # the ids stay <unk>'s
    with pytest.raises(ValueError, match="return_offsets_mapping is not available for this tokenizer"):
        ours("a tower", return_offsets_mapping=True)         # its pieces' offsets are not the text's


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_tokenize_shows_stripping_added_tokens_as_their_content(request, fixture, tmp_path):
    """Tokens added with lstrip / rstrip (transformers' add_tokens, then save_pretrained): tokenize() shows each as
    its content, not with the spaces it takes in (" <l>", which convert_tokens_to_ids read as <unk>)."""
    from tokenizers import AddedToken

    theirs, _ = python_tokenizer(request, fixture)
    theirs.add_tokens([AddedToken("<l>", lstrip=True), AddedToken("<r>", rstrip=True)])
    theirs.save_pretrained(tmp_path)
    theirs = type(theirs).from_pretrained(str(tmp_path))
    ours = AutoTokenizer.from_pretrained(tmp_path)
    for text in ["a <l> b", "a <r> b", "Ω <l>  <r> Ω"]:
        assert ours.tokenize(text) == theirs.tokenize(text), text
        assert ours.convert_tokens_to_ids(ours.tokenize(text)) == ours(text, add_special_tokens=False)["input_ids"]


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_max_length_zero_without_special_tokens_is_refused(request, fixture):
    """transformers' Python tokenizers (Marian, M2M100) take max_length=0 as no limit and return the whole text;
    seq2seq_kit refuses it there instead of returning no tokens at all."""
    theirs, ours = python_tokenizer(request, fixture)
    for call in (dict(text=CORPUS[0]), dict(text=CORPUS[:2], truncation="only_first"),
                 dict(text=CORPUS[0], text_pair=CORPUS[1], truncation=True)):
        call = dict(max_length=0, add_special_tokens=False, **call)
        assert theirs(**call)["input_ids"] == theirs(**{**call, "max_length": None})["input_ids"]   # nothing cut
        with pytest.raises(ValueError, match=rf"max_length=0 would cut every token, but transformers' {ours.kind} "
                                             "takes it as no limit and cuts nothing: pass max_length >= 1"):
            ours(**call)
    for call in (dict(max_length=1), dict(max_length=0, padding="max_length")):    # a cut, no cut: as transformers
        call = dict(text=CORPUS[0], add_special_tokens=False, **call)
        assert ours(**call)["input_ids"] == theirs(**call)["input_ids"]


def test_encode_source_leaves_src_lang(m2m100_dir):
    """encode_source: the ids `tok(texts)` gives with another source language, cut to max_length when given,
    src_lang unchanged."""
    from transformers import M2M100Tokenizer

    theirs = M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"),
                             src_lang="ru")
    ours = AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en")
    assert ours.encode_source(CORPUS, "ru") == theirs(CORPUS)["input_ids"]
    assert ours.encode_source(CORPUS, "ru", max_length=9) == theirs(CORPUS, truncation=True, max_length=9)["input_ids"]
    english = AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en")(CORPUS)["input_ids"]   # a fresh tokenizer's
    assert ours.src_lang == "en" and ours(CORPUS)["input_ids"] == english      # no "ru" left behind in `ours`
    assert ours.encode_source(CORPUS) == english
    with pytest.raises(ValueError, match="unknown language code 'xx'"):
        ours.encode_source(CORPUS, "xx")
    assert ours(CORPUS)["input_ids"] == english


def test_language_codes_must_be_strings(m2m100_dir):
    with pytest.raises(TypeError, match="tgt_lang must be a language code, a str such as 'fr'.*got int 5"):
        AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en", tgt_lang=5)
    with pytest.raises(TypeError, match="src_lang must be a language code.*got NoneType"):
        AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en").src_lang = None
    with pytest.raises(TypeError, match="lang must be a language code.*got float"):
        AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en").get_lang_id(1.0)


def test_missing_and_corrupt_files_are_named(marian_dir, m2m100_dir, tmp_path):
    """A folder without vocab.json says what the checkpoint needs; a corrupt mBART-50 sentencepiece.bpe.model is
    named (not protobuf's bare DecodeError); a transformers tokenizer object is no path."""
    from transformers import M2M100Tokenizer

    marian, m2m100 = tmp_path / "marian", tmp_path / "m2m100"
    shutil.copytree(marian_dir, marian)
    shutil.copytree(m2m100_dir, m2m100)
    (marian / "vocab.json").unlink()
    (m2m100 / "vocab.json").unlink()
    (m2m100 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer"}))
    with pytest.raises(FileNotFoundError, match="marian has no vocab.json .*Marian checkpoint holds source.spm, "
                                                "target.spm and vocab.json"):
        AutoTokenizer.from_pretrained(marian)
    with pytest.raises(FileNotFoundError, match="m2m100 has no vocab.json .*M2M100 one sentencepiece.bpe.model"):
        AutoTokenizer.from_pretrained(m2m100, src_lang="en")
    mbart50 = tmp_path / "mbart50"
    mbart50.mkdir()
    (mbart50 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    (mbart50 / "sentencepiece.bpe.model").write_bytes(b"not a model")
    with pytest.raises(ValueError, match="mbart50/sentencepiece.bpe.model is not a readable SentencePiece model: "
                                         "DecodeError"):
        AutoTokenizer.from_pretrained(mbart50, src_lang="en_XX")
    theirs = M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"))
    with pytest.raises(TypeError, match="got a transformers M2M100Tokenizer; pass its path"):
        AutoTokenizer.from_pretrained(theirs)


def test_marian_ids_must_be_ints_with_either_vocabulary(marian_dir, marian_separate_dir):
    """transformers' MarianTokenizer decodes [5.0]; seq2seq_kit refuses float ids alike with both vocabularies."""
    for root in (marian_dir, marian_separate_dir):
        ours = AutoTokenizer.from_pretrained(root)
        for call in (lambda: ours.decode([5.0]), lambda: ours.convert_ids_to_tokens([5.0]),
                     lambda: ours.decode(5.0)):
            with pytest.raises(TypeError, match="token ids must be ints"):
                call()
        assert ours.decode([5]) == ours.decode(5)


def test_special_tokens_map_wins_over_tokenizer_config_as_in_transformers(marian_dir, tmp_path):
    """Without added_tokens_decoder (the legacy form) transformers 5 lets special_tokens_map.json's tokens win over
    tokenizer_config.json's; the families read the two files as seq2seq_kit.Tokenizer does."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(marian_dir, tmp_path / "marian"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer", "pad_token": "<unk>"}))
    (root / "special_tokens_map.json").write_text(json.dumps({"pad_token": "<pad>"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
        theirs = TheirAutoTokenizer.from_pretrained(str(root))
    ours = AutoTokenizer.from_pretrained(root)
    assert ours.pad_token == theirs.pad_token == "<pad>"
    texts = ["a", "The tower is 324 metres tall"]
    assert ours(texts, padding=True)["input_ids"] == theirs(texts, padding=True)["input_ids"]
    (root / "special_tokens_map.json").write_text("[]")
    with pytest.raises(ValueError, match="special_tokens_map.json must hold a JSON object"):
        AutoTokenizer.from_pretrained(root)


def test_marians_named_tokens_come_from_the_merged_config_as_in_transformers(marian_dir, tmp_path):
    """Every named token the two files give (mask, bos too), an AddedToken's fields as well as a string."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(marian_dir, tmp_path / "marian"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    (root / "special_tokens_map.json").write_text(json.dumps(
        {"mask_token": "<newmask>", "bos_token": "</s>", "pad_token": {"content": "<unk>", "special": True}}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
        theirs = TheirAutoTokenizer.from_pretrained(str(root))
    ours = AutoTokenizer.from_pretrained(root)
    assert (ours.mask_token, ours.bos_token, ours.pad_token) == (theirs.mask_token, theirs.bos_token,
                                                                 theirs.pad_token) == ("<newmask>", "</s>", "<unk>")
    assert ours.all_special_tokens == theirs.all_special_tokens
    texts = ["a <newmask> b", "The tower is 324 metres tall"]
    assert ours(texts, padding=True)["input_ids"] == theirs(texts, padding=True)["input_ids"]


SOURCES = [CORPUS[0], "Der Turm </s> x<pad>y Ω <unk>", "a", ">>fra<< Hello", ""]
TARGETS = [CORPUS[3], CORPUS[2], "b c", CORPUS[7], ">>deu<<Turm"]
TARGET_CALLS = [
    dict(text_target=TARGETS[0]), dict(text=SOURCES[0], text_target=TARGETS[1]), dict(text_target=TARGETS),
    dict(text_target=TARGETS, text_pair_target=SOURCES), dict(text=SOURCES, text_target=TARGETS, padding=True),
    dict(text=SOURCES, text_target=TARGETS, padding="max_length", truncation=True, max_length=12, return_tensors="pt"),
    dict(text=SOURCES[1], text_target=TARGETS, truncation=True, max_length=7),
    dict(text_target=TARGETS, padding=True, add_special_tokens=False, return_tensors="np"),
    dict(text=SOURCES, text_pair=TARGETS, text_target=TARGETS, text_pair_target=SOURCES, truncation=True,
         max_length=20, padding=True)]


def target_tokenizers(request, tmp_path, family: str):
    """(transformers' tokenizer, ours) for a family's files, as test_*_equal_transformers above build them."""
    from transformers import AutoTokenizer as TheirAutoTokenizer
    from transformers import (M2M100Tokenizer, MarianTokenizer, MBart50Tokenizer, MBartTokenizer,
                              PegasusTokenizer)

    languages = {"m2m100": dict(src_lang="en", tgt_lang="fr"), "mbart": dict(src_lang="en_XX", tgt_lang="ro_RO"),
                 "mbart-no-target": dict(src_lang="en_XX"), "nllb-no-target": dict(src_lang="fra_Latn"),
                 "nllb": dict(src_lang="fra_Latn", tgt_lang="deu_Latn", legacy_behaviour=False),
                 "nllb-legacy": dict(src_lang="fra_Latn", tgt_lang="deu_Latn", legacy_behaviour=True)}
    languages["mbart50"] = languages["mbart50-spm"] = dict(src_lang="de_DE", tgt_lang="ru_RU")
    kwargs = languages.get(family, {})
    spm_dir = tmp_path / "spm"
    spm_dir.mkdir()
    if family.startswith("marian"):
        root = Path(shutil.copytree(request.getfixturevalue(family.replace("-", "_") + "_dir"), tmp_path / family))
        if family == "marian":      # pieces of its own, so that a target encoded as a source would differ
            train(root / "target.spm", "bpe", 150)
        else:                       # <unk> elsewhere: unknown pieces read as the target's, a typed <unk> as the source's
            vocab = json.loads((root / "target_vocab.json").read_text())
            vocab["<unk>"], vocab["</s>"] = vocab["</s>"], vocab["<unk>"]
            (root / "target_vocab.json").write_text(json.dumps(vocab))
        files = [str(root / f) for f in ("source.spm", "target.spm", "vocab.json")]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
            theirs = MarianTokenizer(*files, **(dict(target_vocab_file=str(root / "target_vocab.json"),
                                                     separate_vocabs=True) if family == "marian-separate" else {}))
        return theirs, AutoTokenizer.from_pretrained(root)
    if family == "m2m100":
        root = request.getfixturevalue("m2m100_dir")
        theirs = M2M100Tokenizer(str(root / "vocab.json"), str(root / "sentencepiece.bpe.model"), **kwargs)
        return theirs, AutoTokenizer.from_pretrained(root, **kwargs)
    if family in ("bart", "kobart"):
        root = Path(shutil.copytree(Path(__file__).parent / "fixtures" / f"{family}-tokenizer", tmp_path / family))
        (root / "config.json").write_text(json.dumps({"model_type": family.removeprefix("ko")}))  # for transformers
    elif family.startswith("nllb"):
        root = request.getfixturevalue("nllb_dir")
    elif family.startswith("mbart50"):
        train(spm_dir / "sentencepiece.bpe.model", "unigram")
        (spm_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
        root = spm_dir if family == "mbart50-spm" else tmp_path / "saved"
        if family == "mbart50":
            MBart50Tokenizer.from_pretrained(spm_dir).save_pretrained(root)
    elif family.startswith("mbart"):
        train(spm_dir / "sentencepiece.bpe.model", "bpe")
        root = tmp_path / "saved"
        MBartTokenizer.from_pretrained(spm_dir, src_lang="en_XX").save_pretrained(root)
    else:
        train(spm_dir / "spiece.model", "unigram", 300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        root = tmp_path / "saved"
        PegasusTokenizer.from_pretrained(spm_dir).save_pretrained(root)
    return TheirAutoTokenizer.from_pretrained(str(root), **kwargs), AutoTokenizer.from_pretrained(root, **kwargs)


def as_lists(encoding) -> dict:
    """A call's result, tensors and arrays as lists, with each value's type."""
    return {k: (v.tolist() if hasattr(v, "tolist") else v, type(v).__name__) for k, v in encoding.items()}


@pytest.mark.parametrize("family", ["bart", "kobart", "pegasus", "marian", "marian-separate", "m2m100", "nllb",
                                    "nllb-legacy", "nllb-no-target", "mbart", "mbart-no-target", "mbart50",
                                    "mbart50-spm"])
def test_text_target_equals_transformers(request, tmp_path, family):
    """tok(text_target=...) is the target side as transformers encodes it (Marian: target.spm, and target_vocab.json
    with separate vocabularies; the language families: tgt_lang's code, src_lang's without one, NLLB's and mBART's
    after the text; BART, Pegasus: as a source); beside text, its input_ids are "labels". Padding, truncation and
    return_tensors apply to both sides, on either side of the texts."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for side in ("right", "left"):
        theirs.padding_side = ours.padding_side = theirs.truncation_side = ours.truncation_side = side
        for call in TARGET_CALLS:
            assert as_lists(ours(**call)) == {k: v for k, v in as_lists(theirs(**call)).items()
                                              if k in ("input_ids", "attention_mask", "labels")}, (side, call)
    assert ours(SOURCES)["input_ids"] == theirs(SOURCES)["input_ids"]      # the source side is as it was


ENCODE_CALLS = [dict(return_tensors="pt"), dict(return_tensors="np", truncation=True, max_length=5),
                dict(padding="max_length", max_length=12), dict(padding=True, pad_to_multiple_of=8),
                dict(add_special_tokens=False, return_tensors="pt")]


@pytest.mark.parametrize("family", ["bart", "pegasus", "marian", "m2m100", "nllb", "mbart50"])
def test_encode_takes_the_calls_options_as_transformers(request, tmp_path, family):
    """tok.encode(text, return_tensors="pt", truncation=True, ...), the summarization examples' idiom: a batch of
    one [1, length] (a list without return_tensors), padded and cut as the call pads and cuts (a TypeError before)."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for (text, pair), call in itertools.product([(SOURCES[0], None), ("", None), (SOURCES[2], TARGETS[1]),
                                                 (TARGETS[0], "")], ENCODE_CALLS):
        assert as_lists({"ids": ours.encode(text, pair, **call)}) == as_lists({"ids": theirs.encode(text, pair,
                                                                                                    **call)}), call


TYPE_CALLS = [dict(text=SOURCES[0]), dict(text=SOURCES[:3], text_pair=TARGETS[:3], padding=True),
              dict(text=SOURCES[:2], text_pair=TARGETS[:2], truncation="longest_first", max_length=9,
                   padding="max_length", return_tensors="pt"), dict(text=SOURCES[2], text_target=TARGETS[:2])]


@pytest.mark.parametrize("family", ["bart", "pegasus", "marian", "m2m100", "nllb", "mbart50"])
def test_token_type_ids_as_transformers(request, tmp_path, family):
    """return_token_type_ids (code written for BERT-style tokenizers passes it) was a TypeError. True gives
    transformers' token_type_ids: 0s from the fast tokenizers' templates; a pair's second text's count of 1s at its
    end from Marian's and M2M100's Python tokenizers; False and None leave them out."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for side in ("right", "left"):
        theirs.padding_side = ours.padding_side = side
        for call, flag in itertools.product(TYPE_CALLS, (None, False, True)):
            mine, expected = (as_lists(tok(**call, return_token_type_ids=flag)) for tok in (ours, theirs))
            assert mine == expected and list(mine) == list(expected), (side, call, flag)     # in its order too
            assert ("token_type_ids" in mine) is bool(flag)
    with pytest.raises(ValueError, match="return_token_type_ids must be True, False or None, got 'yes'"):
        ours("a", return_token_type_ids="yes")


@pytest.mark.parametrize("family", ["bart", "kobart", "pegasus", "marian", "marian-separate", "m2m100", "nllb",
                                    "mbart", "mbart50", "mbart50-spm"])
def test_named_special_tokens_equal_transformers(request, tmp_path, family):
    """Each named special token (sep_token and cls_token too), its id, and special_tokens_map are transformers';
    KoBART's generic class (PreTrainedTokenizerFast) has no sep or cls token."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for name in ("bos", "eos", "unk", "sep", "pad", "cls", "mask"):
        assert getattr(ours, f"{name}_token") == getattr(theirs, f"{name}_token"), name
        assert getattr(ours, f"{name}_token_id") == getattr(theirs, f"{name}_token_id"), name
    assert ours.special_tokens_map == theirs.special_tokens_map
    if family == "kobart":
        assert (ours.sep_token, ours.cls_token) == (None, None)


def test_bart_files_naming_the_generic_class_load_as_bart(tmp_path):
    """vocab.json + merges.txt are rebuilt as BartTokenizer (with its sep and cls tokens) whatever class
    tokenizer_config.json names; transformers cannot load them under its generic class."""
    root = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "bart-tokenizer", tmp_path / "bart"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "PreTrainedTokenizerFast"}))
    ours = AutoTokenizer.from_pretrained(root)
    assert ours("hello world")["input_ids"] == [0, 42891, 232, 2]
    assert (ours.sep_token, ours.cls_token) == ("</s>", "<s>")


@pytest.mark.parametrize("config", [None, {}])
def test_tokenizer_json_naming_no_class_has_no_sep_or_cls_as_in_transformers(tmp_path, config):
    """A tokenizer.json whose folder names no class (no tokenizer_config.json, or one without tokenizer_class; no
    config.json) is transformers' generic class: no sep or cls token, though the vocabulary has </s> and <s>."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(Path(__file__).parent / "fixtures" / "kobart-tokenizer", tmp_path / "kobart"))
    (root / "tokenizer_config.json").unlink()
    if config is not None:
        (root / "tokenizer_config.json").write_text(json.dumps(config))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    assert (theirs.sep_token, theirs.cls_token, theirs.sep_token_id, theirs.cls_token_id) == (None,) * 4
    assert (ours.sep_token, ours.cls_token, ours.sep_token_id, ours.cls_token_id) == (None,) * 4
    assert "sep_token" not in ours.special_tokens_map and "cls_token" not in ours.special_tokens_map
    assert ours("hello world")["input_ids"] == theirs("hello world")["input_ids"]


@pytest.mark.parametrize("family", ["nllb-no-target", "mbart-no-target"])
def test_text_target_without_tgt_lang_follows_src_lang_and_sets_nothing(request, tmp_path, family):
    """Without tgt_lang, a target gets the current src_lang's code, as transformers' first target call gives it;
    tgt_lang stays unset (transformers sets it to src_lang there, so that a later src_lang would not move its
    targets: we leave the tokenizer as it was, on purpose), and the source side keeps following src_lang."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    other = "deu_Latn" if family.startswith("nllb") else "ro_RO"
    assert ours(text_target="a b")["input_ids"] == theirs(text_target="a b")["input_ids"]
    ours.src_lang = other
    fresh = type(theirs).from_pretrained(theirs.name_or_path, src_lang=other)   # a first target call with `other`
    assert ours(text_target="a b")["input_ids"] == fresh(text_target="a b")["input_ids"]
    assert ours.tgt_lang is None and ours("a b")["input_ids"] == fresh("a b")["input_ids"]


def test_text_target_mistakes_are_named(m2m100_dir):
    """Without a text, a target, a pair's first text, or (M2M100) a target language: a ValueError that says what
    to pass (transformers: a ValueError, nothing, a KeyError)."""
    ours = AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en")
    with pytest.raises(ValueError, match="pass text .the source., text_target .the target. or both"):
        ours()
    with pytest.raises(ValueError, match="text_pair_target is the second text of a pair: pass text_target too"):
        ours("a", text_pair_target="b")
    with pytest.raises(ValueError, match="text_pair is the second text of a pair: pass text too"):
        ours(text_pair="a", text_target="b")
    with pytest.raises(ValueError, match="text_target needs the target language: pass tgt_lang="):
        ours(text_target="b")
    with pytest.raises(TypeError, match="text_target is a batch, so text_pair_target must be a list of str too"):
        ours(text_target=["a"], text_pair_target="b")
    ours.tgt_lang = "de"
    assert ours(text_target="b")["input_ids"][0] == ours.get_lang_id("de")


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_one_side_cut_with_no_room_beside_the_special_tokens_is_refused(request, fixture):
    """max_length equal to the special tokens' count leaves no room: where the `tokenizers` library would cut
    everything, transformers' Python tokenizers (Marian, M2M100) never cut the side only_first / only_second
    spares, so that call is refused (as one token more is) instead of dropping the text it must keep; a lone first
    text under only_first is cut whole, as transformers cuts it."""
    theirs, ours = python_tokenizer(request, fixture)
    pair_specials = len(ours("x", "y")["input_ids"]) - len(ours("x", add_special_tokens=False)["input_ids"]) \
        - len(ours("y", add_special_tokens=False)["input_ids"])
    one_specials = len(ours("x")["input_ids"]) - len(ours("x", add_special_tokens=False)["input_ids"])
    for call in (dict(text=CORPUS[0], text_pair=CORPUS[1], truncation="only_first", max_length=pair_specials),
                 dict(text=CORPUS[0], text_pair=CORPUS[1], truncation="only_second", max_length=pair_specials),
                 dict(text=CORPUS[0], truncation="only_second", max_length=one_specials)):
        with pytest.raises(ValueError, match="cannot fit|no second sequence"):
            ours(**call)
    lone = dict(text=CORPUS[0], truncation="only_first", max_length=one_specials)
    assert ours(**lone)["input_ids"] == theirs(**lone)["input_ids"]


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_pad_to_multiple_of_as_transformers(request, fixture):
    """Sources and targets padded up to a multiple of 8 by transformers' Python tokenizers' rule."""
    theirs, ours = python_tokenizer(request, fixture)
    for kwargs in (dict(padding=True), dict(padding="max_length", max_length=10), dict(padding=True, truncation=True,
                   max_length=16), dict(padding=False)):
        target = dict(text_target=CORPUS[3:6]) if fixture == "marian_dir" else {}   # (M2M100: no tgt_lang here)
        expected = theirs(CORPUS[:3], pad_to_multiple_of=8, **target, **kwargs)
        assert dict(ours(CORPUS[:3], pad_to_multiple_of=8, **target, **kwargs)) == dict(expected)


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir"])
def test_empty_text_padding_as_transformers(request, fixture):
    """A single text without tokens ("", " ", add_special_tokens=False) comes back empty, unpadded, from
    transformers' Python tokenizers (Marian, M2M100), whatever the padding; in a batch it is padded as any other."""
    theirs, ours = python_tokenizer(request, fixture)
    target = dict(text_target="") if fixture == "marian_dir" else {}   # (M2M100: no tgt_lang here)
    paddings = (dict(padding="max_length", max_length=5), dict(padding="max_length", max_length=5, truncation=True),
                dict(padding=True), dict(padding=False), dict(padding="max_length", max_length=5, pad_to_multiple_of=4))
    for texts in ("", " ", [""], ["", "a"], ["a", " "], "a"):
        for padding in paddings:
            for extra in ({}, dict(add_special_tokens=False), dict(add_special_tokens=False, return_tensors="pt"),
                          dict(add_special_tokens=False, return_attention_mask=False), target,
                          dict(add_special_tokens=False, **target)):
                call = dict(text=texts, **padding, **extra)
                if padding["padding"] is False and "return_tensors" in extra:
                    continue      # rows of different lengths: both refuse to stack them
                assert as_lists(ours(**call)) == as_lists(theirs(**call)), call
    call = dict(padding="max_length", max_length=5, add_special_tokens=False)
    assert dict(ours("", **call)) == {"input_ids": [], "attention_mask": []}
    assert ours([""], **call)["input_ids"] == [[ours.pad_token_id] * 5]
    assert ours("", **call, return_tensors="pt")["input_ids"].shape == (1, 0)


@pytest.mark.parametrize("family", ["nllb", "nllb-legacy", "mbart", "mbart50", "mbart50-spm"])
def test_save_pretrained_keeps_the_language_tokenizer_as_transformers(request, tmp_path, family):
    """A saved NLLB / mBART / mBART-50 tokenizer reloads, here and in transformers, as that family's tokenizer with
    the src_lang, tgt_lang (and legacy_behaviour) it was saved with, as transformers' save_pretrained leaves it."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    theirs, ours = target_tokenizers(request, tmp_path, family)
    source = "ro_RO" if family.startswith("mbart") else "deu_Latn"
    theirs.src_lang = ours.src_lang = source
    ours.save_pretrained(tmp_path / "ours")
    again, oracle = AutoTokenizer.from_pretrained(tmp_path / "ours"), TheirAutoTokenizer.from_pretrained(
        str(tmp_path / "ours"))
    assert type(oracle) is type(theirs) and again.kind == ours.kind
    assert (again.src_lang, again.tgt_lang) == (oracle.src_lang, oracle.tgt_lang) == (source, ours.tgt_lang)
    for call in TARGET_CALLS:
        expected = {k: v for k, v in as_lists(theirs(**call)).items() if k in ("input_ids", "attention_mask", "labels")}
        assert as_lists(again(**call)) == expected, call
        assert {k: v for k, v in as_lists(oracle(**call)).items() if k in expected} == expected, call


@pytest.mark.parametrize("family", ["marian", "marian-separate", "m2m100"])
def test_python_kinds_save_their_files_as_transformers(request, tmp_path, family):
    """Marian and M2M100 (SentencePiece run through Python, no tokenizer.json) were refused by save_pretrained
    (saving a model and its tokenizer for offline use is common): their files are copied, as transformers' save
    writes them, beside a tokenizer_config.json; the folder reloads here and in transformers to the same tokenizer,
    with the src_lang / tgt_lang it was saved with."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    theirs, ours = target_tokenizers(request, tmp_path, family)
    if family == "m2m100":
        theirs.src_lang = ours.src_lang = "de"
    written = ours.save_pretrained(tmp_path / "ours")
    assert sorted(Path(f).name for f in written) == sorted(p.name for p in (tmp_path / "ours").iterdir())
    again = AutoTokenizer.from_pretrained(tmp_path / "ours")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                # Marian's "Recommended: pip install sacremoses"
        oracle = TheirAutoTokenizer.from_pretrained(str(tmp_path / "ours"))
    assert type(oracle) is type(theirs) and again.kind == ours.kind
    assert (again.src_lang, again.tgt_lang) == (ours.src_lang, ours.tgt_lang)
    for call in TARGET_CALLS:
        expected = {k: v for k, v in as_lists(theirs(**call)).items() if k in ("input_ids", "attention_mask", "labels")}
        assert as_lists(again(**call)) == expected, call
        assert {k: v for k, v in as_lists(oracle(**call)).items() if k in expected} == expected, call
    ids = theirs(text_target=TARGETS, padding=True)["input_ids"]                # what the model generates
    assert again.batch_decode(ids, skip_special_tokens=True) == oracle.batch_decode(ids, skip_special_tokens=True)
    again.save_pretrained(tmp_path / "ours")           # over its own files: kept as they are
    assert AutoTokenizer.from_pretrained(tmp_path / "ours")(SOURCES)["input_ids"] == theirs(SOURCES)["input_ids"]


UNPADDED_CALLS = [c for c in TARGET_CALLS if not c.get("padding")]   # no pad_token: padding is refused


def saved_with(theirs, root: Path, **settings) -> Path:
    """transformers' save_pretrained of `theirs` in `root`, its tokenizer_config.json then given `settings`."""
    theirs.save_pretrained(str(root))
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, **settings}))
    return root


@pytest.mark.parametrize("name", ["pad_token", "mask_token"])
@pytest.mark.parametrize("family", ["pegasus", "bart", "kobart", "mbart", "mbart50", "nllb"])
def test_a_null_named_token_stays_unset_across_save_pretrained(request, tmp_path, family, name):
    """tokenizer_config.json's "pad_token": null (or mask_token) leaves that token unset, as in transformers; our
    save_pretrained writes it as null (not leaving it out), so that neither we nor transformers reload the class's
    default (<pad>) from the saved folder."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = saved_with(target_tokenizers(request, tmp_path, family)[0], tmp_path / "null", **{name: None})
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    ours.save_pretrained(tmp_path / "ours")
    again, oracle = AutoTokenizer.from_pretrained(tmp_path / "ours"), TheirAutoTokenizer.from_pretrained(
        str(tmp_path / "ours"))
    for tok in (theirs, ours, again, oracle):
        assert (getattr(tok, name), getattr(tok, name + "_id")) == (None, None)
        assert tok.special_tokens_map == theirs.special_tokens_map
        for call in UNPADDED_CALLS:
            assert as_lists(tok(**call))["input_ids"] == as_lists(theirs(**call))["input_ids"], call
    assert json.loads((tmp_path / "ours" / "tokenizer_config.json").read_text())[name] is None


@pytest.mark.parametrize("eos", ["<pad>", "<unk_5>", "<mask_1>"])
@pytest.mark.parametrize("named_by", ["tokenizer_class", "model_type"])
def test_pegasus_eos_token_override_ends_each_text_as_in_transformers(pegasus_dir, tmp_path, eos, named_by):
    """tokenizer_config.json's eos_token naming another token than </s>: PegasusTokenizer ends each text (single,
    pair, text_target, batch) with that token's id (<pad>: 0), not </s>'s 1, and so do we; decode reads it back,
    and the folder our save_pretrained writes gives the same ids here and in transformers."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    config = {**json.loads((root / "tokenizer_config.json").read_text()), "eos_token": eos}
    if named_by == "model_type":
        del config["tokenizer_class"]
        (root / "config.json").write_text(json.dumps({"model_type": "pegasus"}))
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    assert theirs("Hello")["input_ids"][-1] == ours("Hello")["input_ids"][-1] == theirs.convert_tokens_to_ids(eos)
    ours.save_pretrained(tmp_path / "ours")
    again, oracle = AutoTokenizer.from_pretrained(tmp_path / "ours"), TheirAutoTokenizer.from_pretrained(
        str(tmp_path / "ours"))
    for tok in (ours, again, oracle):
        assert (tok.eos_token, tok.eos_token_id) == (theirs.eos_token, theirs.eos_token_id)
        for call in TARGET_CALLS:
            assert as_lists(tok(**call)) == as_lists(theirs(**call)), call
    ids = theirs(SOURCES, padding=True)["input_ids"]
    for skip in (True, False):
        assert ours.batch_decode(ids, skip_special_tokens=skip) == theirs.batch_decode(ids, skip_special_tokens=skip)


def test_pegasus_eos_token_null_is_refused(pegasus_dir, tmp_path):
    """"eos_token": null: PegasusTokenizer would end each text with the token "None" (read as <unk>); refused."""
    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    config = {**json.loads((root / "tokenizer_config.json").read_text()), "eos_token": None}
    (root / "tokenizer_config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=r"tokenizer_config.json sets eos_token to null, but a Pegasus tokenizer ends "
                                         r"each text with its eos_token: name one \(\"eos_token\": \"</s>\"\) or leave "
                                         r"it out"):
        AutoTokenizer.from_pretrained(root)


@pytest.mark.parametrize("name", ["bart", "kobart", "marian", "marian-separate", "m2m100", "nllb"])
def test_a_tokenizer_pickles_and_deep_copies_with_its_state(request, name):
    """pickle (datasets.map(num_proc=...), spawned workers, Ray) and copy.deepcopy, as transformers' tokenizers
    take them: the same ids, target ids and text, and the languages set after loading. They failed on the lock
    (every family) and on Marian's and M2M100's Python pre-tokenizer and decoder, which `tokenizers` cannot
    serialize (moved out and back here)."""
    import copy
    import pickle

    fixtures = Path(__file__).parent / "fixtures"
    roots = {"bart": fixtures / "bart-tokenizer", "kobart": fixtures / "kobart-tokenizer"}
    root = roots.get(name) or request.getfixturevalue(f"{name.replace('-', '_')}_dir")
    languages = {"m2m100": dict(src_lang="ru", tgt_lang="fr"), "nllb": dict(src_lang="fra_Latn",
                                                                               tgt_lang="deu_Latn")}.get(name, {})
    ours = AutoTokenizer.from_pretrained(root, **languages)
    if "src_lang" in languages:
        ours.src_lang = "en" if name == "m2m100" else "eng_Latn"      # set after loading: the copies keep it
    texts = CORPUS[:3] + EDGE
    target = name != "bart" and name != "kobart"
    before = ours(texts, text_target=texts if target else None, padding=True)
    for copied in (pickle.loads(pickle.dumps(ours)), copy.deepcopy(ours)):
        assert type(copied) is type(ours) and getattr(copied, "src_lang", None) == getattr(ours, "src_lang", None)
        assert copied(texts, text_target=texts if target else None, padding=True) == before
        decoded = before["labels" if target else "input_ids"]          # Marian's decode reads target ids
        assert copied.batch_decode(decoded) == ours.batch_decode(decoded)
        assert copied.tokenize(texts[0]) == ours.tokenize(texts[0])
    assert ours(texts, padding=True)["input_ids"] == before["input_ids"]      # the original still works


def test_m2m100_wmt21_language_codes_equal_transformers(m2m100_dir, tmp_path):
    """tokenizer_config.json's "language_codes": "wmt21" (facebook/wmt21-dense-24-wide-*): transformers'
    M2M100Tokenizer takes its 8 WMT21 codes, in their order, as the language tokens after the vocabulary."""
    from transformers import M2M100Tokenizer

    root = Path(shutil.copytree(m2m100_dir, tmp_path / "wmt21"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "language_codes": "wmt21"}))
    theirs = M2M100Tokenizer(str(root / "vocab.json"), str(root / "sentencepiece.bpe.model"), language_codes="wmt21",
                             src_lang="zh", tgt_lang="de")
    ours = AutoTokenizer.from_pretrained(root, src_lang="zh", tgt_lang="de")
    assert ours.language_codes == ["en", "ha", "is", "ja", "cs", "ru", "zh", "de"]
    assert [ours.get_lang_id(c) for c in ours.language_codes] == [theirs.get_lang_id(c) for c in ours.language_codes]
    assert ours(CORPUS[4])["input_ids"] == theirs(CORPUS[4])["input_ids"]
    assert ours.target_language_id() == theirs.get_lang_id("de")


@pytest.mark.parametrize("family", ["m2m100", "nllb", "mbart", "mbart50-spm"])
def test_the_default_source_language_is_transformers(request, tmp_path, family):
    """Neither src_lang nor tokenizer_config.json's: the class default (en, eng_Latn, en_XX) goes around each text,
    as transformers puts it there; it does not count as a source the user chose (source_given)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer
    from transformers import M2M100Tokenizer, MBartTokenizer

    if family == "m2m100":
        root = request.getfixturevalue("m2m100_dir")
        theirs = M2M100Tokenizer(str(root / "vocab.json"), str(root / "sentencepiece.bpe.model"))
    else:
        if family == "nllb":
            root = Path(shutil.copytree(request.getfixturevalue("nllb_dir"), tmp_path / "nllb"))
        elif family == "mbart":
            train(tmp_path / "sentencepiece.bpe.model", "bpe")
            root = tmp_path / "saved"
            MBartTokenizer.from_pretrained(tmp_path).save_pretrained(root)
        else:
            root = tmp_path
            train(root / "sentencepiece.bpe.model", "unigram")
            (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
        config = json.loads((root / "tokenizer_config.json").read_text())
        (root / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                                if k not in ("src_lang", "tgt_lang")}))
        theirs = TheirAutoTokenizer.from_pretrained(str(root))
    ours = AutoTokenizer.from_pretrained(root)
    assert ours.src_lang == theirs.src_lang == {"m2m100": "en", "nllb": "eng_Latn"}.get(family, "en_XX")
    assert ours.source_given is False
    assert ours(CORPUS[:2])["input_ids"] == theirs(CORPUS[:2])["input_ids"]
    assert AutoTokenizer.from_pretrained(root, src_lang=theirs.src_lang).source_given is True


def test_marian_model_max_length_is_transformers_default(marian_dir):
    """MarianTokenizer's model_max_length defaults to 512: truncation=True without max_length cuts there."""
    from transformers import MarianTokenizer

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = MarianTokenizer(*(str(marian_dir / f) for f in ("source.spm", "target.spm", "vocab.json")))
    ours = AutoTokenizer.from_pretrained(marian_dir)
    assert ours.model_max_length == theirs.model_max_length == 512
    text = " ".join(CORPUS * 12)
    assert ours(text, truncation=True)["input_ids"] == theirs(text, truncation=True)["input_ids"]
    assert len(ours(text, truncation=True)["input_ids"]) == 512


def test_tokenize_keeps_the_longest_typed_special_token(marian_dir, tmp_path):
    """Special tokens where one begins another ("<x>", "<x>y"), typed beside a piece outside the vocabulary:
    tokenize() matches the longest, as transformers' added-token trie does."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(marian_dir, tmp_path / "marian"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer",
                                                            "additional_special_tokens": ["<x>", "<x>y"]}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = TheirAutoTokenizer.from_pretrained(str(root))
    ours = AutoTokenizer.from_pretrained(root)
    for text in ["Ω <x>y b", "Ω<x>yz <x>", "<x>y Ω"]:
        assert ours.tokenize(text) == theirs.tokenize(text), text
        assert ours(text)["input_ids"] == theirs(text)["input_ids"], text


def test_nllb_moe_model_type_reads_as_nllb(nllb_dir, tmp_path):
    """config.json's model_type "nllb-moe" and a tokenizer_config.json naming no class: transformers'
    AutoTokenizer picks NllbTokenizer (its language codes around each text), and so does seq2seq_kit's."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(nllb_dir, tmp_path / "moe"))
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({k: v for k, v in config.items()
                                                            if k != "tokenizer_class"}))
    (root / "config.json").write_text(json.dumps({"model_type": "nllb-moe"}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="fra_Latn", tgt_lang="deu_Latn")
    ours = AutoTokenizer.from_pretrained(root, src_lang="fra_Latn", tgt_lang="deu_Latn")
    assert type(theirs).__name__ == ours.kind == "NllbTokenizer"
    assert_same(theirs, ours, CORPUS[:3] + EDGE)
    assert ours.target_language_id() == theirs.convert_tokens_to_ids("deu_Latn")


def test_pegasus_tokenizer_json_without_a_character_map_as_transformers(pegasus_dir, tmp_path):
    """A Pegasus tokenizer.json with no SentencePiece character map: PegasusTokenizer's normalizer then turns each
    newline into a space (and runs of spaces into one), here too."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(pegasus_dir, tmp_path / "pegasus"))
    saved = json.loads((root / "tokenizer.json").read_text())
    (root / "tokenizer.json").write_text(json.dumps({**saved, "normalizer": None}))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    texts = ["Summary.\nNext line", "a\n\nb", "x  \n y", *PIPELINE_TEXTS]
    assert_same(theirs, ours, texts)
    assert ours("a\nb")["input_ids"] == ours("a b")["input_ids"]


def test_added_tokens_decoder_replaces_the_files_added_tokens_as_transformers(nllb_dir, tmp_path):
    """tokenizer_config.json's added_tokens_decoder is the class's whole added-token table: a token that only
    tokenizer.json adds is no token there (its text is pieces), as in transformers 5.25."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(nllb_dir, tmp_path / "nllb"))
    saved = json.loads((root / "tokenizer.json").read_text())
    fields = ("content", "single_word", "lstrip", "rstrip", "normalized", "special")
    table = {str(t["id"]): {k: t[k] for k in fields} for t in saved["added_tokens"]}
    new = {"id": max(t["id"] for t in saved["added_tokens"]) + 1, "content": "<zzz>", "single_word": False,
           "lstrip": False, "rstrip": False, "normalized": False, "special": True}
    (root / "tokenizer.json").write_text(json.dumps({**saved, "added_tokens": [*saved["added_tokens"], new]}))
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "added_tokens_decoder": table}))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="fra_Latn")
    ours = AutoTokenizer.from_pretrained(root, src_lang="fra_Latn")
    text = "a <zzz> b"
    assert ours(text)["input_ids"] == theirs(text)["input_ids"]
    assert new["id"] not in ours(text)["input_ids"] and len(ours) == len(theirs)


def test_a_tokenizer_json_model_without_its_type_reads_as_its_class(nllb_dir, tmp_path):
    """An older `tokenizers` wrote no model "type": a BPE model is the one with merges, which NllbTokenizer
    rebuilds as its class builds it (a file read as it is would tokenize otherwise)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(nllb_dir, tmp_path / "nllb"))
    saved = older_conversion(json.loads((root / "tokenizer.json").read_text()))
    del saved["model"]["type"]
    (root / "tokenizer.json").write_text(json.dumps(saved))
    theirs = TheirAutoTokenizer.from_pretrained(str(root), src_lang="fra_Latn")
    ours = AutoTokenizer.from_pretrained(root, src_lang="fra_Latn")
    assert_same(theirs, ours, CORPUS[:3] + EDGE + PIPELINE_TEXTS)


def test_an_m2m100_extra_special_token_takes_the_id_after_the_language_tokens(m2m100_dir, tmp_path):
    """A difference from transformers 5.25, on purpose (README): its M2M100Tokenizer gives an extra special token
    that is no language token the first id after vocab.json, the id of __af__ (one id, two tokens); here it takes
    the first id after the language tokens and madeup words, and every other id is transformers'."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(m2m100_dir, tmp_path / "m2m100"))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "additional_special_tokens": ["<x>"]}))
    theirs, ours = TheirAutoTokenizer.from_pretrained(str(root)), AutoTokenizer.from_pretrained(root)
    size = len(json.loads((root / "vocab.json").read_text()))
    assert theirs.convert_tokens_to_ids("<x>") == theirs.get_lang_id("af") == size        # transformers' collision
    assert ours.get_lang_id("af") == size and ours.convert_tokens_to_ids("<x>") == size + 100 + 8
    mine, want = ours("a <x> b")["input_ids"], theirs("a <x> b")["input_ids"]
    assert [i for i in mine if i != size + 108] == [i for i in want if i != size] and mine.count(size + 108) == 1
    assert ours.decode(mine, skip_special_tokens=True) == "a b"      # (5.25 keeps __en__ here: README's other one)


# --- Any text: pieces of the corpus, whitespace of every kind, special and language tokens typed in the text,
# characters the normalizers rewrite (compatibility forms, full-width letters, ligatures, zero-width and combining
# marks), control characters and any code point.
TYPED = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u200b", "\ufeff", "\x00", "\x7f", "</s>", "<unk>",
         "<pad>", "<s>", "<mask>", ">>fra<<", "de_DE", "fra_Latn", "<unk_5>", "<mask_1>", "\ufb01", "\uff21", "\uff42",
         "\u2460", "\u2122", "\u00bd", "e\u0301", "'", "\u2019", "...", "\u2026", " .", "\U0001f642"]
TEXTS = st.lists(st.one_of(st.sampled_from([w for line in CORPUS for w in line.split(" ")]), st.sampled_from(TYPED),
                           st.text(st.characters(codec="utf-8"), max_size=4)), max_size=10).map("".join)


@pytest.fixture(scope="module")
def every_family(marian_dir, m2m100_dir, nllb_dir, pegasus_dir, tmp_path_factory):
    """(transformers' tokenizer, ours, where decoding starts) of each family, as the tests above build them."""
    from transformers import (M2M100Tokenizer, MarianTokenizer, MBart50Tokenizer, MBartTokenizer, NllbTokenizer,
                              PegasusTokenizer)
    mbart, mbart50, saved50 = (tmp_path_factory.mktemp(name) for name in ("mbart-spm", "mbart50-spm", "mbart50"))
    train(mbart / "sentencepiece.bpe.model", "bpe")
    MBartTokenizer.from_pretrained(mbart, src_lang="en_XX").save_pretrained(mbart / "saved")
    train(mbart50 / "sentencepiece.bpe.model", "unigram")
    (mbart50 / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    MBart50Tokenizer.from_pretrained(mbart50, src_lang="de_DE").save_pretrained(saved50)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                                  # MarianTokenizer asks for sacremoses
        return {
            "marian": (MarianTokenizer.from_pretrained(marian_dir), AutoTokenizer.from_pretrained(marian_dir), 0),
            # M2M100's language token typed in a text is 4.x's reading here (a test above): decoded from after it
            "m2m100": (M2M100Tokenizer(str(m2m100_dir / "vocab.json"), str(m2m100_dir / "sentencepiece.bpe.model"),
                                       src_lang="en", tgt_lang="fr"),
                       AutoTokenizer.from_pretrained(m2m100_dir, src_lang="en", tgt_lang="fr"), 1),
            "nllb": (NllbTokenizer.from_pretrained(nllb_dir), AutoTokenizer.from_pretrained(nllb_dir), 0),
            "pegasus": (PegasusTokenizer.from_pretrained(pegasus_dir), AutoTokenizer.from_pretrained(pegasus_dir), 0),
            "mbart": (MBartTokenizer.from_pretrained(mbart / "saved"), AutoTokenizer.from_pretrained(mbart / "saved"),
                      0),
            "mbart50-spm": (MBart50Tokenizer.from_pretrained(mbart50, src_lang="de_DE"),
                            AutoTokenizer.from_pretrained(mbart50, src_lang="de_DE"), 0),
            "mbart50": (MBart50Tokenizer.from_pretrained(saved50, src_lang="de_DE"),
                        AutoTokenizer.from_pretrained(saved50, src_lang="de_DE"), 0)}


@pytest.mark.parametrize("name", ["marian", "m2m100", "nllb", "pegasus", "mbart", "mbart50-spm", "mbart50"])
@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=TEXTS)
def test_any_text_equals_transformers(every_family, name, text):
    """Any text: transformers 5.25's ids, and its text decoded back with and without special tokens."""
    theirs, ours, decode_from = every_family[name]
    assume(name != "m2m100" or "__" not in text)    # a language token typed in a text: 4.x's reading, on purpose
    ids = theirs(text)["input_ids"]
    assert ours(text)["input_ids"] == ids
    for skip in (True, False):
        assert ours.decode(ids[decode_from:], skip_special_tokens=skip) == theirs.decode(ids[decode_from:],
                                                                                          skip_special_tokens=skip)


@pytest.mark.parametrize("fixture", ["marian_dir", "m2m100_dir", "nllb_dir", "pegasus_dir"])
def test_is_fast_and_input_names_as_transformers(request, fixture):
    """is_fast and model_input_names read as transformers' (code branches on is_fast before word_ids()); row i of a
    batch's encoding by index where the tokenizer keeps the encodings, a KeyError saying so where not, as there."""
    import transformers

    root = request.getfixturevalue(fixture)
    ours = AutoTokenizer.from_pretrained(root)
    if fixture == "marian_dir":
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
            theirs = transformers.MarianTokenizer(*(str(root / f) for f in ("source.spm", "target.spm", "vocab.json")))
    elif fixture == "m2m100_dir":
        theirs = transformers.M2M100Tokenizer(str(root / "vocab.json"), str(root / "sentencepiece.bpe.model"))
    else:
        theirs = transformers.AutoTokenizer.from_pretrained(str(root))
    assert (ours.is_fast, ours.model_input_names) == (theirs.is_fast, theirs.model_input_names)
    mine, want = ours(["a tall tower", "hi"], padding=True), theirs(["a tall tower", "hi"], padding=True)
    if theirs.is_fast:
        assert mine[1].ids == want[1].ids and mine[0].tokens == want[0].tokens
    else:
        with pytest.raises(KeyError, match="a row's Encoding is kept by the `tokenizers` library's tokenizers only"):
            mine[0]
    assert mine.data["input_ids"] == want.data["input_ids"]


MAP_FAMILIES = ["bart", "kobart", "pegasus", "marian", "marian-separate", "m2m100", "nllb", "nllb-legacy", "mbart",
                "mbart50", "mbart50-spm"]


@pytest.mark.parametrize("family", MAP_FAMILIES)
def test_language_maps_equal_transformers(request, tmp_path, family):
    """lang_code_to_id (the mBART-50 card's forced_bos_token_id=tok.lang_code_to_id["fr_XX"], the mBART en-ro docs'
    decoder_start_token_id=tok.lang_code_to_id["ro_RO"]), mBART-50's id_to_lang_code, M2M100's lang_code_to_token,
    lang_token_to_id and id_to_lang_token, Marian's supported_language_codes: transformers 5.25's, in its order,
    on the tokenizers that have them there (they were missing); on the others an AttributeError as there (hasattr
    False, as code that checks for them reads it), naming get_lang_id."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for name in LANGUAGE_MAPS:
        if not hasattr(theirs, name):
            assert not hasattr(ours, name), name
            if isinstance(ours, TranslationTokenizer):
                with pytest.raises(AttributeError, match=rf"^{name} is .*\(as in transformers 5.25\), not this "
                                                         rf"{ours.kind}'s: tok.get_lang_id\(code\)"):
                    getattr(ours, name)
            continue
        mine, want = getattr(ours, name), getattr(theirs, name)
        assert mine == want and list(mine) == list(want), name           # in its order too ([]: marian-separate)
    for code, lang_id in getattr(ours, "lang_code_to_id", {}).items():
        assert lang_id == ours.get_lang_id(code)
    with pytest.raises(AttributeError, match="object has no attribute 'no_such_thing'"):
        ours.no_such_thing


def test_marian_supported_language_codes_in_vocab_json_order(marian_dir, tmp_path):
    """Marian's supported_language_codes lists vocab.json's >>xx<< tokens in the file's order, as transformers
    (language_codes: by id, without the brackets)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(marian_dir, tmp_path / "marian"))
    vocab = json.loads((root / "vocab.json").read_text())
    (root / "vocab.json").write_text(json.dumps({">>deu<<": vocab.pop(">>deu<<"), **vocab}))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer"}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
        theirs = TheirAutoTokenizer.from_pretrained(str(root))
    ours = AutoTokenizer.from_pretrained(root)
    assert ours.supported_language_codes == theirs.supported_language_codes == [">>deu<<", ">>fra<<"]
    assert ours.language_codes == ["fra", "deu"]


def outcome(call):
    """call()'s result, or the type of what it raised."""
    try:
        return call()
    except Exception as e:   # noqa: BLE001 - compared with transformers' exception
        return type(e)


@pytest.mark.parametrize("family", MAP_FAMILIES)
def test_special_token_count_and_mask_equal_transformers(request, tmp_path, family):
    """num_special_tokens_to_add and get_special_tokens_mask (both were missing) as transformers 5.25's, ids with
    and without their special tokens, pairs: the fast tokenizers mark all_special_ids in encoded ids and raise
    NotImplementedError for others; Marian's and M2M100's Python tokenizers add the 1s encoding adds (Marian
    marks the ids' own special tokens but <unk>, and reads token_ids_0 alone beside already_has_special_tokens)."""
    theirs, ours = target_tokenizers(request, tmp_path, family)
    for pair in (False, True):
        assert ours.num_special_tokens_to_add(pair) == theirs.num_special_tokens_to_add(pair)
    inputs = [theirs(SOURCES[1])["input_ids"], theirs(SOURCES[0], TARGETS[1])["input_ids"],
              [ours.unk_token_id, ours.eos_token_id, ours.pad_token_id, 5], []]
    if family == "m2m100":    # its language token is special here, not in 5.25 without the listed codes (module doc)
        inputs = [ids[1:] for ids in inputs]
    masks = []
    for ids, second, already in itertools.product(inputs, (None, [5, 6]), (False, True)):
        mine, want = (outcome(lambda: tok.get_special_tokens_mask(ids, second, already)) for tok in (ours, theirs))
        assert mine == want, (ids, second, already)
        masks += [mine] if isinstance(mine, list) else []
    assert any(1 in mask and 0 in mask for mask in masks)


@pytest.mark.parametrize("fixture, kind", [("marian_dir", "MarianTokenizer"), ("m2m100_dir", "M2M100Tokenizer"),
                                           ("nllb_dir", None), ("pegasus_dir", None)])
def test_name_or_path_as_transformers(request, tmp_path, fixture, kind):
    """name_or_path is what AutoTokenizer.from_pretrained was passed, as a str (a trailing "/" kept), as transformers
    keeps it (it was missing)."""
    from transformers import AutoTokenizer as TheirAutoTokenizer

    root = Path(shutil.copytree(request.getfixturevalue(fixture), tmp_path / "tok"))
    if kind is not None:          # for transformers, which needs the class named
        (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": kind}))
    for passed in (root, f"{root}/"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")   # "Recommended: pip install sacremoses" (not used for encoding)
            theirs = TheirAutoTokenizer.from_pretrained(passed)
        assert AutoTokenizer.from_pretrained(passed).name_or_path == theirs.name_or_path == str(passed)
