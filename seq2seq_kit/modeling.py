"""The public model classes: the BART-family network (models/bart.py) plus checkpoints (loading.py, Hub ids resolved by
hub.py) and generate (generation/)."""

from __future__ import annotations

import copy
from dataclasses import dataclass
from pathlib import Path

import torch

from . import cpu_memory, generation, hub, kernel_choice, loading
from .config import BartConfig
from .generation import GenerationConfig
from .generation.config import check_config
from .generation.traces import LayerRecord
from .model_output import ModelOutput
from .models.bart import BartNetwork, check_forward_kwargs, label_loss
from .models.quantize import Int8Linear, check_int8_device


FORWARD_TAKES = ("input_ids, attention_mask, decoder_input_ids, decoder_attention_mask, labels, output_attentions, "
                 "output_hidden_states and return_dict and returns a Seq2SeqLMOutput (.logits [batch, target, vocab], "
                 ".loss with labels)")


@dataclass
class Seq2SeqLMOutput(ModelOutput):
    """What model(...) returns: transformers' Seq2SeqLMOutput without its cache (past_key_values), read as its
    ModelOutput (model_output.py): out.logits, out["logits"], out[0] (the loss with labels, as there). The fields a
    call asks for (labels, output_attentions, output_hidden_states) beside logits and encoder_last_hidden_state.
    Shapes (B inputs, S source, T target tokens, H heads, D d_model, L layers), values as transformers' eager
    attention computes them:"""
    loss: torch.Tensor | None = None                                    # [] with labels
    logits: torch.Tensor | None = None                                  # [B, T, V]
    decoder_hidden_states: tuple[torch.Tensor, ...] | None = None       # (L + 1) x [B, T, D]
    decoder_attentions: tuple[torch.Tensor, ...] | None = None          # L x [B, H, T, T]
    cross_attentions: tuple[torch.Tensor, ...] | None = None            # L x [B, H, T, S]
    encoder_last_hidden_state: torch.Tensor | None = None               # [B, S, D]
    encoder_hidden_states: tuple[torch.Tensor, ...] | None = None       # (L + 1) x [B, S, D]
    encoder_attentions: tuple[torch.Tensor, ...] | None = None          # L x [B, H, S, S]

    @classmethod
    def of(cls, logits: torch.Tensor, record: LayerRecord, hidden_states: bool) -> Seq2SeqLMOutput:
        """The output of a pass recorded in `record` (its attentions when it recorded them); hidden_states: the
        per-layer hidden states too (the hidden states are the embeddings' output, each layer's but the last, then
        the side's output, as transformers')."""
        probs, states = record.probs, record.states
        attentions = {k: tuple(probs[k]) for k in probs} if record.attentions else dict.fromkeys(probs)
        return cls(logits=logits, encoder_last_hidden_state=states["encoder"][-1],
                   decoder_hidden_states=tuple(states["decoder"]) if hidden_states else None,
                   encoder_hidden_states=tuple(states["encoder"]) if hidden_states else None,
                   decoder_attentions=attentions["decoder"], cross_attentions=attentions["cross"],
                   encoder_attentions=attentions["encoder"])


@dataclass
class BaseModelOutput(ModelOutput):
    """What model.get_encoder()(...) returns: transformers' BaseModelOutput, read as its ModelOutput;
    generate(encoder_outputs=...) takes it (and reports its recordings as the encoder's)."""
    last_hidden_state: torch.Tensor | None = None                       # [B, S, D]
    hidden_states: tuple[torch.Tensor, ...] | None = None               # (L + 1) x [B, S, D]
    attentions: tuple[torch.Tensor, ...] | None = None                  # L x [B, H, S, S]


def config_flag(config: BartConfig, name: str, given: bool | None) -> bool:
    """An output flag of a call (output_attentions, output_hidden_states, return_dict): as given, else the config's
    (config.json's, else transformers' default: config.COMMON_DEFAULTS), as transformers reads an unset one."""
    return getattr(config, name) is True if given is None else bool(given)


