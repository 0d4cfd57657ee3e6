"""The data stage: train / dev / test (and extra test sets) from the config's `data` section.

    train files ─► pool (duplicates across files dropped) ─► shuffle(seed) ─► test | dev | train
    test file, extra test files ─────────────────────────────────────────────► removed from train

Every count is checked against the data before anything is written: a split that would leave no
training questions is an error naming the field, a request for more questions than exist is
clamped and says so. What was removed and why is returned for the manifest and the report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from cotdistill.config import DataConfig, TestSet
from cotdistill.errors import UserError
from cotdistill.examples import Example
from cotdistill.overlap import dedupe, remove_overlap


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    extra_tests: dict[str, list[Example]] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # clamps and removals, said to the user
    counts: dict[str, Any] = field(default_factory=dict)  # for the manifest


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    if cfg.generate:
        from cotdistill.generators import generate_split

        train, dev, test = generate_split(cfg.generate, cfg.n_train, cfg.n_test, seed=seed, split=cfg.split,
                                          n_dev=cfg.n_dev, **cfg.generate_options)
        splits = Splits(train=train, dev=dev, test=test)
    else:
        splits = _from_files(cfg, seed)
    for t in cfg.extra_tests:
        splits.extra_tests[t.name] = _load_test_set(t)
    _remove_held_out(splits)
    splits.counts.update(n_train=len(splits.train), n_dev=len(splits.dev), n_test=len(splits.test),
                         extra_tests={k: len(v) for k, v in splits.extra_tests.items()})
    return splits


def _load(path: str, cfg: DataConfig, split: str | None) -> list[Example]:
    from cotdistill.datasets import load_dataset

    return load_dataset(path, format=cfg.format, mapping=cfg.mapping, split=split).examples


def _load_test_set(t: TestSet) -> list[Example]:
    from cotdistill.datasets import load_dataset

    examples = load_dataset(t.path, format=t.format, limit=t.limit).examples
    if not examples:
        raise UserError(f"data.extra_tests '{t.name}': {t.path} holds no usable questions")
    return examples


def _from_files(cfg: DataConfig, seed: int) -> Splits:
    pool: list[Example] = []
    for path in cfg.train_files:
        pool += _load(path, cfg, cfg.train_split)
    pool, repeated = dedupe(pool)
    notes = [f"{repeated} question(s) occur in more than one training file: kept once"] if repeated else []
    rng = random.Random(seed)
    rng.shuffle(pool)  # held-out questions come from every source, not from the end of one file
    n_test = cfg.n_test
    if cfg.test:
        test = _load(cfg.test, cfg, cfg.test_split)
        if n_test is not None and n_test > len(test):
            notes.append(f"data.n_test: {n_test} asked, {cfg.test} holds {len(test)}: testing on {len(test)}")
        test = test[:n_test]
    else:
        assert n_test is not None  # the config's validator requires it here
        if n_test + cfg.n_dev >= len(pool):
            files = ", ".join(cfg.train_files)
            raise UserError(
                f"data.n_test ({n_test}) + data.n_dev ({cfg.n_dev}) leave no training questions: {files} "
                f"hold{'s' if len(cfg.train_files) == 1 else ''} {len(pool)}; lower them or give data.test"
            )
        test, pool = pool[:n_test], pool[n_test:]
    if cfg.n_dev >= len(pool):
        raise UserError(f"data.n_dev ({cfg.n_dev}) leaves no training questions: {len(pool)} remain after the test set")
    dev, train = pool[: cfg.n_dev], pool[cfg.n_dev:]
    if cfg.n_train is not None:
        if cfg.n_train > len(train):
            notes.append(f"data.n_train: {cfg.n_train} asked, {len(train)} available after the held-out splits: training on {len(train)}")
        train = train[: cfg.n_train]
    return Splits(train=train, dev=dev, test=test, notes=notes, counts={"duplicates_across_files": repeated})


def _remove_held_out(splits: Splits) -> None:
    """No question of any test set or of dev is trained on; none of an extra test set is in dev."""
    removed = {}
    held_out = [("test", splits.test), ("dev", splits.dev), *splits.extra_tests.items()]
    for name, examples in held_out:
        splits.train, removed[name] = remove_overlap(splits.train, examples)
        if name != "dev" and splits.dev:
            splits.dev, n = remove_overlap(splits.dev, examples)
            removed[name] += n
        if removed[name]:
            splits.notes.append(f"removed {removed[name]} training/dev question(s) that also appear in {name}")
    if not splits.train:
        raise UserError("no training questions remain after removing those of the test sets")
    splits.counts["overlap_removed"] = removed
