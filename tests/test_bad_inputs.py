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


# ---------------------------------------------------------------- values from the command line, and the config schema
# Every KEY=VALUE option of every command is read by one function (config.parse_value), so text that
# YAML cannot read is one line naming the option, and a YAML tag never builds a Python object. The
# schema refuses what no run means: infinity and NaN in any float, sizes past a generous bound, a
# key given twice, a run name that is a path. The lists of fields are read from the pydantic
# models, so a field added later is covered without touching these tests.

import typing  # noqa: E402

import yaml  # noqa: E402
from hypothesis import HealthCheck, given, settings, strategies as st  # noqa: E402
from pydantic import BaseModel  # noqa: E402
from typer.main import get_command  # noqa: E402

from cotdistill.cli import app  # noqa: E402
from cotdistill.config import RunConfig, TeacherConfig, load_config, parse_assignment, parse_value  # noqa: E402
from cotdistill.evaluate import EvalOptions  # noqa: E402
from cotdistill.training.train import TrainConfig  # noqa: E402
from cotdistill.errors import UserError  # noqa: E402

GENERATED_CONFIG = "name: x\nrun_dir: {run}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n"  # 6 lines

# Text that YAML builds no plain value from.
UNREADABLE_VALUES = {
    "an unclosed list": "[1, 2",
    "an unclosed mapping": "{a: 1",
    "an unclosed quote": '"abc',
    "a python object tag": "!!python/object/apply:os.system [touch {pwned}]",
    "a python name tag": "!!python/name:os.system",
    "an unknown tag": "!nope 3",
    "an undefined alias": "*anchor",
    "a key given twice": "{a: 1, a: 2}",
    "nesting 5000 deep": "[" * 5000,
    "an impossible date": "2001-13-45",
    "a binary number without digits": "0b_",
    "a control character": "\x07",
    "a lone surrogate (a non-UTF-8 byte in argv)": "\udc80",
    "a mapping inside a plain value": "a: b: c",
}

# Every KEY=VALUE option of every command: its argv ({value}: the text after `=`), and what the message names.
ANNOTATE = ["annotate", "--data", "{good}", "--out", "{run}", "--teacher", "gguf:/x.gguf"]
EVALUATE = ["evaluate", "--run", "{run}", "--model", "/x", "--name", "n", "--data", "{good}"]
TRAIN = ["train", "--data", "{good}", "--out", "{run}/student", "--student", "/x"]
KEY_VALUE_OPTIONS = {
    "run --set": (["run", "{config}", "--set", "student.lr={value}"], "--set student.lr"),
    "study --set": (["study", "{config}", "--set", "teacher.samples={value}"], "--set teacher.samples"),
    "demo --set": (["demo", "--out", "{run}", "--set", "evaluate.temperature={value}"], "--set evaluate.temperature"),
    "annotate --teacher-option": ([*ANNOTATE, "--teacher-option", "n_ctx={value}"], "--teacher-option n_ctx"),
    "annotate --budget": ([*ANNOTATE, "--budget", "minutes={value}"], "--budget minutes"),
    "evaluate --teacher-option": ([*EVALUATE, "--teacher-option", "n_ctx={value}"], "--teacher-option n_ctx"),
}


def _types(annotation: typing.Any) -> set:
    """The types an annotation names, at any depth (`int | None` -> {int | None, int, NoneType})."""
    return {annotation}.union(*(_types(a) for a in typing.get_args(annotation)))


def _fields(model: type[BaseModel], prefix: str = "") -> list[tuple[str, typing.Any]]:
    """(dotted path, annotation) of every field of `model`, its sections opened (a list of sections,
    like data.extra_tests, counts as one field)."""
    out = []
    for name, field in model.model_fields.items():
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel):
            out += _fields(field.annotation, f"{prefix}{name}.")
        else:
            out.append((prefix + name, field.annotation))
    return out


def _float_fields(model: type[BaseModel]) -> list[tuple[str, bool]]:
    """(path, whether it is a mapping) of every field that holds a float, or free-form values that may."""
    return [(path, typing.get_origin(a) is dict) for path, a in _fields(model) if {float, typing.Any} & _types(a)]


def _int_fields(model: type[BaseModel]) -> list[str]:
    return [path for path, a in _fields(model) if int in _types(a) and typing.get_origin(a) not in (dict, list)]


