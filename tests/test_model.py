"""The from-scratch BART/mBART network against transformers (the oracle), the KV-cache decode path, dtypes, bad input.

Tolerances (fp32): encoder outputs and logits within 1e-4 of transformers with identical argmax (today they are
bit-identical on CPU); incremental decoding with the KV cache within 1e-5 of the teacher-forced forward.
bf16/fp16 on CPU: within 1e-3 of transformers run in the same dtype, and within 0.3 (bf16) / 0.05 (fp16) of fp32
on logits of magnitude ~8 (softmax probabilities within 2e-3 / 2e-4).
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import transformers
from hypothesis import given
from hypothesis import strategies as st

from checkpoints import _randomize
from seq2seq_kit import BartConfig, BartForConditionalGeneration
from seq2seq_kit.models.bart import BartNetwork
from seq2seq_kit.models.activations import ACTIVATIONS
from seq2seq_kit.models.kv_cache import SPARE, FixedShapeKVCache, KVCache, bucket, copy_order
from helpers import random_batch

PARITY = ["kobart", "distilbart", "tiny-mbart", "tiny-relu", "tiny-bin", "tiny-no-bias", "tiny-sharded"]
ATOL = 1e-4


def oracle_class(path):
    config = BartConfig.from_pretrained(path)
    return (transformers.MBartForConditionalGeneration if config.model_type == "mbart"
            else transformers.BartForConditionalGeneration)


def load_oracle(path, dtype=torch.float32):
    return oracle_class(path).from_pretrained(path, dtype=dtype).eval()


def make_batch(config: BartConfig, lengths=(11, 7, 4), target_len=6, seed=0):
    """A right-padded batch of len(lengths) inputs (bos ... eos, then pad) and random decoder inputs."""
    start = config.decoder_start_token_id if config.decoder_start_token_id is not None else config.eos_token_id
    return random_batch(config.vocab_size, config.pad_token_id, lengths, seed, bos=config.bos_token_id,
                        eos=config.eos_token_id, target_len=target_len, decoder_start=start)


def assert_close(ours, ref, atol, what):
    diff = (ours.float() - ref.float()).abs().max().item()
    assert diff <= atol, f"{what}: max abs diff {diff} > {atol}"


@pytest.fixture(scope="module")
def load(checkpoint):
    """load(name, oracle=False) -> our fp32 model (and the transformers one), each loaded once per module."""
    cache = {}

    def get(name, oracle=False, keep=True):
        key = (name, oracle)
        if key in cache:
            return cache[key]
        path = checkpoint(name)
        model = load_oracle(path) if oracle else BartForConditionalGeneration.from_pretrained(path)
        if keep:
            cache[key] = model
        return model

    return get


# ---- parity with transformers -------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PARITY)
def test_parity_with_transformers(load, name):
    keep = name.startswith("tiny")   # the big ones are used by this test only: free them after it
    ours, ref = load(name, keep=keep), load(name, oracle=True, keep=keep)
    ids, mask, dec = make_batch(ours.config)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    enc = ours.encode(ids, mask)
    logits = ours(ids, mask, dec).logits
    assert enc.shape == out.encoder_last_hidden_state.shape
    assert logits.shape == out.logits.shape == (3, dec.shape[1], ours.config.vocab_size)
    assert_close(enc, out.encoder_last_hidden_state, ATOL, "encoder output")
    assert_close(logits, out.logits, ATOL, "logits")
    assert torch.equal(logits.argmax(-1), out.logits.argmax(-1))
    assert ours.num_parameters() == ref.num_parameters()
    assert logits.std() > 1.0   # decisive random model: a misplaced weight would move the numbers a lot


@pytest.mark.parametrize("name", ["tiny-mbart", "tiny-bin"])
def test_forward_without_decoder_inputs_shifts_like_transformers(load, name):
    """No decoder_input_ids: BART prepends decoder_start; mBART rotates the last non-pad token to the front."""
    ours, ref = load(name), load(name, oracle=True)
    ids, mask, _ = make_batch(ours.config)
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask).logits
    assert_close(ours(ids, mask).logits, expected, ATOL, "logits")


def labels_for(config, batch: int = 3, length: int = 7, seed: int = 0) -> torch.Tensor:
    """Loss targets [batch, length] as code written for transformers passes them: row 0 ends in -100s (a collator's
    padding), row 1 in the pad id (a tokenizer's padding of text_target), eos before them."""
    vocab = getattr(config, "decoder_vocab_size", None) or config.vocab_size
    labels = torch.randint(4, vocab, (batch, length), generator=torch.Generator().manual_seed(seed))
    labels[0, length - 3] = labels[1, length - 4] = config.eos_token_id
    labels[0, length - 2:] = -100
    labels[1, length - 3:] = config.pad_token_id
    return labels


@pytest.mark.parametrize("name", ["tiny-bin", "tiny-mbart"])
def test_labels_give_transformers_loss(load, name):
    """model(..., labels=labels).loss is transformers': its decoder inputs made from labels (BART: behind
    decoder_start_token_id, -100 read as pad; mBART: behind each row's last non-pad token), the mean cross-entropy
    over the positions that are not -100; out[0] is the loss, as there. Logits within ATOL, the loss within float
    rounding (rtol 1e-6); int32 labels and given decoder_input_ids as there."""
    ours, ref = load(name), load(name, oracle=True)
    ids, mask, dec = make_batch(ours.config)
    labels = labels_for(ours.config, length=dec.shape[1])
    for decoder_inputs in (dict(), dict(decoder_input_ids=dec)):
        with torch.no_grad():
            theirs = ref(input_ids=ids, attention_mask=mask, labels=labels, **decoder_inputs)
        mine = ours(ids, mask, labels=labels.int(), **decoder_inputs)
        assert_close(mine.logits, theirs.logits, ATOL, "logits")
        torch.testing.assert_close(mine.loss, theirs.loss, rtol=1e-6, atol=0)
        assert mine[0] is mine.loss and list(mine.keys())[:2] == ["loss", "logits"] and mine.loss.shape == ()
    assert ours(ids, mask, dec).get("loss") is None and "loss" not in ours(ids, mask, dec)


def test_bad_labels_are_refused_by_name(load):
    """labels that cannot be a loss's targets: a clear error naming labels, where transformers fails in torch's
    cross-entropy or view (or, for an id past the vocabulary, in an embedding lookup)."""
    model = load("tiny")
    ids, mask, dec = make_batch(model.config)
    V = model.config.vocab_size
    labels = labels_for(model.config)
    cases = [(labels[:2], ValueError, "labels has batch size 2 but input_ids has 3"),
             (labels, ValueError, r"labels has shape \[3, 7\] but decoder_input_ids has shape \[3, 6\]"),
             (labels.float(), TypeError, "labels must be an integer torch.Tensor of token ids, got torch.float32"),
             (labels.tolist(), TypeError, "labels must be an integer torch.Tensor of token ids, got a list"),
             (labels.masked_fill(labels == -100, -1), ValueError,
              "labels contains token id -1, outside the model's vocabulary .* -100 marks a position the loss"),
             (labels.masked_fill(labels == -100, V), ValueError, f"labels contains token id {V}, outside")]
    for bad, error, message in cases:
        decoder_inputs = dict(decoder_input_ids=dec) if "decoder_input_ids has" in message else dict()
        with pytest.raises(error, match=message):
            model(ids, mask, labels=bad, **decoder_inputs)
    everything_ignored = torch.full_like(labels, -100)
    assert model(ids, mask, dec, labels=everything_ignored[:, :6]).loss.isnan()      # as transformers' (0 / 0)
    with pytest.raises(ValueError, match=r"decoder_attention_mask has shape \[3, 6\] but the decoder inputs made "
                                         r"from labels has shape \[3, 7\]"):  # (it said decoder_input_ids: not given)
        model(ids, mask, labels=labels, decoder_attention_mask=torch.ones_like(dec))


def test_decoder_attention_mask_like_transformers(load):
    ours, ref = load("tiny-mbart"), load("tiny-mbart", oracle=True)
    ids, mask, dec = make_batch(ours.config)
    dec_mask = torch.ones_like(dec)
    dec_mask[0, 4:] = 0
    dec_mask[2, 2:] = 0
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec,
                       decoder_attention_mask=dec_mask).logits
    got = ours(ids, mask, dec, dec_mask).logits
    assert_close(got, expected, ATOL, "logits")
    assert not torch.allclose(got, ours(ids, mask, dec).logits, atol=1e-3)   # the mask does change the numbers


