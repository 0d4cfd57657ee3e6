"""Loading every dataset family from the authors' own file formats into normalised examples."""

import json
from dataclasses import replace

import pytest

from cotdistill.data.load import FORMATS, detect_format, load_dataset
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example, check_unique_ids, read_examples, write_examples
from cotdistill.data.overlap import decontaminate, normalise_question

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"


# ---------------------------------------------------------------- the real files (counts from their READMEs)

REAL = [
    ("gsm8k/train.jsonl", "gsm8k", 7473, "number", "gsm8k-0", "72"),
    ("multiarith/MultiArith.json", "mawps_json", 600, "number", "multiarith-0", "39"),
    ("addsub/AddSub.json", "mawps_json", 395, "number", "addsub-1", "43"),
    ("singleeq/questions.json", "mawps_json", 508, "number", "singleeq-0", "43"),
    ("coin_flip/coin_flip.json", "coin_flip", 500, "yes_no", "coin_flip-0", "yes"),
    ("last_letters/last_letters.json", "last_letters", 500, "text", "last_letters-0", "yajo"),
    ("commonsenseqa/train_rand_split.jsonl", "commonsenseqa", 9741, "choice", None, None),
    ("commonsenseqa/dev_rand_split.jsonl", "commonsenseqa", 1221, "choice",
     "commonsenseqa-1afa02df02c908a558b4036e80242fac", "A"),
]


@pytest.mark.parametrize("rel,fmt,count,answer_type,first_id,first_answer", REAL, ids=[r[0] for r in REAL])
def test_real_datasets_load_completely_with_the_readme_counts(
    shared_datasets, rel, fmt, count, answer_type, first_id, first_answer
):
    result = load_dataset(shared_datasets / rel)
    assert result.format == fmt
    assert len(result.examples) == count
    assert result.skipped == []
    assert result.answer_types() == {answer_type: count}
    assert len({e.id for e in result.examples}) == count
    if first_id:
        assert (result.examples[0].id, result.examples[0].answer) == (first_id, first_answer)


def test_gsm8k_gold_answers_lose_their_thousands_commas(shared_datasets):
    examples = load_dataset(shared_datasets / "gsm8k/train.jsonl").examples
    raw = [json.loads(line)["answer"].split("#### ")[-1] for line in open(shared_datasets / "gsm8k/train.jsonl")]
    with_commas = [(e.answer, r) for e, r in zip(examples, raw, strict=True) if "," in r]
    assert len(with_commas) == 79  # the README's count
    assert all(a == r.replace(",", "").strip() for a, r in with_commas)


def test_multiarith_float_answers_become_integers_and_questions_are_stripped(shared_datasets):
    first = load_dataset(shared_datasets / "multiarith/MultiArith.json").examples[0]
    assert first.answer == "39"
    assert first.question.startswith("For Halloween Debby") and first.question.endswith("left?")


def test_commonsenseqa_unlabelled_test_split_is_a_clear_error(shared_datasets):
    path = shared_datasets / "commonsenseqa/test_rand_split_no_answers.jsonl"
    with pytest.raises(UserError, match=r"test_rand_split_no_answers.jsonl:1: no gold answer .*answerKey.*unlabelled"):
        load_dataset(path)


def test_a_dataset_folder_and_split_pick_the_file(shared_datasets):
    result = load_dataset(shared_datasets / "commonsenseqa", split="dev")
    assert len(result.examples) == 1221
    with pytest.raises(UserError, match="expected one data file.*dev_rand_split.jsonl.*train_rand_split.jsonl"):
        load_dataset(shared_datasets / "commonsenseqa")


def test_gsm8k_dev_overlaps_train_completely(shared_datasets):
    train = load_dataset(shared_datasets / "gsm8k/train.jsonl").examples
    dev = load_dataset(shared_datasets / "gsm8k/dev.jsonl").examples
    kept, dropped = decontaminate(train, dev, 8)
    assert {d["matched_id"] for d in dropped} >= {e.id for e in dev}  # every dev question is a training question
    assert len(kept) + len(dropped) == len(train) and len(dropped) >= 500


# ---------------------------------------------------------------- fixtures in the authors' formats


def load(name, **kw):
    return load_dataset(FIXTURES / name, **kw)


