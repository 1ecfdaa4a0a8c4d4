"""Small random-weight checkpoints made by `transformers` (the oracle), saved the way the Hub ships them.

Tests get them through the session-scoped `checkpoint` fixture in conftest.py:

    path = checkpoint("kobart")            # a directory: config.json, weights, tokenizer files

Every spec is built once per test session. Weights are seeded and drawn with a large std so
logits are decisive (no beam ties); layer norms, biases and `final_logits_bias` are random too,
so a weight that is loaded into the wrong place changes the numbers.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import torch

FIXTURES = Path(__file__).parent / "fixtures"

# The notebook's KoBART summary model (EbanLee/kobart-summary-v3), shrunk in depth.
KOBART = dict(
    vocab_size=30000, d_model=768, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=16, decoder_attention_heads=16,
    encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1026,
    bos_token_id=1, eos_token_id=1, pad_token_id=3, decoder_start_token_id=1,
    forced_eos_token_id=1, activation_function="gelu",
)
# sshleifer/distilbart-cnn-12-6, shrunk in depth; its config.json carries the notebook's generation settings.
DISTILBART = dict(
    vocab_size=50264, d_model=1024, encoder_layers=2, decoder_layers=1,
    encoder_attention_heads=16, decoder_attention_heads=16,
    encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
    bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
    forced_bos_token_id=0, forced_eos_token_id=2, activation_function="gelu",
)
DISTILBART_GENERATION = dict(
    num_beams=4, length_penalty=2.0, max_length=142, min_length=56,
    no_repeat_ngram_size=3, early_stopping=True, forced_bos_token_id=0,
)
# What sshleifer/distilbart-cnn-12-6's config.json carries beyond the model's shape: generation keys,
# task-specific settings the summarization pipeline applies, and fairseq-era keys nothing reads.
DISTILBART_CONFIG_EXTRA = dict(
    **DISTILBART_GENERATION,
    task_specific_params={"summarization": dict(
        num_beams=4, length_penalty=2.0, max_length=142, min_length=56,
        no_repeat_ngram_size=3, early_stopping=True)},
    normalize_before=False, add_final_layer_norm=False, normalize_embedding=True,
    static_position_embeddings=False, add_bias_logits=False, extra_pos_embeddings=2,
    output_past=True,
)
# A fast model on the real BART vocabulary for the bulk of the tests.
TINY = dict(
    vocab_size=50265, d_model=64, encoder_layers=2, decoder_layers=2,
    encoder_attention_heads=4, decoder_attention_heads=4,
    encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=256,
    bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
    forced_eos_token_id=2, activation_function="gelu",
)


@dataclass(frozen=True)
class Spec:
    config: dict
    tokenizer: str | None = "bart"          # fixture folder copied in: "bart", "kobart" or None (no tokenizer)
    model_type: str = "bart"                # a key of ARCHITECTURES
    weights: str = "safetensors"            # "safetensors" or "bin"
    max_shard_size: str | None = None       # e.g. "20MB" for a sharded checkpoint
    init_std: float = 0.2
    seed: int = 0
    config_json_extra: dict = field(default_factory=dict)   # keys merged into config.json after saving
    generation_config: dict | None = None   # written as generation_config.json; None: no such file
    drop_keys: tuple = ()                   # state-dict keys removed from the saved weights
    explicit_lm_head: bool = False          # keep lm_head.weight in the saved file


# model_type -> transformers' (config class, model class)
ARCHITECTURES = {
    "bart": ("BartConfig", "BartForConditionalGeneration"),
    "mbart": ("MBartConfig", "MBartForConditionalGeneration"),
    "marian": ("MarianConfig", "MarianMTModel"),
    "pegasus": ("PegasusConfig", "PegasusForConditionalGeneration"),
    "m2m_100": ("M2M100Config", "M2M100ForConditionalGeneration"),
}
# The BART family's cousins (tests/test_families.py), small: shapes and special tokens as their checkpoints have them.
FAMILY_SHAPE = dict(d_model=64, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                    decoder_attention_heads=4, encoder_ffn_dim=128, decoder_ffn_dim=128, max_position_embeddings=128)
MARIAN = dict(FAMILY_SHAPE, vocab_size=600, pad_token_id=599, eos_token_id=0, decoder_start_token_id=599,
              forced_eos_token_id=0, scale_embedding=True, activation_function="swish")
# Marian with its own target vocabulary (share_encoder_decoder_embeddings false): a larger decoder vocabulary, so a
# decoder id past the source vocabulary is exercised; pad in both.
MARIAN_SEPARATE = dict(MARIAN, vocab_size=500, decoder_vocab_size=640, share_encoder_decoder_embeddings=False,
                       pad_token_id=499, decoder_start_token_id=499)
PEGASUS = dict(FAMILY_SHAPE, vocab_size=600, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
               forced_eos_token_id=1, scale_embedding=True, activation_function="relu")
MBART50 = dict(FAMILY_SHAPE, vocab_size=600, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
               forced_eos_token_id=2, scale_embedding=True, activation_function="gelu")
M2M100 = dict(FAMILY_SHAPE, vocab_size=600, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
              scale_embedding=True, activation_function="relu")
NLLB = dict(FAMILY_SHAPE, vocab_size=640, d_model=32, pad_token_id=1, bos_token_id=0, eos_token_id=2,
            decoder_start_token_id=2, scale_embedding=True, activation_function="relu", max_position_embeddings=96)

SPECS: dict[str, Spec] = {
    "tiny": Spec(TINY),
    "tiny-bin": Spec(TINY, weights="bin", explicit_lm_head=True, seed=1),
    "tiny-sharded": Spec(TINY, max_shard_size="2MB", seed=2),
    "tiny-no-bias": Spec(TINY, drop_keys=("final_logits_bias",), seed=3),
    "tiny-relu": Spec({**TINY, "activation_function": "relu"}, seed=4),
    "tiny-mbart": Spec({**TINY, "scale_embedding": True, "decoder_start_token_id": 2}, model_type="mbart", seed=5),
    "kobart": Spec(KOBART, tokenizer="kobart", init_std=0.1, seed=6),
    "distilbart": Spec(DISTILBART, init_std=0.1, seed=7, config_json_extra=DISTILBART_CONFIG_EXTRA),
    "marian": Spec(MARIAN, tokenizer=None, model_type="marian", seed=11, init_std=0.1,
                   config_json_extra=dict(bad_words_ids=[[599]], num_beams=4, max_length=40)),
    "marian-separate": Spec(MARIAN_SEPARATE, tokenizer=None, model_type="marian", seed=16, init_std=0.1,
                            config_json_extra=dict(bad_words_ids=[[499]], num_beams=4, max_length=40)),
    "marian-separate-untied": Spec({**MARIAN_SEPARATE, "tie_word_embeddings": False}, tokenizer=None,
                                   model_type="marian", seed=17, init_std=0.1),
    "pegasus": Spec(PEGASUS, tokenizer=None, model_type="pegasus", seed=12, init_std=0.1),
    "mbart50": Spec(MBART50, tokenizer=None, model_type="mbart", seed=13, init_std=0.1),
    "m2m100": Spec(M2M100, tokenizer=None, model_type="m2m_100", seed=14, init_std=0.1),
    "nllb": Spec(NLLB, tokenizer=None, model_type="m2m_100", seed=15, init_std=0.1),
}


def _randomize(model: torch.nn.Module, std: float, seed: int) -> None:
    """Seeded weights with a large std; layer norms near 1, biases and final_logits_bias random."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not p.requires_grad:          # fixed sinusoidal position tables (Marian, Pegasus)
                continue
            if "layer_norm" in name or "layernorm" in name:
                base = 1.0 if name.endswith("weight") else 0.0
                p.copy_(base + 0.1 * torch.randn(p.shape, generator=gen))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=gen))
            else:
                p.copy_(std * torch.randn(p.shape, generator=gen))
        for name, b in model.named_buffers():
            if name.endswith("final_logits_bias"):
                b.copy_(0.5 * torch.randn(b.shape, generator=gen))


