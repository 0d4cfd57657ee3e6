"""A persistent cache of teacher completions, so that nothing already answered is paid for twice.

SQLite in WAL mode: each answer is committed as soon as the teacher returns it, so a process
killed at any moment (Ctrl-C, kill -9, out of memory) loses only the answers still being written,
and a rerun finds every committed one. Keyed by (teacher name, prompt hash, sampling parameters, sample index): a
different model, prompt, temperature or sample is a different request.

A completion may carry the teacher's recorded probabilities (Request.record): stored beside its text
in the same row, committed with it. A run that needs a recording the cached row lacks (or one made
with other settings) asks the teacher again; the seeded request writes the same text, and the row
gains its recording (the only way a row is ever updated).

Runs may share one cache at the same time (`--cache`, a study's variants) and never pay twice for
a request: before asking the teacher, a run claims the request's key (`claim`, a row in `claims`
naming the process by pid and start time); another run that needs the same answer skips it and
waits for it to appear, doing its other requests meanwhile. A claim dies with its process, however
it ends: the next run that needs that key takes it over. SQLite serialises the writes; the
processes must be on one machine (WAL mode does not work on network file systems anyway).
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable
from pathlib import Path

from cotdistill.core.errors import UserError
from cotdistill.core.locks import file_lock
from cotdistill.core.sampling import Record, SamplingParams
from cotdistill.teachers.base import Completion

_SCHEMA = """
CREATE TABLE IF NOT EXISTS completions (
    teacher TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    sample INTEGER NOT NULL,
    text TEXT NOT NULL,
    finish_reason TEXT NOT NULL,
    prompt_tokens INTEGER NOT NULL,
    completion_tokens INTEGER NOT NULL,
    cost_usd REAL NOT NULL,
    created TEXT NOT NULL DEFAULT (datetime('now')),
    record TEXT,
    record_key TEXT,
    PRIMARY KEY (teacher, prompt_hash, params, sample)
)
"""

_CLAIMS = """
CREATE TABLE IF NOT EXISTS claims (
    teacher TEXT NOT NULL,
    prompt_hash TEXT NOT NULL,
    params TEXT NOT NULL,
    sample INTEGER NOT NULL,
    owner TEXT NOT NULL,
    PRIMARY KEY (teacher, prompt_hash, params, sample)
)
"""
_WHERE_KEY = "teacher=? AND prompt_hash=? AND params=? AND sample=?"
# The row that answers a request, given the recording it wants (?5: a Record.key(), NULL for none).
_ANSWERS = f"{_WHERE_KEY} AND (?5 IS NULL OR record_key = ?5)"

Key = tuple[str, str, SamplingParams, int]  # (teacher, prompt_hash, params, sample)


def params_key(params: SamplingParams) -> str:
    return json.dumps(params.to_dict(), sort_keys=True)


def _row_key(key: Key) -> tuple[str, str, str, int]:
    teacher, phash, params, sample = key
    return teacher, phash, params_key(params), sample


def _process_start(pid: int) -> str | None:
    """When `pid` started (clock ticks since boot, from /proc), "" where /proc is absent, None for
    a process that is gone or a zombie. With the pid it names a process: pids are reused."""
    try:
        with open(f"/proc/{pid}/stat", encoding="ascii", errors="replace") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except FileNotFoundError:
        return None if os.path.isdir("/proc/self") else ""
    except OSError:
        return None
    return None if fields[0] == "Z" else fields[19]


def process_id() -> str:
    """This process as a claim records its owner: pid and start time, "pid:start"."""
    return f"{os.getpid()}:{_process_start(os.getpid()) or ''}"


def _alive(owner: str) -> bool:
    """Whether the process a claim names ("pid:start") still runs."""
    pid, _, start = owner.partition(":")
    now = _process_start(int(pid))
    if now is None:
        return False
    if now:
        return now == start
    try:  # no /proc: only the pid can be checked
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    return True


class CompletionCache:
    """get_many / put_many over one SQLite file; use as a context manager or call close()."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self._lock = threading.Lock()
        self._owner = process_id()
        self._claimed: set[tuple[str, str, str, int]] = set()  # released on close
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # Two runs opening a new cache at once: SQLite answers the switch to WAL with "database is
        # locked" at once, without waiting, so the opening is one process at a time.
        opening = self.path.with_name(self.path.name + ".lock")
        try:
            with file_lock(opening, wait=True):
                # HTTP teachers report answers from their event loop's thread: writes are serialised here.
                self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
                self._db.execute("PRAGMA journal_mode=WAL")
                # NORMAL is durable against a killed process in WAL mode (only a power cut can lose
                # the last commits), and much faster than FULL.
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.execute(_SCHEMA)
                self._db.execute(_CLAIMS)
                columns = {row[1] for row in self._db.execute("PRAGMA table_info(completions)")}
                for column in ("record", "record_key"):  # a cache made before recordings existed
                    if column not in columns:
                        self._db.execute(f"ALTER TABLE completions ADD COLUMN {column} TEXT")
                self._db.commit()
        except OSError as e:
            raise UserError(f"{opening}: cannot create the teacher cache's lock file ({e.strerror}); "
                            "choose a writable --cache (or teacher.cache)") from None
        except sqlite3.DatabaseError as e:
            raise self._write_error(e) or UserError(
                f"{self.path}: cannot open the teacher cache ({e}); move it away to start afresh") from None

    def get_many(self, keys: Iterable[Key], record: Record | None = None) -> dict[Key, Completion]:
        """The cached completion of each key that has one (with `record`: one with that recording)."""
        found = {}
        wanted = record.key() if record else None
        for key in keys:
            row = self._db.execute(
                f"SELECT text, finish_reason, prompt_tokens, completion_tokens, cost_usd, record FROM completions WHERE {_ANSWERS}",
                (*_row_key(key), wanted),
            ).fetchone()
            if row:
                found[key] = Completion(*row[:5], record=json.loads(row[5]) if wanted else None)
        return found

    def put_many(self, items: Iterable[tuple[Key, Completion]], record: Record | None = None) -> None:
        """Store answers in one committed transaction, ending their claims. An answer is never
        replaced, except by the same request answered again with the recording it lacked."""
        rows = [
            (t, h, params_key(p), s, c.text, c.finish_reason, c.prompt_tokens, c.completion_tokens, c.cost_usd,
             json.dumps(c.record, separators=(",", ":")) if record and c.record else None,
             record.key() if record and c.record else None)
            for (t, h, p, s), c in items
        ]
        try:
            with self._lock, self._db:
                self._db.executemany(
                    "INSERT INTO completions (teacher, prompt_hash, params, sample, text, finish_reason, prompt_tokens,"
                    " completion_tokens, cost_usd, record, record_key) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT (teacher, prompt_hash, params, sample) DO UPDATE SET text=excluded.text, finish_reason=excluded.finish_reason,"
                    " prompt_tokens=excluded.prompt_tokens, completion_tokens=excluded.completion_tokens,"
                    " cost_usd=excluded.cost_usd, record=excluded.record, record_key=excluded.record_key"
                    " WHERE excluded.record_key IS NOT NULL AND completions.record_key IS NOT excluded.record_key",
                    rows,
                )
                self._db.executemany(f"DELETE FROM claims WHERE {_WHERE_KEY}", [row[:4] for row in rows])
        except sqlite3.OperationalError as e:
            raise self._write_error(e) or e from None
        self._claimed.difference_update(row[:4] for row in rows)

    def _write_error(self, e: sqlite3.DatabaseError) -> UserError | None:
        """SQLite's words for a full disk, a file size limit or a read-only place as one line naming
        the cache (the answers committed before stay; a rerun resumes from them); None otherwise."""
        message = str(e)
        if "disk is full" in message:
            reason, fix = "the disk is full", "free some space, then rerun the same command to resume"
        elif "disk I/O error" in message:
            reason = "a disk I/O error: a full disk, a file size limit (ulimit -f) or a failing disk"
            fix = "free some space or raise the limit, then rerun the same command to resume"
        elif "readonly database" in message:
            reason, fix = "it is read-only", "choose a writable --cache (or teacher.cache)"
        else:
            return None
        return UserError(f"{self.path}: cannot write the teacher cache ({reason}; SQLite: {message}); {fix}")

    def claim(self, key: Key, record: Record | None = None) -> bool:
        """Whether this process may ask the teacher for `key` now: True when it is not answered (with
        `record`: not with that recording) and no other live process has claimed it (the claim is then
        this process's, committed); False means: wait for its answer (get_many), or claim again later
        in case its claimer died."""
        row = _row_key(key)
        wanted = record.key() if record else None
        if not self._claimable(row, wanted):  # read first: waiting runs poll without taking the write lock
            return False
        with self._lock, self._db:
            self._db.execute("BEGIN IMMEDIATE")  # check and claim in one write transaction
            if not self._claimable(row, wanted):
                return False
            self._db.execute("INSERT OR REPLACE INTO claims (teacher, prompt_hash, params, sample, owner)"
                             " VALUES (?, ?, ?, ?, ?)", (*row, self._owner))
            self._claimed.add(row)
            return True

    def _claimable(self, row: tuple[str, str, str, int], wanted: str | None) -> bool:
        if self._db.execute(f"SELECT 1 FROM completions WHERE {_ANSWERS}", (*row, wanted)).fetchone():
            return False
        claim = self._db.execute(f"SELECT owner FROM claims WHERE {_WHERE_KEY}", row).fetchone()
        return claim is None or claim[0] == self._owner or not _alive(claim[0])

    def __len__(self) -> int:
        return self._db.execute("SELECT COUNT(*) FROM completions").fetchone()[0]

    def close(self) -> None:
        """Release the claims this process did not answer (a stopped run), then close."""
        try:
            if self._claimed:
                with self._lock, self._db:
                    self._db.executemany(f"DELETE FROM claims WHERE {_WHERE_KEY} AND owner=?",
                                         [(*row, self._owner) for row in self._claimed])
        finally:
            self._db.close()

    def __enter__(self) -> CompletionCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
