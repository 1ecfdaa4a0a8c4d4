"""generate(..., assistant_model=draft): greedy search or sampling whose guesses come from a draft model
(generation/draft.py). Greedy tokens are greedy search's whatever the draft says: equal to transformers' greedy
generate with the model itself, its int8 copy and another model as drafts; a draft that agrees takes several tokens
per pass. Sampling is transformers' speculative sampling draw for draw; the draft's settings are its
generation_config's."""

from __future__ import annotations

import copy
import re

import pytest
import torch

from seq2seq_kit import BartForConditionalGeneration, GenerationConfig
from seq2seq_kit.generation import draft as draft_module
from test_prompt_lookup import SAMPLED, SETTINGS, Puts, length_of, one_input

FAMILIES = ["tiny-eos", "kobart", "pegasus", "m2m100"]


@pytest.fixture(autouse=True)
def transformers_without_scikit_learn(monkeypatch):
    """transformers retunes its draft's confidence threshold from an ROC curve when scikit-learn is installed (the
    GPU machine's image has it); seq2seq_kit does not (README), so the comparisons run transformers as without it."""
    from transformers.generation import candidate_generator

    monkeypatch.setattr(candidate_generator, "is_sklearn_available", lambda: False)


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


def twin_drafts(hf, ours, tmp_path) -> dict:
    """kind -> (transformers' draft, ours of the same weights): the model itself, and a model of the same vocabularies
    with other random weights (saved by seq2seq_kit, loaded by both)."""
    import transformers
    torch.manual_seed(7)
    other = BartForConditionalGeneration(ours.config)
    other.generation_config = copy.deepcopy(ours.generation_config)
    other.save_pretrained(tmp_path / "other")
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(tmp_path / "other").eval()
    return {"itself": (hf, ours), "other": (theirs, BartForConditionalGeneration.from_pretrained(tmp_path / "other"))}


def transformers_fed_right(hf, ids, mask, **kwargs):
    """transformers' generate with its assistant fed as it means to: given a decoder_attention_mask (all ones, which
    changes nothing else), its encoder-decoder assistant is fed the output's new tokens only after the cache it kept;
    without one, 5.25 feeds the whole output again after that cache (its _prefill slices the input only where the
    mask is as long), so the draft guesses from a garbled prefix and draws other tokens."""
    start = torch.tensor([[hf.generation_config.decoder_start_token_id]], device=ids.device)
    return hf.generate(ids, attention_mask=mask, decoder_input_ids=start, decoder_attention_mask=torch.ones_like(start),
                       **kwargs)


@pytest.mark.parametrize("setting", list(SAMPLED))
@pytest.mark.parametrize("name", FAMILIES)
def test_sampling_is_transformers_speculative_sampling(pair, tmp_path, name, setting):
    """With do_sample, transformers' speculative sampling draw for draw, on every family, padded and not, with the
    sampling cut-offs and the processors that ban tokens: from the same seed the same tokens, each pass taking the
    same tokens (the streamers' puts), scores and logits within 1e-4, the RNG left in the same state; the model as
    its own draft (an input padded and not) and another model (from a seeded generator, which draws as the global
    RNG does)."""
    hf, ours = pair(name)
    kwargs = dict(SAMPLED[setting], do_sample=True, max_new_tokens=30, return_dict_in_generate=True,
                  output_scores=True, output_logits=True)
    several = 0
    for kind, (hf_draft, draft) in twin_drafts(hf, ours, tmp_path).items():
        for seed in (1, 2) if kind == "itself" else (3,):
            ids, mask = one_input(ours, seed, padded=seed % 2 == 0)
            torch.manual_seed(seed)
            theirs = Puts()
            want = transformers_fed_right(hf, ids, mask, **kwargs, assistant_model=hf_draft, streamer=theirs)
            after = torch.get_rng_state()
            mine = Puts()
            generator = torch.Generator().manual_seed(seed) if seed == 3 else None
            torch.manual_seed(seed)
            got = ours.generate(ids, mask, **kwargs, assistant_model=draft, streamer=mine, generator=generator)
            assert got.sequences.tolist() == want.sequences.tolist(), (kind, seed)
            assert mine.puts == theirs.puts and mine.ended
            assert len(got.scores) == len(want.scores)
            for step, reference in zip(got.scores + got.logits, want.scores + want.logits, strict=True):
                torch.testing.assert_close(step, reference, rtol=1e-4, atol=1e-4)
            if generator is None:
                assert torch.equal(torch.get_rng_state(), after)
            several += sum(len(put[0]) > 1 for put in mine.puts[1:])
    assert several > 0                                         # passes that kept guessed tokens


