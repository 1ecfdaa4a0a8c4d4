"""generate(decoder_input_ids=...): every row starts from a decoder prompt, token-exact with transformers 5.25
(generation/decoder_prompt.py): the start token prepended as there, the prompt counted in max_length / min_length /
max_new_tokens / min_new_tokens and in the processors that count lengths, returned at the head of every sequence.
Greedy, beam search (scores, beam indices) and seeded sampling on BART with EOS raised (rows end at different steps),
mBART, Marian (whose start token is its pad token) and M2M100 (positions counted over non-pad tokens)."""

from __future__ import annotations

import warnings

import pytest
import torch

from test_generation import assert_parity, inputs

pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default:UserWarning")

MODES = {
    "greedy": dict(max_new_tokens=8),
    "beam": dict(num_beams=3, num_return_sequences=2, max_new_tokens=8, length_penalty=1.5),
    "sample": dict(do_sample=True, top_k=8, max_new_tokens=6),
    "processors": dict(num_beams=2, max_length=11, repetition_penalty=1.3, no_repeat_ngram_size=2, min_new_tokens=3,
                       exponential_decay_length_penalty=(2, 1.4), begin_suppress_tokens=[5, 6], eos_token_id=2),
}


def prompts(start: int, batch: int) -> dict[str, torch.Tensor]:
    """Prompts [B, P] of the three kinds transformers tells apart."""
    g = torch.Generator().manual_seed(4)
    body = torch.randint(4, 40, (batch, 3), generator=g)
    with_start = torch.cat((torch.full((batch, 1), start), body), dim=1)
    some_start = with_start.clone()
    some_start[0, 0] = 7                                  # one row without the start token: none gets it prepended
    return {"no-start": body, "with-start": with_start, "some-start": some_start}


def both(hf, ours, ids, mask, prompt, their_prompt=None, **kwargs):
    """transformers' and our generate on one prompt (their_prompt: transformers' instead)."""
    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True, output_logits=True)
    torch.manual_seed(11)
    theirs = hf.generate(ids, attention_mask=mask, decoder_input_ids=prompt if their_prompt is None else their_prompt,
                         **kwargs)
    torch.manual_seed(11)
    mine = ours.generate(ids, mask, decoder_input_ids=prompt, **kwargs)
    return theirs, mine