def test_no_attention_mask_equals_all_ones(load):
    ours = load("tiny")
    ids, _, dec = make_batch(ours.config, lengths=(9, 9))
    assert torch.equal(ours(ids, None, dec).logits, ours(ids, torch.ones_like(ids), dec).logits)


def test_checked_outputs_are_ordinary_tensors_like_transformers(load):
    """forward and encode returned inference tensors: logits[:, pad] = -1e4 raised "Inplace update to
    inference tensor outside InferenceMode", and a loss saving them for backward (distillation against the logits)
    raised "Inference tensors cannot be saved for backward"; transformers' outputs under no_grad allow both."""
    ours, ref = load("tiny"), load("tiny", oracle=True)
    ids, mask, dec = make_batch(ours.config, lengths=(5, 3))
    pad = ours.config.pad_token_id
    with torch.no_grad():
        want = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    with torch.enable_grad():
        logits = ours(ids, mask, dec).logits
        hidden = ours.encode(ids, mask)
        for t in (logits, hidden):
            assert not t.is_inference() and not t.requires_grad and t.grad_fn is None
        logits[:, :, pad] = -1e4
        want[:, :, pad] = -1e4
        assert_close(logits, want, ATOL, "logits")
        hidden.mul_(2.0)
        student = torch.zeros_like(logits[:, :, :8], requires_grad=True)
        F.mse_loss(student, logits[:, :, :8]).backward()
        assert student.grad is not None and torch.isfinite(student.grad).all()


