"""Contrastive search (`penalty_alpha` > 0 with `top_k` > 1, greedy: Su et al., "A Contrastive Framework for Neural
Text Generation"), token-exact with transformers 4.55's `_contrastive_search` (the last release that ran it itself;
transformers 5 points at the Hub's transformers-community/contrastive-search, remote code).

Each step, per input: the processors on the float32 logits of its last token (as greedy search's), softmax, the top_k
candidates; the decoder run on every candidate at once (top_k rows per input, each continuing the input's cache);
each candidate's score (1 - alpha) * probability - alpha * degeneration penalty, the penalty being the largest cosine
similarity between the candidate's last decoder hidden state (after the final layer norm, where the family has one)
and those of every token before it, decoder prompt included; the best candidate (the first of equals) is the next
token, and its row's cache, hidden state and next logits carry on. Rows that ended (EOS, a stop string) take the pad
token and their candidates are still computed, as transformers computes them; the stop rules are greedy search's
(generation/sampling.py). Recorded (output_scores / output_logits): each step's processed scores and logits of the
input's last token, [B, V].

The cache holds top_k rows per input throughout: after each choice every row of an input continues the chosen one
(a cache reorder), where transformers keeps one row and repeats it before the next step; the candidates' pass reads
one position past the last token generated, so max_length may not exceed the decoder's positions.
"""

from __future__ import annotations

import time

import torch

from . import decoder_prompt
from .config import GenerationConfig
from .logits_process import apply
from .sampling import SampleSearch
from .traces import LayerRecord, Trace


def runs(cfg: GenerationConfig) -> bool:
    """Whether resolved settings run contrastive search (transformers 4.55's get_generation_mode)."""
    return (cfg.penalty_alpha is not None and cfg.penalty_alpha > 0 and (cfg.top_k or 0) > 1
            and cfg.num_beams == 1 and not cfg.do_sample)


def check(cfg: GenerationConfig, vocab_size: int, max_position_embeddings: int, traced: bool, lookup: bool) -> None:
    """Where the settings run contrastive search: top_k up to the vocabulary's size, a max_length the candidates'
    pass can reach, and none of what it does not run beside it (traced: output_attentions / output_hidden_states;
    lookup: prompt lookup or an assistant_model, which transformers 4.55 ignored beside it)."""
    if not runs(cfg):
        return
    if cfg.top_k > vocab_size:
        raise ValueError(f"`top_k` (contrastive search's candidates per step) may be at most the vocabulary's "
                         f"{vocab_size} tokens, got {cfg.top_k}")
    if cfg.max_length > max_position_embeddings:
        raise ValueError(f"contrastive search (penalty_alpha) runs the decoder on the candidates for the last "
                         f"position too, so max_length ({cfg.max_length}) may be at most the model's "
                         f"{max_position_embeddings} positions: lower max_length or max_new_tokens")
    for name, on in (("output_attentions / output_hidden_states", traced),
                     ("prompt_lookup_num_tokens / assistant_model", lookup)):
        if on:
            raise ValueError(f"contrastive search (penalty_alpha with top_k > 1) does not run beside {name}: "
                             "leave them out, or penalty_alpha")


def decode(model, encoder_hidden: torch.Tensor, padding_mask: torch.Tensor | None, search: SampleSearch,
           streamer=None, ends: float = float("inf")) -> None:
    """Run `search` (start_search's greedy SampleSearch for these settings, one row per input, from the decoder
    prompt or start token) to its end by contrastive search on `model` (protocol.Seq2SeqModel), from encoder_hidden
    [B, S, D]; streamer: put each step's tokens; ends: the max_time deadline (time.monotonic())."""
    cfg, k = search.cfg, search.cfg.top_k
    _, cache = model.start_decoding(encoder_hidden, padding_mask, k, max_length=cfg.max_length, cuda_graph=False)
    first = search.seq[:, :search.prompt_len]                                          # [B, P]: the prompt
    traced = Trace(attentions=False, hidden_states=True)
    decoder_prompt.prefill(model, cache, first, k, traced)
    logits, hidden = hidden_step(model, first[:, -1].repeat_interleave(k), cache)     # [B * k, V], [B * k, D]
    context = hidden.view(search.batch, k, -1)[:, :1]                                  # [B, 1, D]
    if traced.steps:                                                                   # the prompt's other tokens
        context = torch.cat((traced.steps[0].states["decoder"][-1][::k], context), dim=1)            # [B, P, D]
    logits = logits[::k]                                                                             # [B, V]
    while not search.done:
        with torch.inference_mode():        # the processors may write in place: a copy (the logits are recorded)
            scores = apply(search.processors, search.seq, search.host_length(),
                           logits.to(torch.float32, copy=True))                                     # [B, V]
        probs, candidates = torch.softmax(scores, dim=-1).topk(k, dim=-1)                           # [B, k] each
        next_logits, next_hidden = hidden_step(model, candidates.view(-1), cache)    # [B * k, V], [B * k, D]
        if time.monotonic() > ends:
            search.last_step()
        chosen = rank(context, next_hidden, probs, cfg.penalty_alpha)                               # [B]
        rows = torch.arange(search.batch, device=chosen.device) * k + chosen                        # [B]
        search.advance_drawn(logits, scores, candidates.gather(1, chosen[:, None])[:, 0])
        context = torch.cat((context, next_hidden[rows, None]), dim=1)                              # [B, t + 1, D]
        logits = next_logits[rows]
        cache.reorder(rows.repeat_interleave(k))
        if streamer is not None:
            streamer.put(search.tokens().cpu())


def hidden_step(model, tokens: torch.Tensor, cache) -> tuple[torch.Tensor, torch.Tensor]:
    """The model's eager step on tokens [N] -> (logits [N, V], the last decoder hidden state [N, D])."""
    record = LayerRecord(attentions=False)
    logits = model.decode_step_unchecked(tokens, cache, trace=record)
    return logits, record.states["decoder"][-1][:, -1]


def rank(context: torch.Tensor, hidden: torch.Tensor, probs: torch.Tensor, alpha: float) -> torch.Tensor:
    """Each input's best candidate (transformers' _ranking_fast): context [B, t, D] the hidden states so far, hidden
    [B * k, D] the candidates', probs [B, k] their probabilities -> the chosen candidate's index [B]."""
    k = probs.shape[1]
    context = context.repeat_interleave(k, dim=0)                                                   # [B * k, t, D]
    unit_context = context / context.norm(dim=2, keepdim=True)
    unit_hidden = hidden[:, None] / hidden[:, None].norm(dim=2, keepdim=True)                       # [B * k, 1, D]
    cosine = torch.matmul(unit_context, unit_hidden.transpose(1, 2)).squeeze(-1)                    # [B * k, t]
    penalty = cosine.max(dim=-1).values                                                             # [B * k]
    score = (1.0 - alpha) * probs.view(-1) - alpha * penalty
    return score.view(-1, k).max(dim=-1).indices                                                    # [B]
