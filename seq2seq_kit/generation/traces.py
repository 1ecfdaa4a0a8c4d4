"""generate(..., output_attentions=True and/or output_hidden_states=True, return_dict_in_generate=True): the
encoder's and every decoder step's attention probabilities and hidden states, as transformers 5.25's generate
returns them (its eager attention's values: its default SDPA attention returns empty tuples for the attentions).

Shapes (B inputs, S source tokens, R decoder rows, H heads, D d_model, L layers, P the decoder prompt's tokens,
1 without one; t the tokens fed so far at a step):
  encoder_attentions     L x [B, H, S, S]                (per input, not per row, as transformers)
  encoder_hidden_states  (L + 1) x [B, S, D]             the embeddings' output, each layer's but the last, then
                                                         the encoder's output (the last layer's, after the final
                                                         layer norm where the family has one: models/bart.py)
  decoder_attentions     steps x L x [R, H, 1, t]        the first step [R, H, P, P] (lower triangle)
  cross_attentions       steps x L x [R, H, 1, S]        the first step [R, H, P, S]
  decoder_hidden_states  steps x (L + 1) x [R, 1, D]     likewise; the first step [R, P, D]
transformers runs a decoder prompt in one pass; here its tokens but the last are (decoder_prompt.prefill), and the
last is the first step, so the two are joined into one: the prefill's self-attention rows [R, H, P - 1, P - 1]
padded with the zero column a causal mask gives.
Beam search records each step's running rows, before they are reordered, as transformers does.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
import torch.nn.functional as F


class LayerRecord:
    """One pass's recording, the model's Recorder (models/bart.py): each kind's per-layer tensors in order."""

    def __init__(self, attentions: bool):
        self.attentions = attentions
        self.probs: dict[str, list[torch.Tensor]] = {"encoder": [], "decoder": [], "cross": []}
        self.states: dict[str, list[torch.Tensor]] = {"encoder": [], "decoder": []}

    def attention(self, kind: str, probs: torch.Tensor) -> None:
        self.probs[kind].append(probs)

    def hidden(self, side: str, x: torch.Tensor) -> None:
        self.states[side].append(x)


class Trace:
    """What one generate call records: the encoder pass, then every decoder step (the prompt's first)."""

    def __init__(self, attentions: bool, hidden_states: bool):
        self.attentions, self.hidden_states = attentions, hidden_states
        self.encoder = LayerRecord(attentions)
        self.steps: list[LayerRecord] = []
        self.given: dict | None = None             # the encoder's recordings, given with its output (given_encoder)

    @classmethod
    def of(cls, cfg) -> Trace | None:
        """The trace a resolved GenerationConfig asks for, or None (neither flag)."""
        if not (cfg.output_attentions or cfg.output_hidden_states):
            return None
        return cls(cfg.output_attentions, cfg.output_hidden_states)

    def given_encoder(self, encoder_outputs) -> None:
        """Report the recordings generate's encoder_outputs holds as the encoder's (the encoder ran before the call),
        as transformers reads them off it (its .get("attentions") / .get("hidden_states")): a BaseModelOutput's or a
        mapping's, None where it holds none (a tensor, a tuple)."""
        get = encoder_outputs.get if isinstance(encoder_outputs, Mapping) else \
            lambda key: getattr(encoder_outputs, key, None)
        self.given = {"encoder_attentions": get("attentions"), "encoder_hidden_states": get("hidden_states")}

    def record(self) -> LayerRecord:
        """A new decoder pass's recording (a prefill's or a step's), kept in order."""
        self.steps.append(LayerRecord(self.attentions))
        return self.steps[-1]

    def stepping(self, traced_step):
        """traced_step(input_ids [R], cache, trace=recorder) -> logits [R, V] (the model's decode_step_unchecked,
        the trace passed by name as protocol.py says) as a protocol.Step that records each call in a LayerRecord of
        its own."""
        def step(input_ids: torch.Tensor, cache) -> torch.Tensor:
            return traced_step(input_ids, cache, trace=self.record())
        return step

    def outputs(self, prompt_len: int) -> dict:
        """GenerateOutput's five fields (None where not asked for); prompt_len: the decoder prompt's P tokens: with
        more than one, the prefill's pass and the first step make the first step."""
        first = 2 if prompt_len > 1 else 1
        steps = [joined(self.steps[:first], prompt_len), *self.steps[first:]]
        out = dict.fromkeys(("encoder_attentions", "encoder_hidden_states", "decoder_attentions",
                             "cross_attentions", "decoder_hidden_states"))
        if self.attentions:
            out["encoder_attentions"] = tuple(self.encoder.probs["encoder"])
            out["decoder_attentions"] = tuple(tuple(s.probs["decoder"]) for s in steps)
            out["cross_attentions"] = tuple(tuple(s.probs["cross"]) for s in steps)
        if self.hidden_states:
            out["encoder_hidden_states"] = tuple(self.encoder.states["encoder"])
            out["decoder_hidden_states"] = tuple(tuple(s.states["decoder"]) for s in steps)
        if self.given is not None:
            out.update({k: v for k, v in self.given.items() if out[k] is not None})      # the fields asked for
        return out


def joined(steps: list[LayerRecord], P: int) -> LayerRecord:
    """A decoder prompt's P tokens, recorded as a prefill [.., P - 1, ..] and a first step [.., 1, ..], as the one
    pass transformers runs: per layer, self-attention [R, H, P - 1, P - 1] padded to P keys and stacked over
    [R, H, 1, P] -> [R, H, P, P]; cross [R, H, P, S]; hidden [R, P, D]."""
    if len(steps) == 1:
        return steps[0]
    out = LayerRecord(steps[0].attentions)
    for layer in zip(*(s.probs["decoder"] for s in steps)):
        out.attention("decoder", torch.cat([F.pad(p, (0, P - p.shape[-1])) for p in layer], dim=2))
    for layer in zip(*(s.probs["cross"] for s in steps)):
        out.attention("cross", torch.cat(layer, dim=2))
    for layer in zip(*(s.states["decoder"] for s in steps)):
        out.hidden("decoder", torch.cat(layer, dim=1))
    return out
