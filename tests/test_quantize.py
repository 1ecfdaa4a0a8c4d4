"""int8 linear layers (models/quantize.py): what is replaced, how far the logits move, and the errors.

Outside the parity guarantee, so the bounds are sanity bounds measured on the "tiny" checkpoint (its large init
makes logits spread wide): max |logit error| / max |logit| 0.087 and 85% argmax agreement with float32; a broken
quantization (wrong scale, transposed weight) lands near 1.0 and near 0%.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

from seq2seq_kit.modeling import BartForConditionalGeneration
from seq2seq_kit.models import gemv
from seq2seq_kit.models.quantize import Int8Embedding, Int8Linear, Int8TiedCopy, Int8TiedLinear


@pytest.fixture(scope="module")
def pair(checkpoint):
    path = checkpoint("tiny")
    return BartForConditionalGeneration.from_pretrained(path), BartForConditionalGeneration.from_pretrained(path)


def test_every_linear_is_int8_and_logits_stay_close(pair):
    fp32, int8 = pair
    assert int8.quantize_int8() is int8 and int8.quantized and not fp32.quantized
    assert not any(isinstance(m, nn.Linear) for m in int8.modules())
    assert sum(isinstance(m, (Int8Linear, Int8TiedLinear)) for m in int8.modules()) == \
        sum(isinstance(m, nn.Linear) for m in fp32.modules())
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(4, fp32.config.vocab_size, (2, 12), generator=g)
    dec = torch.randint(4, fp32.config.vocab_size, (2, 10), generator=g)
    want, got = fp32(ids, None, dec).logits, int8(ids, None, dec).logits
    assert ((got - want).abs().max() / want.abs().max()).item() < 0.15
    assert (got.argmax(-1) == want.argmax(-1)).float().mean().item() >= 0.7
    out = int8.generate(ids, num_beams=4, max_length=20)       # the decode step's few-row path too
    assert out.shape == (2, 20) and int(out.max()) < fp32.config.vocab_size


def test_int8_holds_only_int8_weights(checkpoint):
    """The token embedding is int8 too (rows dequantized on lookup, within half a step of the float32 row), and
    the float32 weights are gone once quantized: no reference to them lingers."""
    import gc
    import weakref

    fp32 = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    originals = [weakref.ref(model.shared.weight), weakref.ref(model.decoder.layers[0].fc1.weight)]
    model.quantize_int8()
    gc.collect()
    assert all(ref() is None for ref in originals)
    assert isinstance(model.shared, Int8Embedding) and model.shared.qweight.dtype == torch.int8
    V, D = fp32.shared.weight.shape
    floats = {n: t.numel() for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_floating_point()}
    assert max(floats.values()) < V * D / 8, floats                         # only biases, norms, positions, scales
    assert model.dtype == torch.float32 and model.device.type == "cpu"
    ids = torch.randint(0, V, (3, 7), generator=torch.Generator().manual_seed(0))
    error = (model.shared(ids) - fp32.shared(ids)).abs()                     # [3, 7, D]
    assert (error <= model.shared.scale[ids].unsqueeze(-1) / 2 + 1e-6).all() and error.max() > 0


@pytest.mark.skipif(not gemv.available(), reason="the gemv kernel cannot run on this machine")
def test_a_tied_lm_head_reads_the_embeddings_int8_rows(checkpoint):
    """Where gemv runs, the tied LM head holds no copy of the table: it multiplies float32 rows by the embedding's
    own int8 rows and scales (as close to that product in float64 as F.linear on the dequantized table is), and
    the state dict lists the table once."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8")
    assert isinstance(model.lm_head, Int8TiedLinear) and model.lm_head.table[0] is model.shared
    assert not [k for k in model.state_dict() if k.startswith("lm_head")]
    q, scale = model.shared.qweight, model.shared.scale                        # [V, D] int8, [V]
    x = torch.randn(5, q.shape[1], generator=torch.Generator().manual_seed(0))
    exact = x.double() @ (q.double() * scale.double()[:, None]).T
    dequantized = torch.nn.functional.linear(x, q.float() * scale[:, None])
    got = model.lm_head(x)
    assert (got.double() - exact).abs().max() <= 2 * (dequantized.double() - exact).abs().max() + 1e-6


