"""The seq2seq-kit command line, through main([...]) and as real subprocesses, on the random checkpoints."""

from __future__ import annotations

import io
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import read_jsonl, write_jsonl
from seq2seq_kit import Tokenizer, pipeline
from seq2seq_kit.cli import DEFAULT_TEXT, main
from seq2seq_kit.summarization import DEFAULT_MODEL

TEXT = "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure."
DOCS = [
    {"id": "a", "text": "The tower is 324 metres tall, about the same height as an 81-storey building."},
    {"id": "b", "text": "During the 1905-06 season the club finished second in Division One."},
    {"id": "c", "text": "Its base is square, measuring 125 metres on each side."},
    {"id": "d", "text": "It was the tallest man-made structure in the world for 41 years."},
    {"id": "e", "text": "The Chrysler Building in New York City was finished in 1930."},
]
GEN = ["--max-length", "9", "--num-beams", "2"]
REPO_ROOT = Path(__file__).resolve().parents[1]


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(scope="module")
def tiny_summaries(request):
    """What the pipeline gives for the docs (the pipeline itself is checked against transformers elsewhere)."""
    cache = {}

    def get(path):
        if path not in cache:
            pipe = pipeline("summarization", model=str(path))
            cache[path] = [r["summary_text"] for r in pipe([d["text"] for d in DOCS], max_length=9, num_beams=2)]
        return cache[path]

    return get


# ---------------------------------------------------------------- usage errors (exit 2)

@pytest.mark.parametrize("argv,message", [
    ([], "required: COMMAND"),
    (["frobnicate"], "invalid choice: 'frobnicate'"),
    (["summarize"], "give exactly one of TEXT, - (stdin), --file PATH or --input docs.jsonl"),
    (["summarize", "hello", "--file", "x.txt"], "got TEXT and --file"),
    (["summarize", "--input", "in.jsonl"], "--input and --output go together"),
    (["summarize", "hello", "--num-beams", "0"], "must be a positive integer, got '0'"),
    (["summarize", "hello", "--max-length", "ten"], "not an integer: 'ten'"),
    (["summarize", "hello", "--dtype", "float64"], "invalid choice: 'float64'"),
    (["inspect"], "the following arguments are required: MODEL"),
    (["summarize", "hello", "--text-field", "body"], "--text-field applies to --input jobs"),
    (["summarize", "hello", "--id-field", "key"], "--id-field applies to --input jobs"),
    (["translate", "--model", "m", "hello", "--batch-size", "4"], "--batch-size applies to --input jobs"),
    (["serve", "--port", "70000"], "must be a port number (1-65535), got '70000'"),
    (["parity", "m", "--atol", "nan"], "must be a finite number >= 0, got 'nan'"),
    (["parity", "m", "--num-beams", "1"], "must be 2 or more (the beam run's width; greedy runs beside it), got '1'"),
    (["demo", "--seed", str(2**64)], "must be an integer in [0, 2**64)"),
    (["summarize", "hello", "--model", ""], "argument --model: is empty"),      # not the current folder's model
    (["serve", "--model", " "], "argument --model: is empty"),                  # not the default model
    (["inspect", ""], "argument MODEL: is empty"),
    (["summarize", "hello", "--revision", ""], "argument --revision: is empty"),   # not main
    (["summarize", "hello", "--cache-dir", ""], "argument --cache-dir: is empty"),
    (["serve", "--request-timeout", "inf"], "must be a positive number of seconds"),   # /info could not say it
    (["serve", "--drain-timeout", "1e10"], "must be a positive number of seconds"),    # past a thread join's limit
    (["summarize", "--input", "in.jsonl", "--output", "o.jsonl", "--truncation"],
     "--truncation/--no-truncation apply to a single text; --input jobs always truncate"),
    (["translate", "--model", "m", "--input", "in.jsonl", "--output", "o.jsonl", "--no-truncation"],
     "--truncation/--no-truncation apply to a single text; --input jobs always truncate"),
    (["summarize", "--input", "in.jsonl", "--output", "o.jsonl", "--no-truncation", "--strategy", "map-reduce"],
     "apply to a single text; an --input job with --strategy map-reduce cuts no document (each is summarized whole)"),
    (["summarize", "hello", "--stream", "--num-beams", "2"], "--stream: beam search chooses its tokens only when it "
                                                             "ends; leave --num-beams out or give 1"),
    (["summarize", "hello", "--stream", "--json"], "--stream prints one text's output as it is generated: not with "
                                                   "--json"),
    (["summarize", "hello", "--stream", "--strategy", "map-reduce"], "not with --strategy map-reduce"),
    (["translate", "--model", "m", "--input", "in.jsonl", "--output", "o.jsonl", "--stream"], "not with --input"),
])
def test_usage_errors_exit_2(capsys, argv, message):
    code, out, err = run(capsys, *argv)
    assert code == 2
    assert message in err and "usage:" in err


