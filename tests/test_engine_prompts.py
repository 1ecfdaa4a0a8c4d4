"""The engine's decoder prompts: engine.submit(ids, decoder_input_ids=prompt) equals
model.generate(ids[None], decoder_input_ids=prompt[None]) run alone, whatever else runs beside it.

The acceptance tests are randomized streams (random source lengths, settings, prompts or none, arrival times) on
the EOS-biased tiny checkpoint and the 64-token BART, compared request by request against generate alone (itself
checked against transformers in test_decoder_prompt.py): tokens equal, scores within 1e-4 (fp32, CPU). The
refusals are generate's, message for message.
"""

from __future__ import annotations

import asyncio
import random
import time
import warnings

import pytest
import torch

from seq2seq_kit import BartForConditionalGeneration, Engine
from helpers import random_settings
from test_engine import SCORE_ATOL, draw_setting, kwargs_of
from test_engine import assert_same as assert_same_result

START, PAD = 2, 1                       # the tiny checkpoints' decoder start and pad tokens
SETTINGS = [                            # every processor that counts lengths, each search mode
    dict(num_beams=1),
    dict(num_beams=1, no_repeat_ngram_size=2, repetition_penalty=1.3),
    dict(num_beams=1, min_new_tokens=5, max_new_tokens=12),
    dict(num_beams=1, min_length=8, max_new_tokens=10),             # differs from the above in lengths: shares
    dict(num_beams=1, forced_bos_token_id=7, max_new_tokens=9),
    dict(num_beams=4),
    dict(num_beams=3, length_penalty=2.0, early_stopping=True, no_repeat_ngram_size=3),
    dict(num_beams=2, num_return_sequences=2, early_stopping="never", max_length=14),
    dict(num_beams=4, min_new_tokens=4, max_new_tokens=11),
    dict(num_beams=4, max_length=12),
    dict(num_beams=2, repetition_penalty=1.3, forced_bos_token_id=9, exponential_decay_length_penalty=(2, 1.4)),
    dict(do_sample=True, top_k=20, temperature=0.8, seed=1),
    dict(do_sample=True, top_p=0.9, num_return_sequences=3, min_new_tokens=3, seed=2),
    dict(do_sample=True, num_beams=2, seed=3),
]


@pytest.fixture(scope="module")
def tiny_eos(tiny_eos_path):
    return BartForConditionalGeneration.from_pretrained(tiny_eos_path)


def random_prompt(rng: random.Random, vocab: int) -> list[int] | None:
    """None (no prompt) a third of the time; else 1 to 3 ids (no pad token), some beginning with the start token."""
    if rng.random() < 1 / 3:
        return None
    prompt = [rng.randrange(3, vocab) for _ in range(rng.randint(1, 3))]
    return [START] + prompt if rng.random() < 0.3 else prompt


def as_submitted(rng: random.Random, prompt: list[int] | None):
    """A prompt in one of the forms submit takes: list[int], LongTensor [P], or [1, P] as generate's batch of one."""
    if prompt is None:
        return None
    return rng.choice([prompt, torch.tensor(prompt), torch.tensor([prompt])])


def alone(model, ids: list[int], prompt: list[int] | None, setting: dict):
    extra = {} if prompt is None else dict(decoder_input_ids=torch.tensor([prompt]))
    return model.generate(torch.tensor([ids]), **kwargs_of(setting), **extra, return_dict_in_generate=True,
                          output_scores=True)


def assert_same(out, ref, what: str) -> None:
    """test_engine's comparison, and the scores of every step."""
    assert_same_result(out, ref, what)
    assert len(out.scores) == len(ref.scores), what
    for step, (ours, theirs) in enumerate(zip(out.scores, ref.scores)):
        torch.testing.assert_close(ours, theirs, atol=SCORE_ATOL, rtol=0, msg=f"{what}: step {step}'s scores")


