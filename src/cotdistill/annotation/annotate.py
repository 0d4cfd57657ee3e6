"""The annotate + filter stage: a teacher writes CoTs, the filters keep the good ones.

    examples ─► prompts ─► cache? ─► teacher.generate (batches) ─► cache ─► filters ─► files

Every answer is committed to the SQLite cache as soon as the teacher returns it, and the output files
are rebuilt from the cache at the end. So a run killed at any point (Ctrl-C, kill -9) and rerun
with the same command asks the teacher only for what is missing, and writes its files from exactly
the answers paid for (the same files as an uninterrupted run, up to llama.cpp's greedy near-ties,
which a restart's different KV-cache contents can flip). `teacher_calls` in the manifest counts what
this run paid for.

Outputs (the run directory's layout: rundir.py): annotations.jsonl, one line per teacher sample, and
distill.jsonl, one line per kept CoT (the student's training set). With `record` (token-level
distillation in the context the teacher wrote in) the teacher also records its probabilities at each
token it writes, cached with the text, and written.jsonl holds those of each kept CoT.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rich.table import Table

from cotdistill.core.budget import Budget, BudgetReached, Estimate, Spent, extrapolate
from cotdistill.core.config import TeacherConfig
from cotdistill.core.errors import UserError
from cotdistill.teachers.cache import CompletionCache, Key
from cotdistill.core.records import Example, check_unique_ids, write_jsonl
from cotdistill.core.answers import answers_match, majority
from cotdistill.annotation.filters import judge
from cotdistill.core.verdicts import VERDICTS, hint_check_line
from cotdistill.core.progress import console, progress_bar
from cotdistill.core.prompts import COMPLETION_STOP, build_teacher_prompt, prompt_hash, select_exemplars
from cotdistill.core.rundir import RunDir
from cotdistill.core.sampling import PROMPT_TOO_LONG, Prompt, Record, Request, SamplingParams
from cotdistill.teachers.base import Completion, Teacher

AWAIT_POLL_S = 0.5  # how often a run looks for the answers another run sharing its cache is asking for


@dataclass(frozen=True)
class Job:
    """One teacher request: sample `sample` of question `example`."""

    example: Example
    sample: int  # CHECK_SAMPLE: the question asked once more without the hint (hint_check)
    prompt: Prompt
    prompt_hash: str
    params: SamplingParams | None = None  # its own sampling, else the run's


@dataclass
class FetchStats:
    cached: int = 0  # requests answered from the cache
    spent: Spent = field(default_factory=Spent)  # what this run paid the teacher for (requests, tokens, time)
    estimate: Estimate | None = None  # the whole stage's cost, from the first batch
    waited: bool = False  # for answers another run sharing the cache was asking for


# ---------------------------------------------------------------- data and prompts


CHECK_SAMPLE = -1  # the sample index of a question's unhinted check (hint_check)


def hint_checked(config: TeacherConfig) -> bool:
    """Whether each question is also asked without the hint (only meaningful when the hint is given)."""
    return (config.filters.hint_check or config.filters.hint_independent) and config.hint and not config.no_gold


def plan(examples: list[Example], chat: bool, config: TeacherConfig, params: SamplingParams) -> list[Job]:
    """Every (question, sample) request in order; samples of one question are adjacent so that the
    teacher reuses their common prompt. With the hint check, the greedy unhinted requests
    (CHECK_SAMPLE) come after all the hinted ones: their prompts differ from the first token (the
    system line names the hint), so a batch mixing both would share no exemplar prefix and pay the
    whole prompt of every request (bench/hint_check_order.py: 6 times slower on CommonsenseQA)."""
    hint = config.hint and not config.no_gold
    check = hint_checked(config)
    greedy = replace(params, temperature=0.0, top_p=1.0)
    exemplars: dict[str, list] = {}
    jobs, checks = [], []
    for ex in examples:
        if ex.answer_type not in exemplars:
            exemplars[ex.answer_type] = select_exemplars(ex.answer_type, config.n_exemplars, config.exemplars)

        def prompt_for(hinted: bool) -> Prompt:
            return build_teacher_prompt(ex.question, ex.answer_type, exemplars[ex.answer_type], chat=chat, choices=ex.choices,
                                        hint=ex.answer if hinted else None, zero_shot=config.zero_shot)

        prompt = prompt_for(hint)
        phash = prompt_hash(prompt, params)
        jobs.extend(Job(ex, k, prompt, phash) for k in range(config.samples))
        if check:
            unhinted = prompt_for(False)
            checks.append(Job(ex, CHECK_SAMPLE, unhinted, prompt_hash(unhinted, greedy), greedy))
    return jobs + checks


# ---------------------------------------------------------------- asking the teacher


def _chars(prompt: Prompt) -> int:
    return len(prompt) if isinstance(prompt, str) else sum(len(m.get("content", "")) for m in prompt)


def fetch(
    teacher: Teacher, jobs: list[Job], params: SamplingParams, cache: CompletionCache, *, batch_size: int, quiet: bool,
    budget: Budget = Budget(), dry_run: bool = False, record: Record | None = None,
) -> tuple[dict[tuple[str, int], Completion], FetchStats]:
    """The completion of every job: from the cache, else from the teacher in batches. Each answer
    is committed to the cache the moment the teacher hands it over (`on_done`), not when its
    batch ends: a run killed mid-batch loses only the answers still being written.

    After the first batch the whole stage's cost is estimated and printed (budget.py); `dry_run`
    stops there, and reaching `budget` after any batch raises BudgetReached. With `record`, a cached
    answer without that recording is asked again (the same seeded request: the same text)."""
    keys: list[Key] = [(teacher.name, j.prompt_hash, j.params or params, j.sample) for j in jobs]
    found = _cached(cache, list(zip(jobs, keys)), record)
    stats = FetchStats(cached=len(found))
    spent = stats.spent
    missing = [(j, k) for j, k in zip(jobs, keys) if k not in found]
    if missing and not quiet:
        console.print(f"teacher: {len(missing)} requests to send ({len(found)} cached); "
                      f"the first {min(batch_size, len(missing))} measure its speed")
    pending = deque(missing)
    others: list[tuple[Job, Key]] = []  # claimed by another run sharing the cache: awaited, not paid twice
    with progress_bar(quiet) as bar:
        task = bar.add_task("annotate", total=len(jobs), completed=len(found))
        while pending or others:
            batch: list[tuple[Job, Key]] = []
            while pending and len(batch) < batch_size:
                item = pending.popleft()
                (batch if cache.claim(item[1], _wanted(item[0], record)) else others).append(item)
            if not batch:
                pending.extend(_await_others(cache, others, found, stats, lambda n: bar.advance(task, n), record))
                continue
            t0 = time.perf_counter()

            def commit(i: int, completion: Completion, batch=batch) -> None:
                job, key = batch[i]
                found[key] = completion
                if completion.finish_reason != PROMPT_TOO_LONG:  # never asked: nothing to keep
                    cache.put_many([(key, completion)], _wanted(job, record))
                    spent.requests += 1
                    spent.prompt_tokens += completion.prompt_tokens
                    spent.completion_tokens += completion.completion_tokens
                    spent.usd += completion.cost_usd
                bar.advance(task, 1)

            answers = teacher.generate([Request(j.prompt, j.params or params, j.sample, _wanted(j, record)) for j, _ in batch],
                                       on_done=commit)
            spent.seconds += time.perf_counter() - t0
            if len(answers) != len(batch) or any(k not in found for _, k in batch):
                raise RuntimeError(f"{teacher.name} reported {len(answers)} completions for {len(batch)} requests")
            if stats.estimate is None:
                stats.estimate = extrapolate(spent, sum(_chars(j.prompt) for j, _ in batch),
                                             sum(_chars(j.prompt) for j, _ in missing), len(missing), stats.cached)
                console.print(stats.estimate.line())
                if dry_run:
                    break
            reached = budget.reached(spent) if pending or others else None
            if reached:
                raise BudgetReached(
                    f"teacher budget reached ({reached}): {stats.cached + spent.requests} of {len(jobs)} answers are "
                    "in the cache; rerun the same command (with a larger budget, or none) to continue from there",
                    {"budget": asdict(budget), "spent": asdict(spent)})
    if dry_run:
        return {}, stats
    return {(j.example.id, j.sample): found[k] for j, k in zip(jobs, keys)}, stats


def _wanted(job: Job, record: Record | None) -> Record | None:
    """The recording a job's answer needs: none for a hint check (it trains nothing, only decides)."""
    return None if job.sample == CHECK_SAMPLE else record


