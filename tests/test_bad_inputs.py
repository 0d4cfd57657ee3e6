"""Untrusted input, a corpus of it: every case is one line on stderr naming the file or field and
what to do, exit code 2, no traceback, and nothing already in the run directory destroyed.

Each bad file is fed to every command that reads that kind of file; the commands run in-process
through the real entry point (`cotdistill.cli.main`), as a user's shell would call it."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from cotdistill.cli import main

GOOD = {"id": "a", "question": "What is 1 + 1?", "answer": "2", "answer_type": "number", "source": "t"}
GOOD_DISTILL = {"id": "a", "question": "What is 70 + 2?", "rationale": "70 + 2 = 72.", "answer": "72", "answer_type": "number"}

# name -> (file content as bytes, a word the message must contain)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "latin-1": (b'{"question": "caf\xe9: 1+1?", "answer": "2"}\n', "not UTF-8"),
    "binary": (bytes(range(256)) * 8, "bad.jsonl:"),  # the first bad line is named
    "latin-1 on line 3": ((json.dumps({**GOOD, "rationale": "1 + 1 = 2."}) + "\n").encode() * 2 + b'{"question": "caf\xe9"}\n', ":3:"),
    "empty": (b"", ""),
    "blank lines only": (b"\n\n  \n", ""),
    "not json": (b"question,answer\n1+1,2\n", ""),
    "truncated json": (b'{"id": "a", "question": "What is', ""),
    "json list of numbers": (b"[1, 2, 3]", ""),
    "a jsonl line that is a list": ((json.dumps(GOOD) + "\n[1, 2]\n").encode(), ""),
    "null bytes": (b"\x00" * 64, ""),
    "a directory": (b"", ""),  # a dataset folder with no data file in it
    "missing": (b"", "not found"),
}

# Commands that read a data file, with {path} and {run} filled in.
COMMANDS = {
    "data stats": ["data", "stats", "{path}"],
    "data show": ["data", "show", "{path}"],
    "data prepare": ["data", "prepare", "{path}", "--out", "{run}/prepared.jsonl"],
    "annotate": ["annotate", "--data", "{path}", "--out", "{run}", "--teacher", "gguf:/nonexistent.gguf"],
    "train": ["train", "--data", "{path}", "--out", "{run}/students/cot", "--student", "/nonexistent-student"],
    "evaluate": ["evaluate", "--run", "{run}", "--model", "/nonexistent-student", "--name", "x", "--data", "{path}"],
    "run": ["run", "{config}"],
}


def call(args: list[str], capsys, monkeypatch) -> tuple[int, str]:
    monkeypatch.setattr(sys, "argv", ["cotdistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    return exit_info.value.code, capsys.readouterr().err


def assert_one_line_error(code, err, *needles):
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2, err
    assert "Traceback" not in err, err
    assert lines[-1].startswith("error: "), err
    for needle in needles:
        assert needle in lines[-1], (needle, lines[-1])


def snapshot(run: Path) -> dict[str, object]:
    """Every file's bytes; of the manifest, what it recorded (a failed stage may add its own entry)."""
    files: dict[str, object] = {str(p.relative_to(run)): p.read_bytes() for p in run.rglob("*") if p.is_file() and p.name != ".lock"}
    files["manifest.json"] = json.loads(files["manifest.json"])["stages"]["annotate"]
    return files


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """A run directory that already holds work: none of it may be touched by a failed command."""
    run = tmp_path / "run"
    (run / "data").mkdir(parents=True)
    (run / "data" / "train.jsonl").write_text(json.dumps(GOOD) + "\n")
    (run / "distill.jsonl").write_text(json.dumps(GOOD_DISTILL) + "\n")
    (run / "manifest.json").write_text('{"stages": {"annotate": {"status": "done"}}}')
    return run


