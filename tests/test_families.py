"""The BART family's cousins on the one network: Marian, Pegasus, mBART-50, M2M100 and NLLB against transformers'
MarianMTModel, PegasusForConditionalGeneration, MBartForConditionalGeneration and M2M100ForConditionalGeneration.

Random small checkpoints (tests/checkpoints.py: "marian", "marian-separate" (its own decoder vocabulary), "pegasus",
"mbart50", "m2m100", "nllb"), fp32 on CPU:
teacher-forced logits within 1e-4 (they are in fact equal), generate token-exact in greedy, beam 4 and seeded
sampling, on right- and left-padded batches (M2M100 counts positions over non-pad tokens); the engine gives each
family's request what generate gives it alone.
"""

from __future__ import annotations

import json
import random
import warnings

import pytest
import torch
import transformers

import seq2seq_kit
from seq2seq_kit import AutoModelForSeq2SeqLM, BartConfig, BartForConditionalGeneration, Engine
from seq2seq_kit.models.positions import fairseq_table, marian_table
from checkpoints import SPECS
from helpers import random_batch, random_settings
from test_generation import assert_parity, run_both
from test_model import labels_for

FAMILIES = ["marian", "marian-separate", "pegasus", "mbart50", "m2m100", "nllb"]
ATOL = 1e-4


@pytest.fixture(scope="module")
def pair(checkpoint):
    """pair(name) -> (transformers model, ours, spec config), loaded once per module."""
    loaded = {}

    def get(name):
        if name not in loaded:
            path = checkpoint(name)
            hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
            loaded[name] = (hf, AutoModelForSeq2SeqLM.from_pretrained(path), SPECS[name].config)
        return loaded[name]

    return get


def batch(config, left: bool = False, target_len: int | None = None):
    out = random_batch(config["vocab_size"], config["pad_token_id"], (12, 9, 5), seed=3, eos=config["eos_token_id"],
                       target_len=target_len, decoder_start=config["decoder_start_token_id"])
    if not left:
        return out
    ids, mask = out[:2]
    shift = (mask == 0).sum(dim=1)                                    # each row's padding moved to its front
    ids = torch.stack([row.roll(int(s)) for row, s in zip(ids, shift)])
    mask = torch.stack([row.roll(int(s)) for row, s in zip(mask, shift)])
    return (ids, mask, *out[2:])


@pytest.mark.parametrize("name", ["marian", "marian-separate"])
def test_embeddings_and_generation_flags_read_as_transformers(pair, name):
    """get_input_embeddings / get_output_embeddings hold transformers' weights (Marian with separate vocabularies:
    the encoder's own table, and the decoder's as the LM head's); can_generate, main_input_name as there."""
    hf, ours, _ = pair(name)
    assert torch.equal(ours.get_input_embeddings().weight, hf.get_input_embeddings().weight)
    assert torch.equal(ours.get_output_embeddings().weight, hf.get_output_embeddings().weight)
    assert (ours.can_generate(), ours.main_input_name) == (hf.can_generate(), hf.main_input_name) == (True, "input_ids")


@pytest.mark.parametrize("left", [False, True], ids=["right-padded", "left-padded"])
@pytest.mark.parametrize("name", FAMILIES)
def test_logits_match_transformers(pair, name, left):
    hf, ours, config = pair(name)
    ids, mask, dec = batch(config, left, target_len=7)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(ours(ids, mask, dec).logits, theirs, atol=ATOL, rtol=0)
    for counts in (dict(), dict(exclude_embeddings=True), dict(only_trainable=True, exclude_embeddings=True)):
        assert ours.num_parameters(**counts) == hf.num_parameters(**counts)  # Marian, Pegasus tables: parameters there


