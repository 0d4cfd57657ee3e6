"""What a model scores while knowing nothing: the base rates every accuracy is read against.

On a yes/no set where 57 % of the gold answers are "no", a student at 56 % has learnt nothing,
whatever its confidence interval and however it compares with another student; the same holds for
multiple choice with a skewed answer key. So beside each accuracy on a set of labels we show
- the **majority rate**: the accuracy of always giving the set's most common gold answer (read off
  the very questions scored, so it is the best any constant answer could do there), and
- the **chance rate**: the expected accuracy of guessing uniformly among the labels (1/2 for yes/no,
  the mean of 1/k over the questions' k options for multiple choice),
and an accuracy whose 95 % CI reaches down to the majority rate is not called above it.

Open answers (numbers, text) have no chance rate; their majority rate is shown only when one answer
recurs and is common enough to matter (over `NOTABLE_MAJORITY`), e.g. a counting task whose answer is
mostly 2.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from cotdistill.core.answers import majority
from cotdistill.core.records import Example

LABEL_TYPES = ("yes_no", "choice")
#: For open answers: the share of questions one gold answer must exceed before its rate is shown.
NOTABLE_MAJORITY = 0.10


@dataclass(frozen=True)
class BaseRates:
    majority_answer: str
    majority_rate: float
    chance_rate: float | None  # None for open answers (numbers, text)

    def to_dict(self) -> dict[str, object]:
        return {"majority_answer": self.majority_answer, "majority_rate": self.majority_rate, "chance_rate": self.chance_rate}


def base_rates(examples: Sequence[Example]) -> BaseRates | None:
    """The base rates of a set of questions, or None where no constant answer is worth naming."""
    if not examples:
        return None
    answer, votes = majority([e.answer for e in examples])
    count = votes[answer]
    rate = count / len(examples)
    labels = all(e.answer_type in LABEL_TYPES for e in examples)
    if not labels and (count < 2 or rate <= NOTABLE_MAJORITY):
        return None
    return BaseRates(answer, rate, _chance(examples) if labels else None)


def _chance(examples: Sequence[Example]) -> float:
    return sum(0.5 if e.answer_type == "yes_no" else 1 / max(1, len(e.choices or ())) for e in examples) / len(examples)


def above_majority(ci_low: float, majority_rate: float | None) -> bool | None:
    """Whether an accuracy is above the majority rate with 95 % confidence (None: no rate to compare)."""
    return None if majority_rate is None else ci_low > majority_rate


def majority_correct(examples: Sequence[Example], answer: str) -> dict[str, bool]:
    """Question id -> whether "always answer `answer`" is right: the constant predictor's row in a
    paired comparison, so that a student can be tested against it like against any other baseline."""
    return {e.id: e.answer == answer for e in examples}


def rates_note(e: Mapping[str, Any]) -> str:
    """One evaluation's base rates in words, for a summary line: `` — always "no" scores 56.7 %,
    guessing 50.0 %: NOT above the majority rate`` ("" where it has none)."""
    rate = e.get("majority_rate")
    if rate is None:
        return ""
    guess = f", guessing {100 * e['chance_rate']:.1f} %" if e.get("chance_rate") is not None else ""
    verdict = "above the majority rate" if above_majority(e["ci_low"], rate) else "NOT above the majority rate"
    return f" — always {e['majority_answer']!r} scores {100 * rate:.1f} %{guess}: {verdict}"
