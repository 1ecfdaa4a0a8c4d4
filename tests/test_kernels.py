"""The decode step's CPU matmul kernels (models/kernels.py) and their measured choice (kernel_choice.py).

No timing here: the choice is tested on given timings, the measurement's caching with a stand-in timer. That the
eligible kernels keep token parity with transformers is what the parity tests check (tests/conftest.py runs every
float32 CPU model on oneDNN wherever ELIGIBLE allows it).
"""

from __future__ import annotations

import json
import logging
import math
import os
import platform
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from seq2seq_kit import BartConfig, kernel_choice
from seq2seq_kit.modeling import BartForConditionalGeneration
from seq2seq_kit.models import attention, gemv, kernels
from seq2seq_kit.models.kernels import KernelLinear

pytestmark = pytest.mark.skipif(not kernels.ONEDNN, reason="this torch build has no oneDNN")

SMALL = dict(vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=2, encoder_attention_heads=4,
             decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=64)
ALL_PACKED = {kind: dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed") for kind in kernels.KINDS}


def small_model(**config) -> BartForConditionalGeneration:
    torch.manual_seed(0)
    return BartForConditionalGeneration(BartConfig(**{**SMALL, **config})).eval()


@torch.no_grad()
def test_every_kernel_computes_the_linear():
    torch.manual_seed(0)
    layer = KernelLinear(48, 80)
    dense = layer.weight.detach().clone()
    for rows in (1, 4, 16, 100, 300):
        x = torch.randn(rows, 48)
        want = F.linear(x, dense, layer.bias)
        layer.use({})
        assert torch.equal(layer(x), want)                                   # "mkl" is F.linear
        onednn = kernels.onednn_linear(x, dense, layer.bias)
        torch.testing.assert_close(onednn, want, rtol=1e-5, atol=1e-5)
        layer.use(dict.fromkeys(kernels.ROW_CLASSES, "onednn"))              # up to 256 rows; F.linear above
        assert torch.equal(layer(x), onednn if rows <= kernels.MAX_ROWS else want)
        layer.use(dict.fromkeys(kernels.ROW_CLASSES, "mkl-t"))               # up to 256 rows; F.linear above
        got = layer(x)
        assert got.shape == want.shape and got.is_contiguous()
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
        assert torch.equal(layer(x[:, None]), got[:, None])                 # any leading dims: [N, 1, in]
        layer.use({"1": "onednn-packed"})                                    # every row count
        assert layer.packed and layer.weight.is_mkldnn
        torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)    # rounding may differ from dense
    layer.use({})
    assert not layer.packed and torch.equal(layer.weight, dense)             # unpacking gives the same values


def cpu_has_avx2_fma() -> bool:
    try:
        flags = set(re.search(r"^flags\s*:(.*)$", Path("/proc/cpuinfo").read_text(), re.M).group(1).split())
    except (OSError, AttributeError):
        return False
    return {"avx2", "fma"} <= flags


needs_gemv = pytest.mark.skipif(not gemv.available(), reason="the gemv kernel cannot run on this machine")


def test_gemv_is_built_and_runs_on_an_x86_64_cpu_with_avx2():
    """pip install builds models/_gemv where a C compiler is at hand (CI's machines have one): a build that silently
    failed would leave every machine on the slower kernels without a word."""
    if platform.machine() not in ("x86_64", "AMD64") or not cpu_has_avx2_fma():
        pytest.skip("gemv runs on x86-64 CPUs with AVX2 and FMA")
    assert gemv.built() and gemv.available() and gemv.ISA in (1, 2)


@needs_gemv
@torch.no_grad()
@pytest.mark.parametrize("level", [2, 1], ids=["avx512", "avx2"])
@pytest.mark.parametrize("rows", [0, 1, 2, 3, 4, 5, 7, 8, 9, 11, 13, 32, 64, 70])
def test_gemv_computes_the_linear_as_exactly_as_mkl(rows, level, monkeypatch):
    """Every row count (the kernel takes x rows 2, 4 or 6 at a time, weight rows 8, 4, 3 or 2 at a time, then one by
    one), input widths that are no multiple of the vector width (masked loads), with and without a bias, the AVX-512 and
    the AVX2 code, float32 weights and int8 rows with a scale each (linear_int8): within 3x F.linear's own distance
    from the float64 product (16- or 8-lane partial sums; int8: F.linear on the dequantized rows). Without the
    software prefetch ("gemv-noprefetch"): the same bits."""
    if level > gemv.ISA:
        pytest.skip("this CPU has no AVX-512")
    monkeypatch.setattr(gemv, "ISA", level)
    g = torch.Generator().manual_seed(rows)
    for out_features, in_features in ((37, 19), (64, 1024), (9, 4096), (130, 33), (5, 1), (16, 8), (4, 0)):
        x = torch.randn(rows, in_features, generator=g)
        weight, bias = torch.randn(out_features, in_features, generator=g), torch.randn(out_features, generator=g)
        for b in (bias, None):
            exact = x.double() @ weight.double().T + (0 if b is None else b.double())
            got = gemv.linear(x, weight, b)
            assert got.shape == (rows, out_features) and got.dtype == torch.float32
            assert torch.equal(gemv.linear_noprefetch(x, weight, b), got)
            if rows:
                mkl = (F.linear(x, weight, b).double() - exact).abs().max().item()
                assert (got.double() - exact).abs().max().item() <= 3 * mkl + 1e-6   # no width: the bias exactly
            q = torch.randint(-127, 128, weight.shape, generator=g, dtype=torch.int8)   # [out, in]
            scale = torch.rand(out_features, generator=g) / 50                           # [out]
            exact = x.double() @ (q.double() * scale.double()[:, None]).T + (0 if b is None else b.double())
            got = gemv.linear_int8(x, q, scale, b)
            assert got.shape == (rows, out_features) and got.dtype == torch.float32
            if rows:
                mkl = (F.linear(x, q.float() * scale[:, None], b).double() - exact).abs().max().item()
                assert (got.double() - exact).abs().max().item() <= 3 * mkl + 1e-6
    x = torch.randn(3, 2, 40, generator=g)[:, :, ::2]                       # [3, 2, 20], not contiguous
    weight = torch.randn(20, 11, generator=g).T                             # [11, 20], not contiguous
    torch.testing.assert_close(gemv.linear(x, weight, None), F.linear(x, weight), rtol=1e-5, atol=1e-5)
    bias = torch.randn(22, generator=g)[::2]                                # [11], not contiguous
    torch.testing.assert_close(gemv.linear(x, weight, bias), F.linear(x, weight, bias), rtol=1e-5, atol=1e-5)
    with pytest.raises(RuntimeError, match="dtype|type"):                    # F.linear's own error, no bad read
        gemv.linear(torch.randn(2, 4), torch.randn(3, 4, dtype=torch.float64), None)
    for x, weight, b in ((torch.randn(2, 5), torch.randn(3, 4), None), (torch.randn(2, 4), torch.randn(3, 4),
                          torch.randn(2)), (torch.randn(4), torch.randn(3, 4, 1), None)):
        with pytest.raises(RuntimeError, match="shape|size|dim"):           # shapes that do not fit: F.linear's
            gemv.linear(x, weight, b)
    q, scale = torch.ones(3, 4, dtype=torch.int8), torch.ones(3)
    for x, q, scale in ((torch.randn(2, 5), q, scale), (torch.randn(2, 4), q, torch.ones(2)),
                        (torch.randn(2, 4), q[None], scale)):
        with pytest.raises(RuntimeError, match="shape|size|dim"):    # F.linear's on the dequantized rows
            gemv.linear_int8(x, q, scale, None)
    layer = KernelLinear(4, 3)
    layer.use({"1": "gemv"})
    with pytest.raises(RuntimeError, match="shape|size"):
        layer(torch.randn(1, 5))


