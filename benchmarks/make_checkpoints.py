"""Full-size random-weight checkpoints for the benchmark, made by `transformers` and saved once.

    python benchmarks/make_checkpoints.py            # builds what is missing under benchmarks/.cache/
    python benchmarks/make_checkpoints.py --force    # rebuilds

Five shapes: the two the notebook runs, CTranslate2's own published translation benchmark model, NLLB's and
Pegasus':
  distilbart  sshleifer/distilbart-cnn-12-6: d_model 1024, 12 encoder / 6 decoder layers, 16 heads,
              ffn 4096, vocab 50264; its config.json carries the notebook's generation settings.
  kobart      EbanLee/kobart-summary-v3: d_model 768, 6 + 6 layers, 16 heads, ffn 3072, vocab 30000.
              The real checkpoint leaves generation at the library defaults (greedy, max_length 20),
              useless for timing, so this one gets distilbart's summarization settings in
              generation_config.json.
  nllb-600m   facebook/nllb-200-distilled-600M (M2M100): d_model 1024, 12 + 12 layers, 16 heads, ffn 4096,
              vocab 256206 (an LM head of 1 GB in float32), translating into German (deu_Latn forced first, as
              the pipeline forces tgt_lang), beam 4, max_length 128. Its tokenizer: an NLLB tokenizer.json made by
              transformers from a BPE SentencePiece model trained on the benchmark's English texts (ids below
              ~4300; the rest of the vocabulary only ever comes out of the random LM head).
  pegasus-cnn google/pegasus-cnn_dailymail: d_model 1024, 16 + 16 layers, 16 heads, ffn 4096, vocab 96103, its
              generation settings (length penalty 0.8, min_length 32, max_length 128); its tokenizer: a Pegasus
              tokenizer.json made by transformers from a unigram SentencePiece model trained on the benchmark's
              English texts.
  opus-mt-en-de  Helsinki-NLP/opus-mt-en-de (Marian base): d_model 512, 6 + 6 layers, 8 heads, ffn 2048,
              vocab 58101, sinusoidal positions, beam 4 (its config.json's settings). Its tokenizer is
              SentencePiece, which no fixture ships: a unigram model is trained here on the benchmark's English
              texts (source.spm = target.spm), its pieces first in vocab.json, filler tokens up to id 58099,
              <pad> 58100, as opus-mt's files are laid out (CTranslate2's converter and transformers read them);
              the timing does not depend on what the ids mean. Its <pad> embedding row is zero, as in the real
              checkpoints (CTranslate2 starts the decoder from a zero embedding instead of the pad token's).

Weights: transformers' default init, then every matrix redrawn from N(0, std) with a std per kind.
With one std everywhere a random post-LN decoder collapses: attention averages the rows, the
hidden states of all steps become the same vector, and greedy search emits one token over and
over. Small attention weights (0.01) against larger FFN and embedding weights (0.05) keep the
decoder's output a function of the current token and position, so the generated text varies
(`--check` prints the generated lengths and distinct-token counts) and the logits are decisive
enough that fp32 engines agree token for token.

Each directory gets the real tokenizer files from tests/fixtures and, in config.json, the legacy
keys real BART configs carry that CTranslate2's converter reads (normalize_before, ...).
"""

from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent
CACHE = ROOT / ".cache"
FIXTURES = ROOT.parent / "tests" / "fixtures"

SUMMARIZATION = dict(  # sshleifer/distilbart-cnn-12-6's generation settings (config.json)
    num_beams=4, length_penalty=2.0, max_length=142, min_length=56,
    no_repeat_ngram_size=3, early_stopping=True,
)
LEGACY_KEYS = dict(  # read by CTranslate2's converter; present in real BART config.json files
    normalize_before=False, add_final_layer_norm=False, normalize_embedding=True,
    static_position_embeddings=False, add_bias_logits=False, extra_pos_embeddings=2,
)