def test_help_exits_0(capsys):
    code, out, _ = run(capsys, "--help")
    assert code == 0 and "summarize" in out and "parity" in out
    code, out, _ = run(capsys, "summarize", "--help")
    assert code == 0 and "--text-field" in out


# ---------------------------------------------------------------- summarize

INTERRUPT_TORCH_IMPORT = """
import sys

class CtrlC:                            # the user presses Ctrl-C while torch is being imported
    def find_spec(self, name, path=None, target=None):
        if name == "torch":
            raise KeyboardInterrupt

sys.meta_path.insert(0, CtrlC())
import seq2seq_kit                      # the package alone imports no torch
assert "torch" not in sys.modules and "pipeline" in dir(seq2seq_kit)
from seq2seq_kit.cli import main
sys.exit(main(["summarize", "some text"]))
"""


def test_ctrl_c_while_the_command_starts_is_one_line_and_130():
    """The package imports its modules on first use (torch included), so a Ctrl-C while a command loads torch is the
    CLI's "interrupted" line and exit code 130, not a traceback from inside an import."""
    run = subprocess.run([sys.executable, "-c", INTERRUPT_TORCH_IMPORT], capture_output=True, text=True, timeout=120)
    assert run.returncode == 130, run.stderr
    assert run.stderr == "seq2seq-kit: interrupted\n"


def test_the_package_exports_resolve_lazily():
    import seq2seq_kit

    assert seq2seq_kit.pipeline is pipeline and seq2seq_kit.Tokenizer is Tokenizer
    assert set(seq2seq_kit.__all__) <= set(dir(seq2seq_kit))
    with pytest.raises(AttributeError, match="has no attribute 'Pipeline'"):
        seq2seq_kit.Pipeline


def test_summarize_text_file_stdin_json(capsys, checkpoint, tiny_summaries, tmp_path, monkeypatch):
    path = checkpoint("tiny")
    expected = tiny_summaries(path)[0]
    code, out, _ = run(capsys, "summarize", DOCS[0]["text"], "--model", path, *GEN)
    assert code == 0 and out == expected + "\n"
    code, out, _ = run(capsys, "summarize", DOCS[0]["text"], "--model", path, *GEN, "--json", "--device", "cpu",
                       "--dtype", "float32")
    assert code == 0 and json.loads(out) == {"summary_text": expected}
    (tmp_path / "doc.txt").write_text(DOCS[0]["text"], encoding="utf-8")
    code, out, _ = run(capsys, "summarize", "--file", tmp_path / "doc.txt", "--model", path, *GEN)
    assert code == 0 and out == expected + "\n"
    monkeypatch.setattr(sys, "stdin", io.StringIO(DOCS[0]["text"]))
    code, out, _ = run(capsys, "summarize", "-", "--model", path, *GEN)
    assert code == 0 and out == expected + "\n"


def test_summarize_min_length_and_checkpoint_defaults(capsys, checkpoint):
    path = checkpoint("tiny")
    pipe = pipeline("summarization", model=str(path))
    code, out, _ = run(capsys, "summarize", TEXT, "--model", path, "--min-length", "15", "--max-length", "18")
    assert code == 0 and out == pipe(TEXT, min_length=15, max_length=18)[0]["summary_text"] + "\n"
    code, out, _ = run(capsys, "summarize", TEXT, "--model", path)
    assert code == 0 and out == pipe(TEXT)[0]["summary_text"] + "\n"


def test_summarize_new_token_lengths(capsys, checkpoint):
    """--max-new-tokens / --min-new-tokens are generate's max_new_tokens / min_new_tokens (the decoder start token not
    counted): the summary is the pipeline's with them, and neither is the --max-length / --min-length one."""
    path = checkpoint("tiny")
    pipe = pipeline("summarization", model=str(path))
    code, out, _ = run(capsys, "summarize", TEXT, "--model", path, "--min-new-tokens", "12", "--max-new-tokens", "14")
    expected = pipe(TEXT, min_new_tokens=12, max_new_tokens=14)[0]["summary_text"]
    assert code == 0 and out == expected + "\n"
    assert expected != pipe(TEXT, min_length=12, max_length=14)[0]["summary_text"]


BEAM_OPTIONS = {"num_beams": 3, "length_penalty": 0.5, "no_repeat_ngram_size": 2, "repetition_penalty": 1.5,
                "max_new_tokens": 12}
