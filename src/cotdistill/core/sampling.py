"""What any model is asked to generate, and the two rules every generator shares.

The request types (`Prompt`, `SamplingParams`, `Request`, the `PROMPT_TOO_LONG` finish reason) are
used by the prompts, the filters, evaluation and every teacher backend, so they live here rather
than in a backend module. A prompt is either plain text (completion models) or a list of chat
messages [{"role": ..., "content": ...}] (instruct models).

The shared rules:
- `derive_seed`: every random seed cotdistill uses (a teacher sample, an evaluation sample, a
  batch, a training epoch's shuffle) is derived from its parts by one stable hash, so a rerun draws
  the same and different parts draw independently;
- `stop_index`: where generated text is cut at a stop string, the same for transformers, llama.cpp
  and our batched generation.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Optional, Union

Message = dict[str, str]
Prompt = Union[str, list[Message]]

#: The finish reason of a request whose prompt and max_tokens do not fit the model's context.
PROMPT_TOO_LONG = "prompt_too_long"


def derive_seed(*parts: Any) -> int:
    """A random seed that is a stable function of `parts` (ints, strings, prompts: anything JSON
    writes): the same in every process, on every machine and Python version (unlike `hash()`), so a
    rerun or a resumed run draws the same sample. Fits in 31 bits, what HTTP servers accept as
    `seed` and what numpy, torch and llama.cpp all take."""
    text = ":".join(json.dumps(p, sort_keys=True) for p in parts)
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little") & 0x7FFFFFFF


def stop_index(text: str, stop: Sequence[str]) -> Optional[int]:
    """Where generated `text` is cut: the start of the earliest occurrence of any stop string, or
    None when none occurs. The earliest wins whatever the order of `stop`, so nothing of any stop
    string is kept."""
    return min((i for i in (text.find(s) for s in stop) if i >= 0), default=None)


@dataclass(frozen=True)
class SamplingParams:
    temperature: float = 0.0
    top_p: float = 1.0
    max_tokens: int = 256
    stop: tuple[str, ...] = ()
    seed: int = 0

    def to_dict(self) -> dict:
        d = asdict(self)
        d["stop"] = list(self.stop)
        return d


@dataclass(frozen=True)
class Record:
    """Record, at every token the teacher writes, its next-token distribution there (at `temperature`)
    as `tokens` importance-sampled draws and as the `tokens` most likely tokens: the targets of
    token-level distillation in the context the teacher wrote in (training/teacher_targets.py).
    Not part of a request's cache key: the text is the same with or without it."""

    temperature: float = 1.0
    tokens: int = 12

    def key(self) -> str:
        """What the cache stores beside a recording, to know which settings made it."""
        return json.dumps({"temperature": self.temperature, "tokens": self.tokens}, sort_keys=True)


@dataclass(frozen=True)
class Request:
    prompt: Prompt
    params: SamplingParams = field(default_factory=SamplingParams)
    # Which of several samples for the same prompt this is (see `seed`).
    sample: int = 0
    record: Optional[Record] = None

    @property
    def seed(self) -> int:
        """The random seed of this sample (temperature > 0): derived from (params.seed, sample), so a
        rerun reproduces the same sample and different samples of one prompt differ."""
        return derive_seed(self.params.seed, self.sample)
