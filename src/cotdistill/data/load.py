"""Load any supported dataset into normalised `Example`s: one entry point, `load_dataset`.

`load_dataset(path_or_name)` sniffs the format (`detect_format`) unless told, reads the file with
that family's reader (readers.py), normalises every gold answer for its type, and returns a
`LoadResult` that also lists every record it deliberately left out and why, so no record is lost
silently. Hugging Face hub names are loaded with `datasets.load_dataset` (needs internet).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, Callable, Iterable

from cotdistill.core.answers import normalise
from cotdistill.core.errors import UserError
from cotdistill.core.progress import console
from cotdistill.core.records import Example, check_text_fields, unencodable
from cotdistill.core.fileio import decode_utf8, first_jsonl_line, input_file, parse_json
from cotdistill.data.readers import (
    Raw,
    Skip,
    check_mapping,
    read_aqua,
    read_asdiv,
    read_commonsenseqa,
    read_examples_json,
    read_generic,
    read_gsm8k,
    read_json,
    read_mawps_csv,
    read_mawps_json,
    read_normalised,
    read_records,
    read_strategyqa,
    read_strategyqa_bigbench,
    read_svamp,
)

Reader = Callable[[Path, "dict[str, Any] | None"], Iterable["Raw | Skip"]]


@dataclass(frozen=True)
class Format:
    reader: Reader | None  # None for "hf": hub rows are read in `_hub_rows`
    description: str


FORMATS: dict[str, Format] = {
    "gsm8k": Format(read_gsm8k, "GSM8K jsonl: question, answer ending in '#### N'"),
    "mawps_json": Format(read_mawps_json, "MultiArith/AddSub/SingleEq JSON list: sQuestion, lSolutions"),
    "multiarith": Format(partial(read_mawps_json, source="multiarith"), "MultiArith.json (mawps_json)"),
    "addsub": Format(partial(read_mawps_json, source="addsub"), "AddSub.json (mawps_json)"),
    "singleeq": Format(partial(read_mawps_json, source="singleeq"), "SingleEq questions.json (mawps_json)"),
    "svamp": Format(read_svamp, "SVAMP JSON list: Body, Question, Answer"),
    "asdiv": Format(read_asdiv, "ASDiv.xml: <Problem> with Body, Question, Answer"),
    "mawps_csv": Format(read_mawps_csv, "MAWPS csv: Question with numberK placeholders, Numbers, Answer"),
    "aqua": Format(read_aqua, "AQuA-RAT jsonl: question, options ['A)..'], correct"),
    "strategyqa": Format(read_strategyqa, "StrategyQA JSON list: question, answer true/false"),
    "strategyqa_bigbench": Format(read_strategyqa_bigbench, "BIG-bench task.json: examples[].input, target_scores"),
    "commonsenseqa": Format(read_commonsenseqa, "CommonsenseQA jsonl: question.stem, question.choices, answerKey"),
    "coin_flip": Format(partial(read_examples_json, source="coin_flip", answer_type="yes_no"),
                        'Kojima coin flip: {"examples": [{question, answer: yes/no}]}'),
    "last_letters": Format(partial(read_examples_json, source="last_letters", answer_type="text"),
                           'Kojima last letters: {"examples": [{question, answer}]}'),
    "examples": Format(read_normalised, "cotdistill's normalised jsonl: id, question, answer, answer_type"),
    "jsonl": Format(partial(read_generic, kind="jsonl"), "any jsonl, with a field mapping"),
    "csv": Format(partial(read_generic, kind="csv"), "any csv, with a field mapping"),
    "parquet": Format(partial(read_generic, kind="parquet"), "any parquet file, with a field mapping"),
    "hf": Format(None, "a Hugging Face hub dataset name (owner/name[:config]), with a field mapping"),
}
GENERIC_FORMATS = ("jsonl", "csv", "parquet")

# Field mappings for well-known hub datasets, so `load_dataset("openai/gsm8k")` needs no mapping.
HUB_PRESETS: dict[str, dict[str, str]] = {
    "openai/gsm8k": {"config": "main", "question": "question", "answer": "answer", "answer_type": "number", "source": "gsm8k"},
    "tau/commonsense_qa": {"question": "question", "answer": "answerKey", "answer_type": "choice",
                           "choices": "choices.text", "id": "id", "source": "commonsenseqa"},
}


@dataclass
class LoadResult:
    """What a load produced: the examples, the format used, and every record left out, with why."""

    examples: list[Example]
    format: str
    skipped: list[tuple[str, str]] = field(default_factory=list)
    path: str = ""

    def answer_types(self) -> Counter[str]:
        return Counter(e.answer_type for e in self.examples)

    def skip_summary(self) -> list[tuple[str, int, str]]:
        """(reason, count, where first seen), most frequent first. Quoted values are blanked out so
        that "gold answer 'x' ..." and "gold answer 'y' ..." count as one reason; a reason seen
        once is shown whole."""
        counts: Counter[str] = Counter()
        first: dict[str, tuple[str, str]] = {}
        for where, reason in self.skipped:
            kind = re.sub(r"'[^']*'|\"[^\"]*\"", "…", reason)
            counts[kind] += 1
            first.setdefault(kind, (where, reason))
        return [(first[k][1] if n == 1 else k, n, first[k][0]) for k, n in counts.most_common()]


def format_names() -> str:
    return ", ".join(FORMATS)


# ---------------------------------------------------------------- format detection


def _cannot_tell(path: Path, detail: str) -> UserError:
    return UserError(
        f"{path}: cannot tell the dataset format ({detail}); pass --format NAME, one of: {format_names()} "
        "(generic jsonl/csv/parquet also need a field mapping)"
    )


def _classify_record(rec: Any) -> str | None:
    """The format a JSON record belongs to, from its fields."""
    if not isinstance(rec, dict):
        return None
    if {"id", "question", "answer", "answer_type"} <= set(rec):
        return "examples"
    if "sQuestion" in rec and "lSolutions" in rec:
        return "mawps_json"
    if {"Body", "Question", "Answer"} <= set(rec):
        return "svamp"
    if "options" in rec and "correct" in rec:
        return "aqua"
    if isinstance(rec.get("question"), dict) and "stem" in rec["question"]:
        return "commonsenseqa"
    if isinstance(rec.get("question"), str) and isinstance(rec.get("answer"), str) and "####" in rec["answer"]:
        return "gsm8k"
    if isinstance(rec.get("question"), str) and ("qid" in rec or isinstance(rec.get("answer"), bool)):
        return "strategyqa"
    return None


def _classify_examples(examples: Any) -> str | None:
    first = examples[0] if isinstance(examples, list) and examples else None
    if not isinstance(first, dict):
        return None
    if "input" in first and "target_scores" in first:
        return "strategyqa_bigbench"
    question = str(first.get("question", "")).lower()
    if "answer" in first and "coin" in question and "heads up" in question:
        return "coin_flip"
    if "answer" in first and "last letter" in question:
        return "last_letters"
    return None


def detect_format(path: str | Path) -> str:
    """Sniff a file's dataset format from its content (and extension); a UserError if unsure."""
    path = input_file(path)  # a FIFO or a device is refused here, before it could block a read
    suffix = path.suffix.lower()
    with path.open("rb") as f:
        head = f.read(65536)
    if suffix == ".parquet" or head[:4] == b"PAR1":
        raise _cannot_tell(path, "a parquet file: use --format parquet with a field mapping")
    if head.startswith(b"\xef\xbb\xbf"):  # a byte-order mark
        head = head[3:]
    try:
        text = head.decode("utf-8")
    except UnicodeDecodeError as e:
        if e.start < len(head) - 4:  # more than a character cut at the end of the 64 KiB head
            decode_utf8(head, path)  # raises, naming the line
        text = head[: e.start].decode("utf-8")
    if suffix == ".xml" or text.lstrip().startswith("<"):
        if "<Problem" in text:
            return "asdiv"
        raise _cannot_tell(path, "an XML file without ASDiv <Problem> records")
    if suffix == ".csv":
        header = set(next(iter(text.splitlines()), "").replace('"', "").split(","))
        if {"Question", "Numbers", "Answer"} <= header:
            return "mawps_csv"
        raise _cannot_tell(path, f"a csv file with columns {', '.join(sorted(header))}")
    stripped = text.lstrip()
    if stripped.startswith("["):
        data = read_json(path)
        found = _classify_record(data[0]) if isinstance(data, list) and data else None
        if found:
            return found
        raise _cannot_tell(path, "a JSON list of unrecognised records")
    if stripped.startswith("{"):
        first_line = first_jsonl_line(stripped)
        try:
            first = json.loads(first_line)  # one complete object on the first line: jsonl
        except json.JSONDecodeError:
            first = read_json(path)  # a pretty-printed JSON object
        except (RecursionError, ValueError):
            first = parse_json(first_line, f"{path}:1")  # raises the UserError naming the line
        if isinstance(first, dict) and "examples" in first:
            found = _classify_examples(first["examples"])
        else:
            found = _classify_record(first)
        if found:
            return found
        fields = ", ".join(first) if isinstance(first, dict) else "?"
        raise _cannot_tell(path, f"records with fields {fields}")
    raise _cannot_tell(path, "not JSON, JSON Lines, csv, XML or parquet")


