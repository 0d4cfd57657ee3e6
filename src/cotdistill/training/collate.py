"""From distill.jsonl rows to padded training batches with as little padding as possible.

Each distilled example becomes one (or, in multitask mode, two) (input, target) text pairs in the
student format of prompts.py, tokenised so that only the target is learned:

    causal LM   input_ids = prompt + target + EOS      labels = -100 … -100, target + EOS
    seq2seq     input_ids = prompt                     labels = target + EOS

EOS is appended and learned so that generation stops after "The answer is X.".

Batches are drawn by `LengthGroupedSampler`: a seeded shuffle, then examples of similar length side
by side, so right-padding wastes little compute (the waste is counted and reported).
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cotdistill.core import prompts
from cotdistill.core.errors import UserError
from cotdistill.core.records import iter_jsonl
from cotdistill.core.modes import MODES, normalise_mode
from cotdistill.core.sampling import derive_seed

IGNORE = -100  # label value the loss ignores (PyTorch's cross_entropy default)


@dataclass
class Pair:
    """One training example as text: `group` is the question id, shared by both multitask tasks and
    by every sample of one question, so that the eval split never holds half a question."""

    group: str
    input: str
    target: str


def read_pairs(path: str | Path, mode: str) -> list[Pair]:
    """Read distill.jsonl ({id, question, rationale, answer, answer_type?, choices?}) as text pairs."""
    mode = normalise_mode(mode)
    pairs: list[Pair] = []
    for lineno, row in iter_jsonl(path):
        where = f"{path}:{lineno}"
        needed = ("question", "rationale", "answer") if MODES[mode].rationale else ("question", "answer")
        missing = [k for k in needed if row.get(k) is None or not str(row[k]).strip()]
        if missing:
            raise UserError(f"{where}: missing or empty field(s) {', '.join(missing)} (mode {mode})")
        wrong = [k for k in needed if not isinstance(row[k], (str, int, float)) or isinstance(row[k], bool)]
        if wrong:
            raise UserError(f"{where}: field(s) {', '.join(wrong)} must be text, got {type(row[wrong[0]]).__name__}")
        group = str(row.get("example_id") or row.get("id") or f"line{lineno}")
        question, answer = str(row["question"]), str(row["answer"])
        answer_type, choices = row.get("answer_type", "text"), row.get("choices")
        try:
            if MODES[mode].multitask:
                for inp, tgt in prompts.multitask_pairs(question, row["rationale"], answer, answer_type, choices):
                    pairs.append(Pair(group, inp, tgt))
            else:
                target = prompts.student_target(row.get("rationale", ""), answer, answer_type, mode)
                pairs.append(Pair(group, prompts.student_input(question, choices), target))
        except ValueError as e:
            raise UserError(f"{where}: {e}") from None
    if not pairs:
        raise UserError(f"{path}: no training examples (the file is empty)")
    return pairs


def split_eval(pairs: list[Pair], fraction: float, seed: int) -> tuple[list[Pair], list[Pair]]:
    """Hold out a seeded `fraction` of the questions (never half of a multitask question)."""
    groups = sorted({p.group for p in pairs}, key=lambda g: (derive_seed(seed, g), g))  # g: ties in 31 bits
    n_eval = min(math.ceil(fraction * len(groups)), len(groups) - 1) if fraction > 0 else 0
    held = set(groups[:n_eval])
    return [p for p in pairs if p.group not in held], [p for p in pairs if p.group in held]


def encode(pair: Pair, tokenizer: Any, is_seq2seq: bool) -> dict[str, list[int]]:
    """Token ids of one pair, the prompt masked out of the labels, EOS last."""
    eos = tokenizer.eos_token_id
    if is_seq2seq:
        input_ids = tokenizer(pair.input, add_special_tokens=True)["input_ids"]
        target = tokenizer(pair.target, add_special_tokens=True)["input_ids"]
        if not target or target[-1] != eos:
            target = target + [eos]
        return {"input_ids": input_ids, "labels": target}
    prompt = tokenizer(pair.input, add_special_tokens=True)["input_ids"]
    if prompt and prompt[-1] == eos:  # a tokenizer that closes every text would end the prompt early
        prompt = prompt[:-1]
    target = tokenizer(prompts.STUDENT_SEPARATOR + pair.target, add_special_tokens=False)["input_ids"] + [eos]
    return {"input_ids": prompt + target, "labels": [IGNORE] * len(prompt) + target}


def fits(enc: dict[str, list[int]], max_len: int) -> bool:
    """Whether an encoded pair is trained on (a longer one is dropped rather than have its answer cut off)."""
    return max(len(enc["input_ids"]), len(enc["labels"])) <= max_len


def encode_all(
    pairs: list[Pair], tokenizer: Any, is_seq2seq: bool, max_len: int
) -> tuple[list[dict[str, list[int]]], int]:
    """Encode every pair; drop (and count) those longer than max_len rather than cut off their answer."""
    kept, dropped = [], 0
    for pair in pairs:
        enc = encode(pair, tokenizer, is_seq2seq)
        if not fits(enc, max_len):
            dropped += 1
        else:
            kept.append(enc)
    return kept, dropped


def example_length(enc: dict[str, list[int]]) -> int:
    """The padded dimension that decides the cost of a batch."""
    return len(enc["input_ids"]) + (len(enc["labels"]) if len(enc["labels"]) != len(enc["input_ids"]) else 0)


class LengthGroupedSampler(torch.utils.data.Sampler[int]):
    """A seeded shuffle in which neighbours have similar lengths, so batches need little padding.

    Indices are shuffled, cut into megabatches, each sorted by length and cut into groups of
    `batch_size * world_size * grad_accum` (the examples of one optimizer step on all ranks), and
    the groups are shuffled. So one step sees the same examples however it is split into
    micro-batches and ranks. The order depends only on (seed, epoch), which is what lets a resumed run
    (Trainer skips the batches already seen) continue with exactly the same data.
    """

    def __init__(self, lengths: list[int], batch_size: int, seed: int, world_size: int = 1, grad_accum: int = 1,
                 megabatch_groups: int = 32):
        self.lengths = lengths
        self.group = batch_size * world_size * grad_accum
        self.megabatch = self.group * megabatch_groups
        self.seed = seed
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.lengths)

    def __iter__(self) -> Iterator[int]:
        g = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch))
        perm = torch.randperm(len(self.lengths), generator=g).tolist()
        groups: list[list[int]] = []
        for start in range(0, len(perm), self.megabatch):
            block = sorted(perm[start : start + self.megabatch], key=lambda i: -self.lengths[i])
            groups += [block[k : k + self.group] for k in range(0, len(block), self.group)]
        # A short group can only be the very last one; keep it last so no later batch straddles two groups.
        tail = [groups.pop()] if groups and len(groups[-1]) < self.group else []
        order = torch.randperm(len(groups), generator=g).tolist()
        return iter([i for k in order for i in groups[k]] + [i for t in tail for i in t])


def padding_fraction(lengths: list[int], batches: list[list[int]]) -> float:
    """Share of the padded batch positions that are padding (0 = none wasted)."""
    total = sum(max(lengths[i] for i in b) * len(b) for b in batches if b)
    real = sum(lengths[i] for b in batches for i in b)
    return 1 - real / total if total else 0.0


class Collator:
    """Right-pads encoded examples into tensors (labels padded with -100).

    For seq2seq models it also builds decoder_input_ids (the labels shifted right after the
    decoder start token), as the model itself would from labels. Examples with teacher targets
    (`kd_ids`, `kd_w`: teacher_targets.attach_targets) give `kd_ids` and `kd_w` of shape
    (target tokens of the batch, most ids of a token): one row per target token, in the order the
    loss takes the targets (example by example, left to right), short rows padded with weight 0.
    """

    def __init__(self, pad_id: int, decoder_start_id: int | None = None):
        self.pad_id = pad_id
        self.decoder_start_id = decoder_start_id

    def __call__(self, features: list[dict[str, list[int]]]) -> dict[str, torch.Tensor]:
        width = max(len(f["input_ids"]) for f in features)
        label_width = max(len(f["labels"]) for f in features)
        input_ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        attention = torch.zeros((len(features), width), dtype=torch.long)
        labels = torch.full((len(features), label_width), IGNORE, dtype=torch.long)
        for row, f in enumerate(features):
            input_ids[row, : len(f["input_ids"])] = torch.tensor(f["input_ids"])
            attention[row, : len(f["input_ids"])] = 1
            labels[row, : len(f["labels"])] = torch.tensor(f["labels"])
        batch = {"input_ids": input_ids, "attention_mask": attention, "labels": labels}
        if self.decoder_start_id is not None:
            shifted = torch.full_like(labels, self.pad_id)
            shifted[:, 0] = self.decoder_start_id
            shifted[:, 1:] = labels[:, :-1].masked_fill(labels[:, :-1] == IGNORE, self.pad_id)
            batch["decoder_input_ids"] = shifted
        if "kd_ids" in features[0]:
            rows = [(ids, w) for f in features for ids, w in zip(f["kd_ids"], f["kd_w"])]
            width = max(len(ids) for ids, _ in rows)
            batch["kd_ids"] = torch.zeros((len(rows), width), dtype=torch.long)
            batch["kd_w"] = torch.zeros((len(rows), width), dtype=torch.float32)
            for row, (ids, w) in enumerate(rows):
                batch["kd_ids"][row, : len(ids)] = torch.tensor(ids)
                batch["kd_w"][row, : len(w)] = torch.tensor(w)
        return batch
