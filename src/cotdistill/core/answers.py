"""Find, normalise and compare final answers, per answer type.

Teachers and students both end their reasoning with one final-answer sentence ("The answer is 72.").
`extract_answer` finds the first such sentence (or a `\\boxed{}` / `#### N` marker), pulls the value
out and normalises it, and when it cannot it says why: no answer, several answers, or unparsable.
Numbers are compared as numbers (1,080 == 1080.0 == $1080), with math-verify as the fallback for
LaTeX-style expressions (\\frac{3}{4}, 2^{3}).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass

NO_ANSWER = "no answer"
SEVERAL = "several answers"
UNPARSABLE = "unparsable"

# A number as people write it: -1,080.50  $12  3/4  45%  .5
NUMBER_RE = re.compile(
    r"(?<![\w.])(?P<sign>[-−])?\s?\$?\s?"
    r"(?P<num>(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?|\.\d+)"
    r"(?:\s*/\s*(?P<den>\d+(?:\.\d+)?)(?![\d]))?"
    r"(?!\w*\d)"
)
# "The answer is", "answer is", "The final answer is:", "Answer:", "answer = "
ANSWER_PHRASE_RE = re.compile(
    r"(?:\b(?:(?:the|my|our)\s+)?(?:final\s+|correct\s+)?answer\s+(?:is|would\s+be|will\s+be)\b|\bfinal\s+answer\s*[:=]|\banswer\s*[:=]"
    r"|\bso\s+the\s+answer\s*[:=])\s*[:=]?\s*",
    re.IGNORECASE,
)
GSM_MARKER_RE = re.compile(r"####\s*")
SENTENCE_END_RE = re.compile(r"(?<!\d)\.(?!\d)|\.(?=\s|$)|\n")
NUMBER_WORDS = {
    w: i
    for i, w in enumerate(
        "zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen "
        "fifteen sixteen seventeen eighteen nineteen twenty".split()
    )
} | {"thirty": 30, "forty": 40, "fifty": 50, "sixty": 60, "seventy": 70, "eighty": 80, "ninety": 90, "hundred": 100}
YES = {"yes", "true", "correct"}
NO = {"no", "false", "incorrect"}


@dataclass(frozen=True)
class Extraction:
    """The outcome of reading a final answer: `value` when found, else `reason` says why not.

    `end` is the offset just past the final-answer sentence, so callers can cut what follows
    (plain-completion teachers loop on "The answer is 70. The answer is 70. ...").
    """

    value: str | None
    reason: str | None = None
    end: int | None = None

    @property
    def ok(self) -> bool:
        return self.value is not None


# ---------------------------------------------------------------- numbers


def format_number(x: float) -> str:
    """Canonical text of a number: integers without '.0', others with up to 6 decimals."""
    if math.isfinite(x) and abs(x - round(x)) < 1e-9 * max(1.0, abs(x)):
        return str(int(round(x)))
    return f"{x:.6f}".rstrip("0").rstrip(".")


def _number_from_match(m: re.Match[str]) -> float:
    value = float(m.group("num").replace(",", ""))
    if m.group("den"):
        den = float(m.group("den"))
        if den == 0:
            raise ValueError("division by zero")
        value = value / den
    return -value if m.group("sign") else value


def find_numbers(text: str) -> list[float]:
    """All numbers in `text` in order (thousands commas, $, fractions and signs understood)."""
    out = []
    for m in NUMBER_RE.finditer(text):
        try:
            out.append(_number_from_match(m))
        except ValueError:
            continue
    return out


LATEX_RE = re.compile(r"\\d?frac|\\sqrt|\^|\\cdot|\\times")


def _math_verify_values(text: str) -> list[float]:
    """The values of a LaTeX-ish expression (\\frac{3}{4}, 2^{10}, \\sqrt{16}) via math-verify.

    A set ("\\frac{1}{2}, \\frac{3}{4}") gives several values, an equation "x = 3/4" its right side;
    an empty list means math-verify could not read a number.
    """
    try:
        from math_verify import parse
        from sympy import Eq, FiniteSet
    except ImportError:  # pragma: no cover - math-verify is a core dependency
        return []
    try:
        parsed = parse(text if "$" in text else f"${text}$")
    except Exception:
        return []
    if not parsed:
        return []
    item = parsed[0]
    items = list(item.args) if isinstance(item, FiniteSet) else [item.rhs if isinstance(item, Eq) else item]
    values = []
    for it in items:
        try:
            value = float(it)
        except (TypeError, ValueError):
            return []
        if math.isfinite(value):
            values.append(value)
    return values


def parse_number(text: str) -> float | None:
    """The single number a short answer string stands for, or None when there is not exactly one."""
    text = text.strip().strip("*").strip()
    if "=" in text:
        text = text.rsplit("=", 1)[1]
    if LATEX_RE.search(text):  # \frac{3}{4} is one number, not the numbers 3 and 4
        values = _math_verify_values(text)
        return values[0] if len({format_number(v) for v in values}) == 1 else None
    nums = find_numbers(text)
    distinct = {format_number(n) for n in nums}
    if len(distinct) == 1:
        return nums[0]
    if not nums:
        word = re.fullmatch(r"\s*(-?)\s*([a-z]+)\W*", text.lower())
        if word and word.group(2) in NUMBER_WORDS:
            return -NUMBER_WORDS[word.group(2)] if word.group(1) else NUMBER_WORDS[word.group(2)]
    return None


# ---------------------------------------------------------------- locating the final answer


def _boxed(text: str) -> tuple[str, int] | None:
    """Content of the first \\boxed{...} (nested braces allowed) and the offset after it."""
    start = text.find("\\boxed{")
    if start < 0:
        return None
    i, depth = start + len("\\boxed{"), 1
    begin = i
    while i < len(text) and depth:
        depth += {"{": 1, "}": -1}.get(text[i], 0)
        i += 1
    if depth:
        return None
    return text[begin : i - 1], i


def _final_span(text: str) -> tuple[int, str, int] | None:
    """Where the first final-answer sentence's marker starts, its text after the marker, and the
    offset after it: the one definition of where a final answer is, for reading it
    (extract_answer), cutting what follows (cut_after_answer) and taking the reasoning before it
    (before_answer)."""
    candidates = []
    m = ANSWER_PHRASE_RE.search(text)
    if m:
        candidates.append((m.start(), m.end(), "phrase"))
    g = GSM_MARKER_RE.search(text)
    if g:
        candidates.append((g.start(), g.end(), "gsm"))
    b = _boxed(text)
    if b:
        content, end = b
        bstart = text.find("\\boxed{")
        candidates.append((bstart, end, "boxed"))
    if not candidates:
        return None
    start, after, kind = min(candidates)
    if kind == "boxed":
        return start, b[0], b[1]
    rest = text[after:]
    if kind == "phrase":
        # The value may itself be boxed: "The answer is \boxed{72}."
        inner = _boxed(rest)
        if inner and rest.find("\\boxed{") < 5:
            return start, inner[0], after + inner[1]
    stop = SENTENCE_END_RE.search(rest)
    span = rest[: stop.start()] if stop else rest
    end = after + (stop.end() if stop else len(rest))
    return start, span, end


# ---------------------------------------------------------------- public API


def normalise(value: str, answer_type: str, choices: list[str] | None = None) -> str | None:
    """Canonical string of a short answer for its type, or None when it cannot be read."""
    value = value.strip()
    if answer_type == "number":
        n = parse_number(value)
        return None if n is None else format_number(n)
    if answer_type == "yes_no":
        words = re.findall(r"[a-z]+", value.lower())
        found = {("yes" if w in YES else "no") for w in words if w in YES | NO}
        return found.pop() if len(found) == 1 else None
    if answer_type == "choice":
        letters = _choice_letters(value, choices)
        return letters.pop() if len(letters) == 1 else None
    if answer_type == "text":
        cleaned = value.strip().strip("\"'“”‘’`*").strip().rstrip(".").strip("\"'“”‘’`*").strip()
        return cleaned.lower() or None
    raise ValueError(f"unknown answer type {answer_type!r}")


# A letter marked as an option: "(B)", "B)", or a bare capital letter.
CHOICE_MARK_RE = re.compile(r"\(([A-Ea-e])\)|(?<![\w(])([A-Ea-e])\)|(?<![\w'])([A-E])(?![\w'])")


def _choice_letters(value: str, choices: list[str] | None) -> set[str]:
    """Every option letter a short answer names, by letter or by the option's text."""
    s = value.strip().strip("*\"'`").rstrip(".").strip()
    alone = re.fullmatch(r"\(?([A-Ea-e])\)?", s)
    if alone:  # "b", "(b)", "B)"
        return {alone.group(1).upper()}
    options = [c.strip().lower() for c in choices or []]
    with_article = re.fullmatch(r"(?:a|an|the)\s+(.+)", s, flags=re.IGNORECASE)
    if with_article and with_article.group(1).lower() in options:  # "A library": an article, not option A
        return {chr(65 + options.index(with_article.group(1).lower()))}
    letters = {next(g for g in m.groups() if g).upper() for m in CHOICE_MARK_RE.finditer(s)}
    text = re.sub(r"^\(?[A-Ea-e]\)\s*", "", s).lower()  # "(B) library" names B twice
    if text in options:
        letters.add(chr(65 + options.index(text)))
    return letters


