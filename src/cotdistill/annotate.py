"""The annotate + filter stage: a teacher writes CoTs, the filters keep the good ones.

    examples ─► prompts ─► cache? ─► teacher.generate (batches) ─► cache ─► filters ─► files

Every answer is committed to the SQLite cache as soon as the teacher returns it, and the output files
are rebuilt from the cache at the end. So a run killed at any point (Ctrl-C, kill -9) and rerun
with the same command asks the teacher only for what is missing, and writes its files from exactly
the answers paid for (the same files as an uninterrupted run, up to llama.cpp's greedy near-ties,
which a restart's different KV-cache contents can flip). `teacher_calls` in the manifest counts what
this run paid for.

Outputs (see DESIGN.md): annotations.jsonl, one line per teacher sample, and distill.jsonl, one
line per kept CoT (the student's training set).
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from rich.table import Table

from cotdistill.budget import Budget, BudgetReached, Estimate, Spent, extrapolate
from cotdistill.teachers.cache import CompletionCache, Key
from cotdistill.errors import UserError
from cotdistill.data.records import Example, write_jsonl
from cotdistill.filters import VERDICTS, FilterOptions, judge
from cotdistill.progress import console, progress_bar
from cotdistill.prompts import COMPLETION_STOP, PromptOptions, build_teacher_prompt, prompt_hash, select_exemplars
from cotdistill.rundir import RunDir
from cotdistill.teachers.base import PROMPT_TOO_LONG, Completion, Prompt, Request, SamplingParams, Teacher

@dataclass(frozen=True)
class AnnotateOptions:
    prompt: PromptOptions = field(default_factory=PromptOptions)
    filters: FilterOptions = field(default_factory=FilterOptions)
    samples: int = 1  # CoTs per question ("diverse reasoning" when > 1 with temperature > 0)
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    seed: int = 0
    batch_size: int = 8  # requests per teacher.generate call
    no_gold: bool = False  # self-consistency: the majority answer across samples is the label
    limit: int | None = None  # annotate only the first N questions
    quiet: bool = False

    def validate(self) -> None:
        if self.samples < 1:
            raise UserError(f"--samples must be at least 1, got {self.samples}")
        if self.batch_size < 1:
            raise UserError(f"--batch-size must be at least 1, got {self.batch_size}")
        if self.max_tokens < 1:
            raise UserError(f"--max-tokens must be at least 1, got {self.max_tokens}")
        if self.temperature < 0:
            raise UserError(f"--temperature must be >= 0, got {self.temperature}")
        if self.limit is not None and self.limit < 1:
            raise UserError(f"--limit must be at least 1, got {self.limit}")
        if self.no_gold and self.samples < 2:
            raise UserError("--no-gold votes across samples: give --samples 3 or more (and --temperature > 0)")


@dataclass(frozen=True)
class Job:
    """One teacher request: sample `sample` of question `example`."""

    example: Example
    sample: int
    prompt: Prompt
    prompt_hash: str


@dataclass
class FetchStats:
    cached: int = 0  # requests answered from the cache
    spent: Spent = field(default_factory=Spent)  # what this run paid the teacher for (requests, tokens, time)
    estimate: Estimate | None = None  # the whole stage's cost, from the first batch


# ---------------------------------------------------------------- data and prompts


def load_examples(path: str | Path, format: str | None = None) -> list[Example]:
    """Normalised jsonl or any format the data layer knows; skipped records are reported."""
    from cotdistill.data.load import load_dataset

    result = load_dataset(path, format=format)
    if result.skipped:
        where, reason = result.skipped[0]
        console.print(f"[yellow]{path}: {len(result.skipped)} record(s) skipped, e.g. {where}: {reason}[/yellow]")
    return result.examples


def plan(examples: list[Example], chat: bool, options: AnnotateOptions, params: SamplingParams) -> list[Job]:
    """Every (question, sample) request in order; samples of one question are adjacent so that the
    teacher reuses their common prompt."""
    hint = options.prompt.hint and not options.no_gold
    exemplars: dict[str, list] = {}
    jobs = []
    for ex in examples:
        if ex.answer_type not in exemplars:
            exemplars[ex.answer_type] = select_exemplars(ex.answer_type, options.prompt)
        prompt = build_teacher_prompt(
            ex.question, ex.answer_type, exemplars[ex.answer_type], chat=chat, choices=ex.choices,
            hint=ex.answer if hint else None, zero_shot=options.prompt.zero_shot,
        )
        phash = prompt_hash(prompt, params)
        jobs.extend(Job(ex, k, prompt, phash) for k in range(options.samples))
    return jobs


# ---------------------------------------------------------------- asking the teacher


def _chars(prompt: Prompt) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m.get("content", "")) for m in prompt)


def fetch(
    teacher: Teacher, jobs: list[Job], params: SamplingParams, cache: CompletionCache, *, batch_size: int, quiet: bool,
    budget: Budget = Budget(), dry_run: bool = False,
) -> tuple[dict[tuple[str, int], Completion], FetchStats]:
    """The completion of every job: from the cache, else from the teacher in batches. Each answer
    is committed to the cache the moment the teacher hands it over (`on_done`), not when its
    batch ends: a run killed mid-batch loses only the answers still being written.

    After the first batch the whole stage's cost is estimated and printed (budget.py); `dry_run`
    stops there, and reaching `budget` after any batch raises BudgetReached."""
    keys: list[Key] = [(teacher.name, j.prompt_hash, params, j.sample) for j in jobs]
    found = cache.get_many(keys)
    stats = FetchStats(cached=len(found))
    spent = stats.spent
    missing = [(j, k) for j, k in zip(jobs, keys) if k not in found]
    if missing and not quiet:
        console.print(f"teacher: {len(missing)} requests to send ({len(found)} cached); "
                      f"the first {min(batch_size, len(missing))} measure its speed")
    with progress_bar(quiet) as bar:
        task = bar.add_task("annotate", total=len(jobs), completed=len(found))
        for start in range(0, len(missing), batch_size):
            batch = missing[start : start + batch_size]
            t0 = time.perf_counter()

            def commit(i: int, completion: Completion, batch=batch) -> None:
                key = batch[i][1]
                found[key] = completion
                if completion.finish_reason != PROMPT_TOO_LONG:  # never asked: nothing to keep
                    cache.put_many([(key, completion)])
                    spent.requests += 1
                    spent.prompt_tokens += completion.prompt_tokens
                    spent.completion_tokens += completion.completion_tokens
                    spent.usd += completion.cost_usd
                bar.advance(task, 1)

            answers = teacher.generate([Request(j.prompt, params, j.sample) for j, _ in batch], on_done=commit)
            spent.seconds += time.perf_counter() - t0
            if len(answers) != len(batch) or any(k not in found for _, k in batch):
                raise RuntimeError(f"{teacher.name} reported {len(answers)} completions for {len(batch)} requests")
            if start == 0:
                stats.estimate = extrapolate(spent, sum(_chars(j.prompt) for j, _ in batch),
                                             sum(_chars(j.prompt) for j, _ in missing), len(missing), stats.cached)
                console.print(stats.estimate.line())
                if dry_run:
                    break
            if not quiet and not console.is_terminal:  # a log file gets a line per batch instead of a bar
                done, rate = stats.cached + spent.requests, 60 * spent.requests / spent.seconds
                eta = (len(jobs) - done) / rate if rate else float("nan")
                console.print(f"annotate: {done}/{len(jobs)} samples, {rate:.1f}/min, ETA {eta:.0f} min")
            reached = budget.reached(spent) if start + batch_size < len(missing) else None
            if reached:
                raise BudgetReached(
                    f"teacher budget reached ({reached}): {stats.cached + spent.requests} of {len(jobs)} answers are "
                    "in the cache; rerun the same command (with a larger budget, or none) to continue from there")
    if dry_run:
        return {}, stats
    return {(j.example.id, j.sample): found[k] for j, k in zip(jobs, keys)}, stats


# ---------------------------------------------------------------- filtering


def majority(predictions: list[str | None]) -> tuple[str | None, dict[str, int]]:
    """The most frequent answer (ties: the one seen first) and the whole vote."""
    votes = Counter(p for p in predictions if p is not None)
    if not votes:
        return None, {}
    return votes.most_common(1)[0][0], dict(votes)


def judge_example(
    example: Example, jobs: list[Job], completions: dict[tuple[str, int], Completion], options: AnnotateOptions
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Annotation rows (one per sample) and distill rows (one per kept sample) for one question."""
    answers = [completions[(example.id, j.sample)] for j in jobs]
    label, vote = example.answer, None
    if options.no_gold:  # first read every sample's answer, then judge them against the vote
        first = [judge(c.text, c.finish_reason, example.answer_type, None, choices=example.choices) for c in answers]
        label, vote = majority([j.predicted for j in first])
    kept_texts: set[str] = set()
    annotations, distill = [], []
    for job, c in zip(jobs, answers):
        j = judge(
            c.text, c.finish_reason, example.answer_type, label, question=example.question,
            choices=example.choices, kept_texts=kept_texts, options=options.filters,
        )
        row = {
            "example_id": example.id, "sample": job.sample, "prompt_hash": job.prompt_hash, "text": c.text,
            "predicted": j.predicted, "verdict": j.verdict, "reason": j.reason, "finish_reason": c.finish_reason,
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd},
        }
        if vote is not None:
            row["vote"] = vote
        annotations.append(row)
        if j.verdict == "kept":
            d = {
                "id": example.id if options.samples == 1 else f"{example.id}#{job.sample}",
                "example_id": example.id, "sample": job.sample, "question": example.question,
                "rationale": j.rationale, "answer": label, "answer_type": example.answer_type,
            }
            if example.choices:
                d["choices"] = example.choices
            if vote is not None:
                d["vote"] = vote
            distill.append(d)
    return annotations, distill


