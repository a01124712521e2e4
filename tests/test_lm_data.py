"""The data layer: the train/validation split is by file and batches never cross it."""

import numpy as np
import pytest

from lm.data import (
    TokenSplit,
    list_documents,
    prepare,
    read_meta,
    split_documents,
    split_of,
    stdlib_root,
)

LETTERS = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


@pytest.fixture
def letter_corpus(tmp_path):
    """40 files, each one letter repeated: a token's value names the file it came from."""
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    for i, letter in enumerate(LETTERS[:40]):
        folder = root / "sub" if i % 2 else root
        (folder / f"file{i}.txt").write_text(letter * (300 + 7 * i))
    (root / ".hidden.txt").write_text("!" * 500)  # hidden files are skipped
    (root / "blob.bin").write_bytes(b"\x00\x01" * 100)  # binary files are skipped
    return root


def test_batches_never_cross_the_split(letter_corpus, tmp_path):
    data = prepare(str(letter_corpus), val_fraction=0.25, cache_dir=tmp_path / "cache", log=None)
    meta = read_meta(data)
    train_docs = set(meta["splits"]["train"]["documents"])
    val_docs = set(meta["splits"]["val"]["documents"])
    assert train_docs and val_docs and not train_docs & val_docs
    assert len(train_docs | val_docs) == 40

    def letters(docs):
        return {ord(open(letter_corpus / d).read(1)) for d in docs}

    for split, docs in (("train", train_docs), ("val", val_docs)):
        tokens = TokenSplit(data, split)
        allowed = letters(docs) | {tokens.bos_id}
        rng = np.random.default_rng(0)
        for _ in range(50):
            batch = tokens.sample(rng, batch_size=8, seq_len=64)
            assert batch.shape == (8, 65)
            assert set(np.unique(batch).tolist()) <= allowed
        seen, count = set(), 0
        for window in tokens.windows(32):
            seen |= set(window.tolist())
            count += 1
        assert seen <= allowed
        assert count == tokens.num_windows(32) > 0  # what `rlmem lm eval`'s bar counts


def test_split_is_fixed_by_the_path_alone():
    paths = [f"pkg/mod{i}.py" for i in range(200)]
    split = split_documents(paths, 0.1)
    assert 5 < len(split["val"]) < 40
    fewer = split_documents(paths[::3], 0.1)  # other files do not move a file across
    for p in paths[::3]:
        assert (p in fewer["val"]) == (p in split["val"]) == (split_of(p, 0.1) == "val")


def test_a_single_file_is_split_head_train_tail_validation(tmp_path):
    text = "".join(f"line {i}\n" for i in range(400))
    path = tmp_path / "one.txt"
    path.write_text(text)
    data = prepare(str(path), val_fraction=0.1, cache_dir=tmp_path / "cache", log=None)
    train, val = TokenSplit(data, "train"), TokenSplit(data, "val")
    assert train.shards[0][0] == val.shards[0][0] == train.bos_id
    train_text = bytes(np.asarray(train.shards[0][1:], dtype=np.uint8)).decode()
    val_text = bytes(np.asarray(val.shards[0][1:], dtype=np.uint8)).decode()
    assert train_text + val_text == text
    assert len(val_text) == len(text) - int(len(text) * 0.9)


def test_prepare_is_cached_and_reuses_a_prepared_folder(letter_corpus, tmp_path):
    first = prepare(str(letter_corpus), cache_dir=tmp_path / "cache", log=None)
    logged = []
    again = prepare(str(letter_corpus), cache_dir=tmp_path / "cache", log=logged.append)
    assert again == first and not logged
    assert prepare(str(first), log=None) == first


def test_bpe_data_matches_its_tokenizer(letter_corpus, tmp_path):
    pytest.importorskip("tokenizers")
    from lm.data import load_data_tokenizer

    cache = tmp_path / "cache"
    data = prepare(str(letter_corpus), "bpe", bpe_vocab_size=300, cache_dir=cache, log=None)
    tok = load_data_tokenizer(data)
    train = TokenSplit(data, "train")
    assert train.vocab_size == tok.vocab_size
    doc = read_meta(data)["splits"]["train"]["documents"][0]
    ids = np.asarray(train.shards[0][: 1 + len(tok.encode((letter_corpus / doc).read_text()))])
    assert ids[0] == tok.bos_id
    assert tok.decode(ids.tolist()) == (letter_corpus / doc).read_text()


def test_stdlib_corpus_is_python_source_without_site_packages():
    root, files = list_documents("stdlib")
    assert root == stdlib_root()
    assert len(files) > 100
    assert all(f.suffix == ".py" for f in files)
    assert not any("site-packages" in f.parts for f in files)


def test_unknown_source_and_short_split_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="neither 'stdlib'"):
        list_documents(str(tmp_path / "missing"))
    path = tmp_path / "tiny.txt"
    path.write_text("x" * 50)
    data = prepare(str(path), cache_dir=tmp_path / "cache", log=None)
    with pytest.raises(ValueError, match="lower seq_len"):
        TokenSplit(data, "val").sample(np.random.default_rng(0), 2, 64)
