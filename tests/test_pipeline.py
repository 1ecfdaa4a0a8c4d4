"""pipeline("summarization") against the transformers 4.x recipe, computed with transformers 5 parts:

    params = {**config["task_specific_params"]["summarization"], **call_kwargs}
    ids = model.generate(**tokenizer(prefix + text, return_tensors="pt"), **params)      # each text alone
    tokenizer.decode(ids[0], skip_special_tokens=True, clean_up_tokenization_spaces=False)

with batch_size=N: tokenizer(texts, padding=True) and one generate call per N texts. Outputs must be equal
(token ids exactly, hence texts exactly)."""

from __future__ import annotations

import json
import warnings

import pytest
import torch

import huggingface_hub
from hub_cache import read_dir, write_cache
from seq2seq_kit import BartForConditionalGeneration, Tokenizer, pipeline
from seq2seq_kit.generation import GenerationConfig
from seq2seq_kit.hub import HubError
from seq2seq_kit.summarization import DEFAULT_MODEL, SummarizationPipeline

transformers = pytest.importorskip("transformers")

EN = [
    "The tower is 324 metres tall, about the same height as an 81-storey building, and the tallest structure "
    "in Paris. Its base is square, measuring 125 metres on each side.",
    "During the 1905-06 season the club finished second in Division One. It was their best finish so far.",
    "Short one.",
]
KO = ["혼자 공부하는 머신러닝 딥러닝 책을 읽고 KoBART 모델을 사용한 문서 요약을 해 보았다.",
      "오늘은 날씨가 맑고 바람이 선선하다."]

@pytest.fixture(scope="module")
def recipe():
    """recipe(path, texts, ...) -> the transformers 4.x SummarizationPipeline output, from transformers 5's
    tokenizer, generate and decode; each checkpoint's oracle is loaded once per module."""
    oracles = {}

    def oracle(path):
        if path not in oracles:
            oracles[path] = (transformers.AutoTokenizer.from_pretrained(path),
                             transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval())
        return oracles[path]

    def run(path, texts, batch_size=1, return_tensors=False, clean_up_tokenization_spaces=False,
            truncate_to=None, **kwargs):
        tok, model = oracle(path)
        config = json.loads((path / "config.json").read_text())
        params = {**((config.get("task_specific_params") or {}).get("summarization") or {}), **kwargs}
        prefix = params.pop("prefix", config.get("prefix")) or ""
        single = isinstance(texts, str)
        texts = [texts] if single else texts
        records = []
        for start in range(0, len(texts), batch_size):
            chunk = [prefix + t for t in texts[start:start + batch_size]]
            trunc = dict(truncation=True, max_length=truncate_to) if truncate_to else {}
            enc = tok(chunk, padding=len(chunk) > 1, return_tensors="pt", **trunc)
            with torch.no_grad():
                out = model.generate(**enc, **params)
            out = out.reshape(len(chunk), -1, out.shape[-1])
            for rows in out:
                records.append([{"summary_token_ids": r} if return_tensors else {"summary_text": decode(
                    tok, r, clean_up_tokenization_spaces)} for r in rows])
        if single:
            return records[0]
        return [r[0] for r in records] if all(len(r) == 1 for r in records) else records

    return run


def task_config(params: dict) -> dict:
    """generate_defaults of a pipeline whose checkpoint's task settings are `params` (and nothing else given)."""
    return {"generation_config": GenerationConfig(**params)}


@pytest.fixture(scope="module")
def pipes(checkpoint):
    """pipes(name) -> the pipeline of checkpoint `name`, loaded once per module."""
    loaded: dict[str, SummarizationPipeline] = {}

    def get(name: str) -> SummarizationPipeline:
        if name not in loaded:
            loaded[name] = pipeline("summarization", model=str(checkpoint(name)))
        return loaded[name]

    return get


def same(ours, theirs):
    """Records equal: texts exactly, token ids with torch.equal."""
    if isinstance(ours, list):
        assert isinstance(theirs, list) and len(ours) == len(theirs)
        for a, b in zip(ours, theirs):
            same(a, b)
        return
    assert ours.keys() == theirs.keys()
    for k in ours:
        if k == "summary_token_ids":
            assert torch.equal(ours[k], theirs[k]), (ours[k], theirs[k])
        else:
            assert ours[k] == theirs[k]


# ---------------------------------------------------------------- parity with the 4.x recipe

@pytest.mark.parametrize("name,texts", [("tiny", EN), ("kobart", KO)])
def test_string_and_list(checkpoint, recipe, pipes, name, texts):
    pipe, path = pipes(name), checkpoint(name)
    out = pipe(texts[0])
    assert isinstance(out, list) and len(out) == 1 and isinstance(out[0]["summary_text"], str)
    same(out, recipe(path, texts[0]))
    out = pipe(texts)
    assert len(out) == len(texts) and all(isinstance(r, dict) for r in out)
    same(out, recipe(path, texts))