def _command_options(fields_of: typing.Callable[[type[BaseModel]], list[str]]) -> list[tuple[list[str], str]]:
    """(argv, --flag) for each field `fields_of` lists of the models `train`, `evaluate` and
    `annotate` build from their options, where the command has a flag named after the field."""
    out = []
    for argv, model in [(TRAIN, TrainConfig), (EVALUATE, EvalOptions), (ANNOTATE, TeacherConfig)]:
        flags = {o for p in get_command(app).commands[argv[0]].params for o in p.opts}
        out += [(argv, flag) for flag in ("--" + path.rsplit(".", 1)[-1].replace("_", "-") for path in fields_of(model)) if flag in flags]
    return out


FLOAT_OPTIONS = _command_options(lambda model: [path for path, mapping in _float_fields(model) if not mapping])
INT_OPTIONS = _command_options(_int_fields)


def _with(path: str, value: typing.Any, run: Path) -> str:
    """The generated-data config with `path` set to `value`, as a YAML file's text."""
    raw = yaml.safe_load(GENERATED_CONFIG.format(run=run))
    *parents, leaf = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    node[leaf] = value
    return yaml.safe_dump(raw)


def _config_error(tmp_path: Path, text: str, overrides: list[str] | None = None) -> str:
    config = tmp_path / "c.yaml"
    config.write_text(text)
    with pytest.raises(UserError) as refused:
        load_config(config, overrides)
    message = str(refused.value)
    assert "\n" not in message, message
    return message


@pytest.fixture
def places(tmp_path: Path) -> dict[str, Path]:
    """A valid generated-data config, a data file, and where a run (or an injected command) would write."""
    config = tmp_path / "c.yaml"
    config.write_text(GENERATED_CONFIG.format(run=tmp_path / "run"))
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    return {"config": config, "good": good, "run": tmp_path / "run", "pwned": tmp_path / "pwned"}


class TestEveryKeyValueOptionReadsItsValueInOnePlace:
    @pytest.mark.parametrize("value", sorted(UNREADABLE_VALUES))
    @pytest.mark.parametrize("option", sorted(KEY_VALUE_OPTIONS))
    def test_unreadable_yaml_is_one_line_naming_the_option(self, option, value, places, capsys, monkeypatch):
        argv, needle = KEY_VALUE_OPTIONS[option]
        text = UNREADABLE_VALUES[value].replace("{pwned}", str(places["pwned"]))
        code, err = call([a.format(**places, value=text) for a in argv], capsys, monkeypatch)
        assert_one_line_error(code, err, needle, "not a value YAML can read")
        assert not places["pwned"].exists()  # a tag is never executed
        assert not places["run"].exists()  # refused before any work

    @pytest.mark.parametrize("option", ["--teacher-option", "--budget"])
    def test_a_key_given_twice_is_refused(self, option, places, capsys, monkeypatch):
        args = [a.format(**places) for a in ANNOTATE] + [option, "minutes=1", option, "minutes=2"]
        code, err = call(args, capsys, monkeypatch)
        assert_one_line_error(code, err, f"{option} minutes: given twice")

    @pytest.mark.parametrize("assignment", ["=3", ".lr=1", "student..lr=1", "student.=1", "student.l r=1", "student\nlr=1"])
    def test_a_set_without_a_field_path_is_refused(self, assignment, places, capsys, monkeypatch):
        code, err = call(["run", str(places["config"]), "--set", assignment], capsys, monkeypatch)
        assert_one_line_error(code, err, "expected section.field=value")

    @pytest.mark.parametrize("text, value", [
        ("4", 4), ("0.5", 0.5), ("true", True), ("text", "text"), ('"a: b"', "a: b"), ("[1, a]", [1, "a"]),
        ("{k: 1}", {"k": 1}), ("", None), ("1e20", "1e20"),  # YAML 1.1: a float needs its dot
    ])
    def test_readable_values_are_typed_as_in_a_config_file(self, text, value):
        assert parse_value("--set x", text) == value


