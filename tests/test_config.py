"""BartConfig: parsing real config.json files, transformers' defaults, round trips, validation errors."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest
import torch
import transformers

from seq2seq_kit import BartConfig

# The notebook's checkpoint (EbanLee/kobart-summary-v3) config.json, verbatim.
KOBART_CONFIG = {
    "_name_or_path": "EbanLee/kobart-summary-v3", "activation_dropout": 0.0, "activation_function": "gelu",
    "add_bias_logits": False, "add_final_layer_norm": False, "architectures": ["BartForConditionalGeneration"],
    "attention_dropout": 0.0, "author": "EbanLee(rudwo6769@gmail.com)", "bos_token_id": 1, "classif_dropout": 0.1,
    "classifier_dropout": 0.1, "d_model": 768, "decoder_attention_heads": 16, "decoder_ffn_dim": 3072,
    "decoder_layerdrop": 0.0, "decoder_layers": 6, "decoder_start_token_id": 1, "do_blenderbot_90_layernorm": False,
    "dropout": 0.1, "encoder_attention_heads": 16, "encoder_ffn_dim": 3072, "encoder_layerdrop": 0.0,
    "encoder_layers": 6, "eos_token_id": 1, "extra_pos_embeddings": 2, "force_bos_token_to_be_generated": False,
    "forced_eos_token_id": 1, "gradient_checkpointing": False, "id2label": {"0": "NEGATIVE", "1": "POSITIVE"},
    "init_std": 0.02, "is_encoder_decoder": True, "kobart_version": 2.0, "label2id": {"NEGATIVE": 0, "POSITIVE": 1},
    "max_position_embeddings": 1026, "model_type": "bart", "normalize_before": False, "normalize_embedding": True,
    "num_hidden_layers": 6, "pad_token_id": 3, "scale_embedding": False, "static_position_embeddings": False,
    "tokenizer_class": "PreTrainedTokenizerFast", "torch_dtype": "float32", "transformers_version": "4.38.2",
    "use_cache": True, "vocab_size": 30000,
    "task_specific_params": {"summarization": {"length_penalty": 1.0, "max_length": 300, "min_length": 12,
                                               "num_beams": 6, "repetition_penalty": 1.5,
                                               "no_repeat_ngram_size": 15}},
}
# sshleifer/distilbart-cnn-12-6's config.json (shape and generation keys).
DISTILBART_CONFIG = {
    "_num_labels": 3, "activation_dropout": 0.0, "activation_function": "gelu", "add_bias_logits": False,
    "add_final_layer_norm": False, "architectures": ["BartForConditionalGeneration"], "attention_dropout": 0.0,
    "bos_token_id": 0, "classif_dropout": 0.0, "d_model": 1024, "decoder_attention_heads": 16,
    "decoder_ffn_dim": 4096, "decoder_layerdrop": 0.0, "decoder_layers": 6, "decoder_start_token_id": 2,
    "dropout": 0.1, "early_stopping": True, "encoder_attention_heads": 16, "encoder_ffn_dim": 4096,
    "encoder_layerdrop": 0.0, "encoder_layers": 12, "eos_token_id": 2, "extra_pos_embeddings": 2,
    "force_bos_token_to_be_generated": True, "forced_bos_token_id": 0, "forced_eos_token_id": 2,
    "init_std": 0.02, "is_encoder_decoder": True, "length_penalty": 2.0, "max_length": 142,
    "max_position_embeddings": 1024, "min_length": 56, "model_type": "bart", "no_repeat_ngram_size": 3,
    "normalize_before": False, "normalize_embedding": True, "num_beams": 4, "num_hidden_layers": 12,
    "output_past": True, "pad_token_id": 1, "prefix": " ", "replacing_rate": 0, "scale_embedding": False,
    "static_position_embeddings": False, "student_decoder_layers": None, "student_encoder_layers": None,
    "task_specific_params": {"summarization": {"early_stopping": True, "length_penalty": 2.0, "max_length": 142,
                                               "min_length": 56, "no_repeat_ngram_size": 3, "num_beams": 4}},
    "vocab_size": 50264,
}
# transformers 5 moves generation keys such as forced_bos_token_id out of the model config: not compared.
MODEL_FIELDS = [f.name for f in fields(BartConfig) if f.name not in ("extra", "forced_bos_token_id")]


def oracle_config(d):
    cls = transformers.MBartConfig if d.get("model_type") == "mbart" else transformers.BartConfig
    return cls.from_dict(d)


def test_kobart_notebook_config():
    config = BartConfig.from_dict(KOBART_CONFIG)
    assert (config.vocab_size, config.d_model, config.encoder_layers, config.decoder_layers) == (30000, 768, 6, 6)
    assert (config.encoder_attention_heads, config.encoder_ffn_dim, config.max_position_embeddings) == (16, 3072, 1026)
    assert (config.bos_token_id, config.eos_token_id, config.pad_token_id) == (1, 1, 3)
    assert (config.decoder_start_token_id, config.forced_eos_token_id, config.forced_bos_token_id) == (1, 1, None)
    assert config.dtype == torch.float32 and config.model_type == "bart" and not config.pre_layer_norm
    for key in ("author", "kobart_version", "id2label", "label2id", "do_blenderbot_90_layernorm",
                "normalize_before", "add_final_layer_norm", "task_specific_params", "tokenizer_class",
                "force_bos_token_to_be_generated", "gradient_checkpointing", "_name_or_path"):
        assert config.extra[key] == KOBART_CONFIG[key]
    assert "num_hidden_layers" not in config.extra and "torch_dtype" not in config.extra   # read into fields


@pytest.mark.parametrize("d", [KOBART_CONFIG, DISTILBART_CONFIG, {}, {"model_type": "mbart"},
                               {"model_type": "mbart", "scale_embedding": True, "decoder_start_token_id": 250020,
                                "vocab_size": 250027}],
                         ids=["kobart", "distilbart", "bart-defaults", "mbart-defaults", "mbart-cc25-like"])
def test_fields_match_transformers(d):
    ours, ref = BartConfig.from_dict(d), oracle_config(d)
    for name in MODEL_FIELDS:
        assert getattr(ours, name) == getattr(ref, name), name


def test_generation_keys_kept_verbatim():
    config = BartConfig.from_dict(DISTILBART_CONFIG)
    assert config.forced_bos_token_id == 0
    for key in ("num_beams", "length_penalty", "max_length", "min_length", "no_repeat_ngram_size",
                "early_stopping", "prefix", "task_specific_params", "student_decoder_layers"):
        assert config.extra[key] == DISTILBART_CONFIG[key]


def test_aliases_override_fields_like_transformers():
    d = {"d_model": 64, "hidden_size": 32, "encoder_attention_heads": 4, "num_attention_heads": 8,
         "encoder_layers": 2, "num_hidden_layers": 3, "decoder_attention_heads": 4}
    ours, ref = BartConfig.from_dict(d), transformers.BartConfig.from_dict(d)
    assert (ours.d_model, ours.encoder_attention_heads, ours.encoder_layers) == (32, 8, 3)
    assert (ref.d_model, ref.encoder_attention_heads, ref.encoder_layers) == (32, 8, 3)


@pytest.mark.parametrize("d", [KOBART_CONFIG, DISTILBART_CONFIG, {"model_type": "mbart"}],
                         ids=["kobart", "distilbart", "mbart-defaults"])
def test_aliases_read_and_set_like_transformers(d):
    """model.config.hidden_size / num_attention_heads / num_hidden_layers (and is_encoder_decoder), as transformers
    users read them, were AttributeErrors though config.json's aliases were read."""
    ours, ref = BartConfig.from_dict(d), oracle_config(d)
    names = ("hidden_size", "num_attention_heads", "num_hidden_layers", "is_encoder_decoder")
    assert [getattr(ours, n) for n in names] == [getattr(ref, n) for n in names]
    assert ours.is_encoder_decoder is True
    for config in (ours, ref):
        config.hidden_size, config.num_attention_heads, config.num_hidden_layers = 48, 3, 5
        assert (config.d_model, config.encoder_attention_heads, config.encoder_layers) == (48, 3, 5)