# settings drawn at random for test_random_settings_draw_as_transformers: (name, values)
OPTIONS = [("temperature", [0.3, 0.7, 1.5]), ("top_k", [0, 3, 20]), ("top_p", [0.5, 0.9]), ("typical_p", [0.8]),
           ("min_p", [0.05]), ("epsilon_cutoff", [3e-3]), ("eta_cutoff", [3e-3]), ("repetition_penalty", [0.8, 1.3]),
           ("no_repeat_ngram_size", [2]), ("min_new_tokens", [3, 10]), ("renormalize_logits", [True]),
           ("forced_bos_token_id", [5]), ("suppress_tokens", [[7, 8]]), ("bad_words_ids", [[[9], [10, 11]]]),
           ("encoder_repetition_penalty", [1.2]), ("remove_invalid_values", [True]),
           ("exponential_decay_length_penalty", [(5, 1.1)])]


def test_random_settings_draw_as_transformers(pair, tmp_path):
    """Speculative sampling under 1-4 settings drawn at random (every processor transformers runs on the draft's and
    the model's scores, in its order), both drafts: transformers' tokens from the same seed."""
    import random
    hf, ours = pair("tiny-eos")
    drafts = twin_drafts(hf, ours, tmp_path)
    rng = random.Random(0)
    for trial in range(12):
        kwargs = {name: rng.choice(values) for name, values in rng.sample(OPTIONS, rng.randint(1, 4))}
        kwargs.update(do_sample=True, max_new_tokens=rng.choice([8, 20]))
        ids, mask = one_input(ours, trial % 5 + 1, padded=trial % 2 == 1)
        for kind, (hf_draft, draft) in drafts.items():
            torch.manual_seed(trial)
            want = transformers_fed_right(hf, ids, mask, **kwargs, assistant_model=hf_draft)
            torch.manual_seed(trial)
            assert ours.generate(ids, mask, **kwargs, assistant_model=draft).tolist() == want.tolist(), (kind, kwargs)


