"""Student training throughput: cotdistill's trainer vs a plain transformers Trainer, side by side.

Same student, same LoRA rank and targets, same examples, same micro-batch size; each configuration
runs `--warmup` untimed steps then `--steps` timed steps (per-step wall time from a callback).

    baseline  transformers Trainer with its defaults: random batches padded to the longest,
              fp32 (Trainer never turns on mixed precision by itself), the model's own loss
              (logits for every position), adapters from PEFT's get_peft_model with its defaults.
    baseline+bf16  the same with the one flag a user would add, bf16=True (only where bf16 is the
              faster dtype here, as "auto" decides).
    ours      cotdistill.training.student_trainer: length-grouped batches, output head on target positions only
              and fused with the loss a chunk at a time (head_loss.py), bf16 autocast when
              faster on this device ("auto").
    unfused   ours with the head run on all target positions at once and a separate loss: the
              before/after of the fused head loss (peak memory above all).

Figures: real (non-padding) tokens per second, padding share of the batch positions, the process's
peak resident memory during the configuration (sampled, memory.py), and MFU =
useful model FLOPs per second / the matmul ceiling measured here: the fastest 2048^3 matmul in the
configuration's dtype, same thread count, seen anywhere in the run (at the start and just before and
after each configuration). One ceiling for both rows, and the best the hardware showed: a ceiling
taken at a slow moment would flatter MFU (on a shared machine it drifts by 30 %).
Useful FLOPs per step, with N_body = parameters of every linear layer
except the output head, N_head = the head's (vocab x hidden), N_lora = LoRA parameters,
T = real tokens, T_tgt = target tokens:
    full fine-tuning:  6 * N_body * T  +  6 * N_head * T_tgt
    LoRA:              4 * N_body * T  +  4 * N_head * T_tgt  +  6 * N_lora * T
(forward 2N; backward 2N for activation gradients, plus 2N for weight gradients only where
weights train; the head is needed only where a target token is predicted). Attention-score
FLOPs (~4 * layers * T * seq * d_attn) and elementwise work are left out, as in the usual 6ND
convention, so MFU is slightly understated for both. A "conventional" column counts the head at
every real token (6N*T / 4N*T), which flatters the baseline's wasted prompt logits.

    python bench/train_throughput.py --data RUN/distill.jsonl --steps 3 --batch-size 4

Run it on an idle machine for absolute numbers; on a shared one, compare the two rows only.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

import torch
from transformers import (
    DataCollatorForSeq2Seq,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)

from cotdistill.training.collate import IGNORE, encode_all, read_pairs
from cotdistill.memory import PeakMemory
from cotdistill.training.students import add_lora, load_student
from cotdistill.training.train import TrainConfig, choose_bf16
from cotdistill.training.student_trainer import build_trainer

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}


def matmul_ceiling(dtype: torch.dtype, n: int = 2048, repeats: int = 3) -> float:
    """Best FLOP/s of `repeats` n^3 matmuls: the peak that MFU is measured against.

    A dtype without a fast path here (bf16 on CPUs lacking AVX512-BF16/AMX) takes a minute per
    call: when the warm-up call alone exceeds 5 s, it is the measurement.
    """
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    t = time.perf_counter()
    a @ b
    first = time.perf_counter() - t
    if first > 5:
        return 2 * n**3 / first
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * n**3 / min(times)


class CountingCollator:
    """Wraps a collator to record real tokens, target tokens and batch positions of each batch."""

    def __init__(self, inner: Any, is_seq2seq: bool):
        self.inner, self.is_seq2seq, self.batches = inner, is_seq2seq, []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        labels = batch["labels"]
        targets = int((labels != IGNORE).sum())
        real = int(batch["attention_mask"].sum()) + (targets if self.is_seq2seq else 0)
        positions = batch["input_ids"].numel() + (labels.numel() if self.is_seq2seq else 0)
        self.batches.append((real, targets, positions))
        return batch


class StepTimer(TrainerCallback):
    def __init__(self) -> None:
        self.times: list[float] = []

    def on_step_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t = time.perf_counter()

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.times.append(time.perf_counter() - self._t)


def param_counts(model: Any) -> tuple[int, int, int]:
    """(N_body, N_head, N_lora): linear-layer weights outside the head, the head, LoRA adapters."""
    head = model.get_output_embeddings()
    n_head = head.weight.numel()
    n_lora = sum(p.numel() for n, p in model.named_parameters() if "lora_" in n)
    n_body = sum(
        m.weight.numel() for name, m in model.named_modules()
        if isinstance(m, torch.nn.Linear) and m is not head and "lora_" not in name
    )
    return n_body, n_head, n_lora


def standard_lora(model: Any, is_seq2seq: bool, r: int) -> Any:
    """LoRA as PEFT's documentation sets it up: the same rank, alpha and targets as ours."""
    from peft import LoraConfig, TaskType, get_peft_model

    task = TaskType.SEQ_2_SEQ_LM if is_seq2seq else TaskType.CAUSAL_LM
    return get_peft_model(model, LoraConfig(r=r, lora_alpha=2 * r, target_modules="all-linear", task_type=task))


