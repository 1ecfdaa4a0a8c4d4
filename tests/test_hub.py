"""seq2seq_kit.hub.resolve against a real Hub cache layout (offline) and a fake Hub behind huggingface_hub's
HTTP client (downloads): which files are fetched, which snapshot is returned, and the error messages."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import httpx
import httpx2
import huggingface_hub
import pytest
import torch

from hub_cache import FakeHub, hub_error, read_dir, write_cache
from seq2seq_kit.hub import HubError, resolve

REPO = "org/tiny-bart"
CONFIG = json.dumps({"model_type": "bart", "d_model": 8}).encode()
SMALL = {
    "config.json": CONFIG,
    "generation_config.json": b'{"num_beams": 4}',
    "tokenizer.json": b'{"model": {}}',
    "tokenizer_config.json": b'{"model_max_length": 1024}',
    "special_tokens_map.json": b'{"pad_token": "<pad>"}',
    "vocab.json": b'{"a": 0}',
    "merges.txt": b"#version: 0.2\n",
    "README.md": b"# tiny",
    ".gitattributes": b"*.bin filter=lfs",
}
BIN = b"bin" * 600
SAFE = b"safe" * 600
# Like sshleifer/distilbart-cnn-12-6: main has .bin (and other frameworks), the PR adds safetensors.
MAIN = {**SMALL, "pytorch_model.bin": BIN, "tf_model.h5": b"tf" * 600, "flax_model.msgpack": b"flax" * 600}
PR = {**MAIN, "model.safetensors": SAFE}
MODEL_FILES = {"config.json", "generation_config.json"}
TOKENIZER_FILES = {"config.json", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                   "vocab.json", "merges.txt"}


@pytest.fixture
def offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)


@pytest.fixture
def online(monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)


@pytest.fixture
def fake_hub(online):
    hubs = []

    def start(repos, **kwargs):
        hub = FakeHub(repos, **kwargs)
        hub.install()
        hubs.append(hub)
        return hub

    yield start
    FakeHub.uninstall()


def files_in(folder: Path) -> set[str]:
    return {p.relative_to(folder).as_posix() for p in folder.rglob("*") if p.is_file()}


# ---------------------------------------------------------------- local paths

def test_local_directory_is_returned_as_is(tmp_path):
    assert resolve(tmp_path) == tmp_path
    assert resolve(str(tmp_path), purpose="model") == tmp_path


def test_missing_local_path_names_it(tmp_path):
    with pytest.raises(FileNotFoundError, match="not-here.*neither a local directory nor"):
        resolve(tmp_path / "not-here")
    with pytest.raises(FileNotFoundError, match="neither a local directory"):
        resolve("./checkpoints/a/b")



@pytest.mark.parametrize("load", ["BartForConditionalGeneration", "AutoModelForSeq2SeqLM", "BartConfig", "AutoConfig"])
@pytest.mark.parametrize("name", [3, None, b"org/name"])
def test_a_name_neither_str_nor_path_is_a_type_error_naming_the_fix(load, name):
    import seq2seq_kit

    with pytest.raises(TypeError, match=re.escape(f"is loaded from a directory or Hub id (str or path), got a "
                                                  f"{type(name).__name__}; pass its path")):
        getattr(seq2seq_kit, load).from_pretrained(name)


@pytest.mark.parametrize("name", [3, None, b"dir"])
def test_a_generation_config_from_neither_str_nor_path_is_a_type_error(name):
    from seq2seq_kit.generation import GenerationConfig

    with pytest.raises(TypeError, match=re.escape("a generation config is loaded from a checkpoint directory (str or "
                                                  f"path), got a {type(name).__name__}; pass its path")):
        GenerationConfig.from_pretrained(name)


def test_a_generation_config_from_a_hub_id_says_it_reads_a_directory():
    """GenerationConfig.from_pretrained reads a checkpoint directory (the generation layer knows no Hub): a Hub id
    was "has neither generation_config.json nor config.json", as if such a folder existed."""
    from seq2seq_kit.generation import GenerationConfig

    with pytest.raises(FileNotFoundError, match=r"'org/model' is no checkpoint directory: .*not a Hub id"):
        GenerationConfig.from_pretrained("org/model")


def test_file_instead_of_directory(tmp_path):
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="is a file; pass the checkpoint directory"):
        resolve(tmp_path / "config.json")


@pytest.mark.parametrize("name, words", [("torch_dtype", "a tokenizer has no dtype"), ("use_fast", "leave it out"),
                                         ("subfolder", "pass the subfolder's own path"),
                                         ("revison", "revision, cache_dir, token and local_files_only"),
                                         ("tokenizer_kwargs", "revision, cache_dir, token and local_files_only")])
def test_unknown_keyword_arguments_are_named(name, words):
    from seq2seq_kit import AutoModelForSeq2SeqLM, AutoTokenizer, Tokenizer, pipeline

    path = Path(__file__).parent / "fixtures" / "bart-tokenizer"
    loads = [AutoTokenizer.from_pretrained, Tokenizer.from_pretrained]
    if name != "torch_dtype":                     # the models' and pipelines' old name for dtype: taken
        loads += [AutoModelForSeq2SeqLM.from_pretrained, lambda path, **kw: pipeline("summarization", model=path, **kw)]
    for load in loads:
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}': .*{re.escape(words)}"):
            load(path, **{name: True})


def test_torch_dtype_is_dtypes_old_name(tiny_eos_path):
    """from_pretrained and pipeline take torch_dtype= as transformers 5 does (dtype= wins where both are given),
    with its deprecation warning, pointing at the caller."""
    from seq2seq_kit import AutoModelForSeq2SeqLM, BartForConditionalGeneration, pipeline

    for load, kwargs, want in [
            (BartForConditionalGeneration.from_pretrained, dict(torch_dtype=torch.float16), torch.float16),
            (AutoModelForSeq2SeqLM.from_pretrained, dict(torch_dtype="bfloat16"), torch.bfloat16),
            (AutoModelForSeq2SeqLM.from_pretrained, dict(dtype=torch.float32, torch_dtype="bfloat16"), torch.float32),
            (lambda path, **kw: pipeline("summarization", model=path, **kw).model, dict(torch_dtype=torch.float16),
             torch.float16)]:
        with pytest.warns(FutureWarning, match=re.escape("`torch_dtype` is deprecated! Use `dtype` instead!")) as w:
            assert load(tiny_eos_path, **kwargs).dtype == want
        assert [warning.filename for warning in w.list if warning.category is FutureWarning] == [__file__]



@pytest.mark.parametrize("task", ["summarization", "translation"])
def test_unknown_keyword_arguments_are_named_with_a_loaded_model_and_tokenizer(task):
    """pipeline(model=<model>, tokenizer=<Tokenizer>, bogus=1) loads nothing: the keyword was accepted silently."""
    from seq2seq_kit import BartConfig, BartForConditionalGeneration, Tokenizer, pipeline

    model = BartForConditionalGeneration(BartConfig(vocab_size=50265, d_model=8, encoder_layers=1, decoder_layers=1,
                                                    encoder_attention_heads=1, decoder_attention_heads=1,
                                                    encoder_ffn_dim=8, decoder_ffn_dim=8))
    tokenizer = Tokenizer.from_pretrained(Path(__file__).parent / "fixtures" / "bart-tokenizer")
    with pytest.raises(TypeError, match="unexpected keyword argument 'bogus': besides its own arguments"):
        pipeline(task, model=model, tokenizer=tokenizer, bogus=1)
    with pytest.raises(ValueError, match="dtype= applies when the pipeline loads the model"), \
            pytest.warns(FutureWarning, match="`torch_dtype` is deprecated"):
        pipeline(task, model=model, tokenizer=tokenizer, torch_dtype="auto")
    assert pipeline(task, model=model, tokenizer=tokenizer, revision="main").model is model   # the Hub's: unused

def test_bad_purpose():
    with pytest.raises(ValueError, match="purpose must be one of"):
        resolve(".", purpose="weights")


# ---------------------------------------------------------------- offline, from the cache

def test_offline_resolves_refs_and_commits(tmp_path, offline):
    commits = write_cache(tmp_path, REPO, {"main": MAIN, "refs/pr/1": PR})
    snapshots = tmp_path / "models--org--tiny-bart" / "snapshots"
    assert (tmp_path / "models--org--tiny-bart" / "refs" / "refs" / "pr" / "1").read_text() == commits["refs/pr/1"]

    main = resolve(REPO, cache_dir=tmp_path)
    assert main == snapshots / commits["main"]
    assert (main / "pytorch_model.bin").read_bytes() == BIN
    pr = resolve(REPO, revision="refs/pr/1", cache_dir=tmp_path, purpose="model")
    assert pr == snapshots / commits["refs/pr/1"]
    assert (pr / "model.safetensors").read_bytes() == SAFE
    assert resolve(REPO, revision=commits["refs/pr/1"], cache_dir=tmp_path) == pr


def test_offline_uses_the_default_cache(tmp_path, offline, monkeypatch):
    commits = write_cache(tmp_path, REPO, {"main": MAIN})
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    assert resolve(REPO) == tmp_path / "models--org--tiny-bart" / "snapshots" / commits["main"]


def test_hf_hub_offline_set_after_import(tmp_path, online, monkeypatch):
    """HF_HUB_OFFLINE=1 set after huggingface_hub was imported (e.g. in a notebook cell) still means offline."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubError, match="not in the local Hub cache .* offline mode is on"):
        resolve(REPO, cache_dir=tmp_path)


