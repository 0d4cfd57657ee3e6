"""The embedded models: assembled once from PyPI part packages, verified, cached, listed by the CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import subprocess
import sys

import pytest

from cotdistill.core import catalogue
from cotdistill.models import embedded
from cotdistill.core import hashing
from cotdistill.core.errors import UserError

GEMMA = catalogue.MODELS["gemma-3-270m"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "models"


@pytest.fixture
def fake_model(tmp_path, monkeypatch):
    """A small model made of two real part packages on sys.path, registered as 'embedded:tiny'."""
    chunks = [b"GGUF" + os.urandom(1000), os.urandom(777)]
    for i, chunk in enumerate(chunks, 1):
        pkg = tmp_path / "site" / f"cotdistill_test_part{i}"
        (pkg / "data").mkdir(parents=True)
        (pkg / "__init__.py").write_text("")
        (pkg / "data" / f"part{i:02d}.bin").write_bytes(chunk)
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    blob = b"".join(chunks)
    model = dataclasses.replace(
        GEMMA,
        name="tiny",
        parts=(("cotdistill_test_part1", "part01.bin"), ("cotdistill_test_part2", "part02.bin")),
        size=len(blob),
        sha256=hashlib.sha256(blob).hexdigest(),
    )
    monkeypatch.setitem(catalogue.MODELS, "tiny", model)
    return model, blob, tmp_path / "site"


def test_three_models_are_listed_with_what_users_need_to_know():
    models = {m.spec: m for m in catalogue.list_models()}
    assert set(models) == {"embedded:gemma-3-270m", "embedded:qwen2.5-0.5b", "embedded:qwen2.5-1.5b"}
    assert not models["embedded:gemma-3-270m"].chat
    assert models["embedded:qwen2.5-0.5b"].chat and models["embedded:qwen2.5-1.5b"].chat
    assert {m.extra for m in models.values()} == {"embedded"}  # the demo needs all three
    for m in models.values():
        assert len(m.sha256) == 64 and m.size > 100_000_000 and m.provenance and m.packages


def test_model_path_assembles_verifies_and_caches(cache, fake_model):
    model, blob, _ = fake_model
    path = embedded.model_path("embedded:tiny")
    assert path.parent == cache
    assert path.read_bytes() == blob
    assert embedded.is_cached(model)
    assert [p.name for p in cache.iterdir() if p.name.endswith(".partial")] == []


def test_a_verified_model_is_not_rehashed_on_later_calls(cache, fake_model, monkeypatch):
    first = embedded.model_path("tiny")

    def no_hashing(path):
        raise AssertionError("re-hashed a file whose verification is recorded")

    monkeypatch.setattr(embedded, "stream_sha256", no_hashing)
    assert embedded.model_path("tiny") == first


def test_a_damaged_cached_file_is_detected_and_rebuilt(cache, fake_model):
    _, blob, _ = fake_model
    path = embedded.model_path("tiny")
    damaged = bytearray(blob)
    damaged[10] ^= 0xFF
    path.write_bytes(bytes(damaged))
    assert embedded.model_path("tiny").read_bytes() == blob


def test_altered_parts_fail_with_the_sha256_and_leave_no_partial_file(cache, fake_model):
    model, _, site = fake_model
    part = site / "cotdistill_test_part2" / "data" / "part02.bin"
    data = bytearray(part.read_bytes())
    data[0] ^= 0xFF
    part.write_bytes(bytes(data))
    with pytest.raises(UserError, match="sha256.*pip install --force-reinstall"):
        embedded.model_path("tiny")
    assert not embedded.cached_path(model).exists()
    assert list(cache.iterdir()) == []


def test_parts_of_the_wrong_size_are_reported_before_hashing(cache, fake_model):
    _, _, site = fake_model
    (site / "cotdistill_test_part2" / "data" / "part02.bin").write_bytes(b"short")
    with pytest.raises(UserError, match="hold 1009 bytes, expected 1781"):
        embedded.model_path("tiny")


@pytest.mark.parametrize("name, extra", [("gemma-3-270m", "embedded"), ("qwen2.5-1.5b", "embedded")])
def test_a_missing_package_names_the_exact_pip_command(cache, monkeypatch, name, extra):
    absent = dataclasses.replace(catalogue.MODELS[name], parts=(("cotdistill_no_such_part", "x.bin"),))
    monkeypatch.setitem(catalogue.MODELS, name, absent)
    with pytest.raises(UserError, match=rf"not installed; install it with: pip install 'cotdistill\[{extra}\]'$"):
        embedded.model_path(f"embedded:{name}")


def test_an_unknown_name_lists_the_known_ones():
    with pytest.raises(UserError, match="unknown embedded model 'embedded:llama-70b'; known: embedded:gemma-3-270m"):
        embedded.model_path("embedded:llama-70b")


def test_file_sha256_is_remembered_until_the_file_changes(cache, tmp_path):
    f = tmp_path / "model.gguf"
    f.write_bytes(b"one")
    assert hashing.file_sha256(f) == hashlib.sha256(b"one").hexdigest()
    f.write_bytes(b"two!")
    assert hashing.file_sha256(f) == hashlib.sha256(b"two!").hexdigest()


@pytest.mark.skipif(not embedded.is_installed(GEMMA), reason="gemma-3-270m packages not installed (pip install 'cotdistill[embedded]')")
def test_the_real_gemma_assembles_to_its_pinned_hash(cache):
    path = embedded.model_path("embedded:gemma-3-270m")
    assert path.stat().st_size == GEMMA.size
    assert hashing.stream_sha256(path) == GEMMA.sha256
    assert path.read_bytes()[:4] == b"GGUF"


def _cli(*args, env=None):
    return subprocess.run(
        [sys.executable, "-m", "cotdistill.cli", *args], capture_output=True, text=True, timeout=120,
        env={**os.environ, **(env or {})},
    )


def test_cli_models_list_shows_each_model_and_its_state(tmp_path):
    r = _cli("models", "list", env={"COTDISTILL_CACHE": str(tmp_path), "COLUMNS": "120"})
    assert r.returncode == 0, r.stderr
    for m in catalogue.list_models():
        assert m.spec in r.stdout
    assert "installed" in r.stdout and "cached" in r.stdout and str(tmp_path) in r.stdout


def test_cli_models_path_of_an_unknown_model_is_one_line_and_exit_2():
    r = _cli("models", "path", "embedded:nope")
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error: unknown embedded model") and len(r.stderr.strip().splitlines()) == 1