SAMPLE_OPTIONS = {"do_sample": True, "temperature": 2.0, "top_k": 40, "top_p": 0.9, "max_new_tokens": 12}


def options(settings: dict) -> list[str]:
    """generate settings as the command line's options: {"top_k": 40} -> ["--top-k", "40"]."""
    argv = []
    for name, value in settings.items():
        flag = "--" + name.replace("_", "-")
        argv += [flag] if value is True else [flag, str(value)]
    return argv


def test_generation_options_are_generates_settings(capsys, checkpoint, tmp_path, monkeypatch):
    """Each generation option reaches pipe() as generate's setting of its name, and the summary is the pipeline's
    with them; --seed as generator=torch.Generator().manual_seed(SEED), so a command repeats and another seed draws
    otherwise; --no-do-sample searches with a checkpoint that samples."""
    from seq2seq_kit.summarization import SummarizationPipeline

    path = checkpoint("tiny")
    pipe = pipeline("summarization", model=str(path))
    summary = lambda **kwargs: pipe(TEXT, **kwargs)[0]["summary_text"] + "\n"
    calls, call = [], SummarizationPipeline.__call__
    monkeypatch.setattr(SummarizationPipeline, "__call__", lambda self, *args, **kwargs: calls.append(
        {k: v.get_state() if k == "generator" else v for k, v in kwargs.items()}) or call(self, *args, **kwargs))
    code, out, _ = run(capsys, "summarize", TEXT, "--model", path, *options(BEAM_OPTIONS))
    assert code == 0 and BEAM_OPTIONS.items() <= calls[-1].items() and out == summary(**BEAM_OPTIONS)
    seeded = lambda seed: summary(**SAMPLE_OPTIONS, generator=torch.Generator().manual_seed(seed))
    for seed in (5, 6):
        code, out, _ = run(capsys, "summarize", TEXT, "--model", path, *options(SAMPLE_OPTIONS), "--seed", str(seed))
        assert code == 0 and SAMPLE_OPTIONS.items() <= calls[-1].items() and out == seeded(seed)
        assert torch.equal(calls[-2]["generator"], torch.Generator().manual_seed(seed).get_state())
    assert seeded(5) != seeded(6)
    root = shutil.copytree(path, tmp_path / "sampling")
    (root / "config.json").write_text(json.dumps({**json.loads((root / "config.json").read_text()), "do_sample": True}))
    code, out, _ = run(capsys, "summarize", TEXT, "--model", root, "--no-do-sample", "--max-new-tokens", "12")
    assert code == 0 and calls[-1]["do_sample"] is False and out == summary(max_new_tokens=12)
    sampled = pipeline("summarization", model=str(root))(TEXT, max_new_tokens=12,
                                                         generator=torch.Generator().manual_seed(0))
    assert out != sampled[0]["summary_text"] + "\n"       # (the checkpoint samples)


@pytest.mark.parametrize("flag,value,message", [
    ("--temperature", "0", "must be a positive number, got '0'"),
    ("--repetition-penalty", "nan", "must be a positive number, got 'nan'"),
    ("--top-p", "1.5", "must be a number in (0, 1], got '1.5'"),
    ("--top-k", "-1", "must be a non-negative integer, got '-1'"),
    ("--no-repeat-ngram-size", "2.5", "not an integer: '2.5'"),
    ("--length-penalty", "long", "not a number: 'long'"),
    ("--length-penalty", "nan", "must be a finite number, got 'nan'"),
    ("--seed", str(2**64), "must be an integer in [0, 2**64)"),
])
def test_generation_options_refuse_bad_values(capsys, flag, value, message):
    for command in (["summarize", "text"], ["translate", "text", "--model", "m"]):
        assert main([*command, flag, value]) == 2
        assert f"argument {flag}: {message}" in capsys.readouterr().err


def test_summarize_stream_prints_the_greedy_summary_as_it_is_generated(capsys, checkpoint, monkeypatch, tmp_path):
    """--stream: the summary of greedy search (the checkpoint's num_beams, 2 here, giving way to 1) printed piece by
    piece by a TextStreamer, the pieces and their closing newline what the plain command prints for --num-beams 1."""
    from seq2seq_kit.generation.streamers import TextStreamer

    root = shutil.copytree(checkpoint("tiny"), tmp_path / "tiny")
    (root / "config.json").write_text(json.dumps({**json.loads((root / "config.json").read_text()), "num_beams": 2}))
    pieces, show = [], TextStreamer.on_finalized_text
    monkeypatch.setattr(TextStreamer, "on_finalized_text",
                        lambda self, text, stream_end=False: pieces.append(text) or show(self, text, stream_end))
    code, out, _ = run(capsys, "summarize", TEXT, "--model", root, "--max-new-tokens", "20", "--stream")
    plain = run(capsys, "summarize", TEXT, "--model", root, "--max-new-tokens", "20", "--num-beams", "1")[1]
    beams = run(capsys, "summarize", TEXT, "--model", root, "--max-new-tokens", "20")[1]
    assert code == 0 and out == plain and len([p for p in pieces if p]) > 2, pieces
    assert plain != beams                               # the checkpoint's 2 beams: another summary


