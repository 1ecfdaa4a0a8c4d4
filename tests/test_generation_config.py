"""GenerationConfig: where a checkpoint's generation settings come from, and how generate() resolves them
(checked against what transformers 5.25 does for the same files)."""

from __future__ import annotations

import json
import re
import shutil
import warnings
from dataclasses import fields
from pathlib import Path

import pytest
import transformers

from seq2seq_kit import BartConfig
from seq2seq_kit.generation import GenerationConfig
from seq2seq_kit.generation.config import DRAFT_SETTINGS, GENERATE_KWARGS, resolve



def hf_generation_config(path) -> dict:
    """What transformers' from_pretrained puts in model.generation_config (adjust_generation_fn), as a dict."""
    try:
        gc = transformers.GenerationConfig.from_pretrained(path)
    except OSError:
        gc = transformers.GenerationConfig.from_pretrained(path, config_file_name="config.json",
                                                           _from_model_config=True)
    return {k: v for k, v in gc.to_dict().items() if k in GENERATE_KWARGS and v is not None}


def test_distilbart_config_json_keys_are_used(checkpoint):
    """No generation_config.json: transformers 5.25 still takes num_beams, min_length, ... from config.json."""
    path = checkpoint("distilbart")
    assert not (path / "generation_config.json").exists()
    ours = GenerationConfig.from_pretrained(path)
    assert ours.to_dict() == hf_generation_config(path)
    assert ours.to_dict() == dict(num_beams=4, length_penalty=2.0, max_length=142, min_length=56,
                                  no_repeat_ngram_size=3, early_stopping=True, forced_bos_token_id=0,
                                  forced_eos_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                                  decoder_start_token_id=2)


def test_transformers_model_gets_the_same(checkpoint):
    path = checkpoint("distilbart")
    model_gc = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).generation_config
    assert GenerationConfig.from_pretrained(path).to_dict() == {
        k: v for k, v in model_gc.to_dict().items() if k in GENERATE_KWARGS and v is not None}


def test_generation_config_json_wins_and_config_json_is_not_read(checkpoint, tmp_path):
    shutil.copy(checkpoint("tiny") / "config.json", tmp_path / "config.json")
    (tmp_path / "generation_config.json").write_text(json.dumps(
        {"num_beams": 3, "max_length": 30, "decoder_start_token_id": 2, "diversity_penalty": 0.0, "low_memory": False,
         "transformers_version": "5"}))
    ours = GenerationConfig.from_pretrained(tmp_path)
    assert ours.to_dict() == hf_generation_config(tmp_path) == {"num_beams": 3, "max_length": 30,
                                                                "decoder_start_token_id": 2, "diversity_penalty": 0.0}
    assert ours.unsupported == {}                               # low_memory False is a no-op


def test_tiny_and_kobart(checkpoint):
    for name in ("tiny", "kobart"):
        path = checkpoint(name)
        assert GenerationConfig.from_pretrained(path).to_dict() == hf_generation_config(path)


def test_model_from_pretrained_sets_it(checkpoint):
    from seq2seq_kit.modeling import BartForConditionalGeneration

    path = checkpoint("distilbart")
    model = BartForConditionalGeneration.from_pretrained(path)
    assert model.generation_config == GenerationConfig.from_pretrained(path)


@pytest.mark.parametrize("name", ["distilbart", "marian", "m2m100"])
def test_a_model_built_from_a_config_keeps_its_token_ids_only(checkpoint, name, tmp_path):
    """A model built from a config (not from_pretrained): transformers 5 drops config.json's generation keys when it
    makes the config (num_beams, max_length, ...; M2M100's forced_eos_token_id too, no field of M2M100Config), so
    the model's generation config holds the special token ids alone, and generate searches as transformers does."""
    import torch

    from seq2seq_kit.config import BartConfig
    from seq2seq_kit.modeling import BartForConditionalGeneration

    path = Path(shutil.copytree(checkpoint(name), tmp_path / name))
    config = json.loads((path / "config.json").read_text())
    (path / "generation_config.json").unlink(missing_ok=True)
    (path / "config.json").write_text(json.dumps({**config, "num_beams": 3, "max_length": 17, "min_length": 9,
                                                  "no_repeat_ngram_size": 2, "forced_eos_token_id": 2}))
    theirs = transformers.AutoModelForSeq2SeqLM.from_config(transformers.AutoConfig.from_pretrained(path)).eval()
    ours = BartForConditionalGeneration(BartConfig.from_pretrained(path)).eval()
    want = {k: v for k, v in theirs.generation_config.to_dict().items()
            if k in GENERATE_KWARGS and v is not None and not (k.startswith("output_") and v is False)}
    assert ours.generation_config.to_dict() == want
    assert "num_beams" not in want and ("forced_eos_token_id" in want) == (name != "m2m100")
    ours.load_state_dict(BartForConditionalGeneration.from_pretrained(path).state_dict())
    theirs.load_state_dict(transformers.AutoModelForSeq2SeqLM.from_pretrained(path).state_dict())
    ids = torch.randint(5, 60, (2, 7), generator=torch.Generator().manual_seed(0))
    assert torch.equal(ours.generate(ids, max_new_tokens=8), theirs.generate(ids, max_new_tokens=8))
    saved = tmp_path / "saved"
    ours.save_pretrained(saved)                                   # and as it was saved, so it is read back
    assert BartForConditionalGeneration.from_pretrained(saved).generation_config == ours.generation_config


def test_legacy_keys():
    cfg = GenerationConfig.from_model_config({"bos_token_id": 0, "force_bos_token_to_be_generated": True,
                                              "output_hidden_states": True, "forced_bos_token_id": None})
    assert cfg.forced_bos_token_id == 0 and cfg.return_dict_in_generate is True
    hf = transformers.GenerationConfig.from_model_config({"bos_token_id": 0, "force_bos_token_to_be_generated": True,
                                                          "output_hidden_states": True})
    assert (hf.forced_bos_token_id, hf.return_dict_in_generate) == (0, True)