def test_offline_mode_needs_no_is_offline_mode(tmp_path, offline, monkeypatch):
    """huggingface_hub.is_offline_mode() came in 1.2.1 (the floor is 1.0): offline mode is read from its constants,
    which every release has; calling it was an AttributeError on 1.0-1.2.0 for every Hub id."""
    def missing():
        raise AttributeError("No huggingface_hub attribute is_offline_mode")      # what 1.0-1.2.0 raise

    monkeypatch.setattr(huggingface_hub, "is_offline_mode", missing)
    monkeypatch.setattr(huggingface_hub.constants, "is_offline_mode", missing)
    commits = write_cache(tmp_path, REPO, {"main": MAIN})
    assert resolve(REPO, cache_dir=tmp_path).name == commits["main"]


def test_local_files_only_without_offline_env(tmp_path, online):
    commits = write_cache(tmp_path, REPO, {"main": MAIN})
    got = resolve(REPO, cache_dir=tmp_path, local_files_only=True)
    assert got.name == commits["main"]


def test_hf_home_and_hf_hub_offline_are_read_from_the_environment(tmp_path):
    """A fresh process with HF_HOME and HF_HUB_OFFLINE set finds the cache under $HF_HOME/hub."""
    commits = write_cache(tmp_path / "hub", REPO, {"main": MAIN})
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    code = f"from seq2seq_kit.hub import resolve; print(resolve({REPO!r}))"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert Path(out.stdout.strip()) == tmp_path / "hub" / "models--org--tiny-bart" / "snapshots" / commits["main"]


