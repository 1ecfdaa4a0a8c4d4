"""Loading checkpoints in every published layout, dtype/device handling, save_pretrained, and loading errors.

Parity tolerance as in test_model.py: logits within 1e-4 of transformers loading the same directory (fp32).
"""

from __future__ import annotations

import json
import re
import shutil
import warnings
from pathlib import Path

import pytest
import torch
import transformers
from safetensors.torch import load_file, save_file

from seq2seq_kit import BartConfig, BartForConditionalGeneration
from seq2seq_kit.loading import WEIGHT_FILES
from helpers import random_batch

ATOL = 1e-4


def make_batch(model, lengths=(9, 6, 3), target_len=5, seed=0):
    config = model.config
    return random_batch(config.vocab_size, config.pad_token_id, lengths, seed, target_len=target_len,
                        decoder_start=config.decoder_start_token_id)


def logits_of(model, batch):
    ids, mask, dec = batch
    if isinstance(model, BartForConditionalGeneration):
        return model(ids, mask, dec).logits.float()
    with torch.no_grad():
        return model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits.float()


def oracle(path):
    config = json.loads((Path(path) / "config.json").read_text())
    cls = (transformers.MBartForConditionalGeneration if config["model_type"] == "mbart"
           else transformers.BartForConditionalGeneration)
    return cls.from_pretrained(path).eval()


def assert_parity(path, expected=None):
    """Ours and transformers load `path` to the same logits (and to `expected`, when given); returns our model."""
    ours = BartForConditionalGeneration.from_pretrained(path)
    got = assert_same_logits(ours, oracle(path))
    if expected is not None:
        assert (got - expected).abs().max().item() <= ATOL
    return ours


def assert_same_logits(ours, theirs) -> torch.Tensor:
    """Two models loaded from one checkpoint give the same logits, within ATOL (float32 kernels other than
    transformers' round differently on some torch versions: oneDNN's on torch 2.6, equal to F.linear's on 2.13);
    returns ours."""
    batch = make_batch(ours)
    got = logits_of(ours, batch)
    diff = (got - logits_of(theirs, batch)).abs().max().item()
    assert diff <= ATOL, f"max abs diff vs transformers {diff}"
    return got


def variant(src: Path, dst: Path, edit_state=None, edit_config=None, weights="model.safetensors") -> Path:
    """A copy of checkpoint `src` whose state dict / config.json went through the given edits."""
    dst.mkdir(parents=True, exist_ok=True)
    config = json.loads((src / "config.json").read_text())
    if edit_config:
        edit_config(config)
    (dst / "config.json").write_text(json.dumps(config))
    state = load_file(src / "model.safetensors")
    if edit_state:
        state = edit_state(state)
    if weights.endswith(".bin"):
        torch.save(state, dst / weights)
    else:
        save_file(state, dst / weights, metadata={"format": "pt"})
    return dst


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return checkpoint("tiny")


@pytest.fixture(scope="module")
def tiny_logits(tiny):
    model = BartForConditionalGeneration.from_pretrained(tiny)
    return logits_of(model, make_batch(model))


# ---- layouts ------------------------------------------------------------------------------------------------

