"""What the teacher will cost before it is paid, and a limit that stops a run cleanly.

Teacher calls are the method's bill: money on a paid API, hours on a CPU. Before annotating,
cotdistill knows how many requests are missing from the cache and how long their prompts are;
what it cannot know is the teacher's speed and answer length, so it measures them on the first
batch (a real batch, cached like every other: nothing is spent twice) and extrapolates:

    requests × (seconds per request, completion tokens per request) of the first batch
    prompt characters × (prompt tokens per character) of the first batch
    tokens × the teacher's prices, where it has them (HTTP teachers: price_input_per_m, ...)

A `Budget` (tokens, usd, minutes of this invocation) is checked after every batch; reaching it
stops the stage with every answer so far in the cache, so the same command continues from there.
Token counts are the teacher's own; where a server reports none, or nonsense (negative usage),
`estimate_tokens` counts them from the text, so a token budget still stops the run.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

from cotdistill.core.config import BUDGET_LIMITS, budget_limits
from cotdistill.core.errors import StageStopped


# About 4 characters per token for English text with the BPE vocabularies of current teachers
# (OpenAI's rule of thumb). A rough count, used only where the server gave none.
CHARS_PER_TOKEN = 4


def estimate_tokens(text: str) -> int:
    """Tokens in `text` when the teacher did not say: for budgets, never for the cache or the data."""
    return math.ceil(len(text) / CHARS_PER_TOKEN)


class BudgetReached(StageStopped):
    """The teacher budget was spent: a clean stop, every paid answer is cached."""


@dataclass
class Spent:
    """What this invocation paid the teacher for."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float = 0.0
    seconds: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def minutes(self) -> float:
        return self.seconds / 60


@dataclass(frozen=True)
class Budget:
    tokens: int | None = None
    usd: float | None = None
    minutes: float | None = None

    @classmethod
    def from_dict(cls, items: dict) -> "Budget":
        """The limits in `items` (config.budget_limits checks them); the error's caller names where they came from."""
        return cls(**budget_limits(items))

    def reached(self, spent: Spent) -> str | None:
        """Which limit `spent` has reached, as words, or None."""
        for name in BUDGET_LIMITS:
            limit, used = getattr(self, name), getattr(spent, name)
            if limit is not None and used >= limit:
                return f"{name} {used:.4g} of {limit:g}"
        return None

    def __bool__(self) -> bool:
        return any(v is not None for v in asdict(self).values())


@dataclass
class Estimate:
    """The whole stage's teacher cost, extrapolated from the first batch."""

    requests: int  # to send (not in the cache)
    cached: int
    prompt_tokens: int
    completion_tokens: int
    seconds: float
    usd: float
    measured_on: int  # requests the rates were measured on

    def line(self) -> str:
        cost = f", ≈ ${self.usd:.2f}" if self.usd else ""
        return (f"teacher estimate: {self.requests} requests ({self.cached} cached), ≈ {self.prompt_tokens:,} prompt + "
                f"{self.completion_tokens:,} completion tokens, ≈ {self.seconds / 60:.1f} min{cost} "
                f"(rates measured on the first {self.measured_on} requests)")


def extrapolate(probe: Spent, probe_chars: int, all_chars: int, requests: int, cached: int) -> Estimate:
    """Scale the first batch (`probe`: its usage; `probe_chars`: its prompts' length) to `requests`
    requests whose prompts total `all_chars` characters."""
    n = max(probe.requests, 1)
    per_char = probe.prompt_tokens / probe_chars if probe_chars else 0.0
    scale = requests / n
    return Estimate(
        requests=requests, cached=cached, prompt_tokens=round(per_char * all_chars),
        completion_tokens=round(probe.completion_tokens * scale), seconds=probe.seconds * scale,
        usd=probe.usd * scale, measured_on=probe.requests,
    )