@pytest.mark.parametrize("name", ["marian", "pegasus", "m2m100"])
def test_forward_without_decoder_inputs_is_refused_as_transformers_refuses(pair, name):
    """Marian, Pegasus and M2M100 make decoder inputs only from labels (BART and mBART shift input_ids: see
    test_model.py): without decoder_input_ids both refuse, where seq2seq_kit returned logits of input_ids shifted."""
    hf, ours, config = pair(name)
    ids, mask = batch(config)[:2]
    with pytest.raises(ValueError):
        hf(input_ids=ids, attention_mask=mask)
    with pytest.raises(ValueError, match=f"pass decoder_input_ids: a {ours.config.family.name} model makes none"):
        ours(ids, mask)


@pytest.mark.parametrize("name", FAMILIES)
def test_labels_give_transformers_loss(pair, name):
    """labels without decoder inputs: every cousin makes them from labels as transformers does (Marian, Pegasus,
    M2M100 behind decoder_start_token_id; mBART-50 behind each row's last non-pad token; -100 read as pad) and the
    loss is its mean cross-entropy over the scored positions (Marian with separate vocabularies: the decoder's),
    within float rounding."""
    hf, ours, config = pair(name)
    ids, mask = batch(config, left=name in ("m2m100", "nllb"))[:2]
    labels = labels_for(ours.config)
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, labels=labels)
    mine = ours(ids, mask, labels=labels)
    torch.testing.assert_close(mine.logits, theirs.logits, atol=ATOL, rtol=0)
    torch.testing.assert_close(mine.loss, theirs.loss, rtol=1e-6, atol=0)


@pytest.mark.parametrize("kwargs", [dict(), dict(num_beams=4), dict(do_sample=True, top_k=0)],
                         ids=["greedy", "beam4", "sample"])
@pytest.mark.parametrize("name", FAMILIES)
def test_generate_matches_transformers(pair, name, kwargs):
    hf, ours, config = pair(name)
    ids, mask = batch(config, left=name in ("m2m100", "nllb"))
    torch.manual_seed(0)
    theirs = hf.generate(ids, attention_mask=mask, max_new_tokens=12, return_dict_in_generate=True,
                         output_scores=True, **kwargs)
    torch.manual_seed(0)
    mine = ours.generate(ids, mask, max_new_tokens=12, return_dict_in_generate=True, output_scores=True, **kwargs)
    assert_parity(theirs, mine)


@pytest.mark.parametrize("name", FAMILIES)
def test_random_settings_match_transformers(pair, name):
    """Settings drawn at random (searches, every processor; helpers.random_settings), on each family's batches of
    1-3 inputs (M2M100 / NLLB left-padded at times): transformers' tokens, sampling under the same
    torch.manual_seed, and its sequence scores within float rounding; 12 seeded draws a family."""
    hf, ours, config = pair(name)
    for seed in range(12):
        rng = random.Random(1000 + seed)
        kwargs = random_settings(rng)
        lengths = [rng.randint(2, 12) for _ in range(rng.randint(1, 3))]
        ids, mask = random_batch(config["vocab_size"], config["pad_token_id"], lengths, seed,
                                 eos=config["eos_token_id"])
        if name in ("m2m100", "nllb") and rng.random() < 0.5:
            shift = (mask == 0).sum(dim=1)                                # each row's padding moved to its front
            ids = torch.stack([row.roll(int(s)) for row, s in zip(ids, shift)])
            mask = torch.stack([row.roll(int(s)) for row, s in zip(mask, shift)])
        outputs = []
        for model in (hf, ours):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")        # transformers' advice (e.g. min_length above max_length)
                torch.manual_seed(seed)
                outputs.append(model.generate(input_ids=ids, attention_mask=mask, return_dict_in_generate=True,
                                              output_scores=True, **kwargs))
        theirs, mine = outputs
        assert torch.equal(mine.sequences, theirs.sequences), f"seed {seed}: {kwargs}"
        if getattr(theirs, "sequences_scores", None) is not None:                   # beam search
            torch.testing.assert_close(mine.sequences_scores, theirs.sequences_scores, atol=1e-4, rtol=1e-6)