@pytest.mark.filterwarnings("ignore:Unfeasible length constraints")       # generate's advice, given alone too
@pytest.mark.parametrize("seed,fixed_capacity", [(0, False), (1, False), (2, True), (3, True)])
def test_random_prompt_stream_matches_generate_alone(tiny_eos, seed, fixed_capacity, monkeypatch):
    """Requests with and without prompts of different lengths, in every search mode, arriving while others run:
    each equals generate alone with its prompt (sequences, scores per step, sequence scores, beam indices)."""
    model = tiny_eos
    shared, running = [], []
    real = Engine._step

    def step(self):
        running.append(len(self.running))
        shared.append(max([len(group.members) for group in self.groups                # prompted requests'
                           if group.members[0].prompt_len > 1], default=0))
        real(self)

    monkeypatch.setattr(Engine, "_step", step)
    rng = random.Random(seed)
    jobs = [([rng.randrange(4, model.config.vocab_size) for _ in range(rng.randint(2, 30))],
             random_prompt(rng, model.config.vocab_size), rng.choice(SETTINGS)) for _ in range(24)]
    burst = rng.randrange(len(jobs))                # 4 requests whose prompts share a length and a search
    jobs[burst:burst] = [([rng.randrange(4, 500) for _ in range(rng.randint(2, 30))], [rng.randrange(3, 500)] * 2,
                          dict(setting, max_new_tokens=rng.randint(3, 12)))
                         for setting in [rng.choice(SETTINGS[:11])] * 4]
    with Engine(model, max_rows=12, fixed_capacity=fixed_capacity) as engine:
        requests = []
        for ids, prompt, setting in jobs:
            requests.append(engine.submit(ids, decoder_input_ids=as_submitted(rng, prompt), **kwargs_of(setting),
                                          return_dict_in_generate=True, output_scores=True))
            time.sleep(rng.choice([0, 0, 0.002, 0.01]) if len(requests) - 1 not in range(burst, burst + 3) else 0)
        outputs = [r.result(timeout=120) for r in requests]
    monkeypatch.undo()
    assert max(running) >= 4, f"requests hardly overlapped: {max(running)} at most in one step"
    assert max(shared) >= 2, "no two requests with prompts shared a search"
    for i, ((ids, prompt, setting), out) in enumerate(zip(jobs, outputs)):
        assert_same(out, alone(model, ids, prompt, setting), f"request {i} prompt {prompt} {setting}")


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_random_settings_with_prompts_match_generate_alone(small_path, fixed_capacity):
    """Settings drawn at random (every processor and search mode, sampling with a generator of its own), half of
    them from a few bases with their own lengths and prompts of their own lengths (requests of one prompt length
    share a search), on a 64-token BART: each request's tokens equal generate alone's."""
    model = BartForConditionalGeneration.from_pretrained(small_path)
    rng = random.Random(40 + fixed_capacity)
    bases = [random_settings(rng) for _ in range(3)]

    jobs = [([rng.randint(3, 63) for _ in range(rng.randint(1, 12))], random_prompt(rng, 64), draw_setting(rng, bases),
             rng.randint(0, 999)) for _ in range(40)]

    def kwargs(setting, seed):
        return dict(setting, generator=torch.Generator().manual_seed(seed)) if setting.get("do_sample") else setting

    with warnings.catch_warnings(), Engine(model, max_rows=12, fixed_capacity=fixed_capacity) as engine:
        warnings.simplefilter("ignore")              # generate's advice (min_length above max_length)
        requests = []
        for ids, prompt, setting, seed in jobs:
            requests.append(engine.submit(ids, decoder_input_ids=prompt, **kwargs(setting, seed)))
            time.sleep(rng.choice([0, 0, 0.001, 0.005]))
        outputs = [r.result(timeout=60) for r in requests]
        for i, ((ids, prompt, setting, seed), out) in enumerate(zip(jobs, outputs)):
            extra = {} if prompt is None else dict(decoder_input_ids=torch.tensor([prompt]))
            ref = model.generate(torch.tensor([ids]), **kwargs(setting, seed), **extra)
            assert torch.equal(out, ref), f"{i}: prompt {prompt} {setting}"


