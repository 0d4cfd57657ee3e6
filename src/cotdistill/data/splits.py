"""The data stage: train / dev / test (and extra test sets) from the config's `data` section.

    train files ─► pool (duplicates across files dropped) ─► shuffle(seed) ─► test | dev | train
    test file, extra test files ──────────────► decontaminate train and dev ─► first n_train of train

Every count is checked against the data before anything is written: a split that would leave no
training questions is an error naming the field, a request for more questions than exist is
clamped and says so. What was removed and why is returned for the manifest and the report.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Any

from cotdistill.core.config import DataConfig, TestSet
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example
from cotdistill.data.overlap import decontaminate, dedupe


EXACT = 10**6  # an n no question reaches: whole normalised questions are compared


@dataclass
class Splits:
    train: list[Example]
    dev: list[Example]
    test: list[Example]
    extra_tests: dict[str, list[Example]] = field(default_factory=dict)
    dropped: list[dict] = field(default_factory=list)  # decontamination: each dropped question, what it matched
    notes: list[str] = field(default_factory=list)  # clamps and removals, said to the user
    counts: dict[str, Any] = field(default_factory=dict)  # for the manifest


def make_splits(cfg: DataConfig, seed: int) -> Splits:
    """The splits the `data` section describes. It takes the section whole, not its fields one by one:
    it reads every field but `seed` (which the caller resolves against the run's), and the section's
    validator has already checked how they combine (one source, the counts each source needs)."""
    extra_tests = {t.name: _load_test_set(t) for t in cfg.extra_tests}
    if cfg.generate:
        from cotdistill.data.generators import generate_split

        train, dev, test = generate_split(cfg.generate, cfg.n_train, cfg.n_test, seed=seed, split=cfg.split,
                                          n_dev=cfg.n_dev, **cfg.generate_options)
        # Generated questions share their template's wording by design (and the generator keeps the
        # sets apart), so only exact repeats count there: an n-gram rule would drop every question.
        splits = Splits(train=train, dev=dev, test=test, extra_tests=extra_tests)
        _decontaminate(splits, EXACT, n_dev=None)
    else:
        splits = _from_files(cfg, seed)
        splits.extra_tests = extra_tests
        _decontaminate(splits, cfg.decontamination_ngram, n_dev=cfg.n_dev)
        if cfg.n_train is not None:
            if cfg.n_train > len(splits.train):
                splits.notes.append(f"data.n_train: {cfg.n_train} asked, {len(splits.train)} available after the "
                                    f"held-out splits and decontamination: training on {len(splits.train)}")
            splits.train = splits.train[: cfg.n_train]
    splits.counts.update(n_train=len(splits.train), n_dev=len(splits.dev), n_test=len(splits.test),
                         extra_tests={k: len(v) for k, v in splits.extra_tests.items()})
    return splits


def _load(path: str, cfg: DataConfig, split: str | None) -> list[Example]:
    from cotdistill.data.load import load_dataset

    return load_dataset(path, format=cfg.format, mapping=cfg.mapping, split=split).examples


def _load_test_set(t: TestSet) -> list[Example]:
    from cotdistill.data.load import load_dataset

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
    # dev and train are both cut from `pool` after decontamination (make_splits)
    return Splits(train=pool, dev=[], test=test, notes=notes, counts={"duplicates_across_files": repeated})


def _decontaminate(splits: Splits, n: int, n_dev: int | None) -> None:
    """No training or dev question shares an n-word run with a question of any test set, and no
    training question with one of dev (see overlap.decontaminate); each drop is recorded.

    With `n_dev` given, `splits.train` is still the whole pool: dev is its first `n_dev` questions
    once the test sets' matches are gone, so dev keeps its size."""
    removed: dict[str, int] = {}

    def drop(split: str, examples: list[Example], held_out_name: str, held_out: list[Example]) -> list[Example]:
        kept, dropped = decontaminate(examples, held_out, n)
        splits.dropped.extend({"split": split, **d, "held_out": held_out_name} for d in dropped)
        removed[held_out_name] = removed.get(held_out_name, 0) + len(dropped)
        return kept

    for name, examples in [("test", splits.test), *splits.extra_tests.items()]:
        splits.train = drop("train", splits.train, name, examples)
        splits.dev = drop("dev", splits.dev, name, examples)
    if n_dev is not None:
        splits.dev, splits.train = splits.train[:n_dev], splits.train[n_dev:]
    splits.train = drop("train", splits.train, "dev", splits.dev)
    how = "repeating a question" if n == EXACT else f"sharing {n} consecutive words with a question"
    splits.notes += [f"decontamination: dropped {k} training/dev question(s) {how} of {name}" for name, k in removed.items() if k]
    if not splits.train:
        raise UserError("no training questions remain after removing those of the test sets")
    splits.counts["decontaminated"] = {"ngram": "exact" if n == EXACT else n, **removed}
