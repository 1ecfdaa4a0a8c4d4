"""watermarking_config: transformers' green-list watermark (WatermarkLogitsProcessor), against transformers itself
on the tiny-eos checkpoint (the real BART vocabulary): tokens equal and every step's processed scores within 1e-4,
in greedy, beam and sampling search, for both seeding schemes and contexts longer than the first step's."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
import transformers

from helpers import random_batch
from seq2seq_kit import BartForConditionalGeneration, Engine, WatermarkDetector, summarize_corpus
from seq2seq_kit.generation import GenerationConfig, decoding
from test_cuda_graph import emulate_graphs

SETTINGS = [dict(), dict(bias=5.0, seeding_scheme="selfhash"), dict(context_width=3, greenlist_ratio=0.5, bias=4.0),
            dict(hashing_key=7, seeding_scheme="selfhash", context_width=2, bias=3.0)]
SEARCHES = [dict(num_beams=1), dict(num_beams=3, num_return_sequences=2), dict(do_sample=True, top_k=20),
            dict(num_beams=2, do_sample=True, renormalize_logits=True)]


def assert_same_scores(mine, theirs):
    assert len(mine) == len(theirs)
    for a, b in zip(mine, theirs):
        assert torch.equal(a.isinf(), b.isinf())
        torch.testing.assert_close(a[~a.isinf()], b[~b.isinf()], atol=1e-4, rtol=0)


@pytest.mark.parametrize("search", SEARCHES, ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
@pytest.mark.parametrize("watermark", SETTINGS, ids=lambda w: "-".join(f"{k}={v}" for k, v in w.items()) or "defaults")
def test_the_watermark_is_transformers(pair, watermark, search):
    hf, ours = pair("tiny-eos")
    ids, mask = random_batch(hf.config.vocab_size, hf.config.pad_token_id, (12, 9, 5), seed=9)
    settings = dict(max_length=14, output_scores=True, return_dict_in_generate=True, **search)
    torch.manual_seed(0)                    # sampling draws from the global RNG in both
    theirs = hf.generate(ids, attention_mask=mask, watermarking_config=transformers.WatermarkingConfig(**watermark),
                         **settings)
    torch.manual_seed(0)
    mine = ours.generate(ids, mask, watermarking_config=watermark, **settings)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert_same_scores(mine.scores, theirs.scores)
    torch.manual_seed(0)
    assert not torch.equal(mine.sequences, ours.generate(ids, mask, **settings).sequences)     # it acts


def test_transformers_config_object_and_dict_are_taken_alike(pair):
    """transformers' WatermarkingConfig, its dict, and a generation config holding it (read from JSON, or the object
    assigned: kept as its settings, which save_pretrained can write) give the same tokens; a call's
    watermarking_config=None runs without the generation config's."""
    _, ours = pair("tiny-eos")
    ids, mask = random_batch(ours.config.vocab_size, ours.config.pad_token_id, (12, 9), seed=3)
    config = transformers.WatermarkingConfig(bias=3.0, seeding_scheme="selfhash")
    runs = [ours.generate(ids, mask, max_length=10, watermarking_config=value)
            for value in (config, config.to_dict(), {"bias": 3.0, "seeding_scheme": "selfhash"})]
    assert all(torch.equal(runs[0], other) for other in runs[1:])
    saved = GenerationConfig.from_dict({**ours.generation_config.to_dict(), "watermarking_config": config.to_dict()})
    assert torch.equal(ours.generate(ids, mask, max_length=10, generation_config=saved), runs[0])
    assigned = GenerationConfig.from_dict(ours.generation_config.to_dict())
    assigned.watermarking_config = config                    # transformers' object, kept as its settings
    assert assigned.watermarking_config == config.to_dict()
    assert torch.equal(ours.generate(ids, mask, max_length=10, generation_config=assigned), runs[0])
    assert torch.equal(ours.generate(ids, mask, max_length=10, generation_config=saved, watermarking_config=None),
                       ours.generate(ids, mask, max_length=10))                     # the call's None wins


