"""Benchmark: evaluation throughput of a transformers student, one sequence at a time vs ours.

  naive       plain transformers: one `generate` per question, greedy, until EOS or max_new_tokens
  batched     plain transformers as most users batch it: the tokenizer left-pads `--batch-size`
              questions in their order, one `generate` per batch until every row hit EOS or the limit
  one+stop    one sequence at a time, with our stop at the first complete final-answer sentence
  ours, F.linear   ours with plain `F.linear` in the decoding steps (--ablate: what W·xᵀ is worth)
  ours        generation.generate_batched: continuous batching (a finished sequence leaves at once,
              the next prompt takes its place), KV cache, same stop, W·xᵀ linears while decoding
  llama.cpp   evaluate.engine llamacpp (evaluation/llamacpp_student.py): the same weights exported once
              to a GGUF (--gguf-type f16 | q8_0), the same prompt token ids, on the teacher's batched
              llama.cpp engine (continuous slots, shared prefix), same stops (--skip-llama: no row)

All three decode greedily the same questions with the same prompts in one process, so ratios are
side by side (ours is timed before and after the others, and counts with the mean). Outputs are
compared after `finish_text` (cut at the stop string and after the first
final answer, as evaluation reads them): the script fails if ours differs from naive (or, with
--skip-naive, from batched `generate`, which the script has shown equal to naive at smaller n).
llama.cpp computes in another order (and from f16 or q8_0 weights), so its row may differ on a few
questions: the table gives how many outputs equal the reference's, and each row's accuracy with its
95 % Wilson interval, read as evaluation reads them (strict for a fine-tuned student).

The student is the embedded gemma-3-270m (converted to transformers once) on GSM8K questions
(../shared/datasets when present, else generated GSM-style ones), given the bare student input
"Q: ...\nA:" (as a fine-tuned student is) or, with --few-shot K, the few-shot CoT prompt of the
"student before fine-tuning" baseline (long shared prompts: prefill-bound, batching gains less).
--model RUN/students/cot measures a fine-tuned student: its own prompt, no stop string (it ends at
EOS), strict answer reading, and its GGUF export cached in RUN/students/cot/gguf as evaluation makes it.

    python bench/eval_throughput.py --n 32 --batch-size 16 --threads 2
    python bench/eval_throughput.py --n 128 --batch-size 16 --threads 2 --skip-naive --skip-middle --ablate
    python bench/eval_throughput.py --n 16 --batch-size 16 --max-new-tokens 64 --few-shot 2 --threads 1
    python bench/eval_throughput.py --model runs/demo/students/cot --n 128 --max-new-tokens 256 --skip-naive --skip-middle
"""

from __future__ import annotations

import argparse
import contextlib
import json
import time
from pathlib import Path

import torch

from cotdistill.evaluation import generation
from cotdistill.core.answers import answers_match, extract_answer
from cotdistill.core.cpu import cpu
from cotdistill.core.fileio import read_json_object
from cotdistill.evaluation.evaluate import wilson_interval
from cotdistill.evaluation.generation import Generation, finish_text, generate_batched
from cotdistill.core.prompts import COMPLETION_STOP, build_teacher_prompt, default_exemplars, student_prompt
from cotdistill.models.students import load_student, resolve

GSM8K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "gsm8k" / "train.jsonl"


def questions(n: int) -> list[tuple[str, str]]:
    """(question, gold answer) of n GSM8K training questions (from the 201st), or generated ones."""
    if GSM8K.is_file():
        rows = [json.loads(line) for line in GSM8K.read_text().splitlines()[200 : 200 + n]]
        return [(r["question"], r["answer"].rsplit("####", 1)[-1].strip().replace(",", "")) for r in rows]
    from cotdistill.data.generators import generate

    return [(e.question, e.answer) for e in generate("gsm_symbolic", n, seed=0)]


def accuracy(gens: list[Generation], gold: list[str], strict: bool) -> tuple[int, float, float]:
    """(correct, 95 % Wilson interval) of the outputs, read as evaluation reads them."""
    correct = sum(answers_match(extract_answer(g.text, "number", None, fallback_last=not strict).value, a, "number")
                  for g, a in zip(gens, gold))
    return correct, *wilson_interval(correct, len(gens))