@needs_gemv
@torch.no_grad()
def test_a_layer_runs_gemv_up_to_the_rows_it_is_set_for():
    torch.manual_seed(0)
    layer = KernelLinear(48, 80)
    layer.use({"1": "gemv", "2-8": "gemv"})
    for rows in (1, 5, 8, 9, 300):
        x = torch.randn(rows, 48)
        want = gemv.linear(x, layer.weight, layer.bias) if rows <= 8 else F.linear(x, layer.weight, layer.bias)
        assert torch.equal(layer(x), want)
    assert layer.kernels() == {"1": "gemv", "2-8": "gemv", "9-64": "mkl", "65-256": "mkl", "257+": "mkl"}


def test_gemv_forced_where_it_cannot_run_is_refused(monkeypatch):
    monkeypatch.setattr(gemv, "ISA", 0)
    for value in ("gemv", "fc1=gemv", "gemv-noprefetch", "lm_head=gemv-noprefetch"):
        monkeypatch.setenv(kernel_choice.ENV, value)
        with pytest.raises(ValueError, match="gemv kernel cannot run here"):
            kernel_choice.setting()
    monkeypatch.setattr(gemv, "_gemv", None)
    with pytest.raises(ValueError, match="not built at install: reinstall seq2seq-kit where a C compiler"):
        kernel_choice.setting()
    monkeypatch.setenv(kernel_choice.ENV, "fc1=onednn")
    assert kernel_choice.setting()[1] == {"fc1": dict.fromkeys(kernels.ROW_CLASSES, "onednn")}
    assert not set(kernels.GEMV) & set(kernel_choice.usable())
    t = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(9.0, 9.0, 9.0))      # no gemv timings
    assert kernel_choice.select(t, kernels.ELIGIBLE["fc1"])["1"] == "onednn"


def test_a_packed_weight_replaces_the_dense_one():
    model = small_model(tie_word_embeddings=False)
    count = model.num_parameters()
    model.set_kernels(ALL_PACKED)
    linears = [m for ms in model.kernel_linears().values() for m in ms]
    assert all(m.packed and m.weight.is_mkldnn for m in linears)
    assert model.num_parameters() == count                                   # no second copy kept
    assert all(isinstance(p, torch.nn.Parameter) for p in model.parameters())


def test_a_layer_runs_the_kernel_of_the_weight_it_reads():
    """`use` swaps the weight first: a step running meanwhile in another thread (an engine while the model is moved)
    must run the kernel of the weight it reads, packed or dense, not a flag set a moment later."""
    model = small_model(tie_word_embeddings=False)
    layer = model.decoder.layers[0].fc1
    x = torch.randn(3, layer.in_features)
    want = layer(x)
    layer.weight = torch.nn.Parameter(kernels.pack(layer.weight), requires_grad=False)   # as `use` does, first
    assert layer.packed
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)
    layer.weight = torch.nn.Parameter(layer.weight.to_dense(), requires_grad=False)
    assert not layer.packed
    torch.testing.assert_close(layer(x), want, rtol=1e-5, atol=1e-5)


