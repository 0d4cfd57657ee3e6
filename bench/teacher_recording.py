"""Benchmark: what recording the teacher's probabilities as it writes costs the annotate stage.

With student.distill_context: written, the llama.cpp engine keeps, at every token it writes, the
sparse targets of the distribution it chose the token from (core/sparse_targets.py). The logits are
already there; the cost is a softmax, 12 draws and a top-12 per token. Both rows below run the
annotate stage's requests (8-shot hinted prompts, k samples per question) on the same engine in one
process, alternating plain and recorded calls `--repeats` times, each call from an empty KV cache:

    python bench/teacher_recording.py --model embedded:qwen2.5-1.5b --n 8 --k 2 --repeats 2

It prints both times, their ratio (the issue's bar: recording at most 1.10x), and the bytes per
written token the cache stores for a recording.
"""

from __future__ import annotations

import argparse
import json
import time

from cotdistill.core.cpu import cpu, physical_cores
from cotdistill.core.sampling import Record, Request, SamplingParams
from cotdistill.teachers import load_teacher
from teacher_samples import prompts


def timed(teacher, requests: list[Request]) -> tuple[float, list]:
    """One generate call from an empty KV cache, as a new run starts."""
    engine = teacher._engine
    engine.prefix = []
    engine.lib.llama_memory_clear(engine.mem, True)
    t = time.perf_counter()
    out = teacher.generate(requests)
    return time.perf_counter() - t, out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-1.5b")
    ap.add_argument("--n", type=int, default=8, help="questions")
    ap.add_argument("--k", type=int, default=2, help="samples per question")
    ap.add_argument("--max-tokens", type=int, default=160)
    ap.add_argument("--tokens", type=int, default=12, help="draws and top-k kept per written token")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--threads", type=int, default=physical_cores())
    args = ap.parse_args()

    teacher = load_teacher(args.model, parallel=args.parallel, n_ctx=8192, n_threads=args.threads)
    params = SamplingParams(temperature=0.7, max_tokens=args.max_tokens, seed=1)
    ps = prompts(args.n, teacher.chat)
    plain = [Request(p, params, sample=s) for p in ps for s in range(args.k)]
    recorded = [Request(p, params, sample=s, record=Record(1.0, args.tokens)) for p in ps for s in range(args.k)]
    print(f"{args.model} on {cpu().describe()}, {args.threads} threads; {args.n} questions x k={args.k}, "
          f"max_tokens {args.max_tokens}, {args.tokens} tokens recorded per position")
    times: dict[str, list[float]] = {"plain": [], "recorded": []}
    for _ in range(args.repeats):
        secs, a = timed(teacher, plain)
        times["plain"].append(secs)
        secs, b = timed(teacher, recorded)
        times["recorded"].append(secs)
        same = sum(x.text == y.text for x, y in zip(a, b))
    written = sum(c.completion_tokens for c in b)
    stored = sum(len(json.dumps(c.record, separators=(",", ":"))) for c in b)
    plain_s, rec_s = min(times["plain"]), min(times["recorded"])
    print(f"{'':<10}{'seconds (best of ' + str(args.repeats) + ')':>24}{'written tokens/s':>18}")
    print(f"{'plain':<10}{plain_s:>24.1f}{written / plain_s:>18.1f}")
    print(f"{'recorded':<10}{rec_s:>24.1f}{written / rec_s:>18.1f}")
    print(f"recording costs {rec_s / plain_s:.3f}x the plain annotation time; {same}/{len(b)} texts identical; "
          f"{stored / written:.0f} bytes per written token stored ({stored / 1024:.0f} KiB for {written} tokens)")
    teacher.close()


if __name__ == "__main__":
    main()
