"""Prompts: what the teacher is asked, and what the student reads and writes.

Student format (imported by training and evaluation; keep stable):

    input  = student_input(question, choices)          "Q: <question>\\nA:"
    target = student_target(rationale, answer, type, mode)
             mode "cot":          "<rationale> The answer is X."
             mode "answer-only":  "The answer is X."
    causal-LM sequence = input + STUDENT_SEPARATOR + target   (the loss covers the target only)

Why "Q: ...\\nA:": it is the layout of the teacher's exemplars (Wei et al.'s "Q:/A:"), so the student
sees the same surface form the CoTs were written for; the trailing "A:" tells a causal LM where its
answer starts, and a seq2seq encoder ignores it harmlessly. No exemplars and no hint: the student
must reason from the bare question (Magister et al., step 3).

Multitask ("distilling step-by-step", Hsieh et al. 2023): the same question twice, prefixed with
"[rationale]" (target: the rationale alone) and "[answer]" (target: "The answer is X."); at test
time the student is asked with the "[answer]" prefix.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from cotdistill.core.records import unencodable
from cotdistill.core.errors import UserError
from cotdistill.core.fileio import parse_json, read_text
from cotdistill.core.modes import COT, MODES, TRAINING_MODES
from cotdistill.core.tasks import EXEMPLAR_FILES, FINAL_ANSWER_PREFIX, final_answer_sentence, format_question
from cotdistill.core.sampling import Prompt, SamplingParams

STUDENT_SEPARATOR = " "
SINGLE_TASK_MODES = tuple(name for name in TRAINING_MODES if not MODES[name].multitask)  # one target: student_target
MULTITASK_PREFIXES = {"rationale": "[rationale] ", "answer": "[answer] "}


def student_input(question: str, choices: list[str] | None = None) -> str:
    """The student's prompt: the bare question (no exemplars, no hint)."""
    return f"Q: {format_question(question, choices)}\nA:"


def student_target(rationale: str, answer: str, answer_type: str, mode: str = COT) -> str:
    """What the student learns to write: CoT then the final-answer sentence, or the sentence alone."""
    sentence = final_answer_sentence(answer, answer_type)
    if mode not in SINGLE_TASK_MODES:
        raise ValueError(f"unknown student mode {mode!r}; expected one of {SINGLE_TASK_MODES}")
    if not MODES[mode].rationale:
        return sentence
    rationale = rationale.strip()
    return f"{rationale} {sentence}" if rationale else sentence


def multitask_input(task: str, question: str, choices: list[str] | None = None) -> str:
    """The student's prompt for one multitask task ("rationale" or "answer")."""
    return MULTITASK_PREFIXES[task] + student_input(question, choices)


def student_prompt(question: str, choices: list[str] | None, mode: str | None) -> str:
    """What a student trained in `mode` is asked at test time: a multitask student its "[answer]" task;
    any other (a name that is no mode too: a folder trained elsewhere) the bare question."""
    known = MODES.get(mode or "")
    return multitask_input("answer", question, choices) if known and known.multitask else student_input(question, choices)


def multitask_pairs(
    question: str, rationale: str, answer: str, answer_type: str, choices: list[str] | None = None
) -> list[tuple[str, str]]:
    """The two (input, target) training pairs one distilled example yields in multitask mode."""
    return [
        (multitask_input("rationale", question, choices), rationale.strip()),
        (multitask_input("answer", question, choices), final_answer_sentence(answer, answer_type)),
    ]


# ---------------------------------------------------------------- teacher prompts
#
# Magister et al.'s rationalisation prompt: 8 exemplars, and the gold answer written after the
# question and BEFORE the reasoning, in the exemplars and the query alike:
#
#     Q: <question>
#     Answer hint: 72
#     A: <reasoning> The answer is 72.
#
# The label "Answer hint" is deliberately plain: phrasings such as "Given answer:" invite the
# teacher to write "as given"; leaks that still happen are caught by filters.find_leak.
# Base models get this as one completion text; instruct models (teacher.chat) get it as chat
# turns (each exemplar a user/assistant pair) after a short system instruction.

