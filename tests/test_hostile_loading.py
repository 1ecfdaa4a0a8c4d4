"""Loading hostile checkpoints: bounded work for a crafted config.json, every file contained in its checkpoint
directory or the Hub cache, and every malformed file named with its problem."""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import huggingface_hub
import pytest
import torch

from hub_cache import write_cache
from seq2seq_kit import BartForConditionalGeneration, Tokenizer
from seq2seq_kit.generation import GenerationConfig
from seq2seq_kit.hub import HubError, resolve


@pytest.fixture(scope="module")
def tiny(checkpoint):
    return checkpoint("tiny")


def copy(tiny, tmp_path, name="ckpt"):
    return shutil.copytree(tiny, tmp_path / name)


def edit_json(path, **changes):
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("changes", [dict(encoder_layers=10**9), dict(decoder_layers=10**6, d_model=4096,
                                                                        encoder_attention_heads=16,
                                                                        decoder_attention_heads=16),
                                     dict(vocab_size=10**12)])
def test_a_crafted_config_is_refused_before_building(tiny, tmp_path, changes):
    path = copy(tiny, tmp_path)
    edit_json(path / "config.json", **changes)
    start = time.perf_counter()
    with pytest.raises(ValueError, match=r"config.json describes a network of at least [\d,]+ parameters .* but the "
                                         r"weights \(model.safetensors\) hold [\d,]+: config.json does not belong"):
        BartForConditionalGeneration.from_pretrained(path)
    assert time.perf_counter() - start < 60     # bounded: nothing was built (a guard, not a timing test)


@pytest.mark.parametrize("name", ["m2m100", "marian", "pegasus"])
def test_a_position_table_past_any_memory_is_refused_naming_the_key(checkpoint, tmp_path, name):
    """Sinusoidal positions are computed from config.json, not read from the weights: max_position_embeddings=10**12
    would ask torch for terabytes (its allocator's error named no key)."""
    path = copy(checkpoint(name), tmp_path)
    edit_json(path / "config.json", max_position_embeddings=10**12)
    with pytest.raises(ValueError, match=r"max_position_embeddings=1000000000000\), but the weights .* config.json "
                                         r"does not belong"):
        BartForConditionalGeneration.from_pretrained(path)



@pytest.mark.parametrize("dtype, name", [(torch.int8, "I8"), (torch.int64, "I64")])  # float8: read (test_loading)
def test_weights_of_a_dtype_not_read_name_it_and_the_fix(tiny, tmp_path, dtype, name):
    from safetensors.torch import load_file, save_file

    path = copy(tiny, tmp_path)
    state = load_file(path / "model.safetensors")
    key = sorted(state)[3]
    state[key] = state[key].to(dtype)
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    with pytest.raises(ValueError, match=f"{key!r} has dtype {name}; seq2seq_kit reads F32, F16, BF16, F64, "
                                         "F8_E4M3, F8_E5M2 weights: save the checkpoint in float32, float16 or "
                                         "bfloat16"):
        BartForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("dtype", [torch.int64, torch.int8, torch.bool, torch.complex64])
def test_bin_weights_of_a_dtype_not_read_name_it_and_the_fix(tiny, tmp_path, dtype):
    # the same tensors in a safetensors file are refused (above); a .bin file's were cast by copy_ without a word
    from safetensors.torch import load_file

    path = copy(tiny, tmp_path)
    state = load_file(path / "model.safetensors")
    key = sorted(state)[3]
    state[key] = (state[key] * 100).to(dtype)
    torch.save(state, path / "pytorch_model.bin")
    (path / "model.safetensors").unlink()
    name = str(dtype).removeprefix("torch.")
    with pytest.raises(ValueError, match=f"{key!r} has dtype {name}; seq2seq_kit reads float32, float16, bfloat16, "
                                         "float64, float8_e4m3fn, float8_e5m2 weights: save the checkpoint in "
                                         "float32, float16 or bfloat16"):
        BartForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("shard", ["../outside.safetensors", "/etc/passwd", "sub/../../x.safetensors"])
def test_a_shard_index_naming_files_outside_is_refused(tiny, tmp_path, shard):
    path = copy(tiny, tmp_path)
    shutil.copy(path / "model.safetensors", tmp_path / "outside.safetensors")
    (path / "model.safetensors").unlink()
    (path / "model.safetensors.index.json").write_text(json.dumps({"weight_map": {"shared.weight": shard}}))
    with pytest.raises(ValueError, match=r"model.safetensors.index.json names shard files outside .*ckpt: "):
        BartForConditionalGeneration.from_pretrained(path)


