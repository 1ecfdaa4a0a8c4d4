"""README's examples: each ```python block run as written, and each seq2seq-kit command line of its shell blocks
parsed by the CLI.

A Python block runs in the namespace of the blocks before it that it builds on (a "session"), against small random
checkpoints standing in for the Hub ids and paths it names (an offline Hub cache holds them under those ids).
Where a block's comment shows a value the random weights do not decide (a dtype, the tokenizer's doctest, the chunk
spans of the map-reduce example), it is compared. Every block is either in a session or in NOT_RUN with the reason,
so a new README example is run or left out on purpose."""

from __future__ import annotations

import ast
import doctest
import importlib.util
import json
import re
import shlex
import shutil
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints import DISTILBART_CONFIG_EXTRA, MARIAN, MBART50, NLLB, PEGASUS, TINY, Spec, build
from helpers import read_jsonl, write_jsonl
from hub_cache import read_dir, write_cache

# the translation families' stand-ins train SentencePiece models (tests/test_family_tokenizers.py); without the
# library their tests skip, the others run
SENTENCEPIECE = importlib.util.find_spec("sentencepiece") is not None
needs_sentencepiece = pytest.mark.skipif(not SENTENCEPIECE, reason="the family stand-ins need sentencepiece")
if SENTENCEPIECE:
    from test_families_pipeline import m2m100_path, mbart_path  # noqa: F401 (fixtures)
    from test_family_tokenizers import CORPUS, fairseq_vocab, nllb_dir, pegasus_dir, train  # noqa: F401 (fixtures)

REPO_ROOT = Path(__file__).resolve().parents[1]
README = (REPO_ROOT / "README.md").read_text(encoding="utf-8")
BLOCKS = re.findall(r"```python\n(.*?)```", README, re.S)
# every `seq2seq-kit ...` command of the shell blocks, continuation lines joined, comments dropped
COMMANDS = [shlex.split(line, comments=True)
            for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, re.S)
            for line in block.replace("\\\n", " ").splitlines() if "seq2seq-kit " in line]
# the JSON body of every curl example: (route, body)
BODIES = [(re.search(r"/(\w+) ", line).group(1), json.loads(line.split(" -d ", 1)[1].strip().strip("'")))
          for block in re.findall(r"```(?:bash|sh)\n(.*?)```", README, re.S)
          for line in re.sub(r"\\\n\s*", "", block).splitlines() if line.strip().startswith("curl ")]

# Each block is named by a line of it (a name matching more or fewer than one block fails the test).
MODEL = ['tok = Tokenizer.from_pretrained("path/to/checkpoint")', "from seq2seq_kit import TextStreamer",
         'stop_strings=[".", "!"]', "logprobs = model.compute_transition_scores", "prompt_lookup_num_tokens=5)",
         "assistant_model=draft)", "diversity_penalty=1.0, num_return_sequences=8",
         "from seq2seq_kit import DisjunctiveConstraint", "from seq2seq_kit import WatermarkDetector",
         "encoder_repetition_penalty=1.2,", "penalty_alpha=0.6, top_k=4,",
         "cities = [tok.encode", "prefix = torch.tensor([[tok.bos_token_id]", "token_scores = steps[rows",
         "hidden = model.encode(", 'model.to_empty(device="cpu")']
PIPELINE = ['pipe_kor = pipeline("summarization"', "pipe(texts, batch_size=1, num_beams=4)",
            "from benchmarks.texts import ENGLISH", "with pipe.engine(max_rows=32) as engine:",
            "request = engine.submit(rows[0], decoder_input_ids=prefix",
            "from seq2seq_kit import TextIteratorStreamer", 'for records in pipe((line for line in open("docs.txt")']
AUTO = ['AutoModelForSeq2SeqLM.from_pretrained("sshleifer/distilbart-cnn-12-6", dtype="bfloat16")']
DOCTEST = ['>>> tok.tokenize("혼자 공부하는 머신러닝 딥러닝")', ">>> batch = tok.pad(rows"]
MARIAN_ALIGN = ['mt = AutoModelForSeq2SeqLM.from_pretrained("Helsinki-NLP/opus-mt-en-de")',
                'ref = tok(text_target=["Die Katze', 'for word in ("Vertrag", "Abkommen")]']
