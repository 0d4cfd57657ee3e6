"""The teacher's prompts (the paper's hinted 8-shot format and its switches) and the student's format."""

from __future__ import annotations

import json

import pytest

from cotdistill.core.answers import extract_answer
from cotdistill.core.errors import UserError
from cotdistill.core.prompts import (
    HINT_LABEL,
    STUDENT_SEPARATOR,
    ZERO_SHOT_TRIGGER,
    Exemplar,
    build_teacher_prompt,
    default_exemplars,
    load_exemplars,
    multitask_input,
    multitask_pairs,
    prompt_hash,
    select_exemplars,
    student_input,
    student_target,
)
from cotdistill.core.sampling import SamplingParams

QUESTION = "Natalia sold clips to 48 of her friends in April, and then she sold half as many clips in May. How many clips did Natalia sell altogether?"


# ---------------------------------------------------------------- student format


def test_student_input_is_the_bare_question_in_q_a_form():
    assert student_input("How many apples?") == "Q: How many apples?\nA:"


def test_student_input_lists_choices_under_the_question():
    text = student_input("Where is milk kept?", ["oven", "fridge"])
    assert text == "Q: Where is milk kept?\nAnswer choices:\n(A) oven\n(B) fridge\nA:"


def test_student_target_cot_is_rationale_then_final_answer_sentence():
    assert student_target("48 / 2 = 24. 48 + 24 = 72.", "72", "number", "cot") == "48 / 2 = 24. 48 + 24 = 72. The answer is 72."


def test_student_target_answer_only_is_the_final_sentence_alone():
    assert student_target("48 / 2 = 24.", "72", "number", "answer-only") == "The answer is 72."


def test_student_target_is_read_back_by_the_answer_extractor():
    target = student_target("Heads, tails, heads.", "yes", "yes_no")
    assert extract_answer(target, "yes_no").value == "yes"


def test_student_target_rejects_an_unknown_mode():
    with pytest.raises(ValueError, match="unknown student mode"):
        student_target("r", "1", "number", "answer_only")


def test_multitask_pairs_prefix_the_question_with_the_task():
    (ri, rt), (ai, at) = multitask_pairs("How many?", " 2 + 2 = 4. ", "4", "number")
    assert (ri, rt) == ("[rationale] Q: How many?\nA:", "2 + 2 = 4.")
    assert (ai, at) == ("[answer] Q: How many?\nA:", "The answer is 4.")
    assert multitask_input("answer", "How many?") == ai


def test_causal_sequence_separator_is_one_space():
    assert student_input("q") + STUDENT_SEPARATOR + "The answer is 1." == "Q: q\nA: The answer is 1."


# ---------------------------------------------------------------- teacher prompts


def test_hinted_completion_prompt_puts_the_answer_before_the_reasoning_in_every_block():
    shots = default_exemplars("number")
    prompt = build_teacher_prompt(QUESTION, "number", shots, chat=False, hint="72")
    blocks = prompt.split("\n\n")
    assert len(blocks) == 9
    for block, ex in zip(blocks, shots):
        q, hint, a = block.split("\n")
        assert q == f"Q: {ex.question}"
        assert hint == f"{HINT_LABEL}: {ex.answer}"
        assert a.startswith("A: ") and a.endswith(f"The answer is {ex.answer}.")
    assert blocks[-1] == f"Q: {QUESTION}\n{HINT_LABEL}: 72\nA:"


def test_no_hint_prompt_has_no_answer_anywhere_before_the_reasoning():
    prompt = build_teacher_prompt(QUESTION, "number", default_exemplars("number"), chat=False, hint=None)
    assert HINT_LABEL not in prompt
    assert prompt.endswith(f"Q: {QUESTION}\nA:")


def test_chat_prompt_makes_each_exemplar_a_user_assistant_turn():
    shots = default_exemplars("number")[:3]
    messages = build_teacher_prompt(QUESTION, "number", shots, chat=True, hint="72")
    assert [m["role"] for m in messages] == ["system"] + ["user", "assistant"] * 3 + ["user"]
    assert "do not mention the hint" in messages[0]["content"]
    assert messages[1]["content"] == f"Q: {shots[0].question}\n{HINT_LABEL}: {shots[0].answer}"
    assert messages[2]["content"].endswith(f"The answer is {shots[0].answer}.")
    assert messages[-1]["content"] == f"Q: {QUESTION}\n{HINT_LABEL}: 72"