@pytest.mark.parametrize("revision", ["../../../elsewhere", "../refs/main", "/abs", "main/../../x", "a\\b",
                                      "with space", "main\n", "main~1", "main^", "a:b", "v*", "v?", "[v]"])
def test_revisions_that_leave_the_cache_or_are_no_git_name_are_refused(tmp_path, monkeypatch, revision):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_cache(tmp_path / "cache", "org/tiny-bart", {"main": {"config.json": b'{"model_type": "bart"}'}})
    (tmp_path / "elsewhere").write_text("0" * 40)     # what a ../ revision would read as a commit
    with pytest.raises(ValueError, match="is not a branch, tag, commit hash or 'refs/pr/N'"):
        resolve("org/tiny-bart", revision=revision, cache_dir=tmp_path / "cache")


def test_a_ref_file_that_is_not_a_commit_is_named(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    write_cache(tmp_path, "org/tiny-bart", {"main": {"config.json": b'{"model_type": "bart"}'}})
    ref = tmp_path / "models--org--tiny-bart" / "refs" / "main"
    ref.write_text("../../../../elsewhere")
    with pytest.raises(HubError, match=r"refs/main should hold a commit hash"):
        resolve("org/tiny-bart", cache_dir=tmp_path)


@pytest.mark.parametrize("content,message", [
    ({"num_beams": "four"}, r"generation_config.json: 'num_beams' must be an integer, got 'four'"),
    ({"eos_token_id": [2, "x"]}, r"'eos_token_id' must be an integer or a list of integers"),
    ({"length_penalty": "long"}, r"'length_penalty' must be a number"),
    ({"do_sample": "yes"}, r"'do_sample' must be true or false"),
    ({"bad_words_ids": [1, 2]}, r"'bad_words_ids' must be a list of lists"),
    ({"num_assistant_tokens": 2.5}, r"'num_assistant_tokens' must be an integer, got 2.5"),
    ({"num_assistant_tokens_schedule": 1}, r"'num_assistant_tokens_schedule' must be a string \("),
    ({"assistant_confidence_threshold": "high"}, r"'assistant_confidence_threshold' must be a number"),
    ({"num_beam_groups": 2.0}, r"'num_beam_groups' must be an integer, got 2.0"),
    ({"diversity_penalty": "some"}, r"'diversity_penalty' must be a number"),
    ({"watermarking_config": "lefthash"}, r"'watermarking_config' must be an object of watermark settings"),
])
def test_malformed_generation_config_names_file_and_key(tmp_path, content, message):
    (tmp_path / "generation_config.json").write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        GenerationConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("content,message", [
    ('{"model_max_length": "big"}', r"model_max_length='big': it must be an integer"),
    ('{"pad_token": 5}', r"tokenizer_config.json: 'pad_token' must be a token \(a string\), got 5"),
    ('{"padding_side": ', r"tokenizer_config.json is not valid JSON"),
    ('{"clean_up_tokenization_spaces": "yes"}', r"tokenizer_config.json: 'clean_up_tokenization_spaces' must be "
                                                r"true or false, got 'yes'"),
    ('{"tokenizer_class": 5}', r"tokenizer_config.json: 'tokenizer_class' must be a string, got 5"),
    ('{"tgt_lang": 1}', r"tokenizer_config.json: 'tgt_lang' must be a string, got 1"),
    ('{"language_codes": ["wmt21"]}', r"tokenizer_config.json: 'language_codes' must be a string, got \['wmt21'\]"),
    ('{"added_tokens_decoder": 1}', r"tokenizer_config.json: 'added_tokens_decoder' must map token ids to tokens"),
    ('{"added_tokens_decoder": {"x": "<s>"}}', r"'added_tokens_decoder' must map token ids to tokens .*got \{'x'"),
])
def test_malformed_tokenizer_config_names_the_file(fixtures_dir, tmp_path, content, message):
    path = shutil.copytree(fixtures_dir / "kobart-tokenizer", tmp_path / "tok")
    (path / "tokenizer_config.json").write_text(content)
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_pretrained(path)


@pytest.mark.parametrize("file,content,message", [
    ("tokenizer_config.json", {"add_prefix_space": "x"}, r"tokenizer_config.json: 'add_prefix_space' must be true or "
                                                         r"false, got 'x'"),
    ("special_tokens_map.json", {"trim_offsets": 1}, r"special_tokens_map.json: 'trim_offsets' must be true or false"),
    ("special_tokens_map.json", {"added_tokens_decoder": "<s>"}, r"special_tokens_map.json: 'added_tokens_decoder'"),
    ("special_tokens_map.json", {"sep_token": None}, r"the tokenizer's sep_token is None .* no token of vocab.json"),
    ("tokenizer_config.json", {"cls_token": ""}, r"the tokenizer's cls_token is '' .* no token of vocab.json"),
])
def test_malformed_bart_tokenizer_settings_name_the_file(fixtures_dir, tmp_path, file, content, message):
    """The vocab.json + merges.txt form: settings that failed inside `tokenizers` (a string where true/false belongs,
    no sep_token for the `<s> A </s>` template) are named with their file; null switches are their defaults."""
    path = shutil.copytree(fixtures_dir / "bart-tokenizer", tmp_path / "tok")
    (path / file).write_text(json.dumps(content))
    with pytest.raises(ValueError, match=message):
        Tokenizer.from_pretrained(path)
    (path / file).write_text(json.dumps({"add_prefix_space": None, "trim_offsets": None}))
    assert Tokenizer.from_pretrained(path)("Hello")["input_ids"] == Tokenizer.from_pretrained(
        fixtures_dir / "bart-tokenizer")("Hello")["input_ids"]


@pytest.mark.parametrize("cut", [0.5, 0.99])
def test_truncated_tokenizer_json_names_the_file(fixtures_dir, tmp_path, cut):
    path = shutil.copytree(fixtures_dir / "kobart-tokenizer", tmp_path / "tok")
    data = (path / "tokenizer.json").read_bytes()
    (path / "tokenizer.json").write_bytes(data[:int(len(data) * cut)])
    with pytest.raises(ValueError, match=r"tokenizer.json is not valid JSON"):
        Tokenizer.from_pretrained(path)


def test_a_tokenizer_json_that_is_not_a_tokenizer_names_the_file(tmp_path):
    (tmp_path / "tokenizer.json").write_text('{"model": {"type": "Nonsense"}}')
    with pytest.raises(ValueError, match=r"tokenizer.json is malformed: "):
        Tokenizer.from_pretrained(tmp_path)


def test_malformed_generation_keys_of_config_json_name_the_file(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bart", "num_beams": "four"}))
    with pytest.raises(ValueError, match=r"config.json: 'num_beams' must be an integer, got 'four'"):
        GenerationConfig.from_pretrained(tmp_path)


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (a device whose writes fail: disk full)")
@pytest.mark.parametrize("name", ["config.json", "generation_config.json", "tokenizer_config.json"])
def test_a_full_disk_names_the_file_being_written(tiny, tmp_path, name):
    out = tmp_path / "saved"
    out.mkdir()
    (out / name).symlink_to("/dev/full")                            # writing it fails as on a full disk
    model = BartForConditionalGeneration.from_pretrained(tiny)
    save = {"config.json": model.save_pretrained, "generation_config.json": model.generation_config.save_pretrained,
            "tokenizer_config.json": Tokenizer.from_default().save_pretrained}[name]
    with pytest.raises(OSError, match=rf"cannot write .*{name}: .*[Nn]o space left"):
        save(out)


def test_a_failed_weights_or_tokenizer_write_names_the_file(tiny, tmp_path, monkeypatch):
    """safetensors and tokenizers write to a temporary file and rename it (a /dev/full link is replaced, not
    written), and raise plain Exceptions: their own error, as they word it on a full disk, is re-raised naming
    the file."""
    import tokenizers

    import seq2seq_kit.loading

    def full(*args, **kwargs):
        raise Exception("No space left on device (os error 28)")

    monkeypatch.setattr(seq2seq_kit.loading, "save_file", full)
    with pytest.raises(OSError, match=r"cannot write .*model\.safetensors: No space left on device"):
        BartForConditionalGeneration.from_pretrained(tiny).save_pretrained(tmp_path / "model")
    monkeypatch.setattr(tokenizers.Tokenizer, "save", full)
    with pytest.raises(OSError, match=r"cannot write .*tokenizer\.json: No space left on device"):
        Tokenizer.from_default().save_pretrained(tmp_path / "tok")
