"""Build a distill.jsonl from GSM8K's own HUMAN rationales (no teacher involved).

For training and throughput measurements before teacher-annotated data exists: the rationales are
the GSM8K authors' worked solutions, not a teacher's CoTs, so results on this file say nothing about
distillation quality. Calculator annotations <<48/2=24>> are removed; the final line "#### N"
becomes the answer (thousands separators dropped).

    python bench/make_gsm8k_distill.py /work/shared/datasets/gsm8k/train.jsonl OUT/distill.jsonl --n 200
"""

from __future__ import annotations

import argparse
import re

from cotdistill.core.records import iter_jsonl, write_jsonl

CALCULATOR = re.compile(r"<<[^>]*>>")


def human_row(index: int, record: dict) -> dict:
    solution, _, final = record["answer"].rpartition("####")
    lines = [line.strip() for line in CALCULATOR.sub("", solution).splitlines() if line.strip()]
    return {
        "id": f"gsm8k-train-{index}",
        "question": record["question"].strip(),
        "rationale": " ".join(lines),
        "answer": final.strip().replace(",", ""),
        "answer_type": "number",
        "source": "gsm8k human rationale (not a teacher CoT)",
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gsm8k_jsonl")
    parser.add_argument("out")
    parser.add_argument("--n", type=int, default=200, help="the first N records")
    args = parser.parse_args()
    rows = [human_row(i, rec) for i, (_, rec) in zip(range(args.n), iter_jsonl(args.gsm8k_jsonl))]
    write_jsonl(args.out, rows)
    print(f"wrote {len(rows)} examples with GSM8K's human rationales to {args.out}")


if __name__ == "__main__":
    main()