def test_sharded_bin_checkpoint(checkpoint, tmp_path):
    src = checkpoint("tiny-sharded")
    index = json.loads((src / "model.safetensors.index.json").read_text())
    shards = sorted(set(index["weight_map"].values()))
    weight_map = {}
    for i, shard in enumerate(shards, 1):
        name = f"pytorch_model-{i:05d}-of-{len(shards):05d}.bin"
        state = load_file(src / shard)
        torch.save(state, tmp_path / name)
        weight_map |= dict.fromkeys(state, name)
    (tmp_path / "pytorch_model.bin.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))
    shutil.copy(src / "config.json", tmp_path)
    sharded = BartForConditionalGeneration.from_pretrained(src)
    assert_parity(tmp_path, logits_of(sharded, make_batch(sharded)))


def test_base_model_layout_without_prefix(tiny, tmp_path):
    """A BartModel-style file: no "model." prefix, embed_tokens copies, fairseq version buffers, no LM-head bias."""
    def edit(state):
        state = {k.removeprefix("model."): v for k, v in state.items() if k != "final_logits_bias"}
        state["encoder.embed_tokens.weight"] = state["shared.weight"].clone()
        state["decoder.embed_tokens.weight"] = state["shared.weight"].clone()
        state["encoder.version"] = torch.tensor([2.0])
        state["decoder.version"] = torch.tensor([2.0])
        return state

    ours = assert_parity(variant(tiny, tmp_path, edit))
    assert torch.equal(ours.final_logits_bias, torch.zeros(1, ours.config.vocab_size))


@pytest.mark.parametrize("keep", ["lm_head.weight", "model.encoder.embed_tokens.weight"])
def test_embedding_from_any_tied_copy(tiny, tiny_logits, tmp_path, keep):
    """shared.weight absent: the embedding comes from whichever tied copy is saved (transformers ties symmetrically)."""
    def edit(state):
        state[keep] = state.pop("model.shared.weight")
        return state

    ours = assert_parity(variant(tiny, tmp_path, edit), tiny_logits)
    assert ours.lm_head.weight is ours.shared.weight


def test_lm_head_saved_explicitly_and_equal_stays_tied(checkpoint):
    ours = assert_parity(checkpoint("tiny-bin"))
    assert ours.lm_head.weight is ours.shared.weight


def test_different_lm_head_is_untied_like_transformers(tiny, tmp_path):
    def edit(state):
        state["lm_head.weight"] = state["model.shared.weight"] * 0.5
        return state

    path = variant(tiny, tmp_path, edit)
    with pytest.warns(UserWarning, match="lm_head.weight differs from its token embedding"):
        ours = assert_parity(path)
    assert ours.lm_head.weight is not ours.shared.weight


@pytest.mark.parametrize("copy", ["model.encoder.embed_tokens.weight", "model.decoder.embed_tokens.weight"])
def test_a_tied_embedding_copy_that_differs_is_refused(tiny, tmp_path, copy):
    """tie_word_embeddings true, one shared embedding: an encoder / decoder copy that differs from shared.weight is
    refused by name (it is not taken as an untied lm_head, as a differing lm_head.weight is)."""
    def edit(state):
        state[copy] = state["model.shared.weight"] * 0.5
        return state

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(ValueError, match=rf"^{re.escape(copy)} differs from model.shared.weight, but config.json "
                                             "shares one token embedding between encoder and decoder"):
            BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit))


def test_untied_config(tiny, tmp_path):
    """tie_word_embeddings false: transformers saves (and needs) every embedding copy; lm_head is its own."""
    def edit(state):
        shared = state["model.shared.weight"]
        state["lm_head.weight"] = torch.randn(shared.shape, generator=torch.Generator().manual_seed(1))
        state["model.encoder.embed_tokens.weight"] = shared.clone()
        state["model.decoder.embed_tokens.weight"] = shared.clone()
        return state

    path = variant(tiny, tmp_path, edit, lambda c: c.update(tie_word_embeddings=False))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours = assert_parity(path)
    assert ours.lm_head.weight is not ours.shared.weight
    own = variant(tiny, tmp_path / "own", lambda state: {**edit(state), "model.decoder.embed_tokens.weight":
                                                         2 * state["model.shared.weight"]},
                  lambda c: c.update(tie_word_embeddings=False))
    with pytest.raises(ValueError, match="decoder.embed_tokens.weight differs from .*tie_word_embeddings false"):
        BartForConditionalGeneration.from_pretrained(own)


@pytest.mark.parametrize("absent", [("encoder",), ("decoder",), ("encoder", "decoder")])
def test_untied_config_without_an_embedding_copy_loads_shared_with_a_warning(tiny, tmp_path, absent):
    """tie_word_embeddings false, an encoder / decoder embedding absent (transformers 4.x saved shared.weight alone:
    its three embeddings were one): loaded from shared.weight, as 4.x read it, with a warning that transformers 5
    initializes it randomly (it loaded silently before)."""
    def edit(state):
        state["lm_head.weight"] = 2 * state["model.shared.weight"]
        for side in ("encoder", "decoder"):
            if side not in absent:
                state[f"model.{side}.embed_tokens.weight"] = state["model.shared.weight"].clone()
        return state

    path = variant(tiny, tmp_path, edit, lambda c: c.update(tie_word_embeddings=False))
    names = " and ".join(f"model.{side}.embed_tokens.weight" for side in absent)
    with pytest.warns(UserWarning, match=re.escape(
            f"config.json has tie_word_embeddings false but the checkpoint (model.safetensors) lacks {names}: "
            "loaded from model.shared.weight, as transformers 4.x saved and read such checkpoints (transformers 5 "
            "initializes a missing embedding randomly, so its outputs differ)")):
        ours = BartForConditionalGeneration.from_pretrained(path)
    hf = oracle(path)
    for side in absent:                         # transformers' model: that embedding is not the checkpoint's
        embedding = getattr(hf.model, side).embed_tokens.weight
        assert not torch.equal(embedding, hf.model.shared.weight)
        with torch.no_grad():
            embedding.copy_(hf.model.shared.weight)                      # what 4.x meant
    assert_same_logits(ours, hf)