def build(spec: Spec, out: Path) -> Path:
    """Make the transformers model for `spec`, save it to `out` as the Hub ships it, and return `out`."""
    import transformers
    from safetensors.torch import load_file, save_file

    config_cls, model_cls = (getattr(transformers, n) for n in ARCHITECTURES[spec.model_type])
    model = model_cls(config_cls(**spec.config))
    _randomize(model, spec.init_std, spec.seed)
    model.eval()
    out.mkdir(parents=True, exist_ok=True)
    kwargs = {"safe_serialization": spec.weights == "safetensors"} if spec.weights == "bin" else {}
    if spec.max_shard_size:
        kwargs["max_shard_size"] = spec.max_shard_size
    try:
        model.save_pretrained(out, **kwargs)
    except TypeError:  # transformers without safe_serialization: write .bin ourselves below
        model.save_pretrained(out)
    if spec.weights == "bin" and not (out / "pytorch_model.bin").exists():
        state = load_file(out / "model.safetensors")
        if spec.explicit_lm_head:
            state["lm_head.weight"] = model.lm_head.weight.detach().clone()
        torch.save(state, out / "pytorch_model.bin")
        (out / "model.safetensors").unlink()
    if spec.drop_keys:
        weights = out / "model.safetensors"
        state = load_file(weights)
        state = {k: v for k, v in state.items() if not any(k.endswith(d) for d in spec.drop_keys)}
        save_file(state, weights, metadata={"format": "pt"})

    cfg_path = out / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(spec.config_json_extra)
    cfg_path.write_text(json.dumps(cfg, indent=2))
    gen_path = out / "generation_config.json"
    if spec.generation_config is None:
        gen_path.unlink(missing_ok=True)
    else:
        gen_path.write_text(json.dumps(spec.generation_config, indent=2))

    for f in (FIXTURES / f"{spec.tokenizer}-tokenizer").iterdir() if spec.tokenizer else ():
        shutil.copy(f, out / f.name)
    return out