def test_offline_not_cached(tmp_path, offline):
    with pytest.raises(HubError) as e:
        resolve(REPO, cache_dir=tmp_path)
    msg = str(e.value)
    assert "'org/tiny-bart' (revision 'main') is not in the local Hub cache" in msg
    assert "offline mode is on (HF_HUB_OFFLINE=1)" in msg and "local checkpoint directory" in msg
    assert "without HF_HUB_OFFLINE=1 / local_files_only, to download it" in msg   # not "set HF_HUB_OFFLINE=1"
    write_cache(tmp_path, REPO, {"main": MAIN})
    with pytest.raises(HubError, match="revision 'v2'.*not in the local Hub cache"):
        resolve(REPO, revision="v2", cache_dir=tmp_path)


def test_local_files_only_not_cached(tmp_path, online):
    with pytest.raises(HubError, match="not in the local Hub cache .* and local_files_only=True"):
        resolve(REPO, cache_dir=tmp_path, local_files_only=True)


def test_offline_cached_copy_without_weights(tmp_path, offline):
    write_cache(tmp_path, REPO, {"main": SMALL})
    assert resolve(REPO, purpose="tokenizer", cache_dir=tmp_path).is_dir()
    with pytest.raises(HubError, match="cached copy .* has no PyTorch weights "
                                       ".*model.safetensors or pytorch_model.bin"):
        resolve(REPO, purpose="model", cache_dir=tmp_path)


