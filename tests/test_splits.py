"""The data stage: several files pooled, held-out splits drawn at random, counts checked against
the data before anything is written, and no held-out question ever trained on."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cotdistill.core.config import DataConfig, RunConfig
from cotdistill.core.errors import UserError
from cotdistill.data.overlap import normalise_question
from cotdistill.data.splits import make_splits


def jsonl(path: Path, questions: list[str], prefix: str) -> str:
    rows = [{"id": f"{prefix}{i}", "question": q, "answer": str(i), "answer_type": "number", "source": prefix}
            for i, q in enumerate(questions)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return str(path)


@pytest.fixture
def files(tmp_path: Path) -> tuple[str, str]:
    a = jsonl(tmp_path / "a.jsonl", [f"How many apples are in box {i}?" for i in range(20)], "a")
    # b repeats two of a's questions, once with other spacing and case
    b = jsonl(tmp_path / "b.jsonl", [f"What is {i} plus {i}?" for i in range(10)]
              + ["How many apples are in box 3?", "how many  apples are in box 4 ?"], "b")
    return a, b


def questions(examples) -> set[str]:
    return {normalise_question(e.question) for e in examples}


def test_several_files_are_pooled_once_and_the_held_out_splits_are_disjoint(files):
    splits = make_splits(DataConfig(train=list(files), n_test=6, n_dev=4), seed=0)
    assert splits.counts["duplicates_across_files"] == 2
    assert (len(splits.test), len(splits.dev), len(splits.train)) == (6, 4, 30 - 10)
    assert not questions(splits.train) & questions(splits.test) and not questions(splits.train) & questions(splits.dev)
    assert {e.source for e in splits.test + splits.dev + splits.train} == {"a", "b"}


def test_the_seed_draws_the_held_out_questions_and_one_run_seed_reaches_them(files):
    by_seed = [[e.id for e in make_splits(DataConfig(train=list(files), n_test=6), seed=s).test] for s in (0, 0, 1)]
    assert by_seed[0] == by_seed[1] != by_seed[2]
    run = RunConfig(name="x", seed=7, data=DataConfig(train=list(files), n_test=6))
    assert run.data_seed == 7  # the top-level seed, unless data.seed is given
    assert RunConfig(name="x", seed=7, data=DataConfig(train=list(files), n_test=6, seed=3)).data_seed == 3


@pytest.mark.parametrize("fields, message", [
    ({"n_test": 30}, r"data.n_test \(30\) \+ data.n_dev \(0\) leave no training questions: .* hold 30"),
    ({"n_test": 20, "n_dev": 10}, r"leave no training questions"),
])
def test_splits_that_leave_nothing_to_train_on_are_errors_naming_the_field(files, fields, message):
    with pytest.raises(UserError, match=message):
        make_splits(DataConfig(train=list(files), **fields), seed=0)


@pytest.mark.parametrize("field, value", [("n_test", 0), ("n_test", -5), ("n_train", 0), ("n_dev", -1)])
def test_zero_or_negative_counts_are_refused_when_the_config_loads(field, value, tmp_path):
    from cotdistill.core.config import load_config

    path = tmp_path / "c.yaml"
    fields = {"n_test": 5, field: value}  # each key once: a key given twice is refused as such
    path.write_text("name: x\ndata:\n  train: a.jsonl\n" + "".join(f"  {k}: {v}\n" for k, v in fields.items()))
    with pytest.raises(UserError, match=f"c.yaml: data.{field}: Input should be greater than"):
        load_config(path)


def test_asking_for_more_training_questions_than_exist_is_a_stated_clamp(files):
    splits = make_splits(DataConfig(train=list(files), n_test=6, n_train=1000), seed=0)
    assert len(splits.train) == 24
    assert any("n_train: 1000 asked, 24 available" in n for n in splits.notes)


def test_extra_test_sets_are_never_trained_on(files, tmp_path):
    extra = jsonl(tmp_path / "extra.jsonl", ["What is 2 plus 2?", "A question seen nowhere else?"], "x")
    cfg = DataConfig(train=list(files), n_test=6, extra_tests=[{"name": "transfer", "path": extra}])
    splits = make_splits(cfg, seed=0)
    assert len(splits.extra_tests["transfer"]) == 2
    assert normalise_question("What is 2 plus 2?") not in questions(splits.train) | questions(splits.dev)
    assert splits.counts["decontaminated"] == {"ngram": 8, "test": 0, "dev": 0, "transfer": 1}


LONG_TEST = "A farmer has 12 cows and buys 7 more cows at the market on Monday. How many cows now?"


def test_a_training_question_sharing_eight_words_with_a_test_question_is_dropped_before_n_train_is_taken(tmp_path):
    train = [f"Tom has {i} pens and gives {i + 1} away to a friend at school today." for i in range(30)]
    train[2] = "Yesterday a farmer has 12 cows and buys 7 more cows at the market. What is left?"  # 8 words shared
    train[3] = "A farmer has 12 goats and buys 7 more goats at a fair. How many goats now?"  # other wording
    pool = jsonl(tmp_path / "pool.jsonl", train, "p")
    test = jsonl(tmp_path / "test.jsonl", [LONG_TEST], "t")
    splits = make_splits(DataConfig(train=pool, test=test, n_train=29), seed=0)
    assert len(splits.train) == 29  # n_train counts what is trained on, after the drop
    assert [d["id"] for d in splits.dropped] == ["p2"]
    shared = splits.dropped[0]["shared"]
    assert len(shared.split()) == 8 and shared in normalise_question(LONG_TEST) and splits.dropped[0]["held_out"] == "test"
    assert "p3" in {e.id for e in splits.train}
    loose = make_splits(DataConfig(train=pool, test=test, decontamination_ngram=14), seed=0)
    assert not loose.dropped and len(loose.train) == 30