def test_safetensors_preferred_over_bin(tiny, tiny_logits, checkpoint, tmp_path):
    shutil.copytree(tiny, tmp_path / "both")
    shutil.copy(checkpoint("tiny-bin") / "pytorch_model.bin", tmp_path / "both")   # other weights (another seed)
    ours = BartForConditionalGeneration.from_pretrained(tmp_path / "both")
    assert torch.equal(logits_of(ours, make_batch(ours)), tiny_logits)


def test_loaded_model_state(tiny):
    model = BartForConditionalGeneration.from_pretrained(tiny, local_files_only=True)   # hub kwargs pass through
    assert not model.training
    assert hasattr(model, "generation_config")
    assert model.device == torch.device("cpu") and model.dtype == torch.float32
    assert all(p.device.type == "cpu" for p in [*model.parameters(), *model.buffers()])
    assert model.lm_head.weight is model.shared.weight


# ---- dtype and device ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("config_edit,expected", [
    (lambda c: c.update(dtype="bfloat16"), torch.bfloat16),
    (lambda c: (c.pop("dtype"), c.update(torch_dtype="float16")), torch.float16),
])
def test_dtype_auto_reads_config(tiny, tmp_path, config_edit, expected):
    path = variant(tiny, tmp_path, edit_config=config_edit)
    assert BartForConditionalGeneration.from_pretrained(path, dtype="auto").dtype == expected
    assert BartForConditionalGeneration.from_pretrained(path).dtype == torch.float32   # None: float32


def test_dtype_auto_falls_back_to_the_weights(tiny, tmp_path):
    path = variant(tiny, tmp_path, lambda s: {k: v.half() for k, v in s.items()}, lambda c: c.pop("dtype"))
    model = BartForConditionalGeneration.from_pretrained(path, dtype="auto")
    assert model.dtype == torch.float16 and model.final_logits_bias.dtype == torch.float16


@pytest.mark.parametrize("dtype,expected", [("float16", torch.float16), ("torch.bfloat16", torch.bfloat16),
                                            (torch.float16, torch.float16), ("float32", torch.float32)])
def test_dtype_names(tiny, dtype, expected):
    model = BartForConditionalGeneration.from_pretrained(tiny, dtype=dtype)
    assert {p.dtype for p in [*model.parameters(), *model.buffers()]} == {expected}


@pytest.mark.parametrize("stored,config_dtype,dtype", [(torch.bfloat16, "bfloat16", None), (torch.float32, "float32",
                          torch.float16), (torch.float16, None, "auto"), (torch.bfloat16, "bfloat16", "float32"),
                          (torch.float32, "float16", "bfloat16"), (torch.float32, "float32", "auto")])
def test_config_dtype_names_the_dtype_loaded(tiny, tmp_path, stored, config_dtype, dtype):
    """model.config.dtype is the torch.dtype the model was loaded in, as transformers sets it (it named config.json's:
    'bfloat16' for a model loaded in float32); to_dict, save_pretrained's config.json and repr name it as
    transformers' do."""
    def edit(c):
        c.pop("dtype", None)
        c.update({"dtype": config_dtype} if config_dtype else {})
    path = variant(tiny, tmp_path / "in", lambda s: {k: v.to(stored) for k, v in s.items()}, edit)
    ours = BartForConditionalGeneration.from_pretrained(path, dtype=dtype)
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype or torch.float32)   # None: README
    assert ours.dtype == theirs.dtype
    assert ours.config.dtype == theirs.config.dtype and isinstance(ours.config.dtype, torch.dtype)
    assert ours.config.to_dict()["dtype"] == theirs.config.to_dict()["dtype"]
    assert f"dtype={theirs.config.dtype!r}" in repr(ours.config)      # the dataclass' repr: dtype=torch.float16
    loaded = theirs.config.dtype
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")      # (which sets theirs.config.dtype to its name: not followed)
    saved = [json.loads((tmp_path / d / "config.json").read_text())["dtype"] for d in ("ours", "theirs")]
    assert saved[0] == saved[1] == theirs.config.dtype and ours.config.dtype == loaded


