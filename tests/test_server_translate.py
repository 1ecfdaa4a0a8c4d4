"""`seq2seq-kit serve` with a translation model: POST /translate over real HTTP, against pipeline("translation").

Servers on tests/test_families_pipeline.py's checkpoints: a multi-target Marian model (>>fra<< / >>deu<<) and an
M2M100 model (its language tokens, target language as forced_bos_token_id); and an NLLB model (tokenizer.json,
codes like fra_Latn). Concurrent requests in several
languages at once each get what pipeline("translation", model, src_lang=..., tgt_lang=...) gives for them (the
pipeline itself is checked against transformers there).
"""

from __future__ import annotations

import concurrent.futures
import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

pytest.importorskip("fastapi", reason='the server needs its extra (pip install "seq2seq-kit[serve]")')
pytest.importorskip("sentencepiece")

import httpx  # noqa: E402
from seq2seq_kit import pipeline  # noqa: E402
from seq2seq_kit.server.schema import TranslateParameters  # noqa: E402
from test_families_pipeline import TEXTS, m2m100_path, marian_path, mbart_path  # noqa: E402,F401  (fixtures)
from test_family_tokenizers import nllb_dir  # noqa: E402,F401  (a fixture)
from test_server import Server, check_random_bodies  # noqa: E402

PARAMS = {"max_new_tokens": 8}
# test_server's limits but the request timeout: nothing here waits for a 504, and a loaded CI machine is slow
LIMITS = ["--max-rows", "8", "--max-queue", "64", "--max-body-bytes", "20000", "--request-timeout", "120"]


def translate(server, body, **kwargs) -> httpx.Response:
    return httpx.post(server.url + "/translate", json=body, timeout=60, **kwargs)


def started(path, tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("translate"), "--model", path, *LIMITS)
    try:
        srv.wait_ready()
    except BaseException:
        srv.stop()
        raise
    return srv


@pytest.fixture(scope="module")
def marian_mt(marian_path, tmp_path_factory):
    """marian_path with its weights times 3: the shared checkpoint answers every text and language alike, this
    one differently (so a server that got the language wrong would fail)."""
    root = tmp_path_factory.mktemp("marian-x3")
    shutil.copytree(marian_path, root, dirs_exist_ok=True)
    state = {name: 3 * tensor for name, tensor in load_file(root / "model.safetensors").items()}
    save_file(state, root / "model.safetensors", metadata={"format": "pt"})
    return root


@pytest.fixture(scope="module")
def marian_server(marian_mt, tmp_path_factory):
    srv = started(marian_mt, tmp_path_factory)
    yield srv
    srv.stop()


@pytest.fixture(scope="module")
def m2m100_server(m2m100_path, tmp_path_factory):
    srv = started(m2m100_path, tmp_path_factory)
    yield srv
    srv.stop()


def concurrently(server, bodies: list[dict]) -> list:
    with concurrent.futures.ThreadPoolExecutor(len(bodies)) as pool:
        answers = list(pool.map(lambda body: translate(server, body), bodies))
    assert [a.status_code for a in answers] == [200] * len(bodies), [a.text for a in answers]
    return [a.json() for a in answers]


def test_marian_translations_are_the_pipelines(marian_server, marian_mt):
    jobs = [(text, lang) for text in TEXTS for lang in ("fra", "deu")]
    answers = concurrently(marian_server, [{"inputs": t, "parameters": {"tgt_lang": lang, **PARAMS}}
                                           for t, lang in jobs])
    pipes = {lang: pipeline("translation", model=marian_mt, tgt_lang=lang) for lang in ("fra", "deu")}
    assert answers == [pipes[lang](text, **PARAMS) for text, lang in jobs]
    assert all(a != b for a, b in zip(answers[::2], answers[1::2])), "fra and deu gave the same answer"
    assert len({str(a) for a in answers}) == len(answers)
    # a list of inputs, the newer API's generate_parameters, the checkpoint's own settings (num_beams 2)
    listed = translate(marian_server, {"inputs": TEXTS, "parameters": {"tgt_lang": ">>deu<<",
                                                                       "generate_parameters": PARAMS}})
    assert listed.status_code == 200 and listed.json() == pipes["deu"](TEXTS, **PARAMS)
    assert translate(marian_server, {"inputs": TEXTS[0], "parameters": {"tgt_lang": "fra"}}).json() == \
        pipes["fra"](TEXTS[0])


