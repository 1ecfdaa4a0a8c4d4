"""The model families seq2seq_kit runs, by config.json `model_type`: the one table that config validation, the
network's switches and the Hub's early check (before any weights are downloaded) all read.

Every family is BART with switches (as CTranslate2's converters and transformers 3.x's single BART class had them):
  positions          "learned": an nn.Embedding read from row 2 on (fairseq's padding offset);
                     "sinusoidal": a fixed table, sin half then cos half, row 0 on (Marian, Pegasus);
                     "sinusoidal_pad": fairseq's fixed table, counted over non-pad tokens from row pad + 1, pad
                     tokens at the table's zero row pad (M2M100 / NLLB: left padding shifts them)
  pre_layer_norm     layer norm before each sublayer plus a final one after the encoder and the decoder (else after)
  embedding_layer_norm   a layer norm on token + position embeddings
  final_logits_bias  a [1, V] bias added to the logits (absent: no add)
  saves_positions    save_pretrained writes the fixed position table (transformers saves Pegasus' as a parameter;
                     Marian's it ignores on save, M2M100's is a buffer it never saves)
  decoder_vocabulary config.json's share_encoder_decoder_embeddings / decoder_vocab_size are read (Marian): false /
                     a size gives the decoder its own token embedding and vocabulary (the LM head's width);
                     other families' config classes ignore those keys, and so does seq2seq_kit
  shifted_inputs     forward() without decoder_input_ids: transformers' model takes input_ids shifted right behind
                     decoder_start_token_id ("start", BART) or behind each row's last non-pad token, its language id
                     ("last_token", mBART); None: it refuses (Marian, Pegasus and M2M100 shift only labels)
config_defaults: transformers' config-class defaults that differ from BartConfig's (used when config.json omits them).
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Family:
    name: str                       # for messages and `seq2seq-kit inspect`
    architecture: str               # transformers' class, as config.json "architectures" names it
    positions: str                  # "learned", "sinusoidal" or "sinusoidal_pad"
    pre_layer_norm: bool
    embedding_layer_norm: bool
    final_logits_bias: bool
    decoder_vocabulary: bool = False
    saves_positions: bool = False
    shifted_inputs: str | None = None
    config_defaults: dict = field(default_factory=dict)
    # transformers' config class declares forced_eos_token_id (M2M100Config does not: there it is a generation key,
    # which transformers 5 drops when it makes a config)
    declares_forced_eos: bool = True


FAMILIES = {
    "bart": Family("BART", "BartForConditionalGeneration", "learned", pre_layer_norm=False,
                   embedding_layer_norm=True, final_logits_bias=True, shifted_inputs="start"),
    "mbart": Family("mBART", "MBartForConditionalGeneration", "learned", pre_layer_norm=True,
                    embedding_layer_norm=True, final_logits_bias=True, shifted_inputs="last_token",
                    config_defaults=dict(decoder_start_token_id=None)),
    "marian": Family("Marian", "MarianMTModel", "sinusoidal", pre_layer_norm=False,
                     embedding_layer_norm=False, final_logits_bias=True, decoder_vocabulary=True,
                     config_defaults=dict(vocab_size=58101, pad_token_id=58100, bos_token_id=None, eos_token_id=0,
                                          decoder_start_token_id=58100, forced_eos_token_id=0)),
    "pegasus": Family("Pegasus", "PegasusForConditionalGeneration", "sinusoidal", pre_layer_norm=True,
                      embedding_layer_norm=False, final_logits_bias=True, saves_positions=True,
                      config_defaults=dict(pad_token_id=0, bos_token_id=None, eos_token_id=1,
                                           decoder_start_token_id=0, forced_eos_token_id=1)),
    "m2m_100": Family("M2M100 / NLLB", "M2M100ForConditionalGeneration", "sinusoidal_pad", pre_layer_norm=True,
                      embedding_layer_norm=False, final_logits_bias=False,
                      config_defaults=dict(vocab_size=128112, activation_function="relu", scale_embedding=True,
                                           forced_eos_token_id=None), declares_forced_eos=False),
}
MODEL_TYPES = tuple(FAMILIES)