def test_offline_cached_copy_missing_shards(tmp_path, offline):
    index = json.dumps({"weight_map": {"a": "model-00001-of-00002.safetensors",
                                       "b": "model-00002-of-00002.safetensors"}}).encode()
    write_cache(tmp_path, REPO, {"main": {**SMALL, "model.safetensors.index.json": index,
                                          "model-00001-of-00002.safetensors": SAFE}})
    with pytest.raises(HubError, match="lacks the weight shards model-00002-of-00002.safetensors"):
        resolve(REPO, purpose="model", cache_dir=tmp_path)


def test_offline_non_bart_config(tmp_path, offline):
    write_cache(tmp_path, REPO, {"main": {**MAIN, "config.json": b'{"model_type": "t5"}'}})
    with pytest.raises(ValueError, match="not a BART-family checkpoint: config.json has model_type 't5'"):
        resolve(REPO, cache_dir=tmp_path)


def test_offline_malformed_json_names_the_file(tmp_path, offline):
    write_cache(tmp_path, REPO, {"main": {**MAIN, "config.json": b'{"model_type": "bart",'}})
    with pytest.raises(ValueError, match=r"/config.json is not valid JSON"):
        resolve(REPO, cache_dir=tmp_path)
    write_cache(tmp_path, "org/sharded", {"main": {**SMALL, "model.safetensors.index.json": b"{not json"}})
    with pytest.raises(ValueError, match=r"/model.safetensors.index.json is not valid JSON"):
        resolve("org/sharded", purpose="model", cache_dir=tmp_path)


def test_offline_cache_written_by_transformers_layout_is_used(tmp_path, offline, checkpoint):
    """The real files of a random checkpoint in a Hub cache: resolve returns them byte for byte."""
    files = read_dir(checkpoint("tiny"))
    commits = write_cache(tmp_path, "sshleifer/distilbart-cnn-12-6", {"main": files})
    folder = resolve("sshleifer/distilbart-cnn-12-6", cache_dir=tmp_path)
    assert folder.name == commits["main"]
    assert read_dir(folder) == files


# ---------------------------------------------------------------- downloads through the fake Hub

def test_download_fetches_only_what_is_needed_safetensors_over_bin(tmp_path, fake_hub):
    hub = fake_hub({REPO: {"main": PR}})
    folder = resolve(REPO, cache_dir=tmp_path)
    wanted = MODEL_FILES | TOKENIZER_FILES | {"model.safetensors"}
    assert sorted(hub.downloaded()) == sorted(wanted)
    assert files_in(folder) == wanted
    assert (folder / "model.safetensors").read_bytes() == SAFE
    assert folder == tmp_path / "models--org--tiny-bart" / "snapshots" / hub.commits[REPO]["main"]
    assert (tmp_path / "models--org--tiny-bart" / "refs" / "main").read_text() == hub.commits[REPO]["main"]

    # A second run downloads nothing; an offline run finds the same snapshot.
    hub.requests.clear()
    assert resolve(REPO, cache_dir=tmp_path) == folder
    assert hub.downloaded() == []
    assert resolve(REPO, cache_dir=tmp_path, local_files_only=True) == folder


def test_download_by_purpose(tmp_path, fake_hub):
    hub = fake_hub({REPO: {"main": PR}})
    resolve(REPO, purpose="tokenizer", cache_dir=tmp_path)
    assert sorted(hub.downloaded()) == sorted(TOKENIZER_FILES)
    hub.requests.clear()
    resolve(REPO, purpose="model", cache_dir=tmp_path)
    assert sorted(hub.downloaded()) == ["generation_config.json", "model.safetensors"]


