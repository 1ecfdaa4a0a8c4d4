"""BartConfig: the shape of a BART-family model, read from a checkpoint's config.json.

Field names and defaults are transformers 5.25's `BartConfig`, with the defaults of the family's own config class
(`MBartConfig`, `MarianConfig`, ...) where they differ. `model_type` picks the family, and with it the network's
switches (seq2seq_kit/families.py: positions, layer-norm placement, ...). Every other key of config.json (generation settings, id2label,
task_specific_params, fairseq-era keys, ...) is kept verbatim in `extra` and written back by `to_dict`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from pathlib import Path

import torch

from . import hub
from .families import FAMILIES, MODEL_TYPES, Family
from .jsonfile import read_json_object, write_json
from .models.activations import ACTIVATIONS

# transformers' attribute_map: an alias present in config.json overrides the field, as in transformers.
ALIASES = {"hidden_size": "d_model", "num_attention_heads": "encoder_attention_heads",
           "num_hidden_layers": "encoder_layers"}
SIZE_FIELDS = ("vocab_size", "d_model", "encoder_layers", "decoder_layers", "encoder_attention_heads",
               "decoder_attention_heads", "encoder_ffn_dim", "decoder_ffn_dim", "max_position_embeddings")
# Settings every transformers config has, with transformers' defaults: what config.<name> reads where config.json
# leaves them out (the forward's output flags read them as transformers' does)
COMMON_DEFAULTS = dict(output_attentions=False, output_hidden_states=False, return_dict=True, use_cache=True)
FORCED_FIELDS = ("forced_bos_token_id", "forced_eos_token_id")      # generation settings that are fields here
TOKEN_FIELDS = ("pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id",
                "forced_bos_token_id", "forced_eos_token_id")


def _alias(name: str) -> property:
    """transformers' attribute_map on the object too: config.<alias> reads and sets the field it names."""
    target = ALIASES[name]
    return property(lambda self: getattr(self, target), lambda self, value: setattr(self, target, value),
                    doc=f"transformers' alias of {target}")


def _legacy_expectations(family: Family) -> dict:
    """Fairseq-era keys transformers 5 ignores, with the value the architecture implies. A checkpoint that says
    otherwise was trained with a different network than `model_type` builds, so loading it would be wrong.
    (Marian and Pegasus configs carry extra_pos_embeddings / add_bias_logits with other meanings: not checked.)"""
    implied = {"normalize_before": family.pre_layer_norm, "add_final_layer_norm": family.pre_layer_norm,
               "normalize_embedding": family.embedding_layer_norm,
               "static_position_embeddings": family.positions != "learned"}
    if family.positions == "learned":
        implied.update(add_bias_logits=False, extra_pos_embeddings=2, do_blenderbot_90_layernorm=False)
    return implied