class EncoderCall:
    """model.get_encoder(): what code written for transformers calls its encoder module for, encoder(input_ids,
    attention_mask=...) -> BaseModelOutput (model.encode's hidden states, its checks; with output_attentions /
    output_hidden_states its layers' recordings too), to hand generate as encoder_outputs (the encoder run once for
    several decodings, or passages encoded apart and joined)."""

    def __init__(self, model: BartForConditionalGeneration):
        self.model = model

    def __call__(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None, *,
                 output_attentions: bool | None = None, output_hidden_states: bool | None = None,
                 return_dict: bool | None = None, **unsupported) -> BaseModelOutput | tuple:
        """A flag not given is config.json's, as in transformers; return_dict=False: the output's fields that are
        set, as a tuple."""
        if unsupported:
            raise TypeError(f"the encoder takes input_ids, attention_mask, output_attentions, output_hidden_states and "
                            f"return_dict, not {', '.join(sorted(unsupported))}")
        if input_ids is None:
            raise TypeError("the encoder needs input_ids, the source token ids [B, S]")
        attentions = config_flag(self.model.config, "output_attentions", output_attentions)
        hidden_states = config_flag(self.model.config, "output_hidden_states", output_hidden_states)
        record = LayerRecord(attentions) if attentions or hidden_states else None
        padding_mask = self.model.check_inputs(input_ids, attention_mask)
        with torch.no_grad():                                                           # as model.encode
            hidden = self.model.run_encoder(input_ids, padding_mask, record)
        out = BaseModelOutput(last_hidden_state=hidden,                                    # [B, S, D]
                              hidden_states=tuple(record.states["encoder"]) if hidden_states else None,
                              attentions=tuple(record.probs["encoder"]) if attentions else None)
        return out if config_flag(self.model.config, "return_dict", return_dict) else out.to_tuple()