def test_from_model_config_takes_a_config_object_as_transformers(checkpoint):
    """model.config (ours or transformers') as transformers' from_model_config takes it, read as its dict; anything
    else is refused by name (it failed on .items())."""
    path = checkpoint("distilbart")
    ours = BartConfig.from_pretrained(path)                       # what model.config is
    theirs = transformers.AutoConfig.from_pretrained(path)
    want = GenerationConfig.from_model_config(ours.to_dict())
    assert want.num_beams == 4 and want.no_repeat_ngram_size == 3
    assert GenerationConfig.from_model_config(ours) == want
    got, hf = GenerationConfig.from_model_config(theirs), transformers.GenerationConfig.from_model_config(theirs)
    assert got == GenerationConfig.from_model_config(theirs.to_dict())     # (transformers 5 keeps no num_beams there)
    assert (got.decoder_start_token_id, got.forced_eos_token_id) == (hf.decoder_start_token_id, hf.forced_eos_token_id)
    with pytest.raises(TypeError, match=r"^from_model_config takes a model config \(model.config\) or its dict, got "
                                        r"a list"):
        GenerationConfig.from_model_config([("num_beams", 4)])


def test_save_pretrained_round_trip(tmp_path):
    cfg = GenerationConfig(num_beams=4, max_length=142, eos_token_id=[2, 3], early_stopping="never")
    cfg.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path) == cfg


def test_config_file_name_picks_one_of_several_files_as_transformers(checkpoint, tmp_path):
    """The generation guide keeps several configs in one folder and loads one by name:
    from_pretrained(folder, "beams.json"). The second argument was model_config here, ignored: the folder's
    generation_config.json was read instead, silently. save_pretrained writes such a file too."""
    GenerationConfig(num_beams=4, max_length=30, length_penalty=0.5).save_pretrained(tmp_path, "beams.json")
    GenerationConfig(num_beams=1).save_pretrained(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["beams.json", "generation_config.json"]
    for name in ("beams.json", "generation_config.json"):
        ours = GenerationConfig.from_pretrained(tmp_path, name)
        theirs = transformers.GenerationConfig.from_pretrained(tmp_path, name)
        assert ours.to_dict() == {k: getattr(theirs, k) for k in ours.to_dict()}
        assert ours == GenerationConfig.from_pretrained(tmp_path, config_file_name=name)
    assert GenerationConfig.from_pretrained(tmp_path, "beams.json").num_beams == 4
    path = checkpoint("distilbart")                 # a model's config.json by name: its generation keys
    assert GenerationConfig.from_pretrained(path, "config.json").to_dict() == \
        GenerationConfig.from_pretrained(path).to_dict()
    with pytest.raises(FileNotFoundError, match="has no nope.json"):
        GenerationConfig.from_pretrained(tmp_path, "nope.json")
    with pytest.raises(TypeError, match="config_file_name is a file name .* model_config="):
        GenerationConfig.from_pretrained(tmp_path, BartConfig())


def test_save_pretrained_writes_a_sequence_bias_dict_as_pairs(tmp_path):
    """{(token ids): bias}, the form generate takes, has tuple keys, which JSON cannot hold: it is written as the
    pairs form a file holds (json.dump raised TypeError, leaving no generation_config.json)."""
    cfg = GenerationConfig(bos_token_id=0, sequence_bias={(5,): -2.0, (6, 7): 3.0})
    cfg.save_pretrained(tmp_path)
    loaded = GenerationConfig.from_pretrained(tmp_path)
    assert loaded.sequence_bias == [[[5], -2.0], [[6, 7], 3.0]]
    assert res(loaded).sequence_bias == loaded.sequence_bias and cfg.sequence_bias == {(5,): -2.0, (6, 7): 3.0}
    theirs = transformers.GenerationConfig.from_pretrained(tmp_path)
    assert transformers.SequenceBiasLogitsProcessor(theirs.sequence_bias).sequence_bias == {(5,): -2.0, (6, 7): 3.0}


def test_from_pretrained_without_files(tmp_path):
    with pytest.raises(FileNotFoundError, match="generation_config.json"):
        GenerationConfig.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["generation_config.json", "config.json"])
def test_from_pretrained_malformed_json_names_the_file(tmp_path, name):
    (tmp_path / name).write_text("{not json")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} is not valid JSON")):
        GenerationConfig.from_pretrained(tmp_path)
    (tmp_path / name).write_text("[1, 2]")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / name} must hold a JSON object")):
        GenerationConfig.from_pretrained(tmp_path)


# ---- resolution at generate time ----------------------------------------------------------------------------------

def res(base=None, **kwargs):
    return resolve(base, kwargs, vocab_size=100, max_position_embeddings=50)


def test_priority_kwargs_over_checkpoint_over_library_defaults():
    base = GenerationConfig(num_beams=4, length_penalty=2.0, min_length=10, eos_token_id=2, bos_token_id=0)
    cfg = res(base, num_beams=2)
    assert (cfg.num_beams, cfg.length_penalty, cfg.min_length) == (2, 2.0, 10)
    defaults = (cfg.top_k, cfg.top_p, cfg.temperature, cfg.early_stopping, cfg.num_return_sequences)
    assert defaults == (50, 1.0, 1.0, False, 1)
    assert cfg.eos_token_id == [2] and cfg.pad_token_id == 2 and cfg.decoder_start_token_id == 0


def test_max_length_counts_the_start_token():
    assert res(GenerationConfig(bos_token_id=0)).max_length == 21                 # default: 20 new tokens
    assert res(GenerationConfig(bos_token_id=0), max_length=30).max_length == 30  # total, start included
    assert res(GenerationConfig(bos_token_id=0, max_length=30)).max_length == 30
    assert res(GenerationConfig(bos_token_id=0, max_length=30), max_new_tokens=5).max_length == 6
    assert resolve(GenerationConfig(bos_token_id=0), {}, vocab_size=10, max_position_embeddings=12).max_length == 12
    cfg = res(GenerationConfig(bos_token_id=0, min_length=40), min_new_tokens=7)
    assert cfg.min_length == 8