def test_marian_defaults_come_from_its_config(pair, checkpoint):
    """Marian: decoder start = pad, bad_words_ids [[pad]] and num_beams 4 from config.json, as transformers."""
    hf, ours, config = pair("marian")
    pad = config["pad_token_id"]
    assert ours.config.decoder_start_token_id == pad
    assert ours.generation_config.bad_words_ids == [[pad]] and ours.generation_config.num_beams == 4
    ids, mask = batch(config)
    theirs, mine = run_both(hf, ours, ids, mask, max_new_tokens=10)
    assert_parity(theirs, mine)
    assert (mine.sequences[:, 0] == pad).all() and not (mine.sequences[:, 1:] == pad).any()


def test_m2m100_pad_token_in_decoder_input_gets_the_zero_position(pair):
    """A pad token fed to the decoder (a row that generated it) is embedded without a position, as transformers
    does; the next token's position still counts it. Forced here through forced_bos_token_id = pad."""
    hf, ours, config = pair("m2m100")
    ids, mask = batch(config)
    theirs, mine = run_both(hf, ours, ids, mask, max_new_tokens=8, forced_bos_token_id=config["pad_token_id"])
    assert_parity(theirs, mine)
    assert (mine.sequences[:, 1] == config["pad_token_id"]).all()


@pytest.mark.parametrize("name", ["marian", "marian-separate", "m2m100"])
def test_engine_request_equals_generate_alone(pair, name):
    _, ours, config = pair(name)
    ids = batch(config)[0][0].tolist()
    with Engine(ours) as engine:
        out = engine.submit(ids, num_beams=4, max_new_tokens=10).result(60)
    assert torch.equal(out, ours.generate(torch.tensor([ids]), num_beams=4, max_new_tokens=10))


def test_fixed_position_tables_are_transformers_tables():
    """At a real shape (Marian base: 512 positions x 512; M2M100: 1026 x 1024), bit for bit."""
    from transformers.models.m2m_100.modeling_m2m_100 import M2M100SinusoidalPositionalEmbedding
    from transformers.models.marian.modeling_marian import MarianSinusoidalPositionalEmbedding

    assert torch.equal(marian_table(512, 512), MarianSinusoidalPositionalEmbedding(512, 512).create_weight())
    assert torch.equal(marian_table(64, 33), MarianSinusoidalPositionalEmbedding(64, 33).create_weight())
    assert torch.equal(fairseq_table(1026, 1024, 1), M2M100SinusoidalPositionalEmbedding.get_embedding(1026, 1024, 1))
    # an odd width (transformers' zero last column) and another pad row
    assert torch.equal(fairseq_table(40, 33, 3), M2M100SinusoidalPositionalEmbedding.get_embedding(40, 33, 3))


@pytest.mark.parametrize("name", ["marian", "marian-separate-untied", "m2m100"])
def test_save_pretrained_round_trip_loads_in_transformers(pair, name, tmp_path):
    hf, ours, config = pair(name)
    ours.save_pretrained(tmp_path)
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    ids, mask, dec = batch(config, target_len=5)
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits,
                                   hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits)
    assert json.loads((tmp_path / "config.json").read_text())["model_type"] == ours.config.model_type


def test_checkpoint_with_position_table_loads_it(checkpoint, tmp_path):
    """Older Marian/Pegasus files carry embed_positions.weight: it is loaded (as transformers does), not refused.
    The stored tables differ from the sinusoids computed at load (+0.01, -0.02), so that a table left unread fails."""
    from safetensors.torch import load_file, save_file
    import shutil

    shutil.copytree(checkpoint("pegasus"), tmp_path, dirs_exist_ok=True)
    state = load_file(tmp_path / "model.safetensors")
    computed = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    for side, shift in (("encoder", 0.01), ("decoder", -0.02)):
        table = getattr(computed.model, side).embed_positions.weight.detach()
        state[f"model.{side}.embed_positions.weight"] = table + shift
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    for side in ("encoder", "decoder"):
        stored = state[f"model.{side}.embed_positions.weight"]
        assert torch.equal(getattr(ours, side).embed_positions.weight, stored), side
        assert torch.equal(getattr(hf.model, side).embed_positions.weight, stored), side
    ids = torch.tensor([[5, 6, 7, 8, 1]])
    decoder_ids = torch.tensor([[0, 9, 10]])
    with torch.no_grad():
        theirs = hf(input_ids=ids, decoder_input_ids=decoder_ids).logits
    torch.testing.assert_close(ours(input_ids=ids, decoder_input_ids=decoder_ids).logits, theirs, atol=1e-4, rtol=0)