def test_without_gemv_a_tied_lm_head_gets_its_own_packed_copy(checkpoint, monkeypatch):
    monkeypatch.setattr(gemv, "ISA", 0)
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8")
    assert isinstance(model.lm_head, Int8TiedCopy) and model.lm_head.table[0] is model.shared
    assert not [k for k in model.state_dict() if k.startswith("lm_head")]              # the table's, as with gemv
    out = model.generate(torch.tensor([[0, 100, 200, 300, 2]]), num_beams=2, max_new_tokens=6)
    assert out.shape == (1, 7)
    fp32 = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))   # the packed copy is counted once
    assert [model.num_parameters(exclude_embeddings=e) for e in (False, True)] == \
        [fp32.num_parameters(exclude_embeddings=e) for e in (False, True)]


@pytest.mark.skipif(not gemv.available(), reason="the gemv kernel cannot run on this machine")
def test_an_int8_state_dict_loads_on_a_machine_with_or_without_gemv(checkpoint, monkeypatch):
    """A tied LM head is saved as the embedding's table alone on either kind of machine (gemv reads the table's
    rows in place; without it, an Int8TiedCopy packs them again after each load): a state dict made where gemv runs
    loaded where it does not ("Missing key(s): lm_head.weight, lm_head.weight_scale"), and the other way round
    ("Unexpected key(s)"). Each model loaded from the other's state dict equals that kind's own; an older state
    dict with the copy's keys loads too (they are the table's rows again)."""
    path = checkpoint("tiny")
    with_gemv, isa = BartForConditionalGeneration.from_pretrained(path, dtype="int8"), gemv.ISA
    monkeypatch.setattr(gemv, "ISA", 0)
    without = BartForConditionalGeneration.from_pretrained(path, dtype="int8")
    ids = torch.randint(4, with_gemv.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    own = without(ids, None, ids).logits
    other = BartForConditionalGeneration.from_pretrained(path)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)                                                    # other weights, one table shape
    other.quantize_int8()
    other.load_state_dict(with_gemv.state_dict())
    assert torch.equal(other(ids, None, ids).logits, own)                  # packed again from the loaded table
    older = {**with_gemv.state_dict(), "lm_head.weight": with_gemv.shared.qweight,
             "lm_head.weight_scale": with_gemv.shared.scale.double()}
    other.load_state_dict(older)
    monkeypatch.setattr(gemv, "ISA", isa)
    again = BartForConditionalGeneration.from_pretrained(path)
    with torch.no_grad():
        for p in again.parameters():
            p.mul_(-1.5)
    again.quantize_int8()
    assert isinstance(again.lm_head, Int8TiedLinear)
    again.load_state_dict(without.state_dict())
    assert torch.equal(again(ids, None, ids).logits, with_gemv(ids, None, ids).logits)
    again.load_state_dict(older)


@pytest.mark.parametrize("name", ["marian-separate", "marian-separate-untied"])
def test_int8_separate_vocabularies(checkpoint, name):
    """A Marian with its own encoder and decoder embeddings: both become int8 and generation still runs (the
    decoder's vocabulary for the logits)."""
    from seq2seq_kit import AutoModelForSeq2SeqLM

    model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint(name), dtype="int8")
    assert model.shared is None
    assert isinstance(model.encoder.embed_tokens, Int8Embedding) and isinstance(model.decoder.embed_tokens,
                                                                                 Int8Embedding)
    out = model.generate(torch.tensor([[5, 6, 7, 8, 2]]), num_beams=2, max_length=10)
    assert out.shape == (1, 10) and int(out.max()) < model.config.decoder_vocab_size