@pytest.mark.parametrize("kind", ["no-start", "with-start", "some-start"])
@pytest.mark.parametrize("mode", list(MODES))
def test_prompt_matches_transformers(pair, mode, kind):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = prompts(ours.generation_config.decoder_start_token_id, ids.shape[0])[kind]
    theirs, mine = both(hf, ours, ids, mask, prompt, **MODES[mode])
    assert_parity(theirs, mine)
    P = prompt.shape[1] + (kind == "no-start")
    head = mine.sequences[:, :P]                                  # the prompt heads every returned sequence
    rows = prompt.repeat_interleave(mine.sequences.shape[0] // prompt.shape[0], dim=0)
    assert torch.equal(head[:, -prompt.shape[1]:], rows)


def test_rows_end_at_different_steps_after_a_prompt(pair):
    """The parity above covers rows that end early (EOS) and rows that run to max_new_tokens."""
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = prompts(2, ids.shape[0])["with-start"]
    out = ours.generate(ids, mask, decoder_input_ids=prompt, max_new_tokens=8)
    ended = [bool((row[4:-1] == 2).any()) for row in out]              # EOS before the forced last one
    assert any(ended) and not all(ended), out


@pytest.mark.parametrize("name", ["tiny-mbart", "marian", "m2m100"])
@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_families_with_a_prompt(pair, name, mode):
    hf, ours = pair(name)
    start = ours.generation_config.decoder_start_token_id if ours.generation_config.decoder_start_token_id \
        is not None else ours.config.decoder_start_token_id
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    for prompt in prompts(start, ids.shape[0]).values():
        theirs, mine = both(hf, ours, ids, mask, prompt, **MODES[mode])
        assert_parity(theirs, mine)


def test_lengths_count_the_prompt(pair):
    """max_new_tokens and the default 20 new tokens come after the prompt; max_length includes it."""
    hf, ours = pair("tiny")                                    # never emits EOS: every row runs to the limit
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = prompts(2, ids.shape[0])["with-start"]            # 4 tokens
    for kwargs, length in ((dict(max_new_tokens=5), 9), ({}, 24), (dict(max_length=7), 7)):
        mine = ours.generate(ids, mask, decoder_input_ids=prompt, **kwargs)
        assert mine.shape[1] == length
        assert torch.equal(mine, hf.generate(ids, attention_mask=mask, decoder_input_ids=prompt, **kwargs))


def warnings_of(start: str, generate, *args, **kwargs) -> list[str]:
    """The messages of the warnings generate(*args, **kwargs) gives that start with `start`, in order."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        generate(*args, **kwargs)
    return [str(w.message) for w in caught if str(w.message).startswith(start)]


UNFEASIBLE, DEFAULT_LENGTH = "Unfeasible length constraints", "Using the model-agnostic default `max_length`"


@pytest.mark.parametrize("kwargs", [dict(max_new_tokens=3, min_new_tokens=5), dict(max_length=6, min_new_tokens=5),
                                    dict(max_new_tokens=3, min_length=8), dict(min_length=30)])
def test_unfeasible_min_lengths_warn_as_transformers(pair, kwargs):
    """min_new_tokens past max_length counting the prompt: transformers warns for min_length (= min_new_tokens + P,
    what it sets) and for min_new_tokens, in this order; the same two warnings, word for word."""
    hf, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = prompts(2, ids.shape[0])["no-start"][:, :2]                   # + the start token: P = 3
    want = warnings_of(UNFEASIBLE, hf.generate, ids, attention_mask=mask, decoder_input_ids=prompt, **kwargs)
    assert len(want) == (2 if "min_new_tokens" in kwargs else 1)
    assert warnings_of(UNFEASIBLE, ours.generate, ids, mask, decoder_input_ids=prompt, **kwargs) == want


@pytest.mark.parametrize("kwargs", [{}, dict(decoder_input_ids="prompt"), dict(max_new_tokens=3), dict(max_length=6),
                                    dict(generation_config="max_length 6"), dict(generation_config="max_new_tokens 3"),
                                    dict(min_new_tokens=2)], ids=str)
def test_the_default_max_length_warns_as_transformers(pair, kwargs):
    """No max_length set anywhere (the call, generation_config=, the checkpoint's, which tiny leaves unset) and no
    max_new_tokens: transformers warns that the model-agnostic default cuts the output (=21 or 20 + the prompt);
    the same warning, word for word, and none where a length is set. The engine's submit warns the same way."""
    from seq2seq_kit import Engine
    from seq2seq_kit import GenerationConfig as OurConfig
    from transformers import GenerationConfig as TheirConfig

    hf, ours = pair("tiny")
    assert ours.generation_config.max_length is None
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)

    def given(config_class):
        out = dict(kwargs)
        if out.get("decoder_input_ids") == "prompt":
            out["decoder_input_ids"] = prompts(2, ids.shape[0])["no-start"][:, :2]
        if "generation_config" in out:
            name, value = out["generation_config"].split()
            out["generation_config"] = config_class(**{name: int(value)})
        return out

    want = warnings_of(DEFAULT_LENGTH, hf.generate, ids, attention_mask=mask, **given(TheirConfig))
    assert len(want) == (len(kwargs) == 0 or "decoder_input_ids" in kwargs or "min_new_tokens" in kwargs)
    assert warnings_of(DEFAULT_LENGTH, ours.generate, ids, mask, **given(OurConfig)) == want
    if "generation_config" not in kwargs and "decoder_input_ids" not in kwargs:
        with warnings.catch_warnings():
            warnings.simplefilter("error")              # defaults checked at construction: no request's length yet
            engine = Engine(ours, max_rows=4, defaults=dict(num_beams=2))
        with engine:
            submitted = warnings_of(DEFAULT_LENGTH, lambda: engine.submit(ids[0][mask[0].bool()], **kwargs).result(30))
            assert submitted == want[:1]


@pytest.mark.parametrize("mode", ["greedy", "beam"])
@pytest.mark.parametrize("prompt", [[[7], [8], [9]], [[2, 7], [2, 8], [2, 9]]], ids=["one+start", "start+one"])
def test_a_two_token_prompt_matches_transformers(pair, mode, prompt):
    """The shortest prompt fed before the search: two tokens (one given, the start token prepended; or both given),
    its first token in the one pass, the search stepping from the second."""
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = torch.tensor(prompt)
    theirs, mine = both(hf, ours, ids, mask, prompt, **MODES[mode])
    assert_parity(theirs, mine)
    assert torch.equal(mine.sequences[:, 1], prompt[:, -1].repeat_interleave(mine.sequences.shape[0] // 3))


def test_an_int32_prompt_is_read_as_an_int64_one(pair):
    """decoder_input_ids of dtype int32 (transformers takes them: an embedding reads Int): the same tokens as the
    int64 prompt, and as transformers'."""
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    for prompt in prompts(2, ids.shape[0]).values():
        want = ours.generate(ids, mask, decoder_input_ids=prompt, max_new_tokens=5)
        got = ours.generate(ids, mask, decoder_input_ids=prompt.int(), max_new_tokens=5)
        assert got.dtype == torch.int64 and torch.equal(got, want)
        assert torch.equal(got, hf.generate(ids, attention_mask=mask, decoder_input_ids=prompt.int(), max_new_tokens=5))
    assert_parity(*both(hf, ours, ids, mask, prompt.int(), **MODES["beam"]))
    # transformers given int64 ones here: its repetition penalty's gather refuses an int32 index on torch 2.6
    assert_parity(*both(hf, ours, ids, mask, prompt.int(), prompt, **MODES["processors"]))


def test_an_all_ones_decoder_attention_mask_changes_nothing(pair):
    hf, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    prompt = prompts(2, ids.shape[0])["with-start"]
    want = ours.generate(ids, mask, decoder_input_ids=prompt, max_new_tokens=6)
    got = ours.generate(ids, mask, decoder_input_ids=prompt, decoder_attention_mask=torch.ones_like(prompt),
                        max_new_tokens=6)
    assert torch.equal(got, want)


@pytest.mark.parametrize("name", ["m2m100", "nllb"])
def test_a_pad_token_beginning_an_m2m100_prompt_is_refused(pair, name):
    """transformers numbers the prompt's positions over its non-pad tokens in one pass: after a leading pad token
    (kept when another row begins with the start token) every position is one lower than a cache filled token by
    token gives, and the tokens differ (nllb) or only the scores do (m2m100): refused. A lone pad token is fine."""
    hf, ours = pair(name)
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id, lengths=(7, 5))
    prompt = torch.tensor([[1, 10, 11], [2, 12, 13]])                    # pad 1, start 2
    with pytest.raises(ValueError, match=r"^decoder_input_ids holds the pad token \(id 1\) in a prompt, which may "
                       r"hold it only as the decoder start token \(id 2\): padded decoder prompts are not supported"):
        ours.generate(ids, mask, decoder_input_ids=prompt, max_new_tokens=4)
    for prompt in (torch.tensor([[1], [2]]), torch.tensor([[2, 10, 11], [2, 12, 13]])):   # nothing after the pad
        assert_parity(*both(hf, ours, ids, mask, prompt, max_new_tokens=4))
    # the pad token as the decoder start token (a call's decoder_start_token_id=1, or a config's) begins every
    # prompt: the prompt's last token was numbered one past transformers' (other tokens, silently): refused too
    prompt = torch.tensor([[1, 10, 11], [1, 12, 13]])
    with pytest.raises(ValueError, match=r"^decoder_input_ids starts with the pad token \(id 1, the decoder start "
                       r"token here\) in a prompt of 3 tokens: this model's positions skip pad tokens"):
        ours.generate(ids, mask, decoder_input_ids=prompt, decoder_start_token_id=1, max_new_tokens=4)
    assert_parity(*both(hf, ours, ids, mask, torch.tensor([[1], [1]]), decoder_start_token_id=1, max_new_tokens=4))
    # one row begins with the pad token (the start token), another does not (so none gets it prepended): refused
    # as well, whichever row it is
    for prompt in (torch.tensor([[1, 10, 11], [5, 12, 13]]), torch.tensor([[5, 10, 11], [1, 12, 13]])):
        with pytest.raises(ValueError, match=r"^decoder_input_ids starts with the pad token \(id 1, the decoder "
                           r"start token here\) in a prompt of 3 tokens"):
            ours.generate(ids, mask, decoder_input_ids=prompt, decoder_start_token_id=1, max_new_tokens=4)


PROMPT_ERRORS = [              # (decoder_input_ids, decoder_attention_mask, kwargs, error, message)
    (torch.tensor([[2, 5, 6]] * 3), None, dict(max_length=3), ValueError,
     r"decoder_input_ids holds 3 tokens \(the decoder start token included\), but max_length is 3: nothing is left "
     r"to generate; set max_new_tokens"),
    (torch.tensor([[5, 6]] * 3), None, dict(max_length=3), ValueError, "holds 3 tokens"),   # + the start token
    (torch.tensor([[2, 5]] * 3), torch.tensor([[1, 0]] * 3), {}, ValueError,
     r"decoder_attention_mask masks prompt tokens \(zeros\): padded decoder prompts are not supported"),
    (None, torch.ones(3, 2), {}, ValueError, "decoder_attention_mask was given without decoder_input_ids"),
    (torch.tensor([[2, 5, 1]] * 3), None, {}, ValueError,
     r"decoder_input_ids holds the pad token \(id 1\) in a prompt, which may hold it only as the decoder start"),
    (torch.tensor([[2, 5]]), None, {}, ValueError,
     r"decoder_input_ids must have shape \[3, length >= 1\] \(one prompt per input, input_ids has 3\), got \[1, 2\]"),
    (torch.zeros(3, 0, dtype=torch.long), None, {}, ValueError, "got \\[3, 0\\]"),
    (torch.tensor([2, 5]), None, {}, TypeError, r"decoder_input_ids must be an integer tensor \[batch, length\]"),
    (torch.tensor([[2.0, 5.0]] * 3), None, {}, TypeError, "got a torch.float32 tensor of shape \\[3, 2\\]"),
    ([[2, 5]] * 3, None, {}, TypeError, "got list"),
    (torch.tensor([[2, 5]] * 3, dtype=torch.uint16), None, {}, TypeError,
     r"^decoder_input_ids must be an integer tensor \[batch, length\] \(int64 or int32, e.g. torch.tensor\(\[\[2, "
     r"0\]\]\)\), got a torch.uint16 tensor of shape \[3, 2\]$"),
    (torch.tensor([[2, 5]] * 3, dtype=torch.int8), None, {}, TypeError, "got a torch.int8 tensor"),  # transformers too
    (torch.tensor([[2, 5]] * 3).to_sparse(), None, {}, TypeError, "got a torch.sparse_coo torch.int64 tensor$"),
    (torch.nested.nested_tensor([torch.tensor([2, 5])] * 3, layout=torch.jagged), None, {}, TypeError,
     "got a nested torch.int64 tensor$"),
    (torch.tensor([[2, 5]] * 3, device="meta"), None, {}, ValueError,
     r"^decoder_input_ids is on the meta device, which holds no values: make it on the CPU or on the model's device "
     r"\(cpu\)$"),
    (torch.tensor([[2, 5]] * 3), torch.ones(3, 2, device="meta"), {}, ValueError,
     r"^decoder_attention_mask is on the meta device, which holds no values"),
    (torch.tensor([[2, 50265]] * 3), None, {}, ValueError,
     r"decoder_input_ids holds id 50265, outside the decoder's vocabulary \[0, 50265\)"),
    (torch.tensor([[2, -1]] * 3), None, {}, ValueError,
     r"decoder_input_ids holds id -1, outside the decoder's vocabulary \[0, 50265\)"),
    (torch.tensor([[2, 5]] * 3), torch.ones(3, 3), {}, ValueError,
     r"decoder_attention_mask must be a tensor of decoder_input_ids' shape \[3, 2\]"),
    (torch.full((3, 256), 5), None, dict(max_new_tokens=1), ValueError,                   # + the start token
     r"^decoder_input_ids holds 257 tokens \(the decoder start token included\), more than the model's 256 "
     r"positions: shorten every prompt to at most 256 tokens$"),
    (torch.full((3, 300), 2), None, dict(max_length=400), ValueError, r"holds 300 tokens .* more than the model's"),
    (torch.full((3, 257), 2), None, {}, ValueError, r"holds 257 tokens .* more than the model's 256 positions"),
    (torch.tensor([[2, 5]] * 3), None, dict(max_new_tokens=1024), ValueError,
     r"`max_new_tokens` must be an integer >= 1 and <= 255 \(the model has 256 positions, 2 of them the decoder "
     r"prompt's: max_length = max_new_tokens \+ 2\)"),
]


@pytest.mark.parametrize("prompt,prompt_mask,kwargs,error,message", PROMPT_ERRORS,
                         ids=[e[4][:40] for e in PROMPT_ERRORS])
def test_bad_prompt_is_refused_before_any_compute(pair, monkeypatch, prompt, prompt_mask, kwargs, error, message):
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)

    def no_compute(*args, **kw):
        raise AssertionError("the encoder ran before the prompt was validated")

    monkeypatch.setattr(ours, "encode_unchecked", no_compute)
    with pytest.raises(error, match=message):
        ours.generate(ids, mask, decoder_input_ids=prompt, decoder_attention_mask=prompt_mask, **kwargs)


def test_transformers_refuses_what_we_refuse_for_length(pair):
    """The prompt-as-long-as-max_length error is transformers' own (a ValueError there too)."""
    hf, _ = pair("tiny")
    with pytest.raises(ValueError, match="Input length of decoder_input_ids is 3, but `max_length` is set to 3"):
        hf.generate(torch.tensor([[5, 6, 7]]), decoder_input_ids=torch.tensor([[2, 5, 6]]), max_length=3)


@pytest.mark.cuda
def test_prompt_on_cuda_graphs_equals_the_cpu(checkpoint):
    """A prompt on CUDA, on generate's graphs (the default there since 2026-12-05) and eagerly: the CPU's tokens
    (fp32, decisive logits)."""
    from seq2seq_kit import BartForConditionalGeneration

    cpu = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    cuda = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), device="cuda")
    ids, mask = inputs(cpu.config.vocab_size, cpu.config.pad_token_id)
    prompt = prompts(2, ids.shape[0])["with-start"]
    want = cpu.generate(ids, mask, decoder_input_ids=prompt, num_beams=2, max_new_tokens=6)
    for graphed in (None, False):
        got = cuda.generate(ids.cuda(), mask.cuda(), decoder_input_ids=prompt.cuda(), num_beams=2, max_new_tokens=6,
                            cuda_graph=graphed)
        assert torch.equal(got.cpu(), want), graphed


