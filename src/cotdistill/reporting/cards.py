"""Shareable artefacts: a model card in each student folder, and the distilled set as a Hugging Face
dataset (parquet + dataset card).

A student folder already loads with `transformers.pipeline("text-generation", model=DIR)`; the
card says what it is (base model, teacher, data, mode, settings), how well it did (this run's
results, with the split each figure comes from), how to prompt it, how to rebuild it, and whose
licences apply. Everything in a card is read from the run directory, so it is rewritten whenever
the run's results change. API keys never reach a card: the config copy in a run holds none.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from cotdistill.embedded import PREFIX, get_model
from cotdistill.fileio import write_text_atomic
from cotdistill.prompts import student_input
from cotdistill.rundir import RunDir

CARD = "README.md"  # the name the hub and `huggingface_hub.ModelCard.load` look for


def licence_of(model: str) -> str:
    """What cotdistill knows of a model's licence: an embedded model's provenance, else a pointer."""
    if model.startswith(PREFIX):
        return get_model(model).provenance
    return f"that of {model}: see its own model card"


def _data_sources(config: dict[str, Any]) -> str:
    data = config.get("data", {})
    if data.get("generate"):
        return f"questions generated offline by cotdistill ({data['generate']}, seed {data.get('seed', config.get('seed'))})"
    files = data.get("train")
    files = files if isinstance(files, list) else [files]
    return ", ".join(f"`{f}`" for f in files)


def _results_table(evals: list[dict[str, Any]], student: str) -> str:
    """This student's rows and the baselines', on every test set they were scored on."""
    from cotdistill.reporting.report import pct, test_set

    shown = {student, "student-answer-only", "student-few-shot", "teacher-few-shot"}
    rows = [e for e in evals if e["name"].partition(".")[0] in shown]
    lines = ["| evaluation | split / test set | accuracy % | 95 % CI | n |", "|---|---|---|---|---|"]
    lines += [f"| {e['name'].partition('.')[0]} | {test_set(e)} | {pct(e['accuracy'])} | "
              f"{pct(e['ci_low'])}–{pct(e['ci_high'])} | {e['n']} |" for e in rows]
    return "\n".join(lines)


def _num(x: Any) -> str:
    return f"{x:.3f}" if isinstance(x, (int, float)) else "–"


def model_card(run: RunDir, mode: str) -> str:
    """The README.md of students/MODE, from the run's config, manifest and evaluations."""
    import yaml

    from cotdistill.reporting.report import RunData

    d = RunData.load(run)
    config = yaml.safe_load(run.config.read_text(encoding="utf-8")) if run.config.exists() else {}
    student, teacher = config.get("student", {}), config.get("teacher", {})
    base = student.get("model", "unknown")
    train = d.stages.get(f"train:{mode}", {}).get("metrics", {})
    annotate = d.stages.get("annotate", {})
    data = d.stages.get("data", {})
    example = student_input("A baker made 24 muffins and sold 3/4 of them. How many muffins did she sell?")
    settings = {k: student.get(k) for k in ("lora", "lora_r", "epochs", "lr", "batch_size", "max_len") if k in student}
    name = f"student-{mode}"
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [cotdistill, chain-of-thought, distillation]
---

# {config.get('name', run.root.name)}: {name}

`{base}` fine-tuned by [cotdistill](https://pypi.org/project/cotdistill/) to answer a bare question with
{"a chain of thought written by the teacher, then" if mode != "answer-only" else "only"} a final
"The answer is X." sentence (mode `{mode}`).

## Use

```python
from transformers import pipeline

generate = pipeline("text-generation", model="{run.student(mode)}")
prompt = {json.dumps(example)}
print(generate(prompt, max_new_tokens=160, do_sample=False, return_full_text=False)[0]["generated_text"])
```

The prompt is `Q: <question>\\nA:` with no exemplars; the answer is the number (or option, yes/no) in the
first "The answer is X." sentence of the output.

## Training data

- Questions: {_data_sources(config)}; {data.get('n_train', '?')} training questions
  ({data.get('n_dev', 0)} dev and {data.get('n_test', '?')} test questions held out, and every training
  question sharing {data.get('decontaminated', {}).get('ngram', 8)} consecutive words with a held-out one dropped).
- Teacher: `{teacher.get('model', '?')}`, {teacher.get('samples', 1)} sample(s) per question at temperature
  {teacher.get('temperature', 0.0)}, gold answer as hint: {teacher.get('hint', False)}; kept
  {annotate.get('n_distill', '?')} chains of thought after the filters (wrong answer, leaked answer,
  underived numbers, false arithmetic steps, near-duplicates).

## Training

{", ".join(f"{k} {v}" for k, v in settings.items())}; bf16 {train.get('bf16', '?')}; {train.get('steps', '?')} steps,
training loss {_num(train.get('first_train_loss'))} → {_num(train.get('final_train_loss'))}, held-out loss
{_num(train.get('final_eval_loss'))}.

## Results (this run)

{_results_table(d.evals, name)}

Accuracy on held-out questions, greedy decoding, 95 % Wilson interval; `dev` rows are the split settings
were chosen on, `test` rows were looked at only after. Baselines for context: the same base model
prompted few-shot, and trained on answers only.

## Reproduce

```
cotdistill run {run.config}
```

## Licences

- Base model: {licence_of(base)}.
- Teacher: {licence_of(teacher.get('model', '?'))}; its outputs are part of the training data.
- Training questions: the licences their authors state for {_data_sources(config)} (cotdistill records
  none; check before you publish).
"""


def write_model_cards(run: RunDir, modes: list[str]) -> list[Path]:
    """students/MODE/README.md for every trained student of the run."""
    written = []
    for mode in modes:
        folder = run.student(mode)
        if (folder / "config.json").exists():
            write_text_atomic(folder / CARD, model_card(run, mode))
            written.append(folder / CARD)
    return written


def export_dataset(run: RunDir, out: Path, source: Path | None = None) -> Path:
    """The distilled set as a Hugging Face dataset folder: data/train-*.parquet and a README.md
    whose `configs` header makes `datasets.load_dataset(str(out))` find it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from cotdistill.data.records import read_jsonl

    source = source or run.distill
    rows = [{"id": r.get("id"), "question": r["question"], "rationale": r.get("rationale", ""),
             "answer": str(r["answer"]), "answer_type": r.get("answer_type", ""), "sample": int(r.get("sample", 0))}
            for r in read_jsonl(source)]
    if not rows:
        from cotdistill.errors import UserError

        raise UserError(f"{source}: no distilled examples to export (run annotate first)")
    parquet = out / "data" / "train-00000-of-00001.parquet"
    parquet.parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows), parquet)
    manifest = run.read_manifest().get("stages", {})
    annotate = manifest.get("annotate", {})
    write_text_atomic(out / CARD, f"""---
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/train-*.parquet
tags: [cotdistill, chain-of-thought, distillation]
---

# Chains of thought distilled by cotdistill

{len(rows)} (question, rationale, answer) rows from `{source.name}` of run `{run.root.name}`: the teacher
`{annotate.get('teacher', '?')}` wrote each rationale, and only those that reach the gold answer and pass
cotdistill's filters are here. A question can appear more than once (`sample` = which teacher sample).

Fields: `id`, `question`, `rationale`, `answer` (gold, normalised), `answer_type`, `sample`.

```python
from datasets import load_dataset

data = load_dataset("{out}")["train"]
```

Licences: the training questions' (as their authors state them) and the teacher's terms for its outputs.
""")
    return out