def test_a_checkpoints_max_length_past_the_positions_is_named_as_the_checkpoints():
    base = GenerationConfig(bos_token_id=0, max_length=512)
    with pytest.raises(ValueError, match=re.escape(
            "the checkpoint's generation config sets max_length=512, past this model's 12 positions (max_length <= "
            "13: the decoder start token counts as 1); pass max_new_tokens or max_length to generate")):
        resolve(base, {}, vocab_size=10, max_position_embeddings=12)
    assert resolve(base, {"max_new_tokens": 5}, vocab_size=10, max_position_embeddings=12).max_length == 6
    assert resolve(base, {"max_length": 13}, vocab_size=10, max_position_embeddings=12).max_length == 13
    with pytest.raises(ValueError, match=re.escape("`max_length` must be an integer >= 2 and <= 13")):
        resolve(base, {"max_length": 14}, vocab_size=10, max_position_embeddings=12)     # the call's: named so

def test_explicit_none():
    base = GenerationConfig(bos_token_id=0, forced_bos_token_id=0, max_length=30, num_beams=4)
    cfg = res(base, forced_bos_token_id=None, top_k=None, max_length=None, num_beams=None)
    assert cfg.forced_bos_token_id is None and cfg.top_k is None           # switched off, as in transformers
    assert (cfg.max_length, cfg.num_beams) == (30, 4)                      # not given (transformers would fail)
    flags = ("do_sample", "early_stopping", "remove_invalid_values", "renormalize_logits", "output_scores",
             "output_logits", "return_dict_in_generate")
    base = GenerationConfig(bos_token_id=0, min_length=10, **dict.fromkeys(flags, True))
    cfg = res(base, min_length=None, **dict.fromkeys(flags))     # transformers: `do_sample is True`, ... -> off
    assert cfg.min_length == 0 and all(getattr(cfg, f) is False for f in flags)


def test_settings_are_the_only_attributes():
    """transformers' GenerationConfig takes any attribute; here a misspelt one is refused where it is set, not
    ignored when generate runs. One transformers would apply and this package does not implement is kept as the
    constructor and from_dict keep it: refused by generate where it acts, taken at its no-op value (README: "as a
    keyword, assigned to a GenerationConfig, ..."; both were refused at any value)."""
    cfg = GenerationConfig(bos_token_id=0)
    cfg.num_beams = 3
    with pytest.raises(AttributeError, match="num_beam is not a generation setting; settings: max_length"):
        cfg.num_beam = 3
    with pytest.raises(TypeError, match="GenerationConfig got 'num_beam': not generation settings; settings: max_"):
        GenerationConfig(num_beam=3)
    cfg.guidance_scale = 1.5
    assert cfg.guidance_scale == 1.5 and cfg.unsupported == {"guidance_scale": 1.5}
    with pytest.raises(ValueError, match=r"sets \{'guidance_scale': 1.5\}, which seq2seq_kit does not implement"):
        res(cfg)
    cfg.guidance_scale = 1.0                                    # its no-op value: nothing left to refuse
    assert cfg.unsupported == {} and cfg.guidance_scale == 1.0 and res(cfg).num_beams == 3
    for given, kept in ((dict(guidance_scale=1.0), {}), (dict(low_memory=False), {}),
                        (dict(num_beams=1, low_memory=True), {"low_memory": True}),
                        (dict(guidance_scale=2.0), {"guidance_scale": 2.0})):
        made = GenerationConfig(bos_token_id=0, **given)
        assert made.unsupported == kept == GenerationConfig.from_dict({"bos_token_id": 0, **given}).unsupported
    res(GenerationConfig(bos_token_id=0, num_beams=1, low_memory=True))       # greedy: transformers ignores it
    with pytest.raises(ValueError, match="low_memory"):
        res(GenerationConfig(bos_token_id=0, num_beams=2, low_memory=True))


def test_a_transformers_generation_config_is_refused():
    theirs = transformers.GenerationConfig(num_beams=3, bos_token_id=0)
    with pytest.raises(TypeError, match=r"must be seq2seq_kit's GenerationConfig.*GenerationConfig.from_dict"):
        res(theirs)
    assert res(GenerationConfig.from_dict(theirs.to_dict())).num_beams == 3


def test_unknown_kwargs_named():
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['num_beam'\]"):
        res(GenerationConfig(bos_token_id=0), num_beam=3)


def test_transformers_arguments_that_change_nothing_are_taken():
    """use_cache (seq2seq_kit always decodes from its KV cache, with the tokens of a run without one) and
    transformers' settings that seq2seq_kit does not implement, at the value that makes them a no-op, are taken as
    transformers takes them (scripts pass use_cache=True); any other value of those settings is refused by name."""
    base = GenerationConfig(bos_token_id=0)
    plain = res(base, num_beams=2)
    for kwargs in (dict(use_cache=True), dict(use_cache=False), dict(guidance_scale=1.0), dict(guidance_scale=1),
                   dict(num_beam_groups=1, diversity_penalty=0.0, low_memory=False, constraints=None)):
        assert res(base, num_beams=2, **kwargs) == plain, kwargs
    with pytest.raises(ValueError, match=r"\{'guidance_scale': 1.5\} is a setting of transformers' generate that "
                                         r"seq2seq_kit does not implement \(taken only where it does nothing: "
                                         r"guidance_scale=1.0\); leave it out"):
        res(base, num_beams=3, guidance_scale=1.5)
    with pytest.raises(ValueError, match=r"are settings .*guidance_scale=1.0, low_memory=False\); leave them out"):
        res(base, num_beams=2, guidance_scale=2.0, low_memory=True)
    with pytest.raises(ValueError, match="use_cache must be True or False, got 1"):
        res(base, use_cache=1)
    assert res(base, use_cache=True, output_attentions=True) == res(base, output_attentions=True)


