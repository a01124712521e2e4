"""The paper's synthetic tasks (PAPER.md 5.3) and multi-query associative recall (MQAR).

Every task makes batches of (inputs, targets), int64 [B, T]; `targets` is `IGNORE_INDEX`
everywhere except where the model must produce an answer (answer-only loss).

* `parity`: vocabulary {0 pad, 1, 2}. A sequence of length L is L-1 random tokens from {1, 2}
  and the answer (number of 2s mod 2) + 1. The answer is replaced by pad in the input and is
  predicted at the position before it (the last bit); pads follow up to the batch's length.
* `modarith`: mod-5 arithmetic, vocabulary {0 pad, 1 '+', 2 '-', 3 '*', 4 '='} and the digits
  0-4 as ids 5-9. Alternating digits and operators, then '=' and the answer, with standard
  precedence ('*' binds tighter, left-associative). Lengths are odd.
* `modarith-brackets`: the same plus brackets, ids 10 '(' and 11 ')' (the digits keep their ids);
  no paper result exists for it.
* `mqar`: `pairs` key-value pairs, `gap` pad tokens, then `queries` keys each followed by its
  value; the value is the target at the query key's position. Keys are distinct within a
  sequence; vocabulary {0 pad} + `keys` key ids + `values` value ids.

Lengths as in the paper: train 3-40, test 40-256 (inclusive; odd only for the arithmetic
tasks). Accuracy is per answer and normalised so that chance is 0 and perfect is 1:
(acc - chance) / (1 - chance), chance = 1/2 (parity), 1/5 (mod 5), 1/values (MQAR).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lm.model import IGNORE_INDEX

PAD = 0
PLUS, MINUS, TIMES, EQUALS, LPAREN, RPAREN = 1, 2, 3, 4, 10, 11
DIGIT0 = 5  # digit d is token DIGIT0 + d
MOD = 5
SYMBOLS = {PLUS: "+", MINUS: "-", TIMES: "*", EQUALS: "=", LPAREN: "(", RPAREN: ")"}


def normalised_accuracy(accuracy: float, chance: float) -> float:
    """Accuracy rescaled so that chance is 0 and perfect is 1."""
    return (accuracy - chance) / (1 - chance)


class Task:
    """A task makes batches; `vocab_size` and `chance` (accuracy of guessing) describe it."""

    name = "task"
    vocab_size = 0
    chance = 0.0

    def batch(
        self, rng: np.random.Generator, batch_size: int, split: str = "train"
    ) -> tuple[np.ndarray, np.ndarray]:
        """A random batch of the split (`train` or `test`): (inputs, targets), int64 [B, T]."""
        raise NotImplementedError

    def test_set(
        self, rng: np.random.Generator, size: int, batch_size: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """A fixed test set of `size` sequences in batches."""
        return [
            self.batch(rng, min(batch_size, size - i), "test") for i in range(0, size, batch_size)
        ]


@dataclass
class LengthTask(Task):
    """A task whose sequences end with one answer; lengths are drawn per split."""

    train_lengths: tuple[int, int] = (3, 40)
    test_lengths: tuple[int, int] = (40, 256)

    def lengths(self, rng: np.random.Generator, n: int, split: str) -> np.ndarray:
        """n sequence lengths, uniform over the split's range (inclusive)."""
        lo, hi = self.train_lengths if split == "train" else self.test_lengths
        return rng.integers(lo, hi + 1, size=n)

    def sample(
        self, rng: np.random.Generator, lengths: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Sequences of the given lengths: (inputs, targets), int64 [B, max(lengths)]."""
        raise NotImplementedError

    def batch(self, rng, batch_size, split="train"):
        return self.sample(rng, self.lengths(rng, batch_size, split))

    def test_set(self, rng, size, batch_size):
        """Sorted lengths, so that each batch pads little."""
        lengths = np.sort(self.lengths(rng, size, "test"))
        return [self.sample(rng, lengths[i : i + batch_size]) for i in range(0, size, batch_size)]


def _answer_only(seqs: np.ndarray, lengths: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The last token of each row (at lengths - 1) is the answer: pad it in the inputs and
    make it the only target, at the position before it."""
    rows = np.arange(len(lengths))
    inputs = seqs.copy()
    inputs[rows, lengths - 1] = PAD
    targets = np.full_like(seqs, IGNORE_INDEX)
    targets[rows, lengths - 2] = seqs[rows, lengths - 1]
    return inputs, targets


@dataclass
class Parity(LengthTask):
    name = "parity"
    vocab_size = 3
    chance = 0.5

    def sample(self, rng, lengths):
        lengths = np.asarray(lengths)
        B, T = len(lengths), int(lengths.max())
        pos = np.arange(T)
        bits = rng.integers(1, 3, size=(B, T))
        bits[pos >= lengths[:, None] - 1] = 0  # the answer slot and the padding
        answer = (bits == 2).sum(axis=1) % 2 + 1
        bits[np.arange(B), lengths - 1] = answer
        return _answer_only(bits, lengths)


@dataclass
class ModArith(LengthTask):
    """Mod-5 arithmetic; `brackets` adds '(' and ')'."""

    brackets: bool = False
    p_open: float = 0.2  # chance to open a bracket where an operand is due
    p_close: float = 0.3  # chance to close one after an operand (when optional)

    name = "modarith"
    chance = 1 / MOD

    @property
    def vocab_size(self) -> int:
        return 12 if self.brackets else 10

    def lengths(self, rng, n, split):
        lo, hi = self.train_lengths if split == "train" else self.test_lengths
        lo, hi = lo + (lo % 2 == 0), hi - (hi % 2 == 0)  # odd lengths only
        if lo > hi or lo < 3:
            raise ValueError(f"no odd length >= 3 in [{lo}, {hi}]")
        return lo + 2 * rng.integers(0, (hi - lo) // 2 + 1, size=n)

    def sample(self, rng, lengths):
        lengths = np.asarray(lengths)
        if np.any(lengths % 2 == 0) or np.any(lengths < 3):
            raise ValueError("modular-arithmetic sequences have odd lengths >= 3")
        B, T = len(lengths), int(lengths.max())
        expr = random_expressions(rng, lengths - 2, self.brackets, self.p_open, self.p_close)
        seqs = np.zeros((B, T), dtype=np.int64)
        seqs[:, : expr.shape[1]] = expr
        rows = np.arange(B)
        seqs[rows, lengths - 2] = EQUALS
        seqs[rows, lengths - 1] = DIGIT0 + evaluate_expressions(expr)
        return _answer_only(seqs, lengths)


def random_expressions(
    rng: np.random.Generator,
    n_tokens: np.ndarray,
    brackets: bool = False,
    p_open: float = 0.2,
    p_close: float = 0.3,
) -> np.ndarray:
    """Uniformly random digits and operators forming valid expressions of exactly n_tokens[b]
    (odd) tokens each: int64 [B, max(n_tokens)], PAD after the end.

    One left-to-right walk for the whole batch. State per row: whether an operand is due, the
    bracket depth d and the tokens left r (this one included); r - d stays odd while an operand
    is due and even after one. A '(' needs r >= d + 3 (a digit and d + 1 closes must still fit),
    an operator r >= d + 2; when neither fits the row closes a bracket.
    """
    n_tokens = np.asarray(n_tokens)
    B, N = len(n_tokens), int(n_tokens.max())
    out = np.zeros((B, N), dtype=np.int64)
    depth = np.zeros(B, dtype=np.int64)
    operand_due = np.ones(B, dtype=bool)
    for t in range(N):
        left = n_tokens - t
        active = left > 0
        u = rng.random(B)
        opens = active & operand_due & brackets & (left >= depth + 3) & (u < p_open)
        digit = active & operand_due & ~opens
        can_op = left >= depth + 2
        closes = active & ~operand_due & (depth > 0) & (~can_op | (u < p_close))
        op = active & ~operand_due & ~closes
        out[digit, t] = DIGIT0 + rng.integers(0, MOD, size=int(digit.sum()))
        out[op, t] = rng.integers(PLUS, TIMES + 1, size=int(op.sum()))
        out[opens, t] = LPAREN
        out[closes, t] = RPAREN
        depth += opens.astype(np.int64) - closes.astype(np.int64)
        operand_due = np.where(digit | closes, False, np.where(op | opens, True, operand_due))
    return out


def evaluate_expressions(tokens: np.ndarray) -> np.ndarray:
    """Values mod 5 of token expressions int64 [B, N] (PAD-terminated) with standard precedence.

    A batched left-to-right scan: per bracket level, the sum of finished terms, the running
    product of the current term and the pending operator; ')' folds a level into its parent
    as an operand.
    """
    B, N = tokens.shape
    levels = N // 2 + 2
    total = np.zeros((B, levels), dtype=np.int64)
    term = np.zeros((B, levels), dtype=np.int64)
    pending = np.full((B, levels), PLUS, dtype=np.int64)
    depth = np.zeros(B, dtype=np.int64)
    rows = np.arange(B)

    def push_operand(mask: np.ndarray, value: np.ndarray) -> None:
        r, d, v = rows[mask], depth[mask], value[mask]
        op = pending[r, d]
        add = op != TIMES
        total[r[add], d[add]] = (total[r[add], d[add]] + term[r[add], d[add]]) % MOD
        term[r, d] = np.where(add, np.where(op == MINUS, -v, v), term[r, d] * v) % MOD

    for t in range(N):
        tok = tokens[:, t]
        is_digit = (tok >= DIGIT0) & (tok < DIGIT0 + MOD)
        push_operand(is_digit, tok - DIGIT0)
        is_op = (tok >= PLUS) & (tok <= TIMES)
        pending[rows[is_op], depth[is_op]] = tok[is_op]
        opens = tok == LPAREN
        depth[opens] += 1
        total[rows[opens], depth[opens]] = 0
        term[rows[opens], depth[opens]] = 0
        pending[rows[opens], depth[opens]] = PLUS
        closes = tok == RPAREN
        value = (total[rows, depth] + term[rows, depth]) % MOD
        depth[closes] -= 1
        push_operand(closes, value)
    if np.any(depth != 0):
        raise ValueError("unbalanced brackets")
    return (total[:, 0] + term[:, 0]) % MOD


def expression_text(tokens: np.ndarray) -> str:
    """One row of tokens as text, e.g. '3*(4-1)=' (for reading and for tests)."""
    parts = []
    for tok in tokens.tolist():
        if tok == PAD:
            break
        parts.append(str(tok - DIGIT0) if DIGIT0 <= tok < DIGIT0 + MOD else SYMBOLS[tok])
    return "".join(parts)


@dataclass
class MQAR(Task):
    """Multi-query associative recall with `keys` key ids and `values` value ids."""

    keys: int = 64
    values: int = 64
    pairs: int = 8
    queries: int | None = None  # default: every pair, in random order
    gap: int = 0  # pad tokens between the pairs and the queries
    test_pairs: int | None = None  # default: pairs
    test_gap: int | None = None  # default: gap

    name = "mqar"

    @property
    def vocab_size(self) -> int:
        return 1 + self.keys + self.values

    @property
    def chance(self) -> float:
        return 1 / self.values

    def batch(self, rng, batch_size, split="train"):
        test = split == "test"
        pairs = (self.test_pairs or self.pairs) if test else self.pairs
        gap = (self.gap if self.test_gap is None else self.test_gap) if test else self.gap
        queries = min(self.queries or pairs, pairs)
        if pairs > self.keys:
            raise ValueError(f"MQAR needs keys >= pairs, got keys={self.keys}, pairs={pairs}")
        B = batch_size
        keys = 1 + np.argsort(rng.random((B, self.keys)), axis=1)[:, :pairs]  # distinct per row
        values = 1 + self.keys + rng.integers(0, self.values, size=(B, pairs))
        asked = np.argsort(rng.random((B, pairs)), axis=1)[:, :queries]
        rows = np.arange(B)[:, None]
        T = 2 * pairs + gap + 2 * queries
        seqs = np.zeros((B, T), dtype=np.int64)
        seqs[:, 0 : 2 * pairs : 2], seqs[:, 1 : 2 * pairs : 2] = keys, values
        q0 = 2 * pairs + gap
        seqs[:, q0::2], seqs[:, q0 + 1 :: 2] = keys[rows, asked], values[rows, asked]
        targets = np.full_like(seqs, IGNORE_INDEX)
        targets[:, q0::2] = values[rows, asked]  # predicted at the query key
        return seqs, targets


TASKS = {"parity": Parity, "modarith": ModArith, "modarith-brackets": ModArith, "mqar": MQAR}


def make_task(name: str, **options) -> Task:
    """Builds a task by name (see `TASKS`)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; valid tasks: {', '.join(TASKS)}")
    if name == "modarith-brackets":
        options = {"brackets": True, **options}
    task = TASKS[name](**options)
    task.name = name
    return task
