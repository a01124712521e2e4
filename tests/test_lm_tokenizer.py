"""Tokenizers round-trip any text and survive a save/load."""

import pytest

from lm.tokenizer import BPETokenizer, ByteTokenizer, load_tokenizer, save_tokenizer

TEXTS = [
    "",
    "def f(x):\n\treturn x ** 2  # squares\n",
    "ünïcödé, 日本語, emoji 🙂, NUL-free control \x07 and \r\n line ends",
    "   leading and trailing spaces   ",
]


@pytest.mark.parametrize("text", TEXTS)
def test_byte_tokenizer_round_trips(text):
    tok = ByteTokenizer()
    ids = tok.encode(text)
    assert all(0 <= i < 256 for i in ids)
    assert tok.decode(ids) == text
    assert tok.decode([tok.bos_id, *ids]) == text  # <|bos|> is not text
    assert tok.encode_array(text).tolist() == ids


def test_bpe_tokenizer_round_trips_text_it_never_saw(tmp_path):
    pytest.importorskip("tokenizers")
    corpus = ["def add(a, b):\n    return a + b\n", "class Foo:\n    pass\n"] * 50
    tok = BPETokenizer.train(corpus, vocab_size=300)
    assert tok.vocab_size <= 300
    assert tok.bos_id == tok.tokenizer.token_to_id("<|bos|>")
    for text in TEXTS + corpus[:2]:
        ids = tok.encode(text)
        assert tok.bos_id not in ids
        assert tok.decode(ids) == text
        assert tok.decode([tok.bos_id, *ids]) == text
    assert len(tok.encode(corpus[0])) < len(corpus[0].encode())  # merges were learned

    save_tokenizer(tok, tmp_path / "tok.json")
    loaded = load_tokenizer(tmp_path / "tok.json")
    assert isinstance(loaded, BPETokenizer)
    assert loaded.encode(TEXTS[2]) == tok.encode(TEXTS[2])


def test_byte_tokenizer_saves_and_loads(tmp_path):
    save_tokenizer(ByteTokenizer(), tmp_path / "tok.json")
    assert isinstance(load_tokenizer(tmp_path / "tok.json"), ByteTokenizer)