@pytest.mark.parametrize("cast", ["half", "bfloat16"])
def test_save_pretrained_after_a_cast_writes_the_models_dtype(tiny, tmp_path, cast):
    """A float32 model cast after loading (model.half()) is saved with config.json's dtype the model's, as
    transformers writes it, not the dtype it was loaded in."""
    ours = getattr(BartForConditionalGeneration.from_pretrained(tiny), cast)()
    theirs = getattr(transformers.AutoModelForSeq2SeqLM.from_pretrained(tiny), cast)()
    ours.save_pretrained(tmp_path / "ours")
    theirs.save_pretrained(tmp_path / "theirs")
    saved = [json.loads((tmp_path / d / "config.json").read_text())["dtype"] for d in ("ours", "theirs")]
    assert saved[0] == saved[1] == str(ours.dtype).removeprefix("torch.")


def test_an_int8_model_config_dtype_is_float32(tiny):
    """int8 models compute in float32 (their activations, biases, layer norms): config.dtype and model.dtype say
    torch.float32 (GET /info and the CLI say "int8")."""
    model = BartForConditionalGeneration.from_pretrained(tiny, dtype="int8")
    assert model.config.dtype == model.dtype == torch.float32
    assert model.config.to_dict()["dtype"] == "float32"


@pytest.mark.parametrize("dtype", ["int4", torch.int16, "fp8", 16])    # "int8" is valid: tests/test_quantize.py
def test_bad_dtype(tiny, dtype):
    with pytest.raises(ValueError, match=r"dtype must be None, 'auto' or one of float32, float16, bfloat16 .* "
                                         r"or 'int8'"):
        BartForConditionalGeneration.from_pretrained(tiny, dtype=dtype)


def test_bad_config_dtype_with_auto(tiny, tmp_path):
    path = variant(tiny, tmp_path, edit_config=lambda c: c.update(dtype="float64"))
    with pytest.raises(ValueError, match=r"dtype='auto' found 'float64' in config.json"):
        BartForConditionalGeneration.from_pretrained(path, dtype="auto")


FLOAT8 = [torch.float8_e4m3fn, torch.float8_e5m2]


@pytest.mark.parametrize("dtype", [None, "auto", torch.float32, "bfloat16", torch.float16])
@pytest.mark.parametrize("float8", FLOAT8, ids=["F8_E4M3", "F8_E5M2"])
@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_float8_weights_load_upcast_as_transformers(tiny, tmp_path, float8, dtype, weights):
    """float8 weights without a quantization_config, as transformers 5 loads them: upcast to the dtype loaded
    (config.json's float32 for "auto"), to the same logits (None: float32, which transformers is given)."""
    path = variant(tiny, tmp_path, lambda s: {k: v.to(float8) for k, v in s.items()}, weights=weights)
    ours = BartForConditionalGeneration.from_pretrained(path, dtype=dtype)
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype=dtype or torch.float32)
    assert ours.dtype == theirs.dtype == (torch.float32 if dtype in (None, "auto") else theirs.dtype)
    assert_same_logits(ours, theirs)


@pytest.mark.parametrize("float8", FLOAT8, ids=["F8_E4M3", "F8_E5M2"])
def test_float8_weights_with_auto_and_no_config_dtype_name_the_fix(tiny, tmp_path, float8):
    """dtype="auto" with no dtype in config.json takes the first weight's, float8, which no model is computed in:
    transformers fails inside torch (TypeError: couldn't find storage object Float8_e4m3fnStorage); refused with
    the fix, which loads (dtype=None too: float32)."""
    path = variant(tiny, tmp_path, lambda s: {k: v.to(float8) for k, v in s.items()}, lambda c: c.pop("dtype"))
    with pytest.raises(TypeError):
        transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype="auto")
    name = str(float8).removeprefix("torch.")
    with pytest.raises(ValueError, match=rf"^dtype='auto' found '{name}' in the checkpoint \(final_logits_bias\); "
                                         r"supported: float32, float16, bfloat16; float8 weights load upcast to the "
                                         r"dtype passed: pass dtype='float32' \(or 'bfloat16', 'float16'\)$"):
        BartForConditionalGeneration.from_pretrained(path, dtype="auto")
    assert BartForConditionalGeneration.from_pretrained(path, dtype="float32").dtype == torch.float32
    assert BartForConditionalGeneration.from_pretrained(path).dtype == torch.float32


