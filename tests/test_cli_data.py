"""`cotdistill data ...`: stats, show, generate, prepare; user errors are one line and exit code 2."""

import json
import os
import re
import subprocess
import sys

import pytest

from cotdistill import cli

from conftest import REPO

FIXTURES = REPO / "tests" / "fixtures" / "data"


def run(monkeypatch, capsys, *args):
    """Run `cotdistill ARGS` in-process through cli.main (the console entry point): (exit code, out, err)."""
    monkeypatch.setattr(sys, "argv", ["cotdistill", *map(str, args)])
    with pytest.raises(SystemExit) as exit_info:
        cli.main()
    out, err = capsys.readouterr()
    return exit_info.value.code or 0, out, err


def test_stats_reports_format_counts_types_and_skip_reasons(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "data", "stats", FIXTURES / "mawps_dev.csv")
    assert code == 0
    assert "mawps_csv" in out
    assert "examples" in out and " 4 " in out
    assert "answer type number" in out
    assert "placeholder number1 has no value in Numbers" in out
    assert "mawps_dev.csv:6" in out


def test_stats_counts_each_answer_type(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "data", "stats", FIXTURES / "ASDiv.xml")
    assert code == 0
    counts = dict(re.findall(r"answer type (\w+)\s+(\d+)", out))
    assert counts == {"number": "5", "text": "2", "yes_no": "1"}


def test_stats_with_limit_and_format(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "data", "stats", FIXTURES / "gsm8k_train.jsonl", "--format", "gsm8k", "--limit", "2")
    assert code == 0
    assert re.search(r"examples\s+2\b", out)


def test_show_prints_normalised_records_as_json(monkeypatch, capsys):
    code, out, _ = run(monkeypatch, capsys, "data", "show", FIXTURES / "aqua_dev.json", "-n", "2")
    assert code == 0
    records = [json.loads(chunk) for chunk in re.split(r"(?m)^(?=\{)", out) if chunk.strip()]
    assert [r["id"] for r in records] == ["aqua-0", "aqua-1"]
    assert records[0]["choices"] == ["125", "150", "225", "250", "275"]


def test_generic_file_with_field_mapping(monkeypatch, capsys):
    code, out, _ = run(
        monkeypatch, capsys, "data", "show", FIXTURES / "generic_problems.jsonl",
        "--map", "question=problem", "--map", "answer=solution", "--map", "answer_type=number", "--map", "id=uid",
    )
    assert code == 0
    assert '"id": "generic_problems-p-1"' in out and '"answer": "36"' in out


