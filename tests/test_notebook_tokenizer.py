"""The notebook's tokenizer cells (shared/seed/notebook.txt, KoBART summary model), value for value.

These need no transformers: the expected values are the notebook's printed outputs.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from seq2seq_kit import Tokenizer

KOBART = Path(__file__).parent / "fixtures" / "kobart-tokenizer"


@pytest.fixture(scope="module")
def tok() -> Tokenizer:
    return Tokenizer.from_pretrained(KOBART)


def test_vocab_size(tok):
    assert tok.vocab_size == 30000  # In [18]


def test_vocab_entries(tok):
    # In [27]: list(vocab.items())[:10] -- a hash-ordered dict, so only the pairs are asserted, not their order.
    vocab = tok.vocab
    shown = [('躍', 7821), ('▁감', 14164), ('수록', 15992), ('▁가족을', 26189), ('해하는', 29242),
             ('일러', 28332), ('▁칼을', 28141), ('뫄', 10626), ('▁바랍', 25490), ('▁토로', 24200)]
    for token, index in shown:
        assert vocab[token] == index
    assert len(vocab) == 30000


def test_tokenize_and_ids(tok):
    tokens = tok.tokenize('혼자 공부하는 머신러닝 딥러닝')  # In [29]-[34]
    assert tokens == ['▁혼자', '▁공부', '하는', '▁머', '신', '러', '닝', '▁', '딥', '러', '닝']
    assert tok.convert_tokens_to_ids(tokens) == [16814, 16962, 14049, 14771, 11467, 10277, 9747, 1700, 10021, 10277, 9747]


def test_encode(tok):
    assert tok.encode('혼자 공부하는 머신러닝 딥러닝') == [  # In [35]
        0, 16814, 16962, 14049, 14771, 11467, 10277, 9747, 1700, 10021, 10277, 9747, 1]
    assert tok.encode('KoBART 모델을 사용한 문서 요약') == [  # In [37]
        0, 14572, 310, 265, 264, 281, 283, 24224, 21032, 26052, 26200, 1]


def test_ids_to_tokens_and_decode(tok):
    encoded2 = tok.encode('KoBART 모델을 사용한 문서 요약')
    assert tok.convert_ids_to_tokens(encoded2) == [  # In [38]
        '<s>', '▁K', 'o', 'B', 'A', 'R', 'T', '▁모델을', '▁사용한', '▁문서', '▁요약', '</s>']
    assert tok.decode(encoded2) == '<s> KoBART 모델을 사용한 문서 요약</s>'  # In [39]
    assert tok.decode(encoded2[1:-1]) == 'KoBART 모델을 사용한 문서 요약'  # In [41]


def test_special_tokens(tok):
    # KoBART's tokenizer_config.json; the checkpoint's config.json has bos=eos=1, pad=3.
    assert (tok.bos_token_id, tok.eos_token_id, tok.unk_token_id, tok.pad_token_id, tok.mask_token_id) == (0, 1, 5, 3, 6)
    assert tok.all_special_ids == [0, 1, 5, 3, 6]
    assert len(tok) == 30000
