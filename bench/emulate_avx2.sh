#!/bin/bash
# Run a command as if on a CPU with AVX2 but no AVX-512, AVX512-BF16 or AMX (an AMD EPYC of the
# Zen 2/3 kind), on a machine that has them: the CPU kind on which bf16 is slow, so cotdistill
# trains and evaluates in fp32, and llama.cpp has no AVX-512 kernels.
#
#   sudo bench/emulate_avx2.sh cotdistill run configs/cpu-math.yaml --set run_dir=runs/avx2
#
# Three things are held back, each where it is decided:
#   * cotdistill reads the CPU's flags from /proc/cpuinfo (core/cpu.py): the command sees a copy
#     without the avx512*/amx*/avx_vnni flags, bind-mounted over it in a private mount namespace
#     (unshare -m: needs root; nothing outside the command sees the copy);
#   * torch's own kernels, MKL and oneDNN are held to AVX2 by their environment variables;
#   * llama.cpp is a separate build of the same llama-cpp-python for AVX2 only, put first on
#     PYTHONPATH (built once into $AVX2_DIR, about 7 min on 2 cores).
#
# What it does not change: the clock, caches and memory bandwidth of this machine, and MKL's choice
# of kernels on an AMD CPU (MKL runs generic code there): timings are a proxy for the real CPU, to
# be read beside a figure measured both ways (docs/benchmarks.md §6, run 7).
set -euo pipefail

AVX2_DIR=${AVX2_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cotdistill/avx2}
PYTHON=${PYTHON:-python}

if [ ! -d "$AVX2_DIR/site/llama_cpp" ]; then
    version=$("$PYTHON" -c 'import importlib.metadata as m; print(m.version("llama-cpp-python"))')
    echo "building llama-cpp-python $version for AVX2 only into $AVX2_DIR/site ..." >&2
    off="AVX512 AVX512_VBMI AVX512_VNNI AVX512_BF16 AMX_TILE AMX_INT8 AMX_BF16 AVX_VNNI"
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX=ON -DGGML_AVX2=ON -DGGML_FMA=ON -DGGML_F16C=ON -DGGML_BMI2=ON"
    for flag in $off; do CMAKE_ARGS+=" -DGGML_$flag=OFF"; done
    CMAKE_ARGS="$CMAKE_ARGS" CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$PYTHON" -m pip install -q --no-deps \
        --no-cache-dir --no-binary llama-cpp-python --target "$AVX2_DIR/site" "llama-cpp-python==$version"
fi

mkdir -p "$AVX2_DIR"
sed -E '/^flags/ s/ (avx512[a-z0-9_]*|amx[a-z0-9_]*|avx_vnni[a-z0-9_]*)//g' /proc/cpuinfo > "$AVX2_DIR/cpuinfo"

export ATEN_CPU_CAPABILITY=avx2 MKL_ENABLE_INSTRUCTIONS=AVX2 ONEDNN_MAX_CPU_ISA=AVX2
export PYTHONPATH="$AVX2_DIR/site${PYTHONPATH:+:$PYTHONPATH}"
# shellcheck disable=SC2016  # $0 and $@ belong to the inner shell
exec unshare -m bash -c 'mount --bind "$0" /proc/cpuinfo && exec "$@"' "$AVX2_DIR/cpuinfo" "$@"
