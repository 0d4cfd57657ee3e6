"""The protocol every teacher backend implements, and the records it exchanges.

A prompt is either plain text (completion models) or a list of chat messages
[{"role": ..., "content": ...}] (instruct models). `generate` takes a batch so that backends can
do better than one sequence at a time (multi-sequence llama.cpp batches, concurrent HTTP requests,
vLLM continuous batching); it returns one `Completion` per request, in order. It also hands each
completion to `on_done(index, completion)` the moment it exists, so that the caller can store it:
on a slow CPU a batch takes minutes, and a run killed mid-batch keeps what was already answered.
"""

from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from typing import Callable, Optional, Protocol, Union

from cotdistill.fileio import without_surrogates

Message = dict[str, str]
Prompt = Union[str, list[Message]]


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
class Request:
    prompt: Prompt
    params: SamplingParams = field(default_factory=SamplingParams)
    # Which of several samples for the same prompt this is; with temperature > 0 the backend
    # derives its random seed from (params.seed, sample) so a rerun reproduces the same sample.
    sample: int = 0


@dataclass
class Completion:
    text: str
    # "stop" (ended by itself or a stop string) | "length" (hit max_tokens) | "prompt_too_long" (the
    # prompt and max_tokens do not fit the model's context: nothing was generated, `text` says why)
    finish_reason: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0

    def __post_init__(self) -> None:
        # Every backend's answer passes here: a lone surrogate in it (a server's JSON "\ud800", a
        # decoder splitting a character) becomes U+FFFD, so the cache, annotations.jsonl, predictions
        # and reports only ever hold text that UTF-8 and SQLite accept.
        self.text = without_surrogates(self.text)



PROMPT_TOO_LONG = "prompt_too_long"


def prompt_too_long(prompt_tokens: int, max_tokens: int, context: int) -> Completion:
    """The answer to a request that cannot fit: one question too long must not abort a whole run."""
    return Completion(f"prompt ({prompt_tokens} tokens) + max_tokens ({max_tokens}) exceed the context of {context} tokens",
                      PROMPT_TOO_LONG, prompt_tokens=prompt_tokens)


#: Called with (index of the request in the batch, its completion) as soon as it is complete.
OnDone = Optional[Callable[[int, Completion], None]]


def report_all(completions: list[Completion], on_done: OnDone) -> list[Completion]:
    """For backends that finish a whole batch at once: report every completion, return them."""
    if on_done is not None:
        for i, c in enumerate(completions):
            on_done(i, c)
    return completions


class Teacher(Protocol):
    #: Stable identity of the model for cache keys, e.g. "llamacpp:qwen2.5-0.5b@<sha256[:12]>".
    name: str
    #: True when prompts should be chat messages (instruct model with a chat template).
    chat: bool

    def generate(self, requests: list[Request], on_done: OnDone = None) -> list[Completion]: ...

    def close(self) -> None: ...


def sample_seed(params: SamplingParams, sample: int) -> int:
    """The random seed of one sample: a stable function of (params.seed, sample), so a rerun
    reproduces the same sample and different samples of one prompt differ. Fits in 31 bits
    (what HTTP servers accept as `seed`)."""
    digest = hashlib.sha256(f"{params.seed}:{sample}".encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF
