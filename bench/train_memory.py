"""Benchmark: peak memory and speed of training against how an optimizer step is split.

One optimizer step of `--step-size` examples can run as one micro-batch (the standard way: memory
grows with it), as several smaller ones whose gradients accumulate (`student.batch_size` x
`student.grad_accum`), or as one micro-batch whose layers recompute their activations in the
backward pass (`student.gradient_checkpointing`, the last row of each dtype). cotdistill's trainer
makes all of them the same update: the sampler puts the same examples in a step however it is
split, the loss is divided by the target tokens of the whole step (training/collate.py,
student_trainer.py), and recomputation repeats the same arithmetic (tests/test_train.py checks
both). What changes is the activation memory, which dominates training a 0.5B student, and the
speed: smaller micro-batches give the matmuls fewer rows, recomputation adds a forward pass.

Each configuration is `cotdistill train` in a fresh process (peak memory is per process) on the
`--examples` longest examples of a distill set, so every step is a worst-case step: the peak shown
is what the longest batches of a real run reach. It reports the training loop's peak resident
memory (train_metrics.json: peak_rss_gib, sampled, core/memory.py) and real tokens/s, both also as
ratios against micro-batch = step in the same run.

    python bench/train_memory.py --data runs/cpu-gsm8k/distill.jsonl --max-len 448 --steps 3
    python bench/train_memory.py --data runs/cpu-math/distill.jsonl --max-len 320 --dtypes fp32

Run it on an idle machine for speed figures; memory figures hold on a busy one.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cotdistill.core.cpu import cpu  # noqa: E402


def longest(data: Path, n: int, out: Path) -> int:
    """Write the `n` longest records of `data` (question + rationale characters) to `out`."""
    rows = [json.loads(line) for line in data.read_text().splitlines() if line.strip()]
    rows.sort(key=lambda r: -(len(r.get("question", "")) + len(r.get("rationale") or "")))
    out.write_text("".join(json.dumps(r) + "\n" for r in rows[:n]))
    return min(n, len(rows))


def run(data: Path, out: Path, student: str, max_len: int, steps: int, micro: int, accum: int, bf16: bool,
        checkpointing: bool = False) -> dict:
    """`cotdistill train` in a child process; its train_metrics.json."""
    cmd = [sys.executable, "-m", "cotdistill.cli", "train", "--data", str(data), "--student", student, "--mode", "cot",
           "--out", str(out), "--max-len", str(max_len), "--max-steps", str(steps), "--batch-size", str(micro),
           "--grad-accum", str(accum), "--bf16", "true" if bf16 else "false", "--restart", "--quiet",
           "--eval-fraction", "0", "--save-steps", str(steps + 1),
           "--gradient-checkpointing" if checkpointing else "--no-gradient-checkpointing"]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "train_metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, required=True, help="a run's distill.jsonl")
    parser.add_argument("--student", default="embedded:qwen2.5-0.5b")
    parser.add_argument("--max-len", type=int, default=448)
    parser.add_argument("--step-size", type=int, default=8, help="examples per optimizer step")
    parser.add_argument("--micro", type=int, nargs="+", default=[8, 4, 2], help="micro-batch sizes to try")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per configuration")
    parser.add_argument("--examples", type=int, default=40, help="train on this many of the longest examples")
    parser.add_argument("--dtypes", nargs="+", default=None, help="fp32 and/or bf16 (default: bf16 too where fast)")
    args = parser.parse_args()

    info = cpu()
    dtypes = args.dtypes or (["fp32", "bf16"] if info.fast_bf16 else ["fp32"])
    print(f"CPU: {info.describe()}; student {args.student}; step of {args.step_size} examples, max_len {args.max_len}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "longest.jsonl"
        print(f"training on the {longest(args.data, args.examples, data)} longest examples of {args.data}\n")
        print("| dtype | micro-batch x accumulation | peak memory (loop) | vs one micro-batch | tokens/s | vs one micro-batch |")
        print("|---|---|---|---|---|---|")
        for dtype in dtypes:
            base = None
            splits = [(micro, False) for micro in args.micro if args.step_size % micro == 0] + [(args.step_size, True)]
            for micro, checkpointing in splits:
                m = run(data, Path(tmp) / f"{dtype}-{micro}-{checkpointing}", args.student, args.max_len, args.steps,
                        micro, args.step_size // micro, dtype == "bf16", checkpointing)
                base = base or m
                how = f"{micro} x {args.step_size // micro}" + (", gradient checkpointing" if checkpointing else "")
                print(f"| {dtype} | {how} | {m['peak_rss_gib']:.2f} GiB "
                      f"| {m['peak_rss_gib'] / base['peak_rss_gib']:.2f}x | {m['tokens_per_s']:.0f} "
                      f"| {m['tokens_per_s'] / base['tokens_per_s']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