class BartForConditionalGeneration(BartNetwork):
    """Any supported family (BART, mBART, Marian, Pegasus, M2M100 / NLLB: seq2seq_kit/families.py) for generation,
    with transformers' from_pretrained / save_pretrained / generate.
    `BartForConditionalGeneration(config)` builds a randomly initialised model whose generation_config holds its
    config's special token ids only (config.token_ids), as transformers 5 builds one: config.json's generation keys
    (num_beams, max_length, ...) are read by from_pretrained, not by a config."""

    def __init__(self, config: BartConfig):
        super().__init__(config)
        self.generation_config = GenerationConfig.from_model_config(config.token_ids())   # from_pretrained: the files'

    @classmethod
    def from_pretrained(cls, path: str | Path, dtype=None, device=None, *, torch_dtype=None,
                        generation_config: GenerationConfig | None = None, attn_implementation: str | None = None,
                        low_cpu_mem_usage: bool | None = None, **hub_kwargs) -> BartForConditionalGeneration:
        """Load a transformers checkpoint (safetensors or .bin, single or sharded) from a directory or Hub id.

        dtype: None (float32), "auto" (config.json's dtype, else the weights'), a torch.dtype or its name; or
        "int8" (torch.int8): float32 weights made int8 by quantize_int8 (CPU only, outside the parity guarantee).
        torch_dtype: dtype's old name, taken as transformers 5 takes it (dtype wins; a FutureWarning).
        device: None (cpu), "cpu", "cuda", "cuda:N" or a torch.device.
        generation_config: the model's generation_config (a copy), in the place of the checkpoint's, as transformers.
        attn_implementation: "eager" or "sdpa" (the docs' examples pass them), which change nothing here: one
        attention runs, and gives transformers' eager attention probabilities where asked (output_attentions).
        low_cpu_mem_usage: taken and dropped, as transformers 5 drops it (the model is built on the meta device and
        its weights read into it, never initialised first).
        hub_kwargs: revision, cache_dir, token, local_files_only (see seq2seq_kit.hub.resolve).
        """
        if attn_implementation not in (None, "eager", "sdpa"):
            raise ValueError(f"attn_implementation={attn_implementation!r}: seq2seq_kit runs its own attention "
                             "(its CPU and CUDA kernels: README, Speed); leave it out, or pass 'eager' or 'sdpa'")
        if generation_config is not None:
            check_config(generation_config, "generation_config")       # before anything is read
        dtype = loading.dtype_or_legacy(dtype, torch_dtype)
        root = hub.resolve(path, purpose="model", **hub_kwargs)
        config = BartConfig.from_pretrained(root)
        if "quantization_config" in config.extra:
            raise ValueError(f"{root} holds a quantized checkpoint (config.json has quantization_config); "
                             "seq2seq_kit loads float32/float16/bfloat16 weights only")
        int8 = loading.is_int8(dtype)
        if int8:
            check_int8_device(loading.resolve_device(device))
            kernel_choice.setting()                  # a malformed SEQ2SEQ_KIT_CPU_KERNELS fails here too
            cpu_memory.map_weights_while_loading()   # the float32 weights freed as read go back, leaving no holes
        try:
            model = loading.load(cls, config, root, dtype=None if int8 else dtype, device=device,
                                 replace_linear=int8_linear if int8 else None)   # int8: each layer as it is read
        finally:
            if int8:                                 # failed too: the threshold a loaded model has, not 256 KiB
                cpu_memory.keep_freed_memory()
        model.config.dtype = model.dtype             # as transformers: the torch.dtype loaded (int8: float32)
        model.generation_config = (copy.deepcopy(generation_config) if generation_config is not None
                                   else GenerationConfig.from_pretrained(root, model_config=config))
        if model.device.type == "cpu":
            cpu_memory.keep_freed_memory()           # a step's vocabulary-wide temporaries reuse the last step's pages
        attend = kernel_choice.choose_attention(model)   # float32 (int8 too) on the CPU: the step's attention
        if attend is not None:
            model.set_step_attention(attend)
        if int8:
            model.quantize_int8()                    # the rest: the embedding, a tied LM head (and frees the float32
            return model                             # weights kept by the tuning above)
        table = kernel_choice.choose(model)          # float32 on the CPU: the decode step's matmul kernels
        if table is not None:
            model.set_kernels(table)
        screen = kernel_choice.choose_screen(model)  # float32 on the CPU: greedy steps' int8 bounds on the LM head
        if screen is not None:
            model.set_greedy_screen(screen)
        return model

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write config.json, model.safetensors with transformers' parameter names, and generation_config.json."""
        if self.quantized:
            raise ValueError("this model's linear layers are int8 (quantize_int8); save the float model instead")
        if self.generation_config is not None:
            self.generation_config.to_json_string()     # what it cannot hold: refused before a file is written
        directory = loading.save(self, directory)
        if self.generation_config is not None:
            self.generation_config.save_pretrained(directory)
        else:   # set to None by hand: a generation_config.json left from an earlier save would be read as its own
            (directory / "generation_config.json").unlink(missing_ok=True)
        return directory

    def forward(self, input_ids: torch.Tensor | None = None, attention_mask: torch.Tensor | None = None,
                decoder_input_ids: torch.Tensor | None = None, decoder_attention_mask: torch.Tensor | None = None,
                *, labels: torch.Tensor | None = None, output_attentions: bool | None = None,
                output_hidden_states: bool | None = None, return_dict: bool | None = None,
                **unsupported) -> Seq2SeqLMOutput:
        """The teacher-forced pass (BartNetwork.teacher_forced) -> a Seq2SeqLMOutput: logits [B, T, V],
        encoder_last_hidden_state [B, S, D] and what the flags ask for (transformers' fields, in its order). A flag
        not given is config.json's, as in transformers. labels [B, T] (-100 where a position is not scored): its
        loss, transformers' mean cross-entropy, first in the output (out.loss, out[0]), the decoder inputs made
        from labels when none are given, as there; no gradients. return_dict=False is refused: transformers' tuple
        holds its cache after the logits, which this model keeps none of, so a position there would be another
        field here."""
        check_forward_kwargs(unsupported, FORWARD_TAKES)          # encoder_outputs without input_ids: named here
        if input_ids is None:
            raise TypeError("forward() needs input_ids, the source token ids [B, S]")
        if not config_flag(self.config, "return_dict", return_dict):
            said = "return_dict=False" if return_dict is not None else "config.json's return_dict false"
            raise TypeError(f"{said}: transformers returns a tuple there (logits, its cache, ...), and this model "
                            "keeps no cache; pass return_dict=True (or leave it out) and read the Seq2SeqLMOutput "
                            "by name (out.logits) or position (out[0]: the logits, as transformers')")
        output_attentions = config_flag(self.config, "output_attentions", output_attentions)
        output_hidden_states = config_flag(self.config, "output_hidden_states", output_hidden_states)
        record = LayerRecord(attentions=output_attentions) if output_attentions or output_hidden_states else None
        logits, encoded = self.teacher_forced(input_ids, attention_mask, decoder_input_ids, decoder_attention_mask,
                                              record, labels)
        out = (Seq2SeqLMOutput(logits=logits, encoder_last_hidden_state=encoded) if record is None
               else Seq2SeqLMOutput.of(logits, record, output_hidden_states))
        out.loss = None if labels is None else label_loss(logits, labels)
        return out

    main_input_name = "input_ids"                   # transformers' name of generate's and forward's source

    @staticmethod
    def can_generate() -> bool:
        return True

    def get_input_embeddings(self) -> torch.nn.Embedding:
        """The source's token embedding (model.shared, or Marian's encoder's own with separate vocabularies)."""
        return self.encoder_embeddings

    def get_output_embeddings(self) -> torch.nn.Module:
        """The LM head [V, D] (tied: its weight is the decoder's token embedding's)."""
        return self.lm_head

    def get_encoder(self) -> EncoderCall:
        """The encoder as transformers code calls it: get_encoder()(input_ids, attention_mask=...) -> an output
        whose last_hidden_state generate takes as encoder_outputs (EncoderCall)."""
        return EncoderCall(self)

    def generate(self, input_ids=None, attention_mask=None, *, inputs=None, **kwargs):
        """transformers-compatible generate (the source ids also by transformers' name: inputs=...); see
        seq2seq_kit.generation.decoding."""
        return generation.generate(self, source_ids(input_ids, inputs, kwargs), attention_mask, **kwargs)

    @staticmethod
    def compute_transition_scores(sequences: torch.Tensor, scores, beam_indices: torch.Tensor | None = None,
                                  normalize_logits: bool = False) -> torch.Tensor:
        """Each generated token's score [N, L], as transformers' (see generation.compute_transition_scores)."""
        return generation.compute_transition_scores(sequences, scores, beam_indices, normalize_logits)