@pytest.mark.parametrize("name,texts", [("tiny", EN), ("kobart", KO)])
def test_generate_kwargs(checkpoint, recipe, pipes, name, texts):
    pipe, path = pipes(name), checkpoint(name)
    kwargs = dict(min_length=8, max_length=14, num_beams=3)
    out = pipe(texts, **kwargs)
    same(out, recipe(path, texts, **kwargs))
    assert all(len(pipe.tokenizer.encode(r["summary_text"], add_special_tokens=False)) > 0 for r in out)


def test_a_generator_or_dataset_is_iterated_as_4x_did(pipes):
    """pipe(generator) or pipe(torch Dataset) (4.x's `for out in pipe(KeyDataset(ds, "text"), batch_size=8)`) was a
    TypeError. It returns an iterator over each input's list of records, equal to the list call's, reading
    batch_size inputs at a time as it is consumed; an option or setting is checked at the call, a text when it is
    read."""
    pipe = pipes("tiny")
    texts = EN + ["A fourth text, about nothing much.", "And a fifth."]
    kwargs = dict(batch_size=2, max_length=12)
    whole = [[r] for r in pipe(texts, **kwargs)]
    read = []

    def generator():
        for text in texts:
            read.append(text)
            yield text

    out = pipe(generator(), **kwargs)
    assert read == [] and iter(out) is out
    assert next(out) == whole[0] and len(read) == 2                     # one batch read, not the whole input
    assert [whole[0], *out] == whole and read == texts

    class Texts(torch.utils.data.Dataset):                              # KeyDataset's kind: __getitem__, __len__
        def __getitem__(self, i):
            return texts[i]

        def __len__(self):
            return len(texts)

    assert list(pipe(Texts(), **kwargs)) == whole
    assert list(pipe(iter(texts), num_beams=2, num_return_sequences=2, max_length=12)) == \
        pipe(texts, num_beams=2, num_return_sequences=2, max_length=12)
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe(generator(), batch_size=0)                                 # at the call
    read.clear()
    with pytest.raises(ValueError, match=r"unknown argument\(s\) \['num_beam'\]"):
        pipe(generator(), num_beam=2)                                   # a generate setting too, nothing read
    with pytest.raises(ValueError, match="`num_beams` must be an integer >= 1, got 0"):
        pipe(generator(), strategy="map_reduce", map_kwargs={"num_beams": 0})      # either stage's
    with pytest.raises(TypeError, match="^num_workers: 4.x's DataLoader workers"):
        pipe(generator(), batch_size=2, num_workers=2)
    with pytest.raises(TypeError, match="^num_workers: 4.x's DataLoader workers"):
        pipeline("summarization", model=pipe.model, tokenizer=pipe.tokenizer, num_workers=2)
    assert read == []
    later = pipe(iter([texts[0], 3]), max_length=12)                    # batch_size 1: the 3 is read second
    assert next(later) == whole[0]
    with pytest.raises(TypeError, match=r"^pipe\(\) takes a stream of strings; its item 1 is a int$"):
        next(later)
    with pytest.raises(ValueError, match=r"^input 0 is empty: .* \(streamed: input 0 here is the stream's item 2\)$"):
        list(pipe(iter([*texts[:2], "   "]), **kwargs))                # the batch of items 2-3 (named as the list
    with pytest.raises(ValueError, match=r"^input 2 is empty"):         # call names it, input 2)
        pipe([*texts[:2], "   "], **kwargs)

    class Stream(torch.utils.data.IterableDataset):                     # iterable, with a length: iterated
        def __iter__(self):
            return iter(texts)

        def __len__(self):
            return len(texts)

    assert list(pipe(Stream(), **kwargs)) == whole


@pytest.mark.parametrize("name,texts", [("tiny", EN), ("kobart", KO)])
def test_batch_size_pads(checkpoint, recipe, pipes, name, texts):
    pipe, path = pipes(name), checkpoint(name)
    kwargs = dict(num_beams=2, max_length=12)
    same(pipe(texts, batch_size=2, **kwargs), recipe(path, texts, batch_size=2, **kwargs))
    same(pipe(texts, batch_size=2, return_tensors=True, **kwargs),
         recipe(path, texts, batch_size=2, return_tensors=True, **kwargs))


def copy_checkpoint(src, dst, **config_updates):
    for name, content in read_dir(src).items():
        (dst / name).write_bytes(content)
    config = json.loads((dst / "config.json").read_text())
    (dst / "config.json").write_text(json.dumps({**config, **config_updates}))
    return dst