@pytest.mark.parametrize("value, message", [
    ({"bias": 2.0, "gamma": 0.3}, r"unknown key\(s\) \['gamma'\]"),
    ({"greenlist_ratio": 1.0}, "greenlist_ratio must be between 0 and 1"),
    ({"seeding_scheme": "hash"}, "seeding_scheme must be 'lefthash' or 'selfhash'"),
    ({"context_width": 0}, "context_width` must be an integer >= 1"),
    ({"bias": float("nan")}, "bias must be a finite number"),
    ({"ngram_len": 5, "keys": [1, 2]}, "SynthID text watermarking is not implemented"),
    ("lefthash", "must be a dict of greenlist_ratio"),
])
def test_bad_watermark_settings_are_refused(pair, value, message):
    _, ours = pair("tiny-eos")
    with pytest.raises(ValueError, match=message):
        ours.generate(torch.tensor([[0, 5, 2]]), max_length=8, watermarking_config=value)


def test_where_the_watermark_does_not_run(pair, tiny_eos_path, tmp_path):
    """Prompt lookup refuses it; so do the engine's fixed-capacity step (CUDA graphs, the default on CUDA; here
    fixed_capacity=True on the CPU) and corpus jobs (their meta file would hold the key), by name."""
    _, ours = pair("tiny-eos")
    with pytest.raises(ValueError, match="watermarking_config beside prompt_lookup_num_tokens"):
        ours.generate(torch.tensor([[0, 5, 6, 5, 6, 2]]), max_length=8, prompt_lookup_num_tokens=2,
                      watermarking_config={})
    with Engine(ours, max_rows=4, fixed_capacity=True) as engine:
        with pytest.raises(ValueError, match="watermarking_config: .* fixed-capacity step .* Engine.*fixed_capacity="
                                             "False. runs it"):
            engine.submit([0, 5, 6, 2], max_length=8, watermarking_config={})
    with pytest.raises(ValueError, match="fixed-capacity step"):
        Engine(ours, max_rows=4, fixed_capacity=True, defaults={"watermarking_config": {}})
    docs = tmp_path / "docs.jsonl"
    docs.write_text('{"id": "a", "text": "The tower is tall."}\n')
    with pytest.raises(ValueError, match="meta file, which would hold the watermark's key"):
        summarize_corpus(docs, tmp_path / "out.jsonl", model=str(tiny_eos_path), watermarking_config={})


@pytest.mark.parametrize("search", [dict(num_beams=1), dict(num_beams=2, num_return_sequences=2),
                                    dict(do_sample=True, top_k=20)], ids=["greedy", "beam", "sample"])
def test_the_engine_watermarks_each_request_as_generate_alone(pair, search, monkeypatch):
    """Requests of different lengths joining at different steps (room for two at a time: a waiting one joins as
    another ends), watermarked or not, beside each other: each one's tokens are generate's for its input alone
    (sampling: from the same seeded generator), the watermark reading rows at different lengths on the way."""
    from seq2seq_kit.generation.logits_process import Watermark

    seen = []
    call = Watermark.__call__
    monkeypatch.setattr(Watermark, "__call__", lambda self, seq, cur_len, scores: (
        seen.append(isinstance(cur_len, int) or len(set(cur_len.view(-1).tolist())) == 1),
        call(self, seq, cur_len, scores))[1])
    _, ours = pair("tiny-eos")
    ids, mask = random_batch(ours.config.vocab_size, ours.config.pad_token_id, (12, 9, 5, 7, 10), seed=5)
    rows = [row[m.bool()].tolist() for row, m in zip(ids, mask)]
    marks = [{"bias": 4.0}] * 3 + [None, {"bias": 3.0, "seeding_scheme": "selfhash", "context_width": 2}]
    seeded = lambda: torch.Generator().manual_seed(3) if search.get("do_sample") else None
    lengths = [12, 7, 12, 10, 12]                           # the second ends first, whatever the tokens
    alone = [ours.generate(torch.tensor([row]), max_length=n, watermarking_config=mark, generator=seeded(), **search)
             for row, mark, n in zip(rows, marks, lengths)]
    seen.clear()
    with Engine(ours, max_rows=2 * search.get("num_beams", 1)) as engine:
        requests = [engine.submit(row, max_length=n, watermarking_config=mark, generator=seeded(), **search)
                    for row, mark, n in zip(rows, marks, lengths)]
        for request, expected in zip(requests, alone):
            assert torch.equal(request.result(), expected)
    assert not all(seen)                    # some step's rows stood at different lengths


