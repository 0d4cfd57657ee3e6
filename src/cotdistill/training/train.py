"""Fine-tune a student on distill.jsonl (question → CoT + "The answer is X."), resumably.

Built on transformers' Trainer, so multi-process launchers work: DDP (torchrun, accelerate launch)
is tested on 2 CPU processes over gloo; FSDP and DeepSpeed configs reach the Trainer unchanged but
are untested here, and under them the fused chunked head loss is switched off (student_trainer.py). What this module adds to a plain Trainer, and why:
- loss on target tokens only, normalised per target token across gradient accumulation and ranks;
- for causal LMs the output head is applied to target positions only (`logits_to_keep` mask): with
  a 262k-token vocabulary the head is most of the model's FLOPs, and prompt positions need no logits;
- length-grouped batches (collate.LengthGroupedSampler) so little compute goes to padding;
- bf16 autocast only where it is faster (measured; some CPUs have no bf16 matmul path; never fp16);
- resume after a crash or kill: rerunning the same command continues from the last complete
  checkpoint (weights, optimizer, scheduler, RNG, data order) and ends with the same model;
- a stop with a clear message when the loss becomes NaN/inf; loss_curve.json and train_metrics.json;
- TensorBoard event files in <out>/tensorboard when the tensorboard package is installed.

Checkpoints are Trainer's: model weights in safetensors, plus optimizer.pt / scheduler.pt /
rng_state.pth, which are pickles that this program wrote itself (never data from elsewhere).
"""

from __future__ import annotations

import os
import shutil
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cotdistill.training.collate import (
    encode_all,
    example_length,
    read_pairs,
    split_eval,
)
from cotdistill.core.config import Seed, StudentConfig, TrainSettings
from cotdistill.core.cpu import bf16_is_faster
from cotdistill.core.errors import UserError
from cotdistill.core.fileio import read_json_object, write_json_atomic
from cotdistill.core.hashing import file_digest, fingerprint
from cotdistill.core.memory import PeakMemory
from cotdistill.core.modes import COT, normalise_mode
from cotdistill.core.paths import library_writes
from cotdistill.core.rundir import main_process

# Fields that do not change the trained model: they may differ between a run and its resumption.
_NOT_FINGERPRINTED = ("out", "quiet", "restart", "save_steps", "gradient_checkpointing")  # same weights either way


class TrainConfig(TrainSettings):
    """One training job: the shared settings (config.TrainSettings) plus what to train, on what data,
    into which folder. Built from the config's `student` section or from `cotdistill train`'s options."""

    student: str = StudentConfig.model_fields["model"].default
    mode: str = COT  # one of modes.TRAINING_MODES
    data: str | Path = "distill.jsonl"
    distill_targets: str | Path | None = None  # the teacher's targets when `distill` is on (teacher_targets.py)
    out: str | Path = f"students/{COT}"
    seed: Seed = 0
    restart: bool = False  # discard this output directory's checkpoints / model from another configuration
    quiet: bool = False


@dataclass
class TrainResult:
    out_dir: Path
    metrics: dict[str, Any] = field(default_factory=dict)
    already_trained: bool = False  # True: the output held a finished model of the same configuration
    main_process: bool = True  # False on the other ranks of a multi-process run (they print nothing)