@pytest.mark.parametrize("traced", [dict(output_attentions=True), dict(output_hidden_states=True),
                                    dict(output_attentions=True, output_hidden_states=True)])
def test_use_cache_false_with_attentions_or_hidden_states_is_refused(traced):
    """Without a cache transformers reports every prefix position's attentions and hidden states at each step
    ([1, H, t, t]); seq2seq_kit decodes from its cache and reported the new position's ([1, H, 1, t]) under
    use_cache=False: other shapes, silently. Refused, naming the fix."""
    with pytest.raises(ValueError, match=r"use_cache=False with output_\w+.*: leave use_cache out"):
        res(GenerationConfig(bos_token_id=0), use_cache=False, return_dict_in_generate=True, **traced)


def test_unsupported_checkpoint_setting_is_refused():
    """A transformers-only setting in a checkpoint's generation config that transformers would apply is refused."""
    for setting in (dict(guidance_scale=1.5), dict(token_healing=True)):
        base = GenerationConfig.from_dict({"bos_token_id": 0, "num_beam_groups": 1, **setting})
        assert base.unsupported == setting
        [(name, value)] = setting.items()
        with pytest.raises(ValueError, match=re.escape(
                f"the generation config (the checkpoint's, or generation_config=) sets {setting}, which seq2seq_kit "
                f"does not implement; pass {name}=None to generate() to run without, or set "
                "model.generation_config.unsupported = {}")):
            res(base)
        assert res(base, **{name: None}) == res(GenerationConfig(bos_token_id=0))      # the call wins
        base.unsupported = {}
        res(base)


@pytest.mark.parametrize("setting, call", [
    (dict(guidance_scale=1.5), dict(guidance_scale=1.0)),
    (dict(guidance_scale=1.5), dict(guidance_scale=None)),
    (dict(low_memory=True), dict(num_beams=1)),               # transformers refuses it in beam search only
    (dict(dola_layers="low", use_mtp=True, assistant_early_exit=2), {}),    # DoLa, assisted: greedy / sampling only
])
def test_a_transformers_only_setting_that_would_not_act_is_taken(setting, call):
    """As transformers reads them: a call's value overrides the checkpoint's (guidance_scale=1.0 or None over its
    1.5; it was refused, the checkpoint named), and a setting that does nothing in the search run (low_memory in a
    greedy search, DoLa's layers in a beam search, ...) is taken from the checkpoint and from the call
    alike (transformers' output is then that of the plain search)."""
    base = GenerationConfig.from_dict({"bos_token_id": 0, "num_beams": 2, **setting})
    plain = GenerationConfig.from_dict({"bos_token_id": 0, "num_beams": 2})
    assert res(base, **call) == res(plain, **call)
    if not set(setting) & set(call):                          # the same setting passed to generate: taken alike
        assert res(plain, **setting, **call) == res(plain, **call)


@pytest.mark.parametrize("setting, call", [
    (dict(dola_layers="low"), dict(num_beams=1)),
    (dict(assistant_early_exit=2), dict(num_beams=1)),
    (dict(use_mtp=True), dict(num_beams=1)),
    (dict(token_healing=True), {}),
    (dict(low_memory=True), {}),                              # transformers' beam search refuses it
])
def test_a_transformers_only_setting_that_would_act_is_refused(setting, call):
    """Where transformers' generate would apply it (get_generation_mode), from the checkpoint or from the call."""
    base = GenerationConfig.from_dict({"bos_token_id": 0, "num_beams": 2, **setting})
    with pytest.raises(ValueError, match=re.escape(f"generation_config=) sets {setting}, which seq2seq_kit does not")):
        res(base, **call)
    with pytest.raises(ValueError, match=re.escape(f"{setting} is a setting of transformers' generate that")):
        res(GenerationConfig(bos_token_id=0, num_beams=2), **setting, **call)


def test_transformers_generate_arguments_taken_where_they_change_nothing():
    """transformers' generate() arguments seq2seq_kit has no use for, at the values where they change no token, are
    taken (scripts pass synced_gpus=False, cache_implementation="static"); others are refused, naming the values."""
    base = GenerationConfig(bos_token_id=0)
    plain = res(base)
    for kwargs in (dict(stopping_criteria=None), dict(stopping_criteria=[]), dict(synced_gpus=False),
                   dict(assistant_model=None), dict(negative_prompt_ids=None), dict(custom_generate=None),
                   dict(cache_implementation="static"), dict(cache_implementation="dynamic"),
                   dict(disable_compile=True), dict(compile_config=None)):
        assert res(base, **kwargs) == plain, kwargs
    with pytest.raises(ValueError, match=re.escape(
            "{'stopping_criteria': ['mine']}: transformers' generate takes it, seq2seq_kit only where it changes "
            "nothing (stopping_criteria: None or []); leave it out (stop conditions: max_length, max_time, "
            "stop_strings, eos_token_id)")):
        res(base, stopping_criteria=["mine"])
    with pytest.raises(ValueError, match=r"cache_implementation: None or 'dynamic' or 'static'"):
        res(base, cache_implementation="quantized")


def test_a_checkpoints_output_attentions_is_a_setting_as_in_transformers():
    """A config.json's output_attentions: true makes transformers' generate return a dict with the attentions, and so
    here (tests/test_output_attentions.py); without return_dict_in_generate it is ignored, as in transformers."""
    base = GenerationConfig.from_model_config({"bos_token_id": 0, "output_attentions": True,
                                               "output_hidden_states": False})
    assert base.unsupported == {} and base.return_dict_in_generate is True and base.output_attentions is True
    assert res(base).output_attentions is True
    assert res(base, return_dict_in_generate=False).return_dict_in_generate is False