def test_device_index_minus_one_is_the_cpu(capsys, checkpoint, tiny_summaries):
    """--device -1 is transformers' pipeline value for the CPU (an integer index, not a device name)."""
    path = checkpoint("tiny")
    expected = tiny_summaries(path)[0]
    code, out, err = run(capsys, "summarize", DOCS[0]["text"], "--model", path, *GEN, "--device", "-1")
    assert code == 0 and out == expected + "\n", err


def test_hub_options_reach_every_load(capsys, checkpoint, tmp_path, monkeypatch):
    """--revision, --cache-dir and --token are handed to every Hub resolution a command makes (config, tokenizer,
    model): --revision v2 summarizes with v2's weights from the --cache-dir cache, not main's."""
    from hub_cache import read_dir, write_cache

    import huggingface_hub

    from seq2seq_kit import hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    cache = tmp_path / "cache"
    commits = write_cache(cache, "org/tiny", {"main": read_dir(checkpoint("tiny")),
                                              "v2": read_dir(checkpoint("tiny-bin"))})
    expected = pipeline("summarization", model=str(checkpoint("tiny-bin")))(TEXT, max_length=9, num_beams=2)
    real, calls = hub.resolve, []     # the Hub id's resolutions (a resolved snapshot is a local directory)
    monkeypatch.setattr(hub, "resolve", lambda name, **kw: (name == "org/tiny" and calls.append(kw)) or
                        real(name, **kw))
    hub_args = ["--revision", "v2", "--cache-dir", cache, "--token", "hf_fake"]
    code, out, _ = run(capsys, "summarize", TEXT, "--model", "org/tiny", *GEN, *hub_args)
    assert code == 0 and out == expected[0]["summary_text"] + "\n"
    code, out, _ = run(capsys, "tokenize", "Hello world!", "--model", "org/tiny", "--json", *hub_args)
    assert code == 0 and json.loads(out)["encode"] == [0, 31414, 232, 328, 2]
    code, out, _ = run(capsys, "inspect", "org/tiny", "--json", *hub_args)
    assert code == 0
    assert json.loads(out)["path"] == str(cache / "models--org--tiny" / "snapshots" / commits["v2"])
    assert json.loads(out)["weights_format"] == "pytorch .bin"
    assert {kw["purpose"] for kw in calls} == {"all", "tokenizer", "model"}
    assert all({k: kw.get(k) for k in ("revision", "cache_dir", "token")} == {
        "revision": "v2", "cache_dir": str(cache), "token": "hf_fake"} for kw in calls), calls


@pytest.mark.parametrize("failed,code", [(0, 0), (2, 3)])
@pytest.mark.parametrize("command", ["summarize", "translate"])
def test_corpus_job_exit_code_says_whether_records_failed(capsys, tmp_path, monkeypatch, command, failed, code):
    """Exit 3 when the job finished with failed records (a re-run will not fix them), for both commands."""
    import seq2seq_kit.corpus as corpus

    calls = []
    monkeypatch.setattr(corpus, f"{command}_corpus", lambda *a, **k: calls.append(a) or
                        type("R", (), {"failed": failed})())
    docs = write_jsonl(tmp_path / "docs.jsonl", DOCS)
    argv = [command, "--input", docs, "--output", tmp_path / "o.jsonl", "--model", "org/model"]
    assert run(capsys, *argv, *(["--tgt-lang", "fr"] if command == "translate" else []))[0] == code
    assert calls == [(docs, tmp_path / "o.jsonl")]


