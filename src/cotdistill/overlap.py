"""Train/test overlap: a test question seen in training makes accuracy measure memory, not reasoning.

Questions are compared after normalisation (lower case, punctuation removed, whitespace collapsed),
which catches the copies that differ only in tokenisation ("beach . she" vs "beach. She"), as
between MultiArith/AddSub/SingleEq and MAWPS.
"""

from __future__ import annotations

import re
import string
from typing import Iterable

from cotdistill.examples import Example

_PUNCTUATION = str.maketrans("", "", string.punctuation + "“”‘’")


def normalise_question(text: str) -> str:
    return re.sub(r"\s+", " ", text.lower().translate(_PUNCTUATION)).strip()


def remove_overlap(train: Iterable[Example], test: Iterable[Example]) -> tuple[list[Example], int]:
    """The training examples whose question is not in `test`, and how many were removed."""
    train = list(train)
    held_out = {normalise_question(e.question) for e in test}
    kept = [e for e in train if normalise_question(e.question) not in held_out]
    return kept, len(train) - len(kept)


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