def test_translations_stream_as_the_pipeline_translates(marian_server, marian_mt, m2m100_server, m2m100_path):
    """A stream's tokens are the pipeline's with num_beams 1 (M2M100's first, its target language, special: ""),
    their texts joined its translation. The Marian checkpoint's own num_beams 2 gives way to 1 in a stream (the
    only search that streams); num_beams 2 sent is a 422 naming it."""
    for server, path, languages in ((marian_server, marian_mt, {"tgt_lang": "deu"}),
                                    (m2m100_server, m2m100_path, {"src_lang": "en", "tgt_lang": "fr"})):
        body = {"inputs": TEXTS[1], "parameters": {**languages, **PARAMS}, "stream": True}
        with httpx.stream("POST", server.url + "/translate", json=body, timeout=60) as answer:
            events = [json.loads(line[5:]) for line in answer.iter_lines() if line.startswith("data:")]
        pipe = pipeline("translation", model=path, **languages)
        expected = pipe(TEXTS[1], num_beams=1, **PARAMS)[0]["translation_text"]
        ids = pipe(TEXTS[1], num_beams=1, return_tensors=True, **PARAMS)[0]["translation_token_ids"].tolist()
        assert answer.status_code == 200 and [e["token"]["id"] for e in events] == ids[1:]
        assert events[-1]["generated_text"] == expected == "".join(e["token"]["text"] for e in events)
        assert all(e["token"]["text"] == "" for e in events if e["token"]["special"])
    assert events[0]["token"]["special"] and events[0]["token"]["id"] == pipe.tokenizer.get_lang_id("fr")
    refused = translate(marian_server, {"inputs": TEXTS[1], "parameters": {"tgt_lang": "deu", "num_beams": 2},
                                        "stream": True})
    assert refused.status_code == 422 and refused.json()["field"] == "parameters.num_beams"
    assert '"num_beams": 1 (or leave it out)' in refused.json()["error"]
    assert pipeline("translation", model=marian_mt).model.generation_config.num_beams == 2


def test_m2m100_translations_are_the_pipelines(m2m100_server, m2m100_path):
    langs = [("de", "fr"), ("en", "de"), ("en", "fr"), ("fr", "ru")]
    jobs = [(text, src, tgt) for text in TEXTS for src, tgt in langs]
    bodies = [{"inputs": t, "parameters": {**({"src_lang": s} if s else {}), "tgt_lang": g, **PARAMS}}
              for t, s, g in jobs]
    answers = concurrently(m2m100_server, bodies)
    pipes = {(s, g): pipeline("translation", model=m2m100_path, src_lang=s, tgt_lang=g) for s, g in langs}
    assert answers == [pipes[s, g](text, **PARAMS) for text, s, g in jobs]
    assert len({str(a) for a in answers[:len(langs)]}) > 1, "every language pair gave the same answer"
    sampled = {"inputs": TEXTS[:2], "parameters": {"src_lang": "de", "tgt_lang": "fr", "do_sample": True,
                                                   "seed": 3, **PARAMS}}
    assert translate(m2m100_server, sampled).json() == translate(m2m100_server, sampled).json()