def test_the_librarys_dtype_advice_comes_in_the_clis_flags(capsys, checkpoint, tmp_path):
    """A float8 checkpoint with no dtype in config.json: --dtype auto is refused in one line whose fix is the flag
    (--dtype float32), not the library's keyword (dtype='float32'); that flag then runs."""
    from safetensors.torch import load_file, save_file

    path = Path(shutil.copytree(checkpoint("tiny"), tmp_path / "f8"))
    capsys.readouterr()                                        # the checkpoint's build, when this test builds it
    weights = load_file(path / "model.safetensors")
    save_file({k: v.to(torch.float8_e4m3fn) for k, v in weights.items()}, path / "model.safetensors",
              metadata={"format": "pt"})
    config = json.loads((path / "config.json").read_text())
    config.pop("dtype", None)
    (path / "config.json").write_text(json.dumps(config))
    code, out, err = run(capsys, "summarize", TEXT, "--model", path, *GEN, "--dtype", "auto")
    assert (code, out) == (1, "") and err == (
        "seq2seq-kit: error: --dtype auto found 'float8_e4m3fn' in the checkpoint (final_logits_bias); "
        "supported: float32, float16, bfloat16; float8 weights load upcast to the dtype passed: pass --dtype float32 "
        "(or 'bfloat16', 'float16')\n")
    code, out, err = run(capsys, "summarize", TEXT, "--model", path, *GEN, "--dtype", "float32")
    assert code == 0 and out.strip(), err


def test_runtime_errors_exit_1_with_one_line(capsys, tmp_path):
    code, out, err = run(capsys, "summarize", TEXT, "--model", tmp_path / "missing")
    assert code == 1 and out == ""
    assert err.startswith("seq2seq-kit: error: ") and "missing" in err and "neither a local directory" in err
    assert err.count("\n") == 1 and "Traceback" not in err
    code, _, err = run(capsys, "summarize", "--file", tmp_path / "nope.txt")
    assert code == 1 and "--file" in err and "no such file" in err
    with pytest.raises(FileNotFoundError):
        main(["summarize", TEXT, "--model", str(tmp_path / "missing"), "--debug"])


# ---------------------------------------------------------------- summarize --input/--output

def summaries(path: Path) -> list:
    """(id, summary_text) of an output's records, in id order (the job writes batches sorted by length)."""
    return sorted(((r["id"], r["summary_text"]) for r in read_jsonl(path)), key=lambda r: str(r[0]))


def test_jsonl_batches_and_resumes_after_a_crash(capsys, checkpoint, tiny_summaries, tmp_path):
    path = checkpoint("tiny")
    expected = tiny_summaries(path)
    docs, out = tmp_path / "docs.jsonl", tmp_path / "out" / "summaries.jsonl"
    write_jsonl(docs, DOCS)
    argv = ["summarize", "--input", docs, "--output", out, "--model", path, "--batch-size", "2", *GEN]
    code, stdout, err = run(capsys, *argv)
    assert code == 0 and stdout == ""
    assert summaries(out) == [(d["id"], s) for d, s in zip(DOCS, expected)]
    assert "done 5, skipped 0" in err

    # A previous run wrote a, b (kept as they are, not summarized again) and crashed while writing c.
    out.write_text(json.dumps({"id": "a", "summary_text": "EARLIER A"}) + "\n"
                   + json.dumps({"id": "b", "summary_text": "EARLIER B"}) + "\n" + '{"id": "c", "summ')
    code, _, err = run(capsys, *argv)
    assert code == 0
    assert "dropped an incomplete last line" in err and "done 3, skipped 2" in err
    assert summaries(out) == [("a", "EARLIER A"), ("b", "EARLIER B"),
                              *[(d["id"], s) for d, s in zip(DOCS[2:], expected[2:])]]
    # Everything done: a re-run writes nothing.
    before = out.read_bytes()
    code, _, err = run(capsys, *argv)
    assert code == 0 and out.read_bytes() == before and "done 0, skipped 5" in err


def test_jsonl_crash_keeps_finished_batches(capsys, checkpoint, tiny_summaries, tmp_path, monkeypatch):
    from seq2seq_kit.corpus.worker import Worker

    path = checkpoint("tiny")
    expected = tiny_summaries(path)
    docs, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    write_jsonl(docs, DOCS)
    real_call, calls = Worker.finished, []

    def crash_on_second_result(self, in_flight):
        calls.append(len(in_flight))
        if len(calls) == 2:
            raise RuntimeError("simulated crash")
        return real_call(self, in_flight)

    monkeypatch.setattr(Worker, "finished", crash_on_second_result)
    argv = ["summarize", "--input", docs, "--output", out, "--model", path, "--batch-size", "2", *GEN]
    code, _, err = run(capsys, *argv)
    assert code == 1 and "RuntimeError: simulated crash" in err
    first = summaries(out)
    assert 1 <= len(first) < len(DOCS) and set(first) <= {(d["id"], s) for d, s in zip(DOCS, expected)}
    monkeypatch.setattr(Worker, "finished", real_call)
    code, _, err = run(capsys, *argv)
    assert code == 0 and f"done {len(DOCS) - len(first)}, skipped {len(first)}" in err
    assert summaries(out) == [(d["id"], s) for d, s in zip(DOCS, expected)]