def test_hint_label_does_not_invite_the_words_as_given():
    prompt = build_teacher_prompt(QUESTION, "number", default_exemplars("number"), chat=False, hint="72")
    assert "given" not in prompt.lower()


def test_zero_shot_prompt_drops_exemplars_and_ends_with_the_trigger():
    prompt = build_teacher_prompt(QUESTION, "number", default_exemplars("number"), chat=False, hint="72", zero_shot=True)
    assert default_exemplars("number")[0].question not in prompt
    assert prompt.endswith(f"{HINT_LABEL}: 72\nA: {ZERO_SHOT_TRIGGER}")
    messages = build_teacher_prompt(QUESTION, "number", [], chat=True, hint=None, zero_shot=True)
    assert len(messages) == 2 and messages[-1]["content"].endswith(ZERO_SHOT_TRIGGER)


@pytest.mark.parametrize("answer_type", ["number", "yes_no", "choice", "text"])
def test_default_exemplars_are_eight_and_end_in_their_own_answer(answer_type):
    shots = default_exemplars(answer_type)
    assert len(shots) == 8
    for ex in shots:
        text = f"{ex.rationale} The answer is {ex.answer}."
        assert extract_answer(text, answer_type, ex.choices).value == extract_answer(f"The answer is {ex.answer}.", answer_type, ex.choices).value
        assert "The answer is" not in ex.rationale


def test_default_number_exemplars_derive_their_answer_in_the_last_step():
    from cotdistill.annotation.filters import underived_reason

    for ex in default_exemplars("number"):
        assert underived_reason(ex.rationale, ex.answer) is None, ex.rationale


def test_choice_exemplars_show_their_options():
    prompt = build_teacher_prompt("Q?", "choice", default_exemplars("choice")[:1], chat=False, hint="B", choices=["x", "y"])
    assert "(B) refrigerator" in prompt and "(B) y" in prompt


def test_number_of_exemplars_is_a_switch():
    shots = select_exemplars("number", 3)
    assert [e.question for e in shots] == [e.question for e in default_exemplars("number")[:3]]
    with pytest.raises(UserError, match="choose 0..8"):
        select_exemplars("number", 9)


def test_user_json_exemplars_load(shared_datasets):
    shots = load_exemplars(shared_datasets / "exemplars" / "wei2022_gsm8k_cot_exemplars.json")
    assert len(shots) == 8 and shots[0].answer == "6" and shots[0].rationale.endswith("21 - 15 = 6.")


def test_user_text_prompt_loads_like_the_json(shared_datasets):
    text = load_exemplars(shared_datasets / "exemplars" / "cot_hub_gsm8k_prompt_original.txt")
    js = load_exemplars(shared_datasets / "exemplars" / "wei2022_gsm8k_cot_exemplars.json")
    assert [(e.question, e.answer) for e in text] == [(e.question, e.answer) for e in js]
    assert text[0].rationale == js[0].rationale


def test_exemplar_rationale_that_repeats_the_answer_is_not_doubled(tmp_path):
    path = tmp_path / "ex.json"
    path.write_text(json.dumps([{"question": "1+1?", "rationale": "1 + 1 = 2. The answer is 2.", "answer": "2"}]))
    (ex,) = load_exemplars(path)
    assert ex.rationale == "1 + 1 = 2."


@pytest.mark.parametrize(
    "content, message",
    [
        ("{not json", "not valid JSON"),
        ('[{"question": "q", "answer": "1"}]', "item 0 needs string fields"),
        ("[]", "non-empty JSON list"),
    ],
)
def test_bad_exemplar_files_are_user_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "ex.json"
    path.write_text(content)
    with pytest.raises(UserError, match=message) as err:
        load_exemplars(path)
    assert str(path) in str(err.value)


def test_text_prompt_block_without_final_answer_is_a_user_error(tmp_path):
    path = tmp_path / "prompt.txt"
    path.write_text("Question: 1+1?\n1 + 1 = 2.\n")
    with pytest.raises(UserError, match="block 1"):
        load_exemplars(path)


def test_prompt_hash_changes_with_prompt_and_params_but_is_stable():
    p = build_teacher_prompt(QUESTION, "number", [Exemplar("q", "r", "1")], chat=False, hint="72")
    h = prompt_hash(p, SamplingParams())
    assert h == prompt_hash(p, SamplingParams()) and len(h) == 64
    assert h != prompt_hash(p, SamplingParams(temperature=0.7))
    assert h != prompt_hash(p + " ", SamplingParams())