def _cached(cache: CompletionCache, items: list[tuple[Job, Key]], record: Record | None) -> dict[Key, Completion]:
    """The cached answers of `items`, each with the recording its job needs (`_wanted`)."""
    found = cache.get_many((k for j, k in items if _wanted(j, record) is None), None)
    if record is not None:
        found.update(cache.get_many((k for j, k in items if _wanted(j, record) is not None), record))
    return found


def _await_others(
    cache: CompletionCache, others: list[tuple[Job, Key]], found: dict[Key, Completion], stats: FetchStats,
    advance: Callable[[int], None], record: Record | None,
) -> list[tuple[Job, Key]]:
    """Wait for answers another run sharing the cache is asking for: moves those that arrive from
    `others` into `found` (counted as cached: this run did not pay for them), and returns those
    whose claimer died meanwhile, claimed by this run now, for it to ask."""
    if not stats.waited:
        console.print(f"teacher cache {cache.path}: another run is asking for {len(others)} of these requests; "
                      "waiting for its answers rather than paying twice")
        stats.waited = True
    time.sleep(AWAIT_POLL_S)
    answered = _cached(cache, others, record)
    found.update(answered)
    stats.cached += len(answered)
    advance(len(answered))
    taken = [(j, k) for j, k in others if k not in found and cache.claim(k, _wanted(j, record))]
    claimed = {k for _, k in taken}
    others[:] = [(j, k) for j, k in others if k not in found and k not in claimed]
    return taken