def test_svamp_question_is_body_then_question_and_answer_is_normalised():
    result = load("svamp.json")
    assert result.format == "svamp"
    first = result.examples[0]
    assert first.id == "svamp-chal-1"
    assert first.question == (
        "Each pack of dvds costs 76 dollars. If there is a discount of 25 dollars on each pack "
        "How much do you have to pay to buy each pack?"
    )
    assert (first.answer, first.answer_type, first.meta["type"]) == ("51", "number", "Subtraction")


def test_asdiv_keeps_non_numeric_answers_with_their_type():
    result = load("ASDiv.xml")
    assert result.format == "asdiv"
    by_id = {e.id: e for e in result.examples}
    assert len(by_id) == 8 and result.skipped == []
    assert result.answer_types() == {"number": 5, "text": 2, "yes_no": 1}
    assert by_id["asdiv-nluds-0001"].answer == "9"  # "9 (apples)"
    assert by_id["asdiv-nluds-0873"].answer == "3380"  # "3,380 (pounds)"
    assert by_id["asdiv-nluds-1544"].answer == "1.5"
    assert (by_id["asdiv-nluds-1802"].answer, by_id["asdiv-nluds-1802"].answer_type) == ("tom", "text")
    assert (by_id["asdiv-nluds-1907"].answer, by_id["asdiv-nluds-1907"].answer_type) == ("no", "yes_no")
    assert by_id["asdiv-nluds-2003"].answer == "4; 3"  # two answers: kept, as text
    assert by_id["asdiv-nluds-2262"].question.endswith("exactly 2, how many should he buy?")
    assert by_id["asdiv-nluds-2262"].meta["raw_answer"] == "6 (cupcakes)"


def test_mawps_csv_placeholders_are_filled_from_the_numbers_column():
    result = load("mawps_dev.csv")
    assert result.format == "mawps_csv"
    first = result.examples[0]
    assert "If Bryan has 56 books in each of his 9 bookshelves" in first.question
    assert "number" not in first.question
    assert first.answer == "504"
    assert result.examples[2].question.startswith("There are 7.75 gallons")
    assert result.skipped == [(f"{FIXTURES / 'mawps_dev.csv'}:6", "placeholder number1 has no value in Numbers '7.0'")]


def test_aqua_choices_lose_their_letter_prefixes():
    result = load("aqua_dev.json")  # the real files are JSON Lines despite the .json name
    assert result.format == "aqua"
    first, tokenised = result.examples[0], result.examples[2]
    assert first.choices == ["125", "150", "225", "250", "275"]
    assert (first.answer, first.answer_type) == ("A", "choice")
    assert tokenised.choices == ["10", "11.5", "12.5", "13.5", "15"]
    assert tokenised.answer == "C"


def test_strategyqa_original_and_bigbench_formats_give_the_same_answers():
    original, bigbench = load("strategyqa_train.json"), load("strategyqa_task.json")
    assert (original.format, bigbench.format) == ("strategyqa", "strategyqa_bigbench")
    assert [e.answer for e in original.examples] == ["yes", "no"]
    assert [e.answer for e in bigbench.examples] == ["yes", "no", "yes"]
    assert original.examples[0].id == "strategyqa-b8677742616fef051f00"
    assert original.examples[0].question == bigbench.examples[0].question
    assert bigbench.examples[0].meta["target"].startswith("Yes. Julius Caesar")


def test_commonsenseqa_choices_in_label_order():
    first = load("commonsenseqa_dev.jsonl").examples[0]
    assert first.choices == ["bookstore", "library", "classroom", "desk", "kitchen"]
    assert (first.answer, first.answer_type, first.source) == ("B", "choice", "commonsenseqa")


def test_commonsenseqa_without_answer_keys_is_refused():
    with pytest.raises(UserError, match="no gold answer.*unlabelled test split"):
        load("commonsenseqa_test_no_answers.jsonl")


@pytest.mark.parametrize(
    "name,fmt,answers",
    [
        ("gsm8k_train.jsonl", "gsm8k", ["18", "1080", "17"]),
        ("MultiArith.json", "mawps_json", ["11", "29"]),
        ("AddSub.json", "mawps_json", ["43", "5.75"]),
        ("singleeq_questions.json", "mawps_json", ["18", "10"]),
        ("coin_flip.json", "coin_flip", ["yes", "no"]),
        ("last_letters.json", "last_letters", ["leyk", "araq"]),
    ],
)
def test_fixture_families_are_detected_and_read(name, fmt, answers):
    assert detect_format(FIXTURES / name) == fmt
    assert [e.answer for e in load(name).examples] == answers


