"""generate(..., output_attentions=True, output_hidden_states=True, return_dict_in_generate=True) against
transformers 5.25 with attn_implementation="eager" (its default SDPA attention returns empty tuples for the
attentions): every field's structure and shapes equal, values within ATOL (float32, tiny random checkpoints), in
greedy, seeded sampling and beam search (+ num_return_sequences), BART (post-LN) and mBART (pre-LN, final layer
norms), a padded batch, and a decoder prompt (whose first step transformers runs in one pass); the tokens and
scores bit-identical to the same call without the flags; and where they are not returned."""

from __future__ import annotations

import pytest
import torch
import transformers
from transformers.modeling_outputs import BaseModelOutput

from seq2seq_kit import BartForConditionalGeneration, pipeline
from seq2seq_kit.engine import Engine
from seq2seq_kit.models import attention

ATOL = 1e-5
TRACED = ("encoder_attentions", "encoder_hidden_states", "decoder_attentions", "cross_attentions",
          "decoder_hidden_states")
FLAGS = dict(output_attentions=True, output_hidden_states=True, return_dict_in_generate=True)
# a padded batch: the second input has two pad tokens (id 1) at its end
IDS = torch.tensor([[0, 100, 200, 300, 400, 2], [0, 500, 600, 2, 1, 1]])
MASK = (IDS != 1).long()
MODES = {
    "greedy": dict(),
    "sampling": dict(do_sample=True, num_return_sequences=2),
    "beam": dict(num_beams=3, num_return_sequences=2),
    "beam-sampling": dict(num_beams=2, do_sample=True),
    "prompt": dict(decoder_input_ids=torch.tensor([[2, 0, 5], [2, 0, 7]])),
    "prompt-beam": dict(num_beams=2, decoder_input_ids=torch.tensor([[0, 9], [0, 11]])),   # start token prepended
}


def run(model, seed: int = 0, **kwargs):
    torch.manual_seed(seed)
    return model.generate(IDS, attention_mask=MASK, max_new_tokens=4, **kwargs)


def structure(x):
    """Nested tuples of tensors -> the same nesting of shapes."""
    return tuple(x.shape) if isinstance(x, torch.Tensor) else tuple(structure(y) for y in x)


def leaves(x):
    return [x] if isinstance(x, torch.Tensor) else [t for y in x for t in leaves(y)]


@pytest.mark.parametrize("mode", MODES)
@pytest.mark.parametrize("name", ["tiny", "tiny-mbart"])
def test_every_field_matches_transformers_eager(eager_pair, name, mode):
    hf, ours = eager_pair(name)
    want, got = run(hf, **MODES[mode], **FLAGS), run(ours, **MODES[mode], **FLAGS)
    assert torch.equal(got.sequences, want.sequences)
    assert list(got.keys()) == [k for k in want.keys() if k != "cache"]      # the same fields, in order
    assert_traces_match(got, want)


def assert_traces_match(got, want, fields=TRACED):
    for field in fields:
        assert structure(got[field]) == structure(want[field]), field
        for a, b in zip(leaves(got[field]), leaves(want[field])):
            torch.testing.assert_close(a, b, atol=ATOL, rtol=0)


