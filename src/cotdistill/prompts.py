"""Prompts: what the teacher is asked, and what the student reads and writes.

Student format (imported by training and evaluation; keep stable):

    input  = student_input(question, choices)          "Q: <question>\\nA:"
    target = student_target(rationale, answer, type, mode)
             mode "cot":          "<rationale> The answer is X."
             mode "answer_only":  "The answer is X."
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

from cotdistill.tasks import final_answer_sentence, format_question

STUDENT_SEPARATOR = " "
STUDENT_MODES = ("cot", "answer_only")
MULTITASK_PREFIXES = {"rationale": "[rationale] ", "answer": "[answer] "}


def student_input(question: str, choices: list[str] | None = None) -> str:
    """The student's prompt: the bare question (no exemplars, no hint)."""
    return f"Q: {format_question(question, choices)}\nA:"


def student_target(rationale: str, answer: str, answer_type: str, mode: str = "cot") -> str:
    """What the student learns to write: CoT then the final-answer sentence, or the sentence alone."""
    sentence = final_answer_sentence(answer, answer_type)
    if mode == "answer_only":
        return sentence
    if mode != "cot":
        raise ValueError(f"unknown student mode {mode!r}; expected one of {STUDENT_MODES}")
    rationale = rationale.strip()
    return f"{rationale} {sentence}" if rationale else sentence


def multitask_input(task: str, question: str, choices: list[str] | None = None) -> str:
    """The student's prompt for one multitask task ("rationale" or "answer")."""
    return MULTITASK_PREFIXES[task] + student_input(question, choices)


def multitask_pairs(
    question: str, rationale: str, answer: str, answer_type: str, choices: list[str] | None = None
) -> list[tuple[str, str]]:
    """The two (input, target) training pairs one distilled example yields in multitask mode."""
    return [
        (multitask_input("rationale", question, choices), rationale.strip()),
        (multitask_input("answer", question, choices), final_answer_sentence(answer, answer_type)),
    ]