def test_mawps_json_components_are_told_apart_by_their_fields():
    sources = {name: load(name).examples[0].source for name in ("MultiArith.json", "AddSub.json", "singleeq_questions.json")}
    assert sources == {"MultiArith.json": "multiarith", "AddSub.json": "addsub", "singleeq_questions.json": "singleeq"}
    assert load("AddSub.json", format="singleeq").examples[0].id == "singleeq-1"


# ---------------------------------------------------------------- malformed files and skipped records


def test_bad_json_line_names_file_and_line():
    with pytest.raises(UserError, match=r"gsm8k_bad_json.jsonl:3: not valid JSON"):
        load("gsm8k_bad_json.jsonl")


def test_missing_required_field_names_record_and_expectation():
    with pytest.raises(UserError, match=r"gsm8k_missing_answer.jsonl:2: missing field 'answer' \(expected a solution"):
        load("gsm8k_missing_answer.jsonl")
    with pytest.raises(UserError, match=r"svamp_missing_body.json: record 2: missing field 'Body'"):
        load("svamp_missing_body.json")


def test_broken_xml_names_line_and_column():
    with pytest.raises(UserError, match=r"asdiv_broken.xml:11:\d+: not valid XML"):
        load("asdiv_broken.xml")


def test_unreadable_gold_answer_is_skipped_and_reported_not_dropped():
    result = load("gsm8k_no_marker.jsonl")
    assert [e.id for e in result.examples] == ["gsm8k-0", "gsm8k-2"]
    assert result.skipped == [(f"{FIXTURES / 'gsm8k_no_marker.jsonl'}:2", "solution has no '#### N' final answer")]
    assert result.skip_summary() == [("solution has no '#### N' final answer", 1, f"{FIXTURES / 'gsm8k_no_marker.jsonl'}:2")]


def test_unknown_content_asks_for_a_format():
    expected = r"cannot tell the dataset format \(records with fields prompt, completion\); pass --format"
    with pytest.raises(UserError, match=expected):
        detect_format(FIXTURES / "unknown_format.jsonl")


def test_unknown_format_name_and_bad_limit_are_user_errors():
    with pytest.raises(UserError, match="unknown format 'gsm9k'; known formats: gsm8k"):
        load("gsm8k_train.jsonl", format="gsm9k")
    with pytest.raises(UserError, match="limit must be at least 1"):
        load("gsm8k_train.jsonl", limit=0)


def test_wrong_format_for_a_file_fails_on_the_first_record():
    with pytest.raises(UserError, match=r"gsm8k_train.jsonl:1: missing field 'options'"):
        load("gsm8k_train.jsonl", format="aqua")


def test_limit_caps_the_examples():
    assert [e.id for e in load("gsm8k_train.jsonl", limit=2).examples] == ["gsm8k-0", "gsm8k-1"]


def test_missing_file_is_a_user_error(tmp_path):
    with pytest.raises(UserError, match="nope.jsonl: file not found"):
        load_dataset(tmp_path / "nope.jsonl")


# ---------------------------------------------------------------- generic files with a field mapping

PROBLEMS_MAP = {"question": "problem", "answer": "solution", "answer_type": "number", "id": "uid"}


def test_generic_jsonl_through_a_field_mapping():
    result = load("generic_problems.jsonl", mapping=PROBLEMS_MAP)
    assert result.format == "jsonl"
    assert [(e.id, e.answer, e.source) for e in result.examples] == [
        ("generic_problems-p-1", "36", "generic_problems"),
        ("generic_problems-p-2", "999", "generic_problems"),
    ]
    assert result.skipped == [(f"{FIXTURES / 'generic_problems.jsonl'}:3", "gold answer 'banana' is not a readable number")]


def test_generic_csv_yes_no():
    mapping = {"question": "statement", "answer": "label", "answer_type": "yes_no", "source": "primes"}
    result = load("generic_yesno.csv", mapping=mapping)
    assert [(e.id, e.answer) for e in result.examples] == [("primes-0", "yes"), ("primes-1", "no")]