def test_a_long_encoder_pass_runs_its_ffn_over_blocks_of_rows(monkeypatch):
    """More than 2 x ENCODER_FFN_ROWS source rows on the CPU: the FFN runs per block of rows (the caches keep a
    block's activations), each row's values as in one product over all rows."""
    from seq2seq_kit.models import bart

    torch.manual_seed(0)
    model = BartForConditionalGeneration(BartConfig(vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=1,
                                                    encoder_attention_heads=4, decoder_attention_heads=4,
                                                    encoder_ffn_dim=64, decoder_ffn_dim=64,
                                                    max_position_embeddings=1024)).eval()
    ids = torch.randint(4, 96, (3, 900), generator=torch.Generator().manual_seed(0))      # 2,700 rows: 2 blocks
    calls = []
    model.encoder.layers[0].fc1.register_forward_hook(lambda m, args, out: calls.append(args[0].shape[:-1]))
    blocked = model.encode(ids, torch.ones_like(ids))
    assert calls == [(1350,), (1350,)]
    monkeypatch.setattr(bart, "ENCODER_FFN_ROWS", 10_000)
    whole = model.encode(ids, torch.ones_like(ids))
    assert calls[2:] == [(3, 900)]
    torch.testing.assert_close(blocked, whole, atol=1e-5, rtol=1e-5)


def test_every_activation_is_transformers_bit_for_bit():
    """Each activation_function name we take computes what transformers' ACT2FN computes, to the bit."""
    from transformers.activations import ACT2FN

    x = torch.randn(4096, generator=torch.Generator().manual_seed(0)) * 4
    for name, act in ACTIVATIONS.items():
        for dtype in (torch.float32, torch.bfloat16):
            assert torch.equal(act(x.to(dtype)), ACT2FN[name](x.to(dtype))), (name, dtype)


@pytest.mark.parametrize("activation", ["gelu_new", "silu", "swish", "tanh", "gelu_python", "gelu_fast",
                                        "gelu_pytorch_tanh", "gelu_python_tanh", "quick_gelu"])
def test_activations_match_transformers(tmp_path, activation):
    config = transformers.BartConfig(
        vocab_size=96, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
        activation_function=activation)
    ref = transformers.BartForConditionalGeneration(config)
    _randomize(ref, 0.3, seed=11)
    ref.eval().save_pretrained(tmp_path)
    ours = BartForConditionalGeneration.from_pretrained(tmp_path)
    ids, mask, dec = make_batch(ours.config, lengths=(8, 5, 3))
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert_close(ours(ids, mask, dec).logits, expected, ATOL, f"{activation} logits")


def test_fp16_encoder_clamp_like_transformers(tmp_path):
    """mBART (pre-LN) in fp16 with a residual stream that overflows: both clamp it to a finite value."""
    config = transformers.MBartConfig(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32,
        decoder_start_token_id=2)
    ref = transformers.MBartForConditionalGeneration(config)
    _randomize(ref, 0.3, seed=12)
    with torch.no_grad():
        ref.model.encoder.layers[0].fc2.weight.mul_(3e4)     # overflows fp16 in layer 0's residual
    ref.eval().save_pretrained(tmp_path)
    ref = ref.half()
    ours = BartForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float16)
    ids, mask, dec = make_batch(ours.config, lengths=(8, 5, 3))
    with torch.no_grad():
        expected = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    enc = ours.encode(ids, mask)
    assert torch.isfinite(enc).all()
    assert_close(enc, expected.encoder_last_hidden_state, 1e-3, "fp16 encoder output")
    assert_close(ours(ids, mask, dec).logits, expected.logits, 1e-3, "fp16 logits")


