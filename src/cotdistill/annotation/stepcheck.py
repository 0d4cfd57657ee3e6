"""Are the steps a CoT states true? Catching right answers reached through false steps.

Given the answer as a hint, a small teacher often writes a plausible chain whose steps are false and
then copies the answer: "Carlos does not flip it, so it is heads up again", "10 + 28 + 7 = 35". The
answer filter keeps such chains, and a student trained on them learns to assert states it did not
track (the 0.5B embedded teacher's hinted coin-flip CoTs: 160/160 right answers, 27 with true steps).
This module checks the steps that can be checked mechanically:

    arithmetic    "a op b ... = c", the left side only numbers, + - × x * / ÷ and brackets: its value
                  must be c to c's written precision ("10 / 3 = 3.33" is true, "7 / 2 = 3" is not).
    coin flip     in coin-flip questions ("A coin is heads up. Ana flips the coin. ..."): a sentence
                  naming a person must state that person's action as the question does, and the
                  coin's true state after it; "the coin is heads up" said after the people must be the
                  final state.
    last letters  'the last letter of "Elon" is "n"' must be true.

Only what the CoT states is checked: a chain that skips steps ("two flips cancel out") is not false,
and text the checker cannot read (words for numbers, "20% of 50 = 10") is left alone.
"""

from __future__ import annotations

import ast
import operator
import re

# ---------------------------------------------------------------- arithmetic

_NUM = r"\$?(?:\d{1,3}(?:,\d{3})+|\d+)(?:\.\d+)?(?:/\d+(?![\d.]|\s?%)|\s?%)?"  # 1,200  $3.50  3/4  20%
_OP = r"[+\-−–*/×x÷]"
_OPERAND = rf"\(*\s*{_NUM}\s*\)*"
# Not a claim: a left side that continues leftwards ("M + 4 + 2 = 8", "3 1/2 x 2"), a right side that
# continues ("3*30 = 30 + M", "8/3 = 24/Y", "= 5A"), mixed numbers ("17/3 = 5 and 2/3", "1 and 1/4 = "),
# units that rescale ("$2.50 - $2.24 = 26 cents", "600 x 30 = 18 000"), times with leading zeros.
# On GSM8K's 7473 human rationales this flags 16 claims, each a real slip ("4+4+6 = 18").
_CLAIM_RE = re.compile(
    rf"(?<![\w.,:$/\-−–^+*×÷(])(?<![+\-−–*/×÷]\s)(?<!\d\s)(?<!and\s)(?P<lhs>{_OPERAND}(?:\s*{_OP}\s*{_OPERAND})+)"
    rf"\s*=\s*(?P<rhs>-?{_NUM})(?![\d.,:%]*[\d%A-Za-z])(?!\s*{_OP}\s*[\w$(])"
    r"(?!\s*(?:and\s+\(?\d|cents?\b|thousand|million|billion|\d{3}\b))"
)
_BINOPS = {ast.Add: operator.add, ast.Sub: operator.sub, ast.Mult: operator.mul, ast.Div: operator.truediv}


def _number(text: str) -> float:
    """A number as _NUM matched it: "$1,200" -> 1200, "20%" -> 0.2, "3/4" -> 0.75, "-3" -> -3."""
    sign = -1.0 if text.startswith("-") else 1.0
    digits = text.lstrip("-").replace("$", "").replace(",", "").replace(" ", "")
    scale = 100.0 if digits.endswith("%") else 1.0
    numerator, _, denominator = digits.rstrip("%").partition("/")
    return sign * float(numerator) / float(denominator or 1) / scale


def _evaluate(expression: str) -> float | None:
    """The value of a plain arithmetic expression as the CoT wrote it, or None if it is not one."""
    if re.search(r"(?<![\d.])0\d", expression):  # "0900-0130": a time or a code, not arithmetic
        return None
    try:
        python = re.sub(_NUM, lambda m: f"({_number(m.group(0))!r})", expression)
    except ZeroDivisionError:
        return None
    python = python.translate(str.maketrans({"×": "*", "x": "*", "÷": "/", "−": "-", "–": "-"}))
    try:
        tree = ast.parse(python.strip(), mode="eval")
    except SyntaxError:  # unbalanced brackets: the claim's start or end lies outside the match
        return None

    def value(node: ast.AST) -> float:
        if isinstance(node, ast.Constant) and isinstance(node.value, float):
            return node.value
        if isinstance(node, ast.BinOp) and type(node.op) in _BINOPS:
            return _BINOPS[type(node.op)](value(node.left), value(node.right))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        raise ValueError(ast.dump(node))

    try:
        return value(tree.body)
    except (ValueError, ZeroDivisionError):
        return None