def test_huggingface_hubs_typed_parameters_sent_as_they_are_get_the_pipelines_translation(m2m100_server,
                                                                                          m2m100_path):
    """huggingface_hub's TranslationParameters serialized whole carry clean_up_tokenization_spaces: null (typed
    bool | None = None), which was a 422: it means unset, as pipe(text, clean_up_tokenization_spaces=None)."""
    import dataclasses

    from huggingface_hub import TranslationInput, TranslationParameters

    body = dataclasses.asdict(TranslationInput(inputs=TEXTS[0], parameters=TranslationParameters(
        src_lang="en", tgt_lang="fr", generate_parameters=PARAMS)))
    assert body["parameters"]["clean_up_tokenization_spaces"] is None
    answer = translate(m2m100_server, body)
    assert answer.status_code == 200, answer.text
    pipe = pipeline("translation", model=m2m100_path, src_lang="en", tgt_lang="fr")
    assert answer.json() == pipe(TEXTS[0], clean_up_tokenization_spaces=None, **PARAMS)


def test_the_inference_apis_options_are_taken_on_translate(m2m100_server):
    body = {"inputs": TEXTS[0], "parameters": {"src_lang": "en", "tgt_lang": "fr", **PARAMS}}
    plain = translate(m2m100_server, body)
    with_options = translate(m2m100_server, {**body, "options": {"use_cache": False, "wait_for_model": True}})
    assert plain.status_code == 200 and (with_options.status_code, with_options.json()) == (200, plain.json())
    bad = translate(m2m100_server, {**body, "options": {"use_gpu": True}})
    error = "options.use_gpu: unknown field; options takes: use_cache, wait_for_model"
    assert (bad.status_code, bad.json()) == (422, {"error": error, "field": "options.use_gpu",
                                                   "errors": {"options.use_gpu": error}})
    unknown = translate(m2m100_server, {**body, "model": "facebook/nllb-200-distilled-600M"})   # no model choice
    error = "model: unknown field; the body takes: inputs, parameters, options, stream"
    assert (unknown.status_code, unknown.json()) == (422, {"error": error, "field": "model",
                                                           "errors": {"model": error}})


def test_a_trailing_slash_is_a_404_naming_the_route_served(m2m100_server):
    body = {"inputs": TEXTS[0], "parameters": {"src_lang": "en", "tgt_lang": "fr", **PARAMS}}
    slash, other = (httpx.post(m2m100_server.url + route, json=body, timeout=60) for route in ("/translate/",
                                                                                             "/summarize/"))
    assert (slash.status_code, slash.json()) == (404, {
        "error": "Not Found: POST /translate/ (this server's routes end without a slash: send POST /translate)",
        "field": None})
    assert (other.status_code, other.json()) == (404, {
        "error": "this server's model is a translation model: it answers POST /translate, not POST /summarize",
        "field": None})


def test_huggingface_hubs_own_inference_client_gets_the_pipelines_translation(m2m100_server, m2m100_path):
    from huggingface_hub import InferenceClient

    client = InferenceClient(model=m2m100_server.url + "/translate")
    texts = set()
    for src, tgt in [("de", "fr"), ("en", "de"), ("fr", "ru")]:
        pipe = pipeline("translation", model=m2m100_path, src_lang=src, tgt_lang=tgt)
        for text in TEXTS:
            out = client.translation(text, src_lang=src, tgt_lang=tgt, generate_parameters=PARAMS)
            assert out.translation_text == pipe(text, **PARAMS)[0]["translation_text"]
            texts.add(out.translation_text)
    assert len(texts) > 2           # languages and texts answered differently


def test_m2m100_info_and_routes(m2m100_server, m2m100_path):
    info = httpx.get(m2m100_server.url + "/info").json()
    assert info["task"] == "translation" and "/translate" in info["routes"] and "/summarize" not in info["routes"]
    assert info["languages"][:3] == ["af", "am", "ar"] and len(info["languages"]) == 100
    assert "default_src_lang" not in info and "src_lang" in info["parameters"]
    assert "forced_bos_token_id" not in info["generation_defaults"]      # each request's tgt_lang sets it
    paths = httpx.get(m2m100_server.url + "/openapi.json").json()["paths"]
    assert "/translate" in paths and "/summarize" not in paths
    assert "tgt_lang" in str(httpx.get(m2m100_server.url + "/openapi.json").json()["components"])
    summarize = httpx.post(m2m100_server.url + "/summarize", json={"inputs": "a"})
    assert summarize.status_code == 404 and "POST /translate" in summarize.json()["error"]
    strategy = translate(m2m100_server, {"inputs": "a", "parameters": {"tgt_lang": "fr", "strategy": "map_reduce"}})
    assert strategy.status_code == 422 and strategy.json()["field"] == "parameters.strategy"
    assert "tgt_lang" in strategy.json()["error"]                       # the route's parameters are listed


