"""Step checks: a CoT whose stated steps are false is caught, one whose steps are true (or not
mechanically checkable) is left alone."""

import json

import pytest

from cotdistill.core.config import FiltersConfig
from cotdistill.annotation.filters import judge
from cotdistill.annotation.stepcheck import false_arithmetic, false_coin_step, false_letter, false_step

# ---------------------------------------------------------------- arithmetic

TRUE_ARITHMETIC = [
    "48 + 24 = 72.",
    "She pays 3 x $4.50 = $13.50 in total.",
    "10 / 3 = 3.33 cups each.",
    "100% - 80% = 20% were children.",
    "75 / 100 x 100 = 75% are not roses.",
    "168/20% = 840 students.",
    "(3 + 5) × 2 = 16.",
    "1,200 - 200 = 1,000 left.",
    "He runs 3/ 1/4 = 12 laps.",  # dividing by a fraction written 1/4
    "<<48/2=24>>24 clips",  # GSM calculator annotations are claims too
    "12 ÷ 4 = 3 boxes.",
]

NOT_CHECKABLE = [
    "20% of 50 = 10.",  # "of" is not an operator the checker reads
    "M + 4 + 2 = 8 hours, so M = 2.",  # algebra: the left side continues with a variable
    "3*30 = 30 + M trees.",  # the right side continues
    "17/3 = 5 and 2/3 loads.",  # mixed number
    "$2.50 - $2.24 = 26 cents more.",  # unit change
    "600 x 30 = 18 000 watts.",  # space as thousands separator
    "0900-0130 = 0730.",  # a time, not a subtraction
    "100/5 = 5A/5, so A = 20.",
    "There are 12 x 1 and 1/4 = 15 cups.",  # mixed number on the left
]

FALSE_ARITHMETIC = [
    ("10 + 28 + 7 = 35.", "10 + 28 + 7 = 35 (is 45)"),
    ("So he played 14*20=140 minutes.", "14*20=140 (is 280)"),
    ("7 / 2 = 3.25 pies.", "7 / 2 = 3.25 (is 3.5)"),
    ("She has $4200+$3000 = $8600.", "$4200+$3000 = $8600 (is 7200)"),
]


@pytest.mark.parametrize("text", TRUE_ARITHMETIC)
def test_true_arithmetic_passes(text):
    assert false_arithmetic(text) is None


@pytest.mark.parametrize("text", NOT_CHECKABLE)
def test_arithmetic_the_checker_cannot_read_is_left_alone(text):
    assert false_arithmetic(text) is None


@pytest.mark.parametrize("text, reason", FALSE_ARITHMETIC)
def test_false_arithmetic_is_named_with_its_true_value(text, reason):
    assert false_arithmetic(text) == reason


def test_gsm8k_human_rationales_are_almost_never_flagged(shared_datasets):
    """GSM8K's human rationales are the reference for true steps: the checker flags very few of them
    (16 of 7473 when written; each one inspected was a genuine slip such as "4+4+6 = 18")."""
    flagged = total = 0
    for line in (shared_datasets / "gsm8k" / "train.jsonl").open():
        total += 1
        flagged += false_arithmetic(json.loads(line)["answer"].split("####")[0]) is not None
    assert total == 7473 and flagged <= 20


# ---------------------------------------------------------------- coin flip

COIN = ('A coin is heads up. Ana flips the coin. Ben does not flip the coin. Cy flips the coin. '
        'Is the coin still heads up? Note that "flip" here means "reverse".')


def test_a_faithful_coin_chain_passes():
    cot = ("The coin starts heads up. Ana flips it, so it is tails up. Ben does not flip it, so it stays "
           "tails up. Cy flips it, so it is heads up again. The coin is heads up.")
    assert false_coin_step(cot, COIN) is None


def test_a_chain_that_skips_steps_is_not_false():
    cot = "Ana and Cy flip the coin and Ben does not. Two flips cancel out, so the coin is heads up."
    assert false_coin_step(cot, COIN) is None


@pytest.mark.parametrize("cot, why", [
    ("Ana flips it, so it is tails up. Ben does not flip it, so it is heads up.", "the coin is tails up"),
    ("Ana flips it, so it is tails up. Ben flips it, so it is heads up.", "Ben does not flip the coin"),
    ("Ana flips it, so it is tails up. Ben does not flip it, so it stays tails up. Cy flips it, so it is "
     "heads up. The coin is tails up.", "the coin is heads up"),
    ("The coin starts tails up.", "the coin is heads up"),
    ("Ana flips it, so it is not tails up.", "the coin is tails up"),
])
def test_a_false_coin_step_is_named(cot, why):
    found = false_coin_step(cot, COIN)
    assert found is not None and found.endswith(why)


def test_coin_check_only_applies_to_coin_questions():
    assert false_coin_step("Ana flips it, so it is heads up.", "How many apples does Ana have?") is None


# ---------------------------------------------------------------- last letters and the filter


def test_last_letter_claims_are_checked():
    assert false_letter('The last letter of "Elon" is "n". The last letter of "Musk" is "k".') is None
    assert false_letter('The last letter of "Elon" is "o".') == 'the last letter of "Elon" is "n", not "o"'


def test_false_step_checks_every_kind():
    assert false_step("2 + 2 = 5.") is not None
    assert false_step("Ana flips it, so it is heads up.", COIN) is not None
    assert false_step('The last letter of "Musk" is "s".') is not None
    assert false_step("Ana flips it, so it is tails up.", COIN) is None


def test_filter_drops_a_right_answer_reached_through_a_false_step():
    text = "Ana flips it, so it is tails up. Ben flips it, so it is heads up. Cy flips it. The answer is no."
    j = judge(text, "stop", "yes_no", "no", question=COIN)
    assert j.verdict == "false_step" and "Ben does not flip the coin" in j.reason
    assert judge(text, "stop", "yes_no", "no", question=COIN, options=FiltersConfig(steps=False)).verdict == "kept"
