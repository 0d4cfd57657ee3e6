"""The normalised example record every stage exchanges, and JSON Lines input/output.

One record per question: {id, question, answer, answer_type, choices?, source}. `answer` is the gold
answer already normalised for its type (see answers.normalise), so later stages compare strings.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

from cotdistill.core.errors import UserError
from cotdistill.core.fileio import SURROGATE_RE, iter_lines, json_type, jsonl_line, parse_json, write_files_atomic

ANSWER_TYPES = ("number", "yes_no", "choice", "text")


def check_text_fields(where: str, question: Any, choices: Any) -> None:
    """The one type check of a record's text, whatever format it came from: the question is text,
    the choices (if any) a list of texts. Anything else (`question: {"x": 1}`, `choices: 5`,
    `choices: ["a", 1, null]`) is a UserError naming the record: the file is malformed, and
    turning the value into text (str()) would put "{'x': 1}" before the teacher as a question."""
    if not isinstance(question, str):
        raise UserError(f"{where}: the question must be text, got {json_type(question)}")
    if choices is None:
        return
    if not isinstance(choices, list):
        raise UserError(f"{where}: the choices must be a list of texts, got {json_type(choices)}")
    bad = next((i for i, c in enumerate(choices) if not isinstance(c, str)), None)
    if bad is not None:
        raise UserError(f"{where}: the choices must be a list of texts; choice {bad + 1} is {json_type(choices[bad])}")


def unencodable(fields: dict[str, Any]) -> str | None:
    """Why a record cannot be used, or None: a field (a text, a choice, a text inside meta) holding a
    lone surrogate (what a JSON "\\ud800" escape without its pair reads as), which is no character:
    neither UTF-8 files, the terminal, SQLite nor a tokenizer accepts it. Loading counts such a
    record as a skip."""
    for name, value in fields.items():
        found = _first_surrogate(value)
        if found:
            return f"{name} holds a lone surrogate (\\u{ord(found):04x}), which is not a character"
    return None


def _first_surrogate(value: Any) -> str | None:
    """The first surrogate in a text, or in any text inside a list or object (keys included)."""
    if isinstance(value, str):
        found = SURROGATE_RE.search(value)
        return found.group() if found else None
    items = [*value.keys(), *value.values()] if isinstance(value, dict) else value if isinstance(value, list) else []
    return next((s for s in map(_first_surrogate, items) if s), None)


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
        check_text_fields(where, d["question"], d.get("choices"))
        for key, value in (("id", d["id"]), ("answer", d["answer"]), ("source", d.get("source", ""))):
            if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                raise UserError(f"{where}: {key} must be text or a number, got {json_type(value)}")
        if not isinstance(d.get("meta") or {}, dict):
            raise UserError(f"{where}: meta must be an object, got {json_type(d['meta'])}")
        return cls(
            id=str(d["id"]),
            question=d["question"],
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
        obj = parse_json(line, f"{path}:{lineno}")
        if not isinstance(obj, dict):
            raise UserError(f"{path}:{lineno}: expected a JSON object, got {json_type(obj)}")
        yield lineno, obj


def read_jsonl(path: str | Path) -> list[dict[str, Any]]:
    return [obj for _, obj in iter_jsonl(path)]


def write_jsonl(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Write atomically (temp file + rename) so a crash never leaves a half-written output."""
    write_jsonl_files({path: rows})


def write_jsonl_files(files: Mapping[str | Path, Iterable[dict[str, Any]]]) -> None:
    """Several JSON Lines files as one set (a split's train, dev and test): every file is replaced,
    or, when any write fails (a full disk), none is (fileio.write_files_atomic)."""
    write_files_atomic({path: (jsonl_line(row).encode("utf-8") for row in rows) for path, rows in files.items()})


def read_examples(path: str | Path) -> list[Example]:
    """A normalised file as it was written (the run's data/*.jsonl, evaluate --data): a record that is
    not one is a UserError naming its line (`load_dataset` instead counts an unusable one as a skip)."""
    examples = []
    for n, obj in iter_jsonl(path):
        e = Example.from_dict(obj, f"{path}:{n}")
        problem = unencodable(e.to_dict())
        if problem:
            raise UserError(f"{path}:{n}: {problem}; fix or remove that record")
        examples.append(e)
    return examples


def check_unique_ids(examples: Iterable[Example], where: str) -> None:
    """A UserError naming `where` (the file, or what the examples are) when an id occurs more than
    once: predictions, cache keys and training rows are all keyed by id, so a repeated one would
    silently pair an answer with the wrong question. (load_dataset instead skips a repeat in a
    user's file and counts it, like any other unusable record.)"""
    ids = Counter(e.id for e in examples)
    dup = next((i for i, n in ids.items() if n > 1), None)
    if dup is not None:
        raise UserError(f"{where}: example id {dup!r} occurs {ids[dup]} times; ids must be unique")


def write_examples(path: str | Path, examples: Iterable[Example]) -> None:
    write_jsonl(path, example_rows(examples))


def example_rows(examples: Iterable[Example]) -> Iterator[dict[str, Any]]:
    """The rows a normalised file holds, for writing several with write_jsonl_files."""
    return (e.to_dict() for e in examples)
