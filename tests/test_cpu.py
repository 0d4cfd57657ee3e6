"""What the CPU decides: llama.cpp's weight buffers (the AMX crash) and the cores it counts.

The decisions are tested with the flags of the CPU kinds this project meets (given, not read from
this machine), and on this machine's real llama.cpp: the setting reaches the model it loads."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import pytest

from cotdistill.core import cpu as cpu_mod
from cotdistill.core.cpu import EXTRA_BUFFERS_ENV, CpuInfo, llama_extra_buffers, parse_cpuinfo
from cotdistill.core.errors import UserError

SAPPHIRE_RAPIDS = frozenset("fpu sse2 avx2 avx512f avx512_bf16 avx512_fp16 amx_bf16 amx_tile amx_int8".split())
EPYC_AVX512 = frozenset("fpu sse2 avx2 avx512f avx512_bf16".split())
EPYC_AVX2 = frozenset("fpu sse2 avx2 fma".split())


def info(flags: frozenset[str]) -> CpuInfo:
    return CpuInfo(model="test cpu", flags=flags, cores=2)


def test_amx_cpus_load_llama_cpp_without_extra_buffers():
    extra, why = llama_extra_buffers(info(SAPPHIRE_RAPIDS), env={})
    assert not extra and "20824" in why


@pytest.mark.parametrize("flags", [EPYC_AVX512, EPYC_AVX2])
def test_cpus_without_amx_keep_the_faster_repacked_weights(flags):
    assert llama_extra_buffers(info(flags), env={})[0]


def test_the_environment_overrides_the_cpu_either_way():
    assert llama_extra_buffers(info(SAPPHIRE_RAPIDS), env={EXTRA_BUFFERS_ENV: "on"})[0]
    assert not llama_extra_buffers(info(EPYC_AVX2), env={EXTRA_BUFFERS_ENV: "off"})[0]


def test_cpu_kinds_and_bf16_speed_follow_the_flags():
    assert [info(f).kind for f in (SAPPHIRE_RAPIDS, EPYC_AVX512, EPYC_AVX2)] == ["AMX", "AVX512-BF16", "AVX2"]
    assert [info(f).fast_bf16 for f in (SAPPHIRE_RAPIDS, EPYC_AVX512, EPYC_AVX2)] == [True, True, False]


def test_cpuinfo_parsing_counts_physical_cores_not_threads():
    block = "processor : {p}\nmodel name : Intel Xeon\nflags : avx2 amx_tile\nphysical id : 0\ncore id : {c}\n\n"
    text = "".join(block.format(p=p, c=p // 2) for p in range(4))  # 2 cores x 2 hyper-threads
    parsed = parse_cpuinfo(text, allowed=4)
    assert (parsed.model, parsed.cores, parsed.amx) == ("Intel Xeon", 2, True)


# ---------------------------------------------------------------- on the real llama.cpp


@pytest.fixture(scope="module")
def gemma_gguf() -> Path:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (pip install 'cotdistill[llama]')")
    from cotdistill.core import catalogue
    from cotdistill.models import embedded

    if not embedded.is_installed(catalogue.MODELS["gemma-3-270m"]):
        pytest.skip("embedded gemma-3-270m is not installed (pip install 'cotdistill[embedded]')")
    return embedded.model_path("embedded:gemma-3-270m")


@pytest.mark.parametrize("flags", [SAPPHIRE_RAPIDS, EPYC_AVX2], ids=["amx", "avx2"])
def test_the_decision_reaches_the_model_llama_cpp_loads(gemma_gguf, monkeypatch, flags):
    """The model is loaded as decided for the pretended CPU; it also decodes, unless that decision
    would crash the real one (an AMX CPU pretending to be an AVX2 one gets the AMX buffers)."""
    from cotdistill.teachers import llamacpp_load

    real_amx = cpu_mod.cpu().amx
    monkeypatch.delenv(EXTRA_BUFFERS_ENV, raising=False)
    monkeypatch.setattr(cpu_mod, "cpu", lambda: info(flags))
    llm = llamacpp_load.load_llama(gemma_gguf, sha256="x", check=False, n_ctx=64, verbose=False)
    try:
        assert llm.model_params.use_extra_bufts is (flags is EPYC_AVX2)
        if not (real_amx and llm.model_params.use_extra_bufts):  # llama.cpp #20824: a segfault, not a failure
            assert llm.create_completion("2 + 2 =", max_tokens=2, temperature=0.0)["choices"][0]["text"]
    finally:
        llm.close()
    import llama_cpp.llama_cpp as lib

    assert lib.llama_model_default_params().use_extra_bufts  # the library default is left as it was


def test_the_probe_runs_once_per_model_and_cpu(gemma_gguf, monkeypatch, tmp_path):
    from cotdistill.teachers import llamacpp_load

    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path))
    calls = []
    real_run = subprocess.run
    monkeypatch.setattr(llamacpp_load.subprocess, "run", lambda *a, **k: calls.append(a) or real_run(*a, **k))
    llamacpp_load.probe(gemma_gguf, "a" * 64, extra=False)
    llamacpp_load.probe(gemma_gguf, "a" * 64, extra=False)
    assert len(calls) == 1  # the second time the verdict comes from the cache
    if cpu_mod.cpu().amx:  # here llama.cpp's AMX buffers crash (#20824): the probe is there to find that
        with pytest.raises(UserError, match=f"crashed \\(SIGSEGV\\).*{EXTRA_BUFFERS_ENV}=off"):
            llamacpp_load.probe(gemma_gguf, "a" * 64, extra=True)
    else:
        llamacpp_load.probe(gemma_gguf, "a" * 64, extra=True)
    assert len(calls) == 2  # another setting is another probe


def test_a_crash_in_native_code_is_a_message_naming_cause_and_fix(gemma_gguf, monkeypatch, tmp_path):
    """Fault injection: the probe's child dies of SIGSEGV, as llama.cpp does on an AMX CPU."""
    from cotdistill.teachers import llamacpp_load

    monkeypatch.setenv("COTDISTILL_CACHE", str(tmp_path))
    monkeypatch.setattr(llamacpp_load.subprocess, "run",
                        lambda cmd, **k: subprocess.CompletedProcess(cmd, -signal.SIGSEGV, "", ""))
    with pytest.raises(UserError, match=f"crashed \\(SIGSEGV\\).*{EXTRA_BUFFERS_ENV}=off"):
        llamacpp_load.probe(gemma_gguf, "b" * 64, extra=True)
    assert not (tmp_path / "models" / "llamacpp-probes.json").exists()  # a crash is not remembered as ok