FAMILIES = ['tok = AutoTokenizer.from_pretrained("facebook/nllb-200-distilled-600M"']
TRANSLATE_CORPUS = ['result = translate_corpus("docs.jsonl"']
TARGETS = ['tok = AutoTokenizer.from_pretrained("facebook/mbart-large-50-many-to-many-mmt"']
SESSIONS = MODEL + PIPELINE + AUTO + DOCTEST + MARIAN_ALIGN + FAMILIES + TRANSLATE_CORPUS + TARGETS
NOT_RUN = {
    'client = InferenceClient(model="http://127.0.0.1:8000/summarize")': "a running server: test_server",
    'engine="ray", ray_address="auto", actors=8)': "a Ray cluster: test_corpus and test_corpus_ray",
}
SAMPLE_TEXT = ("During the 1905–06 English football season, New Brompton F.C. competed in the Southern League "
               "Division One. It was the club's 12th season in which the club competed.")
SAMPLE_TEXT_KOR = "1896년 하계 올림픽은 고대 올림픽 대회 이후 열린 첫 근대 올림픽 대회로 아테네에서 개최되었다."


def block(name: str) -> str:
    found = [b for b in BLOCKS if name in b]
    assert len(found) == 1, f"{name!r} names {len(found)} README blocks"
    return found[0]


def run(names: list[str], namespace: dict) -> dict:
    for name in names:
        exec(compile(block(name), f"README block {name!r}", "exec"), namespace)
    return namespace


def test_every_block_is_run_or_left_out_on_purpose():
    named = [block(name) for name in SESSIONS + list(NOT_RUN)]
    assert sorted(named) == sorted(BLOCKS)


@pytest.fixture(scope="module")
def distilbart(tmp_path_factory):
    """sshleifer/distilbart-cnn-12-6's stand-in: its window (1024 positions, which decides map-reduce's chunks)
    and config.json's generation settings, at the tiny model's width (the distilbart-shaped test checkpoint
    generates ~20x slower), EOS raised so that summaries end soon after min_length."""
    spec = Spec({**TINY, "max_position_embeddings": 1024}, config_json_extra=DISTILBART_CONFIG_EXTRA, seed=7)
    path = build(spec, tmp_path_factory.mktemp("distilbart") / "checkpoint")
    state = load_file(path / "model.safetensors")
    state["final_logits_bias"][0, spec.config["eos_token_id"]] += 7.0
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture
def offline_hub(tmp_path, monkeypatch, request):
    """An empty offline Hub cache, the working directory beside it; -> put(repo_id, ...): each id's stand-in
    (the fixture STAND_INS names) placed under it."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    monkeypatch.chdir(tmp_path)

    def put(*repo_ids: str) -> None:
        for repo_id in repo_ids:
            write_cache(tmp_path / "hub", repo_id, {"main": read_dir(request.getfixturevalue(STAND_INS[repo_id]))})

    return put


@pytest.fixture
def hub(offline_hub):
    """An offline Hub cache holding the README's Hub ids: stand-ins for distilbart and the KoBART summary model."""
    offline_hub("sshleifer/distilbart-cnn-12-6", "EbanLee/kobart-summary-v3")


@pytest.fixture
def kobart(checkpoint):
    return checkpoint("kobart")


def with_tokenizer(root: Path, tokenizer_dir: Path, spec: Spec) -> Path:
    """The model of `spec` (its vocabulary the size of the tokenizer saved in tokenizer_dir, so that every id it
    generates decodes) saved into root beside that tokenizer's files."""
    from seq2seq_kit import AutoTokenizer

    size = len(AutoTokenizer.from_pretrained(tokenizer_dir))
    for f in tokenizer_dir.iterdir():
        (root / f.name).write_bytes(f.read_bytes())
    return build(Spec({**spec.config, "vocab_size": size}, tokenizer=None, model_type=spec.model_type,
                      seed=spec.seed, init_std=0.1, config_json_extra=spec.config_json_extra), root)


