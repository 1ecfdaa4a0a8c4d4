"""BART-family parameter names in transformers checkpoints: which checkpoint tensors make each of our tensors, and back.

Checkpoint names are taken without the "model." prefix (TOP_LEVEL names never have it). Ours are the same,
except the fused attention projections (stacked on dim 0):
  {encoder,decoder}.layers.N.self_attn.{q,k,v}_proj.*  ->  ...self_attn.qkv_proj.*
  decoder.layers.N.encoder_attn.{k,v}_proj.*           ->  ...encoder_attn.kv_proj.*
Token embeddings: shared.weight, or, for a Marian checkpoint with separate vocabularies
(share_encoder_decoder_embeddings false), encoder.embed_tokens.weight and decoder.embed_tokens.weight, each read
from any tied copy (transformers ties symmetrically): SHARED_ALIASES for the shared one, lm_head.weight for the one
the LM head is tied to (the decoder's). final_logits_bias may be absent (zeros, as transformers); fairseq's
encoder/decoder.version are ignored.
Fixed (sinusoidal) position tables are computed (models/positions.py): Marian's and Pegasus' are loaded when a
checkpoint carries them, as transformers does, M2M100's never (a non-persistent buffer there); Pegasus' is saved,
as transformers saves it (Family.saves_positions), the others are not.

The checkpoint is read through a `source` with names() -> set, `name in source`, key(name) -> the name as stored,
shape(name), tensor(name) and description (loading.Checkpoint is one); nothing here knows about files.
"""

from __future__ import annotations

import re

import torch
from torch import nn

from ..user_warnings import warn

TOP_LEVEL = ("lm_head.weight", "final_logits_bias")                  # the only names without "model."
IGNORED = re.compile(r"(^|\.)(encoder|decoder)\.version$")           # fairseq leftovers transformers ignores too
SHARED_ALIASES = ("shared.weight", "encoder.embed_tokens.weight", "decoder.embed_tokens.weight")
# names only a transformers state dict has: the "model." prefix, the separate attention projections
TRANSFORMERS_ONLY = re.compile(r"^model\.|\.self_attn\.[qkv]_proj\.|\.encoder_attn\.[kv]_proj\.")


def check_own_names(names) -> None:
    """A state dict given to load_state_dict has our names (state_dict()'s), not transformers': else raises (torch
    would load its two top-level tensors alone under strict=False, or list every name as missing)."""
    theirs = sorted(n for n in names if TRANSFORMERS_ONLY.search(n))
    if theirs:
        raise ValueError(f"load_state_dict got transformers' parameter names ({theirs[0]}, ...: {len(theirs)} in "
                         "all); this model fuses the attention projections (self_attn.qkv_proj, encoder_attn.kv_proj) "
                         "and has no 'model.' prefix: save that model with save_pretrained and load the folder with "
                         "from_pretrained")


def checkpoint_names(name: str) -> list[str]:
    """Our tensor name -> the checkpoint names (without "model.") whose tensors, stacked on dim 0, make it."""
    for fused, parts in ((".qkv_proj.", "qkv"), (".kv_proj.", "kv")):
        if fused in name:
            head, leaf = name.split(fused)
            return [f"{head}.{p}_proj.{leaf}" for p in parts]
    return [name]


def published(base: str) -> str:
    """A checkpoint name without "model." -> its name in a transformers BartForConditionalGeneration file."""
    return base if base in TOP_LEVEL else "model." + base


def tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our parameters and buffers by name (a tied lm_head is not listed: it is shared.weight)."""
    return dict(model.named_parameters()) | dict(model.named_buffers())


def _fixed_positions(model: nn.Module) -> dict[str, nn.Module]:
    """Our computed position tables by tensor name: {"encoder.embed_positions.weight": module, ...}."""
    return {f"{side}.embed_positions.weight": getattr(model, side).embed_positions
            for side in ("encoder", "decoder") if getattr(model, side).embed_positions.fixed}


def _embeddings(model: nn.Module) -> dict[str, tuple[str, ...]]:
    """Our token-embedding tensors by name -> the checkpoint names that may hold each (its tied copies). The first
    present copy is loaded; the others must equal it (see finish)."""
    head = ("lm_head.weight",) if model.config.tie_word_embeddings else ()
    if model.shared is not None:
        return {"shared.weight": SHARED_ALIASES + head}
    return {"encoder.embed_tokens.weight": ("encoder.embed_tokens.weight",),
            "decoder.embed_tokens.weight": ("decoder.embed_tokens.weight", *head)}


def _sources(model: nn.Module, source) -> tuple[dict[str, list[str]], list[str]]:
    """(our name -> checkpoint names, missing checkpoint names)."""
    sources, missing = {}, []
    fixed, embeddings = _fixed_positions(model), _embeddings(model)
    for name in tensors(model):
        if name == "final_logits_bias" and name not in source:
            continue                  # absent from many checkpoints: zeros, as transformers
        if name in fixed and (name not in source or fixed[name].pad is not None):
            continue                  # computed (see models/positions.py)
        names = ([a for a in embeddings[name] if a in source][:1] or [name]) if name in embeddings \
            else checkpoint_names(name)
        missing += [n for n in names if n not in source]
        sources[name] = names
    return sources, missing


def _optional(model: nn.Module) -> set[str]:
    """Checkpoint names that may be present without being loaded: copies of the embedding (compared with
    shared.weight instead), and what transformers ignores for the family (M2M100's position buffers, a
    final_logits_bias the family lacks)."""
    optional = _embedding_copies(model)
    if model.config.family.positions == "sinusoidal_pad":
        optional |= {f"{side}.embed_positions.{leaf}" for side in ("encoder", "decoder")
                     for leaf in ("weight", "weights", "_float_tensor")}
    if model.final_logits_bias is None:
        optional.add("final_logits_bias")
    return optional


def _embedding_copies(model: nn.Module) -> set[str]:
    return {n for copies in _embeddings(model).values() for n in copies}


def _check_names(model: nn.Module, source, sources: dict, missing: list[str]) -> None:
    used = {n for names in sources.values() for n in names}
    unexpected = sorted(source.key(n) for n in source.names() - used - _optional(model) if not IGNORED.search(n))
    if not missing and not unexpected:
        return
    lines = [f"the checkpoint's weights ({source.description}) do not fit the "
             f"{model.config.model_type!r} model config.json describes:"]
    if missing:
        lines.append(f"  missing ({len(missing)}): {', '.join(sorted(published(n) for n in missing))}")
    if unexpected:
        lines.append(f"  unexpected ({len(unexpected)}): {', '.join(unexpected)}")
    raise ValueError("\n".join(lines))


def _warn_untied_copies(model: nn.Module, source) -> None:
    """tie_word_embeddings false with one shared embedding and an encoder / decoder copy absent: transformers 4.x
    saved such checkpoints with shared.weight alone (its three embeddings were one tensor), transformers 5 reads
    each copy from its own tensor and initializes a missing one randomly. Ours loads shared.weight in its place, as
    4.x meant, and says so."""
    if model.shared is None or model.config.tie_word_embeddings:
        return
    absent = [published(n) for n in SHARED_ALIASES[1:] if n not in source]
    if absent:
        warn(f"config.json has tie_word_embeddings false but the checkpoint ({source.description}) lacks "
             f"{' and '.join(absent)}: loaded from {published('shared.weight')}, as transformers 4.x saved and read "
             f"such checkpoints (transformers 5 initializes a missing embedding randomly, so its outputs differ); "
             f"store {published('shared.weight')} under the missing names to silence this")


def _check_shapes(model: nn.Module, source, sources: dict) -> None:
    ours, bad = tensors(model), []
    for name, names in sources.items():
        expected = ours[name].shape
        part = (expected[0] // len(names), *expected[1:])
        bad += [f"  {source.key(n)}: config.json implies {list(part)}, the checkpoint has {list(source.shape(n))}"
                for n in names if source.shape(n) != part]
    for name, copies in _embeddings(model).items():
        shape = tuple(ours[name].shape)
        bad += [f"  {source.key(n)}: config.json implies {list(shape)}, the checkpoint has {list(source.shape(n))}"
                for n in copies if n in source and n not in sources[name] and source.shape(n) != shape]
    if bad:
        raise ValueError(f"config.json's sizes do not match the checkpoint's weights ({source.description}):\n"
                         + "\n".join(bad))


def plan(model: nn.Module, source) -> dict[str, list[str]]:
    """Our tensor name -> the checkpoint names stacked to make it. Raises one error listing every missing and
    unexpected weight (warning of untied embedding copies that are absent), then one listing every shape
    mismatch. `model` may be on the meta device."""
    sources, missing = _sources(model, source)
    _check_names(model, source, sources, missing)
    _warn_untied_copies(model, source)
    _check_shapes(model, source, sources)
    return sources


def finish(model: nn.Module, source, sources: dict) -> None:
    """After the planned copies: zero an absent final_logits_bias; extra copies of a token embedding must equal
    it: encoder/decoder.embed_tokens (else: config.json does not describe these weights), and a saved lm_head
    (else it is kept separate, as transformers does, with the same warning)."""
    if model.final_logits_bias is not None and "final_logits_bias" not in sources:
        model.final_logits_bias.zero_()
    for name, positions in _fixed_positions(model).items():
        if name not in sources:
            positions.reset_table()
    ours = tensors(model)
    for name, copies in _embeddings(model).items():
        for n in copies:
            if n not in source or n in sources[name] or torch.equal(source.tensor(n).to(ours[name]), ours[name]):
                continue
            if n != "lm_head.weight" and not model.config.tie_word_embeddings:
                raise ValueError(f"{source.key(n)} differs from {source.key(sources[name][0])}: config.json has "
                                 "tie_word_embeddings false, with which transformers 5 gives the encoder, the "
                                 "decoder and shared each an embedding of its own; seq2seq_kit runs one shared "
                                 "embedding (separate ones only for Marian's share_encoder_decoder_embeddings "
                                 "false), so it cannot load these weights")
            if n != "lm_head.weight":
                raise ValueError(f"{source.key(n)} differs from {source.key(sources[name][0])}, but config.json "
                                 "shares one token embedding between encoder and decoder (a Marian checkpoint "
                                 "with separate ones has share_encoder_decoder_embeddings false)")
            warn("the checkpoint's lm_head.weight differs from its token embedding although tie_word_embeddings is "
                 "true; using it untied, as transformers does")
            model.lm_head.weight = nn.Parameter(source.tensor(n).to(ours[name], copy=True))   # not a view of the file


def state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Our tensors under transformers' names (fused projections split), on the CPU; a tied lm_head is left out,
    and so are the computed position tables transformers leaves out (Marian's, M2M100's; it saves Pegasus').
    Untied (tie_word_embeddings false), one shared embedding is written under the encoder's and the decoder's
    names too: transformers 5 then ties nothing and loads each of the three."""
    out, fixed = {}, _fixed_positions(model)
    for name, tensor in tensors(model).items():
        if name in fixed and not model.config.family.saves_positions:
            continue
        names = checkpoint_names(name)
        tensor = tensor.detach().to_dense() if tensor.is_mkldnn else tensor.detach()   # a packed weight (kernels.py)
        for n, part in zip(names, tensor.chunk(len(names), dim=0)):
            out[published(n)] = part.to("cpu").contiguous()
    if model.shared is not None and not model.config.tie_word_embeddings:
        for n in SHARED_ALIASES[1:]:
            out[published(n)] = out[published("shared.weight")].clone()
    return out


def config_dict(model: nn.Module) -> dict:
    """config.json as transformers writes it for this model: its config, the dtype and the architecture."""
    config = model.config.to_dict()
    config["dtype"] = str(model.dtype).removeprefix("torch.")
    config.setdefault("architectures", [model.config.family.architecture])
    return config
