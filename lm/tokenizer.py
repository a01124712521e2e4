"""Tokenizers: UTF-8 bytes by default, or a byte-level BPE trained locally with `tokenizers`.

Both reserve a `<|bos|>` token that starts every document; the data layer puts it in front of
each file, and the trainer clears the core's state there (a document reset).

    tok = ByteTokenizer()                       # vocab 257: bytes 0..255 and <|bos|> = 256
    tok = BPETokenizer.train(texts, vocab_size=4096)
    tok.decode(tok.encode(text)) == text        # for any text
    save_tokenizer(tok, path); load_tokenizer(path)
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np

BOS = "<|bos|>"


class ByteTokenizer:
    """UTF-8 bytes as tokens 0..255, plus `<|bos|>` = 256."""

    kind = "byte"
    vocab_size = 257
    bos_id = 256

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def encode_array(self, text: str) -> np.ndarray:
        """The ids of `text` as a uint16 array (fast path for whole files)."""
        return np.frombuffer(text.encode("utf-8"), dtype=np.uint8).astype(np.uint16)

    def decode(self, ids: Sequence[int]) -> str:
        """Special tokens are dropped; invalid UTF-8 (a cut multi-byte char) becomes U+FFFD."""
        return bytes(i for i in ids if 0 <= i < 256).decode("utf-8", errors="replace")

    def to_json(self) -> str:
        return json.dumps({"kind": "byte"})


class BPETokenizer:
    """Byte-level BPE (GPT-2 style pre-tokenisation), trained locally; needs `tokenizers`."""

    kind = "bpe"

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        bos = tokenizer.token_to_id(BOS)
        if bos is None:
            raise ValueError(f"a BPE tokenizer for rlmem needs the special token {BOS}")
        self.bos_id = bos
        self.vocab_size = tokenizer.get_vocab_size()

    @classmethod
    def train(cls, texts: Iterable[str], vocab_size: int = 4096) -> BPETokenizer:
        """Learns merges from `texts` (never the validation split) up to `vocab_size` tokens."""
        tokenizers = _import_tokenizers()
        tok = tokenizers.Tokenizer(tokenizers.models.BPE())
        tok.pre_tokenizer = tokenizers.pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = tokenizers.decoders.ByteLevel()
        trainer = tokenizers.trainers.BpeTrainer(
            vocab_size=vocab_size,
            special_tokens=[BOS],
            initial_alphabet=tokenizers.pre_tokenizers.ByteLevel.alphabet(),
            show_progress=False,
        )
        tok.train_from_iterator(texts, trainer=trainer)
        return cls(tok)

    @classmethod
    def from_json(cls, text: str) -> BPETokenizer:
        return cls(_import_tokenizers().Tokenizer.from_str(text))

    def encode(self, text: str) -> list[int]:
        return self.tokenizer.encode(text, add_special_tokens=False).ids

    def encode_array(self, text: str) -> np.ndarray:
        return np.asarray(self.encode(text), dtype=np.uint32)

    def encode_batch(self, texts: list[str]) -> list[np.ndarray]:
        """Encodes many documents in parallel (Rust threads)."""
        encs = self.tokenizer.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(e.ids, dtype=np.uint32) for e in encs]

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(list(ids), skip_special_tokens=True)

    def to_json(self) -> str:
        return self.tokenizer.to_str()


Tokenizer = ByteTokenizer | BPETokenizer
TOKENIZERS = ("byte", "bpe")


def save_tokenizer(tok: Tokenizer, path: str | Path) -> None:
    Path(path).write_text(tok.to_json())


def load_tokenizer(path: str | Path) -> Tokenizer:
    """Reads a tokenizer written by `save_tokenizer` (or any `tokenizers` JSON with <|bos|>)."""
    text = Path(path).read_text()
    spec = json.loads(text)
    if spec.get("kind") == "byte":
        return ByteTokenizer()
    return BPETokenizer.from_json(text)


def token_dtype(vocab_size: int) -> np.dtype:
    """The smallest unsigned dtype that holds every id."""
    return np.dtype(np.uint16) if vocab_size <= 2**16 else np.dtype(np.uint32)


def _import_tokenizers():
    try:
        import tokenizers
    except ImportError:
        raise ImportError(
            "the BPE tokenizer needs the `tokenizers` package: pip install 'rlmem[bpe]'"
        ) from None
    return tokenizers