@pytest.mark.parametrize("leaf", ["weight", "weights"])
def test_m2m100_checkpoint_with_tensors_transformers_ignores_loads_as_transformers(pair, checkpoint, tmp_path, leaf):
    """M2M100's fixed table is a non-persistent buffer in transformers, and it has no final_logits_bias: a file that
    carries them (fairseq conversions, a BART-style save) has them ignored, the positions computed from config.json.
    Stored here off the sinusoids (+0.5) and far from zero (bias 5.0 on one token), so that a tensor read from the
    file fails: the logits are transformers' (within ATOL), the table ours computes."""
    from safetensors.torch import load_file, save_file
    import shutil

    hf, computed, config = pair("m2m100")
    shutil.copytree(checkpoint("m2m100"), tmp_path, dirs_exist_ok=True)
    state = load_file(tmp_path / "model.safetensors")
    for side in ("encoder", "decoder"):
        state[f"model.{side}.embed_positions.{leaf}"] = getattr(computed, side).embed_positions.weight + 0.5
    state["final_logits_bias"] = torch.zeros(1, config["vocab_size"])
    state["final_logits_bias"][0, 7] = 5.0
    save_file(state, tmp_path / "model.safetensors", metadata={"format": "pt"})
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    for side in ("encoder", "decoder"):
        assert torch.equal(getattr(ours, side).embed_positions.weight, getattr(computed, side).embed_positions.weight)
    assert ours.final_logits_bias is None
    ids, mask, dec = batch(config, target_len=5)
    with torch.no_grad():
        theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()(
            input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
        want = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(theirs, want, atol=0, rtol=0)                  # transformers ignored the tables too
    torch.testing.assert_close(ours(ids, mask, dec).logits, theirs, atol=ATOL, rtol=0)


def test_auto_model_is_the_one_class():
    assert AutoModelForSeq2SeqLM is not BartForConditionalGeneration
    assert seq2seq_kit.AutoModelForSeq2SeqLM is AutoModelForSeq2SeqLM


def test_unsupported_model_type_names_the_supported_ones(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "t5"}))
    with pytest.raises(ValueError, match="model_type='t5'.*bart, mbart, marian, pegasus, m2m_100"):
        AutoModelForSeq2SeqLM.from_pretrained(tmp_path)


