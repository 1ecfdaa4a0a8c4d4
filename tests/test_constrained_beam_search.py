"""Constrained beam search (force_words_ids / constraints) against transformers 4.55.4, the last transformers that ran
it itself: tests/fixtures/constrained-beam holds what 4.55.4 generated from the tiny BART checkpoint of
tests/fixtures/group-beam (its make_expected.py, run once in a venv of its own), since the oracle the suite installs
(transformers 5) no longer runs it (its generate points at a Hub repository of remote code, and it has no
PhrasalConstraint / DisjunctiveConstraint any more).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seq2seq_kit import (BartForConditionalGeneration, DisjunctiveConstraint, Engine, GenerationConfig,
                         PhrasalConstraint, pipeline)

FIXTURE = Path(__file__).parent / "fixtures" / "constrained-beam"
CHECKPOINT = Path(__file__).parent / "fixtures" / "group-beam"
CASES = json.loads((FIXTURE / "cases.json").read_text())["cases"]
EXPECTED = load_file(FIXTURE / "expected.safetensors")
IDS = torch.tensor([[0, 9, 10, 11, 12, 2]])


@pytest.fixture(scope="module")
def model():
    return BartForConditionalGeneration.from_pretrained(CHECKPOINT)


def constraint(spec: dict):
    (kind, ids), = spec.items()
    return PhrasalConstraint(ids) if kind == "phrasal" else DisjunctiveConstraint(ids)


def run(model, case: dict, **extra):
    settings = {**{k: v for k, v in case["settings"].items() if k != "seed"}, **extra}
    prompt = settings.pop("decoder_prompt", None)
    if "constraints" in settings:
        settings["constraints"] = [constraint(spec) for spec in settings["constraints"]]
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    if prompt is not None:
        settings["decoder_input_ids"] = torch.tensor([prompt] * len(ids))
    return model.generate(ids, mask, output_scores=True, return_dict_in_generate=True, **settings)


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_constrained_beam_search_is_transformers_4_55s(model, case):
    """Sequences equal; sequences_scores within 1e-4 (relative 1e-5); with one input, every step's recorded scores
    (processed log-probs plus beam scores; the first step's empty beams near -1e9, hence the relative 1e-6) within
    1e-4 and -inf where 4.55's are (with several, a finished input's rows read the first input's source in 4.55)."""
    name = case["name"]
    out = run(model, case)
    assert torch.equal(out.sequences, EXPECTED[f"{name}.sequences"])
    torch.testing.assert_close(out.sequences_scores, EXPECTED[f"{name}.sequences_scores"], atol=1e-4, rtol=1e-5)
    if f"{name}.scores" in EXPECTED:
        torch.testing.assert_close(torch.stack(out.scores), EXPECTED[f"{name}.scores"], atol=1e-4, rtol=1e-6)


def contains(row: list[int], word: list[int]) -> bool:
    return any(row[i:i + len(word)] == word for i in range(len(row)))


def test_the_cases_cover_what_the_search_must_get_right():
    """Inputs finished before the last step while others go on; a whole search ended early; returned sequences that
    meet no constraint (max_length too short for the phrase: 4.55's fallback); alternatives that share a first token
    (where 4.55's DisjunctiveConstraint copies share their progress: constraints.py); constraint objects beside
    force_words_ids; a decoder prompt; two EOS ids; every early_stopping value; both length-penalty signs."""
    done = {c["name"]: EXPECTED[f"{c['name']}.done"] for c in CASES}                    # [steps, B] each
    assert any(d[1:-1].any() and not d[-1].all() for d in done.values())
    assert any(EXPECTED[f"{c['name']}.sequences"].shape[1] < c["settings"].get("max_length", 99) for c in CASES)
    short = next(c for c in CASES if c["name"] == "case4-batch1")
    phrase = short["settings"]["force_words_ids"][0]
    assert not all(contains(row, phrase) for row in EXPECTED["case4-batch1.sequences"].tolist())
    settings = [c["settings"] for c in CASES]
    shared = lambda words: len({w[0] for w in words}) < len(words)
    assert any(isinstance(w[0], list) and shared(w) for s in settings for w in s.get("force_words_ids", []))
    assert any("constraints" in s and "force_words_ids" in s for s in settings)
    assert any("decoder_prompt" in s for s in settings)
    assert any(isinstance(s.get("eos_token_id"), list) for s in settings)
    assert {s.get("early_stopping", False) for s in settings} == {False, True, "never"}
    assert {s.get("length_penalty", 1.0) > 0 for s in settings} == {True, False}


def test_the_best_sequences_contain_the_forced_words(model):
    """Where max_length leaves room, the best hypothesis of every input holds each phrase (and one word of each
    disjunctive entry); the same search without the constraints does not."""
    case = next(c for c in CASES if c["name"] == "case2-batch3")
    out = run(model, case, num_return_sequences=1)
    phrase, words = case["settings"]["force_words_ids"][1], case["settings"]["force_words_ids"][0]
    for row in out.sequences.tolist():
        assert contains(row, phrase) and any(contains(row, w) for w in words)
    free = model.generate(torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"]), num_beams=4,
                          max_length=22)
    assert not any(contains(row, phrase) for row in free.tolist())


def test_returned_sequences_that_meet_no_constraint_keep_their_beam_indices(model):
    """4.55 returns them without beam indices (and fails with output_scores); here each returned token names the
    row it came from."""
    case = next(c for c in CASES if c["name"] == "case4-batch3")
    out = run(model, case)
    generated = out.sequences.shape[1] - 1
    assert out.beam_indices.shape == (6, generated) and bool((out.beam_indices >= 0).all())
    assert int(out.beam_indices.max()) < 3 * case["settings"]["num_beams"]


class SpelledOut:
    """A constraint of the user's own, with the protocol alone (transformers' Constraint subclasses look like this):
    the phrase, as PhrasalConstraint."""

    def __init__(self, ids, done=0):
        self.ids, self.done, self.seqlen = ids, done, len(ids)

    def advance(self):
        return self.ids[self.done] if self.done < self.seqlen else None

    def does_advance(self, token):
        return self.done < self.seqlen and token == self.ids[self.done]

    def update(self, token):
        if self.does_advance(token):
            self.done += 1
            return True, self.done == self.seqlen, False
        self.done = 0
        return False, False, True

    def reset(self):
        self.done = 0

    def remaining(self):
        return self.seqlen - self.done

    def copy(self, stateful=False):
        return SpelledOut(self.ids, self.done if stateful else 0)


def test_a_constraint_object_of_the_users_own_is_followed(model):
    phrase = dict(num_beams=4, max_length=16, num_return_sequences=2)
    expected = model.generate(IDS, force_words_ids=[[40, 41]], **phrase)
    assert torch.equal(model.generate(IDS, constraints=[SpelledOut([40, 41])], **phrase), expected)
    assert torch.equal(model.generate(IDS, constraints=[PhrasalConstraint([40, 41])], **phrase), expected)


def test_disjunctive_constraint_follows_its_words():
    c = DisjunctiveConstraint([[5, 6], [5, 7, 8], [9]])
    assert sorted(c.advance()) == [5, 9] and c.remaining() == 3
    assert c.update(5) == (True, False, False) and sorted(c.advance()) == [6, 7]
    assert c.update(7) == (True, False, False) and c.remaining() == 1
    assert c.update(8) == (True, True, False) and c.completed and c.remaining() == 0
    c.reset()
    assert c.update(6) == (False, False, True) and c.advance() is not None


@pytest.mark.parametrize("settings, message", [
    (dict(force_words_ids=[[40]], num_beams=1), "needs num_beams > 1"),
    (dict(force_words_ids=[[40]], do_sample=True), "and `do_sample` do not go together"),
    (dict(force_words_ids=[[40]], num_beam_groups=2, diversity_penalty=1.0), "and `num_beam_groups` do not go"),
    (dict(force_words_ids=[[40]], stop_strings="x"), "and `stop_strings` do not go together"),
    (dict(force_words_ids=[]), "has to either be a `list.list.list.int...` or `list.list.int..`"),
    (dict(force_words_ids=[40]), "has to either be"),
    (dict(force_words_ids=[[40, -1]]), "has to either be"),
    (dict(force_words_ids=[[[40], []]]), "has to either be"),
    (dict(force_words_ids=[[[40], [40, 41]]]), "can't be a complete subset of another list"),
    (dict(force_words_ids=[[40, 96]]), r"`force_words_ids` holds token id 96, past the vocabulary \(96 tokens\)"),
    (dict(constraints=[PhrasalConstraint([99])]), r"`constraints` holds token id 99, past the vocabulary"),
    (dict(constraints=[]), "`constraints` must be a non-empty list of constraints"),
    (dict(constraints=[[40, 41]]), r"holds \[40, 41\], which is no constraint \(it lacks advance, "),
])
def test_bad_constrained_settings_are_refused(model, settings, message):
    with pytest.raises(ValueError, match=message):
        model.generate(IDS, **{"num_beams": 4, "max_length": 10, **settings})


def test_constraints_are_not_saved_but_force_words_ids_are(model, tmp_path):
    config = GenerationConfig(force_words_ids=[[40, 41], [[5], [6, 7]]], num_beams=4)
    config.save_pretrained(tmp_path)
    assert GenerationConfig.from_pretrained(tmp_path).force_words_ids == [[40, 41], [[5], [6, 7]]]
    with pytest.raises(ValueError, match="save the words as force_words_ids instead"):
        GenerationConfig(constraints=[PhrasalConstraint([40])]).save_pretrained(tmp_path)
    (tmp_path / "generation_config.json").write_text(json.dumps({"constraints": [[40]]}))
    with pytest.raises(ValueError, match="'constraints' must be absent .constraint objects are passed to generate"):
        GenerationConfig.from_pretrained(tmp_path)


def test_a_model_whose_constraints_cannot_be_saved_writes_no_file(model, tmp_path):
    """model.save_pretrained with constraints in its generation_config is refused before any file is written: it
    wrote config.json and the weights first, then refused, leaving the old generation_config.json beside new
    weights. to_json_string is what generation_config.json holds."""
    model.save_pretrained(tmp_path)
    before = {f.name: f.read_bytes() for f in tmp_path.iterdir()}
    assert before["generation_config.json"].decode() == model.generation_config.to_json_string()
    saved, weight = model.generation_config, model.shared.weight.detach().clone()
    model.generation_config = GenerationConfig(**{**saved.to_dict(), "num_beams": 7},
                                               constraints=[PhrasalConstraint([40])])
    try:
        with torch.no_grad():
            model.shared.weight.add_(1.0)                       # new weights, which must not be written
        with pytest.raises(ValueError, match="save the words as force_words_ids instead"):
            model.save_pretrained(tmp_path)
    finally:
        with torch.no_grad():
            model.shared.weight.copy_(weight)
        model.generation_config = saved
    assert {f.name: f.read_bytes() for f in tmp_path.iterdir()} == before


def test_the_engine_refuses_constrained_beam_search(model):
    with Engine(model, max_rows=8) as engine:
        with pytest.raises(ValueError, match="force_words_ids / constraints: constrained beam search runs in gene"):
            engine.submit([0, 9, 10, 2], num_beams=4, force_words_ids=[[40]], max_length=10)
        assert engine.submit([0, 9, 10, 2], num_beams=4, max_length=10).result().shape[0] == 1


def test_a_pipeline_forces_a_word_into_a_summary(checkpoint):
    """The tokenizer's ids for a word, forced: the summary holds the word, and is generate's for those settings."""
    pipe = pipeline("summarization", model=str(checkpoint("tiny")))
    text = "The council met on Tuesday and voted to repair the old bridge before the winter."
    word = pipe.tokenizer(" bridge", add_special_tokens=False)["input_ids"]
    settings = dict(num_beams=4, max_length=16, force_words_ids=[word])
    [summary] = pipe(text, **settings)
    ids = pipe.model.generate(pipe.tokenizer(text, return_tensors="pt")["input_ids"], **settings)
    assert summary == {"summary_text": pipe.tokenizer.decode(ids[0], skip_special_tokens=True)}
    assert "bridge" in summary["summary_text"]
    assert "bridge" not in pipe(text, num_beams=4, max_length=16)[0]["summary_text"]


@pytest.mark.cuda
def test_constrained_beam_search_on_cuda(model):
    """On a GPU the search decodes eagerly (no CUDA graph), with 4.55's tokens."""
    case = CASES[4]
    out = run(model.to("cuda"), case)
    assert torch.equal(out.sequences.cpu(), EXPECTED[f"{case['name']}.sequences"])
    model.to("cpu")
