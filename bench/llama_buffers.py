"""Benchmark: what turning off llama.cpp's extra weight buffers costs on this CPU.

On AMX CPUs cotdistill loads GGUF models without the extra buffer types (AMX tiles, repacked Q4
blocks), because llama.cpp's AMX path segfaults there (llama.cpp #20824). Elsewhere it keeps them.
This measures both settings on the CPU at hand, prompt processing and generation, interleaved
(on, off, on, off, ...) so that a busy machine slows both alike, with greedy outputs compared.

    python bench/llama_buffers.py --model embedded:qwen2.5-0.5b --rounds 3
"""

from __future__ import annotations

import argparse
import statistics
import time

from cotdistill.models import embedded
from cotdistill.core.cpu import cpu, llama_extra_buffers, physical_cores
from cotdistill.teachers.llamacpp_load import _extra_buffers

PROMPT = ("Q: A farmer has 12 cows and buys 7 more. Each cow gives 3 litres of milk a day. "
          "How many litres of milk does he get in a day?\nA:") * 12


def measure(path, extra: bool, threads: int, max_tokens: int) -> tuple[float, float, str]:
    """(prompt tokens/s, generated tokens/s, text) for one fresh model load with the setting."""
    from llama_cpp import Llama

    with _extra_buffers(extra):
        llm = Llama(model_path=str(path), n_ctx=2048, n_threads=threads, n_threads_batch=threads, verbose=False)
    try:
        tokens = llm.tokenize(PROMPT.encode())
        t = time.perf_counter()
        llm.eval(tokens)
        prompt_s = time.perf_counter() - t
        t, out = time.perf_counter(), []
        for _ in range(max_tokens):
            tok = llm.sample(temp=0.0)
            out.append(tok)
            llm.eval([tok])
        gen_s = time.perf_counter() - t
        return len(tokens) / prompt_s, max_tokens / gen_s, llm.detokenize(out).decode(errors="replace")
    finally:
        llm.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:qwen2.5-0.5b")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--max-tokens", type=int, default=48)
    ap.add_argument("--threads", type=int, default=physical_cores())
    args = ap.parse_args()
    path = embedded.model_path(args.model)
    chosen, why = llama_extra_buffers()
    print(f"{args.model} on {cpu().describe()}, {args.threads} threads; cotdistill's choice here: "
          f"{'on' if chosen else 'off'} ({why})")
    if cpu().amx:
        print("this CPU has AMX: 'on' would crash, so only 'off' is measured")
    settings = [False] if cpu().amx else [True, False]
    results: dict[bool, list[tuple[float, float, str]]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for extra in settings:
            results[extra].append(measure(path, extra, args.threads, args.max_tokens))
    print(f"{'extra buffers':<15}{'prompt tok/s (median, min-max)':>34}{'generate tok/s (median, min-max)':>36}")
    for extra, runs in results.items():
        p, g = [r[0] for r in runs], [r[1] for r in runs]
        print(f"{'on' if extra else 'off':<15}{statistics.median(p):>16.1f} ({min(p):.1f}-{max(p):.1f}){'':>6}"
              f"{statistics.median(g):>18.1f} ({min(g):.1f}-{max(g):.1f})")
    if len(settings) == 2:
        on, off = results[True], results[False]
        pr = statistics.median(r[0] for r in on) / statistics.median(r[0] for r in off)
        gr = statistics.median(r[1] for r in on) / statistics.median(r[1] for r in off)
        same = on[0][2] == off[0][2]
        print(f"on / off: prompt {pr:.2f}x, generate {gr:.2f}x; greedy text identical: {same}")


if __name__ == "__main__":
    main()