def test_generate_writes_train_and_test_reproducibly(monkeypatch, capsys, tmp_path):
    args = ["data", "generate", "last_letters", "--n-train", "30", "--n-test", "10", "--seed", "4", "--n-words", "3"]
    code, out, _ = run(monkeypatch, capsys, *args, "--out", tmp_path / "a")
    assert code == 0 and "wrote 30 train, 0 dev and 10 test last_letters problems" in out
    assert not (tmp_path / "a" / "dev.jsonl").exists()
    run(monkeypatch, capsys, *args, "--out", tmp_path / "b")
    for name in ("train.jsonl", "test.jsonl"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()
    test = [json.loads(line) for line in (tmp_path / "a" / "test.jsonl").read_text().splitlines()]
    assert len(test) == 10 and all(len(r["answer"]) == 3 and r["meta"]["split"] == "template" for r in test)
    code, out, _ = run(monkeypatch, capsys, *args, "--n-dev", "5", "--out", tmp_path / "c")
    assert code == 0 and "wrote 30 train, 5 dev and 10 test" in out
    assert (tmp_path / "a" / "train.jsonl").read_bytes() == (tmp_path / "c" / "train.jsonl").read_bytes()
    assert len((tmp_path / "c" / "dev.jsonl").read_text().splitlines()) == 5


def test_generate_same_template_split(monkeypatch, capsys, tmp_path):
    code, _, _ = run(monkeypatch, capsys, "data", "generate", "coin_flip", "--n-train", "5", "--n-test", "5",
                     "--split", "same-template", "--out", tmp_path)
    assert code == 0
    first = json.loads((tmp_path / "train.jsonl").read_text().splitlines()[0])
    assert first["meta"]["split"] == "same-template" and first["answer"] in ("yes", "no")


def test_prepare_writes_normalised_jsonl_and_removes_overlap(monkeypatch, capsys, tmp_path):
    test_file = tmp_path / "test.jsonl"
    test_file.write_text(json.dumps({
        "id": "t-0", "question": "Tom had 15 stickers. He gave 4 to his sister and bought 6 more. "
        "How many stickers does Tom have now?", "answer": "17", "answer_type": "number", "source": "t",
    }) + "\n")
    out_file = tmp_path / "train.jsonl"
    code, out, _ = run(monkeypatch, capsys, "data", "prepare", FIXTURES / "gsm8k_no_marker.jsonl",
                       "--out", out_file, "--exclude", test_file)
    assert code == 0
    rows = [json.loads(line) for line in out_file.read_text().splitlines()]
    assert [r["id"] for r in rows] == ["gsm8k-0"]
    assert rows[0]["answer"] == "18" and rows[0]["answer_type"] == "number"
    assert "skipped 1 records: 1 × solution has no '#### N' final answer" in out
    assert "decontamination: dropped 1 question(s) sharing 8 consecutive words with" in out


def test_decontaminate_drops_training_questions_sharing_words_with_any_held_out_file(monkeypatch, capsys, tmp_path):
    held_out = tmp_path / "bench.jsonl"
    held_out.write_text(json.dumps({"id": "b-0", "question": "At the fair, Mia baked 24 muffins and sold 3/4 of them "
                                    "to friends. How many were left?", "answer": "6", "answer_type": "number", "source": "b"}) + "\n")
    args = ["data", "decontaminate", FIXTURES / "gsm8k_no_marker.jsonl", held_out, "--out", tmp_path / "clean.jsonl",
            "--dropped", tmp_path / "dropped.jsonl"]
    code, out, _ = run(monkeypatch, capsys, *args)
    assert code == 0 and "dropped 1 question(s) sharing 8 consecutive words" in out
    dropped = [json.loads(line) for line in (tmp_path / "dropped.jsonl").read_text().splitlines()]
    assert [d["matched_id"] for d in dropped] == ["b-0"] and len(dropped[0]["shared"].split()) == 8
    kept = (tmp_path / "clean.jsonl").read_text()
    assert "Mia" not in kept and kept.count("\n") == 1
    code, out, _ = run(monkeypatch, capsys, *args[:-4], "--out", tmp_path / "loose.jsonl", "--ngram", "40")
    assert "dropped 0 question(s)" in out and (tmp_path / "loose.jsonl").read_text().count("\n") == 2


@pytest.mark.parametrize(
    "args,message",
    [
        (["data", "stats", FIXTURES / "gsm8k_bad_json.jsonl"], r"gsm8k_bad_json.jsonl:3: not valid JSON"),
        (["data", "show", FIXTURES / "svamp_missing_body.json"], r"svamp_missing_body.json: record 2: missing field 'Body'"),
        (["data", "stats", FIXTURES / "unknown_format.jsonl"], r"unknown_format.jsonl: cannot tell the dataset format"),
        (["data", "stats", FIXTURES / "svamp.json", "--format", "nope"], "unknown format 'nope'"),
        (["data", "stats", FIXTURES / "generic_problems.jsonl", "--map", "question"], "--map 'question': expected KEY=FIELD"),
        (["data", "generate", "chess", "--n-train", "1", "--n-test", "1", "--out", "x"], "unknown generator task 'chess'"),
        (["data", "prepare", FIXTURES / "commonsenseqa_test_no_answers.jsonl", "--out", "x.jsonl"], r":1: no gold answer"),
    ],
)
def test_user_errors_are_one_line_with_exit_code_2(monkeypatch, capsys, args, message):
    code, out, err = run(monkeypatch, capsys, *args)
    assert code == 2
    assert re.search(message, err)
    assert err.startswith("error: ") and err.count("\n") == 1
    assert "Traceback" not in err


def test_console_entry_point_exits_2_without_traceback(tmp_path):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    bad = subprocess.run([sys.executable, "-m", "cotdistill.cli", "data", "stats", str(FIXTURES / "asdiv_broken.xml")],
                         capture_output=True, text=True, env=env, timeout=120)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("error: ") and "asdiv_broken.xml:11:" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


def test_unreachable_hub_dataset_is_a_clear_error():
    """The real `datasets.load_dataset` path, offline: the failure names the dataset, exit code 2."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-m", "cotdistill.cli", "data", "stats", "openai/gsm8k"],
                            capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 2
    assert "could not load Hugging Face dataset 'openai/gsm8k'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1

