"""What the filters can say about a teacher's CoT: the verdict names annotations.jsonl holds (in the
order the yield table lists them), and the hint check in one sentence. The annotation stage writes
them, the report reads them: they live here so that neither imports the other."""

from __future__ import annotations

from typing import Any

VERDICTS = ("kept", "prompt_too_long", "wrong", "unparsed", "truncated", "leak", "underived", "false_step", "duplicate", "over_cap",
            "too_long", "hint_dependent")


def hint_check_line(check: dict[str, Any]) -> str:
    """The hint check in one sentence (the yield table's footnote, here and in the report)."""
    share = f" ({100 * check['passed_hint_dependent'] / check['passed']:.1f} %)" if check["passed"] else ""
    return (f"Hint-dependent: {check['passed_hint_dependent']} of the {check['passed']} CoTs that passed the filters{share} "
            f"are of questions the teacher answers wrongly without the hint; it answers {check['right_unhinted']} of "
            f"{check['questions']} right unhinted")
