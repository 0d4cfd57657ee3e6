"""Benchmark: the hint check's unhinted requests after all hinted ones (ours) vs beside each question.

With `teacher.filters.hint_check`, each question is asked once more without the hint. Hinted and
unhinted prompts differ from their first token (the system line names the hint), so a batch that
mixes them shares no exemplar prefix and evaluates every request's whole prompt:

  interleaved   each question's unhinted request right after its hinted one (the order before)
  ours          annotate.plan's order: every hinted request, then every unhinted one; a batch holds
                one kind, and the engine keeps that kind's exemplar prefix between batches

Both rows send the same requests through the annotate stage's engine in batches of --batch, from an
empty KV cache, in one process. Prompt tokens evaluated are counted, not estimated.

    python bench/hint_check_order.py --data ../shared/datasets/commonsenseqa/train_rand_split.jsonl --n 16
"""

from __future__ import annotations

import argparse
import time

from cotdistill.annotation.annotate import CHECK_SAMPLE, load_examples, plan
from cotdistill.core.config import TeacherConfig
from cotdistill.core.cpu import cpu, physical_cores
from cotdistill.core.sampling import Request, SamplingParams
from cotdistill.teachers import load_teacher


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-1.5b")
    ap.add_argument("--data", default="../shared/datasets/commonsenseqa/train_rand_split.jsonl")
    ap.add_argument("--n", type=int, default=16, help="questions")
    ap.add_argument("--batch", type=int, default=8, help="requests per generate call (teacher.batch_size)")
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--threads", type=int, default=physical_cores())
    args = ap.parse_args()

    teacher = load_teacher(args.model, parallel=args.batch, n_ctx=8192, n_threads=args.threads)
    examples = load_examples(args.data)[: args.n]
    params = SamplingParams(temperature=0.0, max_tokens=args.max_tokens)
    jobs = plan(examples, teacher.chat, TeacherConfig(filters={"hint_check": True}), params)
    hinted = [j for j in jobs if j.sample != CHECK_SAMPLE]
    checks = {j.example.id: j for j in jobs if j.sample == CHECK_SAMPLE}
    interleaved = [x for j in hinted for x in (j, checks[j.example.id])]
    print(f"{args.model} on {cpu().describe()}, {args.threads} threads; {args.n} questions of {args.data}, "
          f"{len(jobs)} requests in batches of {args.batch}, greedy, max_tokens {args.max_tokens}")

    rows = []
    for name, order in (("interleaved", interleaved), ("ours", jobs)):
        engine = teacher._engine
        engine.prefix, before = [], engine.evaluated  # an empty cache, like a new run
        engine.lib.llama_memory_clear(engine.mem, True)
        t, out = time.perf_counter(), []
        for i in range(0, len(order), args.batch):
            out += teacher.generate([Request(j.prompt, j.params or params, j.sample) for j in order[i:i + args.batch]])
        rows.append((name, time.perf_counter() - t, engine.evaluated - before, out))
    base = rows[0][1]
    print(f"{'order':<13}{'seconds':>9}{'requests':>10}{'gen tokens':>12}{'prompt tok evaluated':>22}{'× vs interleaved':>18}")
    for name, secs, evaluated, out in rows:
        print(f"{name:<13}{secs:>9.1f}{len(out):>10}{sum(c.completion_tokens for c in out):>12}{evaluated:>22}{base / secs:>17.2f}×")
    teacher.close()


if __name__ == "__main__":
    main()