def test_task_specific_params_are_the_defaults(checkpoint, recipe, tmp_path):
    """distilbart's config.json settings (generation keys, and task_specific_params.summarization: num_beams 4,
    no_repeat_ngram_size 3, length_penalty 2.0, early_stopping, min/max length) on the small model. The task's
    lengths are changed to 60..64 (config.json's own keys say 56..142): the output length shows which apply."""
    from checkpoints import DISTILBART_CONFIG_EXTRA

    extra = json.loads(json.dumps(DISTILBART_CONFIG_EXTRA))
    extra["task_specific_params"]["summarization"].update(min_length=60, max_length=64)
    path = copy_checkpoint(checkpoint("tiny"), tmp_path, **extra)
    pipe = pipeline("summarization", model=str(path))
    assert pipe.generate_defaults == task_config(extra["task_specific_params"]["summarization"])
    out = pipe(EN[1], return_tensors=True)
    same(out, recipe(path, EN[1], return_tensors=True))
    assert 60 <= len(out[0]["summary_token_ids"]) <= 64
    kwargs = dict(min_length=3, max_length=20)              # explicit kwargs win; num_beams 4 etc. stay
    same(pipe(EN[:2], batch_size=2, **kwargs), recipe(path, EN[:2], batch_size=2, **kwargs))
    given = pipeline("summarization", model=str(path), **kwargs)   # 4.x: settings given to pipeline() as well
    assert given.generate_defaults == {**task_config(extra["task_specific_params"]["summarization"]), **kwargs}
    same(given(EN[:2], batch_size=2), recipe(path, EN[:2], batch_size=2, **kwargs))
    assert given(EN[0], max_length=12) == pipe(EN[0], min_length=3, max_length=12)      # the call's over them
    with pytest.raises(ValueError, match="num_beams"):
        pipeline("summarization", model=str(path), num_beams=0)       # checked when the pipeline is made
    with pytest.raises(TypeError, match="nmu_beams"):
        pipeline("summarization", model=str(path), nmu_beams=2)


def test_translation_takes_the_checkpoints_translation_xx_to_yy_settings(checkpoint, tmp_path):
    """4.x: pipeline("translation") on a checkpoint whose task_specific_params has a "translation_XX_to_YY" key
    became that task (a UserWarning naming it): its settings are the generate defaults."""
    settings = {"max_length": 6, "num_beams": 2, "no_repeat_ngram_size": 2}
    path = copy_checkpoint(checkpoint("tiny"), tmp_path, task_specific_params={
        "summarization": {"max_length": 30}, "translation_en_to_de": settings})
    with pytest.warns(UserWarning, match='"translation" task was used, instead of "translation_XX_to_YY", '
                                         'defaulting to "translation_en_to_de"') as record:
        pipe = pipeline("translation", model=str(path))
    assert [w.filename for w in record] == [__file__]
    assert pipe.task == "translation_en_to_de" and pipe.generate_defaults == task_config(settings)
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    with torch.no_grad():
        ids = model.generate(**tok(EN[0], return_tensors="pt"), **settings)
    assert pipe(EN[0]) == [{"translation_text": decode(tok, ids[0], False)}]
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert pipeline("translation_en_to_de", model=str(path)).generate_defaults == task_config(settings)


def test_task_settings_seq2seq_kit_lacks_are_refused(checkpoint, tmp_path):
    """task_specific_params settings that 4.x applied and seq2seq_kit does not implement (classifier-free guidance,
    low-memory beam search) are a ValueError naming them, as in config.json's own keys, not dropped for a plain beam
    search."""
    params = {"num_beams": 4, "guidance_scale": 1.5, "low_memory": True, "max_length": 8}
    path = copy_checkpoint(checkpoint("tiny"), tmp_path, task_specific_params={"summarization": params})
    with pytest.raises(ValueError) as caught:
        pipeline("summarization", model=str(path))
    assert str(caught.value) == (
        "the checkpoint's task_specific_params['summarization'] sets {'guidance_scale': 1.5, 'low_memory': True}, "
        "which seq2seq_kit does not implement; remove them from config.json's task_specific_params (or from "
        "model.config.extra['task_specific_params'] of a model passed as model=)")
    pipe = pipeline("text2text-generation", model=str(path))       # another task's settings are not its
    assert pipe.generate_defaults == {}
    model = BartForConditionalGeneration.from_pretrained(path)
    model.config.extra["task_specific_params"]["summarization"] = {"num_beams": 4, "max_length": 8}
    assert pipeline("summarization", model=model, tokenizer=str(path)).generate_defaults == task_config(
        {"num_beams": 4, "max_length": 8})


