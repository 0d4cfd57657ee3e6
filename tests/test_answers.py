"""Reading final answers out of teacher and student outputs, and normalising gold answers.

The cases are shaped like real outputs of small chat and completion models: long CoTs, units,
LaTeX, loops after the answer, hedged or several answers. Each failure must say why.
"""

import pytest

from cotdistill.core.answers import (
    NO_ANSWER,
    SEVERAL,
    UNPARSABLE,
    answers_match,
    cut_after_answer,
    extract_answer,
    normalise,
    parse_number,
)

CSQA_CHOICES = ["bank", "library", "department store", "mall", "new york"]

NUMBER_CASES = [
    ("plain", "Natalia sold 48/2 = 24 clips in May.\nNatalia sold 48+24 = 72 clips altogether. The answer is 72.", "72"),
    ("thousands comma", "He earns 12 * 90 = 1,080 dollars. The answer is 1,080.", "1080"),
    ("dollars and cents", "So she pays $1,080.00 in total. The answer is $1,080.00.", "1080"),
    ("unit word", "There are 6 + 12 = 18 apples. The answer is 18 apples.", "18"),
    ("unit abbreviation", "He walks 2 + 3 = 5 km. The answer is 5 km.", "5"),
    ("percent", "The discount is 25/100 = 25%. The answer is 25%.", "25"),
    ("decimal", "Each costs 15 / 4 = 3.75. The answer is 3.75.", "3.75"),
    ("fraction", "She ate 3 of 4 slices. The answer is 3/4.", "0.75"),
    ("negative", "The temperature fell to 5 - 12 = -7. The answer is -7.", "-7"),
    ("unicode minus", "The answer is −7.", "-7"),
    ("leading dot decimal", "The answer is .5.", "0.5"),
    ("boxed", "Adding them gives 72.\n\n\\boxed{72}", "72"),
    ("boxed frac", "The probability is \\(\\boxed{\\frac{3}{4}}\\)", "0.75"),
    ("boxed nested braces", "Thus \\boxed{{1,080}} is the total.", "1080"),
    ("answer is boxed", "The answer is \\boxed{\\dfrac{7}{2}}.", "3.5"),
    ("final answer in dollars boxed", "The final answer is $\\boxed{42}$. I hope it is correct.", "42"),
    ("latex power", "The answer is 2^{10}.", "1024"),
    ("latex sqrt", "The answer is $\\sqrt{16}$.", "4"),
    ("gsm8k marker", "Natalia sold 48/2 = <<48/2=24>>24 clips in May.\n#### 72", "72"),
    ("gsm8k marker with comma", "Total is 1,234.\n#### 1,234", "1234"),
    ("final answer colon", "Let me compute 40 + 2 = 42.\nThe final answer is: 42", "42"),
    ("answer colon", "40 + 2 = 42\nAnswer: 42", "42"),
    ("markdown bold", "**The answer is 42.**", "42"),
    ("bold value", "The answer is **42**.", "42"),
    ("answer then loop", "70 - 0 = 70. The answer is 70. The answer is 70. The answer is 70. The answer is", "70"),
    ("answer then next question", "The answer is 18.\n\nQ: Leah had 32 chocolates", "18"),
    ("equation in the answer sentence", "The answer is 8 + 5 = 13.", "13"),
    ("underived answer still read as stated", "80 - 67 = 13 students left early. The answer is 93.", "93"),
    ("number word", "The answer is twelve.", "12"),
    ("lowercase answer is", "so my answer is 9", "9"),
    ("would be", "The answer would be 15 cookies.", "15"),
    ("million", "The answer is 1.5 million.", "1.5"),
    ("large with commas", "The answer is 1,000,000.", "1000000"),
    ("negative dollars", "She is short by 5 dollars. The answer is -$5.", "-5"),
    ("value on next line", "The answer is:\n\n42", "42"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in NUMBER_CASES], ids=[c[0] for c in NUMBER_CASES])
def test_number_answers_are_read_and_normalised(text, expected):
    got = extract_answer(text, "number")
    assert (got.value, got.reason) == (expected, None)


FAILING_NUMBER_CASES = [
    ("two numbers", "The answer is 5 or 6.", SEVERAL),
    ("two quantities", "The answer is 10 apples and 3 oranges.", SEVERAL),
    ("latex set", "The answer is \\frac{1}{2} or \\frac{3}{4}.", SEVERAL),
    ("no final answer sentence", "She has 3 + 4 = 7 apples left.", NO_ANSWER),
    ("empty model output", "", NO_ANSWER),
    ("answer phrase cut off", "So 3 + 4 = 7. The answer is", NO_ANSWER),
    ("words, not a number", "The answer is unknown from the information given.", UNPARSABLE),
]


@pytest.mark.parametrize(
    "text,reason", [(t, r) for _, t, r in FAILING_NUMBER_CASES], ids=[c[0] for c in FAILING_NUMBER_CASES]
)
def test_number_answers_that_cannot_be_read_say_why(text, reason):
    got = extract_answer(text, "number")
    assert got.value is None
    assert got.reason == reason


def test_the_first_final_answer_wins_over_later_ones():
    text = "The answer is 12. Wait, let me recheck: 5 + 8 = 13. The answer is 13."
    assert extract_answer(text, "number").value == "12"