def test_fp16_post_ln_encoder_clamp_like_transformers(tmp_path):
    """BART (post-LN) in fp16 with a last encoder layer whose layer norm output overflows in one feature:
    transformers clamps a non-finite encoder layer output to a finite value (the pre-LN families clamp always: test
    above), and so do we (encoder output within 1e-3, that feature at the clamp's limit where it was inf)."""
    config = transformers.BartConfig(
        vocab_size=96, d_model=32, encoder_layers=2, decoder_layers=1, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, max_position_embeddings=32)
    ref = transformers.BartForConditionalGeneration(config)
    _randomize(ref, 0.3, seed=12)
    with torch.no_grad():
        ref.model.encoder.layers[1].final_layer_norm.weight[0] = 1e6   # feature 0 overflows fp16 after the norm
    ref.eval().save_pretrained(tmp_path)
    ref = ref.half()
    ours = BartForConditionalGeneration.from_pretrained(tmp_path, dtype=torch.float16)
    ids, mask, _ = make_batch(ours.config, lengths=(8, 5, 3))
    with torch.no_grad():
        expected = ref.model.encoder(input_ids=ids, attention_mask=mask).last_hidden_state
    enc = ours.encode(ids, mask)
    limit = torch.finfo(torch.float16).max - 1000
    assert torch.isfinite(expected).all() and (expected[..., 0].abs() == limit).any()   # transformers clamped it
    assert torch.isfinite(enc).all()
    assert_close(enc, expected, 1e-3, "fp16 encoder output")


# ---- KV cache ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name,rows_per_input", [("tiny", 1), ("tiny", 3), ("tiny-mbart", 3)])
def test_kv_cache_decoding_equals_full_forward(load, name, rows_per_input):
    """Step-by-step decoding (with a beam-style reorder midway) gives the teacher-forced logits (<= 1e-5)."""
    model = load(name)
    ids, mask, _ = make_batch(model.config, lengths=(9, 5))
    B, R, T = 2, 2 * rows_per_input, 7
    g = torch.Generator().manual_seed(3)
    history = torch.randint(4, model.config.vocab_size, (R, T), generator=g)
    history[:, 0] = model.config.decoder_start_token_id
    rows_ids, rows_mask = ids.repeat_interleave(rows_per_input, 0), mask.repeat_interleave(rows_per_input, 0)

    cache = model.new_cache(model.encode(ids, mask), mask, rows_per_input, max_length=T)
    assert isinstance(cache, KVCache) and cache.length == 0 and cache.rows_per_input == rows_per_input
    H, Dh = model.config.decoder_attention_heads, model.config.d_model // model.config.decoder_attention_heads
    assert cache.self_kv[0, 0].shape == (R, H, T, Dh) and cache.cross_k[0].shape == (B, H, ids.shape[1], Dh)
    assert cache.cross_mask.shape == (B, 1, 1, ids.shape[1])
    for t in range(T):
        if t == 4:   # row r continues row_idx[r]'s history, rows staying within their input
            row_idx = torch.arange(R).view(B, rows_per_input).flip(1)
            row_idx[:, -1] = row_idx[:, 0]
            row_idx = row_idx.flatten()
            cache.reorder(row_idx)
            history[:, :t] = history[row_idx, :t]
        step = model.decode_step(history[:, t], cache)
        assert cache.length == t + 1 and step.shape == (R, model.config.vocab_size)
        full = model(rows_ids, rows_mask, history[:, :t + 1]).logits[:, t]
        assert_close(step, full, 1e-5, f"step {t}")


def test_kv_cache_without_padding(load):
    model = load("tiny")
    ids, _, dec = make_batch(model.config, lengths=(6, 6))
    cache = model.new_cache(model.encode(ids), None, 1, max_length=dec.shape[1])
    assert cache.cross_mask is None
    steps = torch.stack([model.decode_step(dec[:, t], cache) for t in range(dec.shape[1])], 1)
    assert_close(steps, model(ids, None, dec).logits, 1e-5, "logits")