def baseline_trainer(model: Any, tok: Any, data: list, is_seq2seq: bool, args: Any, bf16: bool) -> tuple[Trainer, CountingCollator]:
    """A stock Trainer, as a newcomer would write it: defaults everywhere (bf16 if asked)."""
    collator = CountingCollator(DataCollatorForSeq2Seq(tok, padding=True), is_seq2seq)
    targs = TrainingArguments(
        output_dir="/tmp/bench-baseline", per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps, learning_rate=2e-4, report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=bf16,
    )
    return Trainer(model=model, args=targs, train_dataset=data, data_collator=collator), collator


def our_trainer(model: Any, tok: Any, data: list, is_seq2seq: bool, args: Any, bf16: bool) -> tuple[Trainer, CountingCollator]:
    cfg = TrainConfig(student=args.student, mode=args.mode, lora=not args.full, max_steps=args.warmup + args.steps,
                      batch_size=args.batch_size, save_steps=10**6, quiet=True, out="/tmp/bench-ours")
    trainer = build_trainer(model, data, [], Path("/tmp/bench-ours"), cfg, is_seq2seq, bf16,
                            pad_id=tok.pad_token_id, decoder_start_id=None)
    collator = CountingCollator(trainer.data_collator, is_seq2seq)
    trainer.data_collator = collator
    return trainer, collator


def measure(trainer: Trainer, collator: CountingCollator, warmup: int) -> dict:
    """Train, then sum time and tokens over the steps after the warm-up ones."""
    timer = StepTimer()
    trainer.add_callback(timer)
    trainer.train()
    # The dataloader collates one batch ahead (accelerate looks ahead for the end), so the last
    # collated batch never trained: count exactly the batches of the timed steps.
    real, targets, positions = (sum(x) for x in zip(*collator.batches[warmup : len(timer.times)]))
    return {"seconds": sum(timer.times[warmup:]), "tokens": real, "target_tokens": targets,
            "positions": positions, "step_s": timer.times[warmup:]}


