"""The transformers Trainer as cotdistill uses it: target-token loss, grouped batches, callbacks.

Kept apart from train.py (which decides *what* to train and where the files go) so that this file
reads as the list of differences from a stock Trainer.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import math
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch
from transformers import Trainer, TrainerCallback, TrainingArguments
from transformers.trainer_callback import PrinterCallback, ProgressCallback

from transformers.utils import logging as hf_logging

from cotdistill.training.collate import IGNORE, Collator, LengthGroupedSampler, example_length
from cotdistill.core.errors import UserError
from cotdistill.training.head_loss import Distill, chunkable_head, head_inputs, linear_cross_entropy, mixed_loss


def token_loss(model: Any, batch: dict[str, torch.Tensor], is_seq2seq: bool, path: str,
               head: torch.nn.Linear | None = None, distill: tuple[float, float] | None = None) -> tuple[torch.Tensor, int]:
    """(sum of the loss over target tokens, number of target tokens) for one batch: cross-entropy,
    or with `distill` (weight, temperature) and the batch's sparse teacher targets (`kd_ids`,
    `kd_w`, one row per target token in batch order) head_loss.mixed_loss.

    For a causal LM, position t predicts token t+1, so logits are needed only where labels[t+1]
    is a target token. `path` says how much of the output head runs (`loss_path` picks it):
      "chunked"  `head` (the model's, `chunkable_head`) and the loss fused over target
                 positions, a chunk at a time (head_loss.py)
      "targets"  the model applies its head to the target positions alone (a boolean
                 `logits_to_keep` mask, flattened to (n_targets, vocab))
      "full"     logits at every position, targets picked afterwards (any model)
    """
    labels = batch["labels"]
    kd = Distill(batch["kd_ids"], batch["kd_w"], *distill) if distill and "kd_ids" in batch else None
    if is_seq2seq:
        logits = model(
            input_ids=batch["input_ids"], attention_mask=batch["attention_mask"],
            decoder_input_ids=batch["decoder_input_ids"],
        ).logits
        mask = labels != IGNORE
        logits, targets = logits[mask], labels[mask]
    else:
        keep = torch.zeros_like(labels, dtype=torch.bool)
        keep[:, :-1] = labels[:, 1:] != IGNORE
        targets = labels[:, 1:][keep[:, :-1]]
        inputs = {"input_ids": batch["input_ids"], "attention_mask": batch["attention_mask"]}
        if path == "chunked":
            return linear_cross_entropy(head_inputs(model, head, inputs, keep), head.weight, targets, kd), targets.numel()
        if path == "targets":
            logits = model(**inputs, logits_to_keep=keep).logits
            logits = logits.reshape(-1, logits.shape[-1])
        else:
            logits = model(**inputs).logits[keep]
    return mixed_loss(logits, targets, kd), targets.numel()


def supports_logits_mask(model: Any) -> bool:
    """Whether the model's forward takes a boolean `logits_to_keep` mask (transformers' slice helper)."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    try:
        return "slice_logits_to_keep" in inspect.getsource(type(base).forward)
    except (OSError, TypeError):
        return False


def loss_path(model: Any, is_seq2seq: bool, sharded: bool = False) -> str:
    """The cheapest `token_loss` path this model supports (see there).

    `sharded` (FSDP, DeepSpeed): the fused head reads head.weight outside the module's forward, and
    sharded parameters are gathered only inside forward, so it would see a shard. Untested there:
    the head-on-target-positions path, which runs the head's own forward, is taken instead."""
    if is_seq2seq or not supports_logits_mask(model):
        return "full"
    if chunkable_head(model) is None:
        return "targets"
    if sharded:
        logger.warning("FSDP/DeepSpeed: the fused chunked head loss is off; the head runs on target positions only")
        return "targets"
    return "chunked"