def test_reorder_moves_the_cached_positions(load):
    """reorder moves the first `length` slots of every layer (twice: the second from what the first wrote back),
    through a spare of one row, not a second cache; later slots are not read before a step writes them, so they
    are not kept."""
    model = load("tiny")
    ids, mask, _ = make_batch(model.config, lengths=(5,))
    cache = model.new_cache(model.encode(ids, mask), mask, 3, max_length=4)
    for layer in cache.self_kv:
        layer.copy_(torch.arange(layer.numel(), dtype=layer.dtype).view(layer.shape))
    before = cache.self_kv.clone()                                        # [layers, 2, R, H, L, Dh]
    cache.length = 2
    cache.reorder(torch.tensor([1, 1, 0]))
    cache.reorder(torch.tensor([2, 0, 0]))                                # a cycle: rows 0 and 2 trade places
    assert torch.equal(cache.self_kv[..., :2, :], before[:, :, [0, 1, 1], :, :2])
    assert cache.row_spare.shape == cache.self_kv[:, :, 0].shape               # [layers, 2, H, L, Dh]: one row


@given(st.lists(st.integers(0, 5), min_size=1, max_size=6).map(lambda parents: [p % len(parents) for p in parents]))
def test_copy_order_writes_each_moved_row_once_from_what_its_parent_held(parents):
    """Replaying copy_order's copies on row labels gives every row its parent's label; each row whose parent is
    another row is written once, and only cycles (rows that all wait on each other) use the spare, once each."""
    rows = list(range(len(parents)))
    spare = None
    copies = copy_order(parents)
    for row, source in copies:
        value = spare if source == SPARE else rows[source]
        if row == SPARE:
            spare = value
        else:
            rows[row] = value
    assert rows == parents
    written = [row for row, _ in copies if row != SPARE]
    assert sorted(written) == [r for r, p in enumerate(parents) if p != r]
    assert sum(row == SPARE for row, _ in copies) == cycles(parents)


def cycles(parents: list[int]) -> int:
    """The cycles of two or more rows in r -> parents[r]."""
    seen, count = set(), 0
    for start in range(len(parents)):
        path = []
        r = start
        while r not in seen and r not in path:
            path.append(r)
            r = parents[r]
        if r in path and len(path) - path.index(r) > 1:
            count += 1
        seen.update(path)
    return count


def test_fixed_shape_cache_takes_a_position_per_row():
    """FixedShapeKVCache.positions is [1] (every row at one position) or [R]: each row then writes its own slot and
    attends to the slots up to it, through the same update (what rows at different positions need)."""
    cache = FixedShapeKVCache.empty(layers=1, inputs=1, rows_per_input=2, heads=1, head_dim=2, max_length=4,
                                    source_length=3, padded=False, dtype=torch.float32, device=torch.device("cpu"))
    cache.positions = torch.tensor([0, 2])
    k = torch.tensor([1.0, 2.0]).view(2, 1, 1, 1).expand(2, 1, 1, 2)          # [R, H, 1, Dh]
    keys, values, mask = cache.update(0, torch.stack((k, -k)))
    assert keys.shape == values.shape == (2, 1, 4, 2) and mask.shape == (2, 1, 1, 4)
    assert mask[:, 0, 0].tolist() == [[True, False, False, False], [True, True, True, False]]
    assert keys[0, 0].tolist() == [[1, 1], [0, 0], [0, 0], [0, 0]]
    assert values[1, 0].tolist() == [[0, 0], [0, 0], [-2, -2], [0, 0]]
    cache.advance()
    assert cache.positions.tolist() == [1, 3] and cache.length == 1
    cache.advance(2)                                    # past the last slot: the last slot again
    assert cache.positions.tolist() == [3, 3] and cache.length == 3


def test_bucket_is_the_next_power_of_two_within_its_bounds():
    assert [bucket(n, 64) for n in (1, 15, 16, 17, 32, 33, 64, 65)] == [16, 16, 16, 32, 32, 64, 64, 64]
    assert bucket(3, 64, least=1) == 4 and bucket(4, 64, least=1) == 4 and bucket(33, 40) == 40


# ---- dtypes and devices -------------------------------------------------------------------------------------