def filled_caches(model, prompt: torch.Tensor, rows_per_input: int, fixed_shape: bool):
    """(one-pass cache, token-by-token cache) of the model's decoder after prompt [B, T] on each input's rows, over
    the encoder states of random sources (the second padded)."""
    ids, mask = inputs(model.config.vocab_size, model.config.pad_token_id, lengths=(7, 5))
    hidden = model.encode(ids, mask)                                                  # [B, S, D]
    one_pass, stepped = (model.new_cache(hidden, mask, rows_per_input, 16, fixed_shape=fixed_shape) for _ in "ab")
    rows = prompt.repeat_interleave(rows_per_input, dim=0)                            # [R, T]
    model.prefill_unchecked(rows, one_pass)
    for t in range(rows.shape[1]):
        model.decode_step_unchecked(rows[:, t], stepped)
    return one_pass, stepped


# float32 (CPU): the one pass's matmuls over R * T rows round differently from T steps of R rows (other kernels,
# other reduction orders); measured up to 3.6e-6 on these checkpoints' keys/values of magnitude ~1
KV_TOL = dict(rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("fixed_shape", [False, True])
@pytest.mark.parametrize("name", ["tiny", "tiny-mbart", "marian", "pegasus", "m2m100"])
def test_a_one_pass_prefill_fills_the_cache_as_token_by_token_steps(pair, name, fixed_shape):
    """prefill_unchecked writes every layer's self-attention keys/values into the cache's first T slots as T single
    steps would (within KV_TOL), advances it by T, and the next step's logits agree (beams: 3 rows per input)."""
    _, ours = pair(name)
    prompt = torch.tensor([[2, 10, 11, 12, 13, 14], [2, 20, 21, 22, 23, 24]])          # [B, T]: no pad token
    one_pass, stepped = filled_caches(ours, prompt, 3, fixed_shape)
    assert one_pass.length == stepped.length == 6
    if fixed_shape:
        assert one_pass.positions.tolist() == stepped.positions.tolist() == [6]
    torch.testing.assert_close(one_pass.self_kv, stepped.self_kv, **KV_TOL)           # slots past 6: zeros both
    nxt = torch.arange(30, 36)                                                        # [R]
    torch.testing.assert_close(ours.decode_step_unchecked(nxt, one_pass), ours.decode_step_unchecked(nxt, stepped),
                               **KV_TOL)


def test_a_prefill_into_a_cache_already_stepped_is_refused(pair):
    _, ours = pair("tiny")
    one_pass, _ = filled_caches(ours, torch.tensor([[2, 10], [2, 20]]), 1, False)
    with pytest.raises(ValueError, match=r"^a prefill writes an empty cache's first slots, but this one holds 2 "
                       r"tokens already: prefill a new cache, before any step$"):
        ours.prefill_unchecked(torch.tensor([[5], [6]]), one_pass)


def fed(model, monkeypatch) -> list:
    """What the model's decoder is fed from now on: ("prefill", ids' shape) and ("step", rows) entries."""
    calls = []
    for name, kind, shape in (("prefill_unchecked", "prefill", lambda ids: list(ids.shape)),
                              ("decode_step_unchecked", "step", lambda ids: len(ids)),
                              ("decode_group_unchecked", "step", lambda ids: len(ids))):
        def spy(ids, *args, _inner=getattr(model, name), _kind=kind, _shape=shape, **kwargs):
            calls.append((_kind, _shape(ids)))
            return _inner(ids, *args, **kwargs)
        monkeypatch.setattr(model, name, spy)
    return calls


def test_generate_feeds_a_prompt_in_one_pass(pair, monkeypatch):
    """A 6-token prompt (the start token prepended) on 3 inputs x 2 beams: one pass over its first 6 tokens of the
    6 rows, then one step per generated token (not 6 more steps)."""
    _, ours = pair("tiny")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    calls = fed(ours, monkeypatch)
    ours.generate(ids, mask, decoder_input_ids=torch.arange(10, 16).repeat(3, 1), num_beams=2, max_new_tokens=3,
                  min_new_tokens=3)
    assert calls == [("prefill", [6, 6])] + [("step", 6)] * 3


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_the_engine_admits_a_prompt_in_one_pass(pair, monkeypatch, fixed_capacity):
    """engine.submit(ids, decoder_input_ids=[P]) on the CPU, either engine: one pass over the prompt's first P - 1
    tokens (the eager engine: of each beam row; the fixed-capacity one: of one row, copied into each) at
    admission, and tokens equal generate's."""
    from seq2seq_kit import Engine

    _, ours = pair("tiny")
    prompt, ids = [2, 10, 11, 12, 13], list(range(20, 29))
    want = ours.generate(torch.tensor([ids]), decoder_input_ids=torch.tensor([prompt]), num_beams=2,
                         max_new_tokens=4)
    calls = fed(ours, monkeypatch)
    with Engine(ours, max_rows=4, fixed_capacity=fixed_capacity) as engine:
        got = engine.submit(ids, decoder_input_ids=prompt, num_beams=2, max_new_tokens=4).result(timeout=120)
    prefills = [c for c in calls if c[0] == "prefill"]
    assert prefills == [("prefill", [1 if fixed_capacity else 2, 4])], calls
    assert torch.equal(got, want)