def llama_row(args, folder: Path, tok, prompts: list[str], stop: tuple[str, ...]):
    """The llama.cpp row: the model exported to GGUF once (cached in FOLDER/gguf), timed on the same prompts."""
    from cotdistill.evaluation.llamacpp_student import LlamaCppGenerator, eval_gguf
    from cotdistill.models import embedded

    # A fine-tuned student records its base; the converted copy of an embedded model is given its GGUF.
    fine_tuned = (folder / "train_config.json").is_file() or (folder / "adapter_config.json").is_file()
    base = None if fine_tuned else embedded.model_path(args.model)
    gguf = eval_gguf(folder, args.gguf_type, quiet=False, base_gguf=base)
    llama = LlamaCppGenerator(gguf, tok, n_threads=args.threads)
    try:
        kw = {"max_new_tokens": args.max_new_tokens, "stop": stop, "batch_size": args.batch_size}
        llama.generate(prompts[:1], **{**kw, "max_new_tokens": 2})  # warm-up
        return (f"llama.cpp {args.gguf_type}", *timed(lambda: llama.generate(prompts, **kw)))
    finally:
        llama.close()


def naive(model, tok, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...]) -> list[Generation]:
    """What one writes without thinking about speed: one prompt per `generate` call (a batch of one
    needs no padding, so this is `batched` with batch size 1)."""
    return batched(model, tok, prompts, max_new_tokens, stop, batch_size=1)


def batched(model, tok, prompts: list[str], max_new_tokens: int, stop: tuple[str, ...], batch_size: int) -> list[Generation]:
    """What most users write to go faster: left-padded batches in the data's order, `generate` on each."""
    eos = model.generation_config.eos_token_id
    eos_ids = set(eos if isinstance(eos, list) else [eos])
    side, tok.padding_side = tok.padding_side, "left"
    out = []
    try:
        for start in range(0, len(prompts), batch_size):
            ids = tok(prompts[start : start + batch_size], return_tensors="pt", padding=True)
            with torch.inference_mode():
                gen = model.generate(**ids, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tok.pad_token_id)
            for row in gen[:, ids["input_ids"].shape[1] :].tolist():
                n = next((k + 1 for k, t in enumerate(row) if t in eos_ids), len(row))
                text = finish_text(tok.decode(row[:n], skip_special_tokens=True), stop)
                out.append(Generation(text, n, "stop" if n < max_new_tokens else "length"))
    finally:
        tok.padding_side = side
    return out