@pytest.mark.parametrize("mode", ["greedy", "beam"])
def test_with_encoder_outputs_the_encoders_recordings_are_those_given(eager_pair, mode):
    """generate(encoder_outputs=..., with the flags): the decoder's recordings as without it, the encoder's those the
    given output holds, as transformers reads them off it: get_encoder()(..., output_attentions=True,
    output_hidden_states=True)'s (equal to transformers' encoder's), or None where it holds none."""
    hf, ours = eager_pair("tiny-mbart")
    flags = dict(attention_mask=MASK, output_attentions=True, output_hidden_states=True)
    mine = ours.get_encoder()(IDS, **flags)
    assert list(mine.keys()) == ["last_hidden_state", "hidden_states", "attentions"]
    assert_traces_match(mine, hf.get_encoder()(IDS, **flags), ("last_hidden_state", "hidden_states", "attentions"))
    # (transformers' beam search widens a given output in place: each call gets its own)
    want = run(hf, encoder_outputs=hf.get_encoder()(IDS, **flags), **MODES[mode], **FLAGS)
    got = run(ours, encoder_outputs=mine, **MODES[mode], **FLAGS)
    assert torch.equal(got.sequences, want.sequences)
    assert_traces_match(got, want)
    assert got.encoder_attentions is mine.attentions and got.encoder_hidden_states is mine.hidden_states
    bare = BaseModelOutput(last_hidden_state=mine.last_hidden_state.clone())
    want = run(hf, encoder_outputs=bare, **MODES[mode], **FLAGS)
    for given in (ours.get_encoder()(IDS, attention_mask=MASK), mine.last_hidden_state):
        got = run(ours, encoder_outputs=given, **MODES[mode], **FLAGS)
        assert got.encoder_attentions is None and got.encoder_hidden_states is None
        assert want.encoder_attentions is None and want.encoder_hidden_states is None
        assert_traces_match(got, want, ("decoder_attentions", "cross_attentions", "decoder_hidden_states"))


def test_the_first_steps_shapes_with_a_prompt_are_transformers_one_pass(eager_pair):
    """Fed token by token here, the prompt's steps are joined: [R, H, P, P] self-attention (its upper triangle zero),
    [R, H, P, S] cross-attention, [R, P, D] hidden states; later steps one token each."""
    hf, ours = eager_pair("tiny")
    got = run(ours, **MODES["prompt"], **FLAGS)
    assert structure(got.decoder_attentions[0][0]) == (2, 4, 3, 3)
    assert structure(got.decoder_attentions[1][0]) == (2, 4, 1, 4)
    assert structure(got.cross_attentions[0][0]) == (2, 4, 3, 6)
    assert structure(got.decoder_hidden_states[0][0]) == (2, 3, 64)
    assert not got.decoder_attentions[0][1].triu(diagonal=1).any()


@pytest.mark.parametrize("step_attention", ["sdpa", "own"])
@pytest.mark.parametrize("mode", ["greedy", "sampling", "beam", "prompt-beam"])
def test_tokens_and_scores_are_bit_identical_to_the_call_without_the_flags(eager_pair, mode, step_attention):
    """With either decode-step attention (models/attention.py's own where the machine runs it): the recorded
    probabilities are computed beside the attention the step runs, not instead of it."""
    if step_attention == "own" and not attention.available():
        pytest.skip("the own attention kernel cannot run here")
    _, ours = eager_pair("tiny-mbart")
    before = ours.step_attention()
    ours.set_step_attention(step_attention)
    try:
        outputs = dict(return_dict_in_generate=True, output_scores=True, output_logits=True)
        plain = run(ours, **MODES[mode], **outputs)
        traced = run(ours, **MODES[mode], **outputs, output_attentions=True, output_hidden_states=True)
    finally:
        ours.set_step_attention(before)
    for field in plain.keys():
        for a, b in zip(leaves(traced[field]), leaves(plain[field])):
            assert torch.equal(a, b), field


def test_a_model_taking_the_trace_by_name_only_records_it(eager_pair, monkeypatch):
    """generation/protocol.py: the trace is passed by name, so a model may take it keyword-only (was passed to
    decode_step_unchecked by position: TypeError)."""
    _, ours = eager_pair("tiny-mbart")
    want = run(ours, **MODES["prompt"], **FLAGS)
    for name in ("encode_unchecked", "prefill_unchecked", "decode_step_unchecked"):
        bound = getattr(ours, name)
        monkeypatch.setattr(ours, name, lambda ids, mask_or_cache, *, trace=None, bound=bound: bound(
            ids, mask_or_cache, trace=trace))
    got = run(ours, **MODES["prompt"], **FLAGS)
    assert list(got.keys()) == list(want.keys())
    for field in want.keys():
        assert all(torch.equal(a, b) for a, b in zip(leaves(got[field]), leaves(want[field]), strict=True)), field


