"""Shared test setup: which tests run by default, and where the developer datasets live.

Default run: fast tests only. Tests marked `slow` (minutes, real models) run with `-m slow`;
those also marked `ci` run in CI (CI=true) as a small real-model smoke set.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

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
