"""generate(stop_strings=..., tokenizer=tok): a row ends once its text ends in a stop string, as transformers 5.25's
StopStringCriteria decides it (generation/stop_strings.py): each family's tokens read as the same text as there,
the check equal to transformers' on random rows, and whole generate calls token-exact in greedy, beam search,
sampling and beam sampling, with and without EOS ids; the pipeline passes its own tokenizer.

Decided where transformers fails or does something no user means: an empty stop string is refused (transformers
ends every row at its first token); stop_strings=[] is no stop strings (transformers fails building its tables).
"""

from __future__ import annotations

import json
import random
import shutil
import time
import warnings

import pytest
import torch
import transformers
from transformers.generation.stopping_criteria import StopStringCriteria

from seq2seq_kit import AutoTokenizer, Engine, GenerationConfig, pipeline
from seq2seq_kit.generation.stop_strings import StopStrings, matching_mode, token_texts
from helpers import random_settings
from test_families_pipeline import TEXTS, marian_separate_path  # noqa: F401 - a fixture
from test_family_tokenizers import fairseq_vocab, train
from test_generation import inputs

TEXT = ("The tower is 324 metres tall, about the same height as an 81-storey building. Башня 这座塔高 탑의 높이는 "
        "ünïcödé stop topper laser")


@pytest.fixture(scope="module")
def family_dirs(tmp_path_factory, fixtures_dir):
    """name -> (a tokenizer folder, transformers' tokenizer class for it): the seven families, their SentencePiece
    models trained on the spot as tests/test_family_tokenizers.py does."""
    from transformers.models.nllb.tokenization_nllb import FAIRSEQ_LANGUAGE_CODES

    root = tmp_path_factory.mktemp("stop-tokenizers")
    dirs = {"bart": (fixtures_dir / "bart-tokenizer", transformers.BartTokenizer),
            "kobart": (fixtures_dir / "kobart-tokenizer", transformers.AutoTokenizer)}
    marian = root / "marian"
    marian.mkdir()
    train(marian / "source.spm", "unigram")
    train(marian / "target.spm", "unigram", 200)
    vocab = fairseq_vocab(marian / "source.spm", {"</s>": 0, "<unk>": 1})
    (marian / "vocab.json").write_text(json.dumps({**vocab, "<pad>": len(vocab)}))
    m2m = root / "m2m100"
    m2m.mkdir()
    train(m2m / "sentencepiece.bpe.model", "bpe")
    vocab = fairseq_vocab(m2m / "sentencepiece.bpe.model", {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3})
    (m2m / "vocab.json").write_text(json.dumps(vocab))
    dirs.update(marian=(marian, transformers.MarianTokenizer), m2m100=(m2m, transformers.M2M100Tokenizer))
    converted = {"nllb": (transformers.NllbTokenizer, "bpe", dict(additional_special_tokens=FAIRSEQ_LANGUAGE_CODES)),
                 "mbart": (transformers.MBartTokenizer, "bpe", dict(src_lang="en_XX")),
                 "mbart50": (transformers.MBart50Tokenizer, "unigram", dict(src_lang="de_DE", tgt_lang="ru_RU")),
                 "pegasus": (transformers.PegasusTokenizer, "unigram", {})}
    for name, (cls, kind, kwargs) in converted.items():
        spm = root / f"{name}-spm"
        spm.mkdir()
        if name == "pegasus":
            train(spm / "spiece.model", kind, 300, pad_id=0, eos_id=1, unk_id=2, bos_id=-1)
        else:
            train(spm / "sentencepiece.bpe.model", kind)
        cls.from_pretrained(spm, **kwargs).save_pretrained(root / name)
        dirs[name] = (root / name, transformers.AutoTokenizer)
    return dirs


FAMILIES = ["bart", "kobart", "marian", "m2m100", "nllb", "mbart", "mbart50", "pegasus"]