@pytest.mark.parametrize("schedule", ["constant", "heuristic", "heuristic_transient"])
def test_the_drafts_settings_are_its_generation_configs(pair, tmp_path, monkeypatch, schedule):
    """num_assistant_tokens, its schedule and assistant_confidence_threshold are read from the draft's
    generation_config, as transformers reads them: sampling draws as transformers' with them (a heuristic schedule's
    length written back to the draft's config, as there; a transient one's not), and no guess is longer than the
    setting allows; greedy search's guesses keep to them too, its tokens unchanged."""
    hf, ours = pair("kobart")
    (hf_draft, draft), = [twin_drafts(hf, ours, tmp_path)["other"]]
    settings = dict(num_assistant_tokens=3, num_assistant_tokens_schedule=schedule, assistant_confidence_threshold=0.0)
    for key, value in settings.items():
        setattr(hf_draft.generation_config, key, value)
        setattr(draft.generation_config, key, value)
    passes = []
    extend = ours.extend_unchecked
    monkeypatch.setattr(ours, "extend_unchecked", lambda fed, *a, **k: passes.append(fed.shape[1]) or
                        extend(fed, *a, **k))
    for seed in range(1, 3):
        ids, mask = one_input(ours, seed)
        kwargs = dict(do_sample=True, temperature=0.5, max_new_tokens=25)
        torch.manual_seed(seed)
        want = transformers_fed_right(hf, ids, mask, **kwargs, assistant_model=hf_draft)
        torch.manual_seed(seed)
        assert ours.generate(ids, mask, **kwargs, assistant_model=draft).tolist() == want.tolist(), seed
        assert draft.generation_config.num_assistant_tokens == hf_draft.generation_config.num_assistant_tokens
        assert (draft.generation_config.num_assistant_tokens != 3) == (schedule == "heuristic")
    if schedule == "constant":
        assert max(passes) == 4 and passes.count(4) > len(passes) // 2        # 3 guessed tokens after the last
        passes.clear()
        ids, mask = one_input(ours, 1)
        greedy = ours.generate(ids, mask, max_new_tokens=25, assistant_model=ours)     # (its own settings: unset)
        assert greedy.tolist() == hf.generate(ids, attention_mask=mask, max_new_tokens=25).tolist()
        monkeypatch.setattr(ours.generation_config, "num_assistant_tokens", 2)
        monkeypatch.setattr(ours.generation_config, "assistant_confidence_threshold", 0.0)
        passes.clear()
        assert ours.generate(ids, mask, max_new_tokens=25, assistant_model=ours).tolist() == greedy.tolist()
        assert passes and max(passes) == 3


def test_the_drafts_settings_are_checked(pair):
    _, ours = pair("tiny-eos")
    ids, mask = one_input(ours, 1)
    with pytest.raises(ValueError, match=re.escape("num_assistant_tokens is the draft model's setting: transformers "
                                                   "reads it from the assistant's generation config (and ignores it "
                                                   "as a generate() argument); set it there, e.g. assistant_model."
                                                   "generation_config.num_assistant_tokens = 5")):
        ours.generate(ids, mask, max_new_tokens=5, assistant_model=ours, num_assistant_tokens=5)
    draft = BartForConditionalGeneration(ours.config)
    for key, value, message in [
            ("num_assistant_tokens", 0, "num_assistant_tokens must be an integer >= 1, got 0"),
            ("num_assistant_tokens_schedule", "linear", "num_assistant_tokens_schedule must be one of 'constant', "
                                                        "'heuristic', 'heuristic_transient', got 'linear'"),
            ("assistant_confidence_threshold", -0.5, "assistant_confidence_threshold must be a number >= 0 (0: off), "
                                                     "got -0.5")]:
        draft.generation_config = GenerationConfig(**{key: value})
        with pytest.raises(ValueError, match=re.escape(f"assistant_model.generation_config.{message}")):
            ours.generate(ids, mask, max_new_tokens=5, assistant_model=draft)


def test_what_a_draft_does_not_run_with(pair, checkpoint):
    hf, ours = pair("tiny-eos")
    ids, mask = one_input(ours, 1)
    for kwargs, message in [
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


@pytest.mark.cuda
def test_speculative_sampling_on_cuda_draws_as_transformers(pair, tiny_eos_path):
    """On a GPU, sampling with a draft (the model itself) draws from the CUDA generator as transformers' speculative
    sampling on the same GPU does (its assistant fed right: transformers_fed_right)."""
    import transformers
    _, cpu = pair("tiny-eos")
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tiny_eos_path).cuda().eval()
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    kwargs = dict(do_sample=True, temperature=0.5, max_new_tokens=24)
    for seed in range(1, 4):
        ids, mask = (t.cuda() for t in one_input(cpu, seed))
        torch.manual_seed(seed)
        want = transformers_fed_right(hf, ids, mask, assistant_model=hf, **kwargs)
        torch.manual_seed(seed)
        assert cuda.generate(ids, mask, assistant_model=cuda, **kwargs).tolist() == want.tolist(), seed
