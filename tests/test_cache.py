"""The teacher cache: every committed answer survives a crash and is found again by its key, and
runs sharing a cache at the same time pay for each request once."""

from __future__ import annotations

import json
import multiprocessing
import sqlite3
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from cotdistill.teachers.cache import CompletionCache, params_key
from cotdistill.core.errors import UserError
from cotdistill.core.sampling import Record, SamplingParams
from cotdistill.teachers.base import Completion
from faultproxy import FaultProxy

GREEDY = SamplingParams(max_tokens=64)
HOT = SamplingParams(temperature=0.7, max_tokens=64)


def test_stored_completion_is_found_after_reopening(tmp_path):
    c = Completion("48 + 24 = 72. The answer is 72.", "stop", prompt_tokens=900, completion_tokens=14, cost_usd=0.001)
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(("t", "h1", GREEDY, 0), c)])
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_many([("t", "h1", GREEDY, 0)]) == {("t", "h1", GREEDY, 0): c}
        assert len(cache) == 1


@pytest.mark.parametrize(
    "other",
    [("u", "h1", GREEDY, 0), ("t", "h2", GREEDY, 0), ("t", "h1", HOT, 0), ("t", "h1", GREEDY, 1)],
    ids=["teacher", "prompt", "params", "sample"],
)
def test_each_part_of_the_key_tells_requests_apart(tmp_path, other):
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(("t", "h1", GREEDY, 0), Completion("a", "stop"))])
        assert cache.get_many([other]) == {}


def test_an_answer_is_never_replaced(tmp_path):
    key = ("t", "h", GREEDY, 0)
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key, Completion("first", "stop"))])
        cache.put_many([(key, Completion("second", "stop"))])
        assert cache.get_many([key])[key].text == "first"


RECORD = Record(temperature=1.0, tokens=4)
RECORDED = {"ids": [7, 8], "sampled_ids": [[7], [8, 2]], "sampled_w": [[1.0], [0.75, 0.25]],
            "top_ids": [[7, 1], [8, 2]], "top_p": [[0.9, 0.05], [0.7, 0.2]]}


def test_a_recording_is_stored_with_its_answer_and_only_that_recording_answers_a_request_for_one(tmp_path):
    key = ("t", "h", HOT, 0)
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key, Completion("first", "stop"))])
        assert cache.get_many([key], RECORD) == {}  # answered, but not recorded: ask again
        assert cache.claim(key, RECORD) and not cache.claim(key)
        cache.put_many([(key, Completion("first", "stop", record=RECORDED))], RECORD)
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_many([key], RECORD)[key].record == RECORDED
        assert cache.get_many([key])[key] == Completion("first", "stop")  # a plain request reads no recording
        assert cache.get_many([key], Record(temperature=0.5, tokens=4)) == {}  # other settings: another recording
        cache.put_many([(key, Completion("second", "stop", record={**RECORDED, "ids": [9]}))], RECORD)
        assert cache.get_many([key], RECORD)[key].record == RECORDED  # a recorded answer is never replaced


def test_a_cache_made_before_recordings_existed_gains_their_columns_and_keeps_its_answers(tmp_path):
    db = sqlite3.connect(tmp_path / "c.sqlite")
    db.execute("CREATE TABLE completions (teacher TEXT NOT NULL, prompt_hash TEXT NOT NULL, params TEXT NOT NULL,"
               " sample INTEGER NOT NULL, text TEXT NOT NULL, finish_reason TEXT NOT NULL, prompt_tokens INTEGER NOT NULL,"
               " completion_tokens INTEGER NOT NULL, cost_usd REAL NOT NULL, created TEXT NOT NULL DEFAULT (datetime('now')),"
               " PRIMARY KEY (teacher, prompt_hash, params, sample))")
    key = ("t", "h", HOT, 0)
    db.execute("INSERT INTO completions VALUES (?, ?, ?, ?, 'old', 'stop', 3, 4, 0, datetime('now'))",
               ("t", "h", params_key(HOT), 0))
    db.commit()
    db.close()
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        assert cache.get_many([key])[key] == Completion("old", "stop", 3, 4)
        cache.put_many([(key, Completion("old", "stop", 3, 4, record=RECORDED))], RECORD)
        assert cache.get_many([key], RECORD)[key].record == RECORDED


