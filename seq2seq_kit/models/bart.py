"""The BART-family encoder-decoder in plain PyTorch, numerically matching transformers 5.25's BART, mBART, Marian,
Pegasus and M2M100 (NLLB) models.

The network alone: its layers, the teacher-forced forward, the encoder, and decoding one token per row on a KV cache
(models/kv_cache.py), eager or replayed from a CUDA graph (models/cuda_graph.py), after a decoder prompt's tokens
fed to the cache in one causal pass (prefill_unchecked); or several tokens per row after the cached ones, each
position's logits out of one pass (extend_unchecked: a search checking guessed tokens). It knows no files, Hub or
search:
seq2seq_kit/modeling.py adds checkpoints (loading.py) and generate (generation/).

Shapes: B inputs, S source tokens, T target tokens, D = d_model, H heads, Dh = D // H, V = the decoder's vocabulary
(config.decoder_vocab_size: vocab_size but for a Marian with its own), R = B * rows_per_input decoder rows during
generation (see models/kv_cache.py).

The parameter names are transformers' names without the "model." prefix, except the fused attention projections:
  self_attn.qkv_proj = [q_proj; k_proj; v_proj]   (encoder and decoder self-attention)
  encoder_attn.kv_proj = [k_proj; v_proj]         (decoder cross-attention)
models/bart_checkpoint.py maps checkpoint names to ours and back.

Checked and unchecked entry points: forward, teacher_forced, encode, new_cache and decode_step check their arguments
(some checks read values back from the device); check_inputs is the check alone; encode_unchecked, start_decoding,
prefill_unchecked, extend_unchecked, decode_step_unchecked and next_token_logits trust theirs (generate runs
check_inputs once, then only these).
forward and encode run under no_grad, not inference_mode: their outputs are ordinary tensors, as transformers' under
no_grad (an inference tensor refuses in-place edits such as logits[:, pad] = -inf, and being saved for backward, as
a distillation loss against the logits does); the decoding entry points keep inference_mode (a KV cache's reorder
makes inference tensors).

One network for every family (seq2seq_kit/families.py), its switches read from the config:
  post-LN (BART, Marian):  x = norm(x + sublayer(x));
  pre-LN (mBART, Pegasus, M2M100):  x = x + sublayer(norm(x)), plus a final layer norm after the encoder and decoder;
  positions: learned (BART, mBART), sinusoidal (Marian, Pegasus) or sinusoidal counted over non-pad tokens
  (M2M100 / NLLB), see models/positions.py; the embedding layer norm and final_logits_bias present or not.
A switch that is off adds no operation.
"""

from __future__ import annotations

import functools
import math
from typing import TYPE_CHECKING, Protocol

import torch
import torch.nn.functional as F
from torch import nn

from .. import cpu_memory
from . import attention, bart_checkpoint, checks, kernels, logit_screen
from .activations import ACTIVATIONS
from .checks import IGNORE_INDEX
from .cuda_graph import GraphedStep, graph_key
from .kernels import KernelLinear
from .kv_cache import FixedShapeKVCache, KVCache, row_ranges
from .logit_screen import LogitScreen, ScreenedLogits
from .positions import Positions
from .quantize import ROWS_PER_CALL, Int8Embedding, Int8Linear, quantize_int8

# On the CPU the encoder's FFN runs over blocks of at least this many rows when a pass has twice as many: the fc1
# activations of a whole batch (8 inputs of 1000 tokens: 131 MB) overflow the caches, a block's do not. Measured on
# an AMD EPYC (Zen 5, 32 MB L3), distilbart: 8 x 1000 tokens 8.7 s against 10.8 s whole, as fast per input as one
# input alone; the rows' values are the same (bit for bit there: each row's products do not depend on the others).
# int8 layers run it in blocks of the rows one int8 call quantizes together (quantize.ROWS_PER_CALL): a 512-token
# source's fc1 activations and their GELU (16 MB) are never whole, and the int8 result is the same as whole.
ENCODER_FFN_ROWS = 1024

if TYPE_CHECKING:
    from ..config import BartConfig


SDPA = F.scaled_dot_product_attention     # what every attention runs; recording() wraps it to record


class Recorder(Protocol):
    """What a traced pass (teacher_forced / encode_unchecked / prefill_unchecked / decode_step_unchecked with
    trace=...) hands over, layer by layer: attention(kind, probs), kind "encoder" (self-attention [B, H, S, S]),
    "decoder" (decoder self-attention [R, H, T, t]: T = 1 in a step, a prompt's tokens in a prefill, the target's in
    teacher_forced) or "cross" ([R, H, T, S]), each kind's layers in order, only when `attentions` is true;
    hidden(side, x), side "encoder" / "decoder": the embeddings' output, each layer's output but the last, then the
    side's output (the last layer's, after the final layer norm where the family has one), as transformers'."""
    attentions: bool

    def attention(self, kind: str, probs: torch.Tensor) -> None: ...

    def hidden(self, side: str, x: torch.Tensor) -> None: ...


def attention_probs(q: torch.Tensor, k: torch.Tensor, mask: torch.Tensor | None, causal: bool,
                    scale: float) -> torch.Tensor:
    """softmax(q k^T * scale + mask): q [..., Tq, Dh], k [..., Tk, Dh], mask bool (True = attend) broadcastable to
    [..., Tq, Tk] or None, causal: query i attends to keys 0..i -> [..., Tq, Tk] in q's dtype, as transformers'
    eager attention computes them: masked scores are the dtype's lowest finite value, so a query with every key
    masked (a left-padded decoder's pad position) attends to all keys evenly there, not NaN."""
    scores = torch.matmul(q, k.transpose(-1, -2)) * scale                  # [..., Tq, Tk]
    lowest = torch.finfo(scores.dtype).min
    if causal:
        scores = scores.masked_fill(~torch.ones_like(scores, dtype=torch.bool).tril(), lowest)
    if mask is not None:
        scores = scores.masked_fill(~mask, lowest)
    return scores.softmax(dim=-1)


def recording(trace: Recorder, kind: str, layout=None, attend=SDPA):
    """`attend` (SDPA, or a decode step's own: models/attention.py) that also hands `trace` the attention
    probabilities (attention_probs, beside it, not instead of it: the output is attend's bit for bit, except for a
    query with every key masked, a left-padded decoder's pad position, whose output is eager's even average of the
    values, as the probabilities handed over say: transformers gives attentions from its eager attention only);
    layout: maps them to the rows' layout before they are handed over."""
    def recorded(q, k, v, attn_mask=None, is_causal=False, scale=None):
        probs = attention_probs(q, k, attn_mask, is_causal, scale)                 # [B, H, Tq, Tk]
        trace.attention(kind, probs if layout is None else layout(probs))
        out = attend(q, k, v, attn_mask=attn_mask, is_causal=is_causal, scale=scale)   # [B, H, Tq, Dh]
        if attn_mask is not None:
            keyless = ~attn_mask.any(dim=-1, keepdim=True)                            # [B, 1, Tq, 1]
            if bool(keyless.any()):
                out = torch.where(keyless, probs @ v, out)
        return out
    return recorded


def input_rows(cache: KVCache):
    """A layout for recording(): a cache's per-input cross-attention probabilities [B, H, n * T, S] (its
    input_queries' layout) -> each row's [R, H, T, S]."""
    def layout(probs: torch.Tensor) -> torch.Tensor:
        H, S = probs.shape[1], probs.shape[3]
        return cache.row_outputs(probs).view(cache.num_rows, -1, H, S).transpose(1, 2)   # [R, T, H*S] -> [R, H, T, S]
    return layout


