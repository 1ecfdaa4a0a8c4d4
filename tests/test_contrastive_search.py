"""Contrastive search (penalty_alpha > 0 with top_k > 1, greedy) against transformers 4.55.4, the last transformers
that ran it itself: tests/fixtures/contrastive holds what 4.55.4 generated from the tiny BART checkpoint of
tests/fixtures/group-beam and from a tiny mBART (whose decoder ends in a layer norm) in the fixture's folder (its
make_expected.py, run once in a venv of its own), since the oracle the suite installs (transformers 5) no longer runs
it (its generate points at a Hub repository of remote code).
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from seq2seq_kit import AutoModelForSeq2SeqLM, BartForConditionalGeneration, Engine, pipeline
from test_generation import inputs
from test_prompt_lookup import Puts

FIXTURE = Path(__file__).parent / "fixtures" / "contrastive"
CHECKPOINT = Path(__file__).parent / "fixtures" / "group-beam"
CASES = json.loads((FIXTURE / "cases.json").read_text())["cases"]
EXPECTED = load_file(FIXTURE / "expected.safetensors")
IDS = torch.tensor([[0, 9, 10, 11, 12, 2]])


@pytest.fixture(scope="module")
def model():
    return BartForConditionalGeneration.from_pretrained(CHECKPOINT)


def run(model, case: dict, **extra):
    settings = {**{k: v for k, v in case["settings"].items() if k not in ("seed", "checkpoint")}, **extra}
    prompt = settings.pop("decoder_prompt", None)
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    if prompt is not None:
        settings["decoder_input_ids"] = torch.tensor([prompt] * len(ids))
    return model.generate(ids, mask, output_scores=True, output_logits=True, return_dict_in_generate=True,
                          **settings)


@pytest.fixture(scope="module")
def mbart():
    return AutoModelForSeq2SeqLM.from_pretrained(FIXTURE / "mbart")


@pytest.mark.parametrize("case", CASES, ids=[case["name"] for case in CASES])
def test_contrastive_search_is_transformers_4_55s(model, mbart, case):
    """Sequences equal; every step's processed scores and logits within 1e-4 (and -inf where 4.55's are)."""
    name = case["name"]
    out = run(mbart if case["settings"].get("checkpoint") == "mbart" else model, case)
    assert torch.equal(out.sequences, EXPECTED[f"{name}.sequences"])
    torch.testing.assert_close(torch.stack(out.scores), EXPECTED[f"{name}.scores"], atol=1e-4, rtol=0)
    torch.testing.assert_close(torch.stack(out.logits), EXPECTED[f"{name}.logits"], atol=1e-4, rtol=0)


def test_the_cases_cover_what_the_search_must_get_right():
    """Inputs that end while others go on (padded), a decoder prompt, two EOS ids, top_k from 2 to 8, a penalty from
    0.2 to 1.0 (1.0: the degeneration penalty alone), processors that ban tokens (the candidates come after them), a
    family whose decoder ends in a layer norm (mBART)."""
    assert any((EXPECTED[f"{c['name']}.sequences"] == 1).any() for c in CASES)            # padded (pad id 1)
    settings = [c["settings"] for c in CASES]
    assert any("decoder_prompt" in s for s in settings)
    assert any(isinstance(s.get("eos_token_id"), list) for s in settings)
    assert {s["top_k"] for s in settings} >= {2, 8} and {s["penalty_alpha"] for s in settings} >= {0.2, 1.0}
    assert any("no_repeat_ngram_size" in s or "bad_words_ids" in s for s in settings)
    assert any(s.get("checkpoint") == "mbart" for s in settings)


def test_the_penalty_changes_the_tokens_greedy_search_picks(model):
    """The same input: greedy search repeats itself; contrastive search's tokens differ, and the larger the penalty,
    the fewer repeated tokens."""
    case = next(c for c in CASES if c["name"] == "case2-batch3")
    ids, mask = torch.tensor(case["input_ids"]), torch.tensor(case["attention_mask"])
    greedy = model.generate(ids, mask, max_length=22)
    contrastive = model.generate(ids, mask, max_length=22, penalty_alpha=0.9, top_k=6)
    assert not torch.equal(greedy, contrastive)
    repeats = lambda out: sum(len(row) - len(set(row)) for row in out.tolist())
    assert repeats(contrastive) < repeats(greedy)


@pytest.mark.parametrize("inert", [dict(do_sample=True), dict(top_k=1), dict(num_beams=2), dict(penalty_alpha=0.0)])
def test_where_transformers_does_not_run_it_the_penalty_does_nothing(model, inert):
    """penalty_alpha acts only in a greedy search with top_k > 1 (transformers' generation mode): elsewhere the output
    is that of the search without it."""
    settings = {"penalty_alpha": 0.6, "top_k": 4, "max_length": 12, **inert}
    without = {k: v for k, v in settings.items() if k != "penalty_alpha"}
    torch.manual_seed(0)
    expected = model.generate(IDS, **without)
    torch.manual_seed(0)
    assert torch.equal(model.generate(IDS, **settings), expected)


def test_a_streamer_gets_each_token_as_it_is_chosen(model):
    streamer = Puts()
    out = model.generate(IDS, max_length=14, penalty_alpha=0.6, top_k=4, streamer=streamer)
    assert streamer.ended and streamer.puts[0] == [[2]]
    assert [streamer.puts[0][0][0]] + [put[0] for put in streamer.puts[1:]] == out[0].tolist()


def test_stop_strings_and_max_time_end_it(model, checkpoint):
    pipe = pipeline("summarization", model=str(checkpoint("tiny")))
    ids = pipe.tokenizer("The council met on Tuesday.", return_tensors="pt")["input_ids"]
    contrastive = dict(penalty_alpha=0.6, top_k=4, max_length=30)
    full = pipe.model.generate(ids, **contrastive)[0]
    text = pipe.tokenizer.decode(full[1:6])                 # the text up to the fifth token generated
    stopped = pipe.model.generate(ids, stop_strings=text[-2:], tokenizer=pipe.tokenizer, **contrastive)[0]
    assert len(stopped) <= 6 and torch.equal(stopped, full[:len(stopped)])
    assert model.generate(IDS, max_time=0.0, penalty_alpha=0.6, top_k=4, max_length=30).shape == (1, 2)


@pytest.mark.parametrize("settings, message", [
    (dict(output_hidden_states=True, return_dict_in_generate=True), "does not run beside output_attentions"),
    (dict(prompt_lookup_num_tokens=3), "does not run beside prompt_lookup_num_tokens / assistant_model"),
    (dict(max_length=65), r"max_length \(65\) may be at most the model's 64 positions"),
    (dict(top_k=4.0), "`top_k` must be an integer >= 0, got 4.0"),
    (dict(top_k="4"), "`top_k` must be an integer >= 0, got '4'"),
    (dict(top_k=97), r"`top_k` \(contrastive search's candidates per step\) may be at most the vocabulary's 96 "
                     "tokens, got 97"),
    (dict(penalty_alpha="0.6"), "`penalty_alpha` must be a number, got '0.6'"),
])
def test_bad_contrastive_settings_are_refused(model, settings, message):
    with pytest.raises(ValueError, match=message):
        model.generate(IDS, **{"penalty_alpha": 0.6, "top_k": 4, "max_length": 10, **settings})


def test_the_engine_refuses_contrastive_search(model):
    with Engine(model, max_rows=8) as engine:
        with pytest.raises(ValueError, match="penalty_alpha: contrastive search runs in generate.. only"):
            engine.submit([0, 9, 10, 2], penalty_alpha=0.6, top_k=4, max_length=10)
        assert engine.submit([0, 9, 10, 2], penalty_alpha=0.6, top_k=1, max_length=10).result().shape[0] == 1


def test_a_pipeline_runs_contrastive_search(checkpoint):
    pipe = pipeline("summarization", model=str(checkpoint("tiny")))
    text = "The council met on Tuesday and voted to repair the old bridge before the winter."
    settings = dict(penalty_alpha=0.6, top_k=4, max_length=20, num_beams=1)
    ids = pipe.model.generate(pipe.tokenizer(text, return_tensors="pt")["input_ids"], **settings)
    assert pipe(text, **settings) == [{"summary_text": pipe.tokenizer.decode(ids[0], skip_special_tokens=True)}]


# no processor at all: the reference below scores the raw logits
PLAIN = dict(forced_bos_token_id=None, forced_eos_token_id=None, bad_words_ids=None, suppress_tokens=None,
             begin_suppress_tokens=None, no_repeat_ngram_size=0, min_length=0, repetition_penalty=None, num_beams=1)


def by_full_passes(hf, ids, mask, start: int, eos: int, alpha: float, k: int, new_tokens: int) -> list[int]:
    """Contrastive search spelled out on transformers 5's model, one input, without a cache: every step runs the
    decoder over the whole prefix plus each candidate and compares the candidate's last hidden state with the
    prefix's (the paper's rule, on the raw logits)."""
    out = [start]
    for _ in range(new_tokens):
        forward = lambda seq: hf(input_ids=ids, attention_mask=mask, decoder_input_ids=torch.tensor([seq]),
                                 output_hidden_states=True)
        with torch.no_grad():
            prefix = forward(out)
            probs, candidates = prefix.logits[0, -1].float().softmax(-1).topk(k)
            context = prefix.decoder_hidden_states[-1][0]                                            # [t, D]
            scores = []
            for p, c in zip(probs.tolist(), candidates.tolist()):
                h = forward(out + [c]).decoder_hidden_states[-1][0, -1]                              # [D]
                penalty = torch.cosine_similarity(context, h[None], dim=-1).max().item()
                scores.append((1 - alpha) * p - alpha * penalty)
        out.append(candidates[max(range(k), key=scores.__getitem__)].item())
        if out[-1] == eos:
            break
    return out


@pytest.mark.parametrize("name", ["tiny-eos", "kobart", "marian-separate", "pegasus", "m2m100", "mbart50"])
def test_every_family_picks_the_candidates_a_spelled_out_search_picks(pair, name):
    """On every family (their decoders end in a layer norm or not; Marian's has a vocabulary of its own): the
    tokens of contrastive search written out on transformers' model with full passes (within float rounding of the
    cosine similarities: the cases are not near ties); and with a vanishing penalty, greedy search's."""
    hf, ours = pair(name)
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id, lengths=(10,), seed=3)
    start, eos = ours.generation_config.decoder_start_token_id, ours.generation_config.eos_token_id
    eos = eos[0] if isinstance(eos, list) else eos
    for alpha, k in ((0.6, 4), (0.3, 2)):
        want = by_full_passes(hf, ids, mask, start, eos, alpha, k, new_tokens=8)
        got = ours.generate(ids, mask, penalty_alpha=alpha, top_k=k, max_new_tokens=8, **PLAIN)
        assert got[0].tolist() == want, (name, alpha, k)
    greedy = ours.generate(ids, mask, max_new_tokens=8, **PLAIN)
    assert torch.equal(ours.generate(ids, mask, penalty_alpha=1e-7, top_k=3, max_new_tokens=8, **PLAIN), greedy)