def test_int8_errors(checkpoint, tmp_path):
    half = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="float16")
    with pytest.raises(ValueError, match="needs a float32 model on the CPU"):
        half.quantize_int8()
    int8 = BartForConditionalGeneration.from_pretrained(checkpoint("tiny")).quantize_int8()
    with pytest.raises(ValueError, match="linear layers are int8"):
        int8.save_pretrained(tmp_path)
    assert not any(tmp_path.iterdir())
    with pytest.raises(ValueError, match="int8 already"):
        int8.quantize_int8()
    for cast in (lambda m: m.half(), lambda m: m.to(torch.bfloat16), lambda m: m.double()):
        with pytest.raises(ValueError, match="cannot become torch.(float16|bfloat16|float64) on cpu"):
            cast(int8)
    assert int8.to("cpu").float() is int8 and int8.dtype == torch.float32     # no change: allowed


def test_int8_dtype_through_loading_pipeline_and_cli(checkpoint, capsys):
    from seq2seq_kit import pipeline
    from seq2seq_kit.cli import main

    path = checkpoint("tiny")
    direct = BartForConditionalGeneration.from_pretrained(path).quantize_int8()
    for dtype in ("int8", torch.int8, "torch.int8"):
        assert BartForConditionalGeneration.from_pretrained(path, dtype=dtype).quantized
    text = "The committee met on Tuesday to discuss the new budget for the city's schools and parks."
    pipe = pipeline("summarization", model=str(path), dtype="int8")
    assert pipe.model.quantized
    summary = pipe(text, max_length=12)[0]["summary_text"]
    ids = pipe.tokenizer(text, return_tensors="pt")["input_ids"]
    assert summary == pipe.tokenizer.decode(direct.generate(ids, max_length=12)[0], skip_special_tokens=True)
    assert main(["summarize", text, "--model", str(path), "--dtype", "int8", "--max-length", "12"]) == 0
    assert capsys.readouterr().out == summary + "\n"
    main(["parity", str(path), "--dtype", "int8", "--max-length", "12", "--text", text])
    assert "int8 (float32 reference)" in capsys.readouterr().out          # its float parts' dtype is no answer


INT8_ON_CUDA = ("dtype='int8' runs on the CPU only (PyTorch's quantized int8 kernels), not on cuda:0: pass "
                "device='cpu', or a float dtype on the GPU (dtype='float16' or dtype='bfloat16')")


@pytest.mark.cuda
def test_int8_refused_on_cuda(checkpoint):
    with pytest.raises(ValueError) as error:
        BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8", device="cuda")
    assert str(error.value) == INT8_ON_CUDA


def test_int8_on_a_gpu_is_refused_naming_the_cpu(checkpoint, monkeypatch, capsys):
    """dtype="int8" with a CUDA device (one faked visible: refused before anything reaches it) names the fix in the
    library's and the command line's terms. It was quantize_int8's message, "int8 quantization needs a float32
    model on the CPU ... (load it with dtype=None, device='cpu')", which the int8 caller had not asked for and whose
    dtype=None silently gives a float32 model."""
    from seq2seq_kit import pipeline
    from seq2seq_kit.cli import main

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "current_device", lambda: 0)
    path = checkpoint("tiny")
    for load in (lambda: BartForConditionalGeneration.from_pretrained(path, dtype="int8", device="cuda"),
                 lambda: pipeline("summarization", model=str(path), dtype="int8", device=0)):
        with pytest.raises(ValueError) as error:
            load()
        assert str(error.value) == INT8_ON_CUDA
    assert main(["summarize", "Some text.", "--model", str(path), "--dtype", "int8", "--device", "cuda"]) == 1
    assert capsys.readouterr().err == ("seq2seq-kit: error: --dtype int8 runs on the CPU only (PyTorch's quantized "
                                       "int8 kernels), not on cuda:0: pass --device cpu, or a float dtype on the GPU "
                                       "(--dtype float16 or --dtype bfloat16)\n")