def yield_table(annotations: list[dict[str, Any]], n_examples: int) -> dict[str, Any]:
    """Counts and percentages of each verdict, and how many questions got at least one CoT."""
    counts = Counter(a["verdict"] for a in annotations)
    total = len(annotations)
    covered = len({a["example_id"] for a in annotations if a["verdict"] == "kept"})
    return {
        "samples": total,
        "verdicts": {v: {"count": counts[v], "percent": round(100 * counts[v] / total, 1) if total else 0.0} for v in VERDICTS},
        "questions": n_examples,
        "questions_with_kept": covered,
    }


def print_yield(table: dict[str, Any]) -> None:
    t = Table(title=f"annotate yield: {table['samples']} samples, {table['questions_with_kept']}/{table['questions']} questions kept")
    t.add_column("verdict")
    t.add_column("count", justify="right")
    t.add_column("%", justify="right")
    for verdict, v in table["verdicts"].items():
        t.add_row(verdict, str(v["count"]), f"{v['percent']:.1f}")
    console.print(t)


# ---------------------------------------------------------------- the stage


def annotate(
    examples: list[Example], teacher: Teacher, run: RunDir, options: AnnotateOptions = AnnotateOptions(),
    cache_path: Path | None = None, budget: Budget = Budget(), dry_run: bool = False,
) -> dict[str, Any]:
    """Annotate and filter `examples` with `teacher` into `run`; returns what the manifest records.

    `dry_run`: stop after the estimate (the first batch's answers are cached) and write nothing but
    the estimate. `budget`: stop cleanly (BudgetReached) once this call has spent it."""
    options.validate()
    ids = Counter(e.id for e in examples)
    dup = next((i for i, n in ids.items() if n > 1), None)
    if dup is not None:
        raise UserError(f"example id {dup!r} occurs {ids[dup]} times in the data; ids must be unique")
    if options.limit is not None:
        examples = examples[: options.limit]
    t0 = time.perf_counter()
    params = SamplingParams(
        temperature=options.temperature, top_p=options.top_p, max_tokens=options.max_tokens,
        stop=() if teacher.chat else COMPLETION_STOP, seed=options.seed,
    )
    jobs = plan(examples, teacher.chat, options, params)
    run.root.mkdir(parents=True, exist_ok=True)
    with CompletionCache(cache_path or run.cache) as cache:
        try:
            completions, stats = fetch(teacher, jobs, params, cache, batch_size=options.batch_size, quiet=options.quiet,
                                       budget=budget, dry_run=dry_run)
        except BudgetReached:
            run.record_stage("annotate", status="stopped", budget=asdict(budget))
            raise
    if dry_run:
        info = {"status": "estimated", "teacher": teacher.name, "estimate": asdict(stats.estimate) if stats.estimate else None,
                "cached": stats.cached, "requests": len(jobs)}
        run.record_stage("annotate", **info)
        if stats.estimate is None:
            console.print(f"teacher estimate: all {len(jobs)} requests are cached: nothing to pay for")
        return info
    annotations, distill = [], []
    for i, ex in enumerate(examples):
        a, d = judge_example(ex, jobs[i * options.samples : (i + 1) * options.samples], completions, options)
        annotations += a
        distill += d
    write_jsonl(run.annotations, annotations)
    write_jsonl(run.distill, distill)
    too_long = sorted({a["example_id"] for a in annotations if a["verdict"] == "prompt_too_long"})
    if too_long:
        console.print(f"[yellow]{len(too_long)} question(s) do not fit the teacher's context and were not asked "
                      f"(e.g. {', '.join(too_long[:3])}; verdict prompt_too_long); raise its n_ctx to include them[/yellow]")
    table = yield_table(annotations, len(examples))
    seconds, spent = time.perf_counter() - t0, stats.spent
    info = {
        "status": "done", "teacher": teacher.name, "chat": teacher.chat, "n_examples": len(examples),
        "hint_given": options.prompt.hint and not options.no_gold,
        "n_distill": len(distill), "yield": table, "teacher_calls": spent.requests, "cached": stats.cached,
        "seconds": round(seconds, 1), "teacher_seconds": round(spent.seconds, 1),
        "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens, "cost_usd": round(spent.usd, 6),
        "samples_per_min": round(60 * spent.requests / spent.seconds, 2) if spent.seconds else None,
        "estimate": asdict(stats.estimate) if stats.estimate else None,
        "options": _jsonable(asdict(options)), "sampling": params.to_dict(),
    }
    run.record_stage("annotate", **info)
    if not options.quiet:
        print_yield(table)
    console.print(
        f"teacher calls: {spent.requests} (cached: {stats.cached}); "
        f"{len(distill)} CoTs → {run.distill}; {seconds:.0f} s"
    )
    return info


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: _jsonable(v) if isinstance(v, dict) else str(v) if isinstance(v, Path) else v for k, v in d.items()}


def run_annotate(
    data: str | Path | None, teacher_spec: str, out: str | Path, options: AnnotateOptions = AnnotateOptions(),
    cache_path: Path | None = None, teacher_options: dict[str, Any] | None = None, data_format: str | None = None,
    budget: Budget = Budget(), dry_run: bool = False,
) -> dict[str, Any]:
    """The `annotate` command: load the data (default RUN_DIR/data/train.jsonl) and the teacher."""
    from cotdistill.teachers import load_teacher

    options.validate()  # before the (slow) data and teacher loading
    run = RunDir(Path(out))
    if data is None and not run.train_data.exists():
        raise UserError(f"no --data given and {run.train_data} does not exist; give --data PATH")
    examples = load_examples(data or run.train_data, data_format)
    if not examples:
        raise UserError(f"{data or run.train_data}: no examples to annotate")
    with run.lock():  # before the teacher loads: a busy or unwritable --out fails at once
        teacher = load_teacher(teacher_spec, **(teacher_options or {}))
        try:
            info = annotate(examples, teacher, run, options, cache_path, budget=budget, dry_run=dry_run)
        finally:
            teacher.close()
        if not dry_run:
            run.record_stage("annotate", data=str(data or run.train_data))
    return info