def test_jsonl_line_numbers_as_ids_and_text_field(capsys, checkpoint, tiny_summaries, tmp_path):
    path = checkpoint("tiny")
    expected = tiny_summaries(path)
    docs, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    lines = [json.dumps({"body": d["text"]}) for d in DOCS[:3]]
    docs.write_text(lines[0] + "\n\n" + lines[1] + "\n" + lines[2] + "\n")
    code, _, _ = run(capsys, "summarize", "--input", docs, "--output", out, "--text-field", "body",
                     "--model", path, *GEN)
    assert code == 0
    assert summaries(out) == [(n, s) for n, s in zip([1, 3, 4], expected[:3])]


@pytest.mark.parametrize("rows,message", [
    ([{"id": "a", "content": "x"}], "docs.jsonl:1 has no string field 'text' (set --text-field; its fields: id, "
                                    "content)"),
])
def test_jsonl_input_errors(capsys, tmp_path, rows, message):
    """A wrong --text-field fails before loading a model; bad records are the job's errors file (test_corpus.py)."""
    docs = tmp_path / "docs.jsonl"
    write_jsonl(docs, rows)
    code, _, err = run(capsys, "summarize", "--input", docs, "--output", tmp_path / "o.jsonl", "--model", "x/y")
    assert code == 1 and message in err


def test_jsonl_corrupt_output_in_the_middle(capsys, checkpoint, tmp_path):
    docs, out = tmp_path / "docs.jsonl", tmp_path / "out.jsonl"
    write_jsonl(docs, DOCS)
    argv = ["summarize", "--input", docs, "--output", out, "--model", checkpoint("tiny"), *GEN]
    assert run(capsys, *argv)[0] == 0               # a job's output (with its meta file), then damaged
    out.write_text('{"id": "a", "summary_text": "x"}\nnot json\n{"id": "b", "summary_text": "y"}\n')
    code, _, err = run(capsys, *argv)
    assert code == 1 and "out.jsonl:2 is not a summary record" in err


# ---------------------------------------------------------------- tokenize / inspect / demo / parity

def test_tokenize_embedded_and_kobart(capsys, checkpoint, monkeypatch):
    code, out, _ = run(capsys, "tokenize", "Hello world!", "--json")
    assert code == 0
    tok = Tokenizer.from_default()
    ids = tok.encode("Hello world!")
    assert ids == [0, 31414, 232, 328, 2]
    assert json.loads(out) == {
        "tokenize": tok.tokenize("Hello world!"), "convert_tokens_to_ids": ids[1:-1], "encode": ids,
        "convert_ids_to_tokens": ["<s>", "Hello", "Ġworld", "!", "</s>"], "decode": "<s>Hello world!</s>",
        "decode_skip_special_tokens": "Hello world!"}
    # The notebook's KoBART inspection, value for value.
    code, out, _ = run(capsys, "tokenize", "혼자 공부하는 머신러닝 딥러닝", "--model", checkpoint("kobart"))
    assert code == 0
    assert "tokenize (11):" in out and "['▁혼자', '▁공부', '하는', '▁머', '신', '러', '닝', '▁', '딥', '러', '닝']" in out
    assert "[16814, 16962, 14049, 14771, 11467, 10277, 9747, 1700, 10021, 10277, 9747]" in out
    assert "encode (13):" in out
    assert "[0, 16814, 16962, 14049, 14771, 11467, 10277, 9747, 1700, 10021, 10277, 9747, 1]" in out
    monkeypatch.setattr(sys, "stdin", io.StringIO("KoBART 모델을 사용한 문서 요약"))
    code, out, _ = run(capsys, "tokenize", "-", "--model", checkpoint("kobart"))
    assert code == 0
    assert "encode (12):" in out and "[0, 14572, 310, 265, 264, 281, 283, 24224, 21032, 26052, 26200, 1]" in out
    assert "['<s>', '▁K', 'o', 'B', 'A', 'R', 'T', '▁모델을', '▁사용한', '▁문서', '▁요약', '</s>']" in out
    assert "'<s> KoBART 모델을 사용한 문서 요약</s>'" in out
    assert "round trip:" in out and out.rstrip().endswith("exact")


