"""Shareable artefacts: a model card in each student folder, and the distilled set as a Hugging Face
dataset (parquet + dataset card).

A student folder already loads with `transformers.pipeline("text-generation", model=DIR)`; the
card says what it is (base model, teacher, data, mode, settings), how well it did (this run's
results, with the split each figure comes from), how to prompt it, how to rebuild it, and whose
licences apply. Everything in a card is read from the run directory, so it is rewritten whenever
the run's results change. A card is what users upload, so every model name in it is shown through
secrets.mask_spec: a teacher URL's password or query key never reaches it, even from a run
directory written before they were masked there.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from cotdistill.core.catalogue import PREFIX, get_model
from cotdistill.core.config import DataConfig, TeacherConfig
from cotdistill.core.evalnames import STUDENT_FEW_SHOT, TEACHER_FEW_SHOT, EvalName
from cotdistill.core.fileio import write_files_atomic, write_text_atomic
from cotdistill.core.hashing import CARD
from cotdistill.core.records import read_examples
from cotdistill.core.modes import ANSWER_ONLY, MODES
from cotdistill.core.prompts import student_input
from cotdistill.core.rundir import RunDir
from cotdistill.core.secrets import mask_spec


def licence_of(model: str) -> str:
    """What cotdistill knows of a model's licence: an embedded model's provenance, else a pointer."""
    if model.startswith(PREFIX):
        return get_model(model).provenance
    return f"that of {model}: see its own model card"


def _data_sources(config: dict[str, Any]) -> str:
    data = config.get("data", {})
    if data.get("generate"):
        seed = data.get("seed") if data.get("seed") is not None else config.get("seed")
        return f"questions generated offline by cotdistill ({data['generate']}, seed {seed})"
    files = data.get("train")
    files = files if isinstance(files, list) else [files]
    return ", ".join(f"`{f}`" for f in files)


def _setting(recorded: dict[str, Any], section: type[BaseModel], field: str) -> Any:
    """A setting as the run recorded it, else the config class's default: what a run whose record
    lacks the field (written before it existed) ran with."""
    return recorded.get(field, section.model_fields[field].default)


def _results_table(evals: list[dict[str, Any]], student: EvalName) -> str:
    """This student's rows and the baselines', on every test set they were scored on."""
    from cotdistill.reporting.report import accuracy_mark, base_rate_cells, pct, test_set

    shown = {n.model for n in (student, EvalName.student(ANSWER_ONLY), STUDENT_FEW_SHOT, TEACHER_FEW_SHOT)}
    rows = [e for e in evals if EvalName.parse(e["name"]).model in shown]
    lines = ["| evaluation | split / test set | accuracy % | 95 % CI | n | majority % | chance % |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {EvalName.parse(e['name']).model} | {test_set(e)} | {accuracy_mark(e)} | "
              f"{pct(e['ci_low'])}–{pct(e['ci_high'])} | {e['n']} | {' | '.join(base_rate_cells(e))} |" for e in rows]
    return "\n".join(lines)


def _distill_note(train: dict) -> str:
    if (train.get("distill") or "off") == "off":
        return " on the teacher's tokens"
    return (", the KD term against the teacher's next-token probabilities on each training sequence (read in the "
            "student's prompt format, one prefill per sequence: the run's teacher-targets stage)")


def model_card(run: RunDir, mode: str, gguf_section: str = "") -> str:
    """The README.md of students/MODE, from the run's config, manifest and evaluations; `gguf_section`
    says how to run its GGUF export (models.gguf.card_sections: the report does not look at models)."""
    from cotdistill.reporting.report import RunData, loss_label, num

    d = RunData.load(run)
    config = run.read_config()
    student, teacher = config.get("student", {}), config.get("teacher", {})
    base, teacher_spec = mask_spec(str(student.get("model", "unknown"))), mask_spec(str(teacher.get("model", "?")))
    train = d.stages.get(f"train:{mode}", {}).get("metrics", {})
    annotate = d.stages.get("annotate", {})
    data = d.stages.get("data", {})
    held_out = read_examples(run.test_data) if run.test_data.exists() else []
    example = student_input(held_out[0].question if held_out else "A baker made 24 muffins and sold 3/4 of them. "
                            "How many muffins did she sell?", held_out[0].choices if held_out else None)
    ngram = data.get("decontaminated", {}).get("ngram", DataConfig.model_fields["decontamination_ngram"].default)
    decontaminated = ("every training question repeating a held-out one dropped" if ngram == "exact" else
                      f"every training question sharing {ngram} consecutive words with a held-out one dropped")
    questions_licence = ("generated by cotdistill: no third-party terms" if config.get("data", {}).get("generate") else
                         f"the licences their authors state for {_data_sources(config)} (cotdistill records none; "
                         "check before you publish)")
    settings = {k: student.get(k) for k in ("lora", "lora_r", "epochs", "lr", "batch_size", "max_len") if k in student}
    name = EvalName.student(mode)
    samples, temperature, hint = (_setting(teacher, TeacherConfig, k) for k in ("samples", "temperature", "hint"))
    known = MODES.get(mode)
    return f"""---
