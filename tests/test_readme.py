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
import json
import re
import shlex
from pathlib import Path

import huggingface_hub
import pytest
import torch
from safetensors.torch import load_file, save_file

from checkpoints import DISTILBART_CONFIG_EXTRA, TINY, Spec, build
from hub_cache import read_dir, write_cache

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
MODEL = ['tok = Tokenizer.from_pretrained("path/to/checkpoint")', "class Printer:", 'stop_strings=[".", "!"]',
         "logprobs = model.compute_transition_scores", "encoder_repetition_penalty=1.2,", "cities = [tok.encode",
         "prefix = torch.tensor([[tok.bos_token_id]", "token_scores = steps[rows", "hidden = model.encode(",
         'model.to_empty(device="cpu")']
PIPELINE = ['pipe_kor = pipeline("summarization"', "pipe(texts, batch_size=1, num_beams=4)",
            "from benchmarks.texts import ENGLISH", "with pipe.engine(max_rows=32) as engine:",
            "request = engine.submit(rows[0], decoder_input_ids=prefix"]
AUTO = ['AutoModelForSeq2SeqLM.from_pretrained("sshleifer/distilbart-cnn-12-6", dtype="bfloat16")']
DOCTEST = ['>>> tok = Tokenizer.from_pretrained("tests/fixtures/kobart-tokenizer")']
NOT_RUN = {
    'mt = AutoModelForSeq2SeqLM.from_pretrained("Helsinki-NLP/opus-mt-en-de")': "a Marian checkpoint needs a "
        "SentencePiece tokenizer trained in the test: test_output_attentions and test_families run these calls",
    'ref = tok(text_target=["Die Katze': "the same (Marian): test_forward_outputs",
    'tok = AutoTokenizer.from_pretrained("facebook/nllb-200-distilled-600M"': "the family checkpoints: "
        "test_families and test_families_pipeline",
    'result = translate_corpus("docs.jsonl"': "an M2M100 corpus job: test_corpus_translate",
    'tok = AutoTokenizer.from_pretrained("facebook/mbart-large-50-many-to-many-mmt"': "test_family_tokenizers",
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
    named = [block(name) for name in MODEL + PIPELINE + AUTO + DOCTEST + list(NOT_RUN)]
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
def hub(checkpoint, distilbart, tmp_path, monkeypatch):
    """An offline Hub cache holding the README's Hub ids: stand-ins for distilbart and the KoBART summary model."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    write_cache(tmp_path / "hub", "sshleifer/distilbart-cnn-12-6", {"main": read_dir(distilbart)})
    write_cache(tmp_path / "hub", "EbanLee/kobart-summary-v3", {"main": read_dir(checkpoint("kobart"))})
    monkeypatch.chdir(tmp_path)


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


def test_pipeline_and_engine_examples(hub, capsys, monkeypatch):
    """pipeline() on the notebook's Hub ids, static batches, map-reduce (its chunk spans are the comment's: the
    tokenizer decides them), and the engine. Run from the repository root's level: benchmarks.texts imports."""
    monkeypatch.syspath_prepend(str(REPO_ROOT))
    for name in ("a", "b", "c"):
        Path(f"{name}.txt").write_text(f"Article {name}. " + SAMPLE_TEXT, encoding="utf-8")
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
    assert capsys.readouterr().out.strip()


def test_auto_model_example(hub):
    ns = run(AUTO, {})
    assert ns["model"].config.dtype == torch.bfloat16 and ns["model"].config.to_dict()["dtype"] == "bfloat16"
    assert "torch.bfloat16" in block(AUTO[0]) and "'bfloat16'" in block(AUTO[0])


def test_tokenizer_doctest(monkeypatch):
    """The KoBART tokenizer session, output for output (the fixture's real tokenizer)."""
    monkeypatch.chdir(REPO_ROOT)
    test = doctest.DocTestParser().get_doctest(block(DOCTEST[0]), {"Tokenizer": __import__("seq2seq_kit").Tokenizer},
                                               "README", "README.md", 0)
    result = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS).run(test)
    assert result.failed == 0 and result.attempted == 5


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
