"""generate(..., prompt_lookup_num_tokens=k): greedy search checking up to k guessed tokens per decoder pass
(generation/prompt_lookup.py). Its tokens are greedy search's whatever the guesses: equal to transformers' generate
with and without its own prompt lookup on every family, its scores to transformers' greedy scores; guesses that
hold (an oracle's) take several tokens per pass, ones that fail cost only the pass; the model's extend / the cache's
crop continue as single steps do."""

from __future__ import annotations

import re

import pytest
import torch

from seq2seq_kit import Engine
from seq2seq_kit.generation import prompt_lookup
from seq2seq_kit.generation.prompt_lookup import Lookup
from seq2seq_kit.models.kv_cache import FixedShapeKVCache
from test_generation import inputs

FAMILIES = ["tiny-eos", "kobart", "marian-separate", "pegasus", "m2m100", "mbart50"]
SETTINGS = {
    "plain": {},
    "checkpoint-like": dict(no_repeat_ngram_size=3, min_new_tokens=6, repetition_penalty=1.2),
    "cut": dict(max_new_tokens=7, forced_bos_token_id=5),
    "prompt": dict(decoder_input_ids=torch.tensor([[2, 7, 8, 9]])),
}


def one_input(model, seed: int, padded: bool = False):
    """One input [1, S] (and its mask, with two padding positions at the end when padded)."""
    ids, mask = inputs(model.config.vocab_size, model.config.pad_token_id, lengths=(12, 10), seed=seed)
    return (ids[1:], mask[1:]) if padded else (ids[:1], mask[:1])


def length_of(settings: dict) -> dict:
    return {} if "max_new_tokens" in settings else dict(max_new_tokens=24)


@pytest.mark.parametrize("setting", list(SETTINGS))
@pytest.mark.parametrize("name", FAMILIES)
def test_tokens_are_greedy_searchs_and_transformers(pair, name, setting):
    """On every family, padded or not: the tokens of transformers' greedy generate (which its own prompt lookup
    gives too), and its scores within 1e-4 (the pass rounds as single steps do, to float rounding)."""
    hf, ours = pair(name)
    kwargs = dict(SETTINGS[setting], **length_of(SETTINGS[setting]), num_beams=1, do_sample=False)
    for seed, padded in ((1, False), (2, True)):
        ids, mask = one_input(ours, seed, padded)
        want = hf.generate(ids, attention_mask=mask, **kwargs, return_dict_in_generate=True, output_scores=True)
        got = ours.generate(ids, mask, **kwargs, prompt_lookup_num_tokens=4, return_dict_in_generate=True,
                            output_scores=True)
        # transformers 5.25's own lookup probes its guesses with [1, vocab_size] scores, which a Marian with its own
        # decoder vocabulary's bad-words processor refuses: there only its plain greedy search is the reference
        if name != "marian-separate":
            theirs = hf.generate(ids, attention_mask=mask, **kwargs, prompt_lookup_num_tokens=4)
            assert torch.equal(theirs, want.sequences)
        assert got.sequences.tolist() == want.sequences.tolist(), (name, setting, seed)
        assert len(got.scores) == len(want.scores)
        for mine, reference in zip(got.scores, want.scores):
            torch.testing.assert_close(mine, reference, rtol=1e-4, atol=1e-4)


def oracle(truth: list[int], wrong_every: int, wrong: int = 3):
    """A Lookup.find that knows the greedy output `truth` (padded after its end, so guesses run past EOS): the next
    tokens, every `wrong_every`-th guess with its third token wrong (0: never): `wrong`, or `wrong` + 1 where that is
    the right one."""
    calls = []

    def find(self, output: list[int], tokens: int) -> list[int]:
        assert output == truth[:len(output)]                  # each pass starts where greedy search stands
        calls.append(tokens)
        guessed = truth[len(output):len(output) + tokens]
        if wrong_every and len(calls) % wrong_every == 0 and len(guessed) > 2:
            guessed[2] = wrong if guessed[2] != wrong else wrong - 1
        return guessed
    return find, calls


ORACLE_CASES = [("tiny-eos", setting, wrong) for setting in ("plain", "checkpoint-like", "cut", "prompt")
                for wrong in (0, 2, 1)] + \
               [(name, setting, 2) for name in FAMILIES[1:] for setting in ("plain", "prompt")]


