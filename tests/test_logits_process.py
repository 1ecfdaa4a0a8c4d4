"""Each logits processor equals transformers' own (torch.equal), and build_processors composes them in
transformers' order (checked against `GenerationMixin._get_logits_processor`)."""

from __future__ import annotations

import math

import pytest
import torch
import transformers.generation.logits_process as hf

from seq2seq_kit.generation.config import GenerationConfig, resolve
from seq2seq_kit.generation import logits_process as ours

V = 20          # small vocabulary, token ids 0..9 in the histories so n-grams repeat
B, ROWS = 2, 3  # 2 inputs x 3 rows each


def histories(seed: int = 0, rows: int = B * ROWS, length: int = 9) -> torch.Tensor:
    ids = torch.randint(0, 10, (rows, length), generator=torch.Generator().manual_seed(seed))
    ids[0] = torch.tensor([1, 2, 3, 4] * length)[:length]          # every n-gram repeats in row 0
    return ids


def scores(seed: int = 1, rows: int = B * ROWS) -> torch.Tensor:
    return torch.randn(rows, V, generator=torch.Generator().manual_seed(seed)) * 3


def assert_same(mine, theirs, ids, lengths=range(1, 10)):
    """Ours reads the whole history at length t (slots past t hold other tokens and must be ignored);
    transformers reads ids[:, :t]. Also with every row at its own length in one call (a length per row [R, 1],
    as rows of requests at different steps would be): row r equals transformers' at that row's length."""
    for t in lengths:
        s = scores(seed=t, rows=ids.shape[0])
        expected = theirs(ids[:, :t], s.clone())
        for length in (t, torch.tensor(t)):             # a host int, or a device tensor (a captured step)
            got = mine(ids, length, s.clone())
            assert torch.equal(got, expected), f"length {length!r}"
    lengths = list(lengths)
    per_row = torch.tensor([lengths[(3 * r) % len(lengths)] for r in range(ids.shape[0])])[:, None]   # [R, 1]
    s = scores(seed=99, rows=ids.shape[0])
    expected = torch.stack([theirs(ids[:, :int(t)], s.clone())[r] for r, t in enumerate(per_row[:, 0])])
    assert torch.equal(mine(ids, per_row, s.clone()), expected), f"per-row lengths {per_row[:, 0].tolist()}"


@pytest.mark.parametrize("penalty", [0.7, 1.3])
def test_repetition_penalty(penalty):
    assert_same(ours.RepetitionPenalty(penalty), hf.RepetitionPenaltyLogitsProcessor(penalty), histories())


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_no_repeat_ngram(n):
    ids = histories()
    assert_same(ours.NoRepeatNGram(n), hf.NoRepeatNGramLogitsProcessor(n), ids)
    banned = ours.NoRepeatNGram(n)(ids, torch.tensor(ids.shape[1]), scores()).isinf().sum()
    assert banned > 0                                   # the histories do repeat n-grams


@pytest.mark.parametrize("n", [1, 2, 3])
@pytest.mark.parametrize("rows_per_input", [1, 3])
def test_encoder_no_repeat_ngram(n, rows_per_input):
    enc = histories(seed=5, rows=B, length=12)
    ids = histories(rows=B * rows_per_input)
    assert_same(ours.EncoderNoRepeatNGram(n, enc, rows_per_input), hf.EncoderNoRepeatNGramLogitsProcessor(n, enc), ids)
    t = torch.tensor(ids.shape[1])
    assert ours.EncoderNoRepeatNGram(n, enc, rows_per_input)(ids, t, scores(rows=B * rows_per_input)).isinf().any()


def test_encoder_no_repeat_ngram_input_shorter_than_n():
    enc = histories(seed=5, rows=B, length=2)
    assert_same(ours.EncoderNoRepeatNGram(3, enc, ROWS), hf.EncoderNoRepeatNGramLogitsProcessor(3, enc), histories())


@pytest.mark.parametrize("bad_words", [[[3]], [[3], [4, 5]], [[2], [7, 8, 9], [1, 1], [6, 1]],
                                       [[4, 5, 6, 7, 8, 9, 1, 2, 3, 4, 5]]])