@pytest.mark.parametrize("weights", ["model.safetensors", "pytorch_model.bin"])
def test_float8_matrices_beside_16_bit_vectors_with_auto_take_the_16_bit_dtype(tiny, tmp_path, weights):
    """A float8 checkpoint whose layer norms and biases stay bfloat16 (as such checkpoints ship), no dtype in
    config.json: transformers' dtype="auto" passes the float8 tensors over (get_state_dict_dtype) and loads bfloat16;
    so does seq2seq_kit (it refused the first weight's float8)."""
    path = variant(tiny, tmp_path, lambda s: {k: v.to(torch.float8_e4m3fn if v.dim() == 2 else torch.bfloat16)
                                              for k, v in s.items()}, lambda c: c.pop("dtype"), weights=weights)
    ours = BartForConditionalGeneration.from_pretrained(path, dtype="auto")
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype="auto")
    assert ours.dtype == theirs.dtype == torch.bfloat16
    batch = make_batch(ours)
    assert torch.equal(logits_of(ours, batch), logits_of(theirs, batch))


def test_a_bin_files_entries_that_are_no_tensors_are_passed_over_as_transformers(tiny, tmp_path):
    """A pytorch_model.bin holding a non-tensor beside its weights (a fairseq-era "version": 2) loads, as
    transformers loads it; one holding no tensor at all is refused by name."""
    path = variant(tiny, tmp_path / "a", lambda s: {**s, "model.encoder.version": 2}, weights="pytorch_model.bin")
    ours = BartForConditionalGeneration.from_pretrained(path)
    assert_same_logits(ours, transformers.AutoModelForSeq2SeqLM.from_pretrained(path))
    path = variant(tiny, tmp_path / "b", lambda s: {"version": 2}, weights="pytorch_model.bin")
    with pytest.raises(ValueError, match="pytorch_model.bin does not hold a state dict of tensors"):
        BartForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("device", ["cpu", torch.device("cpu")])
def test_cpu_device(tiny, device):
    assert BartForConditionalGeneration.from_pretrained(tiny, device=device).device == torch.device("cpu")


@pytest.mark.parametrize("device,match", [("tpu", "not a torch device"), ("meta", "not supported"),
                                          ("cuda:7" if torch.cuda.is_available() else "cuda", "cuda")])
def test_bad_device(tiny, device, match):
    with pytest.raises(ValueError, match=match):
        BartForConditionalGeneration.from_pretrained(tiny, device=device)


# ---- save_pretrained ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["tiny-mbart", "tiny"])
def test_save_pretrained_round_trip(checkpoint, tmp_path, name):
    src = checkpoint(name)
    ours = BartForConditionalGeneration.from_pretrained(src)
    ours.save_pretrained(tmp_path)
    saved, published = load_file(tmp_path / "model.safetensors"), load_file(src / "model.safetensors")
    assert {k: v.shape for k, v in saved.items()} == {k: v.shape for k, v in published.items()}
    assert all(torch.equal(saved[k], published[k]) for k in published)
    batch = make_batch(ours)
    expected = logits_of(ours, batch)
    assert torch.equal(logits_of(BartForConditionalGeneration.from_pretrained(tmp_path), batch), expected)
    assert (logits_of(oracle(tmp_path), batch) - expected).abs().max().item() <= ATOL
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["model_type"] == ours.config.model_type and config["dtype"] == "float32"


def test_save_pretrained_untied_and_half(tiny, tmp_path):
    def edit(state):
        state["lm_head.weight"] = state["model.shared.weight"] * 2
        for side in ("encoder", "decoder"):     # untied, transformers 5 reads (and saves) each copy
            state[f"model.{side}.embed_tokens.weight"] = state["model.shared.weight"].clone()
        return state

    path = variant(tiny, tmp_path / "src", edit, lambda c: c.update(tie_word_embeddings=False))
    ours = BartForConditionalGeneration.from_pretrained(path, dtype=torch.float16)
    assert ours.lm_head.weight is not ours.shared.weight
    ours.save_pretrained(tmp_path / "out")
    saved = load_file(tmp_path / "out" / "model.safetensors")
    assert torch.equal(saved["lm_head.weight"], ours.lm_head.weight)
    assert {t.dtype for t in saved.values()} == {torch.float16}
    again = BartForConditionalGeneration.from_pretrained(tmp_path / "out", dtype="auto")
    assert again.dtype == torch.float16
    batch = make_batch(ours)
    assert torch.equal(logits_of(again, batch), logits_of(ours, batch))


# ---- errors -------------------------------------------------------------------------------------------------