def test_only_the_fields_asked_for(eager_pair):
    hf, ours = eager_pair("tiny")
    for flag, absent in (("output_attentions", "hidden_states"), ("output_hidden_states", "attentions")):
        got = run(ours, return_dict_in_generate=True, **{flag: True})
        want = run(hf, return_dict_in_generate=True, **{flag: True})
        assert list(got.keys()) == [k for k in want.keys() if k != "cache"]
        assert not any(absent in k for k in got.keys())


def test_without_return_dict_in_generate_the_flags_are_ignored_as_in_transformers(eager_pair):
    hf, ours = eager_pair("tiny")
    got = run(ours, output_attentions=True, output_hidden_states=True)
    want = run(hf, output_attentions=True, output_hidden_states=True)
    assert isinstance(want, torch.Tensor) and isinstance(got, torch.Tensor) and torch.equal(got, want)


def test_transformers_default_sdpa_returns_no_attentions_ours_are_the_eager_values(checkpoint, eager_pair):
    """What the README says: transformers' default attention gives empty tuples; ours are eager's values."""
    sdpa = transformers.AutoModelForSeq2SeqLM.from_pretrained(checkpoint("tiny")).eval()
    out = run(sdpa, **FLAGS)
    assert out.encoder_attentions == () and out.decoder_attentions[0] == () and out.cross_attentions[0] == ()
    assert len(run(eager_pair("tiny")[1], **FLAGS).encoder_attentions) == 2


def test_attn_implementation_as_the_docs_pass_it_changes_nothing(checkpoint):
    """from_pretrained(..., attn_implementation="eager" / "sdpa", low_cpu_mem_usage=True), as the NLLB and mBART
    docs' examples load, was a TypeError: with either, the attentions are transformers' eager ones (its "eager" is
    what returns them), and the tokens the same; another implementation is refused by name."""
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(checkpoint("tiny"), attn_implementation="eager").eval()
    expected = run(hf, **FLAGS)
    for implementation in ("eager", "sdpa"):
        ours = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), attn_implementation=implementation,
                                                            low_cpu_mem_usage=True)
        out = run(ours, **FLAGS)
        assert torch.equal(out.sequences, expected.sequences)
        torch.testing.assert_close(out.cross_attentions[-1][-1], expected.cross_attentions[-1][-1], atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="attn_implementation='flash_attention_2': seq2seq_kit runs its own"):
        BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), attn_implementation="flash_attention_2")


def test_a_checkpoints_output_attentions_returns_them_as_in_transformers(eager_pair):
    """config.json / generation_config's output_attentions: true (with return_dict_in_generate, which
    from_model_config sets as transformers does) makes generate return them."""
    hf, ours = eager_pair("tiny")
    saved = ours.generation_config
    try:
        ours.generation_config = type(saved).from_model_config({**ours.config.to_dict(), "output_attentions": True})
        out = run(ours)
        assert "cross_attentions" in out and "decoder_hidden_states" not in out
    finally:
        ours.generation_config = saved


def test_int8_records_them_beside_the_same_tokens(checkpoint):
    """An int8 model (outside the parity guarantee) records its own attentions; tokens as without the flags."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny")).quantize_int8()
    plain = run(model, num_beams=2, return_dict_in_generate=True, output_scores=True)
    traced = run(model, num_beams=2, output_scores=True, **FLAGS)
    assert torch.equal(traced.sequences, plain.sequences) and torch.equal(traced.scores[-1], plain.scores[-1])
    assert len(traced.cross_attentions) == len(plain.scores)
    torch.testing.assert_close(traced.cross_attentions[0][0].sum(-1), torch.ones(4, 4, 1))


def engine_refusal(*names: str) -> str:
    """The engine's whole refusal of these flags, as a regex."""
    return (rf"^{' and '.join(names)}: the engine does not return attentions or hidden states \(it steps its requests "
            rf"together\); pass {', '.join(n + '=False' for n in names)} \(the model's generation_config may set "
            r"them\), or use generate\(\.\.\., return_dict_in_generate=True\), which returns them$")