@pytest.mark.parametrize("parameters, field, words", [
    ({"src_lang": "de"}, "parameters.tgt_lang", "required"),
    ({"tgt_lang": "fr"}, "parameters.src_lang", "required: the language of the inputs, one of af, am, ar"),
    ({"tgt_lang": "xx"}, "parameters.tgt_lang", "unknown language code 'xx'"),
    ({"tgt_lang": "fra_Latn"}, "parameters.tgt_lang", "af, am, ar"),       # the codes' form
    ({"tgt_lang": "</s>"}, "parameters.tgt_lang", "unknown language code '</s>'"),   # a token, not a code
    ({"src_lang": "<unk>", "tgt_lang": "fr"}, "parameters.src_lang", "unknown language code '<unk>'"),
    ({"src_lang": "english", "tgt_lang": "fr"}, "parameters.src_lang", "unknown language code 'english'"),
    ({"tgt_lang": 5}, "parameters.tgt_lang", "valid string"),
    ({"tgt_lang": "fr", "forced_bos_token_id": 5}, "parameters.forced_bos_token_id", "unknown field"),
    ({"src_lang": "en", "tgt_lang": "fr", "num_beams": 0}, "parameters.num_beams", "num_beams"),
    ({"src_lang": "en", "tgt_lang": "fr", "generate_parameters": {"num_beams": 0}},
     "parameters.generate_parameters.num_beams", "num_beams"),
])
def test_m2m100_bad_languages_and_parameters_are_422(m2m100_server, parameters, field, words):
    answer = translate(m2m100_server, {"inputs": TEXTS[0], "parameters": parameters})
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == field and words in answer.json()["error"], answer.json()


def test_marian_language_errors_and_long_input(marian_server, marian_mt):
    missing = translate(marian_server, {"inputs": TEXTS[0]})
    assert missing.status_code == 422 and missing.json()["field"] == "parameters.tgt_lang"
    assert "fra, deu" in missing.json()["error"]
    unknown = translate(marian_server, {"inputs": TEXTS[0], "parameters": {"tgt_lang": "spa"}})
    assert unknown.status_code == 422 and "fra, deu" in unknown.json()["error"]
    source = translate(marian_server, {"inputs": TEXTS[0], "parameters": {"src_lang": "en", "tgt_lang": "fra"}})
    assert source.status_code == 422 and source.json()["field"] == "parameters.src_lang"   # not ignored
    assert "Marian models have no source language code" in source.json()["error"]
    long = " ".join(TEXTS * 20)
    refused = translate(marian_server, {"inputs": long, "parameters": {"tgt_lang": "fra", "truncation": False}})
    assert refused.status_code == 413 and '"truncation": true' in refused.json()["error"]
    cut = translate(marian_server, {"inputs": long, "parameters": {"tgt_lang": "fra", **PARAMS}})
    expected = pipeline("translation", model=marian_mt, tgt_lang="fra")(long, truncation=True, **PARAMS)
    assert cut.status_code == 200 and cut.json() == expected


@pytest.fixture(scope="module")
def nllb_mt(checkpoint, nllb_dir, tmp_path_factory):
    """tests/checkpoints.py's random NLLB model with test_family_tokenizers' NLLB tokenizer.json (language codes
    as added tokens, as facebook/nllb-200-* ship them)."""
    root = tmp_path_factory.mktemp("nllb-mt")
    shutil.copytree(checkpoint("nllb"), root, dirs_exist_ok=True)
    shutil.copytree(nllb_dir, root, dirs_exist_ok=True)
    return root