def test_directory_without_weights(tiny, tmp_path):
    shutil.copy(tiny / "config.json", tmp_path)
    with pytest.raises(FileNotFoundError) as e:
        BartForConditionalGeneration.from_pretrained(tmp_path)
    assert all(name in str(e.value) for name in WEIGHT_FILES) and "config.json" in str(e.value)


def test_dtype_auto_reads_the_first_file_by_name(tiny, tmp_path):
    """Mixed float weights and no dtype in config.json: the first floating tensor of the first weight file by
    name (final_logits_bias sorts before model.*), as transformers reads it; not our names' order."""
    mixed = lambda state: {k: v if k == "final_logits_bias" else v.bfloat16() for k, v in state.items()}  # noqa: E731
    path = variant(tiny, tmp_path, mixed, lambda c: c.pop("dtype"))
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype="auto")
    assert BartForConditionalGeneration.from_pretrained(path, dtype="auto").dtype == theirs.dtype == torch.float32


def test_dtype_auto_reads_the_tensors_in_name_order(tiny, tmp_path):
    """safetensors stores wider dtypes first; transformers reads a file's tensors by name (safe_open's keys), so a
    float16 final_logits_bias decides though float32 tensors are stored before it."""
    mixed = lambda state: {k: v.half() if k == "final_logits_bias" else v for k, v in state.items()}  # noqa: E731
    path = variant(tiny, tmp_path, mixed, lambda c: c.pop("dtype"))
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path, dtype="auto")
    assert BartForConditionalGeneration.from_pretrained(path, dtype="auto").dtype == theirs.dtype == torch.float16