def _ambiguity(span: str, answer_type: str, choices: list[str] | None = None) -> bool:
    """True when the final-answer sentence names more than one distinct value."""
    if answer_type == "number":
        tail = span.rsplit("=", 1)[1] if "=" in span else span
        if LATEX_RE.search(tail):
            return len({format_number(v) for v in _math_verify_values(tail)}) > 1
        return len({format_number(n) for n in find_numbers(tail)}) > 1
    if answer_type == "yes_no":
        words = set(re.findall(r"[a-z]+", span.lower()))
        return bool(words & YES) and bool(words & NO)
    if answer_type == "choice":
        return len(_choice_letters(span, choices)) > 1
    return False


def extract_answer(
    text: str, answer_type: str, choices: list[str] | None = None, fallback_last: bool = False
) -> Extraction:
    """Read the final answer from a model's output.

    The first final-answer sentence wins. With `fallback_last`, text without any such sentence is
    read by its last number / yes-no word (useful for baselines that do not follow the format);
    without it, such text is "no answer": the filter must not guess what a teacher meant.
    """
    found = _final_span(text)
    if found is None:
        if fallback_last:
            return _fallback(text, answer_type)
        return Extraction(None, NO_ANSWER)
    _, span, end = found
    if not span.strip():
        return Extraction(None, NO_ANSWER, end)
    if _ambiguity(span, answer_type, choices):
        return Extraction(None, SEVERAL, end)
    value = normalise(span, answer_type, choices)
    if value is None:
        return Extraction(None, UNPARSABLE, end)
    return Extraction(value, None, end)