@dataclass
class BartConfig:
    vocab_size: int = 50265
    max_position_embeddings: int = 1024
    d_model: int = 1024
    encoder_layers: int = 12
    decoder_layers: int = 12
    encoder_attention_heads: int = 16
    decoder_attention_heads: int = 16
    encoder_ffn_dim: int = 4096
    decoder_ffn_dim: int = 4096
    activation_function: str = "gelu"
    scale_embedding: bool = False
    pad_token_id: int | None = 1
    bos_token_id: int | None = 0
    eos_token_id: int | list[int] | None = 2
    decoder_start_token_id: int | None = 2          # MBartConfig's default is None
    forced_bos_token_id: int | None = None
    forced_eos_token_id: int | list[int] | None = 2
    tie_word_embeddings: bool = True
    dtype: torch.dtype | str | None = None          # config.json "dtype" (or "torch_dtype") as a torch.dtype, as
                                                    # transformers 5; a loaded model's: its own; to_dict: the name
    model_type: str = "bart"
    extra: dict = field(default_factory=dict)       # every other config.json key, verbatim

    hidden_size = _alias("hidden_size")
    num_attention_heads = _alias("num_attention_heads")
    num_hidden_layers = _alias("num_hidden_layers")
    is_encoder_decoder = True                       # transformers' flag, true for every family here

    def __post_init__(self):
        self.dtype = torch_dtype(self.dtype)
        self.validate()
        self._made_with = {name: getattr(self, name) for name in FORCED_FIELDS}   # generation_settings_assigned's

    def generation_settings_assigned(self) -> dict:
        """{name: value} of the forced BOS / EOS ids changed (to other than None) since the config was made, where
        the family's transformers config has no such field (forced_bos_token_id always; forced_eos_token_id on
        M2M100 / NLLB): settings transformers 5 refuses on model.config (the pre-v5 recipe for a translation's
        target), and generate, which reads model.generation_config, would otherwise ignore."""
        kept = ("forced_eos_token_id",) if self.family.declares_forced_eos else ()
        return {name: getattr(self, name) for name in FORCED_FIELDS if name not in kept
                and getattr(self, name) not in (None, self._made_with[name])}

    def __getattr__(self, name: str):
        """Any other key of config.json by name (config.use_cache, config.id2label, ...), as transformers' config
        has them; COMMON_DEFAULTS' where config.json leaves them out."""
        extra = self.__dict__.get("extra")          # None while a copy or an unpickling builds the object
        if extra is not None and name in extra:
            return extra[name]
        if name in COMMON_DEFAULTS:
            return COMMON_DEFAULTS[name]
        raise AttributeError(f"{type(self).__name__!r} object has no attribute {name!r} (no such key in config.json)")

    @property
    def family(self) -> Family:
        """The model family `model_type` names, with the network's switches (seq2seq_kit/families.py)."""
        return FAMILIES[self.model_type]

    @property
    def shared_embeddings(self) -> bool:
        """One token embedding for the encoder and the decoder (model.shared): every checkpoint but a Marian one with
        share_encoder_decoder_embeddings false, whose encoder and decoder have their own (each embed_tokens)."""
        return not self.family.decoder_vocabulary or self.extra.get("share_encoder_decoder_embeddings", True)

    @property
    def positions_skip_pads(self) -> bool:
        """A token's position counts the non-pad tokens before it (M2M100 / NLLB): a pad token takes none."""
        return self.family.positions == "sinusoidal_pad"

    @property
    def decoder_vocab_size(self) -> int:
        """The decoder's vocabulary: its token ids, the LM head's and final_logits_bias' width (V). vocab_size
        unless a Marian config.json sets decoder_vocab_size (MarianConfig: decoder_vocab_size or vocab_size)."""
        if not self.family.decoder_vocabulary:
            return self.vocab_size
        return self.extra.get("decoder_vocab_size") or self.vocab_size

    @property
    def pre_layer_norm(self) -> bool:
        """mBART, Pegasus, M2M100: layer norm before each sublayer, plus final encoder/decoder layer norms."""
        return self.family.pre_layer_norm

    def validate(self) -> None:
        if self.model_type not in MODEL_TYPES:
            raise ValueError(f"unsupported architecture: config.json has model_type={self.model_type!r}; "
                             f"seq2seq_kit runs {', '.join(MODEL_TYPES)} checkpoints only")
        for name in SIZE_FIELDS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ValueError(f"config key {name!r} must be a positive integer, got {value!r}")
        for side in ("encoder", "decoder"):
            heads = getattr(self, f"{side}_attention_heads")
            if self.d_model % heads:
                raise ValueError(f"config key 'd_model' ({self.d_model}) must be divisible by "
                                 f"'{side}_attention_heads' ({heads})")
        if not isinstance(self.activation_function, str) or self.activation_function not in ACTIVATIONS:
            raise ValueError(f"config key 'activation_function' is {self.activation_function!r}; "
                             f"supported: {', '.join(ACTIVATIONS)}")
        for name in ("scale_embedding", "tie_word_embeddings"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"config key {name!r} must be true or false, got {getattr(self, name)!r}")
        self._validate_family()
        for name in TOKEN_FIELDS:
            value = getattr(self, name)
            if isinstance(value, list) and name not in ("eos_token_id", "forced_eos_token_id"):
                raise ValueError(f"config key {name!r} must be an integer, got {value!r} (only eos_token_id and "
                                 "forced_eos_token_id may list several ids)")
            limit, what = self._token_range(name)
            for token in value if isinstance(value, list) else [value]:
                if token is not None and (not isinstance(token, int) or isinstance(token, bool)
                                          or not 0 <= token < limit):
                    raise ValueError(f"config key {name!r} is {value!r}; token ids must be integers in {what}")
        for name, implied in _legacy_expectations(self.family).items():
            if name in self.extra and self.extra[name] is not None and self.extra[name] != implied:
                raise ValueError(
                    f"config key {name!r} is {self.extra[name]!r}, but model_type={self.model_type!r} implies "
                    f"{implied!r} (transformers ignores {name!r} and would silently build a different network "
                    "than the one these weights were trained with); fix config.json")

    def _validate_family(self) -> None:
        if self.family.positions == "sinusoidal_pad" and self.pad_token_id is None:
            raise ValueError(f"config key 'pad_token_id' is null, but model_type={self.model_type!r} counts its "
                             "positions from the pad token; set pad_token_id")
        if not self.family.decoder_vocabulary:
            return
        shared = self.extra.get("share_encoder_decoder_embeddings", True)
        decoder_vocab = self.extra.get("decoder_vocab_size")
        if not isinstance(shared, bool):
            raise ValueError(f"config key 'share_encoder_decoder_embeddings' must be true or false, got {shared!r}")
        if decoder_vocab is not None and (not isinstance(decoder_vocab, int) or isinstance(decoder_vocab, bool)
                                          or decoder_vocab <= 0):
            raise ValueError(f"config key 'decoder_vocab_size' must be a positive integer, got {decoder_vocab!r}")
        if shared and decoder_vocab not in (None, self.vocab_size):
            raise ValueError(f"config.json has decoder_vocab_size={decoder_vocab} but vocab_size={self.vocab_size} "
                             "and share_encoder_decoder_embeddings true: one shared embedding cannot have both "
                             "sizes; set share_encoder_decoder_embeddings false for a separate decoder vocabulary")

    def _token_range(self, name: str) -> tuple[int, str]:
        """(limit, the range in words): decoder ids are in the decoder's vocabulary, pad in both (the encoder pads
        its input with it; both embeddings reserve its row)."""
        if self.decoder_vocab_size == self.vocab_size:
            return self.vocab_size, f"[0, vocab_size={self.vocab_size})"
        if name == "pad_token_id":
            limit = min(self.vocab_size, self.decoder_vocab_size)
            return limit, (f"[0, {limit}) (in vocab_size={self.vocab_size} and "
                           f"decoder_vocab_size={self.decoder_vocab_size})")
        return self.decoder_vocab_size, f"[0, decoder_vocab_size={self.decoder_vocab_size})"

    @classmethod
    def from_dict(cls, d: dict) -> BartConfig:
        d = dict(d)
        model_type = d.get("model_type", "bart")
        known = {f.name for f in fields(cls)} - {"extra"}
        kwargs = {k: d.pop(k) for k in list(d) if k in known}
        for alias, name in ALIASES.items():
            if alias in d:
                kwargs[name] = d.pop(alias)
        if "torch_dtype" in d:
            legacy = d.pop("torch_dtype")
            if kwargs.get("dtype") is None:      # transformers: dtype if not None, else torch_dtype
                kwargs["dtype"] = legacy
        if isinstance(model_type, str) and model_type in FAMILIES:   # else validate() names the key
            defaults = FAMILIES[model_type].config_defaults
            vocab_size = kwargs.get("vocab_size", defaults.get("vocab_size", cls.vocab_size))
            for name, default in defaults.items():
                # A default token id past a hand-written config's own vocabulary (MarianConfig's 58100) is left
                # unset rather than refusing the config: transformers keeps a decoder start with a warning but
                # cannot use it (generation reads config.json), and its network refuses such a pad id.
                unusable = name in TOKEN_FIELDS and isinstance(default, int) and isinstance(vocab_size, int) \
                    and default >= vocab_size
                kwargs.setdefault(name, None if unusable else default)
        return cls(**kwargs, extra=d)

    def token_ids(self) -> dict:
        """The special token ids transformers' config class of the family declares (pad, bos, eos, decoder start,
        forced EOS): the only generation settings transformers 5 keeps in a config (it drops config.json's
        generation keys when it makes one), so what a model built from a config generates with."""
        names = ["pad_token_id", "bos_token_id", "eos_token_id", "decoder_start_token_id"]
        names += ["forced_eos_token_id"] if self.family.declares_forced_eos else []
        return {name: getattr(self, name) for name in names}

    def to_dict(self) -> dict:
        """config.json's keys, dtype by name ("float32"), as transformers' to_dict writes it."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "extra"}
        out["dtype"] = dtype_name(self.dtype)
        out.update(self.extra)
        return dict(sorted(out.items()))

    @classmethod
    def from_pretrained(cls, path: str | Path, **hub_kwargs) -> BartConfig:
        """Read config.json from a checkpoint directory (or Hub id, via seq2seq_kit.hub), or a .json file."""
        hub.check_name(path, "config")
        hub.check_kwargs(hub_kwargs)                # checked for a .json file too
        file = Path(path).expanduser()
        # the name as given (a str is a Hub id where no such folder exists), and only config.json fetched
        path = file if file.is_file() else hub.resolve(path, purpose="config", **hub_kwargs) / "config.json"
        if not path.is_file():
            raise FileNotFoundError(f"no config.json in {path.parent}; a checkpoint directory needs one")
        d = read_json_object(path)
        if "model_type" not in d:           # transformers refuses it too; BART's default would misread the others
            raise ValueError(f"{path} has no 'model_type' key, which names the model family; add the checkpoint's "
                             f"(seq2seq_kit runs {', '.join(MODEL_TYPES)})")
        return cls.from_dict(d)

    def save_pretrained(self, directory: str | Path) -> Path:
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / "config.json"
        write_json(path, self.to_dict(), indent=2, sort_keys=True)
        return path


def torch_dtype(dtype):
    """config.json's dtype name as the torch.dtype it names ("float32" -> torch.float32), as transformers 5 reads
    it; None, a torch.dtype, and a name torch has no dtype for (kept as written: dtype="auto" names it) unchanged."""
    named = getattr(torch, dtype, None) if isinstance(dtype, str) else None
    return named if isinstance(named, torch.dtype) else dtype


def dtype_name(dtype):
    """A config dtype as config.json writes it: torch.float32 -> "float32" (None and other values unchanged)."""
    return str(dtype).removeprefix("torch.") if isinstance(dtype, torch.dtype) else dtype


class AutoConfig:
    """transformers' entry point by name: `from_pretrained` reads the config of any supported checkpoint (one
    BartConfig for every family, model_type kept)."""

    def __init__(self, *args, **kwargs):
        raise TypeError("AutoConfig is not instantiated: use AutoConfig.from_pretrained(path)")

    @staticmethod
    def from_pretrained(path: str | Path, **hub_kwargs) -> BartConfig:
        """See BartConfig.from_pretrained."""
        return BartConfig.from_pretrained(path, **hub_kwargs)
