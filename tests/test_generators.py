"""Offline generators: seeded, deterministic, correct gold answers, and splits that hold out templates."""

import json
import re

import pytest

from cotdistill.core.answers import extract_answer
from cotdistill.core.errors import UserError
from cotdistill.data.generators import NAMES, generate, generate_split
from cotdistill.data.overlap import normalise_question

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"
COIN_RE = re.compile(
    r'A coin is heads up\. (?:(\w+) (flips|does not flip) the coin\. )+'
    r'Is the coin still heads up\? Note that "flip" here means "reverse"\.'
)
LETTERS_RE = re.compile(r'Take the last letters of each words in "([A-Za-z ]+)" and concatenate them\.')


@pytest.fixture(scope="module")
def gsm_split():
    train, _, test = generate_split("gsm_symbolic", 120, 40, seed=7)
    return train, test


def test_same_seed_same_problems_other_seed_other_problems():
    a, b, c = (generate("last_letters", 20, seed=s) for s in (1, 1, 2))
    assert [e.to_dict() for e in a] == [e.to_dict() for e in b]
    assert [e.question for e in a] != [e.question for e in c]


def test_gsm_split_is_deterministic(gsm_split):
    again = generate_split("gsm_symbolic", 120, 40, seed=7)[::2]
    assert [e.to_dict() for e in gsm_split[0] + gsm_split[1]] == [e.to_dict() for e in again[0] + again[1]]


def test_template_split_tests_only_on_unseen_templates(gsm_split):
    train, test = gsm_split
    assert (len(train), len(test)) == (120, 40)
    train_templates = {e.meta["template"] for e in train}
    test_templates = {e.meta["template"] for e in test}
    assert train_templates.isdisjoint(test_templates)
    assert all(e.meta["split"] == "template" for e in train + test)
    assert len(train_templates) > 30  # drawn from the ~68 training templates, not a handful


def test_a_dev_set_is_new_questions_from_the_training_templates_and_changes_nothing_else(gsm_split):
    train, dev, test = generate_split("gsm_symbolic", 120, 40, seed=7, n_dev=30)
    assert [e.to_dict() for e in train + test] == [e.to_dict() for e in gsm_split[0] + gsm_split[1]]
    assert len(dev) == 30 and all(e.id.startswith("gsm_symbolic-7-dev-") for e in dev)
    assert {e.meta["template"] for e in dev}.isdisjoint({e.meta["template"] for e in test})  # training templates
    seen = {normalise_question(e.question) for e in train + test}
    assert not seen & {normalise_question(e.question) for e in dev}


def test_template_partition_depends_on_the_seed(gsm_split):
    _, _, other_test = generate_split("gsm_symbolic", 0, 40, seed=8)
    assert {e.meta["template"] for e in other_test} != {e.meta["template"] for e in gsm_split[1]}


def test_same_template_split_shares_templates_but_no_question():
    train, _, test = generate_split("gsm_symbolic", 200, 50, seed=3, split="same-template")
    assert all(e.meta["split"] == "same-template" for e in train + test)
    assert {e.meta["template"] for e in train} & {e.meta["template"] for e in test}
    assert not {normalise_question(e.question) for e in train} & {normalise_question(e.question) for e in test}


def test_gsm_gold_answers_match_the_reference_solutions(gsm_split):
    for e in gsm_split[0] + gsm_split[1]:
        assert e.answer_type == "number" and e.source == "gsm_symbolic"
        assert extract_answer(e.meta["solution"], "number").value == e.answer
        assert "Give the result as your final answer" not in e.question


def test_ids_are_unique_and_name_task_seed_and_split(gsm_split):
    train, test = gsm_split
    ids = [e.id for e in train + test]
    assert len(set(ids)) == len(ids)
    assert ids[0] == "gsm_symbolic-7-train-0" and test[0].id == "gsm_symbolic-7-test-0"
    assert generate("coin_flip", 1, seed=5)[0].id == "coin_flip-5-0"


def test_last_letters_wording_and_answers_follow_the_kojima_dataset():
    real = json.loads((FIXTURES / "last_letters.json").read_text())["examples"][0]["question"]
    assert LETTERS_RE.fullmatch(real)
    for e in generate("last_letters", 50, seed=0):
        words = LETTERS_RE.fullmatch(e.question).group(1).split()
        assert len(words) == 4
        assert e.answer == "".join(w[-1].lower() for w in words)
        assert e.answer_type == "text"


def test_last_letters_word_count_is_configurable():
    e = generate("last_letters", 1, seed=0, n_words=2)[0]
    assert len(LETTERS_RE.fullmatch(e.question).group(1).split()) == 2 and len(e.answer) == 2


def test_coin_flip_wording_and_answers_follow_the_kojima_dataset():
    real = json.loads((FIXTURES / "coin_flip.json").read_text())["examples"][0]["question"]
    assert COIN_RE.fullmatch(real)
    examples = generate("coin_flip", 60, seed=0, n_flips=3)
    for e in examples:
        assert COIN_RE.fullmatch(e.question)
        flips = len(re.findall(r"\w+ flips the coin\.", e.question))
        assert len(re.findall(r"the coin\.", e.question)) == 3
        assert e.answer == ("yes" if flips % 2 == 0 else "no")
    assert {e.answer for e in examples} == {"yes", "no"}


def test_symbolic_template_split_holds_out_names():
    train, _, test = generate_split("coin_flip", 100, 30, seed=1)
    train_names = {n for e in train for n in e.meta["names"]}
    test_names = {n for e in test for n in e.meta["names"]}
    assert train_names.isdisjoint(test_names)
    assert train_names | test_names <= set(NAMES)


def test_asking_for_more_distinct_problems_than_exist_is_a_clear_error():
    # one word per question from a fifth of the names: far fewer than 500 distinct questions
    with pytest.raises(UserError, match="only .* distinct problems found for 500 requested"):
        generate_split("last_letters", 0, 500, seed=0, n_words=1)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: generate("sudoku", 3, 0), "unknown generator task 'sudoku'"),
        (lambda: generate("coin_flip", 3, 0, n_words=2), "unknown option.*n_words.*allowed: n_flips, test_fraction"),
        (lambda: generate_split("coin_flip", 3, 3, 0, split="random"), "unknown split 'random'"),
        (lambda: generate("coin_flip", -1, 0), "n must be 0 or more"),
        (lambda: generate("last_letters", 3, 0, n_words=0), "n_words must be between 1 and 20"),
        (lambda: generate_split("coin_flip", 3, 3, 0, test_fraction=1.5), "test_fraction must be between 0 and 1"),
    ],
)
def test_bad_generator_requests_are_user_errors(call, message):
    with pytest.raises(UserError, match=message):
        call()
