"""Benchmark: k sampled CoTs per question ("diverse reasoning"), k separate calls vs ours.

k samples of a question share its whole prompt, so they should share its prefill:

  separate   every sample its own call with the prompt evaluated from scratch (what a client that
             sends k independent requests to a server without a prefix cache pays)
  ours k=1   the annotate stage's engine, one sample per question (the reference cost)
  ours k     the same engine, k samples per question in one call: the exemplars are read once for
             all questions, each question once for its k samples, and the k decodes share batches

All rows sample at the same temperature from the same 8-shot hinted prompts (the annotate stage's),
in one process, so the ratios are side by side. Prompt tokens evaluated are counted, not estimated.

    python bench/teacher_samples.py --model embedded:qwen2.5-1.5b --n 4 --k 4
"""

from __future__ import annotations

import argparse
import time

from cotdistill.core.cpu import cpu, physical_cores
from cotdistill.core.prompts import build_teacher_prompt, select_exemplars
from cotdistill.core.sampling import Request, SamplingParams
from cotdistill.teachers import load_teacher
from teacher_llamacpp import questions


def prompts(n: int, chat: bool) -> list:
    exemplars = select_exemplars("number", 8)
    return [build_teacher_prompt(q, "number", exemplars, chat=chat, hint=a) for q, a in questions(n)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-1.5b")
    ap.add_argument("--n", type=int, default=4, help="questions")
    ap.add_argument("--k", type=int, default=4, help="samples per question")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--temperature", type=float, default=0.7)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=physical_cores())
    args = ap.parse_args()

    params = SamplingParams(temperature=args.temperature, max_tokens=args.max_tokens, seed=1)
    ours = load_teacher(args.model, parallel=args.parallel, n_ctx=8192, n_threads=args.threads)
    fresh = load_teacher(args.model, parallel=1, n_ctx=4096, n_threads=args.threads)
    ps = prompts(args.n, ours.chat)
    one = [Request(p, params, sample=0) for p in ps]
    many = [Request(p, params, sample=s) for p in ps for s in range(args.k)]
    print(f"{args.model} on {cpu().describe()}, {args.threads} threads; {args.n} questions × k={args.k}, "
          f"T={args.temperature}, max_tokens {args.max_tokens}")

    rows = []
    for name, reqs in (("ours k=1", one), (f"ours k={args.k}", many)):
        ours._engine.prefix, before = [], ours._engine.evaluated  # start from an empty cache, like a new run
        ours._engine.lib.llama_memory_clear(ours._engine.mem, True)
        t = time.perf_counter()
        out = ours.generate(reqs)
        rows.append((name, time.perf_counter() - t, ours._engine.evaluated - before, out))
    t, out, evaluated = time.perf_counter(), [], 0
    for r in many:
        fresh.llm.reset()  # no prefix reuse between calls
        [c] = fresh.generate([r])
        out.append(c)
        evaluated += c.prompt_tokens
    rows.insert(0, (f"separate ×{args.k}", time.perf_counter() - t, evaluated, out))

    base = rows[0][1]
    print(f"{'method':<14}{'seconds':>9}{'samples':>9}{'gen tokens':>12}{'prompt tok evaluated':>22}{'× vs separate':>15}")
    for name, secs, ev, out in rows:
        print(f"{name:<14}{secs:>9.1f}{len(out):>9}{sum(c.completion_tokens for c in out):>12}{ev:>22}{base / secs:>14.2f}×")
    k1, kk = rows[1][1], rows[2][1]
    print(f"k={args.k} samples cost {kk / k1:.2f}× one sample per question ({kk / k1 / args.k:.0%} of {args.k} separate k=1 runs); "
          f"{rows[0][1] / kk:.2f}× faster than {args.k} separate calls per question")
    ours.close()
    fresh.close()


if __name__ == "__main__":
    main()
