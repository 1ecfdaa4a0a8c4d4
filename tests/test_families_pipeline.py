"""pipeline("translation" / "translation_xx_to_yy" / "text2text-generation" / "summarization") on the families,
against transformers 4.x's recipe run with transformers 5 (whose pipelines for these tasks are gone): tokenize with
transformers' tokenizer (source language set), generate with the target language as forced_bos_token_id, decode
without special tokens. Checkpoints: random small models whose vocabularies are SentencePiece models trained on the
spot (tests/test_family_tokenizers.py), saved with the tokenizer files the real checkpoints ship.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from seq2seq_kit import AutoTokenizer, pipeline
from seq2seq_kit.translation import TranslationPipeline
from checkpoints import FAMILY_SHAPE, Spec, build
from test_family_tokenizers import CORPUS, fairseq_vocab, train

pytest.importorskip("sentencepiece")
TEXTS = CORPUS[:3]
MAX_NEW = dict(max_new_tokens=8)


@pytest.fixture(scope="module")
def marian_path(tmp_path_factory):
    """A multi-target Marian model (>>fra<< / >>deu<< codes) with its source.spm, target.spm and vocab.json."""
    root = tmp_path_factory.mktemp("marian-mt")
    train(root / "source.spm", "unigram")
    shutil.copy(root / "source.spm", root / "target.spm")
    vocab = fairseq_vocab(root / "source.spm", {"</s>": 0, "<unk>": 1})
    for token in (">>fra<<", ">>deu<<", "<pad>"):
        vocab[token] = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    pad = vocab["<pad>"]
    config = dict(FAMILY_SHAPE, vocab_size=len(vocab), pad_token_id=pad, eos_token_id=0, decoder_start_token_id=pad,
                  forced_eos_token_id=0, scale_embedding=True)
    build(Spec(config, tokenizer=None, model_type="marian", seed=21, init_std=0.1,
               config_json_extra=dict(bad_words_ids=[[pad]], num_beams=2, max_length=16)), root)
    return root


@pytest.fixture(scope="module")
def m2m100_path(tmp_path_factory):
    root = tmp_path_factory.mktemp("m2m100-mt")
    train(root / "sentencepiece.bpe.model", "bpe")
    vocab = fairseq_vocab(root / "sentencepiece.bpe.model", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "M2M100Tokenizer",
                                                            "model_max_length": 128}))
    config = dict(FAMILY_SHAPE, vocab_size=len(vocab) + 108, pad_token_id=1, bos_token_id=0, eos_token_id=2,
                  decoder_start_token_id=2, scale_embedding=True, activation_function="relu")
    build(Spec(config, tokenizer=None, model_type="m2m_100", seed=22, init_std=0.1), root)
    return root


@pytest.fixture(scope="module")
def marian_separate_path(tmp_path_factory):
    """A Marian model with its own target vocabulary: target.spm + target_vocab.json (separate_vocabs), its decoder
    embedding and LM head of that size; <pad> (the decoder start) at id 2 in both vocabularies."""
    root = tmp_path_factory.mktemp("marian-separate-mt")
    train(root / "source.spm", "unigram")
    train(root / "target.spm", "unigram", 120)
    sizes = []
    for spm_file, vocab_file in (("source.spm", "vocab.json"), ("target.spm", "target_vocab.json")):
        vocab = fairseq_vocab(root / spm_file, {"</s>": 0, "<unk>": 1, "<pad>": 2})
        (root / vocab_file).write_text(json.dumps(vocab))
        sizes.append(len(vocab))
    assert sizes[0] != sizes[1]
    (root / "tokenizer_config.json").write_text(json.dumps({"separate_vocabs": True}))
    config = dict(FAMILY_SHAPE, vocab_size=sizes[0], decoder_vocab_size=sizes[1],
                  share_encoder_decoder_embeddings=False, pad_token_id=2, eos_token_id=0, decoder_start_token_id=2,
                  forced_eos_token_id=0, scale_embedding=True)
    build(Spec(config, tokenizer=None, model_type="marian", seed=23, init_std=0.1,
               config_json_extra=dict(bad_words_ids=[[2]], num_beams=2, max_length=16)), root)
    return root


@pytest.fixture(scope="module")
def mbart_path(tmp_path_factory):
    """An mBART (cc25) model fine-tuned into one target, as facebook/mbart-large-en-ro: its MBartTokenizer's
    tokenizer.json (25 language codes), decoder start ro_RO."""
    spm_dir = tmp_path_factory.mktemp("mbart-spm")
    train(spm_dir / "sentencepiece.bpe.model", "bpe")
    root = tmp_path_factory.mktemp("mbart-mt")
    tok = transformers.MBartTokenizer.from_pretrained(spm_dir)
    tok.save_pretrained(root)
    config = dict(FAMILY_SHAPE, vocab_size=len(tok), pad_token_id=1, bos_token_id=0, eos_token_id=2,
                  decoder_start_token_id=tok.convert_tokens_to_ids("ro_RO"), scale_embedding=True)
    build(Spec(config, tokenizer=None, model_type="mbart", seed=24, init_std=0.1), root)
    state = load_file(root / "model.safetensors")     # language codes only where forced: decoded text is not empty
    state["final_logits_bias"][0, tok.convert_tokens_to_ids("ar_AR"):] -= 10
    save_file(state, root / "model.safetensors", metadata={"format": "pt"})
    return root


def reference(path, texts, tokenizer, forced_bos=None, **kwargs) -> list[list[int]]:
    """4.x's translation recipe with transformers 5: each text alone through generate (the ids; their decoding
    is tests/test_family_tokenizers.py's business)."""
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    extra = {} if forced_bos is None else dict(forced_bos_token_id=forced_bos)
    return [model.generate(torch.tensor([tokenizer(text)["input_ids"]]), **extra, **kwargs)[0].tolist()
            for text in texts]


