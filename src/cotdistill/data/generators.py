"""Offline, seeded problem generators: GSM-style word problems, last letters, coin flip.

They give every stage data without any download. `generate_split(..., split="template")` makes the
test set from templates (gsm_symbolic) or names (last letters, coin flip) never seen in training,
so a student's score measures reasoning that transfers rather than recall of a problem shape;
`split="same-template"` is the ordinary random split, labelled as such in each example's meta.
The same (task, sizes, seed, options) always gives the same examples.
"""

from __future__ import annotations

import random
from typing import Any, Callable

from cotdistill.core.answers import normalise
from cotdistill.core.config import MAX_QUESTIONS
from cotdistill.core.errors import UserError
from cotdistill.core.records import Example
from cotdistill.data.overlap import normalise_question

TASKS = ("gsm_symbolic", "last_letters", "coin_flip")
SPLITS = ("template", "same-template")

# US first names (no spaces or hyphens), in the spirit of the names Kojima et al. drew from.
NAMES = """
Aaliyah Abigail Adrian Aiden Alejandro Alexis Alice Amara Andre Angela Anika Ashley Austin Ava
Benito Bianca Brandon Brooke Caleb Camila Carlos Carmen Chloe Connor Dakota Dante Darius Delia
Devon Diego Dominic Elena Elijah Emeka Emily Erika Ethan Fatima Felix Fiona Gabriel Gemma Grace
Hana Hector Hugo Imani Irene Isaac Ivy Jada Jamal Jasmine Javier Jenna Joaquin Jordan Julia Kai
Kendra Kenji Keisha Lamar Laura Leon Lila Logan Lucia Luis Maya Malik Marco Mariana Marisol
Mateo Megan Miguel Mila Naomi Nadia Nathan Nia Noah Olivia Omar Oscar Paige Paloma Priya Quinn
Rafael Rosa Ruby Samir Sara Selena Shane Sofia Tariq Tessa Theo Trevor Uma Valeria Victor Wanda
Whitney Xavier Yara Yusuf Zane Zoe
""".split()

COIN_QUESTION = 'A coin is heads up. {steps} Is the coin still heads up? Note that "flip" here means "reverse".'
LETTERS_QUESTION = 'Take the last letters of each words in "{words}" and concatenate them.'


# ---------------------------------------------------------------- one problem per task


def _gsm_templates() -> tuple[list[int], dict[int, Callable[..., dict[str, Any]]]]:
    """reasoning-gym's gsm_symbolic templates that its authors mark as sound (`tasks_ok`)."""
    import reasoning_gym
    from reasoning_gym.arithmetic.gsm_symbolic.gsm_symbolic import tasks_ok

    generators = reasoning_gym.create_dataset("gsm_symbolic", seed=0, size=1).generators
    return [t for t in tasks_ok if t in generators], generators


