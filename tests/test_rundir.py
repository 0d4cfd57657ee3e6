"""One run directory, one writer: a second process is refused at once, naming the holder; a killed
holder blocks nobody; an unwritable directory is an error before any work starts."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill.core.errors import UserError
from cotdistill.core.locks import Busy, file_lock
from cotdistill.core.rundir import RunDir

HOLD = """
import sys, time
from cotdistill.core.rundir import RunDir
with RunDir(sys.argv[1]).lock():
    print("locked", flush=True)
    time.sleep(120)
"""


def holder(run: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(run)], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline().strip() == "locked"
    return proc


def test_a_second_writer_is_refused_naming_the_holder_and_a_killed_holder_blocks_nobody(tmp_path):
    run = tmp_path / "run"
    proc = holder(run)
    try:
        t0 = time.monotonic()
        with pytest.raises(UserError, match=f"being written by another process \\(pid {proc.pid}"):
            with RunDir(run).lock():
                pass
        assert time.monotonic() - t0 < 5  # refused at once, not after a wait
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    with RunDir(run).lock():  # the kernel released the dead holder's lock
        pass


def test_the_lock_is_reentrant_within_one_process(tmp_path):
    run = RunDir(tmp_path / "run")
    with run.lock(), run.lock():
        run.record_stage("data", status="done")
    with run.lock():
        pass


WAIT_HOLD = """
import sys, time
from pathlib import Path
from cotdistill.core.locks import file_lock
with file_lock(Path(sys.argv[1]), wait=True, note="converting"):
    print("locked", flush=True)
    time.sleep(2)
"""


def test_one_lock_for_both_uses_waits_or_refuses_and_is_reentrant(tmp_path):
    """The run directory's lock refuses at once, the student conversion's waits for the holder; both
    are re-entrant (the conversion's own lock was not: nested, it waited for itself forever)."""
    lock = tmp_path / "cache" / ".model.lock"
    proc = subprocess.Popen([sys.executable, "-c", WAIT_HOLD, str(lock)], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "locked"
        with pytest.raises(Busy) as refused:
            with file_lock(lock, wait=False):
                pass
        assert refused.value.holder == "converting"
        t0 = time.monotonic()
        with file_lock(lock, wait=True), file_lock(lock, wait=True):
            assert time.monotonic() - t0 > 0.5  # waited for the holder to finish
            assert proc.poll() is not None or proc.wait(timeout=5) == 0
    finally:
        proc.kill()
        proc.wait()


def test_an_unwritable_run_directory_is_a_user_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(UserError, match="cannot write the run directory"):
        with RunDir(tmp_path / "file" / "run").lock():
            pass


def test_the_annotate_command_refuses_a_busy_run_directory_before_loading_the_teacher(tmp_path):
    run = tmp_path / "run"
    data = tmp_path / "d.jsonl"
    data.write_text('{"id": "a", "question": "1+1?", "answer": "2", "answer_type": "number", "source": "t"}\n')
    proc = holder(run)
    try:
        done = subprocess.run([sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run),
                               "--teacher", "gguf:/nonexistent.gguf"], capture_output=True, text=True, timeout=120)
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "being written by another process" in done.stderr  # not "GGUF model file not found": no teacher loaded


def test_temporary_files_are_unique_per_writer(tmp_path):
    """Two writers of one file never rename each other's temporaries away (the old name was fixed)."""
    from cotdistill.core.fileio import write_json_atomic

    target = tmp_path / "manifest.json"
    code = "import sys; from cotdistill.core.fileio import write_json_atomic as w\n[w(sys.argv[1], {'i': i}) for i in range(300)]"
    procs = [subprocess.Popen([sys.executable, "-c", code, str(target)], stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate()[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    write_json_atomic(target, {"i": "last"})
    assert target.read_text().strip().endswith("}") and not list(tmp_path.glob("*.tmp"))


def test_what_a_library_writes_replaces_its_target_only_when_whole(tmp_path):
    """A converted student folder or an exported GGUF: a failed write keeps the old one and leaves no
    temporary; a finished one replaces it, a folder as a whole."""
    from cotdistill.core.fileio import replaced_when_done

    target = tmp_path / "model"
    target.mkdir()
    (target / "old.bin").write_text("old")
    with pytest.raises(RuntimeError), replaced_when_done(target) as tmp:
        tmp.mkdir()
        (tmp / "half.bin").write_text("half")
        raise RuntimeError("the library failed")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and (target / "old.bin").read_text() == "old"
    with replaced_when_done(target) as tmp:
        tmp.mkdir()
        (tmp / "new.bin").write_text("new")
    assert [p.name for p in tmp_path.iterdir()] == ["model"] and [p.name for p in target.iterdir()] == ["new.bin"]
    with replaced_when_done(tmp_path / "m.gguf") as tmp:
        tmp.write_bytes(b"GGUF")
    assert (tmp_path / "m.gguf").read_bytes() == b"GGUF"


def test_a_stage_records_what_it_returned_a_clean_stop_and_a_failure(tmp_path):
    from cotdistill.core.errors import StageStopped

    run = RunDir(tmp_path / "run")
    with run.stage("annotate", fingerprint="f1") as done:
        done.update(n_distill=3)
    stage = run.read_manifest()["stages"]["annotate"]
    assert (stage["status"], stage["fingerprint"], stage["n_distill"]) == ("done", "f1", 3)
    assert stage["seconds"] >= 0 and "peak_rss_gib" in stage

    with pytest.raises(StageStopped), run.stage("annotate", fingerprint="f2"):
        raise StageStopped("budget spent", {"budget": {"tokens": 5}})
    assert run.read_manifest()["stages"]["annotate"] == {
        **run.read_manifest()["stages"]["annotate"], "status": "stopped", "budget": {"tokens": 5}, "fingerprint": "f2"}
    assert "n_distill" not in run.read_manifest()["stages"]["annotate"]  # the earlier attempt's counts are gone

    with pytest.raises(ZeroDivisionError), run.stage("train:cot"):
        1 / 0
    assert run.read_manifest()["stages"]["train:cot"]["status"] == "failed"

    with run.stage("annotate") as done:
        done.update(status="estimated")  # a stage may report a status of its own (a dry run)
    assert run.read_manifest()["stages"]["annotate"]["status"] == "estimated"