class TestNoInfinityOrNaN:
    @pytest.mark.parametrize("value", [float("inf"), float("-inf"), float("nan")], ids=["inf", "-inf", "nan"])
    @pytest.mark.parametrize("path, mapping", _float_fields(RunConfig), ids=[p for p, _ in _float_fields(RunConfig)])
    def test_in_any_float_field_of_a_config(self, path, mapping, value, tmp_path):
        message = _config_error(tmp_path, _with(path, {"minutes": value} if mapping else value, tmp_path / "run"))
        assert message.startswith(f"{tmp_path / 'c.yaml'}: {path}: ") and "finite" in message, message

    @pytest.mark.parametrize("path, mapping", _float_fields(RunConfig), ids=[p for p, _ in _float_fields(RunConfig)])
    def test_in_any_float_field_set_on_the_command_line(self, path, mapping, tmp_path):
        text = GENERATED_CONFIG.format(run=tmp_path / "run")
        message = _config_error(tmp_path, text, [f"{path}={'{minutes: .nan}' if mapping else '.nan'}"])
        assert f": {path}: " in message and "finite" in message, message

    @pytest.mark.parametrize("value", ["inf", "-inf", "nan"])
    @pytest.mark.parametrize("argv, flag", FLOAT_OPTIONS, ids=[f"{a[0]} {f}" for a, f in FLOAT_OPTIONS])
    def test_in_any_float_option_of_a_command(self, argv, flag, value, places, capsys, monkeypatch):
        code, err = call([a.format(**places) for a in argv] + [f"{flag}={value}"], capsys, monkeypatch)
        assert_one_line_error(code, err, f"{flag}: ", "finite")

    @pytest.mark.parametrize("limit", ["minutes=nan", "usd=nan", "usd=.inf", "tokens=.inf", "minutes=-.inf", "tokens=nan"])
    def test_in_a_budget(self, limit, places, capsys, monkeypatch):
        code, err = call([a.format(**places) for a in ANNOTATE] + ["--budget", limit], capsys, monkeypatch)
        assert_one_line_error(code, err, "--budget: ", f"{limit.split('=')[0]} must be positive and finite")
        assert not places["run"].exists()


class TestSizesHaveBounds:
    @pytest.mark.parametrize("path", _int_fields(RunConfig))
    def test_every_integer_field_of_a_config_has_an_upper_bound(self, path, tmp_path):
        message = _config_error(tmp_path, _with(path, 10**20, tmp_path / "run"))
        assert f": {path}: " in message and "less than" in message, message

    @pytest.mark.parametrize("path", ["student.epochs", "student.warmup"])
    def test_float_sizes_have_an_upper_bound(self, path, tmp_path):
        message = _config_error(tmp_path, _with(path, 1.0e308, tmp_path / "run"))
        assert f": {path}: " in message and "less than" in message, message

    @pytest.mark.parametrize("argv, flag", INT_OPTIONS, ids=[f"{a[0]} {f}" for a, f in INT_OPTIONS])
    def test_every_integer_option_of_a_command_has_an_upper_bound(self, argv, flag, places, capsys, monkeypatch):
        code, err = call([a.format(**places) for a in argv] + [flag, str(10**20)], capsys, monkeypatch)
        assert_one_line_error(code, err, f"{flag}: ", "less than")

    @pytest.mark.parametrize("value", [-1, 2**32])
    @pytest.mark.parametrize("path", ["seed", "data.seed"])
    def test_a_seed_outside_numpys_range_is_refused(self, path, value, tmp_path):
        message = _config_error(tmp_path, _with(path, value, tmp_path / "run"))
        assert f": {path}: Input should be" in message, message

    @pytest.mark.timeout(60)  # before the bound, drawing 10**20 distinct problems ran for ever
    @pytest.mark.parametrize("flag", ["--n-train", "--n-test", "--n-dev"])
    def test_generated_data_sizes_have_an_upper_bound(self, flag, tmp_path, capsys, monkeypatch):
        sizes = {"--n-train": "2", "--n-test": "2", "--n-dev": "0", flag: str(10**20)}
        args = ["data", "generate", "coin_flip", *(x for kv in sizes.items() for x in kv), "--out", str(tmp_path / "gen")]
        code, err = call(args, capsys, monkeypatch)
        assert_one_line_error(code, err, flag.removeprefix("--").replace("-", "_"), "at most 10,000,000")
        assert not (tmp_path / "gen").exists()

    @pytest.mark.parametrize("options", [{"n_words": 2.5}, {"n_words": "four"}, {"test_fraction": "a fifth"}, {"n_words": True}])
    def test_generator_options_of_the_wrong_type_are_refused(self, options):
        from cotdistill.data.generators import generate_split

        with pytest.raises(UserError, match="must be between"):
            generate_split("last_letters", 2, 2, 0, **options)


# (config text after the 6 lines of GENERATED_CONFIG, the key given twice, the line of its second use)
DUPLICATE_KEYS = {
    "a top-level key": ("name: y\n", "name", 7),
    "a field of a section": ("student:\n  epochs: 1\n  lr: 0.1\n  epochs: 30\n", "epochs", 10),
    "a field of a nested section": ("teacher:\n  filters:\n    leak: true\n    leak: false\n", "leak", 10),
    "a whole section": ("student: {lr: 0.1}\nstudent: {epochs: 2}\n", "student", 8),
    "a flow mapping": ("evaluate: {samples: 2, samples: 3}\n", "samples", 7),
    "a mapping in a list": ("study:\n  variants:\n    - {name: a, name: b}\n", "name", 9),
}