@pytest.mark.parametrize("family", FAMILIES)
def test_tokens_read_as_the_text_transformers_reads(family_dirs, family):
    path, cls = family_dirs[family]
    theirs, ours = cls.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    mode = StopStringCriteria._get_stop_string_matching_mode(theirs)
    assert matching_mode(ours) == mode == ("byte_level" if family == "bart" else None)
    texts, ids = StopStringCriteria.clean_tokenizer_vocab(theirs, stop_string_matching_mode=mode)
    assert token_texts(ours, mode) == dict(zip(ids, texts))


def test_marian_separate_vocabularies_read_target_ids(marian_separate_path):
    """A Marian model with its own target vocabulary writes target ids, so stop strings read those as its decode
    does: as transformers' StopStringCriteria reads a tokenizer of the target side alone (its separate-vocabulary
    tokenizer fails building the tables: "substring not found", from source ids read as target tokens)."""
    path = marian_separate_path
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        target = transformers.MarianTokenizer(str(path / "target.spm"), str(path / "target.spm"),
                                              str(path / "target_vocab.json"))
    hf, pipe = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval(), pipeline("translation", model=path)
    texts, ids = StopStringCriteria.clean_tokenizer_vocab(target)
    assert token_texts(pipe.tokenizer, None) == dict(zip(ids, texts))
    shorter, greedy = 0, dict(max_new_tokens=12, num_beams=1)              # (its checkpoint: 2 beams)
    for text in TEXTS:
        source = torch.tensor([pipe.tokenizer(text)["input_ids"]])
        free = hf.generate(source, **greedy)[0]
        stop = target.decode(free[:4], skip_special_tokens=True)[-2:]
        want = hf.generate(source, **greedy, stop_strings=[stop], tokenizer=target)[0]
        got = pipe(text, **greedy, stop_strings=[stop], return_tensors=True)[0]["translation_token_ids"]
        assert torch.equal(got, want), stop
        shorter += len(want) < len(free)
    assert shorter


