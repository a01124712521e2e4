"""Corpora as pre-tokenised memory-mapped shards, split into train and validation by file.

A data source is `stdlib` (the running Python's standard-library source: every `*.py` under
`sysconfig.get_paths()["stdlib"]`, site-packages excluded, real text present on every machine),
a text file, a folder of text files, or a folder already prepared by `prepare`.

`prepare` tokenises a source once into a cache folder:

    meta.json          format, tokenizer kind, dtype, and per split: shards, documents, bytes
    tokenizer.json     the tokenizer (see lm.tokenizer.load_tokenizer)
    train-0000.bin     raw token ids (uint16, or uint32 for vocabularies above 65536)
    val-0000.bin ...

Every document is `<|bos|>` followed by its tokens; documents are concatenated and cut into
shards of about `shard_tokens` tokens. **The split is by file and never crosses**: a file's
split is fixed by a hash of its path (relative to the source), so it does not depend on which
other files exist, and train and validation tokens live in different shard files. A source
that is a single file is split inside the file instead: its last `val_fraction` goes to
validation. Folders with a `meta.json` of this format (for example made by
`rlmem lm prepare` for a large corpus) are used as they are.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
import sysconfig
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np

from lm.tokenizer import BPETokenizer, ByteTokenizer, Tokenizer, load_tokenizer, token_dtype

FORMAT = "rlmem-tokens/1"
SPLITS = ("train", "val")
STDLIB = "stdlib"


def stdlib_root() -> Path:
    """The running Python's standard-library source folder."""
    return Path(sysconfig.get_paths()["stdlib"])


def list_documents(source: str) -> tuple[Path, list[Path]]:
    """The root and the sorted text files of a source (`stdlib`, a file or a folder).

    Hidden files and folders are skipped, and so are files that look binary (a NUL byte in
    their first 8 KiB).
    """
    if source == STDLIB:
        root = stdlib_root()
        excluded = {"site-packages", "dist-packages", "__pycache__"}
        files = []
        for folder, subdirs, names in os.walk(root):
            subdirs[:] = [d for d in subdirs if d not in excluded]  # never descend there
            files += [Path(folder, n) for n in names if n.endswith(".py")]
        return root, sorted(files)
    path = Path(source).expanduser()
    if path.is_file():
        return path.parent, [path]
    if not path.is_dir():
        raise FileNotFoundError(f"data source {source!r} is neither 'stdlib', a file, nor a folder")
    files = [
        p
        for p in path.rglob("*")
        if p.is_file()
        and not any(part.startswith(".") for part in p.relative_to(path).parts)
        and not _looks_binary(p)
    ]
    if not files:
        raise FileNotFoundError(f"no text files under {path}")
    return path, sorted(files)


def _path_hash(relpath: str) -> float:
    """A number in [0, 1) fixed by the path alone (stable across runs and machines)."""
    return int(hashlib.md5(relpath.encode("utf-8")).hexdigest()[:8], 16) / 16**8


def split_of(relpath: str, val_fraction: float) -> str:
    """`val` for the paths whose hash falls below `val_fraction`, else `train`."""
    return "val" if _path_hash(relpath) < val_fraction else "train"


def split_documents(relpaths: list[str], val_fraction: float) -> dict[str, list[str]]:
    """Assigns each path to `train` or `val` by `split_of`; both get at least one path when
    there are two or more (the path nearest the threshold moves)."""
    if not 0 < val_fraction < 1:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    splits: dict[str, list[str]] = {s: [] for s in SPLITS}
    for rel in relpaths:
        splits[split_of(rel, val_fraction)].append(rel)
    if not splits["val"] and len(splits["train"]) > 1:
        moved = min(splits["train"], key=_path_hash)
        splits["train"].remove(moved)
        splits["val"].append(moved)
    if not splits["train"] and len(splits["val"]) > 1:
        moved = max(splits["val"], key=_path_hash)
        splits["val"].remove(moved)
        splits["train"].append(moved)
    return splits


def default_cache_dir() -> Path:
    """`$RLMEM_CACHE/lm-data`, by default `~/.cache/rlmem/lm-data`."""
    root = os.environ.get("RLMEM_CACHE") or Path.home() / ".cache" / "rlmem"
    return Path(root) / "lm-data"


def is_prepared(path: str | Path) -> bool:
    meta = Path(path) / "meta.json"
    return meta.is_file() and json.loads(meta.read_text()).get("format") == FORMAT