@pytest.mark.parametrize("name", ["marian-separate", "marian-separate-untied"])
def test_separate_decoder_vocabulary_matches_transformers(pair, checkpoint, name):
    """share_encoder_decoder_embeddings false: encoder and decoder embeddings of their own sizes, the LM head and
    final_logits_bias the decoder's (tied to its embedding, or not); decoder ids past the source vocabulary."""
    from safetensors.torch import load_file

    hf, ours, config = pair(name)
    assert ours.shared is None and ours.config.decoder_vocab_size == config["decoder_vocab_size"] == 640
    assert (ours.lm_head.weight is ours.decoder.embed_tokens.weight) == config.get("tie_word_embeddings", True)
    assert ("lm_head.weight" in load_file(checkpoint(name) / "model.safetensors")) != config.get(
        "tie_word_embeddings", True)
    ids, mask = batch(config)[:2]
    dec = torch.randint(config["vocab_size"], config["decoder_vocab_size"], (3, 6),
                        generator=torch.Generator().manual_seed(5))     # only ids the encoder's vocabulary lacks
    dec[:, 0] = config["decoder_start_token_id"]
    with torch.no_grad():
        theirs = hf(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    mine = ours(ids, mask, dec).logits
    assert mine.shape[-1] == 640
    torch.testing.assert_close(mine, theirs, atol=ATOL, rtol=0)
    cache = ours.new_cache(ours.encode(ids, mask), mask, 1, max_length=dec.shape[1] + 1)
    for t in range(dec.shape[1]):              # decode_step checks ids against the decoder's vocabulary (640)
        torch.testing.assert_close(ours.decode_step(dec[:, t], cache), theirs[:, t], atol=ATOL, rtol=0)
    with pytest.raises(ValueError, match=r"input_ids contains token id 640.*vocab_size=640"):
        ours.decode_step(torch.full((3,), 640), cache)
    theirs, mine = run_both(hf, ours, ids, mask, max_new_tokens=12, num_beams=4)
    assert_parity(theirs, mine)


@pytest.mark.parametrize("form", ["bin, lm_head saved", "lm_head only", "lm_head differs", "sharded"])
def test_separate_decoder_vocabulary_checkpoint_forms(pair, checkpoint, tmp_path, form):
    """The forms a BART checkpoint loads in, for a tied separate-vocabulary Marian: each gives transformers' logits."""
    import shutil
    import warnings

    from safetensors.torch import load_file, save_file

    hf, _, config = pair("marian-separate")
    shutil.copytree(checkpoint("marian-separate"), tmp_path, dirs_exist_ok=True)
    weights = tmp_path / "model.safetensors"
    state = load_file(weights)
    decoder = "model.decoder.embed_tokens.weight"
    if form == "sharded":
        weights.unlink()
        hf.save_pretrained(tmp_path, max_shard_size="200KB")
        assert (tmp_path / "model.safetensors.index.json").is_file()
    elif form == "bin, lm_head saved":
        weights.unlink()
        torch.save({**state, "lm_head.weight": state[decoder].clone()}, tmp_path / "pytorch_model.bin")
    else:
        state["lm_head.weight"] = state.pop(decoder) if form == "lm_head only" else state[decoder] * 0.5
        save_file(state, weights, metadata={"format": "pt"})
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    untied = form == "lm_head differs"
    assert any("lm_head.weight differs" in str(w.message) for w in caught) == untied
    assert (ours.lm_head.weight is ours.decoder.embed_tokens.weight) != untied
    theirs_model = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    ids, mask, dec = batch(config, target_len=6)
    with torch.no_grad():
        theirs = theirs_model(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    torch.testing.assert_close(ours(ids, mask, dec).logits, theirs, atol=ATOL, rtol=0)


def test_separate_decoder_vocabulary_checks(pair):
    _, ours, config = pair("marian-separate")
    ids, mask = batch(config)[:2]
    with pytest.raises(ValueError, match=r"input_ids.*vocab_size=500"):
        ours.generate(ids.masked_fill(mask == 0, 550), max_new_tokens=2)   # a source id only the decoder has
    with pytest.raises(ValueError, match=r"'decoder_start_token_id' is 700; .*decoder_vocab_size=640"):
        BartConfig.from_dict({**config, "model_type": "marian", "decoder_start_token_id": 700})
    with pytest.raises(ValueError, match=r"'pad_token_id' is 550; .*\[0, 500\)"):
        BartConfig.from_dict({**config, "model_type": "marian", "pad_token_id": 550})
    with pytest.raises(ValueError, match="share_encoder_decoder_embeddings false for a separate decoder vocabulary"):
        BartConfig.from_dict({"model_type": "marian", "decoder_vocab_size": 100})


GENERATION_KEYS = ("forced_bos_token_id", "forced_eos_token_id", "bad_words_ids", "num_beams", "max_length")


@pytest.mark.parametrize("drop", [(), ("decoder_start_token_id",)], ids=["token ids", "no decoder start"])
@pytest.mark.parametrize("name", ["marian", "marian-separate", "pegasus", "mbart50", "m2m100"])
def test_hand_written_config_generates_as_transformers(checkpoint, tmp_path, name, drop):
    """A config.json written by hand (shape and token ids, no generation keys, no generation_config.json):
    transformers 5.25 takes the generation settings from config.json's own keys, not its config class's defaults
    (Marian gets no bad_words_ids or forced EOS, no decoder start where none is written: bos, else an error)."""
    import shutil

    shutil.copytree(checkpoint(name), tmp_path, dirs_exist_ok=True)
    (tmp_path / "generation_config.json").unlink(missing_ok=True)
    config = {k: v for k, v in SPECS[name].config.items() if k not in GENERATION_KEYS + drop}
    (tmp_path / "config.json").write_text(json.dumps({"model_type": SPECS[name].model_type, **config}))
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path).eval()
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    ids, mask = batch(SPECS[name].config)
    for kwargs in (dict(max_new_tokens=8), dict(num_beams=4, max_new_tokens=8)):
        try:
            theirs = hf.generate(ids, attention_mask=mask, **kwargs)
        except ValueError as e:
            assert "decoder_start_token_id" in str(e) and "bos_token_id" not in config
            with pytest.raises(ValueError, match="decoder_start_token_id"):
                ours.generate(ids, mask, **kwargs)
            continue
        assert torch.equal(ours.generate(ids, mask, **kwargs), theirs)


def test_marian_default_ids_past_a_small_vocabulary_are_unset():
    """MarianConfig's pad / decoder start 58100 do not fit a hand-written 300-token vocabulary: left unset rather than
    refusing the config (transformers keeps the decoder start with a warning and cannot use it; its network refuses
    the pad id)."""
    config = BartConfig.from_dict({"model_type": "marian", "vocab_size": 300, "eos_token_id": 0})
    assert config.pad_token_id is None and config.decoder_start_token_id is None and config.forced_eos_token_id == 0
    assert BartConfig.from_dict({"model_type": "marian"}).decoder_start_token_id == 58100


@pytest.mark.parametrize("model_type, defaults", [
    ("marian", dict(pad_token_id=58100, eos_token_id=0, decoder_start_token_id=58100, bos_token_id=None)),
    ("pegasus", dict(pad_token_id=0, eos_token_id=1, decoder_start_token_id=0, forced_eos_token_id=1)),
    ("m2m_100", dict(activation_function="relu", scale_embedding=True, forced_eos_token_id=None)),
])
def test_config_defaults_are_the_family_config_classes(model_type, defaults):
    """A config.json that omits a key gets the family's transformers default."""
    ours = BartConfig.from_dict({"model_type": model_type})
    theirs = transformers.AutoConfig.for_model(model_type)
    for key, value in defaults.items():
        assert getattr(ours, key) == value == getattr(theirs, key, None)
    assert ours.vocab_size == theirs.vocab_size



@pytest.mark.parametrize("name", ["marian", "m2m100"])
def test_fixed_shape_step_matches_eager_step(pair, name):
    """The CUDA graph's cache (device-side positions) gives the eager step's logits, pad tokens included (M2M100
    embeds them without a position)."""
    _, ours, config = pair(name)
    ids, mask = batch(config)
    enc = ours.encode(ids, mask)
    eager = ours.new_cache(enc, mask, 2, max_length=6)
    fixed = ours.new_cache(enc, mask, 2, max_length=6, fixed_shape=True)
    tokens = torch.randint(4, config["vocab_size"], (eager.num_rows, 6), generator=torch.Generator().manual_seed(1))
    tokens[1, 2] = tokens[4, 3] = config["pad_token_id"]
    for t in range(6):
        torch.testing.assert_close(ours.decode_step(tokens[:, t], fixed), ours.decode_step(tokens[:, t], eager),
                                   atol=1e-5, rtol=0, msg=f"step {t}")


@pytest.mark.parametrize("name", ["marian", "m2m100"])
def test_graph_bookkeeping_on_cpu(pair, name, monkeypatch):
    """generate(cuda_graph=True) through the graph's code path (graphs emulated on the CPU: tests/graph_emulation.py)
    = eager generate."""
    from graph_emulation import EmulatedGraph, replays
    from seq2seq_kit import cuda_capture
    from seq2seq_kit.generation import decoding, whole_step

    _, ours, config = pair(name)
    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)    # the decoder and whole-step graphs
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: bool(cuda_graph))
    ids, mask = batch(config)
    for kwargs in (dict(max_new_tokens=10), dict(num_beams=4, max_new_tokens=10)):
        before = replays()
        assert torch.equal(ours.generate(ids, mask, cuda_graph=True, **kwargs),
                           ours.generate(ids, mask, cuda_graph=False, **kwargs))
        assert replays() > before, kwargs                            # the graph ran
    ours.graphed_step = None
    whole_step.KEPT.pop(ours, None)


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["marian", "marian-separate", "pegasus", "m2m100"])
def test_graphed_generate_matches_eager_on_cuda(checkpoint, name):
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint(name), device="cuda")
    ids, mask = (t.cuda() for t in batch(SPECS[name].config, left=name == "m2m100"))
    for kwargs in (dict(max_new_tokens=12), dict(num_beams=4, max_new_tokens=12)):
        assert torch.equal(model.generate(ids, mask, cuda_graph=True, **kwargs),
                           model.generate(ids, mask, cuda_graph=False, **kwargs))