@pytest.mark.parametrize("kind", sorted(BAD_FILES))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_a_bad_data_file_is_one_line_naming_it(command, kind, run_dir, tmp_path, capsys, monkeypatch):
    content, needle = BAD_FILES[kind]
    path = tmp_path / "bad.jsonl"
    if kind == "a directory":
        path.mkdir()
    elif kind != "missing":
        path.write_bytes(content)
    config = tmp_path / "run.yaml"
    config.write_text(f"name: x\nrun_dir: {run_dir}\ndata:\n  train: {path}\n  n_test: 1\n")
    before = snapshot(run_dir)
    args = [a.format(path=path, run=run_dir, config=config) for a in COMMANDS[command]]
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(path), needle)
    after = snapshot(run_dir)
    assert {k: v for k, v in after.items() if k in before} == before  # nothing destroyed


# ---------------------------------------------------------------- configs and outputs

CONFIG_CASES = {
    "batch size zero": ("student:\n  batch_size: 0\n", "student.batch_size"),
    "negative batch size": ("student:\n  batch_size: -1\n", "student.batch_size"),
    "batch size not a number": ("student:\n  batch_size: eight\n", "student.batch_size"),
    "zero epochs": ("student:\n  epochs: 0\n", "student.epochs"),
    "zero samples": ("teacher:\n  samples: 0\n", "teacher.samples"),
    "negative temperature": ("teacher:\n  temperature: -1\n", "teacher.temperature"),
    "zero max tokens": ("teacher:\n  max_tokens: 0\n", "teacher.max_tokens"),
    "eval max_new_tokens zero": ("evaluate:\n  max_new_tokens: 0\n", "evaluate.max_new_tokens"),
    "eval fraction one": ("student:\n  eval_fraction: 1\n", "student.eval_fraction"),
    "lora dropout one": ("student:\n  lora_dropout: 1.0\n", "student.lora_dropout"),
    "unknown student mode": ("student:\n  modes: [cot, magic]\n", "student.modes"),
    "unknown field": ("student:\n  epochz: 3\n", "student.epochz"),
    "dedupe similarity over one": ("teacher:\n  filters:\n    dedupe_similarity: 2\n", "teacher.filters.dedupe_similarity"),
    "cap zero": ("teacher:\n  filters:\n    max_per_question: 0\n", "teacher.filters.max_per_question"),
}


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_value_names_the_field_before_any_work(case, tmp_path, capsys, monkeypatch):
    extra, field = CONFIG_CASES[case]
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {tmp_path / 'run'}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n" + extra)
    code, err = call(["run", str(config)], capsys, monkeypatch)
    assert_one_line_error(code, err, "c.yaml", field)
    assert not (tmp_path / "run").exists()  # refused before anything was written


DATA_CASES = {
    "test set zero": ("n_test: 0", "data.n_test"),
    "test set negative": ("n_test: -5", "data.n_test"),
    "test set the whole file": ("n_test: 3", "data.n_test (3)"),
    "test set larger than the file": ("n_test: 50", "data.n_test (50)"),
    "dev set eats the rest": ("n_test: 1\n  n_dev: 2", "data.n_dev (2)"),
    "a missing training file": ("n_test: 1\n  train: [{good}, /nonexistent/other.jsonl]", "/nonexistent/other.jsonl"),
    "a missing extra test set": ("n_test: 1\n  extra_tests: [{{name: t, path: /nonexistent/t.jsonl}}]", "/nonexistent/t.jsonl"),
}