library_name: transformers
pipeline_tag: text-generation
tags: [cotdistill, chain-of-thought, distillation]
---

# {config.get('name', run.root.name)}: {name}

`{base}` fine-tuned by [cotdistill](https://pypi.org/project/cotdistill/) to answer a bare question with
{"a chain of thought written by the teacher, then" if known is None or known.rationale else "only"} a final
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
{gguf_section}
## Training data

- Questions: {_data_sources(config)}; {data.get('n_train', '?')} training questions
  ({data.get('n_dev', 0)} dev and {data.get('n_test', '?')} test questions held out, and {decontaminated}).
- Teacher: `{teacher_spec}`, {samples} sample(s) per question at temperature
  {temperature}, gold answer as hint: {hint}; kept
  {annotate.get('n_distill', '?')} chains of thought after the filters (wrong answer, leaked answer,
  underived numbers, false arithmetic steps, near-duplicates).

## Training

Loss: {loss_label(train)}{_distill_note(train)}.
{", ".join(f"{k} {v}" for k, v in settings.items())}; bf16 {train.get('bf16', '?')}; {train.get('steps', '?')} steps,
training loss {num(train.get('first_train_loss'))} → {num(train.get('final_train_loss'))}, held-out loss
{num(train.get('final_eval_loss'))}.

## Results (this run)

{_results_table(d.evals, name)}

Accuracy on held-out questions, greedy decoding, 95 % Wilson interval; `dev` rows are the split settings
were chosen on, `test` rows were looked at only after. Baselines for context: the same base model
prompted few-shot, and trained on answers only. Majority: what always giving the set's most common gold
answer scores; chance: guessing among the options (– for open answers); `≤ maj.` marks an accuracy whose
95 % interval reaches the majority rate, i.e. not shown to be above it.

## Reproduce

```
cotdistill run {run.config}
```

## Licences

- Base model: {licence_of(base)}.
- Teacher: {licence_of(teacher_spec)}; its outputs are part of the training data.
- Training questions: {questions_licence}.
"""


def write_model_cards(run: RunDir, modes: list[str], gguf_sections: dict[str, str] | None = None) -> list[Path]:
    """students/MODE/README.md for every trained student of the run (with its GGUF section, if given)."""
    written = []
    for mode in modes:
        folder = run.student(mode)
        if (folder / "config.json").exists():
            write_text_atomic(folder / CARD, model_card(run, mode, (gguf_sections or {}).get(mode, "")))
            written.append(folder / CARD)
    return written


def export_dataset(run: RunDir, out: Path, source: Path | None = None) -> Path:
    """The distilled set as a Hugging Face dataset folder: data/train-*.parquet and a README.md
    whose `configs` header makes `datasets.load_dataset(str(out))` find it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    source = source or run.distill
    rows = [{"id": r["id"], "question": r["question"], "rationale": r["rationale"], "answer": str(r["answer"]),
             "answer_type": r.get("answer_type", ""), "sample": r.get("sample", 0)} for r in run.read_distill(source)]
    if not rows:
        from cotdistill.core.errors import UserError

        raise UserError(f"{source}: no distilled examples to export (run annotate first)")
    table = pa.BufferOutputStream()
    pq.write_table(pa.Table.from_pylist(rows), table)
    manifest = run.read_manifest().get("stages", {})
    annotate = manifest.get("annotate", {})
    card = f"""---
configs:
  - config_name: default
    data_files:
      - split: train
        path: data/train-*.parquet
tags: [cotdistill, chain-of-thought, distillation]
---

# Chains of thought distilled by cotdistill

{len(rows)} (question, rationale, answer) rows from `{source.name}` of run `{run.root.name}`: the teacher
`{mask_spec(str(annotate.get('teacher', '?')))}` wrote each rationale, and only those that reach the gold answer and pass
cotdistill's filters are here. A question can appear more than once (`sample` = which teacher sample).

Fields: `id`, `question`, `rationale`, `answer` (gold, normalised), `answer_type`, `sample`.

```python
from datasets import load_dataset

data = load_dataset("{out}")["train"]
```

Licences: the training questions' (as their authors state them) and the teacher's terms for its outputs.
"""
    # The parquet file and its card as one set: a full disk leaves neither half-written.
    write_files_atomic({out / "data" / "train-00000-of-00001.parquet": [table.getvalue().to_pybytes()],
                        out / CARD: [card.encode("utf-8")]})
    return out