@pytest.mark.parametrize("name", ["tiny", "tiny-bin", "marian-separate-untied"])
def test_int8_loading_quantizes_each_layer_as_read_with_the_same_result(checkpoint, name):
    """from_pretrained(dtype="int8") replaces each linear layer as its weights are read (loading.replace_linears;
    its memory: tests/test_cpu_memory.py); the model equals loading float32 and quantizing it whole, bit for bit,
    a .bin checkpoint with its own lm_head.weight and Marian's separate, untied embeddings and LM head included."""
    path = checkpoint(name)
    streamed = BartForConditionalGeneration.from_pretrained(path, dtype="int8")
    whole = BartForConditionalGeneration.from_pretrained(path).quantize_int8()
    assert [type(m) for m in streamed.modules()] == [type(m) for m in whole.modules()]
    g = torch.Generator().manual_seed(0)
    V = whole.config.vocab_size
    ids, dec = torch.randint(4, V, (2, 12), generator=g), torch.randint(4, V, (2, 10), generator=g)
    assert torch.equal(streamed(ids, None, dec).logits, whole(ids, None, dec).logits)


def test_int8_state_dict_holds_the_int8_weights(checkpoint, tmp_path):
    """The packed matrices are no parameters: the state dict holds their int8 rows, scales and biases, and loading
    it (strict) into another int8 model of the same shape gives back the very layers (a saved state dict lost 95%
    of the model, and loading 'matched all keys' while changing nothing)."""
    path = checkpoint("tiny")
    model = BartForConditionalGeneration.from_pretrained(path, dtype="int8")
    state = model.state_dict()
    assert state["decoder.layers.0.fc1.weight"].dtype == torch.int8 and "decoder.layers.0.fc1.weight_scale" in state
    torch.save(state, tmp_path / "int8.pt")
    other = BartForConditionalGeneration.from_pretrained(path)
    with torch.no_grad():
        for p in other.parameters():
            p.mul_(-1.5)
    other.quantize_int8()
    other.load_state_dict(torch.load(tmp_path / "int8.pt"))
    ids = torch.randint(4, model.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(0))
    assert torch.equal(other(ids, None, ids).logits, model(ids, None, ids).logits)
    broken = {k: v[:, :-1] if k == "decoder.layers.0.fc1.weight" else v for k, v in state.items()}
    with pytest.raises(RuntimeError, match=r"decoder.layers.0.fc1.weight: expected int8"):
        other.load_state_dict(broken)


@pytest.mark.parametrize("name", ["tiny", "marian-separate-untied"])
def test_int8_counts_the_parameters_of_the_float_model(checkpoint, name):
    path = checkpoint(name)
    fp32 = BartForConditionalGeneration.from_pretrained(path)
    int8 = BartForConditionalGeneration.from_pretrained(path, dtype="int8")
    assert [int8.num_parameters(exclude_embeddings=e) for e in (False, True)] == \
        [fp32.num_parameters(exclude_embeddings=e) for e in (False, True)]


def test_int8_layers_quantize_a_call_in_blocks_of_rows(checkpoint):
    """An Int8Linear quantizes at most ROWS_PER_CALL rows per kernel call, each block with its own input scale (so
    its temporaries are a block's, not a source's), and the encoder's FFN runs in the same blocks with the very
    result of running it whole."""
    from seq2seq_kit.models.quantize import ROWS_PER_CALL

    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8")
    layer = model.encoder.layers[0]
    D = model.config.d_model
    x = torch.randn(1, 2 * ROWS_PER_CALL + 44, D, generator=torch.Generator().manual_seed(0))
    x[0, -1] *= 50                                          # the last block's scale differs from the others'
    blocks = [layer.fc1.run(r) for r in x[0].split(ROWS_PER_CALL)]
    assert torch.equal(layer.fc1(x), torch.cat(blocks)[None])
    assert not torch.equal(layer.fc1(x)[0], layer.fc1.run(x[0]))             # one call: one scale for every row
    assert torch.equal(layer.ffn(x), layer.fc2(layer.act(layer.fc1(x))))



