"""Benchmark: what token-level distillation costs beside plain fine-tuning (student.distill).

Two costs: the teacher's pass over the training sequences (one prefill each, teacher_targets.py),
shown beside what annotating those CoTs cost the same teacher in the same run, and the training
step, CE alone vs CE + sampled KD vs CE + top-k KD on the same batches (`cotdistill train` in a
fresh process each, so peak memory is per configuration), as ratios against CE measured here.

    python bench/distill_cost.py --run runs/cpu-gsm8k --examples 40 --steps 3

`--run` is a finished run (its distill.jsonl, its config's teacher and student, its manifest's
annotate time). Run it on an idle machine: the ratios are of times.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from cotdistill.core.config import load_config  # noqa: E402
from cotdistill.core.cpu import cpu  # noqa: E402
from cotdistill.core.rundir import RunDir  # noqa: E402
from cotdistill.training.teacher_targets import TargetSettings, score_training_data  # noqa: E402


def train(data: Path, targets: Path, out: Path, student: str, max_len: int, steps: int, distill: str) -> dict:
    """`cotdistill train` in a child process; its train_metrics.json."""
    cmd = [sys.executable, "-m", "cotdistill.cli", "train", "--data", str(data), "--student", student, "--mode", "cot",
           "--out", str(out), "--max-len", str(max_len), "--max-steps", str(steps), "--batch-size", "8",
           "--restart", "--quiet", "--eval-fraction", "0", "--save-steps", str(steps + 1), "--distill", distill,
           *(["--distill-targets", str(targets)] if distill != "off" else [])]
    subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL)
    return json.loads((out / "train_metrics.json").read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="a finished run directory")
    parser.add_argument("--examples", type=int, default=40, help="the first N kept CoTs")
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per training configuration")
    args = parser.parse_args()

    run = RunDir(args.run)
    config = load_config(run.config)
    rows = run.read_distill()[: args.examples]
    manifest = run.read_manifest()["stages"]["annotate"]
    annotate_s_per_cot = manifest["seconds"] / max(len(run.read_distill()), 1)
    print(f"CPU: {cpu().describe()}; teacher {config.teacher.model}; student {config.student.model}")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "distill.jsonl"
        data.write_text("".join(json.dumps(r) + "\n" for r in rows))
        settings = TargetSettings(config.teacher.model, config.student.distill_temperature,
                                  config.student.distill_tokens, config.seed)
        targets = settings.file(Path(tmp))
        t0 = time.perf_counter()
        stats = score_training_data([(data, "cot")], config.student.model, settings, config.student.max_len, targets,
                                    quiet=True)
        seconds = time.perf_counter() - t0  # the teacher's load included, as a stage pays it
        print(f"\nteacher targets: {len(rows)} CoTs, {stats['positions']} target tokens in {seconds:.0f} s "
              f"({seconds / len(rows):.2f} s per CoT; annotation cost this run {annotate_s_per_cot:.2f} s per kept "
              f"CoT: {seconds / len(rows) / annotate_s_per_cot:.2f}x); {stats['bytes_per_position']} bytes per token\n")
        print("| loss | tokens/s | vs CE | peak memory (loop) | vs CE |")
        print("|---|---|---|---|---|")
        base = None
        for distill in ("off", "sampled", "top-k"):
            m = train(data, targets, Path(tmp) / distill, config.student.model, config.student.max_len, args.steps,
                      distill)
            base = base or m
            print(f"| {'CE' if distill == 'off' else 'CE + ' + distill + ' KD'} | {m['tokens_per_s']:.0f} "
                  f"| {m['tokens_per_s'] / base['tokens_per_s']:.2f}x | {m['peak_rss_gib']:.2f} GiB "
                  f"| {m['peak_rss_gib'] / base['peak_rss_gib']:.2f}x |", flush=True)


if __name__ == "__main__":
    main()