def read_meta(data_dir: str | Path) -> dict:
    meta_path = Path(data_dir) / "meta.json"
    if not meta_path.is_file():
        raise FileNotFoundError(f"{data_dir} is not a prepared data folder (no meta.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("format") != FORMAT:
        raise ValueError(f"{meta_path}: format {meta.get('format')!r}, expected {FORMAT!r}")
    return meta


def prepare(
    source: str,
    tokenizer: str = "byte",
    bpe_vocab_size: int = 4096,
    val_fraction: float = 0.05,
    cache_dir: str | Path | None = None,
    shard_tokens: int = 100_000_000,
    log: Callable[[str], None] | None = print,
) -> Path:
    """Tokenises `source` into shards once and returns the prepared folder (cached by content).

    Args:
        source: `stdlib`, a text file, a folder of text files, or an already prepared folder.
        tokenizer: `byte` (default) or `bpe` (trained here on the train split only).
        bpe_vocab_size: vocabulary size of the BPE tokenizer.
        val_fraction: share of files (or, for one file, of its text) held out for validation.
        cache_dir: where prepared folders live (default `default_cache_dir()`).
        shard_tokens: about how many tokens each shard file holds.
    """
    if is_prepared(source):
        return Path(source)
    if tokenizer not in ("byte", "bpe"):
        raise ValueError(f"unknown tokenizer {tokenizer!r}; valid: byte, bpe")
    root, files = list_documents(source)
    rels = [f.relative_to(root).as_posix() for f in files]
    key_src = {
        "format": FORMAT,
        "source": str(root if source == STDLIB else Path(source).expanduser().resolve()),
        "files": [(r, f.stat().st_size, f.stat().st_mtime_ns) for r, f in zip(rels, files)],
        "tokenizer": tokenizer,
        "bpe_vocab_size": bpe_vocab_size if tokenizer == "bpe" else None,
        "val_fraction": val_fraction,
        "shard_tokens": shard_tokens,
    }
    key = hashlib.sha256(json.dumps(key_src).encode()).hexdigest()[:16]
    name = "stdlib" if source == STDLIB else Path(source).name or "data"
    out = Path(cache_dir or default_cache_dir()) / f"{name}-{tokenizer}-{key}"
    if is_prepared(out):
        return out

    docs = _split_texts(root, rels, val_fraction)
    if log:
        log(
            f"preparing {source!r}: {len(docs['train'])} train / {len(docs['val'])} val documents, "
            f"{tokenizer} tokens -> {out}"
        )
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    if tokenizer == "bpe":
        tok: Tokenizer = BPETokenizer.train(
            (read() for _, read in docs["train"]), vocab_size=bpe_vocab_size
        )
    else:
        tok = ByteTokenizer()
    dtype = token_dtype(tok.vocab_size)
    meta = {
        "format": FORMAT,
        "source": key_src["source"],
        "tokenizer": tok.kind,
        "vocab_size": tok.vocab_size,
        "bos_id": tok.bos_id,
        "dtype": dtype.name,
        "val_fraction": val_fraction,
        "splits": {
            split: _write_split(tmp, split, docs[split], tok, dtype, shard_tokens)
            for split in SPLITS
        },
    }
    (tmp / "tokenizer.json").write_text(tok.to_json())
    (tmp / "meta.json").write_text(json.dumps(meta, indent=1))
    try:
        os.replace(tmp, out)
    except OSError:  # another process finished the same folder first
        shutil.rmtree(tmp, ignore_errors=True)
        if not is_prepared(out):
            raise
    return out


class TokenSplit:
    """The tokens of one split of a prepared folder, read through memory maps.

    Windows are drawn inside one shard, and a split's shards hold only that split's documents,
    so a batch never mixes train and validation text.
    """

    def __init__(self, data_dir: str | Path, split: str):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid: {', '.join(SPLITS)}")
        self.data_dir, self.split = Path(data_dir), split
        meta = read_meta(data_dir)
        info = meta["splits"][split]
        self.bos_id = meta["bos_id"]
        self.vocab_size = meta["vocab_size"]
        self.documents: list[str] = info["documents"]
        self.bytes_per_token = info["bytes"] / max(1, info["tokens"] - len(info["documents"]))
        self.shards = [
            np.memmap(
                self.data_dir / sh["file"], dtype=meta["dtype"], mode="r", shape=(sh["tokens"],)
            )
            for sh in info["shards"]
        ]
        self.num_tokens = sum(len(s) for s in self.shards)

    def sample(self, rng: np.random.Generator, batch_size: int, seq_len: int) -> np.ndarray:
        """`batch_size` random windows of `seq_len + 1` tokens: int64 [B, T + 1]
        (inputs are [:, :-1], next-token targets [:, 1:])."""
        spans = np.array([max(0, len(s) - seq_len) for s in self.shards], dtype=np.float64)
        if spans.sum() == 0:
            raise ValueError(
                f"the {self.split} split has no shard longer than seq_len + 1 = {seq_len + 1} "
                f"tokens ({self.num_tokens} tokens in all): lower seq_len or use more data"
            )
        shard_ids = rng.choice(len(self.shards), size=batch_size, p=spans / spans.sum())
        starts = rng.integers(0, spans[shard_ids].astype(np.int64))
        return np.stack(
            [self.shards[i][s : s + seq_len + 1] for i, s in zip(shard_ids, starts)]
        ).astype(np.int64)

    def num_windows(self, seq_len: int) -> int:
        """How many windows `windows(seq_len)` yields."""
        return sum(len(range(0, len(shard) - seq_len, seq_len)) for shard in self.shards)

    def windows(self, seq_len: int) -> Iterator[np.ndarray]:
        """Every non-overlapping window of `seq_len + 1` tokens (stride seq_len), in order:
        int64 [T + 1] each. Used for exact validation perplexity."""
        for shard in self.shards:
            for start in range(0, len(shard) - seq_len, seq_len):
                yield np.asarray(shard[start : start + seq_len + 1], dtype=np.int64)


def _looks_binary(path: Path) -> bool:
    with open(path, "rb") as f:
        return b"\x00" in f.read(8192)


def _read_text(path: Path) -> str:
    return path.read_bytes().decode("utf-8", errors="replace")


def _split_texts(
    root: Path, rels: list[str], val_fraction: float
) -> dict[str, list[tuple[str, Callable[[], str]]]]:
    """Per split, (name, reader) pairs; a lone file is cut so its tail is validation."""
    if len(rels) == 1:
        path = root / rels[0]

        def part(which: str) -> Callable[[], str]:
            def read() -> str:
                text = _read_text(path)
                cut = int(len(text) * (1 - val_fraction))
                return text[:cut] if which == "train" else text[cut:]

            return read

        return {s: [(f"{rels[0]}[{s}]", part(s))] for s in SPLITS}
    splits = split_documents(rels, val_fraction)
    return {s: [(rel, lambda p=root / rel: _read_text(p)) for rel in splits[s]] for s in SPLITS}


def _encoded_documents(
    docs: list[tuple[str, Callable[[], str]]], tok: Tokenizer, group: int = 64
) -> Iterator[tuple[np.ndarray, int]]:
    """(token ids, UTF-8 byte count) per document, BPE documents encoded in parallel groups."""
    for i in range(0, len(docs), group):
        texts = [read() for _, read in docs[i : i + group]]
        if isinstance(tok, BPETokenizer):
            arrays = tok.encode_batch(texts)
        else:
            arrays = [tok.encode_array(t) for t in texts]
        for text, ids in zip(texts, arrays):
            yield ids, len(text.encode("utf-8"))


def _write_split(
    out: Path,
    split: str,
    docs: list[tuple[str, Callable[[], str]]],
    tok: Tokenizer,
    dtype: np.dtype,
    shard_tokens: int,
) -> dict:
    shards: list[dict] = []
    buffer: list[np.ndarray] = []
    buffered = 0
    n_bytes = 0
    bos = np.array([tok.bos_id], dtype=dtype)

    def flush() -> None:
        nonlocal buffer, buffered
        if not buffered:
            return
        name = f"{split}-{len(shards):04d}.bin"
        np.concatenate(buffer).astype(dtype).tofile(out / name)
        shards.append({"file": name, "tokens": buffered})
        buffer, buffered = [], 0

    for ids, size in _encoded_documents(docs, tok):
        buffer += [bos, ids.astype(dtype)]
        buffered += 1 + len(ids)
        n_bytes += size
        if buffered >= shard_tokens:
            flush()
    flush()
    if not shards:
        print(f"warning: the {split} split is empty", file=sys.stderr)
    return {
        "shards": shards,
        "documents": [name for name, _ in docs],
        "tokens": sum(s["tokens"] for s in shards),
        "bytes": n_bytes,
    }


def load_data_tokenizer(data_dir: str | Path) -> Tokenizer:
    return load_tokenizer(Path(data_dir) / "tokenizer.json")