@pytest.mark.parametrize("dtype", ["int8", "float32"])
@pytest.mark.parametrize("inputs, length", [(1, 300), (3, 150), (7, 20)])
def test_cross_keys_and_values_written_in_place_equal_the_projection_whole(checkpoint, dtype, inputs, length):
    """project_kv_into (what a new cache's cross-attention keys/values come from) gives project_kv's values bit for
    bit: an int8 projection in its own blocks of the flattened rows (blocks that straddle inputs too), each block's
    result written into place; float32 in one call."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype=dtype)
    attn = model.decoder.layers[1].encoder_attn
    enc = torch.randn(inputs, length, model.config.d_model, generator=torch.Generator().manual_seed(length))
    enc[-1, -1] *= 50                                       # the last block's input scale differs from the others'
    want_k, want_v = attn.project_kv(enc)                   # [B, H, S, Dh] each
    k, v = (torch.full_like(want_k, float("nan")) for _ in range(2))
    attn.project_kv_into(enc, k, v)
    assert torch.equal(k, want_k) and torch.equal(v, want_v)

def test_int8_under_bfloat16_autocast(checkpoint):
    """autocast hands the int8 layers bfloat16 activations, which quantized::linear_dynamic refuses: they take
    them as float32."""
    int8 = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8")
    ids = torch.randint(4, int8.config.vocab_size, (2, 9), generator=torch.Generator().manual_seed(1))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = int8.generate(ids, num_beams=2, max_new_tokens=5, output_scores=True, return_dict_in_generate=True)
    assert out.sequences.shape[0] == 2 and all(torch.isfinite(s).any() for s in out.scores)


# ---- to_empty -------------------------------------------------------------------------------------------------

INT8_WAYS = {"dtype='int8'": dict(dtype="int8"), "dtype=torch.int8": dict(dtype=torch.int8), "quantize_int8": {}}


def int8_model(path, way: str):
    model = BartForConditionalGeneration.from_pretrained(path, **INT8_WAYS[way])
    return model if model.quantized else model.quantize_int8()


@pytest.mark.parametrize("way", INT8_WAYS)
def test_int8_to_empty_on_the_cpu_then_load_state_dict(checkpoint, way):
    """torch's contract: to_empty gives the float tensors new, uninitialized storage on the device (the CPU, the
    only one an int8 model runs on); load_state_dict fills them again, to the same tokens."""
    model = int8_model(checkpoint("tiny"), way)
    ids = torch.tensor([[0, 100, 200, 300, 2], [0, 400, 500, 2, 1]])
    want = model.generate(ids, num_beams=2, max_new_tokens=6)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    assert model.to_empty(device="cpu") is model and model.quantized and model.device == torch.device("cpu")
    assert model.load_state_dict(state).missing_keys == []
    assert torch.equal(model.generate(ids, num_beams=2, max_new_tokens=6), want)


@pytest.mark.parametrize("device", ["meta", "cuda", torch.device("cuda", 0)],
                         ids=["meta", "gpu-by-name", "gpu-device"])     # (an id "cuda" is skipped without a GPU)
def test_int8_to_empty_off_the_cpu_is_refused_before_anything_moves(checkpoint, device):
    """A CUDA device on a CPU-only torch was torch's AssertionError ("Torch not compiled with CUDA enabled")."""
    model = int8_model(checkpoint("tiny"), "dtype='int8'")
    ids = torch.tensor([[0, 100, 200, 300, 2]])
    want = model.generate(ids, max_new_tokens=6)
    for move in (lambda m: m.to_empty(device=device), lambda m: m.to(device)):
        with pytest.raises(ValueError, match=r"^this model's linear layers are int8 \(quantize_int8\), which run on "
                                             r"the CPU with float32 activations only: it cannot (become "
                                             r"torch.float32 on (meta|cuda:0)|move there \(torch: .+\)); load the "
                                             r"float model for that$"):
            move(model)
    assert torch.equal(model.generate(ids, max_new_tokens=6), want)


