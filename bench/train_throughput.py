"""Student training throughput: cotdistill's trainer vs the strongest stock setups, side by side.

Same student, same LoRA rank and targets, same examples; each configuration runs `--warmup`
untimed steps then `--steps` timed steps (per-step wall time from a callback), `--repeats` times
from a freshly loaded model, and the table shows min / median / max tokens/s over the repeats.

    trainer        transformers Trainer with its defaults: random batches padded to the longest,
                   fp32 unless bf16 is the faster dtype here, the model's own loss (logits at every
                   position), adapters from PEFT's get_peft_model with its defaults.
    trainer-grouped  the same with length-grouped batches (train_sampling_strategy="group_by_length",
                   transformers 4's group_by_length=True): less padding.
    trl-packed     TRL's SFTTrainer as its docs recommend for speed: packing (best-fit decreasing,
                   padding-free: one row of concatenated examples per micro-batch, position_ids
                   restarting per example), completion-only loss, bf16 where faster. A packed row
                   holds `--batch-size` x the mean example length, so a step sees as many tokens as
                   the others'. (Padding-free attention is exact only with flash-attention kernels;
                   on CPU SDPA attends across the packed examples, which costs more, not less.)
    unfused        ours with the head run on all target positions at once and a separate loss.
    ours           cotdistill.training.student_trainer: length-grouped batches, output head on
                   target positions only and fused with the loss a chunk at a time (head_loss.py),
                   bf16 autocast where faster on this device ("auto").

Figures: real (non-padding) tokens per second; padding share of the batch positions; the
process's peak resident memory (sampled, memory.py); the mean loss of the last timed steps (the
same learning problem must reach about the same loss); and MFU two ways, both against the
matmul ceiling measured in this run (the fastest 2048^3 matmul in the configuration's dtype, same
threads, taken at the start and around each configuration):
    MFU 6N (nanoGPT's convention, comparable across projects): (6 N + 12 L d S) per real token,
        N = every parameter of the model (LoRA or not), L layers, d model width, S the mean padded
        sequence length of the step.
    MFU useful (ours, what the step has to compute): with N_body = linear weights outside the
        output head, N_head = vocab x hidden, N_lora = adapter parameters, T = real tokens,
        T_tgt = target tokens:
            full fine-tuning:  6 N_body T + 6 N_head T_tgt
            LoRA:              4 N_body T + 4 N_head T_tgt + 6 N_lora T
        (backward computes weight gradients only where weights train; the head is needed only
        where a target token is predicted), attention and elementwise work left out.

    python bench/train_throughput.py --data RUN/distill.jsonl --steps 6 --repeats 3 --batch-size 4

Run it on an idle machine for absolute numbers; on a shared one, compare the rows only.
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

from cotdistill.core.cpu import cpu
from cotdistill.training.collate import IGNORE, encode_all, read_pairs
from cotdistill.core.memory import PeakMemory
from cotdistill.models.students import add_lora, load_student
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
    """Wraps a collator to record real tokens, target tokens, batch positions and the padded
    sequence length of each batch (a padding-free batch has no attention mask: every position is real)."""

    def __init__(self, inner: Any, is_seq2seq: bool):
        self.inner, self.is_seq2seq, self.batches = inner, is_seq2seq, []

    def __call__(self, features: list[dict]) -> dict:
        batch = self.inner(features)
        labels = batch["labels"]
        targets = int((labels != IGNORE).sum())
        mask = batch.get("attention_mask")
        real = (int(mask.sum()) if mask is not None else batch["input_ids"].numel()) + (targets if self.is_seq2seq else 0)
        positions = batch["input_ids"].numel() + (labels.numel() if self.is_seq2seq else 0)
        self.batches.append((real, targets, positions, batch["input_ids"].shape[-1]))
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


def stock_trainer(model: Any, tok: Any, data: list, is_seq2seq: bool, args: Any, bf16: bool,
                  group_by_length: bool = False) -> tuple[Trainer, CountingCollator]:
    """A stock Trainer, as a newcomer would write it: defaults everywhere (bf16, length grouping if asked)."""
    collator = CountingCollator(DataCollatorForSeq2Seq(tok, padding=True), is_seq2seq)
    targs = TrainingArguments(
        output_dir="/tmp/bench-baseline", per_device_train_batch_size=args.batch_size,
        max_steps=args.warmup + args.steps, learning_rate=2e-4, report_to="none", save_strategy="no",
        disable_tqdm=True, use_cpu=not torch.cuda.is_available(), bf16=bf16, logging_steps=1,
        train_sampling_strategy="group_by_length" if group_by_length else "random",  # v4's group_by_length=True
    )
    return Trainer(model=model, args=targs, train_dataset=data, data_collator=collator), collator


def trl_trainer(model: Any, tok: Any, pairs: list, is_seq2seq: bool, args: Any, bf16: bool,
                mean_len: float) -> tuple[Trainer, CountingCollator]:
    """TRL's SFTTrainer with packing (bfd, padding-free) and completion-only loss on the same
    prompt/completion texts; a packed row holds about `batch_size` examples."""
    from datasets import Dataset
    from trl import SFTConfig, SFTTrainer

    data = Dataset.from_list([{"prompt": p.input, "completion": " " + p.target.lstrip()} for p in pairs])
    config = SFTConfig(
        output_dir="/tmp/bench-trl", per_device_train_batch_size=1, max_length=int(args.batch_size * mean_len),
        packing=True, padding_free=True, completion_only_loss=True, max_steps=args.warmup + args.steps,
        learning_rate=2e-4, report_to="none", save_strategy="no", disable_tqdm=True, logging_steps=1,
        use_cpu=not torch.cuda.is_available(), bf16=bf16,
    )
    trainer = SFTTrainer(model=model, args=config, train_dataset=data, processing_class=tok)
    collator = CountingCollator(trainer.data_collator, is_seq2seq)
    trainer.data_collator = collator
    return trainer, collator


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
    timed = collator.batches[warmup : len(timer.times)]
    real, targets, positions, _ = (sum(x) for x in zip(*timed))
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h][warmup:]
    return {"seconds": sum(timer.times[warmup:]), "tokens": real, "target_tokens": targets,
            "positions": positions, "seq_len": sum(b[3] for b in timed) / len(timed), "step_s": timer.times[warmup:],
            "final_loss": statistics.mean(losses[-3:]) if losses else float("nan")}


def flops(r: dict, counts: tuple[int, int, int], shape: tuple[int, int, int], lora: bool) -> tuple[float, float]:
    """(useful, nanoGPT 6N) FLOPs of the timed steps; the formulas are in the module docstring."""
    n_body, n_head, n_lora = counts
    n_all, layers, width = shape
    k = 4 if lora else 6
    adapters = 6 * n_lora * r["tokens"] if lora else 0
    useful = k * n_body * r["tokens"] + k * n_head * r["target_tokens"] + adapters
    standard = (6 * n_all + 12 * layers * width * r["seq_len"]) * r["tokens"]
    return useful, standard


def model_shape(model: Any) -> tuple[int, int, int]:
    """(every parameter but LoRA's, layers, hidden width), for the 6N + 12 L d S convention."""
    config = model.config.get_text_config() if hasattr(model.config, "get_text_config") else model.config
    n_all = sum(p.numel() for n, p in model.named_parameters() if "lora_" not in n)
    return n_all, config.num_hidden_layers, config.hidden_size


def build(label: str, args: Any, pairs: list, ours_bf16: bool) -> tuple[Trainer, CountingCollator, dict]:
    """A freshly loaded student and the trainer of configuration `label`."""
    set_seed(0)
    model, tok, is_seq2seq = load_student(args.student)
    stock = label in ("trainer", "trainer+bf16", "trainer-grouped", "trl-packed")
    if not args.full:
        model = standard_lora(model, is_seq2seq, args.lora_r) if stock else add_lora(model, is_seq2seq, args.lora_r)
    data, _ = encode_all(pairs, tok, is_seq2seq, max_len=1024)
    bf16 = label == "trainer+bf16" or (label != "trainer" and ours_bf16)
    info = {"counts": param_counts(model), "shape": model_shape(model), "bf16": bf16}
    if label == "trl-packed":
        mean_len = statistics.mean(len(e["input_ids"]) for e in data)
        trainer, collator = trl_trainer(model, tok, pairs, is_seq2seq, args, bf16, mean_len)
    elif stock:
        trainer, collator = stock_trainer(model, tok, data, is_seq2seq, args, bf16, group_by_length=label == "trainer-grouped")
    else:
        trainer, collator = our_trainer(model, tok, data, is_seq2seq, args, bf16)
        if label == "unfused" and trainer.loss_path == "chunked":
            trainer.loss_path = "targets"
    return trainer, collator, info


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="distill.jsonl")
    parser.add_argument("--student", default="embedded:gemma-3-270m")
    parser.add_argument("--mode", default="cot")
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--steps", type=int, default=6, help="timed steps per repeat")
    parser.add_argument("--warmup", type=int, default=1, help="untimed steps first")
    parser.add_argument("--repeats", type=int, default=3, help="runs of each configuration, from a fresh model")
    parser.add_argument("--lora-r", type=int, default=16)
    parser.add_argument("--full", action="store_true", help="full fine-tuning instead of LoRA")
    parser.add_argument("--only", nargs="*", help="run only these configurations")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    seen = {dtype: [matmul_ceiling(torch_dtype)] for dtype, torch_dtype in DTYPES.items()}
    ours_bf16, why = choose_bf16("auto")
    print(f"{cpu().describe()}; threads {torch.get_num_threads()}; matmul 2048^3: fp32 {seen['fp32'][0] / 1e9:.1f} GFLOP/s, "
          f"bf16 {seen['bf16'][0] / 1e9:.1f} GFLOP/s; bf16 where faster: {ours_bf16} ({why})")

    pairs = read_pairs(args.data, args.mode)
    labels = ["trainer", *(["trainer+bf16"] if ours_bf16 else []), "trainer-grouped", "trl-packed", "unfused", "ours"]
    results = []
    for label in [x for x in labels if not args.only or x in args.only]:
        runs = []
        for _ in range(args.repeats):
            trainer, collator, info = build(label, args, pairs, ours_bf16)
            dtype = "bf16" if info["bf16"] else "fp32"
            seen[dtype].append(matmul_ceiling(DTYPES[dtype]))
            with PeakMemory() as memory:
                r = {**measure(trainer, collator, args.warmup), "peak_gib": memory.gib}
            seen[dtype].append(matmul_ceiling(DTYPES[dtype]))
            r["useful_standard"] = flops(r, info["counts"], info["shape"], not args.full)
            runs.append(r)
            del trainer
        results.append({"label": label, "bf16": info["bf16"], "runs": runs})
        print(f"{label}: " + ", ".join(f"{r['tokens'] / r['seconds']:.1f}" for r in runs) + " tokens/s", flush=True)

    peaks = {dtype: max(values) for dtype, values in seen.items()}
    for res in results:
        peak = peaks["bf16" if res["bf16"] else "fp32"]
        tps = sorted(r["tokens"] / r["seconds"] for r in res["runs"])
        best = max(res["runs"], key=lambda r: r["tokens"] / r["seconds"])
        useful, standard = (sum(r["useful_standard"][i] for r in res["runs"]) / sum(r["seconds"] for r in res["runs"]) for i in (0, 1))
        res.update(tokens_per_s={"min": tps[0], "median": statistics.median(tps), "max": tps[-1]}, peak_flops=peak,
                   padding=1 - sum(r["tokens"] for r in res["runs"]) / sum(r["positions"] for r in res["runs"]),
                   peak_gib=max(r["peak_gib"] for r in res["runs"]), final_loss=statistics.mean(r["final_loss"] for r in res["runs"]),
                   mfu_useful=useful / peak, mfu_6n=standard / peak, step_s=statistics.mean(best["step_s"]))
    print("fp32 matmul GFLOP/s seen in the run: " + ", ".join(f"{v / 1e9:.1f}" for v in seen["fp32"]))
    print(f"{'':16} {'tokens/s min / median / max':>28} {'padding':>8} {'s/step':>7} {'peak GiB':>8} {'loss':>6} "
          f"{'peak GFLOP/s':>12} {'MFU 6N':>7} {'MFU useful':>10}")
    for r in results:
        t = r["tokens_per_s"]
        print(f"{r['label']:16} {t['min']:8.1f} / {t['median']:7.1f} / {t['max']:7.1f} {r['padding']:8.1%} {r['step_s']:7.1f} "
              f"{r['peak_gib']:8.2f} {r['final_loss']:6.3f} {r['peak_flops'] / 1e9:12.1f} {r['mfu_6n']:7.1%} {r['mfu_useful']:10.1%}")
    by = {r["label"]: r for r in results}
    if "ours" in by:
        stock = [r for r in results if r["label"] in ("trainer", "trainer+bf16", "trainer-grouped", "trl-packed")]
        if stock:
            best = max(stock, key=lambda r: r["tokens_per_s"]["median"])
            ours = by["ours"]
            print(f"ours / best stock ({best['label']}), median tokens/s: {ours['tokens_per_s']['median'] / best['tokens_per_s']['median']:.2f}x; "
                  f"peak memory {ours['peak_gib']:.2f} vs {best['peak_gib']:.2f} GiB")
    if args.json:
        args.json.write_text(json.dumps({"cpu": cpu().describe(), "ceilings": peaks, "results": results, "args": vars(args)},
                                        indent=2, default=str))


if __name__ == "__main__":
    main()