@pytest.mark.parametrize("case", sorted(DATA_CASES))
def test_splits_that_do_not_fit_the_data_are_refused_at_the_data_stage(case, tmp_path, capsys, monkeypatch):
    good = tmp_path / "three.jsonl"
    good.write_text("".join(json.dumps({**GOOD, "id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(3)))
    fields, needle = DATA_CASES[case]
    lines = fields.format(good=good)
    train_line = "" if "train:" in lines else f"  train: {good}\n"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {tmp_path / 'run'}\ndata:\n{train_line}  {lines}\n")
    code, err = call(["run", str(config)], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)
    assert not (tmp_path / "run" / "data" / "train.jsonl").exists()


OUTPUT_CASES = {
    "run a directory": (["run", "{tmp}"], "is a directory"),
    "run a config that is not UTF-8": (["run", "{latin1}"], "not UTF-8"),
    "run_dir below a file": (["run", "{under_file_config}"], "cannot write the run directory"),
    "annotate --out below a file": (["annotate", "--data", "{good}", "--out", "{file}/run", "--teacher", "gguf:/x.gguf"],
                                    "cannot write the run directory"),
    "train --out below a file": (["train", "--data", "{distill}", "--out", "{file}/student", "--student", "/x"],
                                 "cannot write the run directory"),
    "evaluate --run below a file": (["evaluate", "--run", "{file}/run", "--model", "/x", "--name", "n", "--data", "{good}"],
                                    "cannot write the run directory"),
    "a malformed --set": (["run", "{good_config}", "--set", "student.epochs"], "expected section.field=value"),
    "an unknown teacher": (["annotate", "--data", "{good}", "--out", "{tmp}/r", "--teacher", "magic:x"], "unknown teacher"),
    "an unknown format": (["data", "stats", "{good}", "--format", "nope"], "unknown format"),
}


@pytest.mark.parametrize("case", sorted(OUTPUT_CASES))
def test_unusable_paths_and_options_are_one_line_errors(case, tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    distill = tmp_path / "distill.jsonl"
    distill.write_text(json.dumps(GOOD_DISTILL) + "\n")
    (tmp_path / "afile").write_text("x")
    latin1 = tmp_path / "latin1.yaml"
    latin1.write_bytes(b"name: caf\xe9\n")
    under_file = tmp_path / "under.yaml"
    under_file.write_text(f"name: x\nrun_dir: {tmp_path / 'afile' / 'run'}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n")
    good_config = tmp_path / "good.yaml"
    good_config.write_text("name: x\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n")
    args, needle = OUTPUT_CASES[case]
    paths = dict(tmp=tmp_path, good=good, distill=distill, file=tmp_path / "afile", latin1=latin1,
                 under_file_config=under_file, good_config=good_config)
    code, err = call([a.format(**paths) for a in args], capsys, monkeypatch)
    assert_one_line_error(code, err, needle)


def test_a_byte_order_mark_and_numeric_answers_are_accepted(tmp_path, capsys, monkeypatch):
    from cotdistill.training.collate import read_pairs

    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + (json.dumps(GOOD) + "\n").encode())
    code, err = call(["data", "stats", str(bom)], capsys, monkeypatch)
    assert code in (0, None), err
    numeric = tmp_path / "distill.jsonl"
    numeric.write_text(json.dumps({**GOOD_DISTILL, "answer": 72}) + "\n")
    assert read_pairs(numeric, "cot")[0].target.endswith("The answer is 72.")


# ---------------------------------------------------------------- text, JSON and the project's own files
# (issues 24 and 27): text no encoder accepts, JSON Python cannot read, fields of the wrong type,
# a run directory's files torn or foreign, and model weights that do not load.


def write_records(path: Path, records: list[str]) -> Path:
    """A normalised jsonl file whose lines are given as JSON text (so that escapes like \\ud800 stay)."""
    path.write_text("".join(r + "\n" for r in records), encoding="utf-8")
    return path


def good_line(i: int = 0, **fields: object) -> str:
    return json.dumps({**GOOD, "id": f"q{i}", "question": f"What is {i} + 1?", "answer": str(i + 1), **fields})


# Characters that str.splitlines (and JavaScript, some editors) take for line ends, and NUL.
LINE_BREAKERS = {"U+2028": "\u2028", "U+2029": "\u2029", "U+0085": "\x85", "NUL": "\x00", "CR": "\r", "U+001C": "\x1c"}


@pytest.mark.parametrize("name", sorted(LINE_BREAKERS))
def test_text_with_any_line_breaker_survives_prepare_and_our_own_reading_of_it(name, tmp_path, capsys, monkeypatch):
    from cotdistill.data.records import read_examples

    question = f"What is{LINE_BREAKERS[name]}2 + 2?"
    data = write_records(tmp_path / "in.jsonl", [good_line(1, question=question), good_line(0)])  # first: the sniffer reads it
    out = tmp_path / "prepared.jsonl"
    code, err = call(["data", "prepare", str(data), "--out", str(out)], capsys, monkeypatch)
    assert code in (0, None), err
    code, err = call(["data", "stats", str(out)], capsys, monkeypatch)  # the format sniffer reads it back
    assert code in (0, None), err
    assert len(out.read_text(encoding="utf-8").splitlines()) == 2  # one line per record, for any line splitter
    assert [e.question for e in read_examples(out)] == [question, "What is 0 + 1?"]


SURROGATE_FIELDS = {
    "question": '"question": "What is \\ud800 1 + 1?"',
    "id": '"id": "q\\udc00"',
    "answer": '"answer": "x\\ud800", "answer_type": "text"',
    "choices": '"answer": "A", "answer_type": "choice", "choices": ["one", "t\\udfffwo"]',
}


def call_with_output(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """call(), keeping what the command printed on stdout."""
    monkeypatch.setattr(sys, "argv", ["cotdistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out, err = capsys.readouterr()
    return exit_info.value.code, out, err


@pytest.mark.parametrize("command", ["data stats", "data show", "data prepare"])
@pytest.mark.parametrize("field", sorted(SURROGATE_FIELDS))
def test_a_lone_surrogate_in_a_record_is_a_counted_skip(field, command, run_dir, tmp_path, capsys, monkeypatch):
    from cotdistill.data.records import read_examples

    bad = good_line(9)[:-1] + ", " + SURROGATE_FIELDS[field] + "}"  # JSON: the last occurrence of a key wins
    data = write_records(tmp_path / "in.jsonl", [good_line(0), bad])
    code, out, err = call_with_output([a.format(path=data, run=run_dir) for a in COMMANDS[command]], capsys, monkeypatch)
    assert code in (0, None) and "Traceback" not in err, err
    if command == "data stats":
        assert f"skipped 1 × {field} holds a lone surrogate" in out and f"{data}:2" in out
    elif command == "data show":
        assert '"q0"' in out and '"q9"' not in out
    else:
        assert "skipped 1 records" in out
        assert [e.id for e in read_examples(run_dir / "prepared.jsonl")] == ["q0"]


def test_a_lone_surrogate_in_questions_to_evaluate_is_one_line_naming_the_line(run_dir, tmp_path, capsys, monkeypatch):
    data = write_records(tmp_path / "test.jsonl", [good_line(0), good_line(1)[:-1] + ', "question": "a\\ud800"}'])
    code, err = call(["evaluate", "--run", str(run_dir), "--model", "/nonexistent-student", "--name", "x", "--data", str(data)],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, f"{data}:2:", "lone surrogate")


def test_a_teachers_lone_surrogate_becomes_a_replacement_character_in_the_cache_and_annotations(tmp_path):
    """A server's JSON "\\ud800" escape decodes to a lone surrogate: SQLite and UTF-8 files refuse it."""
    from cotdistill.annotate import annotate
    from cotdistill.config import TeacherConfig
    from cotdistill.data.records import Example
    from cotdistill.rundir import RunDir
    from cotdistill.teachers.base import Completion, report_all
    from cotdistill.teachers.cache import CompletionCache

    answer = json.loads('"1 + 1 = 2 \\ud83d. The answer is 2."')

    class AnswersWithASurrogate:
        """Fault injection: a teacher whose every answer carries a lone surrogate."""

        name, chat = "surrogates", False

        def generate(self, requests, on_done=None):
            return report_all([Completion(answer, "stop", 5, 5) for _ in requests], on_done)

        def close(self):
            pass

    run = RunDir(tmp_path / "run")
    examples = [Example("q0", "What is 1 + 1?", "2", "number", "t")]
    annotate(examples, AnswersWithASurrogate(), run, TeacherConfig(n_exemplars=1, max_tokens=8), quiet=True)
    [row] = run.read_annotations()
    assert row["text"] == "1 + 1 = 2 \ufffd. The answer is 2."
    with CompletionCache(run.cache) as cache:
        assert len(cache) == 1


PATHOLOGICAL_JSON = {
    "nested 100000 deep": ('{"id": "b", "x": ' + "[" * 100_000 + "]" * 100_000 + "}", "nested too deeply"),
    "a 5000-digit integer": ('{"id": "b", "question": "q?", "answer": ' + "9" * 5000 + ', "answer_type": "number"}', "digits"),
}


@pytest.mark.parametrize("kind", sorted(PATHOLOGICAL_JSON))
@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_json_python_cannot_read_is_one_line_naming_the_file_and_line(command, kind, run_dir, tmp_path, capsys, monkeypatch):
    line, needle = PATHOLOGICAL_JSON[kind]
    path = write_records(tmp_path / "bad.jsonl", [json.dumps(GOOD_DISTILL | GOOD), line])
    config = tmp_path / "run.yaml"
    config.write_text(f"name: x\nrun_dir: {run_dir}\ndata:\n  train: {path}\n  n_test: 1\n")
    args = [a.format(path=path, run=run_dir, config=config) for a in COMMANDS[command]]
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, f"{path}:2:", needle)


@pytest.mark.parametrize("kind", sorted(PATHOLOGICAL_JSON))
@pytest.mark.parametrize("shape", ["a JSON list", "a BIG-bench task"])
def test_json_python_cannot_read_in_a_whole_json_document_names_the_file(kind, shape, tmp_path, capsys, monkeypatch):
    record = PATHOLOGICAL_JSON[kind][0]
    path = tmp_path / "bad.json"
    path.write_text(f"[{record}]" if shape == "a JSON list" else f'{{"examples": [{record}]}}')
    code, err = call(["data", "stats", str(path)], capsys, monkeypatch)
    assert_one_line_error(code, err, str(path), PATHOLOGICAL_JSON[kind][1])


# A record whose fields have the wrong JSON type: (file name, its content, the --map options, a word
# of the message). Each format funnels into one check of the normalised record.
WRONG_TYPES = {
    "question an object": ("in.jsonl", good_line(1, question={"x": 1}), [], "question must be text"),
    "question a list": ("in.jsonl", good_line(1, question=["What?"]), [], "question must be text"),
    "question a number": ("in.jsonl", good_line(1, question=7), [], "question must be text"),
    "choices a number": ("in.jsonl", good_line(1, answer="A", answer_type="choice", choices=5), [], "choices must be a list"),
    "choices of mixed types": ("in.jsonl", good_line(1, answer="A", answer_type="choice", choices=["a", 1, None]), [], "choice 2"),
    "choices of objects": ("in.jsonl", good_line(1, answer="A", answer_type="choice", choices=[{"t": 1}]), [], "choice 1"),
    "answer an object": ("in.jsonl", good_line(1, answer={"x": 1}), [], "answer must be text or a number"),
    "id a list": ("in.jsonl", good_line(1, id=[1]), [], "id must be text or a number"),
    "mapped question an object": ("g.jsonl", json.dumps({"p": {"x": 1}, "s": "2"}),
                                  ["--map", "question=p", "--map", "answer=s", "--map", "answer_type=number"], "question must be text"),
    "mapped choices a number": ("g.jsonl", json.dumps({"p": "Which?", "s": "A", "c": 5}),
                                ["--map", "question=p", "--map", "answer=s", "--map", "answer_type=choice", "--map", "choices=c"],
                                "choices must be a list"),
    "mapped choices mixed": ("g.jsonl", json.dumps({"p": "Which?", "s": "A", "c": [{"text": "a"}, 5]}),
                             ["--map", "question=p", "--map", "answer=s", "--map", "answer_type=choice", "--map", "choices=c"],
                             "choice 2"),
    "commonsenseqa choice texts numbers": ("csqa.jsonl", json.dumps({"id": "c", "question": {"stem": "Which?", "choices": [
        {"label": "A", "text": 1}, {"label": "B", "text": "b"}]}, "answerKey": "A"}), [], "choice 1"),
}


@pytest.mark.parametrize("case,command", [(case, command) for case in sorted(WRONG_TYPES)
                                          for command in ("data stats", "data show", "data prepare", "annotate")
                                          if command != "annotate" or not WRONG_TYPES[case][2]])  # annotate: no --map
def test_a_field_of_the_wrong_type_is_one_line_naming_the_record(case, command, run_dir, tmp_path, capsys, monkeypatch):
    name, line, mapping, needle = WRONG_TYPES[case]
    first = good_line(0) if name == "in.jsonl" else line  # a generic or foreign file: its one bad record
    path = write_records(tmp_path / name, [first, line])
    args = [a.format(path=path, run=run_dir) for a in COMMANDS[command]] + mapping
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(path), needle)


BIG_BENCH_SCORES = {
    "scores as text": {"Yes": "1", "No": "0"},
    "a score null": {"Yes": 1, "No": None},
    "scores a list": [1, 0],
    "a score an object": {"Yes": {"v": 1}, "No": 0},
}


@pytest.mark.parametrize("case", sorted(BIG_BENCH_SCORES))
def test_big_bench_target_scores_that_are_not_numbers_are_a_counted_skip(case, tmp_path, capsys, monkeypatch):
    path = tmp_path / "task.json"
    path.write_text(json.dumps({"examples": [{"input": "Is it? A", "target_scores": {"Yes": 1, "No": 0}},
                                             {"input": "Is it? B", "target_scores": BIG_BENCH_SCORES[case]}]}))
    monkeypatch.setattr(sys, "argv", ["cotdistill", "data", "stats", str(path)])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr()
    assert exit_info.value.code in (0, None), out.err
    assert "skipped 1 × target_scores" in out.out and "example 2" in out.out


# The run directory's own files, torn or foreign: (the file, its content, the commands that read it).
GOOD_SUMMARY = {"name": "x", "method": "zero-shot", "n": 1, "correct": 1, "accuracy": 1.0, "ci_low": 0.2, "ci_high": 1.0}
GOOD_ANNOTATION = {"example_id": "a", "sample": 0, "text": "1 + 1 = 2.", "verdict": "kept", "predicted": "2"}
RUN_FILES = {
    "a torn manifest": ("manifest.json", '{"stages": {"annotate": {"sta', ["evaluate", "annotate", "report", "export"]),
    "a manifest that is a list": ("manifest.json", "[]", ["evaluate", "annotate", "report", "export"]),
    "a manifest stage that is a number": ("manifest.json", '{"stages": {"annotate": 5}}', ["evaluate", "report", "export"]),
    "a manifest nested 100000 deep": ("manifest.json", "[" * 100_000 + "]" * 100_000, ["evaluate", "report"]),
    "an annotations line 5": ("annotations.jsonl", json.dumps(GOOD_ANNOTATION) + "\n5\n", ["report"]),
    "an annotation whose text is 5": ("annotations.jsonl", json.dumps({**GOOD_ANNOTATION, "text": 5}) + "\n", ["report"]),
    "a torn annotations line": ("annotations.jsonl", json.dumps(GOOD_ANNOTATION)[:20] + "\n", ["report"]),
    "a summary that is a list": ("predictions/x.summary.json", "[1, 2]", ["report"]),
    "a summary without accuracy": ("predictions/x.summary.json", json.dumps({**GOOD_SUMMARY, "accuracy": None}), ["report"]),
    "a prediction row that is text": ("predictions/x.jsonl", '"a"\n', ["report"]),
    "a distill row without question": ("distill.jsonl", json.dumps({k: v for k, v in GOOD_DISTILL.items() if k != "question"}), ["export"]),
    "a distill row with sample first": ("distill.jsonl", json.dumps({**GOOD_DISTILL, "sample": "first"}), ["export"]),
    "a decontamination row that is a list": ("data/decontamination.jsonl", "[1]\n", ["report"]),
}
RUN_COMMANDS = {
    "evaluate": ["evaluate", "--run", "{run}", "--model", "/nonexistent-student", "--name", "y", "--data", "{run}/data/train.jsonl"],
    "annotate": ["annotate", "--out", "{run}", "--teacher", "gguf:/nonexistent.gguf"],
    "report": ["report", "{run}", "--out", "{tmp}/report"],
    "export": ["export", "{run}", "--out", "{tmp}/export"],
}


@pytest.mark.parametrize("case,command", [(c, cmd) for c in sorted(RUN_FILES) for cmd in RUN_FILES[c][2]])
def test_a_torn_or_foreign_file_of_the_run_is_one_line_naming_it_and_what_to_do(case, command, run_dir, tmp_path, capsys, monkeypatch):
    name, content, _ = RUN_FILES[case]
    (run_dir / "manifest.json").write_text('{"stages": {"data": {"n_train": 1}, "annotate": {"status": "done"}}}')
    (run_dir / "predictions").mkdir()
    (run_dir / "predictions" / "x.summary.json").write_text(json.dumps(GOOD_SUMMARY))
    (run_dir / "predictions" / "x.jsonl").write_text(json.dumps({"example_id": "a", "output": "2", "predicted": "2", "correct": True}) + "\n")
    (run_dir / name).write_text(content)
    args = [a.format(run=run_dir, tmp=tmp_path) for a in RUN_COMMANDS[command]]
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(run_dir / name), "delete it")
    assert (run_dir / name).read_text() == content  # left for the user to look at


@pytest.fixture(scope="module")
def tiny_student(tmp_path_factory) -> Path:
    from tiny_lm import build_tiny_causal

    return build_tiny_causal(tmp_path_factory.mktemp("student") / "tiny", steps=0)  # untrained: only its files matter


DAMAGED_WEIGHTS = {
    "truncated to half": lambda data: data[: len(data) // 2],
    "only its header": lambda data: data[: 8 + int.from_bytes(data[:8], "little")],
    "empty": lambda data: b"",
    "garbage": lambda data: b"\x00not safetensors" * 64,
}


@pytest.mark.parametrize("command", ["evaluate", "train"])
@pytest.mark.parametrize("damage", sorted(DAMAGED_WEIGHTS))
def test_damaged_model_weights_are_one_line_naming_the_file(damage, command, tiny_student, run_dir, tmp_path, capsys, monkeypatch):
    import shutil

    student = tmp_path / "student"
    shutil.copytree(tiny_student, student)
    weights = student / "model.safetensors"
    weights.write_bytes(DAMAGED_WEIGHTS[damage](weights.read_bytes()))
    args = {"evaluate": ["evaluate", "--run", str(run_dir), "--model", str(student), "--name", "y", "--data", str(run_dir / "data" / "train.jsonl")],
            "train": ["train", "--data", str(run_dir / "distill.jsonl"), "--out", str(tmp_path / "out"), "--student", str(student)]}[command]
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(weights), "train the student again")


EXEMPLAR_FILES = {
    "nested 100000 deep": ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    "a 5000-digit integer": ('[{"question": "q", "rationale": "r", "answer": "1", "n": ' + "9" * 5000 + "}]", "digits"),
    "a lone surrogate": ('[{"question": "q\\ud800", "rationale": "r", "answer": "1"}]', "lone surrogate"),
}


@pytest.mark.parametrize("case", sorted(EXEMPLAR_FILES))
def test_an_exemplar_file_python_cannot_read_or_encode_is_a_user_error_naming_it(case, tmp_path):
    from cotdistill.errors import UserError
    from cotdistill.prompts import load_exemplars

    path = tmp_path / "shots.json"
    content, needle = EXEMPLAR_FILES[case]
    path.write_text(content)
    with pytest.raises(UserError, match=needle) as error:
        load_exemplars(path)
    assert str(error.value).startswith(str(path))


def test_an_interrupted_evaluations_log_with_torn_or_foreign_lines_is_resumed(tiny_student, run_dir, capsys, monkeypatch):
    """predictions/NAME.partial.jsonl is appended to as generations finish: a kill tears its last
    line, and a foreign row only costs its generation again."""
    partial = run_dir / "predictions" / "y.partial.jsonl"
    partial.parent.mkdir()
    partial.write_text('5\n"text"\n{"fp": "other", "example_id": "a", "sample": 0, "output": 7}\n{"fp": "x", "exam')
    args = ["evaluate", "--run", str(run_dir), "--model", str(tiny_student), "--name", "y",
            "--data", str(run_dir / "data" / "train.jsonl"), "--max-new-tokens", "4", "--quiet"]
    monkeypatch.setattr(sys, "argv", ["cotdistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    assert exit_info.value.code in (0, None), capsys.readouterr().err
    assert [r["example_id"] for r in map(json.loads, (run_dir / "predictions" / "y.jsonl").read_text().splitlines())] == ["a"]