def _gsm_problem(rng: random.Random, pool: list[Any], opts: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    template = rng.choice(pool)
    # Called directly, so the item has no "Give the result as your final answer." suffix: the
    # final-answer form is the project's own ("The answer is X.").
    item = opts["_generators"][template](random.Random(rng.getrandbits(64)), 1.0)
    meta = {"template": template, "solution": item["metadata"].get("answer_cot", "")}
    return item["question"].strip(), str(item["answer"]), meta


def _letters_problem(rng: random.Random, pool: list[Any], opts: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    words = rng.sample(pool, opts["n_words"])
    answer = "".join(w[-1] for w in words).lower()
    return LETTERS_QUESTION.format(words=" ".join(words)), answer, {"names": words}


def _coin_problem(rng: random.Random, pool: list[Any], opts: dict[str, Any]) -> tuple[str, str, dict[str, Any]]:
    people = rng.sample(pool, opts["n_flips"])
    flips = [rng.random() < 0.5 for _ in people]
    steps = " ".join(f"{p} flips the coin." if f else f"{p} does not flip the coin." for p, f in zip(people, flips, strict=True))
    answer = "yes" if sum(flips) % 2 == 0 else "no"
    return COIN_QUESTION.format(steps=steps), answer, {"names": people, "flips": sum(flips)}


ANSWER_TYPE = {"gsm_symbolic": "number", "last_letters": "text", "coin_flip": "yes_no"}
MAKERS = {"gsm_symbolic": _gsm_problem, "last_letters": _letters_problem, "coin_flip": _coin_problem}
DEFAULTS: dict[str, dict[str, Any]] = {
    "gsm_symbolic": {"test_fraction": 0.2},
    "last_letters": {"n_words": 4, "test_fraction": 0.2},
    "coin_flip": {"n_flips": 4, "test_fraction": 0.2},
}


# ---------------------------------------------------------------- sets of problems


def _options(task: str, opts: dict[str, Any]) -> tuple[dict[str, Any], list[Any]]:
    """Validated options with defaults filled in, and the pool (templates or names) to draw from."""
    if task not in TASKS:
        raise UserError(f"unknown generator task '{task}'; known tasks: {', '.join(TASKS)}")
    unknown = sorted(set(opts) - set(DEFAULTS[task]))
    if unknown:
        raise UserError(f"unknown option(s) {', '.join(unknown)} for {task}; allowed: {', '.join(DEFAULTS[task])}")
    merged = {**DEFAULTS[task], **opts}
    if not _is_a(merged["test_fraction"], int, float) or not 0 < merged["test_fraction"] < 1:
        raise UserError(f"test_fraction must be between 0 and 1, got {merged['test_fraction']!r}")
    for key in ("n_words", "n_flips"):
        if key in merged and not (_is_a(merged[key], int) and 1 <= merged[key] <= 20):
            raise UserError(f"{key} must be between 1 and 20 (a whole number), got {merged[key]!r}")
    if task == "gsm_symbolic":
        pool, merged["_generators"] = _gsm_templates()
    else:
        pool = list(NAMES)
    return merged, pool


def _draw(task: str, n: int, rng: random.Random, pool: list[Any], opts: dict[str, Any], seen: set[str]) -> list[tuple]:
    """n problems with questions distinct from each other and from `seen`."""
    out: list[tuple] = []
    attempts = 0
    while len(out) < n:
        attempts += 1
        if attempts > 50 * n + 1000:
            raise UserError(
                f"{task}: only {len(out)} distinct problems found for {n} requested from {len(pool)} "
                "templates/names; ask for fewer, or use a larger test_fraction"
            )
        question, answer, meta = MAKERS[task](rng, pool, opts)
        key = normalise_question(question)
        if key not in seen:
            seen.add(key)
            out.append((question, answer, meta))
    return out


def _examples(task: str, problems: list[tuple], prefix: str, meta: dict[str, Any]) -> list[Example]:
    answer_type = ANSWER_TYPE[task]
    out = []
    for i, (question, answer, extra) in enumerate(problems):
        gold = normalise(answer, answer_type)
        if gold is None:  # a generator bug, not a user error: never write an unreadable gold answer
            raise RuntimeError(f"{task} generated an unreadable answer {answer!r} for {question!r}")
        out.append(Example(f"{prefix}-{i}", question, gold, answer_type, task, None, {**meta, **extra}))
    return out


def _is_a(value: Any, *types: type) -> bool:
    """isinstance, except that a bool (YAML's `yes`) is no number."""
    return isinstance(value, types) and not isinstance(value, bool)


def _check_sizes(**sizes: int) -> None:
    for name, value in sizes.items():
        if not 0 <= value <= MAX_QUESTIONS:  # more is a slip, whose drawing would run for days
            raise UserError(f"{name} must be 0 or more and at most {MAX_QUESTIONS:,}, got {value}")


def generate(task: str, n: int, seed: int, **opts: Any) -> list[Example]:
    """n problems of `task` drawn from all its templates (or names); deterministic in `seed`."""
    _check_sizes(n=n)
    merged, pool = _options(task, opts)
    problems = _draw(task, n, random.Random(f"{task}-{seed}"), pool, merged, set())
    return _examples(task, problems, f"{task}-{seed}", {"seed": seed, "generator": "cotdistill"})


def generate_split(
    task: str, n_train: int, n_test: int, seed: int, split: str = "template", n_dev: int = 0, **opts: Any
) -> tuple[list[Example], list[Example], list[Example]]:
    """Train, dev and test sets with no question in common.

    split="template": templates (gsm_symbolic) or names (last letters, coin flip) are partitioned
    by `seed`; a fraction `test_fraction` of them is used only for the test set.
    split="same-template": all sets are drawn from the same templates or names.
    The dev set is drawn last, from the training templates or names (in-distribution), with its own
    random stream: asking for one changes neither the training nor the test questions.
    """
    if split not in SPLITS:
        raise UserError(f"unknown split '{split}'; use one of: {', '.join(SPLITS)}")
    _check_sizes(n_train=n_train, n_test=n_test, n_dev=n_dev)
    merged, pool = _options(task, opts)
    meta = {"seed": seed, "split": split, "generator": "cotdistill"}
    seen: set[str] = set()
    if split == "template":
        order = sorted(pool)
        random.Random(f"{task}-{seed}-partition").shuffle(order)
        k = max(1, round(merged["test_fraction"] * len(order)))
        test_pool, train_pool = order[:k], order[k:]
        test = _draw(task, n_test, random.Random(f"{task}-{seed}-test"), test_pool, merged, seen)
        train = _draw(task, n_train, random.Random(f"{task}-{seed}-train"), train_pool, merged, seen)
    else:
        both = _draw(task, n_train + n_test, random.Random(f"{task}-{seed}-same"), pool, merged, seen)
        train, test = both[:n_train], both[n_train:]
        train_pool = pool
    dev = _draw(task, n_dev, random.Random(f"{task}-{seed}-dev"), train_pool, merged, seen) if n_dev else []
    return (
        _examples(task, train, f"{task}-{seed}-train", meta),
        _examples(task, dev, f"{task}-{seed}-dev", meta),
        _examples(task, test, f"{task}-{seed}-test", meta),
    )