@pytest.mark.parametrize("name, family", [("m2m100", "M2M100 / NLLB"), ("marian", "Marian")])
def test_inspect_names_the_family(capsys, checkpoint, pair, name, family):
    from seq2seq_kit.cli import main

    assert main(["inspect", str(checkpoint(name)), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    hf = pair(name)[0]
    assert info["family"] == family
    assert info["parameters"] == hf.num_parameters()      # Marian's fixed position tables counted, as there
    assert main(["inspect", str(checkpoint(name))]) == 0
    assert f"({family})" in capsys.readouterr().out


def tiny_hf(config_class: str, model_class: str, seed: int = 0, **overrides):
    """A tiny transformers model of one family (init std 0.3: decisive logits), built here for a config the shared
    checkpoints do not have."""
    config = getattr(transformers, config_class)(
        vocab_size=64, d_model=16, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=32, decoder_ffn_dim=32, init_std=0.3, **overrides)
    torch.manual_seed(seed)
    return getattr(transformers, model_class)(config).eval()


def test_m2m100_with_a_larger_pad_id_runs_to_its_last_position(tmp_path):
    """fairseq's positions start after the pad id: with pad 5, a sequence of max_position_embeddings tokens reads
    row pad + P of the table (transformers grows its table; ours is sized for it). Encoder states within 1e-5,
    generate to the last position token-exact, the engine's request equal to generate alone."""
    P = 24
    hf = tiny_hf("M2M100Config", "M2M100ForConditionalGeneration", max_position_embeddings=P, pad_token_id=5,
                 bos_token_id=0, eos_token_id=2, decoder_start_token_id=2, forced_eos_token_id=None)
    hf.save_pretrained(tmp_path)
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    torch.manual_seed(1)
    ids = torch.randint(6, 64, (2, P))
    mask = torch.ones_like(ids)
    mask[1, -7:] = 0
    with torch.no_grad():
        want = hf.get_encoder()(input_ids=ids, attention_mask=mask).last_hidden_state
    torch.testing.assert_close(ours.encode(ids, mask), want, atol=1e-5, rtol=0)
    short = ids[:, :4]
    kwargs = dict(max_length=P, min_length=P, num_beams=2)
    assert torch.equal(ours.generate(short, **kwargs), hf.generate(short, **kwargs))
    with Engine(ours) as engine:
        assert torch.equal(engine.submit(short[0], **kwargs).result(60), ours.generate(short[:1], **kwargs))


@pytest.mark.parametrize("family", [("BartConfig", "BartForConditionalGeneration"),
                                    ("M2M100Config", "M2M100ForConditionalGeneration")])
def test_untied_save_pretrained_loads_in_transformers(tmp_path, family):
    """tie_word_embeddings false with one shared embedding (its lm_head its own): transformers 5 then ties nothing,
    so the saved file names the embedding under shared, encoder and decoder, and transformers loads our save to the
    original's logits (not random embeddings)."""
    hf = tiny_hf(*family, max_position_embeddings=32, tie_word_embeddings=False)
    with torch.no_grad():
        hf.model.encoder.embed_tokens.weight.copy_(hf.model.shared.weight)
        hf.model.decoder.embed_tokens.weight.copy_(hf.model.shared.weight)
    hf.save_pretrained(tmp_path / "theirs")
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "theirs")
    for counts in (dict(), dict(exclude_embeddings=True)):      # shared, encoder and decoder embeddings: three there
        assert ours.num_parameters(**counts) == hf.num_parameters(**counts)
    ours.save_pretrained(tmp_path / "ours")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours").eval()
    ids, dec = torch.randint(6, 60, (2, 7)), torch.tensor([[2, 5, 9], [2, 7, 8]])
    with torch.no_grad():
        torch.testing.assert_close(again(input_ids=ids, decoder_input_ids=dec).logits,
                                   hf(input_ids=ids, decoder_input_ids=dec).logits, atol=0, rtol=0)


def test_pegasus_save_pretrained_keeps_the_position_table_it_loaded(tmp_path):
    """transformers saves Pegasus' position table (a parameter) and loads it over the computed one: a bf16 file's
    rounded table must survive our save (Marian's transformers never saves: not written, as before)."""
    hf = tiny_hf("PegasusConfig", "PegasusForConditionalGeneration", max_position_embeddings=32)
    hf.to(torch.bfloat16).save_pretrained(tmp_path / "bf16")
    original = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "bf16", dtype=torch.float32).eval()
    AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "bf16").save_pretrained(tmp_path / "ours")
    again = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "ours", dtype=torch.float32).eval()
    for side in ("encoder", "decoder"):
        table = getattr(again.model, side).embed_positions.weight
        assert torch.equal(table, getattr(original.model, side).embed_positions.weight)


