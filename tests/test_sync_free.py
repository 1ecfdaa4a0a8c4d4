"""The sync-free decode loop (generation/sync_free.py): the searches' fixed-shape, device-side steps, read back only
every k steps, give generate's results. On the CPU this checks the logic a whole-step CUDA graph replays.

The loop runs on the model's FixedShapeKVCache (all slots read, those not written masked), whose logits equal the
eager cache's to float rounding: tokens are compared exactly, scores within 1e-4; between two values of k the
results are bit-identical (steps after a stop change nothing).
"""

from __future__ import annotations

import pytest
import torch

from seq2seq_kit.generation.decoding import prepare, result, rows_per_input, start_search
from seq2seq_kit.generation.sync_free import decode
from helpers import assert_same_generation
from test_generation import ATOL, MATRIX, inputs

pytestmark = pytest.mark.filterwarnings("ignore:Using the model-agnostic default:UserWarning")

SAMPLING = [
    ("tiny-eos", 3, dict(do_sample=True, top_k=20, top_p=0.9, temperature=0.8, num_return_sequences=2,
                         max_length=30, forced_eos_token_id=None)),
    ("tiny-eos", 2, dict(do_sample=True, num_beams=3, repetition_penalty=1.2, max_length=25,
                         forced_eos_token_id=None)),
]
CASES = MATRIX + SAMPLING


def sync_free_generate(model, ids, mask, kwargs, check_every, seed):
    generator = torch.Generator().manual_seed(seed)
    input_ids, padding_mask, cfg, _ = prepare(model, ids, mask, dict(kwargs, return_dict_in_generate=True,
                                                                  output_scores=True, output_logits=True), generator)
    hidden = model.encode_unchecked(input_ids, padding_mask)
    cache = model.new_cache(hidden, mask, rows_per_input(cfg), cfg.max_length - 1, fixed_shape=True)
    search = start_search(cfg, input_ids, model.config.decoder_vocab_size, model.device, generator)
    decode(model.decode_step_unchecked, cache, search, check_every)
    assert search.done and not search.going                       # decode's last read saw the stop
    return result(cfg, search)


@pytest.mark.parametrize("name,batch,kwargs", CASES, ids=[f"{n}-b{b}-{k}" for n, b, k in CASES])
def test_sync_free_equals_generate(pair, name, batch, kwargs):
    _, ours = pair(name)
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    ids, mask = ids[:batch], mask[:batch]
    eager = ours.generate(ids, mask, generator=torch.Generator().manual_seed(3), return_dict_in_generate=True,
                          output_scores=True, output_logits=True, **kwargs)
    every_step = sync_free_generate(ours, ids, mask, kwargs, check_every=1, seed=3)
    assert_same_generation(every_step, eager, atol=ATOL, equal_nan=True)

    for k in (4, 7):                   # steps run past the stop (up to k - 1 of them) change nothing
        later = sync_free_generate(ours, ids, mask, kwargs, check_every=k, seed=3)
        assert_same_generation(later, every_step)


def test_stopped_search_state_is_frozen(pair):
    """After the stop, advance_on_device leaves every tensor of the state as it was and returns the identity."""
    _, ours = pair("tiny-eos")
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    input_ids, padding_mask, cfg, _ = prepare(ours, ids, mask, dict(num_beams=3, max_length=8), None)
    search = start_search(cfg, input_ids, ours.config.vocab_size, ours.device)
    logits = torch.randn(search.rows, ours.config.vocab_size, generator=torch.Generator().manual_seed(0))
    while not search.done:
        search.advance(logits)
    before = [t.clone() for t in search.st.tensors()] + [search.cur_len.clone()]
    parents = search.advance_on_device(logits * 2)
    after = search.st.tensors() + [search.cur_len]
    assert all(torch.equal(a, b) for a, b in zip(before, after))
    assert torch.equal(parents, torch.arange(search.rows)) and not search.going
