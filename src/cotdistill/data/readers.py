"""One reader per dataset family, each reading the authors' own file format.

A reader yields `Raw` records (the gold answer still as the file writes it) or `Skip`s (a record
deliberately left out, with the reason). `datasets.load_dataset` normalises the gold answers, so
every family shares one rule: a gold answer that cannot be read is a counted, reported skip, while
a malformed FILE (bad JSON, a missing required field) is a `UserError` naming file, line or record,
and what was expected. A dataset is either read faithfully or not at all.
"""

from __future__ import annotations

import csv
import io
import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Iterator

from cotdistill.core.answers import format_number, normalise
from cotdistill.core.errors import UserError
from cotdistill.core.records import ANSWER_TYPES, Example, iter_jsonl
from cotdistill.core.fileio import parse_json, read_text


@dataclass
class Raw:
    """A record as read from the file: the gold `answer` is not normalised yet."""

    where: str  # "file:line" or "file: record N", for messages
    source: str
    id: str  # "<source>-<original id or record index>"
    question: Any  # text, and choices a list of texts, once load._collect has checked them
    answer: Any
    answer_type: str
    choices: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Skip:
    where: str
    reason: str


# ---------------------------------------------------------------- helpers


def read_json(path: Path) -> Any:
    """A whole JSON document; what cannot be read is a UserError naming the file (fileio.parse_json)."""
    return parse_json(read_text(path), str(path))


def require(rec: Any, key: str, where: str, expected: str) -> Any:
    """rec[key], or a UserError naming the record and what the format expects there."""
    if not isinstance(rec, dict):
        raise UserError(f"{where}: expected a JSON object ({expected}), got {type(rec).__name__}")
    if key not in rec or rec[key] is None:
        raise UserError(f"{where}: missing field '{key}' (expected {expected})")
    return rec[key]


def _json_list(path: Path, what: str) -> list[Any]:
    data = read_json(path)
    if not isinstance(data, list):
        raise UserError(f"{path}: expected a JSON list of {what}, got a JSON {type(data).__name__}")
    return data


def _json_examples(path: Path, what: str) -> list[Any]:
    """The list under "examples" (coin flip, last letters, BIG-bench tasks)."""
    data = read_json(path)
    if not isinstance(data, dict) or not isinstance(data.get("examples"), list):
        raise UserError(f'{path}: expected a JSON object {{"examples": [...]}} of {what}')
    return data["examples"]


def _text(value: Any, where: str, key: str) -> str:
    if not isinstance(value, str):
        raise UserError(f"{where}: field '{key}' must be text, got {type(value).__name__}")
    return value.strip()


# ---------------------------------------------------------------- the authors' formats