def test_marian_encoder_penalties_refuse_a_source_id_past_the_decoder_vocabulary(tmp_path):
    """The encoder repetition penalty and n-gram ban look source ids up in the decoder's scores: with a smaller
    decoder vocabulary of its own, a source id past it is refused naming the setting (transformers fails inside)."""
    hf = tiny_hf("MarianConfig", "MarianMTModel", decoder_vocab_size=40, share_encoder_decoder_embeddings=False,
                 max_position_embeddings=32, pad_token_id=3, eos_token_id=1, decoder_start_token_id=3)
    hf.save_pretrained(tmp_path)
    ours = AutoModelForSeq2SeqLM.from_pretrained(tmp_path)
    past = ours.config.decoder_vocab_size
    ids = torch.tensor([[past, 7, 1]])
    for kwargs in (dict(encoder_repetition_penalty=1.3), dict(encoder_no_repeat_ngram_size=2)):
        with pytest.raises(ValueError, match=f"{next(iter(kwargs))} look.*holds id {past}.*vocabulary of its own"):
            ours.generate(ids, max_new_tokens=3, **kwargs)
        with Engine(ours) as engine, pytest.raises(ValueError, match="vocabulary of its own"):
            engine.submit(ids[0], max_new_tokens=3, **kwargs)
    ours.generate(ids[:, 1:], max_new_tokens=3, encoder_repetition_penalty=1.3)     # ids within it: runs
