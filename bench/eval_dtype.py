"""Benchmark: batched generation in bfloat16 vs float32, same model, same questions, side by side.

Evaluation's default `--dtype auto` takes bfloat16 only where it is the faster dtype (cpu.py's
`bf16_is_faster`); bfloat16 halves the weights' memory and, on CPUs with AVX512-BF16 or AMX, runs
faster; `--dtype float32` pins the reference numerics. Greedy outputs can
differ (bf16 rounds the logits), so the script counts how many are identical. Each dtype runs twice,
alternating, and the times are summed (drift on a shared machine affects both alike).

    python bench/eval_dtype.py --model runs/demo/students/cot --n 32
"""

from __future__ import annotations

import argparse
import time

import torch

from cotdistill.evaluation.generation import generate_batched
from cotdistill.core.prompts import COMPLETION_STOP
from cotdistill.models.students import load_student
from eval_throughput import questions

DTYPES = ("float32", "bfloat16")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:gemma-3-270m", help="student spec: embedded:NAME, a directory, a hub name")
    ap.add_argument("--n", type=int, default=32, help="questions (one batch)")
    ap.add_argument("--max-new-tokens", type=int, default=48)
    args = ap.parse_args()

    prompts = [f"Q: {q}\nA:" for q in questions(args.n)]
    models = {d: load_student(args.model, dtype=getattr(torch, d))[:2] for d in DTYPES}
    for model, tok in models.values():
        model.eval()
        generate_batched(model, tok, prompts[:1], max_new_tokens=2)  # warm-up
    seconds = {d: 0.0 for d in DTYPES}
    texts, tokens = {}, {}
    for _ in range(2):
        for dtype, (model, tok) in models.items():
            start = time.perf_counter()
            out = generate_batched(model, tok, prompts, batch_size=args.n, max_new_tokens=args.max_new_tokens,
                                   stop=COMPLETION_STOP)
            seconds[dtype] += time.perf_counter() - start
            texts[dtype], tokens[dtype] = [g.text for g in out], sum(g.tokens for g in out)

    same = sum(a == b for a, b in zip(*(texts[d] for d in DTYPES)))
    print(f"model {args.model}, {args.n} questions in one batch, max_new_tokens {args.max_new_tokens}, "
          f"{torch.get_num_threads()} threads, two runs per dtype")
    print(f"{'dtype':<10}{'seconds':>9}{'gen tokens':>12}{'tokens/s':>10}")
    for dtype in DTYPES:
        print(f"{dtype:<10}{seconds[dtype] / 2:>9.1f}{tokens[dtype]:>12}{2 * tokens[dtype] / seconds[dtype]:>10.1f}")
    print(f"bfloat16 / float32 questions/s: {seconds['float32'] / seconds['bfloat16']:.2f}x; "
          f"identical greedy outputs: {same} of {args.n}")


if __name__ == "__main__":
    main()
