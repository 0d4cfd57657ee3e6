"""Which teacher CoTs become training data, and why the others do not.

Every sample gets exactly one verdict, checked in this order (the first that applies wins):

    prompt_too_long  the question does not fit the teacher's context: it was not asked (not cached,
                so a teacher with a longer context asks it on the next run)
    truncated   hit max_tokens before writing a final answer
    unparsed    no readable final answer ("no answer", "several answers", "unparsable")
    wrong       final answer != gold (or != the majority vote in no-gold mode)
    too_long    the CoT is longer than the user's character limit
    leak        the CoT talks about the hint ("as given", "the hint", "we are told the answer")
    underived   number answers only: the CoT's own last stated result is not the answer it states
    false_step  a step the CoT states is false: "10 + 28 + 7 = 35", a coin state after a flip, a
                last letter (stepcheck.py)
    duplicate   near-identical to an already-kept sample of the same question (word-level
                similarity >= `dedupe_similarity` after normalising case, spacing, punctuation)
    over_cap    the question already has `max_per_question` kept samples (with many samples per
                question, easy questions would otherwise dominate the training set)
    hint_dependent  with `hint_independent`: a CoT that passed every check above, of a question the
                teacher answers wrongly when asked without the hint (annotate.py asks it once more)
    kept        everything else

Text after the first final-answer sentence is cut off before any check (plain-completion teachers
loop on "The answer is 70. The answer is 70. ..."), so only the reasoning the student will learn
from is judged.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from difflib import SequenceMatcher

from cotdistill.core.answers import (
    NUMBER_RE,
    answers_match,
    before_answer,
    cut_after_answer,
    extract_answer,
    format_number,
    parse_number,
)
from cotdistill.core.config import FiltersConfig
from cotdistill.annotation.stepcheck import false_step
from cotdistill.core.sampling import PROMPT_TOO_LONG

@dataclass(frozen=True)
class Judgement:
    verdict: str
    predicted: str | None  # the normalised final answer the CoT states (None when unparsed)
    rationale: str  # the reasoning before the final-answer sentence (the student's target text)
    text: str  # the completion cut after its first final-answer sentence
    reason: str | None = None  # why not kept, in a few words (extractor reason, leaked phrase, ...)


# ---------------------------------------------------------------- the rationale


_TRAILING_CONNECTOR_RE = re.compile(r"(?:[,;:\-–—]|\b(?:and|so|thus|therefore|hence|then)\b)\s*$", re.IGNORECASE)


def split_rationale(text: str) -> str:
    """The reasoning of a cut completion without its final-answer sentence: the text before the
    sentence extract_answer reads the answer from (answers.before_answer), less a dangling connector.

    "48 + 24 = 72. So the answer is 72." -> "48 + 24 = 72."; a clause that shares the sentence with
    the answer keeps its content: "She has 72 clips, so the answer is 72." -> "She has 72 clips."
    """
    head = before_answer(text).rstrip()
    while True:
        trimmed = _TRAILING_CONNECTOR_RE.sub("", head).rstrip()
        if trimmed == head:
            break
        head = trimmed
    if head and head[-1] not in ".!?)\"'”":
        head += "."
    return head.strip()


def normalise_text(text: str) -> str:
    """Text compared for duplicates: case, spacing and punctuation do not make a CoT new."""
    return " ".join(re.sub(r"[^\w\s]", " ", text.lower()).split())


# ---------------------------------------------------------------- leak


LEAK_PATTERNS = [
    r"\bas given\b",
    r"\b(?:the|a|this|our|answer) hint\b",
    r"\bhint (?:says|is|states|tells|gives|suggests|shows)\b",
    r"\b(?:given|provided|expected|stated|correct|known) answer\b",
    r"\bthe answer (?:is |was )?(?:given|provided|stated|already)\b",
    r"\b(?:we|i) (?:are|am|were|was|have been) (?:told|given) (?:that )?the answer\b",
    r"\b(?:we|i) (?:know|knew) (?:that )?the answer\b",
    r"\b(?:matches|match|matching|confirms|confirm) (?:the|our) (?:answer|hint)\b",
    r"\bwork(?:ing|ed)? backwards? from the (?:answer|hint)\b",
]
_LEAK_RE = re.compile("|".join(f"(?:{p})" for p in LEAK_PATTERNS), re.IGNORECASE)


def find_leak(text: str, question: str = "") -> str | None:
    """The phrase by which a CoT refers to the answer hint, or None.

    A phrase that the question itself contains ("a hint of mint") is not a leak.
    """
    for m in _LEAK_RE.finditer(text):
        if m.group(0).lower() not in question.lower():
            return m.group(0)
    return None


# ---------------------------------------------------------------- underived
#
# The rule (number answers only). Let R be the reasoning before the final-answer sentence, with
# GSM calculator annotations <<48/2=24>> removed. The answer is DERIVED when it equals
#   (a) the last number in R ("... 48 + 24 = 72." / "... so she has 72 clips."), or
#   (b) the last number in R that is not context: a number right after "in / for / over / after /
#       during / within / per / each / every / out of / from" (optionally "the", "a", "another") and
#       not written as money is context, so "he reads 252 pages in 3 weeks" and "she earned $10 for
#       50 minutes" state 252 and 10.
# Otherwise it is UNDERIVED: "... 93 - 80 = 13 students leaving early. The answer is 93." states a
# number it did not reach. A reasoning without any number is underived too.
# Numbers are read by answers.find_numbers' pattern (1,080  $12  3/4  -5  2.5  45%); "x", "×" and
# "*" are just operators, so "0.2 x 50 = $10" ends with 10. Known misses: results written in words
# ("seventy-two"), and a restated input after the result ("= 13 leaving early out of 93" is kept).

_CALCULATOR_RE = re.compile(r"<<[^<>]*>>")
_CONTEXT_BEFORE_RE = re.compile(
    r"\b(?:in|for|over|after|during|within|per|each|every|out of|from)\s+(?:(?:the|a|an|another|its|his|her|their)\s+)?$",
    re.IGNORECASE,
)


def _stated_numbers(rationale: str) -> list[tuple[float, bool]]:
    """(value, is_context) for each number in the reasoning, in order."""
    text = _CALCULATOR_RE.sub("", rationale)
    out = []
    for m in NUMBER_RE.finditer(text):
        value = parse_number(m.group(0))
        if value is None:  # e.g. a fraction over zero
            continue
        money = "$" in m.group(0)
        context = not money and bool(_CONTEXT_BEFORE_RE.search(text[max(0, m.start() - 40) : m.start()]))
        out.append((value, context))
    return out


def underived_reason(rationale: str, answer: str) -> str | None:
    """Why the stated number answer is not the CoT's own last result, or None when it is."""
    numbers = _stated_numbers(rationale)
    if not numbers:
        return "no number in the reasoning"
    candidates = [numbers[-1][0]]
    non_context = [v for v, context in numbers if not context]
    if non_context:
        candidates.append(non_context[-1])
    if any(answers_match(format_number(v), answer, "number") for v in candidates):
        return None
    return f"last result {format_number(candidates[-1])}, states {answer}"


