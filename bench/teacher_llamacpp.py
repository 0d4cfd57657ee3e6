"""Benchmark: the in-process llama.cpp teacher, naive vs ours, on GSM8K questions with an 8-shot
prompt (the annotate stage's real prompt: a long shared few-shot prefix, then the question).

  naive   one sequence at a time, the prompt evaluated from scratch for every question
  reuse   one sequence at a time, the shared prefix's KV cache reused (llama-cpp-python's own)
  ours    prefix KV reused + several sequences decoded per llama_batch (parallel slots)

All three run greedy on the same questions in the same process, so the ratio is measured side by
side; the table (printed last) also says whether ours gave the same text as naive.

    python bench/teacher_llamacpp.py --model embedded:qwen2.5-0.5b --n 8 --threads 2
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cotdistill.core.prompts import build_teacher_prompt, default_exemplars
from cotdistill.core.sampling import Request, SamplingParams
from cotdistill.teachers import load_teacher
from cotdistill.core.cpu import physical_cores

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gsm8k" / "train.jsonl"


def questions(n: int) -> list[tuple[str, str]]:
    """(question, gold answer) pairs from GSM8K train when present, else generated sums."""
    if GSM8K.is_file():
        rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[100 : 100 + n]]
        return [(r["question"], r["answer"].split("####")[-1].strip()) for r in rows]
    return [(f"A shop sells {a} pens on Monday and {a + 7} on Tuesday. How many pens in total?", str(2 * a + 7)) for a in range(3, 3 + n)]


def run(teacher, requests: list[Request], fresh_each: bool) -> tuple[float, list]:
    start = time.perf_counter()
    if fresh_each:
        out = []
        for r in requests:
            teacher.llm.reset()  # forget the previous prompt: no prefix reuse
            out += teacher.generate([r])
    else:
        out = teacher.generate(requests)
    return time.perf_counter() - start, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-0.5b")
    ap.add_argument("--n", type=int, default=8, help="questions")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--parallel", type=int, default=8, help="sequences per batch (ours)")
    ap.add_argument("--threads", type=int, default=physical_cores())
    ap.add_argument("--n-ctx", type=int, default=4096)
    ap.add_argument("--skip-reuse", action="store_true", help="skip the middle row (saves time)")
    args = ap.parse_args()

    sequential = load_teacher(args.model, parallel=1, n_ctx=args.n_ctx, n_threads=args.threads)
    ours = load_teacher(args.model, parallel=args.parallel, n_ctx=args.n_ctx, n_threads=args.threads)
    exemplars = default_exemplars("number")[:8]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens, stop=() if sequential.chat else ("\nQ:",))
    requests = [
        Request(build_teacher_prompt(q, "number", exemplars, chat=sequential.chat, hint=a), params)
        for q, a in questions(args.n)
    ]
    print(f"model {sequential.name}, {args.n} questions, prompt ~{len(sequential.tokenize(requests[0].prompt))} tokens, "
          f"threads {args.threads}, parallel {args.parallel}", flush=True)

    # Warm-up (page in the weights) on a different prompt so no run starts with a cached prefix.
    sequential.generate([Request("Hello", SamplingParams(max_tokens=2))])
    ours.generate([Request("Hello", SamplingParams(max_tokens=2))])

    rows = []
    t, naive_out = run(sequential, requests, fresh_each=True)
    rows.append(("naive: fresh prompt, 1 sequence", t, naive_out))
    print(f"naive done in {t:.1f}s", flush=True)
    if not args.skip_reuse:
        sequential.llm.reset()
        t, out = run(sequential, requests, fresh_each=False)
        rows.append(("prefix KV reused, 1 sequence", t, out))
        print(f"reuse done in {t:.1f}s", flush=True)
    t, ours_out = run(ours, requests, fresh_each=False)
    rows.append((f"ours: prefix reused + {args.parallel} seqs/batch", t, ours_out))
    same = sum(a.text == b.text for a, b in zip(naive_out, ours_out))
    prefix_tokens = len(ours._engine.prefix)

    base = rows[0][1]
    print()
    print(f"{'mode':<40} {'s':>7} {'examples/min':>13} {'gen tok/s':>10} {'speed-up':>9}")
    for label, t, out in rows:
        gen = sum(c.completion_tokens for c in out)
        print(f"{label:<40} {t:>7.1f} {60 * len(out) / t:>13.2f} {gen / t:>10.1f} {base / t:>8.2f}x")
    print(f"ours gave the same greedy text as naive for {same}/{len(requests)} questions; "
          f"shared prefix {prefix_tokens} tokens")
    sequential.close()
    ours.close()


if __name__ == "__main__":
    main()