def test_download_fetches_every_tokenizer_file_of_a_marian_checkpoint(tmp_path, fake_hub):
    """A Marian checkpoint with separate vocabularies needs target_vocab.json beside its SentencePiece models."""
    marian = {"config.json": CONFIG, "tokenizer_config.json": b'{"separate_vocabs": true}', "vocab.json": b'{"a": 0}',
              "target_vocab.json": b'{"b": 0}', "source.spm": b"source", "target.spm": b"target", "model.safetensors": SAFE}
    hub = fake_hub({"org/opus-mt": {"main": marian}})
    resolve("org/opus-mt", purpose="tokenizer", cache_dir=tmp_path)
    assert sorted(hub.downloaded()) == sorted(set(marian) - {"model.safetensors"})


def test_download_bin_when_no_safetensors_and_pr_revision(tmp_path, fake_hub):
    hub = fake_hub({REPO: {"main": MAIN, "refs/pr/1": PR}})
    main = resolve(REPO, purpose="model", cache_dir=tmp_path)
    assert sorted(hub.downloaded()) == ["config.json", "generation_config.json", "pytorch_model.bin"]
    hub.requests.clear()
    pr = resolve(REPO, purpose="model", revision="refs/pr/1", cache_dir=tmp_path)
    assert "model.safetensors" in hub.downloaded() and "pytorch_model.bin" not in hub.downloaded()
    assert pr.name == hub.commits[REPO]["refs/pr/1"] != main.name
    assert (tmp_path / "models--org--tiny-bart" / "refs" / "refs" / "pr" / "1").read_text() == pr.name


def test_download_shards_by_their_index(tmp_path, fake_hub):
    shards = {f"model-0000{i}-of-00002.safetensors": bytes([i]) * 2000 for i in (1, 2)}
    index = json.dumps({"metadata": {}, "weight_map": {"w1": "model-00001-of-00002.safetensors",
                                                       "w2": "model-00002-of-00002.safetensors",
                                                       "w3": "model-00001-of-00002.safetensors"}}).encode()
    # An unrelated .safetensors file that no index names is not fetched.
    repo = {**MAIN, **shards, "model.safetensors.index.json": index, "other.safetensors": SAFE}
    hub = fake_hub({REPO: {"main": repo}})
    folder = resolve(REPO, purpose="model", cache_dir=tmp_path)
    assert sorted(hub.downloaded()) == sorted(MODEL_FILES | {"model.safetensors.index.json", *shards})
    for name, content in shards.items():
        assert (folder / name).read_bytes() == content


def test_download_unknown_repo(tmp_path, fake_hub):
    fake_hub({})
    with pytest.raises(HubError, match="'org/nope' was not found on the Hugging Face Hub.*token="):
        resolve("org/nope", cache_dir=tmp_path)


def test_download_unknown_revision(tmp_path, fake_hub):
    fake_hub({REPO: {"main": MAIN}})
    with pytest.raises(HubError, match="revision 'v9' not found in 'org/tiny-bart'.*refs/pr/N"):
        resolve(REPO, revision="v9", cache_dir=tmp_path)


def test_download_gated_repo_needs_a_token(tmp_path, fake_hub):
    hub = fake_hub({REPO: {"main": PR}}, gated=(REPO,))
    with pytest.raises(HubError, match="gated repo: accept its terms at https://huggingface.co/org/tiny-bart.*token"):
        resolve(REPO, cache_dir=tmp_path)
    assert hub.downloaded() == []
    assert resolve(REPO, cache_dir=tmp_path, token="hf_fake").is_dir()


def test_download_private_repo_lists_its_files_with_the_token(tmp_path, fake_hub):
    """A private repo answers its file listing only with the token: token= reaches the listing as well as the
    downloads."""
    hub = fake_hub({REPO: {"main": PR}}, gated=(REPO,))
    listed, seen = hub.handle, []

    def private(request):
        seen.append((request.url.path, request.headers.get("authorization")))
        if request.url.path.startswith("/api/models/") and "authorization" not in request.headers:
            return hub_error(401, "RepoNotFound")
        return listed(request)

    hub.handle = private
    hub.install()
    with pytest.raises(HubError, match="'org/tiny-bart' was not found on the Hugging Face Hub.*token="):
        resolve(REPO, cache_dir=tmp_path / "anonymous", token=False)
    seen.clear()
    folder = resolve(REPO, cache_dir=tmp_path, token="hf_fake")
    assert (folder / "model.safetensors").read_bytes() == SAFE
    assert seen and all(auth == "Bearer hf_fake" for _, auth in seen), seen