def test_a_pipelines_engine_steps_a_watermarking_checkpoint_eagerly(tiny_eos_path, tmp_path, monkeypatch):
    """pipe.engine() (the server's, map-reduce's) on a checkpoint whose generation_config watermarks: an eager
    engine, where CUDA's default (fixed capacity) would refuse every request; an explicit choice stays the caller's."""
    import shutil

    from seq2seq_kit import pipeline, summarization

    shutil.copytree(tiny_eos_path, tmp_path / "marked")
    config = GenerationConfig.from_pretrained(tmp_path / "marked")
    config.watermarking_config = {"bias": 2.0}
    config.save_pretrained(tmp_path / "marked")
    made = []
    monkeypatch.setattr(summarization, "Engine", lambda model, **kwargs: made.append(kwargs))
    pipeline("summarization", model=str(tmp_path / "marked")).engine(max_rows=4)
    pipeline("summarization", model=str(tmp_path / "marked")).engine(fixed_capacity=True)
    pipeline("summarization", model=str(tiny_eos_path)).engine()
    assert [kwargs.get("fixed_capacity") for kwargs in made] == [False, True, None]


def test_the_watermark_reads_each_rows_own_length():
    """An engine's inputs stand at different lengths: given each row's length [R, 1], every row is watermarked as
    alone at its own length (shorter than context_width: left as it is)."""
    from seq2seq_kit.generation.logits_process import Watermark

    mark = Watermark(50, "cpu", greenlist_ratio=0.25, bias=2.0, hashing_key=15485863, seeding_scheme="selfhash",
                     context_width=3)
    seq = torch.randint(0, 50, (3, 8), generator=torch.Generator().manual_seed(0))
    scores = torch.randn(3, 50, generator=torch.Generator().manual_seed(1))
    lengths = [6, 2, 4]
    together = mark(seq, torch.tensor(lengths)[:, None], scores.clone())
    for r, n in enumerate(lengths):
        assert torch.equal(together[r], mark(seq[r:r + 1], n, scores[r:r + 1].clone())[0])
    assert torch.equal(together[1], scores[1]) and not torch.equal(together[0], scores[0])


@pytest.mark.parametrize("search", [dict(num_beams=2), dict(num_beams=1)])
def test_on_cuda_graphs_the_search_runs_eagerly(checkpoint, monkeypatch, search):
    """Where graphs are the default, the watermark (Python every step) leaves the decoder's step on its graph and
    runs the search eagerly beside it: the eager tokens (graphs emulated on the CPU)."""
    model = BartForConditionalGeneration.from_pretrained(checkpoint("tiny"))
    emulate_graphs(model, monkeypatch)
    monkeypatch.setattr(decoding, "use_cuda_graph", lambda cuda_graph, device: cuda_graph is not False)
    ids, mask = random_batch(model.config.vocab_size, model.config.pad_token_id, (10, 6), seed=2)
    runs = [model.generate(ids, mask, max_length=10, watermarking_config={"bias": 4.0}, cuda_graph=graphed, **search)
            for graphed in (None, False)]
    assert torch.equal(runs[0], runs[1]) and model.graphed_step is not None