def test_distilbart(checkpoint, recipe, pipes):
    pipe, path = pipes("distilbart"), checkpoint("distilbart")
    assert pipe.generate_defaults == task_config(json.loads((path / "config.json").read_text())[
        "task_specific_params"]["summarization"])
    kwargs = dict(min_length=5, max_length=16, num_beams=2)
    same(pipe(EN[:2], **kwargs), recipe(path, EN[:2], **kwargs))
    same(pipe(EN[:2], batch_size=2, return_tensors=True, **kwargs),
         recipe(path, EN[:2], batch_size=2, return_tensors=True, **kwargs))


def decode(tok, ids, clean_up: bool) -> str:
    """4.x's pipeline decode: transformers 5 leaves BPE text uncleaned even when asked; 4.x cleaned any tokenizer's."""
    text = tok.decode(ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
    return tok.clean_up_tokenization(text) if clean_up else text


def test_return_tensors_and_cleanup(checkpoint, recipe, pipes):
    pipe, path = pipes("tiny"), checkpoint("tiny")
    out = pipe(EN[0], return_tensors=True)
    assert list(out[0]) == ["summary_token_ids"] and out[0]["summary_token_ids"].dtype == torch.long
    same(out, recipe(path, EN[0], return_tensors=True))
    same(pipe(EN, clean_up_tokenization_spaces=True), recipe(path, EN, clean_up_tokenization_spaces=True))
    ids = torch.tensor(pipe.tokenizer("He said . I do n't know , ok ?")["input_ids"])[None, None]   # [1, 1, T]
    assert pipe.postprocess(ids, clean_up_tokenization_spaces=True) == [[{"summary_text": "He said. I don't know, "
                                                                                          "ok?"}]]   # 4.x, BPE too
    assert pipe.postprocess(ids) == [[{"summary_text": "He said . I do n't know , ok ?"}]]
    row = ids[0, 0].tolist() + [pipe.model.config.vocab_size + 5]       # an id past the tokenizer: skipped
    assert pipe.text(row, clean_up_tokenization_spaces=True) == "He said. I don't know, ok?"     # one output's text
    assert pipe.text(row) == "He said . I do n't know , ok ?"
    for strategy in ("truncate", "map_reduce"):
        with pytest.raises(TypeError, match="truncation must be True, False or None, got 'do_not_truncate'"):
            pipe(EN[0], truncation="do_not_truncate", strategy=strategy)


def test_postprocess_takes_the_pipelines_output_options(checkpoint):
    """pipe.postprocess(ids) gives pipe()'s records with pipeline(clean_up_tokenization_spaces=True) or
    pipeline(return_tensors=True / return_type=0); a value passed to postprocess comes over the pipeline's."""
    path = str(checkpoint("tiny"))
    cleaning = pipeline("summarization", model=path, clean_up_tokenization_spaces=True)
    ids = torch.tensor(cleaning.tokenizer("He said . I do n't know , ok ?")["input_ids"])[None, None]   # [1, 1, T]
    assert cleaning.postprocess(ids) == [[{"summary_text": "He said. I don't know, ok?"}]]
    assert cleaning.postprocess(ids, clean_up_tokenization_spaces=False) == [[{"summary_text": "He said . I do "
                                                                                               "n't know , ok ?"}]]
    for options in (dict(return_tensors=True), dict(return_type=0)):
        pipe = pipeline("summarization", model=path, max_length=8, **options)
        ids = pipe.generate_ids(pipe.preprocess(EN[:1]).rows)
        records = pipe.postprocess(ids)
        assert list(records[0][0]) == ["summary_token_ids"]
        assert torch.equal(records[0][0]["summary_token_ids"], pipe(EN[0])[0]["summary_token_ids"])
        assert list(pipe.postprocess(ids, return_tensors=False)[0][0]) == ["summary_text"]


def test_call_options_given_to_pipeline_are_its_defaults(checkpoint, recipe, pipes):
    """As 4.x: pipeline(task, model, batch_size=..., truncation=..., return_tensors=..., ...) sets the call's
    options, each call's own over them; return_type (4.x's ReturnType value) over return_tensors; return_text=True
    changes nothing; bad ones fail at pipeline()."""
    path = checkpoint("tiny")
    pipe = pipeline("summarization", model=str(path), batch_size=2, return_tensors=True, num_beams=2, max_length=12)
    kwargs = dict(num_beams=2, max_length=12)
    same(pipe(EN), recipe(path, EN, batch_size=2, return_tensors=True, **kwargs))
    same(pipe(EN, return_tensors=False), recipe(path, EN, batch_size=2, **kwargs))
    same(pipe(EN, return_type=1), recipe(path, EN, batch_size=2, **kwargs))
    typed = pipeline("summarization", model=str(path), return_type=0, num_beams=2, max_length=12)
    same(typed(EN[0], return_tensors=False), recipe(path, EN[0], **kwargs))   # the call's says which: texts
    same(typed(EN[0]), recipe(path, EN[0], return_tensors=True, **kwargs))
    tiny = pipes("tiny")
    same(tiny(EN[0], return_type=0, return_text=True), recipe(path, EN[0], return_tensors=True))
    same(tiny(EN[0], return_tensors=True, return_type=1), recipe(path, EN[0]))
    for bad, message in ((dict(return_text=False), "return_text=False"), (dict(return_type=2), "return_type must"),
                         (dict(batch_size=0), "batch_size must"), (dict(truncation="yes"), "truncation must"),
                         (dict(chunk_overlap=2), "chunk_overlap applies to strategy='map_reduce'")):
        with pytest.raises((ValueError, TypeError), match=message):
            pipeline("summarization", model=str(path), **bad)
        with pytest.raises((ValueError, TypeError), match=message):
            tiny(EN[0], **bad)


@pytest.mark.parametrize("task,options,message", [
    ("summarization", dict(strategy="map_reduce", return_tensors=True),
     "return_tensors=True applies to strategy='truncate': map-reduce summaries are texts made from texts"),
    ("summarization", dict(strategy="map_reduce", return_type=0),
     "return_tensors=True applies to strategy='truncate': map-reduce summaries are texts made from texts"),
    ("text2text-generation", dict(strategy="map_reduce"),
     "strategy='map_reduce' summarizes a long document from its chunks' summaries: it applies to the "
     "summarization pipeline, not to Text2TextGenerationPipeline, which truncates (pass a long text's sentences "
     "or paragraphs as a list instead)")])
def test_call_options_that_no_call_can_use_fail_at_pipeline(checkpoint, task, options, message):
    """Call options given to pipeline() that every call would refuse are refused by pipeline(), as the call
    refuses them."""
    path = str(checkpoint("tiny"))
    with pytest.raises(ValueError) as caught:
        pipeline(task, model=path, **options)
    assert str(caught.value) == message
    with pytest.raises(ValueError) as caught:
        pipeline(task, model=path)(EN[0], **options)
    assert str(caught.value) == message


def test_stop_sequence_is_the_eos_token_as_in_4x(checkpoint, recipe, pipes):
    """4.x: stop_sequence's first token becomes generate's eos_token_id (a warning when it has more)."""
    pipe, path = pipes("tiny"), checkpoint("tiny")
    word = pipe.tokenizer.decode(pipe(EN[0], return_tensors=True)[0]["summary_token_ids"][3:4])   # one it emits
    stop = pipe.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    same(pipe(EN[0], stop_sequence=word), recipe(path, EN[0], eos_token_id=stop))
    assert pipe(EN[0], stop_sequence=word) != pipe(EN[0])
    with pytest.warns(UserWarning, match=f"generation stops at its first, {stop} "):
        longer = pipe(EN[0], stop_sequence=word + " and more words")
    same(longer, recipe(path, EN[0], eos_token_id=stop))                   # its first token, not its last
    with pytest.raises(ValueError, match="stop_sequence must be a non-empty text"):
        pipe(EN[0], stop_sequence="")


def test_generate_ids_ends_at_the_pipelines_stop_sequence(checkpoint, recipe, pipes):
    """pipeline(stop_sequence=word): the public stages preprocess -> generate_ids -> postprocess end where pipe()
    ends, at the word's token (4.x's eos_token_id); a call's eos_token_id still comes over it."""
    path = checkpoint("tiny")
    plain = pipes("tiny")
    word = plain.tokenizer.decode(plain(EN[0], return_tensors=True)[0]["summary_token_ids"][3:4])   # one it emits
    stop = plain.tokenizer(word, add_special_tokens=False)["input_ids"][0]
    pipe = pipeline("summarization", model=str(path), stop_sequence=word)
    expected = recipe(path, EN[:2], eos_token_id=stop)
    assert expected != recipe(path, EN[:2])
    same(pipe(EN[:2]), expected)
    ids = pipe.generate_ids(pipe.preprocess(EN[:2]).rows)
    same([r[0] for r in pipe.postprocess(ids)], expected)
    ids = pipe.generate_ids(pipe.preprocess(EN[:1]).rows, eos_token_id=2)
    same(pipe.postprocess(ids)[0], recipe(path, EN[0]))
    same(pipe(EN[0], eos_token_id=2), recipe(path, EN[0]))             # pipe() too (it took the stop over it)
    same(pipe(EN[:1], stop_sequence=word), expected[:1])


def test_num_return_sequences_gives_a_list_per_input(checkpoint, recipe, pipes):
    pipe, path = pipes("tiny"), checkpoint("tiny")
    kwargs = dict(num_beams=3, num_return_sequences=2, max_length=10)
    out = pipe(EN[:2], **kwargs)
    assert len(out) == 2 and all(isinstance(r, list) and len(r) == 2 for r in out)
    same(out, recipe(path, EN[:2], **kwargs))
    assert len(pipe(EN[0], **kwargs)) == 2


def test_prefix_from_config(checkpoint, recipe, pipes, tmp_path):
    """A config.json `prefix` is prepended to every text before tokenizing, as 4.x did."""
    copy_checkpoint(checkpoint("tiny"), tmp_path, prefix="summarize: ")
    pipe = pipeline("summarization", model=str(tmp_path))
    assert pipe.prefix == "summarize: "
    same(pipe(EN[:2], max_length=10), recipe(tmp_path, EN[:2], max_length=10))
    assert pipe(EN[0], max_length=10) != pipes("tiny")(EN[0], max_length=10)
    with pytest.raises(ValueError, match="text.1. holds a lone surrogate '.ud800' at character 2,"):
        pipe(["ok", "ab\ud800"], max_length=10)       # where the text has it, not behind the prefix (character 13)


# ---------------------------------------------------------------- over-long inputs

def test_long_input_truncated_with_one_warning(checkpoint, recipe, pipes):
    pipe, path = pipes("tiny"), checkpoint("tiny")
    assert pipe.max_input_length == 256                      # min(model_max_length 1024, max_position_embeddings 256)
    long = " ".join(["word"] * 300)
    assert len(pipe.tokenizer(long)["input_ids"]) == 302
    with pytest.warns(UserWarning, match="longer than the model's 256 positions") as record:
        out = pipe([long, EN[0], long], max_length=10)
    assert len([w for w in record if issubclass(w.category, UserWarning)]) == 1
    expected = recipe(path, [long, EN[0], long], max_length=10, truncate_to=256)
    same(out, expected)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        same(pipe(long, truncation=True, max_length=10), expected[:1])


def test_public_stages_compose_to_pipe(pipes):
    """check_texts -> preprocess -> generate_ids -> postprocess, as the corpus worker calls them, give pipe()'s
    records; a truncation warning names the caller's line, whichever stage is called."""
    pipe = pipes("tiny")
    long = " ".join(["word"] * 300)
    texts = pipe.check_texts([EN[0], long])
    encoded = pipe.preprocess(texts, truncation=True)
    assert encoded.truncated == {1: 302} and len(encoded.rows[1]) == 256
    assert encoded.rows[0] == pipe.tokenizer(EN[0])["input_ids"]
    ids = pipe.generate_ids(encoded.rows, max_length=10, num_beams=2)
    assert ids.dtype == torch.long and ids.shape[:2] == (2, 1) and ids.device.type == "cpu"
    expected = pipe(texts, truncation=True, batch_size=2, max_length=10, num_beams=2)
    assert pipe.postprocess(ids) == [[r] for r in expected]
    for call in (lambda: pipe.preprocess([long]), lambda: pipe(long, max_length=5)):
        with pytest.warns(UserWarning, match="were truncated to 256 tokens") as record:
            call()
        assert [w.filename for w in record] == [__file__]


def test_long_input_refused_with_truncation_false(pipes):
    pipe = pipes("tiny")
    long = " ".join(["word"] * 300)
    with pytest.raises(ValueError, match=r"input 1 is 302 tokens long.*\(256 = min\(tokenizer model_max_length "
                                         r"1024, max_position_embeddings 256\)\)"):
        pipe([EN[0], long], truncation=False)


def test_an_input_exactly_as_long_as_the_window_is_not_truncated(pipes):
    """256 tokens fit a 256-position model: no warning, nothing cut, and truncation=False takes it; 257 are cut."""
    pipe = pipes("tiny")
    exact = " ".join(["word"] * 254)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoded = pipe.preprocess([exact], truncation=False)
        assert pipe.preprocess([exact]).truncated == {}
    assert encoded.truncated == {} and encoded.rows == [pipe.tokenizer(exact)["input_ids"]]
    assert len(encoded.rows[0]) == pipe.max_input_length == 256
    assert pipe.preprocess([exact + " word"], truncation=True).truncated == {0: 257}


def test_preprocess_takes_the_pipelines_truncation(checkpoint):
    """pipe.preprocess(texts) truncates or refuses as pipe(texts) does with pipeline(truncation=...); a call's None
    is not given (4.x), so the pipeline's truncation applies to it too."""
    long = " ".join(["word"] * 300)
    refusing = pipeline("summarization", model=str(checkpoint("tiny")), truncation=False)
    message = r"input 0 is 302 tokens long"
    for call in (lambda: refusing(long), lambda: refusing.preprocess([long]),
                 lambda: refusing.preprocess([long], truncation=None), lambda: refusing(long, truncation=None)):
        with pytest.raises(ValueError, match=message):
            call()
    assert refusing.preprocess([long], truncation=True).truncated == {0: 302}
    silent = pipeline("summarization", model=str(checkpoint("tiny")), truncation=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        encoded = silent.preprocess([long])
    assert encoded.truncated == {0: 302} and len(encoded.rows[0]) == 256
    with pytest.raises(ValueError, match=message):
        silent.preprocess([long], truncation=False)


def test_kobart_limit_is_its_position_table(checkpoint, recipe, pipes):
    """KoBART's tokenizer declares model_max_length 1e30; its positions (1026) are the limit."""
    pipe, path = pipes("kobart"), checkpoint("kobart")
    assert pipe.max_input_length == 1026
    long = " ".join([KO[1]] * 160)
    assert len(pipe.tokenizer(long)["input_ids"]) > 1026
    with pytest.warns(UserWarning, match="truncated to 1026 tokens"):
        out = pipe(long, max_length=6)
    same(out, recipe(path, long, max_length=6, truncate_to=1026))


def test_a_tokenizer_limit_below_the_positions_is_the_limit(checkpoint, recipe, tmp_path):
    """A tokenizer whose model_max_length (32) is below the model's positions (256) sets the limit: truncation=True
    cuts there, as transformers' tokenizer does with truncation=True, and truncation=False refuses past it."""
    import shutil

    path = tmp_path / "tiny-tokenizer-32"
    shutil.copytree(checkpoint("tiny"), path)
    (path / "tokenizer_config.json").write_text(json.dumps({"model_max_length": 32}))
    pipe = pipeline("summarization", model=str(path))
    assert pipe.max_input_length == 32
    n = len(pipe.tokenizer(EN[0])["input_ids"])
    assert 32 < n < 256
    same(pipe(EN[0], truncation=True, max_length=10), recipe(path, EN[0], max_length=10, truncate_to=32))
    with pytest.raises(ValueError, match=rf"input 0 is {n} tokens long, more than the model takes \(32 = min\("
                                         r"tokenizer model_max_length 32, max_position_embeddings 256\)\)"):
        pipe(EN[0], truncation=False)


# ---------------------------------------------------------------- construction and errors

def test_loaded_model_with_tokenizer(checkpoint, recipe):
    path = checkpoint("tiny")
    model = BartForConditionalGeneration.from_pretrained(path)
    pipe = pipeline("summarization", model=model, tokenizer=Tokenizer.from_pretrained(path))
    same(pipe(EN[0]), recipe(path, EN[0]))
    pipe = pipeline("summarization", model=model, tokenizer=str(path), device="cpu")
    same(pipe(EN[1]), recipe(path, EN[1]))
    with pytest.raises(ValueError, match="pass tokenizer="):
        pipeline("summarization", model=model)


@pytest.mark.parametrize("task", ["summarization", "translation", "text2text-generation"])
def test_model_that_is_no_path_nor_seq2seq_kit_model_is_named(checkpoint, task):
    """A transformers model (4.x's pipeline(model=hf_model, tokenizer=...)) or any other object is a TypeError
    naming model= and what it takes, not os.path's error about its type."""
    path = checkpoint("tiny")
    theirs = transformers.AutoModelForSeq2SeqLM.from_pretrained(path)
    for model, kind in ((theirs, "transformers BartForConditionalGeneration"), (3, "builtins int"),
                        (theirs.state_dict(), "collections OrderedDict")):
        with pytest.raises(TypeError) as caught:
            pipeline(task, model=model, tokenizer=str(path))
        assert str(caught.value) == (
            f"model= takes a Hub id, a checkpoint directory or a loaded seq2seq_kit model, got a {kind}; pass its "
            "path, or seq2seq_kit.AutoModelForSeq2SeqLM.from_pretrained(path) with tokenizer=")


@pytest.mark.parametrize("device", [None, -1, "cpu", torch.device("cpu")])
def test_cpu_devices(checkpoint, device):
    pipe = pipeline("summarization", model=str(checkpoint("tiny")), device=device)
    assert pipe.device == torch.device("cpu")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the error without a GPU")
@pytest.mark.parametrize("device", [0, "cuda", "cuda:1"], ids=["index", "name", "name-index"])
def test_gpu_device_without_a_gpu(checkpoint, device):
    with pytest.raises(ValueError, match="asks for CUDA, but torch.cuda.is_available\\(\\) is False"):
        pipeline("summarization", model=str(checkpoint("tiny")), device=device)


def test_bad_arguments(checkpoint, pipes):
    with pytest.raises(ValueError, match="unsupported task 'question-answering'; seq2seq_kit supports: "
                                         "'summarization', 'translation'"):
        pipeline("question-answering")
    with pytest.raises(ValueError, match="unknown device 'gpu'"):
        pipeline("summarization", model=str(checkpoint("tiny")), device="gpu")
    with pytest.raises(ValueError, match="device=-2"):
        pipeline("summarization", model=str(checkpoint("tiny")), device=-2)
    pipe = pipes("tiny")
    with pytest.raises(ValueError, match="input 0 is empty"):
        pipe("")
    with pytest.raises(ValueError, match="input 1 is empty"):
        pipe([EN[0], "   "])
    with pytest.raises(TypeError, match="a string, a list of strings, or a generator or Dataset of strings, got int"):
        pipe(3)
    with pytest.raises(TypeError, match="a list holding a int"):
        pipe([EN[0], 3])
    with pytest.raises(ValueError, match="batch_size must be a positive integer"):
        pipe(EN, batch_size=0)
    with pytest.raises(ValueError, match="num_beams"):
        pipe(EN[0], num_beams=0)
    assert pipe([]) == []


def test_text2text_generation_has_no_default_model():
    """pipeline("text2text-generation") without model= is refused (4.x's default was a T5), not the summarization
    default loaded in its place."""
    with pytest.raises(ValueError) as caught:
        pipeline("text2text-generation")
    assert str(caught.value) == (
        "pipeline('text2text-generation') needs model= (a Hub id, path or loaded model); there is no default "
        "text2text-generation model (transformers 4.x's, google-t5/t5-base, is a T5, which seq2seq_kit does not run)")


def test_default_model_from_the_hub_cache(checkpoint, recipe, tmp_path, monkeypatch):
    """model=None is sshleifer/distilbart-cnn-12-6, found in the Hub cache offline (here: the random distilbart)."""
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path))
    with pytest.raises(HubError, match=f"'{DEFAULT_MODEL}' \\(revision 'main'\\) is not in the local Hub cache"):
        pipeline("summarization")
    path = checkpoint("distilbart")
    write_cache(tmp_path, DEFAULT_MODEL, {"main": read_dir(path)})
    pipe = pipeline("summarization")
    kwargs = dict(min_length=3, max_length=8, num_beams=2)
    same(pipe(EN[1], **kwargs), recipe(path, EN[1], **kwargs))


