"""Benchmark: how llama.cpp decoding scales with sequences per batch on this machine.

Explains bench/teacher_llamacpp.py's last row: once the shared prefix is reused, what is left is
decoding, and batching several sequences only pays while one sequence leaves the CPU idle
(memory-bound). Every row decodes the same prompts greedily: short story openings, so prefill is
negligible and the model writes to the token limit (the table counts the tokens that came out):

  standard   llama-cpp-python's own create_completion, one prompt after another
  ours, P    our BatchedEngine with P sequences per llama_batch

    python bench/teacher_decode_scaling.py --model embedded:qwen2.5-0.5b --threads 2
"""

from __future__ import annotations

import argparse
import time

from cotdistill.core.sampling import Request, SamplingParams
from cotdistill.teachers import load_teacher
from cotdistill.core.cpu import physical_cores


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-0.5b")
    ap.add_argument("--sequences", type=int, default=8, help="prompts decoded in each row")
    ap.add_argument("--tokens", type=int, default=64, help="tokens generated per prompt")
    ap.add_argument("--parallel", type=int, nargs="+", default=[2, 4, 8])
    ap.add_argument("--threads", type=int, default=physical_cores())
    args = ap.parse_args()

    params = SamplingParams(temperature=0.0, max_tokens=args.tokens)
    requests = [Request(f"Write a long story about a dragon number {i}. Once upon a time", params) for i in range(args.sequences)]
    rows = []
    for parallel in [1, *args.parallel]:
        teacher = load_teacher(args.model, parallel=parallel, n_ctx=2048, n_threads=args.threads, chat=False)
        teacher.generate(requests[:1])  # page in the weights
        start = time.perf_counter()
        out = teacher.generate(requests)
        seconds = time.perf_counter() - start
        label = "standard: create_completion, 1 seq" if parallel == 1 else f"ours: {parallel} seqs/batch"
        rows.append((label, seconds, sum(c.completion_tokens for c in out)))
        print(f"{label} done in {seconds:.1f}s", flush=True)
        teacher.close()

    base = rows[0][2] / rows[0][1]
    print(f"\nmodel {args.model}, threads {args.threads}, {args.sequences} prompts x {args.tokens} tokens")
    print(f"{'mode':<36} {'s':>7} {'gen tok/s':>10} {'vs standard':>12}")
    for label, seconds, tokens in rows:
        print(f"{label:<36} {seconds:>7.1f} {tokens / seconds:>10.1f} {tokens / seconds / base:>11.2f}x")


if __name__ == "__main__":
    main()