def _holds(value: float, stated: str) -> bool:
    """`value` written to the precision of `stated` is `stated` ("3.33" holds for 10/3). A percentage
    holds as a fraction or as the number of percent: "3/4 = 75%" and "75 / 100 x 100 = 75%"."""
    decimals = len(stated.rstrip(" %").partition(".")[2])
    tolerance = 1e-6 if "/" in stated else 0.5 * 10**-decimals
    readings = [(_number(stated), tolerance / 100)] if stated.endswith("%") else []
    readings.append((_number(stated.rstrip(" %")), tolerance))
    return any(abs(value - target) < tol + 1e-9 * max(1.0, abs(target)) for target, tol in readings)


def false_arithmetic(text: str) -> str | None:
    """The first arithmetic claim in `text` that does not hold, as written, or None."""
    for m in _CLAIM_RE.finditer(text):
        value = _evaluate(m.group("lhs"))
        if value is not None and not _holds(value, m.group("rhs")):
            return f"{m.group(0).strip()} (is {value:g})"
    return None


# ---------------------------------------------------------------- coin flip

_COIN_QUESTION_RE = re.compile(r"\bA coin is (heads|tails) up\.(?P<steps>.*?)Is the coin still (?:heads|tails) up\?", re.DOTALL)
_COIN_STEP_RE = re.compile(r"([A-Z][\w'-]*) (flips|does not flip) the coin\.")
_STATE_RE = re.compile(r"\b(?:is|was|stays|remains|lands|ends up|turns|starts|started)\s+(?:(not|still|now|again)\s+)*(heads|tails)\b", re.IGNORECASE)
_ACTION_RE = re.compile(r"\b(does not flip|doesn't flip|did not flip|didn't flip|flips|flipped)\b", re.IGNORECASE)
_SENTENCE_RE = re.compile(r"[^.!?]+[.!?]?")


def _opposite(state: str) -> str:
    return "tails" if state == "heads" else "heads"


def false_coin_step(text: str, question: str) -> str | None:
    """The first sentence of a coin-flip CoT that contradicts the question, or None."""
    q = _COIN_QUESTION_RE.search(question)
    if not q:
        return None
    state = q.group(1).lower()
    after: dict[str, tuple[bool, str]] = {}  # person -> (flips, state after their turn)
    for name, action in _COIN_STEP_RE.findall(q.group("steps")):
        state = _opposite(state) if action == "flips" else state
        after[name] = (action == "flips", state)
    final = state
    for sentence in (s.strip() for s in _SENTENCE_RE.findall(text)):
        named = [n for n in after if re.search(rf"\b{re.escape(n)}\b", sentence)]
        claim = _STATE_RE.search(sentence)
        if len(named) == 1:
            flips, truth = after[named[0]]
            action = _ACTION_RE.search(sentence)
            if action and ("not" in action.group(1) or "n't" in action.group(1)) == flips:
                return f"{sentence!r}: {named[0]} {'flips' if flips else 'does not flip'} the coin"
        elif not named and re.search(r"\bstarts?\b", sentence, re.IGNORECASE):
            truth = q.group(1).lower()
        elif not named:
            truth = final
        else:
            continue  # several people in one sentence: which state belongs to whom is unclear
        if claim:
            said = claim.group(2).lower()
            said = _opposite(said) if claim.group(1) and claim.group(1).lower() == "not" else said
            if said != truth:
                return f"{sentence!r}: the coin is {truth} up"
    return None


# ---------------------------------------------------------------- last letters

_LAST_LETTER_RE = re.compile(r"last letter of [\"“']?([A-Za-z][\w'-]*)[\"”']? is [\"“']?([A-Za-z])\b", re.IGNORECASE)


def false_letter(text: str) -> str | None:
    """The first 'last letter of "word" is "x"' claim that is false, or None."""
    for word, letter in _LAST_LETTER_RE.findall(text):
        if word[-1].lower() != letter.lower():
            return f'the last letter of "{word}" is "{word[-1]}", not "{letter}"'
    return None


# ---------------------------------------------------------------- all checks


def false_step(rationale: str, question: str = "") -> str | None:
    """Why one of the reasoning's steps is false (the first found), or None when none is."""
    return false_arithmetic(rationale) or false_coin_step(rationale, question) or false_letter(rationale)