def test_the_engine_refuses_them_by_name(eager_pair):
    _, ours = eager_pair("tiny")
    with Engine(ours, max_rows=4) as engine:
        with pytest.raises(ValueError, match=engine_refusal("output_attentions", "output_hidden_states")):
            engine.submit([0, 100, 2], **FLAGS)
        ignored = engine.submit([0, 100, 2], output_attentions=True, max_new_tokens=3).result(60)   # no dict
        assert torch.equal(ignored, ours.generate(torch.tensor([[0, 100, 2]]), max_new_tokens=3))


def test_the_engine_names_the_fix_for_a_checkpoints_flag(checkpoint):
    """A generation config that sets output_attentions with return_dict_in_generate (as transformers'
    from_model_config does for a config.json with output_attentions true): the engine's refusal names the setting
    to pass, and passing it decodes as generate does."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    model.generation_config.output_attentions = model.generation_config.return_dict_in_generate = True
    with Engine(model, max_rows=4) as engine:
        with pytest.raises(ValueError, match=engine_refusal("output_attentions")):
            engine.submit([0, 100, 2], max_new_tokens=3)
        got = engine.submit([0, 100, 2], max_new_tokens=3, output_attentions=False).result(60)
    want = model.generate(torch.tensor([[0, 100, 2]]), max_new_tokens=3, output_attentions=False)
    assert list(got.keys()) == list(want.keys()) == ["sequences"]
    assert torch.equal(got.sequences, want.sequences)


def test_the_pipeline_ignores_them_as_4x(checkpoint):
    pipe = pipeline("summarization", model=str(checkpoint("tiny")))
    text = "The quick brown fox jumps over the lazy dog."
    assert pipe(text, max_new_tokens=5, **FLAGS) == pipe(text, max_new_tokens=5)


def test_a_checkpoint_that_sets_them_serves_the_pipelines_summaries_on_its_engine(checkpoint, tmp_path):
    """A generation_config.json with output_attentions and return_dict_in_generate (what transformers'
    from_model_config writes for a config.json with output_attentions true): pipe() ignores them, and so does the
    pipeline's engine (what the server and corpus jobs run), answering pipe()'s summary."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    model.generation_config.output_attentions = model.generation_config.return_dict_in_generate = True
    model.save_pretrained(tmp_path)
    pipe = pipeline("summarization", model=str(tmp_path), tokenizer=str(checkpoint("tiny")))
    text = "The quick brown fox jumps over the lazy dog."
    with pipe.engine(max_rows=4) as engine:
        ids = engine.submit(pipe.preprocess([text]).rows[0], max_new_tokens=5).result(60)
    assert pipe.postprocess(ids[None])[0] == pipe(text, max_new_tokens=5)


def test_the_server_does_not_take_them():
    pytest.importorskip("fastapi", reason='the server needs its extra (pip install "seq2seq-kit[serve]")')
    from seq2seq_kit.server.schema import GenerateParameters

    assert not {"output_attentions", "output_hidden_states"} & set(GenerateParameters.model_fields)


@pytest.mark.cuda
def test_cuda_graphs_are_refused_and_unset_decodes_eagerly(checkpoint):
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny")).cuda()
    ids, mask = IDS.cuda(), MASK.cuda()
    with pytest.raises(ValueError, match="output_attentions / output_hidden_states are not run on CUDA graphs"):
        model.generate(ids, attention_mask=mask, max_new_tokens=4, cuda_graph=True, **FLAGS)
    traced = model.generate(ids, attention_mask=mask, max_new_tokens=4, **FLAGS)
    eager = model.generate(ids, attention_mask=mask, max_new_tokens=4, cuda_graph=False,
                           return_dict_in_generate=True)
    assert torch.equal(traced.sequences, eager.sequences) and len(traced.decoder_attentions) == 4
