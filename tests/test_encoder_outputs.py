"""generate(encoder_outputs=...): decoding from the encoder's output computed before the call (model.encode's
tensor, model.get_encoder()'s output, transformers' BaseModelOutput) in the place of the source. Tokens and scores
equal transformers' generate given the same encoder_outputs, and ours given the source; hidden states of passages
encoded apart and joined (longer than the positions) decode as transformers decodes them."""

from __future__ import annotations

import re

import pytest
import torch

from seq2seq_kit.modeling import BaseModelOutput
from test_generation import inputs

FAMILIES = ["tiny-eos", "kobart", "pegasus", "m2m100"]
MODES = {
    "greedy": dict(num_beams=1, do_sample=False),
    "beams": dict(num_beams=4, num_return_sequences=2, do_sample=False, length_penalty=1.3),
    "sampling": dict(num_beams=1, do_sample=True, temperature=0.7, num_return_sequences=2),
}


def batch(model, seed: int = 9):
    return inputs(model.config.vocab_size, model.config.pad_token_id, seed=seed)


def run(generate, seed: int, **kwargs):
    """generate(**kwargs) from the global RNG seeded (sampling), scores returned."""
    torch.manual_seed(seed)
    return generate(**kwargs, max_new_tokens=12, return_dict_in_generate=True, output_scores=True)


def assert_same(got, want):
    assert got.sequences.tolist() == want.sequences.tolist()
    assert len(got.scores) == len(want.scores)
    for mine, reference in zip(got.scores, want.scores):
        torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", FAMILIES)
def test_encoder_outputs_decode_as_transformers_and_as_the_source(pair, name, mode):
    """transformers' BaseModelOutput from its encoder, ours from get_encoder() and model.encode's tensor: the
    tokens (and scores within 1e-4) of transformers' generate given the same encoder_outputs, which equal ours
    given the source ids; padded rows (their mask given) on every family, greedy, beam search, sampling."""
    hf, ours = pair(name)
    ids, mask = batch(ours)
    kwargs = dict(MODES[mode], attention_mask=mask)

    def theirs():               # afresh each time: transformers' generate expands it in place for its rows
        with torch.no_grad():
            return hf.get_encoder()(input_ids=ids, attention_mask=mask)
    want = run(hf.generate, 5, encoder_outputs=theirs(), **kwargs)
    assert_same(run(ours.generate, 5, input_ids=ids, **kwargs), want)
    mine = ours.get_encoder()(ids, attention_mask=mask)
    assert isinstance(mine, BaseModelOutput) and list(mine.keys()) == ["last_hidden_state"]
    torch.testing.assert_close(mine.last_hidden_state, theirs().last_hidden_state, rtol=1e-4, atol=1e-4)
    kept = mine.last_hidden_state.clone()
    for given in (theirs(), mine, mine.last_hidden_state, dict(mine), mine.to_tuple()):
        assert_same(run(ours.generate, 5, encoder_outputs=given, **kwargs), want)
    assert torch.equal(mine.last_hidden_state, kept)             # ours is left as it was given


def test_passages_encoded_apart_and_joined(pair):
    """Fusion-in-Decoder's input: two inputs' hidden states joined along the source, longer than the model's
    positions (cross-attention has none), decoded as transformers decodes them, with their masks joined."""
    hf, ours = pair("tiny-eos")
    ids, mask = batch(ours)
    hidden = ours.encode(ids, mask)                                                       # [3, 12, D]
    width = ours.config.max_position_embeddings // ids.shape[1] + 1                       # passages per row
    joined = torch.cat([hidden] * width, dim=1)                                          # [3, 12 * width, D]
    joined_mask = torch.cat([mask] * width, dim=1)
    assert joined.shape[1] > ours.config.max_position_embeddings
    for mode in ("greedy", "beams"):
        kwargs = dict(MODES[mode], attention_mask=joined_mask)
        want = run(hf.generate, 1, encoder_outputs=BaseModelOutputOf(joined), **kwargs)
        assert_same(run(ours.generate, 1, encoder_outputs=joined, **kwargs), want)


def BaseModelOutputOf(hidden):
    from transformers.modeling_outputs import BaseModelOutput as TransformersOutput
    return TransformersOutput(last_hidden_state=hidden)


