"""Untrusted input, a corpus of it: every case is one line on stderr naming the file or field and
what to do, exit code 2, no traceback, and nothing already in the run directory destroyed.

Each bad file is fed to every command that reads that kind of file; the commands run in-process
through the real entry point (`cotdistill.cli.main`), as a user's shell would call it."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

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


# ---------------------------------------------------------------- terminals and logs (issue 27)
# Output that cannot be written is one line and a non-zero exit, tables stay readable on any
# terminal, and a log file gets plain progress lines without the libraries' warnings. These run
# the console script as a user's shell would, with real file descriptors.

NON_ASCII = {**GOOD, "question": "Combien font 1 + 1 ? Réponds en français."}
# Commands that print their results, with {path} and {tmp} filled in.
PRINTING = {
    "data show": ["data", "show", "{path}"],
    "data stats": ["data", "stats", "{path}"],
    "data prepare": ["data", "prepare", "{path}", "--out", "{tmp}/préparé.jsonl"],
}


def cli(args: list[str], stdout: Any = subprocess.PIPE, env: dict[str, str] | None = None,
        preexec_fn: Any = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "cotdistill.cli", *args], stdout=stdout, stderr=subprocess.PIPE,
                          text=True, env={**os.environ, **(env or {})}, preexec_fn=preexec_fn, timeout=300, check=False)


def non_ascii_data(tmp_path: Path) -> Path:
    """A dataset whose name and question are not ASCII (what every command above prints)."""
    path = tmp_path / "données.jsonl"
    path.write_text(json.dumps(NON_ASCII, ensure_ascii=False) + "\n", encoding="utf-8")
    return path


def close_stdout() -> None:
    os.close(1)


@pytest.mark.parametrize("where", ["closed", "full device", "ascii terminal"])
@pytest.mark.parametrize("command", sorted(PRINTING))
def test_output_that_cannot_be_written_is_one_line(command, where, tmp_path):
    args = [a.format(path=non_ascii_data(tmp_path), tmp=tmp_path) for a in PRINTING[command]]
    if where == "closed":
        proc = cli(args, preexec_fn=close_stdout)
        needle = "standard output is closed"
    elif where == "full device":
        with open("/dev/full", "w") as full:
            proc = cli(args, stdout=full)
        needle = "No space left on device"
    else:
        proc = cli(args, env={"PYTHONIOENCODING": "ascii"})
        needle = "PYTHONIOENCODING=utf-8"
    assert_one_line_error(proc.returncode, proc.stderr, needle)
    assert len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize("columns", ["5", "20", "60"])
@pytest.mark.parametrize("command", ["data stats", "models list"])
def test_tables_are_readable_on_a_narrow_terminal(command, columns, tmp_path, capsys, monkeypatch):
    path = tmp_path / "good.jsonl"
    path.write_text(json.dumps(GOOD) + "\n")
    monkeypatch.setenv("COLUMNS", columns)
    monkeypatch.setattr(sys, "argv", ["cotdistill", *command.split(), *([str(path)] if command == "data stats" else [])])
    with pytest.raises(SystemExit) as exit_info:
        main()
    out = capsys.readouterr().out
    assert exit_info.value.code == 0, out
    assert "…" not in out, out  # no cell cut short
    if command == "data stats":
        for label, value in [("format", r"\w+"), ("examples", "1"), ("answer type number", "1"), ("skipped", "0")]:
            assert re.search(rf"^\s*{label}\s+{value}\s*$", out, re.MULTILINE), out


def test_a_training_log_has_plain_progress_lines_and_no_library_warnings(tmp_path):
    pytest.importorskip("transformers")
    from tiny_lm import tiny_tokenizer
    from transformers import LlamaConfig, LlamaForCausalLM

    from cotdistill.prompts import student_input

    rows = [{"id": f"q{i}", "question": f"What is {i} plus 2?", "rationale": f"{i} + 2 = {i + 2}.",
             "answer": str(i + 2), "answer_type": "number"} for i in range(16)]
    data = tmp_path / "distill.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows))
    tokenizer = tiny_tokenizer([student_input(r["question"]) + " " + r["rationale"] + " The answer is 1." for r in rows])
    config = LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                         num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=128,
                         pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id, bos_token_id=None)
    student = tmp_path / "student"
    LlamaForCausalLM(config).save_pretrained(student)
    tokenizer.save_pretrained(student)
    log = tmp_path / "train.log"
    with log.open("w") as f:
        proc = subprocess.run(
            [sys.executable, "-m", "cotdistill.cli", "train", "--data", str(data), "--out", str(tmp_path / "out"),
             "--student", str(student), "--max-steps", "3", "--batch-size", "4", "--bf16", "false"],
            stdout=f, stderr=subprocess.STDOUT, env={**os.environ, "OMP_NUM_THREADS": "1"}, timeout=600, check=False)
    text = log.read_bytes().decode()  # as written: read_text() would turn each "\r" into a newline
    assert proc.returncode == 0, text
    assert "\r" not in text and "\x1b" not in text, text
    assert "Warning" not in text, text  # e.g. the FutureWarning transformers gives with LoRA (the default)
    assert re.search(r"^train \(loss [0-9.]+.*\): 3/3, .*/min, ETA ", text, re.MULTILINE), text