def train_student(config: TrainConfig) -> TrainResult:
    """Train (or resume, or find already trained) the student described by `config`."""
    t_start = time.perf_counter()
    config = _validated(config)
    out, ckpts = Path(config.out), Path(config.out) / "checkpoints"
    fingerprint = train_fingerprint(config)
    finished = _finished_metrics(out)
    if finished and finished.get("fingerprint") == fingerprint and not config.restart:
        return TrainResult(out, finished, already_trained=True, main_process=main_process())

    from accelerate import PartialState

    state = PartialState()  # joins the process group under accelerate launch / torchrun
    if state.is_main_process:
        _prepare_output(out, ckpts, fingerprint, finished, config.restart)
    state.wait_for_everyone()

    from transformers import set_seed

    from cotdistill.models.students import add_lora, load_student, store_frozen_linears

    pairs = read_pairs(config.data, config.mode)
    train_pairs, eval_pairs = split_eval(pairs, config.eval_fraction, config.seed)
    model, tokenizer, is_seq2seq = load_student(config.student, quiet=config.quiet or not state.is_main_process)
    if tokenizer.eos_token_id is None:
        raise UserError(f"the tokenizer of {config.student} has no EOS token: the student could not learn to stop")
    train_set, dropped = encode_all(train_pairs, tokenizer, is_seq2seq, config.max_len)
    eval_set, dropped_eval = encode_all(eval_pairs, tokenizer, is_seq2seq, config.max_len)
    if not train_set:
        raise UserError(
            f"{config.data}: all {len(train_pairs)} training examples are longer than --max-len "
            f"{config.max_len} tokens; raise --max-len"
        )
    if (dropped or dropped_eval) and not config.quiet and state.is_main_process:
        print(f"dropped {dropped + dropped_eval} example(s) longer than --max-len {config.max_len} tokens")
    if config.distill != "off":
        from cotdistill.training.teacher_targets import attach_targets

        attach_targets(train_set, Path(config.distill_targets), config.distill)
    eval_set.sort(key=example_length)  # evaluated in order: sorted batches need little padding
    set_seed(config.seed)
    if config.lora:
        model = add_lora(model, is_seq2seq, config.lora_r, dropout=config.lora_dropout)

    from cotdistill.training.student_trainer import build_trainer, latest_checkpoint, progress_closed

    use_bf16, bf16_reason = choose_bf16(config.bf16, state.num_processes)
    frozen_bf16 = config.lora and use_bf16
    if frozen_bf16:
        import torch

        store_frozen_linears(model, torch.bfloat16)
    trainer = build_trainer(
        model, train_set, eval_set, ckpts, config, is_seq2seq, use_bf16,
        pad_id=tokenizer.pad_token_id,
        decoder_start_id=model.config.decoder_start_token_id if is_seq2seq else None,
    )
    resume = latest_checkpoint(ckpts, delete_torn=state.is_main_process)
    state.wait_for_everyone()
    # Checkpoint writes would draw their own bars over ours.
    with _quiet_hf_bars(), PeakMemory() as memory, progress_closed(trainer), library_writes(ckpts):
        # Trainer also evaluates and checkpoints after the last step, so the curve ends with an eval loss.
        trainer.train(resume_from_checkpoint=str(resume) if resume else None)

    metrics = _metrics(config, trainer, state.num_processes, fingerprint, resume, len(eval_set), dropped + dropped_eval)
    metrics.update(bf16_reason=bf16_reason, peak_rss_gib=memory.gib,  # this process, training loop only
                   frozen_dtype="bfloat16" if frozen_bf16 else "float32")
    if state.is_main_process:
        with _quiet_hf_bars(), library_writes(out):
            _save_final(trainer.model, tokenizer, out, config, metrics, trainer.state.log_history, t_start,
                        frozen_bf16)
    state.wait_for_everyone()
    return TrainResult(out, _finished_metrics(out) or metrics, main_process=state.is_main_process)


# ---------------------------------------------------------------- configuration


def _metrics(config: TrainConfig, trainer: Any, world_size: int, fingerprint: str, resume: Path | None,
             n_eval: int, dropped: int) -> dict[str, Any]:
    """train_metrics.json: this session's time and tokens (all ranks), padding, memory, losses."""
    from cotdistill.training.student_trainer import weights_digest

    counts = trainer.accelerator.reduce(trainer.counts.to(trainer.accelerator.device), reduction="sum").tolist()
    tokens, targets, padding = counts
    seconds = trainer.timer.seconds
    metrics = {
        "student": config.student,
        "mode": config.mode,
        "lora": config.lora,
        "distill": config.distill,  # token-level distillation's loss (off: cross-entropy alone)
        **({"distill_weight": config.distill_weight, "distill_temperature": config.distill_temperature,
            "distill_tokens": config.distill_tokens, "distill_context": config.distill_context} if config.distill != "off" else {}),
        "bf16": trainer.args.bf16,
        # read from the model: layers that recompute their activations in the backward pass
        "gradient_checkpointing": any(getattr(m, "gradient_checkpointing", False) is True for m in trainer.model.modules()),
        "bf16_reason": None,  # filled in by the caller
        "world_size": world_size,
        "steps": trainer.state.global_step,
        "resumed_from_step": _step_of(resume),
        "epochs": trainer.state.epoch,
        "examples_train": len(trainer.train_dataset),
        "examples_eval": n_eval,
        "dropped_too_long": dropped,
        "wall_s": None,  # filled in when the model is saved
        "train_s": seconds,  # the training loop of this session (a resumed run counts from its restart)
        "tokens": int(tokens),
        "target_tokens": int(targets),
        "tokens_per_s": tokens / seconds if seconds else None,
        "padding_fraction": padding / (tokens + padding) if tokens + padding else 0.0,
        "fingerprint": fingerprint,
        **_losses(trainer.state.log_history),
    }
    if world_size > 1:  # DDP keeps replicas identical: equal digests show it did
        metrics["rank_weights_sha256"] = _gather([weights_digest(trainer.model)])
    return metrics


def _validated(config: TrainConfig) -> TrainConfig:
    """Normalise the mode and check the data exists (bounds are checked when the config is built)."""
    config.mode = normalise_mode(config.mode)
    if not Path(config.data).is_file():
        raise UserError(f"{config.data}: training data not found (run `cotdistill annotate` first, or pass --data)")
    if config.distill != "off" and not (config.distill_targets and Path(config.distill_targets).is_file()):
        raise UserError(f"distill {config.distill}: the teacher's targets {config.distill_targets or '(none given)'} are "
                        "not there; `cotdistill run` with student.distill scores them before training "
                        "(or pass --distill-targets FILE)")
    return config