@pytest.mark.parametrize("search", SEARCHES[:3:2], ids=lambda s: "-".join(f"{k}={v}" for k, v in s.items()))
def test_a_decoder_vocabulary_of_its_own_draws_green_lists_from_vocab_size_as_transformers(pair, search):
    """Marian with a target vocabulary of its own (vocab_size 500 < decoder_vocab_size 640): transformers draws the
    green lists from config.vocab_size, generating and detecting; they were drawn from the decoder's 640 here, and
    the tokens differed from the first step. A vocab_size past the decoder's would index past the logits: refused."""
    hf, ours = pair("marian-separate")
    assert ours.config.vocab_size < ours.config.decoder_vocab_size
    ids, mask = random_batch(hf.config.vocab_size, hf.config.pad_token_id, (12, 9, 5), seed=9)
    settings = dict(max_length=14, output_scores=True, return_dict_in_generate=True, **search)
    torch.manual_seed(0)
    theirs = hf.generate(ids, attention_mask=mask, watermarking_config=transformers.WatermarkingConfig(), **settings)
    torch.manual_seed(0)
    mine = ours.generate(ids, mask, watermarking_config={}, **settings)
    assert torch.equal(mine.sequences, theirs.sequences)
    assert_same_scores(mine.scores, theirs.scores)
    detected = [detector(mine.sequences, return_dict=True).num_green_tokens for detector in (
        WatermarkDetector(ours.config, "cpu", {}), transformers.WatermarkDetector(hf.config, "cpu",
                                                                                  transformers.WatermarkingConfig()))]
    np.testing.assert_array_equal(*detected)
    wider = copy.deepcopy(ours)
    wider.config.vocab_size = 700
    with pytest.raises(ValueError, match=r"watermarking_config: the green lists are drawn from the model's "
                                         r"vocab_size \(700.*decoder's vocabulary has \(640\)"):
        wider.generate(ids, mask, watermarking_config={}, max_length=5)


@pytest.mark.parametrize("watermark", SETTINGS, ids=lambda w: "-".join(f"{k}={v}" for k, v in w.items()) or "defaults")
@pytest.mark.parametrize("repeated", [False, True])
def test_the_detector_is_transformers(pair, watermark, repeated):
    """WatermarkDetector's counts, z-scores and p-values equal transformers' WatermarkDetector's on the same
    sequences (watermarked and not), and it finds the watermark (a bias of 4 on these random weights)."""
    hf, ours = pair("tiny-eos")
    ids, mask = random_batch(hf.config.vocab_size, hf.config.pad_token_id, (12, 9, 5), seed=4)
    watermark = dict(watermark, bias=4.0)
    marked = ours.generate(ids, mask, max_length=30, min_length=30, watermarking_config=watermark)
    plain = ours.generate(ids, mask, max_length=30, min_length=30)
    mine = WatermarkDetector(ours.config, "cpu", watermark, ignore_repeated_ngrams=repeated)
    theirs = transformers.WatermarkDetector(hf.config, "cpu", transformers.WatermarkingConfig(**watermark),
                                            ignore_repeated_ngrams=repeated)
    for sequences in (marked, plain):
        a, b = mine(sequences, return_dict=True), theirs(sequences, return_dict=True)
        for field in ("num_tokens_scored", "num_green_tokens", "z_score", "p_value", "prediction"):
            np.testing.assert_allclose(getattr(a, field), getattr(b, field), rtol=1e-12, err_msg=field)
    if not repeated:    # (these random weights repeat one token: few distinct n-grams, too few to tell apart)
        assert mine(marked).all()
    assert (mine(marked[:, 1:], return_dict=True).z_score == mine(marked, return_dict=True).z_score).all()


def test_the_detector_refuses_what_it_cannot_score(pair):
    _, ours = pair("tiny-eos")
    detector = WatermarkDetector(ours.config, "cpu", {"context_width": 2})
    with pytest.raises(ValueError, match="nothing to score: the seeding takes the first 2"):
        detector(torch.tensor([[2, 5, 6]]))
    with pytest.raises(ValueError, match="some rows start with the decoder start token and some do not"):
        detector(torch.tensor([[2, 5, 6, 7], [5, 6, 7, 8]]))
    with pytest.raises(ValueError, match="watermarking_config is None"):
        WatermarkDetector(ours.config, "cpu", None)