class TestDuplicateKeys:
    @pytest.mark.parametrize("case", sorted(DUPLICATE_KEYS))
    def test_a_key_given_twice_names_the_key_and_its_line(self, case, tmp_path):
        extra, key, line = DUPLICATE_KEYS[case]
        message = _config_error(tmp_path, GENERATED_CONFIG.format(run=tmp_path / "run") + extra)
        assert "not valid YAML" in message and f"line {line}," in message and f"duplicate key {key!r}" in message, message

    def test_a_merged_mapping_may_be_overridden(self, tmp_path):
        config = tmp_path / "c.yaml"
        config.write_text(GENERATED_CONFIG.format(run=tmp_path / "run")
                          + "study:\n  variants:\n    - &a {name: a, set: [seed=1]}\n    - {<<: *a, name: b}\n")
        assert [(v.name, v.set) for v in load_config(config).study.variants] == [("a", ["seed=1"]), ("b", ["seed=1"])]


PATH_LIKE_NAMES = ["../../x", "..", ".", "/tmp/elsewhere", "a/b", "a\\b", ".hidden", "-x", "", " x", "x\n", "~/x"]


class TestNamesAreDirectoryNames:
    @pytest.mark.parametrize("name", PATH_LIKE_NAMES)
    def test_a_run_name_that_is_a_path_is_refused(self, name, tmp_path):
        message = _config_error(tmp_path, _with("name", name, tmp_path / "run"))
        assert ": name: a name is used as a directory name" in message, message

    @pytest.mark.parametrize("name", PATH_LIKE_NAMES)
    def test_a_variant_name_that_is_a_path_is_refused(self, name, tmp_path):
        message = _config_error(tmp_path, _with("study", {"variants": [{"name": name}]}, tmp_path / "run"))
        assert ": study.variants.0.name: a name is used as a directory name" in message, message

    @pytest.mark.parametrize("name", ["x", "cpu-math", "run.v2_1", "A1"])
    def test_a_plain_name_gives_its_directory_under_runs(self, name, tmp_path):
        config = tmp_path / "c.yaml"
        config.write_text(_with("name", name, tmp_path / "run").replace(f"run_dir: {tmp_path / 'run'}\n", ""))
        assert load_config(config).run_path == Path("runs") / name


# No timing: the CPU may be shared, and a slow draw is no failure of the code under test.
PROPERTY = dict(deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
YAML_SYNTAX = "[]{}:,-!&*#|>'\"%@`?<=~.+_\\ \t\n0123456789abexyzTFYN"
ANY_TEXT = st.one_of(st.text(), st.text(alphabet=YAML_SYNTAX))


class TestCommandLineValuesProperties:
    """Hypothesis: whatever text a user types after `=`, the result is a value or a one-line UserError
    naming the option, never another exception (3000 examples of a value, 1000 of a whole KEY=VALUE
    item, 1000 set on any field of a whole config)."""

    @settings(max_examples=3000, **PROPERTY)
    @given(text=ANY_TEXT)
    def test_any_text_is_a_value_or_one_line_naming_the_option(self, text):
        try:
            parse_value("--teacher-option n_ctx", text)
        except UserError as e:
            assert str(e).startswith("--teacher-option n_ctx: ") and "\n" not in str(e), e

    @settings(max_examples=1000, **PROPERTY)
    @given(item=ANY_TEXT)
    def test_any_key_value_item_is_a_pair_or_one_line_naming_the_option(self, item):
        try:
            parse_assignment("--budget", item, "minutes=30")
        except UserError as e:
            assert str(e).startswith("--budget ") and "\n" not in str(e), e

    @settings(max_examples=1000, **PROPERTY)
    @given(path=st.sampled_from([p for p, _ in _fields(RunConfig)]), text=ANY_TEXT)
    def test_any_text_set_on_any_field_is_a_config_or_one_line(self, path, text):
        config = Path(__file__).parent.parent / "configs" / "demo.yaml"
        try:
            load_config(config, [f"{path}={text}"])
        except UserError as e:
            message = str(e)
            assert (message.startswith(f"--set {path}") or message.startswith(f"{config}: ")) and "\n" not in message, e