@pytest.mark.parametrize("name, setting, wrong_every", ORACLE_CASES)
def test_guesses_that_hold_take_several_tokens_per_pass(pair, monkeypatch, name, setting, wrong_every):
    """With guesses from an oracle (right, or wrong at their third token in every pass or every other): the tokens
    are greedy search's, rows end mid-pass at EOS (the oracle guesses past it) and at max_length, and each pass takes
    the guessed tokens up to the first wrong one plus one: as many passes as that allows, no more. On every family
    (their positions, layer norms and vocabularies in a pass of several tokens)."""
    hf, ours = pair(name)
    kwargs = dict(SETTINGS[setting], **length_of(SETTINGS[setting]), num_beams=1, do_sample=False)
    for seed in range(1, 4):
        ids, mask = one_input(ours, seed)
        plain = ours.generate(ids, mask, **kwargs)
        print("PLAIN", plain.tolist())
        assert plain.tolist() == hf.generate(ids, attention_mask=mask, **kwargs).tolist()
        truth = plain[0].tolist() + [ours.config.pad_token_id] * 8
        wrong = 3 if name == "tiny-eos" else ours.config.decoder_vocab_size - 1      # a wrong guess: another id
        guess, calls = oracle(truth, wrong_every, wrong)
        monkeypatch.setattr(Lookup, "find", guess)
        passes = []
        extend = ours.extend_unchecked
        monkeypatch.setattr(ours, "extend_unchecked", lambda fed, *a, **k: passes.append(fed.shape[1]) or
                            extend(fed, *a, **k))
        got = ours.generate(ids, mask, **kwargs, prompt_lookup_num_tokens=5)
        monkeypatch.undo()
        assert got.tolist() == plain.tolist()
        start = SETTINGS[setting].get("decoder_input_ids", torch.tensor([[2]])).shape[1]
        max_length = start + kwargs["max_new_tokens"]
        assert passes == expected_passes(plain.shape[1], start, max_length, 5, wrong_every)
        assert len(passes) < plain.shape[1] - start - 2 or plain.shape[1] - start <= 4


def expected_passes(end: int, start: int, max_length: int, k: int, wrong_every: int) -> list[int]:
    """The tokens each pass with a guess feeds (1 + its guess) when the oracle's guesses hold up to their wrong
    token: a pass takes its right guesses and one more token, up to the output's `end`; guesses fit max_length (a
    pass left no room for one is a plain step)."""
    pos, calls, fed, cap = start, 0, [], k
    while pos < end:
        room = max_length - pos - 1
        g = min(cap, room) if room > 0 else 0
        calls += room > 0
        right = 2 if wrong_every and room > 0 and calls % wrong_every == 0 and g > 2 else g
        fed += [1 + g] if g else []
        taken = min(right + 1, end - pos)
        if g:       # next_cap: twice the cap after a guess that held whole, else one more than held
            cap = min(k, 2 * cap) if min(right, taken) == g else min(right, taken) + 1
        pos += taken
    return fed


SAMPLED = {
    "temperature": dict(temperature=0.3),
    "top-k, n-grams": dict(temperature=0.5, top_k=5, no_repeat_ngram_size=3),
    "top-p, min length": dict(top_p=0.9, temperature=0.4, min_new_tokens=8),
    # transformers' probe of a guess: scores of ones, the penalty lowers the tokens seen, top-p bans the lowest (all
    # but a tenth): no guess copied from the output holds
    "top-p, penalty": dict(top_p=0.9, temperature=0.4, repetition_penalty=1.1),
}


class Puts:
    """A streamer that keeps what it is given (lists of ids) and whether it ended."""

    def __init__(self):
        self.puts, self.ended = [], False

    def put(self, ids):
        self.puts.append(ids.tolist())

    def end(self):
        self.ended = True