def timed(fn):
    start = time.perf_counter()
    result = fn()
    return time.perf_counter() - start, result


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="embedded:gemma-3-270m", help="student spec: embedded:NAME, a directory "
                    "(a fine-tuned student: RUN/students/MODE), a hub name")
    ap.add_argument("--n", type=int, default=16, help="questions")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--few-shot", type=int, default=0, help="exemplars in the prompt (0: the bare student input)")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--skip-middle", action="store_true", help="skip the one+stop row (saves time)")
    ap.add_argument("--skip-naive", action="store_true", help="skip the one-by-one row (large --n); batched is the reference")
    ap.add_argument("--ablate", action="store_true", help="add ours with plain F.linear while decoding")
    ap.add_argument("--skip-llama", action="store_true", help="no llama.cpp row")
    ap.add_argument("--gguf-type", default="f16", choices=["f16", "q8_0"], help="the llama.cpp row's GGUF type")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    model, tok, _ = load_student(args.model, dtype=getattr(torch, args.dtype))
    model.eval()
    folder = Path(resolve(args.model))
    trained = read_json_object(folder / "train_config.json") if (folder / "train_config.json").is_file() else {}
    shots = default_exemplars("number")[: args.few_shot]
    asked = questions(args.n)
    gold = [a for _, a in asked]
    prompts = [build_teacher_prompt(q, "number", shots, chat=False) if shots else student_prompt(q, None, trained.get("mode"))
               for q, _ in asked]
    # A base model runs on into the next "Q:" with or without exemplars; a fine-tuned student stops at
    # EOS (evaluation gives it no stop string) and is read strictly, as evaluate does.
    student = bool(trained) and not shots
    stop = () if student else COMPLETION_STOP
    kw = {"max_new_tokens": args.max_new_tokens, "stop": stop}
    generate_batched(model, tok, prompts[:1], max_new_tokens=2)  # warm-up (allocations, lazy init)

    def ours():
        return timed(lambda: generate_batched(model, tok, prompts, batch_size=args.batch_size, **kw))

    # Ours runs before and after the slow rows and counts with its mean time: on a shared machine
    # the load drifts during the minutes naive takes, and this cancels a linear drift.
    before = ours()
    rows = []
    if not args.skip_naive:
        rows.append(("naive", *timed(lambda: naive(model, tok, prompts, args.max_new_tokens, stop))))
    rows.append((f"batched ({args.batch_size})", *timed(lambda: batched(model, tok, prompts, args.max_new_tokens, stop,
                                                                         args.batch_size))))
    if not args.skip_middle:
        rows.append(("one+stop", *timed(lambda: generate_batched(model, tok, prompts, batch_size=1, **kw))))
    if not args.skip_llama:
        rows.append(llama_row(args, folder, tok, prompts, stop))
    if args.ablate:
        plain, generation.weights_first_linears = generation.weights_first_linears, lambda model: contextlib.nullcontext()
        try:
            rows.append(("ours, F.linear", *ours()))
        finally:
            generation.weights_first_linears = plain
    after = ours()
    rows.append((f"ours (batch {args.batch_size})", (before[0] + after[0]) / 2, after[1]))
    print(f"ours: {before[0]:.1f} s before the other rows, {after[0]:.1f} s after; same outputs both times: "
          f"{[g.text for g in before[1]] == [g.text for g in after[1]]}")

    reference = [g.text for g in rows[0][2]]
    agree = {name: sum(g.text == r for g, r in zip(gens, reference)) for name, _, gens in rows}
    same = {name: agree[name] == len(reference) for name, _, _ in rows}
    for name, _, gens in rows[1:]:
        for i, (g, r) in enumerate(zip(gens, reference)):
            if g.text != r:
                print(f"{name} differs from {rows[0][0]} on question {i}:\n  {rows[0][0]}: {r!r}\n  {name}: {g.text!r}")

    base_s, base_gens = rows[0][1], rows[0][2]
    base_tps = sum(g.tokens for g in base_gens) / base_s
    print(f"\n{cpu().describe()}; model {args.model} ({args.dtype}, {args.threads} threads), {args.n} questions, {args.few_shot}-shot prompt "
          f"(~{sum(len(tok(p)['input_ids']) for p in prompts) // len(prompts)} tokens), max_new_tokens {args.max_new_tokens}")
    print(f"{'method':<18}{'seconds':>9}{'gen tokens':>12}{'tokens/s':>10}{'questions/s':>13}"
          f"{'× tokens/s':>12}{'× questions/s':>15}{'same as ' + rows[0][0]:>22}{'accuracy (95 % CI)':>26}")
    for name, secs, gens in rows:
        tokens = sum(g.tokens for g in gens)
        correct, low, high = accuracy(gens, gold, strict=student)
        print(f"{name:<18}{secs:>9.1f}{tokens:>12}{tokens / secs:>10.1f}{len(gens) / secs:>13.3f}"
              f"{tokens / secs / base_tps:>12.2f}{base_s / secs:>15.2f}{f'{agree[name]} of {len(gens)}':>22}"
              f"{f'{100 * correct / len(gens):.1f} [{100 * low:.1f}, {100 * high:.1f}]':>26}")
    by = {name: secs for name, secs, _ in rows}
    print(f"ours / batched generate, questions/s: {by[f'batched ({args.batch_size})'] / rows[-1][1]:.2f}x")
    if not args.skip_llama:
        llama_s = by[f"llama.cpp {args.gguf_type}"]
        print(f"llama.cpp {args.gguf_type} / ours, questions/s: {rows[-1][1] / llama_s:.2f}x; "
              f"/ batched generate: {by[f'batched ({args.batch_size})'] / llama_s:.2f}x")
    if args.ablate:
        print(f"ours / ours with F.linear: {by['ours, F.linear'] / rows[-1][1]:.2f}x")
    print("gen tokens: tokens each method generated (naive keeps going past the answer until EOS or the limit;"
          "\nllama.cpp does not count the EOS); the outputs being equal, × questions/s is also the ratio of output"
          "\ntokens per second. Accuracy: " + ("strict, as a fine-tuned student is read" if student else
                                                 "lenient (the last number), as a prompted model is read"))
    if not all(same[name] for name, _, _ in rows if not name.startswith("llama.cpp")):
        raise SystemExit(f"FAIL: greedy outputs of our torch paths differ from {rows[0][0]}'s")


if __name__ == "__main__":
    main()