@pytest.mark.cuda
def test_on_the_gpu_greedy_tokens_equal_the_cpu(checkpoint, pipes):
    """device=0 puts the model on the GPU; returned ids come back on the CPU; greedy tokens as on the CPU
    (the random weights are drawn large, so logits are decisive)."""
    path = checkpoint("tiny")
    gpu = pipeline("summarization", model=str(path), device=0)
    assert gpu.device == torch.device("cuda", 0)
    out = gpu(EN, return_tensors=True, max_length=12, num_beams=1)
    assert all(r["summary_token_ids"].device.type == "cpu" for r in out)
    same(out, pipes("tiny")(EN, return_tensors=True, max_length=12, num_beams=1))


def test_a_generation_config_replaces_the_task_settings(checkpoint, tmp_path):
    """4.x: the checkpoint's task settings made the pipeline's generation config, which a generation_config given to
    the call (or to pipeline()) replaced; keyword settings, the call's and pipeline()'s, stay over either. The
    engine's requests (pipe.engine()) take the same order. The task's min_length 20 would outlast max_length 12."""
    path = copy_checkpoint(checkpoint("tiny"), tmp_path, task_specific_params={"summarization": {
        "num_beams": 3, "max_length": 30, "min_length": 20, "no_repeat_ngram_size": 2}})
    tok = transformers.AutoTokenizer.from_pretrained(path)
    model = transformers.AutoModelForSeq2SeqLM.from_pretrained(path).eval()
    with torch.no_grad():
        expected = model.generate(**tok(EN[1], return_tensors="pt"), length_penalty=0.5,
                                  generation_config=transformers.GenerationConfig(num_beams=2, max_length=12))[0]
    ours = GenerationConfig(num_beams=2, max_length=12)
    pipe = pipeline("summarization", model=str(path), length_penalty=0.5)
    assert pipe(EN[1], generation_config=ours, return_tensors=True)[0]["summary_token_ids"].tolist() == \
        expected.tolist()
    assert len(pipe(EN[1], return_tensors=True)[0]["summary_token_ids"]) >= 20          # the task's settings
    with pipe.engine() as engine:
        row = pipe.preprocess([EN[1]]).rows[0]
        assert engine.submit(row, generation_config=ours).result()[0].tolist() == expected.tolist()
    given = pipeline("summarization", model=str(path), generation_config=ours)
    assert given(EN[1], length_penalty=0.5, return_tensors=True)[0]["summary_token_ids"].tolist() == \
        expected.tolist()
