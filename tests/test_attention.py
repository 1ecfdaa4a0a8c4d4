"""seq2seq_kit's own decode-step attention (models/attention.py, attention.c) against torch's
scaled_dot_product_attention and float64, its fallbacks, and its choice at load (kernel_choice.choose_attention).
Token parity of whole generate calls with it: test_kernels.py's test_eligible_kernels_keep_token_parity ("gemv"
runs it)."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from seq2seq_kit import kernel_choice
from seq2seq_kit.modeling import BartForConditionalGeneration
from seq2seq_kit.models import attention

needs_kernel = pytest.mark.skipif(not attention.available(), reason="the attention kernel is not built or cannot run")


def tensors(B, H, Q, S, D, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(*shape, generator=g) for shape in ((B, H, Q, D), (B, H, S, D), (B, H, S, D))]


@needs_kernel
@torch.no_grad()
@pytest.mark.parametrize("B,H,Q,S,D", [(1, 16, 1, 512, 64), (2, 16, 4, 300, 64), (3, 12, 1, 37, 48),
                                       (2, 4, 3, 17, 8), (1, 2, 64, 9, 16), (5, 2, 1, 1, 24), (1, 1, 2, 8, 128)])
@pytest.mark.parametrize("masked", [False, True])
def test_attention_is_as_close_to_float64_as_torchs(B, H, Q, S, D, masked):
    q, k, v = tensors(B, H, Q, S, D)
    mask = None
    if masked:
        mask = torch.rand(B, 1, 1, S, generator=torch.Generator().manual_seed(1)) > 0.3
        mask[..., 0] = True                                                 # no row without a key
    ours = attention.attend(q, k, v, attn_mask=mask, scale=0.3)
    torchs = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=0.3)
    exact = F.scaled_dot_product_attention(q.double(), k.double(), v.double(), attn_mask=mask, scale=0.3)
    assert ours.shape == torchs.shape and ours.dtype == torch.float32
    assert (ours - exact).abs().max() <= 2 * max((torchs - exact).abs().max().item(), 1e-7)
    torch.testing.assert_close(ours, torchs, rtol=0, atol=1e-5)            # both within ~3e-6 of float64 here


@needs_kernel
@torch.no_grad()
def test_attention_reads_cache_views_and_a_shared_mask():
    """What a step hands it: keys/values a slice of a longer cache (strided heads), queries a transposed view, one
    mask row for every input; a fully masked key gets zero weight, a query with every key masked gets NaN (as
    torch's)."""
    B, H, L, S, D = 3, 4, 20, 11, 64
    cache = torch.randn(2, B, H, L, D)
    k, v = cache[0, :, :, :S], cache[1, :, :, :S]                          # [B, H, S, D], rows L * D apart
    q = torch.randn(B, 1, H, D).transpose(1, 2)                             # [B, H, 1, D], not contiguous
    mask = torch.ones(1, 1, 1, S, dtype=torch.bool)
    mask[..., 5] = False
    want = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    torch.testing.assert_close(attention.attend(q, k, v, attn_mask=mask), want, rtol=0, atol=1e-6)
    v_moved = v.clone()
    v_moved[:, :, 5] = 1e6                                                  # the masked key's value: never read in
    torch.testing.assert_close(attention.attend(q, k, v_moved, attn_mask=mask), want, rtol=0, atol=1e-6)
    assert attention.attend(q, k, v, attn_mask=torch.zeros(1, 1, 1, S, dtype=torch.bool)).isnan().all()


@needs_kernel
@torch.no_grad()
def test_a_float64_default_dtype_does_not_change_the_output():
    q, k, v = tensors(1, 2, 1, 9, 16)
    want = attention.attend(q, k, v)
    before = torch.get_default_dtype()
    torch.set_default_dtype(torch.float64)
    try:
        got = attention.attend(q, k, v)
    finally:
        torch.set_default_dtype(before)
    assert got.dtype == torch.float32 and torch.equal(got, want)


@torch.no_grad()
@pytest.mark.parametrize("case", ["causal", "float64", "grad", "width 12", "mask float", "mask per query",
                                  "too many queries", "keys and values differ"])
def test_what_it_does_not_take_runs_torchs_attention(case, monkeypatch):
    q, k, v = tensors(2, 2, 3, 10, 16)
    kwargs = {}
    if case == "causal":
        q, kwargs = q[:, :, :1], dict(is_causal=True)
    elif case == "float64":
        q, k, v = q.double(), k.double(), v.double()
    elif case == "width 12":
        q, k, v = q[..., :12], k[..., :12], v[..., :12]
    elif case == "mask float":
        kwargs = dict(attn_mask=torch.zeros(2, 1, 1, 10))
    elif case == "mask per query":
        kwargs = dict(attn_mask=torch.ones(2, 1, 3, 10, dtype=torch.bool))
    elif case == "too many queries":
        q = torch.randn(2, 2, attention.MAX_QUERIES + 1, 16)
    elif case == "keys and values differ":
        v = v[:, :, :9]
    if case == "grad":
        with torch.enable_grad():
            q.requires_grad_()
            assert not attention.applies(q, k, v, None, False)
        return
    monkeypatch.setattr(attention, "_attention", None)                      # it must not be reached
    want = F.scaled_dot_product_attention(q, k, v, **kwargs)
    assert torch.equal(attention.attend(q, k, v, **kwargs), want)


@needs_kernel
@torch.no_grad()
def test_the_kernel_takes_up_to_max_queries_and_a_mask_of_its_batch_or_one():
    """The kernel's bounds (applies): MAX_QUERIES query rows per (input, head) but not one more; a mask of the
    queries' batch or 1, not another (which torch refuses as it would: no broadcast of 3 masks over 2 inputs); a
    mask that is not dense along the keys (a strided view) runs torch's attention, which reads it as it is."""
    q, k, v = tensors(2, 2, attention.MAX_QUERIES + 1, 10, 16)
    assert attention.applies(q[:, :, :-1], k, v, None, False) and not attention.applies(q, k, v, None, False)
    q = q[:, :, :1]
    for batch, takes in ((1, True), (2, True), (3, False)):
        mask = torch.ones(batch, 1, 1, 10, dtype=torch.bool)
        assert attention.applies(q, k, v, mask, False) == takes, batch
    mask = torch.ones(3, 1, 1, 10, dtype=torch.bool)
    with pytest.raises(RuntimeError):
        F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
    with pytest.raises(RuntimeError):
        attention.attend(q, k, v, attn_mask=mask)
    wide = torch.rand(2, 1, 1, 20, generator=torch.Generator().manual_seed(2)) > 0.5
    wide[..., 0::2] = True
    mask = wide[..., 1::2]                                                  # a view, not dense along S
    mask[..., 0] = True                                                     # each input: a key attended
    assert not torch.equal(mask, wide[..., :10])                            # what reading it densely would give
    torch.testing.assert_close(attention.attend(q, k, v, attn_mask=mask),
                               F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=0, atol=1e-6)
    assert mask.stride(3) == 2 and not attention.applies(q, k, v, mask, False)


def test_the_choice_is_forced_measured_and_cached(checkpoint, monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    path = checkpoint("tiny")
    for forced, want in (("onednn", "sdpa"), ("mkl", "sdpa"), ("default", "sdpa"), ("fc1=gemv", "sdpa")) + \
            ((("gemv", "own"),) if attention.available() else ()):
        monkeypatch.setenv(kernel_choice.ENV, forced)
        assert BartForConditionalGeneration.from_pretrained(path).step_attention() == want
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    model = BartForConditionalGeneration.from_pretrained(path)
    if not attention.available():
        assert model.step_attention() == "sdpa"
        return
    heads = model.config.decoder_attention_heads
    key = f"{heads}x{model.config.d_model // heads}"
    saved = json.loads(kernel_choice.cache_path().read_text())
    assert set(saved["attention"][key]) == {"1", "2-8"} and saved["timings"]      # both sections kept
    for own, want in ((0.5, "own"), (2.0, "sdpa")):
        saved["attention"][key] = {c: {"sdpa": 1.0, "own": own} for c in ("1", "2-8")}
        kernel_choice.cache_path().write_text(json.dumps(saved))
        monkeypatch.setattr(kernel_choice, "time_attention", lambda *a: pytest.fail("measured again"))
        assert BartForConditionalGeneration.from_pretrained(path).step_attention() == want
    assert BartForConditionalGeneration.from_pretrained(path, dtype="bfloat16").step_attention() == "sdpa"


def test_set_step_attention_refuses_an_unknown_kernel(checkpoint):
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    with pytest.raises(ValueError, match="unknown attention kernel 'flash'; use 'sdpa' or 'own'"):
        model.set_step_attention("flash")
