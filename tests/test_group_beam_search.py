"""Group (diverse) beam search (num_beam_groups > 1) against transformers 4.55.4, the last transformers that ran it
itself: tests/fixtures/group-beam holds a tiny BART checkpoint and what 4.55.4 generated from it (its
make_expected.py, run once in a venv of its own), since the oracle the suite installs (transformers 5) no longer
runs it (its generate points at a Hub repository of remote code).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seq2seq_kit import BartForConditionalGeneration, Engine, pipeline
from seq2seq_kit.generation import compute_transition_scores

FIXTURE = Path(__file__).parent / "fixtures" / "group-beam"
CASES = json.loads((FIXTURE / "cases.json").read_text())["cases"]
EXPECTED = load_file(FIXTURE / "expected.safetensors")


@pytest.fixture(scope="module")
def model():
    return BartForConditionalGeneration.from_pretrained(FIXTURE)


def run(model, case: dict, **extra):
    settings = dict(case["settings"])
    prompt = settings.pop("decoder_prompt", None)
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    if prompt is not None:
        settings["decoder_input_ids"] = torch.tensor([prompt] * len(ids))
    return model.generate(ids, mask, output_scores=True, return_dict_in_generate=True, **settings, **extra)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_group_beam_search_is_transformers_4_55s(model, case):
    """Sequences equal; sequences_scores within 1e-4 (relative 1e-5: a length penalty of -1 multiplies a sum of
    log-probs by the length); with one input, every step's processed scores within 1e-4 and -inf where 4.55's
    are (with several, a finished group's rows read the first input's source in 4.55: group_beam_search.py)."""
    name = case["name"]
    out = run(model, case)
    assert torch.equal(out.sequences, EXPECTED[f"{name}.sequences"])
    torch.testing.assert_close(out.sequences_scores, EXPECTED[f"{name}.sequences_scores"], atol=1e-4, rtol=1e-5)
    if f"{name}.scores" in EXPECTED:
        torch.testing.assert_close(torch.stack(out.scores), EXPECTED[f"{name}.scores"], atol=1e-4, rtol=0)


def test_the_cases_cover_groups_that_finish_early():
    """The oracle's cases reach what the search must get right: groups finished before the last step (and after
    the first), hypotheses of different lengths (padded), two EOS ids, a decoder prompt, both length-penalty signs,
    every early_stopping value, a negative diversity penalty (groups without the Hamming penalty)."""
    done = [EXPECTED[f"{case['name']}.done"] for case in CASES]           # [steps, B, groups] each
    assert any(d[1:-1].any() and not d[-1].all() for d in done)            # some finish while others go on
    assert any((EXPECTED[f"{c['name']}.sequences"] == 1).any() for c in CASES)          # padded (pad id 1)
    settings = [case["settings"] for case in CASES]
    assert any(isinstance(s.get("eos_token_id"), list) for s in settings)
    assert any("decoder_prompt" in s for s in settings)
    assert {s.get("early_stopping", False) for s in settings} == {False, True, "never"}
    assert {s.get("length_penalty", 1.0) > 0 for s in settings} == {True, False}
    assert any(s["diversity_penalty"] < 0 for s in settings)


def test_beam_indices_give_each_tokens_score(model):
    """beam_indices name the batch's rows (b * num_beams + beam), so compute_transition_scores reads each returned
    token's processed score: their sum over a hypothesis, normalised by its length, is its sequences_score (4.55's
    named each group's own rows, which compute_transition_scores misreads)."""
    case = next(c for c in CASES if c["name"] == "case1-batch3")        # one EOS id, lengths differ, 3 inputs
    out = run(model, case)
    transition = compute_transition_scores(out.sequences, out.scores, out.beam_indices)      # [N, L]
    generated = (out.beam_indices >= 0).sum(dim=1)                                            # [N]
    penalty = case["settings"]["length_penalty"]
    torch.testing.assert_close(transition.sum(dim=1) / generated.double().pow(penalty).float(),
                               out.sequences_scores, atol=1e-4, rtol=1e-5)
    groups = case["settings"]["num_beams"] // case["settings"]["num_beam_groups"]
    assert out.beam_indices.max() >= 2 * case["settings"]["num_beams"] + groups       # the third input's rows


