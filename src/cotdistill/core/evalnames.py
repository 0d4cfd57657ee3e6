"""Evaluation names: how the pipeline names what it scores, and how the reports read those names back.

A name is MODEL or MODEL.SPLIT, and names predictions/NAME.jsonl and the manifest stage evaluate:NAME:

    student-MODE        a student fine-tuned here in MODE (modes.py), on the run's test set
    student-few-shot    the student's base model, prompted few-shot (a baseline)
    teacher-few-shot    the teacher, prompted few-shot without the hint (a baseline)
    MODEL.dev           the same model on the dev split (settings are chosen on it)
    MODEL.TESTSET       the same model on an extra test set (data.extra_tests; no '.' in their names)

`cotdistill evaluate --name` takes any name; one the pipeline would not write parses too (MODEL is
then the part before the first '.').
"""

from __future__ import annotations

from dataclasses import dataclass, replace

DEV = "dev"  # the split settings are chosen on
_STUDENT = "student-"


@dataclass(frozen=True)
class EvalName:
    model: str  # student-MODE, student-few-shot, teacher-few-shot, or a name given to `cotdistill evaluate`
    split: str | None = None  # None: the run's test set; DEV; or an extra test set's name

    @classmethod
    def student(cls, mode: str) -> EvalName:
        """The student fine-tuned in `mode` (students/MODE)."""
        return cls(_STUDENT + mode)

    @classmethod
    def parse(cls, name: str) -> EvalName:
        model, dot, split = name.partition(".")
        return cls(model, split if dot else None)

    def __str__(self) -> str:
        return self.model if self.split is None else f"{self.model}.{self.split}"

    def on(self, split: str | None) -> EvalName:
        """The same model on another split or test set."""
        return replace(self, split=split)

    @property
    def test_set(self) -> str:
        """'test' (the run's own test set), 'dev' or an extra test set's name."""
        return "test" if self.split is None else self.split

    @property
    def student_mode(self) -> str | None:
        """The mode of a student fine-tuned here (student-cot: cot); None for the prompted baselines and
        names of other models."""
        if not self.model.startswith(_STUDENT) or self.model == STUDENT_FEW_SHOT.model:
            return None
        return self.model.removeprefix(_STUDENT)


STUDENT_FEW_SHOT = EvalName("student-few-shot")
TEACHER_FEW_SHOT = EvalName("teacher-few-shot")