def test_download_weights_of_the_commit_listed_while_the_branch_moves(tmp_path, fake_hub):
    """main moves to a new commit after the config and tokenizer were fetched: the weights come from the commit
    those files came from (one snapshot), not from the branch's new head."""
    moved = {**PR, "model.safetensors": b"moved" * 600, "config.json": b'{"model_type": "bart", "d_model": 16}'}
    hub = fake_hub({REPO: {"main": PR}})
    first = hub.commits[REPO]["main"]
    listed = hub.handle

    def moving(request):
        response = listed(request)
        if "/resolve/" in request.url.path and request.url.path.endswith("/config.json"):   # main moves now
            hub.repos[REPO] = {"main": moved, "before": PR}
            hub.commits[REPO] = {"main": hub.commits[REPO].get("moved", "f" * 40), "before": first}
        return response

    hub.handle = moving
    hub.install()
    folder = resolve(REPO, cache_dir=tmp_path)
    assert folder.name == first
    assert (folder / "model.safetensors").read_bytes() == SAFE and (folder / "config.json").read_bytes() == CONFIG


def test_download_non_bart_repo_fetches_no_weights(tmp_path, fake_hub):
    hub = fake_hub({REPO: {"main": {**PR, "config.json": b'{"model_type": "bert"}'}}})
    with pytest.raises(ValueError, match="model_type 'bert'"):
        resolve(REPO, cache_dir=tmp_path)
    assert "model.safetensors" not in hub.downloaded()


@pytest.mark.parametrize("client", [httpx2, httpx])
def test_no_network_falls_back_to_cache_or_says_so(tmp_path, online, client):
    """httpx: huggingface_hub 1.x's client, which raises its own errors where httpx2 is installed too (a hub
    downgraded from 2.x leaves it): that ConnectError was not taken for a network failure, so no cache served."""
    def refuse(request):
        raise client.ConnectError("no route to host", request=request)

    hub = FakeHub({})
    hub.handle = refuse
    hub.install()
    try:
        with pytest.raises(HubError) as e:
            resolve(REPO, cache_dir=tmp_path)
        msg = str(e.value)
        assert "the Hub could not be reached (ConnectError: no route to host)" in msg
        assert "HF_HUB_OFFLINE=1" in msg and "local checkpoint directory" in msg
        assert "Connect to the network and run again" in msg
        commits = write_cache(tmp_path, REPO, {"main": MAIN})
        assert resolve(REPO, cache_dir=tmp_path).name == commits["main"]
    finally:
        FakeHub.uninstall()


# ---------------------------------------------------------------- fuzzed (session 21)

