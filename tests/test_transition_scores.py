"""model.compute_transition_scores(sequences, scores, beam_indices, normalize_logits): each generated token's score,
as transformers' compute_transition_scores computes it (greedy, sampling, beam search and beam sampling, rows that
ended early masked with 0): bit for bit on the same generate output, and on our own generate's output within float
rounding of transformers' on its own."""

from __future__ import annotations

import pytest
import torch

from seq2seq_kit import BartForConditionalGeneration
from test_generation import inputs

MODES = {"greedy": {}, "beam": dict(num_beams=3, num_return_sequences=2, length_penalty=1.5),
         "sample": dict(do_sample=True, num_return_sequences=2), "beam-sample": dict(num_beams=2, do_sample=True)}


@pytest.mark.parametrize("normalize", [False, True])
@pytest.mark.parametrize("mode", list(MODES))
def test_transition_scores_equal_transformers(pair, mode, normalize):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    kwargs = dict(max_new_tokens=10, return_dict_in_generate=True, output_scores=True, **MODES[mode])
    torch.manual_seed(0)
    theirs = hf.generate(ids, attention_mask=mask, **kwargs)
    torch.manual_seed(0)
    mine = ours.generate(ids, mask, **kwargs)
    beams = getattr(theirs, "beam_indices", None)
    want = hf.compute_transition_scores(theirs.sequences, theirs.scores, beams, normalize_logits=normalize)
    got = ours.compute_transition_scores(theirs.sequences, theirs.scores, beams, normalize_logits=normalize)
    assert torch.equal(got, want)                                         # the same output: bit for bit
    got = BartForConditionalGeneration.compute_transition_scores(mine.sequences, mine.scores, mine.beam_indices,
                                                                 normalize_logits=normalize)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-5)              # our own output: within float rounding
    if beams is not None:                                   # a hypothesis ended early: its later steps are 0
        assert bool((want == 0).any()) and bool((got == 0).any())


def test_beam_transition_scores_sum_to_the_sequence_scores(pair):
    """transformers' documented identity: summed transition scores / length ** length_penalty = sequences_scores."""
    _, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    out = ours.generate(ids, mask, num_beams=3, num_return_sequences=3, length_penalty=1.5, max_new_tokens=10,
                        return_dict_in_generate=True, output_scores=True)
    scores = ours.compute_transition_scores(out.sequences, out.scores, out.beam_indices)
    lengths = (out.beam_indices >= 0).sum(dim=1)
    torch.testing.assert_close(scores.sum(dim=1) / lengths ** 1.5, out.sequences_scores, rtol=0, atol=1e-5)