@pytest.mark.cuda
def test_contrastive_search_on_cuda(model):
    """On a GPU it decodes eagerly (no CUDA graph), with 4.55's tokens."""
    case = CASES[2]
    out = run(model.to("cuda"), case)
    assert torch.equal(out.sequences.cpu(), EXPECTED[f"{case['name']}.sequences"])
    model.to("cpu")


@pytest.mark.parametrize("repo, settings", [
    ("transformers-community/contrastive-search", dict(penalty_alpha=0.6, top_k=4)),
    ("transformers-community/group-beam-search", dict(num_beams=4, num_beam_groups=2, diversity_penalty=1.0)),
    ("transformers-community/constrained-beam-search", dict(num_beams=4, force_words_ids=[[40]])),
])
def test_transformers_5s_calls_of_the_moved_searches_run_the_built_in_ones(model, repo, settings):
    """transformers 5 code asks for these searches with custom_generate=<its Hub repository> and
    trust_remote_code=True: the same tokens as the settings alone (nothing is loaded); a repository whose search the
    settings do not select, or any other custom_generate, is refused."""
    expected = model.generate(IDS, max_length=12, **settings)
    assert torch.equal(model.generate(IDS, max_length=12, custom_generate=repo, trust_remote_code=True, **settings),
                       expected)
    assert torch.equal(model.generate(IDS, max_length=12, trust_remote_code=True, **settings), expected)
    with pytest.raises(ValueError, match=f"custom_generate='{repo}' asks for the search these settings select"):
        model.generate(IDS, max_length=12, custom_generate=repo)
    with pytest.raises(ValueError, match="seq2seq_kit runs no generate function of a Hub repository or of yours"):
        model.generate(IDS, max_length=12, custom_generate="someone/sampler", **settings)