def _fallback(text: str, answer_type: str) -> Extraction:
    if answer_type == "number":
        nums = find_numbers(text)
        return Extraction(format_number(nums[-1])) if nums else Extraction(None, NO_ANSWER)
    if answer_type == "yes_no":
        words = [w for w in re.findall(r"[a-z]+", text.lower()) if w in YES | NO]
        return Extraction("yes" if words[-1] in YES else "no") if words else Extraction(None, NO_ANSWER)
    return Extraction(None, NO_ANSWER)


def cut_after_answer(text: str) -> str:
    """The text up to and including its first final-answer sentence (drops loops and chatter)."""
    found = _final_span(text)
    return text if found is None else text[: found[2]].rstrip()


def before_answer(text: str) -> str:
    """The text before its first final-answer sentence's marker (all of it when there is none)."""
    found = _final_span(text)
    return text if found is None else text[: found[0]]


def majority(answers: list[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most frequent answer read (ties: the one seen first; None when none was read) and the
    whole vote: the teacher's no-gold vote and self-consistency at evaluation count alike."""
    votes = Counter(a for a in answers if a is not None)
    if not votes:
        return None, {}
    return votes.most_common(1)[0][0], dict(votes)


def answers_match(predicted: str | None, gold: str, answer_type: str) -> bool:
    """True when two normalised answers agree (numbers within 1e-6 relative tolerance)."""
    if predicted is None:
        return False
    if answer_type == "number":
        p, g = parse_number(predicted), parse_number(gold)
        if p is None or g is None:
            return False
        return math.isclose(p, g, rel_tol=1e-6, abs_tol=1e-9)
    return predicted.strip().lower() == gold.strip().lower()