# ---------------------------------------------------------------- loading

DATA_SUFFIXES = (".json", ".jsonl", ".csv", ".xml", ".parquet")
HUB_NAME_RE = re.compile(r"[\w.-]+/[\w.-]+(?::[\w.-]+)?")  # owner/name[:config]


def _pick_file(directory: Path, split: str | None) -> Path:
    """The one data file in a dataset folder (or the one whose name contains `split`)."""
    files = sorted(p for p in directory.iterdir() if p.is_file() and p.suffix.lower() in DATA_SUFFIXES)
    if split:
        files = [p for p in files if split.lower() in p.name.lower()]
    if len(files) != 1:
        names = ", ".join(p.name for p in files) or "none"
        hint = f" matching split '{split}'" if split else ""
        raise UserError(f"{directory}: expected one data file{hint}, found {names}; pass the file path or --split")
    return files[0]


def _looks_like_hub_name(name: str) -> bool:
    return bool(HUB_NAME_RE.fullmatch(name)) and Path(name).suffix.lower() not in DATA_SUFFIXES


def _hub_rows(name: str, mapping: dict[str, Any], split: str | None) -> Iterable[Raw | Skip]:
    """Rows of a Hugging Face hub dataset (needs internet, or the datasets cache)."""
    import datasets as hf_datasets  # heavy: imported only when a hub name is loaded

    repo, _, config = name.partition(":")
    config = config or mapping.get("config") or None
    try:
        rows = hf_datasets.load_dataset(repo, config, split=split or "train")
    except Exception as e:  # the hub raises many types: offline, not found, bad config, bad split
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(
            f"could not load Hugging Face dataset '{name}' (split {split or 'train'}): {first}; "
            "check the name and that you are online, or pass a local file"
        ) from None
    return read_records(rows, mapping, name)