def assert_records(pipe, texts, expected_ids, **kwargs):
    """pipe's token ids are the recipe's, and its texts their decoding without special tokens."""
    assert [r["translation_token_ids"].tolist() for r in pipe(texts, return_tensors=True, **kwargs)] == expected_ids
    decode = pipe.tokenizer.decode
    assert pipe(texts, **kwargs) == [{"translation_text": decode(ids, skip_special_tokens=True)}
                                     for ids in expected_ids]


def test_marian_translation_equals_the_recipe(marian_path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.MarianTokenizer(*(str(marian_path / f) for f in ("source.spm", "target.spm",
                                                                                "vocab.json")))
    expected = reference(marian_path, [f">>fra<< {t}" for t in TEXTS], theirs, **MAX_NEW)
    pipe = pipeline("translation", model=marian_path, tgt_lang="fra")
    assert isinstance(pipe, TranslationPipeline)
    assert_records(pipe, TEXTS, expected, **MAX_NEW)
    plain = pipeline("translation", model=marian_path)       # no target: the texts carry theirs, as in 4.x
    assert_records(plain, [f">>fra<< {t}" for t in TEXTS], expected, **MAX_NEW)
    assert pipeline("translation_en_to_fr", model=marian_path).tgt_lang is None    # not its codes: ignored (4.x)
    with pytest.raises(ValueError, match="input 1 is empty: there is nothing to translate"):
        pipe([TEXTS[0], " "])


def test_the_marian_model_cards_code_runs_with_only_its_import_changed(marian_path):
    """Helsinki-NLP's model card code, `from seq2seq_kit import MarianMTModel, MarianTokenizer` in the place of
    transformers' (an ImportError before): the same tokens."""
    import seq2seq_kit

    texts = [f">>fra<< {t}" for t in TEXTS]
    outputs = []
    for library in (transformers, seq2seq_kit):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")                    # transformers': "Recommended: pip install sacremoses"
            tokenizer = library.MarianTokenizer.from_pretrained(str(marian_path))
            model = library.MarianMTModel.from_pretrained(str(marian_path))
            translated = model.generate(**tokenizer(texts, return_tensors="pt", padding=True), num_beams=2,
                                        max_new_tokens=8)
            outputs.append([tokenizer.decode(t, skip_special_tokens=True) for t in translated])
    assert outputs[0] == outputs[1]


def test_languages_passed_beside_a_task_name_are_checked_and_used(marian_path, mbart_path):
    """A "translation_XX_to_YY" task's own languages may be no codes of the model (4.x ignored them); languages
    passed beside it were ignored alike: a Marian target went unused, a misspelt mBART target was dropped. They are
    checked and used as with the "translation" task; those equal to the task's stay lenient."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.MarianTokenizer(*(str(marian_path / f) for f in ("source.spm", "target.spm",
                                                                                "vocab.json")))
    expected = reference(marian_path, [f">>deu<< {t}" for t in TEXTS[:3]], theirs, **MAX_NEW)
    for tgt in ("deu", ">>deu<<"):
        pipe = pipeline("translation_en_to_de", model=marian_path, tgt_lang=tgt)
        assert pipe.tgt_lang == tgt
        assert_records(pipe, TEXTS[:3], expected, **MAX_NEW)
    assert pipeline("translation_en_to_de", model=marian_path, src_lang="en", tgt_lang="de").tgt_lang is None
    with pytest.raises(ValueError, match="src_lang='fr': Marian models have no source language code"):
        pipeline("translation_en_to_de", model=marian_path, src_lang="fr")
    with pytest.raises(ValueError, match="unknown language code 'de' for this MBartTokenizer"):
        pipeline("translation_en_to_ro", model=mbart_path, src_lang="en_XX", tgt_lang="de")
    assert pipeline("translation_en_to_ro", model=mbart_path, tgt_lang="ro_RO").tgt_lang == "ro_RO"


def test_marian_target_code_goes_before_the_configs_prefix(marian_path, tmp_path):
    """A Marian checkpoint whose config has a prefix: tgt_lang's >>fra<< goes first, then the prefix and the
    text (behind the prefix, the code is read as plain pieces: tgt_lang did nothing)."""
    root = Path(shutil.copytree(marian_path, tmp_path / "marian"))
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "prefix": "translate: "}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.MarianTokenizer(*(str(root / f) for f in ("source.spm", "target.spm", "vocab.json")))
    pipe = pipeline("translation", model=root, tgt_lang="fra")
    rows = pipe.preprocess(TEXTS[:3]).rows
    assert rows == [theirs(f">>fra<< translate: {t}")["input_ids"] for t in TEXTS[:3]]
    assert all(row[0] == theirs.convert_tokens_to_ids(">>fra<<") for row in rows)


def test_marian_target_code_leaves_error_positions_as_in_the_text(marian_path):
    """A lone surrogate is named at its character in the text the user sent, not behind the >>fra<< code that
    tgt_lang puts before it (as without tgt_lang, and as the other families name it)."""
    for langs in (dict(tgt_lang="fra"), {}):
        pipe = pipeline("translation", model=marian_path, **langs)
        with pytest.raises(ValueError, match="text.1. holds a lone surrogate '.ud800' at character 2,"):
            pipe(["ok", "ab\ud800"], **MAX_NEW)


def test_marian_separate_vocabularies_translation_equals_the_recipe(marian_separate_path):
    """Source ids in the source vocabulary, generated ids in the target one, decoded by the target side."""
    path = marian_separate_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.MarianTokenizer(*(str(path / f) for f in ("source.spm", "target.spm", "vocab.json")),
                                              target_vocab_file=str(path / "target_vocab.json"), separate_vocabs=True)
    expected = reference(path, TEXTS, theirs, **MAX_NEW)
    pipe = pipeline("translation", model=path)
    assert_records(pipe, TEXTS, expected, **MAX_NEW)
    assert [pipe.tokenizer.decode(ids, skip_special_tokens=True) for ids in expected] == \
        [theirs.decode(ids, skip_special_tokens=True) for ids in expected]


@pytest.mark.parametrize("task, langs", [("translation", dict(src_lang="de", tgt_lang="fr")),
                                         ("translation_de_to_fr", {})])
def test_m2m100_translation_equals_the_recipe(m2m100_path, task, langs):
    theirs = transformers.M2M100Tokenizer(str(m2m100_path / "vocab.json"),
                                          str(m2m100_path / "sentencepiece.bpe.model"), src_lang="de")
    expected = reference(m2m100_path, TEXTS, theirs, forced_bos=theirs.get_lang_id("fr"), **MAX_NEW)
    pipe = pipeline(task, model=m2m100_path, **langs)
    assert pipe.generate_defaults["forced_bos_token_id"] == theirs.get_lang_id("fr")
    assert_records(pipe, TEXTS, expected, **MAX_NEW)
    assert all(ids[1] == theirs.get_lang_id("fr") for ids in expected)   # the target language comes first
    with pipe.engine() as engine:                                    # the public stages the server composes
        out = engine.submit(pipe.preprocess(TEXTS[:1]).rows[0], **MAX_NEW).result(60)
    assert pipe.postprocess(out[None], return_tensors=True)[0][0]["translation_token_ids"].tolist() == expected[0]


def test_m2m100_translation_puts_no_prefix_before_the_coded_text(m2m100_path, tmp_path):
    """4.x's TranslationPipeline left the config's prefix out where the tokenizer builds the inputs with the
    source code (M2M100, NLLB, mBART(-50): _build_translation_inputs); text2text-generation keeps it."""
    shutil.copytree(m2m100_path, tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    prefix = "translate German to French: "
    (tmp_path / "config.json").write_text(json.dumps({**config, "prefix": prefix}))
    theirs = transformers.M2M100Tokenizer(str(m2m100_path / "vocab.json"),
                                          str(m2m100_path / "sentencepiece.bpe.model"), src_lang="de")
    expected = reference(tmp_path, TEXTS, theirs, forced_bos=theirs.get_lang_id("fr"), **MAX_NEW)
    pipe = pipeline("translation", model=tmp_path, src_lang="de", tgt_lang="fr")
    assert pipe.prefix == "" and pipe.preprocess(TEXTS).rows == [theirs(t)["input_ids"] for t in TEXTS]
    assert_records(pipe, TEXTS, expected, **MAX_NEW)
    text2text = pipeline("text2text-generation", model=tmp_path)
    assert text2text.prefix == prefix
    assert text2text.preprocess(TEXTS[:1]).rows == [text2text.tokenizer(prefix + TEXTS[0])["input_ids"]]


def test_mbart_translation_equals_the_recipe(mbart_path):
    """mBART (cc25): the target may be left out (the checkpoint's decoder start names it: no forced token); named,
    it is forced as 4.x's MBartTokenizer._build_translation_inputs forced it; the source code ends each input."""
    theirs = transformers.MBartTokenizer.from_pretrained(mbart_path, src_lang="en_XX")
    pipe = pipeline("translation", model=mbart_path, src_lang="en_XX")
    assert "forced_bos_token_id" not in pipe.generate_defaults
    assert_records(pipe, TEXTS, reference(mbart_path, TEXTS, theirs, **MAX_NEW), **MAX_NEW)
    theirs.src_lang = "ro_RO"
    expected = reference(mbart_path, TEXTS, theirs, forced_bos=theirs.convert_tokens_to_ids("de_DE"), **MAX_NEW)
    assert_records(pipe, TEXTS, expected, src_lang="ro_RO", tgt_lang="de_DE", **MAX_NEW)
    ro_de = pipeline("translation", model=mbart_path, src_lang="ro_RO", tgt_lang="de_DE")
    assert ro_de(TEXTS, **MAX_NEW) == pipe(TEXTS, src_lang="ro_RO", tgt_lang="de_DE", **MAX_NEW)
    assert ro_de.preprocess(TEXTS[:1]).rows[0][-2:] == [2, theirs.convert_tokens_to_ids("ro_RO")]
    assert pipe.preprocess(TEXTS[:1]).rows[0][-2:] == [2, theirs.convert_tokens_to_ids("en_XX")]  # the call's only
    with pytest.raises(ValueError, match="unknown language code 'ro'.*ar_AR"):
        pipe(TEXTS[0], tgt_lang="ro")
    named = pipeline("translation_en_to_ro", model=mbart_path)      # task names, not codes: the checkpoint's pair
    assert named(TEXTS, **MAX_NEW) == pipe(TEXTS, **MAX_NEW)
    assert named.src_lang == "en_XX" and "forced_bos_token_id" not in named.generate_defaults


def test_a_task_name_keeps_the_mbart_codes_passed_beside_it(mbart_path):
    """A task name's languages that are no mBART codes ("de", "en") are ignored, not the codes passed with it: an
    explicit src_lang / tgt_lang still tags the texts and forces the target (it was the checkpoint's en_XX)."""
    theirs = transformers.MBartTokenizer.from_pretrained(mbart_path, src_lang="de_DE")
    pipe = pipeline("translation_de_to_en", model=mbart_path, src_lang="de_DE")
    assert pipe.src_lang == "de_DE" and pipe.preprocess(TEXTS[:1]).rows[0] == theirs(TEXTS[0])["input_ids"]
    pipe = pipeline("translation_en_to_ro", model=mbart_path, tgt_lang="fr_XX")
    assert (pipe.src_lang, pipe.tgt_lang) == ("en_XX", "fr_XX")
    assert pipe.generate_defaults["forced_bos_token_id"] == theirs.convert_tokens_to_ids("fr_XX")


def test_an_mbart_tokenizer_without_eos_token_is_named(mbart_path, tmp_path):
    """eos_token null in tokenizer_config.json: the language-code template (`A </s> ro_RO`) has nothing to end
    each text with; named at load (was a TypeError from `tokenizers`' template at the first call)."""
    root = shutil.copytree(mbart_path, tmp_path / "mbart", ignore=shutil.ignore_patterns("model.safetensors"))
    config = json.loads((root / "tokenizer_config.json").read_text())
    (root / "tokenizer_config.json").write_text(json.dumps({**config, "eos_token": None}))
    with pytest.raises(ValueError, match=r"the MBartTokenizer's eos_token is null \(tokenizer_config.json or "
                                         r"special_tokens_map.json\): it ends each text"):
        AutoTokenizer.from_pretrained(root)


def test_translation_refuses_unknown_languages(m2m100_path):
    with pytest.raises(ValueError, match="unknown language code 'xx'.*af, am"):
        pipeline("translation", model=m2m100_path, src_lang="en", tgt_lang="xx")
    with pytest.raises(ValueError, match="needs tgt_lang"):
        pipeline("translation", model=m2m100_path, src_lang="en")(TEXTS[0])


def test_map_reduce_is_for_summarization_only(m2m100_path):
    """Long-document map-reduce joins chunk summaries: a translation or text2text pipeline refuses it by name
    (it failed after generating, looking for 'summary_text')."""
    for pipe in (pipeline("translation", model=m2m100_path, src_lang="en", tgt_lang="fr"),
                 pipeline("text2text-generation", model=m2m100_path)):
        with pytest.raises(ValueError, match=f"applies to the summarization pipeline, not to {type(pipe).__name__}"):
            pipe(TEXTS[0], strategy="map_reduce")


def test_text2text_generation_records(m2m100_path):
    """4.x's Text2TextGenerationPipeline is the summarization recipe with another key."""
    pipe = pipeline("text2text-generation", model=m2m100_path)
    summarize = pipeline("summarization", model=m2m100_path)
    out = pipe(TEXTS[:2], return_tensors=True, **MAX_NEW)
    assert [list(r) for r in out] == [["generated_token_ids"]] * 2
    assert [r["generated_token_ids"].tolist() for r in out] == \
        [r["summary_token_ids"].tolist() for r in summarize(TEXTS[:2], return_tensors=True, **MAX_NEW)]
    assert pipe(TEXTS[0], **MAX_NEW) == [{"generated_text": summarize(TEXTS[0], **MAX_NEW)[0]["summary_text"]}]


def test_pegasus_summarization(checkpoint, tmp_path):
    """Pegasus ships tokenizer.json: the summarization pipeline runs it like BART."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    path = tmp_path / "pegasus"
    shutil.copytree(checkpoint("pegasus"), path)
    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{f"w{i}": i for i in range(3, 600)}}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.save(str(path / "tokenizer.json"))
    (path / "tokenizer_config.json").write_text(json.dumps({"eos_token": "</s>", "pad_token": "<pad>",
                                                            "unk_token": "<unk>", "model_max_length": 64}))
    pipe = pipeline("summarization", model=path)
    ids = AutoTokenizer.from_pretrained(path)("w5 w6 w7 w8")["input_ids"]
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    expected = hf.generate(torch.tensor([ids]), **MAX_NEW)[0]
    assert pipe("w5 w6 w7 w8", return_tensors=True, **MAX_NEW)[0]["summary_token_ids"].tolist() == expected.tolist()


def test_unknown_task_names_the_tasks():
    with pytest.raises(ValueError, match="'translation', 'translation_XX_to_YY', 'text2text-generation'"):
        pipeline("question-answering", model="x")


def test_cli_translate(m2m100_path):
    root = Path(__file__).resolve().parents[1]
    run = subprocess.run([sys.executable, "-m", "seq2seq_kit", "translate", "--model", str(m2m100_path),
                          "--src-lang", "de", "--tgt-lang", "fr", "--max-new-tokens", "8", TEXTS[0]],
                         capture_output=True, text=True, env={"PYTHONPATH": str(root), "PATH": ""}, timeout=300)
    assert run.returncode == 0, run.stderr
    expected = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr")(TEXTS[0], **MAX_NEW)
    assert run.stdout.strip() == expected[0]["translation_text"]


def test_cli_translate_stream_prints_the_greedy_translation(marian_path, capsys):
    """--stream prints the translation as it is generated: what the plain command prints for --num-beams 1."""
    from seq2seq_kit.cli import main

    argv = ["translate", "--model", str(marian_path), "--tgt-lang", "fra", "--max-new-tokens", "8", TEXTS[0]]
    assert main([*argv, "--stream"]) == 0
    streamed = capsys.readouterr().out
    assert main([*argv, "--num-beams", "1"]) == 0
    assert streamed == capsys.readouterr().out and streamed.strip()


def test_cli_stream_decodes_as_the_pipeline_whatever_the_tokenizers_clean_up(marian_path, tmp_path, capsys):
    """A tokenizer whose config turns clean-up on (a non-BPE one: its decode would apply it): --stream's printer
    still decodes as the pipeline does (no clean-up), so it prints what the command prints without --stream; an id
    past the tokenizer (a model vocabulary larger than its tokenizer's, as NLLB-200's) is skipped, not refused."""
    import types

    from seq2seq_kit.cli import _streamer

    root = tmp_path / "marian"
    shutil.copytree(marian_path, root)
    config = root / "tokenizer_config.json"
    config.write_text(json.dumps({**(json.loads(config.read_text()) if config.exists() else {}),
                                  "clean_up_tokenization_spaces": True}))
    pipe = pipeline("translation", model=root, tgt_lang="fra")
    assert pipe.tokenizer.clean_up_tokenization_spaces
    streamer = _streamer(types.SimpleNamespace(stream=True), pipe)["streamer"]
    ids = [pipe.model.config.decoder_start_token_id, *pipe.tokenizer("Башня , примерно как 81 - этажное здание .")[
        "input_ids"]]
    ids.insert(3, pipe.model.config.vocab_size + 5)
    with pytest.raises(ValueError, match="id"):
        pipe.tokenizer.decode(ids)                                  # the tokenizer's own decode refuses it
    streamer.put(torch.tensor([ids[:1]]))                           # generate's calls: the start [1, 1], then
    for token in ids[1:]:                                           # each step's token [1]
        streamer.put(torch.tensor([token]))
    streamer.end()
    assert capsys.readouterr().out == pipe.text(ids) + "\n"
    assert pipe.text(ids) == "Башня , примерно как 81 - этажное здание ."       # as printed without --stream


def test_cli_translate_takes_generation_options(marian_path, capsys):
    """translate takes summarize's generation options: the translation is the pipeline's with those settings (a
    seeded sampling run, and a beam search with its penalties)."""
    from seq2seq_kit.cli import main

    pipe = pipeline("translation", model=marian_path, tgt_lang="fra")
    argv = ["translate", "--model", str(marian_path), "--tgt-lang", "fra", "--max-new-tokens", "8", TEXTS[0]]
    runs = [(["--do-sample", "--temperature", "1.5", "--top-k", "30", "--seed", "3"],
             dict(do_sample=True, temperature=1.5, top_k=30, generator=torch.Generator().manual_seed(3))),
            (["--num-beams", "3", "--length-penalty", "0.5", "--repetition-penalty", "1.2", "--no-repeat-ngram-size",
              "2", "--min-new-tokens", "4"],
             dict(num_beams=3, length_penalty=0.5, repetition_penalty=1.2, no_repeat_ngram_size=2, min_new_tokens=4))]
    for options, settings in runs:
        assert main([*argv, *options]) == 0
        assert capsys.readouterr().out == pipe(TEXTS[0], max_new_tokens=8, **settings)[0]["translation_text"] + "\n"


def test_cli_translate_takes_the_checkpoints_task_without_a_warning(mbart_path, tmp_path, capsys):
    """facebook/mbart-large-en-ro names its pair in task_specific_params: `translate` runs that task, as
    pipeline("translation") does, without the library's warning whose advice (pass the task) has no flag."""
    from seq2seq_kit.cli import main

    root = Path(shutil.copytree(mbart_path, tmp_path / "mbart-en-ro"))
    config = json.loads((root / "config.json").read_text())
    config["task_specific_params"] = {"translation_en_to_ro": {"num_beams": 2}}
    (root / "config.json").write_text(json.dumps(config))
    assert main(["translate", "--model", str(root), "--src-lang", "en_XX", "--max-new-tokens", "8", TEXTS[0]]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    expected = pipeline("translation_en_to_ro", model=root, src_lang="en_XX")(TEXTS[0], **MAX_NEW)
    assert out == expected[0]["translation_text"] + "\n"


def test_cli_translate_truncation_and_tokenize_on_a_translation_model(m2m100_path, capsys):
    """translate takes --truncation / --no-truncation, as its long-input warning advises; tokenize --model reads
    a translation family's files (AutoTokenizer)."""
    from seq2seq_kit.cli import main

    common = ["translate", "--model", str(m2m100_path), "--src-lang", "de", "--tgt-lang", "fr", "--max-new-tokens",
              "4", " ".join([TEXTS[0]] * 200)]
    assert main([*common, "--no-truncation"]) == 1
    assert "--truncation" in capsys.readouterr().err
    assert main([*common, "--truncation"]) == 0
    assert "truncated" not in capsys.readouterr().err                  # silently, as asked
    assert main(common) == 0
    assert "truncated" in capsys.readouterr().err                      # the default warns
    assert main(["tokenize", "--model", str(m2m100_path), "--json", TEXTS[0]]) == 0
    assert json.loads(capsys.readouterr().out)["decode"]


@pytest.mark.parametrize("fixture, langs", [("marian_path", dict(tgt_lang="fra")),
                                            ("marian_separate_path", {}),
                                            ("m2m100_path", dict(src_lang="de", tgt_lang="fr"))])
def test_cli_parity_on_translation_models(request, capsys, fixture, langs):
    """`seq2seq-kit parity` loads both sides through the Auto classes; the languages reach both tokenizers and
    both runs (M2M100: the target language forced first; Marian: its >>fra<< token before the text)."""
    from seq2seq_kit.cli import main
    from seq2seq_kit.parity import compare

    path = request.getfixturevalue(fixture)
    options = [a for k, v in langs.items() for a in (f"--{k.replace('_', '-')}", v)]
    assert main(["parity", str(path), "--max-length", "10", "--text", TEXTS[0], *options]) == 0
    out = capsys.readouterr().out
    assert "verdict: PARITY" in out and out.count("match") == 4, out
    report = compare(path, [TEXTS[1]], max_length=10, **langs)
    tok = AutoTokenizer.from_pretrained(path)
    if fixture == "m2m100_path":
        assert report.checks[1].ours[1] == tok.get_lang_id("fr")          # greedy: the target language first
    if fixture == "marian_path":
        assert report.checks[0].ours[0] == tok.get_lang_id("fra")         # the source starts with >>fra<<


def m2m100_reference(path, src_lang, tgt_lang, texts=TEXTS, **kwargs) -> list[list[int]]:
    theirs = transformers.M2M100Tokenizer(str(path / "vocab.json"), str(path / "sentencepiece.bpe.model"),
                                          src_lang=src_lang)
    return reference(path, texts, theirs, forced_bos=theirs.get_lang_id(tgt_lang), **kwargs)


def test_translation_requires_a_source_language(m2m100_path, mbart_path):
    """As 4.x's _build_translation_inputs: no src_lang is an error naming it, not English, when the pipeline
    translates (the languages may come with the call, as in 4.x); a tokenizer given its source by the user
    (from_pretrained's src_lang) lends it; tokenizer_config.json's src_lang does not count (transformers'
    save_pretrained writes its class default there: mbart_path's "en_XX")."""
    with pytest.raises(ValueError, match="M2M100Tokenizer needs src_lang.*af, am"):
        pipeline("translation", model=m2m100_path, tgt_lang="fr")(TEXTS, **MAX_NEW)
    with pytest.raises(ValueError, match="M2M100Tokenizer needs tgt_lang"):
        pipeline("translation", model=m2m100_path, src_lang="de")(TEXTS, **MAX_NEW)
    with pytest.raises(ValueError, match="MBartTokenizer needs src_lang.*ar_AR"):
        pipeline("translation", model=mbart_path)(TEXTS, **MAX_NEW)
    languages_in_the_call = pipeline("translation", model=m2m100_path)      # 4.x: languages with the call
    assert_records(languages_in_the_call, TEXTS, m2m100_reference(m2m100_path, "de", "fr", **MAX_NEW), src_lang="de",
                   tgt_lang="fr", **MAX_NEW)
    tok = AutoTokenizer.from_pretrained(m2m100_path, src_lang="de")
    expected = m2m100_reference(m2m100_path, "de", "fr", **MAX_NEW)
    assert_records(pipeline("translation", model=m2m100_path, tokenizer=tok, tgt_lang="fr"), TEXTS, expected,
                   **MAX_NEW)
    both = AutoTokenizer.from_pretrained(m2m100_path, src_lang="de", tgt_lang="fr")     # the target lent too
    assert_records(pipeline("translation", model=m2m100_path, tokenizer=both), TEXTS, expected, **MAX_NEW)
    model = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr").model
    unset = TranslationPipeline(model, AutoTokenizer.from_pretrained(m2m100_path), tgt_lang="fr")   # a server's
    with pytest.raises(ValueError, match="needs src_lang"):
        unset(TEXTS, **MAX_NEW)
    with pytest.raises(ValueError, match="needs src_lang"):
        unset.preprocess(TEXTS)
    assert_records(unset, TEXTS, expected, src_lang="de", **MAX_NEW)


def test_call_languages_apply_to_that_call_only(m2m100_path):
    """4.x's call arguments: src_lang / tgt_lang of one call change neither the next call nor the pipeline nor its
    tokenizer (the pipeline's own languages are its defaults)."""
    pipe = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr")
    de_fr, ru_en = (m2m100_reference(m2m100_path, s, t, **MAX_NEW) for s, t in (("de", "fr"), ("ru", "en")))
    assert_records(pipe, TEXTS, ru_en, src_lang="ru", tgt_lang="en", **MAX_NEW)
    assert_records(pipe, TEXTS, de_fr, **MAX_NEW)
    assert (pipe.src_lang, pipe.tgt_lang, pipe.tokenizer.src_lang) == ("de", "fr", "en")
    assert pipe.generate_defaults["forced_bos_token_id"] == pipe.tokenizer.get_lang_id("fr")
    assert pipe.for_languages(tgt_lang="en").preprocess(TEXTS).rows == pipe.preprocess(TEXTS).rows
    given = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr", **MAX_NEW)  # 4.x: settings too
    assert_records(given, TEXTS, de_fr)
    assert_records(given, TEXTS, ru_en, src_lang="ru", tgt_lang="en")          # kept under the call's languages


def test_threads_translate_with_their_own_languages(m2m100_path):
    """Threads calling one pipeline with different targets each get their own translation, token for token (a
    source per call is tests/test_hostile_tokenizer.py's encode_source across threads)."""
    import threading

    pipe = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr")
    langs = [("de", "fr"), ("de", "ru"), ("de", "en"), ("de", "de")]
    gen = dict(max_new_tokens=2)
    expected = {lang: m2m100_reference(m2m100_path, *lang, TEXTS[:1], **gen)[0] for lang in langs}
    wrong, barrier = [], threading.Barrier(len(langs))

    def translate(src: str, tgt: str):
        barrier.wait()
        for _ in range(25):
            try:
                out = pipe(TEXTS[0], src_lang=src, tgt_lang=tgt, return_tensors=True, **gen)[0]
            except Exception as e:   # noqa: BLE001 - reported by the test's thread
                wrong.append(e)
                return
            if out["translation_token_ids"].tolist() != expected[src, tgt]:
                wrong.append((src, tgt))

    threads = [threading.Thread(target=translate, args=lang, daemon=True) for lang in langs]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "threads stuck: one changed the tokenizer under another"
    assert wrong == []


def test_marian_refuses_a_source_language(marian_path):
    with pytest.raises(ValueError, match="src_lang='qqq': Marian models have no source language code"):
        pipeline("translation", model=marian_path, src_lang="qqq", tgt_lang="fra")
    pipe = pipeline("translation", model=marian_path, tgt_lang="fra")
    with pytest.raises(ValueError, match="Marian models have no source language code"):
        pipe(TEXTS[0], src_lang="en", **MAX_NEW)


def test_an_empty_language_code_is_refused_not_taken_for_none(mbart_path, marian_path, checkpoint):
    """"" is a code no tokenizer knows (the server refuses it as such): a call's "" fell back to the pipeline's
    languages, and a model without codes took it silently."""
    with pytest.raises(ValueError, match="unknown language code ''"):
        pipeline("translation", model=mbart_path, src_lang="en_XX")(TEXTS[0], tgt_lang="", **MAX_NEW)
    with pytest.raises(ValueError, match="src_lang='': Marian models have no source language code"):
        pipeline("translation", model=marian_path, tgt_lang="fra")(TEXTS[0], src_lang="", **MAX_NEW)
    with pytest.raises(ValueError, match="no language codes"):
        pipeline("translation", model=checkpoint("tiny"))(TEXTS[0], tgt_lang="", **MAX_NEW)
    # the tokenizer's src_lang="" too (it became the default source, marked as the user's; Marian: KeyError)
    with pytest.raises(ValueError, match="unknown language code ''"):
        AutoTokenizer.from_pretrained(mbart_path, src_lang="")
    with pytest.raises(ValueError, match="Marian models have no source language code"):
        AutoTokenizer.from_pretrained(marian_path, src_lang="")


def test_languages_and_tokenizers_of_the_wrong_type_are_named(m2m100_path):
    with pytest.raises(TypeError, match="tgt_lang must be a language code, a str such as 'fr'.*got int 5"):
        pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang=5)
    pipe = pipeline("translation", model=m2m100_path, src_lang="de", tgt_lang="fr")
    with pytest.raises(TypeError, match="src_lang must be a language code"):
        pipe(TEXTS[0], src_lang=["de"])
    theirs = transformers.M2M100Tokenizer(str(m2m100_path / "vocab.json"), str(m2m100_path / "sentencepiece.bpe.model"))
    with pytest.raises(TypeError, match="got a transformers M2M100Tokenizer; pass its path, or a seq2seq_kit "
                                        "Tokenizer"):
        pipeline("translation", model=m2m100_path, tokenizer=theirs, src_lang="de", tgt_lang="fr")


def test_map_reduce_refuses_a_tokenizer_without_offsets(m2m100_path):
    """M2M100's pieces carry no character offsets of the text (nor do transformers' Python tokenizer's), so a
    summarization pipeline on one cannot cut a document for map-reduce: a clear refusal, not garbled chunks."""
    pipe = pipeline("summarization", model=m2m100_path)
    assert pipe(TEXTS[0], max_new_tokens=4)                              # truncate: fine
    with pytest.raises(ValueError, match=r"map-reduce cuts a document at its tokens' character offsets, which this "
                                         r"tokenizer \(M2M100Tokenizer\) does not give; summarize it with "
                                         r"strategy='truncate'"):
        pipe(TEXTS[0], strategy="map_reduce", max_new_tokens=4)


def test_a_marian_tokenizers_target_is_the_pipelines(marian_path):
    """A multi-target Marian tokenizer given tgt_lang (from_pretrained's, or set) lends it to a pipeline given that
    tokenizer, as a source is lent: its >>fra<< token goes before each text. It was kept, checked and never applied:
    the model translated with no target code, silently. A call's or the pipeline's own target wins."""
    tok = AutoTokenizer.from_pretrained(marian_path, tgt_lang="fra")
    want = pipeline("translation", model=marian_path, tgt_lang="fra")
    lent = pipeline("translation", model=marian_path, tokenizer=tok)
    code = tok.convert_tokens_to_ids(">>fra<<")
    assert lent.tgt_lang == "fra" and lent.preprocess(TEXTS).rows == want.preprocess(TEXTS).rows
    assert all(row[0] == code for row in lent.preprocess(TEXTS).rows)
    assert lent(TEXTS, **MAX_NEW) == want(TEXTS, **MAX_NEW)
    assert pipeline("translation", model=marian_path, tokenizer=tok, tgt_lang="deu").tgt_lang == "deu"
    plain = AutoTokenizer.from_pretrained(marian_path)
    assert pipeline("translation", model=marian_path, tokenizer=plain).tgt_lang is None
    plain.tgt_lang = "deu"
    assert pipeline("translation", model=marian_path, tokenizer=plain).tgt_lang == "deu"