@pytest.mark.parametrize("setting", list(SAMPLED))
@pytest.mark.parametrize("name", [name for name in FAMILIES if name != "marian-separate"])
def test_sampling_draws_as_transformers_assisted_sampling(pair, name, setting):
    """Sampling with prompt lookup is transformers' (its guesses, each pass's positions drawn at once), draw for
    draw: from the same seed the same tokens, each pass taking the same tokens (their streamers' puts), scores and
    logits within 1e-4; on every family transformers runs it on, padded and not, with the sampling cut-offs and the
    processors that cut a guess short (a seeded generator draws as the global RNG does)."""
    hf, ours = pair(name)
    kwargs = dict(SAMPLED[setting], do_sample=True, max_new_tokens=30, prompt_lookup_num_tokens=4,
                  return_dict_in_generate=True, output_scores=True, output_logits=True)
    several = 0
    for seed in range(1, 5):
        ids, mask = one_input(ours, seed, padded=seed % 2 == 0)
        torch.manual_seed(seed)
        theirs = Puts()
        want = hf.generate(ids, attention_mask=mask, **kwargs, streamer=theirs)
        mine = Puts()
        generator = torch.Generator().manual_seed(seed) if seed == 3 else None
        torch.manual_seed(seed)
        got = ours.generate(ids, mask, **kwargs, streamer=mine, generator=generator)
        assert got.sequences.tolist() == want.sequences.tolist(), seed
        assert mine.puts == theirs.puts and mine.ended
        for step, reference in zip(got.scores + got.logits, want.scores + want.logits, strict=True):
            torch.testing.assert_close(step, reference, rtol=1e-4, atol=1e-4)
        several += sum(len(put[0]) > 1 for put in mine.puts[1:])
    # passes that took guessed tokens: none where the probe bans every guess; mbart50's outputs here end at once
    # where the cut-offs leave it alone
    assert several == 0 if setting == "top-p, penalty" else several > 0 or name == "mbart50"


def test_sampled_guesses_past_max_length_draw_as_transformers(pair, monkeypatch):
    """Near max_length transformers still guesses its whole k tokens and draws every position of the pass, kept or
    not: the positions past max_length (not computed here) take their draws too, so the RNG is left as there.
    (The checkpoint's forced_eos_token_id bans every other token at max_length - 1, which cuts guesses there.)"""
    hf, ours = pair("tiny-eos")
    passes = []                                   # (positions computed, positions drawn)
    drawn = prompt_lookup.drawn
    monkeypatch.setattr(prompt_lookup, "drawn", lambda search, scores, guessed: passes.append(
        (scores.shape[0], 1 + guessed)) or drawn(search, scores, guessed))
    for seed in range(1, 4):
        for new_tokens in (4, 6, 9):
            ids, mask = one_input(ours, seed)
            kwargs = dict(do_sample=True, temperature=0.3, max_new_tokens=new_tokens, prompt_lookup_num_tokens=5,
                          forced_eos_token_id=None)
            torch.manual_seed(seed)
            want = hf.generate(ids, attention_mask=mask, **kwargs)
            after = torch.get_rng_state()
            torch.manual_seed(seed)
            assert ours.generate(ids, mask, **kwargs).tolist() == want.tolist(), (seed, new_tokens)
            assert torch.equal(torch.get_rng_state(), after)        # the RNG left as transformers leaves it
    assert any(computed < drawn for computed, drawn in passes)


def test_a_pass_streams_the_tokens_it_took(pair, monkeypatch):
    """A streamer gets the start token [1, 1], then each pass's tokens [1, n] (as transformers' assisted generate
    puts them), then end(): together the output."""
    _, ours = pair("tiny-eos")
    ids, mask = one_input(ours, 3)
    plain = ours.generate(ids, mask, max_new_tokens=20, min_new_tokens=12)
    guess, _ = oracle(plain[0].tolist() + [1] * 8, 2)
    monkeypatch.setattr(Lookup, "find", guess)

    class Recorder:
        calls = []

        def put(self, value):
            self.calls.append(value.tolist())

        def end(self):
            self.calls.append("end")

    streamer = Recorder()
    ours.generate(ids, mask, max_new_tokens=20, min_new_tokens=12, prompt_lookup_num_tokens=5, streamer=streamer)
    assert streamer.calls[0] == [[2]] and streamer.calls[-1] == "end"
    assert all(len(call) == 1 and 1 <= len(call[0]) <= 6 for call in streamer.calls[1:-1])
    assert any(len(call[0]) > 1 for call in streamer.calls[1:-1])
    assert [t for call in streamer.calls[:-1] for t in call[0]] == plain[0].tolist()