MODELS = {
    "distilbart": dict(
        tokenizer="bart-tokenizer",
        config=dict(
            vocab_size=50264, d_model=1024, encoder_layers=12, decoder_layers=6,
            encoder_attention_heads=16, decoder_attention_heads=16,
            encoder_ffn_dim=4096, decoder_ffn_dim=4096, max_position_embeddings=1024,
            bos_token_id=0, eos_token_id=2, pad_token_id=1, decoder_start_token_id=2,
            forced_bos_token_id=0, forced_eos_token_id=2, activation_function="gelu",
        ),
        config_json_extra=dict(
            **SUMMARIZATION, forced_bos_token_id=0, **LEGACY_KEYS,
            task_specific_params={"summarization": dict(SUMMARIZATION)},
        ),
        generation_config=None,
        seed=0,
    ),
    "kobart": dict(
        tokenizer="kobart-tokenizer",
        config=dict(
            vocab_size=30000, d_model=768, encoder_layers=6, decoder_layers=6,
            encoder_attention_heads=16, decoder_attention_heads=16,
            encoder_ffn_dim=3072, decoder_ffn_dim=3072, max_position_embeddings=1026,
            bos_token_id=1, eos_token_id=1, pad_token_id=3, decoder_start_token_id=1,
            forced_eos_token_id=1, activation_function="gelu",
        ),
        config_json_extra=dict(**LEGACY_KEYS),
        generation_config=dict(
            bos_token_id=1, eos_token_id=1, pad_token_id=3, decoder_start_token_id=1,
            forced_eos_token_id=1, **SUMMARIZATION,
        ),
        seed=1,
    ),
}

MODELS["opus-mt-en-de"] = dict(
    tokenizer="marian-spm",
    architecture="marian",
    config=dict(
        vocab_size=58101, d_model=512, encoder_layers=6, decoder_layers=6,
        encoder_attention_heads=8, decoder_attention_heads=8,
        encoder_ffn_dim=2048, decoder_ffn_dim=2048, max_position_embeddings=512,
        pad_token_id=58100, eos_token_id=0, decoder_start_token_id=58100, forced_eos_token_id=0,
        activation_function="swish", scale_embedding=True,
    ),
    config_json_extra=dict(   # opus-mt-en-de's config.json keys; max_length 128, not its 512: random weights never end
        bad_words_ids=[[58100]], num_beams=4, max_length=128, normalize_before=False, add_final_layer_norm=False,
        normalize_embedding=False, static_position_embeddings=True, add_bias_logits=False,
    ),
    generation_config=None,
    seed=2,
)
MODELS["nllb-600m"] = dict(
    tokenizer="nllb-spm",
    architecture="m2m_100",
    config=dict(   # facebook/nllb-200-distilled-600M's shape: pre-LN, sinusoidal positions, 256206 tokens
        vocab_size=256206, d_model=1024, encoder_layers=12, decoder_layers=12,
        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
        max_position_embeddings=1024, pad_token_id=1, bos_token_id=0, eos_token_id=2, decoder_start_token_id=2,
        activation_function="relu", scale_embedding=True,
    ),
    config_json_extra=dict(tokenizer_class="NllbTokenizer"),
    # a translation into German as the pipeline runs it (tgt_lang forced first), beam 4 as its model card's
    # examples; max_length 128, not its 200: random weights never end. forced_bos_token_id: set by build (deu_Latn)
    generation_config=dict(decoder_start_token_id=2, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                           num_beams=4, max_length=128),
    seed=3,
)
MODELS["pegasus-cnn"] = dict(
    tokenizer="pegasus-spm",
    architecture="pegasus",
    config=dict(   # google/pegasus-cnn_dailymail's shape: pre-LN, sinusoidal positions, 16 + 16 layers
        vocab_size=96103, d_model=1024, encoder_layers=16, decoder_layers=16,
        encoder_attention_heads=16, decoder_attention_heads=16, encoder_ffn_dim=4096, decoder_ffn_dim=4096,
        max_position_embeddings=1024, pad_token_id=0, eos_token_id=1, decoder_start_token_id=0,
        forced_eos_token_id=1, activation_function="relu", scale_embedding=True,
    ),
    config_json_extra=dict(   # google/pegasus-cnn_dailymail's config.json keys that CTranslate2's converter reads
        tokenizer_class="PegasusTokenizer", normalize_before=True, add_final_layer_norm=True,
        normalize_embedding=False, static_position_embeddings=True, add_bias_logits=False,
    ),
    # its generation settings (length_penalty 0.8, min_length 32, max_length 128; the benchmark's modes set
    # num_beams: its 8 is not among them)
    generation_config=dict(decoder_start_token_id=0, eos_token_id=1, pad_token_id=0, forced_eos_token_id=1,
                           num_beams=8, length_penalty=0.8, min_length=32, max_length=128),
    seed=4,
)
ARCHITECTURES = {"bart": ("BartConfig", "BartForConditionalGeneration"), "marian": ("MarianConfig", "MarianMTModel"),
                 "m2m_100": ("M2M100Config", "M2M100ForConditionalGeneration"),
                 "pegasus": ("PegasusConfig", "PegasusForConditionalGeneration")}

