"""What this CPU is and can do, read once from /proc/cpuinfo: the one place that looks.

Three decisions hang on it: how many threads llama.cpp gets (physical cores: hyper-threads add
nothing), whether training autocasts to bf16 and evaluation loads students in bf16 (only where
AVX512-BF16 or AMX makes it fast: `bf16_is_faster`), and
whether llama.cpp may use its "extra" weight buffer types (the AMX and repacked-Q4 kernels), which
crash on some AMX CPUs (see `llama_extra_buffers`). Every benchmark names the CPU with `describe`.
"""

from __future__ import annotations

import functools
import os
import platform
from dataclasses import dataclass
from pathlib import Path

AMX_FLAGS = frozenset({"amx_tile", "amx_int8", "amx_bf16"})
BF16_FLAGS = frozenset({"avx512_bf16"}) | AMX_FLAGS

#: Set to "on" or "off" to override the automatic choice of llama.cpp's extra buffer types.
EXTRA_BUFFERS_ENV = "COTDISTILL_LLAMA_EXTRA_BUFFERS"


@dataclass(frozen=True)
class CpuInfo:
    model: str
    flags: frozenset[str]
    cores: int  # physical cores this process may use

    @property
    def x86(self) -> bool:
        return platform.machine().lower() in ("x86_64", "amd64")

    @property
    def amx(self) -> bool:
        return bool(self.flags & AMX_FLAGS)

    @property
    def fast_bf16(self) -> bool:
        return bool(self.flags & BF16_FLAGS)

    @property
    def kind(self) -> str:
        """A short label for benchmark tables: 'AMX', 'AVX512-BF16', 'AVX-512', 'AVX2' or 'other'."""
        if self.amx:
            return "AMX"
        for flag, label in (("avx512_bf16", "AVX512-BF16"), ("avx512f", "AVX-512"), ("avx2", "AVX2")):
            if flag in self.flags:
                return label
        return "other"

    def describe(self) -> str:
        return f"{self.model} ({self.kind}, {self.cores} cores)"


def parse_cpuinfo(text: str, allowed: int) -> CpuInfo:
    """The model name, the flags of the first processor, and the distinct (package, core) pairs."""
    model, flags, cores = "unknown CPU", frozenset(), set()
    phys = core = None
    for line in text.splitlines() + [""]:
        key, _, value = line.partition(":")
        key, value = key.strip(), value.strip()
        if key == "model name" and model == "unknown CPU":
            model = value
        elif key == "flags" and not flags:
            flags = frozenset(value.split())
        elif key == "physical id":
            phys = value
        elif key == "core id":
            core = value
        elif not key and core is not None:
            cores.add((phys, core))
            phys = core = None
    return CpuInfo(model=model, flags=flags, cores=max(1, min(len(cores) or allowed, allowed)))


@functools.cache
def cpu() -> CpuInfo:
    allowed = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    try:
        text = Path("/proc/cpuinfo").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return CpuInfo(model=platform.processor() or "unknown CPU", flags=frozenset(), cores=max(1, allowed))
    return parse_cpuinfo(text, allowed)


def bf16_is_faster() -> tuple[bool, str]:
    """(whether bf16 matmuls beat fp32 on this device, why).

    x86 CPUs without AVX512-BF16/AMX run bf16 matmuls 10-100x slower than fp32, those with them
    2-3x faster. The CPU's own flags decide: timing small matmuls did too, but 0.2 vs 0.3 ms is
    noise, and the same run then trained in bf16 one time and in fp32 the next. On a GPU its bf16
    support decides; elsewhere (ARM, ...) a timing."""
    import torch

    if torch.cuda.is_available():
        return torch.cuda.is_bf16_supported(), "cuda bf16 support"
    info = cpu()
    if info.x86 and info.flags:
        if info.fast_bf16:
            return True, f"{info.kind} CPU: fast bf16 matmuls"
        return False, f"{info.kind} CPU lacks AVX512-BF16 and AMX (bf16 matmuls are slow)"
    return _bf16_timing()


@functools.cache  # once per process: the pipeline's fingerprint and the model load must agree
def _bf16_timing(n: int = 256, repeats: int = 5) -> tuple[bool, str]:
    import time

    import torch

    def seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
        times = []
        for _ in range(repeats):
            t = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - t)
        return sorted(times)[repeats // 2]

    fp32, bf16 = seconds(torch.float32), seconds(torch.bfloat16)
    return bf16 * 1.3 < fp32, f"cpu matmul {n}^3: fp32 {fp32 * 1e3:.1f} ms, bf16 {bf16 * 1e3:.1f} ms"


def physical_cores() -> int:
    return cpu().cores


def llama_extra_buffers(info: CpuInfo | None = None, env: dict[str, str] | None = None) -> tuple[bool, str]:
    """(use llama.cpp's extra weight buffer types?, why).

    llama.cpp stores weights in "extra" buffer types when the CPU has a faster layout for them:
    AMX tiles on Intel Xeons since Sapphire Rapids, repacked Q4 blocks on AVX2/AVX-512. On AMX CPUs
    the first decode of a Q4_K_M model segfaults in ggml_backend_amx_mul_mat (llama.cpp #20824,
    closed unfixed), so they are off there; elsewhere they stay on, being faster (docs/benchmarks.md
    has the cost of turning them off). COTDISTILL_LLAMA_EXTRA_BUFFERS=on|off overrides.
    """
    env = os.environ if env is None else env
    setting = env.get(EXTRA_BUFFERS_ENV, "").strip().lower()
    if setting in ("on", "1", "true"):
        return True, f"{EXTRA_BUFFERS_ENV}={setting}"
    if setting in ("off", "0", "false"):
        return False, f"{EXTRA_BUFFERS_ENV}={setting}"
    info = info or cpu()
    if info.amx:
        return False, "AMX CPU: llama.cpp's AMX buffers crash on Q4_K models (llama.cpp #20824)"
    return True, f"{info.kind} CPU: repacked weights are safe and faster"