HINT_LABEL = "Answer hint"
ZERO_SHOT_TRIGGER = "Let's think step by step."
# Base models run on into a new "Q:" after answering; stop there (chat models stop by themselves).
COMPLETION_STOP = ("\nQ:",)


@dataclass(frozen=True)
class Exemplar:
    question: str
    rationale: str  # the reasoning WITHOUT the final "The answer is X." sentence
    answer: str
    choices: list[str] | None = None


def system_instruction(hint: bool) -> str:
    """The chat system message: the answer format, and (with a hint) not to mention the hint."""
    text = f"Solve the problem step by step. End your reply with one sentence of the form \"{FINAL_ANSWER_PREFIX} X.\""
    if hint:
        text += (
            " Each problem comes with its correct answer as a hint. Write the reasoning that leads to"
            " that answer as if you had worked it out yourself; do not mention the hint."
        )
    return text


def _query(question: str, choices: list[str] | None, answer: str | None) -> str:
    text = f"Q: {format_question(question, choices)}"
    if answer is not None:
        text += f"\n{HINT_LABEL}: {answer}"
    return text


def _answer_text(ex: Exemplar, answer_type: str) -> str:
    return f"{ex.rationale.strip()} {final_answer_sentence(ex.answer, answer_type)}"


def build_teacher_prompt(
    question: str,
    answer_type: str,
    exemplars: list[Exemplar],
    *,
    chat: bool,
    choices: list[str] | None = None,
    hint: str | None = None,
    zero_shot: bool = False,
) -> Prompt:
    """The teacher's prompt for one question: chat messages when `chat`, else completion text.

    `hint` is the gold answer to write after the question (None: plain CoT prompt). With
    `zero_shot` the exemplars are ignored and the answer starts with "Let's think step by step."
    """
    shots = [] if zero_shot else exemplars
    with_hint = hint is not None
    if chat:
        messages: list[dict[str, str]] = [{"role": "system", "content": system_instruction(with_hint)}]
        for ex in shots:
            messages.append({"role": "user", "content": _query(ex.question, ex.choices, ex.answer if with_hint else None)})
            messages.append({"role": "assistant", "content": _answer_text(ex, answer_type)})
        user = _query(question, choices, hint)
        if zero_shot:
            user += f"\n{ZERO_SHOT_TRIGGER}"
        messages.append({"role": "user", "content": user})
        return messages
    blocks = [
        f"{_query(ex.question, ex.choices, ex.answer if with_hint else None)}\nA: {_answer_text(ex, answer_type)}"
        for ex in shots
    ]
    query = f"{_query(question, choices, hint)}\nA:"
    if zero_shot:
        # Without exemplars a base model has no example of the answer format: state it once.
        blocks.insert(0, system_instruction(with_hint))
        query += f" {ZERO_SHOT_TRIGGER}"
    return "\n\n".join(blocks + [query])


