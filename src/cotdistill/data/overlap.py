"""Train/test overlap: a test question seen in training makes accuracy measure memory, not reasoning.

Questions are compared after normalisation (lower case, punctuation removed, whitespace collapsed),
which catches the copies that differ only in tokenisation ("beach . she" vs "beach. She"), as
between MultiArith/AddSub/SingleEq and MAWPS. Decontamination goes further, as open-r1 does for
benchmarks: a training question that shares any run of n words (8 by default) with a held-out
question is dropped, which also catches a test problem pasted into a longer one, or re-used with
other numbers where the shared wording is long enough.
"""

from __future__ import annotations

import re
import string
from typing import Iterable

from cotdistill.core.records import Example

_PUNCTUATION = str.maketrans("", "", string.punctuation + "“”‘’")


def normalise_question(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCTUATION)).strip()


def ngrams(text: str, n: int) -> set[tuple[str, ...]]:
    """The runs of n words of the normalised text; a text shorter than n words is one run (itself)."""
    words = tuple(normalise_question(text).split())
    if len(words) <= n:
        return {words} if words else set()
    return {words[i:i + n] for i in range(len(words) - n + 1)}


def decontaminate(train: Iterable[Example], held_out: Iterable[Example], n: int) -> tuple[list[Example], list[dict]]:
    """The training examples that share no n-word run with any held-out question, and one record
    per dropped example: its id and question, the held-out question it matched and a shared run."""
    index: dict[tuple[str, ...], Example] = {}
    for e in held_out:
        for gram in ngrams(e.question, n):
            index.setdefault(gram, e)
    kept, dropped = [], []
    for e in train:
        hits = ngrams(e.question, n) & index.keys()
        if not hits:
            kept.append(e)
        else:
            hit = min(hits)  # the same run every time, whatever the set's order
            dropped.append({"id": e.id, "question": e.question, "matched_id": index[hit].id,
                            "matched_question": index[hit].question, "shared": " ".join(hit)})
    return kept, dropped


def dedupe(examples: Iterable[Example]) -> tuple[list[Example], int]:
    """The examples with each question once (the first occurrence), and how many repeats were dropped."""
    examples = list(examples)
    seen: set[str] = set()
    kept = []
    for e in examples:
        key = normalise_question(e.question)
        if key not in seen:
            seen.add(key)
            kept.append(e)
    return kept, len(examples) - len(kept)
