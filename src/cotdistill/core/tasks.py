"""Task families: how a final answer is written, and which default exemplars a family uses.

Every family shares one final-answer form, "The answer is X.", so that teacher CoTs, student
targets and student generations are all read by the same `answers.extract_answer`.
"""

from __future__ import annotations

from cotdistill.core.records import ANSWER_TYPES

# Default exemplar set per answer type (files in cotdistill/exemplars/, written for this project).
EXEMPLAR_FILES = {
    "number": "number.json",
    "yes_no": "yes_no.json",
    "choice": "choice.json",
    "text": "text.json",
}


FINAL_ANSWER_PREFIX = "The answer is"


def final_answer_sentence(answer: str, answer_type: str) -> str:
    """The fixed, parseable sentence that ends every CoT and every student target."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer type {answer_type!r}")
    return f"{FINAL_ANSWER_PREFIX} {answer}."


def format_question(question: str, choices: list[str] | None = None) -> str:
    """The question as a model sees it: multiple-choice options appended as '(A) ...' lines."""
    if not choices:
        return question.strip()
    options = "\n".join(f"({chr(65 + i)}) {c}" for i, c in enumerate(choices))
    return f"{question.strip()}\nAnswer choices:\n{options}"
