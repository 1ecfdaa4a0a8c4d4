"""model(...): the teacher-forced forward's Seq2SeqLMOutput against transformers 5.25 with attn_implementation="eager"
(its default SDPA attention returns no attention probabilities): the same fields in the same order (transformers'
but loss and cache), every shape equal, values within ATOL (float32, tiny random checkpoints), for BART (post-LN),
mBART (pre-LN, final layer norms), Marian and Pegasus (sinusoidal positions) and M2M100 (positions over non-pad
tokens), a padded source and a padded decoder; the logits bit-identical with and without the flags; the output
without flags (logits and encoder_last_hidden_state) read by name, key and position as transformers'; and
return_dict=False refused (transformers returns a tuple there, its cache second)."""

from __future__ import annotations

import pytest
import torch

from seq2seq_kit.modeling import Seq2SeqLMOutput

ATOL = 1e-5
FAMILIES = ["tiny", "tiny-mbart", "marian", "pegasus", "m2m100"]
FIELDS = ("logits", "decoder_hidden_states", "decoder_attentions", "cross_attentions", "encoder_last_hidden_state",
          "encoder_hidden_states", "encoder_attentions")




def batch(config) -> dict:
    """Two sources (the second with three pad tokens at its end) and two decoder inputs (the second with two)."""
    pad, eos = config.pad_token_id, config.eos_token_id
    ids = torch.tensor([[5, 6, 7, 8, 9, eos], [10, 11, eos, pad, pad, pad]])
    dec = torch.tensor([[eos, 12, 13, 14], [eos, 15, pad, pad]])
    return dict(input_ids=ids, attention_mask=torch.tensor([[1] * 6, [1, 1, 1, 0, 0, 0]]), decoder_input_ids=dec,
                decoder_attention_mask=torch.tensor([[1] * 4, [1, 1, 0, 0]]))


def leaves(x):
    return [x] if isinstance(x, torch.Tensor) else [t for y in x for t in leaves(y)]


def structure(x):
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(structure(y) for y in x)


def assert_matches(got, want):
    assert list(got.keys()) == [k for k in want.keys() if k != "cache"]   # transformers 5: past_key_values
    for field in got.keys():
        assert structure(got[field]) == structure(want[field]), field
        for a, b in zip(leaves(got[field]), leaves(want[field])):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("name", FAMILIES)
def test_every_field_matches_transformers_eager(eager_pair, name):
    hf, ours = eager_pair(name)
    inputs = batch(ours.config)
    flags = dict(output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        want = hf(**inputs, **flags)
    got = ours(**inputs, **flags)
    assert list(got.keys()) == list(FIELDS)
    assert_matches(got, want)
    L, H = ours.config.decoder_layers, ours.config.decoder_attention_heads
    assert [tuple(a.shape) for a in got.cross_attentions] == [(2, H, 4, 6)] * L
    assert torch.equal(got.logits, ours(**inputs).logits)              # bit for bit the call without the flags


@pytest.mark.parametrize("flags", [dict(output_attentions=True), dict(output_hidden_states=True),
                                   dict(return_dict=True), dict(output_attentions=True, return_dict=True)],
                         ids=lambda f: "+".join(f))
def test_each_flag_alone_gives_transformers_fields(eager_pair, flags):
    hf, ours = eager_pair("tiny")
    inputs = batch(ours.config)
    with torch.no_grad():
        want = hf(**inputs, **flags)
    got = ours(**inputs, **flags)
    assert_matches(got, want)
    assert got[0] is got.logits and got["logits"] is got.logits and len(got) == len(got.to_tuple())
    with pytest.raises(KeyError):
        got["loss"]


@pytest.mark.parametrize("flags", [dict(output_attentions=True), dict(output_hidden_states=True),
                                   dict(output_attentions=True, output_hidden_states=True)], ids=lambda f: "+".join(f))
def test_flags_in_config_json_are_the_defaults_as_in_transformers(checkpoint, tmp_path, flags):
    """A config.json setting output_attentions / output_hidden_states: transformers' forward returns those fields
    when the call does not say (its flags default to the config's); seq2seq_kit returned the logits tensor. A flag
    the call passes wins."""
    import json
    import shutil

    import transformers

    from seq2seq_kit import BartForConditionalGeneration

    root = shutil.copytree(checkpoint("tiny"), tmp_path / "flags")
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, **flags}))
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(root, attn_implementation="eager").eval()
    ours = BartForConditionalGeneration.from_pretrained(root)
    inputs = batch(ours.config)
    with torch.no_grad():
        want = hf(**inputs)
        assert_matches(ours(**inputs), want)
        off = {name: False for name in flags}
        assert_matches(ours(**inputs, **off, return_dict=True), hf(**inputs, **off))