def load_examples(path: str | Path, format: str | None = None, *, every_record: bool = False) -> list[Example]:
    """The questions of a file in any format load_dataset knows (normalised jsonl included), for the
    stages that read a user's file (annotate --data, evaluate --data). Skipped records are reported
    on stderr, never dropped silently; with `every_record` (evaluation: its n is the file's) the
    first one is an error instead."""
    result = load_dataset(path, format=format)
    if result.skipped:
        where, reason = result.skipped[0]
        if every_record:
            raise UserError(f"{where}: {reason} ({len(result.skipped)} unreadable record(s); "
                            "an evaluation scores every question of its file)")
        console.print(f"[yellow]{path}: {len(result.skipped)} record(s) skipped, e.g. {where}: {reason}[/yellow]")
    return result.examples


def load_dataset(
    path_or_name: str | Path,
    format: str | None = None,
    mapping: dict[str, Any] | None = None,
    split: str | None = None,
    limit: int | None = None,
) -> LoadResult:
    """Read a dataset file (or folder, or hub name) into normalised examples.

    Gold answers are normalised with `answers.normalise` (1,080 -> 1080, 39.0 -> 39, true -> yes);
    a record whose gold answer cannot be read, or whose id repeats, is skipped and reported in
    `LoadResult.skipped`, never dropped silently. `limit` caps the number of examples returned.
    """
    if format is not None and format not in FORMATS:
        raise UserError(f"unknown format '{format}'; known formats: {format_names()}")
    if limit is not None and limit < 1:
        raise UserError(f"limit must be at least 1, got {limit}")
    name = str(path_or_name)
    path = Path(name).expanduser()
    if format == "hf" or (not path.exists() and format is None and _looks_like_hub_name(name)):
        mapping = check_mapping({**HUB_PRESETS.get(name.split(":")[0], {}), **(mapping or {})}, f"hub dataset '{name}'")
        rows, fmt = _hub_rows(name, mapping, split), "hf"
    else:
        if path.is_dir():
            path = _pick_file(path, split)
        if not path.exists():
            raise UserError(f"{path}: file not found")
        if format is None and mapping:
            format = "csv" if path.suffix.lower() == ".csv" else "parquet" if path.suffix.lower() == ".parquet" else "jsonl"
        fmt = format or detect_format(path)
        if fmt not in GENERIC_FORMATS and mapping:
            raise UserError(f"a field mapping applies to the generic formats ({', '.join(GENERIC_FORMATS)}), not to '{fmt}'")
        rows = FORMATS[fmt].reader(path, mapping)
    return _collect(rows, fmt, name, limit)


def _collect(rows: Iterable[Raw | Skip], fmt: str, name: str, limit: int | None) -> LoadResult:
    result = LoadResult([], fmt, [], name)
    seen: set[str] = set()
    for row in rows:
        if limit is not None and len(result.examples) >= limit:
            break
        if isinstance(row, Skip):
            result.skipped.append((row.where, row.reason))
            continue
        check_text_fields(row.where, row.question, row.choices)  # the one check of every format's fields
        question, choices = row.question.strip(), [c.strip() for c in row.choices or []] or None
        readable = isinstance(row.answer, (str, int, float))  # not an object, a list or null
        gold = normalise(str(row.answer), row.answer_type, choices) if readable else None
        problem = unencodable({"id": row.id, "question": question, "answer": gold, "choices": choices,
                               "source": row.source, "meta": row.meta})
        if problem:
            result.skipped.append((row.where, problem))
        elif gold is None:
            result.skipped.append((row.where, f"gold answer {str(row.answer)[:80]!r} is not a readable {row.answer_type}"))
        elif not question:
            result.skipped.append((row.where, "empty question"))
        elif row.id in seen:
            result.skipped.append((row.where, f"duplicate id {row.id!r}"))
        else:
            seen.add(row.id)
            result.examples.append(Example(row.id, question, gold, row.answer_type, row.source, choices, row.meta))
    return result
