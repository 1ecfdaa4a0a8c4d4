"""Helpers the tests share: JSONL files, the documents and settings of the corpus job tests, comparing two
generate outputs, random generate settings, and the host reads a captured step must not make."""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

GEN = {"max_length": 9, "num_beams": 2}   # a corpus job's generation settings: short and quick
# Every Python-level way of reading a tensor's value back to the host (what a CUDA graph capture refuses)
READS = ("item", "tolist", "__bool__", "__int__", "__float__", "__index__", "numpy")
WORDS = ("the tower is 324 metres tall about the same height as an 81-storey building and the tallest structure in "
         "Paris its base is square measuring 125 metres on each side during the 1905-06 season the club finished "
         "second in Division One").split()


def write_jsonl(path: Path, rows) -> Path:
    """One JSON line per row; returns the path."""
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


def read_jsonl(path: Path) -> list:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def make_docs(n: int, seed: int = 0) -> list[dict]:
    """n documents of varied length (3..60 words), ids doc0, doc1, ..."""
    rng = random.Random(seed)
    return [{"id": f"doc{i}", "text": " ".join(rng.choices(WORDS, k=rng.randint(3, 60)))} for i in range(n)]


def by_id(records: list) -> dict:
    """{id: record}, asserting that no id was written twice."""
    ids = [r["id"] for r in records]
    assert len(ids) == len(set(ids)), "an id was written twice"
    return {r["id"]: r for r in records}


def random_batch(vocab_size: int, pad: int, lengths, seed: int, *, bos: int | None = None, eos: int | None = None,
                 target_len: int | None = None, decoder_start: int | None = None):
    """A right-padded batch of len(lengths) random inputs (ids 4.., drawn from one seeded generator): ids and
    mask [B, max(lengths)]; bos/eos put at each row's ends when given; with target_len, also random decoder
    inputs [B, target_len] starting with decoder_start, drawn after the ids."""
    import torch

    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(4, vocab_size, (len(lengths), max(lengths)), generator=g)
    mask = (torch.arange(max(lengths))[None, :] < torch.tensor(lengths)[:, None]).long()
    for i, n in enumerate(lengths):
        if bos is not None:
            ids[i, 0] = bos
        if eos is not None:
            ids[i, n - 1] = eos
    ids = ids.masked_fill(mask == 0, pad)
    if target_len is None:
        return ids, mask
    dec = torch.randint(4, vocab_size, (len(lengths), target_len), generator=g)
    dec[:, 0] = decoder_start
    return ids, mask, dec


def assert_same_generation(got, want, atol: float = 0.0, equal_nan: bool = False) -> None:
    """Two GenerateOutputs (return_dict_in_generate, output_scores): the same sequences and beam indices, and
    sequence and per-step scores within atol (0: bit for bit)."""
    import torch

    assert torch.equal(got.sequences, want.sequences)
    assert (got.beam_indices is None and want.beam_indices is None) or torch.equal(got.beam_indices,
                                                                                   want.beam_indices)
    if want.sequences_scores is not None:
        torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=atol, rtol=0)
    assert len(got.scores) == len(want.scores)
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, equal_nan=equal_nan)
    assert (got.logits is None) == (want.logits is None)
    for a, b in zip(got.logits or (), want.logits or (), strict=True):
        torch.testing.assert_close(a, b, atol=atol, rtol=0)


def random_settings(rng: random.Random) -> dict:
    """Valid generate settings, each processor and search mode drawn on its own (any combination can occur)."""
    beams = rng.choice([1, 1, 2, 3, 4])
    kwargs = dict(num_beams=beams, max_new_tokens=rng.randint(1, 20))
    optional = dict(do_sample=[True], repetition_penalty=[0.7, 1.3, 2.0], no_repeat_ngram_size=[1, 2, 3],
                    encoder_no_repeat_ngram_size=[1, 2, 3], min_new_tokens=[0, 4, 10], min_length=[0, 5, 10],
                    forced_bos_token_id=[3, 30], forced_eos_token_id=[2, [2, 5]], eos_token_id=[2, [2, 4]],
                    bad_words_ids=[[[5]], [[6, 7]], [[5], [8, 9, 10]]], renormalize_logits=[True])
    for name, values in optional.items():
        if rng.random() < 0.35:
            kwargs[name] = rng.choice(values)
    if beams > 1:
        kwargs.update(length_penalty=rng.choice([0.5, 1.0, 2.0, -1.0]), num_return_sequences=rng.randint(1, beams),
                      early_stopping=rng.choice([True, False, "never"]))
    elif kwargs.get("do_sample"):
        kwargs["num_return_sequences"] = rng.randint(1, 3)
    if kwargs.get("do_sample"):
        kwargs.update(top_k=rng.choice([0, 1, 5, 50]), top_p=rng.choice([0.3, 0.9, 1.0]),
                      temperature=rng.choice([0.5, 1.0, 1.5]))
    less_common = dict(sequence_bias=[{(5,): 3.0}, {(6,): -2.0, (7, 8): 4.0, (9, 10, 11): -math.inf}],
                       encoder_repetition_penalty=[0.6, 1.8], suppress_tokens=[[5, 6]], begin_suppress_tokens=[[2, 7]],
                       exponential_decay_length_penalty=[(0, 1.4), (3, 2.0)])
    if kwargs.get("do_sample"):
        less_common.update(min_p=[0.05, 0.3], top_h=[0.4, 0.9], typical_p=[0.5, 0.95], epsilon_cutoff=[3e-3, 0.05],
                           eta_cutoff=[3e-3, 0.05])
    for name, values in less_common.items():
        if rng.random() < 0.15:
            kwargs[name] = rng.choice(values)
    return kwargs


def decode_eagerly(step, cache, search, check_every: int) -> None:
    """Run `search` to its end with whole_step.step_once, eagerly, reading the stop flag every `check_every` steps
    (what a WholeStepGraph's replays compute; on any device)."""
    from seq2seq_kit.generation.sync_free import run_until_stopped
    from seq2seq_kit.generation.whole_step import step_once

    run_until_stopped(lambda: step_once(step, cache, search), search, check_every)