def test_a_tied_lm_head_is_never_packed():
    model = small_model()
    model.set_kernels(ALL_PACKED)
    assert not model.lm_head.packed and model.lm_head.weight is model.shared.weight
    assert model.kernel_table()["lm_head"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn")
    assert model.kernel_table()["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")


def test_packed_models_save_quantize_and_cast_from_their_dense_values(tmp_path):
    model = small_model()
    want = model.checkpoint_tensors()
    ids = torch.randint(4, SMALL["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    tokens = model.generate(ids, num_beams=2, max_length=10)
    model.set_kernels(ALL_PACKED)
    got = model.checkpoint_tensors()
    assert got.keys() == want.keys() and all(torch.equal(got[k], want[k]) for k in want)
    assert model.generate(ids, num_beams=2, max_length=10).shape == tokens.shape
    model.save_pretrained(tmp_path)
    assert BartForConditionalGeneration.from_pretrained(tmp_path).checkpoint_tensors().keys() == want.keys()
    model.half()                                                             # casting unpacks first
    assert not any(m.packed for ms in model.kernel_linears().values() for m in ms)
    assert model.decoder.layers[0].fc1.weight.dtype == torch.float16
    packed_int8 = small_model()
    packed_int8.set_kernels(ALL_PACKED)
    assert packed_int8.quantize_int8().quantized


def test_a_packed_models_state_dict_saves_loads_and_copies(tmp_path):
    """torch cannot serialize, copy into or clone a packed (opaque oneDNN) weight: state_dict() gives the dense
    values, load_state_dict() takes dense ones into packed layers, copy.deepcopy() packs its copy."""
    import copy

    model = small_model(tie_word_embeddings=False)
    want = {k: v.clone() for k, v in model.state_dict().items()}
    ids = torch.randint(4, SMALL["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    model.set_kernels(ALL_PACKED)
    table, tokens = model.kernel_table(), model.generate(ids, num_beams=2, max_length=10)
    got = model.state_dict()
    assert got.keys() == want.keys() and all(not t.is_mkldnn and torch.equal(t, want[k]) for k, t in got.items())
    torch.save(got, tmp_path / "state.pt")
    other = small_model(tie_word_embeddings=False)
    with torch.no_grad():
        for p in other.parameters():
            p.add_(0.5)
    other.set_kernels(ALL_PACKED)
    other.load_state_dict(torch.load(tmp_path / "state.pt"))
    assert other.kernel_table() == table and torch.equal(other.generate(ids, num_beams=2, max_length=10), tokens)
    twin = copy.deepcopy(model)
    assert twin.kernel_table() == table and twin.encoder.layers[0].fc1.weight is not model.encoder.layers[0].fc1.weight
    assert torch.equal(twin.generate(ids, num_beams=2, max_length=10), tokens)
    assert all(torch.equal(t, want[k]) for k, t in twin.state_dict().items())


def test_a_packed_model_pickles_and_torch_saves_whole(tmp_path):
    """pickle.dumps(model) and torch.save(model) (multiprocessing, a saved object) raised NotImplementedError
    ("Cannot access storage of OpaqueTensorImpl") from inside torch: the pickled state holds the dense values and
    loading packs them again, with the same kernels and tokens."""
    import pickle

    model = small_model()
    ids = torch.randint(4, SMALL["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    model.set_kernels(ALL_PACKED)
    table, tokens = model.kernel_table(), model.generate(ids, num_beams=2, max_length=10)
    torch.save(model, tmp_path / "model.pt")
    for twin in (pickle.loads(pickle.dumps(model)), torch.load(tmp_path / "model.pt", weights_only=False)):
        assert twin.kernel_table() == table and twin.decoder.layers[0].fc1.packed
        assert twin.lm_head.weight is twin.shared.weight
        assert torch.equal(twin.generate(ids, num_beams=2, max_length=10), tokens)
    assert model.kernel_table() == table and torch.equal(model.generate(ids, num_beams=2, max_length=10), tokens)


def test_autocast_runs_packed_layers_as_f_linear_does():
    """Under torch.autocast("cpu", bfloat16) every layer runs autocast's F.linear on its dense values (a packed
    weight's oneDNN primitive takes no bfloat16 input): the same tokens as the unpacked model, no error."""
    ids = torch.randint(4, SMALL["vocab_size"], (2, 300), generator=torch.Generator().manual_seed(0))
    dense, packed = small_model(max_position_embeddings=320), small_model(max_position_embeddings=320)
    packed.set_kernels(ALL_PACKED)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want = dense.generate(ids, num_beams=2, max_new_tokens=8)
        assert torch.equal(packed.generate(ids, num_beams=2, max_new_tokens=8), want)
        assert packed(ids, None, ids[:, :5]).logits.dtype == torch.float32   # bf16 logits + float32 bias, as there


def test_autocast_logits_take_the_float32_bias_as_transformers(tmp_path):
    """Under bfloat16 autocast the LM head's bfloat16 logits plus the float32 final_logits_bias are float32, as
    transformers' `lm_head(h) + bias` (added in place, the sum was rounded to bfloat16: other scores and tokens)."""
    import transformers

    model = small_model()
    with torch.no_grad():
        model.final_logits_bias.normal_(0, 3, generator=torch.Generator().manual_seed(3))
    path = model.save_pretrained(tmp_path)
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    ids = torch.randint(4, SMALL["vocab_size"], (2, 12), generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_beams=2, max_new_tokens=8, output_scores=True, return_dict_in_generate=True)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = theirs.generate(ids, **kwargs), model.generate(ids, **kwargs)
    assert torch.equal(got.sequences, want.sequences)
    torch.testing.assert_close(torch.stack(got.scores), torch.stack(want.scores), atol=1e-4, rtol=0)


def test_a_move_that_changes_nothing_keeps_the_kernels():
    """model.to("cpu") / float() on a float32 CPU model (what pipeline(model=loaded, device="cpu") does) packs the
    layers again: the same kernels, bit-identical scores; a real cast still unpacks."""
    model = small_model()
    model.set_kernels(ALL_PACKED)
    table = model.kernel_table()
    ids = torch.randint(4, SMALL["vocab_size"], (2, 7), generator=torch.Generator().manual_seed(0))
    kwargs = dict(num_beams=2, max_length=10, return_dict_in_generate=True, output_scores=True)
    before = model.generate(ids, **kwargs)
    for move in (lambda m: m.to("cpu"), lambda m: m.float(), lambda m: m.to(torch.float32), lambda m: m.cpu()):
        move(model)
        assert model.kernel_table() == table
        after = model.generate(ids, **kwargs)
        assert all(torch.equal(a, b) for a, b in zip(before.scores, after.scores))
    model.to(torch.bfloat16)
    assert not any(m.packed for ms in model.kernel_linears().values() for m in ms)


def test_unknown_kernels_and_kinds_are_refused():
    model = small_model()
    with pytest.raises(ValueError, match="unknown kernel or row class"):
        model.set_kernels({"fc1": {"1": "cublas"}})
    with pytest.raises(ValueError, match="unknown layer kind"):
        model.set_kernels({"fc3": {"1": "mkl"}})


# ---- the choice --------------------------------------------------------------------------------------------------

def timing(mkl, onednn, packed, mkl_t=(99.0, 99.0, 99.0), gemv=(99.0, 99.0, 99.0), gemv_np=(99.0, 99.0, 99.0)):
    """{row class: {kernel: ms}} from (1, 2-8, 9-64) tuples; 65-256 and 257+ take 2x and 8x the 9-64 times. The
    kernels timed at each row class only (gemv's where they can run, up to 64 rows), as time_layer gives them."""
    by_kernel = {"mkl": mkl, "mkl-t": mkl_t, "onednn": onednn, "onednn-packed": packed, "gemv": gemv,
                 "gemv-noprefetch": gemv_np}
    return {c: {k: (*t, 2 * t[2], 8 * t[2])[i] for k, t in by_kernel.items() if k in kernel_choice.timed(c)}
            for i, c in enumerate(kernels.ROW_CLASSES)}


def everywhere(*names):
    return dict.fromkeys(kernels.ROW_CLASSES, names)


def test_select_takes_the_fastest_eligible_kernel_per_row_class():
    t = timing(mkl=(1.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(2.5, 3.5, 9.0), mkl_t=(3.0, 2.5, 30.0))
    assert kernel_choice.select(t, everywhere(*kernels.KERNELS)) == {"1": "mkl", "2-8": "mkl-t", "9-64": "onednn",
                                                                              "65-256": "onednn", "257+": "onednn"}
    assert kernel_choice.select(t, everywhere("mkl")) == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
    faster_packed = timing(mkl=(1.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(1.1, 1.0, 4.0))
    assert kernel_choice.select(faster_packed, everywhere(*kernels.KERNELS)) == \
        dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert kernel_choice.select(faster_packed, everywhere(*kernels.KERNELS), packable=False)["2-8"] == "onednn"
    one_row_only = {"1": ("mkl", "onednn-packed")} | dict.fromkeys(("2-8", "9-64", "65-256", "257+"), ("mkl",))
    assert kernel_choice.select(faster_packed, one_row_only) == dict.fromkeys(kernels.ROW_CLASSES, "mkl")


@needs_gemv
def test_select_takes_gemv_where_it_is_fastest_and_never_beyond_64_rows():
    t = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(2.5, 3.5, 9.0), gemv=(1.0, 2.0, 9.5))
    assert kernel_choice.select(t, kernels.ELIGIBLE["fc1"]) == {"1": "gemv", "2-8": "gemv", "9-64": "onednn",
                                                                 "65-256": "onednn", "257+": "onednn"}
    fastest_everywhere = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(2.5, 3.5, 9.0),
                                gemv=(1.0, 1.0, 1.0))
    assert kernel_choice.select(fastest_everywhere, kernels.ELIGIBLE["fc1"])["65-256"] == "onednn"
    assert kernel_choice.select(fastest_everywhere, kernels.ELIGIBLE["encoder_fc1"])["1"] != "gemv"
    hardware_prefetch = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(2.5, 3.5, 9.0),
                               gemv=(1.0, 2.0, 9.5), gemv_np=(0.9, 2.1, 9.4))
    assert kernel_choice.select(hardware_prefetch, kernels.ELIGIBLE["fc1"]) == {
        "1": "gemv-noprefetch", "2-8": "gemv", "9-64": "onednn", "65-256": "onednn", "257+": "onednn"}
    assert kernel_choice.select(hardware_prefetch, kernels.ELIGIBLE["cross_kv"])["1"] == "onednn-packed"
    beams_too = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(2.5, 3.5, 9.0), gemv=(1.0, 2.0, 9.5),
                       gemv_np=(1.1, 1.9, 9.4))                  # the same sums: eligible wherever gemv is
    assert kernel_choice.select(beams_too, kernels.ELIGIBLE["fc1"])["2-8"] == "gemv-noprefetch"


@needs_gemv
def test_a_decode_steps_weight_is_packed_for_the_rows_decode_steps_run(monkeypatch, tmp_path):
    """The packed weight's lead at 65+ rows (large batches, the teacher-forced forward) does not outweigh gemv's at
    the decode step's row counts (1, 2-8, 9-64): the decoder's kinds stay dense, the encoder's are packed."""
    t = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(1.3, 1.0, 4.0), gemv=(1.0, 1.0, 4.2))
    for c in ("65-256", "257+"):
        t[c]["onednn-packed"] /= 2                       # packed 2x dense oneDNN at many rows
    assert kernel_choice.select(t, kernels.ELIGIBLE["fc1"]) == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    dense = {"1": "gemv", "2-8": "gemv", "9-64": "gemv", "65-256": "onednn", "257+": "onednn"}
    assert kernel_choice.select(t, kernels.ELIGIBLE["fc1"], deciding=kernels.DECIDING["fc1"]) == dense
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: t)
    table = kernel_choice.choose(small_model())
    assert all(table[kind] == dense for kind in ("self_out", "fc1", "fc2", "lm_head"))
    assert table["self_qkv"] == dense | {"65-256": "mkl", "257+": "mkl"}       # dense oneDNN not eligible there
    assert all(table[kind] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed") for kind in kernels.ENCODER_KINDS)


def test_the_eligibility_table_covers_every_kind_and_row_class():
    assert set(kernels.ELIGIBLE) == set(kernels.KINDS)
    assert all(set(by_class) == set(kernels.ROW_CLASSES) and all("mkl" in k and set(k) <= set(kernels.KERNELS)
                                                                 for k in by_class.values())
               for by_class in kernels.ELIGIBLE.values())
    gemvs = ("gemv", "gemv-noprefetch")
    few, many = ("mkl", "mkl-t", "onednn-packed", *gemvs), ("mkl", "mkl-t", "onednn-packed")
    assert kernels.ELIGIBLE["self_qkv"] == {"1": ("mkl", "mkl-t", "onednn", "onednn-packed", *gemvs), "2-8": few,
                                            "9-64": few, "65-256": many, "257+": many}   # beams: oneDNN packed only
    assert kernels.ELIGIBLE["fc1"]["1"] == kernels.ELIGIBLE["fc1"]["9-64"] == kernels.KERNELS
    assert not set(gemvs) & set(kernels.ELIGIBLE["fc1"]["65-256"])                   # no gemv past 64 rows
    assert all(not set(gemvs) & set(k) for kind in kernels.ENCODER_KINDS for k in kernels.ELIGIBLE[kind].values())


def test_the_environment_variable_forces_the_choice(monkeypatch):
    model = small_model()
    monkeypatch.setenv(kernel_choice.ENV, "mkl")
    assert kernel_choice.choose(model) == {k: dict.fromkeys(kernels.ROW_CLASSES, "mkl") for k in kernels.KINDS}
    monkeypatch.setenv(kernel_choice.ENV, "onednn")
    table = kernel_choice.choose(model)
    assert table["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn")
    assert table["self_qkv"] == {"1": "onednn", "2-8": "mkl", "9-64": "mkl", "65-256": "mkl", "257+": "mkl"}
    assert table["encoder_qkv"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")   # ELIGIBLE: oneDNN packed only
    monkeypatch.setenv(kernel_choice.ENV, "default")
    assert kernel_choice.choose(model) == kernels.DEFAULT
    monkeypatch.setenv(kernel_choice.ENV, "fc1=onednn-packed, lm_head=onednn")
    assert kernel_choice.choose(model) == {"fc1": dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed"),
                                           "lm_head": dict.fromkeys(kernels.ROW_CLASSES, "onednn")}
    monkeypatch.setenv(kernel_choice.ENV, "fc1=fast")
    with pytest.raises(ValueError, match="SEQ2SEQ_KIT_CPU_KERNELS=.*KIND=KERNEL"):
        kernel_choice.choose(model)
    with pytest.raises(ValueError, match="SEQ2SEQ_KIT_CPU_KERNELS=.*KIND=KERNEL"):
        kernel_choice.choose(model.half())                                  # malformed: refused on any model
    monkeypatch.setenv(kernel_choice.ENV, "fc1=onednn")
    assert kernel_choice.choose(model.half()) is None                      # float16: F.linear, nothing to choose


def test_from_pretrained_applies_the_forced_choice(checkpoint, monkeypatch):
    monkeypatch.setenv(kernel_choice.ENV, "fc2=onednn")
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    assert model.kernel_table()["fc2"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn")
    assert model.kernel_table()["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
    monkeypatch.setenv(kernel_choice.ENV, "fc2=fast")
    for dtype in ("float32", "int8", "bfloat16"):       # int8 and bfloat16 use no table but refuse the typo too
        with pytest.raises(ValueError, match="SEQ2SEQ_KIT_CPU_KERNELS='fc2=fast'"):
            BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype=dtype)


def test_measurement_is_cached_per_machine_and_reused(monkeypatch, tmp_path, caplog):
    """Each new weight shape is timed once per machine, saying so at INFO (the CLI's "seq2seq-kit: ..." line: the
    first load's wait explained); a warm start measures nothing and says nothing."""
    caplog.set_level(logging.INFO, logger="seq2seq_kit.kernel_choice")
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    calls = []
    fast_packed = timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(1.0, 1.0, 4.0))

    def fake_time_layer(layer):
        calls.append(kernel_choice.shape_key(layer))
        return fast_packed

    monkeypatch.setattr(kernel_choice, "time_layer", fake_time_layer)
    model = small_model()
    table = kernel_choice.choose(model)
    assert sorted(calls) == sorted({"96x32-nobias", "96x32", "32x32", "64x32", "32x64"})   # each shape once
    assert table["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert table["self_qkv"] == table["encoder_fc1"] == table["cross_kv"] == \
        dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert table["lm_head"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn")    # tied: never packed
    [cached] = (tmp_path / "seq2seq_kit" / "kernels").iterdir()
    assert json.loads(cached.read_text())["cpu"] == kernel_choice.cpu_name()
    assert caplog.messages == [f"timing the CPU matmul kernels on 5 weight shapes of this model, once per machine "
                               f"(kept in {cached})"]
    calls.clear()
    caplog.clear()
    assert kernel_choice.choose(small_model()) == table and calls == []      # a warm start measures nothing
    assert caplog.messages == []
    assert kernel_choice.choose(small_model(decoder_ffn_dim=48)) and sorted(calls) == ["32x48", "48x32"]
    assert caplog.messages == [f"timing the CPU matmul kernels on 2 weight shapes of this model, once per machine "
                               f"(kept in {cached})"]


def test_timings_taken_on_a_busy_machine_are_said_not_kept(monkeypatch, tmp_path, caplog):
    """Timings taken while the machine is busy are not saved (add_timings); the INFO line said "kept in PATH"
    anyway, and each load timed again. It says they serve this load only, and so does a second line when the
    machine became busy during the timing."""
    caplog.set_level(logging.INFO, logger="seq2seq_kit.kernel_choice")
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((3, 3, 3), (2, 2, 2), (1, 1, 1)))
    busy = ("timing the CPU matmul kernels on 5 weight shapes of this model, once per machine (the machine is "
            "busy, so these timings serve this load only and are not kept: the next load on a quiet machine times "
            "them again)")
    monkeypatch.setattr(kernel_choice, "busy", lambda: 64.0)
    for _ in range(2):
        caplog.clear()
        kernel_choice.choose(small_model())
        assert caplog.messages == [busy] and not (tmp_path / "seq2seq_kit").exists()
    loads = iter([0.0, 64.0])                                     # quiet before the timing, busy after it
    monkeypatch.setattr(kernel_choice, "busy", lambda: next(loads, 64.0))
    caplog.clear()
    kernel_choice.choose(small_model())
    assert caplog.messages[1] == ("the machine became busy while the kernels were timed, so these timings serve "
                                  "this load only and are not kept: the next load on a quiet machine times them "
                                  "again")
    assert caplog.messages[0].endswith(f"(kept in {kernel_choice.cache_path()})")
    assert not kernel_choice.cache_path().exists()


def test_timings_a_read_only_cache_cannot_keep_serve_the_process_and_say_so(monkeypatch, tmp_path, caplog):
    """A cache folder that cannot be written (a read-only home in a container): the INFO line said "kept in PATH",
    nothing was kept, and every load in the process timed the kernels again (~10 s for distilbart). A second line
    says so, and the process's later loads take its timings."""
    caplog.set_level(logging.INFO, logger="seq2seq_kit.kernel_choice")
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    monkeypatch.setattr(kernel_choice, "UNWRITTEN", {})
    timed = []
    monkeypatch.setattr(kernel_choice, "time_layer",
                        lambda layer: timed.append(layer) or timing((3, 3, 3), (2, 2, 2), (1, 1, 1)))

    def read_only(path, *args, **kwargs):
        raise PermissionError(13, "Read-only file system", str(path))

    monkeypatch.setattr(kernel_choice, "replace_json", read_only)
    first = kernel_choice.choose(small_model())
    assert caplog.messages[1] == (f"{kernel_choice.cache_path()} cannot be written, so these timings serve this "
                                  "process only: a new process times them again")
    assert len(timed) == 5 and not kernel_choice.cache_path().exists()
    caplog.clear()
    assert kernel_choice.choose(small_model()) == first and len(timed) == 5 and caplog.messages == []


def test_timings_another_process_saved_while_this_one_measured_are_kept(monkeypatch, tmp_path):
    """Two processes loading models of different shapes at once: each read the cache, measured, and wrote back its
    own copy, so the last writer dropped the other's shapes (measured again at every load after)."""
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    t = timing((3, 3, 3), (2, 2, 2), (1, 1, 1))
    saved = []

    def time_layer(layer):            # meanwhile another process saves its model's shape
        if not saved:
            saved.append(1)
            kernel_choice.save_timings(kernel_choice.cache_path(), {"48x48": t})
        return t

    monkeypatch.setattr(kernel_choice, "time_layer", time_layer)
    kernel_choice.choose(small_model())
    cached = json.loads(kernel_choice.cache_path().read_text())["timings"]
    assert sorted(cached) == sorted({"48x48", "96x32-nobias", "96x32", "32x32", "64x32", "32x64"})


def test_writers_racing_on_one_json_file_each_write_their_own_temporary_file(tmp_path, monkeypatch):
    """replace_json wrote every file through PATH.tmp: a second writer between the first's write and rename
    replaced the first's temporary file (its rename then failed, or a reader saw a torn file)."""
    from seq2seq_kit import jsonfile

    path, rename = tmp_path / "f.json", os.replace
    raced = []

    def replace(src, dst):
        if not raced:
            raced.append(1)
            jsonfile.replace_json(path, {"writer": 2})      # another writer, start to end, before this rename
        rename(src, dst)

    monkeypatch.setattr(jsonfile.os, "replace", replace)
    jsonfile.replace_json(path, {"writer": 1, "long": "x" * 10000})
    assert json.loads(path.read_text()) == {"writer": 1, "long": "x" * 10000}
    assert os.listdir(tmp_path) == ["f.json"]                      # no temporary file left behind
    monkeypatch.setattr(jsonfile.os, "replace", lambda src, dst: (_ for _ in ()).throw(OSError(13, "denied")))
    with pytest.raises(OSError):
        jsonfile.replace_json(path, {"writer": 3})
    assert os.listdir(tmp_path) == ["f.json"]                      # a failed rename removes its temporary file


@pytest.mark.parametrize("name, lm_head", [("marian-separate", "onednn"),
                                             ("marian-separate-untied", "onednn-packed")])
def test_measured_choice_on_separate_vocabularies(checkpoint, monkeypatch, tmp_path, name, lm_head):
    """A Marian with its own decoder embedding: the LM head tied to it is never packed; an untied one may be."""
    from seq2seq_kit import AutoModelForSeq2SeqLM

    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "time_layer",
                        lambda layer: timing(mkl=(3.0, 9.0, 20.0), onednn=(2.0, 3.0, 8.0), packed=(1.0, 1.0, 4.0)))
    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint(name))
    assert model.kernel_table()["lm_head"] == dict.fromkeys(kernels.ROW_CLASSES, lm_head)


def test_timings_from_a_busy_machine_are_not_cached(monkeypatch, tmp_path):
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 1000.0)
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    assert kernel_choice.choose(small_model())["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
    assert not (tmp_path / "seq2seq_kit").exists()


@pytest.mark.parametrize("timings", [[], None, "x", {"s": None}, {"s": {"1": {}}}])
@pytest.mark.parametrize("time", [None, "3", 0, -1.0, True])
def test_a_malformed_timings_file_is_measured_again(monkeypatch, tmp_path, timings, time):
    """A cache file of valid JSON but another shape (or a time that is no positive number) reads as no cache: the
    layers are measured again, where loading failed in select() until the file was deleted."""
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((3, 3, 3), (2, 2, 2), (1, 1, 1)))
    model = small_model()
    bad = {shape: {c: {k: time for k in kernels.KERNELS} for c in kernel_choice.PROBE_ROWS}
           for shape in {kernel_choice.shape_key(m) for ms in model.kernel_linears().values() for m in ms}}
    for content in (timings, bad):
        path = kernel_choice.cache_path()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"timings": content}))
        assert kernel_choice.choose(model)["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")