@pytest.mark.parametrize("d", [KOBART_CONFIG, {"model_type": "marian"}], ids=["kobart", "marian-defaults"])
def test_other_keys_read_as_attributes_like_transformers(d):
    """config.json's other keys (use_cache, dropout, architectures, ...) read by name, as on transformers' config
    (they were AttributeErrors though kept in `extra`), and the output flags every transformers config has at its
    defaults where config.json leaves them out; a key neither has is an AttributeError naming it. Copies and
    pickles keep working (they build the object before its `extra`)."""
    import copy
    import pickle

    ours, ref = BartConfig.from_dict(d), oracle_config(d)
    names = ["use_cache", "output_attentions", "output_hidden_states", "return_dict"]
    names += ["dropout", "architectures", "init_std", "classifier_dropout"] if "dropout" in d else []
    assert [getattr(ours, n) for n in names] == [getattr(ref, n) for n in names]
    with pytest.raises(AttributeError, match=r"^'BartConfig' object has no attribute 'no_such_key' \(no such key in "
                                             r"config.json\)$"):
        ours.no_such_key
    assert copy.deepcopy(ours).to_dict() == pickle.loads(pickle.dumps(ours)).to_dict() == ours.to_dict()


@pytest.mark.parametrize("d,expected", [({"dtype": "bfloat16", "torch_dtype": "float32"}, torch.bfloat16),
                                        ({"torch_dtype": "float16"}, torch.float16), ({}, None),
                                        ({"dtype": None, "torch_dtype": "float16"}, torch.float16)])