def test_ids_past_the_tokenizer_are_skipped_as_transformers_skips_them(nllb_mt):
    """A model's vocabulary may be larger than its tokenizer's (NLLB-200: 256206 ids, 256204 tokens; this one 549
    and 424): such an id in a generated sequence is skipped when the pipeline decodes it, as transformers'
    tokenizer skips it, not a failed request (a direct decode still refuses it)."""
    from transformers import AutoTokenizer as TheirTokenizer

    pipe = pipeline("translation", model=nllb_mt, src_lang="eng_Latn", tgt_lang="fra_Latn")
    past = len(pipe.tokenizer) + 3
    assert past < pipe.model.config.vocab_size
    ids = pipe(TEXTS[0], return_tensors=True, forced_bos_token_id=past, **PARAMS)[0]["translation_token_ids"]
    assert past in ids.tolist()
    theirs = TheirTokenizer.from_pretrained(nllb_mt).decode(ids, skip_special_tokens=True)
    assert pipe(TEXTS[0], forced_bos_token_id=past, **PARAMS) == [{"translation_text": theirs}]
    with pytest.raises(ValueError, match="out of range"):
        pipe.tokenizer.decode(ids)


def test_nllb_translations_languages_and_codes(nllb_mt, tmp_path_factory):
    srv = started(nllb_mt, tmp_path_factory)
    try:
        langs = [("fra_Latn", "deu_Latn"), ("eng_Latn", "fra_Latn")]
        jobs = [(text, src, tgt) for text in TEXTS[:2] for src, tgt in langs]
        answers = concurrently(srv, [{"inputs": t, "parameters": {**({"src_lang": s} if s else {}), "tgt_lang": g,
                                                                  **PARAMS}} for t, s, g in jobs])
        info = httpx.get(srv.url + "/info").json()
        short = translate(srv, {"inputs": TEXTS[0], "parameters": {"src_lang": "eng_Latn", "tgt_lang": "fr"}})
        sourceless = translate(srv, {"inputs": TEXTS[0], "parameters": {"tgt_lang": "fra_Latn"}})
    finally:
        srv.stop()
    pipes = {(s, g): pipeline("translation", model=nllb_mt, src_lang=s, tgt_lang=g) for s, g in langs}
    assert answers == [pipes[s, g](text, **PARAMS) for text, s, g in jobs]
    assert answers[0] != answers[1], "both language pairs gave the same answer"
    assert {"fra_Latn", "deu_Latn"} <= set(info["languages"])
    assert short.status_code == 422 and short.json()["field"] == "parameters.tgt_lang"
    assert "_Latn" in short.json()["error"]                                # the codes' form
    assert sourceless.status_code == 422 and sourceless.json()["field"] == "parameters.src_lang"   # never English
    assert "required" in sourceless.json()["error"]


def test_mbart_targets_named_or_left_to_the_checkpoint(mbart_path, tmp_path_factory):
    """mBART (cc25): a request may leave tgt_lang out (no forced token, the checkpoint's decoder start), also
    beside and after requests that name one (whose forced token must not stay)."""
    srv = Server(tmp_path_factory.mktemp("translate"), "--model", mbart_path, "--task", "translation", *LIMITS)
    try:
        srv.wait_ready()
        langs = [("en_XX", None), ("ro_RO", "de_DE"), ("en_XX", "fr_XX")]
        jobs = [(text, src, tgt) for text in TEXTS[:2] for src, tgt in langs]
        answers = concurrently(srv, [{"inputs": t, "parameters": {**({"src_lang": s} if s else {}),
                                                                  **({"tgt_lang": g} if g else {}), **PARAMS}}
                                     for t, s, g in jobs])
        after = translate(srv, {"inputs": TEXTS[0], "parameters": {"src_lang": "en_XX", **PARAMS}}).json()
        info = httpx.get(srv.url + "/info").json()
    finally:
        srv.stop()
    pipes = {(s, g): pipeline("translation", model=mbart_path, src_lang=s, tgt_lang=g) for s, g in langs}
    assert answers == [pipes[s, g](text, **PARAMS) for text, s, g in jobs]
    assert after == answers[0] and len({str(a) for a in answers[:3]}) == 3
    assert len(info["languages"]) == 25