@pytest.mark.parametrize("config_dtype, want", [(None, torch.bfloat16), ("float16", torch.float16)])
def test_dtype_auto_reads_a_shard_index_metadata_dtype(tiny, tmp_path, config_dtype, want):
    """After config.json's dtype (which wins where it is given), before the weights: the shard index's
    "metadata": {"dtype"}, as transformers' dtype="auto" reads them."""
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(tiny)
    model.save_pretrained(tmp_path, max_shard_size="100KB")
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    index["metadata"]["dtype"] = "bfloat16"
    (tmp_path / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((tmp_path / "config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "config.json").write_text(json.dumps({**config, **({"dtype": config_dtype} if config_dtype else {})}))
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path, dtype="auto")
    assert BartForConditionalGeneration.from_pretrained(tmp_path, dtype="auto").dtype == theirs.dtype == want


def test_a_single_weight_file_is_preferred_over_a_shard_index(tiny, tiny_logits, checkpoint, tmp_path):
    """model.safetensors beside a model.safetensors.index.json (of other weights): the single file is loaded, and
    its dtype read for dtype="auto", as transformers prefers it."""
    shutil.copytree(checkpoint("tiny-sharded"), tmp_path / "both")      # another seed, bfloat16 in its index
    index = json.loads((tmp_path / "both" / "model.safetensors.index.json").read_text())
    index["metadata"]["dtype"] = "bfloat16"
    (tmp_path / "both" / "model.safetensors.index.json").write_text(json.dumps(index))
    config = json.loads((tmp_path / "both" / "config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "both" / "config.json").write_text(json.dumps(config))
    shutil.copy(tiny / "model.safetensors", tmp_path / "both")
    ours = assert_parity(tmp_path / "both", tiny_logits)
    assert ours.dtype == torch.float32
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "both", dtype="auto")
    assert BartForConditionalGeneration.from_pretrained(tmp_path / "both", dtype="auto").dtype == theirs.dtype == \
        torch.float32


def test_save_pretrained_without_generation_settings_leaves_no_stale_file(tiny, tmp_path):
    """A model built from a config has its config's token ids for generation_config: its save replaces a
    generation_config.json of an earlier save in the directory, whose settings would otherwise be read back; one
    whose generation_config was set to None leaves none."""
    (tmp_path / "generation_config.json").write_text(json.dumps({"max_length": 4, "decoder_start_token_id": 2}))
    model = BartForConditionalGeneration(BartConfig.from_pretrained(tiny))
    model.save_pretrained(tmp_path)
    assert BartForConditionalGeneration.from_pretrained(tmp_path).generation_config == model.generation_config
    assert model.generation_config.max_length is None
    model.generation_config = None
    model.save_pretrained(tmp_path)
    assert not (tmp_path / "generation_config.json").exists()


def test_config_without_model_type_is_refused(tiny, tmp_path):
    """transformers refuses it too; read as BART it would misload every other family."""
    path = variant(tiny, tmp_path, edit_config=lambda c: c.pop("model_type"))
    with pytest.raises(ValueError, match="config.json has no 'model_type' key.*add the checkpoint's .*bart, mbart"):
        BartForConditionalGeneration.from_pretrained(path)


def test_save_pretrained_keeps_the_generation_settings_we_refuse(tiny, tmp_path):
    """A checkpoint's classifier-free guidance is refused when generating here, not dropped on save (nor are its
    group beam search and max_time, settings generate takes): the saved checkpoint generates as the original in
    transformers and is refused here as the original was."""
    path = variant(tiny, tmp_path / "in")
    settings = dict(num_beams=4, num_beam_groups=2, diversity_penalty=0.5, guidance_scale=1.5, max_time=5.0)
    given = tiny / "generation_config.json"
    base = json.loads(given.read_text()) if given.is_file() else {}
    (path / "generation_config.json").write_text(json.dumps({**base, **settings}))
    BartForConditionalGeneration.from_pretrained(path).save_pretrained(tmp_path / "out")
    saved = transformers.GenerationConfig.from_pretrained(tmp_path / "out")
    assert {k: getattr(saved, k) for k in settings} == settings
    with pytest.raises(ValueError, match="guidance_scale"):
        BartForConditionalGeneration.from_pretrained(tmp_path / "out").generate(torch.tensor([[0, 5, 2]]))


def test_directory_without_config(tiny, tmp_path):
    shutil.copy(tiny / "model.safetensors", tmp_path)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        BartForConditionalGeneration.from_pretrained(tmp_path)


def test_not_a_directory(tmp_path):
    with pytest.raises(FileNotFoundError):
        BartForConditionalGeneration.from_pretrained(tmp_path / "nowhere")


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty"])
def test_corrupt_safetensors(tiny, tmp_path, damage):
    shutil.copy(tiny / "config.json", tmp_path)
    data = (tiny / "model.safetensors").read_bytes()
    data = {"truncate": data[:len(data) // 2], "garbage": b"not a safetensors file" * 8, "empty": b""}[damage]
    (tmp_path / "model.safetensors").write_bytes(data)
    with pytest.raises(ValueError, match=r"model\.safetensors is not a readable safetensors file \(truncated or corrupt"):
        BartForConditionalGeneration.from_pretrained(tmp_path)


def test_corrupt_bin(checkpoint, tmp_path):
    src = checkpoint("tiny-bin")
    shutil.copy(src / "config.json", tmp_path)
    data = (src / "pytorch_model.bin").read_bytes()
    (tmp_path / "pytorch_model.bin").write_bytes(data[:len(data) // 3])
    with pytest.raises(ValueError, match=r"pytorch_model\.bin is not a readable PyTorch checkpoint"):
        BartForConditionalGeneration.from_pretrained(tmp_path)


def test_shard_index_errors(checkpoint, tmp_path):
    shutil.copytree(checkpoint("tiny-sharded"), tmp_path / "ckpt")
    shard = sorted((tmp_path / "ckpt").glob("model-*.safetensors"))[-1]
    shard.unlink()
    with pytest.raises(FileNotFoundError, match=rf"lists shard files that are not in .*: {shard.name}"):
        BartForConditionalGeneration.from_pretrained(tmp_path / "ckpt")
    for text in ("{}", "{not json"):
        (tmp_path / "ckpt" / "model.safetensors.index.json").write_text(text)
        with pytest.raises(ValueError, match=r"model\.safetensors\.index\.json is not a valid shard index"):
            BartForConditionalGeneration.from_pretrained(tmp_path / "ckpt")


@pytest.mark.parametrize("dtype", [None, "auto"])
def test_an_empty_shard_index_is_named(checkpoint, tmp_path, dtype):
    # an empty weight_map named no file: dtype="auto" raised IndexError, else config.json was blamed for "0 weights"
    shutil.copytree(checkpoint("tiny-sharded"), tmp_path / "ckpt")
    index = tmp_path / "ckpt" / "model.safetensors.index.json"
    index.write_text(json.dumps({"metadata": {}, "weight_map": {}}))
    config = json.loads((tmp_path / "ckpt" / "config.json").read_text())
    config.pop("dtype", None)
    (tmp_path / "ckpt" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ValueError, match=re.escape(f"{index} lists no shard files (its 'weight_map' is empty): the "
                                                   "index is incomplete; restore it from the checkpoint's source, "
                                                   "or remove it to load another weight file")):
        BartForConditionalGeneration.from_pretrained(tmp_path / "ckpt", dtype=dtype)


def test_malformed_generation_config_json_names_the_file(tiny, tmp_path):
    shutil.copytree(tiny, tmp_path / "ckpt")
    (tmp_path / "ckpt" / "generation_config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"ckpt/generation_config\.json is not valid JSON"):
        BartForConditionalGeneration.from_pretrained(tmp_path / "ckpt")


@pytest.mark.parametrize("edit,messages", [
    (lambda c: c.update(vocab_size=30000),
     [r"config.json's sizes do not match", r"model\.shared\.weight: config.json implies \[30000, 64\], "
      r"the checkpoint has \[50265, 64\]", r"final_logits_bias: config.json implies \[1, 30000\]"]),
    (lambda c: c.update(encoder_ffn_dim=96),
     [r"model\.encoder\.layers\.0\.fc1\.weight: config.json implies \[96, 64\], the checkpoint has \[128, 64\]",
      r"model\.encoder\.layers\.1\.fc2\.weight"]),
    (lambda c: c.update(d_model=32, encoder_attention_heads=4),
     [r"model\.encoder\.layers\.0\.self_attn\.q_proj\.weight: config.json implies \[32, 32\]"]),
])
def test_config_sizes_not_matching_weights(tiny, tmp_path, edit, messages):
    path = variant(tiny, tmp_path, edit_config=edit)
    with pytest.raises(ValueError) as e:
        BartForConditionalGeneration.from_pretrained(path)
    for message in messages:
        assert any(re.search(message, line) for line in str(e.value).splitlines()), str(e.value)


@pytest.mark.parametrize("copy", ["model.encoder.embed_tokens.weight", "lm_head.weight"])
def test_an_embedding_copy_of_another_shape_is_a_size_mismatch(tiny, tmp_path, copy):
    """A tied copy of the token embedding whose shape is not config.json's is named with both shapes (it is not
    compared with shared.weight, nor loaded as an untied LM head of another size)."""
    def edit(state):
        state[copy] = state["model.shared.weight"][:-1].clone()
        return state

    with pytest.raises(ValueError, match=re.escape(
            "config.json's sizes do not match the checkpoint's weights (model.safetensors):\n"
            f"  {copy}: config.json implies [50265, 64], the checkpoint has [50264, 64]")):
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit))


def test_missing_and_unexpected_weights_in_one_error(tiny, tmp_path):
    def edit(state):
        del state["model.encoder.layers.1.fc1.weight"]
        del state["model.decoder.layers.0.encoder_attn.v_proj.bias"]
        state["model.encoder.layers.1.adapter.weight"] = torch.zeros(2)
        state["model.pooler.dense.weight"] = torch.zeros(2)
        return state

    with pytest.raises(ValueError) as e:
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit))
    text = str(e.value)
    assert "missing (2): model.decoder.layers.0.encoder_attn.v_proj.bias, model.encoder.layers.1.fc1.weight" in text
    assert "unexpected (2): model.encoder.layers.1.adapter.weight, model.pooler.dense.weight" in text


def test_fewer_layers_in_config_than_weights(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"unexpected \(16\): model\.encoder\.layers\.1\."):
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit_config=lambda c: c.update(encoder_layers=1)))


def test_mbart_config_on_bart_weights(tiny, tmp_path):
    with pytest.raises(ValueError, match=r"'mbart' model config.json describes:\n  missing \(4\): "
                                         r"model\.decoder\.layer_norm\.bias"):
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit_config=lambda c: c.update(model_type="mbart")))


def test_duplicate_weight_names(tiny, tmp_path):
    def edit(state):
        state["shared.weight"] = state["model.shared.weight"].clone()
        return state

    with pytest.raises(ValueError, match=r"weight 'shared.weight' appears twice|weight 'model.shared.weight' appears twice"):
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit))


@pytest.mark.parametrize("edit,match", [
    (lambda c: c.update(model_type="t5"), r"unsupported architecture: config.json has model_type='t5'"),
    (lambda c: c.update(model_type="nllb_moe"), r"unsupported architecture"),
    (lambda c: c.update(quantization_config={"quant_method": "auto-round", "bits": 4}), r"quantized checkpoint"),
    (lambda c: c.update(normalize_before=True), r"'normalize_before' is True, but model_type='bart' implies False"),
])
def test_config_rejected_before_loading_weights(tiny, tmp_path, edit, match):
    with pytest.raises(ValueError, match=match):
        BartForConditionalGeneration.from_pretrained(variant(tiny, tmp_path, edit_config=edit))
