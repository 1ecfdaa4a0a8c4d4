"""The command line on hostile and messy input: files that are devices, folders, empty or not UTF-8; arguments
and stdin holding bytes that are not UTF-8; long inputs; --ray next to a text; --version; --dtype auto on
resume. Each ends in one line on stderr and the documented exit code."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import write_jsonl
from seq2seq_kit import __version__, pipeline
from seq2seq_kit.cli import main

REPO_ROOT = Path(__file__).resolve().parents[1]
TEXT = "The tower is 324 metres tall, about the same height as an 81-storey building."
GEN = ["--max-length", "9", "--num-beams", "2"]
LONG = " ".join(["word"] * 300)      # 302 tokens; the tiny model takes 256


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return checkpoint("tiny")


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    return lines[0]


def test_file_that_is_a_directory(capsys, tmp_path):
    code, _, err = run(capsys, "summarize", "--file", tmp_path)
    assert code == 1 and "is a directory; pass a text file" in one_line(err)


@pytest.mark.parametrize("flag", ["--file", "--input", "--output"])
def test_an_empty_path_is_refused(capsys, flag):
    """Path("") is "." (the current folder): an empty path argument is refused as empty."""
    code, _, err = run(capsys, "summarize", flag, "")
    assert code == 2 and f"argument {flag}: is empty; pass a path" in err


@pytest.mark.parametrize("command", ["summarize", "translate"])
def test_a_path_given_as_text_is_refused_naming_file(capsys, tmp_path, monkeypatch, command):
    """A TEXT that reads as a path (one word: a document's file name, or a "/" and a file or folder there) was
    summarized as the words of its name: a usage error naming --file instead. Words that only look alike stay a text
    (they go on to load the model: the runtime error about --model, not the usage error)."""
    (tmp_path / "article.txt").write_text(TEXT)
    (tmp_path / "data").mkdir()
    monkeypatch.chdir(tmp_path)
    argv = [command, "--model", tmp_path / "no-model"]
    for text, says in [(tmp_path / "article.txt", f"is a file's name, not a text to {command}: pass --file "
                                                   f"{tmp_path / 'article.txt'} to {command} a file's contents"),
                       ("article.txt", "is a file's name"), ("notes.md", "looks like a file's name"),
                       (" report.PDF ", "looks like a file's name"), (tmp_path / "data", "is a folder's name")]:
        code, _, err = run(capsys, *argv, text)
        assert code == 2 and f"error: TEXT {str(text)!r} {says}" in err, err
    for text in ["data", "km/h", "U.S.", "3.14", "hello", "see notes.txt", "x" * 5000 + ".txt/"]:
        code, _, err = run(capsys, *argv, text)
        assert code == 1 and "no-model" in one_line(err), (text, err)


def test_file_that_is_not_utf8(capsys, tmp_path):
    (tmp_path / "latin1.txt").write_bytes("café au lait".encode("latin-1"))
    code, _, err = run(capsys, "summarize", "--file", tmp_path / "latin1.txt")
    assert code == 1 and "latin1.txt' is not UTF-8 text: byte 0xe9 at offset 3" in one_line(err)


@pytest.mark.parametrize("content", ["", "  \n\n "])
def test_empty_file(capsys, tmp_path, content):
    (tmp_path / "empty.txt").write_text(content)
    code, _, err = run(capsys, "summarize", "--file", tmp_path / "empty.txt")
    assert code == 1 and "empty.txt' is empty: there is nothing to summarize" in one_line(err)


def test_argument_with_bytes_that_are_not_utf8(capsys):
    text = b"caf\xe9".decode("utf-8", "surrogateescape")          # what Python makes of such an argv entry
    code, _, err = run(capsys, "summarize", text)
    assert code == 1 and "the TEXT argument is not UTF-8 text: byte 0xe9 at character 3" in one_line(err)
    code, _, err = run(capsys, "tokenize", text)
    assert code == 1 and "not UTF-8 text" in one_line(err)


def test_stdin_device_and_undecodable_stdin(tiny, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT), "HF_HUB_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "seq2seq_kit", "summarize", "--model", str(tiny), *GEN]
    proc = subprocess.run(cmd + ["--file", "/dev/stdin"], input=TEXT.encode(), capture_output=True, env=env)
    assert proc.returncode == 0, proc.stderr
    expected = pipeline("summarization", model=str(tiny))(TEXT, max_length=9, num_beams=2)[0]["summary_text"]
    assert proc.stdout.decode().rstrip("\n") == expected
    proc = subprocess.run(cmd + ["-"], input=b"\xff\xfe text", capture_output=True, env=env)
    assert proc.returncode == 1
    assert proc.stderr.decode().strip() == ("seq2seq-kit: error: stdin is not UTF-8 text: byte 0xff at offset 0; "
                                            "convert it (e.g. iconv -t utf-8)")
    closed = subprocess.run(["sh", "-c", '"$@" <&-', "sh", *cmd, "-"], capture_output=True, env=env)   # no stdin
    assert closed.returncode == 1
    assert closed.stderr.decode().strip() == ("seq2seq-kit: error: TEXT is '-' (read stdin), but stdin is closed: "
                                              "pipe the text in, or pass it as TEXT")


def test_a_warning_of_both_map_reduce_stages_is_one_line(capsys, tiny):
    """Map-reduce resolves the same settings for its map and its reduce stage: min_length past max_length warns
    once, not once per stage."""
    code, out, err = run(capsys, "summarize", "The tower is tall. " * 120, "--model", tiny, "--strategy",
                         "map-reduce", "--min-length", "30", "--max-length", "20")
    assert code == 0 and out.strip()
    assert one_line(err).startswith("seq2seq-kit: warning: Unfeasible length constraints: `min_length` (30)")


def test_long_input_truncation_flags(capsys, tiny):
    code, out, err = run(capsys, "summarize", LONG, "--model", tiny, *GEN)
    assert code == 0 and out.strip()
    line = one_line(err)                              # one clean line, not Python's warning with its source line
    assert line.startswith("seq2seq-kit: warning: 1 input(s) longer than the model's 256 positions")
    assert "pass --truncation to silence this or --no-truncation to raise instead" in line
    code, _, err = run(capsys, "summarize", LONG, "--model", tiny, *GEN, "--truncation")
    assert code == 0 and err == ""
    code, _, err = run(capsys, "summarize", LONG, "--model", tiny, *GEN, "--no-truncation")
    assert code == 1 and "302 tokens long" in one_line(err) and "--truncation" in err


def test_ray_flag_never_swallows_a_text(capsys, tmp_path, monkeypatch):
    import seq2seq_kit.corpus as corpus

    calls = []
    monkeypatch.setattr(corpus, "summarize_corpus", lambda *a, **k: calls.append(k) or
                        type("R", (), {"failed": 0})())
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"text": TEXT}])
    code, _, err = run(capsys, "summarize", "--ray", "a text to summarize")
    assert code == 2 and "--ray applies to --input jobs" in err            # the text is TEXT, not an address
    code, _, err = run(capsys, "summarize", "--input", docs, "--output", tmp_path / "o.jsonl", "--ray", "auto")
    assert code == 2 and "--ray takes no value: to join the cluster at 'auto', pass --ray-address auto" in err
    for argv in (["--ray=auto"], ["--ray", "--ray-address", "auto"]):
        assert run(capsys, "summarize", "--input", docs, "--output", tmp_path / "o.jsonl", *argv)[0] == 0
    assert run(capsys, "summarize", "--input", docs, "--output", tmp_path / "o.jsonl", "--ray")[0] == 0
    assert [(c["engine"], c["ray_address"]) for c in calls] == [("ray", "auto"), ("ray", "auto"), ("ray", None)]


def test_version(capsys):
    assert main(["--version"]) == 0 and capsys.readouterr().out.strip() == f"seq2seq-kit {__version__}"


def test_empty_corpus_says_so(capsys, tmp_path, tiny):
    (tmp_path / "docs.jsonl").write_text("\n\n")
    code, _, err = run(capsys, "summarize", "--input", tmp_path / "docs.jsonl", "--output", tmp_path / "o.jsonl",
                       "--model", tiny, *GEN)
    assert code == 0 and "seq2seq-kit: warning: " in err    # a logged warning says so, as Python's warnings do
    assert "docs.jsonl holds no records (no non-blank line or row): nothing to summarize" in err


def test_dtype_auto_resumes_a_float32_job(capsys, tmp_path, tiny):
    docs = write_jsonl(tmp_path / "docs.jsonl", [{"id": 1, "text": TEXT}])
    argv = ["summarize", "--input", docs, "--output", tmp_path / "o.jsonl", "--model", tiny, *GEN]
    assert run(capsys, *argv)[0] == 0
    code, _, err = run(capsys, *argv, "--dtype", "auto")          # the tiny checkpoint's weights: float32
    assert code == 0 and "done 0, skipped 1" in err
    code, _, err = run(capsys, *argv, "--dtype", "bfloat16")
    assert code == 1 and "was written with --dtype float32" in err and "--dtype bfloat16" in err


@pytest.mark.parametrize("device", ["--1", "²", "٣"])
def test_a_device_that_is_no_index_is_named(capsys, tiny, device):
    """Only ASCII digits with one optional minus are an index (int() took '٣' as cuda:3 and failed on '--1')."""
    code, _, err = run(capsys, "summarize", "hello", "--model", tiny, f"--device={device}")
    assert code == 1 and f"{device!r}" in err and "invalid literal" not in err


def test_a_home_of_no_known_user_is_named(capsys):
    code, _, err = run(capsys, "inspect", "~no-such-user-here/checkpoint")
    assert code == 1 and "cannot expand '~'" in err and "~no-such-user-here/checkpoint" in err


@pytest.mark.parametrize("argv", [["tokenize", "Hello"], ["demo", "--max-length", "4"]])
def test_a_closed_stdout_is_an_error_not_a_lost_result(argv):
    """`seq2seq-kit tokenize ... >&-`: Python's print() drops what it writes to a closed stdout; the command says so
    (exit 1) instead of exiting 0 with its output gone."""
    proc = subprocess.run([sys.executable, "-m", "seq2seq_kit", *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          text=True, preexec_fn=lambda: os.close(1), timeout=120,
                          env={**os.environ, "PYTHONPATH": str(REPO_ROOT)})
    assert proc.returncode == 1
    assert proc.stderr == (f"seq2seq-kit: error: stdout is closed, so {argv[0]}'s output would be lost; redirect it "
                           "instead (e.g. > out.txt, or > /dev/null to discard it)\n")


def test_a_reader_that_stops_early_ends_the_command_quietly():
    """`seq2seq-kit tokenize ... | head -c 20`: the closed pipe ends the command as it ends any Unix tool (141),
    without an error line."""
    text = "the tower is tall " * 3000
    proc = subprocess.run(f"{sys.executable} -m seq2seq_kit tokenize \"$TEXT\" | head -c 20; "
                          "echo \" ${PIPESTATUS[0]}\"", shell=True, executable="/bin/bash", capture_output=True,
                          text=True, env={**os.environ, "TEXT": text}, timeout=120)
    assert proc.stdout.endswith(" 141\n") and "error" not in proc.stderr, (proc.stdout[-80:], proc.stderr)