def test_stop_strings_and_processors_of_ones_own_end_a_pass(pair, tiny_eos_path, monkeypatch):
    """A stop string met mid-pass ends the row there, and a logits processor of one's own is called on every
    position a pass checks (with the prefix before it), as in greedy search without the lookup."""
    from seq2seq_kit import Tokenizer
    hf, ours = pair("tiny-eos")
    tok = Tokenizer.from_pretrained(tiny_eos_path)
    ban = lambda ids, scores: scores.index_fill(1, ids[:, -1], -float("inf"))    # no token twice in a row
    for seed in range(1, 3):
        ids, mask = one_input(ours, seed)
        kwargs = dict(max_new_tokens=24, min_new_tokens=3, logits_processor=[ban])
        unstopped = ours.generate(ids, mask, **kwargs)[0]
        kwargs.update(stop_strings=[tok.decode(unstopped[7:8]).strip()], tokenizer=tok)   # met by token 7 or before
        plain = ours.generate(ids, mask, **kwargs)
        assert plain.shape[1] <= 8 < len(unstopped)
        assert plain.tolist() == hf.generate(ids, attention_mask=mask,
                                             **{**kwargs, "tokenizer": hf_tokenizer(tiny_eos_path)}).tolist()
        guess, _ = oracle(plain[0].tolist() + [1] * 8, 2)
        with monkeypatch.context() as patched:
            patched.setattr(Lookup, "find", guess)
            assert ours.generate(ids, mask, **kwargs, prompt_lookup_num_tokens=5).tolist() == plain.tolist()


def test_a_sampled_pass_ends_at_a_stop_string(pair, tiny_eos_path):
    """Sampling: a stop string met mid-pass ends the output there, where transformers (which checks them once a
    pass's tokens are taken) goes on to the pass's end: its output is transformers' up to the string."""
    from seq2seq_kit import Tokenizer
    hf, ours = pair("tiny-eos")
    tok = Tokenizer.from_pretrained(tiny_eos_path)
    kwargs = dict(do_sample=True, temperature=0.3, max_new_tokens=30, prompt_lookup_num_tokens=4)
    shorter = 0
    for seed in range(1, 5):
        ids, mask = one_input(ours, seed)
        torch.manual_seed(seed)
        passes = Puts()
        unstopped = hf.generate(ids, attention_mask=mask, **kwargs, streamer=passes)[0].tolist()
        # a string that ends in the middle of a pass that took several tokens, met there first: the pass's tokens
        # were copied from earlier in the output, so it starts before the pass, where that copy's context differs
        starts = [len(unstopped) - sum(len(put[0]) for put in passes.puts[k:]) for k in range(len(passes.puts))]
        mids = [start + 1 for start, put in zip(starts, passes.puts) if len(put[0]) > 2]
        found = [text for mid in mids for a in range(mid - 1, 0, -1) if (text := tok.decode(unstopped[a:mid + 1]))
                 if not any(tok.decode(unstopped[1:n]).endswith(text) for n in range(2, mid + 1))][:1]
        if not found:
            continue
        stop = dict(stop_strings=found, tokenizer=tok)
        torch.manual_seed(seed)
        want = hf.generate(ids, attention_mask=mask, **kwargs, **{**stop, "tokenizer": hf_tokenizer(tiny_eos_path)})
        torch.manual_seed(seed)
        got = ours.generate(ids, mask, **kwargs, **stop)[0].tolist()
        texts = [tok.decode(got[1:n]) for n in range(2, len(got) + 1)]
        assert texts[-1].endswith(stop["stop_strings"][0])
        assert not any(text.endswith(stop["stop_strings"][0]) for text in texts[:-1])
        assert got == want[0].tolist()[:len(got)]
        shorter += len(got) < want.shape[1]
    assert shorter


def hf_tokenizer(path):
    import transformers
    return transformers.AutoTokenizer.from_pretrained(path)


def test_max_time_ends_after_the_pass_it_ran_out_in(pair):
    """max_time=0: the first pass is the last, as transformers' assisted generate stops after its first iteration
    (no guess from the start token alone: one token)."""
    hf, ours = pair("tiny-eos")
    ids, mask = one_input(ours, 1)
    want = hf.generate(ids, attention_mask=mask, max_new_tokens=20, prompt_lookup_num_tokens=4, max_time=0.0)
    got = ours.generate(ids, mask, max_new_tokens=20, prompt_lookup_num_tokens=4, max_time=0.0)
    assert got.tolist() == want.tolist() and got.shape == (1, 2)