def test_bad_words(bad_words):
    eos = [2]
    mine = ours.NoBadWords(bad_words, eos, "cpu")
    assert_same(mine, hf.NoBadWordsLogitsProcessor(bad_words, eos), histories())


@pytest.mark.parametrize("min_length", [0, 4, 20])
def test_min_length(min_length):
    for eos in ([2], [2, 5]):
        assert_same(ours.MinLength(min_length, eos), hf.MinLengthLogitsProcessor(min_length, eos), histories())


def test_min_new_tokens_is_min_length_plus_start():
    # transformers adds both MinNewTokens(prompt 1) and MinLength(min_new_tokens + 1); ours folds them into one
    theirs = hf.LogitsProcessorList([hf.MinLengthLogitsProcessor(6, [2]),
                                     hf.MinNewTokensLengthLogitsProcessor(1, 5, [2])])
    assert_same(ours.MinLength(6, [2]), theirs, histories())


def test_forced_tokens():
    assert_same(ours.ForcedToken(1, [0], V), hf.ForcedBOSTokenLogitsProcessor(0), histories())
    for eos in (2, [2, 5]):
        mine = ours.ForcedToken(6, eos if isinstance(eos, list) else [eos], V)
        assert_same(mine, hf.ForcedEOSTokenLogitsProcessor(7, eos), histories())


def test_remove_inf_nan():
    s = scores()
    s[0, 1], s[1, 2], s[2, 3] = math.inf, -math.inf, math.nan
    ids = histories()
    assert torch.equal(ours.remove_inf_nan(ids, torch.tensor(9), s), hf.InfNanRemoveLogitsProcessor()(ids, s))


@pytest.mark.parametrize("temperature", [0.5, 1.7])
def test_temperature(temperature):
    assert_same(ours.Temperature(temperature), hf.TemperatureLogitsWarper(temperature), histories())


@pytest.mark.parametrize("top_k,min_keep", [(1, 1), (5, 1), (5, 8), (50, 1)])
def test_top_k(top_k, min_keep):
    assert_same(ours.TopK(top_k, min_keep), hf.TopKLogitsWarper(top_k, min_tokens_to_keep=min_keep), histories())


@pytest.mark.parametrize("top_p,min_keep", [(0.0, 1), (0.0, 3), (0.05, 1), (0.3, 1), (0.9, 1), (0.3, 4), (1.0, 1)])
def test_top_p(top_p, min_keep):
    assert_same(ours.TopP(top_p, min_keep), hf.TopPLogitsWarper(top_p, min_tokens_to_keep=min_keep), histories())


def test_log_softmax():
    assert_same(ours.log_softmax, hf.LogitNormalization(), histories())


@pytest.mark.parametrize("min_p,min_keep", [(0.0, 1), (0.05, 1), (0.3, 1), (0.3, 4), (1.0, 1)])
def test_min_p(min_p, min_keep):
    assert_same(ours.MinP(min_p, min_keep), hf.MinPLogitsWarper(min_p, min_tokens_to_keep=min_keep), histories())


@pytest.mark.parametrize("top_h", [0.05, 0.4, 1.0])
def test_top_h(top_h):
    assert_same(ours.TopH(top_h), hf.TopHLogitsWarper(top_h), histories())


@pytest.mark.parametrize("mass,min_keep", [(0.05, 1), (0.5, 1), (0.9, 3), (0.99, 1)])
def test_typical(mass, min_keep):
    assert_same(ours.Typical(mass, min_keep), hf.TypicalLogitsWarper(mass, min_tokens_to_keep=min_keep), histories())


@pytest.mark.parametrize("epsilon,min_keep", [(1e-3, 1), (0.05, 1), (0.2, 3), (0.9, 1)])
def test_epsilon_and_eta(epsilon, min_keep):
    assert_same(ours.Epsilon(epsilon, min_keep), hf.EpsilonLogitsWarper(epsilon, min_tokens_to_keep=min_keep),
                histories())
    assert_same(ours.Epsilon(epsilon, min_keep, eta=True), hf.EtaLogitsWarper(epsilon, min_tokens_to_keep=min_keep),
                histories())