STD_ATTENTION = 0.01
STD_FFN = 0.05
STD_EMBEDDING = 0.05


def path(name: str) -> Path:
    return CACHE / name


def _init(model: torch.nn.Module, seed: int) -> None:
    """Redraw every matrix from N(0, std): small for attention, larger for FFN and embeddings."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if p.dim() < 2 or not p.requires_grad:
                continue  # layer norms (1, 0), biases (0) and fixed sinusoidal positions keep transformers' init
            if "embed" in name or "shared" in name:
                std = STD_EMBEDDING
            elif "attn" in name:
                std = STD_ATTENTION
            else:
                std = STD_FFN
            p.copy_(std * torch.randn(p.shape, generator=gen))


def trained_spm(model_type: str, **ids) -> bytes:
    """A SentencePiece model ("unigram" or "bpe") trained on the benchmark's English texts; ids: its special pieces'
    ids (pad_id=0, ...), where not SentencePiece's."""
    import io

    import sentencepiece as spm
    from texts import ENGLISH

    buf = io.BytesIO()
    spm.SentencePieceTrainer.train(sentence_iterator=iter(ENGLISH), model_writer=buf, vocab_size=4000,
                                   model_type=model_type, hard_vocab_limit=False, minloglevel=2, **ids)
    return buf.getvalue()


def marian_tokenizer(out: Path, vocab_size: int) -> None:
    """source.spm / target.spm (a unigram model trained on the benchmark's English texts) and vocab.json:
    </s> 0, <unk> 1, the pieces, filler tokens, <pad> last (vocab_size - 1), as opus-mt's files are laid out."""
    import sentencepiece as spm

    model = trained_spm("unigram")
    (out / "source.spm").write_bytes(model)
    (out / "target.spm").write_bytes(model)
    processor = spm.SentencePieceProcessor(model_proto=model)
    vocab = {"</s>": 0, "<unk>": 1}
    for i in range(processor.get_piece_size()):
        vocab.setdefault(processor.id_to_piece(i), len(vocab))
    vocab.update({f"<filler{i}>": i for i in range(len(vocab), vocab_size - 1)})
    vocab["<pad>"] = vocab_size - 1
    (out / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False))
    (out / "tokenizer_config.json").write_text(json.dumps({"tokenizer_class": "MarianTokenizer",
                                                           "model_max_length": 512}))


def nllb_tokenizer(out: Path) -> int:
    """An NLLB tokenizer as facebook/nllb-200-* ship it (tokenizer.json, the 202 language codes as added tokens),
    from a BPE SentencePiece model trained on the benchmark's English texts; returns deu_Latn's id."""
    import tempfile

    from transformers import NllbTokenizer
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    with tempfile.TemporaryDirectory() as spm_dir:
        (Path(spm_dir) / "sentencepiece.bpe.model").write_bytes(trained_spm("bpe"))
        tok = NllbTokenizer.from_pretrained(spm_dir, additional_special_tokens=FAIRSEQ_LANGUAGE_CODES)
    tok.save_pretrained(out)
    return tok.convert_tokens_to_ids("deu_Latn")