def useful_flops(r: dict, counts: tuple[int, int, int], lora: bool) -> tuple[float, float]:
    """(useful, conventional) FLOPs of the timed steps; the formulas are in the module docstring."""
    n_body, n_head, n_lora = counts
    k = 4 if lora else 6
    adapters = 6 * n_lora * r["tokens"] if lora else 0
    useful = k * n_body * r["tokens"] + k * n_head * r["target_tokens"] + adapters
    conventional = k * (n_body + n_head) * r["tokens"] + adapters
    return useful, conventional


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="distill.jsonl")
    parser.add_argument("--student", default="embedded:gemma-3-270m")
    parser.add_argument("--mode", default="cot")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per configuration")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()
    lora = not args.full

    seen = {dtype: [matmul_ceiling(torch_dtype)] for dtype, torch_dtype in DTYPES.items()}
    ours_bf16, why = choose_bf16("auto")
    print(f"threads {torch.get_num_threads()}; matmul 2048^3: fp32 {seen['fp32'][0] / 1e9:.1f} GFLOP/s, "
          f"bf16 {seen['bf16'][0] / 1e9:.1f} GFLOP/s; ours uses bf16={ours_bf16} ({why})")

    pairs = read_pairs(args.data, args.mode)
    labels = ["baseline", "baseline+bf16", "unfused", "ours"] if ours_bf16 else ["baseline", "unfused", "ours"]
    results = []
    for label in labels:
        set_seed(0)
        model, tok, is_seq2seq = load_student(args.student)
        standard = label.startswith("baseline")
        if lora:
            model = standard_lora(model, is_seq2seq, args.lora_r) if standard else add_lora(model, is_seq2seq, args.lora_r)
        data, _ = encode_all(pairs, tok, is_seq2seq, max_len=1024)
        counts = param_counts(model)
        bf16 = label == "baseline+bf16" or (not standard and ours_bf16)
        if standard:
            trainer, collator = baseline_trainer(model, tok, data, is_seq2seq, args, bf16)
        else:
            trainer, collator = our_trainer(model, tok, data, is_seq2seq, args, bf16)
            if label == "unfused" and trainer.loss_path == "chunked":
                trainer.loss_path = "targets"
        dtype = "bf16" if bf16 else "fp32"
        seen[dtype].append(matmul_ceiling(DTYPES[dtype]))
        with PeakMemory() as memory:
            r = {"label": label, "bf16": bf16, **measure(trainer, collator, args.warmup)}
        r["peak_gib"] = memory.gib
        seen[dtype].append(matmul_ceiling(DTYPES[dtype]))
        r.update(useful_conventional=useful_flops(r, counts, lora), tokens_per_s=r["tokens"] / r["seconds"],
                 padding=1 - r["tokens"] / r["positions"])
        results.append(r)
        del model, trainer

    peaks = {dtype: max(values) for dtype, values in seen.items()}
    for r in results:
        (useful, conventional), peak = r.pop("useful_conventional"), peaks["bf16" if r["bf16"] else "fp32"]
        r.update(peak_flops=peak, mfu=useful / r["seconds"] / peak, mfu_conventional=conventional / r["seconds"] / peak,
                 mfu_vs_bf16_peak=useful / r["seconds"] / peaks["bf16"])
    print("fp32 matmul GFLOP/s seen in the run: " + ", ".join(f"{v / 1e9:.1f}" for v in seen["fp32"]))

    # Against the bf16 ceiling: what an fp32 row leaves on the table where bf16 is fast. Where it is
    # slow (no AVX512-BF16/AMX) the column means nothing and is left out.
    bf16_column = peaks["bf16"] > peaks["fp32"]
    print(f"{'':13} {'tokens/s':>9} {'padding':>8} {'s/step':>7} {'peak GiB':>8} {'peak GFLOP/s':>12} {'MFU':>6} {'MFU conv.':>9}"
          + (f" {'MFU/bf16 peak':>13}" if bf16_column else ""))
    for r in results:
        print(f"{r['label']:13} {r['tokens_per_s']:9.1f} {r['padding']:8.1%} {statistics.mean(r['step_s']):7.1f} "
              f"{r['peak_gib']:8.2f} {r['peak_flops'] / 1e9:12.1f} {r['mfu']:6.1%} {r['mfu_conventional']:9.1%}"
              + (f" {r['mfu_vs_bf16_peak']:13.1%}" if bf16_column else ""))
    baseline, *_, unfused, ours = results
    versus_bf16 = (f" (over baseline+bf16: {ours['tokens_per_s'] / results[1]['tokens_per_s']:.2f}x)"
                   if ours_bf16 else "")
    print(f"ours / baseline tokens/s: {ours['tokens_per_s'] / baseline['tokens_per_s']:.2f}x{versus_bf16}; "
          f"fused head loss / unfused: {ours['tokens_per_s'] / unfused['tokens_per_s']:.2f}x tokens/s, "
          f"peak memory {ours['peak_gib']:.2f} vs {unfused['peak_gib']:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"ceilings": peaks, "results": results, "args": vars(args)}, indent=2, default=str))


if __name__ == "__main__":
    main()
