"""Which teacher CoTs are kept, and the reason each of the others is dropped."""

from __future__ import annotations

import pytest

from cotdistill.core.config import FiltersConfig
from cotdistill.annotation.filters import find_leak, judge, split_rationale, underived_reason


def verdict(text, gold="72", answer_type="number", finish="stop", **kw):
    return judge(text, finish, answer_type, gold, **kw)


# ---------------------------------------------------------------- correctness and parsing


def test_correct_derived_cot_is_kept_with_its_rationale():
    j = verdict("Natalia sold 48 / 2 = 24 clips in May. She sold 48 + 24 = 72 clips altogether. The answer is 72.")
    assert j.verdict == "kept" and j.predicted == "72"
    assert j.rationale == "Natalia sold 48 / 2 = 24 clips in May. She sold 48 + 24 = 72 clips altogether."


def test_wrong_final_answer_is_wrong():
    j = verdict("She sold 48 + 48 = 96 clips. The answer is 96.")
    assert j.verdict == "wrong" and j.predicted == "96"


def test_no_final_answer_is_unparsed_with_the_extractors_reason():
    j = verdict("She sold 48 + 24 = 72 clips.")
    assert (j.verdict, j.reason) == ("unparsed", "no answer")


def test_two_answers_in_the_final_sentence_are_unparsed():
    j = verdict("48 + 24 = 72. The answer is 72 or 96.")
    assert (j.verdict, j.reason) == ("unparsed", "several answers")


def test_cut_off_without_answer_is_truncated_not_unparsed():
    assert verdict("She sold 48 / 2 = 24 clips in May. Then", finish="length").verdict == "truncated"


def test_hitting_max_tokens_after_the_answer_still_counts_the_answer():
    looped = "48 + 24 = 72. The answer is 72. The answer is 72. The answer is 72. The answer"
    j = verdict(looped, finish="length")
    assert j.verdict == "kept" and j.text == "48 + 24 = 72. The answer is 72."


def test_text_after_the_first_final_answer_is_cut_before_judging():
    j = verdict("48 + 24 = 72. The answer is 72.\n\nQ: Tom has 3 apples. The hint says 5. The answer is 5.")
    assert j.verdict == "kept" and j.text.endswith("The answer is 72.")


def test_money_and_commas_in_the_final_answer_match_the_gold():
    assert verdict("It costs 1,000 + 80 = $1,080. The answer is $1,080.", gold="1080").verdict == "kept"


@pytest.mark.parametrize(
    "text, gold, answer_type, choices",
    [
        ("Heads, tails, heads. The coin is heads up. The answer is yes.", "yes", "yes_no", None),
        ("A fridge keeps milk cold. The answer is (B).", "B", "choice", ["oven", "fridge"]),
        ('The last letters are "y" and "a". The answer is ya.', "ya", "text", None),
    ],
)
def test_other_answer_types_are_kept_when_right(text, gold, answer_type, choices):
    assert verdict(text, gold, answer_type, choices=choices).verdict == "kept"


def test_no_gold_skips_the_correctness_check():
    assert verdict("48 + 48 = 96. The answer is 96.", gold=None).verdict == "kept"


# ---------------------------------------------------------------- the rationale


@pytest.mark.parametrize(
    "text, rationale",
    [
        ("48 + 24 = 72. The answer is 72.", "48 + 24 = 72."),
        ("48 + 24 = 72. Therefore, the answer is 72.", "48 + 24 = 72."),
        ("She has 72 clips, so the answer is 72.", "She has 72 clips."),
        ("She has 48 + 24 = 72 clips\nThe answer is 72.", "She has 48 + 24 = 72 clips."),
        ("48 + 24 = 72\n#### 72", "48 + 24 = 72."),
        ("The answer is 72.", ""),
    ],
)
def test_rationale_is_the_reasoning_without_the_final_answer_sentence(text, rationale):
    assert split_rationale(text) == rationale