def source_ids(input_ids, inputs, kwargs: dict):
    """generate's source ids, given as input_ids or inputs (transformers' generate names its first argument so)."""
    if input_ids is not None and inputs is not None:
        raise TypeError("generate() got both input_ids and inputs (transformers' name for input_ids): pass one")
    if input_ids is None and inputs is None and kwargs.get("encoder_outputs") is None:
        raise TypeError("generate() needs the source: its token ids, input_ids (or inputs) [batch, sequence], or the "
                        "encoder's output, encoder_outputs")
    return inputs if input_ids is None else input_ids


def int8_linear(linear: torch.nn.Linear) -> Int8Linear:
    """The int8 layer that replaces `linear` while loading, the float32 layer replaced before it given back to the
    kernel first (else its freed memory, fragmented by the int8 weights allocated after it, stays resident: the
    load's peak went from 0.7x to 1.3x the float32 bytes from run to run)."""
    cpu_memory.release_freed_memory()
    return Int8Linear(linear)


class AutoModelForSeq2SeqLM:
    """transformers' entry point by name: `from_pretrained` returns the model for any supported checkpoint (one
    network for every family, its switches read from config.json). An unsupported model_type is refused with the
    list of supported ones."""

    def __init__(self, *args, **kwargs):
        raise TypeError("AutoModelForSeq2SeqLM is not instantiated: use AutoModelForSeq2SeqLM.from_pretrained(path)")

    @staticmethod
    def from_pretrained(path: str | Path, dtype=None, device=None, *, torch_dtype=None,
                        generation_config: GenerationConfig | None = None,
                        **hub_kwargs) -> BartForConditionalGeneration:
        """See BartForConditionalGeneration.from_pretrained."""
        dtype = loading.dtype_or_legacy(dtype, torch_dtype)
        return BartForConditionalGeneration.from_pretrained(path, dtype=dtype, device=device,
                                                            generation_config=generation_config, **hub_kwargs)


__all__ = ["AutoModelForSeq2SeqLM", "BartForConditionalGeneration", "BaseModelOutput", "Seq2SeqLMOutput"]