class StudentTrainer(Trainer):
    """A Trainer whose loss covers target tokens only and whose batches are length-grouped."""

    def __init__(self, *args: Any, lengths: list[int], is_seq2seq: bool, distill: tuple[float, float] | None = None,
                 **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.lengths, self.is_seq2seq = lengths, is_seq2seq
        self.distill = distill  # (weight, temperature) of token-level distillation; training steps only
        self.loss_path = loss_path(self.model, is_seq2seq, sharded=self.is_fsdp_enabled or self.is_deepspeed_enabled)
        self.head = chunkable_head(self.model)  # found here: under DDP, compute_loss gets the wrapper
        # Our compute_loss divides by the target-token count of the whole accumulated step, so
        # Trainer must pass that count (num_items_in_batch) and not rescale for accumulation.
        self.model_accepts_loss_kwargs = True
        self._loss_shifts_labels = not is_seq2seq
        self.counts = torch.zeros(3, dtype=torch.float64)  # tokens, target tokens, padding positions
        self.sampler: LengthGroupedSampler | None = None
        self.timer = _Timer()
        self.add_callback(self.timer)

    def _get_train_sampler(self, train_dataset: Any = None) -> LengthGroupedSampler:
        self.sampler = LengthGroupedSampler(
            self.lengths, self.args.per_device_train_batch_size, self.args.seed, self.args.world_size,
            self.args.gradient_accumulation_steps,
        )
        return self.sampler

    def compute_loss(self, model: Any, inputs: dict, return_outputs: bool = False,
                     num_items_in_batch: Any = None) -> Any:
        # accelerate puts autocast around model.forward only; the fused head loss runs outside it
        # and must run its matmuls in bf16 too (in fp32 they took 3x longer).
        with self.accelerator.autocast():
            # The eval loss stays the plain cross-entropy: comparable between students however trained.
            distill = self.distill if model.training else None
            loss_sum, n_targets = token_loss(model, inputs, self.is_seq2seq, self.loss_path, self.head, distill)
        if model.training:
            self._count(inputs, n_targets)
        if num_items_in_batch is None:  # evaluation: the mean over this batch
            loss = loss_sum / max(n_targets, 1)
        else:  # training: the mean over every target token of the step, on all ranks
            loss = loss_sum / num_items_in_batch
            if self.args.average_tokens_across_devices and self.args.world_size > 1:
                loss = loss * self.args.world_size  # DDP averages gradients over ranks
        return (loss, {}) if return_outputs else loss  # no logits kept: evaluation needs the loss only

    def _count(self, inputs: dict, n_targets: int) -> None:
        real = int(inputs["attention_mask"].sum())
        positions = inputs["input_ids"].numel()
        if self.is_seq2seq:  # the decoder processes the padded labels too
            real, positions = real + n_targets, positions + inputs["labels"].numel()
        self.counts += torch.tensor([real, n_targets, positions - real], dtype=torch.float64)


logger = hf_logging.get_logger("cotdistill")
SCHEDULES = {"cosine": "cosine", "linear": "linear", "constant": "constant_with_warmup"}  # ours → transformers'


def tensorboard_callbacks(out: Path) -> list:
    """TensorBoard logging into <out>/tensorboard (rank 0 only), when the package is installed:
    `tensorboard --logdir runs/` then shows every student's curves side by side."""
    import importlib.util

    if importlib.util.find_spec("tensorboard") is None:
        return []
    from transformers.integrations import TensorBoardCallback

    callback = TensorBoardCallback()
    callback.logging_dir = str(out / "tensorboard")
    return [callback]


def build_trainer(model: Any, train_set: list[dict], eval_set: list[dict], checkpoints: Path, config: Any,
                  is_seq2seq: bool, bf16: bool, pad_id: int, decoder_start_id: int | None) -> StudentTrainer:
    """A StudentTrainer with cotdistill's defaults: checkpoints, per-step logging, no NaN filtering."""
    # transformers 5 renamed gradient_checkpointing to activation_checkpointing (the old name warns)
    checkpointing = next(n for n in ("activation_checkpointing", "gradient_checkpointing")
                         if n in TrainingArguments.__dataclass_fields__)
    args = TrainingArguments(
        output_dir=str(checkpoints),
        per_device_train_batch_size=config.batch_size,
        per_device_eval_batch_size=config.batch_size,
        gradient_accumulation_steps=config.grad_accum,
        **{checkpointing: config.gradient_checkpointing,
           f"{checkpointing}_kwargs": {"use_reentrant": False}},  # the reentrant kind needs inputs that require grad
        num_train_epochs=config.epochs,
        max_steps=config.max_steps or -1,
        learning_rate=config.lr,
        lr_scheduler_type=SCHEDULES[config.schedule],
        warmup_steps=config.warmup,
        weight_decay=0.0,
        max_grad_norm=1.0,
        bf16=bf16,
        logging_steps=1,
        logging_nan_inf_filter=False,  # a NaN must stop training, not be averaged away
        eval_strategy="steps" if eval_set else "no",
        eval_steps=config.save_steps,
        save_strategy="steps",
        save_steps=config.save_steps,
        save_total_limit=1,  # the newest is complete before the older one is deleted
        seed=config.seed,
        data_seed=config.seed,
        report_to="none",
        disable_tqdm=True,
        remove_unused_columns=False,
        prediction_loss_only=True,
        dataloader_pin_memory=False,
        use_cpu=not torch.cuda.is_available(),
        ddp_find_unused_parameters=False,
    )
    trainer = StudentTrainer(
        model=model,
        args=args,
        train_dataset=train_set,
        eval_dataset=eval_set or None,
        data_collator=Collator(pad_id, decoder_start_id),
        lengths=[example_length(e) for e in train_set],
        is_seq2seq=is_seq2seq,
        distill=(config.distill_weight, config.distill_temperature) if config.distill != "off" else None,
        callbacks=tensorboard_callbacks(Path(config.out)),
    )
    trainer.remove_callback(PrinterCallback)
    trainer.remove_callback(ProgressCallback)
    trainer.add_callback(_EpochToSampler(trainer))
    trainer.add_callback(_DivergenceGuard())
    if not config.quiet:
        trainer.add_callback(_Progress(trainer))
    return trainer


class _Timer(TrainerCallback):
    """Seconds spent in the training loop of this process (not loading, not saving the result)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._t0 = 0.0

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self._t0 = time.perf_counter()

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.seconds = time.perf_counter() - self._t0


class _EpochToSampler(TrainerCallback):
    """Tell the sampler the epoch, also on resumed runs where accelerate's wrappers do not reach it."""

    def __init__(self, trainer: StudentTrainer):
        self.trainer = trainer

    def on_epoch_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if self.trainer.sampler is not None:
            self.trainer.sampler.set_epoch(int(state.epoch or 0))


class _DivergenceGuard(TrainerCallback):
    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        for key in ("loss", "eval_loss"):
            value = (logs or {}).get(key)
            if value is not None and not math.isfinite(value):
                raise UserError(
                    f"training diverged: the {key.replace('_', ' ')} became {value} at step {state.global_step} "
                    f"(learning rate {args.learning_rate:g}); rerun with a lower --lr "
                    f"(e.g. {args.learning_rate / 10:g}) and --restart"
                )


class _Progress(TrainerCallback):
    """Training's progress (rank 0) as every stage shows it (progress.py: a bar in a terminal, plain
    lines in a log file), with the loss, the tokens/s of all ranks, and the ETA."""

    def __init__(self, trainer: StudentTrainer):
        self.trainer = trainer
        self.bar: Any = None
        self.task: Any = None
        self.postfix: dict[str, str] = {}

    def on_train_begin(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.is_world_process_zero:
            from cotdistill.core.progress import progress_bar

            self.bar = progress_bar(quiet=False)
            self.bar.start()
            self.task = self.bar.add_task("train", total=state.max_steps, completed=state.global_step)
            self._t0 = time.perf_counter()

    def on_log(self, args: Any, state: Any, control: Any, logs: dict | None = None, **kw: Any) -> None:
        if self.bar is None:
            return
        logs = logs or {}
        if "loss" in logs:
            self.postfix["loss"] = f"{logs['loss']:.3f}"
        if "eval_loss" in logs:
            self.postfix["eval loss"] = f"{logs['eval_loss']:.3f}"
        elapsed = time.perf_counter() - self._t0
        tokens = float(self.trainer.counts[0]) * args.world_size  # ranks see batches of similar size
        self.postfix["tokens/s"] = f"{tokens / elapsed:.0f}" if elapsed > 0 else "-"
        description = "train (" + ", ".join(f"{k} {v}" for k, v in self.postfix.items()) + ")"
        self.bar.update(self.task, completed=state.global_step, description=description)

    def on_train_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        self.close()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None


@contextmanager
def progress_closed(trainer: StudentTrainer) -> Iterator[None]:
    """Stop training's progress bar however training ends (an error, Ctrl-C): a bar left running
    would keep the terminal's cursor hidden."""
    try:
        yield
    finally:
        for callback in trainer.callback_handler.callbacks:
            if isinstance(callback, _Progress):
                callback.close()


def latest_checkpoint(checkpoints: Path, delete_torn: bool) -> Path | None:
    """The newest complete checkpoint; a torn one (process killed while saving) is ignored or deleted.

    Trainer writes trainer_state.json last, so a checkpoint whose state parses and names its own
    step is complete.
    """
    complete = []
    for path in checkpoints.glob("checkpoint-*"):
        try:
            step = int(path.name.rsplit("-", 1)[1])
            ok = json.loads((path / "trainer_state.json").read_text())["global_step"] == step
        except (ValueError, OSError, KeyError):
            ok = False
        if ok:
            complete.append((step, path))
        elif delete_torn:
            shutil.rmtree(path, ignore_errors=True)
    return max(complete)[1] if complete else None


def weights_digest(model: Any) -> str:
    """sha256 of every parameter's bytes in name order: equal digests mean bit-identical weights.

    Meant for replicated (DDP) models; under FSDP each rank would hash its own shard.
    """
    h = hashlib.sha256()
    for name, p in sorted(model.named_parameters()):
        h.update(name.encode())
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()
