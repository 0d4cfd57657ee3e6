"""Student modes and evaluation names are defined once (modes.py, evalnames.py): the config, training
and evaluation take the same modes, and every name the pipeline writes parses back to what built it."""

from __future__ import annotations

import pytest

from cotdistill.core.config import StudentConfig
from cotdistill.core.errors import UserError
from cotdistill.core.evalnames import DEV, STUDENT_FEW_SHOT, TEACHER_FEW_SHOT, EvalName
from cotdistill.core.modes import MODES, TRAINING_MODES, normalise_mode
from cotdistill.core.prompts import student_prompt


def test_the_config_takes_every_mode_and_training_every_mode_but_the_run_level_one():
    assert StudentConfig(modes=list(MODES)).modes == ["cot", "cot-k1", "answer-only", "multitask"]
    assert TRAINING_MODES == ("cot", "answer-only", "multitask")
    assert MODES["cot-k1"].training_mode == "cot"
    assert normalise_mode("answer_only") == "answer-only"
    with pytest.raises(UserError, match="unknown training mode 'cot-k1'; expected one of cot, answer-only, multitask"):
        normalise_mode("cot-k1")


def test_only_a_multitask_student_is_asked_with_its_task_prefix():
    assert student_prompt("How many?", None, "multitask") == "[answer] Q: How many?\nA:"
    for mode in ("cot", "cot-k1", "answer-only", "a-folder-trained-elsewhere", None):
        assert student_prompt("How many?", None, mode) == "Q: How many?\nA:"


@pytest.mark.parametrize("text", ["student-cot", "student-cot-k1.dev", "student-answer-only.svamp", "student-few-shot",
                                  "teacher-few-shot.dev", "sc", "my.run.v2", "odd."])
def test_every_name_parses_back_to_itself(text):
    assert str(EvalName.parse(text)) == text


def test_a_name_says_its_model_test_set_and_student_mode():
    assert str(EvalName.student("cot").on(DEV)) == "student-cot.dev"
    assert str(TEACHER_FEW_SHOT.on(DEV)) == "teacher-few-shot.dev" and str(STUDENT_FEW_SHOT) == "student-few-shot"
    svamp = EvalName.parse("student-multitask.svamp")
    assert (svamp.model, svamp.test_set, svamp.student_mode) == ("student-multitask", "svamp", "multitask")
    assert EvalName.parse("student-cot").test_set == "test" and EvalName.parse("student-cot.dev").on(None) == EvalName.student("cot")
    assert [EvalName.parse(n).student_mode for n in ("student-few-shot.dev", "teacher-few-shot", "cot")] == [None, None, None]