def test_generic_parquet_with_nested_choices(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [
        {"q": "Pick the fruit.", "label": "B", "choices": {"label": ["A", "B"], "text": ["stone", "apple"]}},
        {"q": "Pick the metal.", "label": "A", "choices": {"label": ["A", "B"], "text": ["iron", "wood"]}},
    ]
    path = tmp_path / "mc.parquet"
    pq.write_table(pa.Table.from_pylist(rows), path)
    mapping = {"question": "q", "answer": "label", "answer_type": "choice", "choices": "choices.text"}
    result = load_dataset(path, mapping=mapping)
    assert result.format == "parquet"
    assert [(e.answer, e.choices) for e in result.examples] == [("B", ["stone", "apple"]), ("A", ["iron", "wood"])]


def test_generic_mapping_errors_name_what_is_missing(tmp_path):
    with pytest.raises(UserError, match="needs a field mapping with answer_type"):
        load("generic_problems.jsonl", mapping={"question": "problem", "answer": "solution"})
    with pytest.raises(UserError, match="unknown mapping key.*questoin"):
        load("generic_problems.jsonl", mapping={**PROBLEMS_MAP, "questoin": "x"})
    with pytest.raises(UserError, match=r"generic_problems.jsonl:1: missing field 'statement' \(mapped as the question\)"):
        load("generic_problems.jsonl", mapping={**PROBLEMS_MAP, "question": "statement"})
    with pytest.raises(UserError, match="a field mapping applies to the generic formats"):
        load("svamp.json", format="svamp", mapping=PROBLEMS_MAP)


def test_repeated_ids_are_skipped_and_reported(tmp_path):
    path = tmp_path / "dup.jsonl"
    path.write_text("\n".join(json.dumps({"k": "a", "q": f"What is {i} + 1?", "a": i + 1}) for i in range(2)) + "\n")
    result = load_dataset(path, mapping={"question": "q", "answer": "a", "answer_type": "number", "id": "k"})
    assert len(result.examples) == 1
    assert result.skipped == [(f"{path}:2", "duplicate id 'dup-a'")]


def test_hub_names_need_a_mapping_unless_well_known():
    with pytest.raises(UserError, match="hub dataset 'someone/maths' needs a field mapping"):
        load_dataset("someone/maths")


def test_normalised_files_read_back_unchanged(tmp_path):
    original = load("ASDiv.xml").examples + load("commonsenseqa_dev.jsonl").examples
    write_examples(tmp_path / "train.jsonl", original)
    again = load_dataset(tmp_path / "train.jsonl")
    assert again.format == "examples"
    assert again.examples == original == read_examples(tmp_path / "train.jsonl")


def test_every_format_has_a_description():
    assert all(f.description for f in FORMATS.values())


# ---------------------------------------------------------------- overlap


def test_overlap_ignores_case_punctuation_and_spacing():
    assert normalise_question(" Joan found 70 seashells on the beach . she gave ") == normalise_question(
        "joan found 70 seashells on the beach. She gave"
    )
    train = load("AddSub.json").examples
    retyped = "KEITH found 70 marbles in the park. He gave Jason some of his marbles. He has 27 marbles left. " \
        "How many marbles did he give to Jason?"
    kept, dropped = decontaminate(train, [replace(train[0], id="other-1", question=retyped)], 8)
    assert len(dropped) == 1 and [e.id for e in kept] == ["addsub-2"]


def test_skip_summary_groups_reasons_that_differ_only_in_quoted_values(tmp_path):
    path = tmp_path / "bad_gold.jsonl"
    path.write_text("".join(json.dumps({"q": f"Question {i}?", "a": f"x{i}"}) + "\n" for i in range(3)))
    result = load_dataset(path, mapping={"question": "q", "answer": "a", "answer_type": "number"})
    assert result.skip_summary() == [("gold answer … is not a readable number", 3, f"{path}:1")]


def test_generic_rows_with_an_empty_answer_are_skipped(tmp_path):
    path = tmp_path / "sheet.txt"  # the format, not the extension, decides how it is read
    path.write_text("q,a\nIs 2 even?,yes\nIs 3 even?,\n")
    result = load_dataset(path, format="csv", mapping={"question": "q", "answer": "a", "answer_type": "yes_no"})
    assert [e.answer for e in result.examples] == ["yes"]
    assert result.skipped == [(f"{path}:3", "empty answer in field 'a'")]


def test_a_repeated_example_id_is_refused_naming_where_and_how_often():
    examples = [Example(i, "q?", "1", "number", "test") for i in ("a", "b", "a", "a")]
    with pytest.raises(UserError, match=r"^data/test.jsonl: example id 'a' occurs 3 times; ids must be unique$"):
        check_unique_ids(examples, "data/test.jsonl")
    check_unique_ids(examples[:2], "data/test.jsonl")