def train_fingerprint(config: TrainConfig) -> str:
    """A hash of everything that decides the trained weights, the data file's bytes included: the
    train stage's fingerprint, whether `cotdistill run` or `cotdistill train` (e.g. under accelerate) ran it.
    The data file counts by content (its digest in place of its path), so a copied or restored run
    directory's students are not trained again."""
    fields = {k: v for k, v in config.model_dump().items() if k not in _NOT_FINGERPRINTED}
    if config.distill == "off":  # settings of a loss not in use: students trained before it existed stay up to date
        fields = {k: v for k, v in fields.items() if not k.startswith("distill")}
    elif config.distill_targets:  # it holds the targets whatever context they came from
        fields["distill_targets"] = file_digest(Path(config.distill_targets))
    fields.pop("distill_context", None)
    return fingerprint({**fields, "data": file_digest(Path(config.data))})


def choose_bf16(setting: bool | str, world_size: int = 1) -> tuple[bool, str]:
    """bf16 autocast on request, or under "auto" where this device multiplies bf16 faster than
    fp32 (cpu.bf16_is_faster). All ranks follow rank 0."""
    if setting != "auto":
        return bool(setting), "requested"
    choice = list(bf16_is_faster())
    if world_size > 1:
        from accelerate.utils import broadcast_object_list

        broadcast_object_list(choice)
    return choice[0], choice[1]


# ---------------------------------------------------------------- output directory


def _finished_metrics(out: Path) -> dict[str, Any] | None:
    """train_metrics.json is written last: when present, the model beside it is complete."""
    return read_json_object(out / "train_metrics.json") or None  # missing or torn: not finished


def _prepare_output(out: Path, ckpts: Path, fingerprint: str, finished: dict | None, restart: bool) -> None:
    """Refuse to mix configurations in one directory unless told to start again (--restart)."""
    marker = ckpts / "run.json"
    old = read_json_object(marker).get("fingerprint")  # None: no earlier attempt, or its mark was torn
    if not restart and finished is not None:
        raise UserError(
            f"{out} holds a student trained with another configuration or data; "
            "pass --restart to replace it, or choose another --out"
        )
    # A failed attempt that saved no checkpoint left nothing to protect: start afresh.
    if not restart and old is not None and old != fingerprint and any(ckpts.glob("checkpoint-*")):
        raise UserError(
            f"{ckpts} holds checkpoints of a run with another configuration or data; "
            "rerun with the same options to resume it, pass --restart to discard them, or choose another --out"
        )
    if restart:
        shutil.rmtree(ckpts, ignore_errors=True)
        (out / "train_metrics.json").unlink(missing_ok=True)
    ckpts.mkdir(parents=True, exist_ok=True)
    write_json_atomic(marker, {"fingerprint": fingerprint})


def _save_final(model: Any, tokenizer: Any, out: Path, config: TrainConfig, metrics: dict,
                log_history: list[dict], t_start: float, frozen_bf16: bool = False) -> None:
    """Write the model files, then the curve, then train_metrics.json last (the completion mark).

    `frozen_bf16`: the frozen layers trained in bf16 (store_frozen_linears); they go back to fp32
    before LoRA is merged into them, which in bf16 would round most of its small update away."""
    from cotdistill.models.students import save_student, store_frozen_linears

    if frozen_bf16 and config.merge_lora:
        import torch

        store_frozen_linears(model, torch.float32)
    tmp = out / ".final-partial"
    shutil.rmtree(tmp, ignore_errors=True)
    save_student(model, tokenizer, tmp, merge=config.merge_lora)
    for f in tmp.iterdir():
        os.replace(f, out / f.name)
    tmp.rmdir()
    write_json_atomic(out / "loss_curve.json", loss_curve(log_history))
    write_json_atomic(out / "train_config.json", config.model_dump(mode="json"))
    metrics["wall_s"] = time.perf_counter() - t_start
    write_json_atomic(out / "train_metrics.json", metrics)
    shutil.rmtree(out / "checkpoints", ignore_errors=True)  # superseded by the finished model


def loss_curve(log_history: list[dict]) -> dict[str, list[dict]]:
    """Train and eval loss per optimizer step, from Trainer's log history (kept across resumes)."""
    train = [
        {"step": h["step"], "loss": h["loss"], "lr": h.get("learning_rate"), "grad_norm": h.get("grad_norm")}
        for h in log_history if "loss" in h
    ]
    evals = [{"step": h["step"], "loss": h["eval_loss"]} for h in log_history if "eval_loss" in h]
    return {"train": train, "eval": evals}


def _losses(log_history: list[dict]) -> dict[str, float | None]:
    curve = loss_curve(log_history)
    return {
        "first_train_loss": curve["train"][0]["loss"] if curve["train"] else None,
        "final_train_loss": curve["train"][-1]["loss"] if curve["train"] else None,
        "final_eval_loss": curve["eval"][-1]["loss"] if curve["eval"] else None,
    }


@contextmanager
def _quiet_hf_bars() -> Iterator[None]:
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _step_of(checkpoint: Path | None) -> int | None:
    return int(checkpoint.name.rsplit("-", 1)[1]) if checkpoint else None


def _gather(objects: list[Any]) -> list[Any]:
    from accelerate.utils import gather_object

    return gather_object(objects)