@pytest.mark.parametrize("dtype,atol,prob_atol", [(torch.bfloat16, 0.3, 2e-3), (torch.float16, 0.05, 2e-4)])
@pytest.mark.parametrize("name", ["tiny", "tiny-mbart"])
def test_low_precision_on_cpu(load, checkpoint, name, dtype, atol, prob_atol):
    path = checkpoint(name)
    ours = BartForConditionalGeneration.from_pretrained(path, dtype=dtype)
    assert ours.dtype == dtype and all(p.dtype == dtype for p in ours.parameters())
    ids, mask, dec = make_batch(ours.config)
    logits = ours(ids, mask, dec).logits
    assert logits.dtype == dtype
    ref = load_oracle(path, dtype)
    with torch.no_grad():
        same_dtype = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec).logits
    assert_close(logits, same_dtype, 1e-3, f"{dtype} logits vs transformers {dtype}")
    fp32 = load(name)(ids, mask, dec).logits
    assert_close(logits, fp32, atol, f"{dtype} logits vs fp32")
    assert_close(logits.float().softmax(-1), fp32.softmax(-1), prob_atol, f"{dtype} probabilities vs fp32")
    cache = ours.new_cache(ours.encode(ids, mask), mask, 1, max_length=2)
    assert cache.self_kv.dtype == dtype and ours.decode_step(dec[:, 0], cache).dtype == dtype


# fp32 on the GPU against the oracle on the CPU: cuBLAS and cuDNN sum in other orders than MKL (measured on an H100:
# logits up to 1.6e-4 apart, with these models' logits in the tens), so the CUDA comparisons allow 1e-3.
CUDA_ATOL = 1e-3


@pytest.mark.cuda
@pytest.mark.parametrize("name", ["kobart", "tiny-mbart"])
def test_parity_on_cuda(checkpoint, name):
    path = checkpoint(name)
    ref = load_oracle(path)
    ours = BartForConditionalGeneration.from_pretrained(path, device="cuda")
    assert ours.device.type == "cuda"
    ids, mask, dec = make_batch(ours.config)
    with torch.no_grad():
        out = ref(input_ids=ids, attention_mask=mask, decoder_input_ids=dec)
    ids, mask, dec = ids.cuda(), mask.cuda(), dec.cuda()
    logits = ours(ids, mask, dec).logits
    assert_close(ours.encode(ids, mask).cpu(), out.encoder_last_hidden_state, CUDA_ATOL, "cuda encoder output")
    assert_close(logits.cpu(), out.logits, CUDA_ATOL, "cuda logits")
    assert torch.equal(logits.argmax(-1).cpu(), out.logits.argmax(-1))
    cache = ours.new_cache(ours.encode(ids, mask), mask, 1, max_length=dec.shape[1])
    steps = torch.stack([ours.decode_step(dec[:, t], cache) for t in range(dec.shape[1])], 1)
    assert_close(steps, logits, CUDA_ATOL, "cuda KV-cache steps")
    half = BartForConditionalGeneration.from_pretrained(path, dtype="float16", device="cuda:0")
    assert_close(half(ids, mask, dec).logits, logits, 0.5, "cuda fp16 logits vs fp32")


# ---- bad input: clear errors before any compute -------------------------------------------------------------