def test_cache_uses_write_ahead_logging(tmp_path):
    CompletionCache(tmp_path / "c.sqlite").close()
    db = sqlite3.connect(tmp_path / "c.sqlite")
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_committed_batch_survives_the_writer_being_killed(tmp_path):
    # The writer commits one batch, starts a second transaction, and is SIGKILLed mid-way.
    script = textwrap.dedent(
        f"""
        import os, signal
        from cotdistill.teachers.cache import CompletionCache, params_key
        from cotdistill.core.sampling import Record, SamplingParams
        from cotdistill.teachers.base import Completion
        cache = CompletionCache({str(tmp_path / "c.sqlite")!r})
        cache.put_many([(("t", "h", SamplingParams(), i), Completion(f"answer {{i}}", "stop")) for i in range(3)])
        cache._db.execute("BEGIN")
        cache._db.execute("INSERT INTO completions (teacher, prompt_hash, params, sample, text, finish_reason,"
                          " prompt_tokens, completion_tokens, cost_usd) VALUES ('t', 'x', '{{}}', 9, 'lost', 'stop', 0, 0, 0)")
        os.kill(os.getpid(), signal.SIGKILL)
        """
    )
    proc = subprocess.run([sys.executable, "-c", script], check=False, timeout=60)
    assert proc.returncode == -9
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        assert len(cache) == 3
        got = cache.get_many([("t", "h", SamplingParams(), i) for i in range(3)])
        assert sorted(c.text for c in got.values()) == ["answer 0", "answer 1", "answer 2"]


def test_a_file_that_is_not_a_database_is_a_user_error(tmp_path):
    path = tmp_path / "c.sqlite"
    path.write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(UserError, match="cannot open the teacher cache"):
        CompletionCache(path)


# ---------------------------------------------------------------- runs sharing a cache at once

CLAIMER = """
import sys
from cotdistill.core.sampling import Record, SamplingParams
from cotdistill.teachers.cache import CompletionCache, params_key
cache = CompletionCache(sys.argv[1])
print(cache.claim(("t", "h", SamplingParams(max_tokens=64), 0)), flush=True)
sys.stdin.read()  # the claim is held until stdin closes
"""


def _open_at(path: str, start: float) -> str:
    """Open the cache at `path` once the clock reaches `start`: the error's words, "" if it opened."""
    while time.time() < start:
        pass
    try:
        CompletionCache(path).close()
    except UserError as e:
        return str(e)
    return ""


def test_runs_creating_one_new_cache_at_the_same_moment_all_open_it(tmp_path):
    # Without the opening lock SQLite refused about one opening in four here ("database is locked").
    context = multiprocessing.get_context("fork")
    with context.Pool(3) as pool:
        for round_ in range(12):
            path = str(tmp_path / f"c{round_}.sqlite")
            start = time.time() + 0.3
            assert pool.starmap(_open_at, [(path, start)] * 3) == ["", "", ""]


def test_a_request_another_live_run_claimed_is_left_to_it_until_that_run_dies(tmp_path):
    key = ("t", "h", GREEDY, 0)
    other = subprocess.Popen([sys.executable, "-c", CLAIMER, str(tmp_path / "c.sqlite")],
                             stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline() == "True\n"
        with CompletionCache(tmp_path / "c.sqlite") as cache:
            assert not cache.claim(key)
            other.kill()
            other.wait(timeout=60)
            assert cache.claim(key)  # a dead run's claim is taken over
    finally:
        other.kill()
        other.wait(timeout=60)


def test_an_answered_request_is_not_claimed(tmp_path):
    key = ("t", "h", GREEDY, 0)
    with CompletionCache(tmp_path / "c.sqlite") as cache:
        cache.put_many([(key, Completion("a", "stop"))])
        assert not cache.claim(key)


def test_two_annotate_runs_sharing_a_cache_at_once_ask_for_each_prompt_once(tmp_path, server_root):
    data = tmp_path / "data.jsonl"
    data.write_text("".join(json.dumps({"id": f"q{i}", "question": f"Tom has {i + 2} apples and eats one. How many "
                                        "apples are left?", "answer": str(i + 1), "answer_type": "number"}) + "\n"
                            for i in range(6)))
    with FaultProxy(server_root) as proxy:
        def annotate(run: Path) -> subprocess.Popen:
            return subprocess.Popen(
                [sys.executable, "-m", "cotdistill.cli", "annotate", "--data", str(data), "--out", str(run),
                 "--cache", str(tmp_path / "shared.sqlite"), "--teacher", f"openai:gemma@{proxy.url}",
                 "--teacher-option", "chat=false", "--teacher-option", "concurrency=1", "--exemplars", "1",
                 "--max-tokens", "8", "--batch-size", "1", "--quiet"],
                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)

        runs = [tmp_path / "a", tmp_path / "b"]
        procs = [annotate(run) for run in runs]
        errors = [p.communicate(timeout=300)[1] for p in procs]
        assert [p.returncode for p in procs] == [0, 0], errors
        assert proxy.forwarded == 6, errors  # 12 when both runs asked for everything
    stages = [json.loads((run / "manifest.json").read_text())["stages"]["annotate"] for run in runs]
    assert sum(s["teacher_calls"] for s in stages) == 6 and all(s["teacher_calls"] + s["cached"] == 6 for s in stages)
    texts = [sorted(json.loads(line)["text"] for line in (run / "annotations.jsonl").read_text().splitlines()) for run in runs]
    assert texts[0] == texts[1] and len(texts[0]) == 6