def test_no_cache_folder_means_measuring_at_each_load(monkeypatch, caplog):
    """No XDG_CACHE_HOME, no HOME, a user without a passwd entry (a container's uid): Path.home() raises
    RuntimeError, which failed the load; the kernels are measured, and nothing is cached."""
    import pwd

    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.delenv("XDG_CACHE_HOME", raising=False)
    monkeypatch.delenv("HOME", raising=False)
    monkeypatch.setattr(pwd, "getpwuid", lambda uid: (_ for _ in ()).throw(KeyError(f"uid not found: {uid}")))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.0)
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((3, 3, 3), (2, 2, 2), (1, 1, 1)))
    assert kernel_choice.cache_path() is None
    caplog.set_level(logging.INFO, logger="seq2seq_kit.kernel_choice")
    assert kernel_choice.choose(small_model())["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert caplog.messages[-1].endswith("once per machine (no cache folder: at each load)")


def test_the_timings_cache_is_kept_per_gemv_build(monkeypatch):
    """A rebuilt gemv (another compiled module) is timed again: its timings live in a file of their own."""
    path = kernel_choice.cache_path()
    assert f"gemv-{gemv.build()}" in path.name
    monkeypatch.setattr(gemv, "build", lambda: "rebuilt")
    assert kernel_choice.cache_path() != path and kernel_choice.cache_path().parent == path.parent


def test_the_timings_cache_is_kept_per_way_of_timing(monkeypatch):
    """Timings taken another way (one cold call per candidate, before the streams) are not reused: another file."""
    path = kernel_choice.cache_path()
    assert path.name.endswith(f"-{kernel_choice.METHOD}.json")
    monkeypatch.setattr(kernel_choice, "METHOD", "cold")
    assert kernel_choice.cache_path() != path and kernel_choice.cache_path().parent == path.parent


def test_the_timings_cache_is_kept_per_gemv_code(monkeypatch):
    """Timings taken with the AVX-512 code are not reused where gemv.ISA runs the AVX2 code (set by tests and
    benchmarks/engines.py): another file."""
    path = kernel_choice.cache_path()
    assert f"-isa-{gemv.ISA}" in path.name
    monkeypatch.setattr(gemv, "ISA", 3 - gemv.ISA if gemv.ISA else 1)
    assert kernel_choice.cache_path() != path and kernel_choice.cache_path().parent == path.parent


def test_real_timings_have_every_candidate():
    model = small_model()
    t = kernel_choice.time_layer(model.decoder.layers[0].fc1)
    assert set(t) == set(kernels.ROW_CLASSES)
    assert all(set(v) == set(kernel_choice.timed(c)) and all(ms > 0 for ms in v.values()) for c, v in t.items())
    for row_class in kernels.ROW_CLASSES:           # what some kind may run there: gemv's up to 64 rows only
        eligible = {k for by_class in kernels.ELIGIBLE.values() for k in by_class[row_class]}
        assert set(kernel_choice.timed(row_class)) == eligible & set(kernel_choice.usable())
    assert set(kernel_choice.timed("65-256")) == set(kernel_choice.timed("257+")) == set(kernels.LIBRARY)
    assert set(kernel_choice.timed("1")) == set(kernel_choice.usable())


def test_a_decode_steps_row_counts_are_timed_over_a_stream_of_copies(monkeypatch):
    """The few-row classes call each kernel on every copy of the weight in turn (copies: twice the last-level cache
    together, at most MAX_COPIES), and report the time per call; more rows one call per round. Counted on mkl's
    calls (F.linear), a warm-up round and ROUNDS[class] rounds each."""
    layer = small_model().decoder.layers[0].fc1
    size = layer.weight.numel() * 4
    monkeypatch.setattr(kernel_choice, "last_level_cache_bytes", lambda: size * 5 // 4)       # 2.5 weights: 3 copies
    stream = kernel_choice.copies(layer.weight.detach())
    assert len(stream) == 3 and stream[0].data_ptr() == layer.weight.data_ptr()
    assert all(torch.equal(w, layer.weight) and w.data_ptr() != layer.weight.data_ptr() for w in stream[1:])
    calls, evictions = [], []
    real = F.linear
    monkeypatch.setattr(kernel_choice.F, "linear", lambda x, w, b=None: calls.append(x.shape[0]) or real(x, w, b))
    monkeypatch.setattr(kernel_choice, "evict", evictions.append)
    kernel_choice.time_layer(layer)
    for row_class, rows in kernel_choice.PROBE_ROWS.items():
        per_round = len(stream) if row_class in kernel_choice.STREAMED else 1
        assert calls.count(rows) == per_round * (kernel_choice.ROUNDS[row_class] + 1), row_class
    # a stream of copies leaves its first copies out of the caches itself: only the single cold calls evict first
    cold_runs = sum(kernel_choice.ROUNDS[c] + 1 for c in kernel_choice.PROBE_ROWS if c not in kernel_choice.STREAMED)
    assert len(evictions) == cold_runs * len(kernels.LIBRARY)       # gemv's are not timed beyond 64 rows
    assert kernel_choice.STREAMED == ("1", "2-8", "9-64")
    monkeypatch.setattr(kernel_choice, "last_level_cache_bytes", lambda: 1 << 30)
    assert len(kernel_choice.copies(layer.weight.detach())) == kernel_choice.MAX_COPIES
    monkeypatch.setattr(kernel_choice, "last_level_cache_bytes", lambda: 16)
    assert len(kernel_choice.copies(layer.weight.detach())) == 1                       # larger than the caches
    evictions.clear()
    kernel_choice.time_layer(layer)              # a "stream" of one weight: each run evicts first, as cold calls do
    assert len(evictions) == sum((kernel_choice.ROUNDS[c] + 1) * len(kernel_choice.timed(c))
                                 for c in kernel_choice.PROBE_ROWS)


def test_the_attention_is_timed_over_a_stream_of_copies_of_the_keys_and_values(monkeypatch):
    """Each candidate runs on every (keys, values) copy in turn, a warm-up round and 3 rounds per row class, with
    nothing evicted first (the stream does it); torch's and the own kernel alike."""
    heads, width = 4, 8
    size = 2 * heads * kernel_choice.ATTENTION_SOURCE * width * 4                       # keys and values, float32
    monkeypatch.setattr(kernel_choice, "last_level_cache_bytes", lambda: size * 5 // 4)     # 3 copies
    monkeypatch.setattr(kernel_choice, "evict", lambda scratch: pytest.fail("evicted before a stream"))
    seen = {"sdpa": [], "own": []}
    sdpa = F.scaled_dot_product_attention
    attend = attention.attend if attention.available() else sdpa          # (the choice times "own" only where it runs)
    monkeypatch.setattr(kernel_choice.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen["sdpa"].append((q.shape[2], k.data_ptr())) or sdpa(q, k, v, **kw))
    monkeypatch.setattr(kernel_choice.attention, "attend",
                        lambda q, k, v, **kw: seen["own"].append((q.shape[2], k.data_ptr())) or attend(q, k, v, **kw))
    timings = kernel_choice.time_attention(heads, width)
    assert set(timings) == set(kernel_choice.ATTENTION_ROWS)
    for calls in seen.values():
        for rows in kernel_choice.ATTENTION_ROWS.values():
            keys = [k for r, k in calls if r == rows]
            assert len(keys) == 3 * (3 + 1) and len(set(keys)) == 3


def test_the_time_per_call_is_a_rounds_time_over_its_calls(monkeypatch):
    ticks = iter(range(100))
    monkeypatch.setattr(kernel_choice.time, "perf_counter", lambda: 10.0 * next(ticks))  # every run takes 10 s
    scratch = torch.ones(4)
    assert kernel_choice.fastest({"a": lambda x: None}, torch.ones(1), 2, scratch, calls=4) == {"a": 2500.0}


def test_cpu_name_identifies_the_model_and_isa():
    name = kernel_choice.cpu_name()
    assert name.endswith(")") and torch.backends.cpu.get_cpu_capability() in name


def test_inspect_prints_the_cpu_and_the_kernels(checkpoint, capsys, monkeypatch):
    from seq2seq_kit.cli import main

    monkeypatch.setenv(kernel_choice.ENV, "fc1=onednn-packed")
    assert main(["inspect", str(checkpoint("tiny")), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)["cpu_kernels"]
    assert info["cpu"] == kernel_choice.cpu_name() and info["gemv"] == kernel_choice.gemv_status()
    assert info["layers"]["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert info["attention"] == "sdpa"                                      # forced: torch's attention
    assert main(["inspect", str(checkpoint("tiny"))]) == 0
    out = capsys.readouterr().out
    assert f"kernels      {kernel_choice.cpu_name()}: self_qkv mkl; " in out
    assert f"; decode-step attention sdpa; greedy LM head full (gemv: {kernel_choice.gemv_status()})\n" in out


def test_gemv_status_says_why_it_cannot_run(monkeypatch):
    monkeypatch.setattr(gemv, "ISA", 1)
    assert kernel_choice.gemv_status() == "AVX2"
    monkeypatch.setattr(gemv, "ISA", 0)
    assert kernel_choice.gemv_status() == "cannot run (the CPU lacks AVX2 and FMA)"
    monkeypatch.setattr(gemv, "_gemv", None)
    assert kernel_choice.gemv_status() == "not built (no C compiler with OpenMP at install)"


# ---- token parity of the packed weights and of mkl-t (the suite's other tests run oneDNN on dense weights) ------

PACKED_CASES = [   # test_generation's MATRIX rows: greedy, beams with near-ties and early EOS, a padded batch
    ("tiny-eos", 3, dict(max_length=30, forced_eos_token_id=None)),
    ("tiny-eos", 3, dict(num_beams=4, early_stopping="never", min_length=10, max_new_tokens=25,
                         forced_eos_token_id=None)),
    ("tiny-eos", 1, dict(num_beams=6, length_penalty=0.5, early_stopping="never", num_return_sequences=3,
                         min_new_tokens=4, max_new_tokens=20, forced_eos_token_id=None)),
    ("distilbart", 1, dict(num_beams=1, min_length=0, max_new_tokens=12)),
    ("distilbart", 2, dict(min_length=0, max_new_tokens=12)),                # the checkpoint's beam 4
    ("tiny-eos", 17, dict(num_beams=4, early_stopping="never", min_length=10, max_new_tokens=25,
                          forced_eos_token_id=None)),                        # 68 rows: the 65-256 row class
    ("distilbart", 20, dict(min_length=0, max_new_tokens=12)),               # 80 rows
]


def lengths(name: str, batch: int) -> tuple[int, ...]:
    first = (40, 28, 12) if name == "distilbart" else (12, 9, 5)
    return first[:batch] if batch <= 3 else first + tuple(5 + 7 * i % 9 for i in range(batch - 3))


@pytest.fixture(scope="module")
def forced(checkpoint, tiny_eos_path):
    """forced(name, kernel) -> the checkpoint loaded with SEQ2SEQ_KIT_CPU_KERNELS=kernel, once per module."""
    loaded = {}

    def get(name: str, kernel: str):
        if (name, kernel) not in loaded:
            with pytest.MonkeyPatch.context() as mp:
                mp.setenv(kernel_choice.ENV, kernel)
                path = tiny_eos_path if name == "tiny-eos" else checkpoint(name)
                loaded[name, kernel] = BartForConditionalGeneration.from_pretrained(path)
        return loaded[name, kernel]

    return get


@pytest.mark.parametrize("kernel", ["onednn-packed", "mkl-t", "onednn",
                                    pytest.param("gemv", marks=needs_gemv)])
@pytest.mark.parametrize("name,batch,kwargs", PACKED_CASES, ids=[f"{n}-b{b}" for n, b, _ in PACKED_CASES])
def test_eligible_kernels_keep_token_parity(pair, forced, name, batch, kwargs, kernel):
    """The suite's other tests run oneDNN on dense weights (conftest.py) with at most 64 rows, and MKL for the kinds
    allowed oneDNN packed only (the encoder's, the beams' self-attention qkv_proj); these cases, the packed weights
    (every kind's), MKL on the transposed problem (self_qkv included: ELIGIBLE allows mkl-t everywhere), and all
    three at 68 and 80 rows (the 65-256 row class: beams of a batch) and over 257 (a padded batch's sources through
    the encoder). Tokens equal; scores as far from float64 arithmetic as transformers' own float32 scores are,
    within 3x (models/kernels.py's ELIGIBLE). At distilbart's width transformers' own distance is 1.8-2.3e-4, so a
    fixed 1e-4 failed MKL-transposed on an Intel Xeon (family 6 model 167) at 0.9-1.2x transformers' distance."""
    from test_generation import ATOL, assert_parity, inputs, run_both

    hf, _ = pair(name)
    ours = forced(name, kernel)
    table = ours.kernel_table()
    if kernel == "onednn-packed":
        assert all(table[kind] == dict.fromkeys(kernels.ROW_CLASSES, kernel) for kind in kernels.KINDS
                   if kind != "lm_head")                                     # lm_head: tied, never packed
    elif kernel == "gemv":                                          # up to 64 rows, the decoder step's kinds
        assert table["fc1"] == table["self_qkv"] == {"1": kernel, "2-8": kernel, "9-64": kernel, "65-256": "mkl",
                                                     "257+": "mkl"}
        assert table["encoder_fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
        assert ours.step_attention() == ("own" if attention.available() else "sdpa")   # models/attention.py too
    else:
        assert table["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, kernel)
        beams = "mkl-t" if kernel == "mkl-t" else "mkl"            # self_qkv: dense oneDNN for one row only
        assert table["self_qkv"] == {"1": kernel} | dict.fromkeys(("2-8", "9-64", "65-256", "257+"), beams)
        assert table["encoder_fc1"] == dict.fromkeys(kernels.ROW_CLASSES, beams)   # encoder: oneDNN packed only
    ids, mask = inputs(hf.config.vocab_size, hf.config.pad_token_id, lengths(name, batch))
    theirs, mine = run_both(hf, ours, ids, mask, **kwargs)
    exact = float64_run(hf, ids, mask, **kwargs)
    own = max(ATOL / 2, distance(theirs, exact))              # transformers' float32 rounding on this call
    if not math.isfinite(own) and kernel != "onednn-packed":  # a score finite in float64 only: no scale to go by
        return assert_parity(theirs, mine)
    assert distance(mine, exact) <= 3 * own                   # ours: of the same order (measured: 0.9-1.9x)
    assert_parity(theirs, mine, atol=4 * own)                 # so at most 4x that from transformers': tokens equal


@torch.no_grad()
def float64_run(hf, ids: torch.Tensor, mask: torch.Tensor, **kwargs):
    """The same generate call on a float64 copy of transformers' model: scores without float32 rounding."""
    import copy

    kwargs = dict(kwargs, return_dict_in_generate=True, output_scores=True)
    return copy.deepcopy(hf).double().generate(ids, attention_mask=mask, **kwargs)


def distance(run, exact) -> float:
    """The largest difference of a run's step scores from the float64 run's (the same tokens: decisive logits), in
    the rows the outputs' tokens were chosen from: every row without beams; with beams, the rows beam_indices names
    (the same in both runs). A beam off those paths may hold another hypothesis in the two runs where two beams
    nearly tie and their order flips within rounding, which changes no output: seen on an AMD EPYC Zen 3 (family 25
    model 1, AVX2), oneDNN packed, distilbart beam 4: a batch's 3rd and 4th candidates 1.0e-5 apart in float64."""
    assert torch.equal(run.sequences, exact.sequences)
    if getattr(exact, "beam_indices", None) is not None:
        assert torch.equal(run.beam_indices, exact.beam_indices)
    rows = [path_rows(exact, t) for t in range(len(exact.scores))]
    gaps = [(a.double()[r] - b[r])[b[r].isfinite()].abs() for a, b, r in zip(run.scores, exact.scores, rows)]
    return max(g.max().item() for g in gaps if g.numel())


def path_rows(run, step: int) -> torch.Tensor:
    """The rows of scores[step] the outputs' tokens were chosen from: every row without beams; with beams, the rows
    beam_indices names at that step (none past the longest output)."""
    paths = getattr(run, "beam_indices", None)
    if paths is None:
        return torch.arange(len(run.scores[step]))
    rows = paths[:, step] if step < paths.shape[1] else paths.new_empty(0)
    return rows[rows >= 0].unique()


def test_the_c_kernels_write_on_their_inputs_device_not_torchs_default():
    """Under torch.set_default_device / `with torch.device(...)` (here "meta"), the C kernels' outputs on CPU inputs
    are CPU tensors, as F.linear's and SDPA's: they were allocated on the default device, and the C code wrote
    through a meta tensor's null pointer (SIGSEGV; a CUDA default device on a GPU machine alike). An int8 layer's
    output stays float32 past 128 rows under torch.set_default_dtype(torch.float64) (it was float64 there). Run in
    a child process, so that a regression fails this test instead of killing the suite."""
    import subprocess
    import sys

    code = """
import torch
from seq2seq_kit.models import attention, gemv
from seq2seq_kit.models.logit_screen import LogitScreen
from seq2seq_kit.models.quantize import Int8Linear
w, x, q, k = torch.randn(8, 16), torch.randn(2, 16), torch.randn(1, 2, 1, 8), torch.randn(1, 2, 5, 8)
int8 = Int8Linear(torch.nn.Linear(16, 8))
screen = LogitScreen.of(torch.randn(50, 16))
with torch.device("meta"):
    outs = [gemv.linear(x, w, None), attention.attend(q, k, k), int8(torch.randn(300, 16, device="cpu")),
            screen.screen(torch.randn(1, 16, device="cpu"), torch.randn(50, 16, device="cpu"), None).upper]
torch.set_default_dtype(torch.float64)
outs.append(int8(torch.randn(300, 16, dtype=torch.float32)))
print([(o.device.type, o.dtype) for o in outs])
"""
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == str([("cpu", torch.float32)] * 5)


# ---- exact decisions (no timing) -------------------------------------------------------------------------------

def test_select_keeps_the_dense_kernels_when_packing_only_ties():
    """The packed weight is taken only where its score beats the best dense kernel's, not where it ties."""
    t = timing(mkl=(1.0, 1.0, 1.0), onednn=(2.0, 2.0, 2.0), packed=(1.0, 1.0, 1.0))
    assert kernel_choice.select(t, everywhere(*kernels.KERNELS)) == dict.fromkeys(kernels.ROW_CLASSES, "mkl")


def test_the_attention_is_own_only_where_it_is_faster(monkeypatch, tmp_path):
    if not attention.available():
        pytest.skip("seq2seq_kit's attention kernel does not run here")
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 1000.0)               # nothing cached between the cases
    for own, want in ((1.0, "sdpa"), (0.99, "own"), (1.01, "sdpa")):
        monkeypatch.setattr(kernel_choice, "time_attention",
                            lambda heads, width, own=own: {c: {"sdpa": 1.0, "own": own} for c in ("1", "2-8")})
        assert kernel_choice.choose_attention(small_model()) == want


@needs_gemv
def test_the_greedy_screen_follows_the_lm_heads_forced_kernel(monkeypatch):
    model = small_model()
    for forced, want in (("measure", True), ("gemv", True), ("lm_head=gemv", True), ("gemv-noprefetch", True),
                         ("lm_head=gemv-noprefetch", True), ("mkl", False), ("default", False), ("fc1=gemv", False),
                         ("lm_head=onednn", False)):
        monkeypatch.setenv(kernel_choice.ENV, forced)
        assert kernel_choice.choose_screen(model) is want, forced
    assert kernel_choice.choose_screen(model.half()) is None


def test_a_blank_setting_means_measure(monkeypatch):
    for blank in ("", "  "):
        monkeypatch.setenv(kernel_choice.ENV, blank)
        assert kernel_choice.setting() == ("measure", None)


def test_the_timings_cache_is_kept_per_thread_count():
    threads = torch.get_num_threads()
    path = kernel_choice.cache_path()
    assert f"-{threads}-threads-" in path.name
    try:
        torch.set_num_threads(threads + 1)
        assert kernel_choice.cache_path() != path and f"-{threads + 1}-threads-" in kernel_choice.cache_path().name
    finally:
        torch.set_num_threads(threads)


def test_timings_taken_while_the_machine_became_busy_are_not_cached(monkeypatch, tmp_path):
    """Quiet when measuring started, busy when it ended: the timings serve this load only."""
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    load = iter([0.0] + [1000.0] * 100)
    monkeypatch.setattr(kernel_choice, "busy", lambda: next(load))
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    assert kernel_choice.choose(small_model())["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
    assert not (tmp_path / "seq2seq_kit").exists()


def test_a_cpu_count_the_os_does_not_say_is_one(monkeypatch, tmp_path):
    """os.cpu_count() may be None: measuring goes on (it raised TypeError comparing the load with None), and the
    timings are kept when the load is below one."""
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice.os, "cpu_count", lambda: None)
    monkeypatch.setattr(kernel_choice, "busy", lambda: 0.5)
    monkeypatch.setattr(kernel_choice, "time_layer", lambda layer: timing((1, 1, 1), (2, 2, 2), (3, 3, 3)))
    assert kernel_choice.choose(small_model())["fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "mkl")
    assert (tmp_path / "seq2seq_kit").exists()
    assert kernel_choice.is_quiet()
    monkeypatch.setattr(kernel_choice, "busy", lambda: 1.0)
    assert not kernel_choice.is_quiet()


def test_the_last_level_cache_size_is_read_from_sysfs_and_capped(monkeypatch, tmp_path):
    monkeypatch.setattr(kernel_choice, "Path", lambda path: tmp_path)
    assert kernel_choice.last_level_cache_bytes() == 32 << 20                     # nothing reported
    for index, size in enumerate(("48K", "1M", "36M", "junk")):
        (tmp_path / f"index{index}").mkdir()
        (tmp_path / f"index{index}" / "size").write_text(size + "\n")
    assert kernel_choice.last_level_cache_bytes() == 36 << 20
    (tmp_path / "index9").mkdir()
    (tmp_path / "index9" / "size").write_text("2G\n")
    assert kernel_choice.last_level_cache_bytes() == 1 << 30                      # at most 1 GiB


@torch.no_grad()
def test_more_than_max_rows_run_the_last_row_classes_kernel(monkeypatch):
    torch.manual_seed(0)
    calls = []
    monkeypatch.setitem(kernels.DENSE, "mkl-t", lambda x, w, b: calls.append(x.shape[0]) or F.linear(x, w, b))
    layer = KernelLinear(16, 24)
    layer.use({"65-256": "mkl-t"})
    for rows in (64, 65, 256, 257, 300):
        layer(torch.randn(rows, 16))
    assert calls == [65, 256]
    layer.use({"257+": "mkl-t"})
    calls.clear()
    for rows in (256, 257, 300):
        layer(torch.randn(rows, 16))
    assert calls == [257, 300]


def test_an_encoder_weight_is_packed_on_its_lead_at_a_sources_rows():
    """The encoder's kinds decide packing over every row class (a source's hundreds of rows among them); the decode
    step's over the rows decode steps run only."""
    t = timing(mkl=(1.0, 1.0, 1.0), onednn=(2.0, 2.0, 2.0), packed=(1.2, 1.2, 1.2))
    t["65-256"]["onednn-packed"], t["257+"]["onednn-packed"] = 1.0, 2.0          # packed ahead at many rows
    assert kernel_choice.select(t, kernels.ELIGIBLE["encoder_fc1"], deciding=kernels.DECIDING["encoder_fc1"]) == \
        dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert kernel_choice.select(t, kernels.ELIGIBLE["fc1"], deciding=kernels.DECIDING["fc1"]) == \
        dict.fromkeys(kernels.ROW_CLASSES, "mkl")


def test_a_timings_file_missing_a_row_class_is_measured_again(monkeypatch, tmp_path):
    """Every row class must be there: select() scores the encoder's kinds on all of them."""
    monkeypatch.setenv(kernel_choice.ENV, "measure")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(kernel_choice, "busy", lambda: 1000.0)
    calls = []
    monkeypatch.setattr(kernel_choice, "time_layer",
                        lambda layer: calls.append(1) or timing((3, 3, 3), (2, 2, 2), (1, 1, 1)))
    model = small_model()
    shapes = {kernel_choice.shape_key(m) for ms in model.kernel_linears().values() for m in ms}
    partial = {c: t for c, t in timing((1, 1, 1), (2, 2, 2), (3, 3, 3)).items() if c != "257+"}
    path = kernel_choice.cache_path()
    path.parent.mkdir(parents=True)
    path.write_text(json.dumps({"timings": dict.fromkeys(shapes, partial)}))
    assert kernel_choice.choose(model)["encoder_fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert len(calls) == len(shapes)
    # a file that timed other kernels at a row class (gemv's beyond 64 rows, before 2026-12-07) is measured again
    more = {c: dict.fromkeys(kernel_choice.usable(), 1.0) for c in kernel_choice.PROBE_ROWS}
    path.write_text(json.dumps({"timings": dict.fromkeys(shapes, more)}))
    assert kernel_choice.choose(model)["encoder_fc1"] == dict.fromkeys(kernels.ROW_CLASSES, "onednn-packed")
    assert len(calls) == 2 * len(shapes) or not set(kernels.GEMV) & set(kernel_choice.usable())


def test_only_a_float32_weight_is_packed():
    layer = KernelLinear(8, 8).to(torch.bfloat16)
    layer.use({"1": "onednn-packed"})
    assert not layer.packed and layer.weight.dtype == torch.bfloat16
    assert layer.kernels()["1"] == "onednn"                                  # counts as dense oneDNN