def test_bad_inputs(load):
    model = load("tiny")
    V, P = model.config.vocab_size, model.config.max_position_embeddings
    ids, mask, dec = make_batch(model.config, lengths=(5, 3))
    too_big = ids.clone()
    too_big[0, 1] = V
    with pytest.raises(ValueError, match=rf"input_ids contains token id {V}.*vocab_size={V}"):
        model.encode(too_big, mask)
    negative = ids.clone()
    negative[1, 0] = -1
    with pytest.raises(ValueError, match=r"input_ids contains token id -1"):
        model(negative, mask, dec)
    bad_dec = dec.clone()
    bad_dec[0, 0] = V + 5
    with pytest.raises(ValueError, match=rf"decoder_input_ids contains token id {V + 5}"):
        model(ids, mask, bad_dec)
    long = torch.full((1, P + 1), 5)
    with pytest.raises(ValueError, match=rf"input_ids has {P + 1} tokens.*max_position_embeddings={P}"):
        model.encode(long)
    with pytest.raises(ValueError, match=rf"decoder_input_ids has {P + 1} tokens"):
        model(ids[:1], mask[:1], long)
    with pytest.raises(ValueError, match=r"attention_mask has shape \[2, 4\] but input_ids has shape \[2, 5\]"):
        model.encode(ids, mask[:, :4])
    with pytest.raises(ValueError, match=r"decoder_attention_mask has shape"):
        model(ids, mask, dec, torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"input_ids is empty"):
        model.encode(torch.zeros(2, 0, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids is empty"):
        model.encode(torch.zeros(0, 4, dtype=torch.long))
    with pytest.raises(ValueError, match=r"input_ids must have shape \[batch, sequence\]"):
        model.encode(ids[0])
    with pytest.raises(TypeError, match=r"input_ids must be an integer torch.Tensor"):
        model.encode(ids.float())
    with pytest.raises(TypeError, match=r"input_ids must be an integer torch.Tensor"):
        model.encode(ids.tolist())
    with pytest.raises(ValueError, match=r"decoder_input_ids has batch size 1 but input_ids has 2"):
        model(ids, mask, dec[:1])
    for dtype in (torch.int16, torch.uint8, torch.bool):      # integer, but not what an embedding takes
        with pytest.raises(TypeError, match=rf"input_ids must be an integer torch.Tensor of token ids, got {dtype}"):
            model.encode(ids.to(dtype), mask)
    one_empty_row = mask.clone()
    one_empty_row[1] = 0                                      # the other row has tokens: still refused
    with pytest.raises(ValueError, match=r"attention_mask has a row with no token to attend to"):
        model.encode(ids, one_empty_row)


def test_inputs_at_the_limits_are_taken(load):
    """What the checks must let through: int32 ids (as transformers takes them: the same logits as int64, in forward
    and decode_step) and exactly max_position_embeddings tokens (transformers' encoder output, within ATOL)."""
    model, ref = load("tiny"), load("tiny", oracle=True)
    ids, mask, dec = make_batch(model.config, lengths=(5, 3))
    assert torch.equal(model(ids.int(), mask.int(), dec.int()).logits, model(ids, mask, dec).logits)
    enc = model.encode(ids, mask)
    caches = [model.new_cache(enc, mask, 1, max_length=1) for _ in range(2)]
    assert torch.equal(model.decode_step(dec[:, 0].int(), caches[0]), model.decode_step(dec[:, 0], caches[1]))
    P = model.config.max_position_embeddings
    longest = torch.randint(4, model.config.vocab_size, (1, P), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        want = ref.model.encoder(input_ids=longest).last_hidden_state
    assert_close(model.encode(longest), want, ATOL, "encoder output at max_position_embeddings tokens")


def test_train_mode_is_refused_as_inference_only(load):
    """The network has no dropout and builds no autograd graph: model.train() was accepted and changed nothing
    (transformers' train mode applies config.dropout), a model built from a config reported training=True.
    transformers' other forward arguments are refused by name."""
    model = load("tiny")
    ids, mask, dec = make_batch(model.config, lengths=(5, 3))
    only = ("seq2seq_kit's models are inference-only (no dropout, no gradients); fine-tune with "
            "transformers, save_pretrained, and load that folder here")
    assert not model.training and not BartForConditionalGeneration(model.config).training
    with pytest.raises(ValueError) as error:
        model.train()
    assert str(error.value) == f"model.train(): {only}"
    assert model.train(False) is model and model.eval() is model and not any(m.training for m in model.modules())
    assert model(ids, mask, labels=dec).loss.requires_grad is False
    takes = ("it takes input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, labels, "
             "output_attentions, output_hidden_states and return_dict and returns a Seq2SeqLMOutput (.logits "
             "[batch, target, vocab], .loss with labels)")
    with pytest.raises(TypeError) as error:
        model(ids, mask, dec, output_hidden_states=True, encoder_outputs=None, use_cache=False)
    assert str(error.value) == f"forward() does not take encoder_outputs: {takes}"
    with pytest.raises(TypeError) as error:     # transformers' form, without input_ids: named too (it was "missing
        model(encoder_outputs=(model.encode(ids, mask),), decoder_input_ids=dec)   # 1 required ... 'input_ids'")
    assert str(error.value) == f"forward() does not take encoder_outputs: {takes}"
    with pytest.raises(TypeError, match=r"forward\(\) needs input_ids, the source token ids \[B, S\]"):
        model(decoder_input_ids=dec)
    for use_cache in (True, False):          # transformers takes it (and returns the same logits): no-op here
        assert torch.equal(model(ids, mask, dec, use_cache=use_cache).logits, model(ids, mask, dec).logits)
    with pytest.raises(TypeError, match="does not take use_cache"):
        model(ids, mask, dec, use_cache=1)
    with pytest.raises(TypeError) as error:  # the bare network returns logits: the loss is the model class's
        BartNetwork.forward(model, ids, mask, labels=dec)
    assert str(error.value).endswith("; labels: the loss is seq2seq_kit.BartForConditionalGeneration's "
                                     "(model(..., labels=labels).loss)")


def test_bad_decode_steps(load):
    model = load("tiny")
    ids, mask, dec = make_batch(model.config, lengths=(5, 3))
    enc = model.encode(ids, mask)
    cache = model.new_cache(enc, mask, 2, max_length=2)
    with pytest.raises(ValueError, match=r"input_ids must be an integer tensor of shape \[4\]"):
        model.decode_step(dec[:, 0], cache)
    with pytest.raises(ValueError, match=r"contains token id"):
        model.decode_step(torch.full((4,), model.config.vocab_size), cache)
    step = torch.full((4,), 5)
    model.decode_step(step, cache)
    model.decode_step(step, cache)
    with pytest.raises(ValueError, match=r"KV cache is full \(2 tokens\)"):
        model.decode_step(step, cache)
    cache = model.new_cache(enc, mask, 1, max_length=model.config.max_position_embeddings + 1)
    cache.length = model.config.max_position_embeddings
    with pytest.raises(ValueError, match=r"past max_position_embeddings=256"):
        model.decode_step(dec[:, 0], cache)
    with pytest.raises(ValueError, match=r"rows_per_input must be a positive integer"):
        model.new_cache(enc, mask, 0, max_length=4)
    with pytest.raises(ValueError, match=r"rows_per_input must be a positive integer, got True"):
        model.new_cache(enc, mask, True, max_length=4)
    with pytest.raises(ValueError, match=r"max_length must be a positive integer"):
        model.new_cache(enc, mask, 1, max_length=0)
    with pytest.raises(ValueError, match=r"encoder_hidden must have shape \[batch, sequence, d_model=64\]"):
        model.new_cache(enc[..., :8], mask, 1, max_length=4)
    with pytest.raises(ValueError, match=r"attention_mask has shape \[2, 4\] but encoder_hidden has shape \[2, 5\]"):
        model.new_cache(enc, mask[:, :4], 1, max_length=4)
    with pytest.raises(ValueError, match=r"row_idx must have shape \[2\]"):
        model.new_cache(enc, mask, 1, max_length=4).reorder(torch.tensor([0, 1, 1]))


def test_generate_delegates_to_generation(load, monkeypatch):
    import seq2seq_kit.generation as generation

    model = load("tiny")
    calls = []
    monkeypatch.setattr(generation, "generate", lambda *args, **kwargs: calls.append((args, kwargs)) or "out")
    ids, mask, _ = make_batch(model.config, lengths=(4,))
    assert model.generate(ids, mask, num_beams=2) == "out"
    assert calls == [((model, ids, mask), {"num_beams": 2})]


@pytest.mark.parametrize("strict", [True, False])
def test_a_transformers_state_dict_is_refused_by_load_state_dict(load, strict):
    """transformers' names ("model.", q_proj/k_proj/v_proj) do not fit ours: strict=False silently loaded only
    lm_head.weight (into the tied embedding) and final_logits_bias; strict=True listed ~90 names as torch's error."""
    model, ref = load("tiny", keep=False), load("tiny", oracle=True)
    ids, mask, dec = make_batch(model.config, lengths=(5, 3))
    before = model(ids, mask, dec).logits
    theirs = {k: v + 1 for k, v in ref.state_dict().items()}
    names = sorted(k for k in theirs if k.startswith("model.") or "q_proj" in k or "k_proj" in k or "v_proj" in k)
    with pytest.raises(ValueError) as error:
        model.load_state_dict(theirs, strict=strict)
    assert str(error.value) == (
        f"load_state_dict got transformers' parameter names ({names[0]}, ...: {len(names)} in all); this model fuses "
        "the attention projections (self_attn.qkv_proj, encoder_attn.kv_proj) and has no 'model.' prefix: save that "
        "model with save_pretrained and load the folder with from_pretrained")
    assert torch.equal(model(ids, mask, dec).logits, before)
    bare = {k.removeprefix("model."): v for k, v in theirs.items()}       # a BartModel's names
    with pytest.raises(ValueError, match=r"load_state_dict got transformers' parameter names \(decoder\.layers\.0\."
                                         r"encoder_attn\.k_proj\.bias"):
        model.load_state_dict(bare, strict=strict)
    assert model.load_state_dict(model.state_dict(), strict=strict) is not None
