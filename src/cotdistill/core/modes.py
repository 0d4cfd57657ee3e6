"""Student modes: what a student is trained on, hence what it writes and how it is asked. The one
definition of their names and of what each implies, for the config, training, evaluation, GGUF
export and the reports.

    cot          the teacher's rationale, then "The answer is X." (Magister et al. 2023)
    cot-k1       cot on each question's first teacher sample only: what one teacher call per question
                 would have given, the baseline for teacher.samples > 1 (Ho et al. 2023). A run's mode,
                 not a training one: training runs it as cot on distill-k1.jsonl
    answer-only  "The answer is X." alone: the baseline without a chain of thought
    multitask    rationale and answer as two tasks ("distilling step-by-step", Hsieh et al. 2023);
                 at test time the student is asked with the "[answer]" prefix

A run trains each of its `student.modes` into students/MODE and scores it as student-MODE
(evalnames.EvalName.student).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from cotdistill.core.errors import UserError

COT, COT_K1, ANSWER_ONLY, MULTITASK = "cot", "cot-k1", "answer-only", "multitask"


@dataclass(frozen=True)
class Mode:
    name: str
    method: str  # how reports describe a student trained so
    rationale: bool = True  # trained on the teacher's rationale (distill.jsonl must hold it), so it writes one
    multitask: bool = False  # two tasks per question, each with its prefix (prompts.MULTITASK_PREFIXES)
    first_sample_only: bool = False  # cot on each question's first teacher sample only (pipeline.first_samples)
    baseline: bool = False  # a point of comparison for the CoT students, not a method under test

    @property
    def training_mode(self) -> str:
        """The mode training runs (`train --mode`, train_config.json): cot-k1 is cot on other data."""
        return COT if self.first_sample_only else self.name


# In this order in the config's error message (`Input should be 'cot', 'cot-k1', ...`).
MODES: dict[str, Mode] = {m.name: m for m in (
    Mode(COT, "fine-tuned on teacher CoT"),
    Mode(COT_K1, "fine-tuned on teacher CoT, 1 sample per question", first_sample_only=True, baseline=True),
    Mode(ANSWER_ONLY, "fine-tuned on answers only", rationale=False, baseline=True),
    Mode(MULTITASK, "fine-tuned multitask (rationale + answer)", multitask=True),
)}

# The type of config.StudentConfig.modes: pydantic checks a mode against these names.
StudentMode = Literal[tuple(MODES)]  # type: ignore[valid-type]

# What `cotdistill train --mode` and training.train.TrainConfig.mode take.
TRAINING_MODES = tuple(name for name, m in MODES.items() if m.training_mode == name)


def normalise_mode(mode: str) -> str:
    """A training mode, accepting "answer_only" as well as "answer-only"."""
    mode = mode.replace("_", "-")
    if mode not in TRAINING_MODES:
        raise UserError(f"unknown training mode {mode!r}; expected one of {', '.join(TRAINING_MODES)}")
    return mode