def test_screened_and_full_logits_agree(pair, monkeypatch):
    """A greedy pass picks from the screened LM head (its int8 bounds) or from every logit: the same tokens, with
    guesses that hold (an oracle's) and without."""
    _, ours = pair("distilbart")
    ids, mask = one_input(ours, 4)
    kwargs = dict(max_new_tokens=16, num_beams=1, no_repeat_ngram_size=0, min_length=0)
    kinds = []
    take = prompt_lookup.take_greedy
    monkeypatch.setattr(prompt_lookup, "take_greedy", lambda search, logits, guessed: kinds.append(
        isinstance(logits, torch.Tensor)) or take(search, logits, guessed))
    was = ours.greedy_screen
    try:
        ours.set_greedy_screen(False)
        full = ours.generate(ids, mask, **kwargs)
        ours.set_greedy_screen(True)                     # (from_pretrained leaves it off where it is not faster)
        assert ours.screens(7)
        guess, _ = oracle(full[0].tolist() + [1] * 8, 2)
        for guesses in ({}, {"guess": guess}):
            with monkeypatch.context() as patched:
                for name, value in guesses.items():
                    patched.setattr(Lookup, name, value)
                for screen in (True, False):
                    ours.set_greedy_screen(screen)
                    kinds.clear()
                    assert ours.generate(ids, mask, **kwargs, prompt_lookup_num_tokens=6).tolist() == full.tolist()
                    assert kinds and set(kinds) == {not screen}      # ScreenedLogits when screened, else tensors
    finally:
        ours.set_greedy_screen(was)


def test_the_guess_is_copied_from_the_source_then_the_output():
    lookup = Lookup([0, 5, 6, 7, 8, 5, 6, 9, 2], ngram=2, stop={2}, most=5)
    assert lookup.find([2, 5, 6], 3) == [7, 8, 5]            # the first occurrence of the longest n-gram
    assert lookup.find([2, 4, 6], 3) == [7, 8, 5]            # no 2-gram: the last token alone
    assert lookup.find([2, 6, 9], 5) == []                   # 6 9 is followed by EOS only: 9 alone likewise
    assert lookup.find([2, 9, 9], 5) == []
    assert lookup.find([2, 11, 12, 13, 11, 12], 2) == [13, 11]   # not in the source: earlier in the output
    assert lookup.find([2, 11, 12, 13, 12], 4) == [13, 12]   # the output's own end is not a match
    assert lookup.find([2], 4) == []                         # the start token alone: nothing to match
    assert Lookup([0, 5, 2, 7], ngram=1, stop={2}, most=5).find([2, 5], 3) == []   # cut before the stop id
    assert Lookup([], ngram=3, stop=set(), most=5).find([3, 4, 5, 3, 4], 2) == [5, 3]


@pytest.mark.parametrize("name", FAMILIES)
def test_extend_and_crop_continue_as_single_steps(pair, name):
    """extend_unchecked's logits for T tokens equal T decode steps' (float rounding: 1e-4), and after crop(n) the
    cache continues as if only n tokens had been fed; crop past what it holds, or on a CUDA graph's cache, is
    refused. On every family."""
    _, ours = pair(name)
    ids, mask = one_input(ours, 1)
    enc = ours.encode(ids, mask)
    tokens = torch.tensor([2, 11, 12, 13, 14, 15])
    step, single = ours.start_decoding(enc, None, 1, max_length=10)
    want = torch.cat([step(t.view(1), single) for t in tokens])                     # [6, V]
    _, cache = ours.start_decoding(enc, None, 1, max_length=10)
    torch.testing.assert_close(ours.extend_unchecked(tokens[None, :4], cache), want[:4], rtol=1e-5, atol=1e-4)
    cache.crop(2)
    torch.testing.assert_close(ours.extend_unchecked(tokens[None, 2:], cache), want[2:], rtol=1e-5, atol=1e-4)
    assert cache.length == 6
    with pytest.raises(ValueError, match=r"crop keeps 0 to 6 tokens \(what the cache holds\), not 7"):
        cache.crop(7)
    fixed = ours.new_cache(enc, None, 1, 10, fixed_shape=True)
    assert isinstance(fixed, FixedShapeKVCache)
    with pytest.raises(TypeError, match="crop cuts an eager KVCache"):
        fixed.crop(0)