def test_a_separate_target_vocabulary_is_read_at_its_own_width(checkpoint):
    """Marian with its own decoder vocabulary (640 ids, source 500): each token's score is its own step's, read at
    the scores' width (transformers reads config.vocab_size, the source's, there)."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("marian-separate"))
    ids = torch.tensor([[5, 6, 7, 8, 0]])
    out = model.generate(ids, num_beams=1, max_new_tokens=6, return_dict_in_generate=True, output_scores=True)
    got = model.compute_transition_scores(out.sequences, out.scores)
    tokens = out.sequences[0, 1:]
    assert torch.equal(got[0], torch.stack([step[0, t] for step, t in zip(out.scores, tokens)]))


def test_no_scores_is_named(pair):
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    out = ours.generate(ids, mask, max_new_tokens=3, return_dict_in_generate=True)
    with pytest.raises(ValueError, match="scores is empty: generate with output_scores=True"):
        ours.compute_transition_scores(out.sequences, out.scores)


FIX = ("pass the .sequences, .scores (or .logits) and .beam_indices of one generate(..., output_scores=True, "
       "return_dict_in_generate=True) call")
MISMATCHES = {   # (what is passed, from a greedy run g and a beam run b) -> the message's problem
    "beam_indices of another run": (lambda g, b: (g.sequences, g.scores, b.beam_indices),
                                    "beam_indices must be an integer tensor [3, steps] (sequences has 3 rows), got a "
                                    "int32 tensor of shape (6, 6)"),
    "beam search without beam_indices": (lambda g, b: (b.sequences, b.scores, None),
                                         "sequences has 6 rows and scores 9, without beam_indices: after beam search "
                                         "pass its .beam_indices; else"),
    "fewer sequences than scores' rows": (lambda g, b: (g.sequences[:1], g.scores, None),
                                          "sequences has 1 rows and scores 3, without beam_indices: after beam "
                                          "search pass its .beam_indices; else"),
    "beam rows beyond the scores'": (lambda g, b: (b.sequences, g.scores, b.beam_indices),
                                     "beam_indices holds a row outside the scores' 3 rows (or below -1)"),
    "sequences shorter than the steps": (lambda g, b: (g.sequences[:, :3], g.scores, None),
                                         "sequences has 3 tokens a row, fewer than the 6 steps scored"),
    "a token beyond the vocabulary": (lambda g, b: (g.sequences + 60000, g.scores, None),
                                      "sequences holds a token id outside the scores' vocabulary of 50265"),
    "beam_indices longer than the scores": (lambda g, b: (b.sequences, b.scores[:3], b.beam_indices),
                                            "beam_indices counts more steps than the scores' 3"),
    "scores stacked": (lambda g, b: (g.sequences, torch.stack(g.scores), None),
                       "scores must be a tuple of [rows, vocab] tensors, one per step, got a float32 tensor of shape "
                       "(6, 3, 50265)"),
    "scores of two widths": (lambda g, b: (g.sequences, (g.scores[0][:, :9],) + g.scores[1:], None),
                             "scores must hold one [rows, vocab] tensor per step, all of one shape, got shapes "
                             "['(3, 50265)', '(3, 9)']"),
    "float sequences": (lambda g, b: (g.sequences.float(), g.scores, None),
                        "sequences must be generate's .sequences, an integer tensor [rows, length], got a float32 "
                        "tensor of shape (3, 7)"),
}


@pytest.mark.parametrize("case", list(MISMATCHES))
def test_mismatched_inputs_are_named(pair, case):
    """Inputs that are not one generate call's (transformers fails deep inside torch, or answers silently) are a
    ValueError naming the mismatch and the fix."""
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    kwargs = dict(max_new_tokens=6, min_new_tokens=6, return_dict_in_generate=True, output_scores=True)
    g = ours.generate(ids, mask, **kwargs)
    b = ours.generate(ids, mask, num_beams=3, num_return_sequences=2, **kwargs)
    args, problem = MISMATCHES[case]
    with pytest.raises(ValueError) as error:
        ours.compute_transition_scores(*args(g, b))
    assert str(error.value) == (f"{problem} {FIX}" if problem.endswith("else") else f"{problem}: {FIX}")


def test_a_finished_hypothesis_filled_with_minus_one_is_not_read():
    """Beam search without eos and pad ids, a stop string ending a hypothesis: generate fills it with -1 (as
    transformers), where beam_indices is -1 too. Those positions score 0 and are not read (they were refused as
    'a token id outside the scores' vocabulary', blaming the caller; transformers fails with an IndexError); a -1
    at a position scored is still refused."""
    from seq2seq_kit.generation import compute_transition_scores

    scores = tuple(torch.arange(10.0).reshape(2, 5) + 10 * step for step in range(3))     # 3 steps [2 rows, 5]
    sequences = torch.tensor([[2, 1, 4, -1], [2, 3, 0, 2]])
    beam_indices = torch.tensor([[0, 1, -1], [1, 1, 0]])
    got = compute_transition_scores(sequences, scores, beam_indices)
    assert got.tolist() == [[1.0, 19.0, 0.0], [8.0, 15.0, 22.0]]
    with pytest.raises(ValueError, match="a token id outside the scores' vocabulary"):
        compute_transition_scores(torch.tensor([[2, 1, -1, 0], [2, 3, 0, 2]]), scores, beam_indices)


def test_beam_indices_wider_than_the_longest_hypothesis_are_cut_as_in_transformers():
    """beam_indices with columns where every row had ended (-1): transformers cuts them to the longest hypothesis'
    steps and reads that many of the sequences' last tokens; so does compute_transition_scores."""
    from types import SimpleNamespace

    from transformers import BartConfig, GenerationMixin

    from seq2seq_kit.generation import compute_transition_scores

    scores = tuple(torch.arange(10.0).reshape(2, 5) + 10 * step for step in range(3))     # 3 steps [2 rows, 5]
    sequences = torch.tensor([[2, 1, 4, 3], [2, 3, 0, 2]])
    beam_indices = torch.tensor([[0, 1, -1], [1, -1, -1]])
    want = GenerationMixin.compute_transition_scores(SimpleNamespace(config=BartConfig(vocab_size=5)), sequences,
                                                     scores, beam_indices)
    assert want.tolist() == [[4.0, 18.0], [5.0, 0.0]]
    assert torch.equal(compute_transition_scores(sequences, scores, beam_indices), want)