def test_one_request_with_a_prompt_alone_is_bit_identical(tiny_eos):
    kwargs = dict(num_beams=3, num_return_sequences=2, return_dict_in_generate=True, output_scores=True)
    ref = tiny_eos.generate(torch.tensor([[5, 6, 7, 8]]), decoder_input_ids=torch.tensor([[9, 10]]), **kwargs)
    with Engine(tiny_eos, max_rows=4) as engine:
        out = engine.submit([5, 6, 7, 8], decoder_input_ids=[9, 10], **kwargs).result(timeout=60)
    assert torch.equal(out.sequences, ref.sequences) and out.sequences[0, :3].tolist() == [START, 9, 10]
    assert torch.equal(out.sequences_scores, ref.sequences_scores)


def test_generate_async_takes_a_prompt(tiny_eos):
    prompt = torch.tensor([START, 11, 12])
    ref = tiny_eos.generate(torch.tensor([[5, 6, 7]]), decoder_input_ids=prompt[None], max_new_tokens=6)

    async def run():
        with Engine(tiny_eos, max_rows=4) as engine:
            coroutine = engine.generate_async([5, 6, 7], decoder_input_ids=prompt, max_new_tokens=6)
            prompt[1] = 99                          # taken as it stands at the call
            return await coroutine

    assert torch.equal(asyncio.run(run()), ref)


BAD_PROMPTS = [                          # (submit's prompt kwargs, generate's for a batch of one, extra settings)
    (dict(decoder_input_ids=[5, 50265]), dict(decoder_input_ids=torch.tensor([[5, 50265]])), {}),
    (dict(decoder_input_ids=[-1]), dict(decoder_input_ids=torch.tensor([[-1]])), {}),
    (dict(decoder_input_ids=[START, PAD, 5]), dict(decoder_input_ids=torch.tensor([[START, PAD, 5]])), {}),
    (dict(decoder_input_ids=[PAD, 5]), dict(decoder_input_ids=torch.tensor([[PAD, 5]])), {}),
    (dict(decoder_input_ids=[5] * 8), dict(decoder_input_ids=torch.tensor([[5] * 8])), dict(max_length=9)),
    (dict(decoder_input_ids=[5] * 256), dict(decoder_input_ids=torch.tensor([[5] * 256])), {}),
    (dict(decoder_input_ids=[START, 5, 6], decoder_attention_mask=[1, 0, 1]),
     dict(decoder_input_ids=torch.tensor([[START, 5, 6]]), decoder_attention_mask=torch.tensor([[1, 0, 1]])), {}),
    (dict(decoder_input_ids=[5, 6], decoder_attention_mask=[1, 1, 1]),
     dict(decoder_input_ids=torch.tensor([[5, 6]]), decoder_attention_mask=torch.tensor([[1, 1, 1]])), {}),
    (dict(decoder_attention_mask=[1, 1]), dict(decoder_attention_mask=torch.tensor([[1, 1]])), {}),
    (dict(decoder_input_ids=[]), dict(decoder_input_ids=torch.zeros(1, 0, dtype=torch.long)), {}),
    (dict(decoder_input_ids=torch.tensor([5.0, 6.0])), dict(decoder_input_ids=torch.tensor([[5.0, 6.0]])), {}),
    (dict(decoder_input_ids=torch.tensor([[5, 6], [7, 8]])), dict(decoder_input_ids=torch.tensor([[5, 6], [7, 8]])),
     {}),
    (dict(decoder_input_ids="5 6"), dict(decoder_input_ids="5 6"), {}),
]