def test_an_empty_or_unusable_name_is_refused_by_name(tmp_path, monkeypatch):
    """"" would be the current folder (a checkpoint there loaded silently); a 300-character name is no path
    (pathlib raised "File name too long")."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "config.json").write_text('{"model_type": "bart"}')
    with pytest.raises(FileNotFoundError, match="the model id or path is empty"):
        resolve(" ")
    with pytest.raises(FileNotFoundError, match="neither a local directory nor"):
        resolve("a" * 300)


@pytest.mark.parametrize("status", [403, 429])
def test_a_refusing_hub_falls_back_to_the_cache(tmp_path, online, status):
    """A rate limit or a 403 on the listing: the cached copy serves, as transformers (was a raw HfHubHTTPError);
    without one, one HubError naming the repo."""
    hub = FakeHub({})
    hub.handle = lambda request: httpx2.Response(status, request=request)
    hub.install()
    try:
        with pytest.raises(HubError, match=f"{status}.*HF_HUB_OFFLINE=1"):
            resolve(REPO, cache_dir=tmp_path)
        commits = write_cache(tmp_path, REPO, {"main": MAIN})
        assert resolve(REPO, cache_dir=tmp_path).name == commits["main"]
    finally:
        FakeHub.uninstall()


def test_a_tokenizer_from_a_repo_of_another_architecture(tmp_path, offline):
    """Tokenizer files load from any repo, as from a directory (roberta-base's BPE files): only a model load
    checks config.json's architecture."""
    write_cache(tmp_path, REPO, {"main": {**MAIN, "config.json": b'{"model_type": "roberta"}'}})
    assert (resolve(REPO, purpose="tokenizer", cache_dir=tmp_path) / "vocab.json").is_file()
    with pytest.raises(ValueError, match="model_type 'roberta'"):
        resolve(REPO, purpose="model", cache_dir=tmp_path)


def test_a_shard_index_naming_no_files_is_named(tmp_path, offline):
    write_cache(tmp_path, REPO, {"main": {**SMALL, "model.safetensors.index.json": b'{"weight_map": {"a": null}}'}})
    with pytest.raises(ValueError, match="not a valid shard index: it needs a 'weight_map' object of file names"):
        resolve(REPO, purpose="model", cache_dir=tmp_path)


def test_a_cache_that_cannot_be_written_is_named(tmp_path, fake_hub):
    fake_hub({REPO: {"main": PR}})
    blocked = tmp_path / "cache-is-a-file"
    blocked.write_text("")
    with pytest.raises(HubError, match="into the Hub cache .*cache-is-a-file.*--cache-dir"):
        resolve(REPO, cache_dir=blocked)


def test_a_local_directory_never_imports_huggingface_hub(tmp_path):
    """huggingface_hub (8.7 MB resident, 0.2 s to import) is imported on the first Hub id only."""
    code = ("import sys; from seq2seq_kit.hub import resolve; "
            f"print(resolve({str(tmp_path)!r}), 'huggingface_hub' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(tmp_path), "False"]


def test_a_config_from_a_hub_id_fetches_config_json_alone(tmp_path, fake_hub, monkeypatch):
    """BartConfig / AutoConfig.from_pretrained("org/name"), as transformers' AutoConfig: only config.json is
    downloaded, and a cached copy holding config.json alone serves offline. The name was made a Path before it was
    resolved, which is never a Hub id: every Hub id failed ("neither a local directory nor a Hugging Face Hub id"),
    and `seq2seq-kit translate --model ID` with it, which reads the config first."""
    from seq2seq_kit import AutoConfig

    config = json.dumps({"model_type": "bart", "d_model": 8, "encoder_attention_heads": 2,
                         "decoder_attention_heads": 2}).encode()
    hub = fake_hub({REPO: {"main": {**PR, "config.json": config}}})
    assert AutoConfig.from_pretrained(REPO, cache_dir=tmp_path / "online").d_model == 8
    assert hub.downloaded() == ["config.json"]
    write_cache(tmp_path / "offline", REPO, {"main": {"config.json": config}})
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    assert AutoConfig.from_pretrained(REPO, cache_dir=tmp_path / "offline").d_model == 8
    (tmp_path / "config.json").write_bytes(config)
    with pytest.raises(TypeError, match="dtype="):          # a .json file's keyword arguments are checked too
        AutoConfig.from_pretrained(tmp_path / "config.json", torch_dtype="float16")


def test_a_file_listed_then_not_found_is_a_hub_error(tmp_path, fake_hub):
    """The repo's listing names a file whose download answers 404 (the repo changed between the two): a HubError
    saying so, as every other Hub failure (huggingface_hub's RemoteEntryNotFoundError came out as it was)."""
    hub = fake_hub({REPO: {"main": PR}})
    listed = hub.handle

    def without_weights(request):
        if request.url.path.endswith("/model.safetensors"):
            return hub_error(404, "EntryNotFound")
        return listed(request)

    hub.handle = without_weights
    hub.install()
    with pytest.raises(HubError, match="a file the Hub lists was not found .* run again"):
        resolve(REPO, purpose="model", cache_dir=tmp_path)