@pytest.fixture(scope="module")
def opus_mt_en_de(tmp_path_factory):
    """Helsinki-NLP/opus-mt-en-de's stand-in: a single-target Marian model (no >>xx<< codes), source.spm,
    target.spm and vocab.json trained on tests/test_family_tokenizers.py's corpus, and its config.json's window and
    generation keys (512 positions, max_length 512, num_beams 4: generate runs beam search)."""
    root = tmp_path_factory.mktemp("opus-mt-en-de")
    train(root / "source.spm", "unigram")
    shutil.copy(root / "source.spm", root / "target.spm")
    vocab = fairseq_vocab(root / "source.spm", {"</s>": 0, "<unk>": 1})
    vocab["<pad>"] = pad = len(vocab)
    (root / "vocab.json").write_text(json.dumps(vocab))
    config = dict(MARIAN, vocab_size=len(vocab), pad_token_id=pad, decoder_start_token_id=pad,
                  max_position_embeddings=512)
    return build(Spec(config, tokenizer=None, model_type="marian", seed=31, init_std=0.1,
                      config_json_extra=dict(bad_words_ids=[[pad]], num_beams=4, max_length=512)), root)


@pytest.fixture(scope="module")
def nllb_200(tmp_path_factory, nllb_dir):
    """facebook/nllb-200-distilled-600M's stand-in: test_family_tokenizers' NLLB tokenizer.json (202 codes)."""
    return with_tokenizer(tmp_path_factory.mktemp("nllb-200"), nllb_dir, Spec(NLLB, model_type="m2m_100", seed=32))


