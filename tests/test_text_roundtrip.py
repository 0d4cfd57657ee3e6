"""Property tests (Hypothesis) of the record readers and writers: any text, and any JSON value in any
field, is written and read back equal, or refused with a UserError (a counted skip where a loader
skips); never another exception.

Text is drawn from all of Unicode, lone surrogates included (what a JSON "\\ud800" escape reads as),
with the characters that break lines for some reader (U+2028, U+2029, U+0085, \\r, NUL) drawn often.
Each property runs EXAMPLES examples (deterministic: derandomised, no example database)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cotdistill.data.load import load_dataset
from cotdistill.core.records import ANSWER_TYPES, Example, iter_jsonl, read_examples, write_examples, write_jsonl
from cotdistill.core.errors import UserError
from cotdistill.core.rundir import RunDir

EXAMPLES = 200
PROPERTY = settings(max_examples=EXAMPLES, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

LINE_BREAKERS = "\u2028\u2029\x85\r\n\x00\x0b\x0c\x1c\x1d\x1e"
characters = st.one_of(st.characters(), st.sampled_from(LINE_BREAKERS),
                       st.sampled_from("\ud800\udbff\udc00\udfff"))
texts = st.text(characters, max_size=40)
json_values = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | texts,
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(texts, inner, max_size=3),
                           max_leaves=8)


def as_json_reads_it(value):
    """`value` as JSON reads it back: a high surrogate followed by a low one is, in JSON as in UTF-16,
    the one character they encode (no JSON text can keep them apart)."""
    if isinstance(value, str):
        return value.encode("utf-16-le", "surrogatepass").decode("utf-16-le", "surrogatepass")
    if isinstance(value, list):
        return [as_json_reads_it(v) for v in value]
    if isinstance(value, dict):
        return {as_json_reads_it(k): as_json_reads_it(v) for k, v in value.items()}
    return value


@pytest.fixture(scope="module")
def folder():
    with tempfile.TemporaryDirectory() as d:
        yield Path(d)


@PROPERTY
@given(rows=st.lists(st.dictionaries(texts, json_values, max_size=4), max_size=4))
def test_any_rows_written_as_jsonl_read_back_equal_one_line_each(rows, folder):
    path = folder / "rows.jsonl"
    write_jsonl(path, rows)
    text = path.read_text(encoding="utf-8")
    assert len(text.splitlines()) == len(rows)  # every line splitter sees one line per row
    assert [row for _, row in iter_jsonl(path)] == [as_json_reads_it(r) for r in rows]


examples = st.builds(
    Example, id=texts, question=texts, answer=texts, answer_type=st.sampled_from(ANSWER_TYPES), source=texts,
    choices=st.none() | st.lists(texts, min_size=1, max_size=4),
)


@PROPERTY
@given(written=st.lists(examples, max_size=4))
def test_any_examples_read_back_equal_or_are_refused_with_a_user_error(written, folder):
    path = folder / "examples.jsonl"
    write_examples(path, written)
    try:
        read = read_examples(path)
    except UserError as e:
        assert "lone surrogate" in str(e)
        return
    assert read == [Example(**as_json_reads_it(e.to_dict())) for e in written]


@PROPERTY
@given(written=st.lists(examples, max_size=4))
def test_loading_any_examples_keeps_or_counts_each_one(written, folder):
    from cotdistill.core.fileio import SURROGATE_RE

    path = folder / "load.jsonl"
    write_examples(path, written)
    try:
        result = load_dataset(path, format="examples")
    except UserError:
        return
    assert len(result.examples) + len(result.skipped) == len(written)
    for e in result.examples:
        assert not SURROGATE_RE.search(json.dumps(e.to_dict(), ensure_ascii=False))  # none reaches a stage


@PROPERTY
@given(fields=st.dictionaries(st.sampled_from(["id", "question", "answer", "answer_type", "source", "choices", "meta"]),
                              json_values | st.sampled_from(ANSWER_TYPES)))
def test_a_record_with_any_json_in_its_fields_is_read_or_refused_with_a_user_error(fields, folder):
    path = folder / "fields.jsonl"
    write_jsonl(path, [{"id": "a", "question": "q?", "answer": "2", "answer_type": "number"}, fields])
    for read in (lambda: read_examples(path), lambda: load_dataset(path, format="examples")):
        try:
            read()
        except UserError:
            pass


@PROPERTY
@given(line=json_values)
def test_any_json_line_in_a_runs_own_files_is_read_or_refused_naming_the_file(line, folder):
    run = RunDir(folder / "run")
    run.root.mkdir(exist_ok=True)
    for path, read in ((run.annotations, run.read_annotations), (run.distill, run.read_distill),
                       (run.manifest, run.read_manifest), (run.predictions("x"), lambda: run.read_predictions("x"))):
        path.parent.mkdir(exist_ok=True)
        write_jsonl(path, [line])
        try:
            read()
        except UserError as e:
            assert str(path) in str(e)


@PROPERTY
@given(text=st.text(st.sampled_from('[]{}",:0123456789.e-+ \\u\n"abtrufnl'), max_size=60) | texts)
def test_any_text_parses_as_json_or_is_a_user_error_naming_where(text):
    from cotdistill.core.fileio import parse_json

    try:
        parse_json(text, "f.jsonl:3")
    except UserError as e:
        assert str(e).startswith("f.jsonl:3: ")


@PROPERTY
@given(text=texts)
def test_a_teachers_text_reaches_the_cache_as_text(text, folder):
    from cotdistill.core.sampling import SamplingParams
    from cotdistill.teachers.base import Completion
    from cotdistill.core.fileio import without_surrogates
    from cotdistill.teachers.cache import CompletionCache

    key = ("t", json.dumps(text, ensure_ascii=True), SamplingParams(), 0)
    with CompletionCache(folder / "cache.sqlite") as cache:
        cache.put_many([(key, Completion(text, "stop"))])
        assert cache.get_many([key])[key].text == without_surrogates(text)
