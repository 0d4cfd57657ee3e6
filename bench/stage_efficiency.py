"""Where a run's time went, stage by stage, against what each stage could do on this CPU.

For every stage in RUN/manifest.json this prints the seconds, the peak memory, the work done
(tokens), and for the stages that run a student through torch (training, evaluation) the MFU:
the FLOPs the stage had to compute over the matmul ceiling of its dtype (the fastest 2048^3
matmul, measured now on this machine, or given with --ceiling-fp32 / --ceiling-bf16 in GFLOP/s
when RUN was made on another CPU). The FLOP counts are bench/train_throughput.py's "useful" ones:

    training, LoRA:   4 N_body T + 4 N_head T_tgt + 6 N_lora T    (T tokens, T_tgt target tokens)
    training, full:   6 N_body T + 6 N_head T_tgt
    evaluation:       2 (N_body + N_head) per generated token     (prompts and attention left out)

N_body = the linear weights outside the output head, N_head = vocab x hidden, N_lora = the
adapters, all read from the student's config.json (no weights are loaded). Evaluation leaves out
the prompts' prefill and attention, so its MFU is a lower bound. Stages on llama.cpp (the teacher,
few-shot baselines, `engine: llamacpp`) get tokens/s only: their quantised matmuls have no fp32 ceiling.

    python bench/stage_efficiency.py runs/cpu-math
    python bench/stage_efficiency.py runs/avx2 --ceiling-fp32 182   # a run made on an AVX2 EPYC
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import torch

from cotdistill.core.cpu import cpu
from cotdistill.core.fileio import read_json_object as read
from train_throughput import flops, matmul_ceiling  # bench/ is on the path when this script runs


def param_counts(config: dict[str, Any], lora_r: int | None) -> tuple[int, int, int]:
    """(N_body, N_head, N_lora) of a decoder-only transformer from its config.json (LoRA on every linear)."""
    c = config.get("text_config", config)
    h, i, layers, vocab = c["hidden_size"], c["intermediate_size"], c["num_hidden_layers"], c["vocab_size"]
    heads = c["num_attention_heads"]
    kv_heads = c.get("num_key_value_heads", heads)
    head_dim = c.get("head_dim") or h // heads
    shapes = [(h, heads * head_dim), (h, kv_heads * head_dim), (h, kv_heads * head_dim), (heads * head_dim, h),
              (h, i), (h, i), (i, h)]  # q, k, v, o, gate, up, down
    n_body = layers * sum(a * b for a, b in shapes)
    n_lora = layers * sum(lora_r * (a + b) for a, b in shapes) if lora_r else 0
    return n_body, vocab * h, n_lora


def train_flops(metrics: dict[str, Any], counts: tuple[int, int, int]) -> float:
    """The useful FLOPs of a training stage, by train_throughput's formula."""
    return flops({**metrics, "seq_len": 0}, counts, (0, 0, 0), bool(metrics.get("lora")))[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", type=Path)
    ap.add_argument("--ceiling-fp32", type=float, help="GFLOP/s of the CPU that made RUN (default: measured here)")
    ap.add_argument("--ceiling-bf16", type=float, help="as --ceiling-fp32, for bf16 stages")
    args = ap.parse_args()
    run = args.run
    stages = read(run / "manifest.json").get("stages", {})
    if not stages:
        raise SystemExit(f"{run}/manifest.json: no stages (is {run} a run directory?)")
    peaks = {"float32": args.ceiling_fp32, "bfloat16": args.ceiling_bf16}
    where = {k: "given" for k, v in peaks.items() if v}
    peaks = {k: v * 1e9 if v else None for k, v in peaks.items()}

    def peak(dtype: str) -> float:
        if peaks[dtype] is None:
            peaks[dtype], where[dtype] = matmul_ceiling(getattr(torch, dtype)), f"measured on {cpu().describe()}"
        return peaks[dtype]

    rows = []
    # in the order they finished (the manifest keeps them sorted by name); the whole run last
    for name, s in sorted(stages.items(), key=lambda kv: (kv[0] == "run", kv[1].get("updated", ""))):
        kind, _, what = name.partition(":")
        work, mfu = "", ""
        if kind == "train":
            m = read(run / "students" / what / "train_metrics.json")
            if m.get("tokens"):
                config = read(run / "students" / what / "config.json")
                lora_r = read(run / "students" / what / "train_config.json").get("lora_r") if m.get("lora") else None
                dtype = "bfloat16" if m.get("bf16") else "float32"
                flops = train_flops(m, param_counts(config, lora_r))
                work = f"{m['tokens']:,} tokens, {m['tokens_per_s']:.0f}/s in the loop ({m['train_s'] / 60:.1f} min)"
                mfu = f"{flops / m['train_s'] / peak(dtype):.0%} ({dtype})"
        elif kind == "evaluate":
            summary = read(run / "predictions" / f"{what}.summary.json")
            tokens = summary.get("tokens_generated")
            if tokens:
                work = f"{summary['n']} questions, {tokens:,} tokens, {tokens / summary['seconds']:.0f}/s on {summary.get('engine')}"
                config = read(Path(summary.get("spec", "")) / "config.json") if summary.get("engine") == "torch" else {}
                if config:
                    n_body, n_head, _ = param_counts(config, None)
                    dtype = summary.get("dtype") or "float32"
                    mfu = f"{2 * (n_body + n_head) * tokens / summary['seconds'] / peak(dtype):.0%} ({dtype})"
        elif kind == "annotate" and s.get("teacher_calls"):
            work = f"{s['teacher_calls']} teacher calls, {s.get('completion_tokens', 0):,} completion tokens"
        rows.append((name, s.get("seconds", 0.0), s.get("peak_rss_gib"), work, mfu))

    print(f"{run}: stages, seconds, peak memory (GiB), work, MFU (useful FLOPs / matmul ceiling)")
    print(f"{'stage':<34}{'min':>7}{'GiB':>7}  {'MFU':<16}work")
    for name, seconds, gib, work, mfu in rows:
        print(f"{name:<34}{seconds / 60:7.1f}{gib if gib is not None else float('nan'):7.2f}  {mfu:<16}{work}")
    for dtype, value in peaks.items():
        if value:
            print(f"ceiling {dtype}: {value / 1e9:.0f} GFLOP/s ({where[dtype]})")


if __name__ == "__main__":
    main()