def test_transformers_separate_vocabulary_tokenizer_is_named(marian_separate_path):
    """transformers' Marian tokenizer of a model with separate vocabularies reads its source vocabulary, whose tokens
    its target SentencePiece decodes without the prefix before them (transformers fails: "substring not found"):
    refused naming the tokenizer to pass, not str.index's message."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theirs = transformers.AutoTokenizer.from_pretrained(marian_separate_path)
    pipe = pipeline("translation", model=marian_separate_path)
    source = torch.tensor([pipe.tokenizer(TEXTS[0])["input_ids"]])
    with pytest.raises(ValueError, match="^stop_strings cannot read the tokenizer's vocabulary as text: token ") as e:
        pipe.model.generate(source, max_new_tokens=4, stop_strings=["e"], tokenizer=theirs)
    assert str(e.value).endswith("(transformers' Marian tokenizer of a model with separate vocabularies does so: its "
                                 "vocabulary is the source's); pass seq2seq_kit's AutoTokenizer.from_pretrained(the "
                                 "model's folder)")


def random_rows(theirs, stop: str, rng: random.Random, n: int = 48) -> list[list[int]]:
    """Rows of ids that often end in (or around) `stop`, some with random ids before, some 1 token long."""
    size = len(theirs.get_vocab())
    rows = []
    for _ in range(n):
        start = rng.randrange(len(TEXT))
        text = TEXT[start:start + rng.randint(0, 30)] + (stop if rng.random() < 0.6 else "") + TEXT[:rng.randint(0, 3)]
        ids = [rng.randrange(size) for _ in range(rng.randint(0, 3))]
        ids += theirs(text, add_special_tokens=False)["input_ids"]
        rows.append(ids[-rng.randint(1, 12):] or [rng.randrange(size)])
    return rows


@pytest.mark.parametrize("family", FAMILIES)
def test_stop_check_equals_transformers(family_dirs, family):
    """StopStrings.ended on a batch of rows that end at different places (padded after) against transformers'
    StopStringCriteria on each row alone."""
    path, cls = family_dirs[family]
    theirs, ours = cls.from_pretrained(path), AutoTokenizer.from_pretrained(path)
    rng, matched = random.Random(family), 0
    for _ in range(12):
        start = rng.randrange(len(TEXT))
        stops = [TEXT[start:start + rng.randint(1, 8)]] + ["zq" + TEXT[rng.randrange(len(TEXT))]] * rng.randint(0, 1)
        check = StopStringCriteria(theirs, stops)
        rows = random_rows(theirs, stops[0], rng)
        want = [bool(check(torch.tensor([row]), None)[0]) for row in rows]
        width = max(map(len, rows))
        padded = torch.tensor([row + [rng.randrange(100)] * (width - len(row)) for row in rows])
        last = torch.tensor([[len(row) - 1] for row in rows])
        assert StopStrings.of(ours, stops, torch.device("cpu")).ended(padded, last).tolist() == want, stops
        matched += sum(want)
    assert matched > 24                                          # the stop strings were met, often


@pytest.fixture(scope="module")
def tokenizers(checkpoint):
    """name -> (transformers' tokenizer, ours) of a checkpoint."""
    return {name: (transformers.AutoTokenizer.from_pretrained(checkpoint(name)),
                   AutoTokenizer.from_pretrained(checkpoint(name))) for name in ("tiny", "kobart")}


MODES = {"greedy": {}, "beam": dict(num_beams=3, num_return_sequences=2, output_scores=True),
         "sample": dict(do_sample=True, top_k=20), "beam-sample": dict(num_beams=2, do_sample=True),
         "greedy-no-eos": dict(eos_token_id=None, forced_eos_token_id=None),
         "beam-no-eos": dict(eos_token_id=None, forced_eos_token_id=None, num_beams=2),
         # [] is no EOS id, but transformers' EOS criterion is there: a stopped row is padded (beams: not with -1)
         "greedy-empty-eos": dict(eos_token_id=[], forced_eos_token_id=None),
         "beam-empty-eos": dict(eos_token_id=[], forced_eos_token_id=None, num_beams=2)}


def stops_met(tok, sequences: torch.Tensor, rng: random.Random) -> list[str]:
    """Stop strings that end inside tokens the model writes, spanning one to a few tokens."""
    out = []
    for row in sequences.tolist():
        k = rng.randrange(2, len(row))
        text = tok.convert_tokens_to_string(tok.convert_ids_to_tokens(row[1:k]))
        out.append(text[-rng.randint(2, 6):])
    return out


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("name", ["tiny", "kobart"])
def test_generate_stops_as_transformers(pair, tokenizers, name, mode):
    hf, ours = pair(name)
    theirs_tok, our_tok = tokenizers[name]
    ids = torch.randint(5, 1000, (3, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    rng, shorter = random.Random(mode), 0
    free = ours.generate(ids, mask, max_new_tokens=12)
    for stops in [stops_met(theirs_tok, free, rng)[:1], stops_met(theirs_tok, free, rng)]:
        kwargs = dict(max_new_tokens=12, stop_strings=stops, return_dict_in_generate=True, **MODES[mode])
        torch.manual_seed(3)
        want = hf.generate(ids, attention_mask=mask, tokenizer=theirs_tok, **kwargs)
        torch.manual_seed(3)
        got = ours.generate(ids, mask, tokenizer=our_tok, **kwargs)
        assert torch.equal(got.sequences, want.sequences), stops
        if "output_scores" in kwargs:
            torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=0, atol=1e-5)
            assert torch.equal(got.beam_indices, want.beam_indices)
        shorter += got.sequences.shape[1] < free.shape[1] or bool((got.sequences == our_tok.pad_token_id).any())
    assert shorter                                               # a stop string ended some row early


@pytest.mark.parametrize("seed", range(16))
def test_random_settings_and_stop_strings_as_transformers(pair, tokenizers, seed):
    """Random generate settings (every search mode and processor: helpers.random_settings), with or without EOS, a
    left-padded batch, and 1-3 stop strings cut from what the model writes (mid-token too) or never met: the same
    sequences as transformers', beam scores within float32 rounding of theirs (relative 1e-5: length_penalty -1.0
    gives scores in the thousands)."""
    rng = random.Random(seed)
    name = rng.choice(["tiny", "kobart"])
    hf, ours = pair(name)
    theirs_tok, our_tok = tokenizers[name]
    settings = random_settings(rng)
    if settings.get("forced_bos_token_id") is not None:
        settings["forced_bos_token_id"] %= ours.config.vocab_size
    if rng.random() < 0.3:
        settings.update(eos_token_id=None, forced_eos_token_id=None)
    ids = torch.randint(5, 1000, (rng.randint(1, 3), rng.randint(2, 12)), generator=torch.Generator().manual_seed(seed))
    mask = torch.ones_like(ids)
    if ids.shape[0] > 1:
        mask[0, :rng.randrange(ids.shape[1])] = 0                         # the first row left-padded
    free = ours.generate(ids, mask, max_new_tokens=settings["max_new_tokens"]).tolist()
    stops = []
    for _ in range(rng.randint(1, 3)):
        row = rng.choice(free)
        start = rng.randrange(1, len(row) - 1)
        tokens = theirs_tok.convert_ids_to_tokens(row[start:start + rng.randint(1, 4)])
        text = theirs_tok.convert_tokens_to_string(tokens)
        stops.append(text[rng.randrange(len(text)):] if rng.random() < 0.8 else "zq" + text)
    kwargs = dict(settings, stop_strings=stops, return_dict_in_generate=True, output_scores=settings["num_beams"] > 1)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")                 # both warn of unfeasible lengths alike
        torch.manual_seed(seed)
        try:
            want = hf.generate(ids, attention_mask=mask, tokenizer=theirs_tok, **kwargs)
        except RuntimeError:                            # a decay penalty without EOS: refused here, by name
            with pytest.raises(ValueError, match="exponential_decay_length_penalty"):
                ours.generate(ids, mask, tokenizer=our_tok, **kwargs)
            return
        torch.manual_seed(seed)
        got = ours.generate(ids, mask, tokenizer=our_tok, **kwargs)
    assert torch.equal(got.sequences, want.sequences), (kwargs, got.sequences, want.sequences)
    if kwargs["output_scores"]:
        torch.testing.assert_close(got.sequences_scores, want.sequences_scores, rtol=1e-5, atol=1e-4)


def test_pipeline_reads_tokens_with_its_tokenizer(pair, checkpoint, tokenizers):
    hf, _ = pair("tiny")
    theirs_tok, _ = tokenizers["tiny"]
    pipe = pipeline("summarization", model=checkpoint("tiny"))
    text = "The tower is 324 metres tall, about the same height as an 81-storey building."
    free = pipe(text, max_new_tokens=12, return_tensors=True)[0]["summary_token_ids"]
    stop = theirs_tok.convert_tokens_to_string(theirs_tok.convert_ids_to_tokens(free[1:5].tolist()))[-3:]
    got = pipe(text, max_new_tokens=12, stop_strings=[stop], return_tensors=True)[0]["summary_token_ids"]
    enc = theirs_tok(text, return_tensors="pt")
    want = hf.generate(**enc, max_new_tokens=12, stop_strings=[stop], tokenizer=theirs_tok)[0]
    assert torch.equal(got, want) and len(got) < len(free)
    assert pipe(text, max_new_tokens=12, stop_strings=[stop])[0]["summary_text"] == \
        theirs_tok.decode(want, skip_special_tokens=True)


def test_refusals(pair, tokenizers):
    hf, ours = pair("tiny")
    theirs_tok, tok = tokenizers["tiny"]
    ids, mask = inputs(ours.config.vocab_size, ours.config.pad_token_id)
    with pytest.raises(ValueError, match=r"stop_strings needs the model's tokenizer .* generate\(\.\.\., "
                                         r"stop_strings=\.\.\., tokenizer=tokenizer\)"):
        ours.generate(ids, mask, stop_strings=["x"])
    with pytest.raises(ValueError, match="`stop_strings` holds an empty string, which every text ends in"):
        ours.generate(ids, mask, stop_strings=["a", ""], tokenizer=tok)
    with pytest.raises(ValueError, match=r"`stop_strings` must be a string or a list of strings, got \[3\]"):
        ours.generate(ids, mask, stop_strings=[3], tokenizer=tok)
    with pytest.raises(TypeError, match="tokenizer must be a tokenizer .* got str"):
        ours.generate(ids, mask, stop_strings=["a"], tokenizer="facebook/bart-large-cnn")
    with pytest.raises(ValueError, match="no token of the tokenizer's vocabulary can end any of stop_strings"):
        ours.generate(ids, mask, stop_strings=["☃☃"], tokenizer=tokenizers["kobart"][1])
    with pytest.raises(ValueError, match="unable to identify tokens"):                  # transformers, likewise
        hf.generate(ids, attention_mask=mask, stop_strings=["☃☃"], tokenizer=tokenizers["kobart"][0])
    free = ours.generate(ids, mask, max_new_tokens=6)
    assert torch.equal(ours.generate(ids, mask, max_new_tokens=6, stop_strings=[], tokenizer=tok), free)
    no_eos = dict(eos_token_id=[], forced_eos_token_id=None, stop_strings=["x"], tokenizer=tok)
    with pytest.raises(ValueError, match=r"eos_token_id=\[\] \(no EOS id\) leaves pad_token_id without"):
        ours.generate(ids, mask, pad_token_id=None, **no_eos)
    with pytest.raises(IndexError):                                     # transformers: the first of no EOS ids
        hf.generate(ids, attention_mask=mask, pad_token_id=None, **{**no_eos, "tokenizer": theirs_tok})
    with pytest.raises(ValueError, match="pass a pad_token_id other than 0, or eos_token_id"):
        ours.generate(ids, mask, pad_token_id=0, num_beams=2, **no_eos)
    with Engine(ours, max_rows=4) as engine:
        with pytest.raises(ValueError, match=r"stop_strings needs the model's tokenizer .* Engine\(model, "
                                             r"tokenizer=tokenizer\) \(or the pipeline's pipe.engine\(\)\)"):
            engine.submit([5, 6, 7], stop_strings=["a"])
        with pytest.raises(ValueError, match=r"tokenizer: the engine's is given once, as Engine\(model, "):
            engine.submit([5, 6, 7], stop_strings=["a"], tokenizer=tok)


@pytest.mark.parametrize("fixed_capacity", [False, True])
def test_engine_requests_stop_as_generate_alone(pair, tokenizers, fixed_capacity):
    """A stream of requests with and without stop strings (different ones, different settings, in one batch):
    each equals generate alone with the same stop strings."""
    _, ours = pair("tiny")
    theirs_tok, tok = tokenizers["tiny"]
    rng = random.Random(5)
    sources = [torch.randint(5, 1000, (rng.randint(3, 12),), generator=torch.Generator().manual_seed(i))
               for i in range(12)]
    free = [ours.generate(ids[None], max_new_tokens=12) for ids in sources]
    settings = [{}, dict(num_beams=3, num_return_sequences=2), dict(eos_token_id=None, forced_eos_token_id=None)]
    calls = [dict(max_new_tokens=12, **settings[i % 3],
                  **({"stop_strings": stops_met(theirs_tok, free[i], rng)} if i % 4 else {}))
             for i in range(len(sources))]
    with Engine(ours, max_rows=8, tokenizer=tok, fixed_capacity=fixed_capacity) as engine:
        requests = [engine.submit(ids, **call) for ids, call in zip(sources, calls)]
        got = [r.result(timeout=120) for r in requests]
    shorter = 0
    for ids, call, out, alone in zip(sources, calls, got, free):
        want = ours.generate(ids[None], tokenizer=tok, **call)
        assert torch.equal(out, want), call
        shorter += want.shape[1] < alone.shape[1]
    assert shorter >= 2


def test_checkpoint_stop_strings_are_read(pair, checkpoint, tmp_path, tokenizers):
    """A generation_config.json with stop_strings loads (it was refused as unsupported), needs the tokenizer, and
    saves back as it was read."""
    from seq2seq_kit import BartForConditionalGeneration

    ids, mask = inputs(50265, 1)
    free = pair("tiny")[1].generate(ids, mask, max_new_tokens=12)
    stops = stops_met(tokenizers["tiny"][0], free, random.Random(0))[:1]
    path = tmp_path / "ckpt"
    shutil.copytree(checkpoint("tiny"), path)
    settings = dict(stop_strings=stops, max_new_tokens=12, bos_token_id=0, eos_token_id=2, pad_token_id=1,
                    decoder_start_token_id=2, forced_eos_token_id=2)
    (path / "generation_config.json").write_text(json.dumps(settings))
    ours = BartForConditionalGeneration.from_pretrained(path)
    hf = transformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    assert ours.generation_config.stop_strings == stops
    with pytest.raises(ValueError, match="stop_strings needs the model's tokenizer"):
        ours.generate(ids, mask)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        want = hf.generate(ids, attention_mask=mask, tokenizer=tokenizers["tiny"][0])
    got = ours.generate(ids, mask, tokenizer=tokenizers["tiny"][1])
    assert torch.equal(got, want) and not torch.equal(got, free)
    ours.generation_config.save_pretrained(tmp_path / "saved")
    assert GenerationConfig.from_pretrained(tmp_path / "saved").stop_strings == stops


def test_tables_are_bounded(tokenizers):
    """A long-lived process (a server) keeps the tables of its tokenizer's KEEP most recent stop strings only, and
    stop strings whose table would pass MAX_TABLE entries are refused naming the fix."""
    from seq2seq_kit.generation import stop_strings

    _, tok = tokenizers["tiny"]
    for n in range(stop_strings.KEEP + 3):
        stop_strings.StopStrings.of(tok, [f"{n}."], torch.device("cpu"))
    assert len(stop_strings.BUILT[tok]["tables"]) == stop_strings.KEEP
    with pytest.raises(ValueError, match="stop_strings too large: 1 strings of up to 6000 characters over 50265 "
                                         "tokens .* pass fewer or shorter stop strings"):
        stop_strings.StopStrings.of(tok, ["ab" * 3000], torch.device("cpu"))


def stream_with_stops_and_prompts(model, tok, seed: int, emulate: bool = False) -> list:
    """24 requests with stop strings (70%) and decoder prompts (30%), greedy and beam, many sharing searches,
    submitted to a fixed-capacity engine with its search steps captured (emulate: the CPU's emulated graphs),
    each compared with generate alone on the same device. Returns the groups' graphs."""
    from seq2seq_kit.models.cuda_graph import BucketGraphs

    device = model.device
    rng = random.Random(seed)
    sources = [[rng.randint(3, 63) for _ in range(rng.randint(2, 12))] for _ in range(24)]
    free = [model.generate(torch.tensor([ids], device=device), max_new_tokens=16, cuda_graph=False)[0]
            for ids in sources]
    texts = [tok.convert_tokens_to_string(tok.convert_ids_to_tokens(out[1:rng.randint(3, 9)].tolist())) for out in free]
    settings = [dict(num_beams=1), dict(num_beams=3, length_penalty=1.5), dict(num_beams=2, no_repeat_ngram_size=2)]
    jobs = [(ids, dict(rng.choice(settings), max_new_tokens=16,
                       **({"stop_strings": [text[-rng.randint(1, 4):]]} if rng.random() < 0.7 else {}),
                       **({"decoder_input_ids": [2, rng.randint(3, 63)]} if rng.random() < 0.3 else {})))
            for ids, text in zip(sources, texts)]
    with Engine(model, max_rows=12, fixed_capacity=True, tokenizer=tok) as engine:
        batch = engine.batch
        if emulate:
            batch.graphs, batch.capture = BucketGraphs(model.next_token_logits, batch.tokens[:-1], batch.logits), True
        assert batch.capture and batch.graphs is not None
        requests = []
        for ids, call in jobs:
            requests.append(engine.submit(ids, **call))
            time.sleep(rng.choice([0, 0, 0.001, 0.005]))
        outputs = [r.result(timeout=120) for r in requests]
        graphs = [g.graph for g in [*engine.groups, *engine.batch.idle.values()] if g.graph is not None]
    shorter = 0
    for (ids, call), out, alone in zip(jobs, outputs, free):
        prompt = call.pop("decoder_input_ids", None)
        extra = {} if prompt is None else {"decoder_input_ids": torch.tensor([prompt], device=device)}
        want = model.generate(torch.tensor([ids], device=device), tokenizer=tok, cuda_graph=False, **call, **extra)
        assert torch.equal(out, want), call
        shorter += "stop_strings" in call and want.shape[1] < len(alone)
    assert shorter >= 3 and len(graphs) >= 2
    return graphs


@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_capacity_group_steps_with_stop_strings_and_prompts_replayed_as_cuda_graphs_would(
        small_path, fixtures_dir, seed, monkeypatch):
    """The engine's CUDA path with its graphs emulated on the CPU (tests/graph_emulation.py: each group's search
    step captured, then only its recorded ops replayed on the same tensors): no host read, no op that may sync,
    each request equal to generate alone. (The CUDA engine refused both until 2026-12-05; the test below runs the
    same stream on a GPU.)"""
    from seq2seq_kit import BartForConditionalGeneration, cuda_capture
    from graph_emulation import EmulatedGraph

    monkeypatch.setattr(cuda_capture, "CapturedStep", EmulatedGraph)
    model = BartForConditionalGeneration.from_pretrained(small_path)
    tok = AutoTokenizer.from_pretrained(fixtures_dir / "bart-tokenizer")      # ids 0..63: '<s>', '.', 'Ġthe', ...
    graphs = stream_with_stops_and_prompts(model, tok, seed, emulate=True)
    assert all(isinstance(g, EmulatedGraph) and g.replays > 0 for g in graphs)


@pytest.mark.cuda
@pytest.mark.parametrize("seed", [0, 1])
def test_fixed_capacity_on_cuda_takes_stop_strings_and_prompts_in_its_graphs(small_path, fixtures_dir, seed):
    """The stream above on a GPU, the engine's default there (fixed capacity, group steps replayed from CUDA
    graphs): each request equal to eager generate alone on the same GPU."""
    from seq2seq_kit import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(small_path, device="cuda")
    tok = AutoTokenizer.from_pretrained(fixtures_dir / "bart-tokenizer")
    graphs = stream_with_stops_and_prompts(model, tok, seed)
    assert all(g.replays > 0 for g in graphs)


@pytest.mark.cuda
@pytest.mark.parametrize("kwargs", [dict(num_beams=1), dict(num_beams=3), dict(do_sample=True, top_k=5)])
def test_generate_with_stop_strings_on_cuda_graphs_equals_eager(small_path, fixtures_dir, kwargs):
    """generate on a GPU with stop strings: on its CUDA graphs (the default there: the whole step for greedy and
    beam search, the decoder graph for sampling) the tokens of cuda_graph=False on the same GPU."""
    from seq2seq_kit import BartForConditionalGeneration

    model = BartForConditionalGeneration.from_pretrained(small_path, device="cuda")
    tok = AutoTokenizer.from_pretrained(fixtures_dir / "bart-tokenizer")
    ids = torch.tensor([[5, 9, 14, 20, 33, 41, 2], [7, 8, 9, 10, 11, 12, 2]], device="cuda")
    free = model.generate(ids, max_new_tokens=16, cuda_graph=False)
    stops = stops_met(tok, free, random.Random(1))
    seeded = (lambda: dict(generator=torch.Generator("cuda").manual_seed(2))) if kwargs.get("do_sample") else dict
    runs = [model.generate(ids, max_new_tokens=16, stop_strings=stops, tokenizer=tok, cuda_graph=graphed, **kwargs,
                           **seeded()) for graphed in (None, False, None)]        # the third reuses a kept graph
    assert torch.equal(runs[0], runs[1]) and torch.equal(runs[2], runs[1])