@pytest.mark.parametrize("penalty", [0.5, 1.7])
@pytest.mark.parametrize("rows_per_input", [1, 3])
def test_encoder_repetition_penalty(penalty, rows_per_input):
    enc = histories(seed=5, rows=B, length=12)
    assert_same(ours.EncoderRepetitionPenalty(penalty, enc, rows_per_input),
                hf.EncoderRepetitionPenaltyLogitsProcessor(penalty, enc), histories(rows=B * rows_per_input))


BIASES = [{(3,): 5.0}, {(3,): -2.5, (4, 5): 1.5, (1, 2): -math.inf}, {(1, 2, 3): 4.0, (2, 3): 0.5, (9, 3): 2.0,
                                                                        (3,): 1.0, (1, 2, 3, 4): -3.0}]


@pytest.mark.parametrize("biases", BIASES)
def test_sequence_bias(biases):
    """Summed per last token in transformers' order (several sequences may end in the same token)."""
    ids = histories()
    assert_same(ours.SequenceBias(biases, "cpu"), hf.SequenceBiasLogitsProcessor(biases), ids)


@pytest.mark.parametrize("start,factor", [(0, 1.5), (3, 1.1), (2, 0.8), (5, 3.0e8), (-3, 1.1), (-2**63, 1.0),
                                          (-2**62, 0.9)])
def test_exponential_decay_length_penalty(start, factor):
    """Any start, however far below zero (as transformers: already started): its table of growths by length is
    max_length + 1 long (one by steps past a start of -2**63 would never be built)."""
    for eos in ([2], [2, 5]):
        mine = ours.ExponentialDecayLengthPenalty(start + 1, factor, eos, max_length=10)
        assert mine.growth.shape == (11,)
        assert_same(mine, hf.ExponentialDecayLengthPenalty((start, factor), eos, 1), histories())


def test_suppress_tokens():
    assert_same(ours.SuppressTokens([3, 7], V), hf.SuppressTokensLogitsProcessor([3, 7]), histories())
    for begin in (1, 2, 5):
        assert_same(ours.SuppressTokens([2, 7], V, begin), hf.SuppressTokensAtBeginLogitsProcessor([2, 7], begin),
                    histories())


# ---- the whole list, against transformers' _get_logits_processor ------------------------------------------------

def _hf_processors(settings: dict, enc: torch.Tensor, prompt_len: int = 1):
    """transformers' processor list for `settings` on an encoder-decoder model (a decoder prompt of prompt_len
    tokens, the start token included)."""
    import transformers

    model = transformers.BartForConditionalGeneration(transformers.BartConfig(
        vocab_size=V, d_model=8, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=8, decoder_ffn_dim=8, max_position_embeddings=32))
    gc = transformers.GenerationConfig(**settings)
    gc.update(**gc._get_default_generation_params(), defaults_only=True)
    model._prepare_special_tokens(gc, True, device="cpu", batch_size=B)
    if gc.min_new_tokens is not None:
        gc.min_length = gc.min_new_tokens + prompt_len
    return model._get_logits_processor(gc, input_ids_seq_length=prompt_len, encoder_input_ids=enc, device="cpu",
                                       model_kwargs={})


SETTINGS = [
    dict(repetition_penalty=1.4, no_repeat_ngram_size=2, encoder_no_repeat_ngram_size=2, bad_words_ids=[[3], [4, 5]],
         min_length=5, forced_bos_token_id=0, forced_eos_token_id=2, remove_invalid_values=True),
    dict(do_sample=True, temperature=0.8, top_k=6, top_p=0.7, min_new_tokens=3, forced_eos_token_id=[2, 5],
         renormalize_logits=True),
    dict(do_sample=True, num_beams=3, top_k=1, top_p=0.2, repetition_penalty=0.9, eos_token_id=[2, 5, 6]),
    dict(sequence_bias={(3,): 2.0, (4, 5): -1.0}, encoder_repetition_penalty=1.5, repetition_penalty=1.2,
         exponential_decay_length_penalty=(2, 1.3), suppress_tokens=[7, 8], begin_suppress_tokens=[9],
         forced_bos_token_id=0, do_sample=True, temperature=0.7, top_h=0.5, top_k=10, top_p=0.9, min_p=0.05,
         typical_p=0.9, epsilon_cutoff=0.01, eta_cutoff=0.01, renormalize_logits=True),
    dict(do_sample=True, num_beams=2, min_p=0.2, typical_p=0.95, eta_cutoff=0.001, begin_suppress_tokens=[9]),
    # inf / nan removal between forced EOS and the length penalty: what suppress_tokens bans after it stays -inf, an
    # EOS that min_length or a -inf bias banned before it is the float32 minimum, which the penalty then raises
    dict(do_sample=True, top_p=1.0, typical_p=1.0, epsilon_cutoff=1.0, eta_cutoff=1.0),   # at 1: off, as there
    dict(remove_invalid_values=True, min_length=6, sequence_bias={(4,): -math.inf}, suppress_tokens=[7],
         exponential_decay_length_penalty=(1, 1.5), begin_suppress_tokens=[9]),
]


