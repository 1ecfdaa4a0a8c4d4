"""generate(..., assistant_model=draft): greedy search whose guesses come from a draft model (generation/draft.py).
The tokens are greedy search's whatever the draft says: equal to transformers' greedy generate with the model itself,
its int8 copy and another model as drafts; a draft that agrees takes several tokens per pass."""

from __future__ import annotations

import re

import pytest
import torch

from seq2seq_kit import BartForConditionalGeneration
from seq2seq_kit.generation import draft as draft_module
from test_prompt_lookup import SETTINGS, length_of, one_input

FAMILIES = ["tiny-eos", "kobart", "pegasus", "m2m100"]


def drafts(path: str, model):
    """The drafts of `model` (loaded from `path`): itself (it always agrees), its int8 copy, and a model of the same
    vocabularies with other weights (it seldom agrees)."""
    other = BartForConditionalGeneration(model.config)                    # random weights, the same shapes
    other.generation_config = model.generation_config
    return {"itself": model, "int8": BartForConditionalGeneration.from_pretrained(path, dtype="int8"), "other": other}


@pytest.mark.parametrize("setting", ["plain", "checkpoint-like", "cut", "prompt"])
@pytest.mark.parametrize("name", FAMILIES)
def test_tokens_are_greedy_searchs_whatever_the_draft(pair, checkpoint, tiny_eos_path, monkeypatch, name, setting):
    """Every family, with the checkpoint-like processors, a max_length cut, forced BOS and a decoder prompt, padded
    and not: the tokens and scores (within 1e-4) of transformers' greedy generate, whichever the draft; the model as
    its own draft takes several tokens in most passes (the confidence threshold off: these random weights' top
    probabilities are below it, which ends every guess after one token)."""
    hf, ours = pair(name)
    path = tiny_eos_path if name == "tiny-eos" else checkpoint(name)
    kwargs = dict(SETTINGS[setting], **length_of(SETTINGS[setting]), num_beams=1, do_sample=False,
                  return_dict_in_generate=True, output_scores=True)
    monkeypatch.setattr(draft_module, "CONFIDENCE", 0.0)
    passes = []
    extend = ours.extend_unchecked
    monkeypatch.setattr(ours, "extend_unchecked", lambda fed, *a, **k: passes.append(fed.shape[1]) or
                        extend(fed, *a, **k))
    for seed, padded in ((1, False), (2, True)):
        ids, mask = one_input(ours, seed, padded)
        want = hf.generate(ids, attention_mask=mask, **kwargs)
        for kind, draft in drafts(path, ours).items():
            passes.clear()
            got = ours.generate(ids, mask, **kwargs, assistant_model=draft)
            assert got.sequences.tolist() == want.sequences.tolist(), (name, setting, kind)
            for mine, reference in zip(got.scores, want.scores, strict=True):
                torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)
            if kind == "itself" and got.sequences.shape[1] > 6:
                assert sum(passes) > len(passes) * 2, passes      # passes of several tokens


def test_what_a_draft_does_not_run_with(pair, checkpoint):
    hf, ours = pair("tiny-eos")
    ids, mask = one_input(ours, 1)
    for kwargs, message in [
            (dict(do_sample=True), "assistant_model runs with greedy search here (do_sample=False)"),
            (dict(prompt_lookup_num_tokens=3), "assistant_model and prompt_lookup_num_tokens both guess"),
            (dict(num_return_sequences=2, do_sample=True), "assistant_model checks one sequence's guesses"),
            (dict(cuda_graph=True), "assistant_model decodes eagerly")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            ours.generate(ids, mask, max_new_tokens=5, assistant_model=ours, **kwargs)
    two, two_mask = torch.cat([ids, ids]), torch.cat([mask, mask])
    with pytest.raises(ValueError, match=re.escape("assistant_model checks one input's guesses (batch size 1")):
        ours.generate(two, two_mask, max_new_tokens=5, assistant_model=ours)
    _, kobart = pair("kobart")
    with pytest.raises(ValueError, match=re.escape("assistant_model has vocab_size=")):
        ours.generate(ids, mask, max_new_tokens=5, assistant_model=kobart)
    with pytest.raises(TypeError, match=re.escape("assistant_model must be a seq2seq_kit model "
                                                  "(AutoModelForSeq2SeqLM.from_pretrained(path), dtype='int8' for the "
                                                  "model's own int8 copy), got a transformers")):
        ours.generate(ids, mask, max_new_tokens=5, assistant_model=hf)
    fewer = ours.config.from_dict({**ours.config.to_dict(), "max_position_embeddings": ids.shape[1] - 1})
    short = BartForConditionalGeneration(fewer)                  # its positions end before the source's
    with pytest.raises(ValueError, match=re.escape(f"assistant_model has max_position_embeddings={ids.shape[1] - 1}, "
                                                   f"fewer than this call needs (a source of {ids.shape[1]} tokens")):
        ours.generate(ids, mask, max_new_tokens=5, assistant_model=short)
    with pytest.raises(ValueError, match=re.escape("assistant_model encodes the source itself: pass input_ids")):
        ours.generate(encoder_outputs=ours.encode(ids, mask), attention_mask=mask, max_new_tokens=5,
                      assistant_model=ours)
    # beside beam search it does nothing, as in transformers, which a warning says
    with pytest.warns(UserWarning, match=re.escape("assistant_model runs with greedy search or sampling "
                                                   "(num_beams=1); this call runs beam search (num_beams=2)")):
        got = ours.generate(ids, mask, max_new_tokens=5, num_beams=2, assistant_model=ours)
    assert got.tolist() == hf.generate(ids, attention_mask=mask, max_new_tokens=5, num_beams=2).tolist()
    # the default confidence threshold ends these random weights' guesses early: the tokens stay greedy search's
    assert ours.generate(ids, mask, max_new_tokens=12, assistant_model=ours).tolist() == \
        hf.generate(ids, attention_mask=mask, max_new_tokens=12).tolist()


def test_the_engine_refuses_a_draft(pair):
    from seq2seq_kit import Engine
    _, ours = pair("tiny-eos")
    with Engine(ours, max_rows=2) as engine:
        with pytest.raises(ValueError, match="assistant_model: the engine steps one token per row"):
            engine.submit([5, 6, 7], assistant_model=ours)


@pytest.mark.cuda
def test_a_draft_on_cuda_gives_the_cpus_tokens(pair, tiny_eos_path, monkeypatch):
    """On a GPU (eager, as prompt lookup), with the model itself as the draft (every guess holds, the confidence
    threshold off) and with its CPU-loaded twin moved over: the CPU's greedy tokens."""
    monkeypatch.setattr(draft_module, "CONFIDENCE", 0.0)
    _, cpu = pair("tiny-eos")
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    other = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    for seed in range(1, 4):
        ids, mask = one_input(cpu, seed)
        want = cpu.generate(ids, mask, max_new_tokens=20, num_beams=1)
        for draft in (cuda, other):
            got = cuda.generate(ids.cuda(), mask.cuda(), max_new_tokens=20, num_beams=1, assistant_model=draft)
            assert got.cpu().tolist() == want.tolist()