def test_dtype_prefers_dtype_over_torch_dtype(d, expected):
    """config.json's dtype name reads as a torch.dtype, as transformers 5 reads it, and is written back by name."""
    ours, ref = BartConfig.from_dict(d), transformers.BartConfig.from_dict(d)
    assert ours.dtype == ref.dtype == expected
    assert ours.to_dict()["dtype"] == ref.to_dict()["dtype"] == (expected and str(expected).split(".")[1])


@pytest.mark.parametrize("dtype", ["float16", torch.bfloat16])
def test_dtype_by_name_or_torch_dtype(tmp_path, dtype):
    """BartConfig(dtype=...) as transformers' BartConfig(dtype=...): a torch.dtype, saved by name."""
    ours, ref = BartConfig(dtype=dtype), transformers.BartConfig(dtype=dtype)
    assert ours.dtype == ref.dtype and isinstance(ours.dtype, torch.dtype)
    assert json.loads((ours.save_pretrained(tmp_path)).read_text())["dtype"] == ref.to_dict()["dtype"]
    assert BartConfig.from_pretrained(tmp_path).dtype == ref.dtype


def test_a_dtype_torch_does_not_name_is_kept_as_written():
    """transformers fails reading such a config.json (getattr(torch, "fp16")); kept as written, dtype="auto" names
    it (tests/test_loading.py), any other dtype loads."""
    config = BartConfig.from_dict({"dtype": "fp16"})
    assert config.dtype == "fp16" and config.to_dict()["dtype"] == "fp16"


def test_a_model_type_that_is_no_string_is_named():
    with pytest.raises(ValueError, match="model_type"):
        BartConfig.from_dict({"model_type": ["bart"]})


def test_round_trip(tmp_path):
    config = BartConfig.from_dict(KOBART_CONFIG)
    assert BartConfig.from_dict(config.to_dict()) == config
    config.save_pretrained(tmp_path)
    assert BartConfig.from_pretrained(tmp_path) == config
    assert BartConfig.from_pretrained(tmp_path / "config.json") == config
    ref = transformers.BartConfig.from_pretrained(tmp_path)   # transformers reads what we write
    for name in MODEL_FIELDS:
        assert getattr(ref, name) == getattr(config, name), name
    written = json.loads((tmp_path / "config.json").read_text())
    assert written["author"] == KOBART_CONFIG["author"] and written["encoder_layers"] == 6


def test_auto_config_reads_every_family_as_transformers_auto_config(tmp_path):
    """AutoConfig.from_pretrained(path), as transformers users load a config, gives the family's BartConfig."""
    from seq2seq_kit import AutoConfig

    marian = {"model_type": "marian", "vocab_size": 64, "decoder_vocab_size": 80, "pad_token_id": 63,
              "decoder_start_token_id": 63,
              "share_encoder_decoder_embeddings": False}
    for d in (KOBART_CONFIG, marian):
        folder = tmp_path / d["model_type"]
        BartConfig.from_dict(d).save_pretrained(folder)
        ours, ref = AutoConfig.from_pretrained(folder), transformers.AutoConfig.from_pretrained(folder)
        assert (ours.model_type, ours.hidden_size, ours.vocab_size, ours.decoder_vocab_size) == \
            (ref.model_type, ref.hidden_size, ref.vocab_size, getattr(ref, "decoder_vocab_size", ref.vocab_size))
    with pytest.raises(TypeError, match=r"use AutoConfig.from_pretrained\(path\)"):
        AutoConfig()