def sublayer(pre_ln: bool, x: torch.Tensor, norm: nn.LayerNorm, fn, *args) -> torch.Tensor:
    """Residual block around fn: x + fn(norm(x)) (pre-LN, mBART) or norm(x + fn(x)) (post-LN, BART)."""
    return x + fn(norm(x), *args) if pre_ln else norm(x + fn(x, *args))


class SelfAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.scale = self.head_dim ** -0.5
        self.qkv_proj = KernelLinear(d_model, 3 * d_model)   # rows: q_proj, k_proj, v_proj
        self.out_proj = KernelLinear(d_model, d_model)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None, causal: bool = False,
                attend=SDPA) -> torch.Tensor:
        B, T, D = x.shape                                                   # x [B, T, D]
        qkv = self.qkv_proj(x).view(B, T, 3, self.heads, self.head_dim)
        q, k, v = qkv.permute(2, 0, 3, 1, 4)                                # each [B, H, T, Dh]
        y = attend(q, k, v, attn_mask=mask, is_causal=causal, scale=self.scale)
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))

    def step(self, x: torch.Tensor, caches: list[KVCache], layer: int, attend=SDPA) -> torch.Tensor:
        """One token per row: x [R, 1, D] -> [R, 1, D], R = the caches' rows in order. The projections run over
        all rows at once; each cache takes its rows' keys/values and returns what they attend to (its slots so
        far, or all of them with a mask: see models/kv_cache.py). attend: SDPA, or recording()'s."""
        R, _, D = x.shape
        qkv = self.qkv_proj(x).view(R, 1, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # [3, R, H, 1, Dh]
        q, kv = qkv[0], qkv[1:]                                             # [R, H, 1, Dh], [2, R, H, 1, Dh]
        ys = []
        for rows, cache in row_ranges(caches):
            keys, values, mask = cache.update(layer, kv[:, rows])           # [r, H, slots, Dh], mask or None
            ys.append(attend(q[rows], keys, values, attn_mask=mask, scale=self.scale))
        y = ys[0] if len(ys) == 1 else torch.cat(ys)                        # [R, H, 1, Dh]
        return self.out_proj(y.transpose(1, 2).reshape(R, 1, D))

    def extend(self, x: torch.Tensor, cache: KVCache, layer: int, attend=SDPA) -> torch.Tensor:
        """T tokens per row after the cache's t = `length` ones: x [R, T, D] -> [R, T, D], token i attending to the
        cached tokens, itself and the new ones before it; their keys/values go to slots t .. t + T - 1. From an
        empty cache (a decoder prompt) causal attention over the T, as forward's; after cached ones, a mask (the
        step's own kernel takes one query per row and head). attend: SDPA, or recording()'s."""
        R, T, D = x.shape
        qkv = self.qkv_proj(x).view(R, T, 3, self.heads, self.head_dim).permute(2, 0, 3, 1, 4)   # [3, R, H, T, Dh]
        keys, values = cache.extend(layer, qkv[1:])                         # [R, H, t + T, Dh]
        t = keys.shape[2] - T
        mask = None if t == 0 else torch.ones(T, t + T, dtype=torch.bool, device=x.device).tril(t)   # [T, t + T]
        y = attend(qkv[0], keys, values, attn_mask=mask, is_causal=t == 0, scale=self.scale)  # [R, H, T, Dh]
        return self.out_proj(y.transpose(1, 2).reshape(R, T, D))


class CrossAttention(nn.Module):
    def __init__(self, d_model: int, heads: int):
        super().__init__()
        self.heads, self.head_dim = heads, d_model // heads
        self.scale = self.head_dim ** -0.5
        self.q_proj = KernelLinear(d_model, d_model)
        self.kv_proj = KernelLinear(d_model, 2 * d_model)   # rows: k_proj, v_proj
        self.out_proj = KernelLinear(d_model, d_model)

    def project_kv(self, enc: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, S, _ = enc.shape                                                 # enc [B, S, D]
        kv = self.kv_proj(enc).view(B, S, 2, self.heads, self.head_dim)
        k, v = kv.permute(2, 0, 3, 1, 4)                                    # each [B, H, S, Dh]
        return k, v

    def project_kv_into(self, enc: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """enc [B, S, D]'s keys and values written into k, v [B, H, S, Dh]. An int8 projection runs block by block,
        its own blocks of ROWS_PER_CALL rows of the flattened [B * S] (so the values of one call over every row),
        each block's result copied into place at once: no [B * S, 2D] result beside the cache."""
        if not isinstance(self.kv_proj, Int8Linear):
            new_k, new_v = self.project_kv(enc)
            k.copy_(new_k)
            v.copy_(new_v)
            return
        B, S, D = enc.shape
        rows = enc.reshape(B * S, D)
        for first in range(0, B * S, ROWS_PER_CALL):
            kv = self.kv_proj(rows[first:first + ROWS_PER_CALL])            # [n, 2D]: rows first .. first + n - 1
            last = first + kv.shape[0]
            for b in range(first // S, (last - 1) // S + 1):                # the inputs those rows belong to
                s0, s1 = max(first - b * S, 0), min(last - b * S, S)        # their positions in input b
                part = kv[b * S + s0 - first:b * S + s1 - first].view(s1 - s0, 2, self.heads, self.head_dim)
                k[b, :, s0:s1].copy_(part[:, 0].transpose(0, 1))            # [H, s1 - s0, Dh]
                v[b, :, s0:s1].copy_(part[:, 1].transpose(0, 1))

    def forward(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None,
                attend=SDPA) -> torch.Tensor:
        """x [B, T, D] (T target positions) attending to k, v [B, H, S, Dh] -> [B, T, D]; attend: SDPA, or
        recording()'s."""
        B, T, D = x.shape
        q = self.q_proj(x).view(B, T, self.heads, self.head_dim).transpose(1, 2)   # [B, H, T, Dh]
        y = attend(q, k, v, attn_mask=mask, scale=self.scale)                      # mask [B, 1, 1, S]
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))

    def step(self, x: torch.Tensor, caches: list[KVCache], layer: int, attend=SDPA) -> torch.Tensor:
        """T tokens per row (1 in a decode step, a prompt's in a prefill on one eager cache): x [R, T, D] ->
        [R, T, D]. Each cache's B inputs attend to their own encoder keys and values once, an input's rows' tokens
        as its query positions ([B, H, n * T, Dh]: the cache's input_queries). attend: SDPA, or recording()'s
        (with one cache)."""
        q = self.q_proj(x)                                                  # [R, T, D]
        ys = []
        for rows, cache in row_ranges(caches):
            q_c = cache.input_queries(q[rows], self.heads)                  # [B, H, n * T, Dh]
            y = attend(q_c, cache.cross_k[layer], cache.cross_v[layer], attn_mask=cache.cross_mask,
                       scale=self.scale)                                    # [B, H, n * T, Dh]
            ys.append(cache.row_outputs(y))                                 # [r, T, D]
        return self.out_proj(ys[0] if len(ys) == 1 else torch.cat(ys))


class EncoderLayer(nn.Module):
    def __init__(self, config: BartConfig):
        super().__init__()
        D = config.d_model
        self.pre_ln = config.pre_layer_norm
        self.self_attn = SelfAttention(D, config.encoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = KernelLinear(D, config.encoder_ffn_dim)
        self.fc2 = KernelLinear(config.encoder_ffn_dim, D)
        self.act = ACTIVATIONS[config.activation_function]
        self.final_layer_norm = nn.LayerNorm(D)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:                          # x [B, S, D]
        rows = x.reshape(-1, x.shape[-1])                                   # [B*S, D]
        if isinstance(self.fc1, Int8Linear):
            blocks = rows.split(ROWS_PER_CALL)
        else:
            blocks = rows.tensor_split(max(rows.shape[0] // ENCODER_FFN_ROWS, 1))
        if x.device.type != "cpu" or len(blocks) < 2:
            return self.fc2(self.act(self.fc1(x)))
        return torch.cat([self.fc2(self.act(self.fc1(r))) for r in blocks]).view_as(x)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None, attend=SDPA) -> torch.Tensor:
        x = sublayer(self.pre_ln, x, self.self_attn_layer_norm, self.self_attn, mask, False, attend)
        x = sublayer(self.pre_ln, x, self.final_layer_norm, self.ffn)
        # fp16 overflow guard, as transformers: the pre-LN families (mBART, Pegasus, M2M100) always clamp, BART and
        # Marian only when something overflowed.
        if x.dtype == torch.float16 and (self.pre_ln or not torch.isfinite(x).all()):
            limit = torch.finfo(torch.float16).max - 1000
            x = x.clamp(min=-limit, max=limit)
        return x


class DecoderLayer(nn.Module):
    def __init__(self, config: BartConfig):
        super().__init__()
        D = config.d_model
        self.pre_ln = config.pre_layer_norm
        self.self_attn = SelfAttention(D, config.decoder_attention_heads)
        self.self_attn_layer_norm = nn.LayerNorm(D)
        self.encoder_attn = CrossAttention(D, config.decoder_attention_heads)
        self.encoder_attn_layer_norm = nn.LayerNorm(D)
        self.fc1 = KernelLinear(D, config.decoder_ffn_dim)
        self.fc2 = KernelLinear(config.decoder_ffn_dim, D)
        self.act = ACTIVATIONS[config.activation_function]
        self.final_layer_norm = nn.LayerNorm(D)

    def ffn(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))

    def forward(self, x, enc, enc_mask, self_mask, causal, self_attend=SDPA, cross_attend=SDPA):
        """x [B, T, D], enc [B, S, D] -> [B, T, D]; the attends: SDPA, or recording()'s."""
        k, v = self.encoder_attn.project_kv(enc)
        x = sublayer(self.pre_ln, x, self.self_attn_layer_norm, self.self_attn, self_mask, causal, self_attend)
        x = sublayer(self.pre_ln, x, self.encoder_attn_layer_norm, self.encoder_attn, k, v, enc_mask, cross_attend)
        return sublayer(self.pre_ln, x, self.final_layer_norm, self.ffn)

    def step(self, x: torch.Tensor, caches: list[KVCache], i: int, self_attend=SDPA,
             cross_attend=SDPA) -> torch.Tensor:
        """x [R, 1, D] -> [R, 1, D]; i: this layer's index; the attends: SDPA, or recording()'s."""
        x = sublayer(self.pre_ln, x, self.self_attn_layer_norm, self.self_attn.step, caches, i, self_attend)
        x = sublayer(self.pre_ln, x, self.encoder_attn_layer_norm, self.encoder_attn.step, caches, i, cross_attend)
        return sublayer(self.pre_ln, x, self.final_layer_norm, self.ffn)

    def extend(self, x: torch.Tensor, cache: KVCache, i: int, self_attend=SDPA, cross_attend=SDPA) -> torch.Tensor:
        """x [R, T, D] -> [R, T, D]: T tokens per row after the cache's `length` (SelfAttention.extend); the
        cross-attention's T queries per row as a step's rows. The attends: SDPA, recording()'s, or (cross) the
        step's own."""
        x = sublayer(self.pre_ln, x, self.self_attn_layer_norm, self.self_attn.extend, cache, i, self_attend)
        x = sublayer(self.pre_ln, x, self.encoder_attn_layer_norm, self.encoder_attn.step, [cache], i, cross_attend)
        return sublayer(self.pre_ln, x, self.final_layer_norm, self.ffn)


def embedding_layer_norm(config: BartConfig) -> nn.LayerNorm | None:
    return nn.LayerNorm(config.d_model) if config.family.embedding_layer_norm else None


def token_embedding(rows: int, dim: int) -> nn.Embedding:
    """nn.Embedding(rows, dim), N(0, 1) as torch initializes it, except on the meta device (a model built to be
    loaded): no initialization there, which would import torch._dynamo (~70 MB resident, ~1 s) to run normal_."""
    weight = torch.empty(rows, dim)                                          # [rows, dim] on the default device
    if weight.device.type != "meta":
        nn.init.normal_(weight)
    return nn.Embedding(rows, dim, _weight=weight)


def own_embeddings(config: BartConfig, vocab_size: int) -> nn.Embedding | None:
    """A side's own token embedding (Marian with a separate decoder vocabulary), else None: model.shared."""
    return None if config.shared_embeddings else token_embedding(vocab_size, config.d_model)


class Encoder(nn.Module):
    def __init__(self, config: BartConfig):
        super().__init__()
        D = config.d_model
        self.embed_tokens = own_embeddings(config, config.vocab_size)
        self.embed_positions = Positions(config)
        self.layernorm_embedding = embedding_layer_norm(config)
        self.layers = nn.ModuleList(EncoderLayer(config) for _ in range(config.encoder_layers))
        self.layer_norm = nn.LayerNorm(D) if config.pre_layer_norm else None

    def forward(self, tok: torch.Tensor, ids: torch.Tensor, mask: torch.Tensor | None,
                trace: Recorder | None = None) -> torch.Tensor:
        x = tok + self.embed_positions(ids)                                 # tok [B, S, D] scaled embeddings of ids
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        for layer in self.layers:
            if trace is None:
                x = layer(x, mask)                                          # mask [B, 1, 1, S] or None
            else:
                trace.hidden("encoder", x)
                x = layer(x, mask, recording(trace, "encoder") if trace.attentions else SDPA)
        x = self.layer_norm(x) if self.layer_norm is not None else x       # [B, S, D]
        if trace is not None:
            trace.hidden("encoder", x)
        return x


class Decoder(nn.Module):
    def __init__(self, config: BartConfig):
        super().__init__()
        D = config.d_model
        self.embed_tokens = own_embeddings(config, config.decoder_vocab_size)
        self.embed_positions = Positions(config)
        self.layernorm_embedding = embedding_layer_norm(config)
        self.layers = nn.ModuleList(DecoderLayer(config) for _ in range(config.decoder_layers))
        self.layer_norm = nn.LayerNorm(D) if config.pre_layer_norm else None
        self.step_attend = SDPA     # what a decode step's attention runs: SDPA, or models/attention.py's (CPU)

    def forward(self, tok, ids, enc, enc_mask, self_mask, causal, trace: Recorder | None = None):
        """tok [B, T, D] the scaled embeddings of ids, enc [B, S, D] -> [B, T, D]. trace: a Recorder for the
        layers' attentions ([B, H, T, T] self, [B, H, T, S] cross) and hidden states."""
        x = tok + self.embed_positions(ids)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        for layer in self.layers:
            x = layer(x, enc, enc_mask, self_mask, causal, *(() if trace is None else traced(trace, x)))
        x = self.layer_norm(x) if self.layer_norm is not None else x       # [B, T, D]
        if trace is not None:
            trace.hidden("decoder", x)
        return x

    def step(self, tok: torch.Tensor, ids: torch.Tensor, caches: list[KVCache],
             trace: Recorder | None = None) -> torch.Tensor:
        """tok [R, 1, D] the scaled embeddings of ids [R], one token per row at each cache's position -> [R, 1, D].
        trace: a Recorder for this step's attentions and hidden states (with one cache)."""
        x = tok + self.embed_positions.step(ids, caches)
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        for i, layer in enumerate(self.layers):                             # x [R, 1, D]
            attends = (self.step_attend,) * 2 if trace is None else traced(trace, x, caches, self.step_attend)
            x = layer.step(x, caches, i, *attends)
        x = self.layer_norm(x) if self.layer_norm is not None else x
        if trace is not None:
            trace.hidden("decoder", x)
        return x

    def extend(self, tok: torch.Tensor, ids: torch.Tensor, cache: KVCache,
               trace: Recorder | None = None) -> torch.Tensor:
        """tok [R, T, D] the scaled embeddings of ids [R, T], T tokens per row after the cache's `length` ones (from
        an empty cache: a decoder prompt) -> the decoder's output [R, T, D]; their keys/values written into the
        cache (not advanced). trace: a Recorder for this pass's attentions and hidden states (as step's)."""
        x = tok + self.embed_positions.extend(ids, cache.length)            # [R, T, D]
        if self.layernorm_embedding is not None:
            x = self.layernorm_embedding(x)
        for i, layer in enumerate(self.layers):                             # cross-attention: the step's kernel
            attends = (SDPA, self.step_attend) if trace is None else traced(trace, x, [cache], SDPA, self.step_attend)
            x = layer.extend(x, cache, i, *attends)
        x = self.layer_norm(x) if self.layer_norm is not None else x
        if trace is not None:
            trace.hidden("decoder", x)
        return x


def traced(trace: Recorder, x: torch.Tensor, caches: list[KVCache] | None = None, attend=SDPA,
           cross_attend=None) -> tuple:
    """Before a traced decoder layer: hand trace its input x [R, T, D]; -> the layer's (self, cross) attends:
    recording()'s when trace.attentions, else `attend` (and `cross_attend`, if given, for the cross-attention).
    caches: a step's or prefill's (one), whose cross-attention probabilities are mapped to its rows; None in the
    teacher-forced forward (already [B, H, T, S])."""
    cross_attend = attend if cross_attend is None else cross_attend
    trace.hidden("decoder", x)
    if not trace.attentions:
        return attend, cross_attend
    if caches is None:
        return recording(trace, "decoder", attend=attend), recording(trace, "cross", attend=cross_attend)
    if len(caches) != 1:
        raise ValueError("a traced decoder step runs on one cache (generate's), not a group of them")
    return recording(trace, "decoder", attend=attend), recording(trace, "cross", input_rows(caches[0]), cross_attend)


INFERENCE_ONLY = ("seq2seq_kit's models are inference-only (no dropout, no gradients); fine-tune with "
                  "transformers, save_pretrained, and load that folder here")


FORWARD_TAKES = ("input_ids, attention_mask, decoder_input_ids and decoder_attention_mask and returns the logits "
                 "[batch, target, vocab]")


def check_forward_kwargs(unsupported: dict, takes: str = FORWARD_TAKES) -> None:
    """forward's keyword arguments beyond its own (transformers' labels, encoder_outputs, ...): refused by name,
    but use_cache True / False (no cache is returned; the logits are those of either); takes: what that forward
    takes and returns, for the message."""
    unsupported = {k: v for k, v in unsupported.items() if not (k == "use_cache" and isinstance(v, bool))}
    if not unsupported:
        return
    loss = ("; labels: the loss is seq2seq_kit.BartForConditionalGeneration's (model(..., labels=labels).loss)"
            if "labels" in unsupported else "")
    raise TypeError(f"forward() does not take {', '.join(sorted(unsupported))}: it takes {takes}{loss}")


def shift_tokens_right(ids: torch.Tensor, config: BartConfig) -> torch.Tensor:
    """Teacher-forcing decoder inputs made from `ids` as transformers does when none are given: BART prepends
    decoder_start_token_id; mBART moves each row's last non-pad token (the language id) to the front; the other
    families make none (ValueError asking for them, as transformers refuses)."""
    if config.family.shifted_inputs is None:
        raise ValueError(f"pass decoder_input_ids: a {config.family.name} model makes none from input_ids (as in "
                         "transformers, which shifts only labels right)")
    return shifted_right(ids, config, config.family.shifted_inputs)


def shift_labels(labels: torch.Tensor, config: BartConfig) -> torch.Tensor:
    """The decoder inputs transformers makes from labels [B, T] when none are given (every family): the ignored
    positions (IGNORE_INDEX) read as pad, then shifted right as the family shifts input_ids (mBART: behind each row's
    last non-pad token), else behind decoder_start_token_id."""
    ids = labels.masked_fill(labels == IGNORE_INDEX, config.pad_token_id)
    return shifted_right(ids, config, config.family.shifted_inputs or "start")


def shifted_right(ids: torch.Tensor, config: BartConfig, how: str) -> torch.Tensor:
    """ids [B, T] shifted one right, behind decoder_start_token_id ("start") or each row's last non-pad token
    ("last_token")."""
    shifted = ids.new_empty(ids.shape)
    shifted[:, 1:] = ids[:, :-1]
    if how == "last_token":
        last = (ids.ne(config.pad_token_id).sum(dim=1) - 1).clamp(min=0)
        shifted[:, 0] = ids.gather(1, last[:, None])[:, 0]
    elif config.decoder_start_token_id is None:
        raise ValueError("config.decoder_start_token_id is not set; pass decoder_input_ids")
    else:
        shifted[:, 0] = config.decoder_start_token_id
    return shifted


def label_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """transformers' loss: the mean cross-entropy of logits [B, T, V] against labels [B, T] over the positions that
    are not IGNORE_INDEX (none: nan, as there), in the logits' dtype -> a scalar tensor."""
    return F.cross_entropy(logits.flatten(0, 1), labels.flatten().to(logits.device, torch.long),
                           ignore_index=IGNORE_INDEX)


class BartNetwork(nn.Module):
    """The BART-family network with its LM head (each family's switches: seq2seq_kit/families.py).
    seq2seq_kit.BartForConditionalGeneration adds checkpoints and generate; build this one directly for a randomly
    initialised network."""

    def __init__(self, config: BartConfig):
        super().__init__()
        D, V = config.d_model, config.decoder_vocab_size        # V: the decoder's vocabulary (the logits' width)
        self.config = config
        self.graphed_step: GraphedStep | None = None    # the CUDA-graphed step kept by start_decoding
        self.screen: LogitScreen | None = None          # the LM head's int8 copy for greedy steps (logit_screen())
        self.greedy_screen = False                      # whether greedy steps are screened (set_greedy_screen)
        self.embed_scale = math.sqrt(D) if config.scale_embedding else 1.0
        # One token embedding for both sides, or (Marian, share_encoder_decoder_embeddings false) none here and
        # encoder.embed_tokens [vocab_size, D], decoder.embed_tokens [decoder_vocab_size, D], as transformers.
        self.shared = token_embedding(config.vocab_size, D) if config.shared_embeddings else None
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.lm_head = KernelLinear(D, V, bias=False)
        self.register_buffer("final_logits_bias", torch.zeros(1, V) if config.family.final_logits_bias else None)
        self.tie_weights()
        self.set_kernels(kernels.DEFAULT)
        self.train(False)                               # inference only: never in train mode (see train)

    @property
    def encoder_embeddings(self) -> nn.Embedding:
        return self.shared if self.shared is not None else self.encoder.embed_tokens

    @property
    def decoder_embeddings(self) -> nn.Embedding:
        return self.shared if self.shared is not None else self.decoder.embed_tokens

    def tie_weights(self) -> None:
        """The LM head shares the decoder's token embedding unless config.tie_word_embeddings is false."""
        if self.config.tie_word_embeddings:
            self.lm_head.weight = self.decoder_embeddings.weight

    def train(self, mode: bool = True) -> BartNetwork:
        """eval() (train(False)) as torch's. Train mode is refused: this network has no dropout and its forward
        builds no autograd graph, so transformers' train-mode outputs and a backward pass cannot be had here."""
        if mode:
            raise ValueError(f"model.train(): {INFERENCE_ONLY}")
        return super().train(False)

    @property
    def device(self) -> torch.device:
        return self.decoder.embed_positions.weight.device   # float in every model (int8 ones too: quantize.py)

    @property
    def dtype(self) -> torch.dtype:
        return self.decoder.embed_positions.weight.dtype

    def num_parameters(self, only_trainable: bool = False, exclude_embeddings: bool = False) -> int:
        """As transformers counts them: tied weights once, and Marian's and Pegasus' sinusoidal position tables,
        buffers here (nothing learns them) but parameters there. only_trainable counts the same (every parameter of
        a model loaded there requires grad); exclude_embeddings leaves out the token and position tables, as it
        leaves out transformers' nn.Embedding weights."""
        return self.parameter_count() - (self.embedding_count() if exclude_embeddings else 0)

    def embedding_count(self) -> int:
        """The token and position tables' values among parameter_count(): M2M100's fixed tables are buffers there
        too; tie_word_embeddings false, transformers 5 counts one token table three times (see parameter_count)."""
        tables = {id(e): e.num_embeddings * e.embedding_dim for e in (self.encoder_embeddings, self.decoder_embeddings)}
        untied = self.shared is not None and not self.config.tie_word_embeddings
        positions = (self.encoder.embed_positions, self.decoder.embed_positions)
        counted = self.config.family.positions in ("learned", "sinusoidal")
        tokens = sum(tables.values()) * (3 if untied else 1)
        return tokens + (sum(t.weight.numel() for t in positions) if counted else 0)

    def parameter_count(self) -> int:
        """num_parameters() with nothing left out."""
        tables = (self.encoder.embed_positions, self.decoder.embed_positions)
        fixed = sum(t.weight.numel() for t in tables) if self.config.family.positions == "sinusoidal" else 0
        # untied (tie_word_embeddings false), transformers 5 holds shared, encoder.embed_tokens and
        # decoder.embed_tokens as three parameters; here they are one (their copies must be equal to load)
        untied = self.shared is not None and not self.config.tie_word_embeddings
        copies = 2 * self.shared.num_embeddings * self.shared.embedding_dim if untied else 0   # int8: no .weight
        # int8 layers (quantize_int8) hold their weights outside parameters(): a packed matrix, int8 rows (buffers)
        int8 = sum(m.num_weights for m in self.modules() if isinstance(m, Int8Linear)) \
            + sum(m.qweight.numel() for m in self.modules() if isinstance(m, Int8Embedding))
        if self.config.tie_word_embeddings and isinstance(self.lm_head, Int8Linear):
            int8 -= self.lm_head.num_weights          # tied: its own packed copy of the embedding, counted once
        return sum(p.numel() for p in self.parameters()) + fixed + copies + int8

    # ---- the network ----------------------------------------------------------------------------------------

    def embed(self, ids: torch.Tensor, embeddings: nn.Embedding) -> torch.Tensor:
        return embeddings(ids) * self.embed_scale                           # [..., D]

    def logits(self, h: torch.Tensor) -> torch.Tensor:
        return self.add_bias(self.lm_head(h))                               # [..., V]

    def add_bias(self, logits: torch.Tensor) -> torch.Tensor:
        """logits: the LM head's fresh output, which takes the bias in place (no second [R, V] tensor)."""
        if self.final_logits_bias is None:
            return logits
        if logits.dtype != self.final_logits_bias.dtype:    # autocast: bfloat16 logits + the float32 bias -> float32,
            return logits + self.final_logits_bias          # as transformers (in place would round the sum to bf16)
        return logits.add_(self.final_logits_bias)

    @torch.no_grad()    # not inference_mode (nor encode): see the module docstring
    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None,
                decoder_attention_mask: torch.Tensor | None = None, **unsupported) -> torch.Tensor:
        """Teacher-forced pass -> logits [B, T, V] (transformers' output.logits). Without decoder_input_ids,
        input_ids shifted right are used where the family's transformers model makes them (shift_tokens_right).
        Checks every argument (see check_inputs); refuses transformers' other arguments (labels: the loss is
        BartForConditionalGeneration's, see check_forward_kwargs)."""
        check_forward_kwargs(unsupported)
        return self.teacher_forced(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask)[0]

    @torch.no_grad()
    def teacher_forced(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                       decoder_input_ids: torch.Tensor | None = None,
                       decoder_attention_mask: torch.Tensor | None = None,
                       trace: Recorder | None = None,
                       labels: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """forward's pass, its arguments checked the same -> (logits [B, T, V], the encoder's output [B, S, D]).
        trace: a Recorder the layers hand their attentions ("encoder" [B, H, S, S], "decoder" [B, H, T, T], "cross"
        [B, H, T, S]) and hidden states ([B, S, D], [B, T, D]) to; the logits are the same bit for bit.
        labels: a loss's target ids [B, T] (checks.check_labels), the decoder inputs' source when none are given
        (shift_labels); the loss is label_loss(logits, labels)."""
        enc_mask = self.check_inputs(input_ids, attention_mask)
        if labels is not None:
            checks.check_labels(labels, decoder_input_ids, batch=input_ids.shape[0],
                                vocab_size=self.config.decoder_vocab_size,
                                max_positions=self.config.max_position_embeddings, device=self.device)
        made = None                         # decoder inputs made here, not given: what a mask's error calls them
        if decoder_input_ids is None:
            made = "the decoder inputs made from " + ("input_ids" if labels is None else "labels")
            decoder_input_ids = (shift_tokens_right(input_ids, self.config) if labels is None
                                 else shift_labels(labels, self.config))
        self._check_ids(decoder_input_ids, "decoder_input_ids", self.config.decoder_vocab_size)
        if decoder_input_ids.shape[0] != input_ids.shape[0]:
            raise ValueError(f"decoder_input_ids has batch size {decoder_input_ids.shape[0]} but input_ids has "
                             f"{input_ids.shape[0]}; they must match")
        dec_mask = checks.padding_mask(decoder_attention_mask, decoder_input_ids, "decoder_attention_mask",
                                       made or "decoder_input_ids", self.device)
        enc_mask = None if enc_mask is None else enc_mask[:, None, None, :]            # [B, 1, 1, S]
        self_mask = None
        if dec_mask is not None:                                 # causal and padded keys: [B, 1, T, T]
            T = decoder_input_ids.shape[1]
            causal = torch.ones(T, T, dtype=torch.bool, device=self.device).tril()
            self_mask = causal & dec_mask[:, None, None, :]
        enc = self.encoder(self.embed(input_ids, self.encoder_embeddings), input_ids, enc_mask, trace)
        h = self.decoder(self.embed(decoder_input_ids, self.decoder_embeddings), decoder_input_ids, enc, enc_mask,
                         self_mask, self_mask is None, trace)
        return self.logits(h), enc

    @torch.no_grad()
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor:
        """input_ids [B, S], attention_mask [B, S] (1 = token, 0 = padding) -> encoder_hidden [B, S, D].
        Checks its arguments (see check_inputs)."""
        return self.run_encoder(input_ids, self.check_inputs(input_ids, attention_mask))

    @torch.inference_mode()
    def encode_unchecked(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                         trace: Recorder | None = None) -> torch.Tensor:
        """encode for checked arguments: padding_mask is check_inputs' result (bool [B, S], or None: no padding).
        trace: a Recorder the layers hand their attentions and hidden states to (see Recorder)."""
        return self.run_encoder(input_ids, padding_mask, trace)

    def run_encoder(self, input_ids: torch.Tensor, padding_mask: torch.Tensor | None,
                    trace: Recorder | None = None) -> torch.Tensor:
        """The encoder network under the caller's grad mode: input_ids [B, S] -> [B, S, D]. Checks nothing."""
        mask = None if padding_mask is None else padding_mask[:, None, None, :]         # [B, 1, 1, S]
        return self.encoder(self.embed(input_ids, self.encoder_embeddings), input_ids, mask, trace)

    # ---- decoding on a KV cache (models/kv_cache.py) --------------------------------------------------------

    def new_cache(self, encoder_hidden: torch.Tensor, attention_mask: torch.Tensor | None, rows_per_input: int,
                  max_length: int, *, fixed_shape: bool = False) -> KVCache:
        """A cache for R = B * rows_per_input decoder rows of up to max_length tokens, holding encoder_hidden's
        [B, S, D] cross-attention keys/values (computed here, once per input). fixed_shape: a FixedShapeKVCache
        (what a CUDA graph captures), else the eager KVCache. Checks its arguments."""
        if not isinstance(encoder_hidden, torch.Tensor) or encoder_hidden.dim() != 3 \
                or encoder_hidden.shape[2] != self.config.d_model:
            raise ValueError(f"encoder_hidden must have shape [batch, sequence, d_model={self.config.d_model}], "
                             f"got {getattr(encoder_hidden, 'shape', type(encoder_hidden).__name__)}")
        checks.check_positive_int(rows_per_input, "rows_per_input")
        checks.check_positive_int(max_length, "max_length")
        mask = checks.padding_mask(attention_mask, encoder_hidden, "attention_mask", "encoder_hidden", self.device)
        return self._new_cache(encoder_hidden, mask, rows_per_input, max_length, fixed_shape)

    @torch.no_grad()   # not inference_mode: the generation loop may update the cache's tensors outside it
    def _new_cache(self, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None, rows_per_input: int,
                   max_length: int, fixed_shape: bool = False) -> KVCache:
        B, S, _ = encoder_hidden.shape
        H = self.config.decoder_attention_heads
        kind = FixedShapeKVCache if fixed_shape else KVCache
        if self.device.type == "cpu":       # the encoder's temporaries are freed for good: their pages go back before
            cpu_memory.release_freed_memory()                   # the cache takes its own (cpu_memory's docstring)
        cache = kind.empty(layers=len(self.decoder.layers), inputs=B, rows_per_input=rows_per_input, heads=H,
                           head_dim=self.config.d_model // H, max_length=max_length, source_length=S,
                           padded=padding_mask is not None, dtype=self.dtype, device=self.device)
        self.project_cross_kv(cache, encoder_hidden, padding_mask)
        return cache

    @torch.no_grad()
    def project_cross_kv(self, cache: KVCache, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None):
        """Write encoder_hidden's [B, S, D] cross-attention keys/values, each decoder layer's [B, H, S, Dh], and
        padding_mask [B, S] (or None) into a cache of those shapes. Unchecked."""
        for i, layer in enumerate(self.decoder.layers):
            layer.encoder_attn.project_kv_into(encoder_hidden, cache.cross_k[i], cache.cross_v[i])
        if padding_mask is not None:
            cache.cross_mask.copy_(padding_mask[:, None, None, :])

    @torch.no_grad()
    def start_decoding(self, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None, rows_per_input: int,
                       max_length: int, *, cuda_graph: bool = False, screened: bool = False):
        """(step, cache) for generate: a cache holding encoder_hidden's [B, S, D] cross-attention keys/values, and
        the step that decodes on it (input_ids [R], cache) -> logits [R, V], advancing the cache. Unchecked.
        cuda_graph False: decode_step_unchecked on a new KVCache. True: the step replayed from a CUDA graph on the
        graph's own FixedShapeKVCache; the graph is kept (graphed_step) and reused while graph_key matches.
        screened (not with cuda_graph): the step may return ScreenedLogits instead of logits (decode_step_screened),
        where greedy steps of R rows are screened (screens)."""
        if not cuda_graph:
            cache = self._new_cache(encoder_hidden, padding_mask, rows_per_input, max_length)
            screen = self.step_screen(cache.num_rows) if screened else None
            if screen is None:
                return self.decode_step_unchecked, cache
            return functools.partial(self.decode_step_screened, screen=screen), cache
        key = graph_key(self, encoder_hidden, padding_mask, rows_per_input, max_length)
        if self.graphed_step is not None and self.graphed_step.key == key:
            self.project_cross_kv(self.graphed_step.cache, encoder_hidden, padding_mask)
            self.graphed_step.cache.reset()
            return self.graphed_step, self.graphed_step.cache
        self.graphed_step = None                   # free the old graph and its cache before capturing a new one
        cache = self._new_cache(encoder_hidden, padding_mask, rows_per_input, max_length, fixed_shape=True)
        self.graphed_step = GraphedStep(self.next_token_logits, cache, key)
        return self.graphed_step, cache

    @torch.inference_mode()
    def decode_step(self, input_ids: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One decoder token per row: input_ids [R] at position cache.length -> logits [R, V]; advances the cache.
        Checks its arguments (one host sync: the vocabulary range)."""
        R = cache.num_rows
        if not isinstance(input_ids, torch.Tensor) or input_ids.dtype not in checks.INT_DTYPES \
                or input_ids.shape != (R,):
            raise ValueError(f"input_ids must be an integer tensor of shape [{R}] (one token per cache row), got "
                             f"{getattr(input_ids, 'dtype', type(input_ids).__name__)} "
                             f"{list(getattr(input_ids, 'shape', []))}")
        if cache.length >= cache.max_length:
            raise ValueError(f"the KV cache is full ({cache.max_length} tokens); create it with a larger max_length")
        if cache.length >= self.config.max_position_embeddings:
            raise ValueError(f"decoder position {cache.length} is past max_position_embeddings="
                             f"{self.config.max_position_embeddings}; generate fewer tokens")
        checks.check_device(input_ids, "input_ids", self.device)
        checks.check_vocab_range(input_ids, "input_ids", self.config.decoder_vocab_size)
        return self.decode_step_unchecked(input_ids, cache)

    @torch.inference_mode()
    def prefill_unchecked(self, input_ids: torch.Tensor, cache: KVCache, trace: Recorder | None = None) -> None:
        """Feed input_ids [R, T] (a decoder prompt's tokens per row) to an empty cache in one causal pass, as the
        teacher-forced forward reads them: every layer's self-attention keys/values written into its first T
        slots, the cache advanced by T; the next step continues as after T single steps (keys/values equal to
        float rounding). Computes no logits; checks nothing but that the cache is empty. trace: a Recorder this
        pass's layers hand their attentions and hidden states to (an eager KVCache's)."""
        if cache.length:
            raise ValueError(f"a prefill writes an empty cache's first slots, but this one holds {cache.length} "
                             "tokens already: prefill a new cache, before any step")
        self.decoder.extend(self.embed(input_ids, self.decoder_embeddings), input_ids, cache, trace)
        cache.advance(input_ids.shape[1])

    @torch.inference_mode()
    def decode_step_unchecked(self, input_ids: torch.Tensor, cache: KVCache,
                              trace: Recorder | None = None) -> torch.Tensor:
        """decode_step for checked arguments (what generate's search calls): input_ids [R] -> logits [R, V].
        trace: a Recorder this step's layers hand their attentions and hidden states to (an eager KVCache's)."""
        logits = self.next_token_logits(input_ids, cache, trace)
        cache.advance()
        return logits

    @torch.inference_mode()
    def extend_unchecked(self, input_ids: torch.Tensor, cache: KVCache,
                         screened: bool = False) -> torch.Tensor | ScreenedLogits:
        """T decoder tokens per row in one pass after the cache's `length` ones (tokens a search checks at once:
        generation/prompt_lookup.py): input_ids [R, T] -> the logits [R * T, V] of each row's T positions in order,
        as T decode steps would give them to float rounding; advances the cache by T (crop takes back the ones not
        kept). screened: ScreenedLogits where the LM head has a screen for R * T rows (greedy only). Checks
        nothing."""
        h = self.decoder.extend(self.embed(input_ids, self.decoder_embeddings), input_ids, cache)   # [R, T, D]
        cache.advance(input_ids.shape[1])
        return self.head_logits(h.flatten(0, 1), self.step_screen(input_ids.numel()) if screened else None)

    @torch.inference_mode()
    def decode_step_screened(self, input_ids: torch.Tensor, cache: KVCache,
                             screen: LogitScreen) -> ScreenedLogits | torch.Tensor:
        """decode_step_unchecked for a greedy search: input_ids [R] -> the logits [R, V] as ScreenedLogits (bounds
        from the screen, exact logits on request; models/logit_screen.py), or as a tensor where the decoder's output
        is not finite. Advances the cache."""
        logits = self.group_logits(input_ids, [cache], screen=screen)
        cache.advance()
        return logits

    def set_greedy_screen(self, on: bool) -> None:
        """Whether greedy steps pick their tokens from screened logits (models/logit_screen.py; from_pretrained
        turns it on for a float32 CPU model wherever gemv runs). Its exact logits are gemv's: the same bits as the
        full head's where the head runs gemv too (the measured choice at a few rows on the CPUs measured), the
        same product rounded as gemv rounds it elsewhere. Off: every logit from the head's own kernel."""
        self.greedy_screen = bool(on)
        if not on:
            self.screen = None

    def screens(self, rows: int) -> bool:
        """Whether greedy steps of this many rows are screened: set_greedy_screen on, at most
        logit_screen.MAX_ROWS rows, and a screen of the LM head's weight can run here."""
        return self.greedy_screen and rows <= logit_screen.MAX_ROWS and isinstance(self.lm_head, KernelLinear) \
            and LogitScreen.runs_on(self.lm_head.weight)

    def step_screen(self, rows: int) -> LogitScreen | None:
        """The screen for a decode step of this many rows: logit_screen() where screens(rows), else None."""
        return self.logit_screen() if self.screens(rows) else None

    def logit_screen(self) -> LogitScreen | None:
        """The LM head's int8 copy (models/logit_screen.py), made when first asked for and made again when the
        head's weight changed; None where it cannot run (not float32 on the CPU, gemv not built)."""
        weight = self.lm_head.weight
        if self.screen is None or not self.screen.fresh(weight):
            self.screen = LogitScreen.of(weight)
        return self.screen

    def next_token_logits(self, input_ids: torch.Tensor, cache: KVCache,
                          trace: Recorder | None = None) -> torch.Tensor:
        """The decoder network for one token per row at the cache's position: input_ids [R] -> logits [R, V].
        Writes this position's self-attention keys/values; does not advance the cache; checks nothing.
        On a FixedShapeKVCache every shape is fixed, so a CUDA graph can capture it (models/cuda_graph.py)."""
        return self.group_logits(input_ids, [cache], trace)

    def group_logits(self, input_ids: torch.Tensor, caches: list[KVCache], trace: Recorder | None = None,
                     screen: LogitScreen | None = None) -> torch.Tensor | ScreenedLogits:
        """next_token_logits over several caches at once: input_ids [R] holds the rows of caches[0], then of
        caches[1], ...; each cache at its own position, with its own inputs and rows_per_input. The linear layers
        run over all R rows together; attention per cache. -> logits [R, V], or ScreenedLogits from `screen` (a
        tensor where the decoder's output is not finite). Checks nothing. trace: a Recorder (with one cache)."""
        h = self.decoder.step(self.embed(input_ids[:, None], self.decoder_embeddings), input_ids, caches,
                              trace)[:, 0]                                                  # [R, D]
        return self.head_logits(h, screen)

    def head_logits(self, h: torch.Tensor, screen: LogitScreen | None) -> torch.Tensor | ScreenedLogits:
        """The LM head on the decoder's output h [N, D] -> logits [N, V], or ScreenedLogits from `screen` (a tensor
        where h is not finite)."""
        if screen is not None:
            bias = None if self.final_logits_bias is None else self.final_logits_bias[0]   # [V]
            screened = screen.screen(h, self.lm_head.weight, bias)
            if screened is not None:
                return screened
        return self.add_bias(self.lm_head(h))                                                # [N, V]

    @torch.inference_mode()
    def decode_group_unchecked(self, input_ids: torch.Tensor, caches: list[KVCache],
                               screened: bool = False) -> torch.Tensor | ScreenedLogits:
        """One decoder token for every row of every cache (the continuous-batching engine's step): input_ids [R],
        the caches' rows in order -> logits [R, V]; advances every cache. screened: ScreenedLogits where the LM
        head has a screen for R rows (step_screen), for greedy searches only."""
        logits = self.group_logits(input_ids, caches, screen=self.step_screen(len(input_ids)) if screened else None)
        for cache in caches:
            cache.advance()
        return logits

    # ---- input checks (models/checks.py), before any compute ------------------------------------------------

    def check_inputs(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """What encode and generate check first: input_ids an integer tensor [B, S] on the model's device, not
        empty, within max_position_embeddings and the vocabulary; attention_mask None or [B, S] on the same device
        with at least one token per row. Returns the padding mask as bool [B, S], or None when nothing is padded.
        Raises TypeError / ValueError naming the problem and the fix. Reads values back from the device."""
        self._check_ids(input_ids, "input_ids", self.config.vocab_size)
        return checks.padding_mask(attention_mask, input_ids, "attention_mask", "input_ids", self.device)

    def check_encoder_outputs(self, encoder_hidden: torch.Tensor,
                              attention_mask: torch.Tensor | None = None) -> torch.Tensor | None:
        """What generate checks of encoder hidden states given in the place of a source (encoder_outputs): a float
        tensor [B, S, d_model] of the model's dtype on its device, not empty (S is free: cross-attention has no
        positions); attention_mask as check_inputs'. Returns the padding mask bool [B, S], or None."""
        checks.check_hidden_states(encoder_hidden, "encoder_outputs", width=self.config.d_model, dtype=self.dtype,
                                   device=self.device)
        return checks.padding_mask(attention_mask, encoder_hidden, "attention_mask", "encoder_outputs", self.device)

    def _check_ids(self, ids, name: str, vocab_size: int) -> None:
        checks.check_token_ids(ids, name, vocab_size=vocab_size,
                               max_positions=self.config.max_position_embeddings, device=self.device)

    # ---- checkpoints: BART's tensor names (models/bart_checkpoint.py), for seq2seq_kit/loading.py ------------

    def checkpoint_sources(self, source) -> dict[str, list[str]]:
        """Our tensor name -> the checkpoint tensor names stacked on dim 0 to make it; raises listing every
        missing, unexpected or misshapen weight. Works on the meta device."""
        return bart_checkpoint.plan(self, source)

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """torch's, for this network's own names (state_dict()'s); transformers' names are refused by name."""
        bart_checkpoint.check_own_names(state_dict)
        return super().load_state_dict(state_dict, strict=strict, assign=assign)

    def checkpoint_loaded(self, source, sources: dict[str, list[str]]) -> None:
        """After the copies: the tensors a checkpoint may leave out, and its extra copies of the embedding."""
        bart_checkpoint.finish(self, source, sources)

    def checkpoint_tensors(self) -> dict[str, torch.Tensor]:
        """Our tensors under transformers' names, on the CPU (what save_pretrained writes)."""
        return bart_checkpoint.state_dict(self)

    def checkpoint_config(self) -> dict:
        """config.json's content for a checkpoint of this network."""
        return bart_checkpoint.config_dict(self)

    # ---- CPU matmul kernels (models/kernels.py) -------------------------------------------------------------

    def kernel_linears(self) -> dict[str, list[KernelLinear]]:
        """The float linear layers by kind (kernels.KINDS), each kind's layers in order (int8 models: none)."""
        enc, dec = self.encoder.layers, self.decoder.layers
        layers = {"self_qkv": [layer.self_attn.qkv_proj for layer in dec],
                  "self_out": [layer.self_attn.out_proj for layer in dec],
                  "cross_q": [layer.encoder_attn.q_proj for layer in dec],
                  "cross_out": [layer.encoder_attn.out_proj for layer in dec],
                  "fc1": [layer.fc1 for layer in dec], "fc2": [layer.fc2 for layer in dec],
                  "lm_head": [self.lm_head],
                  "encoder_qkv": [layer.self_attn.qkv_proj for layer in enc],
                  "encoder_out": [layer.self_attn.out_proj for layer in enc],
                  "encoder_fc1": [layer.fc1 for layer in enc], "encoder_fc2": [layer.fc2 for layer in enc],
                  "cross_kv": [layer.encoder_attn.kv_proj for layer in dec]}
        return {kind: [m for m in ms if isinstance(m, KernelLinear)] for kind, ms in layers.items()}

    def set_kernels(self, table: dict[str, dict[str, str]]) -> None:
        """Run each kind of linear layer with table[kind] = {row class: kernel} (models/kernels.py; missing:
        F.linear). A tied LM head is never packed (the embedding reads its weight)."""
        tied = getattr(self.lm_head, "weight", None) is getattr(self.decoder_embeddings, "weight", 0)   # int8: no weights
        kernels.apply(self.kernel_linears(), table, shared=frozenset({"lm_head"} if tied else ()))

    def kernel_table(self) -> dict[str, dict[str, str]]:
        """The {kind: {row class: kernel}} the linear layers run now (int8 layers: none)."""
        return kernels.current(self.kernel_linears())

    def set_step_attention(self, kernel: str) -> None:
        """What a decode step's attention runs: "sdpa" (torch's scaled_dot_product_attention) or "own"
        (models/attention.py, for float32 CPU tensors; anything else runs SDPA there too)."""
        if kernel not in attention.KERNELS:
            raise ValueError(f"unknown attention kernel {kernel!r}; use 'sdpa' or 'own'")
        self.decoder.step_attend = attention.attend if kernel == "own" else SDPA

    def step_attention(self) -> str:
        """"own" or "sdpa": what set_step_attention set (SDPA unless told)."""
        return "own" if self.decoder.step_attend is attention.attend else "sdpa"

    def _apply(self, fn, recurse=True):
        """Moving or casting the network (to, half, cuda) first gives packed weights back their dense layout; a move
        that changes neither device nor dtype (model.to("cpu") on the CPU, float() on float32) packs them again, so
        it keeps the kernels it ran. An int8 network stays a float32 CPU one (its packed int8 layers would not
        follow); to_empty(device="cpu") empties its float tensors, as torch's contract says (load_state_dict fills
        them again)."""
        if self.quantized:
            self._check_int8_move(fn)
        self.screen = None                  # made again from the moved weight when asked for
        before = (self.device, self.dtype)
        table = self.kernel_table()
        for modules in self.kernel_linears().values():
            for m in modules:
                if m.packed:
                    m.use({})
        out = super()._apply(fn, recurse)
        if (self.device, self.dtype) == before:
            self.set_kernels(table)
        return out

    # ---- int8 (models/quantize.py) --------------------------------------------------------------------------

    def _check_int8_move(self, fn) -> None:
        """Refuse a move or cast (_apply's fn) of an int8 network off float32 on its CPU, before any tensor moves:
        also when torch cannot make the target at all (a CUDA device on a CPU-only torch)."""
        try:
            probe = fn(torch.zeros((), device=self.device))
            change = f"become {probe.dtype} on {probe.device}"
        except (RuntimeError, AssertionError) as e:       # torch's "not compiled with CUDA", "no CUDA GPUs", ...
            probe, change = None, f"move there (torch: {str(e).splitlines()[0] if str(e) else type(e).__name__})"
        if probe is None or (probe.dtype, probe.device) != (torch.float32, self.device):
            raise ValueError(f"this model's linear layers are int8 (quantize_int8), which run on the CPU with "
                             f"float32 activations only: it cannot {change}; load the float model for that")

    def quantize_int8(self) -> BartNetwork:
        """CPU, float32 model: int8 weights for every linear layer (inputs quantized per call; a tied LM head reads the
        embedding's int8 rows, its inputs float32) and for the token embedding. About a quarter of the bytes; outside
        the token-parity guarantee (see models/quantize.py). Returns self."""
        if any(isinstance(m, Int8Embedding) for m in self.modules()):     # (loading makes its linear layers first)
            raise ValueError("this model is int8 already (quantize_int8 runs once, on a float32 model)")
        own = ("shared",) if self.shared is not None else ("encoder.embed_tokens", "decoder.embed_tokens")
        quantize_int8(self, embeddings=own)
        self.screen = None
        cpu_memory.release_freed_memory()        # the float32 weights it replaced go back to the system
        return self

    @property
    def quantized(self) -> bool:
        return any(isinstance(m, Int8Linear) for m in self.modules())