def pegasus_tokenizer(out: Path, vocab_size: int) -> None:
    """A Pegasus tokenizer as transformers saves google/pegasus-* (tokenizer.json, its 103 reserved tokens first),
    from a unigram SentencePiece model trained on the benchmark's English texts, filled up to the model's
    vocabulary with pieces no text reaches (CTranslate2's Pegasus converter wants the vocabulary the model has)."""
    import tempfile

    from sentencepiece import sentencepiece_model_pb2
    from transformers import PegasusTokenizer

    proto = sentencepiece_model_pb2.ModelProto()
    proto.ParseFromString(trained_spm("unigram", pad_id=0, eos_id=1, unk_id=2, bos_id=-1))
    for i in range(len(proto.pieces), vocab_size - 103):          # PegasusTokenizer puts 103 tokens before them
        proto.pieces.add(piece=f"\u2581<filler{i}>", score=-1e6)
    with tempfile.TemporaryDirectory() as spm_dir:
        (Path(spm_dir) / "spiece.model").write_bytes(proto.SerializeToString())
        PegasusTokenizer.from_pretrained(spm_dir).save_pretrained(out)


def build(name: str, out: Path) -> Path:
    """Make model `name` with transformers, save it with tokenizer files and extra keys to `out`."""
    import transformers

    spec = MODELS[name]
    config_cls, model_cls = (getattr(transformers, n) for n in ARCHITECTURES[spec.get("architecture", "bart")])
    model = model_cls(config_cls(**spec["config"]))
    _init(model, spec["seed"])
    if spec.get("architecture") == "marian":
        with torch.no_grad():   # the real checkpoints' <pad> row is zero (the decoder starts from it)
            model.get_input_embeddings().weight[spec["config"]["pad_token_id"]] = 0
    model.eval()
    tmp = out.with_name(out.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)

    cfg_path = tmp / "config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg.update(spec["config_json_extra"])
    cfg_path.write_text(json.dumps(cfg, indent=2))
    gen_path = tmp / "generation_config.json"
    if spec["generation_config"] is None:
        gen_path.unlink(missing_ok=True)
    else:
        gen_path.write_text(json.dumps(spec["generation_config"], indent=2))
    if spec["tokenizer"] == "marian-spm":
        marian_tokenizer(tmp, spec["config"]["vocab_size"])
    elif spec["tokenizer"] == "pegasus-spm":
        pegasus_tokenizer(tmp, spec["config"]["vocab_size"])
    elif spec["tokenizer"] == "nllb-spm":
        generation = json.loads(gen_path.read_text())
        gen_path.write_text(json.dumps({**generation, "forced_bos_token_id": nllb_tokenizer(tmp)}, indent=2))
    else:
        for f in (FIXTURES / spec["tokenizer"]).iterdir():
            shutil.copy(f, tmp / f.name)
    shutil.rmtree(out, ignore_errors=True)
    tmp.rename(out)  # complete or absent: an interrupted build leaves no half checkpoint
    return out


def ensure(name: str, force: bool = False) -> Path:
    """The checkpoint directory for `name`, built on first use."""
    if name not in MODELS:
        raise ValueError(f"unknown benchmark model {name!r}; choose from {sorted(MODELS)}")
    out = path(name)
    if force or not (out / "config.json").exists():
        print(f"building {name} checkpoint in {out} ...", flush=True)
        build(name, out)
    return out


def check(name: str) -> None:
    """Generate with transformers on the benchmark texts; print lengths and distinct tokens per row."""
    import transformers
    from texts import documents

    out = ensure(name)
    tok = transformers.AutoTokenizer.from_pretrained(out)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(out).eval()
    docs = documents(name)[:2]
    enc = tok(docs, return_tensors="pt", truncation=True, max_length=512, padding=True)
    for beams in (1, 4):
        with torch.inference_mode():
            seqs = model.generate(**enc, num_beams=beams)
        for row in seqs.tolist():
            print(f"{name} beams={beams}: length {len(row)}, distinct {len(set(row))}: "
                  f"{tok.decode(row[:30])!r}")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="distilbart,kobart")
    ap.add_argument("--force", action="store_true", help="rebuild even if present")
    ap.add_argument("--check", action="store_true", help="generate with transformers and print lengths")
    args = ap.parse_args(argv)
    for name in args.models.split(","):
        print(ensure(name, force=args.force))
        if args.check:
            check(name)


if __name__ == "__main__":
    main()
