"""The normalised example record every stage exchanges, and JSON Lines input/output.

One record per question: {id, question, answer, answer_type, choices?, source}. `answer` is the gold
answer already normalised for its type (see answers.normalise), so later stages compare strings.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cotdistill.errors import UserError
from cotdistill.fileio import iter_lines, write_lines_atomic

ANSWER_TYPES = ("number", "yes_no", "choice", "text")


@dataclass
class Example:
    id: str
    question: str
    answer: str
    answer_type: str
    source: str
    choices: list[str] | None = None
    # Extra, loader-specific facts (e.g. a gsm_symbolic template id); never needed by later stages.
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.answer_type not in ANSWER_TYPES:
            raise ValueError(f"answer_type must be one of {ANSWER_TYPES}, got {self.answer_type!r}")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if d["choices"] is None:
            del d["choices"]
        if not d["meta"]:
            del d["meta"]
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "record") -> "Example":
        missing = [k for k in ("id", "question", "answer", "answer_type") if k not in d]
        if missing:
            raise UserError(f"{where}: missing field(s) {', '.join(missing)} in a normalised example")
        if d["answer_type"] not in ANSWER_TYPES:
            raise UserError(
                f"{where}: answer_type {d['answer_type']!r} is not one of {', '.join(ANSWER_TYPES)}"
            )
        return cls(
            id=str(d["id"]),
            question=str(d["question"]),
            answer=str(d["answer"]),
            answer_type=d["answer_type"],
            source=str(d.get("source", "")),
            choices=d.get("choices"),
            meta=d.get("meta") or {},
        )


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield (line number, object) for each non-blank line; a bad line raises a UserError naming it."""
    for lineno, line in iter_lines(path):
        if not line.strip():
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise UserError(f"{path}:{lineno}: not valid JSON ({e.msg}); expected one JSON object per line") from None
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {type(obj).__name__}")
        yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def read_jsonl_tolerant(path: str | Path) -> list[dict[str, Any]]:
    """Read an append-only log written by us; a torn last line (process killed mid-write) is dropped."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    with path.open(encoding="utf-8") as f:
        for line in f:
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return out


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written output."""
    write_lines_atomic(path, (json.dumps(row, ensure_ascii=False) + "\n" for row in rows))


def read_examples(path: str | Path) -> list[Example]:
    return [Example.from_dict(obj, f"{path}:{n}") for n, obj in iter_jsonl(path)]


def write_examples(path: str | Path, examples: Iterable[Example]) -> None:
    write_jsonl(path, (e.to_dict() for e in examples))