def test_from_pretrained_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="no config.json"):
        BartConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("{not json")
    with pytest.raises(ValueError, match=r"config\.json is not valid JSON"):
        BartConfig.from_pretrained(tmp_path)
    (tmp_path / "config.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match=r"must hold a JSON object"):
        BartConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("d,match", [
    ({"d_model": 100, "encoder_attention_heads": 16}, r"'d_model' \(100\) must be divisible by 'encoder_attention_heads' \(16\)"),
    ({"d_model": 96, "encoder_attention_heads": 8, "decoder_attention_heads": 7},
     r"'d_model' \(96\) must be divisible by 'decoder_attention_heads' \(7\)"),
    ({"activation_function": "mish"}, r"'activation_function' is 'mish'; supported: gelu, gelu_new, gelu_python"),
    ({"activation_function": ["gelu"]}, r"'activation_function' is \['gelu'\]; supported: gelu"),
    ({"activation_function": {}}, r"'activation_function' is \{\}; supported: gelu"),
    ({"vocab_size": 0}, r"config key 'vocab_size' must be a positive integer, got 0"),
    ({"d_model": -8}, r"'d_model' must be a positive integer, got -8"),
    ({"encoder_layers": 0}, r"'encoder_layers' must be a positive integer"),
    ({"decoder_ffn_dim": "4096"}, r"'decoder_ffn_dim' must be a positive integer, got '4096'"),
    ({"max_position_embeddings": 1024.0}, r"'max_position_embeddings' must be a positive integer"),
    ({"decoder_attention_heads": True}, r"'decoder_attention_heads' must be a positive integer, got True"),
    ({"model_type": "t5"}, r"unsupported architecture: config.json has model_type='t5'; "
                           r".*bart, mbart, marian, pegasus, m2m_100"),
    ({"model_type": "bigbird_pegasus"}, r"unsupported architecture"),
    ({"scale_embedding": "yes"}, r"'scale_embedding' must be true or false"),
    ({"tie_word_embeddings": "no"}, r"config key 'tie_word_embeddings' must be true or false, got 'no'"),
    ({"model_type": "marian", "share_encoder_decoder_embeddings": "no"},
     r"config key 'share_encoder_decoder_embeddings' must be true or false, got 'no'"),
    ({"model_type": "marian", "decoder_vocab_size": 0}, r"config key 'decoder_vocab_size' must be a positive integer, "
                                                        r"got 0"),
    ({"decoder_start_token_id": [2]}, r"config key 'decoder_start_token_id' must be an integer, got \[2\] \(only "
                                      r"eos_token_id and forced_eos_token_id may list several ids\)"),
    ({"pad_token_id": 50265}, r"'pad_token_id' is 50265; token ids must be integers in \[0, vocab_size=50265\)"),
    ({"eos_token_id": [2, -1]}, r"'eos_token_id' is \[2, -1\]"),
    ({"decoder_start_token_id": "2"}, r"'decoder_start_token_id'"),
    ({"pad_token_id": [1, 3]}, r"'pad_token_id' must be an integer, got \[1, 3\] \(only eos_token_id"),
    ({"model_type": "m2m_100", "pad_token_id": [1]}, r"'pad_token_id' must be an integer, got \[1\]"),
    ({"normalize_before": True}, r"'normalize_before' is True, but model_type='bart' implies False"),
    ({"model_type": "mbart", "add_final_layer_norm": False}, r"'add_final_layer_norm' is False, but model_type='mbart'"),
    ({"static_position_embeddings": True}, r"'static_position_embeddings'"),
    ({"extra_pos_embeddings": 0}, r"'extra_pos_embeddings' is 0"),
    ({"add_bias_logits": True}, r"'add_bias_logits'"),
    ({"normalize_embedding": False}, r"'normalize_embedding'"),
    ({"do_blenderbot_90_layernorm": True}, r"'do_blenderbot_90_layernorm'"),
])
def test_validation_errors_name_the_key(d, match):
    with pytest.raises(ValueError, match=match):
        BartConfig.from_dict(d)


def test_consistent_legacy_keys_are_accepted():
    mbart = BartConfig.from_dict({"model_type": "mbart", "normalize_before": True, "add_final_layer_norm": True,
                                  "scale_embedding": True})
    assert mbart.pre_layer_norm and mbart.extra["normalize_before"] is True
    assert not BartConfig.from_dict(DISTILBART_CONFIG).pre_layer_norm


def test_null_legacy_keys_are_accepted_as_transformers_ignores_them():
    """A fairseq-era key written as null says nothing about the network: accepted, kept verbatim, as transformers
    reads such a config."""
    legacy = {"normalize_before": None, "add_final_layer_norm": None, "normalize_embedding": None,
              "static_position_embeddings": None, "extra_pos_embeddings": None, "add_bias_logits": None}
    ours, ref = BartConfig.from_dict(legacy), oracle_config(legacy)
    assert all(getattr(ours, name) == getattr(ref, name) for name in MODEL_FIELDS)
    assert {k: ours.extra[k] for k in legacy} == legacy and not ours.pre_layer_norm