def test_source_ids_beside_encoder_outputs(pair):
    """input_ids beside encoder_outputs are what the settings that read the source read (the encoder repetition
    penalty, the encoder n-gram ban; prompt lookup's guesses), as transformers; without them those settings are
    refused by name (transformers indexes its scores with -100 there)."""
    hf, ours = pair("tiny-eos")
    ids, mask = batch(ours)
    hidden = ours.encode(ids, mask)
    settings = dict(encoder_repetition_penalty=1.5, encoder_no_repeat_ngram_size=2)
    want = run(hf.generate, 0, input_ids=ids, encoder_outputs=BaseModelOutputOf(hidden), attention_mask=mask,
               **settings)
    assert_same(run(ours.generate, 0, input_ids=ids, encoder_outputs=hidden, attention_mask=mask, **settings), want)
    assert_same(run(ours.generate, 0, input_ids=ids, attention_mask=mask, **settings), want)
    with pytest.raises(ValueError, match=re.escape("encoder_repetition_penalty and encoder_no_repeat_ngram_size read "
                                                   "the source's ids, which encoder_outputs alone does not hold: pass "
                                                   "input_ids (the ids the encoder read) beside it")):
        ours.generate(encoder_outputs=hidden, attention_mask=mask, max_new_tokens=3, **settings)
    one, one_mask = ids[:1], mask[:1]
    lookup = dict(prompt_lookup_num_tokens=3, max_new_tokens=12)
    plain = ours.generate(one, one_mask, max_new_tokens=12)
    for source in (one, None):                     # guesses from the source, or from the output alone
        assert ours.generate(source, one_mask, encoder_outputs=hidden[:1], **lookup).tolist() == plain.tolist()


def test_what_encoder_outputs_refuses(pair):
    """Hidden states of the wrong shape, dtype or kind, a mask, input_ids or decoder_input_ids that do not fit them,
    and the encoder call's unknown arguments: each named."""
    _, ours = pair("tiny-eos")
    ids, mask = batch(ours)
    hidden = ours.encode(ids, mask)                                                       # [3, 12, D]
    D = ours.config.d_model
    for given, error, message in [
            (hidden[..., :-1], ValueError, f"encoder_outputs must have shape [batch, sequence, d_model={D}], got "
                                           f"[3, 12, {D - 1}]"),
            (hidden[0], ValueError, "encoder_outputs must have shape [batch, sequence, d_model"),
            (hidden[:, :0], ValueError, "encoder_outputs is empty"),
            (hidden.double(), TypeError, "encoder_outputs is torch.float64 but the model computes in torch.float32"),
            (hidden.tolist(), TypeError, "encoder_outputs must be a torch.Tensor of hidden states"),
            ("text", TypeError, "encoder_outputs must be the encoder's output (model.encode's tensor, or an output "
                                "with last_hidden_state"),
            ({"hidden": hidden}, TypeError, "encoder_outputs must be the encoder's output")]:
        with pytest.raises(error, match=re.escape(message)):
            ours.generate(encoder_outputs=given, max_new_tokens=3)
    with pytest.raises(ValueError, match=re.escape("attention_mask has shape [3, 11] but encoder_outputs has shape "
                                                   "[3, 12]")):
        ours.generate(encoder_outputs=hidden, attention_mask=mask[:, 1:], max_new_tokens=3)
    with pytest.raises(ValueError, match=re.escape("input_ids has shape [2, 12] but encoder_outputs holds 3 inputs "
                                                   "of 12 positions")):
        ours.generate(ids[:2], encoder_outputs=hidden, max_new_tokens=3)
    with pytest.raises(ValueError, match=re.escape("decoder_input_ids must have shape [3, length >= 1] (one prompt "
                                                   "per input, encoder_outputs has 3), got [1, 1]")):
        ours.generate(encoder_outputs=hidden, attention_mask=mask, max_new_tokens=3,
                      decoder_input_ids=torch.tensor([[2]]))
    encoder = ours.get_encoder()
    with pytest.raises(TypeError, match="the encoder takes input_ids, attention_mask, output_attentions, "
                                        "output_hidden_states and return_dict, not head_mask"):
        encoder(ids, head_mask=None)
    with pytest.raises(TypeError, match=re.escape("the encoder needs input_ids")):
        encoder(attention_mask=mask)
    assert torch.equal(encoder(ids, mask, return_dict=False)[0], hidden)
    recorded = encoder(ids, mask, output_hidden_states=True, return_dict=False)       # (hidden, hidden states)
    assert len(recorded) == 2 and torch.equal(recorded[0], hidden) and torch.equal(recorded[1][-1], hidden)
    assert not recorded[0].is_inference() and not recorded[0].requires_grad     # as model.encode's: no_grad


@pytest.mark.cuda
def test_encoder_outputs_on_cuda_graphs(tiny_eos_path):
    """On a GPU (CUDA graphs, the source-length buckets of the kept graphs): given hidden states decode as the
    source does."""
    from seq2seq_kit import BartForConditionalGeneration
    model = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    ids, mask = (t.cuda() for t in batch(model))
    for mode in ("greedy", "beams"):
        kwargs = dict(MODES[mode], attention_mask=mask, max_new_tokens=12)
        want = model.generate(ids, **kwargs)
        assert model.generate(encoder_outputs=model.encode(ids, mask), **kwargs).tolist() == want.tolist()
