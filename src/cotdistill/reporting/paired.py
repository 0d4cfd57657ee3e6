"""Paired comparison of two models on the same questions: the exact McNemar test.

"Is the CoT student better than answer-only?" is a question about the same test items, so the
evidence is in the questions where the two disagree: b (only the first right) and c (only the
second right). Under "no difference" each disagreement is a fair coin, so the two-sided p-value is
the binomial tail of min(b, c) in b + c flips, doubled. Unlike two overlapping CIs, this uses the
pairing, and it needs no normal approximation when disagreements are few.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import comb


@dataclass(frozen=True)
class Paired:
    n: int  # questions both models answered
    only_first: int  # b: the first right, the second wrong
    only_second: int  # c: the second right, the first wrong
    p_value: float  # exact two-sided McNemar


def mcnemar_exact(only_first: int, only_second: int) -> float:
    k, n = min(only_first, only_second), only_first + only_second
    if n == 0:
        return 1.0
    tail = sum(comb(n, i) for i in range(k + 1)) / 2**n
    return min(1.0, 2 * tail)


def compare(first: dict[str, bool], second: dict[str, bool]) -> Paired:
    """`first`, `second`: question id -> correct. Only questions both answered count."""
    common = first.keys() & second.keys()
    b = sum(first[q] and not second[q] for q in common)
    c = sum(second[q] and not first[q] for q in common)
    return Paired(len(common), b, c, mcnemar_exact(b, c))