def test_the_checkpoints_translation_task_settings_are_served(m2m100_path, tmp_path):
    """A checkpoint whose config has task_specific_params["translation_de_to_fr"]: pipeline("translation") takes
    that task's settings (as 4.x), the CLI and corpus jobs too; the server generated without them. Its answers
    are the pipeline's, and /info shows the task's settings."""
    root = Path(shutil.copytree(m2m100_path, tmp_path / "m2m100"))
    config = json.loads((root / "config.json").read_text())
    task = {"translation_de_to_fr": {"max_length": 5, "num_beams": 2}}
    (root / "config.json").write_text(json.dumps({**config, "task_specific_params": task}))
    srv = Server(tmp_path, "--model", root, *LIMITS)
    try:
        srv.wait_ready()
        answers = [translate(srv, {"inputs": t, "parameters": {"src_lang": "de", "tgt_lang": "fr"}}).json()
                   for t in TEXTS[:3]]
        info = httpx.get(srv.url + "/info").json()
    finally:
        srv.stop()
    with pytest.warns(UserWarning, match='defaulting to "translation_de_to_fr"'):
        pipe = pipeline("translation", model=root, src_lang="de", tgt_lang="fr")
    assert answers == [pipe(t) for t in TEXTS[:3]]
    assert (info["generation_defaults"]["max_length"], info["generation_defaults"]["num_beams"]) == (5, 2)


def test_task_translation_serves_a_model_without_language_codes(tiny_eos_path, tmp_path):
    """`serve --task translation` for a single-pair model whose tokenizer has no language codes (a BART tokenizer
    here, a BART fine-tuned to translate one pair in the field): POST /translate is pipeline("translation")'s,
    POST /summarize is the other route (404), languages are refused."""
    srv = Server(tmp_path, "--model", tiny_eos_path, "--task", "translation", *LIMITS)
    try:
        srv.wait_ready()
        answers = concurrently(srv, [{"inputs": text, "parameters": PARAMS} for text in TEXTS[:3]])
        info = httpx.get(srv.url + "/info").json()
        other = httpx.post(srv.url + "/summarize", json={"inputs": TEXTS[0]}, timeout=60)
        coded = translate(srv, {"inputs": TEXTS[0], "parameters": {"tgt_lang": "fr"}})
    finally:
        srv.stop()
    pipe = pipeline("translation", model=tiny_eos_path)
    assert answers == [pipe(text, **PARAMS) for text in TEXTS[:3]]
    assert answers[0][0]["translation_text"] != answers[1][0]["translation_text"]
    assert info["task"] == "translation" and info["languages"] == [] and "/translate" in info["routes"]
    assert other.status_code == 404 and "POST /translate" in other.json()["error"]
    assert coded.status_code == 422 and coded.json()["field"] == "parameters.tgt_lang"


def test_task_must_be_one_the_server_answers():
    from seq2seq_kit.server import Settings

    with pytest.raises(ValueError, match="summarization, translation"):
        Settings(model="m", task="text2text-generation")


@pytest.mark.parametrize("which", ["marian_server", "m2m100_server"])
def test_random_bodies_are_translated_or_refused_by_name(request, which):
    """test_server's random bodies at /translate, languages among the values (the model's codes, other families'
    codes, wrong types): a translation list, a stream, or a JSON error naming its field, never a 500."""
    names = sorted(TranslateParameters.model_fields)
    usual = {"tgt_lang": "fra"} if which == "marian_server" else {"src_lang": "en", "tgt_lang": "fr"}
    check_random_bodies(request.getfixturevalue(which), "/translate", names, seed=11, count=80,
                        values=["en", "fr", "de", "xx", "__fr__", ">>fra<<", "fra", "eng_Latn", ["fr"]], usual=usual)