BAD = [
    (dict(num_beams=0), "num_beams"),
    (dict(num_beams=2.5), "num_beams"),
    (dict(num_beams=2, num_return_sequences=3), r"num_return_sequences.*num_beams"),
    (dict(num_return_sequences=2), "num_return_sequences"),
    (dict(num_return_sequences=0), "num_return_sequences"),
    (dict(max_length=1), r"max_length.*>= 2"),
    (dict(max_length=52), r"max_length.*<= 51"),
    (dict(max_new_tokens=0), "max_new_tokens"),
    (dict(max_new_tokens=60), "max_length"),
    (dict(max_length=20, max_new_tokens=60), r"^`max_new_tokens` must be an integer >= 1 and <= 50 \(the model has 50 "
                                             r"positions, one of them the decoder start token's: max_length = "
                                             r"max_new_tokens \+ 1\), got 60$"),
    (dict(min_length=-1), "min_length"),
    (dict(min_new_tokens=-2), "min_new_tokens"),
    (dict(early_stopping="always"), "early_stopping"),
    (dict(length_penalty="long"), "length_penalty"),
    (dict(no_repeat_ngram_size=1.5), "no_repeat_ngram_size"),
    (dict(encoder_no_repeat_ngram_size=1.5), "encoder_no_repeat_ngram_size"),
    (dict(repetition_penalty=0.0), "repetition_penalty"),
    (dict(bad_words_ids=[]), "bad_words_ids"),
    (dict(bad_words_ids=[[1], 2]), "bad_words_ids"),
    (dict(bad_words_ids=[[1, 100]]), r"bad_words_ids.*\[0, 100\)"),
    (dict(eos_token_id=100), r"eos_token_id.*\[0, 100\)"),
    (dict(forced_eos_token_id=[]), "forced_eos_token_id"),        # eos_token_id=[] is no EOS (test_generation)
    (dict(pad_token_id=-1), "pad_token_id"),
    (dict(forced_bos_token_id=100), "forced_bos_token_id"),
    (dict(forced_eos_token_id=[2, 200]), "forced_eos_token_id"),
    (dict(decoder_start_token_id=None, bos_token_id=None), "decoder_start_token_id"),
    (dict(decoder_start_token_id=[2, 0]), r"one token id, got \[2, 0\]; .*pass decoder_input_ids=\[\[id\], ...\]"),
    (dict(do_sample=True, top_p=-0.1), r"top_p.*>= 0"),
    (dict(top_p="high"), "top_p.*number"),
    (dict(do_sample=True, top_k=-1), "top_k"),
    (dict(do_sample=True, temperature=0.0), r"temperature.*> 0"),
    (dict(do_sample=True, temperature=-1.0), "temperature"),
    (dict(do_sample="yes"), "do_sample"),
    (dict(output_scores=2), "output_scores"),                      # 0 and 1 are taken (test_generation)
    (dict(output_logits="yes"), "output_logits"),
    (dict(renormalize_logits="no"), "renormalize_logits"),       # transformers: `is True`; truthy is no True
    (dict(remove_invalid_values=1), "remove_invalid_values"),
    (dict(do_sample=True, temperature=float("inf")), r"temperature.*finite"),
    (dict(temperature=float("nan")), r"temperature.*finite"),
    (dict(length_penalty=float("nan")), r"length_penalty.*finite"),
    (dict(length_penalty=float("-inf")), r"length_penalty.*finite"),
    (dict(repetition_penalty=float("inf")), r"repetition_penalty.*finite"),
    (dict(num_beams=2, length_penalty=1000.0, max_length=20), r"length_penalty.*too large.*<= 236\.9"),
]


@pytest.mark.parametrize("kwargs,message", BAD, ids=[str(b[0]) for b in BAD])
def test_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        res(GenerationConfig(bos_token_id=0, eos_token_id=2), **kwargs)


def test_exponential_decay_without_eos_is_refused():
    """The penalty raises EOS's score: with no eos_token_id transformers fails inside torch (torch.tensor(None)),
    and it was silently dropped here; named now. eos_token_id=[] runs, as in transformers (nothing to raise)."""
    with pytest.raises(ValueError) as e:
        res(GenerationConfig(bos_token_id=0), exponential_decay_length_penalty=(1, 1.5))
    assert str(e.value) == ("`exponential_decay_length_penalty` ((1, 1.5)) raises the score of EOS, but no "
                            "`eos_token_id` is set (neither by this call nor by the checkpoint): pass eos_token_id, "
                            "or drop the penalty")
    with pytest.raises(ValueError, match="no `eos_token_id` is set"):
        res(GenerationConfig(bos_token_id=0, eos_token_id=2), exponential_decay_length_penalty=(1, 1.5),
            eos_token_id=None)
    cfg = res(GenerationConfig(bos_token_id=0, pad_token_id=1), exponential_decay_length_penalty=(1, 1.5),
              eos_token_id=[])
    assert cfg.exponential_decay_length_penalty == (1, 1.5)
    with pytest.raises(ValueError, match=r"eos_token_id=\[\] \(no EOS id\) leaves pad_token_id without its default"):
        res(GenerationConfig(bos_token_id=0), eos_token_id=[])         # transformers: IndexError on eos_token_id[0]


def test_temperature_zero_is_fine_without_sampling():
    assert res(GenerationConfig(bos_token_id=0), temperature=0.0).temperature == 0.0


def test_sampling_cutoffs_out_of_range_are_fine_without_sampling():
    """As transformers (a warning there): top_k / top_p apply only when sampling."""
    cfg = res(GenerationConfig(bos_token_id=0), top_p=1.5, top_k=-1)
    assert (cfg.top_p, cfg.top_k) == (1.5, -1)