def test_without_groups_the_settings_do_nothing(model):
    """num_beam_groups with num_beams 1 is greedy search, and a diversity penalty without groups plain beam search,
    as in transformers 5 (which ignores both there)."""
    case = CASES[0]
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    generate = lambda **settings: model.generate(ids, mask, max_length=20, **settings)
    assert torch.equal(generate(num_beams=1, num_beam_groups=2, diversity_penalty=1.0), generate(num_beams=1))
    assert torch.equal(generate(num_beams=4, diversity_penalty=1.0), generate(num_beams=4))
    grouped = generate(num_beams=4, num_beam_groups=2, diversity_penalty=3.0, num_return_sequences=2)
    assert not torch.equal(grouped, generate(num_beams=4, num_return_sequences=2))


@pytest.mark.parametrize("settings, message", [
    (dict(num_beam_groups=2, diversity_penalty=1.0, do_sample=True), "does not sample: set do_sample=False"),
    (dict(num_beam_groups=3, diversity_penalty=1.0), r"`num_beams` \(4\) must be divisible by `num_beam_groups` \(3\)"),
    (dict(num_beam_groups=2), "needs `diversity_penalty` other than 0.0"),
    (dict(num_beam_groups=2, diversity_penalty=1.0, stop_strings="x"), "stop_strings do not end a group beam"),
    (dict(num_beam_groups=0, diversity_penalty=1.0), "`num_beam_groups` must be an integer >= 1, got 0"),
    (dict(num_beam_groups=2.0, diversity_penalty=1.0), "`num_beam_groups` must be an integer >= 1, got 2.0"),
    (dict(num_beam_groups=2, diversity_penalty="1"), "`diversity_penalty` must be a number"),
    (dict(num_beam_groups=2, diversity_penalty=float("inf")), "`diversity_penalty` must be a finite number"),
])
def test_bad_group_settings_are_refused(model, settings, message):
    with pytest.raises(ValueError, match=message):
        model.generate(torch.tensor([[0, 9, 10, 2]]), num_beams=4, max_length=10, **settings)


def test_the_engine_refuses_group_beam_search(model):
    with Engine(model, max_rows=8) as engine:
        with pytest.raises(ValueError, match="num_beam_groups: group .* runs in generate.. only"):
            engine.submit([0, 9, 10, 2], num_beams=4, num_beam_groups=2, diversity_penalty=1.0, max_length=10)
        assert engine.submit([0, 9, 10, 2], num_beams=4, max_length=10).result().shape[0] == 1


def test_a_pipeline_applies_a_checkpoints_group_settings(checkpoint, tmp_path):
    """task_specific_params' diverse beam search (as 4.x applied it) runs in the pipeline: its summaries are
    generate's with those settings."""
    for item in checkpoint("tiny").iterdir():
        shutil.copy(item, tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    params = {"num_beams": 4, "num_beam_groups": 2, "diversity_penalty": 2.0, "num_return_sequences": 4,
              "max_length": 12}
    (tmp_path / "config.json").write_text(json.dumps({**config, "task_specific_params": {"summarization": params}}))
    pipe = pipeline("summarization", model=str(tmp_path))
    text = "The council met on Tuesday and voted to repair the old bridge before the winter."
    ids = pipe.tokenizer(text, return_tensors="pt")["input_ids"]
    expected = pipe.model.generate(ids, **params)
    assert pipe(text) == [{"summary_text": t} for t in pipe.tokenizer.batch_decode(expected, skip_special_tokens=True)]
    assert not torch.equal(expected, pipe.model.generate(ids, num_beams=4, num_return_sequences=4, max_length=12))


@pytest.mark.cuda
def test_group_beam_search_on_cuda(model):
    """On a GPU the search decodes eagerly (no CUDA graph), with 4.55's tokens."""
    case = CASES[2]
    out = run(model.to("cuda"), case)
    assert torch.equal(out.sequences.cpu(), EXPECTED[f"{case['name']}.sequences"])
    model.to("cpu")