def test_fallback_reads_the_last_number_only_when_asked():
    text = "First 3 + 4 = 7, then 7 * 2 = 14 apples."
    assert extract_answer(text, "number").reason == NO_ANSWER
    assert extract_answer(text, "number", fallback_last=True).value == "14"
    assert extract_answer("no idea", "number", fallback_last=True).reason == NO_ANSWER


YES_NO_CASES = [
    ("yes", "Genghis Khan had sixteen children. The answer is yes.", "yes"),
    ("capital no", "Caesar had three children. So the answer is No.", "no"),
    ("no with reason", "The answer is: No, because the coin was flipped twice.", "no"),
    ("true means yes", "The statement holds. The answer is true.", "yes"),
    ("false means no", "The answer is False.", "no"),
    ("quoted", 'The answer is "yes".', "yes"),
    ("coin flip CoT", "The coin was flipped by Whitney and Benito. So the coin was flipped 2 times, which is an "
     "even number. The coin started heads up, so it is still heads up. So the answer is yes.", "yes"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in YES_NO_CASES], ids=[c[0] for c in YES_NO_CASES])
def test_yes_no_answers(text, expected):
    assert extract_answer(text, "yes_no").value == expected


def test_yes_and_no_together_are_several_answers():
    assert extract_answer("The answer is yes or no, it depends.", "yes_no").reason == SEVERAL


def test_yes_no_without_either_word_is_unparsable():
    assert extract_answer("The answer is maybe.", "yes_no").reason == UNPARSABLE


CHOICE_CASES = [
    ("parenthesised", "A revolving door is used in banks. The answer is (A).", "A"),
    ("letter and paren", "The answer is B).", "B"),
    ("lower case letter", "so the answer is b", "B"),
    ("lower case in parens", "The answer is (c)", "C"),
    ("letter and option text", "The answer is (B) library.", "B"),
    ("option text only", "The answer is library.", "B"),
    ("option text with article", "The answer is a library.", "B"),
    ("capital article is not option A", "The answer is A library.", "B"),
    ("bare capital with reason", "The answer is A because banks need security.", "A"),
    ("multi-word option text", "The answer is new york.", "E"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in CHOICE_CASES], ids=[c[0] for c in CHOICE_CASES])
def test_choice_answers(text, expected):
    assert extract_answer(text, "choice", choices=CSQA_CHOICES).value == expected


def test_two_letters_or_a_letter_contradicting_its_text_are_several_answers():
    assert extract_answer("The answer is A or B.", "choice", CSQA_CHOICES).reason == SEVERAL
    assert extract_answer("The answer is (B) bank.", "choice", CSQA_CHOICES).reason == SEVERAL


def test_choice_answer_naming_no_option_is_unparsable():
    assert extract_answer("The answer is I do not know.", "choice", CSQA_CHOICES).reason == UNPARSABLE


def test_choice_letters_work_without_the_option_texts():
    assert extract_answer("The answer is (D).", "choice").value == "D"


TEXT_CASES = [
    ("quoted", 'The last letter of "Whitney" is "y"... Concatenating them is "yajo". The answer is "yajo".', "yajo"),
    ("bare", "So the answer is yajo.", "yajo"),
    ("curly quotes", "The answer is “yajo”.", "yajo"),
    ("capitals normalised", "The answer is YAJO.", "yajo"),
]


@pytest.mark.parametrize("text,expected", [(t, e) for _, t, e in TEXT_CASES], ids=[c[0] for c in TEXT_CASES])
def test_text_answers(text, expected):
    assert extract_answer(text, "text").value == expected


def test_cut_after_answer_drops_the_loop_and_chatter():
    text = "3 + 4 = 7. The answer is 7. The answer is 7. The answer is 7.\nQ: another"
    assert cut_after_answer(text) == "3 + 4 = 7. The answer is 7."
    assert cut_after_answer("no answer here") == "no answer here"


def test_extraction_end_points_just_past_the_answer_sentence():
    text = "So 5 + 2 = 7. The answer is 7. Extra"
    got = extract_answer(text, "number")
    assert text[: got.end] == "So 5 + 2 = 7. The answer is 7."


@pytest.mark.parametrize(
    "gold,answer_type,expected",
    [
        ("1,080", "number", "1080"),
        ("39.0", "number", "39"),
        ("43", "number", "43"),
        ("0.8333333333333334", "number", "0.833333"),
        ("1/2", "number", "0.5"),
        ("True", "yes_no", "yes"),
        ("no", "yes_no", "no"),
        ("B", "choice", "B"),
        ("yajo", "text", "yajo"),
    ],
)
def test_gold_answers_normalise_to_canonical_strings(gold, answer_type, expected):
    assert normalise(gold, answer_type) == expected


def test_numbers_match_across_formats_but_not_across_values():
    assert answers_match("1080", "1,080", "number")
    assert answers_match("39", "39.0", "number")
    assert answers_match("0.333333", "0.3333333", "number")
    assert not answers_match("93", "13", "number")
    assert not answers_match(None, "13", "number")
    assert answers_match("yes", "Yes", "yes_no")


def test_parse_number_needs_exactly_one_value():
    assert parse_number("18 apples") == 18
    assert parse_number("5 or 6") is None
    assert parse_number("x = 3/4") == 0.75
    assert parse_number("seven") == 7