def test_every_field_is_a_generate_kwarg_but_a_drafts():
    """Every setting but a draft model's (read from its own generation_config) is a generate kwarg; a draft's
    settings are read from and written to generation_config.json as the others."""
    assert set(GENERATE_KWARGS) == {f.name for f in fields(GenerationConfig)} - {"unsupported", *DRAFT_SETTINGS}
    cfg = GenerationConfig(num_assistant_tokens=5, num_assistant_tokens_schedule="heuristic",
                           assistant_confidence_threshold=0.3)
    assert GenerationConfig.from_dict(cfg.to_dict()) == cfg


@pytest.mark.parametrize("kwargs,message", [
    (dict(min_length=30, max_length=20), r"`min_length` \(30\) is larger than the maximum possible length \(20\)"),
    (dict(min_new_tokens=30, max_new_tokens=5), r"`min_new_tokens` \(30\).*\(6\)"),
    (dict(min_length=30), r".*\(21\).*its default value"),
])
def test_unfeasible_min_length_warns_as_transformers(kwargs, message):
    """transformers warns (UserWarning, generation stops at max_length); it does not raise."""
    with pytest.warns(UserWarning, match=r"Unfeasible length constraints: " + message):
        cfg = res(GenerationConfig(bos_token_id=0, eos_token_id=2), **kwargs)
    assert cfg.min_length > cfg.max_length


@pytest.mark.parametrize("kwargs", [dict(min_length=20, max_length=20), dict(min_new_tokens=5, max_new_tokens=5),
                                    dict(min_length=21)], ids=str)
def test_a_minimum_length_equal_to_max_length_does_not_warn_as_in_transformers(kwargs):
    """transformers warns only when the minimum is larger than max_length (21 here: 20 new tokens and the start)."""
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = res(GenerationConfig(bos_token_id=0, eos_token_id=2), **kwargs)
    assert cfg.min_length == cfg.max_length


def test_no_eos_ids_beside_pad_id_zero_is_refused_in_beam_search_only():
    """eos_token_id=[] and pad_token_id=0: greedy search and sampling pad with 0, as transformers does; beam search
    fills with eos_token_id[0] where the pad id is 0 (transformers fails on the empty list): refused."""
    for kwargs in (dict(), dict(do_sample=True, num_return_sequences=2)):
        assert res(GenerationConfig(bos_token_id=0), eos_token_id=[], pad_token_id=0, **kwargs).pad_token_id == 0
    with pytest.raises(ValueError, match="a pad_token_id other than 0, or eos_token_id"):
        res(GenerationConfig(bos_token_id=0), eos_token_id=[], pad_token_id=0, num_beams=2)


def test_max_time_zero_is_taken_as_in_transformers():
    """max_time=0 runs (its first step is the last, as there); below 0 is refused."""
    assert res(GenerationConfig(bos_token_id=0), max_time=0).max_time == 0
    with pytest.raises(ValueError, match=r"`max_time` must be a number of seconds >= 0"):
        res(GenerationConfig(bos_token_id=0), max_time=-0.5)


# ---- transformers' GenerationConfig methods: update, validate, keyword overrides, to_diff_dict, to_json_file ------

def theirs_diff(gc) -> dict:
    return {k: v for k, v in gc.to_diff_dict().items() if k != "transformers_version"}


def test_update_sets_the_settings_and_returns_the_rest_as_transformers():
    """Both set what they have and return the unused kwargs; a transformers-only setting is used, and here kept in
    `unsupported` as from_dict keeps it (generate refuses it where it would act)."""
    kwargs = dict(num_beams=4, max_new_tokens=8, guidance_scale=1.5, foo=1)
    ours, theirs = GenerationConfig(num_beams=2), transformers.GenerationConfig(num_beams=2)
    assert ours.update(**kwargs) == theirs.update(**kwargs) == {"foo": 1}
    assert ours.to_diff_dict() == theirs_diff(theirs) == dict(num_beams=4, max_new_tokens=8, guidance_scale=1.5)
    assert ours.unsupported == {"guidance_scale": 1.5}
    assert ours.update(guidance_scale=1.0) == {} and ours.unsupported == {}         # its no-op value: dropped
    ours, theirs = GenerationConfig(num_beams=2), transformers.GenerationConfig(num_beams=2)
    assert ours.update(defaults_only=True, num_beams=4, max_length=9) == {}
    theirs.update(defaults_only=True, num_beams=4, max_length=9)
    assert ours.to_diff_dict() == theirs_diff(theirs) == dict(num_beams=2, max_length=9)


def test_update_validates_and_leaves_the_config_as_it_was_when_refused():
    """transformers' update validates (ValueError) after setting; here nothing is set when the result is refused."""
    ours, theirs = GenerationConfig(num_beams=2), transformers.GenerationConfig(num_beams=2)
    with pytest.raises(ValueError, match="max_new_tokens"):
        theirs.update(num_beams=3, max_new_tokens=0)
    with pytest.raises(ValueError, match=re.escape("`max_new_tokens` must be an integer >= 1, got 0")):
        ours.update(num_beams=3, max_new_tokens=0)
    assert ours == GenerationConfig(num_beams=2) and theirs.max_new_tokens == 0


@pytest.mark.parametrize("settings, message", [
    (dict(max_new_tokens=0), r"`max_new_tokens` must be an integer >= 1, got 0"),
    (dict(early_stopping="x"), r"`early_stopping` must be True, False or 'never', got 'x'"),
    (dict(num_return_sequences=2), r"greedy search returns 1 sequence per input, got `num_return_sequences` 2"),
    (dict(num_beams=2, num_return_sequences=3), r"`num_return_sequences` \(3\) must be between 1 and `num_beams` "
                                                r"\(2\)"),
    (dict(suppress_tokens=[2], forced_eos_token_id=2), r"every token of `forced_eos_token_id` \(\[2\]\) is in "
                                                       r"`suppress_tokens`"),
], ids=str)
def test_validate_raises_where_transformers_validate_raises(settings, message):
    with pytest.raises(ValueError):
        transformers.GenerationConfig(**settings)                 # (its __init__ validates)
    with pytest.raises(ValueError, match=message):
        GenerationConfig(**settings).validate()