def test_what_prompt_lookup_does_not_run_with(pair):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=re.escape("prompt_lookup_num_tokens checks one input's guesses (batch size "
                                                   "1, as transformers' assisted generate), got 3 inputs")):
        ours.generate(ids, mask, prompt_lookup_num_tokens=3)
    one, one_mask = ids[:1], mask[:1]
    for kwargs, message in [
            (dict(do_sample=True, num_return_sequences=2),
             "prompt_lookup_num_tokens checks one sequence's guesses (batch size 1, as transformers' assisted "
             "generate), got num_return_sequences=2"),
            (dict(prompt_lookup_num_tokens=0), "`prompt_lookup_num_tokens` must be an integer >= 1, got 0"),
            (dict(max_matching_ngram_size=-1), "`max_matching_ngram_size` must be an integer >= 0, got -1"),
            (dict(output_attentions=True, return_dict_in_generate=True),
             "output_attentions / output_hidden_states are not recorded with prompt_lookup_num_tokens"),
            (dict(cuda_graph=True), "prompt_lookup_num_tokens decodes eagerly")]:
        with pytest.raises(ValueError, match=re.escape(message)):
            ours.generate(one, one_mask, **{"prompt_lookup_num_tokens": 3, **kwargs})
    # with beams it does nothing, as in transformers (its mode is beam search), which a warning says
    beams = dict(num_beams=3, max_new_tokens=10)
    def ignored(beams: int) -> str:
        return re.escape(f"prompt_lookup_num_tokens runs with greedy search or sampling (num_beams=1); this call "
                         f"runs beam search (num_beams={beams}), which ignores it")
    with pytest.warns(UserWarning, match=ignored(3)) as warned:
        got = ours.generate(ids, mask, **beams, prompt_lookup_num_tokens=3)
    assert got.tolist() == hf.generate(ids, attention_mask=mask, **beams).tolist()
    assert [w.filename for w in warned] == [__file__]                     # it points at generate's caller
    # max_matching_ngram_size 0 is the default, 2 (transformers reads `or 2`)
    assert ours.generate(one, one_mask, max_new_tokens=10, prompt_lookup_num_tokens=3,
                         max_matching_ngram_size=0).tolist() == ours.generate(one, one_mask, max_new_tokens=10).tolist()
    with Engine(ours, max_rows=4) as engine:
        for sampled in (False, True):
            with pytest.raises(ValueError, match="prompt_lookup_num_tokens: the engine steps one token per row"):
                engine.submit([5, 6, 7], prompt_lookup_num_tokens=3, max_new_tokens=4, do_sample=sampled)
        # beside beam search it does nothing there either, with generate's warning pointing at submit's caller
        with pytest.warns(UserWarning, match=ignored(2)) as warned:
            request = engine.submit([5, 6, 7], prompt_lookup_num_tokens=3, num_beams=2, max_new_tokens=4)
        assert [w.filename for w in warned] == [__file__]
        assert request.result(60).tolist() == ours.generate(torch.tensor([[5, 6, 7]]), num_beams=2,
                                                            max_new_tokens=4).tolist()


@pytest.mark.cuda
def test_prompt_lookup_on_cuda_equals_the_cpu(pair, tiny_eos_path, monkeypatch):
    """On a GPU (eager: a CUDA graph's step feeds one token per row), guesses holding or not: the CPU's tokens."""
    from seq2seq_kit import BartForConditionalGeneration
    _, cpu = pair("tiny-eos")
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    for seed in range(1, 4):
        ids, mask = one_input(cpu, seed)
        want = cpu.generate(ids, mask, max_new_tokens=20)
        assert cuda.generate(ids.cuda(), mask.cuda(), max_new_tokens=20, prompt_lookup_num_tokens=4).cpu().tolist() \
            == want.tolist()
        guess, _ = oracle(want[0].tolist() + [1] * 8, 2)
        with monkeypatch.context() as patched:
            patched.setattr(Lookup, "find", guess)
            got = cuda.generate(ids.cuda(), mask.cuda(), max_new_tokens=20, prompt_lookup_num_tokens=5)
        assert got.cpu().tolist() == want.tolist()


@pytest.mark.cuda
def test_sampling_with_prompt_lookup_on_cuda_draws_as_transformers(pair, tiny_eos_path):
    """On a GPU, sampling with prompt lookup draws from the CUDA generator as transformers' on the same GPU does."""
    import transformers
    from seq2seq_kit import BartForConditionalGeneration
    _, cpu = pair("tiny-eos")
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(tiny_eos_path).cuda().eval()
    cuda = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    kwargs = dict(do_sample=True, temperature=0.3, max_new_tokens=24, prompt_lookup_num_tokens=4)
    for seed in range(1, 4):
        ids, mask = (t.cuda() for t in one_input(cpu, seed))
        torch.manual_seed(seed)
        want = hf.generate(ids, attention_mask=mask, **kwargs)
        torch.manual_seed(seed)
        assert cuda.generate(ids, mask, **kwargs).tolist() == want.tolist(), seed