def test_the_rationale_ends_where_the_answer_is_read_from():
    """An unclosed \\boxed{ is no answer to the reader, so it does not end the reasoning either
    (the rationale used to stop there, dropping the steps the kept answer came from)."""
    text = "She has \\boxed{ 3 + 4 = 7 clips. The answer is 7."
    assert split_rationale(text) == "She has \\boxed{ 3 + 4 = 7 clips."
    assert verdict(text, gold="7").rationale == "She has \\boxed{ 3 + 4 = 7 clips."


# ---------------------------------------------------------------- underived


@pytest.mark.parametrize(
    "rationale, answer",
    [
        ("48 + 24 = 72.", "72"),
        ("Half of 48 is 24, so she has 72 clips.", "72"),  # last number stated equals the answer
        ("Natalia sold 48/2 = 24 clips in May. Natalia sold 48+24 = 72 clips altogether in April and May.", "72"),
        ("Weng earns 12/60 = $0.2 per minute. Working 50 minutes, she earned 0.2 x 50 = $10.", "10"),
        ("She earned $10 for 50 minutes of work.", "10"),  # "for 50 minutes" is context
        ("He reads 12 x 21 = 252 pages in 3 weeks.", "252"),  # "in 3 weeks" is context
        ("He reads 12 × 21 = 252 pages every 3 weeks.", "252"),
        ("3*4=12 eggs.", "12"),
        ("The house costs 900 + 180 = $1,080.", "1080"),
        ("The total is 1,000 + 80 = 1080 dollars.", "1,080"),
        ("She drank 1/4 + 1/2 = 3/4 of the bottle.", "0.75"),
        ("She ate 0.5 + 0.25 = 0.75 of the pie.", "3/4"),
        ("48 + 24 = <<48+24=72>>72 clips.", "72"),
        ("The temperature fell 3 - 8 = -5 degrees.", "-5"),
        ("25% of 80 is 20, so 80 - 20 = 60%.", "60"),
        ("It takes 4 + 8 = 12 hours, so she is done in 12 hours.", "12"),
        ("She finishes in 12 hours.", "12"),  # the last number itself is the answer
        ("He sold 5 cakes for $30.", "30"),  # money after "for" is a result, not context
        ("So 93 - 80 = 13 students left early, out of 93.", "13"),
    ],
)
def test_answer_reached_by_the_reasoning_is_derived(rationale, answer):
    assert underived_reason(rationale, answer) is None


@pytest.mark.parametrize(
    "rationale, answer",
    [
        ("There were 106 - 13 = 93 students. Then 93 - 80 = 13 students leaving early.", "93"),
        ("She sold 48 / 2 = 24 clips in May.", "72"),
        ("Half of 48 is 24.", "48"),
        ("The train goes 60 x 2 = 120 miles in 2 hours, then 30 more.", "150"),
        ("He pays 3 x $4 = $12 for the pens.", "4"),
        ("48 + 24 = <<48+24=72>>70 clips.", "72"),  # the calculator note is not the CoT's result
        ("Let's work it out carefully.", "72"),  # no number at all
        ("She had $1,080 and spent $80, leaving 1,000.", "1080"),
    ],
)
def test_answer_the_reasoning_did_not_reach_is_underived(rationale, answer):
    assert underived_reason(rationale, answer) is not None


def test_underived_cot_is_dropped_with_the_number_it_reached():
    j = verdict("There were 106 - 13 = 93 students. 93 - 80 = 13 students leaving early. The answer is 93.", gold="93")
    assert j.verdict == "underived" and j.reason == "last result 13, states 93"


def test_underived_check_only_applies_to_numbers():
    assert verdict("No reasoning here. The answer is yes.", gold="yes", answer_type="yes_no").verdict == "kept"


def test_underived_check_can_be_switched_off():
    text = "She sold 48 / 2 = 24 clips in May. The answer is 72."
    assert verdict(text).verdict == "underived"
    assert verdict(text, options=FiltersConfig(underived=False)).verdict == "kept"


# ---------------------------------------------------------------- leak


