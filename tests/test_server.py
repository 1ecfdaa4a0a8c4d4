"""`seq2seq-kit serve`: a real server process on 127.0.0.1, talked to over HTTP with httpx.

One module-scoped server (tiny-eos checkpoint, max_rows 8, small limits) answers most tests; a second one, with an
API key, is drained by SIGTERM under load. Summaries are compared with the in-process pipeline's for the same text
and parameters (the pipeline itself is checked against transformers elsewhere).
"""

from __future__ import annotations

import concurrent.futures
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

httpx = pytest.importorskip("httpx", reason='the server tests need httpx (pip install "seq2seq-kit[test]")')
pytest.importorskip("fastapi", reason='the server needs its extra (pip install "seq2seq-kit[serve]")')

from helpers import make_docs  # noqa: E402
from seq2seq_kit import GenerationConfig, pipeline  # noqa: E402
from seq2seq_kit.server.schema import GenerateParameters, SummarizeParameters  # noqa: E402
from prometheus_client import CONTENT_TYPE_LATEST  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parents[1]
LIMITS = ["--max-rows", "8", "--max-queue", "64", "--max-body-bytes", "20000", "--request-timeout", "5"]
PARAMS = {"max_length": 12, "num_beams": 2}
# a patched step of the server (launchers below: tokenization, stop-string tables) takes SLOW_S seconds longer
SLOW_S = 8
# heavy work: each input runs 250 steps on 4 rows, two inputs at a time (max_rows 8)
LONG = {"num_beams": 4, "min_new_tokens": 250, "max_new_tokens": 250}
KEY = "test-key-1234"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`python -m seq2seq_kit serve ...` as a subprocess on a free port, its log in a file; launcher: a script run
    in place of `-m seq2seq_kit` (one that patches the package first, then runs its CLI)."""

    def __init__(self, tmp: Path, *args, env: dict | None = None, launcher: Path | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = tmp / f"server-{self.port}.log"
        child_env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                                                os.environ.get("PYTHONPATH")])),
                     **(env or {})}
        with open(self.log, "wb") as log:
            program = [str(launcher)] if launcher else ["-m", "seq2seq_kit"]
            self.proc = subprocess.Popen([sys.executable, *program, "serve", *map(str, args),
                                          "--port", str(self.port)], stdout=log, stderr=subprocess.STDOUT,
                                         env=child_env, cwd=tmp)

    def wait_ready(self, timeout: float = 240) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the server exited ({self.proc.returncode}):\n{self.log.read_text()}"
            try:
                if httpx.get(self.url + "/health", timeout=5).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.25)
        raise AssertionError(f"the server was not ready within {timeout} s:\n{self.log.read_text()}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(90)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


@pytest.fixture(scope="module")
def pipe(tiny_eos_path):
    return pipeline("summarization", model=str(tiny_eos_path))


@pytest.fixture(scope="module")
def server(tiny_eos_path, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("server"), "--model", tiny_eos_path, *LIMITS)
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


def post(server, body, timeout: float = 60, headers: dict | None = None, **kwargs) -> httpx.Response:
    """The body as JSON with \\u escapes (what httpx's json= cannot send: a lone surrogate)."""
    return httpx.post(server.url + "/summarize", content=json.dumps(body), timeout=timeout,
                      headers={"Content-Type": "application/json", **(headers or {})}, **kwargs)


def engine_metrics(server, headers=None) -> dict[str, float]:
    text = httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
    return {name: float(value) for name, value in re.findall(r"^(seq2seq_engine_\w+) (\S+)$", text, re.M)}


def summarize_counts(server, headers=None) -> tuple[int, int]:
    """(/summarize requests in progress, answered ones of any status) per the server's /metrics."""
    text = httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
    going = re.search(r'^seq2seq_http_requests_in_progress{route="/summarize"} (\S+)$', text, re.M)
    answered = re.findall(r'^seq2seq_http_requests_total{route="/summarize",status="\d+"} (\S+)$', text, re.M)
    return int(float(going.group(1))) if going else 0, int(sum(map(float, answered)))


def accepted(server, headers, rows_per_request: int = 4) -> int:
    """Requests the engine holds (waiting, or running at rows_per_request rows) or /summarize answered with 200."""
    m = engine_metrics(server, headers)
    text = httpx.get(server.url + "/metrics", headers=headers, timeout=30).text
    ok = re.search(r'^seq2seq_http_requests_total{route="/summarize",status="200"} (\S+)$', text, re.M)
    held = m["seq2seq_engine_queue_depth"] + m["seq2seq_engine_active_rows"] // rows_per_request
    return int(held + (float(ok.group(1)) if ok else 0))


def wait_idle(server, timeout: float = 30) -> dict[str, float]:
    deadline = time.monotonic() + timeout
    while True:
        m = engine_metrics(server)
        if m["seq2seq_engine_queue_depth"] == 0 and m["seq2seq_engine_active_rows"] == 0:
            return m
        assert time.monotonic() < deadline, f"the engine is still busy: {m}"
        time.sleep(0.05)


# ---------------------------------------------------------------------------------------------- answers

def test_concurrent_requests_get_the_pipelines_summaries(server, pipe):
    docs = [d["text"] for d in make_docs(16, seed=3)]
    settings = [PARAMS, {"max_length": 10}, {"num_beams": 3, "no_repeat_ngram_size": 2, "max_new_tokens": 8}]
    jobs = [(doc, settings[i % len(settings)]) for i, doc in enumerate(docs)]
    with concurrent.futures.ThreadPoolExecutor(len(jobs)) as pool:
        answers = list(pool.map(lambda job: post(server, {"inputs": job[0], "parameters": job[1]}), jobs))
    assert [a.status_code for a in answers] == [200] * len(jobs), [a.text for a in answers]
    for (doc, params), answer in zip(jobs, answers):
        assert answer.json() == pipe(doc, **params)


def test_map_reduce_strategy_is_the_pipelines(server, pipe):
    """A text several times the tiny model's 256-token window: the answer is pipe(text, strategy="map_reduce")."""
    doc = " ".join(f"Report {i} says the tower is {300 + i} metres tall and was the tallest structure for "
                   f"{40 + i} years." for i in range(40))
    assert len(pipe.tokenizer(doc)["input_ids"]) > 2 * pipe.max_input_length
    params = {"max_length": 12, "strategy": "map_reduce", "map_parameters": {"max_length": 8}, "return_chunks": True}
    answer = post(server, {"inputs": doc, "parameters": params})
    assert answer.status_code == 200, answer.text
    expected = pipe(doc, max_length=12, strategy="map_reduce", map_kwargs={"max_length": 8}, return_chunks=True)
    assert answer.json() == expected and len(expected[0]["chunks"]) > 2
    # seeds: parameters.seed the generator of both stages, map_parameters.seed the chunks' own
    seeded = lambda seed: torch.Generator().manual_seed(seed)
    sampled = {"strategy": "map_reduce", "do_sample": True, "temperature": 2.0, "max_length": 12, "seed": 3,
               "map_parameters": {"max_length": 8, "seed": 4}}
    answer = post(server, {"inputs": doc, "parameters": sampled})
    expected = pipe(doc, strategy="map_reduce", do_sample=True, temperature=2.0, max_length=12, generator=seeded(3),
                    map_kwargs={"max_length": 8, "generator": seeded(4)})
    assert answer.status_code == 200 and answer.json() == expected, answer.text
    answer = post(server, {"inputs": doc, "parameters": {**sampled, "map_parameters": {"max_length": 8}}})
    assert answer.json() == pipe(doc, strategy="map_reduce", do_sample=True, temperature=2.0, max_length=12,
                                 generator=seeded(3), map_kwargs={"max_length": 8}) != expected
    # a list of inputs: one summary each, in order, as pipe(list, strategy="map_reduce")
    docs = ["The tower is 324 metres tall. It is in Paris.", "The river is long. It flows to the north sea."]
    several = post(server, {"inputs": docs, "parameters": {"strategy": "map_reduce", **PARAMS}})
    expected = pipe(docs, strategy="map_reduce", **PARAMS)
    assert several.status_code == 200 and several.json() == expected, several.text
    assert len(expected) == 2 and expected[0] != expected[1]


def test_a_list_of_inputs_and_the_apis_nested_parameters(server, pipe):
    docs = [d["text"] for d in make_docs(3, seed=4)]
    answer = post(server, {"inputs": docs, "parameters": {"generate_parameters": PARAMS, "truncation": "only_first",
                                                          "clean_up_tokenization_spaces": True}})
    assert answer.status_code == 200 and answer.json() == pipe(docs, **PARAMS, clean_up_tokenization_spaces=True)
    several = post(server, {"inputs": docs[:2], "parameters": {"num_beams": 2, "num_return_sequences": 2,
                                                               "max_length": 8}})
    assert several.json() == pipe(docs[:2], num_beams=2, num_return_sequences=2, max_length=8)   # lists of 2
    defaults = post(server, {"inputs": docs[0]})
    assert defaults.json() == pipe(docs[0])



def test_huggingface_hubs_own_inference_client_gets_the_pipelines_summary(server, pipe):
    """The client users already have (huggingface_hub.InferenceClient, pointed at the route) sends the newer API's
    form: generate_parameters, truncation as a strategy name, clean_up_tokenization_spaces."""
    from huggingface_hub import InferenceClient

    text = make_docs(1, seed=5)[0]["text"]
    params = {"max_length": 12, "min_length": 8, "num_beams": 2}
    out = InferenceClient(model=server.url + "/summarize").summarization(
        text, generate_parameters=params, truncation="only_first", clean_up_tokenization_spaces=False)
    expected = pipe(text, clean_up_tokenization_spaces=False, **params)[0]["summary_text"]
    assert out.summary_text == expected and expected.strip()


def test_huggingface_hubs_typed_parameters_sent_as_they_are_get_the_pipelines_summary(server, pipe):
    """huggingface_hub's SummarizationParameters serialized whole carry clean_up_tokenization_spaces: null (typed
    bool | None = None), which was a 422: a null means unset, as every other parameter's, and the answer is
    pipe(text, clean_up_tokenization_spaces=None) (the pipeline's default), map_reduce's too."""
    import dataclasses

    from huggingface_hub import SummarizationInput, SummarizationParameters

    text = "The tower is tall . It is in Paris , and it 's old ."
    body = dataclasses.asdict(SummarizationInput(inputs=text, parameters=SummarizationParameters(
        generate_parameters=PARAMS, truncation="only_first")))
    assert body["parameters"]["clean_up_tokenization_spaces"] is None
    answer = post(server, body)
    assert answer.status_code == 200, answer.text
    assert answer.json() == pipe(text, clean_up_tokenization_spaces=None, **PARAMS)
    chunked = post(server, {"inputs": text, "parameters": {"strategy": "map_reduce",
                                                           "clean_up_tokenization_spaces": None, **PARAMS}})
    assert chunked.json() == pipe(text, strategy="map_reduce", clean_up_tokenization_spaces=None, **PARAMS)


def test_the_inference_apis_options_are_taken_without_effect(server):
    """Older huggingface_hub clients and the HF docs' examples send "options": {"use_cache", "wait_for_model"}
    (422 before): the answer is the one without them (the model is always loaded; no response cache)."""
    body = {"inputs": make_docs(1, seed=6)[0]["text"], "parameters": PARAMS}
    plain = post(server, body)
    assert plain.status_code == 200, plain.text
    for options in ({"use_cache": False, "wait_for_model": True}, {"use_cache": True}, {"wait_for_model": False}, {}):
        answer = post(server, {**body, "options": options})
        assert (answer.status_code, answer.json()) == (200, plain.json()), (options, answer.text)


@pytest.mark.parametrize("options, field, error", [
    ({"wait_for_modle": True}, "options.wait_for_modle",
     "options.wait_for_modle: unknown field; options takes: use_cache, wait_for_model"),
    ({"use_cache": "false"}, "options.use_cache", 'options.use_cache: Input should be a valid boolean (got "false")'),
    ({"wait_for_model": 1}, "options.wait_for_model",
     "options.wait_for_model: Input should be a valid boolean (got 1)"),
    ({"use_cache": None}, "options.use_cache", "options.use_cache: Input should be a valid boolean (got null)"),
])
def test_a_bad_option_is_422_naming_it(server, options, field, error):
    answer = post(server, {"inputs": "the tower is tall", "options": options})
    assert answer.status_code == 422
    assert answer.json() == {"error": error, "field": field, "errors": {field: error}}


def test_settings_whose_python_form_is_a_tuple_come_as_json_lists(server, pipe):
    doc = make_docs(1, seed=5)[0]["text"]
    settings = {"sequence_bias": [[[5], 2.0], [[6, 7], -1.5]], "exponential_decay_length_penalty": [3, 1.5],
                "suppress_tokens": [8], "encoder_repetition_penalty": 1.3, "max_length": 16}
    answer = post(server, {"inputs": doc, "parameters": settings})
    assert answer.status_code == 200 and answer.json() == pipe(doc, **settings), answer.text


@pytest.mark.parametrize("name", ["bos_token_id", "eos_token_id", "pad_token_id", "decoder_start_token_id",
                                  "forced_bos_token_id", "forced_eos_token_id", "output_scores", "output_logits",
                                  "output_attentions", "output_hidden_states", "return_dict_in_generate",
                                  "prompt_lookup_num_tokens", "max_matching_ngram_size", "num_beam_groups",
                                  "diversity_penalty", "force_words_ids", "constraints", "penalty_alpha",
                                  "watermarking_config"])
def test_the_servers_own_generate_settings_are_no_parameters(name):
    """Token-id overrides, output switches, prompt lookup's, group and constrained beam search's and contrastive
    search's settings (which the engine does not run), and the watermark's (the checkpoint's to set: its key is the
    operator's) are the server's: refused as unknown fields (422 naming them), flat, under generate_parameters and
    under map_parameters, and absent from the OpenAPI schema."""
    import pydantic

    value = True if name.startswith(("output_", "return_")) else 1
    assert name not in GenerateParameters.model_fields and name not in SummarizeParameters.model_fields
    for body, loc in (({name: value}, (name,)), ({"generate_parameters": {name: value}}, ("generate_parameters", name)),
                      ({"strategy": "map_reduce", "map_parameters": {name: value}}, ("map_parameters", name))):
        with pytest.raises(pydantic.ValidationError) as e:
            SummarizeParameters.model_validate(body)
        assert [(error["type"], error["loc"]) for error in e.value.errors()] == [("extra_forbidden", loc)], body


def test_sampling_with_a_seed_repeats(server):
    body = {"inputs": "the tower is tall", "parameters": {"do_sample": True, "seed": 7, "max_length": 12}}
    assert post(server, body).json() == post(server, body).json()


def test_health_info_docs(server, tiny_eos_path, pipe):
    assert httpx.get(server.url + "/health").json() == {"status": "ready"}
    info = httpx.get(server.url + "/info").json()
    assert info["model"] == str(tiny_eos_path) and info["dtype"] == "float32" and info["device"] == "cpu"
    assert (info["status"], info["revision"], info["commit"]) == ("ready", None, None)   # a local folder
    assert info["limits"] == {"max_input_tokens": pipe.max_input_length, "max_rows": 8, "max_queue": 64,
                              "max_body_bytes": 20000, "request_timeout_s": 5.0,    # the CPU engine's budget: a window
                              "max_encoder_tokens": pipe.model.config.max_position_embeddings}
    assert info["generation_defaults"]["eos_token_id"] == pipe.model.generation_config.eos_token_id
    assert "num_beams" in info["parameters"] and "strategy" in info["parameters"]
    assert info["task"] == "summarization" and "/summarize" in info["routes"] and "/translate" not in info["routes"]
    assert "languages" not in info
    assert httpx.get(server.url + "/docs").status_code == 200
    schema = httpx.get(server.url + "/openapi.json").json()
    paths = schema["paths"]
    assert "/summarize" in paths and "/translate" not in paths                # the routes this model serves
    # the error answers it documents are the ones it gives (FastAPI's default 422 is {"detail": [...]})
    answers = paths["/summarize"]["post"]["responses"]
    assert {"401", "404", "408", "413", "422", "503", "504"} <= set(answers)
    documented = answers["422"]["content"]["application/json"]["schema"]["$ref"].rsplit("/", 1)[-1]
    fields = schema["components"]["schemas"][documented]["properties"]
    bad = httpx.post(server.url + "/summarize", json={"inputs": "a", "parameters": {"num_beams": "2"}})
    assert bad.status_code == 422 and set(bad.json()) == set(fields) == {"error", "field", "errors"}


def test_translate_on_a_summarization_model_is_404_naming_the_route(server):
    answer = httpx.post(server.url + "/translate", json={"inputs": "a", "parameters": {"tgt_lang": "fr"}})
    assert answer.status_code == 404 and "POST /summarize" in answer.json()["error"], answer.text
    garbled = httpx.post(server.url + "/translate", content=b"{", headers={"Content-Type": "application/json"})
    assert garbled.status_code == 404                         # refused by route before the body is looked at


# ---------------------------------------------------------------------------------------------- errors

@pytest.mark.parametrize("body, field, words", [
    ({"inputs": "a", "parameters": {"num_beams": "2"}}, "parameters.num_beams", "valid integer"),
    ({"inputs": "a", "parameters": {"bogus": 1}}, "parameters.bogus", "parameters takes: max_length"),
    ({"inputs": "a", "parameters": {"generate_parameters": {"strategy": "map_reduce"}}},
     "parameters.generate_parameters.strategy", "generate_parameters takes: max_length"),
    # a setting sent under generate_parameters (the newer API's form) is named there
    ({"inputs": "a", "parameters": {"generate_parameters": {"num_beams": 0}}},
     "parameters.generate_parameters.num_beams", "num_beams"),
    ({"inputs": "a", "parameters": {"generate_parameters": {"num_beams": 16}}},
     "parameters.generate_parameters.num_beams", "max_rows=8"),
    ({"inputs": "a", "parameters": {"generate_parameters": {"do_sample": True, "temperature": 1e-38, "seed": 1}}},
     "parameters.generate_parameters.temperature", "overflowed float32"),
    ({"inputs": "a", "parameters": {"num_beams": 0, "generate_parameters": {"num_beams": 2}}},
     "parameters.num_beams", "num_beams"),                           # sent in both: the flat one is in effect
    ({"inputs": "a", "parameters": {"eos_token_id": 3}}, "parameters.eos_token_id", "unknown field"),
    ({"inputs": "a", "parameters": {"renormalize_logits": "yes"}}, "parameters.renormalize_logits", "valid boolean"),
    ({"inputs": "a", "parameters": {"generator": 1}}, "parameters.generator", "unknown field"),
    ({"inputs": "a", "model": "facebook/bart-large-cnn"}, "model", "the body takes: inputs, parameters"),
    ({"inputs": 5}, "inputs", "valid string"),
    ({"inputs": ["a", 5]}, "inputs.1", "valid string"),
    ({"parameters": {}}, "inputs", "required"),
    ({"inputs": ["a", "  "]}, "inputs", "input 1 is empty"),
    ({"inputs": "a", "parameters": {"num_beams": 0}}, "parameters.num_beams", "num_beams"),
    ({"inputs": "a", "parameters": {"num_beams": 16}}, "parameters.num_beams", "max_rows=8"),
    # sampling's rows are its return sequences: a num_beams of 1 sent beside them is not the fault
    ({"inputs": "a", "parameters": {"num_beams": 1, "num_return_sequences": 16, "do_sample": True}},
     "parameters.num_return_sequences", "these settings need 16 decoder rows (`num_return_sequences` 16) but the "
                                        "engine has max_rows=8; lower `num_return_sequences` or raise max_rows"),
    ({"inputs": "a", "parameters": {"early_stopping": "sometimes"}}, "parameters.early_stopping", "'never'"),
    ({"inputs": "a \ud800 b"}, "inputs", "lone surrogate"),                  # not Unicode text: 422, not 413
    ({"inputs": "a", "parameters": {"do_sample": True, "seed": 2**64}}, "parameters.seed", "less than"),
    ({"inputs": "a", "parameters": {"do_sample": True, "seed": -1}}, "parameters.seed",
     "greater than or equal to 0"),          # TGI's u64 (torch's manual_seed would take it as 2**64 - 1)
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "num_beams": 2, "num_return_sequences": 2}},
     "parameters.num_return_sequences", "map-reduce writes one summary per chunk and per document"),
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "map_parameters": {"num_beams": 2,
                                                                                 "num_return_sequences": 2}}},
     "parameters.map_parameters.num_return_sequences", "map-reduce writes one summary per chunk and per document"),
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "chunk_overlap": -1}}, "parameters.chunk_overlap",
     "greater than or equal to 0"),
    ({"inputs": "a", "parameters": {"chunk_overlap": 2}}, "parameters.chunk_overlap", "map_reduce only"),
    ({"inputs": "a", "parameters": {"return_chunks": True}}, "parameters.return_chunks", "map_reduce only"),
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "map_parameters": {"num_beams": 0}}},
     "parameters.map_parameters.num_beams", "num_beams"),
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "num_beams": 0}}, "parameters.num_beams", "num_beams"),
    ({"inputs": "a", "parameters": {"sequence_bias": {"5": 2.0}}}, "parameters.sequence_bias", "valid list"),
    ({"inputs": "a", "parameters": {"sequence_bias": [[[5], 2.0, 1.0]]}}, "parameters.sequence_bias",
     "[[[token ids], bias], ...]"),
    ({"inputs": "a", "parameters": {"exponential_decay_length_penalty": [3]}},
     "parameters.exponential_decay_length_penalty", "(start, factor)"),
    ({"inputs": "a", "parameters": {"sequence_bias": [[[5], 1e39]]}}, "parameters.sequence_bias", "float32"),
    # a decay factor that overflows the EOS score is named, not the temperature the client left out
    ({"inputs": "a", "parameters": {"do_sample": True, "seed": 1, "exponential_decay_length_penalty": [0, -1e38]}},
     "parameters.exponential_decay_length_penalty", "overflowed float32"),
    ({"inputs": "a", "parameters": {"strategy": "map_reduce", "map_parameters": {"num_beams": 16}}},
     "parameters.map_parameters.num_beams", "--max-rows 8"),
    # the message names max_length first: the field is the one sent
    ({"inputs": "a", "parameters": {"max_new_tokens": 10**6}}, "parameters.max_new_tokens", "max_length"),
    # max_new_tokens wins over a max_length sent beside it: the field is max_new_tokens
    ({"inputs": "a", "parameters": {"max_length": 20, "max_new_tokens": 10**6}}, "parameters.max_new_tokens",
     "`max_new_tokens` must be an integer >= 1 and <= 256"),
])
def test_bad_input_is_422_naming_the_field(server, body, field, words):
    answer = post(server, body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["error"], answer.json()


def test_a_decay_starting_far_before_the_output_is_served(server):
    """A start of -2**63 (already started, as in transformers) once built a table of 2**63 entries in the engine's
    thread: this request and every later one timed out."""
    body = {"inputs": "a", "parameters": {"exponential_decay_length_penalty": [-2**63, 1.5]}}
    for _ in range(2):
        answer = post(server, body)
        assert answer.status_code == 200, answer.text


@pytest.mark.parametrize("raw, why", [(b'{"inputs": ', "Expecting value"),
                                      (b'{"inputs": "a", "parameters": {"num_beams": 1' + b"0" * 4300 + b"}}", "digits"),
                                      (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", "RecursionError"),
                                      ('{"inputs": "caf\xe9"}'.encode("latin-1"), "UnicodeDecodeError")])
def test_not_json_is_422(server, raw, why):
    """A syntax error, and what json.loads fails on otherwise (FastAPI's 400 naming no field)."""
    answer = httpx.post(server.url + "/summarize", content=raw, headers={"Content-Type": "application/json"})
    assert answer.status_code == 422 and answer.json()["field"] == "body", answer.text
    assert "not valid JSON" in answer.json()["error"] and why in answer.json()["error"], answer.text


def test_body_over_the_limit_is_413_by_length_and_by_bytes(server):
    big = {"inputs": "word " * 5000}
    answer = post(server, big)
    assert answer.status_code == 413 and "--max-body-bytes" in answer.json()["error"]

    def chunks():   # no Content-Length: the bytes themselves are counted
        data = json.dumps(big).encode()
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    answer = httpx.post(server.url + "/summarize", content=chunks(), headers={"Content-Type": "application/json"})
    assert answer.status_code == 413 and answer.json()["field"] == "body"

    # a Content-Length over the limit is answered before the body is read: here it never comes (2 MB announced,
    # 2 bytes sent), so only the header can have decided
    with socket.create_connection(("127.0.0.1", server.port), timeout=20) as raw:
        raw.sendall(b"POST /summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 2000000\r\n\r\n{}")
        head = raw.recv(4096)
    assert head.startswith(b"HTTP/1.1 413 "), head


def test_a_body_of_exactly_the_limit_is_taken_one_byte_more_is_413(server, pipe):
    """--max-body-bytes 20000 is the largest body taken: 20000 bytes are answered, 20001 are 413, whether the
    Content-Length says so or the bytes themselves are counted (no Content-Length)."""
    body = json.dumps({"inputs": "the tower is tall", "parameters": PARAMS})
    exact = body[:-1] + " " * (20000 - len(body)) + "}"                 # JSON whitespace up to the limit
    assert len(exact.encode()) == 20000

    def chunks(data: bytes):
        for i in range(0, len(data), 4096):
            yield data[i:i + 4096]

    for raw, status in ((exact.encode(), 200), (exact.encode() + b" ", 413)):
        for content in (raw, chunks(raw)):
            answer = httpx.post(server.url + "/summarize", content=content, timeout=60,
                                headers={"Content-Type": "application/json"})
            assert answer.status_code == status, (len(raw), answer.text)
            if status == 200:
                assert answer.json() == pipe("the tower is tall", **PARAMS)
            else:
                assert answer.json()["field"] == "body" and "limit of 20000 bytes" in answer.json()["error"]


def test_too_long_input_without_truncation_is_413(server, pipe):
    text = " ".join(["tower"] * 400)
    answer = post(server, {"inputs": text, "parameters": {"truncation": False}})
    assert answer.status_code == 413 and answer.json()["field"] == "inputs"
    assert '"truncation": true' in answer.json()["error"]
    named = post(server, {"inputs": text, "parameters": {"truncation": "do_not_truncate"}})   # the newer API's form
    assert (named.status_code, named.json()) == (413, answer.json())
    answer = post(server, {"inputs": text, "parameters": {"truncation": True, **PARAMS}})
    assert answer.status_code == 200 and answer.json() == pipe(text, truncation=True, **PARAMS)


def test_full_queue_is_503_with_retry_after(server):
    """A full queue is 503 + Retry-After; more inputs than the queue holds could never wait at once: 413."""
    too_many = post(server, {"inputs": ["the tower"] * 65, "parameters": {"max_new_tokens": 3}})
    assert too_many.status_code == 413 and too_many.json()["field"] == "inputs", too_many.text
    assert "--max-queue 64" in too_many.json()["error"]
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        filling = pool.submit(post, server, {"inputs": ["the tower"] * 60, "parameters": LONG}, timeout=3.5)
        deadline = time.monotonic() + 30
        while engine_metrics(server)["seq2seq_engine_queue_depth"] < 50:
            assert time.monotonic() < deadline, engine_metrics(server)
            time.sleep(0.01)
        answer = post(server, {"inputs": ["the tower"] * 10, "parameters": {"max_new_tokens": 3}})
        with pytest.raises(httpx.TimeoutException):
            filling.result()
    assert answer.status_code == 503 and answer.headers["Retry-After"] == "1"
    assert "queue is full" in answer.json()["error"]
    wait_idle(server)    # the inputs queued before the refusal were cancelled, the filling ones with their client


def test_max_time_answers_what_was_generated_in_time(server, pipe):
    """The Inference API's max_time parameter: 0 s ends every input after its first token (the pipeline's answer
    with max_time=0); a negative one is a 422 naming it."""
    doc = make_docs(1, seed=4)[0]["text"]
    answer = post(server, {"inputs": doc, "parameters": {"max_time": 0, **PARAMS}})
    assert answer.status_code == 200 and answer.json() == pipe(doc, max_time=0, **PARAMS)
    bad = post(server, {"inputs": doc, "parameters": {"max_time": -1.0}})
    assert bad.status_code == 422 and bad.json()["field"] == "parameters.max_time", bad.text


def test_stop_strings_end_summaries_as_the_pipelines(server, pipe):
    """parameters.stop_strings: the engine reads the tokens with the pipeline's tokenizer, so the answer is the
    pipeline's; an empty stop string is a 422 naming it."""
    doc = make_docs(1, seed=4)[0]["text"]
    ids = pipe(doc, return_tensors=True, **PARAMS)[0]["summary_token_ids"].tolist()
    stop = pipe.tokenizer.convert_tokens_to_string(pipe.tokenizer.convert_ids_to_tokens(ids[1:4]))[-3:]
    answer = post(server, {"inputs": doc, "parameters": {"stop_strings": [stop], **PARAMS}})
    want = pipe(doc, stop_strings=[stop], **PARAMS)
    assert answer.status_code == 200 and answer.json() == want != pipe(doc, **PARAMS), answer.text
    bad = post(server, {"inputs": doc, "parameters": {"stop_strings": [".", ""]}})
    assert bad.status_code == 422 and bad.json()["field"] == "parameters.stop_strings", bad.text
    for many, field, words in ((["."] * 9, "parameters.stop_strings", "at most 8 items"),   # bounded: each new
                               ("x" * 65, "parameters.stop_strings", "at most 64 characters"),  # set builds tables
                               (["x" * 65], "parameters.stop_strings.0", "at most 64 characters")):
        bad = post(server, {"inputs": doc, "parameters": {"stop_strings": many}})
        assert bad.status_code == 422 and bad.json()["field"] == field and words in bad.json()["error"], bad.text


SLOW_STOP_STRINGS = f"""import sys, time
from seq2seq_kit.cli import main
from seq2seq_kit.generation.stop_strings import StopStrings

build = StopStrings.__init__

def slow_build(self, vocab, stops):
    time.sleep({SLOW_S})
    build(self, vocab, stops)

StopStrings.__init__ = slow_build
sys.exit(main())
"""
# the settings of a request with a sequence_bias resolved slowly (a long one takes 0.4 s at 40,000 entries)
SLOW_SETTINGS = f"""import sys, time
from seq2seq_kit.cli import main
from seq2seq_kit.engine.scheduler import Engine

checked = Engine._checked

def slow_checked(self, *args):
    if "sequence_bias" in args[-1]:
        time.sleep({SLOW_S})
    return checked(self, *args)

Engine._checked = slow_checked
sys.exit(main())
"""


@pytest.mark.parametrize("launcher, slow", [(SLOW_STOP_STRINGS, {"stop_strings": ["ow"]}),
                                            (SLOW_SETTINGS, {"sequence_bias": [[[5], 1.0]]})],
                         ids=["stop_strings", "sequence_bias"])
def test_slow_settings_are_resolved_off_the_event_loop(tiny_eos_path, tmp_path, launcher, slow):
    """A request's settings are resolved and submitted in a worker thread: new stop strings building their tables,
    long settings being checked (each made to take SLOW_S seconds here) leave the server answering other requests
    meanwhile (either stalled every request, /health too, on its event loop), and the request itself is answered
    as the pipeline answers it."""
    (tmp_path / "launch.py").write_text(launcher)
    srv = Server(tmp_path, "--model", tiny_eos_path, "--request-timeout", str(3 * SLOW_S),
                 launcher=tmp_path / "launch.py")
    try:
        srv.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            slow_one = pool.submit(post, srv, {"inputs": "the tower is tall", "parameters": {**slow, **PARAMS}})
            time.sleep(1)
            start = time.monotonic()
            health = httpx.get(srv.url + "/health", timeout=SLOW_S)
            fast = post(srv, {"inputs": "the tower is tall", "parameters": PARAMS}, timeout=SLOW_S)
            took, answer = time.monotonic() - start, slow_one.result()
    finally:
        srv.stop()
    assert (health.status_code, fast.status_code, answer.status_code) == (200, 200, 200), (fast.text, answer.text)
    assert took < SLOW_S / 2, took
    assert answer.json() == pipeline("summarization", model=str(tiny_eos_path))("the tower is tall", **slow,
                                                                                **PARAMS)


def test_a_body_of_many_bad_items_is_described_in_linear_time():
    """40,000 list items of the wrong type (80 KB): each named, inputs.0 first, in well under a second. Naming the
    deepest field of each fault compared every pair of faults, on the event loop: 16,000 took 31 s, every other
    request (/health too) waiting meanwhile; 40,000 took minutes (this test's bound is 10 s, a hang guard)."""
    from pydantic import ValidationError

    from seq2seq_kit.server.schema import SummarizeRequest, describe_errors

    with pytest.raises(ValidationError) as invalid:
        SummarizeRequest.model_validate({"inputs": [1] * 40_000})
    start = time.monotonic()
    problems = describe_errors(invalid.value.errors(), tuple(SummarizeParameters.model_fields))
    assert time.monotonic() - start < 10
    assert len(problems) == 40_000 and next(iter(problems)) == "inputs.0" and "inputs.39999" in problems
    assert problems["inputs.0"].startswith("inputs.0: Input should be a valid string (got 1)"), problems["inputs.0"]


def test_settings_that_fail_a_search_are_422_for_that_request_only(server, pipe):
    """A temperature that overflows every probability fails its own search (generate fails on it too): 422 naming
    the parameter, while the requests stepping beside it get the pipeline's summaries."""
    docs = [d["text"] for d in make_docs(4, seed=8)]
    good = {"num_beams": 2, "min_new_tokens": 200, "max_new_tokens": 200}
    bad = {"do_sample": True, "temperature": 1e-320, "seed": 1}
    with concurrent.futures.ThreadPoolExecutor(len(docs)) as pool:
        answers = [pool.submit(post, server, {"inputs": doc, "parameters": good}) for doc in docs[:3]]
        deadline = time.monotonic() + 60
        while engine_metrics(server)["seq2seq_engine_active_rows"] < 6:     # all three stepping
            assert time.monotonic() < deadline, "the three requests never ran together"
            time.sleep(0.01)
        failed = post(server, {"inputs": docs[3], "parameters": bad})
        answers = [a.result() for a in answers]
    assert failed.status_code == 422 and failed.json()["field"] == "parameters.temperature"
    assert "sampling found no valid probabilities" in failed.json()["error"]
    assert [a.status_code for a in answers] == [200] * 3, [a.text for a in answers]
    assert [a.json() for a in answers] == [pipe(doc, **good) for doc in docs[:3]]


def test_map_reduce_requests_waiting_on_the_engine_leave_other_requests_answered(server):
    """A map_reduce request waits for its engine requests in a thread; more of them than asyncio's default thread
    pool holds (min(32, cpus + 4)) took every thread, and any other request's tokenization (a 413 here) queued
    behind all of them (here: until the 5 s request timeout ended them). Twice the pool's threads: as one ends,
    the next one's work takes its thread first."""
    threads = min(32, (os.cpu_count() or 1) + 4)
    body = {"inputs": "the tower is tall", "parameters": {"strategy": "map_reduce", **LONG}}
    with concurrent.futures.ThreadPoolExecutor(2 * threads) as pool:
        waiting = [pool.submit(post, server, body, timeout=30) for _ in range(2 * threads)]
        deadline = time.monotonic() + 30
        while engine_metrics(server)["seq2seq_engine_queue_depth"] < threads - 2:   # 2 step (max_rows 8), >= 4 wait
            assert time.monotonic() < deadline, engine_metrics(server)
            time.sleep(0.01)
        start = time.monotonic()
        too_long = post(server, {"inputs": " ".join(["tower"] * 400), "parameters": {"truncation": False}})
        took = time.monotonic() - start
        answers = [w.result() for w in waiting]
    assert too_long.status_code == 413 and took < 2.5, (too_long.status_code, took)
    assert {a.status_code for a in answers} <= {200, 504}       # LONG ends some within the 5 s, others not
    wait_idle(server)


def test_past_the_request_timeout_is_504_and_frees_the_engine(server):
    before = engine_metrics(server)["seq2seq_engine_generated_tokens_total"]
    answer = post(server, {"inputs": ["the tower is tall"] * 64, "parameters": LONG})   # 8000+ steps
    assert answer.status_code == 504 and "request timeout (5 s)" in answer.json()["error"]
    done = wait_idle(server)["seq2seq_engine_generated_tokens_total"] - before
    assert done < 64 * 4 * 250 / 2
    assert "never retrieved" not in server.log.read_text()     # asyncio's line for the cancelled wait's future


# the server's tokenization of a text holding SLOW takes SLOW_S seconds longer (a megabyte of text on a loaded machine)
SLOW_TOKENIZER = f"""import sys, time
from seq2seq_kit.cli import main
from seq2seq_kit.summarization import SummarizationPipeline

tokenize = SummarizationPipeline.preprocess

def preprocess(self, texts, truncation=None):
    if any("SLOW" in text for text in texts):
        time.sleep({SLOW_S})
    return tokenize(self, texts, truncation)

SummarizationPipeline.preprocess = preprocess
sys.exit(main())
"""


def test_the_request_timeout_covers_tokenization(tiny_eos_path, tmp_path):
    """A request whose tokenization outlasts --request-timeout is answered 504 at the timeout (it was tokenized to
    the end first, then 504), the server answering others meanwhile; its rows never reach the engine."""
    launcher = tmp_path / "slow_tokenizer.py"
    launcher.write_text(SLOW_TOKENIZER)
    srv = Server(tmp_path, "--model", tiny_eos_path, "--request-timeout", "1.5", launcher=launcher)
    try:
        srv.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            start = time.monotonic()
            slow = pool.submit(post, srv, {"inputs": ["the tower is SLOW", "tall"], "parameters": PARAMS})
            time.sleep(0.5)
            health = httpx.get(srv.url + "/health", timeout=2)             # the event loop is not blocked
            fast = post(srv, {"inputs": "the tower is tall", "parameters": PARAMS})
            answer, took = slow.result(), time.monotonic() - start
        time.sleep(max(0.0, SLOW_S + 1 - (time.monotonic() - start)))         # the tokenizer's thread is done
        m = engine_metrics(srv)
    finally:
        srv.stop()
    assert (health.status_code, fast.status_code) == (200, 200), fast.text
    assert (answer.status_code, answer.json()) == (504, {
        "error": "no answer within the server's request timeout (1.5 s); send fewer or shorter inputs, or lower "
                 "max_length / num_beams", "field": None})
    assert 1.5 <= took < SLOW_S / 2, took
    assert (m["seq2seq_engine_queue_depth"], m["seq2seq_engine_active_rows"]) == (0, 0)
    generated_by_fast = m["seq2seq_engine_generated_tokens_total"]
    assert 0 < generated_by_fast <= 2 * PARAMS["max_length"], m       # the fast request's 2 beams only
    assert "Traceback" not in srv.log.read_text() and "never retrieved" not in srv.log.read_text()


def requests_counted(server, status: str, route: str = "/summarize") -> float:
    """/metrics' count of requests to `route` answered (or left) with `status`."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(rf'^seq2seq_http_requests_total{{route="{route}",status="{status}"}} (\S+)$', text, re.M)
    return float(found.group(1)) if found else 0.0


def test_a_disconnected_client_frees_its_engine_rows(server):
    before = engine_metrics(server)["seq2seq_engine_generated_tokens_total"]
    with pytest.raises(httpx.ReadTimeout):
        post(server, {"inputs": ["the tower is tall"] * 32, "parameters": LONG}, timeout=0.5)
    done = wait_idle(server)["seq2seq_engine_generated_tokens_total"] - before
    assert 0 < done < 32 * 4 * 250 / 2
    assert "never retrieved" not in server.log.read_text()


# Values of every JSON type, edge numbers and shapes, for random bodies (test_random_bodies_...)
ANY = [0, -1, 1, 2, 3, 7, 64, 10**6, 2**63, 2**64, -2**63 - 1, 0.0, 0.5, 1.5, -0.5, 1e-30, 1e308, "x", "", "never",
       "map_reduce", True, False, None, [], [1], [2, 1.5], [[1]], [[5], [6, 7]], [[[5], 2.0]], [[[5], "a"]], {},
       {"a": 1}, {"max_length": 5}, ["a", "b"], "\ud800", [3, 2.0], [-5, 2.0]]


def random_parameters(rng: random.Random, names: list[str], values: list = ANY) -> dict:
    out = {}
    for _ in range(rng.randint(0, 5)):
        name = rng.choice(names + ["bogus", "generate_parameters", "map_parameters"])
        nested = name in ("generate_parameters", "map_parameters") and rng.random() < 0.7
        out[name] = random_parameters(rng, sorted(GenerateParameters.model_fields), values) if nested \
            else rng.choice(values)
    return out


def test_random_bodies_get_an_answer_or_a_json_error_naming_a_field(server):
    """150 seeded random bodies (every parameter with values of every JSON type, unknown keys, nested settings,
    NaN / Infinity literals, options, "stream"): each answer is a summary list, a stream that ends with the answer or
    with a named error, or a 4xx / 503 / 504 JSON error with its field, never a 500. (A campaign of 3900 such
    bodies found none.)"""
    check_random_bodies(server, "/summarize", sorted(SummarizeParameters.model_fields), seed=7)


def check_random_bodies(server, route: str, names: list[str], seed: int, count: int = 150,
                        values: list | None = None, usual: dict | None = None) -> None:
    """count seeded random bodies at route (parameters among names, their values from ANY and `values`, most often
    beside `usual`'s): each answered, or refused with a JSON error naming its field."""
    rng = random.Random(seed)
    choices = ANY + (values or [])
    statuses = set()
    for i in range(count):
        body = {"inputs": rng.choice(["The tower is tall. It is in Paris.", "", ["x y", "one two"], [], 5, None,
                                      "word " * rng.randint(1, 300), ["a"] * rng.randint(1, 70), {"x": 1}])}
        if rng.random() < 0.9:
            body["parameters"] = {**(usual if usual and rng.random() < 0.8 else {}),
                                  **random_parameters(rng, names, choices)}
        if rng.random() < 0.1:
            body["options"] = rng.choice([{}, {"use_cache": False}, {"wait_for_model": "yes"}, [], {"x": 1}])
        if rng.random() < 0.15:
            body["stream"] = rng.choice([True, True, False, 1, "yes", None])
        text = json.dumps(body)
        if rng.random() < 0.05:
            text = text.replace("0.5", rng.choice(["NaN", "Infinity", "1e400"]), 1)
        answer = httpx.post(server.url + route, content=text, timeout=60, headers={"Content-Type": "application/json"})
        statuses.add(answer.status_code)
        assert answer.status_code in (200, 408, 413, 422, 503, 504), (i, answer.status_code, answer.text, text)
        if answer.headers["content-type"].startswith("text/event-stream"):
            last = json.loads(answer.text.strip().splitlines()[-1].removeprefix("data:"))
            assert last.get("generated_text") is not None or (
                last.get("error_type") in ("generation", "incomplete_generation")
                and "internal error" not in last["error"]), (i, last, text)
        elif answer.status_code == 200:
            key = {"/summarize": "summary_text", "/translate": "translation_text"}[route]
            assert isinstance(answer.json(), list) and all(key in a for a in answer.json()), text
        else:
            error = answer.json()
            assert error["error"] and "field" in error, (i, error, text)
    assert {200, 422} <= statuses, statuses


def test_a_search_failing_on_the_settings_names_the_parameter_sent(server):
    """The engine's error for beam sampling whose temperature overflows every score names several parameters; the
    answer's field is the one the client sent (it was the first the message names)."""
    bad = {"do_sample": True, "num_beams": 2, "temperature": 1e-38, "seed": 1, "max_new_tokens": 10}
    answer = post(server, {"inputs": "the tower is tall", "parameters": bad})
    assert answer.status_code == 422 and answer.json()["field"] == "parameters.temperature", answer.text


def test_a_renormalized_row_with_every_token_banned_names_the_ban_not_renormalize_logits(server):
    """Sampling where EOS is both forced (the last step) and suppressed, with renormalize_logits (which makes NaN
    of the empty row): the field is the banning parameter the client sent."""
    bad = {"do_sample": True, "seed": 1, "max_new_tokens": 1, "begin_suppress_tokens": [2], "renormalize_logits": True}
    answer = post(server, {"inputs": "the tower is tall", "parameters": bad})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "parameters.begin_suppress_tokens", answer.text
    assert "every score of a row is NaN" in answer.json()["error"]


@pytest.mark.parametrize("length", [{"min_length": 2}, {"min_new_tokens": 2}])
def test_a_temperature_that_empties_every_row_is_named_beside_a_minimum_length(server, length):
    """Beam sampling whose temperature sends every score to -inf: a minimum length (it bans only EOS) sent beside
    it is not the fault; the field names the temperature."""
    bad = {"do_sample": True, "num_beams": 2, "temperature": 1e-44, "seed": 1, "max_new_tokens": 10, **length}
    answer = post(server, {"inputs": "the tower is tall", "parameters": bad})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "parameters.temperature", answer.text
    assert "every score of a row is -inf" in answer.json()["error"]


# a text of 4500 one-token words: 18 chunks of the tiny model's 256-token window; beam 4 for 250 tokens each
LONG_DOCUMENT = {"inputs": [" ".join(["a"] * 4500)] * 2,
                 "parameters": {"strategy": "map_reduce", "map_parameters": LONG, **LONG}}
LONG_DOCUMENT_ROWS = 2 * 18 * 4 * 250          # the rows the chunks alone would step


def test_a_map_reduce_request_past_the_timeout_is_504_and_frees_the_engine(server):
    before = engine_metrics(server)["seq2seq_engine_generated_tokens_total"]
    answer = post(server, LONG_DOCUMENT)
    assert answer.status_code == 504, answer.text
    done = wait_idle(server, timeout=5)["seq2seq_engine_generated_tokens_total"] - before
    assert 0 < done < LONG_DOCUMENT_ROWS / 2


def test_a_disconnected_map_reduce_client_frees_its_engine_rows(server):
    before = engine_metrics(server)["seq2seq_engine_generated_tokens_total"]
    with pytest.raises(httpx.ReadTimeout):
        post(server, LONG_DOCUMENT, timeout=1)
    done = wait_idle(server, timeout=5)["seq2seq_engine_generated_tokens_total"] - before
    assert 0 < done < LONG_DOCUMENT_ROWS / 2


def test_a_client_gone_while_waiting_for_its_answer_counts_499(server):
    """A client that leaves while its summaries are made (tokenized or in the engine) is counted 499 by /metrics,
    not as a status the server answered (README: "whose client disconnects (/metrics counts it as 499)")."""
    left, failed = requests_counted(server, "499"), requests_counted(server, "500")
    with pytest.raises(httpx.ReadTimeout):
        post(server, {"inputs": ["the tower is tall"] * 16, "parameters": LONG}, timeout=1)
    deadline = time.monotonic() + 30
    while requests_counted(server, "499") < left + 1:
        assert time.monotonic() < deadline, (left, requests_counted(server, "499"), server.log.read_text()[-2000:])
        time.sleep(0.05)
    assert requests_counted(server, "500") == failed
    wait_idle(server)


def test_a_client_gone_while_sending_its_body_counts_499_not_500(server):
    """No answer reaches a client that closed its connection mid-body: /metrics counted it as a 500 (its default
    status), an error the server never made; it is a 499, as a client gone while its summary was made."""
    def count(status: str) -> float:
        text = httpx.get(server.url + "/metrics", timeout=30).text
        found = re.search(rf'^seq2seq_http_requests_total{{route="/summarize",status="{status}"}} (\S+)$', text, re.M)
        return float(found.group(1)) if found else 0.0

    before = count("499"), count("500")
    for _ in range(2):
        with socket.create_connection(("127.0.0.1", server.port)) as s:
            s.sendall(b"POST /summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: 100\r\n\r\n{\"inputs\": ")
            time.sleep(0.2)
    deadline = time.monotonic() + 10
    while count("499") < before[0] + 2:
        assert time.monotonic() < deadline, (before, count("499"), count("500"))
        time.sleep(0.05)
    assert count("500") == before[1]


def half_a_body(server) -> socket.socket:
    """A connection that sent a POST's headers and half its body, then nothing."""
    s = socket.create_connection(("127.0.0.1", server.port))
    s.sendall(b"POST /summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
              b"Content-Length: 40\r\n\r\n{\"inputs\": \"the to")
    return s


def answer_on(s: socket.socket, timeout: float) -> tuple[int, dict]:
    """The status and JSON body of the HTTP answer that arrives on s."""
    s.settimeout(timeout)
    data = b""
    while b"\r\n\r\n" not in data or not data.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        assert chunk, f"the connection closed: {data!r}"
        data += chunk
    head, body = data.split(b"\r\n\r\n", 1)
    return int(head.split()[1]), json.loads(body)


def test_a_body_slower_than_the_request_timeout_is_408(server):
    """--request-timeout counts from arrival: a client that sends half its body and stalls gets a 408 naming the
    body once it has passed (it held its connection, and a drain, for ever)."""
    with half_a_body(server) as s:
        start = time.monotonic()
        status, answer = answer_on(s, timeout=30)
    assert status == 408 and answer["field"] == "body" and "request timeout (5 s)" in answer["error"]
    assert 5 <= time.monotonic() - start < 15


def test_requests_still_running_when_the_drain_runs_out_get_a_503(tiny_eos_path, tmp_path):
    """SIGTERM with --drain-timeout 2: a request that cannot finish in time, and one whose body stalls, are
    answered 503 (JSON, Retry-After) before uvicorn would cancel them (a plain-text 500 and a traceback)."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--max-rows", "4", "--drain-timeout", "2")
    try:
        srv.wait_ready()
        body = {"inputs": ["the tower is tall"] * 64, "parameters": LONG}   # 64 x 250 beam steps, 4 rows at a time
        with concurrent.futures.ThreadPoolExecutor(1) as pool, half_a_body(srv) as stalled:
            running = pool.submit(post, srv, body)
            while engine_metrics(srv)["seq2seq_engine_active_rows"] == 0:
                time.sleep(0.01)
            srv.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            stalled_answer = answer_on(stalled, timeout=30)
            answer, took = running.result(), time.monotonic() - signalled
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    assert answer.status_code == 503 and "drain timeout ran out" in answer.json()["error"], answer.text
    assert answer.headers["Retry-After"] == "1"
    # not before the grace (1 s of 503s to new requests) and the drain timeout (2 s), less the 0.5 s margin
    assert took >= 1 + 2 - 0.5 - 0.05, took
    assert stalled_answer[0] == 503 and "drain timeout ran out" in stalled_answer[1]["error"]
    assert "Traceback" not in srv.log.read_text()


def test_a_request_whose_body_was_coming_in_at_sigterm_is_answered(tiny_eos_path, tmp_path, pipe):
    """A request that arrived before SIGTERM is answered, even when the rest of its body comes in after it (it got
    503 "the server is draining": the draining status was read once its body was in); one arriving after gets 503."""
    srv = Server(tmp_path, "--model", tiny_eos_path)
    body = json.dumps({"inputs": "the tower is tall", "parameters": PARAMS}).encode()
    try:
        srv.wait_ready()
        with socket.create_connection(("127.0.0.1", srv.port)) as s:
            s.sendall(b"POST /summarize HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:10]))
            time.sleep(0.2)
            srv.proc.send_signal(signal.SIGTERM)
            health = httpx.get(srv.url + "/health", timeout=5)                             # draining now
            assert (health.status_code, health.json(), health.headers["Retry-After"]) == (503, {"status": "draining"},
                                                                                           "1")
            late = post(srv, {"inputs": "the tower is tall", "parameters": PARAMS}, timeout=5)
            s.sendall(body[10:])
            s.settimeout(30)
            answer = b""
            while not answer.endswith(b"]") and not answer.endswith(b"}"):
                chunk = s.recv(65536)
                assert chunk, answer
                answer += chunk
        assert srv.proc.wait(90) == 0, srv.log.read_text()
    finally:
        srv.stop()
    head, data = answer.split(b"\r\n\r\n", 1)
    assert head.startswith(b"HTTP/1.1 200 "), answer
    assert json.loads(data) == pipe("the tower is tall", **PARAMS)
    assert late.status_code == 503 and late.json()["error"] == "the server is draining; retry after 1 s"


@pytest.mark.parametrize("gap", [0.2, 1.5], ids=["within-the-grace", "after-the-grace"])
def test_a_second_ctrl_c_answers_the_running_requests_503_and_exits_0(tiny_eos_path, tmp_path, gap):
    """Ctrl-C twice while a request runs: it is answered 503 (JSON, Retry-After) at once and the server exits 0;
    uvicorn's force quit cancelled it instead (a plain-text 500 and a traceback in the log), and so did a second
    Ctrl-C that came after the draining grace period (DrainingServer.GRACE_S), taken for the third."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--max-rows", "4")
    try:
        srv.wait_ready()
        body = {"inputs": ["the tower is tall"] * 64, "parameters": LONG}   # 64 x 250 beam steps, 4 rows at a time
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            running = pool.submit(post, srv, body)
            while engine_metrics(srv)["seq2seq_engine_active_rows"] == 0:
                time.sleep(0.01)
            srv.proc.send_signal(signal.SIGINT)
            time.sleep(gap)
            srv.proc.send_signal(signal.SIGINT)
            interrupted = time.monotonic()
            answer, took = running.result(), time.monotonic() - interrupted
        assert srv.proc.wait(30) == 0
    finally:
        srv.stop()
    assert answer.status_code == 503 and took < 3, (answer.text, took)     # at once, not when the drain runs out
    assert answer.json() == {"error": "the server shut down (its drain timeout ran out, or a second Ctrl-C stopped "
                                      "it) before this request was answered; retry after 1 s", "field": None}
    assert answer.headers["Retry-After"] == "1"
    assert "Traceback" not in srv.log.read_text()


def test_unknown_route_and_metrics_by_status(server):
    """/metrics counts requests by route and status (this test sends one of each it reads: it runs alone too)."""
    assert post(server, {"inputs": "the tower", "parameters": PARAMS}).status_code == 200
    assert post(server, {"inputs": "the tower", "parameters": {"num_beams": "four"}}).status_code == 422
    assert post(server, {"inputs": "tower " * 5000}).status_code == 413                # over --max-body-bytes
    answer = httpx.get(server.url + "/nope")
    assert answer.status_code == 404 and answer.json() == {"error": "Not Found: GET /nope", "field": None}
    answer = httpx.get(server.url + "/summarize")
    assert answer.status_code == 405 and answer.json()["error"] == "Method Not Allowed: GET /summarize"
    text = httpx.get(server.url + "/metrics").text
    for route, status in (("/summarize", 200), ("/summarize", 422), ("/summarize", 413), ("/other", 404)):
        if route == "/other":
            route = "other"
        assert re.search(rf'seq2seq_http_requests_total{{route="{route}",status="{status}"}} [1-9]', text), text
    assert re.search(r'seq2seq_http_request_latency_seconds_count{route="/summarize"} [1-9]', text)
    # the latency histogram times the task routes only (this test's GET /nope and /summarize are not in it)
    timed = set(re.findall(r'^seq2seq_http_request_latency_seconds_count{route="([^"]*)"}', text, re.M))
    assert "/summarize" in timed and timed <= {"/summarize", "/translate"}, timed


def test_a_trailing_slash_is_a_json_404_naming_the_route(server):
    """POST /summarize/ got Starlette's bare 307 (an empty body; a client that follows it may resend without the
    body): each route has one path, and the answer names it."""
    body = {"inputs": "the tower is tall", "parameters": PARAMS}
    answer = httpx.post(server.url + "/summarize/", json=body, timeout=60)
    assert (answer.status_code, answer.json()) == (404, {
        "error": "Not Found: POST /summarize/ (this server's routes end without a slash: send POST /summarize)",
        "field": None})
    assert "location" not in answer.headers
    for path in ("/health/", "/info/", "/metrics//"):
        answer = httpx.get(server.url + path)
        assert (answer.status_code, answer.json()) == (404, {
            "error": f"Not Found: GET {path} (this server's routes end without a slash: send GET {path.rstrip('/')})",
            "field": None})
    other = httpx.post(server.url + "/translate/", json={"inputs": "a", "parameters": {"tgt_lang": "fr"}})
    assert (other.status_code, other.json()) == (404, {
        "error": "this server's model is a summarization model: it answers POST /summarize, not POST /translate",
        "field": None})
    for path in ("/nope/", "/"):
        answer = httpx.get(server.url + path)
        assert (answer.status_code, answer.json()) == (404, {"error": f"Not Found: GET {path}", "field": None})
    # the hint names the method the route takes: GET /summarize and POST /health would be 405s
    for method, path, fix in (("GET", "/summarize/", "POST /summarize"), ("POST", "/health/", "GET /health"),
                              ("PUT", "/info/", "GET /info")):
        answer = httpx.request(method, server.url + path)
        assert (answer.status_code, answer.json()) == (404, {
            "error": f"Not Found: {method} {path} (this server's routes end without a slash: send {fix})",
            "field": None})


def test_head_is_answered_as_get_without_a_body(server):
    """HEAD /health (uptime monitors' default probe) was 405: FastAPI's GET routes take GET alone."""
    for path in ("/health", "/info", "/docs", "/openapi.json"):
        get, head = httpx.get(server.url + path), httpx.head(server.url + path)
        assert (head.status_code, head.content) == (200, b""), path
        assert head.headers["content-type"] == get.headers["content-type"]
        assert head.headers["content-length"] == str(len(get.content)), path
    head = httpx.head(server.url + "/metrics")
    assert (head.status_code, head.content, head.headers["content-type"]) == (200, b"", CONTENT_TYPE_LATEST)
    head = httpx.head(server.url + "/summarize")                   # a task route takes POST alone
    assert (head.status_code, head.headers["allow"]) == (405, "POST")
    text = httpx.get(server.url + "/metrics").text
    assert re.search(r'^seq2seq_http_requests_total{route="/summarize",status="405"} [1-9]', text, re.M)


def test_a_local_folder_inside_a_folder_named_snapshots_has_no_commit(tiny_eos_path, tmp_path):
    """/info's commit is a Hub snapshot's, not the name of a local directory that happens to sit in `snapshots/`."""
    import shutil

    local = tmp_path / "snapshots" / "my-finetune"
    shutil.copytree(tiny_eos_path, local)
    srv = Server(tmp_path, "--model", local)
    try:
        srv.wait_ready()
        assert httpx.get(srv.url + "/info").json()["commit"] is None
    finally:
        srv.stop()


def test_a_hub_snapshot_is_served_with_its_commit_and_revision(tiny_eos_path, tmp_path):
    """/info names what a Hub model id resolved to: the snapshot's commit, and the --revision asked for (a cache
    laid out as huggingface_hub lays it out, read offline)."""
    from hub_cache import read_dir, write_cache

    commits = write_cache(tmp_path / "cache", "org/tiny-eos", {"main": read_dir(tiny_eos_path)})
    srv = Server(tmp_path, "--model", "org/tiny-eos", "--revision", "main", "--cache-dir", tmp_path / "cache",
                 env={"HF_HUB_OFFLINE": "1"})
    try:
        srv.wait_ready()
        info = httpx.get(srv.url + "/info").json()
    finally:
        srv.stop()
    assert (info["model"], info["revision"], info["commit"]) == ("org/tiny-eos", "main", commits["main"]), info


def test_an_int8_server_says_int8(tiny_eos_path, tmp_path):
    """/info's dtype is what serves: an int8 model's (its float parts, model.dtype, are float32)."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--dtype", "int8")
    try:
        srv.wait_ready()
        assert httpx.get(srv.url + "/info").json()["dtype"] == "int8"
        assert post(srv, {"inputs": "a b c"}).status_code == 200
    finally:
        assert srv.stop() == 0
    assert "int8" in srv.log.read_text()


# ---------------------------------------------------------------------------------------------- key, drain

def test_api_key_and_sigterm_drains_every_accepted_request(tiny_eos_path, tmp_path, pipe):
    srv = Server(tmp_path, "--model", tiny_eos_path, "--max-rows", "4", "--api-key-env", "S2S_KEY",
                 env={"S2S_KEY": KEY})
    auth = {"Authorization": f"Bearer {KEY}"}
    try:
        srv.wait_ready()
        assert post(srv, {"inputs": "a"}).status_code == 401
        wrong = post(srv, {"inputs": "a"}, headers={"Authorization": f"Bearer {KEY}x"})
        assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"] == "Bearer"
        assert httpx.get(srv.url + "/metrics").status_code == 401
        for header, status in ((f"bearer {KEY}", 200), (f"BEARER {KEY}", 200), (KEY, 401), (f"Basic {KEY}", 401),
                               (f"Bearer  {KEY}", 401)):                # the scheme's case is free (RFC 9110)
            assert httpx.get(srv.url + "/metrics", headers={"Authorization": header}).status_code == status, header
        assert httpx.get(srv.url + "/health").status_code == 200           # probes need no key
        assert httpx.head(srv.url + "/health").status_code == 200
        # every other route needs it: the model and its settings (/info, /openapi.json), the other task's route
        # (its 404 would say what the model is) and an unknown route
        for method, path in (("GET", "/info"), ("HEAD", "/info"), ("GET", "/docs"), ("GET", "/openapi.json"),
                             ("POST", "/translate"), ("GET", "/nope")):
            refused = httpx.request(method, srv.url + path)
            assert (refused.status_code, refused.headers["WWW-Authenticate"]) == (401, "Bearer"), (method, path)
        assert httpx.get(srv.url + "/info", headers=auth).json()["status"] == "ready"

        settings = {"num_beams": 4, "min_new_tokens": 30, "max_new_tokens": 30}   # one at a time (max_rows 4)
        docs = [d["text"] for d in make_docs(6, seed=5)]
        greedy = {"num_beams": 1, "min_new_tokens": 30, "max_new_tokens": 30}
        started = threading.Event()

        def stream():                                   # behind every doc in the engine's queue
            body = {"inputs": docs[0], "parameters": greedy, "stream": True}
            with httpx.stream("POST", srv.url + "/summarize", json=body, headers=auth, timeout=60) as answer:
                started.set()                           # its 200: submitted to the engine
                return [json.loads(line[5:]) for line in answer.iter_lines() if line.startswith("data:")]

        with concurrent.futures.ThreadPoolExecutor(len(docs) + 1) as pool:
            sent = [pool.submit(lambda d: (post(srv, {"inputs": d, "parameters": settings}, headers=auth),
                                           time.monotonic()), d) for d in docs]
            deadline = time.monotonic() + 60
            while accepted(srv, auth) < len(docs):   # in the engine or answered: past the door (a request only
                assert time.monotonic() < deadline, summarize_counts(srv, auth)   # in progress may still get 503)
                time.sleep(0.01)
            streamed_events = pool.submit(stream)
            assert started.wait(60)
            srv.proc.send_signal(signal.SIGTERM)
            signalled = time.monotonic()
            refused = None
            while refused is None:   # draining: /health answers 503 for a moment, then nothing is accepted
                try:
                    assert httpx.get(srv.url + "/health", timeout=5).status_code == 503
                except httpx.TransportError:
                    refused = time.monotonic()
                assert time.monotonic() - signalled < 30
            answers, events = [f.result() for f in sent], streamed_events.result()
        assert srv.proc.wait(90) == 0, srv.log.read_text()
    finally:
        srv.stop()
    assert [a.status_code for a, _ in answers] == [200] * len(docs)
    assert events[-1]["generated_text"] == pipe(docs[0], **greedy)[0]["summary_text"] and len(events) == 30
    assert any(t > signalled for _, t in answers), "every request finished before SIGTERM: nothing was drained"
    for doc, (answer, _) in zip(docs, answers):
        assert answer.json() == pipe(doc, **settings)


def test_a_signal_during_the_load_leaves_the_service_draining(tiny_eos_path):
    """SIGTERM while the model loads in its thread: the load's end kept setting the status back to ready, so
    /health answered 200 and new requests were served until uvicorn shut down. The load now leaves a draining
    service draining and closes the engine it made. (In process: over HTTP the window depends on load timing.)"""
    from seq2seq_kit import EngineClosed
    from seq2seq_kit.server.app import Service, Settings

    service = Service(Settings(model=str(tiny_eos_path)))
    service.stop_accepting()                       # what DrainingServer.handle_exit does on the signal
    service.load()
    assert service.status == "draining"
    with pytest.raises(EngineClosed):
        service.engine.submit([5, 6, 7])


# the server's model load is the real one over and over until the file $LOAD_GATE names exists (at most 60 s): a long
# load, inside torch most of the time as a large checkpoint's, that the test ends
GATED_LOAD = """import os, sys, time
from pathlib import Path
import seq2seq_kit.server.app as app
from seq2seq_kit.cli import main

load = app.load_model_and_tokenizer

def gated_load(*args, **kwargs):
    gate, deadline = Path(os.environ["LOAD_GATE"]), time.monotonic() + 60
    while True:
        loaded = load(*args, **kwargs)
        if gate.exists() or time.monotonic() > deadline:
            return loaded

app.load_model_and_tokenizer = gated_load
sys.exit(main())
"""


@contextmanager
def loading_server(tiny_eos_path, tmp_path, *args):
    """(server, gate): a server answering /health 503, its model loading until the test creates the file `gate`;
    stopped at the end (its load let go first)."""
    launcher, gate = tmp_path / "gated_load.py", tmp_path / "load-gate"
    launcher.write_text(GATED_LOAD)
    srv = Server(tmp_path, "--model", tiny_eos_path, *args, env={"LOAD_GATE": str(gate)}, launcher=launcher)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert srv.proc.poll() is None and time.monotonic() < deadline, srv.log.read_text()
            try:
                health = httpx.get(srv.url + "/health", timeout=5)
                assert (health.status_code, health.json(), health.headers["Retry-After"]) == (
                    503, {"status": "loading"}, "1")
                break
            except httpx.TransportError:
                time.sleep(0.1)
        yield srv, gate
    finally:
        gate.touch()
        srv.stop()


def in_progress(server, route: str) -> int:
    """The requests to `route` being answered, per the server's /metrics."""
    text = httpx.get(server.url + "/metrics", timeout=30).text
    found = re.search(rf'^seq2seq_http_requests_in_progress{{route="{route}"}} (\S+)$', text, re.M)
    return int(float(found.group(1))) if found else 0


def test_the_other_route_whose_body_ends_after_the_load_is_404_naming_the_route(tiny_eos_path, tmp_path):
    """POST /translate to a summarization model while it loads passes the Gate's route check (the model's kind is
    not known yet); its body ending once the model is loaded, it got a 500 (an AssertionError; a 422 for a bad
    body): it is the 404 naming POST /summarize that the same request gets after the load."""
    bodies = (b'{"inputs": "Le chat est noir."}', b'{"inputs": }')
    with loading_server(tiny_eos_path, tmp_path) as (srv, gate):
        sockets = [socket.create_connection(("127.0.0.1", srv.port)) for _ in bodies]
        for s, body in zip(sockets, bodies):
            s.sendall(b"POST /translate HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                      b"Content-Length: %d\r\n\r\n%s" % (len(body), body[:5]))
        deadline = time.monotonic() + 30
        while in_progress(srv, "/translate") < len(bodies):     # both past the route check, reading their bodies
            assert time.monotonic() < deadline, srv.log.read_text()
            time.sleep(0.05)
        gate.touch()
        srv.wait_ready()
        answers = []
        for s, body in zip(sockets, bodies):
            with s:
                s.sendall(body[5:])
                answers.append(answer_on(s, timeout=30))
        after = httpx.post(srv.url + "/translate", json={"inputs": "Le chat est noir."}, timeout=30)
    error = {"error": "this server's model is a summarization model: it answers POST /summarize, not POST /translate",
             "field": None}
    assert answers == [(404, error)] * len(bodies) and (after.status_code, after.json()) == (404, error), answers
    assert "Traceback" not in srv.log.read_text()


def test_a_route_the_gate_let_through_as_the_load_ended_is_404_naming_the_route(tiny_eos_path):
    """The load's thread may end between the Gate's route check (the model's kind unknown) and the route: the
    route answers the Gate's 404, not an AssertionError's 500. (In process: over HTTP the window is the load's.)"""
    from seq2seq_kit.server.app import Refusal, Service, Settings

    service = Service(Settings(model=str(tiny_eos_path)))
    service.status, service.task, service.pipe = "ready", "summarization", object()     # what the load's end sets
    with pytest.raises(Refusal) as refused:
        service.serving("translation", time.monotonic())
    assert refused.value.status == 404 and "it answers POST /summarize, not POST /translate" in refused.value.message


def test_inputs_are_tokenized_off_the_event_loop(tiny_eos_path):
    """A body's megabyte of text takes seconds to tokenize: the route's preprocess runs in a worker thread, so
    /health and other requests are answered meanwhile (measured: /health waited 1.5-8 s behind four 600 KB
    bodies, 0.1 s after). In process: which thread tokenizes, not a timing."""
    import asyncio
    import threading

    from types import SimpleNamespace

    from seq2seq_kit.server.app import Service, Settings, rows_of

    pipe, threads = pipeline("summarization", model=str(tiny_eos_path)), []
    preprocess = pipe.preprocess
    pipe.preprocess = lambda *args: threads.append(threading.current_thread()) or preprocess(*args)

    async def connected():
        return False

    async def route():
        http = SimpleNamespace(state=SimpleNamespace(arrival=time.monotonic()), is_disconnected=connected)
        service = Service(Settings(model=str(tiny_eos_path)))
        return threading.current_thread(), await rows_of(pipe, ["the tower is tall"], True, http, service)

    loop_thread, rows = asyncio.run(route())
    assert rows == preprocess(["the tower is tall"], True).rows and threads and threads[0] is not loop_thread


def test_serve_usage_errors(tmp_path, capsys):
    from seq2seq_kit.cli import main

    assert main(["serve", "--replicas", "2"]) == 2
    assert main(["serve", "--ray-address", "auto"]) == 2
    assert main(["serve", "--ray", "--autoscale", "3:1"]) == 2
    capsys.readouterr()
    # --ray=ADDRESS is read as --ray --ray-address ADDRESS, as summarize reads it
    assert main(["serve", "--ray=auto", "--autoscale", "3:1"]) == 2
    assert "MIN" in capsys.readouterr().err
    assert main(["serve", "--api-key-env", "S2S_SURELY_UNSET_VAR"]) == 2
    assert main(["serve", "--port", "70000"]) == 2             # not a port (uvicorn would bind 70000 - 65536)
    assert "must be a port number (1-65535)" in capsys.readouterr().err
    assert main(["serve", "--max-encoder-tokens", "0"]) == 2
    assert "--max-encoder-tokens: must be a positive integer, got '0'" in capsys.readouterr().err


def test_serve_ray_passes_its_replicas_autoscale_and_address(capsys, monkeypatch):
    """serve --ray's flags reach serve_on_ray as given (Ray stands in: nothing is deployed); --autoscale MIN:MAX
    takes 0 <= MIN <= MAX, MAX >= 1, and --replicas and --autoscale exclude each other."""
    from seq2seq_kit.cli import main
    from seq2seq_kit.server import ray_serve

    calls = []
    monkeypatch.setattr(ray_serve, "serve_on_ray", lambda settings, **kwargs: calls.append((settings, kwargs)))
    assert main(["serve", "--ray", "--model", "m", "--replicas", "3", "--max-rows", "4", "--port", "8123",
                 "--max-encoder-tokens", "2048"]) == 0
    assert main(["serve", "--ray=auto", "--model", "m", "--autoscale", "2:2", "--host", "0.0.0.0"]) == 0
    assert main(["serve", "--ray", "--ray-address", "ray://head:10001", "--autoscale", "0:1"]) == 0
    assert main(["serve", "--ray", "--model", "m"]) == 0
    assert [kwargs for _, kwargs in calls] == [
        dict(address=None, replicas=3, autoscale=None, host="127.0.0.1", port=8123),
        dict(address="auto", replicas=None, autoscale=(2, 2), host="0.0.0.0", port=8000),
        dict(address="ray://head:10001", replicas=None, autoscale=(0, 1), host="127.0.0.1", port=8000),
        dict(address=None, replicas=None, autoscale=None, host="127.0.0.1", port=8000)]
    assert (calls[0][0].model, calls[0][0].max_rows, calls[0][0].max_encoder_tokens) == ("m", 4, 2048)
    assert calls[1][0].max_encoder_tokens is None                   # the engine's default
    capsys.readouterr()
    for bad in ("0:0", "2:1", "-1:2", "1", "1:", ":2", "a:b", "1:2:3"):
        assert main(["serve", "--ray", f"--autoscale={bad}"]) == 2, bad
        assert f"--autoscale takes MIN:MAX with 0 <= MIN <= MAX and MAX >= 1, got {bad!r}" in capsys.readouterr().err
    assert main(["serve", "--ray", "--replicas", "2", "--autoscale", "1:2"]) == 2
    assert "give --replicas or --autoscale, not both" in capsys.readouterr().err
    assert main(["serve", "--autoscale", "1:2"]) == 2
    assert "--ray-address, --replicas and --autoscale apply to --ray" in capsys.readouterr().err
    assert len(calls) == 4


@pytest.mark.parametrize("host", ["", " "])
def test_an_empty_host_is_refused_not_every_interface(host, capsys, monkeypatch):
    """--host "" (a `--host "$HOST"` with HOST unset) bound 0.0.0.0 and [::]: the server was exposed on every
    interface, without a word beyond a warning naming an empty address."""
    import seq2seq_kit.server
    from seq2seq_kit.cli import main

    served = []
    monkeypatch.setattr(seq2seq_kit.server, "serve", lambda settings, host, port: served.append(host))
    assert main(["serve", "--host", host]) == 2 and served == []
    assert capsys.readouterr().err.splitlines()[-1] == (
        "seq2seq-kit serve: error: argument --host: is empty, which would listen on every interface; pass "
        "127.0.0.1 (this machine only) or 0.0.0.0 (every interface)")


@pytest.mark.parametrize("key", ["test-key\n", " test-key", "test-key\t", "   ", "test\rkey"])
def test_an_api_key_no_header_can_carry_is_refused(key, capsys, monkeypatch):
    """A key with surrounding whitespace (a secret file's trailing newline) or a control character started a
    server that answered every request 401: HTTP strips a header value's surrounding whitespace and refuses
    control characters, so no client could send it."""
    import seq2seq_kit.server
    from seq2seq_kit.cli import main

    served = []
    monkeypatch.setattr(seq2seq_kit.server, "serve", lambda settings, host, port: served.append(settings))
    monkeypatch.setenv("S2S_KEY", key)
    assert main(["serve", "--api-key-env", "S2S_KEY"]) == 2 and served == []
    assert capsys.readouterr().err.splitlines()[-1] == (
        "seq2seq-kit serve: error: --api-key-env S2S_KEY: the key has surrounding whitespace or a control character "
        "(a file's trailing newline?), which no Authorization header can carry; set it without them")
    monkeypatch.setenv("S2S_KEY", "test key")          # inside the key, a space is sent as it is
    assert main(["serve", "--api-key-env", "S2S_KEY"]) == 0 and served[0].api_key == "test key"


def test_an_api_key_of_bytes_that_are_not_utf8_is_the_environments_bytes(capsys, monkeypatch):
    """A key whose bytes are not UTF-8 (a Latin-1 secret file: "cl\xe9") started a server whose app failed to start
    (UnicodeEncodeError inside uvicorn's lifespan, then "cannot serve on ... in use"): the key is compared as the
    bytes the environment holds, which a header carries as they are (curl -H "...$KEY", Latin-1 clients)."""
    import seq2seq_kit.server
    from seq2seq_kit.cli import main
    from seq2seq_kit.server.app import Gate, Service

    served = []
    monkeypatch.setattr(seq2seq_kit.server, "serve", lambda settings, host, port: served.append(settings))
    monkeypatch.setenv("S2S_KEY", os.fsdecode(b"cl\xe9"))
    assert main(["serve", "--api-key-env", "S2S_KEY"]) == 0
    gate = Gate(None, Service(served[0]))
    assert [gate.authorized({"headers": [(b"authorization", b"Bearer " + key)]})
            for key in (b"cl\xe9", "clé".encode(), b"cl")] == [True, False, False]




@pytest.mark.parametrize("field, value, words", [("dtype", "fp16", "dtype must be None, 'auto' or one of"),
                                                 ("task", "summarize", "task must be one of")])
def test_library_settings_are_checked_at_construction(field, value, words):
    """serve(Settings(dtype="fp16")) started the server, which then exited with the load's error."""
    from seq2seq_kit.server import Settings

    with pytest.raises(ValueError, match=re.escape(words)):
        Settings(model="m", **{field: value})
    for dtype in (None, "auto", "int8", "bfloat16", "torch.float16"):
        assert Settings(model="m", dtype=dtype).dtype == dtype

class Stop(Exception):
    pass


@pytest.mark.parametrize("runner", ["serve", "serve_on_ray"])
@pytest.mark.parametrize("host, key, warned", [("0.0.0.0", None, True), ("0.0.0.0", "k", False),
                                               ("127.0.0.1", None, False), ("localhost", None, False)])
def test_listening_beyond_this_machine_without_a_key_warns_on_both_runners(runner, host, key, warned, caplog,
                                                                          monkeypatch):
    """serve --ray said nothing where the single-process server warns."""
    import logging

    from seq2seq_kit.server import app, ray_serve, run

    def stop(*args, **kwargs):
        raise Stop

    monkeypatch.setattr(run, "build_app", stop)                            # serve(): stops right after the check
    monkeypatch.setattr(ray_serve.hub, "resolve", stop)                    # serve_on_ray(): likewise
    monkeypatch.setattr(ray_serve, "require_serve", lambda: (None, None))
    with caplog.at_level(logging.WARNING, logger="seq2seq_kit.server"), pytest.raises(Stop):
        getattr(run if runner == "serve" else ray_serve, runner)(app.Settings(model="m", api_key=key), host=host)
    assert ("without an API key" in caplog.text) == warned, caplog.text


def test_a_port_in_use_stops_the_server_with_one_line(tiny_eos_path, tmp_path, monkeypatch):
    """uvicorn exits 3 when it cannot bind (our code for a corpus job's failed records): one line and exit 1."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        monkeypatch.setattr(sys.modules[__name__], "free_port", lambda: taken.getsockname()[1])
        srv = Server(tmp_path, "--model", tiny_eos_path)
        assert srv.proc.wait(120) == 1
    last = srv.log.read_text().strip().splitlines()[-1]
    assert last == f"seq2seq-kit: error: cannot serve on 127.0.0.1:{srv.port} (in use, or not an address of this " \
                   "machine: uvicorn's ERROR line says which)"


def test_a_model_that_cannot_load_stops_the_server_with_one_line(tmp_path):
    srv = Server(tmp_path, "--model", tmp_path / "missing")
    assert srv.proc.wait(120) == 1
    last = srv.log.read_text().strip().splitlines()[-1]
    assert last.startswith("seq2seq-kit: error: ") and "missing" in last


def test_without_the_extra_the_import_names_the_install(monkeypatch):
    for name in [m for m in sys.modules if m == "seq2seq_kit.server" or m.startswith("seq2seq_kit.server.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "fastapi", None)
    with pytest.raises(ImportError, match=r'pip install "seq2seq-kit\[serve\]"'):
        import seq2seq_kit.server  # noqa: F401


def test_a_checkpoint_that_watermarks_is_served_watermarked(tiny_eos_path, tmp_path):
    """A checkpoint whose generation_config sets watermarking_config: every summary is the pipeline's (watermarked),
    concurrent requests included; /info shows the watermark's settings but not its key; clients cannot set it."""
    import shutil

    marked = tmp_path / "marked"
    shutil.copytree(tiny_eos_path, marked)
    config = GenerationConfig.from_pretrained(marked)                  # config.json's settings, as transformers'
    config.watermarking_config = {"bias": 4.0, "hashing_key": 271828, "seeding_scheme": "selfhash"}
    config.save_pretrained(marked)
    pipe = pipeline("summarization", model=str(marked))
    docs = [d["text"] for d in make_docs(4, seed=11)]
    srv = Server(tmp_path, "--model", marked, *LIMITS)
    try:
        srv.wait_ready()
        with concurrent.futures.ThreadPoolExecutor(4) as pool:
            answers = list(pool.map(lambda doc: post(srv, {"inputs": doc, "parameters": {"max_length": 16}}), docs))
        assert [a.json() for a in answers] == [pipe(doc, max_length=16) for doc in docs]
        assert pipe(docs[0], max_length=16) != pipe(docs[0], max_length=16, watermarking_config=None)    # it acts
        shown = httpx.get(srv.url + "/info").json()["generation_defaults"]["watermarking_config"]
        assert shown["hashing_key"] == "(hidden)" and shown["bias"] == 4.0 and "271828" not in httpx.get(
            srv.url + "/info").text
        refused = post(srv, {"inputs": docs[0], "parameters": {"watermarking_config": None}})
        assert refused.status_code == 422 and refused.json()["field"] == "parameters.watermarking_config"
    finally:
        srv.stop()


# ---------------------------------------------------------------------------------------------- streams

def streamed(server, body, timeout: float = 60, route: str = "/summarize", read: int | None = None):
    """(status, the stream's events) of a POST with "stream": true; a refusal's (status, JSON body). read: stop
    after that many events (the client leaves)."""
    with httpx.stream("POST", server.url + route, json={**body, "stream": True}, timeout=timeout) as answer:
        if answer.status_code != 200:
            return answer.status_code, json.loads(answer.read())
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = []
        for line in answer.iter_lines():
            if line.startswith("data:"):
                events.append(json.loads(line.removeprefix("data:")))
                if len(events) == read:
                    break
        return 200, events


@pytest.mark.parametrize("params", [{"max_length": 20, "num_beams": 1},
                                    {"max_length": 20, "num_beams": 1, "clean_up_tokenization_spaces": True},
                                    {"max_length": 30, "num_beams": 1, "do_sample": True, "top_k": 8, "seed": 11},
                                    {"max_length": 30, "num_beams": 1, "stop_strings": ["Haw"]}])
def test_a_stream_sends_each_token_and_ends_with_the_routes_answer(server, pipe, params):
    """One event per generated token (the pipeline's tokens), each token's text what it adds to the text so far
    (special tokens ""), the texts joined the answer, which the last event carries as generated_text: the answer
    the route gives without "stream" (clean-up, sampling with a seed, stop strings included)."""
    text = make_docs(1, seed=7)[0]["text"]
    status, events = streamed(server, {"inputs": text, "parameters": params})
    assert status == 200, events
    plain = post(server, {"inputs": text, "parameters": params})
    assert plain.status_code == 200
    answer = plain.json()[0]["summary_text"]
    assert events[-1]["generated_text"] == answer and answer.strip()
    assert all(e["generated_text"] is None for e in events[:-1])
    assert [e["index"] for e in events] == list(range(1, len(events) + 1))
    assert "".join(e["token"]["text"] for e in events) == answer
    special = set(pipe.tokenizer.all_special_ids)
    assert all(e["token"]["special"] == (e["token"]["id"] in special) for e in events)
    assert all(e["token"]["text"] == "" for e in events if e["token"]["special"])
    assert all(e["token"]["logprob"] is None and e["details"] is None for e in events)
    if "seed" not in params and "stop_strings" not in params:
        kwargs = {k: v for k, v in params.items() if k != "clean_up_tokenization_spaces"}
        ids = pipe(text, return_tensors=True, **kwargs)[0]["summary_token_ids"].tolist()
        assert [e["token"]["id"] for e in events] == ids[1:]           # all but the decoder's start token
    if "stop_strings" in params:
        assert answer.endswith("Haw") and answer.count("Haw") == 1


def test_huggingface_hubs_text_generation_streams_the_summary(server, pipe):
    """InferenceClient.text_generation(stream=True), pointed at the route, yields the tokens' texts (TGI's events
    parsed by huggingface_hub itself); joined, the summary."""
    from huggingface_hub import InferenceClient

    text = make_docs(1, seed=8)[0]["text"]
    params = {"max_new_tokens": 15, "do_sample": True, "top_k": 8}

    def summary(seed: int) -> str:
        body = {"inputs": text, "parameters": {**params, "seed": seed, "num_beams": 1}}
        return post(server, body).json()[0]["summary_text"]

    # a seed whose summary is two tokens or more: the draws differ by torch version (its RNG changed after 2.6)
    seed = next(s for s in range(5, 25) if len(pipe.tokenizer.encode(summary(s), add_special_tokens=False)) >= 2)
    with InferenceClient(model=server.url + "/summarize") as client:          # the client holds the stream open
        pieces = list(client.text_generation(text, stream=True, seed=seed, **params))
    assert len(pieces) > 1 and "".join(pieces) == summary(seed)


@pytest.mark.parametrize("body, field, words", [
    ({"inputs": ["a text", "another"], "parameters": {"num_beams": 1}}, "inputs", "one text"),
    ({"inputs": "a text", "parameters": {"num_beams": 2}}, "parameters.num_beams",
     '"num_beams": 1 (or leave it out) to stream'),
    ({"inputs": "a text", "parameters": {"num_beams": 1, "do_sample": True, "num_return_sequences": 2}},
     "parameters.num_return_sequences", "one answer"),
    ({"inputs": "a text", "parameters": {"num_beams": 1, "strategy": "map_reduce"}}, "stream", "does not stream"),
    ({"inputs": "a text", "parameters": {"num_beams": 1, "max_length": -1}}, "parameters.max_length", "max_length"),
])
def test_what_cannot_stream_is_422_naming_the_field(server, body, field, words):
    status, answer = streamed(server, body)
    assert status == 422 and answer["field"] == field and words in answer["error"], answer


def test_stream_takes_a_boolean_only(server):
    refused = post(server, {"inputs": "a text", "stream": "yes"})
    assert refused.status_code == 422 and refused.json()["field"] == "stream"
    assert "valid boolean" in refused.json()["error"]


@pytest.mark.parametrize("doc, params, reason", [
    (2, {"max_new_tokens": 60}, "eos_token"),                   # this document's summary ends by EOS at 19 tokens
    (2, {"max_new_tokens": 3}, "length"),                       # (its third token the EOS forced at max_length)
    (7, {"max_new_tokens": 30, "stop_strings": ["Haw"]}, "stop_sequence"),
    (7, {"max_new_tokens": 8, "do_sample": True, "seed": 4}, None)])    # the seed's: whatever its draws end on
def test_a_streams_details_say_why_and_how_long(server, pipe, doc, params, reason):
    """"details": true (TGI's parameter, as huggingface_hub's text_generation(details=True) sends it): the last event
    says why the stream ended, its tokens, its input's length and its seed; without "stream" it is a 422."""
    from huggingface_hub import InferenceClient

    text = make_docs(1, seed=doc)[0]["text"]
    status, events = streamed(server, {"inputs": text, "parameters": {"num_beams": 1, "details": True, **params}})
    assert status == 200 and all(e["details"] is None for e in events[:-1]), events
    if reason is None:                  # sampled: an EOS drawn before the 8th token, or all 8 (the last forced)
        reason = "length" if len(events) == 8 else "eos_token"
    assert events[-1]["details"] == {"finish_reason": reason, "generated_tokens": len(events),
                                     "input_length": len(pipe.preprocess([text]).rows[0]),
                                     "seed": params.get("seed")}
    if "seed" in params:                # sent without one: the seed drawn for it, which draws the same tokens again
        unseeded = {k: v for k, v in params.items() if k != "seed"}
        status, drawn = streamed(server, {"inputs": text, "parameters": {"num_beams": 1, "details": True,
                                                                         **unseeded}})
        seed = drawn[-1]["details"]["seed"]
        assert status == 200 and isinstance(seed, int) and 0 <= seed < 2 ** 64, drawn[-1]
        _, again = streamed(server, {"inputs": text, "parameters": {"num_beams": 1, "seed": seed, **unseeded}})
        assert again[-1]["generated_text"] == drawn[-1]["generated_text"]
    if "stop_strings" not in params:                   # the client's own parsing (it has no stop_strings)
        with InferenceClient(model=server.url + "/summarize") as client:
            last = list(client.text_generation(text, stream=True, details=True, **params))[-1]
        assert last.details.finish_reason == reason and last.generated_text == events[-1]["generated_text"]
    refused = post(server, {"inputs": text, "parameters": {"details": True}})
    assert refused.status_code == 422 and refused.json()["field"] == "parameters.details"


def test_a_stream_whose_search_fails_ends_with_a_generation_error_event(server):
    """Settings that fail the request's search once it runs (a temperature overflowing every probability: 422 without
    "stream") end its stream, already answered 200, with TGI's error event naming the problem."""
    status, events = streamed(server, {"inputs": "the tower is tall", "parameters": {
        "num_beams": 1, "do_sample": True, "temperature": 1e-320, "seed": 1}})
    assert status == 200 and events[-1]["error_type"] == "generation", events
    assert "sampling found no valid probabilities" in events[-1]["error"]
    assert all("token" in e for e in events[:-1])
    wait_idle(server)


def test_a_streams_token_goes_out_in_the_step_that_chose_it():
    """A token's event is sent as soon as the engine hands it over (put), not once the next step's token shows it
    was not the last; the token a request ends on (put_last) waits for the end to carry the answer; an end with no
    put_last (the request cancelled or failed) sends no answer event: answer() raises its error."""
    import asyncio

    from seq2seq_kit.server.streaming import Pieces, TokenQueue, events

    def decode(ids):
        return "".join(f" w{i}" for i in ids if i != 2)

    async def stream(last: bool):
        tokens = TokenQueue(asyncio.get_running_loop())
        tokens.put(torch.tensor([[2]]))                           # the decoder's start: no event
        tokens.put(torch.tensor([7]))
        answers = [(" w7 w8", None)] if last else []
        sent = events(tokens, Pieces(decode), {2}, lambda work: work, lambda: answers.pop() if answers else 1 / 0)
        first = await asyncio.wait_for(anext(sent), 5)           # nothing more queued: it comes at once
        if last:
            tokens.put_last(torch.tensor([8]))
        tokens.end()
        try:
            return first, [event async for event in sent]
        except ZeroDivisionError:
            return first, None

    first, rest = asyncio.run(stream(last=True))
    assert first == {"index": 1, "token": {"id": 7, "text": " w7", "logprob": None, "special": False},
                     "generated_text": None, "details": None}
    assert rest == [{"index": 2, "token": {"id": 8, "text": " w8", "logprob": None, "special": False},
                     "generated_text": " w7 w8", "details": None}]
    assert asyncio.run(stream(last=False)) == (first, None)


def test_a_streams_pieces_join_to_its_cleaned_up_answer(pipe):
    """With clean-up (a request's "clean_up_tokenization_spaces": true) decoding more tokens rewrites the end of
    the text decoded so far (" do n" + "'t" -> " don't", " '" + "s" -> "'s"): a piece waits for the token that
    settles it, never sending what clean-up then takes back, so the pieces join to the answer (before, the stream
    stopped at the first rewrite: every later piece was "")."""
    from seq2seq_kit.server.streaming import Pieces

    def text(ids: list[int]) -> str:                # the server's decode, with clean-up
        return pipe.text(ids, clean_up_tokenization_spaces=True)

    ids = pipe.tokenizer(" He said do n't go . John 's car , the ' best ' one ! They 're here .",
                         add_special_tokens=False)["input_ids"]
    pieces = Pieces(text)
    sent = [pieces.add(token) for token in ids]
    answer = text(ids)
    assert answer == " He said don't go. John's car, the'best'one! They're here."
    assert "".join(sent) + pieces.rest(answer) == answer and pieces.rest(answer) == ""
    assert sent[:4] == [" He", " said", " do", ""] and sent[4] == "n't"                 # " n" waits for "'t"


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from([" ", "  ", ".", "?", "!", ",", "'", " '", "' ", "n", " n", "'t", "t", "s", "m",
                                 "ve", "re", "r", " x", "x", "'s", " .", " ,", "n'", " n't"]), max_size=16))
def test_stream_pieces_never_take_back_what_clean_up_rewrites(words):
    """Any text cut into any tokens: the pieces, each settled before it is sent, join to the cleaned-up whole."""
    from seq2seq_kit.server.streaming import Pieces
    from seq2seq_kit.tokenizer import clean_up_tokenization

    def decode(ids):
        return clean_up_tokenization("".join(words[i] for i in ids))

    pieces = Pieces(decode)
    sent = [pieces.add(i) for i in range(len(words))]
    answer = decode(range(len(words)))
    assert "".join(sent) + pieces.rest(answer) == answer


def test_a_client_leaving_a_stream_frees_its_engine_rows(server):
    before = engine_metrics(server)["seq2seq_engine_generated_tokens_total"]
    status, events = streamed(server, {"inputs": "the tower is tall", "parameters": {
        "num_beams": 1, "min_new_tokens": 250, "max_new_tokens": 250}}, read=3)
    assert status == 200 and len(events) == 3 and events[-1]["generated_text"] is None
    assert wait_idle(server)["seq2seq_engine_generated_tokens_total"] - before < 200
    assert "Traceback" not in server.log.read_text()


# the engine hands a stream its tokens 0.05 s apart (a long document on a slow machine)
SLOW_STREAM = """import sys, time
from seq2seq_kit.cli import main
from seq2seq_kit.server.streaming import TokenQueue

put = TokenQueue.put

def slow_put(self, tokens):
    time.sleep(0.05)
    put(self, tokens)

TokenQueue.put = slow_put
sys.exit(main())
"""


def test_a_stream_past_the_request_timeout_ends_with_an_error_event(tiny_eos_path, tmp_path):
    """The 200 is sent when the stream starts: the request timeout then ends it with TGI's error event after the
    tokens sent in time, and the request leaves the engine."""
    launcher = tmp_path / "slow_stream.py"
    launcher.write_text(SLOW_STREAM)
    srv = Server(tmp_path, "--model", tiny_eos_path, "--request-timeout", "1", launcher=launcher)
    try:
        srv.wait_ready()
        status, events = streamed(srv, {"inputs": "the tower is tall", "parameters": {
            "num_beams": 1, "min_new_tokens": 100, "max_new_tokens": 100}})
        m = wait_idle(srv)
    finally:
        srv.stop()
    assert status == 200 and events[-1] == {"error": "the answer was not complete within the server's request "
                                                     "timeout (1 s); send a shorter input or a lower max_length",
                                            "error_type": "incomplete_generation"}, events
    assert 5 < len(events) < 40 and all(e["generated_text"] is None for e in events[:-1])
    assert m["seq2seq_engine_generated_tokens_total"] < 50
    assert "Traceback" not in srv.log.read_text()