def test_int8_uninitialized_float_weights_are_named(checkpoint):
    """Running an int8 model after to_empty without load_state_dict: uninitialized memory can hold NaN (made sure
    of here), which the int8 kernel failed on inside torch ("In ChooseQuantizationParams, min should be less than
    or equal to max"); float weights that are finite garbage give garbage, as torch's contract says."""
    model = int8_model(checkpoint("tiny"), "dtype='int8'").to_empty(device="cpu")
    with torch.no_grad():
        model.encoder.layers[0].self_attn_layer_norm.weight.fill_(float("nan"))
    with pytest.raises(ValueError, match=r"^an int8 linear layer got NaN or infinite activations: .* after "
                                         r"model.to_empty\(...\) they are uninitialized: fill them with "
                                         r"model.load_state_dict\(state\) before running the model$"):
        model.generate(torch.tensor([[0, 100, 200, 2]]), max_new_tokens=3)


def test_int8_embedding_refuses_ids_outside_its_table_as_nn_embedding():
    """An id outside [0, V) is nn.Embedding's IndexError; the int8 table read -100 (a label's padding) as row V - 100
    (tensor indexing counts from the end)."""
    table = nn.Embedding(10, 4)
    q = Int8Embedding(table)
    ids = torch.tensor([[0, 3, 9]])
    assert torch.allclose(q(ids), table(ids), atol=table.weight.abs().max().item() / 127)
    for bad in (-100, -1, 10):
        with pytest.raises(IndexError, match="index out of range"):
            table(torch.tensor([bad]))
        with pytest.raises(IndexError, match="index out of range"):
            q(torch.tensor([bad]))


def test_int8_embedding_rounds_each_row_to_the_nearest_step_of_its_scale():
    embedding = nn.Embedding(2, 3)
    with torch.no_grad():
        embedding.weight.copy_(torch.tensor([[127.0, 50.7, -3.6], [0.0, 0.0, 0.0]]))
    q = Int8Embedding(embedding)
    assert q.scale.tolist() == torch.tensor([1.0, 1e-12]).tolist() and q.qweight.tolist() == [[127, 51, -4], [0, 0, 0]]
    assert q(torch.tensor([1, 0])).tolist() == [[0.0, 0.0, 0.0], [127.0, 51.0, -4.0]]


def test_int8_linear_refuses_a_state_dict_with_scales_of_another_shape():
    q = Int8Linear(nn.Linear(4, 3))
    state = q.state_dict()
    state["weight_scale"] = state["weight_scale"][:2]
    with pytest.raises(RuntimeError, match=r"expected int8 \[3, 4\] with scales \[3\]"):
        q.load_state_dict(state)


def test_int8_engine_at_fixed_capacity_is_refused(checkpoint):
    """A fixed-capacity step runs every slot, the free ones included, and an int8 layer quantizes all the rows of a
    call with one input scale: a request alone got other tokens than generate alone (tiny, greedy, max_rows 16).
    Refused by name; the CPU's default engine gives generate's tokens."""
    from seq2seq_kit import Engine

    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"), dtype="int8")
    with pytest.raises(ValueError, match="fixed_capacity=True with an int8 model: its layers quantize a step's rows"):
        Engine(model, fixed_capacity=True, max_rows=16)
    row = [0, 31, 48, 95, 17, 230, 64, 2]
    with Engine(model, max_rows=16) as engine:
        got = engine.submit(row, num_beams=1, max_new_tokens=12).result()
    assert torch.equal(got, model.generate(torch.tensor([row]), num_beams=1, max_new_tokens=12))