@pytest.mark.parametrize(
    "rationale",
    [
        "As given, she sold 72 clips.",
        "The hint says the answer is 72, so 48 + 24 = 72.",
        "Using the answer hint of 72, we check 48 + 24 = 72.",
        "We are told the answer is 72. Indeed 48 + 24 = 72.",
        "48 + 24 = 72, which matches the given answer.",
        "The expected answer is 72 and 48 + 24 = 72.",
        "48 + 24 = 72, which confirms the answer.",
        "Working backwards from the answer, 72 - 24 = 48.",
    ],
)
def test_cot_that_refers_to_the_hint_is_a_leak(rationale):
    assert find_leak(rationale) is not None
    assert verdict(rationale + " The answer is 72.").verdict == "leak"


@pytest.mark.parametrize(
    "rationale",
    [
        "48 + 24 = 72.",
        "She was given 48 clips and then 24 more, 48 + 24 = 72.",
        "Her friend gave her an answer sheet; 48 + 24 = 72.",
    ],
)
def test_ordinary_reasoning_is_not_a_leak(rationale):
    assert find_leak(rationale) is None


def test_a_phrase_the_question_itself_uses_is_not_a_leak():
    question = "The recipe has a hint of mint: 3 leaves per cup. How many leaves for 4 cups?"
    assert find_leak("For a hint of mint, 3 x 4 = 12 leaves.", question) is None
    assert find_leak("For a hint of mint, 3 x 4 = 12 leaves.") is not None


# ---------------------------------------------------------------- duplicates and length


def test_second_identical_cot_of_the_same_question_is_a_duplicate():
    kept: set[str] = set()
    first = verdict("48 + 24 = 72. The answer is 72.", kept_texts=kept)
    again = verdict("48 + 24 = 72.  the answer is 72", kept_texts=kept)  # spacing/case/punctuation differ
    other = verdict("48 / 2 = 24 and 48 + 24 = 72. The answer is 72.", kept_texts=kept)
    assert (first.verdict, again.verdict, other.verdict) == ("kept", "duplicate", "kept")


def test_near_identical_samples_are_duplicates_and_the_threshold_is_the_users():
    long = ("Natalia sold 48 clips in April. In May she sold half as many, 48 / 2 = 24 clips. "
            "Altogether she sold 48 + 24 = 72 clips.")
    reworded = long.replace("Altogether she sold", "In total she sold")
    kept: set[str] = set()
    assert verdict(long + " The answer is 72.", kept_texts=kept).verdict == "kept"
    near = verdict(reworded + " The answer is 72.", kept_texts=kept)
    assert near.verdict == "duplicate" and "%" in near.reason
    exact_only = FiltersConfig(dedupe_similarity=1.0)
    assert verdict(reworded + " The answer is 72.", kept_texts=set(kept), options=exact_only).verdict == "kept"


def test_a_per_question_cap_keeps_easy_questions_from_dominating():
    kept: set[str] = set()
    cap = FiltersConfig(max_per_question=2)
    texts = ["48 + 24 = 72. The answer is 72.", "Half of 48 is 24, and 48 + 24 = 72. The answer is 72.",
             "April 48, May 24: 72 clips in all. The answer is 72."]
    assert [verdict(t, kept_texts=kept, options=cap).verdict for t in texts] == ["kept", "kept", "over_cap"]


def test_rejected_samples_do_not_count_as_seen_for_duplicates():
    kept: set[str] = set()
    assert verdict("48 + 48 = 96. The answer is 96.", kept_texts=kept).verdict == "wrong"
    assert kept == set()


def test_cot_over_the_character_limit_is_too_long():
    text = "48 + 24 = 72. The answer is 72."
    assert verdict(text, options=FiltersConfig(max_chars=len(text) - 1)).verdict == "too_long"
    assert verdict(text, options=FiltersConfig(max_chars=len(text))).verdict == "kept"


def test_wrong_answer_wins_over_later_checks():
    # A wrong answer that also leaks is counted once, as wrong: the first failing check decides.
    assert verdict("As given, 48 + 48 = 96. The answer is 96.").verdict == "wrong"