@pytest.fixture(scope="module")
def mbart_50(tmp_path_factory):
    """facebook/mbart-large-50-many-to-many-mmt's stand-in: MBart50Tokenizer's tokenizer.json (52 codes), as
    test_family_tokenizers builds it."""
    from transformers import MBart50Tokenizer

    spm_dir = tmp_path_factory.mktemp("mbart-50-spm")
    train(spm_dir / "sentencepiece.bpe.model", "unigram")
    (spm_dir / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MBart50Tokenizer"}))
    tokenizer = tmp_path_factory.mktemp("mbart-50-tokenizer")
    MBart50Tokenizer.from_pretrained(spm_dir).save_pretrained(tokenizer)
    return with_tokenizer(tmp_path_factory.mktemp("mbart-50"), tokenizer, Spec(MBART50, model_type="mbart", seed=33))


@pytest.fixture(scope="module")
def pegasus_xsum(tmp_path_factory, pegasus_dir):
    """google/pegasus-xsum's stand-in: test_family_tokenizers' PegasusTokenizer tokenizer.json."""
    return with_tokenizer(tmp_path_factory.mktemp("pegasus-xsum"), pegasus_dir,
                          Spec(PEGASUS, model_type="pegasus", seed=34))


# Hub id -> the fixture of its stand-in
STAND_INS = {"sshleifer/distilbart-cnn-12-6": "distilbart", "EbanLee/kobart-summary-v3": "kobart",
             "Helsinki-NLP/opus-mt-en-de": "opus_mt_en_de", "facebook/nllb-200-distilled-600M": "nllb_200",
             "facebook/m2m100_418M": "m2m100_path", "facebook/mbart-large-50-many-to-many-mmt": "mbart_50",
             "facebook/mbart-large-en-ro": "mbart_path", "google/pegasus-xsum": "pegasus_xsum"}


def test_model_examples(tiny_eos_path, tmp_path, monkeypatch, capsys):
    """The generate examples, one after another on "path/to/checkpoint" (the tiny checkpoint, EOS raised)."""
    (tmp_path / "path" / "to").mkdir(parents=True)
    (tmp_path / "path" / "to" / "checkpoint").symlink_to(tiny_eos_path)
    monkeypatch.chdir(tmp_path)
    ns = run(MODEL, {})
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("[") and len(ast.literal_eval(printed[0])) == 2        # two summaries
    assert ns["logprobs"].shape[0] == 2 and ns["hidden"].shape[:2] == ns["inputs"]["input_ids"].shape
    prefix = ns["prefix"][0].tolist()           # the comment: [decoder start, <s>, The, report, says, ...]
    assert ns["ids"][0, :len(prefix) + 1].tolist() == [ns["model"].config.decoder_start_token_id] + prefix
    assert ns["token_scores"].shape == ns["out"].beam_indices.shape
    assert ns["diverse"].shape[0] == 8 * ns["inputs"]["input_ids"].shape[0]          # every group's hypotheses
    tuesday = ns["words"](" Tuesday")[0]
    assert all(any(row[i:i + len(tuesday)] == tuesday for i in range(len(row))) for row in ns["kept"].tolist())
    assert torch.equal(ns["kept"], ns["same"])
    assert ns["fluent"].shape[0] == ns["inputs"]["input_ids"].shape[0]
    assert ns["found"].z_score.shape == (ns["inputs"]["input_ids"].shape[0],)


def test_pipeline_and_engine_examples(hub, capsys, monkeypatch):
    """pipeline() on the notebook's Hub ids, static batches, map-reduce (its chunk spans are the comment's: the
    tokenizer decides them), and the engine. Run from the repository root's level: benchmarks.texts imports."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    for name in ("a", "b", "c"):
        Path(f"{name}.txt").write_text(f"Article {name}. " + SAMPLE_TEXT, encoding="utf-8")
    Path("docs.txt").write_text(f"{SAMPLE_TEXT}\n\nArticle b. {SAMPLE_TEXT}\n", encoding="utf-8")
    code = block(PIPELINE[0]).replace("device=0)", 'device="cpu")' if not torch.cuda.is_available() else "device=0)")
    ns = {"sample_text": SAMPLE_TEXT, "sample_text_kor": SAMPLE_TEXT_KOR, "texts": [SAMPLE_TEXT, SAMPLE_TEXT_KOR]}
    exec(compile(code, "README block pipeline()", "exec"), ns)
    run(PIPELINE[1:], ns)
    code = block(PIPELINE[2])
    shown = re.search(r"\n# (\[\(.*?\)\])", code, re.S).group(1)         # the comment's list, over two lines
    assert [(c["span"], c["text"][:30]) for c in ns["out"][0]["chunks"]] == \
        ast.literal_eval(re.sub(r"\n#\s*", " ", shown))
    lengths = [len(row) for row in ns["pipe"].preprocess([c["text"] for c in ns["out"][0]["chunks"]]).rows]
    assert re.search(r"# (\d+), (\d+) and (\d+) tokens", code).groups() == tuple(map(str, lengths))
    assert len(ns["summaries"]) == 3 and all(isinstance(s, str) for s in ns["summaries"])
    assert ns["records"] == [ns["pipe"](f"Article b. {SAMPLE_TEXT}\n", batch_size=8)[0]]       # the last line's
    assert capsys.readouterr().out.strip()


def test_auto_model_example(hub):
    ns = run(AUTO, {})
    assert ns["model"].config.dtype == torch.bfloat16 and ns["model"].config.to_dict()["dtype"] == "bfloat16"
    assert "torch.bfloat16" in block(AUTO[0]) and "'bfloat16'" in block(AUTO[0])


@pytest.mark.parametrize("name, examples", list(zip(DOCTEST, (8, 5))))
def test_tokenizer_doctest(monkeypatch, name, examples):
    """The KoBART tokenizer sessions (its maps; pad), output for output (the fixture's real tokenizer)."""
    monkeypatch.chdir(REPO_ROOT)
    test = doctest.DocTestParser().get_doctest(block(name), {"Tokenizer": __import__("seq2seq_kit").Tokenizer},
                                               "README", "README.md", 0)
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
    assert result.failed == 0 and result.attempted == examples


@needs_sentencepiece
def test_marian_alignment_examples(offline_hub, capsys):
    """Which source token each target token attends to: over generate's (greedy) steps, then over a reference
    translation (forced alignment): one line per target token, `align` [T - 1, S] and [T, S] as the comments say;
    then a translation forced to hold one of two terms."""
    offline_hub("Helsinki-NLP/opus-mt-en-de")
    ns = run(MARIAN_ALIGN[:1], {})
    printed = capsys.readouterr().out.splitlines()
    sequences, source = ns["out"].sequences, ns["src"]["input_ids"]
    assert len(printed) == sequences.shape[1] - 1 and all(" <- " in line for line in printed)
    assert ns["mt"].generation_config.num_beams == 4 and len(ns["out"].cross_attentions[0][-1]) == 1   # greedy
    assert ns["align"].shape == (sequences.shape[1] - 1, source.shape[1])               # [T - 1, S]
    assert ns["source"][-1] == "</s>" and ns["tok"].pad_token_id == ns["mt"].config.decoder_start_token_id
    run(MARIAN_ALIGN[1:2], ns)
    printed = capsys.readouterr().out.splitlines()
    ref = ns["ref"]
    assert ns["dec"][0, 0] == ns["mt"].config.decoder_start_token_id and ns["dec"].shape == ref.shape
    assert ns["align"].shape == (ref.shape[1], source.shape[1])                       # [T, S]
    assert len(printed) == ref.shape[1] and all(" <- " in line for line in printed)
    assert ns["tok"].convert_ids_to_tokens(ref[0])[-1] == "</s>"
    run(MARIAN_ALIGN[2:], ns)                   # terminology (random weights: whether the terms fit is the
    assert len(ast.literal_eval(capsys.readouterr().out)) == 1      # model's; tests/test_constrained_beam_search.py)


@needs_sentencepiece
def test_families_example(offline_hub, capsys):
    """NLLB's generate with its target as forced_bos_token_id, and each family's pipeline on the Hub ids named."""
    from seq2seq_kit.summarization import SummarizationPipeline
    from seq2seq_kit.translation import TranslationPipeline

    offline_hub("facebook/nllb-200-distilled-600M", "Helsinki-NLP/opus-mt-en-de", "facebook/m2m100_418M",
                "facebook/mbart-large-50-many-to-many-mmt", "facebook/mbart-large-en-ro", "google/pegasus-xsum")
    ns = run(FAMILIES, {})
    printed = capsys.readouterr().out.splitlines()
    tok = ns["tok"]
    assert isinstance(ast.literal_eval(printed[0]), list) and len(ast.literal_eval(printed[0])) == 1
    tokens = tok.convert_ids_to_tokens(ns["inputs"]["input_ids"][0])
    assert tokens[0] == "eng_Latn" and tokens[-1] == "</s>"                            # eng_Latn text </s>
    assert ns["ids"][0, :2].tolist() == [ns["model"].config.decoder_start_token_id,
                                         tok.convert_tokens_to_ids("fra_Latn")]
    assert ns["model"].config.dtype == torch.float32
    pipes = {name: ns[name] for name in ("en_de", "m2m", "mbart50", "en_ro")}
    assert all(isinstance(p, TranslationPipeline) for p in pipes.values())
    assert isinstance(ns["pegasus"], SummarizationPipeline) and not isinstance(ns["pegasus"], TranslationPipeline)
    assert (ns["m2m"].src_lang, ns["m2m"].tgt_lang) == ("en", "fr")
    assert (ns["mbart50"].src_lang, ns["mbart50"].tgt_lang) == ("en_XX", "de_DE")    # the call's: that call only
    assert (ns["en_ro"].src_lang, ns["en_ro"].tgt_lang) == ("en_XX", None)
    short = dict(max_new_tokens=4)
    for name, pipe in pipes.items():
        out = pipe("The tower is 324 metres tall.", **short)
        assert list(map(list, map(dict.keys, out))) == [["translation_text"]], name
        assert isinstance(out[0]["translation_text"], str)
    assert list(ns["pegasus"]("The tower is 324 metres tall.", **short)[0]) == ["summary_text"]
    first = {name: pipe("The tower is 324 metres tall.", return_tensors=True, **short)[0]["translation_token_ids"][:2]
             for name, pipe in (("en_ro", ns["en_ro"]), ("mbart50", ns["mbart50"]))}
    assert tok_of(ns["en_ro"], first["en_ro"][0]) == "ro_RO"                      # the checkpoint's target
    assert tok_of(ns["mbart50"], first["mbart50"][1]) == "de_DE"
    call = ns["mbart50"]("Guten Tag", src_lang="de_DE", tgt_lang="fr_XX", return_tensors=True, **short)
    assert tok_of(ns["mbart50"], call[0]["translation_token_ids"][1]) == "fr_XX"


def tok_of(pipe, token_id) -> str:
    return pipe.tokenizer.convert_ids_to_tokens(int(token_id))


@needs_sentencepiece
def test_translate_corpus_example(offline_hub):
    """An M2M100 corpus job on docs.jsonl: one record per document, the translate job's keys."""
    offline_hub("facebook/m2m100_418M")
    docs = [{"id": f"doc{i}", "text": text} for i, text in enumerate(CORPUS[:3])]
    write_jsonl(Path("docs.jsonl"), docs)
    ns = run(TRANSLATE_CORPUS, {})
    records = read_jsonl(Path("fr.jsonl"))
    assert (ns["result"].written, ns["result"].failed, ns["result"].truncated) == (3, 0, 0)
    assert sorted(r["id"] for r in records) == [d["id"] for d in docs]
    assert all(set(r) == {"id", "translation_text", "input_tokens", "output_tokens"} for r in records)
    assert json.loads(Path("fr.jsonl.meta.json").read_text())["job"]["languages"] == {"src_lang": "en",
                                                                                      "tgt_lang": "fr"}


@needs_sentencepiece
def test_target_tokenizer_example(offline_hub):
    """text_target on mBART-50: the comments' language codes first, </s> last, on both sides."""
    offline_hub("facebook/mbart-large-50-many-to-many-mmt")
    code = block(TARGETS[0])
    ns = run(TARGETS, {})
    tok = ns["tok"]
    shown = dict(re.findall(r'^batch\["(\w+)"\]\s+# (\S+ \.\.\. \S+)$', code, re.M))
    assert shown == {"input_ids": "en_XX ... </s>", "labels": "ro_RO ... </s>"}
    for key, comment in shown.items():
        tokens = tok.convert_ids_to_tokens(ns["batch"][key][0])
        assert f"{tokens[0]} ... {tokens[-1]}" == comment and ns["batch"][key].dim() == 2
    alone = eval(code.strip().splitlines()[-1].split("#")[0], ns)                   # the last line's value
    assert tok.convert_ids_to_tokens(alone)[0] == "ro_RO" and alone[-1] == tok.eos_token_id
    assert alone == ns["batch"]["labels"][0].tolist()[:len(alone) - 1] + [tok.eos_token_id]


@pytest.mark.parametrize("argv", [c[c.index("seq2seq-kit") + 1:] for c in COMMANDS], ids=" ".join)
def test_every_cli_example_parses(argv, monkeypatch, capsys):
    """Each command line README shows is one the CLI takes (its flags and values parse; nothing is run: the
    command stops where it would start)."""
    from seq2seq_kit import cli

    class Parsed(Exception):
        pass

    parsed = []
    monkeypatch.setattr(cli, "_check_stdout", lambda args: parsed.append(args) or (_ for _ in ()).throw(Parsed()))
    code = cli.main(argv)
    assert code == 1 and len(parsed) == 1, capsys.readouterr().err
    assert parsed[0].command == argv[0]


@pytest.mark.parametrize("route, body", BODIES, ids=[f"{r}-{i}" for i, (r, _) in enumerate(BODIES)])
def test_every_curl_body_is_a_valid_request(route, body):
    """Each request body README's curl examples send is one the server's schema takes (the HF Inference API shape)."""
    from seq2seq_kit.server import schema

    request = {"summarize": schema.SummarizeRequest, "translate": schema.TranslateRequest}[route]
    assert request.model_validate(body).inputs == body["inputs"]


def test_the_examples_are_found():
    assert len(COMMANDS) >= 20 and len(BODIES) >= 3
