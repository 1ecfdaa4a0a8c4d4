"""Helpers the tests share: JSONL files, the documents and settings of the corpus job tests, and comparing two
generate outputs."""

from __future__ import annotations

import json
import random
from pathlib import Path

GEN = {"max_length": 9, "num_beams": 2}   # a corpus job's generation settings: short and quick
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
    """Two GenerateOutputs (return_dict_in_generate, output_scores): the same sequences, and sequence and per-step
    scores within atol (0: bit for bit)."""
    import torch

    assert torch.equal(got.sequences, want.sequences)
    if want.sequences_scores is not None:
        torch.testing.assert_close(got.sequences_scores, want.sequences_scores, atol=atol, rtol=0)
    assert len(got.scores) == len(want.scores)
    for a, b in zip(got.scores, want.scores):
        torch.testing.assert_close(a, b, atol=atol, rtol=0, equal_nan=equal_nan)