def test_validate_takes_what_generate_takes_and_refuses_what_it_refuses_without_a_model():
    """Without a model: no decoder start token needed, token ids only >= 0, a max_length without an upper bound;
    generate's other refusals hold (num_beams 0 and a max_length under 2, which transformers' validate lets pass)."""
    for cfg in (GenerationConfig(), GenerationConfig(num_beams=2, max_length=2000, eos_token_id=(2, 3)),
                GenerationConfig(do_sample=1, output_scores=0, sequence_bias={(5,): -1.0}, forced_bos_token_id=10**6),
                GenerationConfig(max_new_tokens=5, max_length=1)):               # max_new_tokens wins over it
        assert cfg.validate() is None
    for settings, message in ((dict(num_beams=0), r"`num_beams` must be an integer >= 1, got 0"),
                              (dict(max_length=1), r"`max_length` must be an integer >= 2 \(max_new_tokens \+ 1"),
                              (dict(max_length=20.0), r"`max_length` must be an integer, got 20.0"),
                              (dict(pad_token_id=-1), r"`pad_token_id` must be a token id >= 0, got -1"),
                              (dict(do_sample=True, temperature=0.0), r"`temperature` must be > 0")):
        with pytest.raises(ValueError, match=message):
            GenerationConfig(**settings).validate()


def test_from_pretrained_and_from_dict_take_keyword_settings_over_the_files_as_transformers(checkpoint, tmp_path):
    shutil.copy(checkpoint("tiny") / "config.json", tmp_path / "config.json")
    (tmp_path / "generation_config.json").write_text(json.dumps(dict(num_beams=3, max_length=25, min_length=4,
                                                                     decoder_start_token_id=2)))
    overrides = dict(num_beams=7, max_length=None, no_repeat_ngram_size=2)
    ours = GenerationConfig.from_pretrained(tmp_path, **overrides)
    assert ours.to_diff_dict() == theirs_diff(transformers.GenerationConfig.from_pretrained(tmp_path, **overrides)) \
        == dict(num_beams=7, min_length=4, decoder_start_token_id=2, no_repeat_ngram_size=2)
    ours = GenerationConfig.from_dict({"num_beams": 2}, max_length=5, guidance_scale=2.0)
    assert ours.to_diff_dict() == theirs_diff(transformers.GenerationConfig.from_dict(
        {"num_beams": 2}, max_length=5, guidance_scale=2.0)) == dict(num_beams=2, max_length=5, guidance_scale=2.0)


def test_keyword_settings_it_cannot_hold_are_returned_or_refused():
    """transformers keeps any keyword as an attribute (and so returns none unused); here a key that is no setting is
    returned with return_unused_kwargs=True, else refused by name (it was silently dropped)."""
    theirs, unused = transformers.GenerationConfig.from_dict({"num_beams": 2}, foo=3, return_unused_kwargs=True)
    assert unused == {} and theirs.foo == 3
    ours, unused = GenerationConfig.from_dict({"num_beams": 2}, num_beam=3, max_length=9, return_unused_kwargs=True)
    assert unused == {"num_beam": 3} and ours == GenerationConfig(num_beams=2, max_length=9)
    with pytest.raises(TypeError, match=re.escape("['num_beam']: not generation settings, and GenerationConfig keeps "
                                                  "no other keys; settings: max_length, ")):
        GenerationConfig.from_dict({"num_beams": 2}, num_beam=3)
    assert GenerationConfig.from_dict({}, return_unused_kwargs=True) == (GenerationConfig(), {})


def test_to_diff_dict_and_to_json_file_as_transformers(tmp_path):
    settings = dict(num_beams=4, do_sample=False, top_k=50, eos_token_id=[2, 3], guidance_scale=1.5)
    ours, theirs = GenerationConfig.from_dict(settings), transformers.GenerationConfig.from_dict(settings)
    assert ours.to_diff_dict() == theirs_diff(theirs) == settings
    ours.to_json_file(tmp_path / "ours.json")
    assert json.loads((tmp_path / "ours.json").read_text()) == settings
    loaded = transformers.GenerationConfig.from_pretrained(tmp_path, config_file_name="ours.json")
    assert theirs_diff(loaded) == settings


# ---- transformers' warning where both forms of a length are set ----------------------------------------------------

def both_lengths_warnings(call) -> list[str]:
    """The "Both ... seem to have been set" messages a call gives: transformers' logger's (at warning level, which
    the suite's quiet_transformers fixture lowers) or seq2seq_kit's UserWarnings."""
    import logging

    records, handler = [], logging.Handler()
    handler.emit = lambda record: records.append(record.getMessage())
    logger = transformers.logging.get_logger()
    transformers.logging.set_verbosity_warning()
    logger.addHandler(handler)
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            call()
    finally:
        logger.removeHandler(handler)
        transformers.logging.set_verbosity_error()
    return [m for m in records + [str(w.message) for w in caught] if m.startswith("Both")]


def with_generation_config(checkpoint, tmp_path, settings: dict) -> Path:
    path = Path(shutil.copytree(checkpoint("tiny"), tmp_path / "ckpt"))
    (path / "generation_config.json").write_text(json.dumps(
        dict(decoder_start_token_id=2, eos_token_id=2, pad_token_id=1, **settings)))
    return path


LENGTH_CASES = [
    (dict(max_new_tokens=12), dict(max_length=5)),            # the checkpoint's max_new_tokens over the call's
    (dict(max_new_tokens=12), dict()),
    (dict(max_new_tokens=12), dict(max_new_tokens=None, max_length=5)),
    (dict(max_length=30, min_length=10), dict(max_new_tokens=5)),
    (dict(max_length=30, min_length=10), dict(max_new_tokens=5, max_length=None)),
    (dict(max_length=30, min_length=10), dict(max_new_tokens=5, min_new_tokens=3)),
    (dict(), dict(max_new_tokens=5, max_length=3)),
    (dict(), dict(max_new_tokens=6, min_new_tokens=2, min_length=0)),
    (dict(), dict(max_new_tokens=6, min_new_tokens=2, min_length=None)),
    (dict(), dict(max_new_tokens=4, generation_config=dict(max_length=30))),
    (dict(), dict(max_length=6, generation_config=dict(max_new_tokens=4))),
]