def read_gsm8k(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """GSM8K jsonl: the gold answer is the text after the last '#### ' of `answer`."""
    for index, (lineno, rec) in enumerate(iter_jsonl(path)):
        where = f"{path}:{lineno}"
        question = _text(require(rec, "question", where, "the problem text"), where, "question")
        solution = _text(require(rec, "answer", where, "a solution ending in '#### N'"), where, "answer")
        if "####" not in solution:
            yield Skip(where, "solution has no '#### N' final answer")
            continue
        gold = solution.rsplit("####", 1)[1].strip()
        yield Raw(where, "gsm8k", f"gsm8k-{index}", question, gold, "number", meta={"solution": solution})


def _mawps_json_source(records: list[Any]) -> str:
    """Which component of MAWPS a sQuestion/lSolutions file is, from its fields."""
    first = records[0] if records and isinstance(records[0], dict) else {}
    if "lAlignments" in first:
        return "multiarith"
    if "grammarCheck" in first or "templateNumber" in first:
        return "singleeq"
    if first.get("lSolutions") and isinstance(first["lSolutions"][0], str):
        return "addsub"
    return "mawps"


def read_mawps_json(path: Path, mapping: dict | None = None, *, source: str | None = None) -> Iterator[Raw | Skip]:
    """MultiArith / AddSub / SingleEq: a JSON list of {iIndex, sQuestion, lSolutions: [answer]}."""
    records = _json_list(path, "problems with sQuestion and lSolutions")
    source = source or _mawps_json_source(records)
    for i, rec in enumerate(records):
        where = f"{path}: record {i + 1}"
        question = _text(require(rec, "sQuestion", where, "the problem text"), where, "sQuestion")
        solutions = require(rec, "lSolutions", where, "a list with the gold answer")
        if not isinstance(solutions, list) or len(solutions) != 1:
            yield Skip(where, f"lSolutions should hold exactly one answer, got {solutions!r}")
            continue
        meta = {"equations": rec["lEquations"]} if "lEquations" in rec else {}
        yield Raw(where, source, f"{source}-{rec.get('iIndex', i)}", question, solutions[0], "number", meta=meta)


def read_svamp(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """SVAMP: a JSON list of {ID, Body, Question, Equation, Answer, Type}; question = Body + Question."""
    for i, rec in enumerate(_json_list(path, "SVAMP problems")):
        where = f"{path}: record {i + 1}"
        body = _text(require(rec, "Body", where, "the problem's facts"), where, "Body")
        ask = _text(require(rec, "Question", where, "the question sentence"), where, "Question")
        answer = require(rec, "Answer", where, "the numeric answer")
        meta = {k.lower(): rec[k] for k in ("Equation", "Type") if k in rec}
        yield Raw(where, "svamp", f"svamp-{rec.get('ID', i)}", f"{body} {ask}", answer, "number", meta=meta)


def _asdiv_answer(raw: str) -> tuple[str, str]:
    """(answer text, answer type) of an ASDiv <Answer>: "9 (apples)" is the number 9.

    Answers that are not one number ("3:30", "Sam", "5 (cups); 3 (cups)") are kept as text, and
    "yes"/"no" as yes_no, so `data stats` counts them instead of losing them.
    """
    value = re.sub(r"\s+", " ", re.sub(r"\([^)]*\)", "", raw)).strip().replace(" ;", ";")
    if normalise(value, "number") is not None:
        return value, "number"
    if value.lower() in ("yes", "no"):
        return value, "yes_no"
    return value, "text"


def read_asdiv(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """ASDiv.xml: <Problem ID=..><Body/><Question/><Solution-Type/><Answer>9 (apples)</Answer>."""
    try:
        root = ET.parse(path).getroot()
    except ET.ParseError as e:
        line, col = e.position
        raise UserError(f"{path}:{line}:{col}: not valid XML ({str(e).split(': line')[0]})") from None
    problems = list(root.iter("Problem"))
    if not problems:
        raise UserError(f"{path}: no <Problem> elements (expected ASDiv's <Problem ID=...> records)")
    for i, problem in enumerate(problems):
        pid = problem.get("ID", str(i))
        where = f"{path}: Problem {pid}"
        fields = {}
        for tag in ("Body", "Question", "Answer"):
            node = problem.find(tag)
            if node is None or node.text is None:
                raise UserError(f"{where}: missing <{tag}> (expected Body, Question and Answer)")
            fields[tag] = node.text.strip()
        answer, answer_type = _asdiv_answer(fields["Answer"])
        if not answer:
            yield Skip(where, f"empty answer {fields['Answer']!r}")
            continue
        kind, formula = problem.find("Solution-Type"), problem.find("Formula")
        meta = {
            "raw_answer": fields["Answer"],
            "solution_type": kind.text.strip() if kind is not None and kind.text else None,
            "formula": formula.text.strip() if formula is not None and formula.text else None,
            "grade": problem.get("Grade"),
        }
        question = f"{fields['Body']} {fields['Question']}"
        yield Raw(where, "asdiv", f"asdiv-{pid}", question, answer, answer_type, meta=meta)


PLACEHOLDER_RE = re.compile(r"\bnumber(\d+)\b")


def read_mawps_csv(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """MAWPS as csv (the SVAMP authors' copy): `numberK` placeholders filled from `Numbers`."""
    with io.StringIO(read_text(path), newline="") as f:
        reader = csv.DictReader(f)
        missing = {"Question", "Numbers", "Answer"} - set(reader.fieldnames or [])
        if missing:
            raise UserError(f"{path}:1: missing column(s) {', '.join(sorted(missing))} (expected MAWPS csv header)")
        for i, row in enumerate(reader):
            where = f"{path}:{reader.line_num}"
            try:
                numbers = [format_number(float(x)) for x in (row["Numbers"] or "").split()]
            except ValueError:
                yield Skip(where, f"Numbers column {row['Numbers']!r} is not space-separated numbers")
                continue
            unknown = [int(k) for k in PLACEHOLDER_RE.findall(row["Question"] or "") if int(k) >= len(numbers)]
            if unknown:
                yield Skip(where, f"placeholder number{unknown[0]} has no value in Numbers {row['Numbers']!r}")
                continue
            question = PLACEHOLDER_RE.sub(lambda m, nums=numbers: nums[int(m.group(1))], row["Question"]).strip()
            meta = {"equation": row["Equation"]} if row.get("Equation") else {}
            yield Raw(where, "mawps", f"mawps-{i}", question, row["Answer"], "number", meta=meta)


OPTION_PREFIX_RE = re.compile(r"^\s*\(?([A-E])\s*\)\s*")


def read_aqua(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """AQuA-RAT jsonl: {question, options: ["A)21", ...], rationale, correct: "A"}."""
    for index, (lineno, rec) in enumerate(iter_jsonl(path)):
        where = f"{path}:{lineno}"
        question = _text(require(rec, "question", where, "the problem text"), where, "question")
        options = require(rec, "options", where, 'a list like ["A)21", "B)22", ...]')
        correct = require(rec, "correct", where, "the letter of the correct option")
        if not isinstance(options, list) or not all(isinstance(o, str) and OPTION_PREFIX_RE.match(o) for o in options):
            raise UserError(f'{where}: options must be a list like ["A)21", "B)22", ...], got {options!r}')
        choices = [OPTION_PREFIX_RE.sub("", o).strip() for o in options]
        if str(correct).strip().upper() not in [chr(65 + k) for k in range(len(choices))]:
            yield Skip(where, f"correct option {correct!r} is not one of the {len(choices)} options")
            continue
        meta = {"rationale": rec["rationale"]} if "rationale" in rec else {}
        yield Raw(where, "aqua", f"aqua-{index}", question, correct, "choice", choices, meta)


def _unlabelled(where: str, key: str) -> UserError:
    return UserError(
        f"{where}: no gold answer ('{key}' is missing): this looks like an unlabelled test split; "
        "cotdistill needs gold answers, so use a labelled split (e.g. the dev split) instead"
    )


def read_strategyqa(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """StrategyQA (original release): a JSON list of {qid, question, answer: true/false, facts, ...}."""
    for i, rec in enumerate(_json_list(path, "StrategyQA questions")):
        where = f"{path}: record {i + 1}"
        question = _text(require(rec, "question", where, "the question"), where, "question")
        if "answer" not in rec:
            raise _unlabelled(where, "answer")
        if not isinstance(rec["answer"], bool):
            yield Skip(where, f"answer {rec['answer']!r} is not true or false")
            continue
        meta = {k: rec[k] for k in ("facts", "decomposition", "term") if k in rec}
        answer = "yes" if rec["answer"] else "no"
        yield Raw(where, "strategyqa", f"strategyqa-{rec.get('qid', i)}", question, answer, "yes_no", meta=meta)


def read_strategyqa_bigbench(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """StrategyQA as a BIG-bench task.json: examples[] of {input, target_scores: {"Yes": 1, "No": 0}}."""
    for i, rec in enumerate(_json_examples(path, "BIG-bench examples with input and target_scores")):
        where = f"{path}: example {i + 1}"
        question = _text(require(rec, "input", where, "the question"), where, "input")
        scores = require(rec, "target_scores", where, '{"Yes": 1, "No": 0}')
        scores = {str(k).strip().lower(): v for k, v in scores.items()} if isinstance(scores, dict) else {}
        numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores.values())
        if set(scores) != {"yes", "no"} or not numeric or scores["yes"] == scores["no"]:
            yield Skip(where, f"target_scores {rec['target_scores']!r} are not number scores that pick one of Yes/No")
            continue
        answer = "yes" if scores["yes"] > scores["no"] else "no"
        meta = {"target": rec["target"]} if "target" in rec else {}
        yield Raw(where, "strategyqa", f"strategyqa-{i}", question, answer, "yes_no", meta=meta)


def read_commonsenseqa(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """CommonsenseQA jsonl: {id, question: {stem, choices: [{label, text}]}, answerKey}."""
    for index, (lineno, rec) in enumerate(iter_jsonl(path)):
        where = f"{path}:{lineno}"
        q = require(rec, "question", where, "an object with stem and choices")
        stem = _text(require(q, "stem", where, "the question text"), where, "question.stem")
        options = require(q, "choices", where, "a list of {label, text}")
        try:
            options = sorted(options, key=lambda c: c["label"])
            choices = [c["text"] for c in options]  # checked as texts with every format's (load._collect)
        except (TypeError, KeyError):
            raise UserError(f"{where}: question.choices must be a list of {{label, text}} objects") from None
        if "answerKey" not in rec:
            raise _unlabelled(where, "answerKey")
        yield Raw(where, "commonsenseqa", f"commonsenseqa-{rec.get('id', index)}", stem, rec["answerKey"], "choice", choices)


def read_examples_json(path: Path, mapping: dict | None = None, *, source: str, answer_type: str) -> Iterator[Raw | Skip]:
    """Coin flip and last letters (Kojima et al.): {"examples": [{question, answer}]}."""
    for i, rec in enumerate(_json_examples(path, "examples with question and answer")):
        where = f"{path}: example {i + 1}"
        question = _text(require(rec, "question", where, "the question"), where, "question")
        yield Raw(where, source, f"{source}-{i}", question, require(rec, "answer", where, "the gold answer"), answer_type)


def read_normalised(path: Path, mapping: dict | None = None) -> Iterator[Raw | Skip]:
    """cotdistill's own normalised jsonl (`data prepare`, run dirs): read back as it was written."""
    for lineno, rec in iter_jsonl(path):
        e = Example.from_dict(rec, f"{path}:{lineno}")
        yield Raw(f"{path}:{lineno}", e.source, e.id, e.question, e.answer, e.answer_type, e.choices, e.meta)


# ---------------------------------------------------------------- generic files with a field mapping

MAPPING_KEYS = ("question", "answer", "answer_type", "id", "choices", "source", "config")


def check_mapping(mapping: dict[str, Any] | None, what: str) -> dict[str, Any]:
    """A field mapping must name the question and answer fields and the answer type."""
    mapping = dict(mapping or {})
    unknown = sorted(set(mapping) - set(MAPPING_KEYS))
    if unknown:
        raise UserError(f"unknown mapping key(s) {', '.join(unknown)}; allowed: {', '.join(MAPPING_KEYS)}")
    missing = [k for k in ("question", "answer", "answer_type") if not mapping.get(k)]
    if missing:
        raise UserError(
            f"{what} needs a field mapping with {', '.join(missing)}: e.g. --map question=problem "
            "--map answer=solution --map answer_type=number (optional: id, choices, source)"
        )
    if mapping["answer_type"] not in ANSWER_TYPES:
        raise UserError(f"answer_type {mapping['answer_type']!r} is not one of {', '.join(ANSWER_TYPES)}")
    return mapping


def _lookup(rec: dict[str, Any], dotted: str) -> Any:
    """rec["a"]["b"] for "a.b", so nested fields (question.stem, choices.text) can be mapped."""
    value: Any = rec
    for part in dotted.split("."):
        if not isinstance(value, dict) or part not in value:
            return None
        value = value[part]
    return value


def map_record(rec: Any, mapping: dict[str, Any], where: str, index: int, source: str) -> Raw | Skip:
    """One generic record (jsonl line, csv row, parquet or hub row) through the field mapping."""
    if not isinstance(rec, dict):
        raise UserError(f"{where}: expected an object with fields, got {type(rec).__name__}")
    question, answer = _lookup(rec, mapping["question"]), _lookup(rec, mapping["answer"])
    for key, value in (("question", question), ("answer", answer)):
        if value is None:
            raise UserError(f"{where}: missing field '{mapping[key]}' (mapped as the {key}); fields: {', '.join(rec)}")
        if isinstance(value, str) and not value.strip():
            return Skip(where, f"empty {key} in field '{mapping[key]}'")
    answer_type = mapping["answer_type"]
    if answer_type == "number" and isinstance(answer, str) and "####" in answer:
        answer = answer.rsplit("####", 1)[1].strip()  # GSM8K-style solutions, e.g. on the hub
    choices = _lookup(rec, mapping["choices"]) if mapping.get("choices") else None
    if isinstance(choices, str):
        choices = [c.strip() for c in choices.split("|")]
    if isinstance(choices, list):  # [{label, text}] as on the hub; the texts are checked with every format's
        choices = [c.get("text") if isinstance(c, dict) else c for c in choices] or None
    rec_id = _lookup(rec, mapping["id"]) if mapping.get("id") else None
    source = mapping.get("source") or source
    rec_id = f"{source}-{index if rec_id is None else rec_id}"
    return Raw(where, source, rec_id, question, answer, answer_type, choices)


def _generic_rows(path: Path, kind: str) -> Iterator[tuple[str, dict[str, Any]]]:
    if kind == "csv":
        with io.StringIO(read_text(path), newline="") as f:
            reader = csv.DictReader(f)
            for row in reader:
                yield f"{path}:{reader.line_num}", row
    elif kind == "parquet":
        import pyarrow.parquet as pq

        try:
            table = pq.ParquetFile(path)
        except Exception as e:
            raise UserError(f"{path}: not a readable parquet file ({e})") from None
        n = 0
        for batch in table.iter_batches(batch_size=1024):
            for row in batch.to_pylist():
                n += 1
                yield f"{path}: row {n}", row
    else:
        for lineno, rec in iter_jsonl(path):
            yield f"{path}:{lineno}", rec


def read_generic(path: Path, mapping: dict | None = None, *, kind: str) -> Iterator[Raw | Skip]:
    """Any jsonl / csv / parquet file (`kind`), read through a field mapping."""
    mapping = check_mapping(mapping, f"{path} (a generic {kind} file)")
    for index, (where, rec) in enumerate(_generic_rows(path, kind)):
        yield map_record(rec, mapping, where, index, source=path.stem)


def read_records(records: Iterable[Any], mapping: dict[str, Any], name: str) -> Iterator[Raw | Skip]:
    """Rows from any iterable (a Hugging Face dataset) through a field mapping."""
    for index, rec in enumerate(records):
        yield map_record(rec, mapping, f"{name} row {index + 1}", index, source=name.split("/")[-1].split(":")[0])