def test_inspect(capsys, checkpoint):
    transformers = pytest.importorskip("transformers")
    path = checkpoint("distilbart")
    code, out, _ = run(capsys, "inspect", path, "--json")
    assert code == 0
    info = json.loads(out)
    reference = transformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    assert info["parameters"] == reference.num_parameters()
    assert info["model_type"] == "bart" and info["config"]["d_model"] == 1024
    assert info["config"]["encoder_layers"] == 2 and info["config"]["decoder_layers"] == 1
    assert info["files"]["model.safetensors"]["kind"] == "weights (safetensors)"
    assert info["files"]["vocab.json"]["kind"] == "tokenizer vocabulary (BPE)"
    from safetensors import safe_open
    with safe_open(path / "model.safetensors", framework="pt") as f:
        stored = len(list(f.keys()))
    assert info["weights_format"] == "safetensors" and info["stored_dtypes"] == {"float32": stored}
    assert info["generation_defaults"]["num_beams"] == 4 and info["generation_defaults"]["min_length"] == 56
    assert info["task_specific_params"]["no_repeat_ngram_size"] == 3
    code, out, _ = run(capsys, "inspect", path)
    assert code == 0
    assert f"parameters   {reference.num_parameters():,}" in out and "generation defaults" in out
    assert "model.safetensors" in out and "no_repeat_ngram_size = 3" in out


def test_inspect_formats(capsys, checkpoint):
    code, out, _ = run(capsys, "inspect", checkpoint("tiny-sharded"), "--json")
    info = json.loads(out)
    shards = [f for f in info["files"] if f.endswith(".safetensors")]
    assert code == 0 and len(shards) > 1 and info["weights_format"] == f"safetensors, {len(shards)} shards"
    assert info["files"]["model.safetensors.index.json"]["kind"] == "weight shard index"
    code, out, _ = run(capsys, "inspect", checkpoint("tiny-bin"), "--json")
    info = json.loads(out)
    assert code == 0 and info["weights_format"] == "pytorch .bin"
    assert info["files"]["pytorch_model.bin"]["kind"] == "weights (PyTorch pickle)"
    assert info["stored_dtypes"] == {"float32": info["stored_dtypes"]["float32"]}


def test_inspect_names_config_json_dtype_beside_the_dtype_loaded(capsys, checkpoint, tmp_path):
    """config.json's dtype as the file says, whatever the model loads as (model.config.dtype is the loaded one)."""
    shutil.copytree(checkpoint("tiny"), tmp_path, dirs_exist_ok=True)
    config = json.loads((tmp_path / "config.json").read_text())
    (tmp_path / "config.json").write_text(json.dumps({**config, "dtype": "bfloat16"}))
    code, out, _ = run(capsys, "inspect", tmp_path, "--json")
    info = json.loads(out)
    assert code == 0 and info["config_dtype"] == "bfloat16" and info["loaded_dtype"] == "torch.float32"


def _field(out: str, label: str) -> str:
    return next(line[len(label):].strip() for line in out.splitlines() if line.startswith(label))


def test_demo(capsys):
    code, out, _ = run(capsys, "demo")
    assert code == 0
    tok = Tokenizer.from_default()
    assert json.loads(_field(out, "input ids")) == tok.encode(DEFAULT_TEXT)
    generated = json.loads(_field(out, "generated").split("  (")[0])
    assert generated[0] == 2 and 2 < len(generated) <= 24      # decoder start token, then up to max_length
    assert _field(out, "decoded") == repr(tok.decode(generated, skip_special_tokens=True))
    assert "RANDOM weights" in out and "meaningless" in out
    assert run(capsys, "demo")[1] == out                     # seeded: the same every time
    assert run(capsys, "demo", "--seed", "1")[1] != out


def test_parity_agrees(capsys, checkpoint):
    pytest.importorskip("transformers")
    code, out, _ = run(capsys, "parity", checkpoint("tiny"), "--max-length", "12", "--text", TEXT, "--text", "Hi.")
    assert code == 0, out
    assert out.count("tokenizer ids      match") == 2 and out.count("greedy tokens      match") == 2
    assert "beam x4 tokens" in out and "logits             match" in out
    assert out.rstrip().endswith("verdict: PARITY: tokenizer ids, logits and generated tokens agree with transformers")


def test_parity_is_a_library_report(checkpoint):
    pytest.importorskip("transformers")
    from seq2seq_kit.parity import compare

    report = compare(checkpoint("tiny"), [TEXT], max_length=8)
    assert report.ok and report.failures == [] and report.atol == 1e-3 and report.dtype == "torch.float32"
    assert [c.name for c in report.checks] == ["tokenizer ids", "greedy tokens", "logits", "beam x4 tokens"]
    assert report.checks[1].ours == report.checks[1].theirs and report.checks[2].positions > 0