@pytest.mark.parametrize("prompt,generates,extra", BAD_PROMPTS)
def test_bad_prompts_are_refused_at_submit_with_generates_message(tiny_eos, prompt, generates, extra):
    with pytest.raises((ValueError, TypeError)) as expected:
        tiny_eos.generate(torch.tensor([[5, 6, 7]]), **generates, **extra)
    with Engine(tiny_eos, max_rows=4) as engine:
        with pytest.raises(type(expected.value)) as refused:
            engine.submit([5, 6, 7], **prompt, **extra)
        assert str(refused.value) == str(expected.value)
        assert engine.queue_depth == 0 and not engine.running


def test_a_prompt_list_of_no_ints_is_named(tiny_eos):
    with Engine(tiny_eos, max_rows=4) as engine:
        with pytest.raises(TypeError, match=r"decoder_input_ids must be 1-D: a list of Python ints or a "
                                            r"LongTensor \[P\], got a list holding float, int"):
            engine.submit([5, 6, 7], decoder_input_ids=[5, 6.0])
        with pytest.raises(TypeError, match=r"decoder_attention_mask must be 1-D: .* got a list holding bool, int"):
            engine.submit([5, 6, 7], decoder_input_ids=[5, 6], decoder_attention_mask=[1, True])


@pytest.mark.parametrize("kwargs,name,value", [
    (dict(input_ids=[5, 2**70]), "input_ids", 2**70),
    (dict(input_ids=[5, 6], decoder_input_ids=[START, -2**64]), "decoder_input_ids", -2**64),
    (dict(input_ids=[5, 6], decoder_input_ids=[9], decoder_attention_mask=[2**63]), "decoder_attention_mask", 2**63),
])
def test_an_int_beyond_int64_in_a_list_is_named_not_torchs_overflow(tiny_eos, kwargs, name, value):
    with Engine(tiny_eos, max_rows=4) as engine:
        with pytest.raises(ValueError) as refused:
            engine.submit(**kwargs)
        assert str(refused.value) == (f"{name} holds {value}, outside int64's range [-2**63, 2**63), where no token "
                                      "id (nor mask value) lies; pass the tokenizer's ids")
        assert engine.queue_depth == 0 and not engine.running


def test_a_prompt_in_the_engines_defaults_is_refused_naming_submit(tiny_eos):
    with pytest.raises(ValueError, match=r"decoder_input_ids: a decoder prompt is one request's, not a default of "
                                         r"the engine; pass it to submit\(input_ids, decoder_input_ids=...\)"):
        Engine(tiny_eos, defaults=dict(decoder_input_ids=torch.tensor([[START, 5]])))


@pytest.mark.cuda
def test_prompts_on_a_cuda_engine_equal_generate_alone_with_either_batch(tiny_eos_path):
    """A CUDA engine's default fixed capacity (its steps replayed from CUDA graphs; it refused decoder prompts
    until 2026-12-05) and per-request caches: each request with a prompt equals eager generate alone on the GPU."""
    model = BartForConditionalGeneration.from_pretrained(tiny_eos_path, device="cuda")
    jobs = [([5, 6, 7], [9, 10], dict(max_new_tokens=5)), ([8, 9, 10, 11], [START, 12], dict(num_beams=3)),
            ([5, 6, 7], None, dict(num_beams=3, max_new_tokens=6)), ([13, 14], [9, 10], dict(max_new_tokens=7))]
    for fixed_capacity in (None, False):
        with Engine(model, max_rows=8, fixed_capacity=fixed_capacity) as engine:
            outputs = [engine.submit(ids, decoder_input_ids=prompt, **setting).result(timeout=60)
                       for ids, prompt, setting in jobs]
        for (ids, prompt, setting), out in zip(jobs, outputs):
            extra = {} if prompt is None else dict(decoder_input_ids=torch.tensor([prompt], device="cuda"))
            want = model.generate(torch.tensor([ids], device="cuda"), **setting, **extra, cuda_graph=False)
            assert torch.equal(out, want), (fixed_capacity, prompt, setting)