# ---------------------------------------------------------------- one sample


def judge(
    text: str,
    finish_reason: str,
    answer_type: str,
    gold: str | None,
    *,
    question: str = "",
    choices: list[str] | None = None,
    kept_texts: set[str] | None = None,
    options: FiltersConfig = FiltersConfig(),
) -> Judgement:
    """The verdict on one teacher sample. `gold` None skips the correctness check (no-gold mode
    judges against the vote later); `kept_texts` holds normalised texts already kept for this
    question and is updated when this sample is kept."""
    if finish_reason == PROMPT_TOO_LONG:
        return Judgement("prompt_too_long", None, "", "", text)
    cut = cut_after_answer(text).strip()
    found = extract_answer(cut, answer_type, choices)
    rationale = split_rationale(cut)
    if not found.ok:
        if finish_reason == "length":
            return Judgement("truncated", None, rationale, cut, "hit max_tokens before a final answer")
        return Judgement("unparsed", None, rationale, cut, found.reason)
    predicted = found.value
    if gold is not None and not answers_match(predicted, gold, answer_type):
        return Judgement("wrong", predicted, rationale, cut, f"states {predicted}, gold {gold}")
    if options.max_chars is not None and len(cut) > options.max_chars:
        return Judgement("too_long", predicted, rationale, cut, f"{len(cut)} > {options.max_chars} characters")
    if options.leak:
        phrase = find_leak(cut, question)  # the whole CoT: "We are told the answer is 72." ends it
        if phrase:
            return Judgement("leak", predicted, rationale, cut, f"mentions the hint: {phrase!r}")
    if options.underived and answer_type == "number":
        why = underived_reason(rationale, predicted)
        if why:
            return Judgement("underived", predicted, rationale, cut, why)
    if options.steps:
        why = false_step(rationale, question)
        if why:
            return Judgement("false_step", predicted, rationale, cut, why)
    if kept_texts is not None:
        key = normalise_text(cut)
        if options.dedupe:
            similarity = max((_similarity(key, k) for k in kept_texts), default=0.0)
            if similarity >= options.dedupe_similarity:
                return Judgement("duplicate", predicted, rationale, cut, f"{similarity:.0%} like a kept sample")
        if options.max_per_question is not None and len(kept_texts) >= options.max_per_question:
            return Judgement("over_cap", predicted, rationale, cut, f"{options.max_per_question} already kept")
        kept_texts.add(key)
    return Judgement("kept", predicted, rationale, cut)


def _similarity(a: str, b: str) -> float:
    """Share of words two normalised texts have in common, in order (1.0: identical)."""
    if a == b:
        return 1.0
    return SequenceMatcher(None, a.split(), b.split(), autojunk=False).ratio()
