"""The command line runs on jemalloc where the system has it (core/allocator.py), and on glibc's malloc
when asked to or when it has not."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cotdistill.core.allocator import jemalloc_library

CHILD = """
from cotdistill.__main__ import onto_jemalloc
from cotdistill.core.allocator import in_use
from cotdistill.core.rundir import environment
onto_jemalloc()
print(in_use(), environment()["malloc"])
"""
# .ci/run installs it, so CI never skips these.
IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
needs_jemalloc = pytest.mark.skipif(jemalloc_library() is None and not IN_CI, reason="no jemalloc here (apt install libjemalloc2)")


def child(setting: str | None, code: str = CHILD, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k not in ("LD_PRELOAD", "COTDISTILL_ALLOCATOR")}
    if setting is not None:
        env["COTDISTILL_ALLOCATOR"] = setting
    return subprocess.run([sys.executable, "-c", code, *args], env=env, capture_output=True, text=True, timeout=120)


@needs_jemalloc
@pytest.mark.parametrize("setting", [None, "auto", "jemalloc"])
def test_a_command_restarts_itself_on_jemalloc_once_and_the_manifest_says_so(setting):
    r = child(setting)
    assert r.returncode == 0 and r.stdout.split() == ["jemalloc", "jemalloc"], r.stderr


def test_system_keeps_glibcs_malloc():
    r = child("system")
    assert r.returncode == 0 and r.stdout.split() == ["system", "system"], r.stderr


def test_an_unknown_setting_is_one_line_and_exit_2_before_anything_runs():
    r = subprocess.run([sys.executable, "-m", "cotdistill", "--help"], capture_output=True, text=True, timeout=120,
                       env={**os.environ, "COTDISTILL_ALLOCATOR": "tcmalloc"})
    assert r.returncode == 2 and r.stderr.strip() == "error: COTDISTILL_ALLOCATOR='tcmalloc': use one of auto, jemalloc, system"
    assert r.stdout == ""


def test_jemalloc_required_but_missing_says_how_to_install_it(monkeypatch):
    from cotdistill.core import allocator
    from cotdistill.core.errors import UserError

    monkeypatch.setattr(allocator, "jemalloc_library", lambda: None)
    monkeypatch.setenv("COTDISTILL_ALLOCATOR", "jemalloc")
    monkeypatch.delenv("LD_PRELOAD", raising=False)
    with pytest.raises(UserError, match="apt install libjemalloc2"):
        allocator.restart_with_jemalloc()
    monkeypatch.setenv("COTDISTILL_ALLOCATOR", "auto")
    allocator.restart_with_jemalloc()  # auto: stays on glibc's, no restart (this test process goes on)