@pytest.mark.parametrize("settings, call", LENGTH_CASES, ids=str)
def test_both_forms_of_a_length_warn_as_transformers(checkpoint, tmp_path, settings, call):
    """transformers' `_prepare_generated_length` warns where max_new_tokens (min_new_tokens), from the call or the
    checkpoint, meets a max_length (min_length) set there too: the same words, as a UserWarning, and the same
    tokens (max_new_tokens wins)."""
    import torch

    path = with_generation_config(checkpoint, tmp_path, settings)
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    ours = transformers_free_model(path)
    ids = torch.tensor([[0, 5, 6, 7, 8, 2]])

    def run(model, config_class):
        kwargs = {k: config_class(**v) if k == "generation_config" else v for k, v in call.items()}
        out = []
        return out, both_lengths_warnings(lambda: out.append(model.generate(ids, **kwargs)))

    (want, theirs_said), (got, ours_said) = run(theirs, transformers.GenerationConfig), run(ours, GenerationConfig)
    assert torch.equal(got[0], want[0])
    assert ours_said == theirs_said
    if call == dict(max_length=5):
        assert ours_said == ["Both `max_new_tokens` (=12) and `max_length`(=5) seem to have been set. "
                             "`max_new_tokens` will take precedence. Please refer to the documentation for more "
                             "information. (https://huggingface.co/docs/transformers/main/en/main_classes/"
                             "text_generation)"] and got[0].shape[1] == 13


def transformers_free_model(path):
    from seq2seq_kit.modeling import BartForConditionalGeneration

    return BartForConditionalGeneration.from_pretrained(path).eval()


def test_an_explicit_none_length_does_not_warn():
    """A length passed as None unsets it (long_documents.map_settings so replaces the call's lengths with a map
    stage's): no warning, where transformers says "`min_length`(=None) seem to have been set" beside a checkpoint's
    min_length (and nothing for max_length=None)."""
    from seq2seq_kit.long_documents import map_settings

    base = GenerationConfig(bos_token_id=0, max_length=30, min_length=10)
    stage = map_settings(dict(max_length=40, min_length=5), dict(max_new_tokens=20, min_new_tokens=3))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cfg = res(base, **stage)
    assert (cfg.max_length, cfg.min_length) == (21, 4)
    with pytest.warns(UserWarning, match=r"^Both `min_new_tokens` \(=3\) and `min_length`\(=10\)"):
        res(base, max_length=None, min_new_tokens=3)                  # the checkpoint's min_length: warned


# ---- a file's 0 / 1 flags and whole-number float lengths --------------------------------------------------------

@pytest.mark.parametrize("file", ["generation_config.json", "config.json"])
def test_a_files_0_1_flags_and_whole_float_lengths_load_and_generate_as_transformers(checkpoint, tmp_path, file):
    """transformers loads do_sample: 0, output_scores: 0, return_dict_in_generate: 0 (read by truth value) and
    max_length: 20.0 (a generation_config.json's decoder_start_token_id: 2.0 too; its model config refuses that in
    config.json) and generates with them; they were refused at load. Taken as False, 20 and 2."""
    import torch

    path = Path(shutil.copytree(checkpoint("tiny"), tmp_path / "ckpt"))
    settings = dict(do_sample=0, output_scores=0, return_dict_in_generate=0, max_length=20.0, decoder_start_token_id=2)
    if file == "config.json":
        settings = {**json.loads((path / "config.json").read_text()), **settings}
    else:
        settings["decoder_start_token_id"] = 2.0
    (path / file).write_text(json.dumps(settings))
    cfg = GenerationConfig.from_pretrained(path)
    assert (cfg.do_sample, cfg.output_scores, cfg.return_dict_in_generate, cfg.max_length,
            cfg.decoder_start_token_id) == (False, False, False, 20, 2)
    assert all(type(getattr(cfg, k)) is bool for k in ("do_sample", "output_scores", "return_dict_in_generate"))
    assert type(cfg.max_length) is int and type(cfg.decoder_start_token_id) is int
    ids = torch.tensor([[0, 5, 6, 7, 8, 2]])
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    assert torch.equal(transformers_free_model(path).generate(ids), theirs.generate(ids))


def test_a_config_jsons_output_flag_1_returns_a_dict_as_transformers():
    """from_model_config turns return_dict_in_generate on for an output flag set, by truth value as transformers."""
    settings = {"bos_token_id": 0, "output_scores": 1}
    assert transformers.GenerationConfig.from_model_config(settings).return_dict_in_generate is True
    assert GenerationConfig.from_model_config(settings).return_dict_in_generate is True


@pytest.mark.parametrize("setting", [dict(num_beams=4.0), dict(no_repeat_ngram_size=3.0), dict(min_length=4.0),
                                     dict(top_k=10.0), dict(forced_bos_token_id=0.0), dict(max_length=20.5),
                                     dict(do_sample=2), dict(remove_invalid_values=1)], ids=str)
def test_a_files_forms_transformers_cannot_run_stay_refused_at_load(tmp_path, setting):
    """transformers fails on these at generate (repeat_interleave with 4.0 beams, its processors' integer checks,
    an index of 0.0; remove_invalid_values is read with `is True`, so 1 is off there): refused at load, by name."""
    (tmp_path / "generation_config.json").write_text(json.dumps(setting))
    [(name, value)] = setting.items()
    with pytest.raises(ValueError, match=re.escape(f"generation_config.json: {name!r} must be ") + r".*, got "
                       + re.escape(repr(value))):
        GenerationConfig.from_pretrained(tmp_path)