@pytest.mark.parametrize("settings", SETTINGS)
def test_build_processors_matches_transformers_order(settings):
    settings = dict(settings, max_length=8, eos_token_id=settings.get("eos_token_id", 2), decoder_start_token_id=2)
    enc = histories(seed=5, rows=B, length=12)
    rows = settings.get("num_beams", 1)
    cfg = resolve(GenerationConfig(), settings, vocab_size=V, max_position_embeddings=32)
    mine = ours.build_processors(cfg, enc, rows, V)
    theirs = _hf_processors(settings, enc)
    assert len(mine) == len(theirs) - ("min_new_tokens" in settings)      # min_new_tokens folded into MinLength
    assert_same(lambda ids, t, s: ours.apply(mine, ids, t, s), theirs, histories(rows=B * rows), lengths=range(1, 8))


@pytest.mark.parametrize("settings", [
    dict(forced_bos_token_id=0, begin_suppress_tokens=[9, 3], exponential_decay_length_penalty=(1, 1.5),
         min_new_tokens=2, no_repeat_ngram_size=2),
    dict(begin_suppress_tokens=[9], exponential_decay_length_penalty=(0, 0.5), min_new_tokens=1),
])
def test_build_processors_after_a_decoder_prompt(settings):
    """A decoder prompt of 4 tokens: begin_suppress_tokens acts at the first new token's step, a forced BOS beside it
    or not (transformers moves it one step on only after the start token alone), and the settings counted in new
    tokens (min_new_tokens, the length penalty's start) count after the prompt."""
    settings = dict(settings, max_length=9, eos_token_id=2, decoder_start_token_id=2)
    P = 4
    enc = histories(seed=5, rows=B, length=12)
    prompt = torch.tensor([[2, 5, 6, 7]] * B)                       # starts with the start token: P = 4
    cfg = resolve(GenerationConfig(), settings, vocab_size=V, max_position_embeddings=32, prompt=prompt)
    mine = ours.build_processors(cfg, enc, 1, V, prompt_len=P)
    theirs = _hf_processors(settings, enc, prompt_len=P)
    assert len(mine) == len(theirs) - 1                                   # min_new_tokens folded into MinLength
    assert_same(lambda ids, t, s: ours.apply(mine, ids, t, s), theirs, histories(rows=B), lengths=range(P, 9))


@pytest.mark.parametrize("p", [0.25, 0.5, 0.75])
def test_top_p_and_typical_at_cumulative_sums_that_meet_their_bound(p):
    """Probabilities that are exact binary fractions (1/8 each; 1/2, 1/4, 1/8, 1/8) put a cumulative sum exactly on
    the bound: top_p removes the tokens whose ascending sum is <= 1 - top_p (the one meeting it too), typical_p counts
    the sums < typical_p (not the one meeting it), as transformers' warpers do."""
    half, quarter = math.log(0.5), math.log(0.25)
    s = torch.tensor([[0.0] * 8, [0.0, half, quarter, half, quarter, half, 0.0, quarter],
                      [0.0, half, quarter, quarter] + [-math.inf] * 4, [half, quarter, 0.0, quarter] + [-math.inf] * 4])
    ids = histories(rows=s.shape[0])
    for mine, theirs in ((ours.TopP(p, 1), hf.TopPLogitsWarper(p)), (ours.Typical(p, 1), hf.TypicalLogitsWarper(p))):
        expected = theirs(ids, s.clone())
        assert torch.equal(mine(ids, 9, s.clone()), expected), (mine, expected)