# ---------------------------------------------------------------- filtering


def judge_example(
    example: Example, jobs: list[Job], completions: dict[tuple[str, int], Completion], config: TeacherConfig
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Annotation rows (one per sample) and distill rows (one per kept sample) for one question.
    With the hint check, each row says whether the question is `hint_dependent` (the teacher's
    unhinted answer, CHECK_SAMPLE, is not the gold one), and `hint_independent` drops those CoTs."""
    dependent = _hint_dependent(example, completions.get((example.id, CHECK_SAMPLE)))
    jobs = [j for j in jobs if j.sample != CHECK_SAMPLE]
    answers = [completions[(example.id, j.sample)] for j in jobs]
    label, vote = example.answer, None
    if config.no_gold:  # first read every sample's answer, then judge them against the vote
        first = [judge(c.text, c.finish_reason, example.answer_type, None, choices=example.choices) for c in answers]
        label, vote = majority([j.predicted for j in first])
    kept_texts: set[str] = set()
    annotations, distill = [], []
    for job, c in zip(jobs, answers):
        j = judge(
            c.text, c.finish_reason, example.answer_type, label, question=example.question,
            choices=example.choices, kept_texts=kept_texts, options=config.filters,
        )
        if j.verdict == "kept" and dependent and config.filters.hint_independent:
            j = replace(j, verdict="hint_dependent", reason="wrong without the hint")
        row = {
            "example_id": example.id, "sample": job.sample, "prompt_hash": job.prompt_hash, "text": c.text,
            "predicted": j.predicted, "verdict": j.verdict, "reason": j.reason, "finish_reason": c.finish_reason,
            "usage": {"prompt_tokens": c.prompt_tokens, "completion_tokens": c.completion_tokens, "cost_usd": c.cost_usd},
        }
        if vote is not None:
            row["vote"] = vote
        if dependent is not None:
            row["hint_dependent"] = dependent
        annotations.append(row)
        if j.verdict == "kept":
            d = {
                "id": example.id if config.samples == 1 else f"{example.id}#{job.sample}",
                "example_id": example.id, "sample": job.sample, "question": example.question,
                "rationale": j.rationale, "answer": label, "answer_type": example.answer_type,
            }
            if example.choices:
                d["choices"] = example.choices
            if vote is not None:
                d["vote"] = vote
            distill.append(d)
    return annotations, distill


def _hint_dependent(example: Example, unhinted: Completion | None) -> bool | None:
    """Whether the teacher misses the gold answer when asked without the hint (None: not asked)."""
    if unhinted is None or unhinted.finish_reason == PROMPT_TOO_LONG:
        return None
    j = judge(unhinted.text, unhinted.finish_reason, example.answer_type, example.answer, choices=example.choices)
    return not answers_match(j.predicted, example.answer, example.answer_type)


def yield_table(annotations: list[dict[str, Any]], n_examples: int) -> dict[str, Any]:
    """Counts and percentages of each verdict, and how many questions got at least one CoT. With the
    hint check, `hint_check`: questions asked without the hint and answered right so, and of the CoTs
    that passed every other filter, those of hint-dependent questions."""
    counts = Counter(a["verdict"] for a in annotations)
    total = len(annotations)
    covered = len({a["example_id"] for a in annotations if a["verdict"] == "kept"})
    table: dict[str, Any] = {
        "samples": total,
        "verdicts": {v: {"count": counts[v], "percent": round(100 * counts[v] / total, 1) if total else 0.0} for v in VERDICTS},
        "questions": n_examples,
        "questions_with_kept": covered,
    }
    checked = {a["example_id"]: a["hint_dependent"] for a in annotations if "hint_dependent" in a}
    if checked:
        passed = [a for a in annotations if a["verdict"] in ("kept", "hint_dependent")]
        table["hint_check"] = {"questions": len(checked), "right_unhinted": sum(not d for d in checked.values()),
                               "passed": len(passed), "passed_hint_dependent": sum(bool(a["hint_dependent"]) for a in passed)}
    return table


def print_yield(table: dict[str, Any]) -> None:
    t = Table(title=f"annotate yield: {table['samples']} samples, {table['questions_with_kept']}/{table['questions']} questions kept")
    t.add_column("verdict")
    t.add_column("count", justify="right")
    t.add_column("%", justify="right")
    for verdict, v in table["verdicts"].items():
        t.add_row(verdict, str(v["count"]), f"{v['percent']:.1f}")
    console.print(t)
    if "hint_check" in table:
        console.print(hint_check_line(table["hint_check"]))


# ---------------------------------------------------------------- the stage


def annotate(
    examples: list[Example], teacher: Teacher, run: RunDir, config: TeacherConfig = TeacherConfig(), *,
    seed: int = 0, limit: int | None = None, quiet: bool = False, dry_run: bool = False, record: Record | None = None,
) -> dict[str, Any]:
    """Annotate and filter `examples` with `teacher` into `run` as the `teacher` section `config`
    says (its cache, budget, sampling, prompt and filters); returns what the manifest records.

    `limit`: only the first N questions. `dry_run`: stop after the estimate (the first batch's
    answers are cached) and write nothing. A spent `config.budget` stops cleanly (BudgetReached).
    `record`: the teacher records its probabilities as it writes (written.jsonl)."""
    check_unique_ids(examples, "the data")
    if record is not None and not getattr(teacher, "records", False):
        raise UserError(f"{teacher.name} cannot record its probabilities as it writes (student.distill_context: written); "
                        "the llama.cpp teachers (embedded:NAME, gguf:PATH, with parallel > 1), hf:MODEL and openai: "
                        "servers that return logprobs can; or use "
                        "student.distill_context: student (the teacher re-reads each CoT)")
    if limit is not None:
        examples = examples[:limit]
    t0 = time.perf_counter()
    params = SamplingParams(
        temperature=config.temperature, top_p=config.top_p, max_tokens=config.max_tokens,
        stop=() if teacher.chat else COMPLETION_STOP, seed=seed,
    )
    jobs = plan(examples, teacher.chat, config, params)
    run.root.mkdir(parents=True, exist_ok=True)
    with CompletionCache(Path(config.cache) if config.cache else run.cache) as cache:
        completions, stats = fetch(teacher, jobs, params, cache, batch_size=config.batch_size, quiet=quiet,
                                   budget=Budget.from_dict(config.budget), dry_run=dry_run, record=record)
    if dry_run:
        if stats.estimate is None:
            console.print(f"teacher estimate: all {len(jobs)} requests are cached: nothing to pay for")
        return {"status": "estimated", "teacher": teacher.name, "estimate": asdict(stats.estimate) if stats.estimate else None,
                "cached": stats.cached, "requests": len(jobs)}
    annotations, distill = [], []
    per_example: dict[str, list[Job]] = {}
    for job in jobs:
        per_example.setdefault(job.example.id, []).append(job)
    for ex in examples:
        a, d = judge_example(ex, per_example[ex.id], completions, config)
        annotations += a
        distill += d
    write_jsonl(run.annotations, annotations)
    write_jsonl(run.distill, distill)
    if record is not None:
        write_jsonl(run.written, ({"example_id": d["example_id"], "sample": d["sample"],
                                   **completions[(d["example_id"], d["sample"])].record} for d in distill))
    too_long = sorted({a["example_id"] for a in annotations if a["verdict"] == "prompt_too_long"})
    if too_long:
        console.print(f"[yellow]{len(too_long)} question(s) do not fit the teacher's context and were not asked "
                      f"(e.g. {', '.join(too_long[:3])}; verdict prompt_too_long); raise its n_ctx to include them[/yellow]")
    table = yield_table(annotations, len(examples))
    seconds, spent = time.perf_counter() - t0, stats.spent
    if not quiet:
        print_yield(table)
    console.print(
        f"teacher calls: {spent.requests} (cached: {stats.cached}); "
        f"{len(distill)} CoTs → {run.distill}; {seconds:.0f} s"
    )
    return {
        "teacher": teacher.name, "chat": teacher.chat, "n_examples": len(examples),
        "hint_given": config.hint and not config.no_gold,
        "n_distill": len(distill), "yield": table, "teacher_calls": spent.requests, "cached": stats.cached,
        "teacher_seconds": round(spent.seconds, 1),
        "prompt_tokens": spent.prompt_tokens, "completion_tokens": spent.completion_tokens, "cost_usd": round(spent.usd, 6),
        "samples_per_min": round(60 * spent.requests / spent.seconds, 2) if spent.seconds else None,
        "estimate": asdict(stats.estimate) if stats.estimate else None,
        "options": config.model_dump(), "sampling": params.to_dict(), "limit": limit,
        **({"record": asdict(record)} if record else {}),
    }
