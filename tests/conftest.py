"""Shared fixtures: random-weight checkpoints built once per session (see checkpoints.py)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest
import torch

from checkpoints import FIXTURES, SPECS, build

# No timing in tests: every float32 CPU model runs oneDNN on the dense weight wherever models/kernels.py's ELIGIBLE
# allows it, so the parity tests check the eligibility table; tests/test_kernels.py checks the packed weights'
# parity and the measured choice. (Not "onednn-packed" here: cuda_graph.graph_key reads data_ptr(), which a packed
# oneDNN tensor lacks, and the CPU graph-bookkeeping tests run that path.) The encoder's layers and the beams'
# self-attention qkv_proj may run oneDNN only packed, so here they run MKL, as transformers does, and the suite's
# 1e-4 on logits holds; test_kernels.py checks them packed against transformers' own float32 rounding.
os.environ.setdefault("SEQ2SEQ_KIT_CPU_KERNELS", "onednn")

EOS_BOOST = {2: 7.0, 4: 6.0}   # "tiny-eos": tiny with final_logits_bias raised for EOS (2) and "." (4)


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "cuda" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory):
    """checkpoint(name) -> Path of a saved random checkpoint from checkpoints.SPECS, built on first use."""
    root = tmp_path_factory.mktemp("checkpoints")
    built: dict[str, Path] = {}

    def get(name: str) -> Path:
        if name not in built:
            built[name] = build(SPECS[name], root / name)
        return built[name]

    return get


@pytest.fixture(scope="session", autouse=True)
def quiet_transformers():
    """transformers' own warnings (e.g. on max_length defaults) are noise in a parity test's output."""
    import transformers

    transformers.logging.set_verbosity_error()


@pytest.fixture(scope="session")
def tiny_eos_path(checkpoint, tmp_path_factory) -> Path:
    """tiny with EOS_BOOST added to final_logits_bias: rows end at different steps, some never."""
    from safetensors.torch import load_file, save_file

    path = tmp_path_factory.mktemp("tiny-eos")
    shutil.copytree(checkpoint("tiny"), path, dirs_exist_ok=True)
    state = load_file(path / "model.safetensors")
    for token, boost in EOS_BOOST.items():
        state["final_logits_bias"][0, token] += boost
    save_file(state, path / "model.safetensors", metadata={"format": "pt"})
    return path


@pytest.fixture(scope="session")
def small_path(tmp_path_factory) -> Path:
    """A 64-token, 2-layer BART with decisive logits (init std 0.3) and EOS raised so that rows end at different
    steps (for settings drawn at random: tests/helpers.py random_settings)."""
    import transformers

    config = transformers.BartConfig(vocab_size=64, d_model=32, encoder_layers=1, decoder_layers=2,
                                     encoder_attention_heads=2, decoder_attention_heads=2, encoder_ffn_dim=64,
                                     decoder_ffn_dim=64, max_position_embeddings=64, init_std=0.3,
                                     forced_eos_token_id=None)
    torch.manual_seed(0)
    model = transformers.BartForConditionalGeneration(config).eval()
    with torch.no_grad():
        model.final_logits_bias[0, 2] += 2.5
    path = tmp_path_factory.mktemp("small")
    model.save_pretrained(path)
    return path


def loaded_pairs(checkpoint, tiny_eos_path, **transformers_kwargs):
    """get(name) -> (transformers model, seq2seq_kit model) for a checkpoints.SPECS name or "tiny-eos", each loaded
    once; transformers_kwargs: its from_pretrained's (attn_implementation="eager")."""
    import transformers

    from seq2seq_kit import BartForConditionalGeneration

    loaded = {}

    def get(name: str):
        if name not in loaded:
            path = tiny_eos_path if name == "tiny-eos" else checkpoint(name)
            loaded[name] = (transformers.AutoModelForSeq2SeqLM.from_pretrained(path, **transformers_kwargs).eval(),
                            BartForConditionalGeneration.from_pretrained(path))
        return loaded[name]

    return get


@pytest.fixture(scope="module")
def pair(checkpoint, tiny_eos_path):
    """pair(name) -> (transformers model, seq2seq_kit model), loaded once per test module (loaded_pairs)."""
    return loaded_pairs(checkpoint, tiny_eos_path)


@pytest.fixture(scope="module")
def eager_pair(checkpoint, tiny_eos_path):
    """pair's, with transformers' eager attention (the only one that returns attention probabilities)."""
    return loaded_pairs(checkpoint, tiny_eos_path, attn_implementation="eager")


@pytest.fixture(scope="session")
def fixtures_dir() -> Path:
    return FIXTURES