@pytest.mark.parametrize("hub_bars", [False, True])
def test_parity_leaves_the_progress_bars_as_they_were(checkpoint, hub_bars):
    """compare() turns transformers' progress bars off while it runs, which turns huggingface_hub's off too; it put
    back transformers' only, so a program's disabled Hub bars came back on."""
    transformers = pytest.importorskip("transformers")
    from huggingface_hub.utils import are_progress_bars_disabled, disable_progress_bars, enable_progress_bars

    from seq2seq_kit.parity import compare

    before = transformers.logging.is_progress_bar_enabled(), are_progress_bars_disabled()
    try:
        (enable_progress_bars if hub_bars else disable_progress_bars)()
        compare(checkpoint("tiny"), ["Hi."], max_length=6)
        assert are_progress_bars_disabled() is not hub_bars
    finally:
        (transformers.logging.enable_progress_bar if before[0] else transformers.logging.disable_progress_bar)()
        (disable_progress_bars if before[1] else enable_progress_bars)()


def test_parity_with_the_checkpoints_stop_strings(checkpoint, tmp_path):
    """A checkpoint whose generation_config.json sets stop_strings: both sides generate with their tokenizer."""
    pytest.importorskip("transformers")
    from seq2seq_kit.parity import compare

    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("tiny"), path)
    settings = dict(stop_strings=["ing", "s"], bos_token_id=0, eos_token_id=2, pad_token_id=1,
                    decoder_start_token_id=2, forced_eos_token_id=2)
    (path / "generation_config.json").write_text(json.dumps(settings))
    report = compare(path, [TEXT], max_length=12)
    assert report.ok, report.failures


def test_parity_reports_a_mismatch(capsys, checkpoint, monkeypatch):
    pytest.importorskip("transformers")
    from seq2seq_kit import BartForConditionalGeneration

    real = BartForConditionalGeneration.generate
    monkeypatch.setattr(BartForConditionalGeneration, "generate",
                        lambda self, *a, **k: torch.cat([real(self, *a, **k), torch.tensor([[7]])], dim=1))
    code, out, _ = run(capsys, "parity", checkpoint("tiny"), "--max-length", "8", "--text", TEXT)
    assert code == 1
    assert "greedy tokens      DIFFER" in out and "verdict: MISMATCH in 2 check(s)" in out


def test_parity_without_transformers(capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)   # import transformers -> ImportError
    code, _, err = run(capsys, "parity", "org/model")
    assert code == 1 and 'pip install "seq2seq-kit[test]"' in err


# ---------------------------------------------------------------- real processes

def _env(tmp_path, **extra):
    env = {**os.environ, "HF_HOME": str(tmp_path / "hf"), "HF_HUB_OFFLINE": "1", **extra}
    env.pop("HF_HUB_CACHE", None)
    return env


def test_subprocess_summarize_matches_main(checkpoint, tiny_summaries, tmp_path):
    path = checkpoint("tiny")
    proc = subprocess.run([sys.executable, "-m", "seq2seq_kit", "summarize", DOCS[1]["text"], "--model", str(path),
                           *GEN], capture_output=True, text=True, env=_env(tmp_path), cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == tiny_summaries(path)[1] + "\n"


def test_subprocess_default_model_offline_is_a_clear_error(tmp_path):
    """The default --model is the Hub id; offline and not cached, one line says why and what works."""
    proc = subprocess.run([sys.executable, "-m", "seq2seq_kit", "summarize", TEXT], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=REPO_ROOT)
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert f"'{DEFAULT_MODEL}' (revision 'main') is not in the local Hub cache" in proc.stderr
    assert "HF_HUB_OFFLINE=1" in proc.stderr and "local checkpoint directory" in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "seq2seq_kit", "--debug", "summarize", TEXT], capture_output=True,
                          text=True, env=_env(tmp_path), cwd=REPO_ROOT)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "HubError" in proc.stderr


def test_console_script_usage_error(tmp_path):
    script = Path(sys.executable).with_name("seq2seq-kit")
    if not script.exists():
        pytest.skip("console script not installed (pip install -e .)")
    proc = subprocess.run([str(script), "summarize"], capture_output=True, text=True, env=_env(tmp_path))
    assert proc.returncode == 2 and "give exactly one of TEXT" in proc.stderr


def test_bench_is_the_checkout_script_not_a_command(capsys, tmp_path):
    """The benchmark runs as `python benchmarks/bench.py` from a source checkout; seq2seq-kit has no bench command."""
    code, _, err = run(capsys, "bench", "--help")
    assert code == 2 and "invalid choice: 'bench'" in err
    proc = subprocess.run([sys.executable, "benchmarks/bench.py", "--help"], capture_output=True, text=True,
                          env=_env(tmp_path), cwd=REPO_ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "usage: bench.py" in proc.stdout and "--engines" in proc.stdout and "--quick" in proc.stdout