def test_forced_alignment_reads_the_last_layers_cross_attention(eager_pair):
    """The README's example: the reference's attention over the source, rows summing to 1 over unpadded tokens."""
    hf, ours = eager_pair("marian")
    inputs = batch(ours.config)
    align = ours(**inputs, output_attentions=True).cross_attentions[-1].mean(dim=1)        # [B, T, S]
    with torch.no_grad():
        want = hf(**inputs, output_attentions=True).cross_attentions[-1].mean(dim=1)
    torch.testing.assert_close(align, want, atol=ATOL, rtol=0)
    assert torch.all(align[1, :, 3:] == 0)                              # the padded source tokens get none
    torch.testing.assert_close(align.sum(dim=-1), torch.ones(2, 4))


def test_a_left_padded_decoders_pad_position_attends_evenly_as_in_transformers(eager_pair):
    """A decoder query with every key masked (a pad token first): transformers' eager probabilities are uniform
    over the keys (its masked scores are the lowest float); they were NaN here. Its output is eager's average of
    the values too, so the pad position's hidden states, cross attentions and logits are eager's (they were SDPA's
    beside eager's probabilities: logits 2.3 apart); the other positions are the same with flags as without."""
    hf, ours = eager_pair("tiny")
    inputs = dict(input_ids=torch.tensor([[5, 6, 7, 2]]), decoder_input_ids=torch.tensor([[1, 2, 12, 13]]),
                  decoder_attention_mask=torch.tensor([[0, 1, 1, 1]]), output_attentions=True,
                  output_hidden_states=True)
    with torch.no_grad():
        want = hf(**inputs)
    got = ours(**inputs)
    assert torch.equal(got.decoder_attentions[0][0, :, 0], torch.full((ours.config.decoder_attention_heads, 4), 0.25))
    for name in ("decoder_attentions", "cross_attentions", "decoder_hidden_states"):
        for a, b in zip(getattr(got, name), getattr(want, name)):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)
    torch.testing.assert_close(got.logits, want.logits, atol=ATOL, rtol=0)
    plain = ours(**{k: v for k, v in inputs.items() if not k.startswith("output_")}).logits
    assert torch.equal(got.logits[:, 1:], plain[:, 1:])


@pytest.mark.parametrize("flags", [dict(), dict(output_attentions=False, output_hidden_states=False),
                                   dict(return_dict=None), dict(return_dict=True)], ids=str)
def test_without_flags_transformers_default_output(eager_pair, flags):
    """model(**batch) is transformers' Seq2SeqLMOutput (its cache left out): the logits by name, key or position,
    so transformers code reading out.logits or out[0] reads the logits (a bare tensor's [0] was the first row)."""
    hf, ours = eager_pair("tiny")
    inputs = batch(ours.config)
    got = ours(**inputs, **flags)
    with torch.no_grad():
        want = hf(**inputs)
    assert type(got) is Seq2SeqLMOutput and list(want.keys()) == ["logits", "cache", "encoder_last_hidden_state"]
    assert_matches(got, want)
    assert got[0] is got.logits and got["logits"] is got.logits and got[0].shape == (2, 4, ours.config.vocab_size)
    traced = ours(**inputs, output_hidden_states=True)                  # the recorded pass: the same numbers
    assert torch.equal(got.logits, traced.logits)
    assert torch.equal(got.encoder_last_hidden_state, traced.encoder_last_hidden_state)


@pytest.mark.parametrize("flags", [dict(), dict(output_attentions=True), dict(output_hidden_states=True)], ids=str)
def test_return_dict_false_is_refused(eager_pair, flags):
    """transformers' tuple holds its cache second, which this model has none of: a tuple here would put another
    field at [1], so return_dict=False is refused by name, with the way to read the output instead."""
    _, ours = eager_pair("tiny")
    with pytest.raises(TypeError) as error:
        ours(**batch(ours.config), return_dict=False, **flags)
    assert str(error.value) == ("return_dict=False: transformers returns a tuple there (logits, its cache, ...), and "
                                "this model keeps no cache; pass return_dict=True (or leave it out) and read the "
                                "Seq2SeqLMOutput by name (out.logits) or position (out[0]: the logits, as "
                                "transformers')")


def test_return_dict_false_in_config_json_is_refused_by_its_name(checkpoint, tmp_path):
    """config.json's return_dict is the call's default, as in transformers: false there is refused, naming it;
    return_dict=True in the call wins. The encoder's output is then a tuple, as transformers' encoder returns."""
    import json
    import shutil

    from seq2seq_kit import BartForConditionalGeneration

    root = shutil.copytree(checkpoint("tiny"), tmp_path / "tuples")
    config = json.loads((root / "config.json").read_text())
    (root / "config.json").write_text(json.dumps({**config, "return_dict": False}))
    ours = BartForConditionalGeneration.from_pretrained(root)
    inputs = batch(ours.config)
    with pytest.raises(TypeError, match=r"^config.json's return_dict false: transformers returns a tuple"):
        ours(**inputs)
    assert torch.equal(ours(**inputs, return_dict=True).logits, ours(**inputs, return_dict=True)[0])
    encoded = ours.get_encoder()(inputs["input_ids"], attention_mask=inputs["attention_mask"])
    assert type(encoded) is tuple
    assert torch.equal(encoded[0], ours.encode(inputs["input_ids"], inputs["attention_mask"]))