def prompt_hash(prompt: Prompt, params: SamplingParams) -> str:
    """sha256 of the rendered prompt and the sampling parameters: equal hash, equal request."""
    blob = json.dumps({"prompt": prompt, "params": params.to_dict()}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


# ---------------------------------------------------------------- exemplar files


def default_exemplars(answer_type: str) -> list[Exemplar]:
    """The project's own exemplars for an answer type (cotdistill/exemplars/<type>.json)."""
    name = EXEMPLAR_FILES[answer_type]
    text = resources.files("cotdistill").joinpath("exemplars", name).read_text(encoding="utf-8")
    return _exemplars_from_json(json.loads(text), f"cotdistill/exemplars/{name}")


def load_exemplars(path: str | Path) -> list[Exemplar]:
    """A user's exemplar file: a JSON list of {question, rationale, answer[, choices]}, or a text
    prompt of blank-line-separated blocks "Question: ... / reasoning lines / The answer is X."
    (chain-of-thought-hub's format; a "Let's think step by step" line is dropped)."""
    path = Path(path)
    text = read_text(path)
    if path.suffix.lower() == ".json":
        data = parse_json(text, str(path), fix="expected a list of {question, rationale, answer}")
        return _exemplars_from_json(data, str(path))
    return _exemplars_from_text(text, str(path))


def select_exemplars(answer_type: str, n_exemplars: int, path: str | Path | None = None) -> list[Exemplar]:
    """The first `n_exemplars` of the user's file `path`, or of the default set for the answer type."""
    pool = load_exemplars(path) if path else default_exemplars(answer_type)
    if n_exemplars < 0 or n_exemplars > len(pool):
        source = path or f"the default {answer_type} exemplars"
        raise UserError(f"--exemplars {n_exemplars}: {source} has {len(pool)}; choose 0..{len(pool)}")
    return pool[:n_exemplars]


_FINAL_RE = re.compile(rf"\s*{re.escape(FINAL_ANSWER_PREFIX)}\s+(?P<answer>.+?)\.?\s*$", re.IGNORECASE | re.DOTALL)


def _split_final(rationale: str) -> tuple[str, str | None]:
    """("reasoning", "X") from a rationale that ends with "The answer is X." (else answer None).

    Not answers.before_answer / extract_answer, on purpose: those read a model's output leniently
    ("Answer: X", "#### X", \\boxed{X}; the first such sentence wins, whatever follows), while an
    exemplar is written by a person in the project's own form (tasks.final_answer_sentence), and
    only its LAST sentence is that form: an exemplar whose reasoning says "the answer is the sum of
    ..." must keep that sentence, and a block that does not end in the form is an error to report."""
    lines = rationale.rstrip().splitlines()
    last = lines[-1] if lines else ""
    sentences = re.split(r"(?<=[.!?])\s+", last)
    m = _FINAL_RE.fullmatch(sentences[-1]) if sentences else None
    if not m:
        return rationale.strip(), None
    head = "\n".join(lines[:-1] + [" ".join(sentences[:-1])])
    return head.strip(), m.group("answer").strip()


def _exemplars_from_json(data: object, where: str) -> list[Exemplar]:
    if not isinstance(data, list) or not data:
        raise UserError(f"{where}: expected a non-empty JSON list of {{question, rationale, answer}}")
    out = []
    for i, item in enumerate(data):
        if not isinstance(item, dict) or not all(isinstance(item.get(k), str) for k in ("question", "rationale", "answer")):
            raise UserError(f"{where}: item {i} needs string fields question, rationale and answer")
        rationale, _ = _split_final(item["rationale"])  # tolerate a rationale that repeats the answer
        choices = item.get("choices")
        if choices is not None and not (isinstance(choices, list) and all(isinstance(c, str) for c in choices)):
            raise UserError(f"{where}: item {i}: choices must be a list of strings")
        problem = unencodable(item)
        if problem:
            raise UserError(f"{where}: item {i}: {problem}")
        out.append(Exemplar(item["question"].strip(), rationale, item["answer"].strip(), choices))
    return out


def _exemplars_from_text(text: str, where: str) -> list[Exemplar]:
    out = []
    for n, block in enumerate(b for b in re.split(r"\n\s*\n", text.strip()) if b.strip()):
        lines = [line.strip() for line in block.strip().splitlines() if line.strip()]
        q = re.match(r"(?:Question|Q)\s*:\s*(.*)", lines[0])
        body = [line for line in lines[1:] if not line.lower().startswith("let's think step by step")]
        reasoning, answer = _split_final(" ".join(body))
        if not q or answer is None:
            raise UserError(
                f"{where}: block {n + 1} must start with 'Question:' and end with 'The answer is X.'"
            )
        out.append(Exemplar(q.group(1).strip(), reasoning, answer))
    if not out:
        raise UserError(f"{where}: no exemplar blocks found")
    return out
